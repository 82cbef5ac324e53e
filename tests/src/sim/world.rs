//! The simulated cluster: two hosts (each running a primary or a standby core), N witnesses, a ping
//! node, a network, and a client that sees the output either copy releases.
//!
//! Time advances in 1 ms steps. In each step: messages due are delivered, each running host sends its
//! heartbeat, takes its checkpoint and ticks its core on its own monotonic clock (offset and rate
//! differ per host), each witness probes and reports, and then every copy that may release output
//! does so, which is what the client sees.
//!
//! Data plane model: the active copy's state is a counter `state` (its history length). Each
//! checkpoint period it produces one client output (index `state + 1`) held until released, then
//! checkpoints (`state` travels with it). Protected mode releases outputs of acked checkpoints;
//! unprotected mode releases everything. Probe replies of the application are output too.

use std::collections::{HashSet, VecDeque};

use hsb_common::decision::primary::{self, Mode};
use hsb_common::decision::proto::{
    LeaseReply, LeaseRequest, ProbeClass, ProbeTarget, ProtectedNotice, Vote, VoteRequest,
    Withdraw, WitnessReport,
};
use hsb_common::decision::standby::{self, State};
use hsb_common::decision::{
    witness, Config, Epoch, Nanos, PrimaryAuthority, StandbyCore, WitnessCore,
};
use hsb_common::rng::SplitMix64;

use super::net::{Ep, Net};

/// Checkpoint (epoch) period, ms.
pub const CKPT_MS: u64 = 25;
/// Heartbeat period, ms.
pub const HB_MS: u64 = 10;
/// Witness probe period, ms.
pub const PROBE_MS: u64 = 10;
/// Witness report period, ms.
pub const REPORT_MS: u64 = 50;
/// A probe of the application times out after this (output commit adds up to a checkpoint period).
pub const APP_PROBE_TIMEOUT_NS: u64 = 50_000_000;
/// A probe of a daemon times out after this.
pub const HOST_PROBE_TIMEOUT_NS: u64 = 20_000_000;
/// Ping timeout.
pub const PING_TIMEOUT_NS: u64 = 50_000_000;

/// Messages of the simulated cluster.
#[derive(Debug, Clone)]
pub enum Msg {
    /// Host to host.
    Heartbeat { epoch: Epoch },
    /// Primary to standby (stream). `state` is the copy's history length.
    Checkpoint {
        epoch: Epoch,
        ckpt: u64,
        full: bool,
        state: u64,
    },
    /// Standby to primary (stream).
    Ack { epoch: Epoch, ckpt: u64 },
    /// A standby without a replica asks for a full synchronisation (stream).
    SyncRequest { epoch: Epoch },
    /// Switchover: standby asks the primary to fence (stream).
    FenceRequest { epoch: Epoch },
    /// The primary fenced itself (stream).
    FenceConfirm { epoch: Epoch, ckpt: u64 },
    /// Standby to witness.
    VoteRequest(VoteRequest),
    /// Witness to standby.
    Vote(Vote),
    /// Primary to witness.
    LeaseRequest(LeaseRequest),
    /// Witness to primary.
    LeaseReply(LeaseReply),
    /// Standby to witness.
    Withdraw(Withdraw),
    /// Primary to witness.
    Protected(ProtectedNotice),
    /// Witness to hosts.
    Report(WitnessReport),
    /// Witness to host: a probe.
    Probe { id: u64, target: ProbeTarget },
    /// Host to witness.
    ProbeReply { id: u64 },
    /// Standby to ping node.
    Ping,
    /// Ping node to standby.
    Pong,
    /// Standby to primary, every heartbeat period while it may acknowledge: the heartbeat reply.
    Alive {
        epoch: Epoch,
        applied: Option<u64>,
        heard: u64,
        stream: u64,
    },
    /// Part of a checkpoint crossing a shaped link (the receiver sees bytes arrive).
    Bytes,
}

/// A host's clocks: monotonic (offset, rate) and wall (offset only; the cores never see it).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    offset: u64,
    ppm: i64,
    /// Wall clock minus simulated time, seconds (stepped by F11; unused by the cores).
    pub wall_offset_s: i64,
}

impl Clock {
    fn new(rng: &mut SplitMix64) -> Clock {
        Clock {
            offset: rng.below(1 << 40),
            ppm: rng.below(201) as i64 - 100,
            wall_offset_s: 1_700_000_000,
        }
    }

    /// Monotonic time of this host at simulated time `t` (ns).
    pub fn local(&self, t: u64) -> Nanos {
        let skew = (i128::from(t) * i128::from(self.ppm) / 1_000_000) as i64;
        Nanos(self.offset.wrapping_add(t).wrapping_add_signed(skew))
    }
}

pub(crate) enum Role {
    Primary(Box<PrimaryAuthority>),
    Standby(Box<StandbyCore>),
    Down,
}

pub(crate) struct Node {
    pub up: bool,
    pub paused_until: Option<u64>,
    pub app_hung: bool,
    pub clock: Clock,
    pub role: Role,
    pub epoch_hint: Epoch,
    // Primary data plane.
    pub state: u64,
    ckpt: u64,
    last_acked: u64,
    needs_full: bool,
    held: VecDeque<(u64, u64)>,
    held_probes: VecDeque<(u8, u64, u64)>,
    // Standby data plane.
    pub replica_state: u64,
    replica_ckpt: u64,
    pub last_apply_ns: u64,
    pub full_syncs: u64,
    ping_out: Option<u64>,
    last_sync_req_ms: u64,
    phase: u64,
    /// Standby: heartbeats and replication bytes heard from the primary (its replies say it).
    heard: u64,
    /// Standby: replication messages heard (checkpoints and their bytes), and that count when
    /// the core was last told.
    stream: (u64, u64),
}

impl Node {
    fn new(rng: &mut SplitMix64, role: Role) -> Node {
        Node {
            up: true,
            paused_until: None,
            app_hung: false,
            clock: Clock::new(rng),
            role,
            epoch_hint: Epoch::FIRST,
            state: 0,
            ckpt: 0,
            last_acked: 0,
            needs_full: true,
            held: VecDeque::new(),
            held_probes: VecDeque::new(),
            replica_state: 0,
            replica_ckpt: 0,
            last_apply_ns: 0,
            full_syncs: 0,
            ping_out: None,
            last_sync_req_ms: 0,
            phase: rng.below(CKPT_MS * HB_MS),
            heard: 0,
            stream: (0, 0),
        }
    }

    pub fn epoch(&self) -> Epoch {
        match &self.role {
            Role::Primary(a) => a.epoch(),
            Role::Standby(s) => s.epoch(),
            Role::Down => self.epoch_hint,
        }
    }

    fn running(&self) -> bool {
        self.up && self.paused_until.is_none()
    }
}

struct Wit {
    core: WitnessCore,
    clock: Clock,
    primary_node: u8,
    outstanding: Vec<(u64, ProbeTarget, u64)>,
    phase: u64,
}

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
    /// Decisions with evidence by any core: (ms, host, text).
    pub decisions: Vec<(u64, u8, String)>,
    /// Outputs the client received: (epoch, index).
    pub released: HashSet<(u64, u64)>,
    /// Hosts releasing output in the last sampled millisecond.
    pub releasing: Vec<u8>,
}

/// The simulated cluster.
pub struct World {
    pub(crate) cfg: Config,
    pub(crate) ms: u64,
    pub(crate) nodes: [Node; 2],
    wits: Vec<Wit>,
    pub(crate) net: Net,
    probe_seq: u64,
    /// What happened.
    pub facts: Facts,
    trace: Option<Vec<String>>,
}

fn other(n: u8) -> u8 {
    1 - n
}

fn name(n: u8) -> &'static str {
    if n == 0 {
        "A"
    } else {
        "B"
    }
}

enum Acts {
    S(Vec<standby::Action>),
    P(Vec<primary::Action>),
}

impl World {
    /// A cluster: host A primary, host B a synchronised standby, `witnesses` witnesses.
    pub fn new(cfg: Config, witnesses: u8, seed: u64, trace: bool) -> World {
        let mut rng = SplitMix64::new(seed);
        let mut a = Node::new(&mut rng, Role::Down);
        let mut b = Node::new(&mut rng, Role::Down);
        a.role = Role::Primary(Box::new(PrimaryAuthority::new(
            cfg.clone(),
            Epoch::FIRST,
            a.clock.local(0),
        )));
        b.role = Role::Standby(Box::new(StandbyCore::new(
            cfg.clone(),
            Epoch::FIRST,
            b.clock.local(0),
            Some(0),
        )));
        let wits = (0..witnesses)
            .map(|i| {
                let clock = Clock::new(&mut rng);
                Wit {
                    core: WitnessCore::first_boot(cfg.clone(), i + 1, clock.local(0)),
                    clock,
                    primary_node: 0,
                    outstanding: Vec::new(),
                    phase: rng.below(PROBE_MS * REPORT_MS),
                }
            })
            .collect();
        World {
            cfg,
            ms: 0,
            nodes: [a, b],
            wits,
            net: Net::new(rng.next_u64()),
            probe_seq: 0,
            facts: Facts::default(),
            trace: trace.then(Vec::new),
        }
    }

    /// The trace, if enabled.
    pub fn take_trace(&mut self) -> Vec<String> {
        self.trace.take().unwrap_or_default()
    }

    /// Add a trace line (if tracing).
    pub fn note(&mut self, who: &str, what: impl FnOnce() -> String) {
        if let Some(t) = self.trace.as_mut() {
            t.push(format!("{:>7}ms  {who:<3} {}", self.ms, what()));
        }
    }

    fn now(&self) -> u64 {
        self.ms * 1_000_000
    }

    /// Number of witnesses.
    pub fn witnesses(&self) -> u8 {
        self.wits.len() as u8
    }

    /// Crash host `n`: it loses everything in memory.
    pub fn crash(&mut self, n: u8) {
        let node = &mut self.nodes[n as usize];
        node.epoch_hint = node.epoch();
        node.up = false;
        node.role = Role::Down;
        node.held.clear();
        node.held_probes.clear();
        self.note(name(n), || "CRASH".into());
    }

    /// Restart host `n` as a standby without a replica.
    pub fn restart(&mut self, n: u8) {
        let local = self.nodes[n as usize].clock.local(self.now());
        let node = &mut self.nodes[n as usize];
        if node.up {
            return;
        }
        node.up = true;
        node.role = Role::Standby(Box::new(StandbyCore::new(
            self.cfg.clone(),
            node.epoch_hint,
            local,
            None,
        )));
        node.replica_state = 0;
        node.replica_ckpt = 0;
        self.note(name(n), || "RESTART as an unsynchronised standby".into());
    }

    /// Pause host `n` (SIGSTOP) for `ms`: it processes nothing, its clock runs on.
    pub fn pause(&mut self, n: u8, ms: u64) {
        self.nodes[n as usize].paused_until = Some(self.now() + ms * 1_000_000);
        self.note(name(n), || format!("PAUSE for {ms}ms"));
    }

    /// Hang or unhang the application of host `n` (F5).
    pub fn hang_app(&mut self, n: u8, hung: bool) {
        if self.nodes[n as usize].app_hung == hung {
            return;
        }
        self.nodes[n as usize].app_hung = hung;
        self.note(name(n), || {
            format!("application {}", if hung { "HUNG" } else { "resumed" })
        });
    }

    /// Step every host's wall clock (F11): the cores only see monotonic time.
    pub fn step_wall_clocks(&mut self, rng: &mut SplitMix64) {
        for n in 0..2 {
            let s = rng.below(7200) as i64 - 3600;
            self.nodes[n].clock.wall_offset_s += s;
            self.note(name(n as u8), || format!("wall clock stepped by {s}s"));
        }
        for w in &mut self.wits {
            w.clock.wall_offset_s += rng.below(7200) as i64 - 3600;
        }
    }

    /// Advance one millisecond.
    pub fn step_ms(&mut self) {
        let now = self.now();
        for n in 0..2u8 {
            let node = &mut self.nodes[n as usize];
            if node.paused_until.is_some_and(|t| t <= now) {
                node.paused_until = None;
                self.note(name(n), || "RESUME".into());
            }
        }
        while let Some(f) = self.net.pop_due(now) {
            match f.to {
                Ep::Node(n) => {
                    let node = &self.nodes[n as usize];
                    if !node.up {
                        continue;
                    }
                    if let Some(t) = node.paused_until {
                        self.net.push(t, f.from, f.to, f.msg);
                        continue;
                    }
                    self.node_recv(n, f.from, f.msg);
                }
                Ep::Witness(w) => self.witness_recv(w, f.from, f.msg),
                Ep::Ping => {
                    if let Msg::Ping = f.msg {
                        self.net.send(now, Ep::Ping, f.from, Msg::Pong, false);
                    }
                }
            }
        }
        for n in 0..2u8 {
            self.node_ms(n);
        }
        for w in 0..self.wits.len() {
            self.witness_ms(w as u8);
        }
        self.release_and_sample();
        self.ms += 1;
    }

    fn node_recv(&mut self, n: u8, from: Ep, msg: Msg) {
        let now = self.now();
        let peer = Ep::Node(other(n));
        let node = &mut self.nodes[n as usize];
        let local = node.clock.local(now);
        if let Msg::Probe { id, target } = msg {
            let Ep::Witness(w) = from else {
                return;
            };
            if target != ProbeTarget::PrimaryApp {
                // The daemon answers at once.
                self.net
                    .send(now, Ep::Node(n), from, Msg::ProbeReply { id }, false);
            } else if let Role::Primary(a) = &node.role {
                // The application answers through output commit (or not at all if paused or hung).
                let m = a.mode(local);
                if !node.app_hung && m != Mode::Fenced && m != Mode::SteppedDown {
                    node.held_probes.push_back((w, id, node.ckpt + 1));
                }
            }
            return;
        }
        if matches!(node.role, Role::Standby(_))
            && matches!(
                msg,
                Msg::Heartbeat { .. } | Msg::Checkpoint { .. } | Msg::Bytes
            )
        {
            node.heard += 1;
        }
        if matches!(node.role, Role::Standby(_))
            && matches!(msg, Msg::Checkpoint { .. } | Msg::Bytes)
        {
            node.stream.0 += 1;
        }
        let acts = match (&mut node.role, msg) {
            (
                Role::Primary(a),
                Msg::Alive {
                    epoch,
                    applied,
                    heard,
                    stream,
                },
            ) => Some(Acts::P(
                a.step(
                    local,
                    primary::Input::StandbyAlive {
                        epoch,
                        applied,
                        heard,
                        stream,
                    },
                )
                .to_vec(),
            )),
            (Role::Primary(a), Msg::Heartbeat { epoch })
            | (Role::Primary(a), Msg::Checkpoint { epoch, .. }) => (epoch > a.epoch()).then(|| {
                Acts::P(
                    a.step(local, primary::Input::HigherEpoch { epoch })
                        .to_vec(),
                )
            }),
            (Role::Primary(a), Msg::Ack { epoch, ckpt }) => {
                if epoch == a.epoch() {
                    node.last_acked = node.last_acked.max(ckpt);
                }
                Some(Acts::P(
                    a.step(local, primary::Input::Ack { ckpt, epoch }).to_vec(),
                ))
            }
            (Role::Primary(a), Msg::SyncRequest { epoch }) => {
                if epoch > a.epoch() {
                    Some(Acts::P(
                        a.step(local, primary::Input::HigherEpoch { epoch })
                            .to_vec(),
                    ))
                } else {
                    node.needs_full = true;
                    None
                }
            }
            (Role::Primary(a), Msg::FenceRequest { epoch }) => Some(Acts::P(
                a.step(local, primary::Input::FenceRequest { epoch })
                    .to_vec(),
            )),
            (Role::Primary(a), Msg::LeaseReply(r)) => Some(Acts::P(
                a.step(local, primary::Input::LeaseReply(r)).to_vec(),
            )),
            (Role::Standby(s), Msg::Heartbeat { epoch }) => Some(Acts::S(
                s.step(local, standby::Input::Heartbeat { link: 0, epoch })
                    .to_vec(),
            )),
            (
                Role::Standby(s),
                Msg::Checkpoint {
                    epoch,
                    ckpt,
                    full,
                    state,
                },
            ) => {
                let mut v = Vec::new();
                match s.state() {
                    State::Unsynced | State::SteppedDown => {
                        if full && epoch >= s.epoch() {
                            node.replica_state = state;
                            node.replica_ckpt = ckpt;
                            node.last_apply_ns = now;
                            node.full_syncs += 1;
                            v.extend(s.step(local, standby::Input::Resynced { epoch, ckpt }));
                            v.extend(s.step(local, standby::Input::ReplicaApplied { ckpt, epoch }));
                        }
                    }
                    _ => {
                        if epoch > s.epoch() {
                            v.extend(s.step(local, standby::Input::HigherEpoch { epoch }));
                        } else if epoch == s.epoch() && (full || ckpt == node.replica_ckpt + 1) {
                            node.replica_state = state;
                            node.replica_ckpt = ckpt;
                            node.last_apply_ns = now;
                            if full {
                                node.full_syncs += 1;
                            }
                            v.extend(s.step(local, standby::Input::ReplicaApplied { ckpt, epoch }));
                        } else if epoch == s.epoch() && ckpt > node.replica_ckpt + 1 {
                            // A gap: never patch across it; ask for a full synchronisation.
                            self.net
                                .send(now, Ep::Node(n), peer, Msg::SyncRequest { epoch }, true);
                        }
                    }
                }
                Some(Acts::S(v))
            }
            (Role::Standby(s), Msg::FenceConfirm { epoch, ckpt }) => Some(Acts::S(
                s.step(local, standby::Input::PrimaryFenced { epoch, ckpt })
                    .to_vec(),
            )),
            (Role::Standby(s), Msg::Vote(v)) => {
                Some(Acts::S(s.step(local, standby::Input::Vote(v)).to_vec()))
            }
            (Role::Standby(s), Msg::Report(r)) => {
                Some(Acts::S(s.step(local, standby::Input::Report(r)).to_vec()))
            }
            (Role::Standby(s), Msg::Pong) => node
                .ping_out
                .take()
                .map(|_| Acts::S(s.step(local, standby::Input::Ping { ok: true }).to_vec())),
            _ => None,
        };
        if let Some(a) = acts {
            self.apply(n, a);
        }
    }

    fn node_ms(&mut self, n: u8) {
        if !self.nodes[n as usize].running() {
            return;
        }
        let now = self.now();
        let ms = self.ms;
        let peer = Ep::Node(other(n));
        let node = &mut self.nodes[n as usize];
        let local = node.clock.local(now);
        if (ms + node.phase).is_multiple_of(HB_MS) {
            let epoch = node.epoch();
            self.net
                .send(now, Ep::Node(n), peer, Msg::Heartbeat { epoch }, false);
        }
        let acts = match &mut node.role {
            Role::Primary(a) => {
                let mut v = Vec::new();
                let mode = a.mode(local);
                // A slow link still busy with the last checkpoint: the epoch stretches (the
                // guest runs on; its output goes with the next checkpoint).
                let stretch = self.net.busy(Ep::Node(n), peer, now);
                if (ms + node.phase).is_multiple_of(CKPT_MS)
                    && mode != Mode::SteppedDown
                    && mode != Mode::Fenced
                    && !node.app_hung
                {
                    node.state += 1;
                    node.held.push_back((node.state, node.ckpt + 1));
                }
                if (ms + node.phase).is_multiple_of(CKPT_MS)
                    && mode != Mode::SteppedDown
                    && !stretch
                {
                    node.ckpt += 1;
                    let msg = Msg::Checkpoint {
                        epoch: a.epoch(),
                        ckpt: node.ckpt,
                        full: node.needs_full,
                        state: node.state,
                    };
                    node.needs_full = false;
                    self.net.send(now, Ep::Node(n), peer, msg, true);
                    v.extend(a.step(local, primary::Input::CheckpointSent { ckpt: node.ckpt }));
                }
                v.extend(a.step(local, primary::Input::Tick));
                Acts::P(v)
            }
            Role::Standby(s) => {
                let mut v: Vec<standby::Action> = s.step(local, standby::Input::Tick).to_vec();
                // The heartbeat reply, every heartbeat period while the core says it may go
                // (never once deciding to activate). While the primary is suspected, the core
                // hears whether its stream still gets through.
                if (ms + node.phase).is_multiple_of(HB_MS) {
                    let moved = node.stream.0 != node.stream.1;
                    node.stream.1 = node.stream.0;
                    if moved && s.detector().suspected() {
                        v.extend(s.step(local, standby::Input::StreamProgress));
                    }
                }
                if (ms + node.phase).is_multiple_of(HB_MS) && s.may_send_alive(local) {
                    let m = Msg::Alive {
                        epoch: s.epoch(),
                        applied: s.replica(),
                        heard: node.heard,
                        stream: node.stream.0,
                    };
                    self.net.send(now, Ep::Node(n), peer, m, false);
                }
                if matches!(s.state(), State::Unsynced | State::SteppedDown)
                    && ms >= node.last_sync_req_ms + 100
                {
                    node.last_sync_req_ms = ms;
                    self.net.send(
                        now,
                        Ep::Node(n),
                        peer,
                        Msg::SyncRequest { epoch: s.epoch() },
                        true,
                    );
                }
                if node.ping_out.is_some_and(|t| now >= t + PING_TIMEOUT_NS) {
                    node.ping_out = None;
                    v.extend(s.step(local, standby::Input::Ping { ok: false }));
                }
                Acts::S(v)
            }
            Role::Down => return,
        };
        self.apply(n, acts);
    }

    fn send_to_witnesses(&mut self, n: u8, msg: &Msg) {
        let now = self.now();
        for w in 0..self.wits.len() {
            self.net
                .send(now, Ep::Node(n), Ep::Witness(w as u8), msg.clone(), false);
        }
    }

    fn apply(&mut self, n: u8, acts: Acts) {
        let now = self.now();
        let peer = Ep::Node(other(n));
        match acts {
            Acts::S(v) => {
                for a in v {
                    if let Some(e) = a.evidence() {
                        let text = format!("{a}");
                        self.facts.decisions.push((self.ms, n, text.clone()));
                        let ev = e.to_string();
                        self.note(name(n), || format!("{text}    [{ev}]"));
                    }
                    match a {
                        standby::Action::Ack { ckpt, epoch } => {
                            self.net
                                .send(now, Ep::Node(n), peer, Msg::Ack { epoch, ckpt }, true)
                        }
                        standby::Action::QueryWitnesses(r) => {
                            self.note(name(n), || {
                                format!("query {} #{} epoch {}", r.kind, r.query, r.epoch)
                            });
                            self.send_to_witnesses(n, &Msg::VoteRequest(r));
                        }
                        standby::Action::Withdraw(w) => {
                            self.send_to_witnesses(n, &Msg::Withdraw(w))
                        }
                        standby::Action::PingNode => {
                            self.nodes[n as usize].ping_out = Some(now);
                            self.net.send(now, Ep::Node(n), Ep::Ping, Msg::Ping, false);
                        }
                        standby::Action::Activate { epoch, leases, .. } => {
                            let node = &mut self.nodes[n as usize];
                            let local = node.clock.local(now);
                            let auth = PrimaryAuthority::activated(
                                self.cfg.clone(),
                                epoch,
                                local,
                                &leases,
                                node.replica_ckpt,
                            );
                            node.role = Role::Primary(Box::new(auth));
                            node.state = node.replica_state;
                            node.ckpt = node.replica_ckpt;
                            node.last_acked = node.replica_ckpt;
                            node.needs_full = true;
                            node.held.clear();
                            node.held_probes.clear();
                            let rule = self
                                .facts
                                .decisions
                                .last()
                                .map(|d| d.2.clone())
                                .unwrap_or_default();
                            let from_state = node.replica_state;
                            self.facts.activations.push(Activation {
                                ms: self.ms,
                                node: n,
                                epoch,
                                from_state,
                                rule,
                            });
                        }
                        standby::Action::Switchover { epoch, .. } => {
                            self.net
                                .send(now, Ep::Node(n), peer, Msg::FenceRequest { epoch }, true)
                        }
                        standby::Action::RequestFullSync => {
                            let epoch = self.nodes[n as usize].epoch();
                            self.nodes[n as usize].last_sync_req_ms = self.ms;
                            self.net
                                .send(now, Ep::Node(n), peer, Msg::SyncRequest { epoch }, true);
                        }
                        standby::Action::CannotDecide { .. }
                        | standby::Action::RefuseStale { .. }
                        | standby::Action::Alert { .. }
                        | standby::Action::StepDown { .. } => {}
                    }
                }
            }
            Acts::P(v) => {
                for a in v {
                    if let Some(e) = a.evidence() {
                        let text = format!("{a}");
                        self.facts.decisions.push((self.ms, n, text.clone()));
                        let ev = e.to_string();
                        self.note(name(n), || format!("{text}    [{ev}]"));
                    }
                    match a {
                        primary::Action::RequestLeases(r) => {
                            self.send_to_witnesses(n, &Msg::LeaseRequest(r))
                        }
                        primary::Action::NotifyProtected(p) => {
                            self.send_to_witnesses(n, &Msg::Protected(p))
                        }
                        primary::Action::StepDown { epoch, .. } => {
                            let node = &mut self.nodes[n as usize];
                            let local = node.clock.local(now);
                            node.role = Role::Standby(Box::new(StandbyCore::new(
                                self.cfg.clone(),
                                epoch,
                                local,
                                None,
                            )));
                            node.held.clear();
                            node.held_probes.clear();
                        }
                        primary::Action::RequestFullSync => {
                            let epoch = self.nodes[n as usize].epoch();
                            self.nodes[n as usize].last_sync_req_ms = self.ms;
                            self.net
                                .send(now, Ep::Node(n), peer, Msg::SyncRequest { epoch }, true);
                        }
                        primary::Action::ConfirmFenced { epoch, ckpt } => self.net.send(
                            now,
                            Ep::Node(n),
                            peer,
                            Msg::FenceConfirm { epoch, ckpt },
                            true,
                        ),
                        primary::Action::Fence { .. }
                        | primary::Action::Unfence { .. }
                        | primary::Action::Alert { .. } => {}
                    }
                }
            }
        }
    }

    fn witness_recv(&mut self, w: u8, from: Ep, msg: Msg) {
        let now = self.now();
        let wit = &mut self.wits[w as usize];
        let local = wit.clock.local(now);
        let replies = match msg {
            Msg::ProbeReply { id } => {
                if let Some(i) = wit.outstanding.iter().position(|o| o.0 == id) {
                    let (_, target, sent) = wit.outstanding.swap_remove(i);
                    let took = local.since(wit.clock.local(sent));
                    wit.core.step(
                        local,
                        witness::Input::Probe {
                            target,
                            class: ProbeClass::Ok,
                            took,
                        },
                    );
                }
                return;
            }
            Msg::VoteRequest(r) => wit.core.step(local, witness::Input::VoteRequest(r)),
            Msg::LeaseRequest(r) => {
                let before = wit.core.epoch_seen();
                let out = wit.core.step(local, witness::Input::LeaseRequest(r));
                if wit.core.epoch_seen() > before {
                    if let Ep::Node(x) = from {
                        wit.primary_node = x;
                        wit.outstanding.clear();
                    }
                }
                out
            }
            Msg::Withdraw(x) => wit.core.step(local, witness::Input::Withdraw(x)),
            Msg::Protected(p) => wit.core.step(local, witness::Input::Protected(p)),
            _ => return,
        };
        for r in replies {
            let m = match r {
                witness::Action::Vote(v) => Msg::Vote(v),
                witness::Action::LeaseReply(l) => Msg::LeaseReply(l),
            };
            self.net.send(now, Ep::Witness(w), from, m, false);
        }
    }

    fn witness_ms(&mut self, w: u8) {
        let now = self.now();
        let ms = self.ms;
        let wit = &mut self.wits[w as usize];
        let local = wit.clock.local(now);
        let mut i = 0;
        while i < wit.outstanding.len() {
            let (_, target, sent) = wit.outstanding[i];
            let limit = if target == ProbeTarget::PrimaryApp {
                APP_PROBE_TIMEOUT_NS
            } else {
                HOST_PROBE_TIMEOUT_NS
            };
            if now >= sent + limit {
                wit.outstanding.swap_remove(i);
                let took = local.since(wit.clock.local(sent));
                wit.core.step(
                    local,
                    witness::Input::Probe {
                        target,
                        class: ProbeClass::Timeout,
                        took,
                    },
                );
            } else {
                i += 1;
            }
        }
        let mut sends = Vec::new();
        if (ms + wit.phase).is_multiple_of(PROBE_MS) {
            let p = wit.primary_node;
            for (target, node) in [
                (ProbeTarget::PrimaryApp, p),
                (ProbeTarget::PrimaryHost, p),
                (ProbeTarget::StandbyHost, other(p)),
            ] {
                self.probe_seq += 1;
                wit.outstanding.push((self.probe_seq, target, now));
                sends.push((
                    Ep::Node(node),
                    Msg::Probe {
                        id: self.probe_seq,
                        target,
                    },
                ));
            }
        }
        if (ms + wit.phase).is_multiple_of(REPORT_MS) {
            let r = wit.core.report(local);
            sends.push((Ep::Node(0), Msg::Report(r)));
            sends.push((Ep::Node(1), Msg::Report(r)));
        }
        if ms.is_multiple_of(10) {
            wit.core.step(local, witness::Input::Tick);
        }
        for (to, m) in sends {
            self.net.send(now, Ep::Witness(w), to, m, false);
        }
    }

    fn release_and_sample(&mut self) {
        let now = self.now();
        let mut releasing = Vec::new();
        for n in 0..2u8 {
            let node = &mut self.nodes[n as usize];
            if !node.running() {
                continue;
            }
            let Role::Primary(a) = &node.role else {
                continue;
            };
            let local = node.clock.local(now);
            let limit = match a.mode(local) {
                Mode::Protected | Mode::Degraded => node.last_acked,
                Mode::Unprotected => u64::MAX,
                _ => 0,
            };
            let epoch = a.epoch().0;
            while node.held.front().is_some_and(|h| h.1 <= limit) {
                if let Some((idx, _)) = node.held.pop_front() {
                    self.facts.released.insert((epoch, idx));
                }
            }
            while node.held_probes.front().is_some_and(|h| h.2 <= limit) {
                if let Some((w, id, _)) = node.held_probes.pop_front() {
                    self.net.send(
                        now,
                        Ep::Node(n),
                        Ep::Witness(w),
                        Msg::ProbeReply { id },
                        false,
                    );
                }
            }
            if a.may_release_output(local) {
                releasing.push(n);
            }
        }
        match releasing.len() {
            0 => self.facts.unserved_ms += 1,
            2 => self.facts.split_ms += 1,
            _ => {}
        }
        self.facts.releasing = releasing;
    }

    /// Outputs the client received that the current history does not contain (rolled back).
    pub fn lost_outputs(&self) -> u64 {
        let mut lost = HashSet::new();
        for a in &self.facts.activations {
            for &(e, idx) in &self.facts.released {
                if e < a.epoch.0 && idx > a.from_state {
                    lost.insert((e, idx));
                }
            }
        }
        lost.len() as u64
    }

    /// Whether host `n` is a following standby that applied a checkpoint within `ms`.
    pub fn replicating(&self, n: u8, ms: u64) -> bool {
        let node = &self.nodes[n as usize];
        match &node.role {
            Role::Standby(s) => {
                node.running()
                    && s.state() == State::Following
                    && self.now().saturating_sub(node.last_apply_ns) <= ms * 1_000_000
            }
            _ => false,
        }
    }
}
