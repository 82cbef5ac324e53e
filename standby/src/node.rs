//! The standby node: everything hsb-standby decides, as a state machine without I/O (STYLE.md,
//! "the daemon shape"). It owns the replication connection slots (which connection may open a
//! session, which live session a newer primary replaces, handshake deadlines, evictions), what
//! the replica holds and what is acknowledged, the activation and the hand-over to
//! hsb-primary, the host state's contents, the operator's requests and maintenance mode, the
//! failover side (`node_failover.rs`: the standby core, the activated node's authority, witness
//! traffic, the ping-node baseline), and the replica's disk (`node_disk.rs`: a failing disk is
//! never acknowledged and makes the replica unusable; an activation forks it first).
//!
//! `step(now, event)` returns the effects to carry out, in order; the daemon (`daemon.rs`)
//! turns bytes into events and effects into I/O, and answers some effects with an event of
//! their outcome ([`Effect::RecordHost`], [`Effect::Activate`], [`Effect::Ping`]), stepped at
//! once. Nothing here reads a clock or touches a socket, a file or a process; invariants are
//! checked after every step.

use std::net::SocketAddr;
use std::time::Duration;

use hsb_common::decision::{Epoch, PrimaryAuthority};
use hsb_common::kit::push;
use hsb_common::logging::LogLimiter;
use hsb_common::msg::Hello;
use hsb_common::node_state::{NodeRole, NodeState};
use hsb_common::stats::ms;
use hsb_common::time::Nanos;

use crate::slots::{self, Stage};

#[path = "node_disk.rs"]
mod disk;
#[path = "node_failover.rs"]
mod failover;
#[path = "node_sessions.rs"]
mod sessions;
#[path = "node_types.rs"]
mod types;
#[path = "node_view.rs"]
mod view;
use failover::FailoverState;
pub use types::{
    Effect, Effects, Event, FailoverConfig, NodeConfig, OperatorCmd, RecordFor, Stats, MAX_EFFECTS,
};
pub use view::{FailoverView, STATES};

/// Connection slots: the pending handshakes and the live session.
pub const SLOTS: usize = slots::SLOTS;

/// How long an operator's command waits for the decision before it answers "in progress"
/// (the CLI gives up after 10 s).
const OPERATOR_WAIT: Duration = Duration::from_secs(8);

/// Causes of log lines that a hostile or broken peer could repeat at will: each is rate-limited
/// on its own; status counts what they report.
#[derive(Debug, Clone, Copy)]
enum Noise {
    Refused,
    Evicted,
    Expired,
    BadFrame,
    Disallowed,
    /// Refused witness votes (grants are always logged: they are decisions' inputs).
    VoteRefused,
    /// The replica's disk failed while a checkpoint was staged or applied.
    DiskFailed,
}
const NOISE: usize = 7;

/// One replication connection, as the node sees it.
#[derive(Debug, Clone)]
pub struct Slot {
    /// Handshake or live session.
    pub stage: Stage,
    /// Its address.
    pub peer: SocketAddr,
    accepted: Nanos,
    /// Last time its primary was heard from.
    heard: Nanos,
    /// Bytes read on its connection so far (see [`Event::Heard`]).
    received: u64,
    /// The primary's Hello, once it arrived.
    hello: Option<Hello>,
    /// The primary's node name (from its Hello).
    pub node: String,
    /// The primary's epoch (from its Hello).
    pub epoch: Epoch,
}

/// An operator's request under way (rule 9), and where its answer goes.
struct Operator {
    conn: usize,
    deadline: Nanos,
    answer: Option<String>,
}

impl Operator {
    fn new(conn: usize, now: Nanos) -> Operator {
        Operator {
            conn,
            deadline: now.plus(OPERATOR_WAIT),
            answer: None,
        }
    }
}

impl StandbyNode {
    /// An operator's request starts: its control connection stays open for the answer.
    fn start_operator(&mut self, conn: usize, now: Nanos, fx: &mut Effects) {
        let o = Operator::new(conn, now);
        let until = o.deadline.plus(Duration::from_millis(500));
        self.operator = Some(o);
        push(fx, Effect::Defer { conn, until });
    }
}

/// An activation waiting for the host state to be written.
#[derive(Debug, Clone)]
struct Activation {
    ckpt: u64,
    epoch: Epoch,
    by: String,
}

/// The standby node.
pub struct StandbyNode {
    cfg: NodeConfig,
    host: NodeState,
    /// The epoch without failover (the operator's activations count it up).
    epoch: Epoch,
    slots: [Option<Slot>; SLOTS],
    current: Option<usize>,
    applied: Option<u64>,
    activated: Option<u64>,
    activating: Option<Activation>,
    /// The operator's maintenance command on this control connection waits for its record.
    maintenance_for: Option<(usize, bool)>,
    operator: Option<Operator>,
    failover: Option<FailoverState>,
    noise: LogLimiter<NOISE>,
    stats: Stats,
}

impl StandbyNode {
    /// A standby starting at `now` with the host state `host` (already written).
    pub fn new(cfg: NodeConfig, host: NodeState, now: Nanos) -> StandbyNode {
        let failover = cfg
            .failover
            .as_ref()
            .map(|f| FailoverState::new(f, &host, now));
        StandbyNode {
            epoch: host.epoch,
            host,
            slots: Default::default(),
            current: None,
            applied: None,
            activated: None,
            activating: None,
            maintenance_for: None,
            operator: None,
            failover,
            noise: LogLimiter::new(3, Duration::from_secs(10)),
            stats: Stats::default(),
            cfg,
        }
    }

    /// One input at `now`: the effects to carry out, in order.
    pub fn step(&mut self, now: Nanos, ev: Event) -> Effects {
        let mut fx = Effects::new();
        match ev {
            Event::Tick => {
                self.expire_handshakes(now, &mut fx);
                if self.failover.is_some() {
                    self.failover_tick(now, &mut fx);
                }
            }
            Event::Incoming { peer } => self.incoming(now, peer, &mut fx),
            Event::Hello { slot, hello } => self.on_hello(now, slot, hello, &mut fx),
            Event::Confirmed { slot } => self.on_confirm(now, slot, &mut fx),
            Event::Heard { slot, bytes } => {
                if let Some(s) = self.slots.get_mut(slot).and_then(Option::as_mut) {
                    s.heard = now;
                    s.received = bytes;
                }
            }
            Event::Applied {
                slot,
                ckpt,
                full,
                pages,
                bytes,
                took,
            } => self.on_applied(now, slot, ckpt, full, pages, bytes, took, &mut fx),
            Event::Closed {
                slot,
                why,
                frame_error,
            } => self.on_closed(now, slot, &why, frame_error, &mut fx),
            Event::HostRecorded {
                purpose,
                state,
                error,
            } => self.host_recorded(now, purpose, state, error, &mut fx),
            Event::ReplicaActivated { error } => self.replica_activated(error, &mut fx),
            Event::Datagram { from, env, msg } => self.on_datagram(now, from, env, msg, &mut fx),
            Event::PingDone { ok } => self.ping_done(now, ok, &mut fx),
            Event::Operator { conn, cmd } => self.operator_command(now, conn, cmd, &mut fx),
            Event::DiskFailed {
                slot,
                ckpt,
                error,
                out_of_space,
            } => self.disk_failed(now, slot, ckpt, &error, out_of_space, &mut fx),
            Event::DiskForked { error } => self.disk_forked(error, &mut fx),
        }
        self.flush_operator(now, &mut fx);
        self.check_invariants();
        fx
    }

    /// The next time a `Tick` has something to do.
    pub fn next_deadline(&self, now: Nanos) -> Option<Nanos> {
        let handshakes = self
            .slots
            .iter()
            .flatten()
            .filter(|s| s.stage != Stage::Live)
            .map(|s| {
                s.accepted
                    .plus(slots::HANDSHAKE_DEADLINE)
                    .plus(Duration::from_nanos(1))
            });
        let operator = self.operator.as_ref().map(|o| o.deadline);
        let failover = self
            .failover
            .as_ref()
            .zip(self.cfg.failover.as_ref())
            .and_then(|(f, c)| f.next_deadline(now, c));
        handshakes
            .chain(operator)
            .chain(failover)
            .min()
            .map(|t| t.max(now))
    }

    /// This node's activation epoch as peers should see it.
    pub fn current_epoch(&self) -> Epoch {
        match &self.failover {
            Some(f) => f.authority.as_ref().map_or(f.core.epoch(), |a| a.epoch()),
            None => self.epoch,
        }
    }

    /// A warning that a peer could repeat at will, rate-limited per cause.
    fn noisy(&mut self, cause: Noise, now: Nanos, line: impl FnOnce() -> String) {
        if let Some(suppressed) = self.noise.allow(cause as usize, now) {
            log::warn!("{}{}", line(), LogLimiter::<NOISE>::note(suppressed));
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_applied(
        &mut self,
        now: Nanos,
        i: usize,
        ckpt: u64,
        full: bool,
        pages: u64,
        bytes: u64,
        took: Duration,
        fx: &mut Effects,
    ) {
        self.applied = Some(ckpt);
        // Applying takes a while for a large checkpoint; its primary was not silent meanwhile
        // (the event comes when applying ended).
        if let Some(s) = self.slots[i].as_mut() {
            s.heard = now;
        }
        let st = &mut self.stats;
        st.apply.record(took);
        st.applied += 1;
        st.window.0 += 1;
        st.bytes += bytes;
        st.window.1 += bytes;
        st.pages += pages;
        st.last_applied_at = Some(now);
        if full {
            st.full_syncs += 1;
            log::info!(
                "checkpoint {ckpt}: full synchronisation applied ({pages} pages) in {} ms",
                ms(took)
            );
        }
        if self.failover.is_some() {
            // The decision core decides whether this checkpoint may be acknowledged.
            let epoch = self.slots[i].as_ref().map_or(Epoch::FIRST, |s| s.epoch);
            self.applied_under_failover(now, ckpt, full, epoch, fx);
            return;
        }
        push(
            fx,
            Effect::Ack {
                ckpt,
                epoch: self.epoch,
            },
        );
    }

    /// Become active in `epoch` from the replica's last checkpoint: the host state says so on
    /// disk first (README: the restart matrix), then every connection closes and the replica
    /// serves.
    fn activate(&mut self, by: &str, epoch: Epoch, fx: &mut Effects) {
        let Some(ckpt) = self.applied else {
            log::error!(
                "not activated ({by}): no usable replica (nothing applied, or its disk failed)"
            );
            return;
        };
        if self.activated.is_some() || self.activating.is_some() {
            return;
        }
        self.activating = Some(Activation {
            ckpt,
            epoch,
            by: by.to_string(),
        });
        if self.cfg.disk_size > 0 {
            // The disk first: its lineage forks at `ckpt`, durably, before the host state says
            // primary (a disk that cannot fork activates nothing).
            push(fx, Effect::ForkDisk { ckpt });
            return;
        }
        self.record_activation(fx);
    }

    /// The activation's host state: on disk before the replica serves.
    fn record_activation(&mut self, fx: &mut Effects) {
        let Some(a) = self.activating.as_ref() else {
            return;
        };
        let (ckpt, epoch) = (a.ckpt, a.epoch);
        let state = NodeState {
            epoch,
            role: NodeRole::Primary,
            checkpoint: self.host.checkpoint.max(ckpt),
            ..self.host
        };
        push(
            fx,
            Effect::RecordHost {
                state,
                purpose: RecordFor::Activation,
            },
        );
    }

    fn host_recorded(
        &mut self,
        now: Nanos,
        purpose: RecordFor,
        state: NodeState,
        error: Option<String>,
        fx: &mut Effects,
    ) {
        if error.is_none() {
            self.host = state;
        }
        match purpose {
            RecordFor::Epoch => {
                if let Some(e) = error {
                    log::error!("cannot record epoch {} in the host state: {e}", state.epoch);
                }
            }
            RecordFor::Activation => {
                let Some(a) = self.activating.take() else {
                    return;
                };
                if let Some(e) = error {
                    log::error!("activation failed: not activated: {e}");
                    self.operator_answer(format!("error: activation failed: not activated: {e}\n"));
                    return;
                }
                for i in 0..SLOTS {
                    self.close(i, "standby activated", fx);
                }
                self.activated = Some(a.ckpt);
                self.epoch = a.epoch;
                push(
                    fx,
                    Effect::Activate {
                        ckpt: a.ckpt,
                        epoch: a.epoch,
                        by: a.by,
                    },
                );
            }
            RecordFor::Maintenance => {
                let Some((conn, on)) = self.maintenance_for.take() else {
                    return;
                };
                let text = match error {
                    Some(e) => format!("error: cannot record maintenance mode: {e}\n"),
                    None => self.maintenance_recorded(now, on, fx),
                };
                push(fx, Effect::Answer { conn, text });
            }
        }
    }

    fn replica_activated(&mut self, error: Option<String>, fx: &mut Effects) {
        let Some(ckpt) = self.activated else {
            return;
        };
        if let Some(e) = error {
            log::error!("activation failed: {e}");
            self.operator_answer(format!("error: activation failed: {e}\n"));
            return;
        }
        if self.failover.is_none() {
            self.operator_answer(format!(
                "activated: the replica at checkpoint {ckpt} is now serving on {}\n",
                self.cfg.service
            ));
        }
        let epoch = self.current_epoch();
        push(fx, Effect::OnActivate { epoch, ckpt });
        if self.cfg.promote {
            let forced = self
                .failover
                .as_ref()
                .and_then(|f| f.authority.as_ref())
                .is_some_and(PrimaryAuthority::operator_authority);
            push(
                fx,
                Effect::HandOver {
                    epoch,
                    ckpt,
                    forced,
                },
            );
        }
    }

    /// `activate [--force]`, `switchover`, `maintenance on|off`, `force-stale`.
    fn operator_command(&mut self, now: Nanos, conn: usize, cmd: OperatorCmd, fx: &mut Effects) {
        let text = match cmd {
            OperatorCmd::Maintenance(on) => match self.failover.is_some() {
                false => "error: automatic failover is off (failover = false): there are no automatic takeovers to pause\n".into(),
                true => {
                    self.maintenance_for = Some((conn, on));
                    push(
                        fx,
                        Effect::RecordHost {
                            state: NodeState {
                                maintenance: on,
                                ..self.host
                            },
                            purpose: RecordFor::Maintenance,
                        },
                    );
                    return;
                }
            },
            OperatorCmd::ForceStale => match self.failover.is_some() {
                false => "error: automatic failover is off (failover = false); use activate\n".into(),
                true => {
                    log::warn!("operator forces activation of a stale replica (rule 5) if the witnesses vote for it");
                    self.decide(now, hsb_common::decision::standby::Input::OperatorForce, fx);
                    "forced: a stale replica may now be activated if a quorum votes for a takeover\n".into()
                }
            },
            OperatorCmd::Activate { force } => match self.ask_operator(now, conn, false, force, fx) {
                Some(t) => t,
                None => return,
            },
            OperatorCmd::Switchover => match self.ask_operator(now, conn, true, false, fx) {
                Some(t) => t,
                None => return,
            },
        };
        push(fx, Effect::Answer { conn, text });
    }

    /// `activate [--force]` and `switchover`: with failover on, a decision of the standby core
    /// (rule 9), answered when it ends; with failover off, the operator is the failover
    /// decision: activate at once (a switchover needs failover on).
    fn ask_operator(
        &mut self,
        now: Nanos,
        conn: usize,
        switchover: bool,
        force: bool,
        fx: &mut Effects,
    ) -> Option<String> {
        if let Some(n) = self.activated {
            return Some(format!("already active since checkpoint {n}\n"));
        }
        let Some(applied) = self.applied else {
            return Some("error: nothing to activate: no checkpoint has been applied yet\n".into());
        };
        if self.operator.is_some() {
            return Some("error: an operator's request is already under way; see status\n".into());
        }
        if self.failover.is_none() {
            if switchover {
                return Some("error: a planned switchover needs failover = true (the primary fences on the standby's request); use activate after stopping the primary\n".into());
            }
            log::warn!("operator activation (failover off: no witnesses to ask)");
            self.start_operator(conn, now, fx);
            let _ = applied;
            let epoch = Epoch(self.epoch.0 + 1);
            self.activate("operator", epoch, fx);
            return None;
        }
        self.failover_operator(now, conn, switchover, force, fx);
        None
    }

    /// The operator's request ends with `text` (sent at the end of this step).
    fn operator_answer(&mut self, text: String) {
        if let Some(o) = self.operator.as_mut() {
            o.answer = Some(text);
        }
    }

    /// Answer the operator when the decision ended, or "in progress" after waiting long enough.
    fn flush_operator(&mut self, now: Nanos, fx: &mut Effects) {
        let Some(o) = self.operator.as_mut() else {
            return;
        };
        let text = match o.answer.take() {
            Some(t) => t,
            None if now >= o.deadline => {
                "in progress: the decision is still under way (see status: decision_state, last_decision)\n".to_string()
            }
            None => return,
        };
        let conn = o.conn;
        self.operator = None;
        push(fx, Effect::Answer { conn, text });
    }
}

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;
