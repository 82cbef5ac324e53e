//! Unit tests of the primary node: a period stretched by a slow link is caught up as soon as
//! the link is free.

use super::*;

/// A checkpoint that takes longer to write than a period: the period stretches, and the
/// checkpoint it owes is captured as soon as the link is free (the send ends, or an ack makes
/// room under `max_unacked`), not at the next period's tick; the schedule of periods goes on.
#[test]
fn a_stretched_period_is_caught_up_as_soon_as_the_link_is_free() {
    let mut h = Harness::new(config(false), 1_000);
    h.run_to(25);
    assert_eq!(h.inflight, vec![1], "the full synchronisation, at 20 ms");
    h.ack_all();
    h.slow_link = true;
    h.run_to(41);
    assert_eq!(h.inflight, vec![2], "captured at 40 ms, being written");
    // Written by 55 ms, within its period: nothing is owed, nothing is taken early.
    h.now = Nanos::from_millis(55);
    h.sent();
    assert_eq!(h.inflight, vec![2]);
    assert_eq!(h.node.next_deadline(h.now), Nanos::from_millis(60));
    h.run_to(61);
    assert_eq!(h.inflight, vec![2, 3], "captured at 60 ms");
    h.ack(2);
    // Its writing outlasts the 80 ms period, which stretches.
    h.run_to(95);
    assert_eq!(h.inflight, vec![3]);
    assert_eq!(h.node.stats().stretched, 1);
    assert_eq!(h.node.next_deadline(h.now), Nanos::from_millis(100));
    // Written at 95 ms: the next checkpoint is captured in the same step.
    let before = h.effects.len();
    h.sent();
    assert_eq!(h.inflight, vec![3, 4], "caught up at 95 ms");
    assert!(h.effects[before..]
        .iter()
        .any(|e| matches!(e, Effect::Capture { ckpt: 4, .. })));
    assert!(!h.suspended, "resumed after its capture");
    // 4 is written late too, and 3 and 4 fill the window (`max_unacked` 2): the 100 ms period
    // stretches, and stays owed once 4 is written.
    h.run_to(105);
    h.sent();
    assert_eq!(h.node.stats().stretched, 2);
    assert_eq!(h.inflight, vec![3, 4]);
    assert_eq!(h.node.next_deadline(h.now), Nanos::from_millis(120));
    // An ack makes room: the owed checkpoint is due at once (the loop does not sleep), and
    // the tick that follows takes it.
    h.ack(3);
    assert_eq!(h.node.next_deadline(h.now), h.now);
    h.feed(Event::Tick);
    assert_eq!(h.inflight, vec![4, 5], "caught up at 105 ms");
    assert_eq!(h.released, 3);
    // Nothing more is owed: the next checkpoint waits for its period.
    h.sent();
    h.ack(4);
    assert_eq!(h.node.next_deadline(h.now), Nanos::from_millis(120));
    h.run_to(121);
    assert_eq!(h.inflight, vec![5, 6]);
}
