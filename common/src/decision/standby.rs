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

/// An input to the standby core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// A heartbeat from the primary on `link`.
    Heartbeat {
        /// Link index.
        link: u8,
        /// The primary's epoch.
        epoch: Epoch,
    },
    /// A witness's periodic report.
    Report(WitnessReport),
    /// A witness's vote.
    Vote(Vote),
    /// The replica applied checkpoint `ckpt` (complete and verified) of `epoch`.
    ReplicaApplied {
        /// Checkpoint number.
        ckpt: u64,
        /// The primary's epoch.
        epoch: Epoch,
    },
    /// The ping node answered (`ok`) or not (ping-node baseline).
    Ping {
        /// Whether it answered.
        ok: bool,
    },
    /// The operator forces activation of a stale replica (rule 5).
    OperatorForce,
    /// The operator asks for this standby to become active (rule 9): through the witnesses,
    /// unless `force` (the operator says the primary is stopped).
    Operator {
        /// Activation, or a planned switchover.
        ask: OperatorAsk,
        /// Activate without the witnesses (and whatever the replica's staleness).
        force: bool,
    },
    /// The operator pauses (`on`) or resumes automatic takeovers (maintenance mode).
    Maintenance {
        /// Paused.
        on: bool,
    },
    /// A message carried a higher epoch.
    HigherEpoch {
        /// That epoch.
        epoch: Epoch,
    },
    /// The primary confirmed it fenced itself for the switchover to `epoch`.
    PrimaryFenced {
        /// The switchover's epoch.
        epoch: Epoch,
        /// The primary's last checkpoint sent.
        ckpt: u64,
    },
    /// A full synchronisation from the primary of `epoch` completed at `ckpt`.
    Resynced {
        /// The primary's epoch.
        epoch: Epoch,
        /// Checkpoint number.
        ckpt: u64,
    },
    /// Replication bytes arrived (the daemon says so while the primary is suspected, at most
    /// once per heartbeat interval): a slow link's stream still gets through.
    StreamProgress,
    /// Time passed.
    Tick,
}

/// What the operator asks for (rule 9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorAsk {
    /// `hsb-standby activate`: serve from the replica now. The witnesses vote (a quorum learns
    /// the new epoch, so the old primary cannot renew its leases); the primary is asked to
    /// fence, and if it does not answer its ack authority is waited out.
    Activate,
    /// `hsb-standby switchover`: planned. As `Activate`, but the primary must confirm its fence
    /// after a final checkpoint, which the standby applies before it activates (nothing the
    /// primary processed is lost); without the primary's confirmation nothing happens.
    Switchover,
}

impl OperatorAsk {
    /// The text form.
    pub fn name(self) -> &'static str {
        match self {
            OperatorAsk::Activate => "activate",
            OperatorAsk::Switchover => "switchover",
        }
    }

    /// From the text form.
    pub fn parse(s: &str) -> Option<OperatorAsk> {
        match s {
            "activate" => Some(OperatorAsk::Activate),
            "switchover" => Some(OperatorAsk::Switchover),
            _ => None,
        }
    }

    fn rule(self) -> Rule {
        match self {
            OperatorAsk::Activate => Rule::OperatorActivate,
            OperatorAsk::Switchover => Rule::OperatorSwitchover,
        }
    }
}

/// What the standby daemon must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send ack(`ckpt`) to the primary (the core withholds acks once it is deciding to activate).
    Ack {
        /// Checkpoint number.
        ckpt: u64,
        /// The standby's epoch.
        epoch: Epoch,
    },
    /// Send this vote request to every witness.
    QueryWitnesses(VoteRequest),
    /// Send this to every witness: the votes of that query will not be used.
    Withdraw(Withdraw),
    /// Ping the configured ping node and report with [`Input::Ping`].
    PingNode,
    /// Activate the replica in `epoch`; continue as a primary holding `leases`.
    Activate {
        /// The new epoch.
        epoch: Epoch,
        /// The votes, as leases (empty under the baselines).
        leases: Box<LeaseSet>,
        /// Why.
        evidence: Box<Evidence>,
    },
    /// Rule 6: send `FenceRequest(epoch)` to the primary; `Activate` follows when it confirms or its
    /// ack authority has run out.
    Switchover {
        /// The new epoch.
        epoch: Epoch,
        /// Why.
        evidence: Box<Evidence>,
    },
    /// Not enough information to act (alert).
    CannotDecide {
        /// Why.
        evidence: Box<Evidence>,
    },
    /// The replica is stale; not activated (alert; the operator may force).
    RefuseStale {
        /// Why.
        evidence: Box<Evidence>,
    },
    /// Tell the operator.
    Alert {
        /// What and why.
        evidence: Box<Evidence>,
    },
    /// A newer epoch exists: drop the replica.
    StepDown {
        /// The newer epoch.
        epoch: Epoch,
        /// Why.
        evidence: Box<Evidence>,
    },
    /// Ask the primary for a full synchronisation.
    RequestFullSync,
}

impl Action {
    /// The evidence, for decisions that carry one.
    pub fn evidence(&self) -> Option<&Evidence> {
        match self {
            Action::Activate { evidence, .. }
            | Action::Switchover { evidence, .. }
            | Action::CannotDecide { evidence }
            | Action::RefuseStale { evidence }
            | Action::Alert { evidence }
            | Action::StepDown { evidence, .. } => Some(evidence),
            _ => None,
        }
    }
}

/// Where the standby is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No complete replica: nothing to activate.
    Unsynced,
    /// Replicating; the primary is trusted.
    Following,
    /// The heartbeat is lost: asking the witnesses (or the ping node).
    Deciding,
    /// A quorum voted; waiting for the primary's ack authority to run out.
    Waiting,
    /// Switchover decided; waiting for the primary to fence (or its ack authority to run out).
    SwitchingOver,
    /// A quorum voted but the replica is stale: refused (rule 5).
    RefusedStale,
    /// Activated: the core is done.
    Activated,
    /// A higher epoch exists: waiting for a full synchronisation.
    SteppedDown,
}

impl State {
    /// The text form.
    pub fn name(self) -> &'static str {
        match self {
            State::Unsynced => "unsynced",
            State::Following => "following",
            State::Deciding => "deciding",
            State::Waiting => "waiting",
            State::SwitchingOver => "switching-over",
            State::RefusedStale => "refused-stale",
            State::Activated => "activated",
            State::SteppedDown => "stepped-down",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

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

    /// During a switchover the fenced primary steps down to the epoch we are starting, and says so
    /// (heartbeats of that epoch): that is its confirmation, not a newer primary.
    fn fenced_for_us(&mut self, now: Nanos, epoch: Epoch) -> bool {
        if self.state != State::SwitchingOver || epoch != self.epoch.next() {
            return false;
        }
        if let Some(p) = self.pending.as_mut() {
            p.fenced = true;
            p.fenced_at.get_or_insert(now);
        }
        true
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

    fn on_detector(&mut self, now: Nanos, ev: DetectorEvent, out: &mut Actions<Action>) {
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

    fn decide(&mut self, now: Nanos, out: &mut Actions<Action>) {
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

    /// Rule 9: the operator's request.
    fn operator_request(
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
    fn operator_retry(&mut self, now: Nanos, out: &mut Actions<Action>) {
        if now >= self.next_query_at {
            self.start_query(now, VoteKind::Operator, out);
        }
    }

    fn set_maintenance(&mut self, now: Nanos, on: bool, out: &mut Actions<Action>) {
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

    fn activate(&mut self, leases: LeaseSet, evidence: Evidence, out: &mut Actions<Action>) {
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

    fn start_query(&mut self, now: Nanos, kind: VoteKind, out: &mut Actions<Action>) {
        self.query_seq = self.query_seq.wrapping_add(1);
        self.query = Some(Query {
            id: self.query_seq,
            kind,
            sent_at: now,
            deadline: later(now, self.cfg.query_timeout),
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

    fn cancel_query(&mut self, out: &mut Actions<Action>) {
        if let Some(q) = self.query.take() {
            emit(
                out,
                Action::Withdraw(Withdraw {
                    epoch: self.epoch.next(),
                    query: q.id,
                }),
            );
        }
    }

    fn abandon_pending(&mut self, out: &mut Actions<Action>) {
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

    fn vote_valid(&self, q: &Query, v: &Vote, now: Nanos) -> bool {
        v.verdict.granted() && now < self.cfg.lease.holder_until(q.sent_at, v.duration)
    }

    /// Decide on the query in flight if its outcome is known (or its time is up).
    fn conclude(&mut self, now: Nanos, out: &mut Actions<Action>) {
        let Some(q) = self.query.as_ref() else {
            return;
        };
        let n = self.cfg.witnesses.len();
        let need = self.quorum();
        let grants = q
            .votes
            .iter()
            .filter(|(v, _)| self.vote_valid(q, v, now))
            .count();
        let answers = q.votes.len();
        if grants >= need {
            self.succeed(now, out);
        } else if now >= q.deadline || answers >= n || grants + (n - answers) < need {
            self.fail(now, out);
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

    fn fail(&mut self, now: Nanos, out: &mut Actions<Action>) {
        let Some(q) = self.query.take() else {
            return;
        };
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

    fn drive_pending(&mut self, now: Nanos, out: &mut Actions<Action>) {
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
        let ready = if p.fenced {
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
        };
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

    fn switchover_check(&mut self, now: Nanos, out: &mut Actions<Action>) {
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

    fn evidence(&self, now: Nanos, rule: Rule, action: ActionKind) -> Evidence {
        self.evidence_q(now, rule, action, self.query.as_ref())
    }

    fn evidence_q(
        &self,
        now: Nanos,
        rule: Rule,
        action: ActionKind,
        q: Option<&Query>,
    ) -> Evidence {
        let mut e = Evidence::new(
            now,
            Role::Standby,
            self.cfg.policy,
            rule,
            action,
            self.epoch,
        );
        e.heartbeat = Some(HeartbeatSummary {
            suspected: self.detector.suspected(),
            silent_ns: nanos_of(self.detector.silent_for(now)),
            timeout_ns: nanos_of(self.detector.timeout()),
        });
        e.checkpoint = self.replica;
        e.configured = self.cfg.witnesses.len() as u8;
        e.quorum = self.quorum() as u8;
        e.forced = self.force && rule == Rule::ForcedStale;
        if let Some(q) = q {
            e.answers = q.votes.len() as u8;
            e.grants = q
                .votes
                .iter()
                .filter(|(v, _)| self.vote_valid(q, v, now))
                .count() as u8;
        }
        for &id in self.cfg.witnesses.ids() {
            let vote = q.and_then(|q| q.votes.iter().find(|(v, _)| v.witness == id));
            let report = self.reports.iter().find(|(r, _)| r.witness == id);
            let entry = match (vote, report) {
                (Some((v, at)), _) => WitnessSaid {
                    id,
                    said: if v.verdict.granted() {
                        SaidKind::Grant
                    } else {
                        SaidKind::Refuse
                    },
                    reason: match v.verdict {
                        Verdict::Refuse(r) => Some(r),
                        Verdict::Grant => None,
                    },
                    app: v.view.app,
                    primary_host: v.view.primary_host,
                    standby_host: v.view.standby_host,
                    rates: v.view.rates,
                    unprotected_after: v.unprotected_after,
                    age_ns: nanos_of(elapsed(now, *at)),
                },
                (None, Some((r, at))) => WitnessSaid {
                    id,
                    said: SaidKind::NoAnswer,
                    reason: None,
                    app: r.view.app,
                    primary_host: r.view.primary_host,
                    standby_host: r.view.standby_host,
                    rates: r.view.rates,
                    unprotected_after: r.unprotected_after,
                    age_ns: nanos_of(elapsed(now, *at)),
                },
                (None, None) => WitnessSaid {
                    id,
                    said: SaidKind::NoAnswer,
                    reason: None,
                    app: AppVerdict::Unknown,
                    primary_host: false,
                    standby_host: false,
                    rates: Rates::default(),
                    unprotected_after: None,
                    age_ns: 0,
                },
            };
            e.push_witness(entry);
        }
        e
    }
}

#[path = "standby_deadline.rs"]
mod deadline;
