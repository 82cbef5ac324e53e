//! The witness query: asking the witnesses, withdrawing a query, and concluding on its votes
//! (a quorum granted: the activation is pending; refused or unanswered: say why and ask again).

use super::*;

/// How a witness query ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// A quorum of valid grants: the activation is pending.
    Granted,
    /// No quorum can come any more, or the query's time is up.
    Failed,
}

impl StandbyCore {
    pub(super) fn start_query(&mut self, now: Nanos, kind: VoteKind, out: &mut Actions<Action>) {
        self.query_seq = self.query_seq.wrapping_add(1);
        self.query = Some(Query {
            id: self.query_seq,
            kind,
            sent_at: now,
            deadline: later(now, self.query_wait),
            votes: heapless::Vec::new(),
        });
        emit(
            out,
            Action::QueryWitnesses(VoteRequest {
                epoch: self.epoch,
                query: self.query_seq,
                kind,
            }),
        );
    }

    pub(super) fn cancel_query(&mut self, out: &mut Actions<Action>) {
        if let Some(q) = self.query.take() {
            self.ended(&q);
            emit(
                out,
                Action::Withdraw(Withdraw {
                    epoch: self.epoch.next(),
                    query: q.id,
                }),
            );
        }
    }

    pub(super) fn vote_valid(&self, q: &Query, v: &Vote, now: Nanos) -> bool {
        v.verdict.granted() && now < self.cfg.lease.holder_until(q.sent_at, v.duration)
    }

    /// Decide on the query in flight if its outcome is known (or its time is up).
    pub(super) fn conclude(&mut self, now: Nanos, out: &mut Actions<Action>) {
        let Some(q) = self.query.as_ref() else {
            return;
        };
        match self.outcome(q, now) {
            Some(Outcome::Granted) => self.succeed(now, out),
            Some(Outcome::Failed) => self.fail(now, out),
            None => {}
        }
    }

    /// The outcome of `q` at `now`, if it is known: a quorum granted, or it can no longer (every
    /// witness answered, or too many refused), or its time is up.
    pub(super) fn outcome(&self, q: &Query, now: Nanos) -> Option<Outcome> {
        let n = self.cfg.witnesses.len();
        let need = self.quorum();
        let grants = q
            .votes
            .iter()
            .filter(|(v, _)| self.vote_valid(q, v, now))
            .count();
        let answers = q.votes.len();
        if grants >= need {
            Some(Outcome::Granted)
        } else if now >= q.deadline || answers >= n || grants + (n - answers) < need {
            Some(Outcome::Failed)
        } else {
            None
        }
    }

    fn stale_mark(&self, now: Nanos, q: &Query) -> Option<u64> {
        let from_votes = q.votes.iter().filter_map(|(v, _)| v.unprotected_after);
        let from_reports = self
            .reports
            .iter()
            .filter(|(r, at)| r.epoch == self.epoch && elapsed(now, *at) <= self.cfg.report_fresh)
            .filter_map(|(r, _)| r.unprotected_after);
        from_votes.chain(from_reports).min()
    }

    fn succeed(&mut self, now: Nanos, out: &mut Actions<Action>) {
        let Some(q) = self.query.take() else {
            return;
        };
        self.ended(&q);
        let withdraw = Withdraw {
            epoch: self.epoch.next(),
            query: q.id,
        };
        if self.replica.is_none() {
            emit(out, Action::Withdraw(withdraw));
            if !self.said.no_replica {
                self.said.no_replica = true;
                let e = self.evidence_q(now, Rule::NoReplica, ActionKind::CannotDecide, Some(&q));
                emit(
                    out,
                    Action::CannotDecide {
                        evidence: Box::new(e),
                    },
                );
            }
            return;
        }
        let stale = self.stale_mark(now, &q).is_some();
        let ask = if q.kind == VoteKind::Operator {
            self.operator.take()
        } else {
            None
        };
        if stale && !self.force {
            emit(out, Action::Withdraw(withdraw));
            let e = self.evidence_q(now, Rule::StaleReplica, ActionKind::RefuseStale, Some(&q));
            emit(
                out,
                Action::RefuseStale {
                    evidence: Box::new(e),
                },
            );
            // With the primary trusted (an operator's request, or a switchover the witnesses
            // asked for) the standby goes on following it: refused-stale is for a takeover, whose
            // primary is suspected. Left refused-stale while trusted, no suspicion could begin
            // when that primary died later, and the standby would never take over.
            // A switchover asked again must see its condition hold anew (the hold restarts), and
            // not sooner than the backoff: the mark goes only when the primary is protected again.
            if !self.detector.suspected() {
                self.cond_since = None;
                let b = self.backoff;
                self.backoff = (self.backoff * 2).min(self.cfg.requery_max);
                self.next_query_at = later(now, b);
            }
            self.state = if !self.detector.suspected() {
                State::Following
            } else {
                State::RefusedStale
            };
            return;
        }
        let mut leases = LeaseSet::new();
        for (v, _) in q.votes.iter().filter(|(v, _)| self.vote_valid(&q, v, now)) {
            leases.insert(
                v.witness,
                self.cfg.lease.holder_until(q.sent_at, v.duration),
            );
        }
        let l = &self.cfg.lease;
        let gate = self.last_ack_at.map_or(now, |t| {
            later(t, l.ack_lease.saturating_add(l.margin(l.ack_lease)))
        });
        // Heartbeat replies stop now at the latest (the daemon sends them only while
        // `may_send_alive`): the primary counts the last one as presence for `alive_window`
        // from its arrival, so wait that out too, with its margin for the delivery.
        let alive = self.cfg.alive_window();
        let gate = match self.alive_ok_at {
            Some(t) => gate.max(later(t, alive.saturating_add(l.margin(alive)))),
            None => gate,
        };
        let rule = match (stale, q.kind) {
            (true, _) => Rule::ForcedStale,
            (false, VoteKind::Switchover) => Rule::Switchover,
            (false, VoteKind::Takeover) => Rule::QuorumNoAnswer,
            (false, VoteKind::Operator) => ask.unwrap_or(OperatorAsk::Activate).rule(),
        };
        let mut e = self.evidence_q(now, rule, ActionKind::Activate, Some(&q));
        e.new_epoch = Some(self.epoch.next());
        e.forced = stale;
        let pending = Pending {
            kind: q.kind,
            query: q.id,
            leases,
            gate,
            fenced: false,
            evidence: e,
            ask,
            final_ckpt: None,
            fenced_at: None,
            deadline: later(now, self.cfg.lease.duration),
        };
        match q.kind {
            VoteKind::Takeover => {
                self.state = State::Waiting;
                self.pending = Some(Box::new(pending));
                self.drive_pending(now, out);
            }
            VoteKind::Switchover | VoteKind::Operator => {
                let mut se = pending.evidence.clone();
                se.action = ActionKind::Switchover;
                emit(
                    out,
                    Action::Switchover {
                        epoch: self.epoch.next(),
                        evidence: Box::new(se),
                    },
                );
                self.state = State::SwitchingOver;
                self.pending = Some(Box::new(pending));
                self.drive_pending(now, out);
            }
        }
    }

    /// The query `q` ended: remember it (late answers to it are measured), and let the
    /// round trips of the answers it had set how long the next one waits.
    fn ended(&mut self, q: &Query) {
        self.ended = Some((q.id, q.sent_at));
        if let Some(rtt) = q.votes.iter().map(|(_, at)| elapsed(*at, q.sent_at)).max() {
            self.note_round_trip(rtt, false);
        }
    }

    fn fail(&mut self, now: Nanos, out: &mut Actions<Action>) {
        let Some(q) = self.query.take() else {
            return;
        };
        self.ended(&q);
        emit(
            out,
            Action::Withdraw(Withdraw {
                epoch: self.epoch.next(),
                query: q.id,
            }),
        );
        let need = self.quorum();
        let answers = q.votes.len();
        let refused = |r: RefuseReason| {
            q.votes
                .iter()
                .filter(|(v, _)| v.verdict == Verdict::Refuse(r))
                .count()
        };
        let retry = q
            .votes
            .iter()
            .filter_map(|(v, _)| match v.verdict {
                Verdict::Refuse(r) => r.retry_after(),
                Verdict::Grant => None,
            })
            .min();
        // A refusal's hint (lease active, restarting, not yet) is when that witness's answer can
        // change at the earliest: asking sooner only repeats it (it used to re-ask every 20 ms
        // while a lease ran for seconds). A report that the application is down still asks at
        // once (see `Input::Report`).
        let wait = match retry {
            Some(r) => r.clamp(self.cfg.requery_min, self.cfg.requery_max),
            None => {
                let b = self.backoff;
                self.backoff = (self.backoff * 2).min(self.cfg.requery_max);
                b
            }
        };
        self.next_query_at = later(now, wait);
        if q.kind == VoteKind::Switchover {
            return; // a switchover that did not get its quorum changes nothing
        }
        if q.kind == VoteKind::Operator {
            // Refusals that expire by themselves (a lease to the old epoch still running, say,
            // right after a failover): ask again when they say, while the request lasts.
            // Witnesses that did not answer in time may answer the next query (a vote lost on
            // the way, or held back until the witness's promise was on a slow disk): ask again
            // after the backoff, while the request lasts. Refusing at once told the operator
            // "0 of 3 witnesses granted; witness 1 did not answer, ..." about witnesses that
            // were there (the R9 fault case and the soak's switchovers, under load).
            let grants = q.votes.iter().filter(|(v, _)| v.verdict.granted()).count();
            let unanswered = self.cfg.witnesses.len().saturating_sub(q.votes.len());
            let could = grants
                + unanswered
                + q.votes
                    .iter()
                    .filter(|(v, _)| match v.verdict {
                        Verdict::Refuse(r) => r.retry_after().is_some(),
                        Verdict::Grant => false,
                    })
                    .count();
            if could >= need {
                let at = match retry {
                    Some(r) => later(now, r.max(self.cfg.requery_min)),
                    None => self.next_query_at,
                };
                if (retry.is_some() || unanswered > 0) && at < self.operator_until {
                    self.next_query_at = at;
                    return;
                }
            }
            // The operator's request did not get its quorum: refused, saying why (the votes).
            let rule = self.operator.take().unwrap_or(OperatorAsk::Activate).rule();
            let e = self.evidence_q(now, rule, ActionKind::CannotDecide, Some(&q));
            emit(
                out,
                Action::CannotDecide {
                    evidence: Box::new(e),
                },
            );
            return;
        }
        if answers >= need {
            let rule = if refused(RefuseReason::GuestFailure) >= need {
                Some(Rule::GuestFailure)
            } else if refused(RefuseReason::PrimaryAnswers) >= need {
                Some(Rule::PrimaryAnswers)
            } else {
                None
            };
            if let Some(rule) = rule {
                let flag = if rule == Rule::GuestFailure {
                    &mut self.said.guest
                } else {
                    &mut self.said.link_failure
                };
                if !std::mem::replace(flag, true) {
                    let e = self.evidence_q(now, rule, ActionKind::Stay, Some(&q));
                    emit(
                        out,
                        Action::Alert {
                            evidence: Box::new(e),
                        },
                    );
                }
            }
        } else if !self.said.no_quorum {
            self.said.no_quorum = true;
            let e = self.evidence_q(now, Rule::NoQuorum, ActionKind::CannotDecide, Some(&q));
            emit(
                out,
                Action::CannotDecide {
                    evidence: Box::new(e),
                },
            );
        }
    }
}
