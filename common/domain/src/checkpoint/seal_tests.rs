//! Unit tests of the resumable seal (`seal.rs`): a part at a time, it gives the one-shot seal's
//! bytes; what it hands out never changes while it goes on; a stream written in torn pieces
//! while it is sealed reaches the standby whole.

use std::io::{self, Write};

use super::tests::{feed, sessions};
use super::*;
use crate::model::{ModelDomain, WritePattern, MIN_PAGES};
use hsb_common::conn::write_some;
use hsb_common::rng::SplitMix64;

/// A primary's side: a domain, its staging and session. Two built alike run alike (the model
/// is seeded).
struct Side {
    d: ModelDomain,
    st: Staging,
    tx: Session,
    t: u64,
}

impl Side {
    fn new(pattern: WritePattern, mode: CodecMode) -> Side {
        let d = ModelDomain::new(MIN_PAGES + 700, 20_000, 13).with_pattern(pattern);
        let n = d.page_count();
        Side {
            st: Staging::with_codec(n, mode, n),
            tx: sessions().0,
            d,
            t: 0,
        }
    }

    /// Run the workload for 25 ms and capture checkpoint `ckpt` (unsealed).
    fn capture(&mut self, ckpt: u64, full: bool) {
        self.t += 25;
        self.d.run(Nanos::from_millis(self.t));
        self.d.handle("INCR");
        self.d.suspend().unwrap();
        self.st.capture(&mut self.d, ckpt, 1, full).unwrap();
        self.d.resume().unwrap();
    }
}

/// Seal a part at a time, `budget(i)` bytes for the i-th part, checking that what was handed
/// out before never changes; the sealed bytes.
fn seal_in_parts(s: &mut Side, mut budget: impl FnMut(usize) -> usize) -> Vec<u8> {
    s.st.begin_seal().unwrap();
    assert!(s.st.is_sealing());
    assert!(
        s.st.bytes().is_empty(),
        "nothing sealed before the first part"
    );
    let mut handed = Vec::new();
    let mut i = 0;
    loop {
        let done = s.st.seal_some(&mut s.tx, budget(i)).unwrap();
        i += 1;
        let b = s.st.bytes();
        assert!(b.len() >= handed.len());
        assert_eq!(&b[..handed.len()], &handed[..], "sealed bytes changed");
        handed = b.to_vec();
        if done {
            assert!(!s.st.is_sealing());
            return handed;
        }
    }
}

#[test]
fn a_seal_in_parts_gives_the_one_shot_bytes() {
    for (pattern, mode) in [
        (WritePattern::Pages, CodecMode::Never),
        (WritePattern::Counters, CodecMode::Always),
        (WritePattern::Lines(3), CodecMode::Always),
        (WritePattern::Lines(2), CodecMode::Auto),
    ] {
        let (mut one, mut parts) = (Side::new(pattern, mode), Side::new(pattern, mode));
        let mut rng = SplitMix64::new(5);
        for ckpt in 1..=8u64 {
            let full = ckpt == 1 || ckpt == 6;
            one.capture(ckpt, full);
            parts.capture(ckpt, full);
            let len = one.st.seal(&mut one.tx).unwrap();
            // One frame per part, or random budgets (of a few frames, or none: still a frame).
            let b = if ckpt % 2 == 0 {
                seal_in_parts(&mut parts, |_| 1)
            } else {
                seal_in_parts(&mut parts, |_| rng.below(600_000) as usize)
            };
            assert_eq!(len, b.len());
            assert!(b == one.st.bytes(), "{pattern} {mode:?} checkpoint {ckpt}");
            assert_eq!(one.st.last_seal(), parts.st.last_seal());
            assert_eq!(one.tx.tx_seq(), parts.tx.tx_seq());
        }
        assert_eq!(one.st.codec_status(), parts.st.codec_status());
    }
}

/// A socket that takes a random share of what it is given, or nothing (`WouldBlock`).
struct Torn {
    rng: SplitMix64,
    got: Vec<u8>,
}

impl Write for Torn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.rng.below(4) {
            0 => Err(io::ErrorKind::WouldBlock.into()),
            _ => {
                let n = (1 + self.rng.below(70_000) as usize).min(buf.len());
                self.got.extend_from_slice(&buf[..n]);
                Ok(n)
            }
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// As the daemon sends: write what is sealed, seal a part, write again; the standby reads the
/// stream as it comes, each frame as soon as it is whole (so frames handed out early are
/// already final), and applies every checkpoint, reproducing the domain.
#[test]
fn torn_writes_during_a_seal_reach_the_standby_whole() {
    for mode in [CodecMode::Never, CodecMode::Always] {
        let mut p = Side::new(WritePattern::Lines(2), mode);
        let n = p.d.page_count();
        let (mut rep, mut rx, mut rxs) = (ModelDomain::blank(n), Receiver::new(n), sessions().1);
        let mut sock = Torn {
            rng: SplitMix64::new(9),
            got: Vec::new(),
        };
        let mut read = 0;
        for ckpt in 1..=6u64 {
            p.capture(ckpt, ckpt == 1);
            let start = sock.got.len();
            p.st.begin_seal().unwrap();
            let (mut pos, mut applied) = (0, vec![]);
            loop {
                let all = write_some(&mut sock, p.st.bytes(), &mut pos).unwrap();
                if all && !p.st.is_sealing() {
                    break;
                }
                p.st.seal_some(&mut p.tx, 100_000).unwrap();
                // The standby takes every whole frame that has arrived.
                let whole = whole_frames(&sock.got[read..]);
                let chunk = &sock.got[read..read + whole];
                applied.extend(feed(&mut rx, &mut rxs, chunk, &mut rep).unwrap());
                read += whole;
            }
            assert!(sock.got[start..] == *p.st.bytes(), "{mode:?} {ckpt}");
            let rest = &sock.got[read..];
            applied.extend(feed(&mut rx, &mut rxs, rest, &mut rep).unwrap());
            read = sock.got.len();
            assert_eq!(applied, vec![ckpt]);
            assert_eq!(rep.digest(), p.d.digest(), "{mode:?} checkpoint {ckpt}");
        }
    }
}

/// Bytes of the whole frames at the start of `b`.
fn whole_frames(b: &[u8]) -> usize {
    let mut pos = 0;
    while let Ok(h) = Header::parse(&b[pos..], frame::MAX_BODY_LEN) {
        if pos + h.frame_len() > b.len() {
            break;
        }
        pos += h.frame_len();
    }
    pos
}

#[test]
fn a_seal_needs_a_staged_checkpoint_and_a_new_capture_ends_one_under_way() {
    let mut p = Side::new(WritePattern::Pages, CodecMode::Never);
    // Nothing captured yet.
    assert!(p.st.begin_seal().is_err());
    assert!(p.st.seal_some(&mut p.tx, 1).unwrap(), "no seal under way");
    p.capture(1, true);
    p.st.begin_seal().unwrap();
    assert!(
        p.st.begin_seal().is_err(),
        "a second seal of the same checkpoint"
    );
    assert!(!p.st.seal_some(&mut p.tx, 1).unwrap());
    assert!(!p.st.bytes().is_empty());
    // The session broke: the next session's full synchronisation is captured over it.
    p.tx = sessions().0;
    p.capture(1, true);
    assert!(!p.st.is_sealing());
    assert!(p.st.bytes().is_empty());
    let (mut rep, mut rx, mut rxs) = (
        ModelDomain::blank(p.d.page_count()),
        Receiver::new(p.d.page_count()),
        sessions().1,
    );
    p.st.seal(&mut p.tx).unwrap();
    assert!(p.st.begin_seal().is_err(), "sealed already");
    let b = p.st.bytes().to_vec();
    assert_eq!(feed(&mut rx, &mut rxs, &b, &mut rep).unwrap(), vec![1]);
    assert_eq!(rep.digest(), p.d.digest());
}
