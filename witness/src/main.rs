//! hsb-witness: runs on client machines, probes the protected application the way clients use
//! it, pings the two hsb daemons, and reports to the standby and the primary. It answers the
//! standby's takeover votes and the primary's lease requests through the witness core, which
//! never grants a lease and a takeover vote at overlapping times (DESIGN.md rule 3).
//!
//! One single-threaded mio loop: the UDP endpoint, the probe (a socket or a child process), the
//! control socket, and timers. The loop watches itself: if it did not run for longer than a
//! probe interval (or half a probe timeout) past when it meant to, it tells the core, which then
//! discards what timed out meanwhile (issue 10). The core's state is on disk before its answers
//! leave (see [`state`]).

mod config;
mod hosts;
// The engine's API is complete (status, limits, defaults); the daemon uses part of it.
#[allow(dead_code, unused_imports)]
mod probe;
mod state;

use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};

use hsb_common::cli::Args;
use hsb_common::config::{reference_markdown, Config};
use hsb_common::ctl::CtlServer;
use hsb_common::datagram::{Dest, Inbox, Outbox, Sender, MAX_DATAGRAM};
use hsb_common::decision::proto::{ProbeClass, ProbeTarget, Verdict, WitnessView};
use hsb_common::decision::witness::{Action, Input};
use hsb_common::decision::{Epoch, WitnessCore};
use hsb_common::key::ClusterKey;
use hsb_common::logging::LogLimiter;
use hsb_common::msg::Role;
use hsb_common::time::{Clock, Nanos, StallWatch};
use hsb_common::wire::{self, Dgram};

use config::{schema, Settings};
use hosts::HostRoles;
use probe::{Class, ProbeSet};
use state::{FileStore, Guard};

const UDP: Token = Token(1);
const PROBE_BASE: usize = 100;
const CTL_BASE: usize = 10;

const USAGE: &str = "\
hsb-witness: probe the protected application as its clients do, and vote on failovers

usage:
  hsb-witness run -c FILE [--set key=value]...    run the witness
  hsb-witness status [-c FILE | --control PATH] [--json]
                                                  what it sees, what it granted (--json: as one JSON object)
  hsb-witness check -c FILE [--set key=value]...  validate the configuration and key, then exit
  hsb-witness config-reference                    print every configuration key
  hsb-witness --version

Exit status of `status`, for health checks: 0 healthy (the application answers and both
daemons answer); 1 degraded (no probe result yet, the application failing, or a daemon out of
reach); 2 the application is down (or failed inside the guest); 3 unreachable (no answer on the
control socket, or it refuses us); 4 usage or configuration error. Other commands exit 1 on
failure and 2 on a usage error.

Logging: HSB_LOG=debug|info|warn (default info).";

fn main() -> ExitCode {
    let args = match hsb_common::cli::start(
        "hsb-witness",
        env!("CARGO_PKG_VERSION"),
        USAGE,
        &["json"],
        &[],
    ) {
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
        Some("status") => ExitCode::from(hsb_common::ctl::status_cli_with(
            "hsb-witness",
            &args,
            schema(),
            config::control_path,
            || config::find_control(std::path::Path::new(config::RUN_DIR)),
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

/// Log lines that can repeat every probe interval or every query, rate-limited per cause: the
/// fixed causes, then one per refusal reason for votes and one per reason for leases. Granted
/// votes are always logged.
mod cause {
    use hsb_common::decision::proto::RefuseReason;

    pub const VIEW_CHANGE: usize = 0;
    pub const SAVE_FAILED: usize = 1;
    pub const WITHHELD: usize = 2;
    pub const STALL: usize = 3;
    const REASONS: usize = 9;
    pub const COUNT: usize = 4 + 2 * REASONS;

    fn reason(r: &RefuseReason) -> usize {
        match r {
            RefuseReason::PrimaryAnswers => 0,
            RefuseReason::NotYet(_) => 1,
            RefuseReason::GuestFailure => 2,
            RefuseReason::StandbyUnreachable => 3,
            RefuseReason::LeaseActive(_) => 4,
            RefuseReason::Restarting(_) => 5,
            RefuseReason::StaleEpoch(_) => 6,
            RefuseReason::Promised(_) => 7,
            RefuseReason::NoData => 8,
        }
    }

    pub fn vote_refused(r: &RefuseReason) -> usize {
        4 + reason(r)
    }

    pub fn lease_refused(r: &RefuseReason) -> usize {
        4 + REASONS + reason(r)
    }
}
const CAUSES: usize = cause::COUNT;
/// At most this many lines of one cause...
const LOG_BURST: u32 = 5;
/// ...in this long.
const LOG_WINDOW: Duration = Duration::from_secs(10);

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
    /// Pings of the two configured daemon addresses (`primary`, `standby`: slots 0 and 1).
    pings: [Ping; 2],
    /// Which slot hosts the primary now (learned from the daemons' pongs).
    hosts: HostRoles,
    next_ping: Nanos,
    next_report: Nanos,
    store: FileStore,
    guard: Guard,
    watch: StallWatch,
    limits: LogLimiter<CAUSES>,
    grants_withheld: u64,
    save_failures: u64,
    bad_datagrams: u64,
    votes_granted: u64,
    votes_refused: u64,
    leases_granted: u64,
    leases_refused: u64,
}

impl Witness {
    fn new(s: Settings, key: ClusterKey) -> io::Result<Witness> {
        let poll = Poll::new()?;
        let mut udp = UdpSocket::bind(s.listen)
            .map_err(|e| io::Error::new(e.kind(), format!("witness address {}: {e}", s.listen)))?;
        poll.registry()
            .register(&mut udp, UDP, Interest::READABLE)?;
        let ctl = CtlServer::bind(
            &s.control,
            s.control_group.as_ref(),
            poll.registry(),
            CTL_BASE,
        )
        .map_err(|e| io::Error::other(format!("control socket: {e}")))?;
        let clock = Clock::new();
        let now = clock.now();
        let state_err = |what: &str, e: io::Error| {
            io::Error::new(
                e.kind(),
                format!(
                    "state file {} (key state_file): {what}: {e}",
                    s.state_file.display()
                ),
            )
        };
        let saved = state::load(&s.state_file)
            .map_err(|e| state_err("cannot read the rollback guard", e))?;
        // Always the safe constructor: it grants nothing until any lease an earlier incarnation
        // may have granted has run out.
        let core = WitnessCore::new(s.decision.clone(), s.id, now, saved);
        // A witness that cannot keep its promises must not start granting: find out now.
        let mut store = FileStore::new(&s.state_file);
        state::Store::save(&mut store, &core.persisted())
            .map_err(|e| state_err("cannot save the rollback guard", e))?;
        let guard = Guard::new(core.persisted());
        let inc =
            hsb_common::datagram::next_incarnation(None, hsb_common::datagram::wall_clock_micros());
        let me = Sender {
            role: Role::Witness,
            id: u32::from(s.id),
        };
        let outbox = Outbox::new(&key, me, inc, core.epoch_seen().0);
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
        // The loop should run at least every probe interval; a longer gap (or one longer than half
        // a probe timeout, whichever is longer) means it was stopped, and the probes it ran then
        // are no evidence.
        let stall_bound = s.probe.interval.max(s.probe.timeout / 2);
        Ok(Witness {
            inbox: Inbox::new(&key, me),
            store,
            guard,
            watch: StallWatch::new(stall_bound),
            limits: LogLimiter::new(LOG_BURST, LOG_WINDOW),
            grants_withheld: 0,
            save_failures: 0,
            core,
            outbox,
            probes,
            ctl,
            pings: [Ping::default(), Ping::default()],
            hosts: HostRoles::new(),
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
            let now = self.now();
            let mut deadline = self.next_ping.min(self.next_report);
            if let Some(d) = self.probes.poll_timeout(self.clock.instant(now)) {
                deadline = deadline.min(now.plus(d));
            }
            if let Some(d) = self.core.next_deadline() {
                deadline = deadline.min(d);
            }
            if let Some(d) = self.ctl.next_deadline() {
                deadline = deadline.min(d);
            }
            for p in &self.pings {
                if let Some(t) = p.sent {
                    deadline = deadline.min(t.plus(self.s.probe.timeout));
                }
            }
            let timeout = deadline.since(now).max(Duration::from_micros(200));
            if let Some(since) = self.watch.sleeping(now, timeout) {
                self.stalled(since, now);
            }
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            // Before anything that arrived or expired meanwhile is looked at.
            let now = self.now();
            for ev in events.iter() {
                let t = ev.token();
                if t == UDP {
                    self.on_udp(now);
                } else if self.probes.owns(t) {
                    self.probes
                        .on_event(self.poll.registry(), ev, self.clock.instant(now));
                } else if self.ctl.owns(t) {
                    if let Some((conn, cmd)) = self.ctl.on_event(self.poll.registry(), t, now) {
                        let text = match cmd.as_str() {
                            "status" | "" => self.status_text(now),
                            other => format!("error: unknown command '{other}'; try: status\n"),
                        };
                        self.ctl.answer(self.poll.registry(), conn, &text);
                    }
                }
            }
            let now = self.now();
            self.ctl.tick(self.poll.registry(), now);
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
                self.probe_finished(now, ProbeTarget::PrimaryApp, class, r.latency, &r.detail);
            }
            self.pings_tick(now);
            self.step(now, Input::Tick, None);
            if now >= self.next_report {
                self.next_report = now.plus(self.s.report_interval);
                let report = Dgram::Report(self.core.report(now));
                let (p, s) = (self.s.primary, self.s.standby);
                self.send(&report, s, Some(self.hosts.dest(1)));
                self.send(&report, p, Some(self.hosts.dest(0)));
            }
        }
    }

    /// The clock, read by the loop: if the loop did not run for too long since it last read
    /// it, the core hears of the stall before anything else happens.
    fn now(&mut self) -> Nanos {
        let now = self.clock.now();
        if let Some(since) = self.watch.running(now) {
            self.stalled(since, now);
        }
        now
    }

    fn stalled(&mut self, since: Nanos, now: Nanos) {
        self.step(now, Input::Stalled { since }, None);
        if let Some(n) = self.limits.allow(cause::STALL, now) {
            log::warn!(
                "this witness's loop did not run for {:.0} ms (stopped, paused or starved): failures of probes that overlapped it are discarded, and the application and the primary daemon must be seen failing again before this witness votes{}",
                now.since(since).as_secs_f64() * 1e3,
                LogLimiter::<CAUSES>::note(n)
            );
        }
    }

    /// A probe that ran for `took` ended at `now`.
    fn probe_finished(
        &mut self,
        now: Nanos,
        target: ProbeTarget,
        class: ProbeClass,
        took: Duration,
        detail: &str,
    ) {
        let before = self.core.view(now);
        self.step(
            now,
            Input::Probe {
                target,
                class,
                took,
            },
            None,
        );
        let after = self.core.view(now);
        // The rates move with every probe; a change of the verdicts is what is worth a line.
        let verdicts = |v: &WitnessView| (v.app, v.primary_host, v.standby_host);
        if verdicts(&before) != verdicts(&after) {
            if let Some(n) = self.limits.allow(cause::VIEW_CHANGE, now) {
                let pct = |r: Option<u8>| r.map_or("-".to_string(), |r| format!("{r}%"));
                log::info!(
                    "view changed after {target} probe {class} ({detail}): application {} -> {}, primary daemon {} -> {}, standby daemon {} -> {}; answered over the rate window: application {}, primary daemon {}, standby daemon {}{}",
                    before.app, after.app, before.primary_host, after.primary_host, before.standby_host, after.standby_host,
                    pct(after.rates.app), pct(after.rates.primary), pct(after.rates.standby),
                    LogLimiter::<CAUSES>::note(n)
                );
            }
        }
    }

    /// The probe target the daemon at `slot` stands for now.
    fn slot_target(&self, slot: usize) -> ProbeTarget {
        if slot == self.hosts.primary_slot() {
            ProbeTarget::PrimaryHost
        } else {
            ProbeTarget::StandbyHost
        }
    }

    fn pings_tick(&mut self, now: Nanos) {
        for i in 0..2 {
            if let Some(sent) = self.pings[i].sent {
                if now >= sent.plus(self.s.probe.timeout) {
                    self.pings[i].sent = None;
                    self.pings[i].missed += 1;
                    let target = self.slot_target(i);
                    let took = now.since(sent);
                    self.probe_finished(now, target, ProbeClass::Timeout, took, "no pong");
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
            // The low bit names the slot, so a pong answers exactly the ping it echoes.
            self.pings[i].nonce = (self.pings[i].nonce.wrapping_add(2) & !1) | i as u64;
            self.pings[i].sent = Some(now);
            let m = Dgram::Ping {
                nonce: self.pings[i].nonce,
            };
            // Unaddressed: whoever answers at this address says who it is.
            self.send(&m, addr, None);
        }
    }

    fn send(&mut self, m: &Dgram, to: SocketAddr, dest: Option<Dest>) {
        let mut buf = [0u8; MAX_DATAGRAM];
        match wire::seal(&mut self.outbox, m, dest, &mut buf) {
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
                    let i = (nonce & 1) as usize;
                    if env.from.role == Role::Witness {
                        continue;
                    }
                    if let (Some(sent), true) = (self.pings[i].sent, self.pings[i].nonce == nonce) {
                        self.pings[i].sent = None;
                        self.pings[i].answered += 1;
                        let before = self.hosts.primary_slot();
                        self.hosts.heard(i, env.from, Epoch(env.epoch));
                        if self.hosts.primary_slot() != before {
                            let addr = if i == 0 {
                                self.s.primary
                            } else {
                                self.s.standby
                            };
                            log::info!(
                                "the primary's host is now {} (its daemon at {addr} answers as {:?} in epoch {})",
                                if self.hosts.primary_slot() == 0 { self.s.primary } else { self.s.standby },
                                env.from.role,
                                env.epoch
                            );
                        }
                        let target = self.slot_target(i);
                        let took = now.since(sent);
                        self.probe_finished(now, target, ProbeClass::Ok, took, "pong");
                    }
                }
                Dgram::VoteRequest(r) => self.step(
                    now,
                    Input::VoteRequest(r),
                    Some((from, Dest::node(env.from))),
                ),
                Dgram::LeaseRequest(r) => self.step(
                    now,
                    Input::LeaseRequest(r),
                    Some((from, Dest::node(env.from))),
                ),
                Dgram::Withdraw(w) => self.step(now, Input::Withdraw(w), None),
                Dgram::Protected(p) => self.step(now, Input::Protected(p), None),
                Dgram::Ping { nonce } => {
                    self.send(&Dgram::Pong { nonce }, from, Some(Dest::node(env.from)))
                }
                other => log::debug!("ignored {} from {from}", other.name()),
            }
        }
    }

    /// One input of the core; `reply_to` is where the answer to a request goes.
    fn step(&mut self, now: Nanos, input: Input, reply_to: Option<(SocketAddr, Dest)>) {
        let actions = self.core.step(now, input);
        // The promise is on disk before the grant that makes it leaves (rule 3 across crashes).
        let out = self.guard.release(&mut self.store, &self.core, actions);
        if let Some(e) = &out.error {
            self.save_failures += 1;
            if let Some(n) = self.limits.allow(cause::SAVE_FAILED, now) {
                log::error!(
                    "cannot save the rollback guard to {}: {e}; this witness grants nothing until it can{}",
                    self.s.state_file.display(),
                    LogLimiter::<CAUSES>::note(n)
                );
            }
        }
        for a in &out.withheld {
            self.grants_withheld += 1;
            if let Some(n) = self.limits.allow(cause::WITHHELD, now) {
                let what = match a {
                    Action::Vote(v) => format!("vote for query {}", v.query),
                    Action::LeaseReply(r) => format!("lease {}", r.req),
                };
                log::error!(
                    "{what} not sent: its promise is not on disk{}",
                    LogLimiter::<CAUSES>::note(n)
                );
            }
        }
        for a in out.send {
            match a {
                Action::Vote(v) => {
                    // A standby requeries while a refusal holds (every 20 ms at first): the same
                    // refusal is logged a few times per window, then with a count.
                    let logged = match v.verdict {
                        Verdict::Grant => {
                            self.votes_granted += 1;
                            Some(0)
                        }
                        Verdict::Refuse(r) => {
                            self.votes_refused += 1;
                            self.limits.allow(cause::vote_refused(&r), now)
                        }
                    };
                    if let Some(n) = logged {
                        let suppressed = if n > 0 {
                            format!(",\"similar_suppressed\":{n}")
                        } else {
                            String::new()
                        };
                        let rate = |r: Option<u8>| r.map_or("null".to_string(), |r| r.to_string());
                        log::info!(
                            "{{\"witness\":{},\"decision\":\"vote\",\"query\":{},\"epoch\":{},\"verdict\":\"{}\",\"app\":\"{}\",\"primary_host\":{},\"standby_host\":{},\"app_rate\":{},\"primary_rate\":{},\"standby_rate\":{}{suppressed}}}",
                            v.witness, v.query, v.epoch.0, v.verdict, v.view.app, v.view.primary_host, v.view.standby_host,
                            rate(v.view.rates.app), rate(v.view.rates.primary), rate(v.view.rates.standby)
                        );
                    }
                    if let Some((to, dest)) = reply_to {
                        self.send(&Dgram::Vote(v), to, Some(dest));
                    }
                }
                Action::LeaseReply(r) => {
                    match r.verdict {
                        Verdict::Grant => {
                            self.leases_granted += 1;
                            log::debug!(
                                "lease {} to the primary of epoch {} for {:?}",
                                r.req,
                                r.epoch.0,
                                r.duration
                            );
                        }
                        Verdict::Refuse(why) => {
                            self.leases_refused += 1;
                            if let Some(n) = self.limits.allow(cause::lease_refused(&why), now) {
                                log::info!(
                                    "lease {} refused to the primary of epoch {}: {}{}",
                                    r.req,
                                    r.epoch.0,
                                    r.verdict,
                                    LogLimiter::<CAUSES>::note(n)
                                );
                            }
                        }
                    }
                    if let Some((to, dest)) = reply_to {
                        self.send(&Dgram::LeaseReply(r), to, Some(dest));
                    }
                }
            }
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
        // Share of probes answered over failover.rate-window, percent ("none": too few yet).
        let pct = |r: Option<u8>| r.map_or("none".to_string(), |r| r.to_string());
        kv("application_rate", pct(v.rates.app));
        kv("primary_daemon_rate", pct(v.rates.primary));
        kv("standby_daemon_rate", pct(v.rates.standby));
        let slot = self.hosts.primary_slot();
        let addrs = [self.s.primary, self.s.standby];
        kv("primary_host", addrs[slot].to_string());
        kv("standby_host", addrs[1 - slot].to_string());
        for (i, a) in addrs.iter().enumerate() {
            kv(
                &format!("daemon_{a}"),
                self.hosts.role_of(i).map_or("not heard".into(), |(r, e)| {
                    format!("{r:?} in epoch {}", e.0)
                }),
            );
        }
        kv(
            "stale_mark",
            self.core.mark().map_or("none".into(), |m| {
                format!(
                    "epoch {} replica at {} (leases granted up to checkpoint {})",
                    m.epoch.0, m.after, m.upto
                )
            }),
        );
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
        let (stalls, discarded) = self.core.stalls();
        kv("loop_stalls", stalls.to_string());
        kv("failures_discarded", discarded.to_string());
        kv("state_file", self.s.state_file.display().to_string());
        kv("state_save_failures", self.save_failures.to_string());
        kv("grants_withheld", self.grants_withheld.to_string());
        s
    }
}

#[cfg(test)]
mod tests {
    use super::cause;
    use hsb_common::decision::proto::RefuseReason;
    use hsb_common::decision::Epoch;
    use std::time::Duration;

    /// Every refusal reason has its own log cause, for votes and for leases, all in range.
    #[test]
    fn log_causes_are_distinct_and_in_range() {
        let reasons = [
            RefuseReason::PrimaryAnswers,
            RefuseReason::NotYet(Duration::ZERO),
            RefuseReason::GuestFailure,
            RefuseReason::StandbyUnreachable,
            RefuseReason::LeaseActive(Duration::ZERO),
            RefuseReason::Restarting(Duration::ZERO),
            RefuseReason::StaleEpoch(Epoch(1)),
            RefuseReason::Promised(Epoch(1)),
            RefuseReason::NoData,
        ];
        let mut all = vec![
            cause::VIEW_CHANGE,
            cause::SAVE_FAILED,
            cause::WITHHELD,
            cause::STALL,
        ];
        all.extend(reasons.iter().map(cause::vote_refused));
        all.extend(reasons.iter().map(cause::lease_refused));
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "shared causes");
        assert!(all.iter().all(|&c| c < cause::COUNT));
        assert_eq!(n, cause::COUNT);
    }
}
