//! Unit tests of `faults`.

use std::time::Instant;

use super::*;

fn op(v: Option<u64>, t: u64) -> Op {
    let base = Instant::now();
    Op {
        start: base,
        end: base + Duration::from_millis(t),
        value: v,
    }
}

#[test]
fn history_checker_finds_loss_and_doubles() {
    assert_eq!(
        check_history(&[op(Some(1), 1), op(Some(2), 2), op(None, 3), op(Some(4), 4)]).1,
        0
    );
    let (_, lost, _, _) = check_history(&[op(Some(5), 1), op(Some(3), 2)]);
    assert_eq!(lost, 1, "rollback is a loss");
    let (_, lost, _, _) = check_history(&[op(Some(5), 1), op(Some(5), 2)]);
    assert_eq!(lost, 1, "a repeated value lost an acknowledged increment");
    let (_, _, doubled, _) = check_history(&[op(Some(5), 1), op(Some(8), 2)]);
    assert_eq!(
        doubled, 1,
        "two extra increments without unacknowledged requests"
    );
    // An unacknowledged request applied late (a retransmission after healing) is no double,
    // but it can only be applied once.
    let late = [
        op(Some(1), 1),
        op(None, 2),
        op(Some(2), 3),
        op(Some(4), 4),
        op(Some(6), 5),
    ];
    assert_eq!(check_history(&late[..4]).2, 0);
    assert_eq!(check_history(&late).2, 1);
}
