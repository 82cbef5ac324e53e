//! [`StandbyCore::next_deadline`]: when a `Tick` next has something to do, so the daemon sleeps
//! until then instead of ticking the core every few milliseconds (issue 13).
//!
//! Each branch of `tick` has a predicate here that says whether a tick at a given time would
//! act or change the core's state (`*_acts`), the state being what it is now: between two steps
//! only time passes. Each predicate changes value only at a few known times (a query's deadline,
//! a vote running out, a report growing stale, a gate, a hold...), so the earliest of those
//! times at which it holds is the deadline; the detector says its own
//! ([`super::Detector::next_change`]). `standby_deadline_tests.rs` checks the whole against a run
//! ticked every millisecond.

use super::*;

impl StandbyCore {
    /// The earliest time after `now` at which a [`Input::Tick`] could decide anything or change
    /// the core's state, or when [`StandbyCore::may_send_alive`] turns false; `None` when only
    /// an input can (activated, or waiting for a full synchronisation with the heartbeat
    /// suspected). Stepping the core at its inputs and at this time decides what ticking it
    /// continuously would, at the same times. `now` plus one nanosecond when the next tick
    /// acts at once (a branch that a step's own tick did not reach, e.g. after a query failed).
    pub fn next_deadline(&self, now: Nanos) -> Option<Nanos> {
        if self.state == State::Activated {
            return None;
        }
        let soon = Nanos(now.0.saturating_add(1));
        let mut next = self.detector.next_change(now);
        let mut at = |t: Nanos| next = Some(next.map_or(t, |n| n.min(t)));
        // The heartbeat replies stop when a suspected primary's stream has not been heard for
        // a heartbeat timeout (what decides with it, `alive_ok_at`, needs no step: see
        // `note_alive`).
        if self.may_ack() && self.detector.suspected() {
            if let Some(t) = self.stream_at {
                let closes = later(t, self.cfg.heartbeat.timeout);
                if closes > now {
                    at(closes);
                }
            }
        }
        // The times at which the branch of `tick` for the current state can change its mind,
        // earliest first: the first at which it acts is the deadline.
        let mut times: heapless::Vec<Nanos, { 2 * MAX_WITNESSES + 16 }> = heapless::Vec::new();
        let mut candidate = |t: Nanos| {
            let _ = times.push(t.max(soon));
        };
        candidate(soon);
        candidate(self.next_query_at);
        if let Some(q) = self.query.as_ref() {
            candidate(q.deadline);
            for (v, _) in q.votes.iter().filter(|(v, _)| v.verdict.granted()) {
                candidate(self.cfg.lease.holder_until(q.sent_at, v.duration));
            }
        }
        if self.state == State::Following {
            for (_, at) in self.reports.iter() {
                // Fresh while elapsed <= report_fresh.
                candidate(Nanos(later(*at, self.cfg.report_fresh).0.saturating_add(1)));
            }
            if let Some(since) = self.cond_since {
                candidate(later(since, self.cfg.switchover_hold));
            }
            candidate(self.switchover_not_before);
        }
        if let Some(p) = self.ping_asked_at {
            candidate(later(p, self.cfg.ping_interval));
        }
        if let Some(p) = self.pending.as_ref() {
            candidate(p.gate);
            candidate(p.deadline);
            if let Some(u) = p.leases.quorum_until(self.quorum()) {
                candidate(u);
            }
            if let Some(f) = p.fenced_at {
                candidate(later(f, self.cfg.lease.duration / 2));
            }
        }
        times.sort_unstable();
        if let Some(&t) = times.iter().find(|&&t| self.tick_acts(t)) {
            at(t);
        }
        next
    }

    /// Whether `tick` at `t`, after the detector, acts or changes the state (`tick`'s match).
    fn tick_acts(&self, t: Nanos) -> bool {
        match self.state {
            State::Following => {
                if let Some(q) = self.query.as_ref() {
                    self.conclude_acts(q, t)
                } else if self.operator.is_some() {
                    t >= self.next_query_at
                } else {
                    self.switchover_acts(t)
                }
            }
            State::Deciding => self.decide_acts(t),
            State::Waiting | State::SwitchingOver => self.pending_acts(t),
            State::Unsynced | State::RefusedStale | State::Activated | State::SteppedDown => false,
        }
    }

    /// `conclude`: the outcome is known (a quorum granted, or can no longer), or time is up.
    fn conclude_acts(&self, q: &Query, t: Nanos) -> bool {
        self.outcome(q, t).is_some()
    }

    /// `decide`.
    fn decide_acts(&self, t: Nanos) -> bool {
        if let Some(q) = self.query.as_ref() {
            return self.conclude_acts(q, t);
        }
        if self.operator.is_some() {
            return t >= self.next_query_at;
        }
        if self.maintenance {
            return !self.said.paused;
        }
        let ping_due = self
            .ping_asked_at
            .is_none_or(|p| p < self.episode_start || elapsed(t, p) >= self.cfg.ping_interval);
        match self.cfg.policy {
            Policy::HeartbeatOnly => self.replica.is_some(),
            Policy::PingNode => match self.ping {
                Some((at, ok)) if at >= self.episode_start && self.ping_asked_at.is_some() => {
                    if ok {
                        self.replica.is_some()
                    } else {
                        !self.said.ping || ping_due
                    }
                }
                _ => ping_due,
            },
            Policy::ClientOriented => t >= self.next_query_at,
        }
    }

    /// `drive_pending`: the votes ran out, the gate opened, the fenced primary's final
    /// checkpoint was waited for long enough, or a planned switchover gives up.
    fn pending_acts(&self, t: Nanos) -> bool {
        let Some(p) = self.pending.as_ref() else {
            return true;
        };
        if !p.fenced && !p.leases.valid(t, self.quorum()) {
            return true;
        }
        let planned = p.ask == Some(OperatorAsk::Switchover);
        self.pending_ready(p, t) || (planned && !p.fenced && t >= p.deadline)
    }

    /// `switchover_check`: an alert about the guest said or re-armed, the switchover's
    /// condition begun or ended, or held long enough (a query, or the maintenance alert).
    fn switchover_acts(&self, t: Nanos) -> bool {
        if self.cfg.policy != Policy::ClientOriented {
            return false;
        }
        let need = self.quorum();
        let fresh = || {
            self.reports
                .iter()
                .filter(move |(r, at)| {
                    r.epoch == self.epoch && elapsed(t, *at) <= self.cfg.report_fresh
                })
                .map(|(r, _)| r)
        };
        let down = fresh()
            .filter(|r| {
                matches!(r.view.app, AppVerdict::Down | AppVerdict::Lossy) && r.view.standby_host
            })
            .count();
        let guest = fresh()
            .filter(|r| r.view.app == AppVerdict::GuestFailure)
            .count();
        if (guest >= need) != self.said.guest {
            return true;
        }
        if !self.cfg.switchover || down < need {
            return self.cond_since.is_some() || self.said.paused_switchover;
        }
        let Some(since) = self.cond_since else {
            return true;
        };
        let due = elapsed(t, since) >= self.cfg.switchover_hold
            && t >= self.switchover_not_before
            && t >= self.next_query_at
            && self.replica.is_some();
        due && !(self.maintenance && self.said.paused_switchover)
    }
}

#[cfg(test)]
#[path = "standby_deadline_tests.rs"]
mod tests;
