//! The witness's shell: one mio loop that turns bytes into [`Event`]s for the node and carries
//! out its [`Effect`]s. It owns the sockets (UDP endpoint, control socket, the probe's sockets
//! or child process), the state file, the clock and the signals; it decides nothing.
//!
//! The loop watches itself: if it did not run for longer than a probe interval (or half a probe
//! timeout) past when it meant to, the node hears of the stall before anything that arrived or
//! expired meanwhile (issue 10).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};

use hsb_common::ctl::CtlServer;
use hsb_common::datagram::Sender;
use hsb_common::decision::proto::ProbeClass;
use hsb_common::decision::WitnessCore;
use hsb_common::key::ClusterKey;
use hsb_common::kit::endpoint::{Endpoint, Received};
use hsb_common::msg::Role;
use hsb_common::signals::{Request, SignalHandler};
use hsb_common::time::{Clock, Nanos, StallWatch};

use crate::config::{schema, Settings};
use crate::node::{Effects, Event, NodeSettings, To, WitnessNode};
use crate::probe::{Class, ProbeSet};
use crate::state::{self, FileStore, Store};

const UDP: Token = Token(1);
const SIGNALS: Token = Token(2);
const CTL_BASE: usize = 10;
const PROBE_BASE: usize = 100;
/// Keys a SIGHUP applies at run time; any other key that changed waits for a restart.
/// `report_interval` only paces reports (and must stay within half of the running
/// `failover.report-fresh`). The probe's keys are not among them: the loop's stall bound and
/// the freshness checks were sized from them at start.
const RELOADED: &[&str] = &["report_interval"];

/// Where a datagram for `to` goes.
fn address(s: &Settings, to: To) -> SocketAddr {
    match to {
        To::Slot(0) => s.primary,
        To::Slot(_) => s.standby,
        To::Addr(a) => a,
    }
}

/// The running witness.
pub struct Daemon {
    pub(crate) s: Settings,
    clock: Clock,
    poll: Poll,
    udp: UdpSocket,
    pub(crate) ep: Endpoint,
    pub(crate) node: WitnessNode,
    pub(crate) probes: ProbeSet,
    ctl: CtlServer,
    store: FileStore,
    watch: StallWatch,
}

impl Daemon {
    /// Bind, load and save the rollback guard (a witness that cannot keep its promises does not
    /// start), and make the node.
    pub fn new(s: Settings, key: ClusterKey) -> io::Result<Daemon> {
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
        let mut store = FileStore::new(&s.state_file);
        store
            .save(&core.persisted())
            .map_err(|e| state_err("cannot save the rollback guard", e))?;
        let me = Sender {
            role: Role::Witness,
            id: u32::from(s.id),
        };
        let inc =
            hsb_common::datagram::next_incarnation(None, hsb_common::datagram::wall_clock_micros());
        let ep = Endpoint::new(&key, me, inc, core.epoch_seen().0);
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
        // The loop should run at least every probe interval; a longer gap (or one longer than
        // half a probe timeout, whichever is longer) means it was stopped, and the probes it
        // ran then are no evidence.
        let stall_bound = s.probe.interval.max(s.probe.timeout / 2);
        let node = WitnessNode::new(
            NodeSettings {
                probe_interval: s.probe.interval,
                probe_timeout: s.probe.timeout,
                report_interval: s.report_interval,
            },
            core.clone(),
            core.persisted(),
            now,
        );
        Ok(Daemon {
            store,
            watch: StallWatch::new(stall_bound),
            node,
            ep,
            probes,
            ctl,
            s,
            clock,
            poll,
            udp,
        })
    }

    /// The loop, until a stop signal.
    pub fn run(mut self, mut signals: SignalHandler) -> io::Result<()> {
        signals.register(self.poll.registry(), SIGNALS)?;
        let mut events = Events::with_capacity(64);
        loop {
            let now = self.now();
            let mut deadline = self.node.next_deadline();
            if let Some(d) = self.probes.poll_timeout(self.clock.instant(now)) {
                deadline = deadline.min(now.plus(d));
            }
            if let Some(d) = self.ctl.next_deadline() {
                deadline = deadline.min(d);
            }
            let timeout = deadline.since(now).max(Duration::from_micros(200));
            if let Some(since) = self.watch.sleeping(now, timeout) {
                self.step(now, Event::Stalled { since });
            }
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            // Before anything that arrived or expired meanwhile is looked at.
            let now = self.now();
            // Signals first: a stop ends the loop before this turn answers anything.
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
                self.step(
                    now,
                    Event::AppProbe {
                        class,
                        took: r.latency,
                        detail: r.detail,
                    },
                );
            }
            self.step(now, Event::Tick);
        }
    }

    /// The clock, read by the loop: if the loop did not run for too long since it last read
    /// it, the node hears of the stall before anything else happens.
    fn now(&mut self) -> Nanos {
        let now = self.clock.now();
        if let Some(since) = self.watch.running(now) {
            self.step(now, Event::Stalled { since });
        }
        now
    }

    fn on_udp(&mut self, now: Nanos) {
        loop {
            match self.ep.recv(&self.udp) {
                Received::Datagram { from, env, msg } => {
                    self.step(now, Event::Datagram { from, env, msg })
                }
                Received::Rejected => {}
                Received::Empty => return,
            }
        }
    }

    /// One event through the node, and its effects carried out in order.
    fn step(&mut self, now: Nanos, event: Event) {
        let effects = self.node.step(now, event);
        self.carry_out(now, effects);
        self.ep.set_epoch(self.node.epoch().0);
    }

    fn carry_out(&mut self, now: Nanos, effects: Effects) {
        let (udp, ep, s) = (&self.udp, &mut self.ep, &self.s);
        state::carry_out(
            &mut self.node,
            now,
            effects,
            &mut self.store,
            |to, dest, msg| ep.send(udp, &msg, address(s, to), dest),
        );
    }

    /// SIGTERM, SIGINT or SIGQUIT: stop. Every promise is on disk already (it is saved before
    /// the answer that makes it leaves), so a restart keeps it; probes in flight are killed
    /// with their process groups as the probe set is dropped.
    fn shutdown(&mut self, signal: &str) {
        log::warn!(
            "{signal}: stopping: no more probes, reports or answers ({} probe(s) in flight abandoned; a command probe's process group is killed)",
            self.probes.in_flight()
        );
        if let Err(e) = self.ctl.remove_socket() {
            log::warn!(
                "{signal}: cannot remove the control socket {}: {e}",
                self.ctl.path().display()
            );
        }
        log::info!("{signal}: stopped cleanly (exit status 0)");
    }

    /// SIGHUP: reload the configuration (a witness has no decision log; logging goes to
    /// stderr, which this process does not open: nothing to reopen), apply [`RELOADED`] and log
    /// every other changed key as waiting for a restart. A configuration that does not load or
    /// check changes nothing.
    fn reload(&mut self, now: Nanos, signals: &SignalHandler) {
        log::info!(
            "SIGHUP: reloading the configuration from {}",
            signals.source()
        );
        let (new, changed) = match signals.reload(schema(), Settings::from_config) {
            Ok(v) => v,
            Err(e) => {
                log::error!("SIGHUP: {e}; the configuration is not reloaded: running on unchanged");
                return;
            }
        };
        let mut waiting = SignalHandler::restart_needed(&changed, RELOADED);
        if new.report_interval != self.s.report_interval {
            // Checked against the running report-fresh: a changed one waits for a restart.
            if new.report_interval.saturating_mul(2) <= self.s.decision.report_fresh {
                log::info!(
                    "SIGHUP: report_interval {:?} -> {:?}",
                    self.s.report_interval,
                    new.report_interval
                );
                self.s.report_interval = new.report_interval;
                self.node.set_report_interval(now, new.report_interval);
            } else {
                log::warn!(
                    "SIGHUP: key report_interval changed to {:?}: more than half the running failover.report-fresh ({:?}); restart to apply (the running value is kept)",
                    new.report_interval,
                    self.s.decision.report_fresh
                );
                waiting += 1;
            }
        }
        log::info!("SIGHUP: configuration reloaded; {waiting} changed key(s) wait for a restart");
    }
}
