//! The standby's failover decision (DESIGN.md §4).
//!
//! Under the client-oriented policy:
//! - A heartbeat suspicion never activates by itself (rule 1): it starts a witness query. The
//!   replica is activated only when a quorum of witnesses votes that the primary's application does
//!   not answer them. Each vote is a lease to the new epoch, counted from when the query was sent.
//! - Without a quorum of answers the standby cannot decide and says so (rule 2).
//! - It activates only after its own ack promise ran out (the primary's ack authority is over) and
//!   while the votes are still valid (rule 3). The daemon sends the primary a heartbeat reply
//!   every heartbeat interval while [`StandbyCore::may_send_alive`] (acks may go, and once the
//!   primary is suspected only while its replication stream still arrives,
//!   [`Input::StreamProgress`]); the primary counts each as presence for
//!   [`Config::alive_window`], so activation also waits that out, with its margin, after the last
//!   moment a reply could go (a degraded primary and an activated replica never overlap).
//! - If any witness leased the primary authority after the replica's checkpoint, the replica is
//!   stale: refuse and alert unless the operator forces it (rule 5).
//! - With the heartbeat fine, a quorum of witness reports that cannot reach the primary but reach the
//!   standby, held for `switchover_hold`, starts a coordinated switchover (rule 6); a quorum seeing the
//!   guest itself fail gives an alert, never a failover (F5).
//! - A higher epoch anywhere makes it step down and ask for a full synchronisation (rule 8).
//!
//! Under `heartbeat-only` it activates on suspicion; under `ping-node` on suspicion if the ping node
//! answers. After `Activate` the core is done: the daemon continues as a
//! [`super::PrimaryAuthority::activated`] primary.
//!
//! This file holds the core's state and the step that takes each input; the rest is in sibling
//! files: the inputs, actions and states (`standby_types.rs`), what a tick decides
//! (`standby_decide.rs`), the witness query (`standby_query.rs`), the pending activation
//! (`standby_pending.rs`), the operator's requests (`standby_operator.rs`), the evidence
//! (`standby_evidence.rs`) and when a tick next has something to do (`standby_deadline.rs`).

use core::fmt;
use core::time::Duration;

use super::detector::{Detector, DetectorEvent};
use super::epoch::{compare, EpochOrder};
use super::evidence::{ActionKind, Evidence, HeartbeatSummary, SaidKind, WitnessSaid};
use super::proto::{
    AppVerdict, Rates, RefuseReason, Verdict, Vote, VoteKind, VoteRequest, Withdraw, WitnessReport,
};
use super::{
    elapsed, emit, later, nanos_of, Actions, Config, Epoch, LeaseSet, Nanos, Policy, QueryId, Role,
    Rule, MAX_LINKS, MAX_WITNESSES,
};

#[path = "standby_types.rs"]
mod types;
pub use types::{Action, Input, OperatorAsk, State};

#[derive(Debug, Clone)]
struct Query {
    id: QueryId,
    kind: VoteKind,
    sent_at: Nanos,
    deadline: Nanos,
    votes: heapless::Vec<(Vote, Nanos), MAX_WITNESSES>,
}

#[derive(Debug, Clone)]
struct Pending {
    kind: VoteKind,
    query: QueryId,
    leases: LeaseSet,
    gate: Nanos,
    fenced: bool,
    evidence: Evidence,
    /// An operator's request being carried out.
    ask: Option<OperatorAsk>,
    /// The primary's last checkpoint, from its fence confirmation: activate once applied.
    final_ckpt: Option<u64>,
    /// When the primary confirmed its fence.
    fenced_at: Option<Nanos>,
    /// A planned switchover gives up if the primary has not confirmed by then.
    deadline: Nanos,
}

/// Alerts said once per episode (an episode is one suspicion, or one switchover condition).
#[derive(Debug, Clone, Copy, Default)]
struct Said {
    link_failure: bool,
    no_quorum: bool,
    guest: bool,
    no_replica: bool,
    ping: bool,
    paused: bool,
    paused_switchover: bool,
}

/// The standby decision state machine.
#[derive(Debug, Clone)]
pub struct StandbyCore {
    cfg: Config,
    epoch: Epoch,
    state: State,
    detector: Detector,
    replica: Option<u64>,
    last_ack_at: Option<Nanos>,
    reports: heapless::Vec<(WitnessReport, Nanos), MAX_WITNESSES>,
    query_seq: QueryId,
    query: Option<Query>,
    /// How long a witness query waits for its votes: `query-timeout`, longer while the
    /// witnesses' answers come late (a starved host, a slow path), at most
    /// [`StandbyCore::query_wait_max`]; see [`StandbyCore::note_round_trip`].
    query_wait: Duration,
    /// The last query that ended (its number, when it was sent): a vote for it that comes
    /// after it ended says how late the witnesses answer. It is never counted.
    ended: Option<(QueryId, Nanos)>,
    next_query_at: Nanos,
    backoff: Duration,
    pending: Option<Box<Pending>>,
    said: Said,
    episode_start: Nanos,
    cond_since: Option<Nanos>,
    switchover_not_before: Nanos,
    force: bool,
    ping_asked_at: Option<Nanos>,
    ping: Option<(Nanos, bool)>,
    /// An operator's request whose witness query is under way.
    operator: Option<OperatorAsk>,
    /// The operator's request asks again after refusals that expire by themselves (a lease
    /// still running, a witness just restarted, a failure not yet long enough) until then.
    operator_until: Nanos,
    /// Automatic takeovers paused (maintenance mode).
    maintenance: bool,
    /// Last replication bytes heard (see [`Input::StreamProgress`]).
    stream_at: Option<Nanos>,
    /// Last moment heartbeat replies could go ([`StandbyCore::may_send_alive`]).
    alive_ok_at: Option<Nanos>,
    /// When it was last stepped.
    last_step: Nanos,
}

impl StandbyCore {
    /// A standby of `epoch` at `now`, with its replica at `replica` (`None`: not synchronised yet).
    /// A switchover is not attempted before `now + switchover_min_interval` (anti-flap).
    pub fn new(cfg: Config, epoch: Epoch, now: Nanos, replica: Option<u64>) -> StandbyCore {
        let detector = Detector::new(cfg.heartbeat, now);
        StandbyCore {
            switchover_not_before: later(now, cfg.switchover_min_interval),
            backoff: cfg.requery_min,
            query_wait: cfg.query_timeout,
            cfg,
            epoch,
            state: if replica.is_some() {
                State::Following
            } else {
                State::Unsynced
            },
            detector,
            replica,
            last_ack_at: None,
            reports: heapless::Vec::new(),
            query_seq: 0,
            query: None,
            ended: None,
            next_query_at: now,
            pending: None,
            said: Said::default(),
            episode_start: now,
            cond_since: None,
            force: false,
            ping_asked_at: None,
            ping: None,
            operator: None,
            operator_until: now,
            maintenance: false,
            stream_at: None,
            alive_ok_at: None,
            last_step: now,
        }
    }

    /// How long the next witness query waits for its votes (see `query_wait`).
    pub fn query_wait(&self) -> Duration {
        self.query_wait
    }

    /// The longest a query may wait: half of how long a vote is worth (the lease less its
    /// margin), and never less than `query-timeout` (which the configuration keeps shorter
    /// than a vote's worth). Votes are counted only while valid, measured from when the query
    /// was sent, so waiting longer never makes a vote count that would not; it only gives
    /// late answers the chance to arrive.
    pub fn query_wait_max(&self) -> Duration {
        let l = &self.cfg.lease;
        let vote = l.duration.saturating_sub(l.margin(l.duration));
        (vote / 2).max(self.cfg.query_timeout)
    }

    /// A witness answered `rtt` after its query was sent: the next query waits half again as
    /// long as that, within `query-timeout ..= query_wait_max`. A late answer (`late`: its
    /// query had ended) only lengthens the wait; the answers of a query that ended with votes
    /// in set it (so it comes back to `query-timeout` once the answers are prompt again).
    pub(super) fn note_round_trip(&mut self, rtt: Duration, late: bool) {
        let want = rtt
            .saturating_add(rtt / 2)
            .clamp(self.cfg.query_timeout, self.query_wait_max());
        if !late || want > self.query_wait {
            self.query_wait = want;
        }
    }

    /// Whether automatic takeovers are paused (maintenance mode).
    pub fn maintenance(&self) -> bool {
        self.maintenance
    }

    /// The operator's request under way, if any.
    pub fn operator(&self) -> Option<OperatorAsk> {
        self.operator
            .or_else(|| self.pending.as_ref().and_then(|p| p.ask))
    }

    /// Start witness query numbers after `q` (random per process, so a vote captured from an
    /// earlier process cannot answer a query of this one).
    pub fn with_query_base(mut self, q: QueryId) -> StandbyCore {
        self.query_seq = q;
        self
    }

    /// Where it is.
    pub fn state(&self) -> State {
        self.state
    }

    /// Its epoch.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The replica's applied checkpoint.
    pub fn replica(&self) -> Option<u64> {
        self.replica
    }

    /// The heartbeat detector (for status output).
    pub fn detector(&self) -> &Detector {
        &self.detector
    }

    /// Whether acks may be sent now (the core emits [`Action::Ack`] itself; this is for status).
    pub fn may_ack(&self) -> bool {
        matches!(
            self.state,
            State::Following | State::Deciding | State::RefusedStale
        )
    }

    /// Whether the daemon may send heartbeat replies now (every heartbeat interval): while acks
    /// may go, and while the primary is not suspected or its replication bytes still get
    /// through (a slow link delays heartbeats behind the stream). Never once deciding to
    /// activate: the primary must then stop counting on us, and we wait out what it counts
    /// the last reply for before activating.
    pub fn may_send_alive(&self, now: Nanos) -> bool {
        self.may_ack()
            && (!self.detector.suspected()
                || self
                    .stream_at
                    .is_some_and(|t| elapsed(now, t) < self.cfg.heartbeat.timeout))
    }

    fn quorum(&self) -> usize {
        self.cfg.witnesses.quorum()
    }

    /// One input at `now`.
    pub fn step(&mut self, now: Nanos, input: Input) -> Actions<Action> {
        // Replies may have gone until now (the daemon sends them between steps).
        self.note_alive(now);
        let out = self.step_input(now, input);
        if self.may_send_alive(now) {
            self.alive_ok_at = Some(now);
        }
        self.last_step = self.last_step.max(now);
        out
    }

    /// Since the last step, replies could go while [`StandbyCore::may_send_alive`]: the state
    /// has not changed since, only time passed, which closes the window of a suspected
    /// primary's stream. So the last moment is known exactly, however seldom the core is
    /// stepped (it is stepped at its deadlines, not ticked).
    fn note_alive(&mut self, now: Nanos) {
        if !self.may_ack() {
            return;
        }
        let until = if !self.detector.suspected() {
            Some(now)
        } else {
            // Open while elapsed < timeout: its last moment is a nanosecond before it closes.
            self.stream_at
                .map(|t| Nanos(later(t, self.cfg.heartbeat.timeout).0.saturating_sub(1)).min(now))
                .filter(|&u| u >= self.last_step)
        };
        if let Some(u) = until {
            self.alive_ok_at = Some(self.alive_ok_at.map_or(u, |a| a.max(u)));
        }
    }

    fn step_input(&mut self, now: Nanos, input: Input) -> Actions<Action> {
        let mut out = Actions::new();
        if self.state == State::Activated {
            return out;
        }
        match input {
            Input::Heartbeat { link, epoch } => match compare(self.epoch, epoch) {
                EpochOrder::Newer if self.fenced_for_us(now, epoch) => {}
                EpochOrder::Newer => return self.step_down(now, epoch, out),
                EpochOrder::Stale => {}
                EpochOrder::Current => {
                    if let Some(ev) = self.detector.heartbeat(link, now) {
                        self.on_detector(now, ev, &mut out);
                    }
                }
            },
            Input::Report(r) => {
                if !self.cfg.witnesses.contains(r.witness) {
                    return out;
                }
                if r.epoch > self.epoch {
                    return self.step_down(now, r.epoch, out);
                }
                if r.epoch == self.epoch {
                    if let Some(i) = self
                        .reports
                        .iter()
                        .position(|(x, _)| x.witness == r.witness)
                    {
                        self.reports.swap_remove(i);
                    }
                    let _ = self.reports.push((r, now));
                    // The primary looks down to this witness: no need to wait for the backoff.
                    if self.state == State::Deciding
                        && self.query.is_none()
                        && r.view.app == AppVerdict::Down
                    {
                        self.next_query_at = self.next_query_at.min(now);
                    }
                }
            }
            Input::Vote(v) => {
                if !self.cfg.witnesses.contains(v.witness) {
                    return out;
                }
                let newer = match v.verdict {
                    Verdict::Refuse(RefuseReason::StaleEpoch(e)) => e.max(v.epoch),
                    _ => v.epoch,
                };
                if newer > self.epoch {
                    return self.step_down(now, newer, out);
                }
                if let Some(q) = self.query.as_mut() {
                    if q.id == v.query && !q.votes.iter().any(|(x, _)| x.witness == v.witness) {
                        let _ = q.votes.push((v, now));
                        self.conclude(now, &mut out);
                        return out;
                    }
                }
                // Too late for the query it answers, which ended (and was withdrawn): not
                // counted, but the next query waits long enough for such an answer.
                if let Some((id, sent_at)) = self.ended {
                    if id == v.query {
                        self.note_round_trip(elapsed(now, sent_at), true);
                    }
                }
            }
            Input::ReplicaApplied { ckpt, epoch } => match compare(self.epoch, epoch) {
                EpochOrder::Newer => return self.step_down(now, epoch, out),
                EpochOrder::Stale => {}
                EpochOrder::Current => match self.state {
                    State::Following | State::Deciding | State::RefusedStale => {
                        self.replica = Some(ckpt);
                        self.last_ack_at = Some(now);
                        emit(
                            &mut out,
                            Action::Ack {
                                ckpt,
                                epoch: self.epoch,
                            },
                        );
                    }
                    // Applied but not acked: the primary's authority must run out.
                    State::Waiting | State::SwitchingOver => self.replica = Some(ckpt),
                    // Only a full synchronisation ([`Input::Resynced`]) makes a replica.
                    _ => {}
                },
            },
            Input::Ping { ok } => self.ping = Some((now, ok)),
            Input::OperatorForce => {
                self.force = true;
                if self.state == State::RefusedStale {
                    self.state = State::Deciding;
                    self.next_query_at = now;
                }
            }
            Input::HigherEpoch { epoch } => {
                if epoch > self.epoch && !self.fenced_for_us(now, epoch) {
                    return self.step_down(now, epoch, out);
                }
            }
            Input::Operator { ask, force } => self.operator_request(now, ask, force, &mut out),
            Input::Maintenance { on } => self.set_maintenance(now, on, &mut out),
            Input::PrimaryFenced { epoch, ckpt } => {
                if let Some(p) = self.pending.as_mut() {
                    if self.state == State::SwitchingOver && epoch == self.epoch.next() {
                        p.fenced = true;
                        p.fenced_at.get_or_insert(now);
                        p.final_ckpt = Some(p.final_ckpt.map_or(ckpt, |c| c.max(ckpt)));
                    }
                }
            }
            Input::Resynced { epoch, ckpt } => {
                if epoch >= self.epoch {
                    let fresh = StandbyCore::new(self.cfg.clone(), epoch, now, Some(ckpt));
                    let (seq, maintenance) = (self.query_seq, self.maintenance);
                    let alive = self.alive_ok_at;
                    *self = fresh;
                    self.query_seq = seq;
                    self.maintenance = maintenance;
                    self.alive_ok_at = alive;
                }
            }
            Input::StreamProgress => self.stream_at = Some(now),
            Input::Tick => {}
        }
        self.tick(now, &mut out);
        out
    }

    fn tick(&mut self, now: Nanos, out: &mut Actions<Action>) {
        let mut events: heapless::Vec<DetectorEvent, { MAX_LINKS + 1 }> = heapless::Vec::new();
        self.detector.poll(now, &mut events);
        for ev in events {
            self.on_detector(now, ev, out);
        }
        match self.state {
            State::Following => {
                if self.query.is_some() {
                    self.conclude(now, out);
                } else if self.operator.is_some() {
                    self.operator_retry(now, out);
                } else {
                    self.switchover_check(now, out);
                }
            }
            State::Deciding => self.decide(now, out),
            State::Waiting | State::SwitchingOver => self.drive_pending(now, out),
            State::Unsynced | State::RefusedStale | State::Activated | State::SteppedDown => {}
        }
    }

    fn step_down(&mut self, now: Nanos, epoch: Epoch, mut out: Actions<Action>) -> Actions<Action> {
        self.query = None;
        self.pending = None;
        self.operator = None;
        let mut e = self.evidence(now, Rule::HigherEpoch, ActionKind::StepDown);
        e.new_epoch = Some(epoch);
        self.epoch = epoch;
        self.state = State::SteppedDown;
        self.replica = None;
        self.reports.clear();
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
}

#[path = "standby_deadline.rs"]
mod deadline;
#[path = "standby_decide.rs"]
mod decide;
#[path = "standby_evidence.rs"]
mod evidence;
#[path = "standby_operator.rs"]
mod operator;
#[path = "standby_pending.rs"]
mod pending;
#[path = "standby_query.rs"]
mod query;
#[cfg(test)]
#[path = "standby_query_tests.rs"]
mod query_tests;
