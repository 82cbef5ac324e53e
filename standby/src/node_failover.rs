//! The standby node's failover side (when `failover = true`): the standby core's decisions
//! (DESIGN.md rules 1-9) and carrying out its actions, the activated node's authority (rules
//! 3-5), the witnesses' and the primary's datagrams, the ping-node baseline, maintenance
//! notices, and the operator's requests through the core (rule 9).

use std::net::SocketAddr;
use std::time::Duration;

use hsb_common::datagram::{Dest, Envelope};
use hsb_common::decision::primary::Input as PInput;
use hsb_common::decision::record::AnyInput;
use hsb_common::decision::standby::{Action as SAction, Input as SInput, OperatorAsk};
use hsb_common::decision::{Epoch, Evidence, PrimaryAuthority, Rule, StandbyCore};
use hsb_common::kit::authority::{plan, witness, Duty, Step};
use hsb_common::kit::talk::Talk;
use hsb_common::msg::Role;
use hsb_common::node_state::{NodeRole, NodeState};
use hsb_common::time::Nanos;
use hsb_common::wire::Dgram;

use super::{push, Effect, Effects, FailoverConfig, Noise, RecordFor, StandbyNode};

/// Maintenance notices go out this often while it is on.
const NOTICE_EVERY: Duration = Duration::from_secs(1);

/// The failover side's state.
pub(super) struct FailoverState {
    pub(super) core: StandbyCore,
    /// After activation: this node's authority as the new primary.
    pub(super) authority: Option<PrimaryAuthority>,
    pub(super) fenced: bool,
    /// A ping of the ping node under way, since.
    ping: Option<Nanos>,
    /// The evidence of the activation, kept for status.
    pub(super) activation: Option<Box<Evidence>>,
    /// Maintenance notices: the last one said "on"; when the next is due.
    maintenance_said: bool,
    next_notice: Nanos,
    /// When the next heartbeat replies are due.
    next_alive: Nanos,
    /// Replication bytes read by the live session when the replies last went.
    stream_bytes: u64,
}

impl FailoverState {
    pub(super) fn new(cfg: &FailoverConfig, host: &NodeState, now: Nanos) -> FailoverState {
        FailoverState {
            core: StandbyCore::new(cfg.decision.clone(), host.epoch, now, None)
                .with_query_base(cfg.query_base),
            authority: None,
            fenced: false,
            ping: None,
            activation: None,
            maintenance_said: false,
            next_notice: now,
            next_alive: now,
            stream_bytes: 0,
        }
    }

    /// When a `Tick` next has something to do here: the decision core's deadline (or, once
    /// activated, the authority's), the next heartbeat replies, a ping that runs out, the next
    /// maintenance notice. `now` or earlier: at once.
    pub(super) fn next_deadline(&self, now: Nanos, cfg: &FailoverConfig) -> Option<Nanos> {
        let decisions = match &self.authority {
            Some(a) => a.next_deadline(now),
            None => self.core.next_deadline(now),
        };
        // The replies go every heartbeat interval until activation (the authority then speaks
        // for this node).
        let alive = self.authority.is_none().then_some(self.next_alive);
        let ping = self.ping.map(|t| t.plus(cfg.decision.query_timeout));
        let notice = self.maintenance_said.then_some(self.next_notice);
        [decisions, alive, ping, notice].into_iter().flatten().min()
    }
}

impl StandbyNode {
    fn fcfg(&self) -> &FailoverConfig {
        match self.cfg.failover.as_ref() {
            Some(c) => c,
            None => unreachable!("failover state without failover configuration"),
        }
    }

    /// At start: a host in maintenance mode stays in it.
    pub fn start(&mut self, now: Nanos) -> Effects {
        let mut fx = Effects::new();
        if self.host.maintenance && self.failover.is_some() {
            log::warn!("MAINTENANCE: automatic takeovers stay paused (recorded in the host state)");
            self.decide(now, SInput::Maintenance { on: true }, &mut fx);
            self.maintenance_notice(now, &mut fx);
        }
        fx
    }

    pub(super) fn failover_tick(&mut self, now: Nanos, fx: &mut Effects) {
        let timeout = self.fcfg().decision.query_timeout;
        if let Some(f) = self.failover.as_mut() {
            if f.ping.is_some_and(|t| now.since(t) >= timeout) {
                push(fx, Effect::CancelPing);
                self.ping_done(now, false, fx);
            }
        }
        self.decide(now, SInput::Tick, fx);
        self.send_alives(now, fx);
        self.authority_step(now, PInput::Tick, fx);
        if self
            .failover
            .as_ref()
            .is_some_and(|f| f.maintenance_said && now >= f.next_notice)
        {
            self.maintenance_notice(now, fx);
        }
    }

    /// The heartbeat replies (issue 12): every heartbeat interval, while the core may
    /// acknowledge (not once it is deciding to activate: the primary must then stop counting on
    /// us). They say we are there and how much of the primary we hear (heartbeats and
    /// replication bytes: this moves however slow the link, so the primary waits for a slow
    /// standby rather than running unprotected). The daemon sends them back over every
    /// heartbeat link the primary's heartbeats came in on.
    fn send_alives(&mut self, now: Nanos, fx: &mut Effects) {
        let interval = self.fcfg().decision.heartbeat.interval;
        let bytes = self
            .current
            .and_then(|i| self.slots[i].as_ref())
            .map_or(0, |s| s.received);
        let heard = self.stats.heartbeats.wrapping_add(bytes);
        let applied = self.applied;
        let Some(f) = self.failover.as_mut() else {
            return;
        };
        if now < f.next_alive {
            return;
        }
        f.next_alive = now.plus(interval);
        if f.authority.is_some() {
            return;
        }
        // While the primary is suspected, the core needs to know whether its stream still
        // gets through (its heartbeats may only be queued behind it on a slow link).
        let moved = std::mem::replace(&mut f.stream_bytes, bytes) != bytes;
        if moved && f.core.detector().suspected() {
            self.decide(now, SInput::StreamProgress, fx);
        }
        let Some(f) = self.failover.as_ref() else {
            return;
        };
        if f.authority.is_some() || !f.core.may_send_alive(now) {
            return;
        }
        let msg = Dgram::StandbyAlive {
            epoch: f.core.epoch(),
            applied,
            heard,
            stream: bytes,
        };
        push(fx, Effect::HeartbeatReply { msg });
    }

    /// Whether automatic takeovers are paused.
    pub fn maintenance(&self) -> bool {
        self.failover.as_ref().is_some_and(|f| f.core.maintenance())
    }

    /// Tell the primary and the witnesses (every second while on, once when turned off).
    fn maintenance_notice(&mut self, now: Nanos, fx: &mut Effects) {
        let on = self.maintenance();
        let (to_primary, peers) = (
            self.fcfg().primary_witness,
            self.fcfg().witness_peers.clone(),
        );
        let Some(f) = self.failover.as_mut() else {
            return;
        };
        if on || f.maintenance_said {
            f.maintenance_said = on;
            f.next_notice = now.plus(NOTICE_EVERY);
            let msg = Dgram::Maintenance { on };
            push(
                fx,
                Effect::Talk(Talk::Send {
                    to: to_primary,
                    dest: Dest::role(Role::Primary),
                    msg,
                }),
            );
            for (id, to) in peers {
                push(
                    fx,
                    Effect::Talk(Talk::Send {
                        to,
                        dest: witness(id),
                        msg,
                    }),
                );
            }
        }
    }

    /// Maintenance mode is on disk: the core hears of it, the others are told.
    pub(super) fn maintenance_recorded(
        &mut self,
        now: Nanos,
        on: bool,
        fx: &mut Effects,
    ) -> String {
        self.decide(now, SInput::Maintenance { on }, fx);
        self.maintenance_notice(now, fx);
        if on {
            log::warn!("MAINTENANCE: automatic takeovers paused by the operator");
            "maintenance on: automatic takeovers are paused (decisions that would be taken are logged); resume with `maintenance off`\n".into()
        } else {
            log::warn!("maintenance off: automatic takeovers resumed");
            "maintenance off: automatic takeovers resumed\n".into()
        }
    }

    /// The operator asks the core for an activation or a switchover (rule 9).
    pub(super) fn failover_operator(
        &mut self,
        now: Nanos,
        conn: usize,
        switchover: bool,
        force: bool,
        fx: &mut Effects,
    ) {
        let ask = if switchover {
            OperatorAsk::Switchover
        } else {
            OperatorAsk::Activate
        };
        log::warn!(
            "operator asks for {}{}",
            ask.name(),
            if force {
                " (--force: without the witnesses; the operator guarantees the primary is stopped)"
            } else {
                ""
            }
        );
        self.start_operator(conn, now, fx);
        self.decide(now, SInput::Operator { ask, force }, fx);
    }

    pub(super) fn applied_under_failover(
        &mut self,
        now: Nanos,
        ckpt: u64,
        full: bool,
        epoch: Epoch,
        fx: &mut Effects,
    ) {
        if full {
            self.decide(now, SInput::Resynced { epoch, ckpt }, fx);
        }
        self.decide(now, SInput::ReplicaApplied { ckpt, epoch }, fx);
    }

    pub(super) fn ping_done(&mut self, now: Nanos, ok: bool, fx: &mut Effects) {
        if let Some(f) = self.failover.as_mut() {
            f.ping = None;
        }
        self.decide(now, SInput::Ping { ok }, fx);
    }

    /// Feed the standby core and carry out its actions (until activated: then the authority
    /// decides).
    pub(super) fn decide(&mut self, now: Nanos, input: SInput, fx: &mut Effects) {
        let Some(f) = self.failover.as_mut() else {
            return;
        };
        if f.authority.is_some() {
            return;
        }
        let actions = f.core.step(now, input);
        if input != SInput::Tick || !actions.is_empty() {
            push(fx, Effect::Talk(Talk::Record(AnyInput::Standby(input))));
        }
        let epoch = f.core.epoch();
        if epoch > self.host.epoch {
            // A newer epoch is active: remembered before acting on it.
            push(
                fx,
                Effect::RecordHost {
                    state: NodeState {
                        epoch,
                        role: NodeRole::Standby,
                        ..self.host
                    },
                    purpose: RecordFor::Epoch,
                },
            );
            self.host.epoch = epoch;
        }
        for a in actions {
            self.operator_outcome(&a);
            self.carry_out(now, a, fx);
        }
    }

    fn carry_out(&mut self, now: Nanos, a: SAction, fx: &mut Effects) {
        let peers = self.fcfg().witness_peers.clone();
        match a {
            SAction::Ack { ckpt, epoch } => push(fx, Effect::Ack { ckpt, epoch }),
            SAction::QueryWitnesses(q) => {
                log::info!(
                    "heartbeat lost: asking the witnesses (query {}, {})",
                    q.query,
                    q.kind
                );
                for (id, to) in peers {
                    let msg = Dgram::VoteRequest(q);
                    push(
                        fx,
                        Effect::Talk(Talk::Send {
                            to,
                            dest: witness(id),
                            msg,
                        }),
                    );
                }
            }
            SAction::Withdraw(w) => {
                for (id, to) in peers {
                    let msg = Dgram::Withdraw(w);
                    push(
                        fx,
                        Effect::Talk(Talk::Send {
                            to,
                            dest: witness(id),
                            msg,
                        }),
                    );
                }
            }
            SAction::PingNode => {
                let ping_node = self.fcfg().ping_node;
                if let Some(f) = self.failover.as_mut() {
                    if ping_node.is_some() && f.ping.is_none() {
                        f.ping = Some(now);
                        push(fx, Effect::Ping);
                    }
                }
            }
            SAction::Activate {
                epoch,
                leases,
                evidence,
            } => {
                let last = self.applied.unwrap_or(0);
                let decision = self.fcfg().decision.clone();
                let Some(f) = self.failover.as_mut() else {
                    return;
                };
                let authority = PrimaryAuthority::activated(decision, epoch, now, &leases, last);
                // Forced by the operator (the primary is stopped): serve on that word until a
                // lease quorum or an ack takes over.
                f.authority = Some(if evidence.rule == Rule::OperatorForced {
                    authority.with_operator_authority()
                } else {
                    authority
                });
                f.activation = Some(evidence.clone());
                let by = format!("the failover decision ({})", evidence.rule);
                push(
                    fx,
                    Effect::Talk(Talk::Evidence {
                        level: log::Level::Warn,
                        evidence,
                    }),
                );
                push(fx, Effect::Talk(Talk::SetEpoch(epoch)));
                // Witnesses learn which host is the primary from the daemons' answers, and
                // address it as the primary from then on.
                push(fx, Effect::SetRole(Role::Primary));
                self.activate(&by, epoch, fx);
            }
            SAction::Switchover { epoch, evidence } => {
                push(
                    fx,
                    Effect::Talk(Talk::Evidence {
                        level: log::Level::Warn,
                        evidence,
                    }),
                );
                let dest = Dest {
                    role: Role::Primary,
                    id: self
                        .current
                        .and_then(|i| self.slots[i].as_ref())
                        .filter(|s| !s.node.is_empty())
                        .map(|s| hsb_common::datagram::node_sender_id(&s.node)),
                };
                let to = self.fcfg().primary_witness;
                let msg = Dgram::FenceRequest { epoch };
                push(fx, Effect::Talk(Talk::Send { to, dest, msg }));
            }
            SAction::CannotDecide { evidence } | SAction::RefuseStale { evidence } => push(
                fx,
                Effect::Talk(Talk::Evidence {
                    level: log::Level::Error,
                    evidence,
                }),
            ),
            SAction::Alert { evidence } | SAction::StepDown { evidence, .. } => push(
                fx,
                Effect::Talk(Talk::Evidence {
                    level: log::Level::Warn,
                    evidence,
                }),
            ),
            SAction::RequestFullSync => {
                // A session from an older primary is dropped; one from the primary of the
                // newer epoch starts with a full synchronisation anyway.
                let newest = self
                    .failover
                    .as_ref()
                    .map_or(Epoch::FIRST, |f| f.core.epoch());
                if let Some(i) = self.current {
                    if self.slots[i].as_ref().is_some_and(|s| s.epoch < newest) {
                        self.close(
                            i,
                            "the decision core asks for a full synchronisation from a newer primary",
                            fx,
                        );
                    }
                }
            }
        }
    }

    /// If an operator's request is under way, the answer an action gives it (the request ends
    /// with an activation, or with a refusal that says why).
    fn operator_outcome(&mut self, a: &SAction) {
        if self.operator.is_none() {
            return;
        }
        let answer = match a {
            SAction::Activate {
                epoch, evidence, ..
            } => format!(
                "activated: epoch {epoch} from checkpoint {}; {}\n",
                self.applied.unwrap_or(0),
                evidence.summary()
            ),
            SAction::CannotDecide { evidence } => format!("refused: {}\n", evidence.summary()),
            SAction::RefuseStale { evidence } => format!(
                "refused: the replica is stale (the primary ran unprotected after its checkpoint: rule 5); `force-stale` or `activate --force` if you accept losing that output; {}\n",
                evidence.summary()
            ),
            SAction::Switchover { epoch, evidence } => {
                log::warn!(
                    "operator's request: the witnesses agree ({}); asking the primary to fence for epoch {epoch}",
                    evidence.summary()
                );
                return;
            }
            _ => return,
        };
        self.operator_answer(answer);
    }

    /// Feed the activated node's authority and carry out its actions.
    fn authority_step(&mut self, now: Nanos, input: PInput, fx: &mut Effects) {
        let peers = self.fcfg().witness_peers.clone();
        let Some(f) = self.failover.as_mut() else {
            return;
        };
        let Some(a) = f.authority.as_mut() else {
            return;
        };
        let actions = a.step(now, input);
        for step in plan(input, actions, &peers) {
            match step {
                Step::Talk(t) => push(fx, Effect::Talk(t)),
                Step::Duty(d) => {
                    let Some(f) = self.failover.as_mut() else {
                        return;
                    };
                    match d {
                        Duty::Fence | Duty::StepDown(_) => {
                            if !f.fenced {
                                f.fenced = true;
                                push(fx, Effect::FenceReplica);
                            }
                        }
                        Duty::Unfence => {
                            f.fenced = false;
                            push(fx, Effect::UnfenceReplica);
                        }
                        Duty::ConfirmFenced { .. } | Duty::RequestFullSync => {}
                    }
                }
            }
        }
    }

    pub(super) fn on_datagram(
        &mut self,
        now: Nanos,
        from: SocketAddr,
        env: Envelope,
        msg: Dgram,
        fx: &mut Effects,
    ) {
        if self.failover.is_none() {
            return;
        }
        match msg {
            Dgram::Heartbeat { link, .. } => {
                self.stats.heartbeats += 1;
                self.decide(
                    now,
                    SInput::Heartbeat {
                        link,
                        epoch: Epoch(env.epoch),
                    },
                    fx,
                );
            }
            Dgram::Ping { nonce } => push(fx, Effect::Talk(Talk::pong(from, env.from, nonce))),
            Dgram::Report(r) => self.decide(now, SInput::Report(r), fx),
            Dgram::Vote(v) => {
                let line = || {
                    format!(
                        "vote from witness {}: {} (application {})",
                        v.witness, v.verdict, v.view.app
                    )
                };
                if v.verdict.granted() {
                    log::info!("{}", line());
                } else if let Some(n) = self.noise.allow(Noise::VoteRefused as usize, now) {
                    log::info!(
                        "{}{}",
                        line(),
                        hsb_common::logging::LogLimiter::<{ super::NOISE }>::note(n)
                    );
                }
                self.decide(now, SInput::Vote(v), fx);
            }
            Dgram::Fenced { epoch, ckpt } => {
                self.decide(now, SInput::PrimaryFenced { epoch, ckpt }, fx)
            }
            Dgram::LeaseReply(r) => self.authority_step(now, PInput::LeaseReply(r), fx),
            other => log::debug!("ignored {} from {from}", other.name()),
        }
    }
}
