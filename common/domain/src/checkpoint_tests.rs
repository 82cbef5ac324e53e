//! Unit tests of `checkpoint`.

use super::*;
use crate::model::{ModelDomain, WritePattern, MIN_PAGES};
use hsb_common::decision::Epoch;
use hsb_common::key::ClusterKey;
use hsb_common::session::Side;
use hsb_common::time::Nanos;

pub(super) fn sessions() -> (Session, Session) {
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
pub(super) fn feed(
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
            .on_frame(h.kind, &bytes[pos + HEADER_LEN..end], &hash, rep)?
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

/// A primary and a standby of `extra` workload pages writing as `pattern` says, after a full
/// synchronisation sealed with `mode`.
struct Pair {
    d: ModelDomain,
    rep: ModelDomain,
    st: Staging,
    rx: Receiver,
    tx: Session,
    rxs: Session,
    next: u64,
    t: u64,
}

impl Pair {
    fn new(extra: u64, pattern: WritePattern, mode: CodecMode) -> Pair {
        let d = ModelDomain::new(MIN_PAGES + extra, 20_000, 11).with_pattern(pattern);
        let n = d.page_count();
        let (tx, rxs) = sessions();
        let mut p = Pair {
            rep: ModelDomain::blank(n),
            st: Staging::with_codec(n, mode, n),
            rx: Receiver::new(n),
            d,
            tx,
            rxs,
            next: 1,
            t: 0,
        };
        p.step(true).unwrap();
        p
    }

    /// Run the workload for 25 ms, then take, send and apply a checkpoint; its sealed length.
    fn step(&mut self, full: bool) -> Result<usize, FrameError> {
        self.t += 25;
        self.d.run(Nanos::from_millis(self.t));
        self.d.handle("INCR");
        let n = self.next;
        self.next += 1;
        let b = capture(&mut self.st, &mut self.d, &mut self.tx, n, full);
        assert_eq!(
            feed(&mut self.rx, &mut self.rxs, &b, &mut self.rep)?,
            vec![n]
        );
        Ok(b.len())
    }
}

#[test]
fn encoded_checkpoints_reproduce_the_domain_in_fewer_bytes() {
    for (pattern, most_pct) in [
        (WritePattern::Counters, 3),
        (WritePattern::Lines(2), 8),
        (WritePattern::Pages, 101),
    ] {
        let mut p = Pair::new(1000, pattern, CodecMode::Always);
        assert_eq!(p.rep.digest(), p.d.digest());
        let full = p.st.last_seal();
        assert!(full.encoded);
        // The fresh domain is mostly zero pages.
        assert!(
            full.wire_bytes < full.page_bytes / 20,
            "{pattern}: {full:?}"
        );
        for _ in 0..8 {
            p.step(false).unwrap();
            assert_eq!(p.rep.digest(), p.d.digest(), "{pattern}");
        }
        let s = p.st.last_seal();
        assert!(s.page_bytes >= 400 * PAGE_SIZE as u64, "{s:?}");
        assert!(
            s.wire_bytes * 100 <= s.page_bytes * most_pct,
            "{pattern}: {} bytes on the wire for {} bytes of pages",
            s.wire_bytes,
            s.page_bytes
        );
    }
}

/// Changing the codec between checkpoints (the adaptive rule does) keeps the primary's cache
/// equal to what the standby holds.
#[test]
fn switching_codecs_keeps_the_reference_exact() {
    let mut p = Pair::new(1500, WritePattern::Lines(3), CodecMode::Never);
    let mut rng = hsb_common::rng::SplitMix64::new(4);
    let modes = [CodecMode::Always, CodecMode::Never, CodecMode::Auto];
    for i in 0..40 {
        p.st.set_codec_mode(modes[rng.below(3) as usize]);
        if i % 3 == 0 {
            p.d.handle("PUT k v");
        }
        p.step(i == 20).unwrap();
        assert_eq!(p.rep.digest(), p.d.digest(), "checkpoint {i}");
    }
}

/// A replica page that is not what the primary sent (a bug, or something else writing the
/// replica) gives a wrong decoded page: the checkpoint's CRC over decoded pages refuses it, and
/// nothing is applied.
#[test]
fn a_wrong_reference_is_caught_by_the_checkpoint_crc() {
    let mut p = Pair::new(200, WritePattern::Counters, CodecMode::Always);
    p.step(false).unwrap();
    let mut page = vec![0u8; PAGE_SIZE];
    p.rep.read_back(&[0], &mut page).unwrap();
    page[100] ^= 1;
    p.rep.write_pages(&[0], &page).unwrap();
    let before = p.rep.digest();
    // INCR writes page 0, which goes as a delta against the (now wrong) replica page.
    let e = p.step(false).unwrap_err();
    assert_eq!(
        e,
        FrameError::Body {
            kind: Kind::End,
            why: "checkpoint CRC does not match"
        }
    );
    assert_eq!(p.rep.digest(), before);
    assert_eq!(p.rx.applied(), Some(2));
}

/// Sealed frames of a checkpoint whose `Pages` frame is `pages` (bad on purpose).
fn forged(tx: &mut Session, ckpt: u64, full: bool, pages: &Pages) -> Vec<u8> {
    let mut out = vec![0u8; 1 << 20];
    let mut n = 0;
    let begin = Begin {
        ckpt,
        full,
        pages: pages.pfns.len() as u64,
        epoch: Epoch(1),
    };
    n += tx.write(Kind::Begin, &begin, &mut out[n..]).unwrap();
    n += tx.write(Kind::Pages, pages, &mut out[n..]).unwrap();
    out.truncate(n);
    out
}

#[test]
fn bad_encoded_frames_are_refused() {
    let mut ops_page = vec![page_codec::TAG_DELTA, 10, 0, 0, 1];
    ops_page.extend([1u8; 8]);
    let cases: Vec<(bool, u8, Vec<u8>, &str)> = vec![
        (
            true,
            PAGES_RECORDS,
            ops_page.clone(),
            "a delta record in a full synchronisation",
        ),
        (false, 9, vec![0], "unknown page codec"),
        (
            false,
            PAGES_RECORDS,
            vec![0, 0],
            "page records longer than the frame's pages",
        ),
        (false, PAGES_RECORDS, vec![], "page record ends early"),
        (false, PAGES_RECORDS, vec![7], "unknown page record tag"),
        (
            false,
            PAGES_RECORDS,
            vec![3, 2, 0, 0, 0],
            "page record op outside the page",
        ),
        (
            false,
            PAGES_LZ4,
            vec![5, 0x50, 1, 2],
            "compressed page records do not decompress",
        ),
        (
            false,
            PAGES_LZ4,
            vec![0xff, 0x7f, 0],
            "compressed page records too long",
        ),
        (
            false,
            PAGES_PLAIN,
            vec![0; 100],
            "page data length does not match page count",
        ),
    ];
    for (full, codec, data, why) in cases {
        let mut p = Pair::new(100, WritePattern::Counters, CodecMode::Always);
        if full {
            // A receiver that takes a full sync of fewer pages than the domain (a Xen guest's).
            let n = p.d.page_count();
            p.rx = Receiver::for_layout(n, n, false);
        }
        let before = p.rep.digest();
        let ckpt = p.next;
        let pages = Pages {
            ckpt,
            pfns: heapless::Vec::from_slice(&[MIN_PAGES + 1]).unwrap(),
            codec,
            data: &data,
        };
        let b = forged(&mut p.tx, ckpt, full, &pages);
        let e = feed(&mut p.rx, &mut p.rxs, &b, &mut p.rep).unwrap_err();
        assert_eq!(
            e,
            FrameError::Body {
                kind: Kind::Pages,
                why
            }
        );
        assert_eq!(p.rep.digest(), before, "{why}");
        assert!(!p.rx.staging(), "{why}: discarded");
    }
}

/// The adaptive rule told what checkpoints cost: on a link that is slow for their size it
/// encodes; on one where encoding only adds time it does not.
#[test]
fn the_adaptive_rule_follows_what_the_daemon_measures() {
    for (slow, want) in [(true, true), (false, false)] {
        let mut p = Pair::new(400, WritePattern::Lines(1), CodecMode::Auto);
        let mut encoded = 0;
        for _ in 0..60 {
            p.step(false).unwrap();
            let s = p.st.last_seal();
            encoded += u64::from(s.encoded);
            // A link of 100 MB/s, or one whose time is fixed (never the bottleneck).
            let ns = if slow { s.wire_bytes * 10 } else { 1_000_000 };
            let seal = if s.encoded {
                s.page_bytes / 2
            } else {
                s.page_bytes / 8
            };
            let began = Nanos(1_000_000_000 * p.next);
            p.st.sealing_began(began);
            p.st.acked(s.ckpt, Nanos(began.0 + seal + ns));
        }
        assert_eq!(
            encoded > 40,
            want,
            "slow link {slow}: {encoded} of 60 encoded"
        );
        assert_eq!(p.rep.digest(), p.d.digest());
    }
}

/// A checkpoint's cost for the rule is the time it had the pipeline to itself: on a saturated
/// link, the time queued behind earlier checkpoints is theirs.
#[test]
fn queueing_behind_earlier_checkpoints_is_not_a_checkpoints_cost() {
    let mut p = Pair::new(400, WritePattern::Counters, CodecMode::Never);
    let mut seals = vec![];
    // Two checkpoints sealed back to back at t = 1 s, acked 10 ms apart.
    for _ in 0..2 {
        p.step(false).unwrap();
        p.st.sealing_began(Nanos::from_millis(1000));
        seals.push(p.st.last_seal());
    }
    assert!(seals.iter().all(|s| s.page_bytes >= 256 << 10), "{seals:?}");
    p.st.acked(seals[0].ckpt, Nanos::from_millis(1010));
    let first = p.st.policy().costs_ns_per_kib().0.unwrap();
    p.st.acked(seals[1].ckpt, Nanos::from_millis(1020));
    let both = p.st.policy().costs_ns_per_kib().0.unwrap();
    // The second's 10 ms (not 20) for about as many pages: the average barely moves.
    let ratio = both / first;
    assert!((0.85..1.15).contains(&ratio), "{first} then {both}");
}
