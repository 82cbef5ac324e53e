//! hsb-standby: keeps a paused replica of the protected domain. It stages each checkpoint
//! whole, verifies it, applies it, and only then acknowledges it. `activate` makes the replica
//! serve from the last applied checkpoint.
//!
//! One single-threaded mio loop: the replication listener and connections, the control socket,
//! and (after activation, with the `model` backend) the model domain's service.

mod config;
mod disk;
mod replica;
mod slots;

use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token};

use hsb_common::cli::Args;
use hsb_common::config::{reference_markdown, Config};
use hsb_common::conn::{Fill, FrameReader, OutQueue};
use hsb_common::ctl::CtlServer;
use hsb_common::datagram::{Dest, Inbox, Outbox, Sender, MAX_DATAGRAM};
use hsb_common::decision::primary::{Action as PAction, Input as PInput};
use hsb_common::decision::record::{AnyInput, Start};
use hsb_common::decision::standby::{Action as SAction, Input as SInput, OperatorAsk};
use hsb_common::decision::{Epoch, Evidence, PrimaryAuthority, Rule, StandbyCore};
use hsb_common::frame::{FrameError, Kind, HEADER_LEN};
use hsb_common::key::ClusterKey;
use hsb_common::logging::LogLimiter;
use hsb_common::msg::{self, Ack, Hello, Refuse, Role};
use hsb_common::node_state::{standby_start, NodeRole, NodeState};
use hsb_common::recorder::Recorder;
use hsb_common::session::{self, Admit, Claim, Live, Session, Side};
use hsb_common::signals::{Request, SignalHandler, SignalSource};
use hsb_common::stats::{ms, Histogram};
use hsb_common::time::{Clock, Nanos};
use hsb_common::wire::{self, Dgram};
use hsb_domain::checkpoint::{CheckpointError, Receiver};
use hsb_domain::model::ModelDomain;
use hsb_domain::service::{ClientId, Handler, Service};

use config::{schema, Settings};
use replica::Rep;
use slots::Stage;

const LISTENER: Token = Token(1);
/// Replication connections: tokens `CONN_BASE..CONN_BASE + CONN_SLOTS`.
const CONN_BASE: usize = 100;
const CONN_SLOTS: usize = slots::SLOTS;
/// Connections accepted per turn of the loop at most, so that a flood of them cannot keep the
/// loop from the live session (the rest wait in the listen backlog for the next turn).
const ACCEPTS_PER_TURN: usize = 64;
const CTL_BASE: usize = 10;
const SERVICE_BASE: usize = 1000;
const WITNESS_UDP: Token = Token(5);
const PING: Token = Token(6);
const HEARTBEAT_BASE: usize = 20;
const SIGNALS: Token = Token(4);
/// Keys a SIGHUP applies at run time; any other key that changed waits for a restart.
/// `stats_interval` only paces a log line; `on_activate` is read when the replica activates.
const RELOADED: &[&str] = &["stats_interval", "on_activate"];
/// Witness `id` as a datagram destination.
fn witness(id: u8) -> Dest {
    Dest::node(Sender {
        role: Role::Witness,
        id: u32::from(id),
    })
}

/// How long an operator's command waits for the decision before it answers "in progress"
/// (the CLI gives up after 10 s).
const OPERATOR_WAIT: Duration = Duration::from_secs(8);

/// An operator's request under way (rule 9), and where its answer goes.
struct Operator {
    /// The control connection waiting for the answer (none yet while the command runs).
    conn: Option<usize>,
    /// Answer "in progress" after this.
    deadline: Nanos,
    /// The answer, once the decision ended.
    answer: Option<String>,
}

/// Decision tick while failover is on.
const TICK: Duration = Duration::from_millis(2);

const USAGE: &str = "\
hsb-standby: keep a verified replica of the protected domain and activate it on demand

usage:
  hsb-standby run -c FILE [--set key=value]...      run the daemon
  hsb-standby status [-c FILE | --control PATH] [--json]
                                                    show the running daemon's state (--json: as one JSON object)
  hsb-standby activate [--force] [-c FILE | --control PATH]
                                                    make this standby active (with failover on: through the
                                                    witnesses, which must agree; --force: without them, and you
                                                    guarantee the primary is stopped)
  hsb-standby switchover [-c FILE | --control PATH] planned hand-over: the primary fences after a final checkpoint,
                                                    this standby applies it and takes over (nothing is lost)
  hsb-standby maintenance on|off [-c FILE | --control PATH]
                                                    pause or resume automatic takeovers (decisions are still logged)
  hsb-standby force-stale [-c FILE | --control PATH] let the failover decision activate a stale replica (rule 5)
  hsb-standby replay FILE [--policy P]              re-run a decision log through the decision core under policy P
  hsb-standby check -c FILE [--set key=value]...    validate the configuration and key, then exit
  hsb-standby xen-info DOMAIN                       show what the xen backend sees of a domain (read-only)
  hsb-standby config-reference                      print every configuration key
  hsb-standby --version

Exit status of `status`, for health checks: 0 healthy (replicating, following the primary);
1 degraded or unprotected (waiting for the primary, synchronising, deciding a failover, or
activated and serving without a standby); 2 stepped down, or refusing to activate a stale
replica; 3 unreachable (no answer on the control socket, or it refuses us); 4 usage or
configuration error. Other commands exit 1 on failure and 2 on a usage error.

Logging: HSB_LOG=debug|info|warn (default info).";

fn main() -> ExitCode {
    let args = match hsb_common::cli::start(
        "hsb-standby",
        env!("CARGO_PKG_VERSION"),
        USAGE,
        &["force", "json"],
        &["policy"],
    ) {
        Ok(a) => a,
        Err(code) => return code,
    };
    match args.command.as_deref() {
        Some("run") => run(&args),
        Some("check") => match load(&args) {
            Ok((s, _, _)) => {
                println!(
                    "configuration ok: listening on {}, model {} pages",
                    s.listen, s.model_pages
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        Some("status") => ExitCode::from(hsb_common::ctl::status_cli(
            "hsb-standby",
            &args,
            schema(),
            "/run/hsb/standby.sock",
        )),
        Some(cmd @ ("digest" | "activate" | "force-stale" | "switchover" | "maintenance")) => {
            let line = match cmd {
                "activate" if args.flag("force") => "activate --force".to_string(),
                "maintenance" => match args.rest.first().map(String::as_str) {
                    Some(w @ ("on" | "off")) => format!("maintenance {w}"),
                    None => "maintenance".to_string(),
                    Some(other) => {
                        eprintln!("hsb-standby: maintenance takes on or off, not '{other}'");
                        return ExitCode::from(2);
                    }
                },
                other => other.to_string(),
            };
            ExitCode::from(hsb_common::ctl::cli(
                "hsb-standby",
                &args,
                schema(),
                "/run/hsb/standby.sock",
                &line,
            ))
        }
        Some("replay") => replay(&args),
        Some("xen-info") => {
            ExitCode::from(hsb_domain::xen::info_command("hsb-standby", &args.rest))
        }
        Some("config-reference") => {
            print!("{}", reference_markdown(schema()));
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("hsb-standby: unknown command '{other}'\n\n{USAGE}");
            ExitCode::from(2)
        }
        None => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("hsb-standby: {msg}");
    ExitCode::FAILURE
}

fn load(args: &Args) -> Result<(Settings, ClusterKey, Config), String> {
    let cfg =
        Config::load(schema(), args.config.as_deref(), &args.sets).map_err(|e| e.to_string())?;
    let s = Settings::from_config(&cfg).map_err(|e| e.to_string())?;
    let key = ClusterKey::load_configured(&cfg, "cluster_key").map_err(|e| e.to_string())?;
    Ok((s, key, cfg))
}

fn replay(args: &Args) -> ExitCode {
    let Some(path) = args.rest.first() else {
        return fail("replay needs a decision log: hsb-standby replay FILE [--policy client-oriented|heartbeat-only|ping-node]");
    };
    let policy = match args.value("policy") {
        Some(p) => match hsb_common::decision::Policy::parse(p) {
            Some(p) => Some(p),
            None => {
                return fail(&format!(
                    "unknown policy '{p}'; expected client-oriented, heartbeat-only or ping-node"
                ))
            }
        },
        None => None,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return fail(&format!("{path}: {e}")),
    };
    let policy = policy.unwrap_or(hsb_common::decision::Policy::ClientOriented);
    match hsb_common::decision::replay(text.lines(), policy) {
        Ok(decisions) => {
            for d in &decisions {
                println!("{d}");
                if let Some(e) = d.action.evidence() {
                    println!("    {}", e.to_json_line());
                }
            }
            println!("{} decisions", decisions.len());
            ExitCode::SUCCESS
        }
        Err(e) => fail(&format!("{path}: {e}")),
    }
}

fn run(args: &Args) -> ExitCode {
    hsb_common::logging::init("standby");
    // Before the start-up: a SIGTERM sent meanwhile waits in the self-pipe and stops the loop
    // at its first turn.
    let signals = match SignalSource::install() {
        Ok(s) => s,
        Err(e) => return fail(&format!("cannot install signal handlers: {e}")),
    };
    let (s, key, cfg) = match load(args) {
        Ok(v) => v,
        Err(e) => return fail(&e),
    };
    let host = match host_state(&s) {
        Ok(h) => h,
        Err(e) => return fail(&e),
    };
    let signals = SignalHandler::new(signals, args, cfg);
    match Standby::new(s, key, host).and_then(|p| p.run(signals)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string()),
    }
}

/// Load the host's state, follow the newest epoch it knows, and write it back with this
/// process's incarnation before anything is sent (README: the restart matrix).
fn host_state(s: &Settings) -> Result<NodeState, String> {
    let saved = NodeState::load(&s.state_file)
        .map_err(|e| format!("state_file {}: {e}", s.state_file.display()))?;
    let st = NodeState {
        epoch: standby_start(saved),
        role: NodeRole::Standby,
        checkpoint: saved.map_or(0, |x| x.checkpoint),
        incarnation: hsb_common::datagram::next_incarnation(
            saved.map(|x| x.incarnation),
            hsb_common::datagram::wall_clock_micros(),
        ),
        maintenance: saved.is_some_and(|x| x.maintenance),
    };
    if let Some(prev) = saved {
        log::info!(
            "host state {}: epoch {} ({}); this standby follows epoch {}",
            s.state_file.display(),
            prev.epoch,
            prev.role.name(),
            st.epoch
        );
    }
    st.save(&s.state_file)
        .map_err(|e| format!("cannot save state_file {}: {e}", s.state_file.display()))?;
    Ok(st)
}

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    /// Sized for a `Hello` until the session is confirmed, then for `frame_max`.
    reader: FrameReader,
    session: Option<Session>,
    out: OutQueue,
    /// Handshake or live session ([`Stage::Live`] exactly when this is `current`); a refused
    /// connection closes once `out` is flushed.
    stage: Stage,
    accepted: Nanos,
    /// Last time its primary was heard from: a frame, or the end of applying one of its
    /// checkpoints ([`slots::silent`]).
    heard: Nanos,
    /// The primary's Hello, once it has arrived.
    hello: Option<Hello>,
    node: String,
    /// The primary's epoch, from its Hello.
    epoch: Epoch,
    /// Tracks this disk wrote as a primary, announced in this node's Hello and sent as
    /// `DiskDirty` frames once the session is confirmed.
    disk_dirty: Option<hsb_domain::disk::Bitmap>,
}

/// Causes of log lines that a hostile or broken peer could repeat at will: each is rate-limited
/// on its own ([`LogLimiter`]); status counts what they report (`connections_refused`,
/// `handshakes_evicted`, `handshakes_expired`, `frame_errors_*`, `connections_disallowed`).
#[derive(Debug, Clone, Copy)]
enum Noise {
    Refused,
    Evicted,
    Expired,
    BadFrame,
    Disallowed,
    Accept,
    /// Refused witness votes (grants are always logged: they are decisions' inputs).
    VoteRefused,
    /// The replica's disk failed while a checkpoint was staged or applied.
    DiskFailed,
}
const NOISE: usize = 8;

#[derive(Default)]
struct Stats {
    applied: u64,
    full_syncs: u64,
    bytes: u64,
    pages: u64,
    apply: Histogram,
    last_applied_at: Option<Nanos>,
    frame_errors: [u64; FrameError::COUNTERS.len()],
    sessions: u64,
    sessions_replaced: u64,
    connections_refused: u64,
    connections_disallowed: u64,
    handshakes_evicted: u64,
    handshakes_expired: u64,
    window_applied: u64,
    window_bytes: u64,
    requests: u64,
    heartbeats: u64,
    bad_datagrams: u64,
    decisions: u64,
}

/// The automatic failover machinery (when `failover = true`).
struct Failover {
    core: StandbyCore,
    /// After activation: this node's authority as the new primary.
    authority: Option<PrimaryAuthority>,
    witness_udp: UdpSocket,
    heartbeat_udp: Vec<UdpSocket>,
    inbox: Inbox,
    outbox: Outbox,
    recorder: Recorder,
    ping: Option<(TcpStream, Nanos)>,
    last_evidence: Option<String>,
    /// The evidence of the activation, kept for status.
    activation: Option<String>,
    /// Maintenance notices: the last one said "on"; when the next is due.
    maintenance_said: bool,
    next_maintenance_notice: Nanos,
    fenced: bool,
}

struct Standby {
    s: Settings,
    key: ClusterKey,
    clock: Clock,
    poll: Poll,
    listener: TcpListener,
    conns: Vec<Option<Conn>>,
    current: Option<usize>,
    receiver: Receiver,
    replica: Rep,
    ctl: CtlServer,
    service: Option<Service>,
    activated: Option<u64>,
    epoch: u64,
    next_stats: Nanos,
    stats: Stats,
    failover: Option<Failover>,
    /// The `on_activate` command while it runs (reaped from the loop).
    hook: Option<(std::process::Child, Nanos)>,
    /// Activated with a promote_config: hand over to hsb-primary at the end of this iteration.
    promote: bool,
    /// The host's state as last written (see [`host_state`]).
    host: NodeState,
    /// An operator's request under way.
    operator: Option<Operator>,
    /// Sent in this node's replication Hello.
    incarnation: u64,
    /// Rate limits of the replication log lines peers can provoke.
    noise: LogLimiter<NOISE>,
    /// What the activated replica's check of its disk against its memory found.
    disk_verified: String,
    /// The last accept stopped at [`ACCEPTS_PER_TURN`]: go on at the next turn of the loop.
    more_to_accept: bool,
}

/// Requests of the activated replica's service: answered at once (no standby behind it).
struct Direct<'a> {
    dom: &'a mut ModelDomain,
    requests: &'a mut u64,
    /// Under automatic failover: whether this node holds authority to release output now.
    authority: bool,
}

impl Handler for Direct<'_> {
    fn can_take(&mut self) -> bool {
        self.authority
    }
    fn handle(&mut self, _id: ClientId, line: &str) -> Option<String> {
        *self.requests += 1;
        Some(self.dom.handle(line))
    }
    fn holds(&self, _id: ClientId) -> bool {
        false
    }
    fn closed(&mut self, _id: ClientId) {}
}

impl Standby {
    fn new(s: Settings, key: ClusterKey, host: NodeState) -> io::Result<Standby> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(s.listen).map_err(|e| {
            io::Error::new(e.kind(), format!("replication address {}: {e}", s.listen))
        })?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let ctl = CtlServer::bind(
            &s.control,
            s.control_group.as_ref(),
            poll.registry(),
            CTL_BASE,
        )
        .map_err(|e| io::Error::other(format!("control socket: {e}")))?;
        let replica = Rep::open(&s).map_err(|e| io::Error::other(format!("replica: {e}")))?;
        let (pfn_limit, max_pages) = replica.layout();
        let receiver = match &replica {
            Rep::Model(_) => Receiver::new(s.model_pages),
            Rep::Xen(_) => Receiver::for_layout(pfn_limit, max_pages, false),
        };
        let receiver = match &s.disk {
            Some(ds) => receiver.with_disk(ds.disk.size, ds.disk.journal_max),
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
        let clock = Clock::new();
        let failover = if s.failover {
            Some(Failover::new(
                &s,
                &key,
                poll.registry(),
                clock.now(),
                &host,
            )?)
        } else {
            None
        };
        Ok(Standby {
            failover,
            hook: None,
            promote: false,
            // The host state's: above every earlier process of this host (rule 10).
            incarnation: host.incarnation,
            operator: None,
            noise: LogLimiter::new(3, Duration::from_secs(10)),
            disk_verified: "not yet (at activation)".into(),
            more_to_accept: false,
            replica,
            next_stats: clock.now().plus(s.stats_interval),
            receiver,
            s,
            key,
            clock,
            poll,
            listener,
            conns: (0..CONN_SLOTS).map(|_| None).collect(),
            current: None,
            ctl,
            service: None,
            activated: None,
            epoch: host.epoch.0,
            host,
            stats: Stats::default(),
        })
    }

    fn run(mut self, mut signals: SignalHandler) -> io::Result<()> {
        if self.host.maintenance {
            let now = self.clock.now();
            log::warn!("MAINTENANCE: automatic takeovers stay paused (recorded in the host state)");
            self.decide(now, SInput::Maintenance { on: true });
            self.maintenance_notice(now);
        }
        signals.register(self.poll.registry(), SIGNALS)?;
        let mut events = Events::with_capacity(256);
        loop {
            let now = self.clock.now();
            let timeout = if self.s.stats_interval > Duration::ZERO {
                self.next_stats.since(now)
            } else {
                Duration::from_secs(60)
            };
            let timeout = if self.activated.is_some() {
                timeout.min(Duration::from_millis(25))
            } else {
                timeout
            };
            let timeout = if self.failover.is_some() {
                timeout.min(TICK)
            } else {
                timeout
            };
            let timeout = match self.ctl.next_deadline() {
                Some(d) => timeout.min(d.since(now)),
                None => timeout,
            };
            let timeout = match self.next_handshake_deadline() {
                Some(d) => timeout.min(d.since(now)),
                None => timeout,
            };
            let timeout = if self.more_to_accept {
                Duration::ZERO
            } else {
                timeout
            };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let now = self.clock.now();
            // Signals first: a stop ends the loop before anything else of this turn is done
            // (no checkpoint applied, no decision taken, no activation).
            if events.iter().any(|e| signals.owns(e.token())) {
                for r in signals.take(now) {
                    match r {
                        Request::Stop(name) => {
                            self.shutdown(name);
                            return Ok(());
                        }
                        Request::Reload => self.reload(now, &signals),
                        Request::Ignore(_) => {}
                    }
                }
            }
            if self.activated.is_some() {
                self.replica.run(now);
            }
            for ev in events.iter() {
                let t = ev.token();
                if t == LISTENER {
                    self.accept(now);
                } else if (CONN_BASE..CONN_BASE + CONN_SLOTS).contains(&t.0) {
                    self.on_conn(now, t.0 - CONN_BASE);
                } else if self.ctl.owns(t) {
                    if let Some((conn, cmd)) = self.ctl.on_event(self.poll.registry(), t, now) {
                        match self.command(now, &cmd) {
                            Some(text) => self.ctl.answer(self.poll.registry(), conn, &text),
                            None => self.wait_for_operator(conn, now),
                        }
                    }
                } else if t == WITNESS_UDP || (HEARTBEAT_BASE..HEARTBEAT_BASE + 4).contains(&t.0) {
                    self.on_udp(now, t);
                } else if t == PING {
                    self.on_ping(now, false);
                } else if let Some(svc) = self.service.as_mut() {
                    if svc.owns(t) {
                        let authority = self
                            .failover
                            .as_ref()
                            .and_then(|f| f.authority.as_ref())
                            .is_none_or(|a| a.may_release_output(now));
                        if let Some(dom) = self.replica.model() {
                            let mut h = Direct {
                                dom,
                                requests: &mut self.stats.requests,
                                authority,
                            };
                            svc.on_event(self.poll.registry(), t, &mut h);
                        }
                    }
                }
            }
            let now = self.clock.now();
            self.ctl.tick(self.poll.registry(), now);
            if self.more_to_accept {
                self.accept(now);
            }
            self.expire_handshakes(now);
            if self.failover.is_some() {
                self.on_ping(now, true);
                self.decide(now, SInput::Tick);
                self.authority_step(now, PInput::Tick);
                if self
                    .failover
                    .as_ref()
                    .is_some_and(|f| f.maintenance_said && now >= f.next_maintenance_notice)
                {
                    self.maintenance_notice(now);
                }
                self.operator_tick(now);
                if let Some(f) = self.failover.as_mut() {
                    f.recorder.flush();
                }
            }
            let now = self.clock.now();
            self.bind_service();
            self.reap_hook(now);
            if self.promote {
                self.promote = false;
                self.hand_over();
            }
            if self.s.stats_interval > Duration::ZERO && now >= self.next_stats {
                self.log_stats(now);
                self.next_stats = now.plus(self.s.stats_interval);
            }
        }
    }

    /// SIGTERM, SIGINT or SIGQUIT: stop. A standby that stops does not activate (its replica
    /// stays as it is, paused); an activated one stops serving. Its primary then runs on
    /// without a standby (unprotected under the witnesses' leases, with automatic failover).
    fn shutdown(&mut self, signal: &str) {
        log::warn!(
            "{signal}: stopping: {}; the replica is not activated by this stop",
            match (self.activated, self.receiver.applied()) {
                (Some(n), _) => format!(
                    "active since checkpoint {n} (the model's service stops with this process; a Xen guest runs on)"
                ),
                (None, Some(n)) => format!("replica at checkpoint {n}"),
                (None, None) => "no checkpoint applied".to_string(),
            }
        );
        if let Some(f) = self.failover.as_mut() {
            f.recorder.flush();
        }
        if let Some(d) = self.replica.disk() {
            disk::persist(d, signal);
        }
        if let Err(e) = self.ctl.remove_socket() {
            log::warn!(
                "{signal}: cannot remove the control socket {}: {e}",
                self.ctl.path().display()
            );
        }
        log::info!("{signal}: stopped cleanly (exit status 0)");
    }

    /// SIGHUP: reopen the decision log (logging itself goes to stderr, which this process
    /// does not open: nothing to reopen there), reload the configuration, apply [`RELOADED`]
    /// and log every other changed key as waiting for a restart. A configuration that does not
    /// load or check changes nothing.
    fn reload(&mut self, now: Nanos, signals: &SignalHandler) {
        log::info!(
            "SIGHUP: reopening the decision log and reloading the configuration from {}",
            signals.source()
        );
        if let Some(f) = self.failover.as_mut() {
            f.recorder.sighup(now);
        }
        let (new, changed) = match signals.reload(schema(), Settings::from_config) {
            Ok(v) => v,
            Err(e) => {
                log::error!("SIGHUP: {e}; the configuration is not reloaded: running on unchanged");
                return;
            }
        };
        if new.stats_interval != self.s.stats_interval {
            log::info!(
                "SIGHUP: stats_interval {:?} -> {:?}",
                self.s.stats_interval,
                new.stats_interval
            );
            self.s.stats_interval = new.stats_interval;
            self.next_stats = now.plus(new.stats_interval);
        }
        if new.on_activate != self.s.on_activate {
            log::info!("SIGHUP: on_activate is now '{}'", new.on_activate.join(" "));
            self.s.on_activate = new.on_activate;
        }
        let waiting = SignalHandler::restart_needed(&changed, RELOADED);
        log::info!("SIGHUP: configuration reloaded; {waiting} changed key(s) wait for a restart");
    }

    /// Execute a control command and return its answer.
    /// Execute a control command and return its answer; `None` when the answer comes later
    /// (an operator's request under way: see [`Standby::wait_for_operator`]).
    fn command(&mut self, now: Nanos, cmd: &str) -> Option<String> {
        let text = match cmd {
            "status" | "" => self.status_text(now),
            "digest" => format!(
                "applied_checkpoint {}\ndigest {:08x}\n{}",
                self.receiver
                    .applied()
                    .map_or("none".into(), |a| a.to_string()),
                self.replica.digest().unwrap_or(0),
                self.replica.model().map_or(String::new(), disk::digest_lines)
            ),
            "force-stale" => match self.failover.as_ref() {
                None => "error: automatic failover is off (failover = false); use activate\n"
                    .to_string(),
                Some(_) => {
                    log::warn!("operator forces activation of a stale replica (rule 5) if the witnesses vote for it");
                    self.decide(now, SInput::OperatorForce);
                    "forced: a stale replica may now be activated if a quorum votes for a takeover\n".to_string()
                }
            },
            "activate" | "activate --force" | "switchover" => {
                let force = cmd == "activate --force";
                let ask = if cmd == "switchover" {
                    OperatorAsk::Switchover
                } else {
                    OperatorAsk::Activate
                };
                return self.operator_command(now, ask, force);
            }
            "maintenance" => format!(
                "maintenance {}\n",
                if self.maintenance() { "on" } else { "off" }
            ),
            "maintenance on" | "maintenance off" => self.set_maintenance(now, cmd.ends_with("on")),
            other => format!(
                "error: unknown command '{other}'; try: status, digest, activate [--force], switchover, maintenance on|off, force-stale\n"
            ),
        };
        Some(text)
    }

    /// `activate [--force]` and `switchover`: with failover on, a decision of the standby core
    /// (rule 9), answered when it ends; with failover off, the operator is the failover
    /// decision: activate at once (a switchover needs failover on).
    fn operator_command(&mut self, now: Nanos, ask: OperatorAsk, force: bool) -> Option<String> {
        if let Some(n) = self.activated {
            return Some(format!("already active since checkpoint {n}\n"));
        }
        if self.receiver.applied().is_none() {
            return Some(
                "error: nothing to activate: no checkpoint has been applied yet\n".to_string(),
            );
        }
        if self.failover.is_none() {
            if ask == OperatorAsk::Switchover {
                return Some("error: a planned switchover needs failover = true (the primary fences on the standby's request); use activate after stopping the primary\n".to_string());
            }
            log::warn!("operator activation (failover off: no witnesses to ask)");
            let n = self.receiver.applied().unwrap_or(0);
            return Some(
                match self.activate(now, "operator", self.current_epoch() + 1) {
                    Ok(()) => format!(
                        "activated: the replica at checkpoint {n} is now serving on {}\n",
                        self.service
                            .as_ref()
                            .map_or("?".into(), |s| s.addr().to_string())
                    ),
                    Err(e) => {
                        log::error!("activation failed: {e}");
                        format!("error: activation failed: {e}\n")
                    }
                },
            );
        }
        if self.operator.is_some() {
            return Some("error: an operator's request is already under way; see status\n".into());
        }
        log::warn!(
            "operator asks for {}{}",
            ask.name(),
            if force {
                " (--force: without the witnesses; the operator guarantees the primary is stopped)"
            } else {
                ""
            }
        );
        self.operator = Some(Operator {
            conn: None,
            deadline: now.plus(OPERATOR_WAIT),
            answer: None,
        });
        self.decide(now, SInput::Operator { ask, force });
        match self.operator.as_mut().and_then(|o| o.answer.take()) {
            Some(text) => {
                self.operator = None;
                Some(text)
            }
            None => None,
        }
    }

    /// The answer to the operator's request comes once the decision ends (or, at the latest,
    /// after [`OPERATOR_WAIT`]: then it says the request is still under way).
    fn wait_for_operator(&mut self, conn: usize, now: Nanos) {
        match self.operator.as_mut() {
            Some(o) => {
                o.conn = Some(conn);
                self.ctl
                    .defer(conn, o.deadline.plus(Duration::from_millis(500)));
            }
            None => self
                .ctl
                .answer(self.poll.registry(), conn, "error: no request under way\n"),
        }
        let _ = now;
    }

    /// Answer the operator (when the decision ended, or it waited long enough).
    fn operator_tick(&mut self, now: Nanos) {
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
        if let Some(conn) = o.conn {
            self.operator = None;
            self.ctl.answer(self.poll.registry(), conn, &text);
        } else {
            o.answer = Some(text);
        }
    }

    /// `maintenance on|off`: recorded in the host state, then given to the decision core.
    fn set_maintenance(&mut self, now: Nanos, on: bool) -> String {
        if self.failover.is_none() {
            return "error: automatic failover is off (failover = false): there are no automatic takeovers to pause\n".into();
        }
        let st = NodeState {
            maintenance: on,
            ..self.host
        };
        if let Err(e) = st.save(&self.s.state_file) {
            return format!(
                "error: cannot record maintenance mode in {}: {e}\n",
                self.s.state_file.display()
            );
        }
        self.host = st;
        self.decide(now, SInput::Maintenance { on });
        self.maintenance_notice(now);
        if on {
            log::warn!("MAINTENANCE: automatic takeovers paused by the operator");
            "maintenance on: automatic takeovers are paused (decisions that would be taken are logged); resume with `maintenance off`\n".into()
        } else {
            log::warn!("maintenance off: automatic takeovers resumed");
            "maintenance off: automatic takeovers resumed\n".into()
        }
    }

    /// Whether automatic takeovers are paused.
    fn maintenance(&self) -> bool {
        self.failover.as_ref().is_some_and(|f| f.core.maintenance())
    }

    /// Tell the primary and the witnesses (every second while on, once when turned off).
    fn maintenance_notice(&mut self, now: Nanos) {
        let on = self.maintenance();
        let to_primary = self.s.primary_witness;
        let peers = self.s.witness_peers.clone();
        let Some(f) = self.failover.as_mut() else {
            return;
        };
        if on || f.maintenance_said {
            f.maintenance_said = on;
            f.next_maintenance_notice = now.plus(Duration::from_secs(1));
            let m = Dgram::Maintenance { on };
            f.send(&m, to_primary, Dest::role(Role::Primary));
            for (id, addr) in peers {
                f.send(&m, addr, witness(id));
            }
        }
    }

    /// Accept every waiting connection into a handshake slot. Connections from addresses
    /// outside `primary_allow` are closed at once; when the pending handshakes are full, the
    /// oldest gives way ([`slots::victim`]), never the live session.
    fn accept(&mut self, now: Nanos) {
        self.more_to_accept = false;
        for _ in 0..ACCEPTS_PER_TURN {
            let (mut stream, peer) = match self.listener.accept() {
                Ok(v) => v,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors, say: the listener stays readable and is tried again
                    // with the next connection.
                    self.noisy(Noise::Accept, now, || {
                        format!("replication: accept failed: {e}")
                    });
                    return;
                }
            };
            if !slots::allowed(&self.s.primary_allow, peer.ip()) {
                self.stats.connections_disallowed += 1;
                self.noisy(Noise::Disallowed, now, || {
                    format!("replication: closed a connection from {peer}: not in primary_allow")
                });
                continue;
            }
            if self.pending_handshakes() >= slots::PENDING {
                let mut view = [None; CONN_SLOTS];
                for (v, c) in view.iter_mut().zip(&self.conns) {
                    *v = c.as_ref().map(|c| (c.stage, c.accepted));
                }
                if let Some(v) = slots::victim(&view) {
                    self.stats.handshakes_evicted += 1;
                    let old = self.conns[v].as_ref().map(|c| c.peer);
                    self.noisy(Noise::Evicted, now, || {
                        format!(
                            "replication: {} handshakes pending; the oldest ({}) gives way to {peer}",
                            slots::PENDING,
                            old.map_or("?".into(), |p| p.to_string())
                        )
                    });
                    self.close(v, "gave way to a newer connection");
                }
            }
            let Some(i) = self.conns.iter().position(Option::is_none) else {
                // Not reached: one slot more than the pending handshakes, and the live session
                // takes one.
                continue;
            };
            let _ = stream.set_nodelay(true);
            if let Err(e) = self.poll.registry().register(
                &mut stream,
                Token(CONN_BASE + i),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                self.noisy(Noise::Accept, now, || {
                    format!("replication: cannot register {peer}: {e}")
                });
                continue;
            }
            log::debug!("replication: connection from {peer}");
            self.conns[i] = Some(Conn {
                stream,
                peer,
                // Until it proves it holds the cluster key, a connection gets room for a
                // Hello, not for the largest frame.
                reader: FrameReader::new(msg::HELLO_MAX_BODY),
                session: None,
                out: OutQueue::new(64 * 1024 + disk::dirty_bytes(self.replica.disk_ref())),
                stage: Stage::AwaitHello,
                accepted: now,
                heard: now,
                hello: None,
                node: String::new(),
                epoch: Epoch::FIRST,
                disk_dirty: None,
            });
            // A primary sends its Hello as soon as it is connected: take it now, before later
            // connections of a flood can push this one out of the pool.
            self.on_conn(now, i);
        }
        self.more_to_accept = true;
    }

    /// Connections waiting for their handshake (or refused and flushing the refusal).
    fn pending_handshakes(&self) -> usize {
        self.conns
            .iter()
            .flatten()
            .filter(|c| c.stage != Stage::Live)
            .count()
    }

    /// When the next pending handshake runs out of time.
    fn next_handshake_deadline(&self) -> Option<Nanos> {
        self.conns
            .iter()
            .flatten()
            .filter(|c| c.stage != Stage::Live)
            .map(|c| c.accepted.plus(slots::HANDSHAKE_DEADLINE))
            .min()
    }

    /// Close the handshakes that have not made a session within [`slots::HANDSHAKE_DEADLINE`].
    fn expire_handshakes(&mut self, now: Nanos) {
        for i in 0..CONN_SLOTS {
            let Some(c) = self.conns[i].as_ref() else {
                continue;
            };
            if c.stage == Stage::Live || now.since(c.accepted) <= slots::HANDSHAKE_DEADLINE {
                continue;
            }
            if c.stage != Stage::Closing {
                self.stats.handshakes_expired += 1;
                let (peer, stage) = (c.peer, c.stage);
                self.noisy(Noise::Expired, now, || {
                    format!(
                        "replication: no session from {peer} within {:?} of connecting ({}); closed",
                        slots::HANDSHAKE_DEADLINE,
                        if stage == Stage::AwaitHello {
                            "no Hello"
                        } else {
                            "Hello not confirmed"
                        }
                    )
                });
            }
            self.close(i, "handshake deadline");
        }
    }

    /// A warning that a peer could repeat at will, rate-limited per cause.
    fn noisy(&mut self, cause: Noise, now: Nanos, line: impl FnOnce() -> String) {
        if let Some(suppressed) = self.noise.allow(cause as usize, now) {
            log::warn!("{}{}", line(), LogLimiter::<NOISE>::note(suppressed));
        }
    }

    fn close(&mut self, i: usize, why: &str) {
        if let Some(mut c) = self.conns[i].take() {
            let _ = self.poll.registry().deregister(&mut c.stream);
            if self.current == Some(i) {
                self.current = None;
                let staged = self.receiver.staging();
                self.receiver.discard();
                log::warn!(
                    "replication from {} ({}) ended: {why}; replica stays at checkpoint {}{}",
                    c.peer,
                    c.node,
                    self.receiver
                        .applied()
                        .map_or("none".into(), |a| a.to_string()),
                    if staged {
                        " (partial checkpoint discarded)"
                    } else {
                        ""
                    }
                );
            } else {
                // Handshakes come and go by the thousand under a flood: their notable ends are
                // counted and logged (rate-limited) where they happen.
                log::debug!("replication: connection from {} closed: {why}", c.peer);
            }
        }
    }

    fn on_conn(&mut self, now: Nanos, i: usize) {
        loop {
            let Some(c) = self.conns[i].as_mut() else {
                return;
            };
            if let Err(e) = c.out.flush(&mut c.stream) {
                return self.close(i, &format!("write failed: {e}"));
            }
            if c.stage == Stage::Closing {
                if c.out.pending() == 0 {
                    self.close(i, "refused");
                }
                return;
            }
            match c.reader.fill(&mut c.stream) {
                Ok(Fill::Data(_)) => {}
                Ok(Fill::WouldBlock) => return,
                Ok(Fill::Eof) => return self.close(i, "closed by the primary"),
                Err(e) => return self.close(i, &format!("read failed: {e}")),
            }
            // Frames are handled in place in the reader's buffer (no copy): the reader is taken
            // out of the connection while they are, and put back if the connection survives.
            let Some(c) = self.conns[i].as_mut() else {
                return;
            };
            let mut reader = std::mem::replace(&mut c.reader, FrameReader::detached());
            let result = loop {
                match reader.next_frame() {
                    Ok(Some((h, f))) => {
                        if let Err(e) = self.on_frame(now, i, h.kind, f) {
                            break Err(e);
                        }
                        // A confirmed session gets the full frame size (its checkpoint may
                        // follow the confirmation in the same read).
                        if reader.max_body() < self.s.frame_max
                            && self.conns[i]
                                .as_ref()
                                .is_some_and(|c| c.stage == Stage::Live)
                        {
                            reader.set_max_body(self.s.frame_max);
                        }
                    }
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e),
                }
            };
            if let Some(c) = self.conns[i].as_mut() {
                c.reader = reader;
            }
            if let Err(e) = result {
                return self.frame_error(now, i, e);
            }
        }
    }

    fn frame_error(&mut self, now: Nanos, i: usize, e: FrameError) {
        if let Some(k) = FrameError::COUNTERS.iter().position(|c| *c == e.counter()) {
            self.stats.frame_errors[k] += 1;
        }
        let peer = self.conns[i]
            .as_ref()
            .map(|c| c.peer.to_string())
            .unwrap_or_default();
        let line = || {
            format!(
                "replication: bad frame from {peer} ({}): {e}; dropping the connection",
                e.counter()
            )
        };
        if self.current == Some(i) {
            log::warn!("{}", line());
        } else {
            // Before a session, anyone can send garbage as often as they like.
            self.noisy(Noise::BadFrame, now, line);
        }
        self.close(i, &format!("bad frame: {e}"));
    }

    /// Whether the primary of `h` (on connection `i`) may have the session, or why not: it must
    /// be a primary of this domain's size while this node is not active, and the newer primary
    /// if a session is live ([`session::admit`]).
    fn admission(&self, now: Nanos, i: usize, h: &Hello) -> Result<Admit, String> {
        if h.role != Role::Primary {
            return Err(format!("peer role {:?} is not a primary", h.role));
        }
        if h.domain_pages != self.replica.layout().0 {
            return Err(format!(
                "domain size mismatch: primary has {} pages, this replica {}; set model.memory alike on both (xen: the replica must be restored from the protected guest)",
                h.domain_pages,
                self.replica.layout().0
            ));
        }
        if let Some(n) = self.activated {
            return Err(format!(
                "standby {} is active since checkpoint {n}; it takes no checkpoints",
                self.s.node
            ));
        }
        let disk = self.replica.disk_ref().map_or(0, |d| d.size());
        if h.disk.size != disk {
            return Err(format!(
                "disk size mismatch: primary has {} bytes, this replica {disk}; set model.disk_size alike on both",
                h.disk.size
            ));
        }
        let nonce_in_use = self.conns.iter().enumerate().any(|(j, c)| {
            j != i
                && c.as_ref().is_some_and(|c| {
                    matches!(c.stage, Stage::Admitted | Stage::Live)
                        && c.hello.as_ref().is_some_and(|o| o.nonce == h.nonce)
                })
        });
        let live = self
            .current
            .filter(|&j| j != i)
            .and_then(|j| self.conns[j].as_ref())
            .and_then(|c| {
                c.hello
                    .as_ref()
                    .map(|o| (Claim::of(o), slots::silent(c.heard, now)))
            });
        session::admit(
            live.as_ref().map(|(claim, silent)| Live {
                claim,
                silent: *silent,
            }),
            &Claim::of(h),
            nonce_in_use,
        )
        .map_err(|r| r.to_string())
    }

    /// Refuse the session on connection `i` (a handshake with session keys): send `Refuse` with
    /// the reason, then close once it is flushed.
    fn refuse(&mut self, now: Nanos, i: usize, reason: &str) -> Result<(), FrameError> {
        self.stats.connections_refused += 1;
        let Some(c) = self.conns[i].as_mut() else {
            return Ok(());
        };
        let (peer, node) = (c.peer, c.node.clone());
        if let Some(sess) = c.session.as_mut() {
            let mut buf = [0u8; 512];
            let n = sess
                .write(
                    Kind::Refuse,
                    &Refuse {
                        reason: msg::reason(reason),
                    },
                    &mut buf,
                )
                .map_err(|_| FrameError::Body {
                    kind: Kind::Refuse,
                    why: "cannot encode",
                })?;
            c.out.push(&buf[..n]);
        }
        c.stage = Stage::Closing;
        let _ = c.out.flush(&mut c.stream);
        self.noisy(Noise::Refused, now, || {
            format!("replication: refusing {peer} ({node}): {reason}")
        });
        Ok(())
    }

    /// The first frame of a connection: the primary's Hello, under the hello key. Answered
    /// with this node's Hello (the session keys follow from both nonces), then either a
    /// refusal or a wait for the primary's confirmation.
    fn on_hello(&mut self, now: Nanos, i: usize, frame: &[u8]) -> Result<(), FrameError> {
        let h = session::open_hello(&self.key, frame)?;
        let verdict = self.admission(now, i, &h);
        let disk_report = self.replica.disk_ref().map(|d| (d.report(), d.size()));
        let mut nonce = [0u8; 16];
        hsb_common::rng::os_random(&mut nonce).map_err(|_| FrameError::Body {
            kind: Kind::Hello,
            why: "no randomness for a nonce",
        })?;
        let mine = Hello {
            role: Role::Standby,
            node: msg::node_name(&self.s.node),
            epoch: self.current_epoch(),
            nonce,
            domain_pages: self.replica.layout().0,
            last_ckpt: self.receiver.applied().unwrap_or(0),
            incarnation: self.incarnation,
            disk: disk_report
                .as_ref()
                .map_or_else(Default::default, |(r, size)| r.hello(*size)),
        };
        let Some(c) = self.conns[i].as_mut() else {
            return Ok(());
        };
        let mut sess = Session::new(&self.key, &h.nonce, &nonce, Side::Responder);
        let mut buf = [0u8; 512];
        let n = sess
            .write(Kind::Hello, &mine, &mut buf)
            .map_err(|_| FrameError::Body {
                kind: Kind::Hello,
                why: "cannot encode",
            })?;
        c.out.push(&buf[..n]);
        c.node = h.node.to_string();
        c.epoch = Epoch(h.epoch);
        c.disk_dirty = disk_report.and_then(|(r, _)| r.dirty);
        c.session = Some(sess);
        c.heard = now;
        let (peer, incarnation, epoch) = (c.peer, h.incarnation, h.epoch);
        c.hello = Some(h);
        match verdict {
            Ok(why) => {
                c.stage = Stage::Admitted;
                let _ = c.out.flush(&mut c.stream);
                log::debug!(
                    "replication: Hello from {peer} ({}, epoch {epoch}, incarnation {incarnation}) may take the session ({why}); waiting for its confirmation",
                    c.node
                );
                Ok(())
            }
            Err(reason) => self.refuse(now, i, &reason),
        }
    }

    /// The primary's confirmation of its Hello: the session is proved fresh. If its primary is
    /// still the newer one (the live session may have changed since the Hello), it becomes the
    /// live session, replacing any other.
    fn on_confirm(&mut self, now: Nanos, i: usize, frame: &[u8]) -> Result<(), FrameError> {
        let Some(c) = self.conns[i].as_mut() else {
            return Ok(());
        };
        let (Some(sess), Some(h)) = (c.session.as_mut(), c.hello.as_ref()) else {
            return Err(FrameError::Unexpected {
                kind: Kind::Hello,
                state: "a handshake without a session",
            });
        };
        session::open_confirm(sess, frame, h)?;
        c.heard = now;
        let h = h.clone();
        let why = match self.admission(now, i, &h) {
            Ok(why) => why,
            Err(reason) => return self.refuse(now, i, &reason),
        };
        if let Some(j) = self.current.filter(|&j| j != i) {
            self.stats.sessions_replaced += 1;
            let by = self.conns[i]
                .as_ref()
                .map_or(String::new(), |c| format!("{} ({})", c.peer, c.node));
            self.close(j, &format!("replaced by the session of {by}: {why}"));
        }
        let Some(c) = self.conns[i].as_mut() else {
            return Ok(());
        };
        c.stage = Stage::Live;
        self.current = Some(i);
        self.receiver.new_session();
        self.stats.sessions += 1;
        log::info!(
            "replication: session with {} ({}, epoch {}, incarnation {}) confirmed ({why}); expecting a full synchronisation",
            c.peer,
            c.node,
            h.epoch,
            h.incarnation
        );
        self.disk_session(i);
        Ok(())
    }

    fn on_frame(
        &mut self,
        now: Nanos,
        i: usize,
        kind: Kind,
        frame: &[u8],
    ) -> Result<(), FrameError> {
        let Some(c) = self.conns[i].as_mut() else {
            return Ok(());
        };
        match c.stage {
            // Refused: nothing it sends matters any more.
            Stage::Closing => return Ok(()),
            Stage::AwaitHello => return self.on_hello(now, i, frame),
            Stage::Admitted => return self.on_confirm(now, i, frame),
            Stage::Live => {}
        }
        let Some(sess) = c.session.as_mut() else {
            return Err(FrameError::Unexpected {
                kind,
                state: "a session without keys",
            });
        };
        let hash = sess.open(frame)?;
        c.heard = now;
        if self.current != Some(i) {
            return Err(FrameError::Unexpected {
                kind,
                state: "not the current session",
            });
        }
        let body = &frame[HEADER_LEN..];
        let received = self
            .receiver
            .on_frame_to(kind, body, &hash, self.replica.disk());
        let done = match received {
            Ok(Some(done)) => done,
            Ok(None) => return Ok(()),
            Err(CheckpointError::Disk(e)) => return self.disk_failed(now, i, None, &e),
            Err(CheckpointError::Frame(e)) => return Err(e),
            Err(e) => {
                log::error!("replication: {e}");
                return Err(FrameError::Body {
                    kind,
                    why: "cannot stage the checkpoint",
                });
            }
        };
        let t0 = self.clock.now();
        let ckpt = match self.receiver.apply(self.replica.replica()) {
            Ok(n) => n,
            Err(CheckpointError::Disk(e)) => {
                return self.disk_failed(now, i, Some(done.ckpt), &e);
            }
            Err(e) => {
                log::error!("applying checkpoint {} failed: {e}", done.ckpt);
                return Err(FrameError::Body {
                    kind,
                    why: "apply failed",
                });
            }
        };
        let applied_at = self.clock.now();
        let took = applied_at.since(t0);
        // Applying takes a while for a large checkpoint; its primary was not silent meanwhile.
        if let Some(c) = self.conns[i].as_mut() {
            c.heard = applied_at;
        }
        self.stats.apply.record(took);
        self.stats.applied += 1;
        self.stats.window_applied += 1;
        self.stats.bytes += done.bytes;
        self.stats.window_bytes += done.bytes;
        self.stats.pages += done.pages;
        self.stats.last_applied_at = Some(now);
        if done.full {
            self.stats.full_syncs += 1;
            log::info!(
                "checkpoint {ckpt}: full synchronisation applied ({} pages) in {} ms",
                done.pages,
                ms(took)
            );
        }
        if self.failover.is_some() {
            // The decision core decides whether this checkpoint may be acknowledged.
            let epoch = self.conns[i].as_ref().map_or(Epoch::FIRST, |c| c.epoch);
            if done.full {
                self.decide(now, SInput::Resynced { epoch, ckpt });
            }
            self.decide(now, SInput::ReplicaApplied { ckpt, epoch });
            return Ok(());
        }
        self.send_ack(ckpt, self.epoch)
            .map_err(|why| FrameError::Unexpected { kind, state: why })
    }

    /// Send ack(`ckpt`) on the current replication session.
    fn send_ack(&mut self, ckpt: u64, epoch: u64) -> Result<(), &'static str> {
        let Some(c) = self.current.and_then(|i| self.conns[i].as_mut()) else {
            return Ok(());
        };
        let Some(sess) = c.session.as_mut() else {
            return Ok(());
        };
        let mut buf = [0u8; 128];
        let n = sess
            .write(Kind::Ack, &Ack { ckpt, epoch }, &mut buf)
            .map_err(|_| "cannot encode an ack")?;
        if !c.out.push(&buf[..n]) {
            return Err("ack queue full: the primary does not read");
        }
        let _ = c.out.flush(&mut c.stream);
        Ok(())
    }

    fn activate(&mut self, now: Nanos, by: &str, epoch: u64) -> io::Result<()> {
        let Some(ckpt) = self.receiver.applied() else {
            log::error!(
                "not activated ({by}): no usable replica (nothing applied, or its disk failed)"
            );
            return Ok(());
        };
        // The disk first: its lineage forks at `ckpt`, durably, before the replica serves (and
        // a disk that cannot keeps the replica from serving at all).
        if let Some(d) = self.replica.model() {
            self.disk_verified = disk::activate(d, ckpt, self.s.disk.as_ref())?;
        }
        // The host is the primary of `epoch` from now on: on disk before the replica serves, so
        // a restart never forgets it (README: the restart matrix).
        self.record_host(Epoch(epoch), NodeRole::Primary, ckpt)
            .map_err(|e| io::Error::new(e.kind(), format!("not activated: {e}")))?;
        for i in 0..CONN_SLOTS {
            self.close(i, "standby activated");
        }
        self.activated = Some(ckpt);
        self.epoch = epoch;
        if let Rep::Xen(x) = &mut self.replica {
            x.activate()
                .map_err(|e| io::Error::other(format!("activate the replica: {e}")))?;
            log::warn!(
                "ACTIVATED by {by}: Xen replica domain {} runs from checkpoint {ckpt}; epoch {}",
                x.domid(),
                self.epoch
            );
            self.run_hook(ckpt);
            self.promote = !self.s.promote_config.as_os_str().is_empty();
            return Ok(());
        }
        if let Some(d) = self.replica.model() {
            d.reset_clock();
            d.set_rate(self.s.dirty_rate);
            d.run(now);
        }
        // The copy that served before may hold the address for a moment more: then it is tried
        // again from the loop (see `bind_service`).
        self.service = Service::try_bind(
            self.s.service,
            self.poll.registry(),
            SERVICE_BASE,
            self.s.max_clients,
        )
        .map_err(|e| io::Error::new(e.kind(), format!("model service {}: {e}", self.s.service)))?;
        log::warn!(
            "ACTIVATED by {by}: replica at checkpoint {ckpt} (counter {}) now serves on {}{}; epoch {}",
            self.replica.counter().unwrap_or(0),
            self.s.service,
            if self.service.is_none() { " (busy: retried until it is free)" } else { "" },
            self.epoch
        );
        self.run_hook(ckpt);
        self.promote = !self.s.promote_config.as_os_str().is_empty();
        Ok(())
    }

    /// Activated with the service address still busy: try again.
    fn bind_service(&mut self) {
        if self.activated.is_none() || self.service.is_some() || self.replica.model().is_none() {
            return;
        }
        match Service::try_bind(
            self.s.service,
            self.poll.registry(),
            SERVICE_BASE,
            self.s.max_clients,
        ) {
            Ok(Some(svc)) => {
                log::warn!("now serving on {}", svc.addr());
                self.service = Some(svc);
            }
            Ok(None) => {}
            Err(e) => log::error!("model service {}: {e}", self.s.service),
        }
    }

    /// Write the host's state: `epoch`, this host's `role` in it, checkpoint numbers up to
    /// `ckpt` used. Durable when it returns.
    fn record_host(&mut self, epoch: Epoch, role: NodeRole, ckpt: u64) -> io::Result<()> {
        let st = NodeState {
            epoch,
            role,
            checkpoint: self.host.checkpoint.max(ckpt),
            incarnation: self.host.incarnation,
            maintenance: self.host.maintenance,
        };
        if st != self.host {
            st.save(&self.s.state_file).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot save state_file {}: {e}",
                        self.s.state_file.display()
                    ),
                )
            })?;
            self.host = st;
        }
        Ok(())
    }

    fn log_stats(&mut self, now: Nanos) {
        let secs = self.s.stats_interval.as_secs_f64().max(1e-9);
        if self.activated.is_some() {
            log::info!(
                "active: counter {}, {} requests served",
                self.replica.counter().unwrap_or(0),
                self.stats.requests
            );
        } else {
            log::info!(
                "{}: applied {} ({:.1} ckpt/s, {:.1} MiB/s); last {} ms ago; apply p99 {} ms",
                self.state(),
                self.receiver
                    .applied()
                    .map_or("none".into(), |a| a.to_string()),
                self.stats.window_applied as f64 / secs,
                self.stats.window_bytes as f64 / secs / (1u64 << 20) as f64,
                self.stats
                    .last_applied_at
                    .map_or("-".into(), |t| ms(now.since(t))),
                ms(self.stats.apply.quantile(0.99)),
            );
        }
        self.stats.window_applied = 0;
        self.stats.window_bytes = 0;
    }

    fn state(&self) -> &'static str {
        match (self.activated, self.current, self.receiver.applied()) {
            (Some(_), _, _) => "active",
            (None, Some(_), Some(_)) => "replicating",
            (None, Some(_), None) => "synchronising",
            (None, None, _) => "waiting-for-primary",
        }
    }

    fn status_text(&self, now: Nanos) -> String {
        let st = &self.stats;
        let mut s = String::new();
        let mut kv = |k: &str, v: String| s.push_str(&format!("{k} {v}\n"));
        kv("role", "standby".into());
        kv("node", self.s.node.clone());
        kv("backend", self.replica.describe());
        kv("state", self.state().into());
        kv("epoch", self.current_epoch().to_string());
        kv("listen", self.s.listen.to_string());
        let primary = self
            .current
            .and_then(|i| self.conns[i].as_ref())
            .map(|c| format!("{} ({})", c.peer, c.node));
        kv("primary", primary.unwrap_or_else(|| "none".into()));
        kv(
            "applied_checkpoint",
            self.receiver
                .applied()
                .map_or("none".into(), |a| a.to_string()),
        );
        kv(
            "activated_at",
            self.activated.map_or("none".into(), |a| a.to_string()),
        );
        kv("checkpoints_applied", st.applied.to_string());
        kv("full_syncs", st.full_syncs.to_string());
        kv("sessions", st.sessions.to_string());
        kv("sessions_replaced", st.sessions_replaced.to_string());
        kv("handshakes_pending", self.pending_handshakes().to_string());
        kv("connections_refused", st.connections_refused.to_string());
        kv(
            "connections_disallowed",
            st.connections_disallowed.to_string(),
        );
        kv("handshakes_evicted", st.handshakes_evicted.to_string());
        kv("handshakes_expired", st.handshakes_expired.to_string());
        kv("bytes_applied", st.bytes.to_string());
        kv("pages_applied", st.pages.to_string());
        kv(
            "last_applied_ms_ago",
            st.last_applied_at
                .map_or("none".into(), |t| ms(now.since(t))),
        );
        kv("apply_ms_p99", ms(st.apply.quantile(0.99)));
        kv(
            "staging",
            if self.receiver.staging() {
                "in-progress".into()
            } else {
                "idle".into()
            },
        );
        kv("staging_bytes", self.receiver.capacity().to_string());
        if let Some(d) = self.replica.disk_ref() {
            hsb_domain::disk::status(d, &mut kv);
            kv(
                "disk_applied_checkpoint",
                d.applied().map_or("none".into(), |a| a.to_string()),
            );
            kv("disk_applied_writes", d.stats().applied_writes.to_string());
            kv("disk_applied_bytes", d.stats().applied_bytes.to_string());
            kv("disk_verified", self.disk_verified.clone());
        }
        if let Some(c) = self.replica.counter() {
            kv("counter", c.to_string());
        }
        kv(
            "service",
            self.service
                .as_ref()
                .map_or("none".into(), |s| s.addr().to_string()),
        );
        if let Some(f) = &self.failover {
            kv("failover", format!("on ({})", self.s.decision.policy));
            kv("decision_state", f.core.state().name().to_string());
            kv(
                "maintenance",
                if f.core.maintenance() {
                    "on (automatic takeovers paused by the operator)".into()
                } else {
                    "off".into()
                },
            );
            kv(
                "operator_request",
                f.core
                    .operator()
                    .map_or("none".into(), |a| format!("{} under way", a.name())),
            );
            kv(
                "primary_suspected",
                f.core.detector().suspected().to_string(),
            );
            kv("heartbeats", st.heartbeats.to_string());
            kv("bad_datagrams", st.bad_datagrams.to_string());
            kv("decisions", st.decisions.to_string());
            for (k, v) in f.recorder.status() {
                kv(k, v);
            }
            kv(
                "authority",
                f.authority
                    .as_ref()
                    .map_or("none".into(), |a| a.mode(now).name().to_string()),
            );
            kv(
                "last_decision",
                f.last_evidence.clone().unwrap_or_else(|| "none".into()),
            );
            kv(
                "activation",
                f.activation.clone().unwrap_or_else(|| "none".into()),
            );
        } else {
            kv("failover", "off (operator activation only)".into());
        }
        kv("requests", st.requests.to_string());
        for (name, n) in FrameError::COUNTERS.iter().zip(st.frame_errors.iter()) {
            kv(&format!("frame_errors_{name}"), n.to_string());
        }
        s
    }
}

impl Failover {
    fn new(
        s: &Settings,
        key: &ClusterKey,
        registry: &mio::Registry,
        now: Nanos,
        host: &NodeState,
    ) -> io::Result<Failover> {
        let mut witness_udp = UdpSocket::bind(s.witness_listen).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("witness address {}: {e}", s.witness_listen),
            )
        })?;
        registry.register(&mut witness_udp, WITNESS_UDP, Interest::READABLE)?;
        let mut heartbeat_udp = Vec::new();
        for (i, a) in s.heartbeat_listen.iter().enumerate() {
            let mut u = UdpSocket::bind(*a)
                .map_err(|e| io::Error::new(e.kind(), format!("heartbeat address {a}: {e}")))?;
            registry.register(&mut u, Token(HEARTBEAT_BASE + i), Interest::READABLE)?;
            heartbeat_udp.push(u);
        }
        let inc = host.incarnation;
        let me = Sender {
            role: Role::Standby,
            id: hsb_common::datagram::node_sender_id(&s.node),
        };
        let mut qb = [0u8; 4];
        hsb_common::rng::os_random(&mut qb)?;
        let query_base = u32::from_le_bytes(qb);
        let core =
            StandbyCore::new(s.decision.clone(), host.epoch, now, None).with_query_base(query_base);
        let recorder = Recorder::open(
            &s.decision_log,
            s.decision_log_rotation,
            now,
            hsb_common::decision::Role::Standby,
            host.epoch,
            &s.decision,
            Start {
                seq_base: query_base,
                ..Start::default()
            },
        )
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("decision log {}: {e}", s.decision_log.display()),
            )
        })?;
        log::info!(
            "automatic failover on: policy {}, {} heartbeat link(s) on {:?} (every {:?}, suspect after {:?}), witnesses {:?} (quorum {}), witness traffic on {}",
            s.decision.policy,
            s.heartbeat_listen.len(),
            s.heartbeat_listen,
            s.decision.heartbeat.interval,
            s.decision.heartbeat.timeout,
            s.witness_peers,
            s.decision.witnesses.quorum(),
            s.witness_listen
        );
        Ok(Failover {
            core,
            authority: None,
            witness_udp,
            heartbeat_udp,
            inbox: Inbox::new(key, me),
            outbox: Outbox::new(key, me, inc, host.epoch.0),
            recorder,
            ping: None,
            last_evidence: None,
            activation: None,
            maintenance_said: false,
            next_maintenance_notice: now,
            fenced: false,
        })
    }

    fn send(&mut self, m: &Dgram, to: SocketAddr, dest: Dest) {
        let mut buf = [0u8; MAX_DATAGRAM];
        match wire::seal(&mut self.outbox, m, Some(dest), &mut buf) {
            Ok(n) => {
                if let Err(e) = self.witness_udp.send_to(&buf[..n], to) {
                    log::debug!("send {} to {to}: {e}", m.name());
                }
            }
            Err(e) => log::error!("cannot encode {}: {e}", m.name()),
        }
    }

    fn evidence(&mut self, level: log::Level, e: &Evidence) {
        let line = e.to_json_line();
        log::log!(level, "decision {line}");
        self.recorder.evidence(e);
        self.last_evidence = Some(line);
    }
}

impl Standby {
    /// This node's activation epoch as peers should see it.
    fn current_epoch(&self) -> u64 {
        match &self.failover {
            Some(f) => f.authority.as_ref().map_or(f.core.epoch(), |a| a.epoch()).0,
            None => self.epoch,
        }
    }

    /// Feed the standby core and carry out its actions.
    fn decide(&mut self, now: Nanos, input: SInput) {
        let Some(f) = self.failover.as_mut() else {
            return;
        };
        if f.authority.is_some() {
            return;
        }
        let actions = f.core.step(now, input);
        if input != SInput::Tick || !actions.is_empty() {
            f.recorder.input(now, AnyInput::Standby(input));
        }
        let epoch = f.core.epoch();
        if epoch > self.host.epoch {
            // A newer epoch is active: remembered before acting on it.
            if let Err(e) = self.record_host(epoch, NodeRole::Standby, 0) {
                log::error!("{e}");
            }
        }
        for a in actions {
            self.stats.decisions += u64::from(a.evidence().is_some());
            self.operator_outcome(&a);
            match a {
                SAction::Ack { ckpt, epoch } => {
                    if let Err(why) = self.send_ack(ckpt, epoch.0) {
                        log::warn!("ack {ckpt}: {why}");
                    }
                }
                SAction::QueryWitnesses(q) => {
                    log::info!(
                        "heartbeat lost: asking the witnesses (query {}, {})",
                        q.query,
                        q.kind
                    );
                    let Some(f) = self.failover.as_mut() else {
                        return;
                    };
                    for (id, addr) in self.s.witness_peers.clone() {
                        f.send(&Dgram::VoteRequest(q), addr, witness(id));
                    }
                }
                SAction::Withdraw(w) => {
                    let Some(f) = self.failover.as_mut() else {
                        return;
                    };
                    for (id, addr) in self.s.witness_peers.clone() {
                        f.send(&Dgram::Withdraw(w), addr, witness(id));
                    }
                }
                SAction::PingNode => self.start_ping(now),
                SAction::Activate {
                    epoch,
                    leases,
                    evidence,
                } => {
                    let Some(f) = self.failover.as_mut() else {
                        return;
                    };
                    f.evidence(log::Level::Warn, &evidence);
                    f.activation = f.last_evidence.clone();
                    let last = self.receiver.applied().unwrap_or(0);
                    let authority = PrimaryAuthority::activated(
                        self.s.decision.clone(),
                        epoch,
                        now,
                        &leases,
                        last,
                    );
                    // Forced by the operator (the primary is stopped): serve on that word until
                    // a lease quorum or an ack takes over.
                    f.authority = Some(if evidence.rule == Rule::OperatorForced {
                        authority.with_operator_authority()
                    } else {
                        authority
                    });
                    f.outbox.set_epoch(epoch.0);
                    // Witnesses learn which host is the primary from the daemons' answers, and
                    // address it as the primary from then on.
                    f.outbox.set_role(Role::Primary);
                    f.inbox.set_role(Role::Primary);
                    if let Err(e) = self.activate(
                        now,
                        &format!("the failover decision ({})", evidence.rule),
                        epoch.0,
                    ) {
                        log::error!("activation failed: {e}");
                    }
                }
                SAction::Switchover { epoch, evidence } => {
                    let Some(f) = self.failover.as_mut() else {
                        return;
                    };
                    f.evidence(log::Level::Warn, &evidence);
                    let to = self.s.primary_witness;
                    let dest = Dest {
                        role: Role::Primary,
                        id: self
                            .current
                            .and_then(|i| self.conns[i].as_ref())
                            .filter(|c| !c.node.is_empty())
                            .map(|c| hsb_common::datagram::node_sender_id(&c.node)),
                    };
                    let Some(f) = self.failover.as_mut() else {
                        return;
                    };
                    f.send(&Dgram::FenceRequest { epoch }, to, dest);
                }
                SAction::CannotDecide { evidence } | SAction::RefuseStale { evidence } => {
                    if let Some(f) = self.failover.as_mut() {
                        f.evidence(log::Level::Error, &evidence);
                    }
                }
                SAction::Alert { evidence } | SAction::StepDown { evidence, .. } => {
                    if let Some(f) = self.failover.as_mut() {
                        f.evidence(log::Level::Warn, &evidence);
                    }
                }
                SAction::RequestFullSync => {
                    // A session from an older primary is dropped; one from the primary of the
                    // newer epoch starts with a full synchronisation anyway.
                    let newest = self
                        .failover
                        .as_ref()
                        .map_or(Epoch::FIRST, |f| f.core.epoch());
                    if let Some(i) = self.current {
                        if self.conns[i].as_ref().is_some_and(|c| c.epoch < newest) {
                            self.close(i, "the decision core asks for a full synchronisation from a newer primary");
                        }
                    }
                }
            }
        }
    }

    /// If an operator's request is under way, the answer an action gives it (the request ends
    /// with an activation, or with a refusal that says why).
    fn operator_outcome(&mut self, a: &SAction) {
        let Some(o) = self.operator.as_mut() else {
            return;
        };
        let answer = match a {
            SAction::Activate { epoch, evidence, .. } => format!(
                "activated: epoch {epoch} from checkpoint {}; {}\n",
                self.receiver.applied().unwrap_or(0),
                evidence.summary()
            ),
            SAction::CannotDecide { evidence } => {
                format!("refused: {}\n", evidence.summary())
            }
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
        o.answer = Some(answer);
    }

    /// Feed the activated node's authority and carry out its actions.
    fn authority_step(&mut self, now: Nanos, input: PInput) {
        let Some(f) = self.failover.as_mut() else {
            return;
        };
        let Some(a) = f.authority.as_mut() else {
            return;
        };
        let actions = a.step(now, input);
        if input != PInput::Tick || !actions.is_empty() {
            f.recorder.input(now, AnyInput::Primary(input));
        }
        for act in actions {
            let Some(f) = self.failover.as_mut() else {
                return;
            };
            match act {
                PAction::RequestLeases(r) => {
                    for (id, addr) in self.s.witness_peers.clone() {
                        f.send(&Dgram::LeaseRequest(r), addr, witness(id));
                    }
                }
                PAction::NotifyProtected(n) => {
                    for (id, addr) in self.s.witness_peers.clone() {
                        f.send(&Dgram::Protected(n), addr, witness(id));
                    }
                }
                PAction::Fence { evidence } => {
                    f.evidence(log::Level::Error, &evidence);
                    f.fenced = true;
                    self.replica.fence();
                }
                PAction::Unfence { evidence } => {
                    f.evidence(log::Level::Warn, &evidence);
                    f.fenced = false;
                    self.replica.unfence();
                }
                PAction::StepDown { evidence, .. } => {
                    f.evidence(log::Level::Error, &evidence);
                    if !f.fenced {
                        f.fenced = true;
                        self.replica.fence();
                    }
                }
                PAction::Alert { evidence } => f.evidence(log::Level::Warn, &evidence),
                PAction::RequestFullSync | PAction::ConfirmFenced { .. } => {}
            }
        }
    }

    fn on_udp(&mut self, now: Nanos, t: Token) {
        let mut buf = [0u8; MAX_DATAGRAM];
        loop {
            let Some(f) = self.failover.as_mut() else {
                return;
            };
            let sock = if t == WITNESS_UDP {
                &f.witness_udp
            } else {
                &f.heartbeat_udp[t.0 - HEARTBEAT_BASE]
            };
            let (n, from) = match sock.recv_from(&mut buf) {
                Ok(v) => v,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => return,
            };
            let (env, m) = match wire::open(&mut f.inbox, &buf[..n]) {
                Ok(v) => v,
                Err(e) => {
                    self.stats.bad_datagrams += 1;
                    hsb_common::datagram::log_rejected(self.stats.bad_datagrams, from, &e);
                    continue;
                }
            };
            match m {
                Dgram::Heartbeat { link, .. } => {
                    self.stats.heartbeats += 1;
                    self.decide(
                        now,
                        SInput::Heartbeat {
                            link,
                            epoch: Epoch(env.epoch),
                        },
                    );
                }
                Dgram::Ping { nonce } => f.send(&Dgram::Pong { nonce }, from, Dest::node(env.from)),
                Dgram::Report(r) => self.decide(now, SInput::Report(r)),
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
                        log::info!("{}{}", line(), LogLimiter::<NOISE>::note(n));
                    }
                    self.decide(now, SInput::Vote(v));
                }
                Dgram::Fenced { epoch, ckpt } => {
                    self.decide(now, SInput::PrimaryFenced { epoch, ckpt })
                }
                Dgram::LeaseReply(r) => self.authority_step(now, PInput::LeaseReply(r)),
                other => log::debug!("ignored {} from {from}", other.name()),
            }
        }
    }

    /// Ping-node baseline: a TCP connect to the ping node; the answer feeds the core.
    fn start_ping(&mut self, now: Nanos) {
        let (Some(f), Some(addr)) = (self.failover.as_mut(), self.s.ping_node) else {
            return;
        };
        if f.ping.is_some() {
            return;
        }
        match TcpStream::connect(addr) {
            Ok(mut st) => {
                if self
                    .poll
                    .registry()
                    .register(&mut st, PING, Interest::WRITABLE)
                    .is_ok()
                {
                    f.ping = Some((st, now));
                }
            }
            Err(_) => self.decide(now, SInput::Ping { ok: false }),
        }
    }

    fn on_ping(&mut self, now: Nanos, timer: bool) {
        let Some(f) = self.failover.as_mut() else {
            return;
        };
        let Some((st, started)) = f.ping.as_mut() else {
            return;
        };
        let ok = if timer {
            if now.since(*started) < self.s.decision.query_timeout {
                return;
            }
            false
        } else {
            match st.take_error() {
                Ok(None) => match st.peer_addr() {
                    Ok(_) => true,
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                    Err(_) => false,
                },
                _ => false,
            }
        };
        if let Some((mut st, _)) = f.ping.take() {
            let _ = self.poll.registry().deregister(&mut st);
        }
        self.decide(now, SInput::Ping { ok });
    }
}

impl Standby {
    /// Start the `on_activate` command (not waited for: the loop reaps it).
    fn run_hook(&mut self, ckpt: u64) {
        let Some((prog, args)) = self.s.on_activate.split_first() else {
            return;
        };
        let spawned = std::process::Command::new(prog)
            .args(args)
            .env("HSB_EPOCH", self.current_epoch().to_string())
            .env("HSB_CHECKPOINT", ckpt.to_string())
            .env("HSB_NODE", &self.s.node)
            .stdin(std::process::Stdio::null())
            .spawn();
        match spawned {
            Ok(child) => {
                log::info!(
                    "on_activate: started {} (pid {})",
                    self.s.on_activate.join(" "),
                    child.id()
                );
                self.hook = Some((child, self.clock.now()));
            }
            Err(e) => log::error!("on_activate: cannot run {prog}: {e}"),
        }
    }

    /// Become the primary: write the domain image and exec hsb-primary at this epoch with
    /// `promote_config`. It starts unprotected under the witnesses' leases and synchronises the
    /// standby it is configured for from scratch. Returns only if the hand-over fails, and then
    /// this process keeps serving.
    fn hand_over(&mut self) {
        use std::os::unix::process::CommandExt;
        let image = &self.s.promote_image;
        if let Some(dir) = image.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        // A Xen guest stays where it runs: hsb-primary attaches to it (xen.domain in
        // promote_config). The model domain lives in this process and moves as an image.
        if let Some(d) = self.replica.disk() {
            disk::persist(d, "hand-over to hsb-primary");
        }
        let saved = match &self.replica {
            Rep::Model(d) => d.save_image(image).map(|()| true),
            Rep::Xen(_) => Ok(false),
        };
        let with_image = match saved {
            Ok(w) => w,
            Err(e) => {
                log::error!(
                    "promote: cannot write the domain image {}: {e}; staying hsb-standby",
                    image.display()
                );
                return;
            }
        };
        let primary = match std::env::current_exe() {
            Ok(p) => p.with_file_name("hsb-primary"),
            Err(e) => {
                log::error!("promote: cannot find this executable: {e}");
                return;
            }
        };
        let epoch = self.current_epoch();
        // Checkpoint numbers go on from the replica's: witnesses hold this epoch's stale mark
        // against them (rule 10: they never go back).
        let ckpt = self.receiver.applied().unwrap_or(0);
        let forced = self
            .failover
            .as_ref()
            .and_then(|f| f.authority.as_ref())
            .is_some_and(PrimaryAuthority::operator_authority);
        log::warn!(
            "promoting: exec {} run -c {} in epoch {epoch} from {} (checkpoint {ckpt})",
            primary.display(),
            self.s.promote_config.display(),
            image.display()
        );
        log::logger().flush();
        let e = std::process::Command::new(&primary)
            .arg("run")
            .arg("-c")
            .arg(&self.s.promote_config)
            .arg("--set")
            .arg(if with_image {
                format!("start_image={}", image.display())
            } else {
                "start_image=".to_string()
            })
            .arg("--set")
            .arg(format!("start_epoch={epoch}"))
            .arg("--set")
            .arg(format!("start_checkpoint={ckpt}"))
            .arg("--set")
            .arg(format!("state_file={}", self.s.state_file.display()))
            .arg("--set")
            .arg(format!("start_forced={forced}"))
            .exec();
        log::error!(
            "promote: exec {} failed: {e}; staying hsb-standby",
            primary.display()
        );
    }

    fn reap_hook(&mut self, now: Nanos) {
        let Some((child, started)) = self.hook.as_mut() else {
            return;
        };
        match child.try_wait() {
            Ok(Some(status)) if status.success() => {
                log::info!("on_activate: done in {} ms", ms(now.since(*started)));
                self.hook = None;
            }
            Ok(Some(status)) => {
                log::error!("on_activate: failed ({status}); clients may not reach this copy");
                self.hook = None;
            }
            Ok(None) => {}
            Err(e) => {
                log::error!("on_activate: {e}");
                self.hook = None;
            }
        }
    }
}
