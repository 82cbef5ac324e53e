//! hsb-primary's shell: one mio loop that turns bytes into [`Event`]s for the node and carries
//! out its [`Effect`]s. It owns the sockets (the replication connection, the witness endpoint,
//! the control socket, the model's service), the domain (and its disk, `disk.rs`) and its
//! staging buffer, output commit, the host state file, the decision log, hooks, the clock and
//! the signals; it decides nothing.
//! The loop sleeps until the earliest deadline (the node's, the control socket's, a hook's, a
//! Xen guest's suspend being polled), never on a polling tick.

use std::io;
use std::time::Duration;

use mio::net::UdpSocket;
use mio::{Poll, Registry, Token};

use hsb_common::frame::FrameError;
use hsb_common::key::ClusterKey;
use hsb_common::kit::decisions::Decisions;
use hsb_common::kit::endpoint::Endpoint;
use hsb_common::kit::hooks::Hooks;
use hsb_common::kit::shell::{self, Surface};
use hsb_common::signals::SignalHandler;
use hsb_common::time::{Clock, Nanos};
use hsb_domain::checkpoint::Staging;
use hsb_domain::output::OutputCommit;
use hsb_domain::service::{ClientId, Service};
use hsb_primary::config::{self, schema, Settings};
use hsb_primary::node::{Effect, Event, FailoverConfig, NodeConfig, PrimaryNode, Start};

use crate::disk::DiskRepl;
use crate::guest::{self, Fence, Guest, PlugOutput};
use crate::repl;
use hsb_domain::disk::export::{NbdExport, DISK_SYNC, NBD_CONN, NBD_LISTEN};
use hsb_domain::xen::Early;

/// Pages a pre-copy copies per step (64 MiB): one step per turn of the event loop, so
/// heartbeats and witnesses are served between steps.
pub(crate) const PRECOPY_STEP_PAGES: usize = 16384;
pub(crate) const REPL: Token = Token(1);
pub(crate) const WITNESS_UDP: Token = Token(5);
pub(crate) const SERVICE_BASE: usize = 1000;
// The token plan (`kit::shell`): this daemon's own tokens stay off the kit's.
const _: () = assert!(shell::own(REPL.0, 1) && shell::own(WITNESS_UDP.0, 1));
const _: () = assert!(shell::own(SERVICE_BASE, config::MAX_CLIENTS + 1));
const _: () =
    assert!(shell::own(NBD_LISTEN.0, 1) && shell::own(NBD_CONN.0, 1) && shell::own(DISK_SYNC.0, 1));
// ... and each of its own sockets has a token of its own.
const _: () = assert!(
    REPL.0 < NBD_LISTEN.0
        && NBD_LISTEN.0 < NBD_CONN.0
        && NBD_CONN.0 < DISK_SYNC.0
        && DISK_SYNC.0 < WITNESS_UDP.0
);
/// How often a busy service address is tried again.
pub(crate) const SERVICE_RETRY: Duration = Duration::from_millis(20);
/// How often a Xen guest's suspend is polled.
const SUSPEND_POLL: Duration = Duration::from_millis(1);
/// How long `on_fence` may run before it is killed with its process group.
const ON_FENCE_TIMEOUT: Duration = Duration::from_secs(2);

/// The datagram side, when failover is on.
pub(crate) struct Failover {
    pub(crate) udp: UdpSocket,
    pub(crate) ep: Endpoint,
    pub(crate) decisions: Decisions,
}

/// The running primary.
pub struct Daemon {
    pub(crate) s: Settings,
    pub(crate) key: ClusterKey,
    pub(crate) clock: Clock,
    pub(crate) poll: Poll,
    pub(crate) node: PrimaryNode,
    pub(crate) dom: Guest,
    pub(crate) staging: Staging,
    pub(crate) output: OutputCommit<ClientId>,
    /// Xen: the guest's network output, held in the `plug` qdisc until acks.
    pub(crate) plug: Option<PlugOutput>,
    /// Model backend: the domain's TCP service (a Xen guest serves its clients itself).
    pub(crate) service: Option<Service>,
    /// The control socket, the metrics responder, systemd's notifications.
    pub(crate) surface: Surface,
    pub(crate) repl: Option<repl::Conn>,
    /// Bytes of the staging buffer's sealed part already written, while a checkpoint is being
    /// sealed and sent.
    pub(crate) send_pos: Option<usize>,
    /// Xen: a suspend asked for at this time, polled until the guest is there.
    pub(crate) suspend_wait: Option<Nanos>,
    /// When the domain's pause for the next capture began.
    pub(crate) capture_t0: Option<Nanos>,
    pub(crate) failover: Option<Failover>,
    pub(crate) hooks: Hooks,
    /// Become the standby once `on_fence` is done.
    pub(crate) rejoin_pending: bool,
    pub(crate) frame_errors: [u64; FrameError::COUNTERS.len()],
    pub(crate) requests: u64,
    pub(crate) next_stats: Nanos,
    pub(crate) service_retry_at: Nanos,
    pub(crate) incarnation: u64,
    /// Disk replication, when the guest has a disk (issue 14; see disk.rs).
    pub(crate) disk: Option<DiskRepl>,
    /// The NBD export of the guest's disk (`disk.nbd_socket`; see nbd.rs).
    pub(crate) nbd: Option<NbdExport>,
}

/// The node's view of the configuration.
fn node_config(s: &Settings) -> NodeConfig {
    NodeConfig {
        standby: s.standby,
        period: s.checkpoint_period,
        max_unacked: s.max_unacked,
        precopy: s.precopy,
        reconnect_interval: s.reconnect_interval,
        max_reconnect: config::MAX_RECONNECT,
        failover: s.failover.then(|| FailoverConfig {
            decision: s.decision.clone(),
            heartbeat_peers: s.heartbeat_peers.clone(),
            witness_peers: s.witness_peers.clone(),
            standby_witness: s.standby_witness,
        }),
        disk: s.disk_config().is_some(),
    }
}

impl Daemon {
    /// Open the domain, bind the sockets, open the decision log.
    /// `None`: asked to stop (`signals`) while waiting for the Xen guest to exist.
    pub fn new(
        mut s: Settings,
        key: ClusterKey,
        start: Start,
        signals: &mut SignalHandler,
    ) -> io::Result<Option<Daemon>> {
        let mut poll = Poll::new()?;
        let clock = Clock::new();
        // A Xen guest's replicated disk is served before the guest is opened: the guest's
        // `phy:/dev/nbdN` must exist before `xl create`, so the guest may come after us.
        let (xen_disk, mut early_nbd) = match hsb_domain::xen::serve_disk_first(
            &mut poll,
            (s.xen.as_ref(), s.nbd_socket.as_deref(), s.nbd_inherit),
            hsb_domain::xen::Ready::Running,
            &clock,
            signals,
            |cfg| crate::disk::open_primary_disk(cfg, s.start_checkpoint, "xen.disk"),
        )? {
            Early::Stop => return Ok(None),
            Early::NoDisk => (None, None),
            Early::Served(de) => (Some(de.0), Some(de.1)),
        };
        let (mut dom, plug, service) =
            guest::open(&s, &poll, SERVICE_BASE, (xen_disk, early_nbd.as_mut()))?;
        if let Some(d) = crate::disk::guest_disk_mut(&mut dom) {
            d.use_ring(poll.registry(), DISK_SYNC);
        }
        let pages = dom.source().max_pages();
        let (mode, cache) = s.encode;
        let journal_max = s.disk_config().map_or(0, |d| d.journal_max);
        let staging =
            Staging::with_codec(pages, mode, (cache / 4096).min(pages)).with_journal(journal_max);
        let disk = dom
            .source()
            .disk()
            .map(|d| DiskRepl::new(d.geometry(), clock.now()));
        let size = dom.block_device().map(|d| d.size());
        let nbd = NbdExport::for_disk(
            early_nbd,
            (s.nbd_socket.as_deref(), s.nbd_inherit),
            size,
            poll.registry(),
        )?;
        if plug.is_some() && s.max_unacked > 1 {
            log::info!(
                "output commit through sch_plug holds one epoch: max_unacked is 1 with backend xen"
            );
            s.max_unacked = 1;
        }
        if s.heartbeat_peers.len() > hsb_primary::node::MAX_HEARTBEAT_LINKS {
            return Err(io::Error::other(format!(
                "heartbeat_peers: {} links, at most {}",
                s.heartbeat_peers.len(),
                hsb_primary::node::MAX_HEARTBEAT_LINKS
            )));
        }
        let surface = Surface::bind(
            (&s.control, s.control_group.as_ref()),
            s.metrics_listen,
            poll.registry(),
            clock.now(),
        )?;
        log::info!(
            "checkpoint every {:?} to standby {}; staging buffer {} MiB allocated; output limit {} KiB",
            s.checkpoint_period,
            s.standby,
            staging.capacity() >> 20,
            s.output_limit >> 10
        );
        let now = clock.now();
        let failover = if s.failover {
            Some(crate::datagrams::open_failover(
                &s, &key, &start, &poll, now,
            )?)
        } else {
            None
        };
        Ok(Some(Daemon {
            output: OutputCommit::new(s.output_limit, start.first_checkpoint),
            node: PrimaryNode::new(node_config(&s), start, now),
            next_stats: now.plus(s.stats_interval),
            incarnation: start.incarnation,
            s,
            key,
            clock,
            poll,
            dom,
            staging,
            plug,
            service,
            surface,
            repl: None,
            send_pos: None,
            suspend_wait: None,
            capture_t0: None,
            failover,
            hooks: Hooks::new(),
            rejoin_pending: false,
            frame_errors: [0; FrameError::COUNTERS.len()],
            requests: 0,
            service_retry_at: now,
            disk,
            nbd,
        }))
    }

    /// Run until a stop signal.
    pub fn run(mut self, signals: SignalHandler) -> io::Result<()> {
        shell::run(&mut self, signals)
    }

    /// Step the node with `ev` and carry out its effects in order; an effect's answer is
    /// stepped at once, before the next effect (the node's domain state is then never behind
    /// the domain: a model suspended for a checkpoint is captured and resumed before any
    /// request is served).
    pub(crate) fn feed(&mut self, now: Nanos, ev: Event) {
        for e in self.node.step(now, ev) {
            if let Some(answer) = self.carry_out(now, e) {
                self.feed(now, answer);
            }
        }
        // A checkpoint just staged starts on its way at once (the rest when writable, and
        // sealed in the loop's next turns).
        if self.send_pos == Some(0) {
            self.send_staged(now);
        }
    }

    fn carry_out(&mut self, now: Nanos, e: Effect) -> Option<Event> {
        match e {
            Effect::Connect => return self.connect(),
            Effect::SendHello { epoch, last_ckpt } => return self.send_hello(epoch, last_ckpt),
            Effect::Disconnect {
                why,
                frame_error,
                streaming,
            } => self.disconnect(&why, frame_error, streaming),
            Effect::Reserve(st) => {
                let ok = match st.save(&self.s.state_file) {
                    Ok(()) => true,
                    Err(e) => {
                        log::error!(
                            "checkpoint not taken: cannot reserve checkpoint numbers up to {} in {}: {e}",
                            st.checkpoint,
                            self.s.state_file.display()
                        );
                        false
                    }
                };
                return Some(Event::Reserved {
                    ok,
                    upto: st.checkpoint,
                });
            }
            Effect::SaveState(st) => {
                if let Err(e) = st.save(&self.s.state_file) {
                    log::error!(
                        "cannot record the host state ({}) in {}: {e}",
                        st.role.name(),
                        self.s.state_file.display()
                    );
                }
            }
            Effect::PrecopyStep { ckpt, epoch } => return Some(self.precopy_step(ckpt, epoch)),
            Effect::Suspend => return self.suspend(),
            Effect::Resume => {
                if let Err(e) = self.dom.source().resume() {
                    log::error!("cannot resume the domain: {e}");
                }
            }
            Effect::Capture {
                ckpt,
                full,
                resume,
                epoch,
            } => return Some(self.capture(ckpt, full, resume, epoch)),
            Effect::Fence => {
                log::error!("fence: output held ({} bytes)", self.output.held_bytes());
                let t0 = self.clock.now();
                match self.dom.fence() {
                    Fence::Done => {
                        return Some(Event::FenceDone {
                            suspended: self.dom.is_suspended(),
                            hard_paused: self.dom.hard_paused(),
                        })
                    }
                    Fence::Suspending => {
                        self.suspend_wait.get_or_insert(t0);
                        self.capture_t0.get_or_insert(t0);
                    }
                }
            }
            Effect::PauseOutright => {
                self.dom.pause_outright();
                return Some(Event::PausedOutright {
                    ok: self.dom.hard_paused(),
                });
            }
            Effect::Unfence => self.dom.unfence(),
            Effect::Release { upto } => {
                // The plug's release is a no-op when nothing it holds is covered.
                if self.output.held_bytes() > 0 || self.plug.is_some() {
                    self.release(upto);
                }
            }
            Effect::Rebase { next } => self.output.rebase(next),
            Effect::Talk(t) => {
                if let Some(f) = self.failover.as_mut() {
                    t.carry_out(now, &mut f.ep, &f.udp, &mut f.decisions);
                }
            }
            Effect::OnFence(epoch) => {
                if !self.s.on_fence.is_empty() {
                    let env = [
                        ("HSB_EPOCH", epoch.0.to_string()),
                        ("HSB_NODE", self.s.node.clone()),
                    ];
                    if let Err(e) =
                        self.hooks
                            .spawn("on_fence", &self.s.on_fence, &env, now, ON_FENCE_TIMEOUT)
                    {
                        log::error!("on_fence: cannot run it: {e}");
                    }
                }
            }
            Effect::Rejoin => self.rejoin_pending = true,
            Effect::PlanDisk { ckpt } => return self.plan_disk(ckpt),
            Effect::ResyncStep { ckpt } => return Some(self.resync_step(ckpt)),
            Effect::DiskAcked { ckpt } => self.disk_acked(ckpt),
            Effect::DiskStop => self.disk_stop(),
        }
        None
    }

    /// The NBD export's turn: replies out, commands carried out, requests read, as far as
    /// the client, the journal and the guest's state allow.
    fn nbd_turn(&mut self) {
        let paused = self.node.is_fenced() || self.dom.is_suspended();
        if let Some(n) = self.nbd.as_mut() {
            n.pump(self.poll.registry(), self.dom.block_device(), paused);
        }
    }

    /// Finished hooks are logged; a rejoin waits for `on_fence` to end (at most its timeout).
    fn watch_hooks(&mut self, now: Nanos) {
        for f in self.hooks.poll(now) {
            match f.end {
                hsb_common::kit::hooks::HookEnd::Done => {
                    log::info!("{}: done in {} ms", f.name, f.took.as_millis())
                }
                end => log::error!("{}: {end:?} after {} ms", f.name, f.took.as_millis()),
            }
        }
        if self.rejoin_pending && !self.hooks.any() {
            self.rejoin_pending = false;
            self.rejoin();
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

    /// When the loop must wake next.
    fn deadline(&mut self, now: Nanos) -> Nanos {
        let mut d = self.node.next_deadline(now);
        if self.sealing_due() {
            d = now;
        }
        if self.s.stats_interval > Duration::ZERO {
            d = d.min(self.next_stats);
        }
        if self.suspend_wait.is_some() {
            d = d.min(now.plus(SUSPEND_POLL));
        }
        if self.service.is_none() && matches!(self.dom, Guest::Model(_)) {
            d = d.min(self.service_retry_at);
        }
        if let Some(disk) = &self.disk {
            d = d.min(disk.next_tick());
        }
        if self.nbd.as_ref().is_some_and(NbdExport::has_more) {
            d = now;
        }
        for t in [self.surface.next_deadline(), self.hooks.next_deadline()]
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
        let text = match cmd {
            "status" | "" => crate::status::text(self, now),
            other => format!("error: unknown command '{other}'; try: status\n"),
        };
        self.surface.ctl.answer(self.poll.registry(), conn, &text);
    }

    /// A Xen guest's suspend may have come, the model's workload runs a step.
    fn before_events(&mut self, now: Nanos) {
        self.dom.run(now);
    }

    fn on_token(&mut self, now: Nanos, ev: &mio::event::Event) {
        let t = ev.token();
        if t == REPL {
            self.on_repl(now);
        } else if t == WITNESS_UDP {
            self.on_udp(now);
        } else if self.service.as_ref().is_some_and(|svc| svc.owns(t)) {
            self.on_service(t);
        } else if t == NBD_LISTEN || t == NBD_CONN {
            if let Some(n) = self.nbd.as_mut() {
                if t == NBD_LISTEN {
                    n.accept(self.poll.registry());
                }
            }
            self.nbd_turn();
        } else if t == DISK_SYNC {
            // A sync completed: `after_events` takes it in (`disk_upkeep`) and the export
            // answers what waited for it (`nbd_turn`).
        }
    }

    fn after_events(&mut self, now: Nanos) {
        self.poll_suspend(now);
        self.bind_service(now);
        self.disk_upkeep(now);
        // A checkpoint's seal goes on every turn (the socket may have taken all that was sealed
        // without filling: no writable event would come).
        if self.sealing_due() {
            self.send_staged(now);
        }
        self.feed(now, Event::Tick);
        // After the checkpoint that may have taken the journal: a waiting write goes on.
        self.nbd_turn();
        self.watch_hooks(now);
        if let Some(f) = self.failover.as_mut() {
            f.decisions.recorder.flush();
        }
        if shell::stats_due(now, self.s.stats_interval, &mut self.next_stats) {
            crate::status::log_stats(self, now);
        }
    }

    /// SIGTERM, SIGINT or SIGQUIT: stop, releasing nothing more. Replies held under output
    /// commit are dropped with this process, never sent; a Xen guest's held packets stay in
    /// the plug (see [`PlugOutput::hold_on_exit`]). For the cluster this is a crash of the
    /// primary: its standby and the witnesses decide (a planned stop is a switchover).
    fn stop(&mut self, now: Nanos, signal: &'static str) {
        log::warn!(
            "{signal}: stopping: no more checkpoints, and no more output released ({} bytes held under commit are dropped, never sent{})",
            self.output.held_bytes(),
            self.plug
                .as_ref()
                .map_or(String::new(), |p| format!("; {p:?} stays plugged"))
        );
        if let Some(p) = self.plug.as_mut() {
            if !p.hold_on_exit() {
                // The plug passes everything (unprotected, under a lease nobody will renew once
                // this process is gone) and cannot be closed: stop the guest instead (rule 4).
                log::error!("{signal}: the plug cannot hold the guest's output: pausing the guest");
                self.dom.pause_outright();
            }
        }
        self.persist_disk(signal);
        let log = self.failover.as_mut().map(|f| &mut f.decisions.recorder);
        self.surface.stopping(now, signal, log);
    }

    /// SIGHUP: reopen the decision log (logging itself goes to stderr, which this process
    /// does not open: nothing to reopen there), reload the configuration, apply the keys
    /// [`Settings`] applies at run time (its `Reload`) and log every other changed key as
    /// waiting for a restart. A configuration that does not load or check changes nothing.
    fn reload(&mut self, now: Nanos, signals: &SignalHandler) {
        let log = self.failover.as_mut().map(|f| &mut f.decisions.recorder);
        let s = (&mut self.s, &mut self.next_stats);
        shell::reload(signals, now, log, s, schema(), Settings::from_config);
    }
}
