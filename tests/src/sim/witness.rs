//! hsb-witness in the simulator: the real [`WitnessNode`], its effects carried out by the
//! daemon's own [`state::carry_out`] (a promise saved before its grant leaves; the state file is
//! memory here), and the daemon's application probe engine (`witness/src/probe.rs`: one run in
//! flight, started every interval keeping its phase, a timeout) asking the service address,
//! which is wherever `on_activate` last claimed it.

use std::io;
use std::time::Duration;

use hsb_common::datagram::Sender;
use hsb_common::decision::proto::ProbeClass;
use hsb_common::decision::witness::Persisted;
use hsb_common::decision::WitnessCore;
use hsb_common::msg::Role;
use hsb_common::time::Nanos;
use hsb_witness::node::{Event, To, WitnessNode};
use hsb_witness::state::{self, Store};

use super::host::{woken, Clock, Endpoint};
use super::net::{Ep, Flight, Msg};
use super::setup::{self, host_addr, witness_addr, APP_PROBE_TIMEOUT, DGRAM_PORT, PROBE_MS};
use super::world::Shared;

/// The state file, in memory.
struct Memory(Option<Persisted>);

impl Store for Memory {
    fn save(&mut self, p: &Persisted) -> io::Result<()> {
        self.0 = Some(*p);
        Ok(())
    }
}

/// The application probe: at most one run in flight.
#[derive(Debug, Default)]
struct AppProbe {
    next_start: Option<Nanos>,
    run: Option<(u64, Nanos)>,
}

/// A witness host.
pub(crate) struct WitnessHost {
    idx: u8,
    pub clock: Clock,
    /// When its daemon starts (its phase), ms.
    start_ms: u64,
    node: Option<WitnessNode>,
    ep: Endpoint,
    store: Memory,
    app: AppProbe,
    /// The loop sleeps until this.
    wake: Nanos,
    /// The node's last step.
    last: Nanos,
}

impl WitnessHost {
    pub fn new(idx: u8, sh: &mut Shared) -> WitnessHost {
        let clock = Clock::new(&mut sh.rng);
        let me = Sender {
            role: Role::Witness,
            id: u32::from(idx) + 1,
        };
        WitnessHost {
            idx,
            clock,
            start_ms: sh.rng.below(setup::REPORT_MS),
            node: None,
            ep: Endpoint::new(&sh.key, me, 1, 1),
            store: Memory(None),
            app: AppProbe::default(),
            wake: Nanos::ZERO,
            last: Nanos::ZERO,
        }
    }

    fn step(&mut self, sh: &mut Shared, local: Nanos, ev: Event) {
        let Some(node) = self.node.as_mut() else {
            return;
        };
        // A turn taken at its deadline, a little after the step's time: later ones of the same
        // step do not go back.
        let local = local.max(self.last);
        self.last = local;
        let effects = node.step(local, ev);
        let (ep, idx) = (&mut self.ep, self.idx);
        state::carry_out(node, local, effects, &mut self.store, |to, dest, msg| {
            let to = match to {
                To::Slot(s) => host_addr(s.min(1) as u8, DGRAM_PORT),
                To::Addr(a) => a,
            };
            ep.send(sh, witness_addr(idx), to, dest, &msg);
        });
        self.ep.set_epoch(node.epoch());
    }

    /// A message for this witness.
    pub fn deliver(&mut self, sh: &mut Shared, f: Flight) {
        let local = self.clock.local(sh.now());
        match f.msg {
            Msg::Dgram { from, bytes, .. } => {
                if let Some((env, msg)) = self.ep.open(&bytes) {
                    self.step(sh, local, Event::Datagram { from, env, msg });
                }
            }
            Msg::Reply { id, refused } => {
                let Some((run, started)) = self.app.run else {
                    return;
                };
                if run != id {
                    return;
                }
                self.app.run = None;
                let (class, detail) = if refused {
                    (ProbeClass::Refused, "connection refused")
                } else {
                    (ProbeClass::Ok, "answer")
                };
                let took = local.since(started);
                let detail = detail.to_string();
                self.step(
                    sh,
                    local,
                    Event::AppProbe {
                        class,
                        took,
                        detail,
                    },
                );
            }
            _ => {}
        }
    }

    /// A millisecond: the daemon starts at its phase; the probe engine; a tick at the node's
    /// deadline or after I/O.
    pub fn run_ms(&mut self, sh: &mut Shared, io: bool) {
        let local = self.clock.local(sh.now());
        if self.node.is_none() {
            if sh.ms < self.start_ms {
                return;
            }
            // Running long before the cluster started: no quiet period to sit out.
            let core = WitnessCore::first_boot(sh.cfg.clone(), self.idx + 1, local);
            let on_disk = core.persisted();
            self.store.0 = Some(on_disk);
            self.node = Some(WitnessNode::new(
                setup::witness_settings(),
                core,
                on_disk,
                local,
            ));
        }
        self.app_probe(sh, local);
        let due = woken(local, self.wake);
        if io || due.is_some() {
            let local = due.unwrap_or(local);
            self.step(sh, local, Event::Tick);
            // The loop sleeps until the node's deadline (the probe engine keeps its own).
            self.wake = self.node.as_ref().map_or(local, |n| n.next_deadline());
        }
    }

    fn app_probe(&mut self, sh: &mut Shared, local: Nanos) {
        if let Some((_, started)) = self.app.run {
            let Some(t) = woken(local, started.plus(APP_PROBE_TIMEOUT)) else {
                return;
            };
            self.app.run = None;
            let ev = Event::AppProbe {
                class: ProbeClass::Timeout,
                took: t.since(started),
                detail: "no answer".into(),
            };
            self.step(sh, t, ev);
        }
        let Some(local) = woken(local, self.app.next_start.unwrap_or(local)) else {
            return;
        };
        let interval = Duration::from_millis(PROBE_MS);
        // Keep the phase; if a long run made it late, count the period from now.
        self.app.next_start = Some(match self.app.next_start {
            Some(t) if t.plus(interval) > local => t.plus(interval),
            _ => local.plus(interval),
        });
        let id = sh.next_id();
        self.app.run = Some((id, local));
        if let Some(h) = sh.vip {
            let now = sh.now();
            sh.net
                .send(now, Ep::Witness(self.idx), Ep::Node(h), Msg::Request { id });
        }
    }
}
