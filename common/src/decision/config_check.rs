//! [`Config::check`]: every value, and the relations between values, that the rules rely on.

use super::*;

impl Config {
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
}
