//! hsb-standby in the simulator: the real [`StandbyNode`], fed events and carrying out its
//! effects as `standby/src/daemon.rs` and `conns.rs` do (each effect's answer stepped at once; a
//! refused connection closed once its refusal is written), over the simulated network. The
//! replica is the model guest's state carried by the last checkpoint applied, and a session's
//! checkpoints must follow the real receiver's order (a full synchronisation first, then no
//! gap).

use std::time::Duration;

use hsb_common::datagram::{Dest, Sender};
use hsb_common::decision::standby::State;
use hsb_common::frame::{FrameError, Kind};
use hsb_common::msg;
use hsb_common::node_state::NodeState;
use hsb_common::time::Nanos;
use hsb_common::wire::Dgram;
use hsb_standby::node::{Effect, Event, StandbyNode, SLOTS};
use hsb_standby::slots::Stage;

use super::host::{woken, Endpoint, Exec, Me};
use super::net::{Ep, Msg};
use super::setup::{host_addr, node_name, HB_PORT, PAGES};
use super::tcp::Seg;
use super::world::{Activation, Shared};

/// hsb-standby's shell around its node.
pub(crate) struct StandbySide {
    pub node: StandbyNode,
    ep: Endpoint,
    /// The connection in each slot.
    wires: [Option<u64>; SLOTS],
    /// A connection just accepted, until the node gives it a slot.
    incoming: Option<u64>,
    /// The replica: its last checkpoint and the guest's state in it.
    replica: Option<(u64, u64)>,
    /// The live session's last checkpoint applied (none: a full synchronisation comes first).
    session_base: Option<u64>,
    /// The ping node's connect under way.
    ping: Option<u64>,
    /// Slots whose refusal is written: closed after this turn.
    closing: Vec<usize>,
    /// An exec asked for (the hand-over).
    pub exec: Option<Exec>,
    /// The loop sleeps until this (without failover, until I/O).
    wake: Option<Nanos>,
    /// Bytes read on each slot's connection.
    received: [u64; SLOTS],
    /// Where the primary's heartbeats come from (its address and who it is): the heartbeat
    /// replies go back the same way.
    heartbeat_from: Option<(std::net::SocketAddr, Sender)>,
}

impl StandbySide {
    pub fn new(node: StandbyNode, ep: Endpoint) -> StandbySide {
        StandbySide {
            node,
            ep,
            wires: [None; SLOTS],
            incoming: None,
            replica: None,
            session_base: None,
            ping: None,
            closing: Vec::new(),
            exec: None,
            wake: Some(Nanos::ZERO),
            received: [0; SLOTS],
            heartbeat_from: None,
        }
    }

    /// The node's start (maintenance mode kept from the host state).
    pub fn start(&mut self, me: Me, disk: &mut Option<NodeState>, sh: &mut Shared) {
        let fx = self.node.start(me.local);
        self.carry_out_all(me, sh, disk, fx);
        self.flush_closing(me, sh, disk);
    }

    /// One event, then the connections whose refusal is written are closed.
    fn run(&mut self, me: Me, sh: &mut Shared, disk: &mut Option<NodeState>, ev: Event) {
        self.feed(me, sh, disk, ev);
        self.flush_closing(me, sh, disk);
    }

    fn flush_closing(&mut self, me: Me, sh: &mut Shared, disk: &mut Option<NodeState>) {
        while let Some(slot) = self.closing.pop() {
            if let Some(c) = self.wires[slot].take() {
                let now = sh.now();
                sh.conns.close(&mut sh.net, now, c, 1);
                self.feed(
                    me,
                    sh,
                    disk,
                    Event::Closed {
                        slot,
                        why: "refused".into(),
                        frame_error: None,
                    },
                );
            }
        }
    }

    fn feed(&mut self, me: Me, sh: &mut Shared, disk: &mut Option<NodeState>, ev: Event) {
        let fx = self.node.step(me.local, ev);
        self.carry_out_all(me, sh, disk, fx);
    }

    fn carry_out_all(
        &mut self,
        me: Me,
        sh: &mut Shared,
        disk: &mut Option<NodeState>,
        fx: hsb_standby::node::Effects,
    ) {
        for e in fx {
            if let Some(answer) = self.carry_out(me, sh, disk, e) {
                self.feed(me, sh, disk, answer);
            }
        }
    }

    fn send(&mut self, sh: &mut Shared, slot: usize, seg: Seg) {
        if let Some(c) = self.wires.get(slot).copied().flatten() {
            let now = sh.now();
            sh.conns.send(&mut sh.net, now, c, 1, seg);
        }
    }

    fn carry_out(
        &mut self,
        me: Me,
        sh: &mut Shared,
        disk: &mut Option<NodeState>,
        e: Effect,
    ) -> Option<Event> {
        let now = sh.now();
        match e {
            Effect::Take { slot } => {
                if let Some(w) = self.wires.get_mut(slot) {
                    *w = self.incoming.take();
                    self.received[slot] = 0;
                }
            }
            Effect::Close { slot, .. } => {
                if let Some(c) = self.wires.get_mut(slot).and_then(Option::take) {
                    sh.conns.close(&mut sh.net, now, c, 1);
                }
            }
            Effect::AnswerHello {
                slot,
                epoch,
                last_ckpt,
                refuse,
            } => {
                let back = Seg::HelloBack {
                    node: node_name(me.host).to_string(),
                    epoch: epoch.0,
                    last_ckpt,
                };
                self.send(sh, slot, back);
                if let Some(reason) = refuse {
                    self.refuse(sh, slot, &reason);
                }
            }
            Effect::Refuse { slot, reason } => self.refuse(sh, slot, &reason),
            Effect::GoLive { .. } => self.session_base = None,
            Effect::Discard => {}
            Effect::Ack { ckpt, epoch } => {
                if let Some(slot) = self.node.current() {
                    self.send(sh, slot, Seg::Ack { ckpt, epoch });
                }
            }
            Effect::RecordHost { state, purpose } => {
                *disk = Some(state);
                return Some(Event::HostRecorded {
                    purpose,
                    state,
                    error: None,
                });
            }
            Effect::Activate { ckpt, epoch, .. } => {
                let from_state = self.replica.map_or(0, |r| r.1);
                debug_assert_eq!(self.replica.map(|r| r.0), Some(ckpt));
                let rule = sh
                    .facts
                    .decisions
                    .iter()
                    .rev()
                    .find(|d| d.1 == me.host)
                    .map(|d| d.2.clone())
                    .unwrap_or_default();
                sh.facts.activations.push(Activation {
                    ms: sh.ms,
                    node: me.host,
                    epoch,
                    from_state,
                    rule,
                });
                return Some(Event::ReplicaActivated { error: None });
            }
            Effect::OnActivate { .. } => {
                // `on_activate` claims the service address.
                sh.vip = Some(me.host);
            }
            Effect::HandOver {
                epoch,
                ckpt,
                forced,
            } => {
                self.exec = Some(Exec::Promote {
                    epoch,
                    ckpt,
                    forced,
                    state: self.replica.map_or(0, |r| r.1),
                })
            }
            Effect::FenceReplica | Effect::UnfenceReplica => {}
            Effect::HeartbeatReply { msg } => {
                if let Some((to, who)) = self.heartbeat_from {
                    let from = host_addr(me.host, HB_PORT);
                    self.ep.send(sh, from, to, Some(Dest::node(who)), &msg);
                }
            }
            Effect::Talk(t) => self.ep.talk(sh, me.host, t),
            Effect::SetRole(role) => self.ep.set_role(role),
            Effect::Ping => {
                let id = sh.next_id();
                self.ping = Some(id);
                sh.net
                    .send(now, Ep::Node(me.host), Ep::Ping, Msg::Ping { id });
            }
            Effect::CancelPing => self.ping = None,
            Effect::Answer { .. } | Effect::Defer { .. } => {}
            Effect::ForkDisk { .. } => return Some(Event::DiskForked { error: None }),
        }
        None
    }

    /// Refuse the session on `slot` under its keys; its connection closes once that is written.
    fn refuse(&mut self, sh: &mut Shared, slot: usize, reason: &str) {
        let reason = msg::reason(reason).to_string();
        self.send(sh, slot, Seg::Refuse { reason });
        self.closing.push(slot);
    }

    /// A connection was accepted.
    pub fn on_incoming(&mut self, me: Me, sh: &mut Shared, disk: &mut Option<NodeState>, c: u64) {
        self.incoming = Some(c);
        let peer = host_addr(1 - me.host, 40_000 + (c % 20_000) as u16);
        self.run(me, sh, disk, Event::Incoming { peer });
        if let Some(c) = self.incoming.take() {
            // No slot: closed at once.
            let now = sh.now();
            sh.conns.close(&mut sh.net, now, c, 1);
        }
    }

    /// A segment of an open end of this process.
    pub fn on_segment(
        &mut self,
        me: Me,
        sh: &mut Shared,
        disk: &mut Option<NodeState>,
        conn: u64,
        seg: Seg,
    ) {
        let Some(slot) = self.wires.iter().position(|w| *w == Some(conn)) else {
            return;
        };
        if let Seg::Fin = seg {
            self.wires[slot] = None;
            let ev = Event::Closed {
                slot,
                why: "closed by the primary".into(),
                frame_error: None,
            };
            return self.run(me, sh, disk, ev);
        }
        let stage = self.node.slot(slot).map(|s| s.stage);
        if stage == Some(Stage::Live) {
            self.received[slot] = self.received[slot].wrapping_add(seg.bytes());
            let bytes = self.received[slot];
            self.run(me, sh, disk, Event::Heard { slot, bytes });
        }
        let ev = match (stage, seg) {
            (None | Some(Stage::Closing), _) | (Some(Stage::Live), Seg::Part) => return,
            (Some(Stage::AwaitHello), Seg::Hello(hello)) => Event::Hello {
                slot,
                hello: *hello,
            },
            (Some(Stage::Admitted), Seg::Confirm) => Event::Confirmed { slot },
            (Some(Stage::Live), Seg::Checkpoint { ckpt, full, state }) => {
                match self.receive(slot, ckpt, full) {
                    Ok(()) => {
                        self.replica = Some((ckpt, state));
                        self.session_base = Some(ckpt);
                        let pages = if full { PAGES } else { 1 };
                        Event::Applied {
                            slot,
                            ckpt,
                            full,
                            pages,
                            bytes: pages * 4096,
                            took: Duration::ZERO,
                        }
                    }
                    Err(why) => return self.bad_frame(me, sh, disk, slot, Kind::Begin, why),
                }
            }
            (Some(_), other) => {
                let why = match other {
                    Seg::Hello(_) => "a Hello out of turn",
                    _ => "a frame out of turn",
                };
                return self.bad_frame(me, sh, disk, slot, Kind::Hello, why);
            }
        };
        self.run(me, sh, disk, ev);
    }

    /// The receiver's order: a full synchronisation first in a session, then no gap.
    fn receive(&self, slot: usize, ckpt: u64, full: bool) -> Result<(), &'static str> {
        if self.node.current() != Some(slot) {
            return Err("not the current session");
        }
        match (full, self.session_base) {
            (false, None) => Err("incremental checkpoint before a full sync"),
            (false, Some(base)) if ckpt != base + 1 => Err("checkpoint number gap"),
            _ => Ok(()),
        }
    }

    fn bad_frame(
        &mut self,
        me: Me,
        sh: &mut Shared,
        disk: &mut Option<NodeState>,
        slot: usize,
        kind: Kind,
        why: &'static str,
    ) {
        sh.note(me.host, || format!("replication: bad frame: {why}"));
        if let Some(c) = self.wires[slot].take() {
            let now = sh.now();
            sh.conns.close(&mut sh.net, now, c, 1);
        }
        let e = FrameError::Body { kind, why };
        let ev = Event::Closed {
            slot,
            why: format!("bad frame: {e}"),
            frame_error: Some(e),
        };
        self.run(me, sh, disk, ev);
    }

    /// The primary's host reset the connection.
    pub fn on_reset(&mut self, me: Me, sh: &mut Shared, disk: &mut Option<NodeState>, conn: u64) {
        let Some(slot) = self.wires.iter().position(|w| *w == Some(conn)) else {
            return;
        };
        self.wires[slot] = None;
        let ev = Event::Closed {
            slot,
            why: "read failed: connection reset by peer".into(),
            frame_error: None,
        };
        self.run(me, sh, disk, ev);
    }

    /// A datagram for one of this daemon's sockets (`to`).
    pub fn on_dgram(
        &mut self,
        me: Me,
        sh: &mut Shared,
        disk: &mut Option<NodeState>,
        (from, to): (std::net::SocketAddr, std::net::SocketAddr),
        bytes: &[u8],
    ) {
        if let Some((env, msg)) = self.ep.open(bytes) {
            if to.port() == HB_PORT && matches!(msg, Dgram::Heartbeat { .. }) {
                self.heartbeat_from = Some((from, env.from));
            }
            self.run(me, sh, disk, Event::Datagram { from, env, msg });
        }
    }

    /// The ping node accepted the connect.
    pub fn on_pong(&mut self, me: Me, sh: &mut Shared, disk: &mut Option<NodeState>, id: u64) {
        if self.ping == Some(id) {
            self.ping = None;
            self.run(me, sh, disk, Event::PingDone { ok: true });
        }
    }

    /// The loop's turn: a tick after I/O or once the deadline it slept until has come; then
    /// it sleeps until the node's next deadline.
    pub fn tick(&mut self, me: Me, sh: &mut Shared, disk: &mut Option<NodeState>, io: bool) {
        let due = self.wake.and_then(|w| woken(me.local, w));
        if io || due.is_some() {
            let me = Me {
                local: due.unwrap_or(me.local),
                ..me
            };
            self.run(me, sh, disk, Event::Tick);
            self.wake = self.node.next_deadline(me.local);
        }
    }

    /// A following standby that applied a checkpoint within `ms`.
    pub fn replicating(&self, local: Nanos, ms: u64) -> bool {
        self.node.activated().is_none()
            && self
                .node
                .failover_view(local)
                .is_some_and(|f| f.state == State::Following)
            && self
                .node
                .stats()
                .last_applied_at
                .is_some_and(|t| local.since(t) <= Duration::from_millis(ms))
    }
}
