//! The nemesis: runs the schedule's steps against the cluster, keeps a model of every fault in
//! force (the *world*: which processes are killed or paused, which links are down, which
//! nftables rules are in place, maintenance mode, whether the primary is gone), heals every
//! fault within its step, and watches for missed takeovers.
//!
//! Faults compose: a link is down while any fault wants it down, and a host's nftables rules
//! are the union of those of the faults in force, so overlapping faults heal independently.
//!
//! **A takeover is due** while all of these hold:
//! - the newest epoch's primary is gone: its daemon was killed (alone, or with its host's
//!   links), or its host lost its client link while its replication link stayed up (a rule-6
//!   switchover is due);
//! - when it went, the pair was whole (the primary protected by the other host's standby,
//!   following it without suspicion, seen by the monitor within the previous 500 ms), so the
//!   replica held everything acknowledged;
//! - the standby's daemon runs (not killed or restarted since, not paused), its host's client
//!   link is up with no nftables rules on it, and maintenance mode is off;
//! - at least 2 of the 3 witnesses are healthy: running, not paused, started more than 3 s
//!   earlier (a restarted witness grants nothing for the longest lease, 2 s), link up, no
//!   rules on their host.
//!
//! **A takeover is missed** when one has been due for [`TAKEOVER_BOUND`] without a break
//! ([`SWITCHOVER_BOUND`] when the primary was cut off from its clients, for the switchover's
//! hold and minimum interval), and no newer epoch serves.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use hsb_common::rng::SplitMix64;

use crate::netns::Net;
use crate::soak::capture::Capture;
use crate::soak::cluster::{host, witness, SoakCluster};
use crate::soak::monitor::{wall_ms, Monitor, Watch};
use crate::soak::schedule::{Fault, Step};
use crate::soak::HOSTS;

/// A takeover due this long without one is missed.
pub const TAKEOVER_BOUND: Duration = Duration::from_secs(5);
/// The same for a primary cut off from its clients (switchover hold 1 s, minimum interval 2 s).
pub const SWITCHOVER_BOUND: Duration = Duration::from_secs(8);
/// A restarted witness counts as healthy after this long.
pub const WITNESS_SETTLE: Duration = Duration::from_secs(3);
/// How long the nemesis waits for a whole cluster before it reports the cluster stuck.
pub const WHOLE_WAIT: Duration = Duration::from_secs(60);
/// How long an operator command may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(20);
/// The nemesis's sampling period while it waits.
const TICK: Duration = Duration::from_millis(50);

/// A process's state in the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proc {
    Running,
    Killed,
    Stopped,
}

/// What the model knows of one host or witness.
#[derive(Debug, Clone)]
pub struct NodeState {
    pub proc: Proc,
    /// Last start of its process.
    pub started: Instant,
    /// Faults holding each link down (client, replication).
    pub down: [u32; 2],
    /// nftables rules in force, per fault.
    pub rules: Vec<(u64, Vec<String>)>,
}

impl NodeState {
    fn new(now: Instant) -> NodeState {
        NodeState {
            proc: Proc::Running,
            started: now,
            down: [0, 0],
            rules: vec![],
        }
    }

    /// What is wrong with it, if anything (for reasons and reports).
    pub fn trouble(&self, now: Instant, settle: Duration) -> Option<String> {
        match self.proc {
            Proc::Killed => return Some("killed".into()),
            Proc::Stopped => return Some("paused (SIGSTOP)".into()),
            Proc::Running => {}
        }
        let age = now.saturating_duration_since(self.started);
        if age < settle {
            return Some(format!("restarted {} ms earlier", age.as_millis()));
        }
        if self.down[0] > 0 {
            return Some("client link down".into());
        }
        if !self.rules.is_empty() {
            return Some("nftables loss or filter rules in force".into());
        }
        None
    }
}

/// The primary that went (killed, or cut off from its clients).
#[derive(Debug, Clone)]
pub struct Gone {
    pub host: usize,
    pub epoch: u64,
    pub at: Instant,
    /// The pair was whole just before.
    pub whole_before: bool,
    /// Cut off from its clients (alive) rather than killed.
    pub cut_off: bool,
}

/// The model of the faults in force.
#[derive(Debug, Clone)]
pub struct World {
    pub hosts: [NodeState; 2],
    pub witnesses: [NodeState; 3],
    pub maintenance: bool,
    pub gone: Option<Gone>,
    /// The faults in force, by step: (step, name).
    pub active: Vec<(usize, String)>,
}

/// A command-line run on a thread of its own: its exit code and output.
type CliThread = std::thread::JoinHandle<(i32, String)>;

/// A node of the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    Host(usize),
    Witness(usize),
}

/// How to heal one part of a fault.
#[derive(Debug, Clone)]
enum Undo {
    LinkUp(Node, Net),
    Rules(Node, u64),
    Cont(Node),
    RestartHost(usize),
    RestartWitness(usize),
    MaintenanceOff(usize),
    Replay(u16),
    Active(usize, String),
}

/// A step as it ran.
#[derive(Debug, Clone)]
pub struct StepRecord {
    pub index: usize,
    pub step: Step,
    pub at: Instant,
    pub wall: u64,
    /// The primary's host and epoch when it started.
    pub primary: usize,
    pub epoch: u64,
    /// Whether it started from a whole cluster.
    pub from_whole: bool,
    pub notes: Vec<String>,
}

/// A takeover due for its whole bound that did not happen.
#[derive(Debug, Clone)]
pub struct Missed {
    pub at: Instant,
    pub step: usize,
    pub epoch: u64,
    pub host: usize,
    pub state: String,
}

/// An operator command that was refused.
#[derive(Debug, Clone)]
pub struct OperatorRefusal {
    pub at: Instant,
    pub wall: u64,
    pub step: usize,
    pub command: String,
    pub answer: String,
}

/// A time the cluster was not whole within [`WHOLE_WAIT`].
#[derive(Debug, Clone)]
pub struct Stuck {
    pub at: Instant,
    pub step: usize,
    pub state: String,
}

/// The nemesis and what it saw.
pub struct Nemesis<'a> {
    pub c: &'a mut SoakCluster,
    pub mon: &'a Monitor,
    rng: SplitMix64,
    pub world: World,
    /// The world after each change: (wall ms, instant, world).
    pub history: Vec<(u64, Instant, World)>,
    pub steps: Vec<StepRecord>,
    pub missed: Vec<Missed>,
    pub refusals: Vec<OperatorRefusal>,
    pub stuck: Vec<Stuck>,
    pub anomalies: Vec<String>,
    /// Faults injected, by kind.
    pub counts: BTreeMap<&'static str, u64>,
    /// Captured datagrams sent again.
    pub replayed: u64,
    due: Option<(Instant, Duration)>,
    missed_this_episode: bool,
    roles: (usize, u64),
    next_rule_id: u64,
    pub start: Instant,
    events: Option<std::fs::File>,
    interrupt: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// A link flapping during the step: (node, network, period, next toggle, down now).
    flap: Option<(Node, Net, Duration, Instant, bool)>,
    /// An operator command running beside a fault: (step, command, its thread).
    cli: Option<(usize, String, CliThread)>,
}

impl<'a> Nemesis<'a> {
    pub fn new(
        c: &'a mut SoakCluster,
        mon: &'a Monitor,
        seed: u64,
        start: Instant,
        interrupt: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> Self {
        let now = Instant::now();
        let events = std::fs::File::create(c.dir.join("events.log")).ok();
        let world = World {
            hosts: [NodeState::new(now), NodeState::new(now)],
            witnesses: [
                NodeState::new(now),
                NodeState::new(now),
                NodeState::new(now),
            ],
            maintenance: false,
            gone: None,
            active: vec![],
        };
        Nemesis {
            c,
            mon,
            rng: SplitMix64::new(seed ^ 0x4e4d_0000_0000_0002),
            history: vec![(wall_ms(), now, world.clone())],
            world,
            steps: vec![],
            missed: vec![],
            refusals: vec![],
            stuck: vec![],
            anomalies: vec![],
            counts: BTreeMap::new(),
            replayed: 0,
            due: None,
            missed_this_episode: false,
            roles: (0, 1),
            next_rule_id: 1,
            start,
            events,
            interrupt,
            flap: None,
            cli: None,
        }
    }

    /// Whether the run was interrupted (SIGINT): waits end early.
    pub fn interrupted(&self) -> bool {
        self.interrupt.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Log one event (stderr and `events.log`), stamped with seconds since the start.
    pub fn event(&mut self, text: &str) {
        let line = format!("{:9.3} {text}", self.start.elapsed().as_secs_f64());
        eprintln!("soak: {line}");
        if let Some(f) = &mut self.events {
            let _ = writeln!(f, "{line}");
        }
    }

    fn changed(&mut self) {
        self.history
            .push((wall_ms(), Instant::now(), self.world.clone()));
    }

    fn node_host(n: Node) -> crate::netns::Host {
        match n {
            Node::Host(h) => host(h),
            Node::Witness(i) => witness(i),
        }
    }

    fn state_mut(&mut self, n: Node) -> &mut NodeState {
        match n {
            Node::Host(h) => &mut self.world.hosts[h],
            Node::Witness(i) => &mut self.world.witnesses[i],
        }
    }

    fn link_down(&mut self, n: Node, net: Net) -> Result<Undo, String> {
        let k = usize::from(net == Net::Replication);
        self.state_mut(n).down[k] += 1;
        self.c.topo.link(Self::node_host(n), net, false)?;
        self.changed();
        Ok(Undo::LinkUp(n, net))
    }

    fn apply_rules(&mut self, n: Node) -> Result<(), String> {
        let rules: Vec<String> = self
            .state_mut(n)
            .rules
            .iter()
            .flat_map(|(_, r)| r.iter().cloned())
            .collect();
        if rules.is_empty() {
            self.c.topo.clear_rules(Self::node_host(n));
            Ok(())
        } else {
            self.c.topo.set_rules(Self::node_host(n), &rules)
        }
    }

    fn add_rules(&mut self, n: Node, rules: Vec<String>) -> Result<Undo, String> {
        let id = self.next_rule_id;
        self.next_rule_id += 1;
        self.state_mut(n).rules.push((id, rules));
        self.apply_rules(n)?;
        self.changed();
        Ok(Undo::Rules(n, id))
    }

    fn stop(&mut self, n: Node) -> Undo {
        match n {
            Node::Host(h) => self.c.signal_host(h, "STOP"),
            Node::Witness(i) => self.c.signal_witness(i, "STOP"),
        }
        self.state_mut(n).proc = Proc::Stopped;
        self.changed();
        Undo::Cont(n)
    }

    /// kill -9 host `h`'s daemon; if it ran the current primary, the primary is gone.
    fn kill_host(&mut self, h: usize) -> Undo {
        let (p, e) = self.roles;
        if h == p {
            self.world.gone = Some(Gone {
                host: h,
                epoch: e,
                at: Instant::now(),
                whole_before: self.whole_just_before(e, h),
                cut_off: false,
            });
        }
        self.c.kill_host(h);
        self.world.hosts[h].proc = Proc::Killed;
        self.changed();
        Undo::RestartHost(h)
    }

    /// Whether the pair was whole just before (the monitor saw it within 500 ms) and no witness
    /// holds a stale-replica mark: a primary that fell back to leases for a moment (acks late)
    /// leaves one, and then the replica may lack output it released (rule 5).
    fn whole_just_before(&self, e: u64, h: usize) -> bool {
        self.mon.snapshot().whole_within(Duration::from_millis(500)) == Some((e, h))
            && (0..3).all(|i| {
                self.c
                    .witness_status(i)
                    .get("stale_mark")
                    .is_none_or(|m| m == "none")
            })
    }

    fn undo(&mut self, u: Undo) -> Result<(), String> {
        match u {
            Undo::LinkUp(n, net) => {
                let k = usize::from(net == Net::Replication);
                let st = self.state_mut(n);
                st.down[k] = st.down[k].saturating_sub(1);
                if st.down[k] == 0 {
                    self.c.topo.link(Self::node_host(n), net, true)?;
                    // A primary cut off from its clients is back.
                    if let (Node::Host(h), Net::Client) = (n, net) {
                        if self
                            .world
                            .gone
                            .as_ref()
                            .is_some_and(|g| g.host == h && g.cut_off)
                        {
                            self.world.gone = None;
                        }
                    }
                }
            }
            Undo::Rules(n, id) => {
                self.state_mut(n).rules.retain(|(i, _)| *i != id);
                self.apply_rules(n)?;
            }
            Undo::Cont(n) => {
                match n {
                    Node::Host(h) => self.c.signal_host(h, "CONT"),
                    Node::Witness(i) => self.c.signal_witness(i, "CONT"),
                }
                self.state_mut(n).proc = Proc::Running;
            }
            Undo::RestartHost(h) => {
                self.c.restart_host(h);
                self.event(&format!("host {} restarted", HOSTS[h]));
                let st = &mut self.world.hosts[h];
                st.proc = Proc::Running;
                st.started = Instant::now();
            }
            Undo::RestartWitness(i) => {
                self.c.start_witness(i);
                let st = &mut self.world.witnesses[i];
                st.proc = Proc::Running;
                st.started = Instant::now();
                // An attacker's best moment: datagrams of the witnesses' earlier incarnations
                // replayed as a new incarnation starts (DESIGN.md §6).
                self.replay(24);
            }
            Undo::MaintenanceOff(h) => {
                let (code, out) = self.c.standby_cli(h, &["maintenance", "off"], CLI_TIMEOUT);
                self.event(&format!(
                    "maintenance off on host {}: exit {code}: {}",
                    HOSTS[h],
                    first_line(&out)
                ));
                self.world.maintenance = false;
            }
            Undo::Replay(count) => {
                self.replay(count);
            }
            Undo::Active(step, name) => {
                if let Some(i) = self
                    .world
                    .active
                    .iter()
                    .position(|(s, n)| *s == step && *n == name)
                {
                    self.world.active.remove(i);
                }
            }
        }
        self.changed();
        Ok(())
    }

    fn replay(&mut self, count: u16) -> usize {
        let Some(cap) = self.c.capture.as_ref() else {
            return 0;
        };
        let packets = cap.pick(&mut self.rng, usize::from(count));
        match Capture::replay(&packets) {
            Ok(n) => {
                self.replayed += n as u64;
                n
            }
            Err(e) => {
                self.event(&format!("replay failed: {e}"));
                0
            }
        }
    }

    /// The current primary's host and epoch (the last known when none answers as primary).
    pub fn roles(&mut self) -> (usize, u64) {
        if let Some(r) = self.mon.snapshot().primary() {
            self.roles = r;
        }
        self.roles
    }

    /// Inject one fault with the primary on host `p` (the standby on the other host).
    fn inject(&mut self, step: usize, f: Fault, p: usize) -> Result<Vec<Undo>, String> {
        let s = 1 - p;
        *self.counts.entry(f.kind()).or_default() += 1;
        self.world.active.push((step, f.name()));
        let mut u = vec![Undo::Active(step, f.name())];
        let (ph, sh) = (Node::Host(p), Node::Host(s));
        let topo_ip = |c: &SoakCluster, n: Node| c.topo.ip(Self::node_host(n), Net::Client);
        match f {
            Fault::KillPrimary => u.push(self.kill_host(p)),
            Fault::CrashPrimaryHost => {
                u.push(self.kill_host(p));
                u.push(self.link_down(ph, Net::Client)?);
                u.push(self.link_down(ph, Net::Replication)?);
            }
            Fault::KillStandby => u.push(self.kill_host(s)),
            Fault::StopPrimary => u.push(self.stop(ph)),
            Fault::StopStandby => u.push(self.stop(sh)),
            Fault::CutReplication => u.push(self.link_down(ph, Net::Replication)?),
            Fault::OneWayLoss => {
                u.push(self.add_rules(sh, vec!["in iifname \"eth1\" drop".into()])?)
            }
            Fault::PrimaryOffClients => {
                let e = self.roles.1;
                let whole_before = self.whole_just_before(e, p);
                u.push(self.link_down(ph, Net::Client)?);
                self.world.gone = Some(Gone {
                    host: p,
                    epoch: e,
                    at: Instant::now(),
                    whole_before,
                    cut_off: true,
                });
            }
            Fault::GuestHung => u.push(self.add_rules(
                ph,
                vec![format!(
                    "in tcp dport {} drop",
                    crate::soak::cluster::SERVICE_PORT
                )],
            )?),
            Fault::StandbyIsolated => {
                u.push(self.link_down(sh, Net::Client)?);
                u.push(self.link_down(sh, Net::Replication)?);
            }
            Fault::WitnessSplit {
                standby_majority,
                alone,
            } => {
                let alone = usize::from(alone);
                let others: Vec<usize> = (0..3).filter(|i| *i != alone).collect();
                let (p_side, s_side) = if standby_majority {
                    (vec![alone], others)
                } else {
                    (others, vec![alone])
                };
                // The sides first, the replication link last (see tests/src/faults.rs, F8).
                let isolate = |from: Vec<String>| -> Vec<String> {
                    from.iter()
                        .flat_map(|a| {
                            [
                                format!("in ip saddr {a} drop"),
                                format!("out ip daddr {a} drop"),
                            ]
                        })
                        .collect()
                };
                let mut from_p = vec![topo_ip(self.c, sh)];
                from_p.extend(s_side.iter().map(|i| topo_ip(self.c, Node::Witness(*i))));
                let mut from_s = vec![topo_ip(self.c, ph)];
                from_s.extend(p_side.iter().map(|i| topo_ip(self.c, Node::Witness(*i))));
                u.push(self.add_rules(ph, isolate(from_p))?);
                u.push(self.add_rules(sh, isolate(from_s))?);
                u.push(self.link_down(ph, Net::Replication)?);
            }
            Fault::WitnessesUnreachable => {
                for i in 0..3 {
                    u.push(self.link_down(Node::Witness(i), Net::Client)?);
                }
                u.push(self.link_down(ph, Net::Replication)?);
            }
            Fault::ReplicationLoss {
                percent,
                at_standby,
            } => {
                let n = if at_standby { sh } else { ph };
                u.push(self.add_rules(
                    n,
                    vec![format!(
                        "in iifname \"eth1\" numgen random mod 100 < {percent} drop"
                    )],
                )?);
            }
            Fault::ClientLoss { witness, percent } => {
                u.push(self.add_rules(
                    Node::Witness(usize::from(witness)),
                    vec![format!(
                        "in iifname \"eth0\" numgen random mod 100 < {percent} drop"
                    )],
                )?);
            }
            Fault::WitnessRestart { witness } => {
                let ws: Vec<usize> = if witness >= 3 {
                    vec![0, 1, 2]
                } else {
                    vec![usize::from(witness)]
                };
                for i in ws {
                    self.c.kill_witness(i);
                    self.world.witnesses[i].proc = Proc::Killed;
                    u.push(Undo::RestartWitness(i));
                }
                self.changed();
            }
            Fault::WitnessStop { witness } => {
                u.push(self.stop(Node::Witness(usize::from(witness))))
            }
            Fault::WitnessIsolated { witness } => {
                u.push(self.link_down(Node::Witness(usize::from(witness)), Net::Client)?)
            }
            Fault::Replay { count } => {
                let n = self.replay(count);
                let (captured, flows) = self
                    .c
                    .capture
                    .as_ref()
                    .map(|c| c.counts())
                    .unwrap_or_default();
                self.note(
                    step,
                    format!("replayed {n} datagrams ({captured} captured in {flows} flows)"),
                );
                u.push(Undo::Replay(count));
            }
            Fault::OperatorSwitchover | Fault::OperatorActivate => {
                let cmd = if f == Fault::OperatorSwitchover {
                    "switchover"
                } else {
                    "activate"
                };
                let (code, out) = self.c.standby_cli(s, &[cmd], CLI_TIMEOUT);
                let line = first_line(&out);
                self.event(&format!(
                    "hsb-standby {cmd} on host {}: exit {code}: {line}",
                    HOSTS[s]
                ));
                self.note(step, format!("`{cmd}`: exit {code}: {line}"));
                if code != 0 {
                    self.refusals.push(OperatorRefusal {
                        at: Instant::now(),
                        wall: wall_ms(),
                        step,
                        command: cmd.into(),
                        answer: out.trim().to_string(),
                    });
                }
            }
            Fault::SwitchoverKill { after_ms } => {
                let cmd = self.c.standby_command(s, &["switchover"]);
                let handle =
                    std::thread::spawn(move || crate::soak::cluster::run_bounded(cmd, CLI_TIMEOUT));
                self.cli = Some((step, "switchover".into(), handle));
                self.wait(Duration::from_millis(u64::from(after_ms)));
                u.push(self.kill_host(p));
            }
            Fault::LinkFlap { client, period_ms } => {
                let net = if client {
                    Net::Client
                } else {
                    Net::Replication
                };
                u.push(self.link_down(ph, net)?);
                if client {
                    let e = self.roles.1;
                    let whole_before = self.whole_just_before(e, p);
                    self.world.gone = Some(Gone {
                        host: p,
                        epoch: e,
                        at: Instant::now(),
                        whole_before,
                        cut_off: true,
                    });
                }
                let period = Duration::from_millis(u64::from(period_ms));
                self.flap = Some((ph, net, period, Instant::now() + period, true));
            }
            Fault::MaintenanceKill => {
                let (code, out) = self.c.standby_cli(s, &["maintenance", "on"], CLI_TIMEOUT);
                self.event(&format!(
                    "maintenance on on host {}: exit {code}: {}",
                    HOSTS[s],
                    first_line(&out)
                ));
                if code != 0 {
                    self.note(
                        step,
                        format!("maintenance on refused: {}", first_line(&out)),
                    );
                } else {
                    self.world.maintenance = true;
                    u.push(Undo::MaintenanceOff(s));
                    self.changed();
                    // The notice reaches the primary and the witnesses.
                    self.wait(Duration::from_millis(1500));
                    // Restart last: maintenance off comes first (undone in reverse).
                    let restart = self.kill_host(p);
                    u.insert(1, restart);
                }
            }
        }
        self.changed();
        Ok(u)
    }

    /// Toggle a flapping link when its period is up (the model follows: while it is up, the
    /// fault holds no link down).
    fn flap_tick(&mut self) -> Result<(), String> {
        let Some((n, net, period, next, down)) = self.flap else {
            return Ok(());
        };
        if Instant::now() < next {
            return Ok(());
        }
        if down {
            self.undo(Undo::LinkUp(n, net))?;
        } else {
            self.link_down(n, net)?;
            // Cut off from its clients again: a switchover may be due again.
            if let (Node::Host(h), Net::Client) = (n, net) {
                if self.world.gone.is_none() && self.roles.0 == h {
                    let e = self.roles.1;
                    self.world.gone = Some(Gone {
                        host: h,
                        epoch: e,
                        at: Instant::now(),
                        whole_before: false,
                        cut_off: true,
                    });
                }
            }
        }
        self.flap = Some((n, net, period, Instant::now() + period, !down));
        Ok(())
    }

    fn note(&mut self, step: usize, text: String) {
        if let Some(r) = self.steps.iter_mut().find(|r| r.index == step) {
            r.notes.push(text);
        }
    }

    /// Check for a missed takeover; called every [`TICK`] while the nemesis waits.
    pub fn tick(&mut self) {
        let now = Instant::now();
        let w = self.mon.snapshot();
        if self
            .world
            .gone
            .as_ref()
            .is_some_and(|g| w.newest_epoch() > g.epoch)
        {
            self.world.gone = None;
            self.changed();
        }
        match (takeover_due(&self.world, w.newest_epoch(), now), self.due) {
            (None, _) => {
                self.due = None;
                self.missed_this_episode = false;
            }
            (Some(bound), None) => self.due = Some((now, bound)),
            (Some(_), Some((since, bound))) => {
                if now.duration_since(since) >= bound && !self.missed_this_episode {
                    self.missed_this_episode = true;
                    let g = self.world.gone.clone();
                    let state = self.describe_state(&w);
                    let step = self.steps.last().map_or(0, |s| s.index);
                    self.event(&format!(
                        "MISSED TAKEOVER: due for {} s without one: {state}",
                        bound.as_secs()
                    ));
                    self.missed.push(Missed {
                        at: now,
                        step,
                        epoch: g.as_ref().map_or(0, |g| g.epoch),
                        host: g.as_ref().map_or(0, |g| g.host),
                        state,
                    });
                }
            }
        }
    }

    /// Sleep `d`, ticking.
    pub fn wait(&mut self, d: Duration) {
        let t = Instant::now();
        while t.elapsed() < d && !self.interrupted() {
            self.tick();
            std::thread::sleep(TICK.min(d.saturating_sub(t.elapsed())));
        }
    }

    /// Both hosts' views and every witness's, for reports.
    pub fn describe_state(&self, w: &Watch) -> String {
        let mut parts = vec![];
        for (name, v) in HOSTS.iter().zip(&w.views) {
            parts.push(format!("host {name}: {}", v.describe()));
        }
        for i in 0..3 {
            let st = self.c.witness_status(i);
            parts.push(if st.is_empty() {
                format!("witness {}: no answer", i + 1)
            } else {
                format!(
                    "witness {}: application {} epoch_seen {} stale_mark {}",
                    i + 1,
                    st.get("application").map_or("?", String::as_str),
                    st.get("epoch_seen").map_or("?", String::as_str),
                    st.get("stale_mark").map_or("?", String::as_str),
                )
            });
        }
        if !self.world.active.is_empty() {
            let names: Vec<&str> = self.world.active.iter().map(|(_, n)| n.as_str()).collect();
            parts.push(format!("faults in force: {}", names.join(", ")));
        }
        parts.join("; ")
    }

    /// Whether the cluster is whole: the newest primary protected by the other host's
    /// standby, which follows it; every witness healthy in the model, seeing the application
    /// up and the primary's epoch, with no stale-replica mark; the service address on the
    /// primary's host only. Returns the primary's host and epoch.
    pub fn whole(&self) -> Option<(usize, u64)> {
        let w = self.mon.snapshot();
        let (e, p) = w.whole_within(Duration::from_millis(200))?;
        let now = Instant::now();
        if self.world.hosts.iter().any(|h| h.proc != Proc::Running)
            || self
                .world
                .witnesses
                .iter()
                .any(|w| w.trouble(now, WITNESS_SETTLE).is_some())
        {
            return None;
        }
        for i in 0..3 {
            let st = self.c.witness_status(i);
            let ok = st.get("application").is_some_and(|a| a == "up")
                && st.get("stale_mark").is_some_and(|m| m == "none")
                && st.get("epoch_seen").is_some_and(|s| *s == e.to_string());
            if !ok {
                return None;
            }
        }
        if !self.c.has_service_address(p) || self.c.has_service_address(1 - p) {
            return None;
        }
        Some((p, e))
    }

    /// Wait until the cluster is whole, at most `timeout`.
    pub fn wait_whole(&mut self, timeout: Duration) -> Option<(usize, u64)> {
        let t = Instant::now();
        loop {
            if let Some(r) = self.whole() {
                self.roles = r;
                return Some(r);
            }
            if t.elapsed() > timeout || self.interrupted() {
                return None;
            }
            self.wait(Duration::from_millis(100));
        }
    }

    /// Wait for a whole cluster; when it does not come, record it, restart the host that does
    /// not serve, and wait once more. Err when the cluster cannot be made whole.
    fn whole_or_recover(&mut self, step: usize) -> Result<(), String> {
        if self.wait_whole(WHOLE_WAIT).is_some() {
            return Ok(());
        }
        if self.interrupted() {
            return Err("interrupted".into());
        }
        let w = self.mon.snapshot();
        let state = self.describe_state(&w);
        self.event(&format!(
            "STUCK: not whole {} s after step {step}: {state}",
            WHOLE_WAIT.as_secs()
        ));
        self.stuck.push(Stuck {
            at: Instant::now(),
            step,
            state: state.clone(),
        });
        // Recovery, as an operator would: with no copy serving and a standby refusing its
        // stale replica, accept the loss (`force-stale`, rule 5; reported, and the client
        // history shows what it cost); otherwise restart the host that does not run the
        // newest primary.
        let serving = w.views.iter().any(|v| v.serving);
        let refusing = (0..2)
            .find(|h| w.views[*h].role == "standby" && w.views[*h].decision == "refused-stale");
        if let (false, Some(h)) = (serving, refusing) {
            let (code, out) = self.c.standby_cli(h, &["force-stale"], CLI_TIMEOUT);
            let text = format!(
                "recovery after step {step}: no copy served and host {}'s standby refused its stale replica: `force-stale`: exit {code}: {}",
                HOSTS[h],
                first_line(&out)
            );
            self.event(&text);
            self.anomalies.push(text);
            if self.wait_whole(WHOLE_WAIT).is_some() {
                return Ok(());
            }
        } else if let Some((p, _)) = w.primary() {
            let h = 1 - p;
            self.event(&format!(
                "recovery: restarting host {} (not the primary)",
                HOSTS[h]
            ));
            self.c.restart_host(h);
            self.world.hosts[h].proc = Proc::Running;
            self.world.hosts[h].started = Instant::now();
            self.changed();
            if self.wait_whole(WHOLE_WAIT).is_some() {
                return Ok(());
            }
        }
        let w = self.mon.snapshot();
        Err(format!(
            "the cluster could not be made whole again after step {step}: {}",
            self.describe_state(&w)
        ))
    }

    /// Run one step of the schedule.
    pub fn run_step(&mut self, index: usize, step: Step) -> Result<(), String> {
        let from_whole = if step.wait_whole {
            self.whole_or_recover(index.saturating_sub(1))?;
            true
        } else {
            self.whole().is_some()
        };
        let (p, e) = self.roles();
        self.steps.push(StepRecord {
            index,
            step,
            at: Instant::now(),
            wall: wall_ms(),
            primary: p,
            epoch: e,
            from_whole,
            notes: vec![],
        });
        self.event(&format!(
            "step {index}: {} (primary on host {}, epoch {e})",
            step.describe(),
            HOSTS[p]
        ));
        let mut undos = self.inject(index, step.main, p)?;
        let t0 = Instant::now();
        let hold = Duration::from_millis(step.hold_ms);
        let mut extra = step.extra;
        let mut extra_undos = vec![];
        while (t0.elapsed() < hold || extra.is_some()) && !self.interrupted() {
            if let Some((f, at)) = extra {
                if t0.elapsed() >= Duration::from_millis(at) {
                    self.event(&format!("step {index}: + {}", f.name()));
                    extra_undos = self.inject(index, f, p)?;
                    extra = None;
                }
            }
            self.flap_tick()?;
            self.wait(TICK);
        }
        // A flapping link ends down, as it was injected: its undo brings it up.
        if let Some((n, net, _, _, false)) = self.flap.take() {
            self.link_down(n, net)?;
        }
        if step.main == Fault::MaintenanceKill && self.world.maintenance {
            let w = self.mon.snapshot();
            if w.newest_epoch() > e {
                let text = format!(
                    "step {index}: a takeover (epoch {}) happened during maintenance mode",
                    w.newest_epoch()
                );
                self.event(&text);
                self.anomalies.push(text);
            } else {
                self.note(index, "no takeover during maintenance".into());
            }
        }
        for u in extra_undos.into_iter().rev() {
            self.undo(u)?;
        }
        for u in undos.drain(..).rev() {
            self.undo(u)?;
        }
        if let Some((step, cmd, h)) = self.cli.take() {
            let (code, out) = h
                .join()
                .unwrap_or((-1, "the command's thread failed".into()));
            let line = first_line(&out);
            self.event(&format!("hsb-standby {cmd}: exit {code}: {line}"));
            self.note(step, format!("`{cmd}`: exit {code}: {line}"));
            if code != 0 {
                self.refusals.push(OperatorRefusal {
                    at: Instant::now(),
                    wall: wall_ms(),
                    step,
                    command: cmd,
                    answer: out.trim().to_string(),
                });
            }
        }
        self.event(&format!("step {index}: healed"));
        self.wait(Duration::from_millis(step.gap_ms));
        Ok(())
    }
}

/// Whether a takeover is due at `now` (see the module's documentation), and its bound, given
/// the faults in force and the newest epoch that served.
pub fn takeover_due(world: &World, newest_epoch: u64, now: Instant) -> Option<Duration> {
    let g = world.gone.as_ref()?;
    if newest_epoch > g.epoch || !g.whole_before || world.maintenance {
        return None;
    }
    let sb = &world.hosts[1 - g.host];
    if sb.proc != Proc::Running || sb.started > g.at || sb.down[0] > 0 || !sb.rules.is_empty() {
        return None;
    }
    let healthy = world
        .witnesses
        .iter()
        .filter(|w| w.trouble(now, WITNESS_SETTLE).is_none())
        .count();
    if healthy < 2 {
        return None;
    }
    Some(if g.cut_off {
        SWITCHOVER_BOUND
    } else {
        TAKEOVER_BOUND
    })
}

fn first_line(s: &str) -> String {
    let l = s.lines().next().unwrap_or("").trim();
    if l.chars().count() > 200 {
        format!("{}...", l.chars().take(200).collect::<String>())
    } else {
        l.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world(now: Instant) -> World {
        World {
            hosts: [NodeState::new(now), NodeState::new(now)],
            witnesses: [
                NodeState::new(now),
                NodeState::new(now),
                NodeState::new(now),
            ],
            maintenance: false,
            gone: None,
            active: vec![],
        }
    }

    #[test]
    fn a_takeover_is_due_only_with_a_synchronised_standby_and_a_witness_quorum() {
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(10);
        let mut w = world(t0);
        assert_eq!(takeover_due(&w, 3, now), None, "nothing went");
        w.gone = Some(Gone {
            host: 0,
            epoch: 3,
            at: t0 + Duration::from_secs(5),
            whole_before: true,
            cut_off: false,
        });
        w.hosts[0].proc = Proc::Killed;
        assert_eq!(takeover_due(&w, 3, now), Some(TAKEOVER_BOUND));
        assert_eq!(takeover_due(&w, 4, now), None, "a newer epoch serves");
        // One witness down: still a quorum; two: none.
        w.witnesses[0].proc = Proc::Killed;
        assert_eq!(takeover_due(&w, 3, now), Some(TAKEOVER_BOUND));
        w.witnesses[1].proc = Proc::Stopped;
        assert_eq!(takeover_due(&w, 3, now), None);
        w.witnesses[1].proc = Proc::Running;
        // A witness restarted a moment ago grants nothing yet.
        w.witnesses[1].started = now - Duration::from_secs(1);
        assert_eq!(takeover_due(&w, 3, now), None);
        w.witnesses[1].started = t0;
        w.witnesses[2].rules.push((1, vec!["in drop".into()]));
        assert_eq!(takeover_due(&w, 3, now), None, "loss at a witness");
        w.witnesses[2].rules.clear();
        // The standby: paused, restarted since, cut off, or in maintenance.
        w.hosts[1].proc = Proc::Stopped;
        assert_eq!(takeover_due(&w, 3, now), None);
        w.hosts[1].proc = Proc::Running;
        w.hosts[1].started = t0 + Duration::from_secs(6);
        assert_eq!(takeover_due(&w, 3, now), None, "restarted: no replica");
        w.hosts[1].started = t0;
        w.hosts[1].down[0] = 1;
        assert_eq!(takeover_due(&w, 3, now), None);
        w.hosts[1].down[0] = 0;
        w.maintenance = true;
        assert_eq!(takeover_due(&w, 3, now), None);
        w.maintenance = false;
        // Not synchronised when the primary went.
        if let Some(g) = w.gone.as_mut() {
            g.whole_before = false;
        }
        assert_eq!(takeover_due(&w, 3, now), None);
        // Cut off from its clients: a switchover, with its longer bound.
        w.gone = Some(Gone {
            host: 0,
            epoch: 3,
            at: t0,
            whole_before: true,
            cut_off: true,
        });
        assert_eq!(takeover_due(&w, 3, now), Some(SWITCHOVER_BOUND));
    }
}
