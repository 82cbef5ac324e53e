//! The failover decision (DESIGN.md §4) as pure state machines: no I/O, no clock, no threads.
//!
//! Time is passed in as [`Nanos`] of a monotonic clock and every step returns the actions to take,
//! like raft-rs `step()`/`tick()`. The daemons, the seeded simulator and the offline replay all drive
//! the same code.
//!
//! - [`standby::StandbyCore`]: heartbeat suspicion, witness queries, takeover, switchover, cannot-decide.
//! - [`primary::PrimaryAuthority`]: may the primary release output now (ack, lease, or fenced)?
//! - [`witness::WitnessCore`]: probe view, leases to the primary and takeover votes, never overlapping.
//! - [`detector`]: the heartbeat failure detector with hysteresis.
//! - [`rate`]: success rates over a sliding window (a witness's evidence of a gray path).
//! - [`lease`]: lease arithmetic (holder counts from the moment it asked, drift margins, quorum expiry).
//! - [`epoch`]: activation epochs (rule 8).
//! - [`proto`]: the messages between the cores (serde, for postcard frames).
//! - [`evidence`]: what every decision carries (rule 7), as one JSON line.
//! - [`record`], [`replay`]: one-line input records and re-driving them through the cores.
//! - [`Config`]: the configuration every core takes, its keys and their checks (`config.rs`).
//!
//! The data-driven fault cases of `common/testdata/decision/` run through `hsb-testkit`'s
//! `casefile`.
//!
//! Everything is bounded: at most [`MAX_WITNESSES`] witnesses, [`MAX_LINKS`] heartbeat links, a
//! fixed number of actions per step, one query in flight.

#[macro_use]
mod words;

mod config;
pub mod detector;
pub mod epoch;
pub mod evidence;
pub mod json;
pub mod lease;
pub mod primary;
pub mod proto;
pub mod rate;
pub mod record;
pub mod replay;
pub mod standby;
pub mod witness;

use core::fmt;
use core::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::time::Nanos;
pub use config::{Config, ConfigError, SlowStandby, ALIVE_HEARTBEATS, CONFIG_KEYS};
pub use detector::{Detector, DetectorConfig};
pub use epoch::Epoch;
pub use evidence::{Evidence, Rule};
pub use lease::{LeaseConfig, LeaseSet};
pub use primary::PrimaryAuthority;
pub use replay::{replay, Decision, ReplayError};
pub use standby::StandbyCore;
pub use witness::WitnessCore;

/// Most witnesses a cluster may configure.
pub const MAX_WITNESSES: usize = 15;
/// Most heartbeat links between primary and standby.
pub const MAX_LINKS: usize = 4;
/// Most actions one step can return.
pub const MAX_ACTIONS: usize = 8;
/// Shortest period, timeout or window a configuration may set: the daemons' loops sleep with
/// millisecond timers (epoll), so anything shorter is zero to them.
pub const MIN_PERIOD: Duration = Duration::from_millis(1);

/// A witness's small integer id (configured identically on every node).
pub type WitnessId = u8;
/// A standby's witness query number (matches votes to the query they answer).
pub type QueryId = u32;

/// The actions of one step (bounded).
pub type Actions<A> = heapless::Vec<A, MAX_ACTIONS>;

/// Append an action; the bound is a design limit, so overflow is a bug (logged, asserted in debug).
pub(crate) fn emit<A>(out: &mut Actions<A>, a: A) {
    if out.push(a).is_err() {
        log::error!("decision: more than {MAX_ACTIONS} actions in one step (dropped one)");
        debug_assert!(false, "more than {MAX_ACTIONS} actions in one step");
    }
}

/// `t + d`, saturating.
pub fn later(t: Nanos, d: Duration) -> Nanos {
    Nanos(t.0.saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)))
}

/// `now - earlier` as a duration, zero if `earlier` is later.
pub fn elapsed(now: Nanos, earlier: Nanos) -> Duration {
    Duration::from_nanos(now.0.saturating_sub(earlier.0))
}

/// Duration as whole nanoseconds (saturating).
pub fn nanos_of(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Which rules decide (DESIGN.md §4: hsb's rules, or one of the two baselines kept for comparison).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Policy {
    /// hsb: witnesses decide (rules 1-8).
    #[default]
    ClientOriented,
    /// Remus baseline: activate on heartbeat loss; the primary continues unprotected.
    HeartbeatOnly,
    /// Linux-HA baseline: activate on heartbeat loss if a ping address answers.
    PingNode,
}

impl Policy {
    /// All policies, in table order.
    pub const ALL: [Policy; 3] = [
        Policy::ClientOriented,
        Policy::HeartbeatOnly,
        Policy::PingNode,
    ];

    /// The configuration word.
    pub fn name(self) -> &'static str {
        match self {
            Policy::ClientOriented => "client-oriented",
            Policy::HeartbeatOnly => "heartbeat-only",
            Policy::PingNode => "ping-node",
        }
    }

    /// From the configuration word.
    pub fn parse(s: &str) -> Option<Policy> {
        Policy::ALL.into_iter().find(|p| p.name() == s)
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which core a record or decision belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// [`StandbyCore`].
    Standby,
    /// [`PrimaryAuthority`].
    Primary,
    /// [`WitnessCore`].
    Witness,
}

impl Role {
    /// The record word.
    pub fn name(self) -> &'static str {
        match self {
            Role::Standby => "standby",
            Role::Primary => "primary",
            Role::Witness => "witness",
        }
    }

    /// From the record word.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "standby" => Some(Role::Standby),
            "primary" => Some(Role::Primary),
            "witness" => Some(Role::Witness),
            _ => None,
        }
    }
}

/// The configured witnesses; known identically to every node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessSet {
    ids: heapless::Vec<WitnessId, MAX_WITNESSES>,
}

impl WitnessSet {
    /// A set from distinct ids (1 to [`MAX_WITNESSES`] of them).
    pub fn new(ids: &[WitnessId]) -> Result<WitnessSet, ConfigError> {
        let bad = |why: &str| ConfigError {
            key: "witnesses",
            value: format!("{ids:?}"),
            expected: why.to_string(),
        };
        if ids.is_empty() {
            return Err(bad("at least one witness id"));
        }
        let mut v = heapless::Vec::new();
        for &id in ids {
            if v.contains(&id) {
                return Err(bad("distinct witness ids"));
            }
            v.push(id).map_err(|_| bad("at most 15 witness ids"))?;
        }
        Ok(WitnessSet { ids: v })
    }

    /// Number of configured witnesses.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Never true (a set has at least one witness); for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Strict majority of the configured witnesses.
    pub fn quorum(&self) -> usize {
        self.ids.len() / 2 + 1
    }

    /// Whether `id` is configured.
    pub fn contains(&self, id: WitnessId) -> bool {
        self.ids.contains(&id)
    }

    /// The ids, in configuration order.
    pub fn ids(&self) -> &[WitnessId] {
        &self.ids
    }
}

impl Default for WitnessSet {
    fn default() -> Self {
        WitnessSet {
            ids: heapless::Vec::from_slice(&[1, 2, 3]).unwrap_or_default(),
        }
    }
}

/// Parse `50ms`, `1.5s`, `250us`, `100ns`, or a bare integer (nanoseconds). Whole nanoseconds only.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let scale: u64 = match unit {
        "" | "ns" => 1,
        "us" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        _ => return None,
    };
    let (int, frac) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    if int.is_empty() || int.len() > 20 || frac.len() > 9 {
        return None;
    }
    let i: u64 = int.parse().ok()?;
    let mut ns = i.checked_mul(scale)?;
    if !frac.is_empty() {
        let f: u64 = frac.parse().ok()?;
        let den = 10u64.pow(frac.len() as u32);
        let part = f.checked_mul(scale)? / den;
        if part.checked_mul(den)? != f.checked_mul(scale)? {
            return None; // finer than a nanosecond
        }
        ns = ns.checked_add(part)?;
    }
    Some(Duration::from_nanos(ns))
}

/// The shortest exact text of a duration: `2s`, `50ms`, `1500us`, `7ns`, `0`.
pub fn format_duration(d: Duration) -> String {
    format_nanos(nanos_of(d))
}

/// The shortest exact text of a nanosecond count (see [`format_duration`]).
pub fn format_nanos(ns: u64) -> String {
    if ns == 0 {
        "0".to_string()
    } else if ns.is_multiple_of(1_000_000_000) {
        format!("{}s", ns / 1_000_000_000)
    } else if ns.is_multiple_of(1_000_000) {
        format!("{}ms", ns / 1_000_000)
    } else if ns.is_multiple_of(1_000) {
        format!("{}us", ns / 1_000)
    } else {
        format!("{ns}ns")
    }
}

#[cfg(test)]
mod tests;
