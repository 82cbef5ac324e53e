//! A simulated host: its clocks, its kernel (a crash starts a new boot), its host state file, and
//! the one daemon process it runs: hsb-primary ([`PrimarySide`]) or hsb-standby
//! ([`StandbySide`]), each around the real node. A process's start follows the daemons' restart
//! rule ([`primary_start`], [`standby_start`]); a hand-over and a rejoin are execs of the other
//! daemon on the same host; systemd restarts the host's unit after a crash (hsb-primary on host
//! A, hsb-standby on host B).

use std::net::SocketAddr;
use std::time::Duration;

use hsb_common::datagram::{next_incarnation, node_sender_id, Dest, Envelope, Inbox, Outbox};
use hsb_common::datagram::{Sender, MAX_DATAGRAM};
use hsb_common::decision::Epoch;
use hsb_common::key::ClusterKey;
use hsb_common::kit::talk::Talk;
use hsb_common::msg::Role;
use hsb_common::node_state::{
    primary_start, standby_start, NodeRole, NodeState, PrimaryArgs, PrimaryStart, CHECKPOINT_BLOCK,
};
use hsb_common::rng::SplitMix64;
use hsb_common::time::Nanos;
use hsb_common::wire::{self, Dgram};
use hsb_primary::node::{PrimaryNode, Start};
use hsb_standby::node::StandbyNode;

use super::net::{Flight, Msg};
use super::primary::PrimarySide;
use super::setup::{self, node_name, CKPT_MS, DGRAM_PORT, HB_PORT};
use super::standby::StandbySide;
use super::world::Shared;

/// A host's clocks: monotonic (offset, rate) and wall (offset only; the nodes never see it, the
/// incarnations do).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    offset: u64,
    ppm: i64,
    /// Wall clock minus simulated time, seconds (stepped by F11).
    pub wall_offset_s: i64,
}

impl Clock {
    /// A clock with a random origin and rate (±100 ppm).
    pub fn new(rng: &mut SplitMix64) -> Clock {
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

    /// The wall clock in microseconds at simulated time `t` (ns).
    pub fn wall_micros(&self, t: u64) -> u64 {
        (self.wall_offset_s.max(0) as u64)
            .saturating_mul(1_000_000)
            .saturating_add(t / 1_000)
    }
}

/// A daemon's sealed-datagram endpoint without a socket: the daemons' own outbox and inbox
/// (sequence numbers, incarnations, destinations, replay windows).
pub(crate) struct Endpoint {
    inbox: Inbox,
    outbox: Outbox,
}

impl Endpoint {
    pub fn new(key: &ClusterKey, me: Sender, incarnation: u64, epoch: u64) -> Endpoint {
        Endpoint {
            inbox: Inbox::new(key, me),
            outbox: Outbox::new(key, me, incarnation, epoch),
        }
    }

    /// Seal `msg` for `dest` and send it from `from` to `to`.
    pub fn send(
        &mut self,
        sh: &mut Shared,
        from: SocketAddr,
        to: SocketAddr,
        dest: Option<Dest>,
        msg: &Dgram,
    ) {
        let mut buf = [0u8; MAX_DATAGRAM];
        let Ok(n) = wire::seal(&mut self.outbox, msg, dest, &mut buf) else {
            return;
        };
        let (Some(f), Some(t)) = (setup::ep_of(from), setup::ep_of(to)) else {
            return;
        };
        let now = sh.now();
        sh.net.send(
            now,
            f,
            t,
            Msg::Dgram {
                from,
                to,
                bytes: buf[..n].to_vec(),
            },
        );
    }

    /// Open a datagram: `None` if it is rejected (forged, replayed, misaddressed, stale).
    pub fn open(&mut self, bytes: &[u8]) -> Option<(Envelope, Dgram)> {
        wire::open(&mut self.inbox, bytes).ok()
    }

    pub fn set_epoch(&mut self, epoch: Epoch) {
        self.outbox.set_epoch(epoch.0);
    }

    pub fn set_role(&mut self, role: Role) {
        self.outbox.set_role(role);
        self.inbox.set_role(role);
    }

    /// A node's [`Talk`], carried out as the daemons' `Talk::carry_out` does, from host `me`'s
    /// datagram address over the simulated network.
    pub fn talk(&mut self, sh: &mut Shared, me: u8, t: Talk) {
        match t {
            Talk::Send { to, dest, msg } => self.send(
                sh,
                setup::host_addr(me, setup::DGRAM_PORT),
                to,
                Some(dest),
                &msg,
            ),
            Talk::Evidence { evidence, .. } => sh.decision(me, &evidence),
            Talk::Record(_) => {}
            Talk::SetEpoch(epoch) => self.set_epoch(epoch),
        }
    }
}

/// The daemon a host runs.
pub(crate) enum Proc {
    /// None (the host is down, or its unit refused to start).
    Down,
    /// hsb-primary.
    Primary(Box<PrimarySide>),
    /// hsb-standby.
    Standby(Box<StandbySide>),
}

/// The simulation steps 1 ms at a time, but a daemon's loop wakes at its deadline: a deadline
/// that falls this little after a step's time (a host's clock runs up to 100 ppm slow, so a
/// 10 ms heartbeat interval ends a few microseconds after the step 10 ms later) is taken as
/// reached in that step, at its own time, rather than a whole millisecond late (which would
/// stretch every period by a millisecond).
const WAKE_SLACK: Duration = Duration::from_micros(200);

/// The time of the loop's turn in a step at `local` if it slept until `wake` (`None`: it
/// sleeps on).
pub(crate) fn woken(local: Nanos, wake: Nanos) -> Option<Nanos> {
    (wake <= local.plus(WAKE_SLACK)).then(|| wake.max(local))
}

/// What a process knows of where it runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Me {
    /// The host.
    pub host: u8,
    /// Its boot.
    pub boot: u64,
    /// This process.
    pub proc: u64,
    /// The host's monotonic time now.
    pub local: Nanos,
    /// The guest's application hangs (F5).
    pub app_hung: bool,
}

/// An exec a process asked for, carried out at the end of its turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exec {
    /// Become hsb-primary in `epoch` from checkpoint `ckpt` (the standby's hand-over) with the
    /// replica's state `state`.
    Promote {
        epoch: Epoch,
        ckpt: u64,
        forced: bool,
        state: u64,
    },
    /// Become hsb-standby (the primary stepped down).
    Rejoin,
}

/// A simulated host.
pub(crate) struct Host {
    pub id: u8,
    pub up: bool,
    pub paused_until: Option<u64>,
    pub app_hung: bool,
    pub clock: Clock,
    boot: u64,
    gen: u64,
    /// The host state file.
    pub disk: Option<NodeState>,
    /// The model guest writes one output each checkpoint period at this phase (ms).
    phase: u64,
    pub proc: Proc,
}

impl Host {
    /// Host `id`, not started yet.
    pub fn new(id: u8, rng: &mut SplitMix64) -> Host {
        Host {
            id,
            up: true,
            paused_until: None,
            app_hung: false,
            clock: Clock::new(rng),
            boot: 1,
            gen: 0,
            disk: None,
            phase: rng.below(CKPT_MS),
            proc: Proc::Down,
        }
    }

    /// Its boot (a crash starts the next).
    pub fn boot(&self) -> u64 {
        self.boot
    }

    /// Up and not paused.
    pub fn running(&self) -> bool {
        self.up && self.paused_until.is_none()
    }

    pub fn me(&self, now: u64) -> Me {
        Me {
            host: self.id,
            boot: self.boot,
            proc: self.gen,
            local: self.clock.local(now),
            app_hung: self.app_hung,
        }
    }

    fn incarnation(&self, now: u64) -> u64 {
        next_incarnation(
            self.disk.map(|d| d.incarnation),
            self.clock.wall_micros(now),
        )
    }

    /// systemd starts the host's unit: hsb-primary on host A (which, by the restart rule, may
    /// rejoin as the standby at once), hsb-standby on host B.
    pub fn start_unit(&mut self, sh: &mut Shared) {
        if self.id == 0 {
            self.start_primary(sh, None);
        } else {
            self.start_standby(sh);
        }
    }

    /// hsb-primary starts (`promote`: handed over by the standby, in its epoch from its
    /// checkpoint, with the replica's guest state).
    pub fn start_primary(&mut self, sh: &mut Shared, promote: Option<(Epoch, u64, bool, u64)>) {
        let now = sh.now();
        let args = PrimaryArgs {
            start_epoch: promote.map_or(1, |p| p.0 .0),
            start_checkpoint: promote.map_or(0, |p| p.1),
            handed_over: promote.is_some(),
            domain_survives: false,
        };
        let (epoch, first) = match primary_start(self.disk, args) {
            PrimaryStart::Rejoin { why, .. } => {
                let id = self.id;
                sh.note(id, || {
                    format!("hsb-primary does not start: {why}; rejoining")
                });
                return self.start_standby(sh);
            }
            PrimaryStart::Run {
                epoch,
                first_checkpoint,
            } => (epoch, first_checkpoint),
        };
        self.gen += 1;
        let incarnation = self.incarnation(now);
        let reserved = first.saturating_sub(1).saturating_add(CHECKPOINT_BLOCK);
        let maintenance = self.disk.is_some_and(|d| d.maintenance);
        self.disk = Some(NodeState {
            epoch,
            role: NodeRole::Primary,
            checkpoint: reserved,
            incarnation,
            maintenance,
        });
        let start = Start {
            epoch,
            first_checkpoint: first,
            reserved,
            incarnation,
            maintenance,
            promoted: promote.is_some_and(|p| p.1 > 0),
            forced: promote.is_some_and(|p| p.2),
            request_base: sh.rng.next_u64() as u32,
        };
        let cfg = setup::primary_config(self.id, &sh.cfg, sh.witnesses);
        let local = self.clock.local(now);
        let node = PrimaryNode::new(cfg, start, local);
        let me = Sender {
            role: Role::Primary,
            id: node_sender_id(node_name(self.id)),
        };
        let ep = Endpoint::new(&sh.key, me, incarnation, epoch.0);
        let state = promote.map_or(0, |p| p.3);
        let id = self.id;
        sh.note(id, || {
            format!("hsb-primary starts in epoch {epoch} from checkpoint {first}")
        });
        self.proc = Proc::Primary(Box::new(PrimarySide::new(
            node,
            ep,
            first,
            state,
            incarnation,
        )));
    }

    /// hsb-standby starts (the unit, a rejoin, a restart).
    pub fn start_standby(&mut self, sh: &mut Shared) {
        let now = sh.now();
        self.gen += 1;
        let host = NodeState {
            epoch: standby_start(self.disk),
            role: NodeRole::Standby,
            checkpoint: self.disk.map_or(0, |d| d.checkpoint),
            incarnation: self.incarnation(now),
            maintenance: self.disk.is_some_and(|d| d.maintenance),
        };
        self.disk = Some(host);
        let cfg = setup::standby_config(self.id, &sh.cfg, sh.witnesses, sh.rng.next_u64() as u32);
        let local = self.clock.local(now);
        let node = StandbyNode::new(cfg, host, local);
        let me = Sender {
            role: Role::Standby,
            id: node_sender_id(node_name(self.id)),
        };
        let ep = Endpoint::new(&sh.key, me, host.incarnation, host.epoch.0);
        let id = self.id;
        sh.note(id, || format!("hsb-standby starts in epoch {}", host.epoch));
        let mut side = StandbySide::new(node, ep);
        let me = self.me(now);
        side.start(me, &mut self.disk, sh);
        self.proc = Proc::Standby(Box::new(side));
    }

    /// The process ends (an exec): its connections close.
    fn end_process(&mut self, sh: &mut Shared) {
        let now = sh.now();
        for (conn, side) in sh.conns.owned_by(self.id, self.gen) {
            sh.conns.close(&mut sh.net, now, conn, side);
        }
        self.proc = Proc::Down;
    }

    /// The host crashes: everything in memory is lost, its connections go silent.
    pub fn crash(&mut self, sh: &mut Shared) {
        self.up = false;
        self.paused_until = None;
        self.proc = Proc::Down;
        self.boot += 1;
        let id = self.id;
        sh.note(id, || "CRASH".into());
    }

    /// The host comes back and systemd starts its unit.
    pub fn restart(&mut self, sh: &mut Shared) {
        if self.up {
            return;
        }
        self.up = true;
        let id = self.id;
        sh.note(id, || "RESTART".into());
        self.start_unit(sh);
    }

    /// Deliver a message to this (running) host.
    pub fn deliver(&mut self, sh: &mut Shared, f: Flight) {
        let now = sh.now();
        let me = self.me(now);
        match (f.msg, &mut self.proc) {
            (Msg::Dgram { from, to, bytes }, p) => {
                let listens = match p {
                    Proc::Primary(_) => to.port() == DGRAM_PORT,
                    Proc::Standby(_) => to.port() == DGRAM_PORT || to.port() == HB_PORT,
                    Proc::Down => false,
                };
                if !listens {
                    return;
                }
                match p {
                    Proc::Primary(s) => s.on_dgram(me, sh, &mut self.disk, from, &bytes),
                    Proc::Standby(s) => s.on_dgram(me, sh, &mut self.disk, (from, to), &bytes),
                    Proc::Down => {}
                }
            }
            (Msg::Tcp { conn, seg }, p) => {
                super::link::on_segment(me, sh, p, &mut self.disk, f.from, conn, seg)
            }
            (Msg::Rst { conn }, p) => super::link::on_reset(me, sh, p, &mut self.disk, conn),
            (Msg::Request { id }, Proc::Primary(s)) => s.on_request(me, f.from, id),
            (Msg::Request { id }, _) => {
                let now = sh.now();
                sh.net
                    .send(now, f.to, f.from, Msg::Reply { id, refused: true });
            }
            (Msg::Pong { id }, Proc::Standby(s)) => s.on_pong(me, sh, &mut self.disk, id),
            _ => {}
        }
        self.after_turn(sh);
    }

    /// A millisecond of the process's loop: the guest's output, then a tick at the node's
    /// deadline or after I/O (`io`: something was delivered this millisecond).
    pub fn run_ms(&mut self, sh: &mut Shared, io: bool) {
        let now = sh.now();
        let me = self.me(now);
        let writes = (sh.ms + self.phase).is_multiple_of(CKPT_MS);
        match &mut self.proc {
            Proc::Primary(s) => {
                let wrote = writes && s.guest_writes(me);
                s.tick(me, sh, &mut self.disk, io || wrote);
            }
            Proc::Standby(s) => s.tick(me, sh, &mut self.disk, io),
            Proc::Down => {}
        }
        self.after_turn(sh);
    }

    /// An exec asked for during the turn.
    fn after_turn(&mut self, sh: &mut Shared) {
        let exec = match &mut self.proc {
            Proc::Primary(s) => s.exec.take(),
            Proc::Standby(s) => s.exec.take(),
            Proc::Down => None,
        };
        match exec {
            Some(Exec::Promote {
                epoch,
                ckpt,
                forced,
                state,
            }) => {
                self.end_process(sh);
                self.start_primary(sh, Some((epoch, ckpt, forced, state)));
            }
            Some(Exec::Rejoin) => {
                self.end_process(sh);
                self.start_standby(sh);
            }
            None => {}
        }
    }

    /// One line on what this host's daemon is, for the trace.
    pub fn summary(&self, now: u64) -> String {
        let local = self.clock.local(now);
        let state = if !self.up {
            "down"
        } else if self.paused_until.is_some() {
            "paused"
        } else {
            "up"
        };
        match &self.proc {
            Proc::Primary(s) => {
                let n = &s.node;
                format!(
                    "{state}: primary epoch {}, {:?}, acked {}, next checkpoint {}, authority {}",
                    n.epoch(),
                    n.link(),
                    n.acked(),
                    n.next_checkpoint(),
                    n.failover_view(local)
                        .map_or("none".into(), |f| f.mode.name().to_string())
                )
            }
            Proc::Standby(s) => {
                let n = &s.node;
                format!(
                    "{state}: standby epoch {}, {}, applied {:?}, core {}, heartbeats {}",
                    n.epoch(),
                    n.state_name(),
                    n.applied(),
                    n.failover_view(local).map_or("none".into(), |f| format!(
                        "{:?} suspected={}",
                        f.state, f.suspected
                    )),
                    n.stats().heartbeats
                )
            }
            Proc::Down => format!("{state}: no daemon"),
        }
    }

    /// Whether this host's copy may release output now.
    pub fn releasing(&self, now: u64) -> bool {
        if !self.running() {
            return false;
        }
        let local = self.clock.local(now);
        match &self.proc {
            Proc::Primary(s) => s.node.may_release_output(local),
            _ => false,
        }
    }

    /// A following standby that applied a checkpoint within `ms`.
    pub fn replicating(&self, now: u64, ms: u64) -> bool {
        if !self.running() {
            return false;
        }
        let local = self.clock.local(now);
        match &self.proc {
            Proc::Standby(s) => s.replicating(local, ms),
            _ => false,
        }
    }
}
