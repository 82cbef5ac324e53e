//! Sessions: keys derived from the cluster key and both sides' nonces, one per direction, and
//! strictly consecutive sequence numbers. A frame from another session fails its MAC; a frame
//! replayed, dropped or reordered within a session fails its sequence check.

use serde::Serialize;

use crate::frame::{self, FrameError, Header, Kind, MacKey, HEADER_LEN};
use crate::key::ClusterKey;
use crate::msg;

const HELLO_CONTEXT: &str = "hsb 2026-11-23 hello frame key v1";
const I2R_CONTEXT: &str = "hsb 2026-11-23 session key initiator-to-responder v1";
const R2I_CONTEXT: &str = "hsb 2026-11-23 session key responder-to-initiator v1";

/// Which end of a session this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Opened the connection and sent the first `Hello`.
    Initiator,
    /// Accepted the connection.
    Responder,
}

/// The key that authenticates the initiator's `Hello` (before a session key exists).
/// A replayed `Hello` gains nothing: the responder answers with a fresh nonce, so the session
/// keys are new and the replayer cannot produce a single valid frame.
pub fn hello_key(cluster: &ClusterKey) -> MacKey {
    MacKey(blake3::derive_key(HELLO_CONTEXT, cluster.as_bytes()))
}

/// One authenticated, sequenced session.
#[derive(Debug)]
pub struct Session {
    tx: MacKey,
    rx: MacKey,
    tx_seq: u64,
    rx_seq: u64,
}

impl Session {
    /// Keys for a session opened with nonces `initiator` and `responder`, seen from `side`.
    pub fn new(
        cluster: &ClusterKey,
        initiator: &[u8; 16],
        responder: &[u8; 16],
        side: Side,
    ) -> Session {
        let mut material = [0u8; 64];
        material[..32].copy_from_slice(cluster.as_bytes());
        material[32..48].copy_from_slice(initiator);
        material[48..].copy_from_slice(responder);
        let i2r = MacKey(blake3::derive_key(I2R_CONTEXT, &material));
        let r2i = MacKey(blake3::derive_key(R2I_CONTEXT, &material));
        let (tx, rx) = match side {
            Side::Initiator => (i2r, r2i),
            Side::Responder => (r2i, i2r),
        };
        Session {
            tx,
            rx,
            tx_seq: 0,
            rx_seq: 0,
        }
    }

    /// Next sequence number this side will send.
    pub fn tx_seq(&self) -> u64 {
        self.tx_seq
    }

    /// Next sequence number this side expects.
    pub fn rx_seq(&self) -> u64 {
        self.rx_seq
    }

    /// Seal a frame whose kind, length and body are written: assigns the next sequence number,
    /// fills CRC and MAC. `body_hash` is the body's CRC hasher ([`frame::body_crc`]).
    pub fn seal_with(&mut self, buf: &mut [u8], body_hash: &crc32fast::Hasher) {
        buf[frame::field::SEQ].copy_from_slice(&self.tx_seq.to_le_bytes());
        frame::seal_with(buf, &self.tx, body_hash);
        self.tx_seq += 1;
    }

    /// Encode `msg` as a complete sealed frame at the start of `out`; returns its length.
    pub fn write<M: Serialize>(
        &mut self,
        kind: Kind,
        m: &M,
        out: &mut [u8],
    ) -> Result<usize, postcard::Error> {
        let n = write_unsealed(kind, m, out)?;
        let h = frame::body_crc(&out[HEADER_LEN..n]);
        self.seal_with(&mut out[..n], &h);
        Ok(n)
    }

    /// Verify a complete received frame (CRC, MAC, then sequence) and advance the sequence.
    /// Returns the body's CRC hasher.
    pub fn open(&mut self, buf: &[u8]) -> Result<crc32fast::Hasher, FrameError> {
        let h = frame::verify(buf, &self.rx)?;
        let f = frame::Frame::new_checked(buf)?;
        if f.seq() != self.rx_seq {
            return Err(FrameError::Replay {
                expected: self.rx_seq,
                got: f.seq(),
            });
        }
        self.rx_seq += 1;
        Ok(h)
    }
}

/// Write header (sequence 0, no CRC/MAC) and postcard body; returns the frame length.
pub fn write_unsealed<M: Serialize>(
    kind: Kind,
    m: &M,
    out: &mut [u8],
) -> Result<usize, postcard::Error> {
    if out.len() < HEADER_LEN {
        return Err(postcard::Error::SerializeBufferFull);
    }
    let body_len = msg::encode(m, &mut out[HEADER_LEN..])?;
    Header {
        kind,
        body_len: body_len as u32,
        seq: 0,
    }
    .emit(out);
    Ok(HEADER_LEN + body_len)
}

/// Encode an initiator's `Hello` frame (sealed with the hello key, sequence 0).
pub fn write_hello(
    cluster: &ClusterKey,
    hello: &msg::Hello,
    out: &mut [u8],
) -> Result<usize, postcard::Error> {
    let n = write_unsealed(Kind::Hello, hello, out)?;
    frame::seal(&mut out[..n], &hello_key(cluster));
    Ok(n)
}

/// Verify an initiator's `Hello` frame and decode it.
pub fn open_hello(cluster: &ClusterKey, buf: &[u8]) -> Result<msg::Hello, FrameError> {
    frame::verify(buf, &hello_key(cluster))?;
    let f = frame::Frame::new_checked(buf)?;
    if f.kind_byte() != Kind::Hello as u8 {
        return Err(FrameError::Unexpected {
            kind: Kind::from_u8(f.kind_byte()).unwrap_or(Kind::Hello),
            state: "waiting for Hello",
        });
    }
    msg::decode(Kind::Hello, f.body())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{Ack, Role};

    fn pair() -> (Session, Session) {
        let k = ClusterKey::from_bytes([1; 32]);
        let (ni, nr) = ([2u8; 16], [3u8; 16]);
        (
            Session::new(&k, &ni, &nr, Side::Initiator),
            Session::new(&k, &ni, &nr, Side::Responder),
        )
    }

    #[test]
    fn frames_flow_and_replays_are_rejected() {
        let (mut a, mut b) = pair();
        let mut f0 = [0u8; 64];
        let n0 = a
            .write(Kind::Ack, &Ack { ckpt: 1, epoch: 1 }, &mut f0)
            .unwrap();
        let mut f1 = [0u8; 64];
        let n1 = a
            .write(Kind::Ack, &Ack { ckpt: 2, epoch: 1 }, &mut f1)
            .unwrap();
        b.open(&f0[..n0]).unwrap();
        assert_eq!(
            b.open(&f0[..n0]).unwrap_err(),
            FrameError::Replay {
                expected: 1,
                got: 0
            }
        );
        b.open(&f1[..n1]).unwrap();
    }

    #[test]
    fn reflected_and_cross_session_frames_fail_mac() {
        let (mut a, _b) = pair();
        let mut f = [0u8; 64];
        let n = a
            .write(Kind::Ack, &Ack { ckpt: 1, epoch: 1 }, &mut f)
            .unwrap();
        // Reflected back at its sender: the receive key differs from the send key.
        let (mut a2, _) = pair();
        assert_eq!(a2.open(&f[..n]).unwrap_err(), FrameError::BadMac);
        // Another session (different responder nonce).
        let k = ClusterKey::from_bytes([1; 32]);
        let mut other = Session::new(&k, &[2; 16], &[4; 16], Side::Responder);
        assert_eq!(other.open(&f[..n]).unwrap_err(), FrameError::BadMac);
    }

    #[test]
    fn hello_round_trip_and_wrong_cluster_key() {
        let k = ClusterKey::from_bytes([5; 32]);
        let h = msg::Hello {
            role: Role::Primary,
            node: msg::node_name("host-a"),
            epoch: 3,
            nonce: [9; 16],
            domain_pages: 16384,
            last_ckpt: 0,
        };
        let mut buf = [0u8; 128];
        let n = write_hello(&k, &h, &mut buf).unwrap();
        assert_eq!(open_hello(&k, &buf[..n]).unwrap(), h);
        let other = ClusterKey::from_bytes([6; 32]);
        assert_eq!(
            open_hello(&other, &buf[..n]).unwrap_err(),
            FrameError::BadMac
        );
    }
}
