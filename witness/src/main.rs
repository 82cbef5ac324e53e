//! hsb-witness: runs on client machines, probes the protected application the way clients use
//! it, pings the two hsb daemons, and reports to the standby and the primary. It answers the
//! standby's takeover votes and the primary's lease requests through the witness core, which
//! never grants a lease and a takeover vote at overlapping times (DESIGN.md rule 3).
//!
//! One single-threaded mio loop: the UDP endpoint, the probe (a socket or a child process), the
//! control socket, and timers.

mod config;
// The engine's API is complete (status, limits, defaults); the daemon uses part of it.
#[allow(dead_code, unused_imports)]
mod probe;

use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};

use hsb_common::cli::Args;
use hsb_common::config::{reference_markdown, Config};
use hsb_common::ctl::CtlServer;
use hsb_common::datagram::{Inbox, Outbox, Sender, MAX_DATAGRAM};
use hsb_common::decision::proto::{ProbeClass, ProbeTarget};
use hsb_common::decision::witness::{Action, Input, Persisted};
use hsb_common::decision::{Epoch, WitnessCore};
use hsb_common::key::ClusterKey;
use hsb_common::msg::Role;
use hsb_common::time::{Clock, Nanos};
use hsb_common::wire::{self, Dgram};

use config::{schema, Settings};
use probe::{Class, ProbeSet};

const UDP: Token = Token(1);
const PROBE_BASE: usize = 100;
const CTL_BASE: usize = 10;

const USAGE: &str = "\
hsb-witness: probe the protected application as its clients do, and vote on failovers

usage:
  hsb-witness run -c FILE [--set key=value]...    run the witness
  hsb-witness status [-c FILE | --control PATH]   what it sees, what it granted
  hsb-witness check -c FILE [--set key=value]...  validate the configuration and key, then exit
  hsb-witness config-reference                    print every configuration key
  hsb-witness --version

Logging: HSB_LOG=debug|info|warn (default info).";

fn main() -> ExitCode {
    let args =
        match hsb_common::cli::start("hsb-witness", env!("CARGO_PKG_VERSION"), USAGE, &[], &[]) {
            Ok(a) => a,
            Err(code) => return code,
        };
    match args.command.as_deref() {
        Some("run") => {
            hsb_common::logging::init("witness");
            match load(&args).map_err(|e| e.to_string()).and_then(|(s, k)| {
                Witness::new(s, k)
                    .and_then(|w| w.run())
                    .map_err(|e| e.to_string())
            }) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("hsb-witness: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some("check") => match load(&args) {
            Ok((s, _)) => {
                println!(
                    "configuration ok: witness {} (id {}) on {}, probing {:?}, primary {}, standby {}, policy {}",
                    s.node, s.id, s.listen, s.probe.kind, s.primary, s.standby, s.decision.policy
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("hsb-witness: {e}");
                ExitCode::FAILURE
            }
        },
        Some("status") => ExitCode::from(hsb_common::ctl::cli(
            "hsb-witness",
            &args,
            schema(),
            "/run/hsb/witness.sock",
            "status",
        )),
        Some("config-reference") => {
            print!("{}", reference_markdown(schema()));
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("hsb-witness: unknown command '{other}'\n\n{USAGE}");
            ExitCode::from(2)
        }
        None => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn load(args: &Args) -> Result<(Settings, ClusterKey), String> {
    let cfg =
        Config::load(schema(), args.config.as_deref(), &args.sets).map_err(|e| e.to_string())?;
    let s = Settings::from_config(&cfg).map_err(|e| e.to_string())?;
    let key = ClusterKey::load_configured(&cfg, "cluster_key").map_err(|e| e.to_string())?;
    Ok((s, key))
}

/// A host (daemon) ping in flight.
#[derive(Default)]
struct Ping {
    nonce: u64,
    sent: Option<Nanos>,
    answered: u64,
    missed: u64,
}

struct Witness {
    s: Settings,
    clock: Clock,
    poll: Poll,
    udp: UdpSocket,
    inbox: Inbox,
    outbox: Outbox,
    core: WitnessCore,
    probes: ProbeSet,
    ctl: CtlServer,
    pings: [Ping; 2],
    next_ping: Nanos,
    next_report: Nanos,
    saved: Persisted,
    bad_datagrams: u64,
    votes_granted: u64,
    votes_refused: u64,
    leases_granted: u64,
    leases_refused: u64,
}

fn load_state(path: &std::path::Path) -> Option<Persisted> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut p = Persisted::default();
    for line in text.lines() {
        match line.split_once(' ') {
            Some(("epoch_seen", v)) => p.epoch_seen = Epoch(v.trim().parse().ok()?),
            Some(("promised", "none")) => p.promised = None,
            Some(("promised", v)) => p.promised = Some(Epoch(v.trim().parse().ok()?)),
            _ => {}
        }
    }
    Some(p)
}

fn save_state(path: &std::path::Path, p: &Persisted) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let promised = p.promised.map_or("none".to_string(), |e| e.0.to_string());
    std::fs::write(
        &tmp,
        format!("epoch_seen {}\npromised {promised}\n", p.epoch_seen.0),
    )?;
    std::fs::rename(&tmp, path)
}

impl Witness {
    fn new(s: Settings, key: ClusterKey) -> io::Result<Witness> {
        let poll = Poll::new()?;
        let mut udp = UdpSocket::bind(s.listen)
            .map_err(|e| io::Error::new(e.kind(), format!("witness address {}: {e}", s.listen)))?;
        poll.registry()
            .register(&mut udp, UDP, Interest::READABLE)?;
        let ctl = CtlServer::bind(&s.control, poll.registry(), CTL_BASE).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("control socket {}: {e}", s.control.display()),
            )
        })?;
        let clock = Clock::new();
        let now = clock.now();
        let saved = load_state(&s.state_file);
        // Always the safe constructor: it grants nothing until any lease an earlier incarnation
        // may have granted has run out.
        let core = WitnessCore::new(s.decision.clone(), s.id, now, saved);
        let mut inc = [0u8; 8];
        hsb_common::rng::os_random(&mut inc)?;
        let outbox = Outbox::new(
            &key,
            Sender {
                role: Role::Witness,
                id: u32::from(s.id),
            },
            inc,
            core.epoch_seen().0,
        );
        log::info!(
            "witness {} (id {}) on {}: probing {:?} every {:?}; primary {}, standby {}; policy {}; rollback guard {}; no votes or leases for {:?} (longest lease)",
            s.node,
            s.id,
            udp.local_addr()?,
            s.probe.kind,
            s.probe.interval,
            s.primary,
            s.standby,
            s.decision.policy,
            saved.map_or("fresh".to_string(), |p| format!("epoch {} promised {:?}", p.epoch_seen.0, p.promised.map(|e| e.0))),
            s.decision.lease.max_duration
        );
        let probes = ProbeSet::new(vec![s.probe.clone()], PROBE_BASE)
            .map_err(|e| io::Error::other(format!("probe: {e}")))?;
        Ok(Witness {
            inbox: Inbox::new(&key),
            saved: core.persisted(),
            core,
            outbox,
            probes,
            ctl,
            pings: [Ping::default(), Ping::default()],
            next_ping: now,
            next_report: now,
            bad_datagrams: 0,
            votes_granted: 0,
            votes_refused: 0,
            leases_granted: 0,
            leases_refused: 0,
            s,
            clock,
            poll,
            udp,
        })
    }

    fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(64);
        loop {
            let now = self.clock.now();
            let mut deadline = self.next_ping.min(self.next_report);
            if let Some(d) = self.probes.poll_timeout(self.clock.instant(now)) {
                deadline = deadline.min(now.plus(d));
            }
            if let Some(d) = self.core.next_deadline() {
                deadline = deadline.min(d);
            }
            for p in &self.pings {
                if let Some(t) = p.sent {
                    deadline = deadline.min(t.plus(self.s.probe.timeout));
                }
            }
            let timeout = deadline.since(now).max(Duration::from_micros(200));
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let now = self.clock.now();
            for ev in events.iter() {
                let t = ev.token();
                if t == UDP {
                    self.on_udp(now);
                } else if self.probes.owns(t) {
                    self.probes
                        .on_event(self.poll.registry(), ev, self.clock.instant(now));
                } else if self.ctl.owns(t) {
                    if let Some((conn, cmd)) = self.ctl.on_event(self.poll.registry(), t) {
                        let text = match cmd.as_str() {
                            "status" | "" => self.status_text(now),
                            other => format!("error: unknown command '{other}'; try: status\n"),
                        };
                        self.ctl.answer(self.poll.registry(), conn, &text);
                    }
                }
            }
            let now = self.clock.now();
            self.probes
                .on_tick(self.poll.registry(), self.clock.instant(now));
            let results: Vec<_> = self.probes.take_results().collect();
            for r in results {
                let class = match r.class {
                    Class::Ok => ProbeClass::Ok,
                    Class::Refused => ProbeClass::Refused,
                    Class::Timeout => ProbeClass::Timeout,
                    Class::AppError => ProbeClass::AppError,
                };
                self.probe_result(now, ProbeTarget::PrimaryApp, class, &r.detail);
            }
            self.pings_tick(now);
            self.step(now, Input::Tick, None);
            if now >= self.next_report {
                self.next_report = now.plus(self.s.report_interval);
                let report = Dgram::Report(self.core.report(now));
                self.send(&report, self.s.standby);
                self.send(&report, self.s.primary);
            }
        }
    }

    fn probe_result(&mut self, now: Nanos, target: ProbeTarget, class: ProbeClass, detail: &str) {
        let before = self.core.view(now);
        self.step(now, Input::Probe { target, class }, None);
        let after = self.core.view(now);
        if before != after {
            log::info!(
                "view changed after {target} probe {class} ({detail}): application {} -> {}, primary daemon {} -> {}, standby daemon {} -> {}",
                before.app, after.app, before.primary_host, after.primary_host, before.standby_host, after.standby_host
            );
        }
    }

    fn pings_tick(&mut self, now: Nanos) {
        for (i, target) in [ProbeTarget::PrimaryHost, ProbeTarget::StandbyHost]
            .into_iter()
            .enumerate()
        {
            if let Some(sent) = self.pings[i].sent {
                if now >= sent.plus(self.s.probe.timeout) {
                    self.pings[i].sent = None;
                    self.pings[i].missed += 1;
                    self.probe_result(now, target, ProbeClass::Timeout, "no pong");
                }
            }
        }
        if now < self.next_ping {
            return;
        }
        self.next_ping = now.plus(self.s.probe.interval);
        for (i, addr) in [self.s.primary, self.s.standby].into_iter().enumerate() {
            if self.pings[i].sent.is_some() {
                continue;
            }
            self.pings[i].nonce = self.pings[i].nonce.wrapping_add(1);
            self.pings[i].sent = Some(now);
            let m = Dgram::Ping {
                nonce: self.pings[i].nonce,
            };
            self.send(&m, addr);
        }
    }

    fn send(&mut self, m: &Dgram, to: SocketAddr) {
        let mut buf = [0u8; MAX_DATAGRAM];
        match wire::seal(&mut self.outbox, m, &mut buf) {
            Ok(n) => {
                if let Err(e) = self.udp.send_to(&buf[..n], to) {
                    if e.kind() != io::ErrorKind::WouldBlock {
                        log::debug!("send {} to {to}: {e}", m.name());
                    }
                }
            }
            Err(e) => log::error!("cannot encode {}: {e}", m.name()),
        }
    }

    fn on_udp(&mut self, now: Nanos) {
        let mut buf = [0u8; MAX_DATAGRAM];
        loop {
            let (n, from) = match self.udp.recv_from(&mut buf) {
                Ok(v) => v,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::debug!("recv: {e}");
                    return;
                }
            };
            let (env, m) = match wire::open(&mut self.inbox, &buf[..n]) {
                Ok(v) => v,
                Err(e) => {
                    self.bad_datagrams += 1;
                    hsb_common::datagram::log_rejected(self.bad_datagrams, from, &e);
                    continue;
                }
            };
            match m {
                Dgram::Pong { nonce } => {
                    let i = match env.from.role {
                        Role::Primary => 0,
                        Role::Standby => 1,
                        Role::Witness => continue,
                    };
                    if self.pings[i].sent.is_some() && self.pings[i].nonce == nonce {
                        self.pings[i].sent = None;
                        self.pings[i].answered += 1;
                        let target = if i == 0 {
                            ProbeTarget::PrimaryHost
                        } else {
                            ProbeTarget::StandbyHost
                        };
                        self.probe_result(now, target, ProbeClass::Ok, "pong");
                    }
                }
                Dgram::VoteRequest(r) => self.step(now, Input::VoteRequest(r), Some(from)),
                Dgram::LeaseRequest(r) => self.step(now, Input::LeaseRequest(r), Some(from)),
                Dgram::Withdraw(w) => self.step(now, Input::Withdraw(w), Some(from)),
                Dgram::Protected(p) => self.step(now, Input::Protected(p), Some(from)),
                Dgram::Ping { nonce } => self.send(&Dgram::Pong { nonce }, from),
                other => log::debug!("ignored {} from {from}", other.name()),
            }
        }
    }

    fn step(&mut self, now: Nanos, input: Input, from: Option<SocketAddr>) {
        let actions = self.core.step(now, input);
        for a in actions {
            match a {
                Action::Vote(v) => {
                    if v.verdict.granted() {
                        self.votes_granted += 1;
                    } else {
                        self.votes_refused += 1;
                    }
                    log::info!(
                        "{{\"witness\":{},\"decision\":\"vote\",\"query\":{},\"epoch\":{},\"verdict\":\"{}\",\"app\":\"{}\",\"primary_host\":{},\"standby_host\":{}}}",
                        v.witness, v.query, v.epoch.0, v.verdict, v.view.app, v.view.primary_host, v.view.standby_host
                    );
                    if let Some(to) = from {
                        self.send(&Dgram::Vote(v), to);
                    }
                }
                Action::LeaseReply(r) => {
                    if r.verdict.granted() {
                        self.leases_granted += 1;
                        log::debug!(
                            "lease {} to the primary of epoch {} for {:?}",
                            r.req,
                            r.epoch.0,
                            r.duration
                        );
                    } else {
                        self.leases_refused += 1;
                        log::info!(
                            "lease {} refused to the primary of epoch {}: {}",
                            r.req,
                            r.epoch.0,
                            r.verdict
                        );
                    }
                    if let Some(to) = from {
                        self.send(&Dgram::LeaseReply(r), to);
                    }
                }
            }
        }
        let p = self.core.persisted();
        if p != self.saved {
            if let Err(e) = save_state(&self.s.state_file, &p) {
                log::error!(
                    "cannot save the rollback guard to {}: {e}",
                    self.s.state_file.display()
                );
            }
            self.saved = p;
        }
        self.outbox.set_epoch(self.core.epoch_seen().0);
    }

    fn status_text(&self, now: Nanos) -> String {
        let v = self.core.view(now);
        let mut s = String::new();
        let mut kv = |k: &str, v: String| s.push_str(&format!("{k} {v}\n"));
        kv("role", "witness".into());
        kv("node", self.s.node.clone());
        kv("id", self.s.id.to_string());
        kv("policy", self.s.decision.policy.to_string());
        kv("epoch_seen", self.core.epoch_seen().0.to_string());
        kv("application", v.app.to_string());
        kv("primary_daemon", v.primary_host.to_string());
        kv("standby_daemon", v.standby_host.to_string());
        let stats = self.probes.stats(0);
        let last = stats.and_then(|st| st.last.as_ref());
        kv(
            "probe_last",
            last.map_or("none".into(), |r| {
                format!(
                    "{:?} in {:.1}ms: {}",
                    r.class,
                    r.latency.as_secs_f64() * 1e3,
                    r.detail
                )
            }),
        );
        kv("probes", stats.map_or(0, |st| st.runs).to_string());
        for l in self.probes.status_lines() {
            kv("probe", l);
        }
        let grant = self.core.grant().map(|(e, vote, until)| {
            format!(
                "{} to epoch {} for {:.0} ms more",
                if vote { "vote" } else { "lease" },
                e.0,
                until.since(now).as_secs_f64() * 1e3
            )
        });
        kv("grant", grant.unwrap_or_else(|| "none".into()));
        kv("votes_granted", self.votes_granted.to_string());
        kv("votes_refused", self.votes_refused.to_string());
        kv("leases_granted", self.leases_granted.to_string());
        kv("leases_refused", self.leases_refused.to_string());
        kv(
            "pings_primary",
            format!(
                "{} answered, {} missed",
                self.pings[0].answered, self.pings[0].missed
            ),
        );
        kv(
            "pings_standby",
            format!(
                "{} answered, {} missed",
                self.pings[1].answered, self.pings[1].missed
            ),
        );
        kv("bad_datagrams", self.bad_datagrams.to_string());
        s
    }
}
