//! Authenticated datagrams (UDP) for heartbeats and witness traffic.
//!
//! A datagram is one [`crate::frame`] whose MAC key is derived from the cluster key for
//! datagrams, and whose body starts with the sender's identity and a per-process random
//! incarnation nonce. Sequence numbers are per incarnation and must increase: a receiver keeps,
//! per sender, the current incarnation, the highest sequence seen, and a ring of earlier
//! incarnations it will never accept again. Replies that matter for safety (votes, lease
//! grants) additionally echo a fresh request nonce, so they cannot be replayed into another
//! request.

use serde::{Deserialize, Serialize};

use crate::frame::{self, FrameError, Header, Kind, MacKey, HEADER_LEN};
use crate::key::ClusterKey;
use crate::msg::Role;

const DATAGRAM_CONTEXT: &str = "hsb 2026-11-23 datagram key v1";
/// Largest datagram body accepted.
pub const MAX_DATAGRAM_BODY: usize = 1200;
/// Largest datagram on the wire.
pub const MAX_DATAGRAM: usize = HEADER_LEN + MAX_DATAGRAM_BODY;
/// Earlier incarnations remembered per sender.
const OLD_INCARNATIONS: usize = 8;
/// How far out of order a datagram may arrive and still be accepted (once).
pub const REPLAY_WINDOW: u64 = 64;
/// Senders tracked.
pub const MAX_SENDERS: usize = 32;

/// Who sent a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Sender {
    /// Role of the sender.
    pub role: Role,
    /// Node id: for primary and standby one derived from the node's name
    /// ([`node_sender_id`]), the witness id for witnesses.
    pub id: u32,
}

/// The sender id of a primary or standby, from its node name (the low 32 bits of its FNV-1a
/// hash). Two nodes in the same role must differ: after a failover the promoted primary on one
/// host and the old primary on the other run at once, and a receiver keeps one incarnation per
/// sender, so with one shared id the old primary's datagrams (asking for leases) would be
/// dropped as an earlier incarnation and it would never learn that a newer epoch is active: it
/// would stay fenced (safe) but not step down and rejoin by itself. With 32 bits two names
/// collide with a chance of about 1 in 4 billion (it was 1 in 256 with one byte).
pub fn node_sender_id(node: &str) -> u32 {
    let h = node.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    h as u32
}

/// The envelope inside every datagram body, before the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Sender identity.
    pub from: Sender,
    /// Random per process start.
    pub incarnation: [u8; 8],
    /// Sender's activation epoch.
    pub epoch: u64,
}

/// The datagram MAC key.
pub fn datagram_key(cluster: &ClusterKey) -> MacKey {
    MacKey(blake3::derive_key(DATAGRAM_CONTEXT, cluster.as_bytes()))
}

/// The sending side: identity, incarnation and sequence.
#[derive(Debug)]
pub struct Outbox {
    key: MacKey,
    env: Envelope,
    seq: u64,
}

impl Outbox {
    /// A sender with a fresh incarnation nonce.
    pub fn new(cluster: &ClusterKey, from: Sender, incarnation: [u8; 8], epoch: u64) -> Outbox {
        Outbox {
            key: datagram_key(cluster),
            env: Envelope {
                from,
                incarnation,
                epoch,
            },
            seq: 1,
        }
    }

    /// Set the epoch carried in later datagrams.
    pub fn set_epoch(&mut self, epoch: u64) {
        self.env.epoch = epoch;
    }

    /// Speak in another role from now on (an activated standby answers as the primary).
    pub fn set_role(&mut self, role: Role) {
        self.env.from.role = role;
    }

    /// Encode `msg` of `kind` into `out`; returns the datagram length.
    pub fn seal<M: Serialize>(
        &mut self,
        kind: Kind,
        m: &M,
        out: &mut [u8; MAX_DATAGRAM],
    ) -> Result<usize, postcard::Error> {
        let body = &mut out[HEADER_LEN..];
        let n1 = postcard::to_slice(&self.env, body)?.len();
        let n2 = postcard::to_slice(m, &mut body[n1..])?.len();
        let len = n1 + n2;
        Header {
            kind,
            body_len: len as u32,
            seq: self.seq,
        }
        .emit(&mut out[..]);
        frame::seal(&mut out[..HEADER_LEN + len], &self.key);
        self.seq += 1;
        Ok(HEADER_LEN + len)
    }
}

#[derive(Debug, Clone)]
struct Peer {
    from: Sender,
    incarnation: [u8; 8],
    max_seq: u64,
    /// Bit i set: sequence `max_seq - i` was seen (bit 0 is `max_seq` itself).
    seen: u64,
    old: [[u8; 8]; OLD_INCARNATIONS],
    old_next: usize,
}

/// Why a datagram was dropped (beyond frame errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatagramError {
    /// Bad frame, MAC, or body.
    Frame(FrameError),
    /// Sequence not above the highest seen in this incarnation.
    Replay,
    /// An incarnation this receiver has seen replaced.
    OldIncarnation,
    /// Too many distinct senders.
    TooManySenders,
}

impl std::fmt::Display for DatagramError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatagramError::Frame(e) => write!(f, "{e}"),
            DatagramError::Replay => write!(f, "replayed datagram (sequence not increasing)"),
            DatagramError::OldIncarnation => {
                write!(f, "datagram from an earlier incarnation of its sender")
            }
            DatagramError::TooManySenders => write!(f, "too many distinct senders"),
        }
    }
}

impl DatagramError {
    /// Counter name for status output.
    pub fn counter(&self) -> &'static str {
        match self {
            DatagramError::Frame(e) => e.counter(),
            DatagramError::Replay | DatagramError::OldIncarnation => "replay",
            DatagramError::TooManySenders => "too_many_senders",
        }
    }
}

impl From<FrameError> for DatagramError {
    fn from(e: FrameError) -> Self {
        DatagramError::Frame(e)
    }
}

/// The receiving side: verifies datagrams and rejects replays, per sender.
#[derive(Debug)]
pub struct Inbox {
    key: MacKey,
    peers: Vec<Peer>,
}

impl Inbox {
    /// A receiver for the cluster's datagrams.
    pub fn new(cluster: &ClusterKey) -> Inbox {
        Inbox {
            key: datagram_key(cluster),
            peers: Vec::with_capacity(MAX_SENDERS),
        }
    }

    /// Verify a datagram; returns its kind, envelope and the message bytes (postcard).
    pub fn open<'a>(
        &mut self,
        dgram: &'a [u8],
    ) -> Result<(Kind, Envelope, &'a [u8]), DatagramError> {
        let h = Header::parse(dgram, MAX_DATAGRAM_BODY)?;
        if dgram.len() != h.frame_len() {
            return Err(FrameError::Truncated {
                have: dgram.len(),
                need: h.frame_len(),
            }
            .into());
        }
        frame::verify(dgram, &self.key)?;
        let body = &dgram[HEADER_LEN..];
        let (env, rest): (Envelope, &[u8]) =
            postcard::take_from_bytes(body).map_err(|_| FrameError::Body {
                kind: h.kind,
                why: "bad envelope",
            })?;
        self.check(&env, h.seq)?;
        Ok((h.kind, env, rest))
    }

    fn check(&mut self, env: &Envelope, seq: u64) -> Result<(), DatagramError> {
        let Some(p) = self.peers.iter_mut().find(|p| p.from == env.from) else {
            if self.peers.len() >= MAX_SENDERS {
                return Err(DatagramError::TooManySenders);
            }
            self.peers.push(Peer {
                from: env.from,
                incarnation: env.incarnation,
                max_seq: seq,
                seen: 1,
                old: [[0; 8]; OLD_INCARNATIONS],
                old_next: 0,
            });
            return Ok(());
        };
        if p.incarnation == env.incarnation {
            return p.accept(seq);
        }
        if p.old.contains(&env.incarnation) {
            return Err(DatagramError::OldIncarnation);
        }
        // The sender restarted.
        p.old[p.old_next] = p.incarnation;
        p.old_next = (p.old_next + 1) % OLD_INCARNATIONS;
        p.incarnation = env.incarnation;
        p.max_seq = seq;
        p.seen = 1;
        Ok(())
    }
}

impl Peer {
    /// Anti-replay with a sliding window (as in IPsec): datagrams may arrive out of order by up
    /// to [`REPLAY_WINDOW`] sequence numbers, each is accepted once, older ones never.
    fn accept(&mut self, seq: u64) -> Result<(), DatagramError> {
        if seq > self.max_seq {
            let shift = seq - self.max_seq;
            self.seen = if shift >= REPLAY_WINDOW {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.max_seq = seq;
            return Ok(());
        }
        let back = self.max_seq - seq;
        if back >= REPLAY_WINDOW || self.seen & (1 << back) != 0 {
            return Err(DatagramError::Replay);
        }
        self.seen |= 1 << back;
        Ok(())
    }
}

/// Log a rejected datagram (the `count`th): the first 20, then at powers of two, so a flood of
/// forged datagrams cannot flood the log. Every one is counted in status output regardless.
pub fn log_rejected(count: u64, from: std::net::SocketAddr, e: &DatagramError) {
    if count <= 20 || count.is_power_of_two() {
        log::warn!(
            "dropped a datagram from {from} ({}): {e} [{count} rejected so far]",
            e.counter()
        );
    } else {
        log::debug!("dropped a datagram from {from} ({}): {e}", e.counter());
    }
}

/// Decode a message body of a datagram (after [`Inbox::open`]).
pub fn decode<'a, M: Deserialize<'a>>(kind: Kind, rest: &'a [u8]) -> Result<M, FrameError> {
    crate::msg::decode(kind, rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::Ack;

    fn key() -> ClusterKey {
        ClusterKey::from_bytes([9; 32])
    }

    #[test]
    fn round_trip_replay_and_restart() {
        let from = Sender {
            role: Role::Witness,
            id: 3,
        };
        let mut out = Outbox::new(&key(), from, [1; 8], 5);
        let mut inbox = Inbox::new(&key());
        let mut b1 = [0u8; MAX_DATAGRAM];
        let n1 = out
            .seal(Kind::Witness, &Ack { ckpt: 1, epoch: 5 }, &mut b1)
            .unwrap();
        let mut b2 = [0u8; MAX_DATAGRAM];
        let n2 = out
            .seal(Kind::Witness, &Ack { ckpt: 2, epoch: 5 }, &mut b2)
            .unwrap();
        let (k, env, rest) = inbox.open(&b1[..n1]).unwrap();
        assert_eq!((k, env.from, env.epoch), (Kind::Witness, from, 5));
        assert_eq!(decode::<Ack>(k, rest).unwrap(), Ack { ckpt: 1, epoch: 5 });
        inbox.open(&b2[..n2]).unwrap();
        assert_eq!(inbox.open(&b1[..n1]).unwrap_err(), DatagramError::Replay);
        // A restart (new incarnation) is accepted; the old incarnation never again.
        let mut out2 = Outbox::new(&key(), from, [2; 8], 5);
        let mut b3 = [0u8; MAX_DATAGRAM];
        let n3 = out2
            .seal(Kind::Witness, &Ack { ckpt: 3, epoch: 5 }, &mut b3)
            .unwrap();
        inbox.open(&b3[..n3]).unwrap();
        let mut b4 = [0u8; MAX_DATAGRAM];
        let n4 = out
            .seal(Kind::Witness, &Ack { ckpt: 4, epoch: 5 }, &mut b4)
            .unwrap();
        assert_eq!(
            inbox.open(&b4[..n4]).unwrap_err(),
            DatagramError::OldIncarnation
        );
    }

    /// Reordering is not replay (regression: a vote overtaken by a report was dropped as a replay,
    /// and the standby waited out its query timeout).
    #[test]
    fn reordered_datagrams_are_accepted_once_within_the_window() {
        let from = Sender {
            role: Role::Witness,
            id: 1,
        };
        let mut out = Outbox::new(&key(), from, [1; 8], 1);
        let mut inbox = Inbox::new(&key());
        let frames: Vec<Vec<u8>> = (0..100)
            .map(|i| {
                let mut b = [0u8; MAX_DATAGRAM];
                let n = out
                    .seal(Kind::Witness, &Ack { ckpt: i, epoch: 1 }, &mut b)
                    .unwrap();
                b[..n].to_vec()
            })
            .collect();
        inbox.open(&frames[5]).unwrap();
        inbox.open(&frames[3]).unwrap(); // overtaken: accepted
        inbox.open(&frames[4]).unwrap();
        assert_eq!(inbox.open(&frames[3]).unwrap_err(), DatagramError::Replay);
        inbox.open(&frames[90]).unwrap();
        inbox.open(&frames[30]).unwrap(); // 60 behind: still in the window
        assert_eq!(
            inbox.open(&frames[20]).unwrap_err(),
            DatagramError::Replay,
            "beyond the window"
        );
        assert_eq!(inbox.open(&frames[90]).unwrap_err(), DatagramError::Replay);
        inbox.open(&frames[91]).unwrap();
    }

    #[test]
    fn forged_truncated_and_wrong_key_are_rejected() {
        let from = Sender {
            role: Role::Primary,
            id: 0,
        };
        let mut out = Outbox::new(&key(), from, [1; 8], 1);
        let mut b = [0u8; MAX_DATAGRAM];
        let n = out
            .seal(Kind::Heartbeat, &Ack { ckpt: 1, epoch: 1 }, &mut b)
            .unwrap();
        let mut inbox = Inbox::new(&ClusterKey::from_bytes([8; 32]));
        assert_eq!(
            inbox.open(&b[..n]).unwrap_err(),
            DatagramError::Frame(FrameError::BadMac)
        );
        let mut inbox = Inbox::new(&key());
        assert!(matches!(
            inbox.open(&b[..n - 1]),
            Err(DatagramError::Frame(FrameError::Truncated { .. }))
        ));
        let mut f = b;
        f[n - 1] ^= 1;
        assert!(inbox.open(&f[..n]).is_err());
        assert!(inbox.open(&b[..n]).is_ok());
    }

    #[test]
    fn node_sender_ids_are_stable_and_tell_the_usual_nodes_apart() {
        assert_eq!(node_sender_id("host-a"), node_sender_id("host-a"));
        // FNV-1a of "a" (0xaf63dc4c8601ec8c): the low 32 bits, so ids stay stable across builds.
        assert_eq!(node_sender_id("a"), 0x8601_ec8c);
        // Names whose one-byte ids collided before (the same low byte) now differ.
        let mut by_low_byte = std::collections::HashMap::new();
        let mut collided = None;
        for i in 0..1000 {
            let name = format!("node-{i}");
            let id = node_sender_id(&name);
            if let Some(other) = by_low_byte.insert(id as u8, name.clone()) {
                collided = Some((other, name));
                break;
            }
        }
        let (a, b) = collided.expect("1000 names share a low byte somewhere");
        assert_ne!(node_sender_id(&a), node_sender_id(&b), "{a} and {b}");
        let names = [
            "primary",
            "standby",
            "host-a",
            "host-b",
            "host-a-standby",
            "host-b-primary",
        ];
        for (i, a) in names.iter().enumerate() {
            for b in &names[i + 1..] {
                assert_ne!(node_sender_id(a), node_sender_id(b), "{a} and {b}");
            }
        }
    }
}
