//! hsb-primary: runs beside the protected domain, checkpoints it every epoch and streams the
//! checkpoints to hsb-standby; output of checkpoint N leaves only after ack(N).
//!
//! One single-threaded mio loop: the replication connection, the model domain's service (with
//! the `model` backend), the control socket, and the epoch timer.

mod config;
mod disk;
mod guest;

use std::collections::VecDeque;
use std::io;
use std::process::ExitCode;
use std::time::Duration;

use mio::net::{TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token};

use hsb_common::cli::Args;
use hsb_common::config::{reference_markdown, Config};
use hsb_common::conn::{write_some, Fill, FrameReader, OutQueue};
use hsb_common::ctl::CtlServer;
use hsb_common::datagram::{Dest, Inbox, Outbox, Sender, MAX_DATAGRAM};
use hsb_common::decision::primary::{Action as PAction, Input as PInput, Mode};
use hsb_common::decision::record::{self, AnyInput};
use hsb_common::decision::{Epoch, Evidence, PrimaryAuthority};
use hsb_common::frame::{FrameError, Kind};
use hsb_common::key::ClusterKey;
use hsb_common::msg::{self, Ack, Hello, Refuse, Role};
use hsb_common::node_state::{primary_start, NodeRole, NodeState, PrimaryArgs, PrimaryStart};
use hsb_common::recorder::Recorder;
use hsb_common::session::{self, Session, Side};
use hsb_common::signals::{Request, SignalHandler, SignalSource};
use hsb_common::stats::{ms, Histogram};
use hsb_common::time::{Clock, Nanos};
use hsb_common::wire::{self, Dgram};
use hsb_domain::checkpoint::Staging;
use hsb_domain::model::ModelDomain;
use hsb_domain::output::OutputCommit;
use hsb_domain::service::{ClientId, Handler, Service};

use config::{schema, Settings};
use disk::DiskRepl;
use guest::{Fence, Guest, PlugOutput};

/// Whether the standby has been silent too long for its session to be kept (DESIGN §2: a
/// link that broke and healed must not resume the old session, the standby gets a fresh full
/// synchronisation): the oldest unacknowledged checkpoint has waited longer than a lease. A
/// full synchronisation is exempt: ending its session would only start the same full sync
/// again, and a large one may take longer than a lease to copy and apply (on the Xen rig,
/// 128 MiB were ended four times in a row before one got through).
fn silent_too_long(
    oldest: Option<(u64, Nanos)>,
    full_unacked: Option<u64>,
    now: Nanos,
    lease: Duration,
) -> bool {
    match oldest {
        Some((ckpt, _)) if full_unacked == Some(ckpt) => false,
        Some((_, sent)) => now.since(sent) > lease,
        None => false,
    }
}

/// Fence the guest; a Xen guest's cooperative suspend is then polled like a checkpoint's
/// (`suspending`, see `Primary::poll_suspend`) unless one is under way already. (A function of
/// the two fields, not a method: the callers hold the failover state borrowed.)
fn start_fence(dom: &mut Guest, suspending: &mut Option<Nanos>, now: Nanos) {
    if dom.fence() == Fence::Suspending && suspending.is_none() {
        *suspending = Some(now);
    }
}

/// Witness `id` as a datagram destination.
fn witness(id: u8) -> Dest {
    Dest::node(Sender {
        role: Role::Witness,
        id: u32::from(id),
    })
}

/// A random 32-bit number (request and query numbers start at one per process).
fn random_u32() -> io::Result<u32> {
    let mut b = [0u8; 4];
    hsb_common::rng::os_random(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

/// Pages a pre-copy copies per step (64 MiB): one step per turn of the event loop, so
/// heartbeats and witnesses are served between steps.
const PRECOPY_STEP_PAGES: usize = 16384;
const REPL: Token = Token(1);
const CTL_BASE: usize = 10;
const SERVICE_BASE: usize = 1000;
const WITNESS_UDP: Token = Token(5);
const SIGNALS: Token = Token(3);
/// Keys a SIGHUP applies at run time; any other key that changed waits for a restart.
/// `stats_interval` only paces a log line; `on_fence` is read when this primary steps down.
const RELOADED: &[&str] = &["stats_interval", "on_fence"];
/// Largest frame the standby sends us (Hello, Ack, Refuse).
const REPL_RX_MAX_BODY: usize = 4096;

const USAGE: &str = "\
hsb-primary: checkpoint a domain and stream it to hsb-standby

usage:
  hsb-primary run -c FILE [--set key=value]...   run the daemon
  hsb-primary status [-c FILE | --control PATH] [--json]
                                                 show the running daemon's state (--json: as one JSON object)
  hsb-primary check -c FILE [--set key=value]... validate the configuration and key, then exit
  hsb-primary keygen PATH                        create a new cluster key file (mode 0600)
  hsb-primary xen-info DOMAIN                       show what the xen backend sees of a domain (read-only)
  hsb-primary config-reference                   print every configuration key
  hsb-primary --version

Exit status of `status`, for health checks: 0 healthy (protected); 1 degraded or unprotected
(no standby acknowledging, output held, or released under witness leases); 2 fenced or stepped
down; 3 unreachable (no answer on the control socket, or it refuses us); 4 usage or
configuration error. Other commands exit 1 on failure and 2 on a usage error.

Logging: HSB_LOG=debug|info|warn (default info).";

fn main() -> ExitCode {
    let args = match hsb_common::cli::start(
        "hsb-primary",
        env!("CARGO_PKG_VERSION"),
        USAGE,
        &["json"],
        &[],
    ) {
        Ok(a) => a,
        Err(code) => return code,
    };
    match args.command.as_deref() {
        Some("run") => run(&args),
        Some("check") => match load(&args) {
            Ok((s, _, _)) => {
                let backend = match &s.xen {
                    Some(x) => format!("xen {}", x.domain),
                    None => format!("model {} pages", s.model_pages),
                };
                println!(
                    "configuration ok: standby {}, epoch {:?}, {backend}",
                    s.standby, s.epoch_period
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        Some("status") => status(&args),
        Some("keygen") => match args.rest.first().map(std::path::PathBuf::from) {
            Some(p) => match ClusterKey::generate(&p) {
                Ok(_) => {
                    println!(
                        "wrote a new cluster key to {} (mode 0600); copy it to every hsb node",
                        p.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e.to_string()),
            },
            None => fail("keygen needs a path: hsb-primary keygen /etc/hsb/cluster.key"),
        },
        Some("xen-info") => {
            ExitCode::from(hsb_domain::xen::info_command("hsb-primary", &args.rest))
        }
        Some("config-reference") => {
            print!("{}", reference_markdown(schema()));
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("hsb-primary: unknown command '{other}'\n\n{USAGE}");
            ExitCode::from(2)
        }
        None => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("hsb-primary: {msg}");
    ExitCode::FAILURE
}

fn load(args: &Args) -> Result<(Settings, ClusterKey, Config), String> {
    let cfg =
        Config::load(schema(), args.config.as_deref(), &args.sets).map_err(|e| e.to_string())?;
    let s = Settings::from_config(&cfg).map_err(|e| e.to_string())?;
    let key = ClusterKey::load_configured(&cfg, "cluster_key").map_err(|e| e.to_string())?;
    Ok((s, key, cfg))
}

fn status(args: &Args) -> ExitCode {
    if !args.rest.is_empty() {
        return ExitCode::from(hsb_common::ctl::cli(
            "hsb-primary",
            args,
            schema(),
            "/run/hsb/primary.sock",
            &args.rest.join(" "),
        ));
    }
    ExitCode::from(hsb_common::ctl::status_cli(
        "hsb-primary",
        args,
        schema(),
        "/run/hsb/primary.sock",
    ))
}

fn run(args: &Args) -> ExitCode {
    hsb_common::logging::init("primary");
    // Before the slow start-up (a Xen guest's memory is mapped then): a SIGTERM sent meanwhile
    // waits in the self-pipe and stops the loop at its first turn.
    let signals = match SignalSource::install() {
        Ok(s) => s,
        Err(e) => return fail(&format!("cannot install signal handlers: {e}")),
    };
    let (mut s, key, cfg) = match load(args) {
        Ok(v) => v,
        Err(e) => return fail(&e),
    };
    let start = match start(&mut s) {
        Ok(st) => st,
        Err(e) => return fail(&e),
    };
    let signals = SignalHandler::new(signals, args, cfg);
    match Primary::new(s, key, start).and_then(|p| p.run(signals)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string()),
    }
}

/// What this process starts with, beside its settings: decided from the host's state file.
#[derive(Debug, Clone, Copy)]
struct Start {
    /// The datagram incarnation of this process.
    incarnation: u64,
    /// Checkpoint numbers up to this are reserved in the state file.
    reserved: u64,
    /// The host's maintenance mode, carried on for its standby role.
    maintenance: bool,
    /// Promoted by a standby's hand-over (it passed its replica's checkpoint).
    promoted: bool,
}

/// Apply the restart rule (README: the restart matrix) before anything else: a host that is a
/// standby, or whose primary stepped down, or whose model domain died with its daemon, never
/// serves as the primary; it rejoins as the standby (exec `rejoin_config`) or refuses to start.
/// Otherwise the epoch and first checkpoint are set in `s`, and the state is written durably
/// (epoch, role, a block of checkpoint numbers, the incarnation) before the daemon acts.
fn start(s: &mut Settings) -> Result<Start, String> {
    // A promoting standby passes its replica's checkpoint; a fresh or restarted primary has
    // none in its configuration.
    let promoted = s.start_checkpoint > 0;
    let saved = NodeState::load(&s.state_file)
        .map_err(|e| format!("state_file {}: {e}", s.state_file.display()))?;
    let handed_over = !s.start_image.as_os_str().is_empty() && s.start_image.exists();
    let args = PrimaryArgs {
        start_epoch: s.start_epoch,
        start_checkpoint: s.start_checkpoint,
        handed_over,
        domain_survives: s.xen.is_some(),
    };
    match primary_start(saved, args) {
        PrimaryStart::Rejoin { epoch, why } => {
            log::error!("not starting as the primary of epoch {epoch}: {why}");
            if s.rejoin_config.as_os_str().is_empty() {
                return Err(format!(
                    "not the primary: {why}; start hsb-standby on this host (no rejoin_config is set)"
                ));
            }
            let e = exec_standby(&s.rejoin_config, &s.state_file);
            Err(format!("rejoin: {e}"))
        }
        PrimaryStart::Run {
            epoch,
            first_checkpoint,
        } => {
            s.start_epoch = epoch.0;
            s.start_checkpoint = first_checkpoint.saturating_sub(1);
            let incarnation = hsb_common::datagram::next_incarnation(
                saved.map(|x| x.incarnation),
                hsb_common::datagram::wall_clock_micros(),
            );
            let reserved = s
                .start_checkpoint
                .saturating_add(hsb_common::node_state::CHECKPOINT_BLOCK);
            let maintenance = saved.is_some_and(|x| x.maintenance);
            NodeState {
                epoch,
                role: NodeRole::Primary,
                checkpoint: reserved,
                incarnation,
                maintenance,
            }
            .save(&s.state_file)
            .map_err(|e| format!("cannot save state_file {}: {e}", s.state_file.display()))?;
            if let Some(prev) = saved {
                log::info!(
                    "host state {}: epoch {} ({}), checkpoints up to {}; this primary runs in epoch {epoch} from checkpoint {first_checkpoint}",
                    s.state_file.display(),
                    prev.epoch,
                    prev.role.name(),
                    prev.checkpoint
                );
            }
            Ok(Start {
                incarnation,
                reserved,
                maintenance,
                promoted,
            })
        }
    }
}

/// Become this host's standby: exec hsb-standby with `config`, passing the state file on.
/// Returns only if the exec fails.
fn exec_standby(config: &std::path::Path, state_file: &std::path::Path) -> io::Error {
    use std::os::unix::process::CommandExt;
    let standby = match std::env::current_exe() {
        Ok(p) => p.with_file_name("hsb-standby"),
        Err(e) => return e,
    };
    log::warn!(
        "rejoining as the standby: exec {} run -c {}",
        standby.display(),
        config.display()
    );
    log::logger().flush();
    std::process::Command::new(&standby)
        .arg("run")
        .arg("-c")
        .arg(config)
        .arg("--set")
        .arg(format!("state_file={}", state_file.display()))
        .exec()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    AwaitHello,
    Streaming,
}

struct Repl {
    stream: TcpStream,
    phase: Phase,
    nonce: [u8; 16],
    /// The Hello sent (confirmed under the session key once the standby answers).
    hello: Option<Hello>,
    session: Option<Session>,
    reader: FrameReader,
    out: OutQueue,
    peer: String,
}

#[derive(Default)]
struct Stats {
    pause: Histogram,
    /// Xen: from the suspend request to the guest's suspend point (part of the pause).
    suspend_wait: Histogram,
    ack_rtt: Histogram,
    checkpoints: u64,
    full_syncs: u64,
    stretched: u64,
    stretched_logged: u64,
    bytes_sent: u64,
    pages_sent: u64,
    last_dirty: u64,
    requests: u64,
    frame_errors: [u64; FrameError::COUNTERS.len()],
    sessions: u64,
    window_ckpts: u64,
    window_bytes: u64,
    window_pages: u64,
}

struct Primary {
    s: Settings,
    key: ClusterKey,
    clock: Clock,
    poll: Poll,
    dom: Guest,
    staging: Staging,
    output: OutputCommit<ClientId>,
    /// Xen: the guest's network output, held in the `plug` qdisc until acks.
    plug: Option<PlugOutput>,
    /// Model backend: the domain's TCP service (a Xen guest serves its clients itself).
    service: Option<Service>,
    ctl: CtlServer,
    repl: Option<Repl>,
    /// Bytes of the sealed staging buffer already written, while a checkpoint is being sent.
    sending: Option<usize>,
    /// Xen: a checkpoint waits for the guest to reach its suspend point (since this time).
    suspending: Option<Nanos>,
    unacked: VecDeque<(u64, Nanos)>,
    /// The full synchronisation among `unacked`, if one is.
    full_unacked: Option<u64>,
    next_ckpt: u64,
    acked: u64,
    need_full: bool,
    epoch: u64,
    next_epoch: Nanos,
    reconnect_at: Option<Nanos>,
    backoff: Duration,
    /// This process's incarnation, in every replication Hello: a restarted primary is newer
    /// than its predecessor, whose session the standby may still hold.
    incarnation: u64,
    next_stats: Nanos,
    stats: Stats,
    failover: Option<Failover>,
    /// What the host's state file says of this process (see [`start`]).
    start: Start,
    /// A busy service address is tried again at this time.
    service_retry_at: Nanos,
    /// Disk replication, when the guest has a disk (issue 14; see disk.rs).
    disk: Option<DiskRepl>,
}

/// How often a busy service address is tried again.
const SERVICE_RETRY: Duration = Duration::from_millis(20);

/// Automatic failover on the primary's side (when `failover = true`): heartbeats to the
/// standby, the witness endpoint, and the authority that gates output (DESIGN.md rules 3, 4).
struct Failover {
    authority: PrimaryAuthority,
    udp: UdpSocket,
    inbox: Inbox,
    outbox: Outbox,
    recorder: Recorder,
    next_heartbeat: Nanos,
    fenced: bool,
    stepped_down: bool,
    last_evidence: Option<String>,
    heartbeats: u64,
    bad_datagrams: u64,
    /// The standby's node id, from its Hello (datagrams to it name it once known).
    standby_id: Option<u32>,
    /// A fence confirmation owed to a switching standby (its epoch, since when): sent after a
    /// final checkpoint of the suspended domain is on its way (see `Primary::final_checkpoint`).
    confirm: Option<(Epoch, Nanos)>,
    /// The final checkpoint's number, once captured.
    final_ckpt: Option<u64>,
    /// Rejoin as the standby once the confirmation is sent.
    rejoin_after_confirm: bool,
    /// The standby's operator paused automatic takeovers (its notices renew this).
    maintenance_until: Option<Nanos>,
}

impl Failover {
    /// The standby, as a datagram destination.
    fn standby(&self) -> Dest {
        Dest {
            role: Role::Standby,
            id: self.standby_id,
        }
    }

    fn send(&mut self, m: &Dgram, to: std::net::SocketAddr, dest: Dest) {
        let mut buf = [0u8; MAX_DATAGRAM];
        match wire::seal(&mut self.outbox, m, Some(dest), &mut buf) {
            Ok(n) => {
                if let Err(e) = self.udp.send_to(&buf[..n], to) {
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

/// Requests of the model service, answered by the domain and held under output commit.
struct Requests<'a> {
    dom: &'a mut ModelDomain,
    output: &'a mut OutputCommit<ClientId>,
    requests: &'a mut u64,
    /// Fenced (rule 4): the domain is paused and takes no requests.
    fenced: bool,
}

impl Handler for Requests<'_> {
    fn can_take(&mut self) -> bool {
        // (A PUT's log record must fit the disk's journal: requests wait like output does.)
        !self.output.full() && !self.fenced && self.dom.can_take_request()
    }
    fn handle(&mut self, id: ClientId, line: &str) -> Option<String> {
        *self.requests += 1;
        let mut reply = self.dom.handle(line);
        reply.push('\n');
        self.output.hold(id, reply.as_bytes());
        None
    }
    fn holds(&self, id: ClientId) -> bool {
        self.output.holds(id)
    }
    fn closed(&mut self, id: ClientId) {
        self.output.forget(id);
    }
}

impl Primary {
    fn new(mut s: Settings, key: ClusterKey, start: Start) -> io::Result<Primary> {
        let poll = Poll::new()?;
        let clock = Clock::new();
        let (mut dom, plug, service) = match &s.xen {
            Some(x) => {
                let (g, plug) = guest::open_xen(x)
                    .map_err(|e| io::Error::other(format!("xen backend: {e}")))?;
                (g, plug, None)
            }
            None => {
                let dom = if s.start_image.as_os_str().is_empty() {
                    ModelDomain::new(s.model_pages, s.dirty_rate, s.seed)
                } else {
                    let d = ModelDomain::load_image(&s.start_image, s.model_pages, s.dirty_rate)
                        .map_err(|e| {
                            io::Error::new(io::ErrorKind::InvalidData, format!("start_image: {e}"))
                        })?;
                    log::info!(
                        "starting from the domain image {} in epoch {} (counter {})",
                        s.start_image.display(),
                        s.start_epoch,
                        d.counter()
                    );
                    // Consumed: a restart must not start from it again (it would roll back
                    // what this primary served since).
                    let mut used = s.start_image.clone().into_os_string();
                    used.push(".used");
                    if let Err(e) = std::fs::rename(&s.start_image, &used) {
                        log::warn!(
                            "cannot set the domain image aside as {}: {e}",
                            used.to_string_lossy()
                        );
                    }
                    d
                };
                let mut dom = dom;
                if let Some(ds) = &s.disk {
                    // The guest's disk: its writes belong to this primary's checkpoints from
                    // the first one on (a replica's data forks into a lineage of its own).
                    let mut disk = hsb_domain::disk::Disk::open(&ds.disk)
                        .map_err(|e| io::Error::other(format!("model.disk: {e}")))?;
                    disk.start_primary(s.start_checkpoint + 1)
                        .map_err(|e| io::Error::other(format!("model.disk: {e}")))?;
                    log::info!(
                        "disk {} ({} MiB): {}; workload {} KiB/s in writes of {} KiB ({}); journal {} MiB",
                        ds.disk.path.display(),
                        ds.disk.size >> 20,
                        disk.describe(),
                        ds.workload.rate >> 10,
                        ds.workload.write >> 10,
                        if ds.workload.random { "random" } else { "sequential" },
                        ds.disk.journal_max >> 20
                    );
                    dom.attach_disk(disk, ds.workload, s.start_image.as_os_str().is_empty())
                        .map_err(|e| io::Error::other(format!("model.disk: {e}")))?;
                }
                let service =
                    Service::try_bind(s.service, poll.registry(), SERVICE_BASE, s.max_clients)
                        .map_err(|e| {
                            io::Error::new(e.kind(), format!("model service {}: {e}", s.service))
                        })?;
                log::info!(
                    "node {} (model backend: the hypervisor test double): {} pages ({} MiB), workload {} pages/s, service on {}{}",
                    s.node,
                    s.model_pages,
                    (s.model_pages * 4096) >> 20,
                    s.dirty_rate,
                    s.service,
                    if service.is_none() { " (busy: retried until it is free)" } else { "" }
                );
                (Guest::Model(dom), None, service)
            }
        };
        let journal_max = s.disk.as_ref().map_or(0, |d| d.disk.journal_max);
        let staging = Staging::with_disk(dom.source().max_pages(), journal_max);
        let disk = dom
            .source()
            .disk()
            .map(|d| DiskRepl::new(d.geometry(), clock.now()));
        if plug.is_some() && s.max_unacked > 1 {
            log::info!(
                "output commit through sch_plug holds one epoch: max_unacked is 1 with backend xen"
            );
            s.max_unacked = 1;
        }
        let ctl = CtlServer::bind(
            &s.control,
            s.control_group.as_ref(),
            poll.registry(),
            CTL_BASE,
        )
        .map_err(|e| io::Error::other(format!("control socket: {e}")))?;
        log::info!(
            "checkpoint every {:?} to standby {}; staging buffer {} MiB allocated; output limit {} KiB",
            s.epoch_period,
            s.standby,
            staging.capacity() >> 20,
            s.output_limit >> 10
        );
        let now = clock.now();
        let failover = if s.failover {
            let mut udp = UdpSocket::bind(s.witness_listen).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("witness address {}: {e}", s.witness_listen),
                )
            })?;
            poll.registry()
                .register(&mut udp, WITNESS_UDP, Interest::READABLE)?;
            let inc = start.incarnation;
            let me = Sender {
                role: Role::Primary,
                id: hsb_common::datagram::node_sender_id(&s.node),
            };
            let req_base = random_u32()?;
            let recorder = Recorder::open(
                &s.decision_log,
                s.decision_log_rotation,
                now,
                hsb_common::decision::Role::Primary,
                Epoch(s.start_epoch),
                &s.decision,
                record::Start {
                    seq_base: req_base,
                    resume_at: s.start_checkpoint,
                    ..record::Start::default()
                },
            )
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("decision log {}: {e}", s.decision_log.display()),
                )
            })?;
            log::info!(
                "automatic failover on: policy {}; heartbeats every {:?} to {:?}; witnesses {:?}; output needs a fresh ack, or a witness-quorum lease once the standby is lost",
                s.decision.policy,
                s.decision.heartbeat.interval,
                s.heartbeat_peers,
                s.witness_peers
            );
            Some(Failover {
                authority: {
                    let a = PrimaryAuthority::new(s.decision.clone(), Epoch(s.start_epoch), now)
                        .resume_at(s.start_checkpoint)
                        .with_request_base(req_base);
                    let a = if start.promoted { a.promoted() } else { a };
                    if s.start_forced {
                        log::warn!("serving on the operator's word (a forced activation) until a witness-quorum lease or an ack takes over");
                        a.with_operator_authority()
                    } else {
                        a
                    }
                },
                udp,
                inbox: Inbox::new(&key, me),
                outbox: Outbox::new(
                    &key,
                    me,
                    inc,
                    // Heartbeats and requests carry this primary's epoch (a promoted primary's
                    // are not epoch 1: its standby drops lower epochs as stale).
                    s.start_epoch,
                ),
                recorder,
                next_heartbeat: now,
                fenced: false,
                stepped_down: false,
                last_evidence: None,
                heartbeats: 0,
                bad_datagrams: 0,
                standby_id: None,
                confirm: None,
                final_ckpt: None,
                rejoin_after_confirm: false,
                maintenance_until: None,
            })
        } else {
            None
        };
        let epoch = s.start_epoch;
        let first_ckpt = s.start_checkpoint + 1;
        Ok(Primary {
            output: OutputCommit::new(s.output_limit, first_ckpt),
            next_epoch: now.plus(s.epoch_period),
            next_stats: now.plus(s.stats_interval),
            backoff: s.reconnect_interval,
            reconnect_at: Some(now),
            // The host state's: above every earlier process of this host (rule 10).
            incarnation: start.incarnation,
            s,
            key,
            clock,
            poll,
            dom,
            staging,
            plug,
            service,
            ctl,
            repl: None,
            sending: None,
            suspending: None,
            unacked: VecDeque::new(),
            full_unacked: None,
            next_ckpt: first_ckpt,
            acked: first_ckpt - 1,
            need_full: true,
            epoch,
            stats: Stats::default(),
            failover,
            start,
            service_retry_at: now,
            disk,
        })
    }

    fn run(mut self, mut signals: SignalHandler) -> io::Result<()> {
        signals.register(self.poll.registry(), SIGNALS)?;
        let mut events = Events::with_capacity(256);
        loop {
            let now = self.clock.now();
            let mut deadline = self.next_epoch;
            if let Some(r) = self.reconnect_at {
                deadline = deadline.min(r);
            }
            if self.s.stats_interval > Duration::ZERO {
                deadline = deadline.min(self.next_stats);
            }
            if let Some(f) = &self.failover {
                deadline = deadline
                    .min(f.next_heartbeat)
                    .min(now.plus(Duration::from_millis(2)));
            }
            if self.suspending.is_some() || self.precopy_pending() || self.resync_pending() {
                deadline = deadline.min(now.plus(Duration::from_millis(1)));
            }
            if let Some(d) = &self.disk {
                deadline = deadline.min(d.next_tick());
            }
            if let Some(d) = self.ctl.next_deadline() {
                deadline = deadline.min(d);
            }
            let timeout = deadline.since(now);
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let now = self.clock.now();
            // Signals first: a stop ends the loop before anything else of this turn is done.
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
            self.dom.run(now);
            for ev in events.iter() {
                let t = ev.token();
                if t == REPL {
                    self.on_repl(now);
                } else if self.ctl.owns(t) {
                    if let Some((conn, cmd)) = self.ctl.on_event(self.poll.registry(), t, now) {
                        let text = match cmd.as_str() {
                            "status" | "" => self.status_text(now),
                            other => format!("error: unknown command '{other}'; try: status\n"),
                        };
                        self.ctl.answer(self.poll.registry(), conn, &text);
                    }
                } else if t == WITNESS_UDP {
                    self.on_udp(now);
                } else if self.service.as_ref().is_some_and(|svc| svc.owns(t)) {
                    let fenced = self.fenced();
                    if let (Some(svc), Some(dom)) = (self.service.as_mut(), self.dom.model()) {
                        let mut h = Requests {
                            dom,
                            output: &mut self.output,
                            requests: &mut self.stats.requests,
                            fenced,
                        };
                        svc.on_event(self.poll.registry(), t, &mut h);
                    }
                }
            }
            let now = self.clock.now();
            self.ctl.tick(self.poll.registry(), now);
            self.poll_suspend(now);
            self.final_checkpoint(now);
            self.bind_service(now);
            self.disk_upkeep(now);
            if now >= self.next_epoch {
                self.epoch_tick(now);
            } else if self.precopy_pending() || self.resync_pending() {
                // A pre-copy (memory or disk) goes on between epochs, a step per turn.
                self.checkpoint(now);
            }
            if self.reconnect_at.is_some_and(|r| now >= r) {
                self.connect(now);
            }
            if self.failover.is_some() {
                self.failover_tick(now);
            }
            if self.s.stats_interval > Duration::ZERO && now >= self.next_stats {
                self.log_stats(now);
                self.next_stats = now.plus(self.s.stats_interval);
            }
        }
    }

    /// SIGTERM, SIGINT or SIGQUIT: stop, releasing nothing more. Replies held under output
    /// commit are dropped with this process, never sent; a Xen guest's held packets stay in
    /// the plug (see [`PlugOutput::hold_on_exit`]). For the cluster this is a crash of the
    /// primary: its standby and the witnesses decide (a planned stop is a switchover).
    fn shutdown(&mut self, signal: &str) {
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
        if let Some(f) = self.failover.as_mut() {
            f.recorder.flush();
        }
        self.persist_disk(signal);
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
        if new.on_fence != self.s.on_fence {
            log::info!("SIGHUP: on_fence is now '{}'", new.on_fence.join(" "));
            self.s.on_fence = new.on_fence;
        }
        let waiting = SignalHandler::restart_needed(&changed, RELOADED);
        log::info!("SIGHUP: configuration reloaded; {waiting} changed key(s) wait for a restart");
    }

    fn connect(&mut self, now: Nanos) {
        self.reconnect_at = None;
        let mut nonce = [0u8; 16];
        if let Err(e) = hsb_common::rng::os_random(&mut nonce) {
            log::error!("cannot read /dev/urandom for a session nonce: {e}");
            self.retry_later(now);
            return;
        }
        match TcpStream::connect(self.s.standby) {
            Ok(mut stream) => {
                if let Err(e) = self.poll.registry().register(
                    &mut stream,
                    REPL,
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    log::error!("cannot register the standby connection: {e}");
                    self.retry_later(now);
                    return;
                }
                self.repl = Some(Repl {
                    stream,
                    phase: Phase::Connecting,
                    nonce,
                    hello: None,
                    session: None,
                    reader: FrameReader::new(REPL_RX_MAX_BODY),
                    out: OutQueue::new(4096),
                    peer: self.s.standby.to_string(),
                });
            }
            Err(e) => {
                log::warn!("standby {}: connect failed: {e}", self.s.standby);
                self.retry_later(now);
            }
        }
    }

    fn retry_later(&mut self, now: Nanos) {
        if self.failover.as_ref().is_some_and(|f| f.stepped_down) {
            // A primary that stepped down replicates no more (a newer epoch is active).
            self.reconnect_at = None;
            log::info!("stepped down: not reconnecting to the standby");
            return;
        }
        self.reconnect_at = Some(now.plus(self.backoff));
        self.backoff = (self.backoff * 2).min(config::MAX_RECONNECT);
    }

    /// The standby connection is gone: unacked checkpoints are void, held output waits for the
    /// next full synchronisation's ack.
    fn lose_standby(&mut self, now: Nanos, why: &str) {
        if let Some(mut r) = self.repl.take() {
            let _ = self.poll.registry().deregister(&mut r.stream);
            if r.phase == Phase::Streaming {
                log::warn!(
                    "standby {} lost: {why}; last acked checkpoint {}; {} unacked voided; holding output ({} bytes) until a fresh full sync is acked",
                    r.peer,
                    self.acked,
                    self.unacked.len(),
                    self.output.held_bytes()
                );
            } else {
                log::warn!("standby {}: {why}", r.peer);
            }
        }
        self.sending = None;
        self.unacked.clear();
        self.full_unacked = None;
        self.output.rebase(self.next_ckpt);
        self.need_full = true;
        // No standby: the next one is resynchronised from the track table, not the journal.
        if let Some(d) = self.disk.as_mut() {
            d.reset();
        }
        if let Some(d) = self.dom.source().disk() {
            d.stop_journal();
        }
        self.retry_later(now);
    }

    fn on_repl(&mut self, now: Nanos) {
        let Some(r) = self.repl.as_mut() else { return };
        if r.phase == Phase::Connecting {
            match r.stream.take_error() {
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => {
                    return self.lose_standby(now, &format!("connect failed: {e}"))
                }
            }
            match r.stream.peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => return self.lose_standby(now, &format!("connect failed: {e}")),
            }
            let _ = r.stream.set_nodelay(true);
            let hello = Hello {
                role: Role::Primary,
                node: msg::node_name(&self.s.node),
                epoch: self.epoch,
                nonce: r.nonce,
                domain_pages: self.dom.source().pages(),
                last_ckpt: self.acked,
                incarnation: self.incarnation,
                disk: self
                    .dom
                    .source()
                    .disk()
                    .map_or_else(Default::default, |d| DiskRepl::hello(d)),
            };
            let mut buf = [0u8; 256];
            match session::write_hello(&self.key, &hello, &mut buf) {
                Ok(n) => {
                    r.out.push(&buf[..n]);
                }
                Err(e) => return self.lose_standby(now, &format!("cannot encode hello: {e}")),
            }
            r.hello = Some(hello);
            r.phase = Phase::AwaitHello;
            log::info!("standby {}: connected, opening session", r.peer);
        }
        if let Err(e) = r.out.flush(&mut r.stream) {
            return self.lose_standby(now, &format!("write failed: {e}"));
        }
        // Read acks and control frames.
        loop {
            let Some(r) = self.repl.as_mut() else { return };
            match r.reader.fill(&mut r.stream) {
                Ok(Fill::Data(_)) => {}
                Ok(Fill::WouldBlock) => break,
                Ok(Fill::Eof) => return self.lose_standby(now, "connection closed by the standby"),
                Err(e) => return self.lose_standby(now, &format!("read failed: {e}")),
            }
            loop {
                let Some(r) = self.repl.as_mut() else { return };
                let frame = match r.reader.next_frame() {
                    Ok(Some((h, f))) => (h, f.to_vec()),
                    Ok(None) => break,
                    Err(e) => return self.frame_error(now, e),
                };
                if let Err(e) = self.on_frame(now, frame.0.kind, &frame.1) {
                    return self.frame_error(now, e);
                }
            }
        }
        self.send_staged(now);
        self.send_resync(now);
    }

    fn frame_error(&mut self, now: Nanos, e: FrameError) {
        if let Some(i) = FrameError::COUNTERS.iter().position(|c| *c == e.counter()) {
            self.stats.frame_errors[i] += 1;
        }
        self.lose_standby(now, &format!("bad frame from the standby: {e}"));
    }

    fn on_frame(&mut self, now: Nanos, kind: Kind, frame: &[u8]) -> Result<(), FrameError> {
        let Some(r) = self.repl.as_mut() else {
            return Ok(());
        };
        let body = &frame[hsb_common::frame::HEADER_LEN..];
        match (r.phase, kind) {
            (Phase::AwaitHello, Kind::Hello) => {
                let h: Hello = msg::decode(kind, body)?;
                let mut sess = Session::new(&self.key, &r.nonce, &h.nonce, Side::Initiator);
                sess.open(frame)?;
                if h.role != Role::Standby {
                    return Err(FrameError::Body {
                        kind,
                        why: "peer is not a standby",
                    });
                }
                let disk_now = match self.disk.as_mut() {
                    Some(d) => match d.standby_hello(&h.disk) {
                        Ok(now) => now,
                        Err(why) => {
                            log::error!("standby {}: {why}", r.peer);
                            self.lose_standby(now, "its disk cannot be replicated to");
                            return Ok(());
                        }
                    },
                    None if h.disk.size != 0 => {
                        log::error!(
                            "standby {}: it has a disk of {} bytes, this primary's guest has none (model.disk_size must be the same on both)",
                            r.peer,
                            h.disk.size
                        );
                        self.lose_standby(now, "its disk cannot be replicated to");
                        return Ok(());
                    }
                    None => false,
                };
                // Confirm our Hello under the session key: the standby counts the session only
                // from this frame (a recorded Hello cannot produce it). It goes out before any
                // checkpoint (send_staged flushes `out` first).
                let mut buf = [0u8; 256];
                let hello = r.hello.as_ref().ok_or(FrameError::Unexpected {
                    kind,
                    state: "no Hello sent",
                })?;
                let n = session::write_confirm(&mut sess, hello, &mut buf).map_err(|_| {
                    FrameError::Body {
                        kind,
                        why: "cannot encode the confirmation",
                    }
                })?;
                r.out.push(&buf[..n]);
                if let Err(e) = r.out.flush(&mut r.stream) {
                    self.lose_standby(now, &format!("write failed: {e}"));
                    return Ok(());
                }
                r.session = Some(sess);
                r.phase = Phase::Streaming;
                self.stats.sessions += 1;
                if let Some(f) = self.failover.as_mut() {
                    f.standby_id = Some(hsb_common::datagram::node_sender_id(&h.node));
                }
                log::info!(
                    "standby {} ({}) session open: epoch {}, its last applied checkpoint {}; starting full synchronisation",
                    r.peer,
                    h.node,
                    h.epoch,
                    h.last_ckpt
                );
                self.need_full = true;
                if disk_now {
                    self.plan_disk(now);
                }
                Ok(())
            }
            (Phase::Streaming, Kind::Ack) => {
                let sess = r.session.as_mut().ok_or(FrameError::Unexpected {
                    kind,
                    state: "no session",
                })?;
                sess.open(frame)?;
                let a: Ack = msg::decode(kind, body)?;
                match self.unacked.front() {
                    Some(&(n, sent)) if n == a.ckpt => {
                        self.unacked.pop_front();
                        // A session that acknowledges works: reconnect promptly next time. (Not
                        // at session open: a standby that refuses every session, being active
                        // itself, would otherwise be asked again every reconnect_interval.)
                        self.backoff = self.s.reconnect_interval;
                        if self.full_unacked == Some(n) {
                            self.full_unacked = None;
                        }
                        self.acked = n;
                        if let Some(d) = self.dom.source().disk() {
                            d.acked(n);
                        }
                        self.stats.ack_rtt.record(now.since(sent));
                        if self.failover.is_some() {
                            self.authority_step(
                                now,
                                PInput::Ack {
                                    ckpt: n,
                                    epoch: Epoch(a.epoch),
                                },
                            );
                            self.release_under_authority(now);
                        } else {
                            self.release(n);
                        }
                        Ok(())
                    }
                    _ => Err(FrameError::Body {
                        kind,
                        why: "ack for a checkpoint not awaiting one",
                    }),
                }
            }
            (Phase::Streaming, Kind::DiskDirty) => {
                let sess = r.session.as_mut().ok_or(FrameError::Unexpected {
                    kind,
                    state: "no session",
                })?;
                sess.open(frame)?;
                let d: msg::DiskDirty = msg::decode(kind, body)?;
                let complete = match self.disk.as_mut() {
                    Some(repl) => repl.dirty(&d)?,
                    None => {
                        return Err(FrameError::Unexpected {
                            kind,
                            state: "this primary's guest has no disk",
                        })
                    }
                };
                if complete {
                    self.plan_disk(now);
                }
                Ok(())
            }
            (Phase::Streaming, Kind::Refuse) => {
                if let Some(sess) = r.session.as_mut() {
                    sess.open(frame)?;
                }
                let rf: Refuse = msg::decode(kind, body)?;
                log::error!("standby {} refused replication: {}", r.peer, rf.reason);
                // A well-formed refusal is not a bad frame: end the session for what it is.
                self.lose_standby(now, "it refused replication");
                Ok(())
            }
            (phase, kind) => Err(FrameError::Unexpected {
                kind,
                state: match phase {
                    Phase::Connecting => "connecting",
                    Phase::AwaitHello => "waiting for the standby's Hello",
                    Phase::Streaming => "streaming checkpoints",
                },
            }),
        }
    }

    /// Release output acked by ack(`ckpt`) to its clients.
    fn release(&mut self, ckpt: u64) {
        if let Some(p) = self.plug.as_mut() {
            p.release(ckpt);
        }
        let mut out = Vec::new();
        self.output.release(ckpt, |h| out.push(h));
        let registry = self.poll.registry();
        let fenced = self.fenced();
        let (Some(svc), Some(dom)) = (self.service.as_mut(), self.dom.model()) else {
            return;
        };
        let mut h = Requests {
            dom,
            output: &mut self.output,
            requests: &mut self.stats.requests,
            fenced,
        };
        for held in out {
            svc.send(registry, held.client, &held.data, &mut h);
        }
        // Room freed: take requests that were waiting.
        svc.pump(registry, &mut h);
    }

    fn epoch_tick(&mut self, now: Nanos) {
        // Next deadline on the fixed schedule; skip ticks we are too late for.
        self.next_epoch = self.next_epoch.plus(self.s.epoch_period);
        if self.next_epoch <= now {
            self.next_epoch = now.plus(self.s.epoch_period);
        }
        let streaming = self
            .repl
            .as_ref()
            .is_some_and(|r| r.phase == Phase::Streaming);
        if !streaming {
            return;
        }
        // A fenced primary keeps replicating its paused domain: the standby's ack is how it
        // regains authority. One that stepped down stops for good.
        if self.failover.as_ref().is_some_and(|f| f.stepped_down) {
            return;
        }
        if !self.may_checkpoint() {
            // Backpressure: the epoch stretches; the guest keeps running, output keeps waiting.
            self.stats.stretched += 1;
            return;
        }
        self.checkpoint(now);
    }

    /// A pre-copy that can take its next step now.
    fn precopy_pending(&self) -> bool {
        self.staging.precopying() && !self.dom.hard_paused() && self.may_checkpoint()
    }

    /// Whether a checkpoint (or the next step of a pre-copy) may start now: a session streams,
    /// this primary has not stepped down, and staging is free (nothing being sent, room under
    /// `max_unacked`, no suspend under way).
    fn may_checkpoint(&self) -> bool {
        self.repl
            .as_ref()
            .is_some_and(|r| r.phase == Phase::Streaming)
            && !self.failover.as_ref().is_some_and(|f| f.stepped_down)
            && self.sending.is_none()
            && self.unacked.len() < self.s.max_unacked
            && self.suspending.is_none()
            && self.disk.as_ref().is_none_or(|d| d.sending.is_none())
    }

    fn checkpoint(&mut self, now: Nanos) {
        // Paused without a consistent suspend point (a fence the guest did not cooperate
        // with): nothing restorable to capture.
        if self.dom.hard_paused() {
            return;
        }
        // Fenced: the domain is already suspended, and stays so after the capture.
        let fenced = self.dom.is_suspended();
        // A full synchronisation waits for its disk resynchronisation's copy (made while the
        // guest runs) to be small enough to end in it.
        if self.need_full && !self.disk_ready_for_full(now) {
            return;
        }
        if !fenced && self.need_full && self.s.precopy && !self.precopy_done() {
            return;
        }
        // The pause starts here: a pre-copy's copying ran with the guest running.
        let t0 = self.clock.now();
        if !fenced {
            if let Guest::Xen(x) = &mut self.dom {
                // A Xen guest takes a while to reach its suspend point: the loop polls for it
                // (see poll_suspend) and keeps serving heartbeats and witnesses meanwhile.
                match x.src.request_suspend() {
                    Ok(()) => self.suspending = Some(t0),
                    Err(e) => log::error!("cannot suspend the domain: {e}"),
                }
                return;
            }
            if let Err(e) = self.dom.source().suspend() {
                log::error!("cannot suspend the domain: {e}");
                return;
            }
        }
        self.capture_and_send(now, t0, !fenced);
    }

    /// A full synchronisation is pre-copied while the guest runs, one step per call: start it,
    /// or copy its next pages. Whether the copy is complete, so the guest may be suspended for
    /// the rest; also true when a pre-copy cannot be made (the full sync is then copied while
    /// suspended, as with `precopy = false`).
    fn precopy_done(&mut self) -> bool {
        let ckpt = self.next_ckpt;
        if !self.staging.precopying() {
            match self
                .staging
                .start_precopy(self.dom.source(), ckpt, self.epoch)
            {
                Ok(()) => log::info!(
                    "checkpoint {ckpt}: full synchronisation, copying the guest's memory while it runs"
                ),
                Err(e) => {
                    log::warn!("checkpoint {ckpt}: no pre-copy ({e}); the full synchronisation is copied while the guest is suspended");
                    return true;
                }
            }
        }
        match self
            .staging
            .precopy_step(self.dom.source(), PRECOPY_STEP_PAGES)
        {
            Ok(done) => done,
            Err(e) => {
                log::warn!("checkpoint {ckpt}: pre-copy failed ({e}); the full synchronisation is copied while the guest is suspended");
                true
            }
        }
    }

    /// A Xen guest's suspend, asked for by a checkpoint or a fence, is polled from the loop:
    /// once the guest is there, capture (when staging is free) and resume it unless fenced.
    fn poll_suspend(&mut self, now: Nanos) {
        let Some(t0) = self.suspending else { return };
        let Guest::Xen(x) = &mut self.dom else {
            self.suspending = None;
            return;
        };
        match x.src.poll_suspend() {
            Ok(false) => {}
            Ok(true) => {
                self.suspending = None;
                self.stats.suspend_wait.record(self.clock.now().since(t0));
                // A fence that came meanwhile keeps the guest suspended after the capture.
                let resume = !self.fenced();
                if !self.may_checkpoint() {
                    // A fence's suspend with no checkpoint to take now (no standby session, or
                    // the last checkpoint still unacknowledged or being sent). A fenced guest
                    // stays suspended (an epoch tick captures it when it may); one unfenced
                    // meanwhile runs on.
                    if resume {
                        if let Err(e) = self.dom.source().resume() {
                            log::error!("cannot resume the domain: {e}");
                        }
                    }
                    return;
                }
                self.capture_and_send(now, t0, resume);
            }
            Err(e) => {
                self.suspending = None;
                if self.fenced() {
                    log::error!("fence: {e}; pausing the guest without its cooperation");
                    self.dom.pause_outright();
                } else {
                    log::error!("checkpoint {} skipped: {e}", self.next_ckpt);
                }
            }
        }
    }

    /// The model service's address was busy at start (the copy that served before still held
    /// it): try again.
    fn bind_service(&mut self, now: Nanos) {
        if self.service.is_some()
            || !matches!(self.dom, Guest::Model(_))
            || now < self.service_retry_at
        {
            return;
        }
        self.service_retry_at = now.plus(SERVICE_RETRY);
        match Service::try_bind(
            self.s.service,
            self.poll.registry(),
            SERVICE_BASE,
            self.s.max_clients,
        ) {
            Ok(Some(svc)) => {
                log::info!("model service on {}", svc.addr());
                self.service = Some(svc);
            }
            Ok(None) => {}
            Err(e) => log::error!("model service {}: {e}", self.s.service),
        }
    }

    /// Reserve the next block of checkpoint numbers in the state file (durably) before using
    /// `ckpt`; false if it cannot be written.
    fn reserve_checkpoints(&mut self, ckpt: u64) -> bool {
        let reserved = ckpt.saturating_add(hsb_common::node_state::CHECKPOINT_BLOCK);
        let st = NodeState {
            epoch: Epoch(self.epoch),
            role: NodeRole::Primary,
            checkpoint: reserved,
            incarnation: self.start.incarnation,
            maintenance: self.start.maintenance,
        };
        match st.save(&self.s.state_file) {
            Ok(()) => {
                self.start.reserved = reserved;
                true
            }
            Err(e) => {
                log::error!(
                    "checkpoint {ckpt} not taken: cannot reserve checkpoint numbers in {}: {e}",
                    self.s.state_file.display()
                );
                false
            }
        }
    }

    /// Capture the suspended domain into staging, resume it (unless fenced), seal and send.
    fn capture_and_send(&mut self, now: Nanos, t0: Nanos, resume: bool) {
        let ckpt = self.next_ckpt;
        if ckpt > self.start.reserved && !self.reserve_checkpoints(ckpt) {
            // Without the reservation on disk a restart could number checkpoints again:
            // better no checkpoint (output stays held) than one that can go back.
            return;
        }
        let full = self.need_full;
        let fenced = !resume;
        self.output.close(ckpt);
        if let Some(p) = self.plug.as_mut() {
            p.close(ckpt);
        }
        let mut recopied = None;
        let cap = if full && self.staging.precopying() {
            match self
                .staging
                .finish_precopy(self.dom.source(), ckpt, self.epoch)
            {
                Ok(p) => {
                    recopied = Some(p.recopied);
                    Ok(p.capture)
                }
                Err(e) => {
                    log::warn!(
                        "checkpoint {ckpt}: pre-copy not usable ({e}); copying all of it now"
                    );
                    self.staging
                        .capture(self.dom.source(), ckpt, self.epoch, full)
                }
            }
        } else {
            self.staging
                .capture(self.dom.source(), ckpt, self.epoch, full)
        };
        if !fenced {
            if let Err(e) = self.dom.source().resume() {
                log::error!("cannot resume the domain: {e}");
            }
        }
        let pause = self.clock.now().since(t0);
        // The epoch's disk writes (the guest does not run again before this returns).
        let cap = cap.and_then(|st| self.staging.put_disk(self.dom.source()).map(|()| st));
        let st = match cap {
            Ok(st) => st,
            Err(e) => {
                log::error!("checkpoint {ckpt} capture failed: {e}");
                return self.lose_standby(now, "capture failed");
            }
        };
        let Some(sess) = self.repl.as_mut().and_then(|r| r.session.as_mut()) else {
            return;
        };
        let len = match self.staging.seal(sess) {
            Ok(n) => n,
            Err(e) => {
                log::error!("checkpoint {ckpt} seal failed: {e}");
                return self.lose_standby(now, "seal failed");
            }
        };
        self.stats.pause.record(pause);
        self.stats.checkpoints += 1;
        self.stats.window_ckpts += 1;
        self.stats.last_dirty = st.pages;
        self.stats.pages_sent += st.pages;
        self.stats.window_pages += st.pages;
        self.stats.bytes_sent += len as u64;
        self.stats.window_bytes += len as u64;
        if full {
            self.stats.full_syncs += 1;
            log::info!(
                "checkpoint {ckpt}: full synchronisation, {} pages{}, {} KiB, pause {} ms{}",
                st.pages,
                recopied.map_or(String::new(), |r| format!(
                    " (pre-copied; {r} written meanwhile, copied again while suspended)"
                )),
                len >> 10,
                ms(pause),
                self.disk_debug()
            );
        } else {
            log::debug!(
                "checkpoint {ckpt}: {} pages, {} bytes, pause {} ms{}",
                st.pages,
                len,
                ms(pause),
                self.disk_debug()
            );
        }
        self.need_full = false;
        self.next_ckpt += 1;
        if let Some(d) = self.dom.source().disk() {
            d.set_open(self.next_ckpt);
        }
        self.unacked.push_back((ckpt, self.clock.now()));
        if full {
            self.full_unacked = Some(ckpt);
        }
        if self.failover.is_some() {
            self.authority_step(now, PInput::CheckpointSent { ckpt });
        }
        self.sending = Some(0);
        self.send_staged(now);
    }

    fn send_staged(&mut self, now: Nanos) {
        let (Some(pos), Some(r)) = (self.sending.as_mut(), self.repl.as_mut()) else {
            return;
        };
        // The session's confirmation, if still queued, goes first.
        match r.out.flush(&mut r.stream) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => return self.lose_standby(now, &format!("write failed: {e}")),
        }
        match write_some(&mut r.stream, self.staging.bytes(), pos) {
            Ok(true) => self.sending = None,
            Ok(false) => {}
            Err(e) => self.lose_standby(now, &format!("write failed: {e}")),
        }
    }

    fn log_stats(&mut self, now: Nanos) {
        let secs = self.s.stats_interval.as_secs_f64().max(1e-9);
        let state = match self.repl.as_ref().map(|r| r.phase) {
            Some(Phase::Streaming) => "protected",
            Some(_) => "connecting",
            None => "standby unreachable",
        };
        log::info!(
            "{state}: {:.1} ckpt/s, {:.0} pages/s, {:.1} MiB/s; acked {} ; pause p50 {} p99 {} max {} ms; ack rtt p99 {} ms; stretched {}; held output {} B; clients {}",
            self.stats.window_ckpts as f64 / secs,
            self.stats.window_pages as f64 / secs,
            self.stats.window_bytes as f64 / secs / (1u64 << 20) as f64,
            self.acked,
            ms(self.stats.pause.quantile(0.5)),
            ms(self.stats.pause.quantile(0.99)),
            ms(self.stats.pause.max()),
            ms(self.stats.ack_rtt.quantile(0.99)),
            self.stats.stretched,
            self.output.held_bytes(),
            self.service.as_ref().map_or(0, |s| s.clients())
        );
        if self.stats.stretched > self.stats.stretched_logged {
            log::warn!(
                "{} epochs stretched since the last report: the standby or the link is slower than the dirty rate (unacked {}, send in progress: {})",
                self.stats.stretched - self.stats.stretched_logged,
                self.unacked.len(),
                self.sending.is_some()
            );
            self.stats.stretched_logged = self.stats.stretched;
        }
        let _ = now;
        self.stats.window_ckpts = 0;
        self.stats.window_pages = 0;
        self.stats.window_bytes = 0;
    }

    fn status_text(&self, now: Nanos) -> String {
        let st = &self.stats;
        let state = match self.repl.as_ref().map(|r| r.phase) {
            Some(Phase::Streaming) => "protected",
            Some(Phase::AwaitHello) | Some(Phase::Connecting) => "connecting",
            None => "standby-unreachable",
        };
        let mut s = String::new();
        let mut kv = |k: &str, v: String| s.push_str(&format!("{k} {v}\n"));
        kv("role", "primary".into());
        kv("node", self.s.node.clone());
        kv("backend", self.dom.describe());
        kv("state", state.into());
        kv("standby", self.s.standby.to_string());
        kv("epoch", self.epoch.to_string());
        kv("uptime_s", format!("{:.1}", now.as_millis_f64() / 1e3));
        kv("epoch_period_ms", ms(self.s.epoch_period));
        kv("next_checkpoint", self.next_ckpt.to_string());
        kv("acked_checkpoint", self.acked.to_string());
        kv("unacked", self.unacked.len().to_string());
        kv("sending", self.sending.is_some().to_string());
        kv("checkpoints", st.checkpoints.to_string());
        kv("full_syncs", st.full_syncs.to_string());
        kv("sessions", st.sessions.to_string());
        kv("stretched_epochs", st.stretched.to_string());
        kv("last_dirty_pages", st.last_dirty.to_string());
        kv("pages_sent", st.pages_sent.to_string());
        kv("bytes_sent", st.bytes_sent.to_string());
        kv("pause_ms_p50", ms(st.pause.quantile(0.5)));
        kv("pause_ms_p99", ms(st.pause.quantile(0.99)));
        kv("pause_ms_max", ms(st.pause.max()));
        if matches!(self.dom, Guest::Xen(_)) {
            kv("suspend_wait_ms_p50", ms(st.suspend_wait.quantile(0.5)));
            kv("suspend_wait_ms_p99", ms(st.suspend_wait.quantile(0.99)));
        }
        kv("ack_rtt_ms_p50", ms(st.ack_rtt.quantile(0.5)));
        kv("ack_rtt_ms_p99", ms(st.ack_rtt.quantile(0.99)));
        kv("held_output_bytes", self.output.held_bytes().to_string());
        if let Some(svc) = &self.service {
            kv("service", svc.addr().to_string());
            kv("clients", svc.clients().to_string());
            kv("requests", st.requests.to_string());
        }
        if let Some(c) = self.dom.counter() {
            kv("counter", c.to_string());
        }
        if let Some(p) = &self.plug {
            kv("output_commit", "plug".into());
            kv(
                "output_held_for",
                p.pending()
                    .map_or("none".into(), |c| format!("checkpoint {c}")),
            );
            kv("output_releases", p.releases.to_string());
        }
        if let Some(f) = &self.failover {
            kv("failover", format!("on ({})", self.s.decision.policy));
            kv("authority", f.authority.mode(now).name().to_string());
            kv(
                "maintenance",
                if f.maintenance_until.is_some_and(|u| now < u) {
                    "on (automatic takeovers paused by the standby's operator)".into()
                } else {
                    "off".into()
                },
            );
            kv("fenced", f.fenced.to_string());
            kv("stepped_down", f.stepped_down.to_string());
            kv("heartbeats_sent", f.heartbeats.to_string());
            kv("bad_datagrams", f.bad_datagrams.to_string());
            for (k, v) in f.recorder.status() {
                kv(k, v);
            }
            kv(
                "last_decision",
                f.last_evidence.clone().unwrap_or_else(|| "none".into()),
            );
        } else {
            kv("failover", "off".into());
        }
        kv("staging_bytes", self.staging.capacity().to_string());
        self.disk_status(&mut kv);
        for (name, n) in FrameError::COUNTERS.iter().zip(st.frame_errors.iter()) {
            kv(&format!("frame_errors_{name}"), n.to_string());
        }
        s
    }
}

impl Primary {
    fn fenced(&self) -> bool {
        self.failover.as_ref().is_some_and(|f| f.fenced)
    }

    /// Heartbeats, the authority's timers, and output release.
    fn failover_tick(&mut self, now: Nanos) {
        let acked = self.acked;
        let Some(f) = self.failover.as_mut() else {
            return;
        };
        if now >= f.next_heartbeat && !f.stepped_down {
            f.next_heartbeat = now.plus(self.s.decision.heartbeat.interval);
            for (link, addr) in self.s.heartbeat_peers.clone().into_iter().enumerate() {
                let to = f.standby();
                f.send(
                    &Dgram::Heartbeat {
                        link: link as u8,
                        acked,
                    },
                    addr,
                    to,
                );
                f.heartbeats += 1;
            }
        }
        self.authority_step(now, PInput::Tick);
        self.release_under_authority(now);
        self.drop_silent_standby(now);
        if let Some(f) = self.failover.as_mut() {
            f.recorder.flush();
        }
    }

    /// Running unprotected under the witnesses' lease while a checkpoint has waited longer than
    /// a lease for its ack: the standby is gone for now (a cut link keeps the TCP connection
    /// open for many minutes). End the session, so that when the link heals the standby gets a
    /// fresh full synchronisation (DESIGN.md §2) rather than the stream resuming where it stopped.
    fn drop_silent_standby(&mut self, now: Nanos) {
        let Some(f) = self.failover.as_ref() else {
            return;
        };
        let streaming = self
            .repl
            .as_ref()
            .is_some_and(|r| r.phase == Phase::Streaming);
        if streaming
            && f.authority.mode(now) == Mode::Unprotected
            && silent_too_long(
                self.unacked.front().copied(),
                self.full_unacked,
                now,
                self.s.decision.lease.duration,
            )
        {
            self.lose_standby(
                now,
                "no acknowledgement for longer than a lease while running unprotected under the witnesses' lease; it gets a fresh full synchronisation when it is back",
            );
        }
    }

    /// Release what the authority allows: acknowledged output while protected, everything under
    /// a witness-quorum lease (or the baselines' unprotected mode), nothing otherwise.
    fn release_under_authority(&mut self, now: Nanos) {
        let Some(f) = self.failover.as_ref() else {
            return;
        };
        let upto = match f.authority.mode(now) {
            Mode::Protected => self.acked,
            Mode::Unprotected => u64::MAX,
            _ => return,
        };
        // The plug's release is a no-op when nothing it holds is covered.
        if self.output.held_bytes() > 0 || self.plug.is_some() {
            self.release(upto);
        }
    }

    fn authority_step(&mut self, now: Nanos, input: PInput) {
        let Some(f) = self.failover.as_mut() else {
            return;
        };
        let actions = f.authority.step(now, input);
        if input != PInput::Tick || !actions.is_empty() {
            f.recorder.input(now, AnyInput::Primary(input));
        }
        for a in actions {
            let Some(f) = self.failover.as_mut() else {
                return;
            };
            match a {
                PAction::RequestLeases(r) => {
                    log::debug!(
                        "asking the witnesses for a lease (request {}, last acked {})",
                        r.req,
                        r.last_acked
                    );
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
                    if !f.fenced {
                        f.fenced = true;
                        start_fence(&mut self.dom, &mut self.suspending, self.clock.now());
                        log::error!("FENCED: no authority to release output; the domain is paused and output held ({} bytes)", self.output.held_bytes());
                    }
                }
                PAction::Unfence { evidence } => {
                    f.evidence(log::Level::Warn, &evidence);
                    if f.fenced && !f.stepped_down {
                        f.fenced = false;
                        self.dom.unfence();
                        log::warn!("unfenced: authority regained; the domain runs again");
                    }
                }
                PAction::StepDown { epoch, evidence } => {
                    f.evidence(log::Level::Error, &evidence);
                    f.outbox.set_epoch(epoch.0);
                    // Written before anything else: a restart of this host must never make it
                    // the primary again (README: the restart matrix).
                    let st = NodeState {
                        epoch,
                        role: NodeRole::SteppedDown,
                        checkpoint: self.start.reserved,
                        incarnation: self.start.incarnation,
                        maintenance: self.start.maintenance,
                    };
                    if let Err(e) = st.save(&self.s.state_file) {
                        log::error!(
                            "cannot record the step-down in {}: {e}",
                            self.s.state_file.display()
                        );
                    }
                    let first = !f.stepped_down;
                    f.stepped_down = true;
                    if !f.fenced {
                        f.fenced = true;
                        start_fence(&mut self.dom, &mut self.suspending, self.clock.now());
                    }
                    log::error!(
                        "STEPPED DOWN: epoch {} is active elsewhere; this domain stays paused and its held output is never released",
                        epoch.0
                    );
                    if first {
                        self.on_fence(epoch.0);
                    }
                    // A switching standby waits for the final checkpoint: rejoin after it.
                    let after_confirm = self
                        .failover
                        .as_mut()
                        .filter(|f| f.confirm.is_some())
                        .map(|f| f.rejoin_after_confirm = true)
                        .is_some();
                    if !after_confirm {
                        self.rejoin();
                    }
                }
                PAction::RequestFullSync => {}
                PAction::ConfirmFenced { epoch, .. } => {
                    // Confirmed once a final checkpoint of the suspended domain is on its way,
                    // so the standby activates with everything this primary did.
                    log::warn!(
                        "switchover to epoch {epoch}: a final checkpoint of the fenced domain, then the confirmation"
                    );
                    f.confirm = Some((epoch, self.clock.now()));
                }
                PAction::Alert { evidence } => f.evidence(log::Level::Warn, &evidence),
            }
        }
    }

    fn on_udp(&mut self, now: Nanos) {
        let mut buf = [0u8; MAX_DATAGRAM];
        loop {
            let Some(f) = self.failover.as_mut() else {
                return;
            };
            let (n, from) = match f.udp.recv_from(&mut buf) {
                Ok(v) => v,
                Err(_) => return,
            };
            let (env, m) = match wire::open(&mut f.inbox, &buf[..n]) {
                Ok(v) => v,
                Err(e) => {
                    f.bad_datagrams += 1;
                    hsb_common::datagram::log_rejected(f.bad_datagrams, from, &e);
                    continue;
                }
            };
            match m {
                Dgram::Ping { nonce } => {
                    if !f.stepped_down {
                        f.send(&Dgram::Pong { nonce }, from, Dest::node(env.from));
                    }
                }
                Dgram::LeaseReply(r) => self.authority_step(now, PInput::LeaseReply(r)),
                Dgram::FenceRequest { epoch } => {
                    log::warn!(
                        "the standby asks this primary to fence for a switchover to epoch {}",
                        epoch.0
                    );
                    self.authority_step(now, PInput::FenceRequest { epoch });
                }
                Dgram::Report(_) => {}
                Dgram::Maintenance { on } => {
                    let Some(f) = self.failover.as_mut() else {
                        return;
                    };
                    if on && f.maintenance_until.is_none() {
                        log::warn!(
                            "the standby's operator paused automatic takeovers (maintenance)"
                        );
                    }
                    f.maintenance_until = on.then(|| now.plus(Duration::from_secs(3)));
                }
                other => log::debug!("ignored {} from {from}", other.name()),
            }
        }
    }
}

impl Primary {
    /// A switchover's fence confirmation is owed: take a final checkpoint of the suspended
    /// domain, and once it is written to the standby's connection, confirm with its number and
    /// rejoin as the standby. Without a session, or if the checkpoint cannot be taken within
    /// half a lease (the domain did not suspend cooperatively, say), confirm with the last
    /// checkpoint sent: nothing acknowledged depends on the final one.
    fn final_checkpoint(&mut self, now: Nanos) {
        let Some((epoch, since)) = self.failover.as_ref().and_then(|f| f.confirm) else {
            return;
        };
        let final_ckpt = self.failover.as_ref().and_then(|f| f.final_ckpt);
        let streaming = self
            .repl
            .as_ref()
            .is_some_and(|r| r.phase == Phase::Streaming);
        let late = now.since(since) > self.s.decision.lease.duration / 2;
        let confirm = match final_ckpt {
            Some(n) if self.sending.is_none() => Some(n),
            Some(_) if !streaming || late => Some(self.next_ckpt.saturating_sub(1)),
            Some(_) => None,
            None if !streaming || late => Some(self.next_ckpt.saturating_sub(1)),
            None => {
                // (A full synchronisation first waits for its disk resynchronisation's copy.)
                let disk_ready = !self.need_full || self.disk_ready_for_full(now);
                if self.dom.is_suspended()
                    && self.sending.is_none()
                    && self.suspending.is_none()
                    && disk_ready
                {
                    let n = self.next_ckpt;
                    self.capture_and_send(now, self.clock.now(), false);
                    if self.next_ckpt > n {
                        if let Some(f) = self.failover.as_mut() {
                            f.final_ckpt = Some(n);
                        }
                        log::warn!("switchover: final checkpoint {n} captured");
                    }
                }
                None
            }
        };
        let Some(ckpt) = confirm else {
            return;
        };
        let to = self.s.standby_witness;
        let Some(f) = self.failover.as_mut() else {
            return;
        };
        let dest = f.standby();
        // Sent twice: the standby waits for it, and a datagram can be lost.
        for _ in 0..2 {
            f.send(&Dgram::Fenced { epoch, ckpt }, to, dest);
        }
        f.confirm = None;
        log::warn!("switchover to epoch {epoch}: fenced, final checkpoint {ckpt}; confirmed");
        if std::mem::take(&mut f.rejoin_after_confirm) {
            self.rejoin();
        }
    }

    /// Run the `on_fence` command once this primary has stepped down, waiting for it (at most
    /// 2 s: the domain is paused for good, so the loop has nothing else to serve).
    fn on_fence(&self, epoch: u64) {
        let Some((prog, args)) = self.s.on_fence.split_first() else {
            return;
        };
        let spawned = std::process::Command::new(prog)
            .args(args)
            .env("HSB_EPOCH", epoch.to_string())
            .env("HSB_NODE", &self.s.node)
            .stdin(std::process::Stdio::null())
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                log::error!("on_fence: cannot run {prog}: {e}");
                return;
            }
        };
        let started = std::time::Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(s)) if s.success() => {
                    log::info!("on_fence: done in {} ms", started.elapsed().as_millis());
                    return;
                }
                Ok(Some(s)) => {
                    log::error!("on_fence: failed ({s})");
                    return;
                }
                Ok(None) if started.elapsed() < Duration::from_secs(2) => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(None) => {
                    log::error!("on_fence: still running after 2 s; killed");
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
                Err(e) => {
                    log::error!("on_fence: {e}");
                    return;
                }
            }
        }
    }

    /// After stepping down: become this node's standby (exec hsb-standby with `rejoin_config`),
    /// which the new primary then synchronises from scratch. Returns only if that fails.
    fn rejoin(&mut self) {
        // The standby this host becomes reports exactly what this primary wrote since its
        // last acknowledged checkpoint.
        self.persist_disk("stepping down");
        if self.s.rejoin_config.as_os_str().is_empty() {
            log::error!("no rejoin_config: restart this node as hsb-standby to resynchronise it");
            return;
        }
        let e = exec_standby(&self.s.rejoin_config, &self.s.state_file);
        log::error!("rejoin: exec hsb-standby failed: {e}; staying paused");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_standby_is_dropped_after_a_lease_but_never_during_a_full_sync() {
        let lease = Duration::from_secs(6);
        let t = |s: u64| Nanos::from_millis(s * 1000);
        // Nothing outstanding: nothing to wait for.
        assert!(!silent_too_long(None, None, t(100), lease));
        // An incremental checkpoint unacknowledged for longer than a lease: drop the session.
        assert!(!silent_too_long(Some((7, t(10))), None, t(16), lease));
        assert!(silent_too_long(Some((7, t(10))), None, t(17), lease));
        // The full synchronisation (checkpoint 1) still outstanding: keep waiting, however
        // long it takes to copy and apply (the rig's 128 MiB took longer than its lease).
        assert!(!silent_too_long(Some((1, t(10))), Some(1), t(60), lease));
        // Once it is acknowledged, the incremental ones after it are held to the lease again.
        assert!(silent_too_long(Some((2, t(10))), None, t(17), lease));
    }
}
