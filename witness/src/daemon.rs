//! The witness's shell: one mio loop that turns bytes into [`Event`]s for the nodes and carries
//! out their [`Effect`]s. It owns the sockets (a UDP endpoint per guest, the control socket, the
//! metrics responder, the probes' sockets or child processes), the state files, the clock, the
//! signals and systemd's notifications; it decides nothing.
//!
//! One witness serves one or more protected guests: each guest has its own node (its own witness
//! core, rollback guard and state file), its own UDP address and endpoint (its own cluster key)
//! and its own probe; one loop drives them all, and a guest's events reach only its node.
//!
//! The loop watches itself: if it did not run for longer than a probe interval (or half a probe
//! timeout) past when it meant to, every node hears of the stall before anything that arrived or
//! expired meanwhile (issue 10).

use std::io;
use std::time::Duration;

use mio::net::UdpSocket;
use mio::{Interest, Poll, Registry, Token};

use hsb_common::config::Config;
use hsb_common::datagram::Sender;
use hsb_common::decision::proto::ProbeClass;
use hsb_common::decision::WitnessCore;
use hsb_common::key::ClusterKey;
use hsb_common::kit::endpoint::{Endpoint, Received};
use hsb_common::kit::shell::{self, Surface};
use hsb_common::msg::Role;
use hsb_common::signals::SignalHandler;
use hsb_common::time::{Clock, Nanos, StallWatch};

use crate::config::{Guest, Settings, DEFAULT_GUEST};
use crate::node::{Effects, Event, NodeSettings, To, WitnessNode};
use crate::probe::{Class, ProbeSet};
use crate::state::{self, FileStore, Store};

const UDP_BASE: usize = 40;
const PROBE_BASE: usize = 100;
// The token plan (`kit::shell`): this daemon's own tokens stay off the kit's and each other's.
const _: () = assert!(shell::own(UDP_BASE, crate::config::MAX_GUESTS));
const _: () = assert!(UDP_BASE + crate::config::MAX_GUESTS <= PROBE_BASE);
const _: () = assert!(shell::own(PROBE_BASE, crate::probe::MAX_PROBES));
/// Keys a SIGHUP applies at run time; any other key that changed waits for a restart.
/// `report_interval` only paces reports (and must stay within half of the running
/// `failover.report-fresh`). The probe's keys are not among them: the loop's stall bound and
/// the freshness checks were sized from them at start.
const RELOADED: &[&str] = &["report_interval"];

/// One guest's part of the loop: its settings, socket, endpoint, node and state file.
pub(crate) struct GuestRun {
    pub(crate) s: Guest,
    udp: UdpSocket,
    pub(crate) ep: Endpoint,
    pub(crate) node: WitnessNode,
    store: FileStore,
}

impl GuestRun {
    /// One event through the node, and its effects carried out in order.
    fn step(&mut self, now: Nanos, event: Event) {
        let effects = self.node.step(now, event);
        self.carry_out(now, effects);
        self.ep.set_epoch(self.node.epoch().0);
    }

    fn carry_out(&mut self, now: Nanos, effects: Effects) {
        let (udp, ep, s) = (&self.udp, &mut self.ep, &self.s);
        let address = |to: To| match to {
            To::Slot(0) => s.primary,
            To::Slot(_) => s.standby,
            To::Addr(a) => a,
        };
        state::carry_out(
            &mut self.node,
            now,
            effects,
            &mut self.store,
            |to, dest, msg| ep.send(udp, &msg, address(to), dest),
        );
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
}

/// The running witness.
pub struct Daemon {
    pub(crate) s: Settings,
    /// The process-wide configuration it started with (SIGHUP compares against it).
    started: Config,
    clock: Clock,
    poll: Poll,
    pub(crate) guests: Vec<GuestRun>,
    /// One probe per guest, probe `i` for guest `i`.
    pub(crate) probes: ProbeSet,
    /// The control socket, the metrics responder, systemd's notifications.
    pub(crate) surface: Surface,
    watch: StallWatch,
}

impl Daemon {
    /// Bind, load and save every guest's rollback guard (a witness that cannot keep its
    /// promises does not start), and make the nodes. `keys[i]` is guest `i`'s cluster key.
    pub fn new(s: Settings, keys: Vec<ClusterKey>, started: Config) -> io::Result<Daemon> {
        let poll = Poll::new()?;
        let clock = Clock::new();
        let now = clock.now();
        let surface = Surface::bind(
            (&s.control, s.control_group.as_ref()),
            s.metrics_listen,
            poll.registry(),
            now,
        )?;
        let sections =
            s.guests.len() > 1 || s.guests.first().is_some_and(|g| g.name != DEFAULT_GUEST);
        let mut guests = Vec::with_capacity(s.guests.len());
        for (i, (g, key)) in s.guests.iter().zip(keys).enumerate() {
            guests.push(start_guest(&poll, g.clone(), &key, i, now, sections)?);
        }
        let probes = ProbeSet::new(
            s.guests.iter().map(|g| g.probe.clone()).collect(),
            PROBE_BASE,
        )
        .map_err(|e| io::Error::other(format!("probe: {e}")))?;
        // The loop should run at least every probe interval; a longer gap (or one longer than
        // half a probe timeout, whichever is longer) means it was stopped, and the probes it
        // ran then are no evidence. With several guests, the shortest such bound.
        let stall_bound = s
            .guests
            .iter()
            .map(|g| g.probe.interval.max(g.probe.timeout / 2))
            .min()
            .unwrap_or(Duration::from_millis(20));
        Ok(Daemon {
            watch: StallWatch::new(stall_bound),
            guests,
            probes,
            surface,
            started,
            s,
            clock,
            poll,
        })
    }

    /// The loop, until a stop signal.
    pub fn run(mut self, signals: SignalHandler) -> io::Result<()> {
        shell::run(&mut self, signals)
    }

    /// A control command's answer: `status` (every guest), `status GUEST` (one).
    fn command(&self, now: Nanos, cmd: &str) -> String {
        let mut words = cmd.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (None | Some("status"), None, None) => self.status_text(now, None),
            (Some("status"), Some(g), None) => {
                match self.guests.iter().position(|x| x.s.name == g) {
                    Some(i) => self.status_text(now, Some(i)),
                    None => format!(
                        "error: no guest '{}'; guests: {}\n",
                        hsb_common::config::excerpt(g),
                        self.guest_names().join(", ")
                    ),
                }
            }
            _ => format!(
                "error: unknown command '{}'; try: status [GUEST]\n",
                hsb_common::config::excerpt(cmd)
            ),
        }
    }

    /// The guests' names.
    pub(crate) fn guest_names(&self) -> Vec<&str> {
        self.guests.iter().map(|g| g.s.name.as_str()).collect()
    }

    /// The clock, read by the loop: if the loop did not run for too long since it last read
    /// it, the nodes hear of the stall before anything else happens.
    fn clock_now(&mut self) -> Nanos {
        let now = self.clock.now();
        if let Some(since) = self.watch.running(now) {
            self.step_all(now, Event::Stalled { since });
        }
        now
    }

    /// One event through every guest's node.
    fn step_all(&mut self, now: Nanos, event: Event) {
        for g in &mut self.guests {
            g.step(now, event.clone());
        }
    }
}

impl shell::Shell for Daemon {
    fn now(&mut self) -> Nanos {
        self.clock_now()
    }

    fn poll(&mut self) -> &mut Poll {
        &mut self.poll
    }

    fn surface(&mut self) -> (&mut Surface, &Registry) {
        (&mut self.surface, self.poll.registry())
    }

    /// The earliest deadline of the nodes, the probes and the surface (at least 200 µs away);
    /// the stall watch knows how long the loop means to sleep.
    fn deadline(&mut self, now: Nanos) -> Nanos {
        let mut deadline = self
            .guests
            .iter()
            .map(|g| g.node.next_deadline())
            .min()
            .unwrap_or(now.plus(Duration::from_secs(1)));
        if let Some(d) = self.probes.poll_timeout(self.clock.instant(now)) {
            deadline = deadline.min(now.plus(d));
        }
        if let Some(d) = self.surface.next_deadline() {
            deadline = deadline.min(d);
        }
        let timeout = deadline.since(now).max(Duration::from_micros(200));
        if let Some(since) = self.watch.sleeping(now, timeout) {
            self.step_all(now, Event::Stalled { since });
        }
        now.plus(timeout)
    }

    fn summary(&self, now: Nanos) -> String {
        Daemon::summary(self, now)
    }

    fn metrics_text(&self, now: Nanos) -> String {
        Daemon::metrics_text(self, now)
    }

    fn command(&mut self, now: Nanos, conn: usize, cmd: &str) {
        let text = Daemon::command(self, now, cmd);
        self.surface.ctl.answer(self.poll.registry(), conn, &text);
    }

    fn on_token(&mut self, now: Nanos, ev: &mio::event::Event) {
        let t = ev.token();
        if let Some(g) =
            t.0.checked_sub(UDP_BASE)
                .and_then(|i| self.guests.get_mut(i))
        {
            g.on_udp(now);
        } else if self.probes.owns(t) {
            self.probes
                .on_event(self.poll.registry(), ev, self.clock.instant(now));
        }
    }

    /// The probes' turn and their results, then every node's own.
    fn after_events(&mut self, now: Nanos) {
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
            if let Some(g) = self.guests.get_mut(r.probe) {
                g.step(
                    now,
                    Event::AppProbe {
                        class,
                        took: r.latency,
                        detail: r.detail,
                    },
                );
            }
        }
        self.step_all(now, Event::Tick);
    }

    /// SIGTERM, SIGINT or SIGQUIT: stop. Every promise is on disk already (it is saved before
    /// the answer that makes it leaves), so a restart keeps it; probes in flight are killed
    /// with their process groups as the probe set is dropped.
    fn stop(&mut self, now: Nanos, signal: &'static str) {
        log::warn!(
            "{signal}: stopping: no more probes, reports or answers ({} probe(s) in flight abandoned; a command probe's process group is killed)",
            self.probes.in_flight()
        );
        self.surface.stopping(now, signal, None);
    }

    /// SIGHUP: reload the configuration (a witness has no decision log; logging goes to
    /// stderr, which this process does not open: nothing to reopen), apply [`RELOADED`] and log
    /// every other changed key as waiting for a restart. A configuration that does not load or
    /// check changes nothing; guests added, removed or renamed wait for a restart.
    fn reload(&mut self, now: Nanos, signals: &SignalHandler) {
        log::info!(
            "SIGHUP: reloading the configuration from {}",
            signals.source()
        );
        let loaded = crate::config::load(signals.config_path(), signals.sets())
            .and_then(|l| Settings::from_sections(&l).map(|s| (l, s)));
        let (loaded, new) = match loaded {
            Ok(v) => v,
            Err(e) => {
                log::error!("SIGHUP: {e}; the configuration is not reloaded: running on unchanged");
                return;
            }
        };
        let mut waiting =
            SignalHandler::restart_needed(&self.started.changed_keys(&loaded.global), RELOADED);
        let names: Vec<&str> = new.guests.iter().map(|g| g.name.as_str()).collect();
        if names != self.guest_names() {
            log::warn!(
                "SIGHUP: the guests changed ({} -> {}): restart to apply",
                self.guest_names().join(", "),
                names.join(", ")
            );
            waiting += 1;
        }
        let named = self.guests.len() > 1 || self.guests.iter().any(|g| g.s.name != DEFAULT_GUEST);
        for g in &mut self.guests {
            let Some(n) = new.guests.iter().find(|n| n.name == g.s.name) else {
                continue;
            };
            let tag = if named {
                format!("guest {}: ", g.s.name)
            } else {
                String::new()
            };
            if named {
                // The process-wide part was compared above; here each section's own keys.
                let changed: Vec<&'static str> =
                    g.s.config
                        .changed_keys(&n.config)
                        .into_iter()
                        .filter(|k| crate::config::guest_keys().contains(k))
                        .collect();
                waiting += SignalHandler::restart_needed(&changed, RELOADED);
            }
            if n.report_interval != g.s.report_interval {
                // Checked against the running report-fresh: a changed one waits for a restart.
                if n.report_interval.saturating_mul(2) <= g.s.decision.report_fresh {
                    log::info!(
                        "SIGHUP: {tag}report_interval {:?} -> {:?}",
                        g.s.report_interval,
                        n.report_interval
                    );
                    g.s.report_interval = n.report_interval;
                    g.node.set_report_interval(now, n.report_interval);
                } else {
                    log::warn!(
                        "SIGHUP: {tag}key report_interval changed to {:?}: more than half the running failover.report-fresh ({:?}); restart to apply (the running value is kept)",
                        n.report_interval,
                        g.s.decision.report_fresh
                    );
                    waiting += 1;
                }
            }
        }
        log::info!("SIGHUP: configuration reloaded; {waiting} changed key(s) wait for a restart");
    }
}

/// Bind guest `i`'s address, load and save its rollback guard, and make its node.
fn start_guest(
    poll: &Poll,
    g: Guest,
    key: &ClusterKey,
    i: usize,
    now: Nanos,
    sections: bool,
) -> io::Result<GuestRun> {
    let mut udp = UdpSocket::bind(g.listen).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("guest {}: witness address {}: {e}", g.name, g.listen),
        )
    })?;
    poll.registry()
        .register(&mut udp, Token(UDP_BASE + i), Interest::READABLE)?;
    let state_err = |what: &str, e: io::Error| {
        io::Error::new(
            e.kind(),
            format!(
                "guest {}: state file {} (key state_file): {what}: {e}",
                g.name,
                g.state_file.display()
            ),
        )
    };
    let saved =
        state::load(&g.state_file).map_err(|e| state_err("cannot read the rollback guard", e))?;
    // Always the safe constructor: it grants nothing until any lease an earlier incarnation may
    // have granted has run out.
    let core = WitnessCore::new(g.decision.clone(), g.id, now, saved);
    let mut store = FileStore::new(&g.state_file);
    store
        .save(&core.persisted())
        .map_err(|e| state_err("cannot save the rollback guard", e))?;
    let me = Sender {
        role: Role::Witness,
        id: u32::from(g.id),
    };
    let inc =
        hsb_common::datagram::next_incarnation(None, hsb_common::datagram::wall_clock_micros());
    let ep = Endpoint::new(key, me, inc, core.epoch_seen().0);
    log::info!(
        "{}witness id {} on {}: probing {:?} every {:?}; primary {}, standby {}; policy {}; rollback guard {}; no votes or leases for {:?} (longest lease)",
        if sections { format!("guest {}: ", g.name) } else { String::new() },
        g.id,
        udp.local_addr()?,
        g.probe.kind,
        g.probe.interval,
        g.primary,
        g.standby,
        g.decision.policy,
        saved.map_or("fresh".to_string(), |p| format!("epoch {} promised {:?}", p.epoch_seen.0, p.promised.map(|e| e.0))),
        g.decision.lease.max_duration
    );
    let node = WitnessNode::new(
        NodeSettings {
            probe_interval: g.probe.interval,
            probe_timeout: g.probe.timeout,
            report_interval: g.report_interval,
            guest: if sections {
                g.name.clone()
            } else {
                String::new()
            },
        },
        core.clone(),
        core.persisted(),
        now,
    );
    Ok(GuestRun {
        s: g,
        udp,
        ep,
        node,
        store,
    })
}
