//! hsb-standby: keeps a paused replica of the protected domain. It stages each checkpoint
//! whole, verifies it, applies it, and only then acknowledges it. `activate` makes the replica
//! serve from the last applied checkpoint.
//!
//! One single-threaded mio loop: the replication listener and connections, the control socket,
//! and (after activation, with the `model` backend) the model domain's service.

mod config;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use hsb_common::checkpoint::Receiver;
use hsb_common::cli::Args;
use hsb_common::config::{reference_markdown, Config};
use hsb_common::conn::{Fill, FrameReader, OutQueue};
use hsb_common::ctl::{self, CtlServer};
use hsb_common::frame::{FrameError, Kind, HEADER_LEN};
use hsb_common::key::ClusterKey;
use hsb_common::model::ModelDomain;
use hsb_common::msg::{self, Ack, Hello, Refuse, Role};
use hsb_common::service::{ClientId, Handler, Service};
use hsb_common::session::{self, Session, Side};
use hsb_common::stats::{ms, Histogram};
use hsb_common::time::{Clock, Nanos};

use config::{Settings, SCHEMA};

const LISTENER: Token = Token(1);
const CONN_BASE: usize = 2;
const CONN_SLOTS: usize = 2;
const CTL_BASE: usize = 10;
const SERVICE_BASE: usize = 1000;

const USAGE: &str = "\
hsb-standby: keep a verified replica of the protected domain and activate it on demand

usage:
  hsb-standby run -c FILE [--set key=value]...      run the daemon
  hsb-standby status [-c FILE | --control PATH]     show the running daemon's state
  hsb-standby activate [-c FILE | --control PATH]   make the replica serve from the last applied checkpoint
  hsb-standby check -c FILE [--set key=value]...    validate the configuration and key, then exit
  hsb-standby config-reference                      print every configuration key
  hsb-standby --version

Logging: HSB_LOG=debug|info|warn (default info).";

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1), &["force"]) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("hsb-standby: {e}");
            return ExitCode::from(2);
        }
    };
    if args.flag("help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if args.flag("version") {
        println!("hsb-standby {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    match args.command.as_deref() {
        Some("run") => run(&args),
        Some("check") => match load(&args) {
            Ok((s, _)) => {
                println!(
                    "configuration ok: listening on {}, model {} pages",
                    s.listen, s.model_pages
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        Some("status") => control(&args, "status"),
        Some("digest") => control(&args, "digest"),
        Some("activate") => control(
            &args,
            if args.flag("force") {
                "activate --force"
            } else {
                "activate"
            },
        ),
        Some("config-reference") => {
            print!("{}", reference_markdown(SCHEMA));
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

fn load(args: &Args) -> Result<(Settings, ClusterKey), String> {
    let cfg =
        Config::load(SCHEMA, args.config.as_deref(), &args.sets).map_err(|e| e.to_string())?;
    let s = Settings::from_config(&cfg).map_err(|e| e.to_string())?;
    let key = ClusterKey::load(&s.cluster_key).map_err(|e| e.to_string())?;
    Ok((s, key))
}

fn control(args: &Args, cmd: &str) -> ExitCode {
    let path = match &args.control {
        Some(p) => p.clone(),
        None => match Config::load(SCHEMA, args.config.as_deref(), &args.sets) {
            Ok(c) => match c.path("control") {
                Ok(p) => p,
                Err(e) => return fail(&e.to_string()),
            },
            Err(_) if args.config.is_none() => PathBuf::from("/run/hsb/standby.sock"),
            Err(e) => return fail(&e.to_string()),
        },
    };
    match ctl::request(&path, cmd, Duration::from_secs(10)) {
        Ok(out) => {
            print!("{out}");
            if out.starts_with("error") {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => fail(&e.to_string()),
    }
}

fn run(args: &Args) -> ExitCode {
    hsb_common::logging::init("standby");
    let (s, key) = match load(args) {
        Ok(v) => v,
        Err(e) => return fail(&e),
    };
    match Standby::new(s, key).and_then(|p| p.run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string()),
    }
}

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    reader: FrameReader,
    session: Option<Session>,
    out: OutQueue,
    /// A frame under the session key has arrived: the peer holds the cluster key and is live.
    authenticated: bool,
    /// Close once `out` is flushed (after a refusal).
    closing: bool,
    node: String,
}

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
    window_applied: u64,
    window_bytes: u64,
    requests: u64,
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
    replica: ModelDomain,
    ctl: CtlServer,
    service: Option<Service>,
    activated: Option<u64>,
    epoch: u64,
    next_stats: Nanos,
    stats: Stats,
}

/// Requests of the activated replica's service: answered at once (no standby behind it).
struct Direct<'a> {
    dom: &'a mut ModelDomain,
    requests: &'a mut u64,
}

impl Handler for Direct<'_> {
    fn can_take(&mut self) -> bool {
        true
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
    fn new(s: Settings, key: ClusterKey) -> io::Result<Standby> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(s.listen).map_err(|e| {
            io::Error::new(e.kind(), format!("replication address {}: {e}", s.listen))
        })?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let ctl = CtlServer::bind(&s.control, poll.registry(), CTL_BASE).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("control socket {}: {e}", s.control.display()),
            )
        })?;
        let receiver = Receiver::new(s.model_pages);
        log::info!(
            "node {} (model backend: the hypervisor test double): replica of {} pages ({} MiB), staging {} MiB allocated; waiting for the primary on {}",
            s.node,
            s.model_pages,
            (s.model_pages * 4096) >> 20,
            receiver.capacity() >> 20,
            s.listen
        );
        let clock = Clock::new();
        Ok(Standby {
            replica: ModelDomain::blank(s.model_pages),
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
            epoch: 1,
            stats: Stats::default(),
        })
    }

    fn run(mut self) -> io::Result<()> {
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
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let now = self.clock.now();
            if self.activated.is_some() {
                self.replica.run(now);
            }
            for ev in events.iter() {
                let t = ev.token();
                if t == LISTENER {
                    self.accept();
                } else if (CONN_BASE..CONN_BASE + CONN_SLOTS).contains(&t.0) {
                    self.on_conn(now, t.0 - CONN_BASE);
                } else if self.ctl.owns(t) {
                    if let Some((conn, cmd)) = self.ctl.on_event(self.poll.registry(), t) {
                        let text = self.command(now, &cmd);
                        self.ctl.answer(self.poll.registry(), conn, &text);
                    }
                } else if let Some(svc) = self.service.as_mut() {
                    if svc.owns(t) {
                        let mut h = Direct {
                            dom: &mut self.replica,
                            requests: &mut self.stats.requests,
                        };
                        svc.on_event(self.poll.registry(), t, &mut h);
                    }
                }
            }
            let now = self.clock.now();
            if self.s.stats_interval > Duration::ZERO && now >= self.next_stats {
                self.log_stats(now);
                self.next_stats = now.plus(self.s.stats_interval);
            }
        }
    }

    /// Execute a control command and return its answer.
    fn command(&mut self, now: Nanos, cmd: &str) -> String {
        match cmd {
            "status" | "" => self.status_text(now),
            "digest" => format!(
                "applied_checkpoint {}\ndigest {:08x}\n",
                self.receiver
                    .applied()
                    .map_or("none".into(), |a| a.to_string()),
                self.replica.digest()
            ),
            "activate" | "activate --force" => match (self.activated, self.receiver.applied()) {
                (Some(n), _) => format!("already active since checkpoint {n}\n"),
                (None, None) => {
                    "error: nothing to activate: no checkpoint has been applied yet\n".to_string()
                }
                (None, Some(n)) => match self.activate(now) {
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
            },
            other => format!("error: unknown command '{other}'; try: status, digest, activate\n"),
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, peer)) => {
                    // Prefer a free slot; otherwise replace a connection that never authenticated.
                    let slot = self.conns.iter().position(Option::is_none).or_else(|| {
                        self.conns
                            .iter()
                            .position(|c| c.as_ref().is_some_and(|c| !c.authenticated))
                    });
                    let Some(i) = slot else {
                        log::warn!("replication: refusing {peer}: a session is active and another is opening");
                        continue;
                    };
                    self.close(i, "replaced by a newer connection");
                    let _ = stream.set_nodelay(true);
                    if let Err(e) = self.poll.registry().register(
                        &mut stream,
                        Token(CONN_BASE + i),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        log::warn!("replication: cannot register {peer}: {e}");
                        continue;
                    }
                    log::info!("replication: connection from {peer}");
                    self.conns[i] = Some(Conn {
                        stream,
                        peer,
                        reader: FrameReader::new(self.s.frame_max),
                        session: None,
                        out: OutQueue::new(64 * 1024),
                        authenticated: false,
                        closing: false,
                        node: String::new(),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::warn!("replication: accept failed: {e}");
                    return;
                }
            }
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
                log::info!("replication: connection from {} closed: {why}", c.peer);
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
            if c.closing {
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
            loop {
                let Some(c) = self.conns[i].as_mut() else {
                    return;
                };
                let (kind, frame) = match c.reader.next_frame() {
                    Ok(Some((h, f))) => (h.kind, f.to_vec()),
                    Ok(None) => break,
                    Err(e) => return self.frame_error(i, e),
                };
                if let Err(e) = self.on_frame(now, i, kind, &frame) {
                    return self.frame_error(i, e);
                }
            }
        }
    }

    fn frame_error(&mut self, i: usize, e: FrameError) {
        if let Some(k) = FrameError::COUNTERS.iter().position(|c| *c == e.counter()) {
            self.stats.frame_errors[k] += 1;
        }
        let peer = self.conns[i]
            .as_ref()
            .map(|c| c.peer.to_string())
            .unwrap_or_default();
        log::warn!(
            "replication: bad frame from {peer} ({}): {e}; dropping the connection",
            e.counter()
        );
        self.close(i, &format!("bad frame: {e}"));
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
        let Some(sess) = c.session.as_mut() else {
            // First frame: the primary's Hello, under the hello key.
            let h = session::open_hello(&self.key, frame)?;
            let mut nonce = [0u8; 16];
            hsb_common::rng::os_random(&mut nonce).map_err(|_| FrameError::Body {
                kind,
                why: "no randomness for a nonce",
            })?;
            let mut sess = Session::new(&self.key, &h.nonce, &nonce, Side::Responder);
            let mine = Hello {
                role: Role::Standby,
                node: msg::node_name(&self.s.node),
                epoch: self.epoch,
                nonce,
                domain_pages: self.s.model_pages,
                last_ckpt: self.receiver.applied().unwrap_or(0),
            };
            let mut buf = [0u8; 512];
            let n = sess
                .write(Kind::Hello, &mine, &mut buf)
                .map_err(|_| FrameError::Body {
                    kind,
                    why: "cannot encode",
                })?;
            c.out.push(&buf[..n]);
            c.node = h.node.to_string();
            let refuse = if h.role != Role::Primary {
                Some(format!("peer role {:?} is not a primary", h.role))
            } else if h.domain_pages != self.s.model_pages {
                Some(format!(
                    "domain size mismatch: primary has {} pages, this replica {}; set model.memory alike on both",
                    h.domain_pages, self.s.model_pages
                ))
            } else {
                self.activated.map(|n| {
                    format!(
                        "standby {} is active since checkpoint {n}; it takes no checkpoints",
                        self.s.node
                    )
                })
            };
            if let Some(reason) = refuse {
                log::warn!("replication: refusing {} ({}): {reason}", c.peer, c.node);
                let n = sess
                    .write(
                        Kind::Refuse,
                        &Refuse {
                            reason: msg::reason(&reason),
                        },
                        &mut buf,
                    )
                    .map_err(|_| FrameError::Body {
                        kind,
                        why: "cannot encode",
                    })?;
                c.out.push(&buf[..n]);
                c.closing = true;
            }
            c.session = Some(sess);
            let _ = c.out.flush(&mut c.stream);
            return Ok(());
        };
        let hash = sess.open(frame)?;
        if !c.authenticated {
            c.authenticated = true;
            let peer = c.peer;
            let node = c.node.clone();
            // This connection now owns replication; an older one is dropped.
            for j in 0..CONN_SLOTS {
                if j != i && self.conns[j].is_some() {
                    self.close(j, "superseded by a new session");
                }
            }
            self.current = Some(i);
            self.receiver.new_session();
            self.stats.sessions += 1;
            log::info!("replication: session with {peer} ({node}) authenticated; expecting a full synchronisation");
        }
        if self.current != Some(i) {
            return Err(FrameError::Unexpected {
                kind,
                state: "not the current session",
            });
        }
        let body = &frame[HEADER_LEN..];
        let Some(done) = self.receiver.on_frame(kind, body, &hash)? else {
            return Ok(());
        };
        let t0 = self.clock.now();
        let ckpt = self.receiver.apply(&mut self.replica).map_err(|e| {
            log::error!("applying checkpoint {} failed: {e}", done.ckpt);
            FrameError::Body {
                kind,
                why: "apply failed",
            }
        })?;
        let took = self.clock.now().since(t0);
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
        let Some(c) = self.conns[i].as_mut() else {
            return Ok(());
        };
        let Some(sess) = c.session.as_mut() else {
            return Ok(());
        };
        let mut buf = [0u8; 128];
        let n = sess
            .write(
                Kind::Ack,
                &Ack {
                    ckpt,
                    epoch: self.epoch,
                },
                &mut buf,
            )
            .map_err(|_| FrameError::Body {
                kind,
                why: "cannot encode",
            })?;
        if !c.out.push(&buf[..n]) {
            return Err(FrameError::Unexpected {
                kind,
                state: "ack queue full: the primary does not read",
            });
        }
        let _ = c.out.flush(&mut c.stream);
        Ok(())
    }

    fn activate(&mut self, now: Nanos) -> io::Result<()> {
        let Some(ckpt) = self.receiver.applied() else {
            return Ok(());
        };
        for i in 0..CONN_SLOTS {
            self.close(i, "standby activated");
        }
        self.activated = Some(ckpt);
        self.epoch += 1;
        self.replica.reset_clock();
        self.replica.set_rate(self.s.dirty_rate);
        self.replica.run(now);
        let svc = Service::bind(
            self.s.service,
            self.poll.registry(),
            SERVICE_BASE,
            self.s.max_clients,
        )
        .map_err(|e| io::Error::new(e.kind(), format!("model service {}: {e}", self.s.service)))?;
        log::warn!(
            "ACTIVATED by operator: replica at checkpoint {ckpt} (counter {}) now serves on {}; epoch {}",
            self.replica.counter(),
            svc.addr(),
            self.epoch
        );
        self.service = Some(svc);
        Ok(())
    }

    fn log_stats(&mut self, now: Nanos) {
        let secs = self.s.stats_interval.as_secs_f64().max(1e-9);
        if self.activated.is_some() {
            log::info!(
                "active: counter {}, {} requests served",
                self.replica.counter(),
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
        kv("backend", "model (hypervisor test double)".into());
        kv("state", self.state().into());
        kv("epoch", self.epoch.to_string());
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
        kv("counter", self.replica.counter().to_string());
        kv(
            "service",
            self.service
                .as_ref()
                .map_or("none".into(), |s| s.addr().to_string()),
        );
        kv("requests", st.requests.to_string());
        for (name, n) in FrameError::COUNTERS.iter().zip(st.frame_errors.iter()) {
            kv(&format!("frame_errors_{name}"), n.to_string());
        }
        s
    }
}
