//! `hsb-witness status`: what the witness sees and what it granted, as `key value` lines (the
//! control socket's answer; `--json` and the health exit code are the client's).

use hsb_common::time::Nanos;

use crate::daemon::Daemon;

impl Daemon {
    /// The status text at `now`.
    pub(crate) fn status_text(&self, now: Nanos) -> String {
        let node = &self.node;
        let core = node.core();
        let v = core.view(now);
        let mut s = String::new();
        let mut kv = |k: &str, v: String| s.push_str(&format!("{k} {v}\n"));
        kv("role", "witness".into());
        kv("node", self.s.node.clone());
        kv("id", self.s.id.to_string());
        kv("policy", self.s.decision.policy.to_string());
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
        let addrs = [self.s.primary, self.s.standby];
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
        for (i, a) in addrs.iter().enumerate() {
            kv(
                &format!("daemon_{a}"),
                node.hosts()
                    .role_of(i)
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
        let stats = self.probes.stats(0);
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
        for l in self.probes.status_lines() {
            kv("probe", l);
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
        kv("bad_datagrams", self.ep.rejected.to_string());
        let (stalls, discarded) = core.stalls();
        kv("loop_stalls", stalls.to_string());
        kv("failures_discarded", discarded.to_string());
        kv("state_file", self.s.state_file.display().to_string());
        kv("state_save_failures", c.save_failures.to_string());
        kv("grants_withheld", c.grants_withheld.to_string());
        s
    }
}
