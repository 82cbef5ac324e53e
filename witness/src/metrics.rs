//! hsb-witness's Prometheus metrics (`metrics_listen`): what each guest's node observed, one
//! series per guest (label `guest`, `default` for a file without sections). Every family is
//! written once with all its guests' samples, as the text format requires.

use hsb_common::decision::proto::{AppVerdict, ProbeClass, ProbeTarget};
use hsb_common::kit::metrics::Kind;
use hsb_common::kit::shell::Surface;
use hsb_common::time::Nanos;

use crate::daemon::Daemon;
use crate::node::cause::REASON_WORDS;

/// Probe targets as metric label values (the application, each daemon).
const TARGETS: [&str; 3] = ["application", "primary-daemon", "standby-daemon"];

impl Daemon {
    /// The exposition at `now`.
    pub(crate) fn metrics_text(&self, now: Nanos) -> String {
        let mut e = Surface::exposition("hsb-witness", now);
        e.gauge(
            "hsb_witness_guests",
            "protected guests this witness serves",
            self.guests.len() as f64,
        );
        let names: Vec<&str> = self.guest_names();

        let fam = "hsb_witness_epoch_seen";
        e.family(
            fam,
            Kind::Gauge,
            "highest activation epoch this witness knows (rule 8)",
        );
        for (g, name) in self.guests.iter().zip(&names) {
            e.sample(fam, &[("guest", name)], g.node.epoch().0 as f64);
        }

        let fam = "hsb_witness_application";
        e.family(
            fam,
            Kind::Gauge,
            "what this witness sees of the guest's application: 1 for the current state",
        );
        for (g, name) in self.guests.iter().zip(&names) {
            let app = g.node.core().view(now).app;
            for st in AppVerdict::ALL {
                e.sample(
                    fam,
                    &[("guest", name), ("state", st.name())],
                    f64::from(u8::from(*st == app)),
                );
            }
        }

        let fam = "hsb_witness_daemon_up";
        e.family(
            fam,
            Kind::Gauge,
            "whether the guest's daemon answered this witness recently (failover.host-fresh)",
        );
        for (g, name) in self.guests.iter().zip(&names) {
            let v = g.node.core().view(now);
            for (d, up) in [("primary", v.primary_host), ("standby", v.standby_host)] {
                e.sample(
                    fam,
                    &[("guest", name), ("daemon", d)],
                    f64::from(u8::from(up)),
                );
            }
        }

        let fam = "hsb_witness_answered_ratio";
        e.family(
            fam,
            Kind::Gauge,
            "share of probes answered in time over failover.rate-window, by target (no sample: too few probes yet); a low application share over a lossy path to the primary while the standby's host answers cleanly is a gray path (application state lossy)",
        );
        for (g, name) in self.guests.iter().zip(&names) {
            let r = g.node.core().view(now).rates;
            for (target, rate) in TARGETS.iter().zip([r.app, r.primary, r.standby]) {
                if let Some(pct) = rate {
                    e.sample(
                        fam,
                        &[("guest", name), ("target", target)],
                        f64::from(pct) / 100.0,
                    );
                }
            }
        }

        let fam = "hsb_witness_maintenance";
        e.family(
            fam,
            Kind::Gauge,
            "1 while the standby's operator paused automatic takeovers",
        );
        for (g, name) in self.guests.iter().zip(&names) {
            e.sample(
                fam,
                &[("guest", name)],
                f64::from(u8::from(g.node.maintenance(now))),
            );
        }

        let fam = "hsb_witness_stale_mark";
        e.family(
            fam,
            Kind::Gauge,
            "1 while this witness knows the replica is stale (it leased to a primary running unprotected: rule 5)",
        );
        for (g, name) in self.guests.iter().zip(&names) {
            e.sample(
                fam,
                &[("guest", name)],
                f64::from(u8::from(g.node.core().mark().is_some())),
            );
        }

        let fam = "hsb_witness_grant_remaining_seconds";
        e.family(
            fam,
            Kind::Gauge,
            "time left of the vote or lease this witness granted last (0: none running)",
        );
        for (g, name) in self.guests.iter().zip(&names) {
            let (vote, lease) = match g.node.core().grant() {
                Some((_, true, until)) => (until.since(now).as_secs_f64(), 0.0),
                Some((_, false, until)) => (0.0, until.since(now).as_secs_f64()),
                None => (0.0, 0.0),
            };
            e.sample(fam, &[("guest", name), ("kind", "vote")], vote);
            e.sample(fam, &[("guest", name), ("kind", "lease")], lease);
        }

        let fam = "hsb_witness_probes_total";
        e.family(
            fam,
            Kind::Counter,
            "probes by target (the application as clients use it, each daemon's ping) and outcome",
        );
        for (g, name) in self.guests.iter().zip(&names) {
            let o = g.node.observed();
            for (t, target) in TARGETS.iter().enumerate() {
                for (c, class) in ProbeClass::ALL.iter().enumerate() {
                    e.sample(
                        fam,
                        &[
                            ("guest", name),
                            ("target", target),
                            ("outcome", class.name()),
                        ],
                        o.probes[t][c] as f64,
                    );
                }
            }
        }

        let fam = "hsb_witness_probe_duration_seconds";
        e.family(
            fam,
            Kind::Histogram,
            "probe latency by target (a ping's round trip for the daemons)",
        );
        for (g, name) in self.guests.iter().zip(&names) {
            for (t, target) in TARGETS.iter().enumerate() {
                e.histogram(
                    fam,
                    &[("guest", name), ("target", target)],
                    &g.node.observed().latency[t],
                );
            }
        }
        debug_assert_eq!(ProbeTarget::ALL.len(), TARGETS.len());

        for (fam, help, votes) in [
            (
                "hsb_witness_votes_total",
                "takeover, switchover and operator votes answered, by answer (refusals by reason)",
                true,
            ),
            (
                "hsb_witness_leases_total",
                "lease requests of the primary answered, by answer (refusals by reason)",
                false,
            ),
        ] {
            e.family(fam, Kind::Counter, help);
            for (g, name) in self.guests.iter().zip(&names) {
                let (c, o) = (g.node.counters(), g.node.observed());
                let (granted, reasons) = if votes {
                    (c.votes_granted, &o.votes_refused)
                } else {
                    (c.leases_granted, &o.leases_refused)
                };
                e.sample(
                    fam,
                    &[("guest", name), ("answer", "granted")],
                    granted as f64,
                );
                for (r, word) in REASON_WORDS.iter().enumerate() {
                    e.sample(
                        fam,
                        &[("guest", name), ("answer", "refused"), ("reason", word)],
                        reasons[r] as f64,
                    );
                }
            }
        }

        for (fam, help, pick) in [
            (
                "hsb_witness_bad_datagrams_total",
                "datagrams dropped: forged, corrupt, replayed or misaddressed",
                0,
            ),
            (
                "hsb_witness_loop_stalls_total",
                "times this witness's loop did not run for too long (its probe failures then were discarded)",
                1,
            ),
            (
                "hsb_witness_state_save_failures_total",
                "saves of the rollback guard that failed (no grant leaves until one succeeds)",
                2,
            ),
            (
                "hsb_witness_grants_withheld_total",
                "grants not sent because their promise was not on disk",
                3,
            ),
        ] {
            e.family(fam, Kind::Counter, help);
            for (g, name) in self.guests.iter().zip(&names) {
                let c = g.node.counters();
                let v = match pick {
                    0 => g.ep.rejected,
                    1 => g.node.core().stalls().0,
                    2 => c.save_failures,
                    _ => c.grants_withheld,
                };
                e.sample(fam, &[("guest", name)], v as f64);
            }
        }

        self.surface.finish_exposition(e)
    }
}
