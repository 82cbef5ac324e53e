//! The fault suite's representative subset for `just test`: F1 and F2 on network namespaces
//! under the client-oriented policy and the heartbeat-only baseline (the whole matrix is
//! `just faults`). Skipped, saying so, where namespaces cannot be made.

use hsb_tests::faults::{markdown, run_case, Fault};

#[test]
fn f1_and_f2_on_real_network_namespaces() {
    if let Err(why) = hsb_tests::netns::available() {
        eprintln!("SKIPPED: network namespaces unavailable: {why}");
        return;
    }
    let mut outcomes = vec![];
    for fault in [Fault::F1, Fault::F2] {
        for policy in ["client-oriented", "heartbeat-only"] {
            outcomes.push(
                run_case(fault, policy)
                    .unwrap_or_else(|e| panic!("{} under {policy}: {e}", fault.name())),
            );
        }
    }
    let table = markdown(&outcomes);
    eprintln!("{table}");
    for o in &outcomes {
        if o.policy == "client-oriented" {
            assert!(
                o.correct,
                "client-oriented got {} wrong:\n{table}",
                o.fault.name()
            );
            assert_eq!(o.split_ms, 0);
            assert_eq!(o.lost, 0);
        }
    }
    let f2_baseline = outcomes
        .iter()
        .find(|o| o.fault == Fault::F2 && o.policy == "heartbeat-only");
    assert!(
        f2_baseline.is_some_and(|o| o.failed_over),
        "the Remus baseline fails over on a link cut:\n{table}"
    );
}
