//! Unit tests of `checkpoint`.

use super::*;
use crate::model::{ModelDomain, MIN_PAGES};
use hsb_common::key::ClusterKey;
use hsb_common::session::Side;
use hsb_common::time::Nanos;

fn sessions() -> (Session, Session) {
    let k = ClusterKey::from_bytes([3; 32]);
    (
        Session::new(&k, &[1; 16], &[2; 16], Side::Initiator),
        Session::new(&k, &[1; 16], &[2; 16], Side::Responder),
    )
}

fn capture(
    st: &mut Staging,
    d: &mut ModelDomain,
    tx: &mut Session,
    ckpt: u64,
    full: bool,
) -> Vec<u8> {
    d.suspend().unwrap();
    st.capture(d, ckpt, 1, full).unwrap();
    d.resume().unwrap();
    st.seal(tx).unwrap();
    st.bytes().to_vec()
}

/// Feed a byte stream of frames; returns the first error or the completed checkpoints.
fn feed(
    rx: &mut Receiver,
    sess: &mut Session,
    bytes: &[u8],
    rep: &mut ModelDomain,
) -> Result<Vec<u64>, FrameError> {
    let mut pos = 0;
    let mut done = vec![];
    while pos < bytes.len() {
        let h = Header::parse(&bytes[pos..], frame::MAX_BODY_LEN)?;
        let end = pos + h.frame_len();
        if end > bytes.len() {
            return Err(FrameError::Truncated {
                have: bytes.len() - pos,
                need: h.frame_len(),
            });
        }
        let hash = sess.open(&bytes[pos..end])?;
        if rx
            .on_frame(h.kind, &bytes[pos + HEADER_LEN..end], &hash)?
            .is_some()
        {
            done.push(rx.apply(rep).unwrap());
        }
        pos = end;
    }
    Ok(done)
}

/// A Xen replica's layout: frame numbers up to the p2m size, a full sync that carries the
/// guest's RAM (not every frame), pfns beyond the p2m refused.
#[test]
fn layout_with_holes_accepts_partial_full_sync_and_bounds_pfns() {
    let n = MIN_PAGES + 40;
    let mut d = ModelDomain::new(n, 2000, 9);
    let mut st = Staging::new(n);
    let (mut tx, mut rxs) = sessions();
    let b = capture(&mut st, &mut d, &mut tx, 1, true);

    // A larger frame space and capacity than this full sync covers: accepted when the
    // full sync need not be exact.
    let mut rep = ModelDomain::blank(n + 64);
    let mut rx = Receiver::for_layout(n + 64, n + 32, false);
    assert_eq!(feed(&mut rx, &mut rxs, &b, &mut rep).unwrap(), vec![1]);

    // The same stream to a receiver that wants exact full syncs is refused.
    let (mut tx, mut rxs) = sessions();
    let b = capture(&mut st, &mut d, &mut tx, 1, true);
    let mut rx = Receiver::for_layout(n + 64, n + 32, true);
    let e = feed(&mut rx, &mut rxs, &b, &mut rep).unwrap_err();
    assert!(e.to_string().contains("full sync does not cover"), "{e}");

    // Frames beyond the frame space are refused, and nothing is applied.
    let (mut tx, mut rxs) = sessions();
    let b = capture(&mut st, &mut d, &mut tx, 1, true);
    let mut rx = Receiver::for_layout(n - 1, n, false);
    let e = feed(&mut rx, &mut rxs, &b, &mut rep).unwrap_err();
    assert!(e.to_string().contains("beyond the domain"), "{e}");
    assert_eq!(rx.applied(), None);
}

#[test]
fn full_then_incremental_checkpoints_reproduce_the_domain() {
    let mut d = ModelDomain::new(MIN_PAGES + 300, 2000, 5);
    let mut rep = ModelDomain::blank(d.page_count());
    let mut st = Staging::new(d.page_count());
    let (mut tx, mut rxs) = sessions();
    let mut rx = Receiver::new(d.page_count());
    let b = capture(&mut st, &mut d, &mut tx, 1, true);
    assert_eq!(feed(&mut rx, &mut rxs, &b, &mut rep).unwrap(), vec![1]);
    assert_eq!(rep.digest(), d.digest());
    for n in 2..10u64 {
        d.run(Nanos::from_millis(n * 25));
        d.handle("INCR");
        let b = capture(&mut st, &mut d, &mut tx, n, false);
        assert_eq!(feed(&mut rx, &mut rxs, &b, &mut rep).unwrap(), vec![n]);
        assert_eq!(rep.digest(), d.digest(), "checkpoint {n}");
    }
    assert_eq!(rep.counter(), 8);
}

#[test]
fn precopied_full_sync_is_the_domain_at_its_suspend_point() {
    let mut d = ModelDomain::new(MIN_PAGES + 300, 20_000, 7);
    let mut rep = ModelDomain::blank(d.page_count());
    let mut st = Staging::new(d.page_count());
    let (mut tx, mut rxs) = sessions();
    let mut rx = Receiver::new(d.page_count());
    // The guest runs and serves while its pages are copied, a few frames at a time.
    st.start_precopy(&mut d, 1, 1).unwrap();
    assert!(st.precopying());
    let mut t = 0;
    while !st.precopy_step(&mut d, PAGES_PER_FRAME).unwrap() {
        t += 1;
        d.run(Nanos::from_millis(t));
        d.handle("INCR");
    }
    assert!(t > 3, "the copy took several steps");
    d.run(Nanos::from_millis(t + 1));
    d.handle("INCR");
    d.suspend().unwrap();
    let stats = st.finish_precopy(&mut d, 1, 1).unwrap();
    // (Saving the state counts the checkpoint in the model's state, so compare after it.)
    let at_suspend = d.digest();
    d.resume().unwrap();
    assert!(!st.precopying());
    assert!(stats.capture.full);
    assert_eq!(stats.capture.pages, d.page_count());
    assert!(
        stats.recopied > 0,
        "pages were written during the copy: {stats:?}"
    );
    assert!(stats.recopied < d.page_count() / 2, "{stats:?}");
    assert_eq!(stats.skipped, 0);
    st.seal(&mut tx).unwrap();
    let b = st.bytes().to_vec();
    assert_eq!(feed(&mut rx, &mut rxs, &b, &mut rep).unwrap(), vec![1]);
    assert_eq!(rep.digest(), at_suspend);
    assert_eq!(rep.counter(), t + 1);
    // The dirty log restarted at the suspend point: incremental checkpoints follow on.
    for n in 2..5u64 {
        d.run(Nanos::from_millis(t + n * 25));
        d.handle("INCR");
        let b = capture(&mut st, &mut d, &mut tx, n, false);
        assert_eq!(feed(&mut rx, &mut rxs, &b, &mut rep).unwrap(), vec![n]);
        assert_eq!(rep.digest(), d.digest(), "checkpoint {n}");
    }
}

#[test]
fn a_capture_abandons_a_precopy() {
    let mut d = ModelDomain::new(MIN_PAGES + 40, 2000, 3);
    let mut st = Staging::new(d.page_count());
    let (mut tx, mut rxs) = sessions();
    let mut rx = Receiver::new(d.page_count());
    let mut rep = ModelDomain::blank(d.page_count());
    st.start_precopy(&mut d, 1, 1).unwrap();
    st.precopy_step(&mut d, PAGES_PER_FRAME).unwrap();
    let b = capture(&mut st, &mut d, &mut tx, 1, true);
    assert!(!st.precopying());
    assert!(st.finish_precopy(&mut d, 1, 1).is_err());
    st.start_precopy(&mut d, 2, 1).unwrap();
    let e = st.finish_precopy(&mut d, 2, 2).unwrap_err();
    assert!(e.to_string().contains("epoch 1"), "{e}");
    assert!(!st.precopying());
    assert_eq!(feed(&mut rx, &mut rxs, &b, &mut rep).unwrap(), vec![1]);
    assert_eq!(rep.digest(), d.digest());
}

#[test]
fn torn_or_corrupt_checkpoint_leaves_replica_at_previous() {
    let mut d = ModelDomain::new(MIN_PAGES + 300, 5000, 9);
    let mut rep = ModelDomain::blank(d.page_count());
    let mut st = Staging::new(d.page_count());
    let (mut tx, mut rxs) = sessions();
    let mut rx = Receiver::new(d.page_count());
    let b = capture(&mut st, &mut d, &mut tx, 1, true);
    feed(&mut rx, &mut rxs, &b, &mut rep).unwrap();
    let good = rep.digest();
    d.run(Nanos(1));
    d.run(Nanos::from_millis(40));
    d.handle("INCR");
    let b2 = capture(&mut st, &mut d, &mut tx, 2, false);
    assert!(b2.len() > 3 * HEADER_LEN);
    // Truncated: every prefix that is not the whole checkpoint leaves the replica at 1.
    for cut in [HEADER_LEN, b2.len() / 2, b2.len() - 1] {
        let (_, mut r2) = sessions();
        let mut rx2 = Receiver::new(d.page_count());
        let mut rep2 = ModelDomain::blank(d.page_count());
        let (mut tx1, _) = sessions();
        let mut st1 = Staging::new(d.page_count());
        let mut d1 = ModelDomain::new(MIN_PAGES + 300, 0, 1);
        let full = capture(&mut st1, &mut d1, &mut tx1, 1, true);
        feed(&mut rx2, &mut r2, &full, &mut rep2).unwrap();
        let before = rep2.digest();
        let _ = feed(&mut rx2, &mut r2, &b2[..cut], &mut rep2);
        assert_eq!(rep2.digest(), before);
    }
    // Corrupt one byte in the middle: rejected, replica unchanged.
    let mut bad = b2.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x40;
    assert!(feed(&mut rx, &mut rxs, &bad, &mut rep).is_err());
    assert_eq!(rep.digest(), good);
    assert_eq!(rx.applied(), Some(1));
}

#[test]
fn incremental_without_full_sync_or_with_gap_is_refused() {
    let mut d = ModelDomain::new(MIN_PAGES + 10, 0, 1);
    let mut rep = ModelDomain::blank(d.page_count());
    let mut st = Staging::new(d.page_count());
    let (mut tx, mut rxs) = sessions();
    let mut rx = Receiver::new(d.page_count());
    let mut v = Vec::with_capacity(d.page_count() as usize);
    d.take_dirty(false, &mut v).unwrap();
    d.handle("INCR");
    let b = capture(&mut st, &mut d, &mut tx, 5, false);
    let e = feed(&mut rx, &mut rxs, &b, &mut rep).unwrap_err();
    assert_eq!(
        e,
        FrameError::Body {
            kind: Kind::Begin,
            why: "incremental checkpoint before a full sync"
        }
    );
    assert!(!rep.formatted());
    // Full sync, then a gap.
    let (mut tx, mut rxs) = sessions();
    rx.new_session();
    let b = capture(&mut st, &mut d, &mut tx, 6, true);
    feed(&mut rx, &mut rxs, &b, &mut rep).unwrap();
    d.handle("INCR");
    let b = capture(&mut st, &mut d, &mut tx, 8, false);
    assert!(feed(&mut rx, &mut rxs, &b, &mut rep).is_err());
    assert_eq!(rep.counter(), 1);
}

#[test]
fn staging_capacity_holds_a_full_sync_of_64_mib() {
    let pages = (64u64 << 20) / PAGE_SIZE as u64;
    let mut d = ModelDomain::new(pages, 0, 1);
    let mut st = Staging::new(pages);
    d.suspend().unwrap();
    let s = st.capture(&mut d, 1, 1, true).unwrap();
    d.resume().unwrap();
    assert_eq!(s.pages, pages);
    let (mut tx, _) = sessions();
    assert!(st.seal(&mut tx).unwrap() <= st.capacity());
}
