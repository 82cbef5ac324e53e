//! The syncs that do not block the loop (`syncs`): a flush answers only once its sync has
//! completed and been taken in, flushes asked meanwhile share that sync, a write to a new
//! extent waits for the activity log's record, and the log's upkeep cools extents only when
//! its record is durable. With the ring the tests take completions in by hand (`settle`, or
//! `wait` then `poll_syncs`), as the loop does when the ring's descriptor is readable.

use super::tests_common::{on_disk, primary, Tmp, MB16};
use super::*;

/// A primary's disk of 16 MiB with its syncs on a ring, with its directory, configuration and
/// the poll the ring is registered with (`None`, and SKIPPED, where the kernel has no io_uring;
/// under CI that fails).
fn ringed(tag: &str) -> Option<(Tmp, DiskConfig, mio::Poll, Disk)> {
    let tmp = Tmp::new(tag);
    let c = tmp.cfg("p.img", MB16);
    let poll = mio::Poll::new().unwrap();
    let mut d = primary(&c, 1);
    d.use_ring(poll.registry(), mio::Token(4));
    if !d.sync_counts().2 {
        assert!(
            std::env::var_os("CI").is_none(),
            "io_uring is unavailable under CI"
        );
        eprintln!("SKIPPED: io_uring unavailable here");
        return None;
    }
    Some((tmp, c, poll, d))
}

/// A guest write, waiting for the activity log's record if it must (as the export does).
fn write(p: &mut Disk, off: u64, data: &[u8]) {
    if p.write(off, data, false) == Err(DiskError::Syncing) {
        p.settle();
        p.write(off, data, false).unwrap();
    }
}

#[test]
fn a_flush_is_answered_once_its_sync_is_taken_in_and_flushes_asked_meanwhile_share_it() {
    let Some((_tmp, _c, _poll, mut p)) = ringed("ring-flush") else {
        return;
    };
    write(&mut p, 0, &[1; 4096]);
    let before = p.sync_counts().0;
    let t1 = p.start_flush().unwrap();
    assert_eq!(
        p.flush_done(t1),
        None,
        "not before the loop takes the sync in"
    );
    // No write completes while the sync runs, so it covers every write before a flush asked
    // meanwhile: those flushes share it, and no second sync follows.
    assert_eq!(p.write(0, &[2; 4096], false), Err(DiskError::Syncing));
    let t2 = p.start_flush().unwrap();
    let t3 = p.start_flush().unwrap();
    assert_eq!((t2, t3), (t1, t1), "asked meanwhile: the sync in flight");
    while p.flush_done(t1).is_none() {
        p.poll_syncs();
    }
    assert_eq!(p.flush_done(t3), Some(Ok(())));
    p.settle();
    assert_eq!(
        p.sync_counts().0,
        before + 1,
        "one sync for the three flushes"
    );
    write(&mut p, 0, &[3; 4096]);
    let t4 = p.start_flush().unwrap();
    assert_eq!(t4, t3 + 1, "nothing in flight: a sync of its own");
    assert_eq!(
        p.flush_done(t4),
        None,
        "a write since: not covered by the last sync"
    );
    p.settle();
    assert_eq!(p.flush_done(t4), Some(Ok(())));
    assert_eq!(p.sync_counts().0, before + 2);
}

#[test]
fn a_write_to_a_new_extent_waits_for_the_activity_logs_record_and_changes_nothing_meanwhile() {
    let Some((_tmp, c, _poll, mut p)) = ringed("ring-heat") else {
        return;
    };
    assert_eq!(p.write(4096, &[7; 4096], false), Err(DiskError::Syncing));
    assert!(DiskError::Syncing.is_wait());
    let mut b = [0u8; 4096];
    p.read(4096, &mut b).unwrap();
    assert_eq!(
        b, [0; 4096],
        "the image is untouched while the record syncs"
    );
    assert_eq!(p.stats().writes, 0);
    assert_eq!(
        p.write(8 << 20, &[7; 4096], false),
        Err(DiskError::Syncing),
        "another new extent waits for the record in flight"
    );
    p.settle();
    assert_eq!(
        on_disk(&c).0,
        vec![0],
        "the record is durable before the write"
    );
    p.write(4096, &[7; 4096], false).unwrap();
    p.read(4096, &mut b).unwrap();
    assert_eq!(b, [7; 4096]);
    assert_eq!(p.hot_extents(), 1);
    assert_eq!(p.stats().al_writes, 1);
}

#[test]
fn the_upkeep_cools_quiet_acknowledged_extents_once_durable_and_writes_wait_for_its_syncs() {
    let Some((_tmp, c, _poll, mut p)) = ringed("ring-tick") else {
        return;
    };
    for off in [0, 4 << 20] {
        write(&mut p, off, &[1; 4096]);
    }
    assert_eq!(p.hot_extents(), 2);
    p.set_open(2);
    p.acked(1);
    p.tick().unwrap();
    assert_eq!(
        p.write(8192, &[2; 4096], false),
        Err(DiskError::Syncing),
        "writes wait for the upkeep's image sync (a write may wait for the inode's lock it holds)"
    );
    assert_eq!(
        p.hot_extents(),
        2,
        "nothing cools before the syncs complete"
    );
    while !p.record_in_flight() {
        p.poll_syncs();
    }
    assert_eq!(
        p.write(8192, &[2; 4096], false),
        Err(DiskError::Syncing),
        "an extent the record in flight takes out takes no write until it is back in"
    );
    p.settle();
    assert_eq!(p.hot_extents(), 0);
    assert_eq!(on_disk(&c), (vec![], 1));
    write(&mut p, 8192, &[2; 4096]);
    assert_eq!(on_disk(&c).0, vec![0], "back in before the write");
    // Written in checkpoint 2, since the last upkeep: it stays at the next one, acknowledged
    // or not, and leaves at the one after.
    p.acked(2);
    p.set_open(3);
    p.tick().unwrap();
    p.settle();
    assert_eq!(p.hot_extents(), 1);
    p.tick().unwrap();
    p.settle();
    assert_eq!(on_disk(&c), (vec![], 2));
    assert_eq!(p.hot_extents(), 0);
}

#[test]
fn a_role_change_waits_for_the_record_in_flight() {
    let Some((_tmp, c, _poll, mut p)) = ringed("ring-settle") else {
        return;
    };
    assert_eq!(p.write(0, &[1; 4096], false), Err(DiskError::Syncing));
    // A clean step-down writes the exact table: the record in flight is taken in first, so
    // the table's record keeps extent 0.
    p.persist_table().unwrap();
    let m = p.meta().clone();
    assert_eq!(
        Bitmap::from_words(m.al, 4).ones().collect::<Vec<_>>(),
        vec![0]
    );
    assert_eq!(on_disk(&c).0, vec![0]);
}
