//! The decision configuration ([`Config`]): its keys and defaults, setting keys from their text
//! form and reading them back. The checks of the values and of the relations between them are
//! in `config_check.rs`.

use super::*;

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
            host_fresh: Duration::from_millis(70),
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

#[path = "config_check.rs"]
mod check;
