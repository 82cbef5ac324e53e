//! The seeded decision simulator over a fixed seed set: the client-oriented policy is correct on
//! every fault with zero split brain and no acknowledged output lost; the heartbeat-only baseline
//! shows the split brain it is known for.

use hsb_common::decision::Policy;
use hsb_tests::sim::{run_one, run_sweep, Fault, Outcome};

const SEEDS: std::ops::Range<u64> = 0..20;

#[test]
fn client_oriented_is_always_correct() {
    let report = run_sweep(&Fault::ALL, &[Policy::ClientOriented], SEEDS);
    let bad: Vec<String> = report
        .rows
        .iter()
        .filter(|r| r.correct != r.runs || r.split_ms > 0 || r.lost > 0)
        .map(|r| format!("{} {}: {:?}", r.fault, r.policy, r.failing))
        .collect();
    assert!(
        bad.is_empty(),
        "{}\n{}",
        bad.join("\n"),
        report.to_markdown()
    );
}

#[test]
fn heartbeat_only_splits_brain_on_link_cut_and_isolation() {
    let report = run_sweep(&[Fault::F2, Fault::F7], &[Policy::HeartbeatOnly], SEEDS);
    for r in &report.rows {
        assert!(r.split_runs > 0 && r.wrong > 0, "{}", report.to_markdown());
    }
}

#[test]
fn a_seed_replays_exactly() {
    for (f, p) in [
        (Fault::F8, Policy::ClientOriented),
        (Fault::F10, Policy::HeartbeatOnly),
    ] {
        let a = run_one(f, p, 1234, true);
        let b = run_one(f, p, 1234, true);
        assert_eq!(a.trace, b.trace);
        assert_eq!(
            (a.outcome, a.split_ms, a.decide_ms),
            (b.outcome, b.split_ms, b.decide_ms)
        );
    }
    assert_eq!(
        run_one(Fault::F1, Policy::ClientOriented, 7, false).outcome,
        Outcome::Correct
    );
}

/// The simulator builds its configuration by hand: it must still be one the daemons would
/// accept (`Config::check`, the rules of README "Configuration rules").
#[test]
fn the_simulated_configuration_is_one_the_daemons_accept() {
    for p in Policy::ALL {
        hsb_tests::sim::sim_config(p)
            .check()
            .unwrap_or_else(|e| panic!("{p}: {e}"));
    }
}
