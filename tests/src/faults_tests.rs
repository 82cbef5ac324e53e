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

fn put(n: usize, acked: bool) -> Put {
    let t = Instant::now();
    Put {
        start: t,
        end: t,
        n,
        acked,
    }
}

#[test]
fn put_checker_finds_missing_and_wrong_values_of_acknowledged_puts_only() {
    let puts = [
        put(0, true),
        put(1, false),
        put(2, true),
        put(3, true),
        put(4, true),
    ];
    let mut got: std::collections::HashMap<String, Option<String>> = Default::default();
    got.insert(key(0), Some(value(0)));
    // An unacknowledged PUT may be there or not.
    got.insert(key(1), Some("NIL".into()));
    got.insert(key(2), Some("NIL".into()));
    got.insert(key(3), Some(value(2)));
    got.insert(key(4), None);
    let c = check_puts(&puts, &got);
    assert_eq!(
        c,
        PutCheck {
            acked: 4,
            missing: 1,
            wrong: 1,
            unread: 1
        }
    );
    assert_eq!(c.bad(), 3);
    // Keys and values are distinct per PUT and fit the model's limits.
    assert_ne!(value(1), value(2));
    assert!(key(MAX_PUTS).len() <= 40 && value(MAX_PUTS).len() <= 84);
}
