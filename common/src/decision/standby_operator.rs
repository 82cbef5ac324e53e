//! The operator's requests (rule 9: activate, switchover, forced) and maintenance mode.

use super::*;

impl StandbyCore {
    /// Rule 9: the operator's request.
    pub(super) fn operator_request(
        &mut self,
        now: Nanos,
        ask: OperatorAsk,
        force: bool,
        out: &mut Actions<Action>,
    ) {
        if matches!(self.state, State::Activated) {
            return;
        }
        let rule = if force {
            Rule::OperatorForced
        } else {
            ask.rule()
        };
        if self.replica.is_none() || matches!(self.state, State::Unsynced | State::SteppedDown) {
            let mut e = self.evidence(now, rule, ActionKind::CannotDecide);
            e.checkpoint = None;
            emit(
                out,
                Action::CannotDecide {
                    evidence: Box::new(e),
                },
            );
            return;
        }
        self.cancel_query(out);
        self.abandon_pending(out);
        if force {
            // The operator says the primary is stopped: no witnesses, no waiting, whatever the
            // replica's staleness. The new epoch still reaches every witness the new primary
            // can reach (its lease requests carry it).
            let mut e = self.evidence(now, rule, ActionKind::Activate);
            e.new_epoch = Some(self.epoch.next());
            e.forced = true;
            self.operator = None;
            return self.activate(LeaseSet::new(), e, out);
        }
        self.operator = Some(ask);
        self.operator_until = later(
            now,
            self.cfg
                .lease
                .max_duration
                .saturating_add(self.cfg.lease.duration),
        );
        self.state = if self.detector.suspected() {
            State::Deciding
        } else {
            State::Following
        };
        self.start_query(now, VoteKind::Operator, out);
    }

    /// The operator's request asks the witnesses again when its refusals said to.
    pub(super) fn operator_retry(&mut self, now: Nanos, out: &mut Actions<Action>) {
        if now >= self.next_query_at {
            self.start_query(now, VoteKind::Operator, out);
        }
    }

    pub(super) fn set_maintenance(&mut self, now: Nanos, on: bool, out: &mut Actions<Action>) {
        if self.maintenance == on {
            return;
        }
        self.maintenance = on;
        self.said.paused = false;
        self.said.paused_switchover = false;
        if on {
            // A takeover under way stops here (the operator's own requests go on).
            if self.operator.is_none() {
                self.cancel_query(out);
            }
            if self.state == State::Waiting {
                self.abandon_pending(out);
                self.state = State::Deciding;
            }
        }
        let rule = if on {
            Rule::MaintenanceOn
        } else {
            Rule::MaintenanceOff
        };
        let e = self.evidence(now, rule, ActionKind::Stay);
        emit(
            out,
            Action::Alert {
                evidence: Box::new(e),
            },
        );
    }
}
