//! `hsb-witness status`: what the witness sees and what it granted, as `key value` lines (the
//! control socket's answer; `--json` and the health exit code are the client's). With several
//! guests, each guest's lines follow a `guest NAME` line; `status GUEST` answers one guest.
//! The same summary, shortened, is systemd's STATUS.

use hsb_common::decision::proto::AppVerdict;
use hsb_common::time::Nanos;

use crate::config::DEFAULT_GUEST;
use crate::daemon::{Daemon, GuestRun};

impl Daemon {
    /// Whether guests are named (a file with sections).
    pub(crate) fn named_guests(&self) -> bool {
        self.guests.len() > 1
            || self
                .guests
                .first()
                .is_some_and(|g| g.s.name != DEFAULT_GUEST)
    }

    /// The status text at `now`: every guest, or only guest `only`.
    pub(crate) fn status_text(&self, now: Nanos, only: Option<usize>) -> String {
        let mut s = String::new();
        let mut kv = |k: &str, v: String| s.push_str(&format!("{k} {v}\n"));
        kv("role", "witness".into());
        kv("node", self.s.node.clone());
        if self.named_guests() {
            kv("guests", self.guest_names().join(","));
        }
        for (i, g) in self.guests.iter().enumerate() {
            if only.is_some_and(|o| o != i) {
                continue;
            }
            if self.named_guests() {
                kv("guest", g.s.name.clone());
            }
            self.guest_lines(now, i, g, &mut kv);
        }
        if let Some(line) = self.surface.metrics_status() {
            kv("metrics", line);
        }
        self.surface.turns.status(now, &mut kv);
        s
    }

    fn guest_lines(&self, now: Nanos, i: usize, g: &GuestRun, kv: &mut impl FnMut(&str, String)) {
        let node = &g.node;
        let core = node.core();
        let v = core.view(now);
        kv("id", g.s.id.to_string());
        kv("policy", g.s.decision.policy.to_string());
        kv("epoch_seen", core.epoch_seen().0.to_string());
        kv(
            "maintenance",
            if node.maintenance(now) {
                "on (automatic takeovers paused by the standby's operator)".into()
            } else {
                "off".into()
            },
        );
        kv("application", v.app.to_string());
        kv("primary_daemon", v.primary_host.to_string());
        kv("standby_daemon", v.standby_host.to_string());
        // Share of probes answered over failover.rate-window, percent ("none": too few yet).
        let pct = |r: Option<u8>| r.map_or("none".to_string(), |r| r.to_string());
        kv("application_rate", pct(v.rates.app));
        kv("primary_daemon_rate", pct(v.rates.primary));
        kv("standby_daemon_rate", pct(v.rates.standby));
        let addrs = [g.s.primary, g.s.standby];
        match node.hosts().primary_slot() {
            Some(slot) => {
                kv("primary_host", addrs[slot].to_string());
                kv("standby_host", addrs[1 - slot].to_string());
            }
            None => kv(
                "primary_host",
                "none (both daemons answer as standbys)".into(),
            ),
        }
        for (slot, a) in addrs.iter().enumerate() {
            kv(
                &format!("daemon_{a}"),
                node.hosts()
                    .role_of(slot)
                    .map_or("not heard".into(), |(r, e)| {
                        format!("{r:?} in epoch {}", e.0)
                    }),
            );
        }
        kv(
            "stale_mark",
            core.mark().map_or("none".into(), |m| {
                format!(
                    "epoch {} replica at {} (leases granted up to checkpoint {})",
                    m.epoch.0, m.after, m.upto
                )
            }),
        );
        let stats = self.probes.stats(i);
        let last = stats.and_then(|st| st.last.as_ref());
        kv(
            "probe_last",
            last.map_or("none".into(), |r| {
                format!(
                    "{:?} in {:.1}ms: {}",
                    r.class,
                    r.latency.as_secs_f64() * 1e3,
                    r.detail
                )
            }),
        );
        kv("probes", stats.map_or(0, |st| st.runs).to_string());
        if self.named_guests() {
            if let Some(l) = self.probes.status_lines().get(i) {
                kv("probe", l.clone());
            }
        } else {
            for l in self.probes.status_lines() {
                kv("probe", l);
            }
        }
        let grant = core.grant().map(|(e, vote, until)| {
            format!(
                "{} to epoch {} for {:.0} ms more",
                if vote { "vote" } else { "lease" },
                e.0,
                until.since(now).as_secs_f64() * 1e3
            )
        });
        kv("grant", grant.unwrap_or_else(|| "none".into()));
        let c = node.counters();
        kv("votes_granted", c.votes_granted.to_string());
        kv("votes_refused", c.votes_refused.to_string());
        kv("leases_granted", c.leases_granted.to_string());
        kv("leases_refused", c.leases_refused.to_string());
        let pings = node.pings();
        kv(
            "pings_primary",
            format!("{} answered, {} missed", pings[0].0, pings[0].1),
        );
        kv(
            "pings_standby",
            format!("{} answered, {} missed", pings[1].0, pings[1].1),
        );
        kv("bad_datagrams", g.ep.rejected.to_string());
        let (stalls, discarded) = core.stalls();
        kv("loop_stalls", stalls.to_string());
        kv("failures_discarded", discarded.to_string());
        kv("state_file", g.s.state_file.display().to_string());
        kv("state_save_failures", c.save_failures.to_string());
        kv("grants_withheld", c.grants_withheld.to_string());
    }

    /// One line for systemd's STATUS: each guest's application and daemons.
    pub(crate) fn summary(&self, now: Nanos) -> String {
        let parts: Vec<String> = self
            .guests
            .iter()
            .map(|g| {
                let v = g.node.core().view(now);
                let daemons = usize::from(v.primary_host) + usize::from(v.standby_host);
                let app = match v.app {
                    AppVerdict::Unknown => "no probe result yet".to_string(),
                    a => format!("application {a}"),
                };
                let head = if self.named_guests() {
                    format!("{}: ", g.s.name)
                } else {
                    String::new()
                };
                format!(
                    "{head}{app}, {daemons}/2 daemons answer, epoch {}",
                    g.node.epoch().0
                )
            })
            .collect();
        parts.join("; ")
    }
}
