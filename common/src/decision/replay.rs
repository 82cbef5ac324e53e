//! Offline replay (rule 7): feed a recorded input log through the cores again, under any policy.
//!
//! The log is what a daemon records (see [`super::record`]): one JSON object per line, `"k"` =
//! `config` (creates the core of its `role`), `input` (one input at time `t`) or `evidence` (skipped;
//! the decisions are recomputed). Blank lines are skipped. An input for a role with no config record
//! yet gets a core with the default configuration, epoch 1, created at that input's time.

use core::fmt;

use super::json::{self, Value};
use super::record::{AnyInput, Defaults, FieldError, Fields};
use super::{
    parse_duration, primary, standby, witness, Config, ConfigError, Epoch, Evidence, Nanos, Policy,
    PrimaryAuthority, Role, StandbyCore, WitnessCore, CONFIG_KEYS,
};

/// An action of any core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnyAction {
    /// From the standby core.
    Standby(standby::Action),
    /// From the primary authority.
    Primary(primary::Action),
    /// From a witness core.
    Witness(witness::Action),
}

impl AnyAction {
    /// The core that decided.
    pub fn role(&self) -> Role {
        match self {
            AnyAction::Standby(_) => Role::Standby,
            AnyAction::Primary(_) => Role::Primary,
            AnyAction::Witness(_) => Role::Witness,
        }
    }

    /// The evidence, for decisions that carry one.
    pub fn evidence(&self) -> Option<&Evidence> {
        match self {
            AnyAction::Standby(a) => a.evidence(),
            AnyAction::Primary(a) => a.evidence(),
            AnyAction::Witness(_) => None,
        }
    }
}

impl fmt::Display for AnyAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AnyAction::Standby(a) => a.fmt(f),
            AnyAction::Primary(a) => a.fmt(f),
            AnyAction::Witness(a) => a.fmt(f),
        }
    }
}

/// One action produced during replay, with its time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// When (the input's time).
    pub at: Nanos,
    /// What.
    pub action: AnyAction,
}

impl Decision {
    /// Whether this is a decision with evidence (activate, cannot-decide, fence, ...) rather than
    /// protocol traffic (queries, acks, lease requests).
    pub fn has_evidence(&self) -> bool {
        self.action.evidence().is_some()
    }
}

impl fmt::Display for Decision {
    /// `12.345ms standby activate epoch=2 rule=...`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:.3}ms {} {}",
            self.at.0 as f64 / 1e6,
            self.action.role().name(),
            self.action
        )
    }
}

/// Why a log does not replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong there.
    pub kind: ReplayErrorKind,
}

/// What is wrong with a replay line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayErrorKind {
    /// Not JSON (as written by the recorder).
    Json(json::JsonError),
    /// A record field.
    Field(FieldError),
    /// A configuration value.
    Config(ConfigError),
    /// A record kind other than config, input, evidence.
    UnknownKind(String),
    /// Time went backwards.
    TimeBackwards {
        /// Previous time.
        previous: u64,
        /// This line's time.
        t: u64,
    },
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: ", self.line)?;
        match &self.kind {
            ReplayErrorKind::Json(e) => write!(f, "{e}"),
            ReplayErrorKind::Field(e) => write!(f, "{e}"),
            ReplayErrorKind::Config(e) => write!(f, "{e}"),
            ReplayErrorKind::UnknownKind(k) => write!(
                f,
                "unknown record kind {k:?} (expected config, input or evidence)"
            ),
            ReplayErrorKind::TimeBackwards { previous, t } => {
                write!(f, "time {t} is before {previous}")
            }
        }
    }
}

impl std::error::Error for ReplayError {}

/// The cores being replayed.
#[derive(Debug, Default)]
struct Cores {
    standby: Option<StandbyCore>,
    primary: Option<PrimaryAuthority>,
    witness: Option<WitnessCore>,
}

/// Replay `lines` under `policy` (overriding the recorded one); every action, in order.
pub fn replay<'a>(
    lines: impl Iterator<Item = &'a str>,
    policy: Policy,
) -> Result<Vec<Decision>, ReplayError> {
    let mut cores = Cores::default();
    let mut out = Vec::new();
    let mut last_t = 0u64;
    for (i, line) in lines.enumerate() {
        let n = i + 1;
        let err = |kind| ReplayError { line: n, kind };
        if line.trim().is_empty() {
            continue;
        }
        let v = json::parse(line).map_err(|e| err(ReplayErrorKind::Json(e)))?;
        let kind = v.get("k").and_then(Value::as_text).unwrap_or_default();
        if kind == "evidence" {
            continue;
        }
        let t = v
            .get("t")
            .and_then(Value::as_text)
            .and_then(|s| parse_duration(&s))
            .map(super::nanos_of)
            .ok_or_else(|| err(ReplayErrorKind::Field(FieldError::Missing("t"))))?;
        if t < last_t {
            return Err(err(ReplayErrorKind::TimeBackwards {
                previous: last_t,
                t,
            }));
        }
        last_t = t;
        let now = Nanos(t);
        // `wall` is the wall clock beside `t`, for people (crate::recorder): never an input.
        let mut f = Fields::from_json(&v, &["k", "t", "wall", "continued"])
            .map_err(|e| err(ReplayErrorKind::Field(e)))?;
        let role = f
            .word("role", "standby, primary or witness", Role::parse)
            .map_err(|e| err(ReplayErrorKind::Field(e)))?;
        // A rotated or reopened log file starts with the config record again, marked
        // `continued`: the same core goes on, unless this file is replayed alone.
        let continued = v.get("continued") == Some(&Value::Bool(true));
        match kind.as_str() {
            "config" if continued && has_core(&cores, role) => {}
            "config" => {
                let epoch = f
                    .epoch_or("epoch", Epoch::FIRST)
                    .map_err(|e| err(ReplayErrorKind::Field(e)))?;
                let replica = f
                    .opt_u64("replica")
                    .map_err(|e| err(ReplayErrorKind::Field(e)))?;
                let wid = f
                    .opt_u64("witness")
                    .map_err(|e| err(ReplayErrorKind::Field(e)))?;
                let seq_base = f
                    .opt_u64("seq-base")
                    .map_err(|e| err(ReplayErrorKind::Field(e)))?
                    .and_then(|b| u32::try_from(b).ok())
                    .unwrap_or(0);
                let resume_at = f
                    .opt_u64("resume-at")
                    .map_err(|e| err(ReplayErrorKind::Field(e)))?
                    .unwrap_or(0);
                let mut cfg = Config::default();
                let pairs = f.rest();
                if let Some((k, _)) = pairs
                    .iter()
                    .find(|(k, _)| !CONFIG_KEYS.contains(&k.as_str()))
                {
                    return Err(err(ReplayErrorKind::Field(FieldError::Unknown(k.clone()))));
                }
                // All keys, then their relations: a recorded lease above the default lease-max
                // comes before its lease-max.
                let refs: Vec<(&str, &str)> = pairs
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                cfg.set_many(&refs)
                    .map_err(|e| err(ReplayErrorKind::Config(e)))?;
                cfg.policy = policy;
                match role {
                    Role::Standby => {
                        cores.standby = Some(
                            StandbyCore::new(cfg, epoch, now, replica).with_query_base(seq_base),
                        )
                    }
                    Role::Primary => {
                        cores.primary = Some(
                            PrimaryAuthority::new(cfg, epoch, now)
                                .resume_at(resume_at)
                                .with_request_base(seq_base),
                        )
                    }
                    Role::Witness => {
                        let id = u8::try_from(wid.unwrap_or(1)).map_err(|_| {
                            err(ReplayErrorKind::Field(FieldError::Bad {
                                key: "witness".into(),
                                value: wid.unwrap_or(0).to_string(),
                                expected: "a witness id 0-255",
                            }))
                        })?;
                        cores.witness = Some(WitnessCore::first_boot(cfg, id, now));
                    }
                }
            }
            "input" => {
                let name = f
                    .take("in")
                    .ok_or_else(|| err(ReplayErrorKind::Field(FieldError::Missing("in"))))?;
                let cfg = Config {
                    policy,
                    ..Config::default()
                };
                let defaults = Defaults {
                    epoch: current_epoch(&cores, role),
                    lease: cfg.lease.duration,
                };
                let input = AnyInput::parse(role, &name, &mut f, defaults)
                    .map_err(|e| err(ReplayErrorKind::Field(e)))?;
                feed(&mut cores, now, input, cfg, &mut out);
            }
            other => return Err(err(ReplayErrorKind::UnknownKind(other.to_string()))),
        }
    }
    Ok(out)
}

fn has_core(c: &Cores, role: Role) -> bool {
    match role {
        Role::Standby => c.standby.is_some(),
        Role::Primary => c.primary.is_some(),
        Role::Witness => c.witness.is_some(),
    }
}

fn current_epoch(c: &Cores, role: Role) -> Epoch {
    match role {
        Role::Standby => c.standby.as_ref().map(StandbyCore::epoch),
        Role::Primary => c.primary.as_ref().map(PrimaryAuthority::epoch),
        Role::Witness => c.witness.as_ref().map(WitnessCore::epoch_seen),
    }
    .unwrap_or(Epoch::FIRST)
}

fn feed(c: &mut Cores, now: Nanos, input: AnyInput, cfg: Config, out: &mut Vec<Decision>) {
    match input {
        AnyInput::Standby(i) => {
            let core = c
                .standby
                .get_or_insert_with(|| StandbyCore::new(cfg, Epoch::FIRST, now, Some(0)));
            for a in core.step(now, i) {
                out.push(Decision {
                    at: now,
                    action: AnyAction::Standby(a),
                });
            }
        }
        AnyInput::Primary(i) => {
            let core = c
                .primary
                .get_or_insert_with(|| PrimaryAuthority::new(cfg, Epoch::FIRST, now));
            for a in core.step(now, i) {
                out.push(Decision {
                    at: now,
                    action: AnyAction::Primary(a),
                });
            }
        }
        AnyInput::Witness(i) => {
            let core = c
                .witness
                .get_or_insert_with(|| WitnessCore::first_boot(cfg, 1, now));
            for a in core.step(now, i) {
                out.push(Decision {
                    at: now,
                    action: AnyAction::Witness(a),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::proto::{AppVerdict, Verdict, Vote, WitnessView};
    use crate::decision::record::{config_line, Start};
    use core::time::Duration;

    fn ms(n: u64) -> Nanos {
        Nanos::from_millis(n)
    }

    /// A recorded crash: heartbeats stop, the first query times out (no quorum), two witnesses vote
    /// in the second. Replayed under each policy.
    fn log() -> Vec<String> {
        let cfg = Config::default();
        let mut v = vec![config_line(
            ms(0),
            Role::Standby,
            Epoch(1),
            &cfg,
            // The daemon numbers its queries from a random base: the replay must, too.
            Start {
                replica: Some(0),
                seq_base: 4_000_000_000,
                ..Start::default()
            },
        )];
        let input = |t, i| AnyInput::Standby(i).to_json_line(ms(t));
        for t in (0..=100).step_by(10) {
            v.push(input(
                t,
                standby::Input::Heartbeat {
                    link: 0,
                    epoch: Epoch(1),
                },
            ));
        }
        v.push(input(
            101,
            standby::Input::ReplicaApplied {
                ckpt: 5,
                epoch: Epoch(1),
            },
        ));
        for t in (110..300).step_by(5) {
            v.push(input(t, standby::Input::Tick));
        }
        for w in [1, 2] {
            v.push(input(
                300,
                standby::Input::Vote(Vote {
                    witness: w,
                    query: 4_000_000_002,
                    epoch: Epoch(1),
                    verdict: Verdict::Grant,
                    duration: Duration::from_secs(2),
                    view: WitnessView {
                        app: AppVerdict::Down,
                        primary_host: false,
                        standby_host: true,
                        rates: Default::default(),
                    },
                    unprotected_after: None,
                }),
            ));
        }
        v.push("{\"k\":\"evidence\",\"ignored\":true}".to_string());
        v.push(String::new());
        v
    }

    #[test]
    fn replays_under_each_policy() {
        let lines = log();
        let d = replay(lines.iter().map(String::as_str), Policy::ClientOriented).expect("replay");
        let text: Vec<String> = d.iter().map(|d| d.action.to_string()).collect();
        assert!(
            text.iter()
                .any(|t| t.starts_with("query kind=takeover query=4000000001")),
            "{text:?}"
        );
        let act = d
            .iter()
            .find(|d| d.action.to_string().starts_with("activate"))
            .expect("activates");
        assert_eq!(act.at, ms(300));
        assert!(act
            .action
            .to_string()
            .contains("rule=rule1:quorum-no-answer"));
        let ev = act.action.evidence().expect("evidence");
        assert_eq!(
            Evidence::from_json_line(&ev.to_json_line()).as_ref(),
            Ok(ev)
        );

        let d = replay(lines.iter().map(String::as_str), Policy::HeartbeatOnly).expect("replay");
        let act = d
            .iter()
            .find(|d| d.action.to_string().starts_with("activate"))
            .expect("activates");
        assert_eq!(
            act.at,
            ms(150),
            "heartbeat-only activates on suspicion: {act}"
        );
        assert!(act
            .to_string()
            .contains("standby activate epoch=2 rule=baseline:heartbeat-loss"));
    }

    /// Regression: the config record was replayed one key at a time, so the record of a daemon
    /// with a lease above the default lease-max (the Xen rig's 6s) could not be replayed: its
    /// `lease` came before its `lease-max`.
    #[test]
    fn config_records_replay_whatever_the_key_order() {
        let mut cfg = Config::default();
        cfg.set_many(&[
            ("lease", "6s"),
            ("lease-max", "6s"),
            ("hb-interval", "100ms"),
            ("hb-timeout", "1500ms"),
        ])
        .expect("config");
        let line = config_line(
            ms(0),
            Role::Standby,
            Epoch(1),
            &cfg,
            Start {
                replica: Some(0),
                ..Start::default()
            },
        );
        replay([line.as_str()].into_iter(), Policy::ClientOriented).expect("replays");
    }

    /// The decision log stamps every record with the wall clock (`wall`) and starts each
    /// rotated or reopened file with a `continued` config record (crate::recorder): the replay
    /// skips the stamp, and a continued record while the core runs, so the same decisions come
    /// out; a continued file replayed alone starts a core of its own.
    #[test]
    fn wall_stamps_and_continued_files_replay_alike() {
        let plain = log();
        let stamp = |l: &String| {
            let Some(i) = l.find(",\"role\"") else {
                return l.clone();
            };
            format!(
                "{},\"wall\":\"2025-06-01T12:00:00.123Z\"{}",
                &l[..i],
                &l[i..]
            )
        };
        let mut stamped: Vec<String> = plain.iter().map(stamp).collect();
        let at = stamped
            .iter()
            .position(|l| l.contains("\"t\":200000000,"))
            .expect("a tick at 200 ms");
        let cont = config_line(
            ms(200),
            Role::Standby,
            Epoch(1),
            &Config::default(),
            Start {
                replica: Some(5),
                seq_base: 4_000_000_000,
                ..Start::default()
            },
        )
        .replacen("{", "{\"continued\":true,", 1);
        stamped.insert(at, stamp(&cont));
        for policy in [Policy::ClientOriented, Policy::HeartbeatOnly] {
            let want = replay(plain.iter().map(String::as_str), policy).expect("plain");
            let got = replay(stamped.iter().map(String::as_str), policy).expect("stamped");
            assert_eq!(
                got.iter().map(ToString::to_string).collect::<Vec<_>>(),
                want.iter().map(ToString::to_string).collect::<Vec<_>>()
            );
        }
        // The second file alone: its continued record starts the core.
        let tail = replay(
            stamped[at..].iter().map(String::as_str),
            Policy::ClientOriented,
        )
        .expect("a continued file replays alone");
        assert!(!tail.is_empty());
    }

    #[test]
    fn errors_name_the_line() {
        let bad = [
            "{\"k\":\"input\",\"t\":5,\"role\":\"standby\",\"in\":\"tick\"}",
            "{\"k\":\"input\",\"t\":4,\"role\":\"standby\",\"in\":\"tick\"}",
        ];
        let e = replay(bad.into_iter(), Policy::ClientOriented).expect_err("backwards");
        assert_eq!(e.line, 2);
        assert!(matches!(e.kind, ReplayErrorKind::TimeBackwards { .. }));
        for (line, want) in [
            ("{", "Json"),
            (
                "{\"k\":\"nope\",\"t\":1,\"role\":\"standby\"}",
                "UnknownKind",
            ),
            (
                "{\"k\":\"input\",\"t\":1,\"role\":\"x\",\"in\":\"tick\"}",
                "Field",
            ),
            (
                "{\"k\":\"input\",\"t\":1,\"role\":\"standby\",\"in\":\"boom\"}",
                "Field",
            ),
            (
                "{\"k\":\"config\",\"t\":1,\"role\":\"standby\",\"lease\":\"1ms\"}",
                "Config",
            ),
            (
                "{\"k\":\"config\",\"t\":1,\"role\":\"standby\",\"bogus\":1}",
                "Field",
            ),
        ] {
            let e = replay([line].into_iter(), Policy::ClientOriented).expect_err(line);
            assert_eq!(e.line, 1);
            assert!(format!("{:?}", e.kind).starts_with(want), "{line}: {e}");
        }
    }
}
