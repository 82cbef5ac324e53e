//! The primary's authority to release output (DESIGN.md rules 3, 4, 5, 8).
//!
//! - **Protected**: the standby acknowledged a checkpoint recently. An ack is a short lease: the
//!   standby promises not to activate for `ack_lease` after sending it, and the primary counts it
//!   from when it *sent* the checkpoint, minus the drift margin. Output of checkpoint N leaves only
//!   after ack(N).
//! - **Unprotected**: the standby is lost; a quorum of witnesses leased the primary authority,
//!   counted from when it asked. Each lease request tells the witnesses the last acked checkpoint,
//!   so they know the replica is stale (rule 5). Output leaves without acks.
//! - **Holding**: neither: output is held. After `fence_after` the domain is paused as well
//!   (**Fenced**, rule 4). Fenced is not final: a fresh ack or lease quorum resumes it.
//! - **Stepped down**: a higher epoch exists (rule 8) or a switchover fenced it: it never releases
//!   output again and asks for a full synchronisation as the new standby.
//!
//! Under the baselines (heartbeat-only, ping-node) a primary that loses its standby continues
//! unprotected without any lease: the Remus behaviour that makes split brain possible.
//!
//! After unprotected output, a fresh ack brings back protected mode at once (only acked output
//! leaves), but the witnesses are told the replica is current (`NotifyProtected`, which clears
//! their stale-replica mark) only once the standby acknowledged a checkpoint that includes
//! everything released unprotected.

use core::time::Duration;

use super::epoch::{compare, EpochOrder};
use super::evidence::{ActionKind, Evidence, SaidKind, WitnessSaid};
use super::proto::{AppVerdict, LeaseReply, LeaseRequest, ProtectedNotice, RefuseReason, Verdict};
use super::{
    elapsed, emit, later, nanos_of, Actions, Config, Epoch, LeaseSet, Nanos, Policy, Role, Rule,
    WitnessId, MAX_WITNESSES,
};

/// Checkpoints remembered for matching acks to their send time.
pub const SENT_WINDOW: usize = 64;
/// Lease requests remembered for matching replies to their send time.
pub const REQUEST_WINDOW: usize = 4;

/// An input to the primary authority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// Checkpoint `ckpt` was sent to the standby now.
    CheckpointSent {
        /// Checkpoint number.
        ckpt: u64,
    },
    /// The standby acknowledged `ckpt`.
    Ack {
        /// Checkpoint number.
        ckpt: u64,
        /// The standby's epoch.
        epoch: Epoch,
    },
    /// A witness answered a lease request.
    LeaseReply(LeaseReply),
    /// A message carried a higher epoch.
    HigherEpoch {
        /// That epoch.
        epoch: Epoch,
    },
    /// The standby switches over to `epoch` and asks this primary to fence first (rule 6).
    FenceRequest {
        /// The epoch the standby starts.
        epoch: Epoch,
    },
    /// Time passed.
    Tick,
}

/// What the primary daemon must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this lease request to every witness.
    RequestLeases(LeaseRequest),
    /// Send this to every witness: the replica is current again.
    NotifyProtected(ProtectedNotice),
    /// Hold output and pause the domain (rule 4).
    Fence {
        /// Why.
        evidence: Box<Evidence>,
    },
    /// Resume the domain; output may leave again under the authority regained.
    Unfence {
        /// Why.
        evidence: Box<Evidence>,
    },
    /// Stop being primary for good (the domain stays paused); become a standby of `epoch`.
    StepDown {
        /// The newer epoch.
        epoch: Epoch,
        /// Why.
        evidence: Box<Evidence>,
    },
    /// Ask the new primary for a full synchronisation.
    RequestFullSync,
    /// Tell the switching standby that this primary is fenced, last checkpoint sent `ckpt`.
    ConfirmFenced {
        /// The standby's new epoch.
        epoch: Epoch,
        /// Last checkpoint sent.
        ckpt: u64,
    },
    /// Tell the operator (e.g. running unprotected).
    Alert {
        /// What and why.
        evidence: Box<Evidence>,
    },
}

/// The primary's authority at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Release output of acknowledged checkpoints.
    Protected,
    /// Release output without acks (lease quorum, or a baseline policy).
    Unprotected,
    /// No authority: output held, domain running.
    Holding,
    /// No authority: output held, domain paused.
    Fenced,
    /// A newer epoch exists: never again.
    SteppedDown,
}

impl Mode {
    /// The text form.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Protected => "protected",
            Mode::Unprotected => "unprotected",
            Mode::Holding => "holding",
            Mode::Fenced => "fenced",
            Mode::SteppedDown => "stepped-down",
        }
    }
}

/// The primary authority state machine.
#[derive(Debug, Clone)]
pub struct PrimaryAuthority {
    cfg: Config,
    epoch: Epoch,
    started: Nanos,
    protected_until: Option<Nanos>,
    last_acked: u64,
    last_sent: u64,
    sent: heapless::Deque<(u64, Nanos), SENT_WINDOW>,
    leases: LeaseSet,
    requests: heapless::Deque<(u32, Nanos), REQUEST_WINDOW>,
    req_seq: u32,
    last_request_at: Option<Nanos>,
    /// Output may have left unprotected; protection needs an ack of at least this checkpoint.
    resync_upto: Option<u64>,
    /// Lease requests went out since the witnesses last heard "protected".
    marked: bool,
    next_notice_at: Nanos,
    paused: bool,
    ever_authority: bool,
    no_authority_since: Option<Nanos>,
    stepped_down: bool,
    unprotected_alerted: bool,
    replies: heapless::Vec<(WitnessId, Verdict, Nanos), MAX_WITNESSES>,
    /// Activated by the operator's force (rule 9: "the primary is stopped"): output may leave
    /// on that word until a lease quorum or an ack gives the usual authority.
    operator: bool,
}

impl PrimaryAuthority {
    /// A primary of `epoch` starting at `now` with no authority yet (the first ack gives it).
    pub fn new(cfg: Config, epoch: Epoch, now: Nanos) -> PrimaryAuthority {
        let first_notice = later(now, cfg.lease.duration / 2);
        PrimaryAuthority {
            cfg,
            epoch,
            started: now,
            protected_until: None,
            last_acked: 0,
            last_sent: 0,
            sent: heapless::Deque::new(),
            leases: LeaseSet::new(),
            requests: heapless::Deque::new(),
            req_seq: 0,
            last_request_at: None,
            resync_upto: None,
            marked: false,
            next_notice_at: first_notice,
            paused: false,
            ever_authority: false,
            no_authority_since: Some(now),
            stepped_down: false,
            unprotected_alerted: false,
            replies: heapless::Vec::new(),
            operator: false,
        }
    }

    /// An activation the operator forced, saying the old primary is stopped (rule 9): output
    /// may leave without a lease quorum until one is granted (the lease requests carry the new
    /// epoch to every witness that answers) or a standby acknowledges; a higher epoch still
    /// makes it step down.
    pub fn with_operator_authority(mut self) -> PrimaryAuthority {
        self.operator = true;
        self
    }

    /// The activated standby's authority: epoch `epoch`, holding the takeover votes as leases
    /// (from [`super::standby::Action::Activate`]); `last_ckpt` is the replica's checkpoint.
    pub fn activated(
        cfg: Config,
        epoch: Epoch,
        now: Nanos,
        leases: &LeaseSet,
        last_ckpt: u64,
    ) -> PrimaryAuthority {
        let mut p = PrimaryAuthority::new(cfg, epoch, now);
        p.leases = leases.clone();
        p.last_sent = last_ckpt;
        p.last_acked = last_ckpt;
        p.marked = true;
        p.resync_upto = Some(last_ckpt.saturating_add(1));
        p.ever_authority = true;
        p
    }

    /// Continue checkpoint numbers after `ckpt` (a promoted or restarted primary: checkpoint
    /// numbers never go back within an epoch's life, rule 10); `ckpt` counts as sent and as
    /// what the standby has.
    pub fn resume_at(mut self, ckpt: u64) -> PrimaryAuthority {
        self.last_sent = self.last_sent.max(ckpt);
        self.last_acked = self.last_acked.max(ckpt);
        self
    }

    /// Start lease request numbers at `req` (random per process, so a reply captured from an
    /// earlier process cannot answer a request of this one).
    pub fn with_request_base(mut self, req: u32) -> PrimaryAuthority {
        self.req_seq = req;
        self
    }

    /// A primary promoted by hand-over (its standby process had the witnesses' votes as leases
    /// a moment ago): it asks for leases at once instead of giving a standby `ack_lease` to ack
    /// first, and fences like any primary that lost its authority.
    pub fn promoted(mut self) -> PrimaryAuthority {
        self.ever_authority = true;
        self
    }

    /// Whether it still serves on the operator's word (see [`Self::with_operator_authority`]).
    pub fn operator_authority(&self) -> bool {
        self.operator
    }

    /// The epoch.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// Last checkpoint the standby acknowledged (0 if none).
    pub fn last_acked(&self) -> u64 {
        self.last_acked
    }

    fn quorum(&self) -> usize {
        self.cfg.witnesses.quorum()
    }

    /// A fresh ack: the standby is there. Output of acked checkpoints only; the lease (if any) is
    /// not used for new output, so the standby can catch up with what left unprotected.
    fn protected_at(&self, now: Nanos) -> bool {
        self.protected_until.is_some_and(|u| now < u)
    }

    fn lease_at(&self, now: Nanos) -> bool {
        self.cfg.policy == Policy::ClientOriented && self.leases.valid(now, self.quorum())
    }

    /// The authority at `now` (between steps, time alone can end a lease or an ack's validity).
    pub fn mode(&self, now: Nanos) -> Mode {
        if self.stepped_down {
            Mode::SteppedDown
        } else if self.paused {
            Mode::Fenced
        } else if self.protected_at(now) {
            Mode::Protected
        } else if self.cfg.policy != Policy::ClientOriented || self.lease_at(now) || self.operator {
            Mode::Unprotected
        } else {
            Mode::Holding
        }
    }

    /// Whether output may be released at `now` (in `Protected` mode: only acknowledged output).
    pub fn may_release_output(&self, now: Nanos) -> bool {
        matches!(self.mode(now), Mode::Protected | Mode::Unprotected)
    }

    /// Until when the current authority lasts without further input (`None` if none).
    pub fn authority_until(&self, now: Nanos) -> Option<Nanos> {
        match self.mode(now) {
            Mode::Protected => self.protected_until,
            Mode::Unprotected if self.cfg.policy == Policy::ClientOriented && !self.operator => {
                self.leases.quorum_until(self.quorum())
            }
            Mode::Unprotected => Some(Nanos(u64::MAX)),
            _ => None,
        }
    }

    /// The next time after `now` at which time alone can change what this authority does (an
    /// ack's or a lease quorum's end, the next lease request or protected notice, the fence
    /// after `fence_after`, the start-up grace): a daemon steps a `Tick` then, instead of on a
    /// polling tick. Early is harmless (a tick that changes nothing); never late.
    pub fn next_deadline(&self, now: Nanos) -> Option<Nanos> {
        if self.stepped_down {
            return None;
        }
        let c = &self.cfg;
        let request = self
            .last_request_at
            .map(|t| [later(t, c.query_timeout), later(t, c.lease.duration / 2)]);
        let fence = (!self.paused && self.ever_authority)
            .then_some(self.no_authority_since)
            .flatten()
            .map(|t| later(t, c.fence_after));
        [
            self.protected_until,
            self.leases.quorum_until(self.quorum()),
            Some(self.next_notice_at),
            fence,
            Some(later(self.started, c.lease.ack_lease)),
        ]
        .into_iter()
        .chain(request.into_iter().flatten().map(Some))
        .flatten()
        .filter(|&t| t > now)
        .min()
    }

    /// One input at `now`.
    pub fn step(&mut self, now: Nanos, input: Input) -> Actions<Action> {
        let mut out = Actions::new();
        if self.stepped_down {
            return out;
        }
        match input {
            Input::CheckpointSent { ckpt } => {
                if self.sent.is_full() {
                    self.sent.pop_front();
                }
                let _ = self.sent.push_back((ckpt, now));
                self.last_sent = self.last_sent.max(ckpt);
            }
            Input::Ack { ckpt, epoch } => match compare(self.epoch, epoch) {
                EpochOrder::Newer => return self.step_down(now, epoch, Rule::HigherEpoch, out),
                EpochOrder::Stale => {}
                EpochOrder::Current => {
                    if let Some(&(_, sent_at)) = self.sent.iter().find(|(c, _)| *c == ckpt) {
                        let l = &self.cfg.lease;
                        let until = l.holder_until(sent_at, l.ack_lease);
                        self.protected_until =
                            Some(self.protected_until.map_or(until, |u| u.max(until)));
                        self.last_acked = self.last_acked.max(ckpt);
                    }
                }
            },
            Input::LeaseReply(r) => {
                if !self.cfg.witnesses.contains(r.witness) {
                    return out;
                }
                if r.epoch > self.epoch {
                    return self.step_down(now, r.epoch, Rule::HigherEpoch, out);
                }
                if let Verdict::Refuse(RefuseReason::StaleEpoch(e)) = r.verdict {
                    if e > self.epoch {
                        return self.step_down(now, e, Rule::HigherEpoch, out);
                    }
                }
                if let Some(i) = self.replies.iter().position(|(w, _, _)| *w == r.witness) {
                    self.replies.swap_remove(i);
                }
                let _ = self.replies.push((r.witness, r.verdict, now));
                if r.verdict.granted() {
                    if let Some(&(_, asked)) = self.requests.iter().find(|(q, _)| *q == r.req) {
                        let until = self.cfg.lease.holder_until(asked, r.duration);
                        self.leases.insert(r.witness, until);
                    }
                }
            }
            Input::HigherEpoch { epoch } => {
                if epoch > self.epoch {
                    return self.step_down(now, epoch, Rule::HigherEpoch, out);
                }
            }
            Input::FenceRequest { epoch } => {
                if epoch > self.epoch {
                    let ckpt = self.last_sent;
                    return self.step_down_with(now, epoch, Rule::FenceRequested, Some(ckpt), out);
                }
            }
            Input::Tick => {}
        }
        self.evaluate(now, &mut out);
        out
    }

    fn evaluate(&mut self, now: Nanos, out: &mut Actions<Action>) {
        let protected = self.protected_at(now);
        if self.operator && (protected || self.lease_at(now)) {
            // The usual authority is back: the operator's word is no longer needed.
            self.operator = false;
        }
        let mut authority = protected;
        if protected {
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
        } else {
            // Authority ended when the last ack or lease ran out, not at this (maybe late) tick.
            let ended = self
                .protected_until
                .into_iter()
                .chain(self.leases.quorum_until(self.quorum()))
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

    fn step_down(
        &mut self,
        now: Nanos,
        epoch: Epoch,
        rule: Rule,
        out: Actions<Action>,
    ) -> Actions<Action> {
        self.step_down_with(now, epoch, rule, None, out)
    }

    fn step_down_with(
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
                unprotected_after: None,
                age_ns: nanos_of(age),
            });
        }
        e
    }
}

#[cfg(test)]
#[path = "primary_tests.rs"]
mod tests;
