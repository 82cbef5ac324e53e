//! A seeded, deterministic, single-threaded simulator of the cluster.
//!
//! The daemons' real nodes run in it: hsb-primary's
//! [`PrimaryNode`](hsb_primary::node::PrimaryNode), hsb-standby's
//! [`StandbyNode`](hsb_standby::node::StandbyNode) and N hsb-witness
//! [`WitnessNode`](hsb_witness::node::WitnessNode)s, each stepped with its events and its effects
//! carried out as its daemon does (`host.rs`, `primary.rs`, `standby.rs`, `witness.rs`): sealed
//! datagrams through the daemons' own outboxes and inboxes, the replication session over a
//! simulated TCP connection (`tcp.rs`, `link.rs`), each loop ticking its node at the deadline it
//! computed or after I/O. What the daemons do with a process (a hand-over, a rejoin, a restart
//! after a crash) follows their start rules on the host state file. The network (`net.rs`) has
//! cuts (both ways or one way), loss, delay and jitter; hosts crash, pause (the clock runs on) and
//! restart; wall clocks step (the nodes only see monotonic time, each host's at its own rate).
//!
//! The data plane is a model: the guest is a counter that writes one output per checkpoint
//! period, held under the real output commit and released only by the primary node's release
//! effects, so "acknowledged output lost" judges the real output release rule. A client sees the
//! output of whichever copy releases it. Every fault of DESIGN.md §5 runs over many seeds under
//! each policy; a seed replays exactly:
//! `hsb-sim --fault F2 --policy heartbeat-only --seed 1234 --trace`.

mod host;
mod link;
mod net;
mod primary;
mod scenario;
mod setup;
mod standby;
mod tcp;
mod witness;
mod world;

use std::fmt::Write;

use hsb_common::decision::{Config, Policy};
use hsb_common::rng::SplitMix64;

pub use scenario::{Fault, END_MS, FAULT_MS, HEAL_END_MS, HEAL_MS};
pub use world::{Activation, Facts, World};

use scenario::Expect;

/// Witnesses in the simulated cluster.
pub const WITNESSES: u8 = 3;

/// The decision configuration the simulator runs (defaults, with a lease short enough for short runs).
pub fn sim_config(policy: Policy) -> Config {
    let mut c = Config {
        policy,
        switchover_hold: std::time::Duration::from_millis(300),
        switchover_min_interval: std::time::Duration::from_millis(100),
        ..Config::default()
    };
    c.lease.duration = std::time::Duration::from_millis(400);
    c.lease.max_duration = std::time::Duration::from_millis(400);
    c
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The correct outcome of DESIGN.md §5.
    Correct,
    /// Safe, but the correct action was not taken (no failover when one was due, nobody serving).
    Missed,
    /// Unsafe: split brain, acknowledged output lost, or a false failover.
    Wrong,
}

/// One run.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// The fault.
    pub fault: Fault,
    /// The policy.
    pub policy: Policy,
    /// The seed.
    pub seed: u64,
    /// The scenario's random choices.
    pub variant: String,
    /// Verdict.
    pub outcome: Outcome,
    /// Why (empty when correct).
    pub why: String,
    /// Milliseconds both copies could release output.
    pub split_ms: u64,
    /// Milliseconds no copy could release output.
    pub unserved_ms: u64,
    /// First decision of the standby after the fault, ms after it.
    pub decide_ms: Option<u64>,
    /// That decision.
    pub decision: Option<String>,
    /// Outputs the client had that the surviving history lacks.
    pub lost: u64,
    /// Activations.
    pub activations: Vec<Activation>,
    /// Trace lines (with `trace`).
    pub trace: Vec<String>,
}

fn world_seed(fault: Fault, seed: u64) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ((fault as u64 + 1) << 56)
}

/// Run `fault` under `policy` with `seed`. The scenario depends on (fault, seed) only, so every
/// policy faces the same fault.
pub fn run_one(fault: Fault, policy: Policy, seed: u64, trace: bool) -> RunResult {
    run_one_with(fault, sim_config(policy), seed, trace)
}

/// [`run_one`] with another decision configuration (e.g. `slow-standby = lease`).
pub fn run_one_with(fault: Fault, cfg: Config, seed: u64, trace: bool) -> RunResult {
    let policy = cfg.policy;
    let s = world_seed(fault, seed);
    let mut rng = SplitMix64::new(s);
    let plan = scenario::plan(fault, WITNESSES, &mut rng);
    let mut world = World::new(cfg, WITNESSES, rng.next_u64(), trace);
    let mut serving_at_check = Vec::new();
    let mut events = plan.events.clone();
    events.sort_by_key(|e| e.0);
    let mut next = 0;
    for ms in 0..plan.end_ms {
        while next < events.len() && events[next].0 == ms {
            scenario::apply(&mut world, &events[next].1, &mut rng);
            next += 1;
        }
        world.step_ms();
        if ms == plan.check_ms {
            serving_at_check = world.facts().releasing.clone();
        }
    }
    judge(fault, policy, seed, &plan, world, serving_at_check)
}

fn judge(
    fault: Fault,
    policy: Policy,
    seed: u64,
    plan: &scenario::Plan,
    mut world: World,
    serving: Vec<u8>,
) -> RunResult {
    let lost = world.lost_outputs();
    let f = world.facts();
    let activated_before_heal = f.activations.iter().any(|a| a.ms < plan.check_ms);
    let b_activated = f
        .activations
        .iter()
        .any(|a| a.node == 1 && a.ms < plan.check_ms);
    let mut wrong = Vec::new();
    let mut missed = Vec::new();
    if f.split_ms > 0 {
        wrong.push(format!("split brain for {}ms", f.split_ms));
    }
    if lost > 0 {
        wrong.push(format!("{lost} acknowledged outputs lost"));
    }
    let serves = |n: u8| serving == [n];
    match plan.expect {
        Expect::Failover | Expect::Switchover => {
            if !b_activated {
                missed.push("no failover".to_string());
            }
        }
        Expect::Stay => {
            if activated_before_heal {
                wrong.push("false failover".into());
            } else if !serves(0) {
                missed.push(format!("primary not serving (serving: {serving:?})"));
            }
        }
        Expect::NoActivation => {
            if activated_before_heal {
                wrong.push("activated".into());
            }
        }
        Expect::OneServes => {
            if serving.len() != 1 {
                missed.push(format!("{} copies serving at the end", serving.len()));
            }
        }
        Expect::SwitchoverOnce => {
            let before: Vec<&Activation> = f
                .activations
                .iter()
                .filter(|a| a.ms < plan.check_ms)
                .collect();
            if !b_activated {
                missed.push("no switchover".to_string());
            } else if before.len() > 1 {
                wrong.push(format!("{} activations (flapping)", before.len()));
            } else if !before.iter().all(|a| a.rule.contains("rule6:switchover")) {
                missed.push(format!("not a switchover: {}", before[0].rule));
            }
        }
        Expect::Majority { b_side } => {
            if b_side {
                if !b_activated || !serves(1) {
                    missed.push("majority side (B) not serving".into());
                }
            } else if activated_before_heal {
                wrong.push("minority side activated".into());
            } else if !serves(0) {
                missed.push("majority side (A) not serving".into());
            }
        }
    }
    if plan.healed {
        let end = &world.facts().releasing;
        let ok = end.len() == 1 && world.replicating(1 - end[0], 100);
        if !ok {
            missed.push(format!(
                "after healing: serving {end:?}, other copy not replicating"
            ));
        }
    }
    let (outcome, why) = if !wrong.is_empty() {
        (Outcome::Wrong, wrong.join("; "))
    } else if !missed.is_empty() {
        (Outcome::Missed, missed.join("; "))
    } else {
        (Outcome::Correct, String::new())
    };
    let first = world
        .facts()
        .decisions
        .iter()
        .find(|d| d.1 == 1 && d.0 >= FAULT_MS);
    RunResult {
        fault,
        policy,
        seed,
        variant: plan.variant.clone(),
        outcome,
        why,
        split_ms: world.facts().split_ms,
        unserved_ms: world.facts().unserved_ms,
        decide_ms: first.map(|d| d.0 - FAULT_MS),
        decision: first.map(|d| d.2.clone()),
        lost,
        activations: world.facts().activations.clone(),
        trace: world.take_trace(),
    }
}

/// One line of the sweep: a fault under a policy over many seeds.
#[derive(Debug, Clone)]
pub struct SweepRow {
    /// The fault.
    pub fault: Fault,
    /// The policy.
    pub policy: Policy,
    /// Runs.
    pub runs: u32,
    /// Correct outcomes.
    pub correct: u32,
    /// Safe but not the correct action.
    pub missed: u32,
    /// Unsafe outcomes.
    pub wrong: u32,
    /// Total split-brain time, ms.
    pub split_ms: u64,
    /// Runs with any split brain.
    pub split_runs: u32,
    /// Time to the standby's first decision after the fault, per run that decided, ms (sorted).
    pub decide_ms: Vec<u64>,
    /// Acknowledged outputs lost, total.
    pub lost: u64,
    /// Seeds that were not correct (first few), with why.
    pub failing: Vec<(u64, String)>,
}

impl SweepRow {
    fn percentile(&self, p: usize) -> Option<u64> {
        if self.decide_ms.is_empty() {
            return None;
        }
        let i = (self.decide_ms.len() * p).div_ceil(100).max(1) - 1;
        self.decide_ms.get(i.min(self.decide_ms.len() - 1)).copied()
    }

    /// Median time to decide, ms.
    pub fn decide_p50(&self) -> Option<u64> {
        self.percentile(50)
    }

    /// 99th percentile time to decide, ms.
    pub fn decide_p99(&self) -> Option<u64> {
        self.percentile(99)
    }
}

/// The result of a sweep.
#[derive(Debug, Clone)]
pub struct SweepReport {
    /// One row per (fault, policy).
    pub rows: Vec<SweepRow>,
    /// Seeds per row.
    pub seeds: u64,
}

impl SweepReport {
    /// The row of a fault and policy.
    pub fn row(&self, fault: Fault, policy: Policy) -> Option<&SweepRow> {
        self.rows
            .iter()
            .find(|r| r.fault == fault && r.policy == policy)
    }

    /// Markdown: one table per fault, one row per policy.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let mut faults: Vec<Fault> = self.rows.iter().map(|r| r.fault).collect();
        faults.dedup();
        for f in faults {
            let _ = writeln!(s, "### {f}: {}\n", f.describe());
            let _ = writeln!(s, "| policy | runs | correct | missed | wrong | split-brain ms (runs) | decide p50 / p99 ms | acked outputs lost | first failing seeds |");
            let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---|");
            for r in self.rows.iter().filter(|r| r.fault == f) {
                let dec = match (r.decide_p50(), r.decide_p99()) {
                    (Some(a), Some(b)) => format!("{a} / {b}"),
                    _ => "-".into(),
                };
                let seeds: Vec<String> = r
                    .failing
                    .iter()
                    .take(3)
                    .map(|(s, w)| format!("{s} ({w})"))
                    .collect();
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} ({}) | {} | {} | {} |",
                    r.policy,
                    r.runs,
                    r.correct,
                    r.missed,
                    r.wrong,
                    r.split_ms,
                    r.split_runs,
                    dec,
                    r.lost,
                    if seeds.is_empty() {
                        "-".into()
                    } else {
                        seeds.join("; ")
                    }
                );
            }
            s.push('\n');
        }
        s
    }
}

/// Run every fault under every policy for every seed in `seeds`.
pub fn run_sweep(
    faults: &[Fault],
    policies: &[Policy],
    seeds: std::ops::Range<u64>,
) -> SweepReport {
    run_sweep_with(faults, policies, seeds, &[])
        .expect("the simulator's own configuration is valid")
}

/// [`run_sweep`] with decision keys set on top of [`sim_config`] (e.g. `slow-standby=lease`,
/// to see what a rule changes); an invalid key or value is an error.
pub fn run_sweep_with(
    faults: &[Fault],
    policies: &[Policy],
    seeds: std::ops::Range<u64>,
    sets: &[(&str, &str)],
) -> Result<SweepReport, hsb_common::decision::ConfigError> {
    let mut rows = Vec::new();
    for &fault in faults {
        for &policy in policies {
            let mut row = SweepRow {
                fault,
                policy,
                runs: 0,
                correct: 0,
                missed: 0,
                wrong: 0,
                split_ms: 0,
                split_runs: 0,
                decide_ms: Vec::new(),
                lost: 0,
                failing: Vec::new(),
            };
            let mut cfg = sim_config(policy);
            cfg.set_many(sets)?;
            for seed in seeds.clone() {
                let r = run_one_with(fault, cfg.clone(), seed, false);
                row.runs += 1;
                match r.outcome {
                    Outcome::Correct => row.correct += 1,
                    Outcome::Missed => row.missed += 1,
                    Outcome::Wrong => row.wrong += 1,
                }
                if r.outcome != Outcome::Correct && row.failing.len() < 10 {
                    row.failing.push((seed, r.why.clone()));
                }
                row.split_ms += r.split_ms;
                row.split_runs += u32::from(r.split_ms > 0);
                row.lost += r.lost;
                if let Some(d) = r.decide_ms {
                    row.decide_ms.push(d);
                }
            }
            row.decide_ms.sort_unstable();
            rows.push(row);
        }
    }
    Ok(SweepReport {
        rows,
        seeds: seeds.end.saturating_sub(seeds.start),
    })
}
