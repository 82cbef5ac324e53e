//! The receive path as one function of arbitrary bytes, shared by the cargo-fuzz target
//! (`common/fuzz`, `just fuzz`) and a seeded property test that runs in `just test`.
//!
//! Bytes go through the frame reader, the session (CRC, MAC, sequence), every message decoder
//! and the checkpoint receiver. Nothing may panic or allocate beyond the configured bounds.
//! A first byte of 0 makes the input a list of mutations of a valid sealed checkpoint stream,
//! so the checks behind the MAC are reached too.

use crate::checkpoint::{Receiver, Staging};
use crate::conn::{Fill, FrameReader};
use crate::domain::CheckpointSource;
use crate::frame::{Kind, HEADER_LEN};
use crate::key::ClusterKey;
use crate::model::{ModelDomain, MIN_PAGES};
use crate::msg;
use crate::session::{Session, Side};

const PAGES: u64 = MIN_PAGES + 8;

/// Feed `data` to the receive path. Returns how many checkpoints were applied.
pub fn decode(data: &[u8]) -> usize {
    match data.split_first() {
        Some((0, rest)) => {
            let mut bytes = valid_stream();
            for m in rest.chunks_exact(4) {
                let pos = u32::from_le_bytes([m[0], m[1], m[2], 0]) as usize % bytes.len();
                bytes[pos] ^= m[3];
            }
            stream(&bytes, true)
        }
        Some((_, rest)) => stream(rest, false),
        None => 0,
    }
}

/// A sealed full checkpoint followed by an incremental one.
pub fn valid_stream() -> Vec<u8> {
    let key = ClusterKey::from_bytes([7; 32]);
    let mut tx = Session::new(&key, &[1; 16], &[2; 16], Side::Initiator);
    let mut d = ModelDomain::new(PAGES, 0, 3);
    let mut st = Staging::new(PAGES);
    let mut bytes = Vec::new();
    for (n, full) in [(1u64, true), (2, false)] {
        d.handle("INCR");
        let ok = d.suspend().is_ok() && st.capture(&mut d, n, 1, full).is_ok();
        let ok = d.resume().is_ok() && ok && st.seal(&mut tx).is_ok();
        if ok {
            bytes.extend_from_slice(st.bytes());
        }
    }
    bytes
}

fn stream(data: &[u8], authenticated: bool) -> usize {
    let key = ClusterKey::from_bytes([7; 32]);
    let mut rx = Session::new(&key, &[1; 16], &[2; 16], Side::Responder);
    let mut receiver = Receiver::new(PAGES);
    let mut replica = ModelDomain::blank(PAGES);
    let mut reader = FrameReader::new(300_000);
    let mut src = data;
    let mut applied = 0;
    loop {
        match reader.fill(&mut src) {
            Ok(Fill::Data(n)) if n > 0 || reader.buffered() > 0 => {}
            _ => return applied,
        }
        loop {
            let (kind, frame) = match reader.next_frame() {
                Ok(Some((h, f))) => (h.kind, f.to_vec()),
                Ok(None) => break,
                Err(_) => return applied,
            };
            let body = &frame[HEADER_LEN..];
            let _ = msg::decode::<msg::Hello>(Kind::Hello, body);
            let _ = msg::decode::<msg::Pages>(Kind::Pages, body);
            let _ = msg::decode::<msg::End>(Kind::End, body);
            let _ = msg::decode::<msg::Refuse>(Kind::Refuse, body);
            let hash = match rx.open(&frame) {
                Ok(h) => h,
                // Unauthenticated inputs still exercise the receiver's own checks.
                Err(_) if !authenticated => crate::frame::body_crc(body),
                Err(_) => return applied,
            };
            match receiver.on_frame(kind, body, &hash) {
                Ok(Some(_)) => {
                    if receiver.apply(&mut replica).is_ok() {
                        applied += 1;
                    }
                }
                Ok(None) => {}
                Err(_) => return applied,
            }
            if reader.buffered() == 0 && src.is_empty() {
                return applied;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    #[test]
    fn valid_stream_applies_two_checkpoints() {
        let mut input = vec![0u8];
        assert_eq!(decode(&input), 2);
        input.extend_from_slice(&[0, 0, 0, 0]); // xor with 0: no change
        assert_eq!(decode(&input), 2);
    }

    #[test]
    fn any_single_mutation_stops_before_applying_it() {
        let len = valid_stream().len();
        let mut rng = SplitMix64::new(42);
        for _ in 0..400 {
            let pos = rng.below(len as u64) as u32;
            let x = (rng.below(255) + 1) as u8;
            let p = pos.to_le_bytes();
            let applied = decode(&[0, p[0], p[1], p[2], x]);
            assert!(applied <= 2);
        }
    }

    #[test]
    fn random_inputs_never_panic() {
        let mut rng = SplitMix64::new(7);
        let valid = valid_stream();
        for i in 0..3000 {
            let n = rng.below(600) as usize;
            let mut buf = vec![0u8; n + 1];
            rng.fill(&mut buf);
            // Mix in prefixes of the valid stream so headers parse and bodies get decoded.
            if i % 3 == 0 && n > 40 {
                let k = (rng.below(valid.len() as u64) as usize).min(n);
                buf[1..1 + k].copy_from_slice(&valid[..k]);
            }
            decode(&buf);
        }
    }
}
