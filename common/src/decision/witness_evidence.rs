//! The witness core's evidence from probes: a probe's result, a late answer, a stall of the
//! daemon's own loop, and what they say of a host's reachability.

use core::time::Duration;

use super::super::{elapsed, nanos_of, Nanos};
use super::{ProbeClass, ProbeTarget, WitnessCore};

impl WitnessCore {
    pub(super) fn probe(
        &mut self,
        now: Nanos,
        target: ProbeTarget,
        class: ProbeClass,
        took: Duration,
    ) {
        let started = Nanos(now.0.saturating_sub(nanos_of(took)));
        if class != ProbeClass::Ok && started < self.fresh_from {
            // It ran while our own loop stalled: it may have failed only because nobody looked.
            // (An answer is evidence whenever it came.)
            self.discarded = self.discarded.saturating_add(1);
            return;
        }
        self.rates[target as usize].record(now, class == ProbeClass::Ok);
        let v = &mut self.views[target as usize];
        v.last = Some((now, class));
        if class == ProbeClass::Ok {
            v.last_ok = Some(now);
            v.fails = 0;
        } else {
            v.fails = v.fails.saturating_add(1);
        }
    }

    /// A ping given up at `timed_out_at` was answered late, at `now` (see
    /// [`super::Input::Delivered`]).
    pub(super) fn delivered(&mut self, now: Nanos, target: ProbeTarget, timed_out_at: Nanos) {
        if target == ProbeTarget::PrimaryApp || timed_out_at < self.fresh_from {
            return;
        }
        self.rates[target as usize].amend(timed_out_at);
        let slack = self.slack(now, target);
        let v = &mut self.views[target as usize];
        v.last_ok = v.last_ok.max(Some(timed_out_at));
        v.late = Some((now, slack.max(elapsed(now, timed_out_at))));
        // The last failure was this ping's: the daemon answered after every earlier one.
        if v.last == Some((timed_out_at, ProbeClass::Timeout)) {
            v.fails = 0;
        }
    }

    /// How late past the probe timeout the host's answers came over the rate window: a path
    /// that slow is given that much longer before its silence says the host is down, and its
    /// timeouts alone say nothing (the answers may be on their way).
    fn slack(&self, now: Nanos, target: ProbeTarget) -> Duration {
        match self.views[target as usize].late {
            Some((at, by)) if elapsed(now, at) <= self.cfg.rate_window => by,
            _ => Duration::ZERO,
        }
    }

    /// Our own loop stalled from `since` to `now`: start counting evidence again.
    pub(super) fn stalled(&mut self, since: Nanos, now: Nanos) {
        if now <= since {
            return;
        }
        self.stalls = self.stalls.saturating_add(1);
        self.fresh_from = self.fresh_from.max(now);
        for v in &mut self.views {
            v.fails = 0;
            // Answers read late because nobody looked say nothing of the path.
            v.late = None;
        }
        // Rates over the stall would count probes nobody watched: start the window again.
        for r in &mut self.rates {
            r.clear();
        }
    }

    /// Reachable: answered within `host_fresh` (plus the path's [`Self::slack`]), and not
    /// failed `app_down_failures` times since (on a path without slack).
    pub(super) fn host_reachable(&self, now: Nanos, target: ProbeTarget) -> bool {
        let v = &self.views[target as usize];
        let slack = self.slack(now, target);
        (v.fails < self.cfg.app_down_failures || !slack.is_zero())
            && v.last_ok
                .is_some_and(|t| elapsed(now, t) <= self.cfg.host_fresh + slack)
    }

    /// How long until a host that is not reachable counts as unreachable on fresh evidence: zero
    /// once it failed `app_down_failures` times (on a path without slack), or stayed silent for
    /// `host_fresh` plus the path's slack, since the evidence started (the start, or the end of
    /// our last stall).
    pub(super) fn host_unreachable_in(&self, now: Nanos, target: ProbeTarget) -> Duration {
        let v = &self.views[target as usize];
        let slack = self.slack(now, target);
        if v.fails >= self.cfg.app_down_failures && slack.is_zero() {
            return Duration::ZERO;
        }
        let heard = v.last_ok.unwrap_or(self.fresh_from).max(self.fresh_from);
        (self.cfg.host_fresh + slack).saturating_sub(elapsed(now, heard))
    }
}
