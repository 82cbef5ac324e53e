//! Inputs and actions as one-line records, so a daemon can log every input it feeds a core and
//! [`super::replay`] can feed them again.
//!
//! Every input is a name plus `key=value` fields. The same fields have two spellings:
//! - text (case files, logs): `heartbeat link=0 epoch=1`
//! - JSON (input logs): `{"k":"input","t":123000000,"role":"standby","in":"heartbeat","link":0,"epoch":1}`
//!
//! Durations are written `50ms`, `2s` (bare integers read as nanoseconds). The first line of a log
//! is normally a config record: `{"k":"config","t":0,"role":"standby","epoch":1,"replica":0,...}`
//! with every key of [`super::CONFIG_KEYS`]. Evidence lines (`"k":"evidence"`) may be interleaved.
//!
//! Actions have a canonical text form (their `Display`), used by case files and the replay tool:
//! `activate epoch=2 rule=rule1:quorum-no-answer grants=2/3`.

use core::fmt;
use core::time::Duration;

use super::json::{ObjWriter, Value};
use super::proto::{
    AppVerdict, LeaseReply, LeaseRequest, ProbeClass, ProbeTarget, ProtectedNotice, Rates, Verdict,
    Vote, VoteKind, VoteRequest, Withdraw, WitnessReport, WitnessView,
};
use super::{
    format_duration, parse_duration, primary, standby, witness, Config, Epoch, Nanos, Role,
    WitnessId,
};

/// Most fields in one record.
pub const MAX_FIELDS: usize = 48;

/// Why a record does not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldError {
    /// A required field is missing.
    Missing(&'static str),
    /// A field's value does not fit.
    Bad {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// A field this record does not have.
    Unknown(String),
    /// An input name this role does not have.
    UnknownInput(String),
    /// More than [`MAX_FIELDS`] fields.
    TooMany,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldError::Missing(k) => write!(f, "missing field {k}"),
            FieldError::Bad {
                key,
                value,
                expected,
            } => write!(f, "field {key}={value:?}: expected {expected}"),
            FieldError::Unknown(k) => write!(f, "unknown field {k:?}"),
            FieldError::UnknownInput(n) => write!(f, "unknown input {n:?}"),
            FieldError::TooMany => write!(f, "more than {MAX_FIELDS} fields"),
        }
    }
}

impl std::error::Error for FieldError {}

/// A record's fields, read once each; leftovers are errors.
#[derive(Debug, Clone, Default)]
pub struct Fields {
    items: Vec<(String, String, bool)>,
}

impl Fields {
    /// From `key=value` text tokens.
    pub fn from_tokens<'a>(tokens: impl Iterator<Item = &'a str>) -> Result<Fields, FieldError> {
        let mut f = Fields::default();
        for t in tokens {
            let (k, v) = t.split_once('=').ok_or_else(|| FieldError::Bad {
                key: t.to_string(),
                value: String::new(),
                expected: "key=value",
            })?;
            f.push(k, v)?;
        }
        Ok(f)
    }

    /// From a JSON object's members, skipping `skip` keys (numbers and booleans become text).
    pub fn from_json(v: &Value, skip: &[&str]) -> Result<Fields, FieldError> {
        let mut f = Fields::default();
        let Value::Obj(members) = v else {
            return Err(FieldError::Bad {
                key: "record".into(),
                value: String::new(),
                expected: "a JSON object",
            });
        };
        for (k, v) in members {
            if skip.contains(&k.as_str()) || *v == Value::Null {
                continue;
            }
            let text = v.as_text().ok_or_else(|| FieldError::Bad {
                key: k.clone(),
                value: String::new(),
                expected: "a string, number or boolean",
            })?;
            f.push(k, &text)?;
        }
        Ok(f)
    }

    fn push(&mut self, k: &str, v: &str) -> Result<(), FieldError> {
        if self.items.len() >= MAX_FIELDS {
            return Err(FieldError::TooMany);
        }
        self.items.push((k.to_string(), v.to_string(), false));
        Ok(())
    }

    /// Take a field's raw text.
    pub fn take(&mut self, key: &str) -> Option<String> {
        self.items
            .iter_mut()
            .find(|(k, _, used)| k == key && !*used)
            .map(|(_, v, used)| {
                *used = true;
                v.clone()
            })
    }

    fn parsed<T>(
        &mut self,
        key: &'static str,
        expected: &'static str,
        p: impl Fn(&str) -> Option<T>,
    ) -> Result<Option<T>, FieldError> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => p(&v).map(Some).ok_or(FieldError::Bad {
                key: key.into(),
                value: v,
                expected,
            }),
        }
    }

    /// Optional unsigned integer (`none` reads as absent).
    pub fn opt_u64(&mut self, key: &'static str) -> Result<Option<u64>, FieldError> {
        match self.take(key) {
            None => Ok(None),
            Some(v) if v == "none" => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| FieldError::Bad {
                key: key.into(),
                value: v,
                expected: "an unsigned integer",
            }),
        }
    }

    /// Required unsigned integer.
    pub fn u64(&mut self, key: &'static str) -> Result<u64, FieldError> {
        self.opt_u64(key)?.ok_or(FieldError::Missing(key))
    }

    /// Unsigned integer with a default.
    pub fn u64_or(&mut self, key: &'static str, d: u64) -> Result<u64, FieldError> {
        Ok(self.opt_u64(key)?.unwrap_or(d))
    }

    /// Small integer (witness ids, links).
    pub fn u8(&mut self, key: &'static str) -> Result<u8, FieldError> {
        let v = self.u64(key)?;
        u8::try_from(v).map_err(|_| FieldError::Bad {
            key: key.into(),
            value: v.to_string(),
            expected: "an integer 0-255",
        })
    }

    /// Duration with a default.
    pub fn dur_or(&mut self, key: &'static str, d: Duration) -> Result<Duration, FieldError> {
        Ok(self
            .parsed(key, "a duration like 50ms", parse_duration)?
            .unwrap_or(d))
    }

    /// Boolean with a default.
    pub fn bool_or(&mut self, key: &'static str, d: bool) -> Result<bool, FieldError> {
        let p = |s: &str| match s {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        };
        Ok(self.parsed(key, "true or false", p)?.unwrap_or(d))
    }

    /// Epoch with a default.
    pub fn epoch_or(&mut self, key: &'static str, d: Epoch) -> Result<Epoch, FieldError> {
        Ok(Epoch(self.u64_or(key, d.0)?))
    }

    /// A word from a vocabulary.
    pub fn word<T>(
        &mut self,
        key: &'static str,
        expected: &'static str,
        p: impl Fn(&str) -> Option<T>,
    ) -> Result<T, FieldError> {
        self.parsed(key, expected, p)?
            .ok_or(FieldError::Missing(key))
    }

    /// A word with a default.
    pub fn word_or<T>(
        &mut self,
        key: &'static str,
        expected: &'static str,
        p: impl Fn(&str) -> Option<T>,
        d: T,
    ) -> Result<T, FieldError> {
        Ok(self.parsed(key, expected, p)?.unwrap_or(d))
    }

    /// Error on any field not taken.
    pub fn finish(&self) -> Result<(), FieldError> {
        match self.items.iter().find(|(_, _, used)| !used) {
            Some((k, _, _)) => Err(FieldError::Unknown(k.clone())),
            None => Ok(()),
        }
    }

    /// Remaining (untaken) fields.
    pub fn rest(&mut self) -> Vec<(String, String)> {
        let mut v = Vec::new();
        for (k, val, used) in self.items.iter_mut() {
            if !*used {
                *used = true;
                v.push((k.clone(), val.clone()));
            }
        }
        v
    }
}

/// Values that fill fields a record leaves out (so case files can stay short).
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    /// The core's current epoch.
    pub epoch: Epoch,
    /// The lease duration granted.
    pub lease: Duration,
}

/// An input to any of the cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnyInput {
    /// To [`super::StandbyCore`].
    Standby(standby::Input),
    /// To [`super::PrimaryAuthority`].
    Primary(primary::Input),
    /// To [`super::WitnessCore`].
    Witness(witness::Input),
}

impl AnyInput {
    /// Which core it is for.
    pub fn role(&self) -> Role {
        match self {
            AnyInput::Standby(_) => Role::Standby,
            AnyInput::Primary(_) => Role::Primary,
            AnyInput::Witness(_) => Role::Witness,
        }
    }

    /// Name and every field as text.
    pub fn fields(&self) -> (&'static str, Vec<(&'static str, String)>) {
        let e = |e: Epoch| e.0.to_string();
        let opt = |o: Option<u64>| o.map_or_else(|| "none".to_string(), |n| n.to_string());
        let view = |v: &mut Vec<(&'static str, String)>, w: &WitnessView| {
            v.push(("app", w.app.name().into()));
            v.push(("primary-host", w.primary_host.to_string()));
            v.push(("standby-host", w.standby_host.to_string()));
            // Rates only when known (records from before them have none).
            for (k, r) in [
                ("app-rate", w.rates.app),
                ("primary-rate", w.rates.primary),
                ("standby-rate", w.rates.standby),
            ] {
                if let Some(r) = r {
                    v.push((k, r.to_string()));
                }
            }
        };
        match self {
            AnyInput::Standby(i) => match i {
                standby::Input::Heartbeat { link, epoch } => (
                    "heartbeat",
                    vec![("link", link.to_string()), ("epoch", e(*epoch))],
                ),
                standby::Input::Report(r) => {
                    let mut v = vec![("w", r.witness.to_string()), ("epoch", e(r.epoch))];
                    view(&mut v, &r.view);
                    v.push(("unprotected-after", opt(r.unprotected_after)));
                    ("report", v)
                }
                standby::Input::Vote(x) => {
                    let mut v = vec![
                        ("w", x.witness.to_string()),
                        ("query", x.query.to_string()),
                        ("epoch", e(x.epoch)),
                        ("verdict", x.verdict.to_string()),
                        ("duration", format_duration(x.duration)),
                    ];
                    view(&mut v, &x.view);
                    v.push(("unprotected-after", opt(x.unprotected_after)));
                    ("vote", v)
                }
                standby::Input::ReplicaApplied { ckpt, epoch } => (
                    "replica",
                    vec![("ckpt", ckpt.to_string()), ("epoch", e(*epoch))],
                ),
                standby::Input::Ping { ok } => ("ping", vec![("ok", ok.to_string())]),
                standby::Input::OperatorForce => ("force", vec![]),
                standby::Input::Operator { ask, force } => (
                    "operator",
                    vec![("ask", ask.name().into()), ("force", force.to_string())],
                ),
                standby::Input::Maintenance { on } => ("maintenance", vec![("on", on.to_string())]),
                standby::Input::HigherEpoch { epoch } => {
                    ("higher-epoch", vec![("epoch", e(*epoch))])
                }
                standby::Input::PrimaryFenced { epoch, ckpt } => (
                    "primary-fenced",
                    vec![("epoch", e(*epoch)), ("ckpt", ckpt.to_string())],
                ),
                standby::Input::Resynced { epoch, ckpt } => (
                    "resynced",
                    vec![("epoch", e(*epoch)), ("ckpt", ckpt.to_string())],
                ),
                standby::Input::StreamProgress => ("stream", vec![]),
                standby::Input::Tick => ("tick", vec![]),
            },
            AnyInput::Primary(i) => match i {
                primary::Input::CheckpointSent { ckpt } => {
                    ("ckpt-sent", vec![("ckpt", ckpt.to_string())])
                }
                primary::Input::Ack { ckpt, epoch } => (
                    "ack",
                    vec![("ckpt", ckpt.to_string()), ("epoch", e(*epoch))],
                ),
                primary::Input::LeaseReply(r) => (
                    "lease",
                    vec![
                        ("w", r.witness.to_string()),
                        ("req", r.req.to_string()),
                        ("epoch", e(r.epoch)),
                        ("verdict", r.verdict.to_string()),
                        ("duration", format_duration(r.duration)),
                    ],
                ),
                primary::Input::HigherEpoch { epoch } => {
                    ("higher-epoch", vec![("epoch", e(*epoch))])
                }
                primary::Input::FenceRequest { epoch } => {
                    ("fence-request", vec![("epoch", e(*epoch))])
                }
                primary::Input::StandbyAlive {
                    epoch,
                    applied,
                    heard,
                    stream,
                } => (
                    "standby-alive",
                    vec![
                        ("epoch", e(*epoch)),
                        ("applied", opt(*applied)),
                        ("heard", heard.to_string()),
                        ("stream", stream.to_string()),
                    ],
                ),
                primary::Input::Tick => ("tick", vec![]),
            },
            AnyInput::Witness(i) => match i {
                witness::Input::Probe {
                    target,
                    class,
                    took,
                } => {
                    let mut v = vec![
                        ("target", target.name().into()),
                        ("class", class.name().into()),
                    ];
                    if !took.is_zero() {
                        v.push(("took", format_duration(*took)));
                    }
                    ("probe", v)
                }
                witness::Input::Delivered {
                    target,
                    timed_out_at,
                } => (
                    "delivered",
                    vec![
                        ("target", target.name().into()),
                        ("timed-out-at", format_duration(timed_out_at.as_duration())),
                    ],
                ),
                witness::Input::Stalled { since } => (
                    "stalled",
                    vec![("since", format_duration(since.as_duration()))],
                ),
                witness::Input::VoteRequest(r) => (
                    "vote-request",
                    vec![
                        ("epoch", e(r.epoch)),
                        ("query", r.query.to_string()),
                        ("kind", r.kind.name().into()),
                    ],
                ),
                witness::Input::LeaseRequest(r) => (
                    "lease-request",
                    vec![
                        ("epoch", e(r.epoch)),
                        ("req", r.req.to_string()),
                        ("last-acked", r.last_acked.to_string()),
                        ("last-sent", r.last_sent.to_string()),
                    ],
                ),
                witness::Input::Withdraw(w) => (
                    "withdraw",
                    vec![("epoch", e(w.epoch)), ("query", w.query.to_string())],
                ),
                witness::Input::Protected(n) => (
                    "protected",
                    vec![("epoch", e(n.epoch)), ("acked", n.acked.to_string())],
                ),
                witness::Input::Tick => ("tick", vec![]),
            },
        }
    }

    /// Text form: `name key=value ...`.
    pub fn to_text(&self) -> String {
        let (name, fields) = self.fields();
        let mut s = name.to_string();
        for (k, v) in fields {
            s.push(' ');
            s.push_str(k);
            s.push('=');
            s.push_str(&v);
        }
        s
    }

    /// JSON input record at time `t`.
    pub fn to_json_line(&self, t: Nanos) -> String {
        let (name, fields) = self.fields();
        let mut o = ObjWriter::new();
        o.str("k", "input")
            .num("t", t.0)
            .str("role", self.role().name())
            .str("in", name);
        for (k, v) in fields {
            o.text(k, &v);
        }
        o.finish()
    }

    /// Read an input of `role` called `name` from `f` (all fields must be used).
    pub fn parse(
        role: Role,
        name: &str,
        f: &mut Fields,
        d: Defaults,
    ) -> Result<AnyInput, FieldError> {
        let i = match role {
            Role::Standby => AnyInput::Standby(parse_standby(name, f, d)?),
            Role::Primary => AnyInput::Primary(parse_primary(name, f, d)?),
            Role::Witness => AnyInput::Witness(parse_witness(name, f, d)?),
        };
        f.finish()?;
        Ok(i)
    }
}

fn view(f: &mut Fields, app_default: Option<AppVerdict>) -> Result<WitnessView, FieldError> {
    let app = match app_default {
        Some(d) => f.word_or("app", "an application verdict", AppVerdict::parse, d)?,
        None => f.word("app", "an application verdict", AppVerdict::parse)?,
    };
    let mut rate = |key: &'static str| -> Result<Option<u8>, FieldError> {
        f.opt_u64(key)?
            .map(|n| {
                u8::try_from(n)
                    .ok()
                    .filter(|p| *p <= 100)
                    .ok_or_else(|| FieldError::Bad {
                        key: key.into(),
                        value: n.to_string(),
                        expected: "a percentage 0-100",
                    })
            })
            .transpose()
    };
    let rates = Rates {
        app: rate("app-rate")?,
        primary: rate("primary-rate")?,
        standby: rate("standby-rate")?,
    };
    Ok(WitnessView {
        app,
        primary_host: f.bool_or("primary-host", false)?,
        standby_host: f.bool_or("standby-host", true)?,
        rates,
    })
}

fn parse_standby(name: &str, f: &mut Fields, d: Defaults) -> Result<standby::Input, FieldError> {
    use standby::Input as I;
    Ok(match name {
        "heartbeat" => I::Heartbeat {
            link: f.u64_or("link", 0).and_then(|l| {
                u8::try_from(l).map_err(|_| FieldError::Bad {
                    key: "link".into(),
                    value: l.to_string(),
                    expected: "a link index",
                })
            })?,
            epoch: f.epoch_or("epoch", d.epoch)?,
        },
        "report" => I::Report(WitnessReport {
            witness: f.u8("w")?,
            epoch: f.epoch_or("epoch", d.epoch)?,
            view: view(f, None)?,
            unprotected_after: f.opt_u64("unprotected-after")?,
        }),
        "vote" => {
            let verdict = f.word("verdict", "grant or refuse:<reason>", Verdict::parse)?;
            let dflt = if verdict.granted() {
                d.lease
            } else {
                Duration::ZERO
            };
            I::Vote(Vote {
                witness: f.u8("w")?,
                query: f.u64("query").and_then(|q| {
                    u32::try_from(q).map_err(|_| FieldError::Bad {
                        key: "query".into(),
                        value: q.to_string(),
                        expected: "a 32-bit query id",
                    })
                })?,
                epoch: f.epoch_or("epoch", d.epoch)?,
                verdict,
                duration: f.dur_or("duration", dflt)?,
                view: view(
                    f,
                    Some(if verdict.granted() {
                        AppVerdict::Down
                    } else {
                        AppVerdict::Up
                    }),
                )?,
                unprotected_after: f.opt_u64("unprotected-after")?,
            })
        }
        "replica" => I::ReplicaApplied {
            ckpt: f.u64("ckpt")?,
            epoch: f.epoch_or("epoch", d.epoch)?,
        },
        "ping" => I::Ping {
            ok: f.bool_or("ok", true)?,
        },
        "force" => I::OperatorForce,
        "operator" => I::Operator {
            ask: f.word_or(
                "ask",
                "activate or switchover",
                standby::OperatorAsk::parse,
                standby::OperatorAsk::Activate,
            )?,
            force: f.bool_or("force", false)?,
        },
        "maintenance" => I::Maintenance {
            on: f.bool_or("on", true)?,
        },
        "higher-epoch" => I::HigherEpoch {
            epoch: Epoch(f.u64("epoch")?),
        },
        "primary-fenced" => I::PrimaryFenced {
            epoch: f.epoch_or("epoch", d.epoch.next())?,
            ckpt: f.u64_or("ckpt", 0)?,
        },
        "resynced" => I::Resynced {
            epoch: f.epoch_or("epoch", d.epoch)?,
            ckpt: f.u64("ckpt")?,
        },
        "stream" => I::StreamProgress,
        "tick" => I::Tick,
        other => return Err(FieldError::UnknownInput(other.to_string())),
    })
}

fn parse_primary(name: &str, f: &mut Fields, d: Defaults) -> Result<primary::Input, FieldError> {
    use primary::Input as I;
    Ok(match name {
        "ckpt-sent" => I::CheckpointSent {
            ckpt: f.u64("ckpt")?,
        },
        "ack" => I::Ack {
            ckpt: f.u64("ckpt")?,
            epoch: f.epoch_or("epoch", d.epoch)?,
        },
        "lease" => {
            let verdict = f.word("verdict", "grant or refuse:<reason>", Verdict::parse)?;
            let dflt = if verdict.granted() {
                d.lease
            } else {
                Duration::ZERO
            };
            I::LeaseReply(LeaseReply {
                witness: f.u8("w")?,
                req: u32::try_from(f.u64("req")?).map_err(|_| FieldError::Bad {
                    key: "req".into(),
                    value: String::new(),
                    expected: "a 32-bit request id",
                })?,
                epoch: f.epoch_or("epoch", d.epoch)?,
                verdict,
                duration: f.dur_or("duration", dflt)?,
            })
        }
        "higher-epoch" => I::HigherEpoch {
            epoch: Epoch(f.u64("epoch")?),
        },
        "fence-request" => I::FenceRequest {
            epoch: f.epoch_or("epoch", d.epoch.next())?,
        },
        "standby-alive" => I::StandbyAlive {
            epoch: f.epoch_or("epoch", d.epoch)?,
            applied: f.opt_u64("applied")?,
            heard: f.u64("heard")?,
            stream: f.u64_or("stream", 0)?,
        },
        "tick" => I::Tick,
        other => return Err(FieldError::UnknownInput(other.to_string())),
    })
}

fn parse_witness(name: &str, f: &mut Fields, d: Defaults) -> Result<witness::Input, FieldError> {
    use witness::Input as I;
    Ok(match name {
        "probe" => I::Probe {
            target: f.word(
                "target",
                "primary-app, primary-host or standby-host",
                ProbeTarget::parse,
            )?,
            class: f.word(
                "class",
                "ok, refused, timeout or app-error",
                ProbeClass::parse,
            )?,
            took: f.dur_or("took", Duration::ZERO)?,
        },
        "delivered" => I::Delivered {
            target: f.word("target", "primary-host or standby-host", ProbeTarget::parse)?,
            timed_out_at: Nanos::from_duration(
                f.parsed("timed-out-at", "a time like 1250ms", parse_duration)?
                    .ok_or(FieldError::Missing("timed-out-at"))?,
            ),
        },
        "stalled" => I::Stalled {
            since: Nanos::from_duration(
                f.parsed("since", "a time like 1250ms", parse_duration)?
                    .ok_or(FieldError::Missing("since"))?,
            ),
        },
        "vote-request" => I::VoteRequest(VoteRequest {
            epoch: f.epoch_or("epoch", d.epoch)?,
            query: u32::try_from(f.u64("query")?).map_err(|_| FieldError::Bad {
                key: "query".into(),
                value: String::new(),
                expected: "a 32-bit query id",
            })?,
            kind: f.word_or(
                "kind",
                "takeover or switchover",
                VoteKind::parse,
                VoteKind::Takeover,
            )?,
        }),
        "lease-request" => I::LeaseRequest(LeaseRequest {
            epoch: f.epoch_or("epoch", d.epoch)?,
            req: u32::try_from(f.u64("req")?).map_err(|_| FieldError::Bad {
                key: "req".into(),
                value: String::new(),
                expected: "a 32-bit request id",
            })?,
            last_acked: f.u64_or("last-acked", 0)?,
            last_sent: f.u64_or("last-sent", 0)?,
        }),
        "withdraw" => I::Withdraw(Withdraw {
            epoch: f.epoch_or("epoch", d.epoch.next())?,
            query: u32::try_from(f.u64("query")?).unwrap_or(u32::MAX),
        }),
        "protected" => I::Protected(ProtectedNotice {
            epoch: f.epoch_or("epoch", d.epoch)?,
            acked: f.u64("acked")?,
        }),
        "tick" => I::Tick,
        other => return Err(FieldError::UnknownInput(other.to_string())),
    })
}

/// A config record: creates a core of `role` at `t`.
/// Where a core's own numbering starts, so a replay numbers its queries (standby) or lease
/// requests (primary) as the daemon did, and a primary resumes its checkpoint numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Start {
    /// The standby's replica checkpoint at start, if it has one.
    pub replica: Option<u64>,
    /// The witness's id (witness cores).
    pub witness: Option<WitnessId>,
    /// The query or request number the core starts after (random per process).
    pub seq_base: u32,
    /// The checkpoint a primary resumes at ([`super::PrimaryAuthority::resume_at`]).
    pub resume_at: u64,
}

/// The config record: the core's role, epoch and configuration, as its first log line.
pub fn config_line(t: Nanos, role: Role, epoch: Epoch, cfg: &Config, start: Start) -> String {
    let mut o = ObjWriter::new();
    o.str("k", "config")
        .num("t", t.0)
        .str("role", role.name())
        .num("epoch", epoch.0);
    o.opt_num("replica", start.replica);
    o.opt_num("witness", start.witness.map(u64::from));
    o.opt_num(
        "seq-base",
        Some(u64::from(start.seq_base)).filter(|b| *b != 0),
    );
    o.opt_num("resume-at", Some(start.resume_at).filter(|c| *c != 0));
    for (k, v) in cfg.fields() {
        o.text(k, &v);
    }
    o.finish()
}

fn grants_of(e: &super::Evidence) -> String {
    format!("{}/{}", e.grants, e.configured)
}

impl fmt::Display for standby::Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use standby::Action as A;
        match self {
            A::Ack { ckpt, epoch } => write!(f, "ack ckpt={ckpt} epoch={epoch}"),
            A::QueryWitnesses(r) => write!(
                f,
                "query kind={} query={} epoch={}",
                r.kind, r.query, r.epoch
            ),
            A::Withdraw(w) => write!(f, "withdraw query={} epoch={}", w.query, w.epoch),
            A::PingNode => write!(f, "ping-node"),
            A::Activate {
                epoch, evidence, ..
            } => {
                write!(
                    f,
                    "activate epoch={epoch} rule={} grants={}",
                    evidence.rule,
                    grants_of(evidence)
                )?;
                if evidence.forced {
                    write!(f, " forced=true")?;
                }
                Ok(())
            }
            A::Switchover { epoch, evidence } => write!(
                f,
                "switchover epoch={epoch} rule={} grants={}",
                evidence.rule,
                grants_of(evidence)
            ),
            A::CannotDecide { evidence } => write!(
                f,
                "cannot-decide rule={} answers={}",
                evidence.rule, evidence.answers
            ),
            A::RefuseStale { evidence } => write!(
                f,
                "refuse-stale rule={} grants={}",
                evidence.rule,
                grants_of(evidence)
            ),
            A::Alert { evidence } => {
                write!(f, "alert rule={}", evidence.rule)?;
                if evidence.action != super::evidence::ActionKind::Stay {
                    write!(f, " action={}", evidence.action)?;
                }
                Ok(())
            }
            A::StepDown { epoch, evidence } => {
                write!(f, "step-down epoch={epoch} rule={}", evidence.rule)
            }
            A::RequestFullSync => write!(f, "request-full-sync"),
        }
    }
}

impl fmt::Display for primary::Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use primary::Action as A;
        match self {
            A::RequestLeases(r) => write!(
                f,
                "request-leases req={} epoch={} last-acked={} last-sent={}",
                r.req, r.epoch, r.last_acked, r.last_sent
            ),
            A::NotifyProtected(n) => {
                write!(f, "notify-protected epoch={} acked={}", n.epoch, n.acked)
            }
            A::Fence { evidence } => write!(f, "fence rule={}", evidence.rule),
            A::Unfence { evidence } => write!(f, "unfence rule={}", evidence.rule),
            A::StepDown { epoch, evidence } => {
                write!(f, "step-down epoch={epoch} rule={}", evidence.rule)
            }
            A::RequestFullSync => write!(f, "request-full-sync"),
            A::ConfirmFenced { epoch, ckpt } => {
                write!(f, "confirm-fenced epoch={epoch} ckpt={ckpt}")
            }
            A::Alert { evidence } => {
                write!(f, "alert rule={}", evidence.rule)?;
                if evidence.action != super::evidence::ActionKind::Stay {
                    write!(f, " action={}", evidence.action)?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for witness::Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            witness::Action::Vote(v) => {
                write!(
                    f,
                    "vote query={} verdict={} epoch={} app={}",
                    v.query, v.verdict, v.epoch, v.view.app
                )?;
                if v.verdict.granted() {
                    write!(f, " duration={}", format_duration(v.duration))?;
                }
                if let Some(n) = v.unprotected_after {
                    write!(f, " unprotected-after={n}")?;
                }
                Ok(())
            }
            witness::Action::LeaseReply(r) => {
                write!(
                    f,
                    "lease-reply req={} verdict={} epoch={}",
                    r.req, r.verdict, r.epoch
                )?;
                if r.verdict.granted() {
                    write!(f, " duration={}", format_duration(r.duration))?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
#[path = "record_tests.rs"]
mod tests;
