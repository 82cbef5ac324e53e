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
//!
//! This file holds the field reader ([`Fields`]), the input records ([`AnyInput`]) and the
//! config record; each input's fields, written and read, are in `record_input.rs`, and the
//! actions' text form in `record_action.rs`.

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

#[path = "record_input.rs"]
mod input;
use input::{parse_primary, parse_standby, parse_witness};
#[path = "record_action.rs"]
mod action;

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

#[cfg(test)]
#[path = "record_tests.rs"]
mod tests;
