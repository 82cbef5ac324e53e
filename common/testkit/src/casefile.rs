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
//! or `none`).//!
//! The syntax and the running the node cases of `hsb-tests` share with these live in
//! [`syntax`] and [`drive`]; the decision cores are driven in `run`.

pub mod drive;
mod run;
pub mod syntax;

use core::time::Duration;

use hsb_common::decision::parse_duration;
use hsb_common::decision::record::{AnyInput, Defaults, Fields};
use hsb_common::decision::{Config, Epoch, Role, WitnessId};

pub use run::{run_case, RunSummary};
use syntax::{err, every_parts, input_time, push_expect, CaseKind};
pub use syntax::{CaseError, CaseFailure, Step, TimeSpec, MAX_FILE, MAX_STEPS};

/// Most simulated time in one case with autotick on (keeps a typo from ticking for ever).
pub const MAX_CASE_TIME: Duration = Duration::from_secs(3_600);

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

/// Parse every case of a file.
pub fn parse_cases(text: &str) -> Result<Vec<Case>, CaseError> {
    syntax::parse_file(text)
}

impl CaseKind for Case {
    const HEADER: &'static [&'static str] = &[
        "role",
        "set",
        "epoch",
        "replica",
        "id",
        "restarted",
        "autotick",
        "ignore",
    ];

    fn new(name: String, line: usize) -> Case {
        Case {
            name,
            line,
            role: Role::Standby,
            config: Config::default(),
            epoch: Epoch::FIRST,
            replica: Some(0),
            witness: 1,
            restarted: false,
            autotick: Some(Duration::from_millis(1)),
            ignore: Vec::new(),
            steps: Vec::new(),
        }
    }

    fn steps(&mut self) -> &mut Vec<Step> {
        &mut self.steps
    }

    fn line(&mut self, n: usize, first: &str, line: &str) -> Result<(), CaseError> {
        let case = self;
        let mut words = line.split_whitespace();
        words.next();
        match first {
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
                push_expect(&mut case.steps, n, line, "an action")?;
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
            "every" => {
                let (period, mut h, input) = every_parts(n, line, "input")?;
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
                let at = input_time(n, t)?;
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
        Ok(())
    }
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

#[cfg(test)]
#[path = "casefile_tests.rs"]
mod tests;
