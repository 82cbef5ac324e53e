//! The pending activation (a quorum granted): waiting out the primary's ack authority, or its
//! fence confirmation in a switchover, then activating; or giving up and withdrawing the votes.

use super::*;

impl StandbyCore {
    /// During a switchover the fenced primary steps down to the epoch we are starting, and says so
    /// (heartbeats of that epoch): that is its confirmation, not a newer primary.
    pub(super) fn fenced_for_us(&mut self, now: Nanos, epoch: Epoch) -> bool {
        if self.state != State::SwitchingOver || epoch != self.epoch.next() {
            return false;
        }
        if let Some(p) = self.pending.as_mut() {
            p.fenced = true;
            p.fenced_at.get_or_insert(now);
        }
        true
    }

    pub(super) fn drive_pending(&mut self, now: Nanos, out: &mut Actions<Action>) {
        let Some(p) = self.pending.as_ref() else {
            self.state = State::Following;
            return;
        };
        // Once the primary confirmed its fence it has stepped down for good: nothing it could
        // release remains, so the votes need not outlast the wait for its final checkpoint.
        if !p.fenced && !p.leases.valid(now, self.quorum()) {
            // The votes ran out before it was safe to use them: ask again.
            return self.give_up_pending(now, out);
        }
        let planned = p.ask == Some(OperatorAsk::Switchover);
        let ready = self.pending_ready(p, now);
        if ready {
            if let Some(p) = self.pending.take() {
                let mut e = p.evidence;
                e.at = now;
                self.activate(p.leases, e, out);
            }
        } else if planned && !p.fenced && now >= p.deadline {
            self.give_up_pending(now, out);
        }
    }

    /// Whether the pending activation `p`, its votes still valid, may activate at `now`.
    pub(super) fn pending_ready(&self, p: &Pending, now: Nanos) -> bool {
        let planned = p.ask == Some(OperatorAsk::Switchover);
        if p.fenced {
            // Activate from the primary's final checkpoint once it is applied; if it does not
            // come (lost on the way), from what the replica has: nothing acknowledged is lost.
            let applied = match (p.final_ckpt, self.replica) {
                (Some(f), Some(r)) => r >= f,
                (None, _) => true,
                (Some(_), None) => false,
            };
            let waited = p
                .fenced_at
                .is_some_and(|t| elapsed(now, t) >= self.cfg.lease.duration / 2);
            applied || waited
        } else {
            match p.kind {
                VoteKind::Takeover => now >= p.gate,
                // A planned switchover needs the primary's confirmation (it is alive).
                VoteKind::Operator if planned => false,
                // Otherwise the primary's ack authority is waited out.
                VoteKind::Switchover | VoteKind::Operator => now >= p.gate,
            }
        }
    }

    /// The pending activation cannot go on: withdraw its votes, say so if it was the
    /// operator's, and go back to deciding (or following).
    fn give_up_pending(&mut self, now: Nanos, out: &mut Actions<Action>) {
        let ask = self.pending.as_ref().and_then(|p| p.ask);
        // The witnesses' answers that started it (the evidence of a fresh query would say that
        // none answered), with the time and heartbeat of the give-up.
        let granted = self.pending.as_ref().map(|p| p.evidence.clone());
        self.abandon_pending(out);
        self.state = if self.detector.suspected() {
            State::Deciding
        } else {
            State::Following
        };
        self.next_query_at = now;
        if let Some(ask) = ask {
            let fresh = self.evidence(now, ask.rule(), ActionKind::CannotDecide);
            let e = match granted {
                Some(mut g) => {
                    g.at = fresh.at;
                    g.heartbeat = fresh.heartbeat;
                    g.rule = fresh.rule;
                    g.action = fresh.action;
                    g.new_epoch = None;
                    g
                }
                None => fresh,
            };
            emit(
                out,
                Action::CannotDecide {
                    evidence: Box::new(e),
                },
            );
        }
    }

    pub(super) fn abandon_pending(&mut self, out: &mut Actions<Action>) {
        if let Some(p) = self.pending.take() {
            emit(
                out,
                Action::Withdraw(Withdraw {
                    epoch: self.epoch.next(),
                    query: p.query,
                }),
            );
        }
    }

    pub(super) fn activate(
        &mut self,
        leases: LeaseSet,
        evidence: Evidence,
        out: &mut Actions<Action>,
    ) {
        let epoch = self.epoch.next();
        self.state = State::Activated;
        self.query = None;
        self.pending = None;
        self.operator = None;
        emit(
            out,
            Action::Activate {
                epoch,
                leases: Box::new(leases),
                evidence: Box::new(evidence),
            },
        );
    }
}
