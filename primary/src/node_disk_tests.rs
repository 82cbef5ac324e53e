//! Unit tests of the primary node's disk decisions (`node_disk.rs`), with the node tests'
//! harness: a full synchronisation waits for the standby's report and for its copy, copies
//! being written hold checkpoints, acks reach the disk, a lost session stops the journal, and
//! an epoch ends early when the journal fills.

use super::*;

fn with_disk() -> NodeConfig {
    NodeConfig {
        disk: true,
        ..config(false)
    }
}

fn captures(h: &Harness) -> Vec<(u64, bool)> {
    h.effects
        .iter()
        .filter_map(|e| match e {
            Effect::Capture { ckpt, full, .. } => Some((*ckpt, *full)),
            _ => None,
        })
        .collect()
}

fn plans(h: &Harness) -> Vec<u64> {
    h.effects
        .iter()
        .filter_map(|e| match e {
            Effect::PlanDisk { ckpt } => Some(*ckpt),
            _ => None,
        })
        .collect()
}

/// A session whose full synchronisation (and its disk copy) is acknowledged.
fn protected() -> Harness {
    let mut h = Harness::new(with_disk(), 1_000);
    h.run_to(10);
    h.feed(Event::DiskReport);
    h.run_to(30);
    h.ack_all();
    assert_eq!(captures(&h).first(), Some(&(1, true)));
    h
}

#[test]
fn a_full_synchronisation_waits_for_the_disk_report_and_its_copy() {
    let mut h = Harness::new(with_disk(), 1_000);
    h.resync = (false, false);
    h.run_to(100);
    assert_eq!(h.node.link(), Link::Streaming);
    assert!(captures(&h).is_empty(), "no report yet: {:?}", h.effects);
    assert!(plans(&h).is_empty());
    assert_eq!(h.node.disk_view(), Some((DiskPhase::AwaitReport, 0)));
    // The report: the copy is planned for the coming full synchronisation.
    h.feed(Event::DiskReport);
    let next = h.node.next_checkpoint();
    assert_eq!(plans(&h), [next]);
    assert_eq!(
        h.node.disk_view(),
        Some((DiskPhase::Planned { ckpt: next }, 0))
    );
    // Not ready: the copy steps while the guest runs, nothing is captured.
    h.run_to(200);
    let steps = h.count(|e| matches!(e, Effect::ResyncStep { .. }));
    assert!(steps > 50, "{steps} copy steps in 100 ms");
    assert!(captures(&h).is_empty());
    // Ready: the full synchronisation is captured, with the planned number.
    h.resync = (true, false);
    h.run_to(210);
    assert_eq!(captures(&h), [(next, true)]);
    assert_eq!(h.node.disk_view(), Some((DiskPhase::Off, 0)));
    // A second report in the same session is no new plan.
    h.feed(Event::DiskReport);
    assert_eq!(plans(&h), [next]);
}

#[test]
fn copies_being_written_hold_checkpoints_and_copy_steps() {
    let mut h = Harness::new(with_disk(), 1_000);
    h.run_to(10);
    h.resync = (false, true);
    h.feed(Event::DiskReport);
    h.run_to(100);
    assert_eq!(
        h.count(|e| matches!(e, Effect::ResyncStep { .. })),
        1,
        "one step, then its copies are written"
    );
    assert!(captures(&h).is_empty());
    // Written: the next step finds the copy ready.
    h.resync = (true, false);
    h.feed(Event::ResyncSent);
    h.run_to(110);
    assert_eq!(captures(&h).len(), 1);
}

#[test]
fn acks_reach_the_disk_and_a_lost_session_stops_the_journal() {
    let mut h = protected();
    assert!(h.effects.contains(&Effect::DiskAcked { ckpt: 1 }));
    h.run_to(100);
    h.ack_all();
    let acked = h.node.acked();
    assert!(acked > 1);
    assert!(h.effects.contains(&Effect::DiskAcked { ckpt: acked }));
    h.effects.clear();
    h.feed(Event::Lost {
        why: "test".into(),
        frame_error: None,
    });
    assert!(h.effects.contains(&Effect::DiskStop));
    // The next session waits for its own report.
    h.run_to(400);
    assert_eq!(h.node.link(), Link::Streaming);
    assert!(captures(&h).is_empty(), "{:?}", h.effects);
    h.feed(Event::DiskReport);
    h.run_to(420);
    assert!(captures(&h).iter().any(|&(_, full)| full));
}

#[test]
fn a_full_journal_ends_the_epoch_early_when_a_checkpoint_may_be_taken() {
    let mut h = protected();
    let before = captures(&h).len();
    // Mid-period: the journal is three quarters full; the checkpoint is taken now.
    h.run_to(45);
    h.ack_all();
    let mid = captures(&h).len();
    h.feed(Event::JournalHigh);
    h.feed(Event::Tick);
    assert_eq!(captures(&h).len(), mid + 1, "{before} {mid}");
    assert_eq!(h.node.disk_view().map(|d| d.1), Some(1));
    // With max_unacked checkpoints unacknowledged, writes wait instead.
    h.feed(Event::JournalHigh);
    h.feed(Event::Tick);
    h.feed(Event::JournalHigh);
    h.feed(Event::Tick);
    assert_eq!(h.node.unacked(), 2);
    assert_eq!(captures(&h).len(), mid + 2);
    assert_eq!(h.node.disk_view().map(|d| d.1), Some(2));
}

/// The copy steps every millisecond until it is ready, not the checkpoint's reservation: a
/// reservation that fails is tried again once a period, as without a disk.
#[test]
fn a_failing_reservation_is_not_retried_at_every_copy_step() {
    let mut h = Harness::new(with_disk(), 0);
    h.reserve_ok = false;
    h.run_to(10);
    h.feed(Event::DiskReport);
    h.run_to(210);
    let reserves = h.count(|e| matches!(e, Effect::Reserve(_)));
    assert!(
        (1..=12).contains(&reserves),
        "{reserves} reservations tried in 200 ms of 20 ms periods"
    );
    assert!(captures(&h).is_empty());
    h.reserve_ok = true;
    h.run_to(260);
    assert_eq!(captures(&h).first().map(|c| c.1), Some(true));
}

#[test]
fn a_failed_copy_loses_the_standby() {
    let mut h = Harness::new(with_disk(), 1_000);
    h.run_to(10);
    h.feed(Event::DiskReport);
    h.effects.clear();
    h.feed(Event::ResyncStepped {
        ready: false,
        copying: false,
        error: Some("disk image: read: EIO".into()),
    });
    assert!(h
        .effects
        .iter()
        .any(|e| matches!(e, Effect::Disconnect { .. })));
    assert!(h.effects.contains(&Effect::DiskStop));
    assert!(matches!(h.node.link(), Link::Down(_)));
}

/// Seeded random lives with a disk: reports, copy steps ready or not, copies written or not,
/// full journals, acks, losses, failed reservations, in any order. The node's invariants
/// (the disk's included, checked in every step) and the harness's domain checks hold.
#[test]
fn random_lives_with_a_disk_keep_every_invariant() {
    let mut all_full_syncs = 0;
    for seed in 1..=40u64 {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut rnd = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let cfg = NodeConfig {
            disk: true,
            ..config(seed % 2 == 0)
        };
        let mut h = Harness::new(cfg, 5 + seed % 7);
        h.reserve_ok = seed % 5 != 0;
        let mut t = 0;
        let mut full_syncs = 0;
        for _ in 0..400 {
            t += 1 + rnd(30);
            h.run_to(t);
            match rnd(12) {
                0..=3 => h.ack_all(),
                4 => {
                    if rnd(3) == 0 {
                        h.feed(Event::Lost {
                            why: "test".into(),
                            frame_error: None,
                        })
                    }
                }
                5 => h.reserve_ok = !h.reserve_ok,
                6 | 7 => h.feed(Event::DiskReport),
                8 => h.resync = (rnd(2) == 0, rnd(3) == 0),
                9 => {
                    if h.node.disk_view().is_some_and(|_| rnd(2) == 0) {
                        h.feed(Event::ResyncSent);
                    }
                }
                _ => h.feed(Event::JournalHigh),
            }
            full_syncs += h
                .effects
                .iter()
                .filter(|e| matches!(e, Effect::Capture { full: true, .. }))
                .count();
            h.effects.clear();
        }
        all_full_syncs += full_syncs;
    }
    assert!(
        all_full_syncs >= 40,
        "{all_full_syncs} full synchronisations in 40 lives"
    );
}
