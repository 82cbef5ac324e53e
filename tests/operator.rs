//! Operators obey the same rules (DESIGN.md rule 9), on a cluster that keeps living: an
//! activation with the primary alive goes through the witnesses and never leaves two copies
//! serving; a planned switchover loses nothing; without a witness quorum an activation is
//! refused unless forced; maintenance mode pauses automatic takeovers and every daemon says so.

use std::time::{Duration, Instant};

use hsb_tests::life::{Life, LifeOpts};

/// Regression (issue: "a documented `activate` splits the brain"): with the primary alive and
/// serving, `hsb-standby activate` activated epoch 2 while the primary kept serving under the
/// witnesses' leases in epoch 1 (both answered INCR for 8 s). Now the witnesses learn epoch 2
/// first, the primary fences after a final checkpoint and rejoins as the standby, and the
/// client's history shows one copy: nothing acknowledged lost or applied twice.
#[test]
fn activate_with_the_primary_alive_moves_the_active_role_without_two_copies() {
    let mut life = Life::start(LifeOpts::default());
    life.start_client();
    std::thread::sleep(Duration::from_millis(500));
    let (old, new) = (life.primary, 1 - life.primary);
    let (code, out) = life.standby_cli(new, &["activate"]);
    assert_eq!(code, 0, "{out}\n{}", life.logs());
    assert!(out.starts_with("activated: epoch 2"), "{out}");
    assert!(out.contains("rule9:operator-activate"), "{out}");
    life.wait_promoted(new, Duration::from_secs(10));
    life.wait_whole(Duration::from_secs(30));
    for w in &life.witnesses {
        assert_eq!(w.status()["epoch_seen"], "2");
    }
    assert!(life.log_text(old).contains("STEPPED DOWN"));
    std::thread::sleep(Duration::from_millis(500));
    let (acked, lost, doubled) = life.finish();
    assert!(acked > 20, "only {acked} replies");
    assert_eq!((lost, doubled), (0, 0), "{}", life.logs());
}

/// Issue 11 item 2: a planned switchover, then back again: the active role moves by hand-over
/// with nothing acknowledged lost; the client-visible gap is printed (BENCHMARKS.md).
#[test]
fn planned_switchovers_back_and_forth_lose_nothing() {
    let mut life = Life::start(LifeOpts::default());
    life.start_client();
    let mut gaps = vec![];
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(500));
        let new = 1 - life.primary;
        let t = Instant::now();
        let (code, out) = life.standby_cli(new, &["switchover"]);
        assert_eq!(code, 0, "{out}\n{}", life.logs());
        assert!(out.contains("rule9:operator-switchover"), "{out}");
        gaps.push(t.elapsed());
        life.wait_promoted(new, Duration::from_secs(10));
        life.wait_whole(Duration::from_secs(30));
        let log = life.log_text(1 - new);
        assert!(
            log.contains("final checkpoint") && log.contains("confirmed"),
            "the old primary took no final checkpoint:\n{log}"
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    let (acked, lost, doubled, gap) = life.finish_with_gap();
    eprintln!(
        "planned switchover: command answered after {gaps:?}; longest client gap {gap:?}; {acked} acknowledged"
    );
    assert_eq!((lost, doubled), (0, 0), "{}", life.logs());
}

/// Rule 9: without a witness quorum an activation is refused, saying why, and nothing
/// changes; `--force` (the operator guarantees the primary is stopped) activates anyway and
/// serves without the witnesses; once they are back they learn the new epoch.
#[test]
fn activate_without_a_quorum_is_refused_and_force_serves_without_witnesses() {
    let mut life = Life::start(LifeOpts::default());
    let (old, new) = (life.primary, 1 - life.primary);
    for w in &mut life.witnesses[..2] {
        w.kill9();
    }
    let (code, out) = life.standby_cli(new, &["activate"]);
    assert_ne!(code, 0, "{out}");
    assert!(out.starts_with("refused:"), "{out}");
    assert!(out.contains("did not answer"), "{out}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        life.primary_status()["authority"],
        "protected",
        "a refused activation changed nothing"
    );
    // The primary really is stopped now: the operator forces.
    life.kill(old);
    let (code, out) = life.standby_cli(new, &["activate", "--force"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("rule9:operator-forced"), "{out}");
    life.wait_promoted(new, Duration::from_secs(10));
    let mut c = hsb_tests::Client::connect(life.service, Duration::from_secs(5)).expect("serves");
    assert!(c.request("INCR").is_ok(), "the forced primary serves");
    assert_eq!(life.primary_status()["authority"], "unprotected");
}

/// Issue 11 item 3: maintenance mode pauses automatic takeovers; every daemon's status says so;
/// a takeover that would have happened is logged, not carried out; `maintenance off` resumes,
/// and the takeover happens. A standby restarted meanwhile stays paused.
#[test]
fn maintenance_pauses_takeovers_and_every_daemon_says_so() {
    let mut life = Life::start(LifeOpts::default());
    let (old, s) = (life.primary, 1 - life.primary);
    let (code, out) = life.standby_cli(s, &["maintenance", "on"]);
    assert_eq!(code, 0, "{out}");
    let on = |st: &std::collections::HashMap<String, String>| {
        st.get("maintenance").is_some_and(|m| m.starts_with("on"))
    };
    life.handle(old, "primary")
        .wait_for("primary shows maintenance", Duration::from_secs(5), on);
    for w in &life.witnesses {
        w.wait_for("witness shows maintenance", Duration::from_secs(5), on);
    }
    // A standby restarted during maintenance stays paused (the host state keeps it).
    life.kill(s);
    life.spawn(s, "standby");
    life.wait_whole(Duration::from_secs(30));
    assert!(on(&life.handle(s, "standby").status()));
    life.kill(old);
    std::thread::sleep(Duration::from_secs(3));
    let st = life.handle(s, "standby").status();
    assert_eq!(st["decision_state"], "deciding", "{st:?}");
    assert!(
        life.handle(s, "primary").status().is_empty(),
        "took over while paused"
    );
    let decisions = std::fs::read_to_string(life.dir.path("b-standby.decisions"))
        .or_else(|_| std::fs::read_to_string(life.dir.path("a-standby.decisions")))
        .unwrap_or_default();
    assert!(decisions.contains("\"action\":\"paused\""), "{decisions}");
    let (code, out) = life.standby_cli(s, &["maintenance", "off"]);
    assert_eq!(code, 0, "{out}");
    life.wait_promoted(s, Duration::from_secs(10));
}
