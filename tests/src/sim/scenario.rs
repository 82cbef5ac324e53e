//! The faults of DESIGN.md §5 as seeded scenarios, and what a correct outcome is for each.

use std::fmt;

use hsb_common::rng::SplitMix64;

use super::net::Ep;
use super::world::World;

/// When the fault strikes (the cluster is synchronised and protected by then), ms.
pub const FAULT_MS: u64 = 300;
/// End of a run for F1-F11, ms.
pub const END_MS: u64 = 1_800;
/// When F12 heals the fault, ms.
pub const HEAL_MS: u64 = 1_300;
/// End of an F12 run, ms.
pub const HEAL_END_MS: u64 = 2_600;

/// A fault of DESIGN.md §5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// Primary host crash.
    F1,
    /// Replication/heartbeat link cut, both directions.
    F2,
    /// One-way link loss.
    F3,
    /// Primary cut off from clients, link to standby fine.
    F4,
    /// Guest application hung.
    F5,
    /// Primary paused (SIGSTOP), shorter or longer than the lease.
    F6,
    /// Standby isolated from everything.
    F7,
    /// Witnesses split between sides.
    F8,
    /// All witnesses unreachable and heartbeat lost.
    F9,
    /// Loss and delay on heartbeat and client paths.
    F10,
    /// Clock jumps on every host (with a primary crash to decide on).
    F11,
    /// Healing after one of F1-F10.
    F12,
    /// A slow replication link (issue 12), then a primary crash.
    F13,
    /// A gray client path: 20% loss between the witnesses (clients) and the primary's host.
    F14L20,
    /// The same at 50%.
    F14L50,
    /// The same at 80%.
    F14L80,
}

impl Fault {
    /// All faults, in order.
    pub const ALL: [Fault; 16] = [
        Fault::F1,
        Fault::F2,
        Fault::F3,
        Fault::F4,
        Fault::F5,
        Fault::F6,
        Fault::F7,
        Fault::F8,
        Fault::F9,
        Fault::F10,
        Fault::F11,
        Fault::F12,
        Fault::F13,
        Fault::F14L20,
        Fault::F14L50,
        Fault::F14L80,
    ];

    /// `F1` ... `F12`, `F13`, `F14-20`, `F14-50`, `F14-80`.
    pub fn name(self) -> &'static str {
        [
            "F1", "F2", "F3", "F4", "F5", "F6", "F7", "F8", "F9", "F10", "F11", "F12", "F13",
            "F14-20", "F14-50", "F14-80",
        ][self as usize]
    }

    /// From its name (case-insensitive).
    pub fn parse(s: &str) -> Option<Fault> {
        Fault::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(s))
    }

    /// The fault and its correct outcome (DESIGN.md §5).
    pub fn describe(self) -> &'static str {
        match self {
            Fault::F1 => "primary host crash: fail over, no acknowledged output lost",
            Fault::F2 => "replication/heartbeat link cut both ways: stay, primary unprotected under a lease",
            Fault::F3 => "one-way link loss (random direction): stay",
            Fault::F4 => "primary cut off from clients, link fine: switchover, old primary fenced",
            Fault::F5 => "guest application hung: no failover (alert)",
            Fault::F6 => "primary paused 30ms / lease/2 / 2x lease, protected or unprotected: never two active",
            Fault::F7 => "standby isolated from everything: no failover, primary unprotected under a lease",
            Fault::F8 => "witnesses split between sides (random): the majority side serves, never two",
            Fault::F9 => "all witnesses unreachable and heartbeat lost: cannot decide, no activation",
            Fault::F10 => "30% heartbeat loss, 10% client-path loss, jitter: no flap, no false failover",
            Fault::F11 => "wall clocks stepped by up to an hour, then a primary crash: same decision",
            Fault::F12 => "heal after a random F1-F10: one active copy, the other replicating again",
            Fault::F13 => "slow replication link (a checkpoint takes 100-400ms to cross), then a primary crash: protection kept, fail over, nothing acknowledged lost",
            Fault::F14L20 => "gray client path, 20% loss between witnesses and the primary's host: stay",
            Fault::F14L50 => "gray client path, 50% loss between witnesses and the primary's host: one switchover",
            Fault::F14L80 => "gray client path, 80% loss between witnesses and the primary's host: one switchover",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A scheduled event.
#[derive(Debug, Clone)]
pub(crate) enum Ev {
    Crash(u8),
    CutBoth(Ep, Ep),
    CutOne(Ep, Ep),
    Degrade(Ep, Ep, u64, u64),
    /// Shape `a → b`: a checkpoint takes this many ms to cross.
    Shape(Ep, Ep, u64),
    Pause(u8, u64),
    Hang(bool),
    WallSteps,
    Heal,
}

/// The correct outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// Host B activates.
    Failover,
    /// No activation, and host A keeps serving.
    Stay,
    /// Host B takes over (rule 6).
    Switchover,
    /// No activation.
    NoActivation,
    /// Whatever is decided, exactly one copy serves at the end.
    OneServes,
    /// The side with the witness majority serves.
    Majority { b_side: bool },
    /// Host B takes over by a coordinated switchover (rule 6), exactly once.
    SwitchoverOnce,
}

/// A seeded scenario.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub events: Vec<(u64, Ev)>,
    pub expect: Expect,
    pub end_ms: u64,
    /// When the expectation's "who serves" is sampled.
    pub check_ms: u64,
    /// F12: heal at this time and require one active copy and the other replicating at the end.
    pub healed: bool,
    pub variant: String,
}

fn all_witnesses(w: u8) -> impl Iterator<Item = Ep> {
    (0..w).map(Ep::Witness)
}

/// The plan for `fault` with randomness from `rng`.
pub(crate) fn plan(fault: Fault, witnesses: u8, rng: &mut SplitMix64) -> Plan {
    let (a, b) = (Ep::Node(0), Ep::Node(1));
    let t = FAULT_MS;
    let mut p = Plan {
        events: Vec::new(),
        expect: Expect::Stay,
        end_ms: END_MS,
        check_ms: END_MS - 1,
        healed: false,
        variant: String::new(),
    };
    match fault {
        Fault::F1 => {
            p.events.push((t, Ev::Crash(0)));
            p.expect = Expect::Failover;
        }
        Fault::F2 => p.events.push((t, Ev::CutBoth(a, b))),
        Fault::F3 => {
            if rng.below(2) == 0 {
                p.events.push((t, Ev::CutOne(a, b)));
                p.variant = "A->B lost".into();
            } else {
                p.events.push((t, Ev::CutOne(b, a)));
                p.variant = "B->A lost".into();
            }
        }
        Fault::F4 => {
            for w in all_witnesses(witnesses) {
                p.events.push((t, Ev::CutBoth(a, w)));
            }
            p.expect = Expect::Switchover;
        }
        Fault::F5 => {
            p.events.push((t, Ev::Hang(true)));
            p.expect = Expect::NoActivation;
        }
        Fault::F6 => {
            let lease_ms = 400;
            let pause = [30, lease_ms / 2, lease_ms * 2][rng.below(3) as usize];
            let unprotected = rng.below(2) == 0;
            if unprotected {
                // The standby was lost first: the primary runs under a lease when it is paused.
                p.events.push((t - 150, Ev::CutBoth(a, b)));
            }
            p.events.push((t, Ev::Pause(0, pause)));
            p.variant = format!(
                "{}ms {}",
                pause,
                if unprotected {
                    "unprotected"
                } else {
                    "protected"
                }
            );
            p.expect = Expect::OneServes;
        }
        Fault::F7 => {
            p.events.push((t, Ev::CutBoth(a, b)));
            p.events.push((t, Ev::CutBoth(b, Ep::Ping)));
            for w in all_witnesses(witnesses) {
                p.events.push((t, Ev::CutBoth(b, w)));
            }
        }
        Fault::F8 => {
            // Each witness on A's or B's side; the ping node too.
            let mut b_count = 0;
            let mut sides = String::new();
            p.events.push((t, Ev::CutBoth(a, b)));
            for w in 0..witnesses {
                let on_b = rng.below(2) == 0;
                b_count += u8::from(on_b);
                sides.push(if on_b { 'B' } else { 'A' });
                let cut_from = if on_b { a } else { b };
                p.events.push((t, Ev::CutBoth(cut_from, Ep::Witness(w))));
            }
            let ping_b = rng.below(2) == 0;
            p.events
                .push((t, Ev::CutBoth(if ping_b { a } else { b }, Ep::Ping)));
            let b_side = usize::from(b_count) > usize::from(witnesses) / 2;
            p.variant = format!("witnesses {sides}, ping {}", if ping_b { 'B' } else { 'A' });
            p.expect = Expect::Majority { b_side };
        }
        Fault::F9 => {
            p.events.push((t, Ev::CutBoth(a, b)));
            for w in all_witnesses(witnesses) {
                p.events.push((t, Ev::CutBoth(a, w)));
                p.events.push((t, Ev::CutBoth(b, w)));
            }
            if rng.below(2) == 0 {
                p.events.push((t, Ev::CutBoth(b, Ep::Ping)));
                p.variant = "ping node unreachable".into();
            } else {
                p.variant = "ping node reachable".into();
            }
            p.expect = Expect::NoActivation;
        }
        Fault::F10 => {
            p.events.push((0, Ev::Degrade(a, b, 300, 4_000_000)));
            for w in all_witnesses(witnesses) {
                p.events.push((0, Ev::Degrade(a, w, 100, 5_000_000)));
                p.events.push((0, Ev::Degrade(b, w, 100, 5_000_000)));
            }
            p.expect = Expect::NoActivation;
        }
        Fault::F11 => {
            p.events.push((t - 100, Ev::WallSteps));
            p.events.push((t, Ev::Crash(0)));
            p.events.push((t + 40, Ev::WallSteps));
            p.expect = Expect::Failover;
        }
        Fault::F13 => {
            let cross = 100 + rng.below(301);
            let crash = t + 600 + rng.below(1001);
            p.events.push((t, Ev::Shape(a, b, cross)));
            p.events.push((crash, Ev::Crash(0)));
            p.end_ms = crash + 1_500;
            p.check_ms = p.end_ms - 1;
            p.variant = format!(
                "checkpoint crosses in {cross}ms, crash after {}ms",
                crash - t
            );
            p.expect = Expect::Failover;
        }
        Fault::F14L20 | Fault::F14L50 | Fault::F14L80 => {
            let loss = match fault {
                Fault::F14L20 => 200,
                Fault::F14L50 => 500,
                _ => 800,
            };
            for w in all_witnesses(witnesses) {
                p.events.push((t, Ev::Degrade(a, w, loss, 0)));
            }
            p.end_ms = t + 4_000;
            p.check_ms = p.end_ms - 1;
            p.expect = if loss < 500 {
                Expect::Stay
            } else {
                Expect::SwitchoverOnce
            };
        }
        Fault::F12 => {
            let base = Fault::ALL[rng.below(10) as usize];
            let mut inner = plan(base, witnesses, rng);
            inner.events.push((HEAL_MS, Ev::Heal));
            inner.end_ms = HEAL_END_MS;
            inner.check_ms = HEAL_MS - 1;
            inner.healed = true;
            inner.variant = format!("{base} {}", inner.variant).trim().to_string();
            return inner;
        }
    }
    p
}

/// Apply one event.
pub(crate) fn apply(world: &mut World, ev: &Ev, rng: &mut SplitMix64) {
    match ev {
        Ev::Crash(n) => world.crash(*n),
        Ev::CutBoth(x, y) => {
            world.net().cut_both(*x, *y);
            world.note("net", || format!("cut {x:?} <-> {y:?}"));
        }
        Ev::CutOne(x, y) => {
            world.net().cut_one(*x, *y);
            world.note("net", || format!("cut {x:?} -> {y:?}"));
        }
        Ev::Degrade(x, y, loss, jitter) => {
            world.net().degrade(*x, *y, *loss, *jitter);
            world.note("net", || {
                format!(
                    "{x:?} <-> {y:?}: {}% loss, {}ms jitter",
                    loss / 10,
                    jitter / 1_000_000
                )
            });
        }
        Ev::Shape(x, y, ms) => {
            world.net().shape(*x, *y, ms * 1_000_000);
            world.note("net", || {
                format!("{x:?} -> {y:?}: shaped, a checkpoint crosses in {ms}ms")
            });
        }
        Ev::Pause(n, ms) => world.pause(*n, *ms),
        Ev::Hang(h) => world.hang_app(0, *h),
        Ev::WallSteps => world.step_wall_clocks(rng),
        Ev::Heal => {
            world.net().heal();
            world.note("net", || "HEAL: every link restored".into());
            world.hang_app(0, false);
            for n in 0..2 {
                world.restart(n);
            }
        }
    }
}
