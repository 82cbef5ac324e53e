//! The simulated cluster: two hosts running the real hsb-primary and hsb-standby nodes
//! ([`super::host`]), N witnesses running the real witness node ([`super::witness`]), a ping
//! node, a network ([`super::net`]), and a client that sees the output either copy releases.
//!
//! Time advances in 1 ms steps. In each step: messages due are delivered (each an event stepped
//! at once, its effects carried out as the daemons do), then each running daemon's loop takes its
//! turn (the model guest writes its output once a checkpoint period; the node is ticked at its
//! deadline or after I/O, as the daemons' loops do), and the copies whose authority lets output
//! leave are sampled.

use std::collections::HashSet;

use hsb_common::decision::{Config, Epoch, Evidence};
use hsb_common::key::ClusterKey;
use hsb_common::rng::SplitMix64;

use super::host::Host;
use super::net::{Ep, Msg, Net};
use super::setup::CKPT_MS;
use super::tcp::Conns;
use super::witness::WitnessHost;

/// An activation seen in the run.
#[derive(Debug, Clone)]
pub struct Activation {
    /// When (simulated ms).
    pub ms: u64,
    /// Which host.
    pub node: u8,
    /// The new epoch.
    pub epoch: Epoch,
    /// Replica state it started from.
    pub from_state: u64,
    /// The rule (evidence).
    pub rule: String,
}

/// What happened in a run, for judging.
#[derive(Debug, Default)]
pub struct Facts {
    /// Activations, in order.
    pub activations: Vec<Activation>,
    /// Milliseconds in which both copies could release output.
    pub split_ms: u64,
    /// Milliseconds in which no copy could release output.
    pub unserved_ms: u64,
    /// Decisions with evidence by any node: (ms, host, text).
    pub decisions: Vec<(u64, u8, String)>,
    /// Outputs the client received: (epoch, index).
    pub released: HashSet<(u64, u64)>,
    /// Hosts releasing output in the last sampled millisecond.
    pub releasing: Vec<u8>,
}

/// What every part of the simulation shares: time, the network and its connections, the facts,
/// the trace, the configuration, randomness, and where the service address is.
pub(crate) struct Shared {
    pub ms: u64,
    pub net: Net,
    pub conns: Conns,
    pub facts: Facts,
    trace: Option<Vec<String>>,
    pub cfg: Config,
    pub witnesses: u8,
    pub rng: SplitMix64,
    /// The host holding the service address (`on_activate` claims it, `on_fence` gives it up).
    pub vip: Option<u8>,
    pub key: ClusterKey,
    ids: u64,
}

fn name(n: u8) -> &'static str {
    if n == 0 {
        "A"
    } else {
        "B"
    }
}

impl Shared {
    /// Simulated time, ns.
    pub fn now(&self) -> u64 {
        self.ms * 1_000_000
    }

    /// A trace line about host `n` (if tracing).
    pub fn note(&mut self, n: u8, what: impl FnOnce() -> String) {
        self.note_as(name(n), what);
    }

    /// A trace line (if tracing).
    pub fn note_as(&mut self, who: &str, what: impl FnOnce() -> String) {
        if let Some(t) = self.trace.as_mut() {
            t.push(format!("{:>7}ms  {who:<3} {}", self.ms, what()));
        }
    }

    /// A decision of host `n`'s node, with its evidence.
    pub fn decision(&mut self, n: u8, e: &Evidence) {
        let text = e.to_string();
        self.facts.decisions.push((self.ms, n, text.clone()));
        self.note(n, || text);
    }

    /// A fresh number (probes, pings).
    pub fn next_id(&mut self) -> u64 {
        self.ids += 1;
        self.ids
    }
}

/// The simulated cluster.
pub struct World {
    pub(crate) sh: Shared,
    hosts: [Host; 2],
    wits: Vec<WitnessHost>,
    /// When each host's unit starts (its phase), ms.
    starts: [u64; 2],
}

impl World {
    /// A cluster: host B's hsb-standby, then host A's hsb-primary (both within the first two
    /// checkpoint periods), `witnesses` witnesses.
    pub fn new(cfg: Config, witnesses: u8, seed: u64, trace: bool) -> World {
        let mut rng = SplitMix64::new(seed);
        let hosts = [Host::new(0, &mut rng), Host::new(1, &mut rng)];
        // The standby first, as an operator starts them: the primary's first connect finds it.
        let b = rng.below(CKPT_MS);
        let starts = [b + 1 + rng.below(CKPT_MS), b];
        let net = Net::new(rng.next_u64());
        let mut sh = Shared {
            ms: 0,
            net,
            conns: Conns::default(),
            facts: Facts::default(),
            trace: trace.then(Vec::new),
            cfg,
            witnesses,
            rng,
            vip: Some(0),
            key: ClusterKey::from_bytes([0x5a; 32]),
            ids: 0,
        };
        let wits = (0..witnesses)
            .map(|i| WitnessHost::new(i, &mut sh))
            .collect();
        World {
            sh,
            hosts,
            wits,
            starts,
        }
    }

    /// The trace, if enabled.
    pub fn take_trace(&mut self) -> Vec<String> {
        self.sh.trace.take().unwrap_or_default()
    }

    /// Add a trace line (if tracing).
    pub fn note(&mut self, who: &str, what: impl FnOnce() -> String) {
        self.sh.note_as(who, what);
    }

    /// What happened.
    pub fn facts(&self) -> &Facts {
        &self.sh.facts
    }

    /// The network.
    pub(crate) fn net(&mut self) -> &mut Net {
        &mut self.sh.net
    }

    /// Number of witnesses.
    pub fn witnesses(&self) -> u8 {
        self.wits.len() as u8
    }

    /// Crash host `n`: it loses everything in memory.
    pub fn crash(&mut self, n: u8) {
        self.hosts[n as usize].crash(&mut self.sh);
    }

    /// Bring host `n` back if it is down: its unit starts (by the restart rule).
    pub fn restart(&mut self, n: u8) {
        self.hosts[n as usize].restart(&mut self.sh);
    }

    /// Pause host `n` (SIGSTOP) for `ms`: it processes nothing, its clock runs on.
    pub fn pause(&mut self, n: u8, ms: u64) {
        let until = self.sh.now() + ms * 1_000_000;
        self.hosts[n as usize].paused_until = Some(until);
        self.sh.note(n, || format!("PAUSE for {ms}ms"));
    }

    /// Hang or unhang the application of host `n` (F5).
    pub fn hang_app(&mut self, n: u8, hung: bool) {
        if self.hosts[n as usize].app_hung == hung {
            return;
        }
        self.hosts[n as usize].app_hung = hung;
        self.sh.note(n, || {
            format!("application {}", if hung { "HUNG" } else { "resumed" })
        });
    }

    /// Step every host's wall clock (F11): the nodes only see monotonic time.
    pub fn step_wall_clocks(&mut self, rng: &mut SplitMix64) {
        for n in 0..2u8 {
            let s = rng.below(7200) as i64 - 3600;
            self.hosts[n as usize].clock.wall_offset_s += s;
            self.sh.note(n, || format!("wall clock stepped by {s}s"));
        }
        for w in &mut self.wits {
            w.clock.wall_offset_s += rng.below(7200) as i64 - 3600;
        }
    }

    /// Advance one millisecond.
    pub fn step_ms(&mut self) {
        let now = self.sh.now();
        for h in &mut self.hosts {
            if h.paused_until.is_some_and(|t| t <= now) {
                h.paused_until = None;
                self.sh.note(h.id, || "RESUME".into());
            }
        }
        for (h, &at) in self.hosts.iter_mut().zip(&self.starts) {
            if self.sh.ms == at {
                h.start_unit(&mut self.sh);
            }
        }
        let mut io = [false; 2];
        let mut wio = vec![false; self.wits.len()];
        while let Some(f) = self.sh.net.pop_due(now) {
            match f.to {
                Ep::Node(n) => {
                    let host = &mut self.hosts[n as usize];
                    if !host.up {
                        // No answer at all: a segment is sent again, if its sender still can.
                        let sender_alive = match (f.from, &f.msg) {
                            (Ep::Node(s), Msg::Tcp { conn, .. }) => {
                                let s = &self.hosts[s as usize];
                                s.up && self
                                    .sh
                                    .conns
                                    .get(*conn)
                                    .and_then(|c| c.ends.iter().flatten().find(|e| e.host == s.id))
                                    .is_some_and(|e| e.boot == s.boot())
                            }
                            _ => false,
                        };
                        if sender_alive {
                            self.sh.net.retransmit(now, f);
                        }
                        continue;
                    }
                    if let Some(t) = host.paused_until {
                        self.sh.net.hold(f, t);
                        continue;
                    }
                    self.sh.net.delivered(&f);
                    io[n as usize] = true;
                    host.deliver(&mut self.sh, f);
                }
                Ep::Witness(w) => {
                    wio[w as usize] = true;
                    self.wits[w as usize].deliver(&mut self.sh, f);
                }
                Ep::Ping => {
                    if let Msg::Ping { id } = f.msg {
                        self.sh.net.send(now, Ep::Ping, f.from, Msg::Pong { id });
                    }
                }
            }
        }
        for (h, io) in self.hosts.iter_mut().zip(io) {
            if h.running() {
                h.run_ms(&mut self.sh, io);
            }
        }
        for (w, io) in self.wits.iter_mut().zip(wio) {
            w.run_ms(&mut self.sh, io);
        }
        let releasing: Vec<u8> = self
            .hosts
            .iter()
            .filter(|h| h.releasing(now))
            .map(|h| h.id)
            .collect();
        match releasing.len() {
            0 => self.sh.facts.unserved_ms += 1,
            2 => self.sh.facts.split_ms += 1,
            _ => {}
        }
        self.sh.facts.releasing = releasing;
        if self.sh.ms.is_multiple_of(100) {
            for h in &self.hosts {
                let line = h.summary(now);
                self.sh.note(h.id, || line);
            }
        }
        self.sh.ms += 1;
    }

    /// Outputs the client received that the current history does not contain (rolled back).
    pub fn lost_outputs(&self) -> u64 {
        let f = &self.sh.facts;
        let mut lost = HashSet::new();
        for a in &f.activations {
            for &(e, idx) in &f.released {
                if e < a.epoch.0 && idx > a.from_state {
                    lost.insert((e, idx));
                }
            }
        }
        lost.len() as u64
    }

    /// Whether host `n` is a following standby that applied a checkpoint within `ms`.
    pub fn replicating(&self, n: u8, ms: u64) -> bool {
        self.hosts[n as usize].replicating(self.sh.now(), ms)
    }
}
