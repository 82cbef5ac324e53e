//! What the authority makes of each step (`evaluate`): protected, degraded, unprotected under a
//! lease or a baseline, held, or fenced; the lease requests and protected notices to the
//! witnesses; stepping down (rule 8, or a switchover's fence request); and the evidence of its
//! decisions.

use super::*;

impl PrimaryAuthority {
    pub(super) fn evaluate(&mut self, now: Nanos, out: &mut Actions<Action>) {
        let protected = self.protected_at(now);
        if self.operator && (protected || self.lease_at(now)) {
            // The usual authority is back: the operator's word is no longer needed.
            self.operator = false;
        }
        // Waiting for the standby ends when it is lost; it must then acknowledge again (a
        // fresh full synchronisation, typically) before output waits for it again.
        let lost_end = if self.acking && self.cfg.slow_standby == SlowStandby::Wait {
            self.lost_at()
        } else {
            None
        };
        if self.acking && self.standby_lost(now) {
            self.acking = false;
        }
        let degraded = !protected && self.degraded_at(now);
        // Neither protected nor degraded, but the standby is not lost: it went quiet for less
        // than `standby-timeout` (a slow link's stall, a busy loop). Hold output, ask nobody,
        // fence nothing: it is most likely slow, not gone.
        let waiting = !protected && !degraded && self.waits_for_standby(now);
        if degraded {
            self.last_degraded = Some(now);
            if !self.degraded_alerted {
                self.degraded_alerted = true;
                let e = self.evidence(now, Rule::SlowStandby, ActionKind::Stay);
                emit(
                    out,
                    Action::Alert {
                        evidence: Box::new(e),
                    },
                );
            }
        } else if protected
            && self
                .last_degraded
                .is_none_or(|t| elapsed(now, t) >= self.cfg.standby_timeout)
        {
            // Protected for a while again: the next slow spell is worth an alert again.
            self.degraded_alerted = false;
        }
        let mut authority = protected || degraded;
        if protected || degraded {
            self.unprotected_alerted = false;
            let caught_up = self.resync_upto.is_none_or(|u| self.last_acked >= u);
            if caught_up {
                if self.resync_upto.take().is_some() || self.marked {
                    // Back from unprotected: the replica includes everything released; tell
                    // the witnesses now rather than at the next periodic notice.
                    self.marked = false;
                    self.leases.clear();
                    self.next_notice_at = now;
                }
                // Periodically while protected, so a lost notice is not the last word: a
                // witness clears its stale-replica mark only with a notice acknowledging more
                // than every request it granted had captured (see `LeaseRequest::last_sent`).
                if now >= self.next_notice_at {
                    self.next_notice_at = later(now, self.cfg.lease.duration / 2);
                    emit(
                        out,
                        Action::NotifyProtected(ProtectedNotice {
                            epoch: self.epoch,
                            acked: self.last_acked,
                        }),
                    );
                }
            }
        } else if waiting {
            // No authority, nothing asked: see above.
        } else {
            match self.cfg.policy {
                Policy::ClientOriented => {
                    let lease = self.lease_at(now) || self.operator;
                    let wait = if lease {
                        self.cfg.lease.duration / 2
                    } else {
                        self.cfg.query_timeout
                    };
                    let grace_over = self.ever_authority
                        || elapsed(now, self.started) >= self.cfg.lease.ack_lease;
                    let due = self.last_request_at.is_none_or(|t| elapsed(now, t) >= wait);
                    if grace_over && due {
                        self.request_leases(now, out);
                    }
                    if lease {
                        authority = true;
                        // Output may now leave beyond the replica: protection needs a newer ack.
                        self.resync_upto = Some(self.last_sent.saturating_add(1));
                        if !self.unprotected_alerted {
                            self.unprotected_alerted = true;
                            let e =
                                self.evidence(now, Rule::UnprotectedUnderLease, ActionKind::Stay);
                            emit(
                                out,
                                Action::Alert {
                                    evidence: Box::new(e),
                                },
                            );
                        }
                    }
                }
                Policy::HeartbeatOnly | Policy::PingNode => {
                    authority = true;
                    if self.ever_authority && !self.unprotected_alerted {
                        self.unprotected_alerted = true;
                        let e = self.evidence(now, Rule::UnprotectedBaseline, ActionKind::Stay);
                        emit(
                            out,
                            Action::Alert {
                                evidence: Box::new(e),
                            },
                        );
                    }
                }
            }
        }
        if authority {
            self.ever_authority = true;
            self.no_authority_since = None;
            if self.paused {
                self.paused = false;
                let e = self.evidence(now, Rule::AuthorityRegained, ActionKind::Unfence);
                emit(
                    out,
                    Action::Unfence {
                        evidence: Box::new(e),
                    },
                );
            }
        } else if waiting {
            // Fencing a primary whose standby is only slow would stop the service on every
            // slow spell: the clock for `fence-after` starts when the standby is lost.
            self.no_authority_since = None;
        } else {
            // Authority ended when the last ack or lease ran out, or the standby was lost, not
            // at this (maybe late) tick.
            let ended = self
                .protected_until
                .into_iter()
                .chain(self.leases.quorum_until(self.quorum()))
                .chain(lost_end)
                .max()
                .map_or(now, |t| t.min(now));
            let since = *self.no_authority_since.get_or_insert(ended);
            if !self.paused && self.ever_authority && elapsed(now, since) >= self.cfg.fence_after {
                self.paused = true;
                let e = self.evidence(now, Rule::NoAuthority, ActionKind::Fence);
                emit(
                    out,
                    Action::Fence {
                        evidence: Box::new(e),
                    },
                );
            }
        }
    }

    fn request_leases(&mut self, now: Nanos, out: &mut Actions<Action>) {
        self.req_seq = self.req_seq.wrapping_add(1);
        if self.requests.is_full() {
            self.requests.pop_front();
        }
        let _ = self.requests.push_back((self.req_seq, now));
        self.last_request_at = Some(now);
        self.marked = true;
        emit(
            out,
            Action::RequestLeases(LeaseRequest {
                epoch: self.epoch,
                req: self.req_seq,
                last_acked: self.last_acked,
                last_sent: self.last_sent,
            }),
        );
    }

    pub(super) fn step_down(
        &mut self,
        now: Nanos,
        epoch: Epoch,
        rule: Rule,
        out: Actions<Action>,
    ) -> Actions<Action> {
        self.step_down_with(now, epoch, rule, None, out)
    }

    pub(super) fn step_down_with(
        &mut self,
        now: Nanos,
        epoch: Epoch,
        rule: Rule,
        confirm: Option<u64>,
        mut out: Actions<Action>,
    ) -> Actions<Action> {
        if !self.paused {
            self.paused = true;
            let e = self.evidence(now, rule, ActionKind::Fence);
            emit(
                &mut out,
                Action::Fence {
                    evidence: Box::new(e),
                },
            );
        }
        if let Some(ckpt) = confirm {
            emit(&mut out, Action::ConfirmFenced { epoch, ckpt });
        }
        let mut e = self.evidence(now, rule, ActionKind::StepDown);
        e.new_epoch = Some(epoch);
        self.stepped_down = true;
        self.epoch = epoch;
        self.leases.clear();
        self.protected_until = None;
        emit(
            &mut out,
            Action::StepDown {
                epoch,
                evidence: Box::new(e),
            },
        );
        emit(&mut out, Action::RequestFullSync);
        out
    }

    fn evidence(&self, now: Nanos, rule: Rule, action: ActionKind) -> Evidence {
        let mut e = Evidence::new(
            now,
            Role::Primary,
            self.cfg.policy,
            rule,
            action,
            self.epoch,
        );
        e.checkpoint = Some(self.last_acked);
        e.heartbeat = Some(HeartbeatSummary {
            suspected: !self.standby_present(now),
            silent_ns: nanos_of(elapsed(now, self.progress_at.unwrap_or(self.started))),
            timeout_ns: nanos_of(self.cfg.standby_timeout),
        });
        e.configured = self.cfg.witnesses.len() as u8;
        e.quorum = self.quorum() as u8;
        e.grants = self.leases.valid_count(now) as u8;
        e.answers = self.replies.len() as u8;
        for &id in self.cfg.witnesses.ids() {
            let (said, reason, age) = match self.replies.iter().find(|(w, _, _)| *w == id) {
                Some((_, Verdict::Grant, at)) => (SaidKind::Grant, None, elapsed(now, *at)),
                Some((_, Verdict::Refuse(r), at)) => {
                    (SaidKind::Refuse, Some(*r), elapsed(now, *at))
                }
                None => (SaidKind::NoAnswer, None, Duration::ZERO),
            };
            e.push_witness(WitnessSaid {
                id,
                said,
                reason,
                app: AppVerdict::Unknown,
                primary_host: true,
                standby_host: false,
                rates: Rates::default(),
                unprotected_after: None,
                age_ns: nanos_of(age),
            });
        }
        e
    }
}
