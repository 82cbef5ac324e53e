//! Disk replication without the wire: a primary's disk and a replica's, moved along by the
//! same calls the checkpoint code makes.

use super::*;
use hsb_common::msg::{Fork, DISK_PIECE};
use hsb_common::rng::SplitMix64;

use super::tests_common::{on_disk, primary, Tmp, MB16};

fn block(rng: &mut SplitMix64, n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    rng.fill(&mut b);
    b
}

/// What a resynchronisation moved: frames and bytes on the wire (data plus frame overhead).
#[derive(Debug, Default)]
struct Moved {
    frames: u64,
    bytes: u64,
}

/// Resynchronise `r` from `p` the way the wire does: plan, copies while the guest runs
/// (`during` is the guest, called after every copy), the rest with checkpoint `ckpt`.
fn resync(
    p: &mut Disk,
    r: &mut Disk,
    ckpt: u64,
    preserve: bool,
    mut during: impl FnMut(&mut Disk),
) -> (DiskPlan, Moved) {
    let plan = p.plan(&r.report(), ckpt);
    r.begin_resync(&plan, preserve).unwrap();
    let mut buf = vec![0u8; DISK_PIECE];
    let mut moved = Moved::default();
    loop {
        while let Some((off, len)) = p.resync_next() {
            p.read(off, &mut buf[..len]).unwrap();
            r.resync_write(off, &buf[..len]).unwrap();
            moved.frames += 1;
            moved.bytes += (len + PIECE_OVERHEAD) as u64;
            during(p);
        }
        if p.resync_ready() {
            break;
        }
    }
    assert!(p.resync_final_cost() <= p.journal_max());
    let mut fin = vec![];
    while let Some((off, len)) = p.resync_final_next() {
        let mut d = vec![0u8; len];
        p.read(off, &mut d).unwrap();
        moved.frames += 1;
        moved.bytes += (len + PIECE_OVERHEAD) as u64;
        fin.push((off, d));
    }
    p.finish_resync();
    p.set_open(ckpt + 1);
    r.apply(ckpt, fin.iter().map(|(o, d)| (*o, &d[..])))
        .unwrap();
    p.acked(ckpt);
    (plan, moved)
}

/// An incremental checkpoint: the primary's journal, applied to the replica, acknowledged.
fn checkpoint(p: &mut Disk, r: &mut Disk, ckpt: u64) {
    let w: Vec<(u64, Vec<u8>)> = p.journal().iter().map(|(o, d)| (o, d.to_vec())).collect();
    p.clear_journal();
    p.set_open(ckpt + 1);
    r.apply(ckpt, w.iter().map(|(o, d)| (*o, &d[..]))).unwrap();
    p.acked(ckpt);
}

fn writes(p: &mut Disk, rng: &mut SplitMix64, n: usize) {
    let tracks = p.geometry().tracks;
    for _ in 0..n {
        let t = rng.below(tracks);
        let len = 4096 * (1 + rng.below(3) as usize);
        let off = (t * 4096).min(p.size() - len as u64);
        let b = block(rng, len);
        p.write(off, &b, false).unwrap();
    }
}

#[test]
fn fresh_disks_resync_only_the_written_tracks_then_follow_every_checkpoint() {
    let tmp = Tmp::new("fresh");
    let mut rng = SplitMix64::new(1);
    let mut p = primary(&tmp.cfg("p.img", MB16), 1);
    assert_eq!(p.meta().history, vec![Fork { gen: BLANK, at: 0 }]);
    for t in [3u64, 100, 101] {
        p.write(t * 4096, &block(&mut rng, 4096), false).unwrap();
    }
    let mut r = Disk::open(&tmp.cfg("r.img", MB16)).unwrap();
    assert_eq!(r.report().gen, BLANK);
    let (plan, moved) = resync(&mut p, &mut r, 1, false, |_| {});
    assert!(!plan.full);
    assert_eq!(plan.tracks, 3);
    assert_eq!(moved.frames, 2, "tracks 100 and 101 go in one piece");
    assert_eq!(r.digest().unwrap(), p.digest().unwrap());
    assert_eq!(r.meta().gen, p.meta().gen);
    for n in 2..8 {
        writes(&mut p, &mut rng, 5);
        checkpoint(&mut p, &mut r, n);
        assert_eq!(r.digest().unwrap(), p.digest().unwrap(), "checkpoint {n}");
    }
    assert_eq!(r.applied(), Some(7));
    // A checkpoint is applied only on top of the one before it.
    let e = r.apply(9, std::iter::empty()).unwrap_err();
    assert!(e.to_string().contains("which it is not"), "{e}");
    assert_eq!(
        r.applied(),
        None,
        "a refused apply leaves the replica unusable"
    );
}

#[test]
fn unknown_and_foreign_disks_get_a_full_copy() {
    let tmp = Tmp::new("unknown");
    let mut rng = SplitMix64::new(2);
    let c = tmp.cfg("r.img", MB16);
    std::fs::write(&c.path, vec![7u8; MB16 as usize]).unwrap();
    let mut r = Disk::open(&c).unwrap();
    assert!(r.report().torn, "no metadata: unknown contents");
    let mut p = primary(&tmp.cfg("p.img", MB16), 1);
    writes(&mut p, &mut rng, 3);
    let (plan, _) = resync(&mut p, &mut r, 1, false, |_| {});
    assert!(plan.full);
    assert_eq!(plan.tracks, MB16 / 4096);
    assert_eq!(r.digest().unwrap(), p.digest().unwrap());
    // Another cluster's primary (a lineage of its own): a full copy again.
    let mut q = primary(&tmp.cfg("q.img", MB16), 1);
    let (plan, _) = resync(&mut q, &mut r, 1, false, |_| {});
    assert!(plan.full);
    assert_eq!(r.digest().unwrap(), q.digest().unwrap());
    // The same primary again, the replica restarted after a clean stop (its record says
    // exactly where it is): only what changed since.
    r.persist_table().unwrap();
    drop(r);
    let mut r = Disk::open(&c).unwrap();
    writes(&mut q, &mut rng, 2);
    let (plan, _) = resync(&mut q, &mut r, 2, false, |_| {});
    assert!(!plan.full && plan.tracks <= 6, "{plan:?}");
    assert_eq!(r.digest().unwrap(), q.digest().unwrap());
    // Killed instead: the record says where it was before that resynchronisation, torn
    // toward this lineage: still only what changed since.
    drop(r);
    let mut r = Disk::open(&c).unwrap();
    writes(&mut q, &mut rng, 2);
    let (plan, _) = resync(&mut q, &mut r, 3, false, |_| {});
    assert!(!plan.full, "{plan:?}");
    r.persist_table().unwrap();
    drop(r);
    let r = Disk::open(&c).unwrap();
    assert!(!r.report().torn);
}

#[test]
fn failover_then_rejoin_copies_the_new_primary_writes_and_the_old_primary_unacknowledged_ones() {
    let tmp = Tmp::new("rejoin");
    let mut rng = SplitMix64::new(3);
    let (ca, cb) = (tmp.cfg("a.img", 64 << 20), tmp.cfg("b.img", 64 << 20));
    let mut a = primary(&ca, 1);
    let mut b = Disk::open(&cb).unwrap();
    writes(&mut a, &mut rng, 20);
    resync(&mut a, &mut b, 1, false, |_| {});
    for n in 2..=4 {
        writes(&mut a, &mut rng, 10);
        checkpoint(&mut a, &mut b, n);
    }
    a.tick().unwrap();
    // Checkpoint 5 reaches B but its ack is lost; A writes on in epochs 6 and 7 at tracks of
    // its own (in extent 15), then dies (no clean step-down).
    writes(&mut a, &mut rng, 4);
    let w: Vec<(u64, Vec<u8>)> = a.journal().iter().map(|(o, d)| (o, d.to_vec())).collect();
    a.clear_journal();
    a.set_open(6);
    b.apply(5, w.iter().map(|(o, d)| (*o, &d[..]))).unwrap();
    let a_only: Vec<u64> = (0..8).map(|i| (15u64 << 10) + i * 37).collect();
    for &t in &a_only {
        a.write(t * 4096, &block(&mut rng, 4096), false).unwrap();
    }
    let a_digest = a.digest().unwrap();
    drop(a);
    // B takes over from checkpoint 5: a new lineage forked there; its guest writes on.
    b.activate(5).unwrap();
    assert_eq!(b.meta().history[0].at, 5);
    assert_eq!(b.meta().role, Role::Primary);
    let b_writes = 6;
    writes(&mut b, &mut rng, b_writes);
    b.set_open(7);
    writes(&mut b, &mut rng, b_writes);
    // A comes back as the standby: it reports its lineage, its last acknowledged checkpoint,
    // and (from its activity log) the extents it wrote since.
    let mut a = Disk::open(&ca).unwrap();
    let rep = a.report();
    assert_eq!(rep.gen, b.meta().history[0].gen);
    assert!(rep.base <= 5 && !rep.torn, "{rep:?}");
    let dirty = rep
        .dirty
        .clone()
        .expect("a primary's disk reports what it wrote");
    assert!(a_only.iter().all(|&t| dirty.get(t)));
    let mut expect = dirty.clone();
    assert!(b.tracks().changed_since(rep.base, &mut expect));
    let (plan, moved) = resync(&mut b, &mut a, 8, false, |_| {});
    assert!(!plan.full, "{plan:?}");
    // Only B's writes since A's base, and A's hot extents: not the whole disk.
    assert_eq!(plan.tracks, expect.count());
    assert!(plan.tracks < 16384 / 2, "{plan:?}");
    assert!(moved.bytes < 40 << 20, "{moved:?}");
    assert_eq!(a.digest().unwrap(), b.digest().unwrap());
    assert_ne!(a.digest().unwrap(), a_digest);
    assert_eq!(a.meta().gen, b.meta().gen);
    assert_eq!(a.meta().role, Role::Replica);
    assert!(a.report().dirty.is_none());
}

#[test]
fn a_clean_step_down_reports_exactly_the_tracks_written_since_the_last_ack() {
    let tmp = Tmp::new("stepdown");
    let mut rng = SplitMix64::new(4);
    let (ca, cb) = (tmp.cfg("a.img", MB16), tmp.cfg("b.img", MB16));
    let mut a = primary(&ca, 1);
    let mut b = Disk::open(&cb).unwrap();
    resync(&mut a, &mut b, 1, false, |_| {});
    writes(&mut a, &mut rng, 5);
    checkpoint(&mut a, &mut b, 2);
    a.write(4096 * 1000, &[1; 4096], false).unwrap();
    a.write(4096 * 3000, &[2; 8192], false).unwrap();
    a.persist_table().unwrap();
    drop(a);
    let a = Disk::open(&ca).unwrap();
    let rep = a.report();
    assert_eq!(rep.base, 2);
    assert_eq!(
        rep.dirty.map(|d| d.ones().collect::<Vec<_>>()),
        Some(vec![1000, 3000, 3001])
    );
}

#[test]
fn one_gib_with_one_percent_changed_resyncs_at_most_two_percent() {
    let tmp = Tmp::new("gib");
    let mut rng = SplitMix64::new(5);
    let size = 1u64 << 30;
    let mut p = primary(&tmp.cfg("p.img", size), 1);
    let mut r = Disk::open(&tmp.cfg("r.img", size)).unwrap();
    resync(&mut p, &mut r, 1, false, |_| {});
    checkpoint(&mut p, &mut r, 2);
    // The standby goes away; 1% of the blocks change.
    p.stop_journal();
    let tracks = p.geometry().tracks;
    let mut changed = Bitmap::new(tracks);
    while changed.count() < tracks / 100 {
        let t = rng.below(tracks);
        changed.set(t);
        p.write(t * 4096, &block(&mut rng, 4096), false).unwrap();
    }
    drop(r);
    let mut r = Disk::open(&tmp.cfg("r.img", size)).unwrap();
    let (plan, moved) = resync(&mut p, &mut r, 3, false, |_| {});
    assert_eq!(plan.tracks, changed.count());
    let pct = moved.bytes as f64 * 100.0 / size as f64;
    eprintln!(
        "1 GiB, {} tracks changed: {} frames, {} bytes sent ({pct:.3}% of the image)",
        changed.count(),
        moved.frames,
        moved.bytes
    );
    assert!(pct <= 2.0, "{pct}%");
    let (mut x, mut y) = (vec![0u8; 4096], vec![0u8; 4096]);
    for t in changed.ones() {
        p.read(t * 4096, &mut x).unwrap();
        r.read(t * 4096, &mut y).unwrap();
        assert_eq!(x, y, "track {t}");
    }
}

#[test]
fn an_interrupted_resync_of_a_live_replica_leaves_its_disk_as_it_was() {
    let tmp = Tmp::new("staged");
    let mut rng = SplitMix64::new(6);
    let mut p = primary(&tmp.cfg("p.img", MB16), 1);
    let mut r = Disk::open(&tmp.cfg("r.img", MB16)).unwrap();
    resync(&mut p, &mut r, 1, false, |_| {});
    writes(&mut p, &mut rng, 5);
    checkpoint(&mut p, &mut r, 2);
    let at_2 = r.digest().unwrap();
    // The link breaks; the primary writes on; the new session's copy breaks off too.
    p.stop_journal();
    writes(&mut p, &mut rng, 40);
    let plan = p.plan(&r.report(), 3);
    assert!(!plan.full);
    r.begin_resync(&plan, true).unwrap();
    let mut buf = vec![0u8; DISK_PIECE];
    for _ in 0..10 {
        let (off, len) = p.resync_next().unwrap();
        p.read(off, &mut buf[..len]).unwrap();
        r.resync_write(off, &buf[..len]).unwrap();
    }
    r.abort_resync();
    p.stop_journal();
    assert_eq!(
        r.digest().unwrap(),
        at_2,
        "staged copies never touched the image"
    );
    assert_eq!(r.applied(), Some(2));
    // The next session completes it.
    let (_, _) = resync(&mut p, &mut r, 3, true, |_| {});
    assert_eq!(r.digest().unwrap(), p.digest().unwrap());
    assert_eq!(
        std::fs::metadata(resync_path(&tmp.0.join("r.img")))
            .unwrap()
            .len(),
        0
    );
}

#[test]
fn an_interrupted_direct_resync_is_torn_and_done_again() {
    let tmp = Tmp::new("direct");
    let mut rng = SplitMix64::new(7);
    let c = tmp.cfg("r.img", MB16);
    let mut p = primary(&tmp.cfg("p.img", MB16), 1);
    let mut r = Disk::open(&c).unwrap();
    resync(&mut p, &mut r, 1, false, |_| {});
    checkpoint(&mut p, &mut r, 2);
    p.stop_journal();
    drop(r);
    writes(&mut p, &mut rng, 50);
    let mut r = Disk::open(&c).unwrap();
    let plan = p.plan(&r.report(), 3);
    r.begin_resync(&plan, false).unwrap();
    let mut buf = vec![0u8; DISK_PIECE];
    for _ in 0..5 {
        let (off, len) = p.resync_next().unwrap();
        p.read(off, &mut buf[..len]).unwrap();
        r.resync_write(off, &buf[..len]).unwrap();
    }
    drop(r);
    p.stop_journal();
    let mut r = Disk::open(&c).unwrap();
    let rep = r.report();
    assert!(rep.torn && rep.toward == p.meta().gen, "{rep:?}");
    let (plan, _) = resync(&mut p, &mut r, 3, false, |_| {});
    assert!(
        !plan.full,
        "torn by this lineage's own writes: the tracks since its base cover them"
    );
    assert_eq!(r.digest().unwrap(), p.digest().unwrap());
    // Torn by another lineage's writes: nothing can be told of it, a full copy.
    let mut other = r.report();
    other.torn = true;
    other.toward = [9; 16];
    assert!(p.plan(&other, 4).full);
    p.stop_journal();
}

#[test]
fn a_replica_stopped_while_applying_says_so() {
    let tmp = Tmp::new("applying");
    let mut rng = SplitMix64::new(8);
    let c = tmp.cfg("r.img", MB16);
    let mut p = primary(&tmp.cfg("p.img", MB16), 1);
    let mut r = Disk::open(&c).unwrap();
    resync(&mut p, &mut r, 1, false, |_| {});
    // No sync at the end of the resynchronisation: the record still says torn, from the old
    // base, toward the primary's lineage.
    assert_eq!(r.meta().state, State::Applying);
    writes(&mut p, &mut rng, 3);
    checkpoint(&mut p, &mut r, 2);
    drop(r);
    let r = Disk::open(&c).unwrap();
    let rep = r.report();
    assert!(
        rep.torn && rep.base == 0 && rep.gen == BLANK && rep.toward == p.meta().gen,
        "{rep:?}"
    );
    // Which the primary resynchronises from there, not whole.
    assert!(!p.plan(&rep, 3).full);
    p.stop_journal();
    // A clean stop records the exact checkpoint.
    let mut r = r;
    writes(&mut p, &mut rng, 3);
    p.stop_journal();
    resync(&mut p, &mut r, 3, false, |_| {});
    r.persist_table().unwrap();
    drop(r);
    let rep = Disk::open(&c).unwrap().report();
    assert!(!rep.torn && rep.base == 3, "{rep:?}");
}

#[test]
fn the_activity_log_is_written_before_a_new_extent_and_cools_after_acks() {
    let tmp = Tmp::new("al");
    let c = tmp.cfg("p.img", MB16);
    let mut p = primary(&c, 1);
    p.write(0, &[1; 4096], false).unwrap();
    assert_eq!(p.stats().al_writes, 1);
    p.write(8192, &[1; 4096], false).unwrap();
    assert_eq!(p.stats().al_writes, 1, "extent 0 is already in the log");
    p.write((8 << 20) + 4096, &[1; 4096], false).unwrap();
    assert_eq!(p.stats().al_writes, 2);
    assert_eq!(on_disk(&c), (vec![0, 2], 0));
    p.set_open(2);
    p.write((4 << 20) + 4096, &[1; 4096], false).unwrap();
    p.acked(1);
    p.tick().unwrap();
    assert_eq!(
        on_disk(&c),
        (vec![1], 1),
        "extents written only in 1 cooled"
    );
    p.acked(2);
    p.tick().unwrap();
    assert_eq!(
        on_disk(&c),
        (vec![1], 1),
        "written since the last upkeep (checkpoint 2): it stays, so a busy extent is not cooled and heated again"
    );
    // Checkpoint 2 was open at that upkeep (a write of it may have come after): it leaves once
    // an upkeep has passed with a later checkpoint open and no write to it since.
    p.set_open(3);
    p.tick().unwrap();
    assert_eq!(on_disk(&c), (vec![1], 1));
    p.tick().unwrap();
    assert_eq!(on_disk(&c), (vec![], 2));
    assert_eq!(p.hot_extents(), 0);
}

#[test]
fn a_full_journal_refuses_a_write_before_it_touches_the_image() {
    let tmp = Tmp::new("journal");
    let mut c = tmp.cfg("p.img", MB16);
    c.journal_max = MIN_JOURNAL;
    let mut p = primary(&c, 1);
    p.start_journal();
    p.write(0, &[1; 1 << 20], false).unwrap();
    assert!(!p.journal_high());
    let before = p.digest().unwrap();
    let e = p.write(2 << 20, &[2; 1 << 20], false).unwrap_err();
    assert!(e.is_wait(), "{e}");
    assert_eq!(p.digest().unwrap(), before);
    assert_eq!(p.stats().waits, 1);
    assert!(!p.can_write(1 << 20) && p.can_write(4096));
    p.write(2 << 20, &[2; 512 << 10], false).unwrap();
    assert!(p.journal_high());
    let e = p.write(0, &[0; 3 << 20], false).unwrap_err();
    assert!(matches!(e, DiskError::TooLarge { .. }), "{e}");
    p.clear_journal();
    p.write(2 << 20, &[2; 1 << 20], false).unwrap();
    assert!(Disk::open(&DiskConfig {
        journal_max: 1 << 20,
        ..c
    })
    .is_err());
}

#[test]
fn a_resync_that_cannot_keep_up_makes_guest_writes_wait_until_it_converges() {
    let tmp = Tmp::new("throttle");
    let mut rng = SplitMix64::new(9);
    let mut c = tmp.cfg("p.img", 64 << 20);
    c.journal_max = MIN_JOURNAL;
    let mut p = primary(&c, 1);
    let r = Disk::open(&tmp.cfg("r.img", 64 << 20)).unwrap();
    let junk = tmp.0.join("r2.img");
    std::fs::write(&junk, vec![1u8; 64 << 20]).unwrap();
    let mut r2 = Disk::open(&DiskConfig {
        path: junk,
        ..tmp.cfg("x", 64 << 20)
    })
    .unwrap();
    // A guest that writes 64 tracks after every copy never lets the copy converge.
    let mut waited = 0;
    let (plan, _) = resync(&mut p, &mut r2, 1, false, |p| {
        for _ in 0..64 {
            let t = rng.below(p.geometry().tracks);
            match p.write(t * 4096, &[3; 4096], false) {
                Ok(()) => {}
                Err(DiskError::Throttled) => waited += 1,
                Err(e) => panic!("{e}"),
            }
        }
    });
    assert!(plan.full);
    assert!(waited > 0 && p.stats().waits == waited);
    assert_eq!(r2.digest().unwrap(), p.digest().unwrap());
    assert!(
        p.write(0, &[1; 4096], false).is_ok(),
        "waits end with the copy"
    );
    drop(r);
}

#[test]
fn a_failing_image_fails_the_apply_and_leaves_the_replica_unusable() {
    let tmp = Tmp::new("fail");
    let mut rng = SplitMix64::new(10);
    let mut p = primary(&tmp.cfg("p.img", MB16), 1);
    let c = tmp.cfg("r.img", MB16);
    let mut r = Disk::open(&c).unwrap();
    resync(&mut p, &mut r, 1, false, |_| {});
    writes(&mut p, &mut rng, 3);
    let w: Vec<(u64, Vec<u8>)> = p.journal().iter().map(|(o, d)| (o, d.to_vec())).collect();
    r.image = Image::open_read_only(&c.path).unwrap();
    let e = r.apply(2, w.iter().map(|(o, d)| (*o, &d[..]))).unwrap_err();
    assert!(matches!(e, DiskError::Io { .. }), "{e}");
    assert_eq!(r.applied(), None);
    assert_eq!(r.stats().errors, 1);
    assert!(r.last_error().is_some_and(|l| l.contains("write")));
    assert!(r.report().torn, "marked Applying before the data");
    let out = DiskError::Io {
        op: "write",
        path: c.path.clone(),
        kind: std::io::ErrorKind::StorageFull,
        detail: "No space left on device (os error 28)".into(),
    };
    assert!(out.is_out_of_space() && out.to_string().contains("out of space"));
}
