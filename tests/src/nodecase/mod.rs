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

pub use parse::parse_cases;
pub use text::flat;

use std::fmt;
use std::time::Duration;

use hsb_common::decision::record::{FieldError, Fields};
use hsb_common::decision::{parse_duration, Config, Epoch};
use hsb_common::time::Nanos;

/// Longest case file read.
pub const MAX_FILE: usize = 1 << 20;
/// Most steps in one case.
pub const MAX_STEPS: usize = 10_000;
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

/// A time in a case: absolute, or after the current time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimeSpec {
    Abs(Duration),
    Rel(Duration),
}

impl TimeSpec {
    fn parse(s: &str) -> Option<TimeSpec> {
        match s.strip_prefix('+') {
            Some(r) => parse_duration(r).map(TimeSpec::Rel),
            None => parse_duration(s).map(TimeSpec::Abs),
        }
    }

    fn resolve(self, now: Nanos) -> Nanos {
        match self {
            TimeSpec::Abs(d) => Nanos::ZERO.plus(d),
            TimeSpec::Rel(d) => now.plus(d),
        }
    }
}

/// One step of a case.
#[derive(Debug, Clone)]
enum Step {
    Event {
        line: usize,
        at: TimeSpec,
        name: String,
        tokens: Vec<String>,
    },
    Every {
        line: usize,
        period: Duration,
        from: Option<TimeSpec>,
        until: TimeSpec,
        name: String,
        tokens: Vec<String>,
    },
    Run {
        line: usize,
        to: TimeSpec,
    },
    Expect {
        line: usize,
        items: Vec<(usize, String)>,
    },
    Check {
        line: usize,
        key: String,
        value: String,
    },
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
    steps: Vec<Step>,
}

/// A case file that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for CaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// A case whose node did not do what the case says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseFailure {
    /// The case.
    pub case: String,
    /// The line that failed.
    pub line: usize,
    /// Expected versus got.
    pub message: String,
}

impl fmt::Display for CaseFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "case {:?}, line {}: {}",
            self.case, self.line, self.message
        )
    }
}

/// A node under test, with the daemon's answers to its effects.
trait Driver {
    /// Feed one event (by name, with fields) at `now`: every effect carried out meanwhile, as
    /// text, answers' effects included.
    fn feed(&mut self, now: Nanos, name: &str, f: &mut Fields) -> Result<Vec<String>, String>;
    /// When the node next wants a tick.
    fn next_deadline(&self, now: Nanos) -> Option<Nanos>;
    /// A query on the node.
    fn check(&self, now: Nanos, key: &str) -> Option<String>;
}

/// What a case run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RunSummary {
    /// Events fed (ticks included).
    pub events: u64,
    /// Effects checked.
    pub effects: u64,
}

/// A periodic event.
struct Stream {
    line: usize,
    next: Nanos,
    period: Duration,
    until: Nanos,
    count: u64,
    name: String,
    tokens: Vec<String>,
}

struct Runner<'c> {
    case: &'c Case,
    node: Box<dyn Driver>,
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
    let node: Box<dyn Driver> = match case.node {
        NodeKind::Primary => Box::new(primary::PrimaryDriver::new(case).map_err(fail)?),
        NodeKind::Standby => Box::new(standby::StandbyDriver::new(case).map_err(fail)?),
    };
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
            Step::Event {
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
            Step::Every {
                line,
                period,
                from,
                until,
                name,
                tokens,
            } => {
                let until = until.resolve(r.now);
                r.streams.push(Stream {
                    line: *line,
                    next: from.map_or(r.now, |f| f.resolve(r.now)).max(r.now),
                    period: *period,
                    until,
                    count: 0,
                    name: name.clone(),
                    tokens: tokens.clone(),
                });
            }
            Step::Run { line, to } => {
                let t = to.resolve(r.now);
                r.not_before(*line, t)?;
                r.advance(*line, t, true)?;
                r.now = t;
            }
            Step::Expect { line, items } => r.expect(*line, items)?,
            Step::Check { line, key, value } => {
                let got = r
                    .node
                    .check(r.now, key)
                    .ok_or_else(|| r.fail(*line, format!("unknown check {key:?} for this node")))?;
                if got != *value {
                    return Err(r.fail(
                        *line,
                        format!("check {key}: expected {value}, got {got} at {}", ms(r.now)),
                    ));
                }
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

fn ms(t: Nanos) -> String {
    format!("{:.3}ms", t.0 as f64 / 1e6)
}

fn list(got: &[(Nanos, String)]) -> String {
    if got.is_empty() {
        return "none".into();
    }
    got.iter()
        .map(|(t, e)| format!("\n    {} {e}", ms(*t)))
        .collect()
}

impl Runner<'_> {
    fn fail(&self, line: usize, message: String) -> CaseFailure {
        CaseFailure {
            case: self.case.name.clone(),
            line,
            message,
        }
    }

    fn not_before(&self, line: usize, t: Nanos) -> Result<(), CaseFailure> {
        if t < self.now {
            return Err(self.fail(
                line,
                format!("time {} is before the current time {}", ms(t), ms(self.now)),
            ));
        }
        Ok(())
    }

    /// Feed the streams' events and tick the node at each of its deadlines, in time order, up
    /// to `to` (inclusive or not).
    fn advance(&mut self, line: usize, to: Nanos, inclusive: bool) -> Result<(), CaseFailure> {
        let within = |t: Nanos| if inclusive { t <= to } else { t < to };
        let mut at_once = 0;
        loop {
            let stream = self
                .streams
                .iter()
                .enumerate()
                .filter(|(_, s)| s.next <= s.until)
                .min_by_key(|(_, s)| s.next)
                .map(|(i, s)| (i, s.next));
            let tick = self.node.next_deadline(self.now).map(|d| d.max(self.now));
            match (stream, tick) {
                (Some((i, t)), tk) if within(t) && tk.is_none_or(|tk| t <= tk) => {
                    let s = &mut self.streams[i];
                    s.next = s.next.plus(s.period);
                    s.count += 1;
                    let n = s.count;
                    let tokens: Vec<String> = s.tokens.iter().map(|t| occurrence(t, n)).collect();
                    let (line, name) = (s.line, s.name.clone());
                    self.now = t;
                    self.feed(line, &name, &tokens)?;
                }
                (_, Some(d)) if within(d) => {
                    at_once = if d == self.now { at_once + 1 } else { 0 };
                    if at_once > MAX_TICKS_AT_ONCE {
                        return Err(self.fail(line, format!("the node is always due at {}", ms(d))));
                    }
                    self.now = d;
                    self.feed(line, "tick", &[])?;
                }
                _ => return Ok(()),
            }
        }
    }

    fn feed(&mut self, line: usize, name: &str, tokens: &[String]) -> Result<(), CaseFailure> {
        let mut f = Fields::from_tokens(tokens.iter().map(String::as_str))
            .map_err(|e| self.fail(line, e.to_string()))?;
        let effects = self
            .node
            .feed(self.now, name, &mut f)
            .map_err(|e| self.fail(line, format!("{name}: {e}")))?;
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
        if got.len() != items.len() {
            let want: Vec<&str> = items.iter().map(|(_, s)| s.as_str()).collect();
            return Err(self.fail(
                line,
                format!(
                    "expected {} effect(s) {want:?}, got {}:{}",
                    items.len(),
                    got.len(),
                    list(&got)
                ),
            ));
        }
        for ((n, want), (at, text)) in items.iter().zip(&got) {
            let mut w = want.split_whitespace();
            let mut ok = w.next() == text.split_whitespace().next();
            for tok in w {
                let time = |v: &str| TimeSpec::parse(v).map(|t| t.resolve(Nanos::ZERO));
                ok &= if let Some(v) = tok.strip_prefix("at<=") {
                    time(v).is_some_and(|t| *at <= t)
                } else if let Some(v) = tok.strip_prefix("at>=") {
                    time(v).is_some_and(|t| *at >= t)
                } else if let Some(v) = tok.strip_prefix("at=") {
                    time(v).is_some_and(|t| *at == t)
                } else {
                    text.split_whitespace().any(|a| a == tok)
                };
            }
            if !ok {
                return Err(self.fail(
                    *n,
                    format!(
                        "expected `{want}`, got `{text}` at {} (all:{})",
                        ms(*at),
                        list(&got)
                    ),
                ));
            }
        }
        Ok(())
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
