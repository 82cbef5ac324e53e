//! hsb-primary in the simulator: the real [`PrimaryNode`], fed events and carrying out its
//! effects as `primary/src/daemon.rs` does (each effect's answer stepped at once, a staged
//! checkpoint written after the step), over the simulated network.
//!
//! The domain is a model: a counter (the guest's history length) that grows by one output per
//! checkpoint period while the domain runs, each output held under the real output commit
//! ([`OutputCommit`]) for the checkpoint open when it was written and released only by the
//! node's [`Effect::Release`]. The application's answers to the witnesses' probes are output too.
//! A checkpoint carries the counter to the standby.

use std::time::Duration;

use hsb_common::datagram::node_sender_id;
use hsb_common::msg::{self, DiskHello, Hello, Role};
use hsb_common::node_state::NodeState;
use hsb_common::time::Nanos;
use hsb_domain::output::OutputCommit;
use hsb_primary::node::{Effect, Event, PrimaryNode};

use super::host::{woken, Endpoint, Exec, Me};
use super::net::{Ep, Msg};
use super::setup::{node_name, PAGES};
use super::tcp::{End, Seg};
use super::world::Shared;

/// The model domain, as the daemon's backend would have it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dom {
    Running,
    Suspended,
    Paused,
}

/// Whose output is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    /// The guest's output number `n` (its history length once written).
    Out(u64),
    /// The answer to a witness's application probe.
    Probe(Ep, u64),
}

/// hsb-primary's shell around its node.
pub(crate) struct PrimarySide {
    pub node: PrimaryNode,
    ep: Endpoint,
    output: OutputCommit<Client>,
    dom: Dom,
    /// The guest's state: its history length.
    state: u64,
    /// The replication connection, and whether it is connected.
    conn: Option<(u64, bool)>,
    /// A checkpoint captured and staged, written after the step.
    staged: Option<Seg>,
    /// An exec asked for (a rejoin).
    pub exec: Option<Exec>,
    incarnation: u64,
    /// The loop sleeps until this.
    wake: Nanos,
    /// A checkpoint being written is all written at this simulated time.
    sent_at: Option<u64>,
    /// Bytes of the checkpoint last staged (for `Sent`).
    staged_bytes: u64,
}

impl PrimarySide {
    pub fn new(
        node: PrimaryNode,
        ep: Endpoint,
        first_ckpt: u64,
        state: u64,
        incarnation: u64,
    ) -> PrimarySide {
        PrimarySide {
            node,
            ep,
            output: OutputCommit::new(1 << 30, first_ckpt),
            dom: Dom::Running,
            state,
            conn: None,
            staged: None,
            staged_bytes: 0,
            exec: None,
            incarnation,
            wake: Nanos::ZERO,
            sent_at: None,
        }
    }

    /// Step the node and carry out its effects in order, each answer stepped at once; a
    /// checkpoint staged meanwhile is written, then `Sent`.
    /// The staged checkpoint is all written.
    fn sent(&mut self, me: Me, sh: &mut Shared, disk: &mut Option<NodeState>) {
        let bytes = self.staged_bytes;
        self.feed(me, sh, disk, Event::Sent { bytes });
    }

    fn feed(&mut self, me: Me, sh: &mut Shared, disk: &mut Option<NodeState>, ev: Event) {
        for e in self.node.step(me.local, ev) {
            if let Some(answer) = self.carry_out(me, sh, disk, e) {
                self.feed(me, sh, disk, answer);
            }
        }
        if let Some(seg) = self.staged.take() {
            if let Some((c, _)) = self.conn {
                let now = sh.now();
                let taken = sh.conns.send(&mut sh.net, now, c, 0, seg);
                if taken <= now {
                    self.sent(me, sh, disk);
                } else {
                    // A shaped link: the socket takes the rest as the link carries it.
                    self.sent_at = Some(taken);
                }
            }
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
            Effect::Connect => {
                let end = End {
                    host: me.host,
                    boot: me.boot,
                    proc: me.proc,
                    open: true,
                };
                let c = sh.conns.connect(&mut sh.net, now, end, 1 - me.host);
                self.conn = Some((c, false));
            }
            Effect::SendHello { epoch, last_ckpt } => {
                let mut nonce = [0u8; 16];
                nonce[..8].copy_from_slice(&sh.rng.next_u64().to_le_bytes());
                nonce[8..].copy_from_slice(&sh.rng.next_u64().to_le_bytes());
                let hello = Hello {
                    role: Role::Primary,
                    node: msg::node_name(node_name(me.host)),
                    epoch,
                    nonce,
                    domain_pages: PAGES,
                    last_ckpt,
                    incarnation: self.incarnation,
                    disk: DiskHello::default(),
                };
                self.send(sh, Seg::Hello(Box::new(hello)));
            }
            Effect::Disconnect { why, .. } => {
                if let Some((c, _)) = self.conn.take() {
                    sh.conns.close(&mut sh.net, now, c, 0);
                }
                self.staged = None;
                self.sent_at = None;
                sh.note(me.host, || format!("replication ended: {why}"));
            }
            Effect::Reserve(st) => {
                *disk = Some(st);
                return Some(Event::Reserved {
                    ok: true,
                    upto: st.checkpoint,
                });
            }
            Effect::SaveState(st) => *disk = Some(st),
            Effect::PrecopyStep { .. } => {
                return Some(Event::PrecopyStepped {
                    precopying: false,
                    done: true,
                })
            }
            Effect::Suspend => {
                self.dom = Dom::Suspended;
                return Some(Event::Suspended { waited: None });
            }
            Effect::Resume | Effect::Unfence => self.dom = Dom::Running,
            Effect::Capture {
                ckpt, full, resume, ..
            } => {
                self.output.close(ckpt);
                self.dom = if resume { Dom::Running } else { Dom::Suspended };
                self.staged = Some(Seg::Checkpoint {
                    ckpt,
                    full,
                    state: self.state,
                });
                let pages = if full { PAGES } else { 1 };
                self.staged_bytes = pages * 4096;
                return Some(Event::Captured {
                    ckpt,
                    pages,
                    bytes: pages * 4096,
                    pause: Duration::ZERO,
                    recopied: None,
                    precopying: false,
                });
            }
            Effect::Fence => {
                self.dom = Dom::Suspended;
                return Some(Event::FenceDone {
                    suspended: true,
                    hard_paused: false,
                });
            }
            Effect::PauseOutright => {
                self.dom = Dom::Paused;
                return Some(Event::PausedOutright { ok: true });
            }
            Effect::Release { upto } => self.release(me, sh, upto),
            Effect::Rebase { next } => self.output.rebase(next),
            Effect::Talk(t) => self.ep.talk(sh, me.host, t),
            Effect::OnFence(_) => {
                // `on_fence` gives up the service address.
                if sh.vip == Some(me.host) {
                    sh.vip = None;
                }
            }
            Effect::Rejoin => self.exec = Some(Exec::Rejoin),
            Effect::ResyncStep { .. } => {
                return Some(Event::ResyncStepped {
                    ready: true,
                    copying: false,
                    error: None,
                })
            }
            Effect::PlanDisk { .. } | Effect::DiskAcked { .. } | Effect::DiskStop => {}
        }
        None
    }

    fn send(&mut self, sh: &mut Shared, seg: Seg) {
        if let Some((c, _)) = self.conn {
            let now = sh.now();
            sh.conns.send(&mut sh.net, now, c, 0, seg);
        }
    }

    /// Output acknowledged up to `upto` leaves: the client sees the guest's, a witness gets its
    /// probe's answer.
    fn release(&mut self, me: Me, sh: &mut Shared, upto: u64) {
        let mut out = Vec::new();
        self.output.release(upto, |h| out.push(h.client));
        let epoch = self.node.epoch().0;
        let now = sh.now();
        for c in out {
            match c {
                Client::Out(n) => {
                    sh.facts.released.insert((epoch, n));
                }
                Client::Probe(w, id) => {
                    sh.net
                        .send(now, Ep::Node(me.host), w, Msg::Reply { id, refused: false });
                }
            }
        }
    }

    /// The guest writes its next output (if it runs): true if it did.
    pub fn guest_writes(&mut self, me: Me) -> bool {
        if self.dom != Dom::Running || me.app_hung {
            return false;
        }
        self.state += 1;
        self.output.hold(Client::Out(self.state), b"o");
        true
    }

    /// A client's request (a witness's application probe): answered through output commit by
    /// a running application, not at all by a stopped or hung one.
    pub fn on_request(&mut self, me: Me, from: Ep, id: u64) {
        if self.dom != Dom::Running || me.app_hung || self.node.is_fenced() {
            return;
        }
        self.output.hold(Client::Probe(from, id), b"p");
    }

    /// A datagram for this daemon's socket.
    pub fn on_dgram(
        &mut self,
        me: Me,
        sh: &mut Shared,
        disk: &mut Option<NodeState>,
        from: std::net::SocketAddr,
        bytes: &[u8],
    ) {
        if let Some((env, msg)) = self.ep.open(bytes) {
            self.feed(me, sh, disk, Event::Datagram { from, env, msg });
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
        if self.conn.map(|c| c.0) != Some(conn) {
            return;
        }
        let ev = match seg {
            Seg::SynAck => {
                self.conn = Some((conn, true));
                Event::Connected
            }
            Seg::HelloBack {
                node,
                epoch,
                last_ckpt,
            } => {
                // The confirmation goes out before any checkpoint.
                self.send(sh, Seg::Confirm);
                sh.note(me.host, || {
                    format!(
                        "session with {node} open (its epoch {epoch}, last checkpoint {last_ckpt})"
                    )
                });
                Event::SessionOpened {
                    id: node_sender_id(&node),
                    node,
                    epoch,
                    last_ckpt,
                }
            }
            Seg::Ack { ckpt, epoch } => Event::Ack { ckpt, epoch },
            Seg::Refuse { reason } => Event::Refused { reason },
            Seg::Fin => Event::Lost {
                why: "connection closed by the standby".into(),
                frame_error: None,
            },
            other => Event::Lost {
                why: format!("bad frame from the standby: {other:?}"),
                frame_error: None,
            },
        };
        self.feed(me, sh, disk, ev);
    }

    /// The standby's host reset the connection.
    pub fn on_reset(&mut self, me: Me, sh: &mut Shared, disk: &mut Option<NodeState>, conn: u64) {
        let Some((c, connected)) = self.conn else {
            return;
        };
        if c != conn {
            return;
        }
        self.conn = None;
        let why = if connected {
            "read failed: connection reset by peer"
        } else {
            "connect failed: connection refused"
        };
        self.feed(
            me,
            sh,
            disk,
            Event::Lost {
                why: why.into(),
                frame_error: None,
            },
        );
    }

    /// The loop's turn: a tick after I/O or once the deadline it slept until has come; then
    /// it sleeps until the node's next deadline.
    pub fn tick(&mut self, me: Me, sh: &mut Shared, disk: &mut Option<NodeState>, io: bool) {
        let mut io = io;
        if self.sent_at.is_some_and(|t| t <= sh.now()) {
            // The socket was writable again: the rest of the checkpoint written.
            self.sent_at = None;
            io = true;
            self.sent(me, sh, disk);
        }
        let due = woken(me.local, self.wake);
        if io || due.is_some() {
            let me = Me {
                local: due.unwrap_or(me.local),
                ..me
            };
            self.feed(me, sh, disk, Event::Tick);
            self.wake = self.node.next_deadline(me.local);
        }
    }
}
