//! Running one step of the schedule (its faults, held and healed) and the cluster's wholeness
//! between steps (waited for, recovered, described).

use std::time::{Duration, Instant};

use crate::soak::monitor::{wall_ms, Watch};
use crate::soak::schedule::{Fault, Step};
use crate::soak::HOSTS;

use super::{
    first_line, Nemesis, Proc, StepRecord, Stuck, CLI_TIMEOUT, TICK, WHOLE_WAIT, WITNESS_SETTLE,
};

impl Nemesis<'_> {
    /// Both hosts' views and every witness's, for reports.
    pub fn describe_state(&self, w: &Watch) -> String {
        let mut parts = vec![];
        for (name, v) in HOSTS.iter().zip(&w.views) {
            parts.push(format!("host {name}: {}", v.describe()));
        }
        for i in 0..3 {
            let st = self.c.witness_status(i);
            parts.push(if st.is_empty() {
                format!("witness {}: no answer", i + 1)
            } else {
                format!(
                    "witness {}: application {} epoch_seen {} stale_mark {}",
                    i + 1,
                    st.get("application").map_or("?", String::as_str),
                    st.get("epoch_seen").map_or("?", String::as_str),
                    st.get("stale_mark").map_or("?", String::as_str),
                )
            });
        }
        if !self.world.active.is_empty() {
            let names: Vec<&str> = self.world.active.iter().map(|(_, n)| n.as_str()).collect();
            parts.push(format!("faults in force: {}", names.join(", ")));
        }
        parts.join("; ")
    }

    /// Whether the cluster is whole: the newest primary protected by the other host's
    /// standby, which follows it; every witness healthy in the model, seeing the application
    /// up and the primary's epoch, with no stale-replica mark; the service address on the
    /// primary's host only. Returns the primary's host and epoch.
    pub fn whole(&self) -> Option<(usize, u64)> {
        let w = self.mon.snapshot();
        let (e, p) = w.whole_within(Duration::from_millis(200))?;
        let now = Instant::now();
        if self.world.hosts.iter().any(|h| h.proc != Proc::Running)
            || self
                .world
                .witnesses
                .iter()
                .any(|w| w.trouble(now, WITNESS_SETTLE).is_some())
        {
            return None;
        }
        for i in 0..3 {
            let st = self.c.witness_status(i);
            let ok = st.get("application").is_some_and(|a| a == "up")
                && st.get("stale_mark").is_some_and(|m| m == "none")
                && st.get("epoch_seen").is_some_and(|s| *s == e.to_string());
            if !ok {
                return None;
            }
        }
        if !self.c.has_service_address(p) || self.c.has_service_address(1 - p) {
            return None;
        }
        Some((p, e))
    }

    /// Wait until the cluster is whole, at most `timeout`.
    pub fn wait_whole(&mut self, timeout: Duration) -> Option<(usize, u64)> {
        let t = Instant::now();
        loop {
            if let Some(r) = self.whole() {
                self.roles = r;
                return Some(r);
            }
            if t.elapsed() > timeout || self.interrupted() {
                return None;
            }
            self.wait(Duration::from_millis(100));
        }
    }

    /// Wait for a whole cluster; when it does not come, record it, restart the host that does
    /// not serve, and wait once more. Err when the cluster cannot be made whole.
    pub(super) fn whole_or_recover(&mut self, step: usize) -> Result<(), String> {
        if self.wait_whole(WHOLE_WAIT).is_some() {
            return Ok(());
        }
        if self.interrupted() {
            return Err("interrupted".into());
        }
        let w = self.mon.snapshot();
        let state = self.describe_state(&w);
        self.event(&format!(
            "STUCK: not whole {} s after step {step}: {state}",
            WHOLE_WAIT.as_secs()
        ));
        self.stuck.push(Stuck {
            at: Instant::now(),
            step,
            state: state.clone(),
        });
        // Recovery, as an operator would: with no copy serving and a standby refusing its
        // stale replica, accept the loss (`force-stale`, rule 5; reported, and the client
        // history shows what it cost); otherwise restart the host that does not run the
        // newest primary.
        let serving = w.views.iter().any(|v| v.serving);
        let refusing = (0..2)
            .find(|h| w.views[*h].role == "standby" && w.views[*h].decision == "refused-stale");
        if let (false, Some(h)) = (serving, refusing) {
            let (code, out) = self.c.standby_cli(h, &["force-stale"], CLI_TIMEOUT);
            let text = format!(
                "recovery after step {step}: no copy served and host {}'s standby refused its stale replica: `force-stale`: exit {code}: {}",
                HOSTS[h],
                first_line(&out)
            );
            self.event(&text);
            self.anomalies.push(text);
            if self.wait_whole(WHOLE_WAIT).is_some() {
                return Ok(());
            }
        } else if let Some((p, _)) = w.primary() {
            let h = 1 - p;
            self.event(&format!(
                "recovery: restarting host {} (not the primary)",
                HOSTS[h]
            ));
            self.c.restart_host(h);
            self.world.hosts[h].proc = Proc::Running;
            self.world.hosts[h].started = Instant::now();
            self.changed();
            if self.wait_whole(WHOLE_WAIT).is_some() {
                return Ok(());
            }
        }
        let w = self.mon.snapshot();
        Err(format!(
            "the cluster could not be made whole again after step {step}: {}",
            self.describe_state(&w)
        ))
    }

    /// Run one step of the schedule.
    pub fn run_step(&mut self, index: usize, step: Step) -> Result<(), String> {
        let from_whole = if step.wait_whole {
            self.whole_or_recover(index.saturating_sub(1))?;
            true
        } else {
            self.whole().is_some()
        };
        let (p, e) = self.roles();
        self.steps.push(StepRecord {
            index,
            step,
            at: Instant::now(),
            wall: wall_ms(),
            primary: p,
            epoch: e,
            from_whole,
            notes: vec![],
        });
        self.event(&format!(
            "step {index}: {} (primary on host {}, epoch {e})",
            step.describe(),
            HOSTS[p]
        ));
        let mut undos = self.inject(index, step.main, p)?;
        let t0 = Instant::now();
        let hold = Duration::from_millis(step.hold_ms);
        let mut extra = step.extra;
        let mut extra_undos = vec![];
        while (t0.elapsed() < hold || extra.is_some()) && !self.interrupted() {
            if let Some((f, at)) = extra {
                if t0.elapsed() >= Duration::from_millis(at) {
                    self.event(&format!("step {index}: + {}", f.name()));
                    extra_undos = self.inject(index, f, p)?;
                    extra = None;
                }
            }
            self.flap_tick()?;
            self.wait(TICK);
        }
        // A flapping link ends down, as it was injected: its undo brings it up.
        if let Some((n, net, _, _, false)) = self.flap.take() {
            self.link_down(n, net)?;
        }
        if step.main == Fault::MaintenanceKill && self.world.maintenance {
            let w = self.mon.snapshot();
            if w.newest_epoch() > e {
                let text = format!(
                    "step {index}: a takeover (epoch {}) happened during maintenance mode",
                    w.newest_epoch()
                );
                self.event(&text);
                self.anomalies.push(text);
            } else {
                self.note(index, "no takeover during maintenance".into());
            }
        }
        for u in extra_undos.into_iter().rev() {
            self.undo(u)?;
        }
        for u in undos.drain(..).rev() {
            self.undo(u)?;
        }
        if let Some((step, cmd, h)) = self.cli.take() {
            let (code, out) = h
                .join()
                .unwrap_or((-1, "the command's thread failed".into()));
            self.operator_answered(step, &format!("hsb-standby {cmd}"), &cmd, code, &out);
        }
        self.event(&format!("step {index}: healed"));
        self.wait(Duration::from_millis(step.gap_ms));
        Ok(())
    }
}
