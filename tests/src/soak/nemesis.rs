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
use crate::soak::cluster::SoakCluster;
use crate::soak::monitor::{wall_ms, Monitor};
use crate::soak::schedule::Step;

mod inject;
mod steps;
mod world;

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

impl World {
    /// No fault in force: every process running since `now`, every link up.
    fn new(now: Instant) -> World {
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
        let world = World::new(now);
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

    /// The current primary's host and epoch (the last known when none answers as primary).
    pub fn roles(&mut self) -> (usize, u64) {
        if let Some(r) = self.mon.snapshot().primary() {
            self.roles = r;
        }
        self.roles
    }

    fn note(&mut self, step: usize, text: String) {
        if let Some(r) = self.steps.iter_mut().find(|r| r.index == step) {
            r.notes.push(text);
        }
    }

    /// An operator command's answer (exit `code`, output `out`): an event (`what` names the
    /// command), a note on the step, and a refusal if it failed.
    fn operator_answered(&mut self, step: usize, what: &str, cmd: &str, code: i32, out: &str) {
        let line = first_line(out);
        self.event(&format!("{what}: exit {code}: {line}"));
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

    #[test]
    fn a_takeover_is_due_only_with_a_synchronised_standby_and_a_witness_quorum() {
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(10);
        let mut w = World::new(t0);
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
