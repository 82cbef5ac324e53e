//! Data-driven fault cases for the decision cores (raft-rs `testdata` style).
//!
//! A file holds cases; a case drives one core with time-stamped inputs and states the actions it
//! must produce, every one of them (actions named in `ignore` excepted). Format:
//!
//! ```text
//! # comment
//! case F1 primary crash: quorum says down, activate      # starts a case
//! role standby                 # standby | primary | witness
//! set hb-timeout=50ms lease=2s # configuration keys (CONFIG_KEYS), before the first input
//! epoch 1                      # initial epoch (default 1)
//! replica 0                    # standby: applied checkpoint, or `none` (default 0)
//! id 2                         # witness: its id (default 1)
//! restarted                    # witness: start as a restarted witness (quiet period)
//! autotick 1ms                 # tick the core every 1ms between inputs (default), or `off`
//! ignore ack withdraw          # action names not checked in this case
//!
//! every 10ms until 300ms: heartbeat link=0        # a stream from now (or `from <t>`) until t,
//! every 10ms from 0 until 2s drop 30% seed 7 jitter 3ms: heartbeat   # with loss and jitter
//! every 25ms until 1s: ckpt-sent ckpt={n}       # {n} is the occurrence number, 1, 2, ...
//! 305ms replica ckpt=12        # one input at an absolute time (or `+5ms`, relative to now)
//! > ack ckpt=12                # the actions since the last `>` block, in order
//! run 400ms                    # advance time (streams and ticks up to and including 400ms)
//! > query kind=takeover at<=360ms
//! > none                       # no action since the last block
//! check state=deciding         # a query on the core's state
//! ```
//!
//! Streams and ticks run up to (excluding) each explicit input's time; an explicit input runs after
//! them. An expected action matches if its first word equals the action's and each further token
//! appears in the action's canonical text (see [`hsb_common::decision::record`]); `at=T`, `at<=T`, `at>=T` check the
//! action's time. Every action with evidence must also round-trip through its JSON line.
//!
//! Checks: standby `state`, `epoch`, `replica`, `suspected`, `may-ack`, `may-send-alive`; primary `mode`,
//! `may-release`, `epoch`, `last-acked`, `standby-present`, `standby-lost`; witness `epoch-seen`, `app`,
//! `primary-host`, `standby-host`, `busy`, `app-rate`, `primary-rate`, `standby-rate` (percent
//! or `none`).

use core::fmt;
use core::time::Duration;

use hsb_common::decision::record::{AnyInput, Defaults, Fields};
use hsb_common::decision::replay::AnyAction;
use hsb_common::decision::{
    elapsed, later, parse_duration, Config, Epoch, Evidence, Nanos, PrimaryAuthority, Role,
    StandbyCore, WitnessCore, WitnessId,
};
use hsb_common::rng::SplitMix64;

/// Longest case file read.
pub const MAX_FILE: usize = 1 << 20;
/// Most steps in one case.
pub const MAX_STEPS: usize = 10_000;
/// Most simulated time in one case with autotick on (keeps a typo from ticking for ever).
pub const MAX_CASE_TIME: Duration = Duration::from_secs(3_600);

/// A time in a case: absolute, or relative to the current time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSpec {
    /// Since the start of the case.
    Abs(Duration),
    /// After the current time.
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
            TimeSpec::Abs(d) => later(Nanos::ZERO, d),
            TimeSpec::Rel(d) => later(now, d),
        }
    }
}

/// One step of a case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// One input.
    Input {
        /// Source line.
        line: usize,
        /// When.
        at: TimeSpec,
        /// Input name.
        name: String,
        /// `key=value` tokens.
        tokens: Vec<String>,
    },
    /// A periodic input.
    Every {
        /// Source line.
        line: usize,
        /// Period.
        period: Duration,
        /// First time (default: now).
        from: Option<TimeSpec>,
        /// Last time (inclusive).
        until: TimeSpec,
        /// Percentage dropped.
        drop_pct: u64,
        /// Seed for drops and jitter.
        seed: u64,
        /// Uniform extra delay bound.
        jitter: Duration,
        /// Input name.
        name: String,
        /// `key=value` tokens.
        tokens: Vec<String>,
    },
    /// Advance time to (and including) this.
    Run {
        /// Source line.
        line: usize,
        /// Until.
        to: TimeSpec,
    },
    /// Expected actions since the previous block (empty: none).
    Expect {
        /// Source line of each expectation.
        items: Vec<(usize, String)>,
        /// Source line of the block.
        line: usize,
    },
    /// A query on the core.
    Check {
        /// Source line.
        line: usize,
        /// What.
        key: String,
        /// Expected value.
        value: String,
    },
}

/// One case.
#[derive(Debug, Clone)]
pub struct Case {
    /// Its name (the rest of the `case` line).
    pub name: String,
    /// Line of the `case` line.
    pub line: usize,
    /// The core driven.
    pub role: Role,
    /// Configuration.
    pub config: Config,
    /// Initial epoch.
    pub epoch: Epoch,
    /// Standby: initial replica checkpoint.
    pub replica: Option<u64>,
    /// Witness: id.
    pub witness: WitnessId,
    /// Witness: starts as restarted.
    pub restarted: bool,
    /// Automatic tick period.
    pub autotick: Option<Duration>,
    /// Action names not checked.
    pub ignore: Vec<String>,
    /// The steps.
    pub steps: Vec<Step>,
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

impl std::error::Error for CaseError {}

/// A case whose core did not do what the case says.
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

impl std::error::Error for CaseFailure {}

fn err(line: usize, message: impl Into<String>) -> CaseError {
    CaseError {
        line,
        message: message.into(),
    }
}

/// Parse every case of a file.
pub fn parse_cases(text: &str) -> Result<Vec<Case>, CaseError> {
    if text.len() > MAX_FILE {
        return Err(err(0, "case file larger than 1 MiB"));
    }
    let mut cases: Vec<Case> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = match raw.find('#') {
            Some(p) => &raw[..p],
            None => raw,
        }
        .trim();
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix("case ") {
            cases.push(Case {
                name: name.trim().to_string(),
                line: n,
                role: Role::Standby,
                config: Config::default(),
                epoch: Epoch::FIRST,
                replica: Some(0),
                witness: 1,
                restarted: false,
                autotick: Some(Duration::from_millis(1)),
                ignore: Vec::new(),
                steps: Vec::new(),
            });
            continue;
        }
        let Some(case) = cases.last_mut() else {
            return Err(err(n, "expected `case <name>` first"));
        };
        if case.steps.len() >= MAX_STEPS {
            return Err(err(n, "more than 10000 steps in one case"));
        }
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or_default();
        let header_done = !case.steps.is_empty();
        match first {
            "role" | "set" | "epoch" | "replica" | "id" | "restarted" | "autotick" | "ignore"
                if header_done =>
            {
                return Err(err(n, format!("`{first}` must come before the first step")));
            }
            "role" => {
                let w = words.next().unwrap_or_default();
                case.role = Role::parse(w)
                    .ok_or_else(|| err(n, "role: expected standby, primary or witness"))?;
            }
            "set" => {
                let mut pairs = Vec::new();
                for t in words {
                    let (k, v) = t
                        .split_once('=')
                        .ok_or_else(|| err(n, format!("set: expected key=value, got {t:?}")))?;
                    pairs.push((k, v));
                }
                // The keys of one line together, then their relations (as a daemon does).
                case.config
                    .set_many(&pairs)
                    .map_err(|e| err(n, e.to_string()))?;
            }
            "epoch" => {
                case.epoch = Epoch(
                    words
                        .next()
                        .and_then(|w| w.parse().ok())
                        .ok_or_else(|| err(n, "epoch: expected an integer"))?,
                );
            }
            "replica" => {
                case.replica = match words.next() {
                    Some("none") => None,
                    w => Some(
                        w.and_then(|w| w.parse().ok())
                            .ok_or_else(|| err(n, "replica: expected an integer or none"))?,
                    ),
                };
            }
            "id" => {
                case.witness = words
                    .next()
                    .and_then(|w| w.parse().ok())
                    .ok_or_else(|| err(n, "id: expected 0-255"))?;
            }
            "restarted" => case.restarted = true,
            "autotick" => {
                case.autotick = match words.next() {
                    Some("off") => None,
                    w => Some(
                        w.and_then(parse_duration)
                            .filter(|d| !d.is_zero())
                            .ok_or_else(|| err(n, "autotick: expected a duration or off"))?,
                    ),
                };
            }
            "ignore" => case.ignore.extend(words.map(str::to_string)),
            ">" => {
                let rest = line[1..].trim().to_string();
                if rest.is_empty() {
                    return Err(err(n, "expected an action (or `none`) after `>`"));
                }
                let is_none = rest == "none";
                match case.steps.last_mut() {
                    Some(Step::Expect { items, .. }) if !is_none && !items.is_empty() => {
                        items.push((n, rest))
                    }
                    _ => case.steps.push(Step::Expect {
                        items: if is_none { vec![] } else { vec![(n, rest)] },
                        line: n,
                    }),
                }
                for t in line[1..].split_whitespace() {
                    if let Some(v) = t
                        .strip_prefix("at<=")
                        .or(t.strip_prefix("at>="))
                        .or(t.strip_prefix("at="))
                    {
                        TimeSpec::parse(v).ok_or_else(|| err(n, format!("bad time in {t:?}")))?;
                    }
                }
            }
            "check" => {
                let t = words.next().unwrap_or_default();
                let (k, v) = t
                    .split_once('=')
                    .ok_or_else(|| err(n, "check: expected key=value"))?;
                case.steps.push(Step::Check {
                    line: n,
                    key: k.to_string(),
                    value: v.to_string(),
                });
            }
            "run" => {
                let to = words
                    .next()
                    .and_then(TimeSpec::parse)
                    .ok_or_else(|| err(n, "run: expected a time"))?;
                case.steps.push(Step::Run { line: n, to });
            }
            "every" => {
                let (head, input) = line
                    .split_once(':')
                    .ok_or_else(|| err(n, "every: expected `every <period> ...: <input>`"))?;
                let mut h = head.split_whitespace().skip(1);
                let period = h
                    .next()
                    .and_then(parse_duration)
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| err(n, "every: expected a period"))?;
                let (mut from, mut until, mut drop_pct, mut seed, mut jitter) =
                    (None, None, 0, 1, Duration::ZERO);
                while let Some(k) = h.next() {
                    let v = h
                        .next()
                        .ok_or_else(|| err(n, format!("every: {k} needs a value")))?;
                    match k {
                        "from" => {
                            from = Some(
                                TimeSpec::parse(v).ok_or_else(|| err(n, "every: bad from time"))?,
                            )
                        }
                        "until" => {
                            until = Some(
                                TimeSpec::parse(v)
                                    .ok_or_else(|| err(n, "every: bad until time"))?,
                            )
                        }
                        "drop" => {
                            drop_pct = v
                                .strip_suffix('%')
                                .and_then(|p| p.parse().ok())
                                .filter(|p| *p <= 100)
                                .ok_or_else(|| err(n, "every: drop expects 0%-100%"))?
                        }
                        "seed" => {
                            seed = v
                                .parse()
                                .map_err(|_| err(n, "every: seed expects an integer"))?
                        }
                        "jitter" => {
                            jitter = parse_duration(v)
                                .ok_or_else(|| err(n, "every: jitter expects a duration"))?
                        }
                        _ => return Err(err(n, format!("every: unknown option {k:?}"))),
                    }
                }
                let until = until.ok_or_else(|| err(n, "every: `until <time>` is required"))?;
                let (name, tokens) = input_tokens(case, n, input)?;
                case.steps.push(Step::Every {
                    line: n,
                    period,
                    from,
                    until,
                    drop_pct,
                    seed,
                    jitter,
                    name,
                    tokens,
                });
            }
            t => {
                let at = TimeSpec::parse(t)
                    .ok_or_else(|| err(n, format!("expected a directive or a time, got {t:?}")))?;
                let rest = line[t.len()..].trim();
                let (name, tokens) = input_tokens(case, n, rest)?;
                case.steps.push(Step::Input {
                    line: n,
                    at,
                    name,
                    tokens,
                });
            }
        }
    }
    Ok(cases)
}

/// Split an input and check that it parses (with provisional defaults).
fn input_tokens(case: &Case, n: usize, text: &str) -> Result<(String, Vec<String>), CaseError> {
    let mut w = text.split_whitespace();
    let name = w
        .next()
        .ok_or_else(|| err(n, "expected an input"))?
        .to_string();
    let tokens: Vec<String> = w.map(str::to_string).collect();
    let probe: Vec<String> = tokens.iter().map(|t| t.replace("{n}", "1")).collect();
    let mut f =
        Fields::from_tokens(probe.iter().map(String::as_str)).map_err(|e| err(n, e.to_string()))?;
    let d = Defaults {
        epoch: case.epoch,
        lease: case.config.lease.duration,
    };
    AnyInput::parse(case.role, &name, &mut f, d).map_err(|e| err(n, format!("{name}: {e}")))?;
    Ok((name, tokens))
}

enum Core {
    Standby(Box<StandbyCore>),
    Primary(Box<PrimaryAuthority>),
    Witness(Box<WitnessCore>),
}

struct Stream {
    line: usize,
    next: Nanos,
    period: Duration,
    until: Nanos,
    drop_pct: u64,
    rng: SplitMix64,
    jitter: Duration,
    count: u64,
    name: String,
    tokens: Vec<String>,
}

struct Runner<'c> {
    case: &'c Case,
    core: Core,
    now: Nanos,
    last_tick: Nanos,
    streams: Vec<Stream>,
    got: Vec<(Nanos, String)>,
}

/// What a case run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RunSummary {
    /// Inputs fed.
    pub inputs: u64,
    /// Actions checked.
    pub actions: u64,
}

/// Run one case.
pub fn run_case(case: &Case) -> Result<RunSummary, CaseFailure> {
    let cfg = case.config.clone();
    let core = match case.role {
        Role::Standby => Core::Standby(Box::new(StandbyCore::new(
            cfg,
            case.epoch,
            Nanos::ZERO,
            case.replica,
        ))),
        Role::Primary => Core::Primary(Box::new(PrimaryAuthority::new(
            cfg,
            case.epoch,
            Nanos::ZERO,
        ))),
        Role::Witness => Core::Witness(Box::new(if case.restarted {
            WitnessCore::new(cfg, case.witness, Nanos::ZERO, None)
        } else {
            WitnessCore::first_boot(cfg, case.witness, Nanos::ZERO)
        })),
    };
    let mut r = Runner {
        case,
        core,
        now: Nanos::ZERO,
        last_tick: Nanos::ZERO,
        streams: Vec::new(),
        got: Vec::new(),
    };
    let mut summary = RunSummary::default();
    for step in &case.steps {
        match step {
            Step::Input {
                line,
                at,
                name,
                tokens,
            } => {
                let t = at.resolve(r.now);
                r.check_time(*line, t)?;
                r.advance(t, false, &mut summary)?;
                r.now = t;
                r.feed(*line, name, tokens, &mut summary)?;
            }
            Step::Every {
                line,
                period,
                from,
                until,
                drop_pct,
                seed,
                jitter,
                name,
                tokens,
            } => {
                let until = until.resolve(r.now);
                r.check_time(*line, until)?;
                r.streams.push(Stream {
                    line: *line,
                    next: from.map_or(r.now, |f| f.resolve(r.now)).max(r.now),
                    period: *period,
                    until,
                    drop_pct: *drop_pct,
                    rng: SplitMix64::new(*seed),
                    jitter: *jitter,
                    count: 0,
                    name: name.clone(),
                    tokens: tokens.clone(),
                });
            }
            Step::Run { line, to } => {
                let t = to.resolve(r.now);
                r.check_time(*line, t)?;
                r.advance(t, true, &mut summary)?;
                r.now = r.now.max(t);
            }
            Step::Expect { items, line } => {
                summary.actions += r.got.len() as u64;
                r.expect(*line, items)?;
            }
            Step::Check { line, key, value } => r.check(*line, key, value)?,
        }
    }
    if !r.got.is_empty() {
        return Err(r.fail(
            case.steps.len().max(case.line),
            format!("unexpected actions at the end: {}", list(&r.got)),
        ));
    }
    Ok(summary)
}

fn list(got: &[(Nanos, String)]) -> String {
    if got.is_empty() {
        return "none".into();
    }
    got.iter()
        .map(|(t, a)| format!("\n    {:.3}ms {a}", t.0 as f64 / 1e6))
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

    fn check_time(&self, line: usize, t: Nanos) -> Result<(), CaseFailure> {
        if t < self.now {
            return Err(self.fail(
                line,
                format!(
                    "time {:.3}ms is before the current time {:.3}ms",
                    t.0 as f64 / 1e6,
                    self.now.0 as f64 / 1e6
                ),
            ));
        }
        if self.case.autotick.is_some() && elapsed(t, Nanos::ZERO) > MAX_CASE_TIME {
            return Err(self.fail(line, "time beyond one hour with autotick on".into()));
        }
        Ok(())
    }

    /// Run streams and ticks up to `to` (inclusive or not).
    fn advance(
        &mut self,
        to: Nanos,
        inclusive: bool,
        s: &mut RunSummary,
    ) -> Result<(), CaseFailure> {
        let within = |t: Nanos| if inclusive { t <= to } else { t < to };
        loop {
            let stream = self
                .streams
                .iter()
                .enumerate()
                .filter(|(_, st)| st.next <= st.until)
                .min_by_key(|(_, st)| st.next)
                .map(|(i, st)| (i, st.next));
            let tick = self.case.autotick.map(|p| later(self.last_tick, p));
            match (stream, tick) {
                (Some((i, t)), tk) if within(t) && tk.is_none_or(|tk| t <= tk) => {
                    let (line, name, tokens, at, dropped) = {
                        let st = &mut self.streams[i];
                        st.next = later(st.next, st.period);
                        st.count += 1;
                        let n = st.count.to_string();
                        let tokens: Vec<String> =
                            st.tokens.iter().map(|t| t.replace("{n}", &n)).collect();
                        let dropped = st.drop_pct > 0 && st.rng.below(100) < st.drop_pct;
                        let j = if st.jitter.is_zero() {
                            0
                        } else {
                            st.rng.below(hsb_common::decision::nanos_of(st.jitter))
                        };
                        (
                            st.line,
                            st.name.clone(),
                            tokens,
                            Nanos(t.0.saturating_add(j)),
                            dropped,
                        )
                    };
                    if !dropped {
                        self.now = self.now.max(at);
                        self.feed(line, &name, &tokens, s)?;
                    }
                }
                (_, Some(tk)) if within(tk) => {
                    self.last_tick = tk;
                    self.now = self.now.max(tk);
                    self.feed(0, "tick", &[], s)?;
                }
                _ => return Ok(()),
            }
        }
    }

    fn epoch(&self) -> Epoch {
        match &self.core {
            Core::Standby(c) => c.epoch(),
            Core::Primary(c) => c.epoch(),
            Core::Witness(c) => c.epoch_seen(),
        }
    }

    fn feed(
        &mut self,
        line: usize,
        name: &str,
        tokens: &[String],
        s: &mut RunSummary,
    ) -> Result<(), CaseFailure> {
        let mut f = Fields::from_tokens(tokens.iter().map(String::as_str))
            .map_err(|e| self.fail(line, e.to_string()))?;
        let d = Defaults {
            epoch: self.epoch(),
            lease: self.case.config.lease.duration,
        };
        let input = AnyInput::parse(self.case.role, name, &mut f, d)
            .map_err(|e| self.fail(line, e.to_string()))?;
        s.inputs += 1;
        let now = self.now;
        let actions: Vec<AnyAction> = match (&mut self.core, input) {
            (Core::Standby(c), AnyInput::Standby(i)) => {
                c.step(now, i).into_iter().map(AnyAction::Standby).collect()
            }
            (Core::Primary(c), AnyInput::Primary(i)) => {
                c.step(now, i).into_iter().map(AnyAction::Primary).collect()
            }
            (Core::Witness(c), AnyInput::Witness(i)) => {
                c.step(now, i).into_iter().map(AnyAction::Witness).collect()
            }
            _ => return Err(self.fail(line, "input for another role".into())),
        };
        for a in actions {
            if let Some(e) = a.evidence() {
                let back = Evidence::from_json_line(&e.to_json_line());
                if back.as_ref() != Ok(e) {
                    return Err(self.fail(
                        line,
                        format!("evidence does not round-trip: {e:?} -> {back:?}"),
                    ));
                }
            }
            let text = a.to_string();
            let first = text.split_whitespace().next().unwrap_or_default();
            if !self.case.ignore.iter().any(|i| i == first) {
                self.got.push((now, text));
            }
        }
        Ok(())
    }

    fn expect(&mut self, line: usize, items: &[(usize, String)]) -> Result<(), CaseFailure> {
        let got = std::mem::take(&mut self.got);
        if got.len() != items.len() {
            let want: Vec<&str> = items.iter().map(|(_, s)| s.as_str()).collect();
            return Err(self.fail(
                line,
                format!(
                    "expected {} action(s) {want:?}, got {}:{}",
                    items.len(),
                    got.len(),
                    list(&got)
                ),
            ));
        }
        for ((n, want), (at, text)) in items.iter().zip(&got) {
            let mut w = want.split_whitespace();
            let ok_first = w.next() == text.split_whitespace().next();
            let mut ok = ok_first;
            for tok in w {
                if let Some(v) = tok.strip_prefix("at<=") {
                    ok &= TimeSpec::parse(v).is_some_and(|t| *at <= t.resolve(Nanos::ZERO));
                } else if let Some(v) = tok.strip_prefix("at>=") {
                    ok &= TimeSpec::parse(v).is_some_and(|t| *at >= t.resolve(Nanos::ZERO));
                } else if let Some(v) = tok.strip_prefix("at=") {
                    ok &= TimeSpec::parse(v).is_some_and(|t| *at == t.resolve(Nanos::ZERO));
                } else {
                    ok &= text.split_whitespace().any(|a| a == tok);
                }
            }
            if !ok {
                return Err(self.fail(
                    *n,
                    format!(
                        "expected `{want}`, got `{text}` at {:.3}ms (all:{})",
                        at.0 as f64 / 1e6,
                        list(&got)
                    ),
                ));
            }
        }
        Ok(())
    }

    fn check(&self, line: usize, key: &str, want: &str) -> Result<(), CaseFailure> {
        let now = self.now;
        let rate = |r: Option<u8>| r.map_or("none".into(), |r| r.to_string());
        let got: Option<String> = match &self.core {
            Core::Standby(c) => match key {
                "state" => Some(c.state().name().into()),
                "epoch" => Some(c.epoch().to_string()),
                "replica" => Some(c.replica().map_or("none".into(), |r| r.to_string())),
                "suspected" => Some(c.detector().suspected().to_string()),
                "may-ack" => Some(c.may_ack().to_string()),
                "may-send-alive" => Some(c.may_send_alive(now).to_string()),
                _ => None,
            },
            Core::Primary(c) => match key {
                "mode" => Some(c.mode(now).name().into()),
                "may-release" => Some(c.may_release_output(now).to_string()),
                "epoch" => Some(c.epoch().to_string()),
                "last-acked" => Some(c.last_acked().to_string()),
                "standby-present" => Some(c.standby_present(now).to_string()),
                "standby-lost" => Some(c.standby_lost(now).to_string()),
                _ => None,
            },
            Core::Witness(c) => match key {
                "epoch-seen" => Some(c.epoch_seen().to_string()),
                "app" => Some(c.view(now).app.name().into()),
                "primary-host" => Some(c.view(now).primary_host.to_string()),
                "standby-host" => Some(c.view(now).standby_host.to_string()),
                "busy" => Some((!c.busy_for(now).is_zero()).to_string()),
                "app-rate" => Some(rate(c.rates(now).app)),
                "primary-rate" => Some(rate(c.rates(now).primary)),
                "standby-rate" => Some(rate(c.rates(now).standby)),
                _ => None,
            },
        };
        match got {
            None => Err(self.fail(
                line,
                format!("unknown check {key:?} for role {}", self.case.role.name()),
            )),
            Some(g) if g == want => Ok(()),
            Some(g) => Err(self.fail(
                line,
                format!(
                    "check {key}: expected {want}, got {g} at {:.3}ms",
                    now.0 as f64 / 1e6
                ),
            )),
        }
    }
}

#[cfg(test)]
#[path = "casefile_tests.rs"]
mod tests;
