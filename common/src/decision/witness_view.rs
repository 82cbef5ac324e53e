//! What the witness core sees of the application and the daemons: reachability, success
//! rates, the gray path, and the application verdict with when it can change.

use super::*;

impl WitnessCore {
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

    /// The success rates over the rate window, percent.
    pub fn rates(&self, now: Nanos) -> Rates {
        let r = |t: ProbeTarget| self.rates[t as usize].rate(now);
        Rates {
            app: r(ProbeTarget::PrimaryApp),
            primary: r(ProbeTarget::PrimaryHost),
            standby: r(ProbeTarget::StandbyHost),
        }
    }

    /// A gray path (rule 6): the application answers only a fraction of probes, the path to its
    /// host is lossy (the primary daemon misses pings too), and the standby's host answers
    /// cleanly. A guest that answers nobody while its daemon answers everybody is not this
    /// (the daemon's path is clean), nor is a host that answers nothing at all (that is down).
    pub(super) fn gray(&self, now: Nanos) -> bool {
        let r = self.rates(now);
        let (Some(app), Some(primary), Some(standby)) = (r.app, r.primary, r.standby) else {
            return false;
        };
        app < self.cfg.gray_below
            && primary < self.cfg.lossy_below
            && standby >= self.cfg.clean_above
            && (app > 0 || primary > 0)
    }

    /// The application verdict, and for `Failing` how long until it could become `Down`. What
    /// the last probes say, unless the rates say the path is gray (and the last probes do not
    /// say the host is down).
    pub(super) fn app(&self, now: Nanos) -> (AppVerdict, Duration) {
        let base = self.app_now(now);
        match base.0 {
            AppVerdict::Up | AppVerdict::Failing | AppVerdict::GuestFailure if self.gray(now) => {
                (AppVerdict::Lossy, Duration::ZERO)
            }
            _ => base,
        }
    }

    /// The application verdict from the last probes alone.
    pub(super) fn app_now(&self, now: Nanos) -> (AppVerdict, Duration) {
        let v = &self.views[ProbeTarget::PrimaryApp as usize];
        let Some((_, class)) = v.last else {
            return (AppVerdict::Unknown, Duration::ZERO);
        };
        if class == ProbeClass::Ok {
            return (AppVerdict::Up, Duration::ZERO);
        }
        let heard = v.last_ok.unwrap_or(self.fresh_from).max(self.fresh_from);
        let silent = elapsed(now, heard);
        if v.fails < self.cfg.app_down_failures || silent < self.cfg.app_down_after {
            let wait = self.cfg.app_down_after.saturating_sub(silent);
            return (AppVerdict::Failing, wait.max(Duration::from_millis(1)));
        }
        let host = self.views[ProbeTarget::PrimaryHost as usize].last_ok;
        if self.host_reachable(now, ProbeTarget::PrimaryHost) {
            // The guest itself failed (F5) only if its daemon answered after the application
            // was seen failing. A daemon last heard before that may have died with it (a host
            // crash stops both at once): not yet known, until it answers or stays silent for
            // `host_fresh`.
            if host >= v.failing_since {
                return (AppVerdict::GuestFailure, Duration::ZERO);
            }
            let wait = self.host_unreachable_in(now, ProbeTarget::PrimaryHost);
            return (AppVerdict::Failing, wait.max(Duration::from_millis(1)));
        }
        // A daemon heard after its application had failed for `app_down_after` saw the guest
        // fail (F5, or output held by a stalled replication link: F10) and did not die with
        // it: a blip of its own (a starved CPU) is no host crash. It is down only once silent
        // for a lease, when a primary cut off from everyone has fenced itself anyway.
        if let Some(h) = host.filter(|&h| h >= heard.plus(self.cfg.app_down_after)) {
            if elapsed(now, h) < self.cfg.lease.duration {
                return (AppVerdict::GuestFailure, Duration::ZERO);
            }
        }
        // Not seen answering, but not seen failing since our last stall either: wait to know.
        let wait = self.host_unreachable_in(now, ProbeTarget::PrimaryHost);
        if wait > Duration::ZERO {
            return (AppVerdict::Failing, wait.max(Duration::from_millis(1)));
        }
        (AppVerdict::Down, Duration::ZERO)
    }

    /// When the application verdict next changes with time alone, if it can: a failing
    /// application that has failed often enough becomes down (or a guest failure) once it has
    /// been silent for `app_down_after` and its daemon's state is known. The daemon reports at
    /// once when the verdict turns down, so the standby need not wait for the next report or
    /// query to learn it.
    pub fn view_changes_at(&self, now: Nanos) -> Option<Nanos> {
        let v = &self.views[ProbeTarget::PrimaryApp as usize];
        match self.app_now(now) {
            (AppVerdict::Failing, wait) if v.fails >= self.cfg.app_down_failures => {
                Some(later(now, wait))
            }
            _ => None,
        }
    }
}
