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
//! unprotected without any lease: the Remus behaviour that makes split brain possible. Lost
//! means the same as under the client-oriented policy: until `standby-timeout` says so, a
//! standby that acknowledged is waited for (output held), as Remus waits for its backup until
//! it declares it failed.
//!
//! After unprotected output, a fresh ack brings back protected mode at once (only acked output
//! leaves), but the witnesses are told the replica is current (`NotifyProtected`, which clears
//! their stale-replica mark) only once the standby acknowledged a checkpoint that includes
//! everything released unprotected.
//!
//! **A slow standby is not a lost one** (DESIGN.md §2, last bullet). When acks come later than
//! the ack lease but the standby is there, the primary is **protected, degraded**: output of
//! checkpoint N still leaves only after ack(N), however late (the replica has N and activates
//! from at least what it acked, so late release loses nothing), epochs stretch, and nothing is
//! ever released unacknowledged. The standby's heartbeat replies ([`Input::StandbyAlive`],
//! every heartbeat interval while it may acknowledge) say it is there (for
//! [`Config::alive_window`] from their arrival) and how much it has heard from this primary: a
//! count that moves, or an ack, is progress. (An ack alone is no presence: a retransmitted one
//! may have been sent long before the standby decided to activate.) A standby that acknowledged
//! is **lost** only after `standby-timeout` without progress (or, while a checkpoint waits for its
//! ack, [`STREAM_PATIENCE`] times that without a byte of the replication stream: heartbeats heard
//! over a dead connection are no standby); until then, if its replies pause
//! (a slow link's stall), output is held and nothing else happens: no lease is asked and the
//! domain is not fenced (that would stop the service on every slow spell). Only a lost standby
//! (or, with `slow-standby = lease`, one whose acks are slower than the ack lease: availability
//! over protection) lets output leave under the witnesses' lease. The standby stops its replies
//! once it is deciding to activate, and waits out the alive window (plus its margin) after the
//! last one before it does, so a degraded primary and an activated replica never overlap. A
//! standby that sends no replies (an older one) is not waited for.
//!
//! A gap longer than `hb-timeout` between two steps means this primary's own loop stalled
//! (SIGSTOP, a paused VM, or just a busy loop): replies and acks read right after it may have
//! waited out the stall in a socket while the standby decided to activate, so they count only
//! once `hb-timeout` has passed since.
//!
//! This file holds the authority's state, what it says of it at an instant ([`Mode`]) and the
//! step that takes each input; the rest is in sibling files: the inputs, actions and modes
//! (`primary_types.rs`), what each step makes of them (`primary_evaluate.rs`) and when time next
//! changes anything (`primary_deadline.rs`).

use core::time::Duration;

use super::epoch::{compare, EpochOrder};
use super::evidence::{ActionKind, Evidence, HeartbeatSummary, SaidKind, WitnessSaid};
use super::proto::{
    AppVerdict, LeaseReply, LeaseRequest, ProtectedNotice, Rates, RefuseReason, Verdict,
};
use super::{
    elapsed, emit, later, nanos_of, Actions, Config, Epoch, LeaseSet, Nanos, Policy, Role, Rule,
    SlowStandby, WitnessId, MAX_WITNESSES,
};

/// Checkpoints remembered for matching acks to their send time.
pub const SENT_WINDOW: usize = 64;
/// A standby whose replication stream moved no byte for this many `standby-timeout`s while a
/// checkpoint waits for its ack is lost, whatever its heartbeat replies say: its heartbeats get
/// through, the stream does not (a dead connection). Long enough for a slow link's TCP to
/// recover from a loss (a round trip of a full queue, seconds at 10 Mbit/s).
pub const STREAM_PATIENCE: u32 = 10;
/// Lease requests remembered for matching replies to their send time.
pub const REQUEST_WINDOW: usize = 4;

#[path = "primary_types.rs"]
mod types;
pub use types::{Action, Input, Mode};
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
    /// Arrival of the standby's last heartbeat reply.
    alive_at: Option<Nanos>,
    /// Last sign that the standby still hears us: an ack, or a reply whose count moved.
    progress_at: Option<Nanos>,
    /// The count of the last heartbeat reply.
    heard: Option<u64>,
    /// The stream count of the last heartbeat reply, and when the stream last moved (or an
    /// ack came).
    stream: Option<u64>,
    stream_at: Option<Nanos>,
    /// The standby acknowledges: an ack since it was last lost, from a standby that sends
    /// heartbeat replies and has a replica.
    acking: bool,
    /// When this core last stepped (a longer gap than `hb-timeout` is a stall of its loop).
    last_step: Nanos,
    /// After a stall of our loop: replies and acks read before this count for nothing.
    quarantine_until: Option<Nanos>,
    degraded_alerted: bool,
    last_degraded: Option<Nanos>,
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
            alive_at: None,
            progress_at: None,
            heard: None,
            stream: None,
            stream_at: None,
            acking: false,
            last_step: now,
            quarantine_until: None,
            degraded_alerted: false,
            last_degraded: None,
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

    /// Until when the standby counts as there without further input: a heartbeat reply within
    /// the alive window, and progress (an ack, or a reply whose count moved) within
    /// `standby-timeout`.
    fn present_until(&self) -> Option<Nanos> {
        let alive = later(self.alive_at?, self.cfg.alive_window());
        let progress = later(self.progress_at?, self.cfg.standby_timeout);
        Some(alive.min(progress))
    }

    /// Whether the standby is there at `now` (see the module documentation).
    pub fn standby_present(&self, now: Nanos) -> bool {
        self.present_until().is_some_and(|u| now < u)
    }

    /// When the standby counts as lost: no progress for `standby-timeout`, or, while a
    /// checkpoint waits for its ack, no byte of the replication stream for
    /// [`STREAM_PATIENCE`] times that (heartbeats heard over a dead stream are no standby).
    fn lost_at(&self) -> Option<Nanos> {
        let t = self.cfg.standby_timeout;
        let progress = later(self.progress_at?, t);
        if self.last_sent <= self.last_acked {
            return Some(progress);
        }
        let stream = self.stream_at.unwrap_or(self.progress_at?);
        Some(progress.min(later(stream, t.saturating_mul(STREAM_PATIENCE))))
    }

    /// Whether the standby is lost at `now` (or was never heard): only then may output leave
    /// under the witnesses' lease.
    pub fn standby_lost(&self, now: Nanos) -> bool {
        self.lost_at().is_none_or(|u| now >= u)
    }

    /// The standby acknowledges and is not lost: output waits for it, however slow.
    fn waits_for_standby(&self, now: Nanos) -> bool {
        self.cfg.slow_standby == SlowStandby::Wait && self.acking && !self.standby_lost(now)
    }

    /// Protected, degraded: the standby acknowledges, only slower than the ack lease.
    fn degraded_at(&self, now: Nanos) -> bool {
        self.waits_for_standby(now) && self.standby_present(now)
    }

    /// The standby was heard from at `now`: present (`alive`: a heartbeat reply), and still
    /// hearing us (`progress`).
    fn heard_from_standby(&mut self, now: Nanos, alive: Option<Nanos>, progress: bool) {
        if self.quarantine_until.is_some_and(|q| now < q) {
            return;
        }
        if alive.is_some() {
            self.alive_at = alive;
        }
        if progress {
            self.progress_at = Some(now);
        }
    }

    /// The loop did not step for longer than `hb-timeout`: what waited in sockets meanwhile
    /// is stale, so the standby counts as present again only on replies read once `hb-timeout`
    /// has passed. (Progress is kept: a loop that was merely busy, e.g. copying a large
    /// checkpoint, only holds output for a moment; one that was stopped for longer than
    /// `standby-timeout` finds its standby lost anyway.)
    fn notice_stall(&mut self, now: Nanos) {
        let t = self.cfg.heartbeat.timeout;
        if elapsed(now, self.last_step) > t {
            self.alive_at = None;
            self.quarantine_until = Some(later(now, t));
        }
        self.last_step = self.last_step.max(now);
    }

    /// The authority at `now` (between steps, time alone can end a lease or an ack's validity).
    pub fn mode(&self, now: Nanos) -> Mode {
        if self.stepped_down {
            Mode::SteppedDown
        } else if self.paused {
            Mode::Fenced
        } else if self.protected_at(now) {
            Mode::Protected
        } else if self.degraded_at(now) {
            Mode::Degraded
        } else if self.waits_for_standby(now) {
            // A standby that acknowledges and is not lost is waited for (its replies paused):
            // output is held, whatever lease is still valid from when it was lost (released
            // under that lease, it would not be covered by the stale mark the next protected
            // notice clears), and under the baselines too (`evaluate` waits for it alike).
            Mode::Holding
        } else if self.cfg.policy != Policy::ClientOriented || self.lease_at(now) || self.operator {
            Mode::Unprotected
        } else {
            Mode::Holding
        }
    }

    /// Whether output may be released at `now` (in `Protected` and `Degraded` mode: only
    /// acknowledged output).
    pub fn may_release_output(&self, now: Nanos) -> bool {
        matches!(
            self.mode(now),
            Mode::Protected | Mode::Degraded | Mode::Unprotected
        )
    }

    /// Until when the current authority lasts without further input (`None` if none).
    pub fn authority_until(&self, now: Nanos) -> Option<Nanos> {
        match self.mode(now) {
            Mode::Protected => self.protected_until,
            Mode::Degraded => self.present_until(),
            Mode::Unprotected if self.cfg.policy == Policy::ClientOriented && !self.operator => {
                self.leases.quorum_until(self.quorum())
            }
            Mode::Unprotected => Some(Nanos(u64::MAX)),
            _ => None,
        }
    }

    /// One input at `now`.
    pub fn step(&mut self, now: Nanos, input: Input) -> Actions<Action> {
        let mut out = Actions::new();
        if self.stepped_down {
            return out;
        }
        self.notice_stall(now);
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
                        // Progress, not presence: a late ack (TCP retransmits) may have been
                        // sent long ago; presence comes from the heartbeat replies alone. A
                        // standby that sends none (an older one) is not waited for.
                        self.acking = self.heard.is_some();
                        self.heard_from_standby(now, None, true);
                        if self.quarantine_until.is_none_or(|q| now >= q) {
                            self.stream_at = Some(now);
                        }
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
            Input::StandbyAlive {
                epoch,
                applied,
                heard,
                stream,
            } => match compare(self.epoch, epoch) {
                EpochOrder::Newer => return self.step_down(now, epoch, Rule::HigherEpoch, out),
                EpochOrder::Stale => {}
                EpochOrder::Current => {
                    if applied.is_none() {
                        // It has no replica (it restarted): nothing to keep protection with.
                        self.acking = false;
                    }
                    let moved = self.heard != Some(heard);
                    self.heard = Some(heard);
                    let flows = self.stream != Some(stream);
                    self.stream = Some(stream);
                    if flows && self.quarantine_until.is_none_or(|q| now >= q) {
                        self.stream_at = Some(now);
                    }
                    self.heard_from_standby(now, Some(now), moved);
                }
            },
            Input::Tick => {}
        }
        self.evaluate(now, &mut out);
        out
    }
}

#[path = "primary_deadline.rs"]
mod deadline;
#[path = "primary_evaluate.rs"]
mod evaluate;

#[cfg(test)]
#[path = "primary_tests.rs"]
mod tests;
