//! hsb-standby's shell: one mio loop that turns bytes into [`Event`]s for the node and carries
//! out its [`Effect`]s. It owns the sockets (the replication listener and connections in
//! `conns.rs`, the witness and heartbeat endpoints, the control socket, the activated model's
//! service, the ping node's connection), the replica (and its disk, `disk.rs`) and the
//! checkpoint receiver, the host state file, the decision log, hooks, the clock and the
//! signals; it decides nothing.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Interest, Poll, Registry, Token};

use hsb_common::datagram::{Dest, Sender};
use hsb_common::decision::Epoch;
use hsb_common::key::ClusterKey;
use hsb_common::kit::decisions::Decisions;
use hsb_common::kit::endpoint::Endpoint;
use hsb_common::kit::hooks::{HookEnd, Hooks};
use hsb_common::kit::shell::{self, Surface};
use hsb_common::node_state::NodeState;
use hsb_common::signals::SignalHandler;
use hsb_common::time::{Clock, Nanos};
use hsb_domain::checkpoint::Receiver;
use hsb_domain::disk::export::{NbdExport, DISK_SYNC, NBD_CONN, NBD_LISTEN};
use hsb_domain::service::Service;
use hsb_domain::xen::Early;
use hsb_standby::config::{schema, Settings};
use hsb_standby::node::{Effect, Event, FailoverConfig, NodeConfig, StandbyNode, SLOTS};

use crate::conns::Wire;
use crate::replica::Rep;

pub(crate) const LISTENER: Token = Token(1);
pub(crate) const WITNESS_UDP: Token = Token(5);
pub(crate) const PING: Token = Token(6);
pub(crate) const HEARTBEAT_BASE: usize = 20;
/// Heartbeat links at most.
pub(crate) const HEARTBEAT_LINKS: usize = 4;
/// The loop sleeps until its earliest deadline, and never longer than this (a safety net:
/// everything periodic, the stats line and systemd's watchdog included, has its own).
const MAX_SLEEP: Duration = Duration::from_secs(5);
/// Replication connections: tokens `CONN_BASE..CONN_BASE + SLOTS`.
pub(crate) const CONN_BASE: usize = 100;
pub(crate) const SERVICE_BASE: usize = 1000;
// The token plan (`kit::shell`): this daemon's own tokens stay off the kit's and each other's.
const _: () = assert!(shell::own(LISTENER.0, 1) && shell::own(WITNESS_UDP.0, 1));
const _: () =
    assert!(shell::own(NBD_LISTEN.0, 1) && shell::own(NBD_CONN.0, 1) && shell::own(DISK_SYNC.0, 1));
const _: () = {
    assert!(
        LISTENER.0 < NBD_LISTEN.0
            && NBD_LISTEN.0 < NBD_CONN.0
            && NBD_CONN.0 < DISK_SYNC.0
            && DISK_SYNC.0 < WITNESS_UDP.0
    );
};
const _: () = assert!(shell::own(PING.0, 1) && shell::own(HEARTBEAT_BASE, HEARTBEAT_LINKS));
const _: () = assert!(shell::own(CONN_BASE, SLOTS) && CONN_BASE + SLOTS <= SERVICE_BASE);
const _: () = assert!(shell::own(
    SERVICE_BASE,
    hsb_standby::config::MAX_CLIENTS + 1
));
/// How long `on_activate` may run before it is killed with its process group.
const ON_ACTIVATE_TIMEOUT: Duration = Duration::from_secs(30);

/// The datagram side, when failover is on.
pub(crate) struct Failover {
    pub(crate) witness_udp: UdpSocket,
    pub(crate) heartbeat_udp: Vec<UdpSocket>,
    /// Where the primary's heartbeats come from, per heartbeat socket (its address and who it
    /// is): the heartbeat replies go back the same way.
    pub(crate) heartbeat_from: Vec<Option<(SocketAddr, Sender)>>,
    /// Heartbeat replies sent.
    pub(crate) replies: u64,
    pub(crate) ep: Endpoint,
    pub(crate) decisions: Decisions,
    pub(crate) ping: Option<TcpStream>,
}

/// The running standby.
pub struct Daemon {
    pub(crate) s: Settings,
    pub(crate) key: ClusterKey,
    pub(crate) clock: Clock,
    pub(crate) poll: Poll,
    pub(crate) listener: TcpListener,
    pub(crate) wires: Vec<Option<Wire>>,
    pub(crate) node: StandbyNode,
    pub(crate) receiver: Receiver,
    pub(crate) replica: Rep,
    /// The control socket, the metrics responder, systemd's notifications.
    pub(crate) surface: Surface,
    pub(crate) service: Option<Service>,
    pub(crate) failover: Option<Failover>,
    pub(crate) hooks: Hooks,
    /// Become hsb-primary at the end of this turn of the loop.
    pub(crate) hand_over: Option<(Epoch, u64, bool)>,
    pub(crate) requests: u64,
    pub(crate) next_stats: Nanos,
    /// The last accept stopped at its bound: go on at the next turn of the loop.
    pub(crate) more_to_accept: bool,
    /// A connection just accepted, while the node decides on a slot for it.
    pub(crate) incoming: Option<TcpStream>,
    /// What the activated replica's check of its disk against its memory found.
    pub(crate) disk_verified: String,
    /// The NBD export of the replica's disk (`disk.nbd_socket`): reads only until activation.
    pub(crate) nbd: Option<NbdExport>,
}

impl Daemon {
    /// Open the replica, bind the sockets, open the decision log.
    /// `None`: asked to stop (`signals`) while waiting for the Xen replica to exist.
    pub fn new(
        s: Settings,
        key: ClusterKey,
        host: NodeState,
        signals: &mut SignalHandler,
    ) -> io::Result<Option<Daemon>> {
        let mut poll = Poll::new()?;
        let clock = Clock::new();
        // A Xen replica's disk is served (reads only) before the replica is opened: its
        // `phy:/dev/nbdN` must exist before `xl restore -p`, so the replica may come after us.
        let (xen_disk, early_nbd) = match hsb_domain::xen::serve_disk_first(
            &mut poll,
            (s.xen.as_ref(), s.nbd_socket.as_deref(), None),
            hsb_domain::xen::Ready::Restored,
            &clock,
            signals,
            |cfg| crate::disk::open_replica_disk(cfg, "xen.disk"),
        )? {
            Early::Stop => return Ok(None),
            Early::NoDisk => (None, None),
            Early::Served(de) => (Some(de.0), Some(de.1)),
        };
        // The sockets are bound after that wait, so no event of theirs is lost to it: the
        // primary's connections are refused meanwhile (it retries), `status` finds no daemon.
        let mut listener = TcpListener::bind(s.listen).map_err(|e| {
            io::Error::new(e.kind(), format!("replication address {}: {e}", s.listen))
        })?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let surface = Surface::bind(
            (&s.control, s.control_group.as_ref()),
            s.metrics_listen,
            poll.registry(),
            clock.now(),
        )?;
        let mut replica =
            Rep::open(&s, xen_disk).map_err(|e| io::Error::other(format!("replica: {e}")))?;
        if let Some(d) = replica.disk() {
            d.use_ring(poll.registry(), DISK_SYNC);
        }
        let size = replica.disk_ref().map(|d| d.size());
        let nbd = NbdExport::for_disk(
            early_nbd,
            (s.nbd_socket.as_deref(), None),
            size,
            poll.registry(),
        )?;
        let (pfn_limit, max_pages) = replica.layout();
        let receiver = match &replica {
            Rep::Model(_) => Receiver::new(s.model_pages),
            Rep::Xen(_) => Receiver::for_layout(pfn_limit, max_pages, false),
        };
        let receiver = match s.disk_config() {
            Some(d) => receiver.with_disk(d.size, d.journal_max),
            None => receiver,
        };
        log::info!(
            "node {} ({}): replica of {} pages ({} MiB), staging {} MiB allocated; waiting for the primary on {}",
            s.node,
            replica.describe(),
            max_pages,
            (max_pages * 4096) >> 20,
            receiver.capacity() >> 20,
            s.listen
        );
        let now = clock.now();
        let mut query_base = [0u8; 4];
        hsb_common::rng::os_random(&mut query_base)?;
        let query_base = u32::from_le_bytes(query_base);
        let failover = if s.failover {
            Some(crate::sockets::open_failover(
                &s, &key, &poll, now, &host, query_base,
            )?)
        } else {
            None
        };
        let cfg = NodeConfig {
            node: s.node.clone(),
            domain_pages: pfn_limit,
            primary_allow: s.primary_allow.clone(),
            service: s.service,
            promote: !s.promote_config.as_os_str().is_empty(),
            failover: s.failover.then(|| FailoverConfig {
                decision: s.decision.clone(),
                witness_peers: s.witness_peers.clone(),
                primary_witness: s.primary_witness,
                ping_node: s.ping_node,
                query_base,
            }),
            disk_size: replica.disk_ref().map_or(0, |d| d.size()),
        };
        Ok(Some(Daemon {
            nbd,
            node: StandbyNode::new(cfg, host, now),
            next_stats: now.plus(s.stats_interval),
            failover,
            hooks: Hooks::new(),
            hand_over: None,
            requests: 0,
            more_to_accept: false,
            incoming: None,
            disk_verified: "not yet (at activation)".into(),
            replica,
            receiver,
            s,
            key,
            clock,
            poll,
            listener,
            wires: (0..SLOTS).map(|_| None).collect(),
            surface,
            service: None,
        }))
    }

    /// Run until a stop signal.
    pub fn run(mut self, signals: SignalHandler) -> io::Result<()> {
        let now = self.clock.now();
        let fx = self.node.start(now);
        self.carry_out_all(now, fx);
        shell::run(&mut self, signals)
    }

    /// Step the node with `ev` and carry out its effects in order; an effect's answer is
    /// stepped at once, before the next effect.
    pub(crate) fn feed(&mut self, now: Nanos, ev: Event) {
        let fx = self.node.step(now, ev);
        self.carry_out_all(now, fx);
    }

    fn carry_out_all(&mut self, now: Nanos, fx: hsb_standby::node::Effects) {
        for e in fx {
            if let Some(answer) = self.carry_out(now, e) {
                self.feed(now, answer);
            }
        }
    }

    fn carry_out(&mut self, now: Nanos, e: Effect) -> Option<Event> {
        match e {
            Effect::Take { slot } => return self.take(now, slot),
            Effect::Close { slot, why } => self.drop_wire(slot, &why),
            Effect::AnswerHello {
                slot,
                epoch,
                last_ckpt,
                refuse,
            } => return self.answer_hello(slot, epoch, last_ckpt, refuse),
            Effect::Refuse { slot, reason } => return self.refuse(slot, &reason),
            Effect::GoLive { slot } => {
                self.receiver.new_session();
                let dirty = self.wires[slot].as_mut().and_then(|w| {
                    w.go_live(self.s.frame_max);
                    w.take_disk_dirty()
                });
                self.disk_session(slot, dirty);
            }
            Effect::Discard => {
                if self.receiver.staging() {
                    log::warn!("replication: partial checkpoint discarded");
                }
                self.receiver.discard();
            }
            Effect::Ack { ckpt, epoch } => return self.send_ack(ckpt, epoch),
            Effect::RecordHost { state, purpose } => {
                let error = state.save(&self.s.state_file).err().map(|e| {
                    format!(
                        "cannot save state_file {}: {e}",
                        self.s.state_file.display()
                    )
                });
                return Some(Event::HostRecorded {
                    purpose,
                    state,
                    error,
                });
            }
            Effect::Activate { ckpt, epoch, by } => {
                let error = self.activate(now, ckpt, epoch, &by).err();
                return Some(Event::ReplicaActivated { error });
            }
            Effect::OnActivate { epoch, ckpt } => {
                if !self.s.on_activate.is_empty() {
                    let env = [
                        ("HSB_EPOCH", epoch.0.to_string()),
                        ("HSB_CHECKPOINT", ckpt.to_string()),
                        ("HSB_NODE", self.s.node.clone()),
                    ];
                    match self.hooks.spawn(
                        "on_activate",
                        &self.s.on_activate,
                        &env,
                        now,
                        ON_ACTIVATE_TIMEOUT,
                    ) {
                        Ok(pid) => log::info!(
                            "on_activate: started {} (pid {pid})",
                            self.s.on_activate.join(" ")
                        ),
                        Err(e) => log::error!("on_activate: cannot run it: {e}"),
                    }
                }
            }
            Effect::HandOver {
                epoch,
                ckpt,
                forced,
            } => self.hand_over = Some((epoch, ckpt, forced)),
            Effect::FenceReplica => self.replica.fence(),
            Effect::UnfenceReplica => self.replica.unfence(),
            Effect::Talk(t) => {
                if let Some(f) = self.failover.as_mut() {
                    t.carry_out(now, &mut f.ep, &f.witness_udp, &mut f.decisions);
                }
            }
            Effect::HeartbeatReply { msg } => {
                if let Some(f) = self.failover.as_mut() {
                    for (sock, from) in f.heartbeat_udp.iter().zip(&f.heartbeat_from) {
                        if let Some((to, who)) = *from {
                            f.ep.send(sock, &msg, to, Some(Dest::node(who)));
                            f.replies += 1;
                        }
                    }
                }
            }
            Effect::SetRole(role) => {
                if let Some(f) = self.failover.as_mut() {
                    f.ep.set_role(role);
                }
            }
            Effect::Ping => return self.start_ping(),
            Effect::CancelPing => {
                if let Some(mut st) = self.failover.as_mut().and_then(|f| f.ping.take()) {
                    let _ = self.poll.registry().deregister(&mut st);
                }
            }
            Effect::Answer { conn, text } => {
                self.surface.ctl.answer(self.poll.registry(), conn, &text)
            }
            Effect::Defer { conn, until } => self.surface.ctl.defer(conn, until),
            Effect::ForkDisk { ckpt } => return Some(self.fork_disk(ckpt)),
        }
        None
    }

    fn watch_hooks(&mut self, now: Nanos) {
        for f in self.hooks.poll(now) {
            match f.end {
                HookEnd::Done => log::info!("{}: done in {} ms", f.name, f.took.as_millis()),
                end => log::error!(
                    "{}: {end:?} after {} ms; clients may not reach this copy",
                    f.name,
                    f.took.as_millis()
                ),
            }
        }
    }
}

impl shell::Shell for Daemon {
    fn now(&mut self) -> Nanos {
        self.clock.now()
    }

    fn poll(&mut self) -> &mut Poll {
        &mut self.poll
    }

    fn surface(&mut self) -> (&mut Surface, &Registry) {
        (&mut self.surface, self.poll.registry())
    }

    /// When the loop must wake next: the earliest deadline (the node's, which has the decision
    /// core's: it is not ticked), never later than [`MAX_SLEEP`].
    fn deadline(&mut self, now: Nanos) -> Nanos {
        if self.more_to_accept || self.nbd.as_ref().is_some_and(NbdExport::has_more) {
            return now;
        }
        let mut d = now.plus(MAX_SLEEP);
        if self.s.stats_interval > Duration::ZERO {
            d = d.min(self.next_stats);
        }
        if self.node.activated().is_some() {
            // The model's workload runs in steps of the loop.
            d = d.min(now.plus(Duration::from_millis(25)));
        }
        for t in [
            self.node.next_deadline(now),
            self.surface.next_deadline(),
            self.hooks.next_deadline(),
        ]
        .into_iter()
        .flatten()
        {
            d = d.min(t);
        }
        d.max(now)
    }

    fn summary(&self, now: Nanos) -> String {
        crate::status::summary(self, now)
    }

    fn metrics_text(&self, now: Nanos) -> String {
        crate::metrics::text(self, now)
    }

    fn command(&mut self, now: Nanos, conn: usize, cmd: &str) {
        Daemon::command(self, now, conn, cmd);
    }

    /// An activated model replica's workload runs a step.
    fn before_events(&mut self, now: Nanos) {
        if self.node.activated().is_some() {
            self.replica.run(now);
        }
        self.drain_heartbeats(now);
    }

    fn on_token(&mut self, now: Nanos, ev: &mio::event::Event) {
        let t = ev.token();
        if t == LISTENER {
            self.accept(now);
        } else if (CONN_BASE..CONN_BASE + SLOTS).contains(&t.0) {
            self.on_conn(now, t.0 - CONN_BASE);
        } else if t == WITNESS_UDP
            || (HEARTBEAT_BASE..HEARTBEAT_BASE + HEARTBEAT_LINKS).contains(&t.0)
        {
            self.on_udp(now, t);
        } else if t == PING {
            self.on_ping(now);
        } else if t == NBD_LISTEN || t == NBD_CONN {
            if t == NBD_LISTEN {
                if let Some(n) = self.nbd.as_mut() {
                    n.accept(self.poll.registry());
                }
            }
            self.nbd_turn();
        } else if self.service.as_ref().is_some_and(|s| s.owns(t)) {
            self.on_service(now, t);
        }
    }

    /// The node's own turn; a hand-over to hsb-primary comes last (it replaces this process).
    fn after_events(&mut self, now: Nanos) {
        if self.more_to_accept {
            self.accept(now);
        }
        self.drain_heartbeats(now);
        self.feed(now, Event::Tick);
        self.nbd_turn();
        if let Some(f) = self.failover.as_mut() {
            f.decisions.recorder.flush();
        }
        self.bind_service();
        self.watch_hooks(now);
        if let Some((epoch, ckpt, forced)) = self.hand_over.take() {
            crate::handover::hand_over(self, now, epoch, ckpt, forced);
        }
        if shell::stats_due(now, self.s.stats_interval, &mut self.next_stats) {
            crate::status::log_stats(self, now);
        }
    }

    /// SIGTERM, SIGINT or SIGQUIT: stop. A standby that stops does not activate (its replica
    /// stays as it is, paused); an activated one stops serving. Its primary then runs on
    /// without a standby (unprotected under the witnesses' leases, with automatic failover).
    fn stop(&mut self, now: Nanos, signal: &'static str) {
        log::warn!(
            "{signal}: stopping: {}; the replica is not activated by this stop",
            match (self.node.activated(), self.receiver.applied()) {
                (Some(n), _) => format!(
                    "active since checkpoint {n} (the model's service stops with this process; a Xen guest runs on)"
                ),
                (None, Some(n)) => format!("replica at checkpoint {n}"),
                (None, None) => "no checkpoint applied".to_string(),
            }
        );
        self.persist_disk(signal);
        let log = self.failover.as_mut().map(|f| &mut f.decisions.recorder);
        self.surface.stopping(now, signal, log);
    }

    /// SIGHUP: reopen the decision log, reload the configuration, apply the keys
    /// [`Settings`] applies at run time (its `Reload`) and log
    /// every other changed key as waiting for a restart. A configuration that does not load or
    /// check changes nothing.
    fn reload(&mut self, now: Nanos, signals: &SignalHandler) {
        let log = self.failover.as_mut().map(|f| &mut f.decisions.recorder);
        let s = (&mut self.s, &mut self.next_stats);
        shell::reload(signals, now, log, s, schema(), Settings::from_config);
    }
}
