//! What a tick decides from what the core has seen: the heartbeat detector's verdicts, a lost
//! heartbeat (a takeover query, or the baselines' heartbeat-only and ping-node rules; only logged
//! under maintenance), and with the heartbeat fine the switchover condition (rule 6).

use super::*;

impl StandbyCore {
    pub(super) fn on_detector(&mut self, now: Nanos, ev: DetectorEvent, out: &mut Actions<Action>) {
        match ev {
            DetectorEvent::Suspect => {
                self.said.link_failure = false;
                self.said.no_quorum = false;
                self.said.no_replica = false;
                self.said.ping = false;
                self.episode_start = now;
                self.backoff = self.cfg.requery_min;
                match self.state {
                    State::Following => {
                        // A switchover query in flight is moot: the question is now a takeover.
                        // (An operator's request goes on: it asks for activation anyway.)
                        if self.operator.is_none() {
                            self.cancel_query(out);
                        }
                        self.state = State::Deciding;
                        self.next_query_at = now;
                        self.said.paused = false;
                    }
                    State::Unsynced => {
                        let e = self.evidence(now, Rule::NoReplica, ActionKind::CannotDecide);
                        emit(
                            out,
                            Action::CannotDecide {
                                evidence: Box::new(e),
                            },
                        );
                    }
                    _ => {}
                }
            }
            DetectorEvent::Trust => match self.state {
                State::Deciding | State::RefusedStale => {
                    if self.operator.is_none() {
                        self.cancel_query(out);
                    }
                    self.state = State::Following;
                }
                State::Waiting => {
                    // The primary is back before its authority ran out: ride through.
                    self.abandon_pending(out);
                    self.state = State::Following;
                }
                _ => {}
            },
            DetectorEvent::LinkDown(_) => {
                let e = self.evidence(now, Rule::LinkDown, ActionKind::Stay);
                emit(
                    out,
                    Action::Alert {
                        evidence: Box::new(e),
                    },
                );
            }
            DetectorEvent::LinkUp(_) => {}
        }
    }

    pub(super) fn decide(&mut self, now: Nanos, out: &mut Actions<Action>) {
        if self.query.is_some() {
            // A query already asked (a takeover before the pause, or the operator's request).
            return self.conclude(now, out);
        }
        if self.operator.is_some() {
            return self.operator_retry(now, out);
        }
        if self.maintenance {
            return self.paused(now, out);
        }
        match self.cfg.policy {
            Policy::HeartbeatOnly => self.activate_baseline(now, Rule::HeartbeatLoss, out),
            Policy::PingNode => match self.ping {
                Some((at, ok)) if at >= self.episode_start && self.ping_asked_at.is_some() => {
                    if ok {
                        self.activate_baseline(now, Rule::PingNodeAnswers, out);
                    } else {
                        if !self.said.ping {
                            self.said.ping = true;
                            let e =
                                self.evidence(now, Rule::PingNodeSilent, ActionKind::CannotDecide);
                            emit(
                                out,
                                Action::CannotDecide {
                                    evidence: Box::new(e),
                                },
                            );
                        }
                        self.ask_ping(now, out);
                    }
                }
                _ => self.ask_ping(now, out),
            },
            Policy::ClientOriented => {
                if self.query.is_some() {
                    self.conclude(now, out);
                } else if now >= self.next_query_at {
                    self.start_query(now, VoteKind::Takeover, out);
                }
            }
        }
    }

    /// Maintenance mode and the heartbeat is lost: no witness query (a granted vote would stop
    /// the witnesses leasing to the primary) and no activation; what would have been decided is
    /// logged once per episode, from the witnesses' fresh reports.
    fn paused(&mut self, now: Nanos, out: &mut Actions<Action>) {
        if self.said.paused {
            return;
        }
        self.said.paused = true;
        let rule = match self.cfg.policy {
            Policy::HeartbeatOnly => Rule::HeartbeatLoss,
            Policy::PingNode => Rule::PingNodeAnswers,
            Policy::ClientOriented => {
                let down = self
                    .reports
                    .iter()
                    .filter(|(r, at)| {
                        r.epoch == self.epoch
                            && elapsed(now, *at) <= self.cfg.report_fresh
                            && r.view.app == AppVerdict::Down
                    })
                    .count();
                if down >= self.quorum() {
                    Rule::QuorumNoAnswer
                } else {
                    Rule::PrimaryAnswers
                }
            }
        };
        let e = self.evidence(now, rule, ActionKind::Paused);
        emit(
            out,
            Action::Alert {
                evidence: Box::new(e),
            },
        );
    }

    fn ask_ping(&mut self, now: Nanos, out: &mut Actions<Action>) {
        let due = self
            .ping_asked_at
            .is_none_or(|t| t < self.episode_start || elapsed(now, t) >= self.cfg.ping_interval);
        if due {
            self.ping_asked_at = Some(now);
            emit(out, Action::PingNode);
        }
    }

    fn activate_baseline(&mut self, now: Nanos, rule: Rule, out: &mut Actions<Action>) {
        if self.replica.is_none() {
            return;
        }
        let mut e = self.evidence(now, rule, ActionKind::Activate);
        e.new_epoch = Some(self.epoch.next());
        self.activate(LeaseSet::new(), e, out);
    }

    pub(super) fn switchover_check(&mut self, now: Nanos, out: &mut Actions<Action>) {
        if self.cfg.policy != Policy::ClientOriented {
            return;
        }
        let need = self.quorum();
        let fresh = || {
            self.reports.iter().filter(|(r, at)| {
                r.epoch == self.epoch && elapsed(now, *at) <= self.cfg.report_fresh
            })
        };
        // Down, or a gray path (the application answers a fraction over a lossy path while the
        // standby's host answers cleanly): either way clients are better served from here.
        let down = fresh()
            .filter(|(r, _)| {
                matches!(r.view.app, AppVerdict::Down | AppVerdict::Lossy) && r.view.standby_host
            })
            .count();
        let guest = fresh()
            .filter(|(r, _)| r.view.app == AppVerdict::GuestFailure)
            .count();
        if guest >= need {
            if !self.said.guest {
                self.said.guest = true;
                let e = self.evidence(now, Rule::GuestFailure, ActionKind::Stay);
                emit(
                    out,
                    Action::Alert {
                        evidence: Box::new(e),
                    },
                );
            }
        } else {
            self.said.guest = false;
        }
        if !self.cfg.switchover || down < need {
            self.cond_since = None;
            self.said.paused_switchover = false;
            return;
        }
        let since = *self.cond_since.get_or_insert(now);
        if elapsed(now, since) >= self.cfg.switchover_hold
            && now >= self.switchover_not_before
            && now >= self.next_query_at
            && self.replica.is_some()
        {
            if self.maintenance {
                if !std::mem::replace(&mut self.said.paused_switchover, true) {
                    let e = self.evidence(now, Rule::Switchover, ActionKind::Paused);
                    emit(
                        out,
                        Action::Alert {
                            evidence: Box::new(e),
                        },
                    );
                }
                return;
            }
            self.start_query(now, VoteKind::Switchover, out);
        }
    }
}
