//! Data-driven cases for the daemons' nodes (`primary/testdata/node/`, `standby/testdata/node/`),
//! in the style of the decision cores' (`common/testdata/decision/`, `hsb_testkit::casefile`): a
//! case feeds one real node time-stamped events and states every effect it must produce, in
//! order. Format:
//!
//! ```text
//! # comment
//! case a session opens and its full synchronisation is acknowledged   # starts a case
//! node primary              # primary | standby
//! set lease=400ms period=20ms   # decision keys (as in the decision cases) and node keys
//! failover off              # the node runs without automatic failover (default: on)
//! epoch 2                   # the epoch it starts in (default 1)
//! answer off                # do not answer the effects that have an outcome (default: answered
//!                           # as the daemon's model backend does, each answer stepped at once)
//! ignore send(msg=heartbeat) release   # effects not checked in this case: by name, or by
//!                           # name and tokens (`record` never is)
//!
//! 0ms tick                  # an event at a time (or `+5ms`, after the current time)
//! > connect                 # the effects since the last `>` block, in order
//! 1ms connected
//! > send-hello epoch=1 last-ckpt=0
//! every 10ms from 5ms until 300ms: heartbeat link=0   # an event every period (`{n}` is its
//!                           # occurrence, 1, 2, ..., `{n+1}` one more) from now (or `from`)
//!                           # until a time
//! run 30ms                  # advance time, ticking the node at its deadlines on the way
//! > none                    # no effect since the last block
//! check link=streaming      # a query on the node
//! ```
//!
//! An expected effect matches if its first word equals the effect's and each further token
//! appears in the effect's text (`at=T`, `at<=T`, `at>=T` check its time). An effect's text is
//! its variant in kebab-case, then its fields as `key=value` ([`flat`]: wrappers such as
//! `Epoch(2)` or `Some(3)` unwrapped, a nested message named by its variant, a string's spaces
//! turned into dashes); the cluster's addresses are named (`w1`, `standby`, `standby-hb`,
//! `primary`); a decision's evidence reads as in the decision log's summary
//! (`evidence rule1:quorum-no-answer -> activate epoch 2 ...`).
//!
//! Events are the node's, by name with `key=value` fields (see [`primary`] and [`standby`]);
//! datagrams from the witnesses and the peer daemon use the decision cases' input names and
//! fields (`lease w=1 req=1 verdict=grant`, `heartbeat link=0`, `vote w=2 query=1
//! verdict=grant`, ...).

mod parse;
mod primary;
mod standby;
mod text;

pub use hsb_testkit::casefile::syntax::{CaseError, CaseFailure, MAX_FILE, MAX_STEPS};
pub use parse::parse_cases;
pub use text::flat;

use hsb_common::decision::record::{FieldError, Fields};
use hsb_common::decision::{Config, Epoch};
use hsb_common::time::Nanos;
use hsb_testkit::casefile::drive::{self, list, ms, Next, Stream};
use hsb_testkit::casefile::syntax::Step;

/// Most ticks at one instant (a node that is always due is a bug).
const MAX_TICKS_AT_ONCE: u32 = 1_000;

/// Which node a case drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// `hsb_primary::node::PrimaryNode`.
    Primary,
    /// `hsb_standby::node::StandbyNode`.
    Standby,
}

/// One case.
#[derive(Debug, Clone)]
pub struct Case {
    /// Its name.
    pub name: String,
    /// Line of its `case` line.
    pub line: usize,
    /// The node it drives.
    pub node: NodeKind,
    /// The decision configuration.
    pub config: Config,
    /// Node keys (`period`, `max-unacked`, ...).
    pub node_keys: Vec<(String, String)>,
    /// Automatic failover on.
    pub failover: bool,
    /// The epoch it starts in.
    pub epoch: Epoch,
    /// Effects with an outcome are answered.
    pub answer: bool,
    /// Effect names not checked.
    pub ignore: Vec<String>,
    /// Its steps (events are [`Step::Input`]s; no stream drops or jitters).
    steps: Vec<Step>,
}

/// A node under test, with the daemon's answers to its effects.
trait Driver {
    /// The node's events.
    type Event;
    /// The node's effects.
    type Effect;
    /// The event a case names (by name, with fields).
    fn event(&self, name: &str, f: &mut Fields) -> Result<Self::Event, String>;
    /// One step of the node: its effects.
    fn step(&mut self, now: Nanos, ev: Self::Event) -> Vec<Self::Effect>;
    /// The model daemon's answer to an effect, if it has one (and the case answers).
    fn answer(&mut self, e: &Self::Effect) -> Option<Self::Event>;
    /// An event that follows a step once its effects are answered (none unless a driver says).
    fn then(&mut self) -> Option<Self::Event> {
        None
    }
    /// An effect's text.
    fn text(e: &Self::Effect) -> String;
    /// When the node next wants a tick.
    fn next_deadline(&self, now: Nanos) -> Option<Nanos>;
    /// A query on the node.
    fn check(&self, now: Nanos, key: &str) -> Option<String>;
}

/// Step the node with `ev` at `now`, each answer stepped at once: every effect carried out
/// meanwhile, as text, answers' effects included.
fn drive<D: Driver>(d: &mut D, now: Nanos, ev: D::Event, out: &mut Vec<String>) {
    for e in d.step(now, ev) {
        out.push(D::text(&e));
        if let Some(a) = d.answer(&e) {
            drive(d, now, a, out);
        }
    }
    if let Some(ev) = d.then() {
        drive(d, now, ev, out);
    }
}

/// What a case run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RunSummary {
    /// Events fed (ticks included).
    pub events: u64,
    /// Effects checked.
    pub effects: u64,
}

struct Runner<'c, D> {
    case: &'c Case,
    node: D,
    streams: Vec<Stream>,
    now: Nanos,
    got: Vec<(Nanos, String)>,
    summary: RunSummary,
}

/// Run one case.
pub fn run_case(case: &Case) -> Result<RunSummary, CaseFailure> {
    let fail = |message: String| CaseFailure {
        case: case.name.clone(),
        line: case.line,
        message,
    };
    match case.node {
        NodeKind::Primary => run(case, primary::PrimaryDriver::new(case).map_err(fail)?),
        NodeKind::Standby => run(case, standby::StandbyDriver::new(case).map_err(fail)?),
    }
}

fn run<D: Driver>(case: &Case, node: D) -> Result<RunSummary, CaseFailure> {
    let mut r = Runner {
        case,
        node,
        streams: Vec::new(),
        now: Nanos::ZERO,
        got: Vec::new(),
        summary: RunSummary::default(),
    };
    for step in &case.steps {
        match step {
            Step::Input {
                line,
                at,
                name,
                tokens,
            } => {
                let t = at.resolve(r.now);
                r.not_before(*line, t)?;
                r.advance(*line, t, false)?;
                r.now = t;
                r.feed(*line, name, tokens)?;
            }
            Step::Every { .. } => r.streams.extend(Stream::start(step, r.now)),
            Step::Run { line, to } => {
                let t = to.resolve(r.now);
                r.not_before(*line, t)?;
                r.advance(*line, t, true)?;
                r.now = t;
            }
            Step::Expect { line, items } => r.expect(*line, items)?,
            Step::Check { line, key, value } => {
                let got = r.node.check(r.now, key);
                drive::check_value(key, value, got, r.now, "this node")
                    .map_err(|m| r.fail(*line, m))?;
            }
        }
    }
    if !r.got.is_empty() {
        return Err(r.fail(
            case.line,
            format!("unexpected effects at the end: {}", list(&r.got)),
        ));
    }
    Ok(r.summary)
}

/// `{n}` in a stream's token is its occurrence `n`, `{n+K}` is `n + K`.
fn occurrence(t: &str, n: u64) -> String {
    let Some((head, rest)) = t.split_once("{n") else {
        return t.to_string();
    };
    let Some((add, tail)) = rest.split_once('}') else {
        return t.to_string();
    };
    let k = add
        .strip_prefix('+')
        .and_then(|k| k.parse::<u64>().ok())
        .unwrap_or(0);
    format!("{head}{}{tail}", n + k)
}

/// Whether effect `e` is ignored by entry `i`: `name`, or `name(token ...)` (every token in it).
fn ignored(i: &str, e: &str) -> bool {
    let mut words = e.split_whitespace();
    let first = words.next().unwrap_or_default();
    match i.split_once('(') {
        None => i == first,
        Some((name, rest)) => {
            name == first
                && rest
                    .trim_end_matches(')')
                    .split(',')
                    .all(|t| e.split_whitespace().any(|w| w == t.trim()))
        }
    }
}

impl<D: Driver> Runner<'_, D> {
    fn fail(&self, line: usize, message: String) -> CaseFailure {
        CaseFailure {
            case: self.case.name.clone(),
            line,
            message,
        }
    }

    fn not_before(&self, line: usize, t: Nanos) -> Result<(), CaseFailure> {
        drive::not_before(t, self.now).map_err(|m| self.fail(line, m))
    }

    /// Feed the streams' events and tick the node at each of its deadlines, in time order, up
    /// to `to` (inclusive or not).
    fn advance(&mut self, line: usize, to: Nanos, inclusive: bool) -> Result<(), CaseFailure> {
        let mut at_once = 0;
        loop {
            let tick = self.node.next_deadline(self.now).map(|d| d.max(self.now));
            match drive::next(&self.streams, tick, to, inclusive) {
                Next::Stream(i, t) => {
                    let o = self.streams[i].fire(occurrence);
                    self.now = t;
                    self.feed(o.line, &o.name, &o.tokens)?;
                }
                Next::Tick(d) => {
                    at_once = if d == self.now { at_once + 1 } else { 0 };
                    if at_once > MAX_TICKS_AT_ONCE {
                        return Err(self.fail(line, format!("the node is always due at {}", ms(d))));
                    }
                    self.now = d;
                    self.feed(line, "tick", &[])?;
                }
                Next::Done => return Ok(()),
            }
        }
    }

    fn feed(&mut self, line: usize, name: &str, tokens: &[String]) -> Result<(), CaseFailure> {
        let mut f = Fields::from_tokens(tokens.iter().map(String::as_str))
            .map_err(|e| self.fail(line, e.to_string()))?;
        let ev = self
            .node
            .event(name, &mut f)
            .map_err(|e| self.fail(line, format!("{name}: {e}")))?;
        let mut effects = Vec::new();
        drive(&mut self.node, self.now, ev, &mut effects);
        f.finish()
            .map_err(|e: FieldError| self.fail(line, format!("{name}: {e}")))?;
        self.summary.events += 1;
        for e in effects {
            if !self.case.ignore.iter().any(|i| ignored(i, &e)) {
                self.got.push((self.now, e));
            }
        }
        Ok(())
    }

    fn expect(&mut self, line: usize, items: &[(usize, String)]) -> Result<(), CaseFailure> {
        let got = std::mem::take(&mut self.got);
        self.summary.effects += got.len() as u64;
        drive::check_block(&got, line, items, "effect").map_err(|(n, m)| self.fail(n, m))
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_cases, run_case};

    #[test]
    fn a_case_runs_and_a_wrong_expectation_names_its_line() {
        let text = "case c\nnode primary\nfailover off\n0ms tick\n> connect\n1ms connected\n> send-hello epoch=2\n";
        let cases = parse_cases(text).expect("parses");
        let e = run_case(&cases[0]).expect_err("epoch 1, not 2");
        assert_eq!(e.line, 7, "{e}");
        let ok = text.replace("epoch=2", "epoch=1");
        let s = run_case(&parse_cases(&ok).expect("parses")[0]).expect("runs");
        assert_eq!((s.events, s.effects), (2, 2));
        let bad = parse_cases("case c\n0ms tick\nnode standby\n").expect_err("header late");
        assert_eq!(bad.line, 3);
        assert!(parse_cases("0ms tick\n").is_err());
    }
}
