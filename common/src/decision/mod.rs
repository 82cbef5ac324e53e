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
//!
//! The data-driven fault cases of `common/testdata/decision/` run through `hsb-testkit`'s
//! `casefile`.
//!
//! Everything is bounded: at most [`MAX_WITNESSES`] witnesses, [`MAX_LINKS`] heartbeat links, a
//! fixed number of actions per step, one query in flight.

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

/// A configuration value that does not fit its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The key.
    pub key: &'static str,
    /// The offending value.
    pub value: String,
    /// What was expected.
    pub expected: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} = {:?}: expected {}",
            self.key, self.value, self.expected
        )
    }
}

impl std::error::Error for ConfigError {}

/// Everything the three cores need to know; identical on every node except `policy` (standby,
/// primary) which must agree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Which rules decide.
    pub policy: Policy,
    /// The configured witnesses.
    pub witnesses: WitnessSet,
    /// Heartbeat failure detector.
    pub heartbeat: DetectorConfig,
    /// Leases, votes and acks as leases.
    pub lease: LeaseConfig,
    /// How long the standby waits for the votes of one query.
    pub query_timeout: Duration,
    /// Shortest pause between two queries while the heartbeat stays lost.
    pub requery_min: Duration,
    /// Longest pause between two queries (the pause doubles after each fruitless query).
    pub requery_max: Duration,
    /// A witness report older than this is ignored.
    pub report_fresh: Duration,
    /// Rule 6: switch over when clients cannot reach the primary but reach the standby.
    pub switchover: bool,
    /// Rule 6: the condition must hold this long before a switchover is attempted.
    pub switchover_hold: Duration,
    /// Rule 6: at least this long between two switchover attempts.
    pub switchover_min_interval: Duration,
    /// Witness: the primary's application counts as down after this long without an answer...
    pub app_down_after: Duration,
    /// Witness: ...and at least this many failed probes in a row.
    pub app_down_failures: u32,
    /// Witness: a host (daemon) counts as reachable if it answered within this long.
    pub host_fresh: Duration,
    /// Primary: pause the domain after this long without any authority (output is held at once).
    pub fence_after: Duration,
    /// Ping-node baseline: how often to ping while the heartbeat is lost.
    pub ping_interval: Duration,
    /// Primary: the standby counts as lost (and only then may output leave under the witnesses'
    /// lease) when it has shown no progress for this long: no ack, and no heartbeat reply saying
    /// it heard more from the primary (a heartbeat or replication bytes) than before.
    pub standby_timeout: Duration,
    /// Primary: what a standby slower than `ack-lease` means (DESIGN.md §2, last bullet).
    pub slow_standby: SlowStandby,
    /// Witness: success rates of probes are measured over this window.
    pub rate_window: Duration,
    /// Witness: the application answering fewer than this share of probes (percent) over a lossy
    /// path to its host, while the standby's host answers cleanly, is a switchover candidate.
    pub gray_below: u8,
    /// Witness: the path to the primary's host is lossy when its daemon answers fewer than this
    /// share of pings (percent).
    pub lossy_below: u8,
    /// Witness: a host answering at least this share of pings (percent) is reached cleanly.
    pub clean_above: u8,
}

/// What the primary does when acks come slower than `ack-lease` while the standby is alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlowStandby {
    /// Keep protection (Remus): output waits for the acks however slow; epochs stretch and
    /// latency grows. Unprotected mode is for a standby that is lost (`standby-timeout`).
    #[default]
    Wait,
    /// Availability over protection: a standby slower than `ack-lease` is treated as lost, and
    /// output leaves under the witnesses' lease, unprotected (a crash then finds the replica
    /// stale, rule 5).
    Lease,
}

impl SlowStandby {
    /// The configuration word.
    pub fn name(self) -> &'static str {
        match self {
            SlowStandby::Wait => "wait",
            SlowStandby::Lease => "lease",
        }
    }

    /// From the configuration word.
    pub fn parse(s: &str) -> Option<SlowStandby> {
        match s {
            "wait" => Some(SlowStandby::Wait),
            "lease" => Some(SlowStandby::Lease),
            _ => None,
        }
    }
}

impl Config {
    /// How long a heartbeat reply (or an ack) keeps the standby counted as present at the
    /// primary: two heartbeat periods from its arrival (one reply may be lost or late). The standby, once it stops sending
    /// them (it is deciding to activate), waits this out plus its margin before activating.
    pub fn alive_window(&self) -> Duration {
        self.heartbeat.interval.saturating_mul(ALIVE_HEARTBEATS)
    }
}

/// Heartbeat periods a heartbeat reply counts for at the primary (see [`Config::alive_window`]).
pub const ALIVE_HEARTBEATS: u32 = 2;

impl Default for Config {
    fn default() -> Self {
        Config {
            policy: Policy::ClientOriented,
            witnesses: WitnessSet::default(),
            heartbeat: DetectorConfig::default(),
            lease: LeaseConfig::default(),
            query_timeout: Duration::from_millis(100),
            requery_min: Duration::from_millis(20),
            requery_max: Duration::from_millis(500),
            report_fresh: Duration::from_millis(300),
            switchover: true,
            switchover_hold: Duration::from_secs(2),
            switchover_min_interval: Duration::from_secs(60),
            app_down_after: Duration::from_millis(60),
            app_down_failures: 2,
            host_fresh: Duration::from_millis(100),
            fence_after: Duration::from_millis(100),
            ping_interval: Duration::from_millis(50),
            standby_timeout: Duration::from_millis(500),
            slow_standby: SlowStandby::Wait,
            rate_window: Duration::from_secs(2),
            gray_below: 40,
            lossy_below: 70,
            clean_above: 90,
        }
    }
}

/// Configuration keys, in [`Config::fields`] order (also the record and case-file keys).
pub const CONFIG_KEYS: &[&str] = &[
    "policy",
    "witnesses",
    "hb-interval",
    "hb-timeout",
    "hb-links",
    "hb-max-backoff",
    "hb-calm",
    "hb-trust-after",
    "lease",
    "lease-max",
    "drift-ppm",
    "drift-fixed",
    "ack-lease",
    "query-timeout",
    "requery-min",
    "requery-max",
    "report-fresh",
    "switchover",
    "switchover-hold",
    "switchover-min-interval",
    "app-down-after",
    "app-down-failures",
    "host-fresh",
    "fence-after",
    "ping-interval",
    "standby-timeout",
    "slow-standby",
    "rate-window",
    "gray-below",
    "lossy-below",
    "clean-above",
];

impl Config {
    /// Set one key from its text form (`50ms`, `true`, `1,2,3`); on error nothing changes.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let mut next = self.clone();
        next.set_unchecked(key, value)?;
        next.check()?;
        *self = next;
        Ok(())
    }

    /// Set several keys, then check the relations between all values once: values that must
    /// move together (e.g. `lease` above the default `lease-max`) can be given in any order.
    /// On error nothing changes.
    pub fn set_many(&mut self, pairs: &[(&str, &str)]) -> Result<(), ConfigError> {
        let mut next = self.clone();
        for (k, v) in pairs {
            next.set_unchecked(k, v)?;
        }
        next.check()?;
        *self = next;
        Ok(())
    }

    fn set_unchecked(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let Some(&k) = CONFIG_KEYS.iter().find(|k| **k == key) else {
            return Err(ConfigError {
                key: "key",
                value: key.to_string(),
                expected: "a decision configuration key".to_string(),
            });
        };
        let bad = |expected: &str| ConfigError {
            key: k,
            value: value.to_string(),
            expected: expected.to_string(),
        };
        let dur = || parse_duration(value).ok_or_else(|| bad("a duration like 50ms or 2s"));
        let int = |min: u64, max: u64| {
            value
                .parse::<u64>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| bad(&format!("an integer from {min} to {max}")))
        };
        match k {
            "policy" => {
                self.policy = Policy::parse(value)
                    .ok_or_else(|| bad("client-oriented, heartbeat-only or ping-node"))?
            }
            "witnesses" => {
                let mut ids: heapless::Vec<WitnessId, MAX_WITNESSES> = heapless::Vec::new();
                for part in value.split(',') {
                    let id = part
                        .trim()
                        .parse::<WitnessId>()
                        .map_err(|_| bad("comma-separated witness ids 0-255"))?;
                    ids.push(id).map_err(|_| bad("at most 15 witness ids"))?;
                }
                self.witnesses = WitnessSet::new(&ids).map_err(|e| bad(&e.expected))?;
            }
            "hb-interval" => self.heartbeat.interval = dur()?,
            "hb-timeout" => self.heartbeat.timeout = dur()?,
            "hb-links" => self.heartbeat.links = int(1, MAX_LINKS as u64)? as u8,
            // Zero is refused, not quietly taken as 1: a configuration means what it says.
            "hb-max-backoff" => self.heartbeat.max_backoff = int(1, 64)? as u32,
            "hb-calm" => self.heartbeat.calm = dur()?,
            "hb-trust-after" => self.heartbeat.trust_after = int(1, 100)? as u32,
            "lease" => self.lease.duration = dur()?,
            "lease-max" => self.lease.max_duration = dur()?,
            "drift-ppm" => self.lease.drift_ppm = int(0, 500_000)? as u32,
            "drift-fixed" => self.lease.drift_fixed = dur()?,
            "ack-lease" => self.lease.ack_lease = dur()?,
            "query-timeout" => self.query_timeout = dur()?,
            "requery-min" => self.requery_min = dur()?,
            "requery-max" => self.requery_max = dur()?,
            "report-fresh" => self.report_fresh = dur()?,
            "switchover" => {
                self.switchover = match value {
                    "true" => true,
                    "false" => false,
                    _ => return Err(bad("true or false")),
                }
            }
            "switchover-hold" => self.switchover_hold = dur()?,
            "switchover-min-interval" => self.switchover_min_interval = dur()?,
            "app-down-after" => self.app_down_after = dur()?,
            "app-down-failures" => self.app_down_failures = int(1, 1000)? as u32,
            "host-fresh" => self.host_fresh = dur()?,
            "fence-after" => self.fence_after = dur()?,
            "ping-interval" => self.ping_interval = dur()?,
            "standby-timeout" => self.standby_timeout = dur()?,
            "slow-standby" => {
                self.slow_standby = SlowStandby::parse(value)
                    .ok_or_else(|| bad("wait (keep protection) or lease (availability)"))?
            }
            "rate-window" => self.rate_window = dur()?,
            "gray-below" => self.gray_below = int(1, 100)? as u8,
            "lossy-below" => self.lossy_below = int(1, 100)? as u8,
            "clean-above" => self.clean_above = int(1, 100)? as u8,
            _ => return Err(bad("a decision configuration key")),
        }
        Ok(())
    }

    /// Check every value, and the relations between values, that the rules rely on. The
    /// daemons refuse a configuration that fails here before they act (DESIGN.md §6: zero
    /// intervals, an even witness set), and case files and replays are held to the same rules.
    ///
    /// Zero is still accepted where it means something: `fence-after` (pause as soon as
    /// authority lapses: output is held at once anyway), `app-down-after` (the application is
    /// down after `app-down-failures` failed probes, however quick) and `switchover-min-interval`
    /// (no wait between two switchovers; `switchover-hold` is the anti-flap).
    pub fn check(&self) -> Result<(), ConfigError> {
        let d = format_duration;
        let bad = |key: &'static str, value: Duration, expected: String| {
            Err(ConfigError {
                key,
                value: d(value),
                expected,
            })
        };
        let n = self.witnesses.len();
        if n < 3 || n.is_multiple_of(2) {
            let ids: Vec<String> = self.witnesses.ids().iter().map(|i| i.to_string()).collect();
            return Err(ConfigError {
                key: "witnesses",
                value: ids.join(","),
                expected: format!(
                    "an odd number of witnesses, at least 3 (got {n}): a majority of an even set \
                     tolerates no more failures than the odd set one smaller and invites splits, \
                     and a single witness is a single point of failure"
                ),
            });
        }
        let h = &self.heartbeat;
        let l = &self.lease;
        // Periods (zero would send or ask in a busy loop), timeouts and windows (zero would
        // never be met): at least what the loops' millisecond timers can honour.
        for (key, v, what) in [
            (
                "hb-interval",
                h.interval,
                "heartbeats would be sent in a busy loop",
            ),
            (
                "hb-timeout",
                h.timeout,
                "every heartbeat gap would be a suspicion",
            ),
            (
                "hb-calm",
                h.calm,
                "a stretched timeout would shrink back at once",
            ),
            ("lease", l.duration, "a lease would be worth nothing"),
            (
                "lease-max",
                l.max_duration,
                "a lease would be worth nothing",
            ),
            (
                "drift-fixed",
                l.drift_fixed,
                "the margin must cover scheduling and the loops' millisecond timers",
            ),
            ("ack-lease", l.ack_lease, "an ack would be worth nothing"),
            (
                "query-timeout",
                self.query_timeout,
                "no vote could arrive in time",
            ),
            (
                "requery-min",
                self.requery_min,
                "queries would be sent in a busy loop",
            ),
            (
                "requery-max",
                self.requery_max,
                "queries would be sent in a busy loop",
            ),
            (
                "report-fresh",
                self.report_fresh,
                "every report would be stale",
            ),
            (
                "switchover-hold",
                self.switchover_hold,
                "the switchover would have no anti-flap hold",
            ),
            (
                "host-fresh",
                self.host_fresh,
                "no daemon would ever count as reachable",
            ),
            (
                "ping-interval",
                self.ping_interval,
                "pings would be sent in a busy loop",
            ),
            (
                "standby-timeout",
                self.standby_timeout,
                "every standby would count as lost",
            ),
            (
                "rate-window",
                self.rate_window,
                "no probe would ever be counted",
            ),
        ] {
            if v < MIN_PERIOD {
                return bad(key, v, format!("at least 1ms (with 0, {what})"));
            }
        }
        if h.timeout < h.interval.saturating_mul(2) {
            return bad(
                "hb-timeout",
                h.timeout,
                format!(
                    "at least twice hb-interval ({}), so that one lost heartbeat is not a suspicion",
                    d(h.interval)
                ),
            );
        }
        if h.calm < h.timeout {
            return bad(
                "hb-calm",
                h.calm,
                format!(
                    "at least hb-timeout ({}): a calm period must be able to see a gap of half the timeout",
                    d(h.timeout)
                ),
            );
        }
        let lease_margin = l.margin(l.duration);
        if lease_margin.saturating_mul(2) >= l.duration {
            return bad(
                "lease",
                l.duration,
                format!(
                    "a lease more than twice its drift margin ({}, from drift-ppm and drift-fixed): \
                     the primary renews its lease at half the lease",
                    d(lease_margin)
                ),
            );
        }
        if l.max_duration < l.duration {
            return bad(
                "lease-max",
                l.max_duration,
                format!("at least the lease duration ({})", d(l.duration)),
            );
        }
        let ack_margin = l.margin(l.ack_lease);
        if ack_margin >= l.ack_lease {
            return bad(
                "ack-lease",
                l.ack_lease,
                format!(
                    "an ack lease longer than its drift margin ({})",
                    d(ack_margin)
                ),
            );
        }
        // What a takeover vote is worth to the standby: the lease less its margin.
        let vote = l.duration.saturating_sub(lease_margin);
        if l.ack_lease.saturating_add(ack_margin) >= vote {
            return bad(
                "ack-lease",
                l.ack_lease,
                format!(
                    "an ack lease that, with its margin ({}), is shorter than the lease less its \
                     margin ({}): the standby waits the last ack lease out while it holds its votes",
                    d(ack_margin),
                    d(vote)
                ),
            );
        }
        if self.query_timeout >= vote {
            return bad(
                "query-timeout",
                self.query_timeout,
                format!(
                    "shorter than the lease less its margin ({}): votes must still be valid when \
                     the query ends",
                    d(vote)
                ),
            );
        }
        if self.requery_max < self.requery_min {
            return bad(
                "requery-max",
                self.requery_max,
                format!("at least requery-min ({})", d(self.requery_min)),
            );
        }
        let alive = self.alive_window();
        if self.standby_timeout < alive {
            return bad(
                "standby-timeout",
                self.standby_timeout,
                format!(
                    "at least two heartbeat periods ({}): the standby's heartbeat replies come \
                     every hb-interval",
                    d(alive)
                ),
            );
        }
        if self.lossy_below > self.clean_above {
            return Err(ConfigError {
                key: "lossy-below",
                value: self.lossy_below.to_string(),
                expected: format!(
                    "at most clean-above ({}): a path cannot be both clean and lossy",
                    self.clean_above
                ),
            });
        }
        if self.gray_below > self.clean_above {
            return Err(ConfigError {
                key: "gray-below",
                value: self.gray_below.to_string(),
                expected: format!(
                    "at most clean-above ({}): a path cannot be both clean and gray",
                    self.clean_above
                ),
            });
        }
        Ok(())
    }

    /// Every key with its text value (what [`Config::set`] reads back).
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let d = format_duration;
        let ids: Vec<String> = self.witnesses.ids().iter().map(|i| i.to_string()).collect();
        vec![
            ("policy", self.policy.name().to_string()),
            ("witnesses", ids.join(",")),
            ("hb-interval", d(self.heartbeat.interval)),
            ("hb-timeout", d(self.heartbeat.timeout)),
            ("hb-links", self.heartbeat.links.to_string()),
            ("hb-max-backoff", self.heartbeat.max_backoff.to_string()),
            ("hb-calm", d(self.heartbeat.calm)),
            ("hb-trust-after", self.heartbeat.trust_after.to_string()),
            ("lease", d(self.lease.duration)),
            ("lease-max", d(self.lease.max_duration)),
            ("drift-ppm", self.lease.drift_ppm.to_string()),
            ("drift-fixed", d(self.lease.drift_fixed)),
            ("ack-lease", d(self.lease.ack_lease)),
            ("query-timeout", d(self.query_timeout)),
            ("requery-min", d(self.requery_min)),
            ("requery-max", d(self.requery_max)),
            ("report-fresh", d(self.report_fresh)),
            ("switchover", self.switchover.to_string()),
            ("switchover-hold", d(self.switchover_hold)),
            ("switchover-min-interval", d(self.switchover_min_interval)),
            ("app-down-after", d(self.app_down_after)),
            ("app-down-failures", self.app_down_failures.to_string()),
            ("host-fresh", d(self.host_fresh)),
            ("fence-after", d(self.fence_after)),
            ("ping-interval", d(self.ping_interval)),
            ("standby-timeout", d(self.standby_timeout)),
            ("slow-standby", self.slow_standby.name().to_string()),
            ("rate-window", d(self.rate_window)),
            ("gray-below", self.gray_below.to_string()),
            ("lossy-below", self.lossy_below.to_string()),
            ("clean-above", self.clean_above.to_string()),
        ]
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
