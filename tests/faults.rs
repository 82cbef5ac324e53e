//! The fault suite's representative subset for `just test`: F1 and F2 on network namespaces
//! under the client-oriented policy and the heartbeat-only baseline, and under the
//! client-oriented policy F10 with delay and jitter through the relays, F12 (the old primary
//! gives up its address, rejoins as the standby and is resynchronised) after F4, F13 (a slow
//! replication link, then a crash) and F14 at 50% loss (a gray client path). Every case also
//! PUTs keys logged on the guest's disk and, under the client-oriented policy, must find every
//! acknowledged one at the end: read back from the serving copy and in the disk images' PUT logs
//! (`hsb_tests::faults` documents the checks). The whole matrix is `just faults`. Skipped,
//! saying so, where namespaces cannot be made (and failed under CI: see `hsb_tests::skip`).

use hsb_tests::faults::{markdown, run_case, Fault, Outcome};
use hsb_tests::guests::{guest_markdown, run_guest_fault, GuestFault};

/// One cluster at a time in this binary (`just test` runs two tests at once): these cases
/// check decisions, and two clusters of debug builds plus their relays on two cores starve
/// daemons for 100 ms at a time, which no test here means to inject (under load 6 on this
/// machine, F10's primary daemon went unanswered that long while its output was held).
/// Load is the soak's business.
static ONE_CLUSTER: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_cluster() -> std::sync::MutexGuard<'static, ()> {
    // A case that panicked holding it has cleaned up its cluster: the next may go.
    ONE_CLUSTER.lock().unwrap_or_else(|p| p.into_inner())
}

fn run(test: &str, cases: &[(Fault, &str)]) -> Option<Vec<Outcome>> {
    if let Err(why) = hsb_tests::netns::available() {
        hsb_tests::skip(test, &format!("network namespaces unavailable: {why}"));
        return None;
    }
    let _one = one_cluster();
    let mut outcomes = vec![];
    for (fault, policy) in cases {
        outcomes.push(
            run_case(*fault, policy)
                .unwrap_or_else(|e| panic!("{} under {policy}: {e}", fault.name())),
        );
    }
    Some(outcomes)
}

fn assert_client_oriented_correct(outcomes: &[Outcome]) {
    let table = markdown(outcomes);
    eprintln!("{table}");
    for o in outcomes {
        if o.policy == "client-oriented" {
            assert!(
                o.correct,
                "client-oriented got {} wrong:\n{table}",
                o.fault.name()
            );
            assert_eq!(o.split_ms, 0);
            assert_eq!(o.lost, 0);
            // The guest's disk: every acknowledged PUT read back, and in the disk images' logs.
            assert!(
                o.puts_acked > 0,
                "no PUT acknowledged in {}:\n{table}",
                o.fault.name()
            );
            assert_eq!(
                (o.puts_bad, o.puts_off_disk),
                (0, Some(0)),
                "acknowledged PUTs lost in {}:\n{table}",
                o.fault.name()
            );
            assert!(
                !o.healable || o.healed_ms.is_some(),
                "client-oriented did not heal after {}:\n{table}",
                o.fault.name()
            );
        }
    }
}

#[test]
fn f1_and_f2_on_real_network_namespaces() {
    let cases = [
        (Fault::F1, "client-oriented"),
        (Fault::F1, "heartbeat-only"),
        (Fault::F2, "client-oriented"),
        (Fault::F2, "heartbeat-only"),
    ];
    let Some(outcomes) = run("f1_and_f2_on_real_network_namespaces", &cases) else {
        return;
    };
    assert_client_oriented_correct(&outcomes);
    let table = markdown(&outcomes);
    let f2_baseline = outcomes
        .iter()
        .find(|o| o.fault == Fault::F2 && o.policy == "heartbeat-only");
    assert!(
        f2_baseline.is_some_and(|o| o.failed_over),
        "the Remus baseline fails over on a link cut:\n{table}"
    );
}

#[test]
fn f10_delay_and_f12_rejoin_after_f4_on_real_network_namespaces() {
    let cases = [
        (Fault::F10Delay, "client-oriented"),
        (Fault::F12AfterF4, "client-oriented"),
    ];
    let Some(outcomes) = run(
        "f10_delay_and_f12_rejoin_after_f4_on_real_network_namespaces",
        &cases,
    ) else {
        return;
    };
    assert_client_oriented_correct(&outcomes);
}

/// Issue 12: a slow replication link (10 Mbit/s, a busy guest) keeps protection and a crash
/// then fails over with nothing acknowledged lost; a gray client path (50% loss to host A) is
/// switched over once. Each case takes about 40 s.
#[test]
fn f13_slow_link_and_f14_gray_path_on_real_network_namespaces() {
    let cases = [
        (Fault::F13SlowLink, "client-oriented"),
        (Fault::F14Gray50, "client-oriented"),
    ];
    let Some(outcomes) = run(
        "f13_slow_link_and_f14_gray_path_on_real_network_namespaces",
        &cases,
    ) else {
        return;
    };
    assert_client_oriented_correct(&outcomes);
}

/// F11's other half: the daemons read only monotonic clocks, so a step of the wall clock (which
/// no namespace can give one process) cannot change a decision. The wall-clock reads allowed
/// are for people and ordering, never for a decision: log timestamps (in the logger), the
/// decision log's `wall` stamp (one function, whose text goes into the record and nowhere
/// else), and a datagram sender's incarnation (below).
#[test]
fn daemons_never_read_the_wall_clock() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut found = vec![];
    let mut stack: Vec<std::path::PathBuf> =
        ["common/src", "primary/src", "standby/src", "witness/src"]
            .iter()
            .map(|d| root.join(d))
            .collect();
    while let Some(p) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&p) else {
            continue;
        };
        for e in rd.flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|x| x == "rs") {
                let mut text = std::fs::read_to_string(&path).unwrap_or_default();
                // The one exception: a datagram sender's incarnation is at least the wall clock
                // in microseconds, so a process whose state file was lost still starts above its
                // predecessors. It orders process starts and nothing else: no interval is ever
                // measured with it, and with a state file it only matters when it is higher.
                if path.ends_with("common/src/datagram.rs") {
                    if let (Some(a), Some(b)) = (
                        text.find("pub fn wall_clock_micros()"),
                        text.find("/// The envelope inside every datagram body"),
                    ) {
                        text.replace_range(a..b, "");
                    }
                }
                // The decision log's `wall` stamp: text beside the monotonic `t` of each
                // record, which the replay skips. Only this function may read the clock.
                if path.ends_with("common/src/recorder.rs") {
                    if let (Some(a), Some(b)) = (
                        text.find("pub fn wall_clock_rfc3339()"),
                        text.find("/// Milliseconds since 1970 as RFC 3339"),
                    ) {
                        text.replace_range(a..b, "");
                    }
                }
                for needle in ["SystemTime", "UNIX_EPOCH", "CLOCK_REALTIME", "chrono::"] {
                    if text.contains(needle) {
                        found.push(format!("{}: {needle}", path.display()));
                    }
                }
            }
        }
    }
    assert!(found.is_empty(), "wall-clock reads: {found:?}");
}

/// Rule 9 on real hosts: `hsb-standby activate` with the primary alive and serving moves the
/// active role through the witnesses: never two copies serving (it split the brain for 8-18 s),
/// nothing acknowledged lost, the old primary rejoins as the standby.
#[test]
fn operator_activate_with_the_primary_alive_on_real_network_namespaces() {
    let cases = [(Fault::OperatorActivate, "client-oriented")];
    let Some(outcomes) = run(
        "operator_activate_with_the_primary_alive_on_real_network_namespaces",
        &cases,
    ) else {
        return;
    };
    assert_client_oriented_correct(&outcomes);
    assert!(outcomes.iter().all(|o| o.failed_over && o.split_ms == 0));
}

/// Several guests per host pair on real hosts: three guests, each with its own primary on A and
/// standby on B, three witness processes each serving all three. A fault on g1's cluster (its
/// VM and primary crash; then, in a fresh cluster, its replication cut) gets g1's right
/// outcome, and leaves g2 and g3 untouched: no failover, no lost or doubled write, no
/// reconnection or resynchronisation, still protected, clients served throughout.
#[test]
fn a_fault_on_one_guests_cluster_leaves_the_others_untouched_on_real_network_namespaces() {
    let test =
        "a_fault_on_one_guests_cluster_leaves_the_others_untouched_on_real_network_namespaces";
    if let Err(why) = hsb_tests::netns::available() {
        return hsb_tests::skip(test, &format!("network namespaces unavailable: {why}"));
    }
    let _one = one_cluster();
    let only = std::env::var("HSB_GUEST_FAULT").unwrap_or_default();
    for fault in [GuestFault::Crash, GuestFault::ReplicationCut] {
        if !only.is_empty() && !fault.name().contains(only.as_str()) {
            continue;
        }
        let outcomes =
            run_guest_fault(fault, "").unwrap_or_else(|e| panic!("{}: {e}", fault.name()));
        let table = guest_markdown(fault, &outcomes);
        eprintln!("{table}");
        for o in &outcomes {
            assert_eq!(
                (o.lost, o.doubled, o.split_ms),
                (0, 0, 0),
                "{}:\n{table}",
                o.guest
            );
            if o.guest == "g1" {
                assert_eq!(o.failed_over, fault == GuestFault::Crash, "g1:\n{table}");
                if fault == GuestFault::ReplicationCut {
                    assert_eq!(
                        o.authority, "unprotected",
                        "g1 runs under the witnesses' lease:\n{table}"
                    );
                }
            } else {
                assert!(!o.failed_over, "{} failed over:\n{table}", o.guest);
                assert_eq!(
                    (o.new_sessions, o.new_full_syncs),
                    (0, 0),
                    "{} was disturbed:\n{table}",
                    o.guest
                );
                assert_eq!(o.authority, "protected", "{}:\n{table}", o.guest);
                assert!(o.acked > 50, "{}:\n{table}", o.guest);
                assert!(o.unavailable_ms < 1000, "{}:\n{table}", o.guest);
            }
        }
    }
}
