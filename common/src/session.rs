//! Sessions: keys derived from the cluster key and both sides' nonces, one per direction, and
//! strictly consecutive sequence numbers. A frame from another session fails its MAC; a frame
//! replayed, dropped or reordered within a session fails its sequence check.
//!
//! Opening one (DESIGN.md §6): the primary's `Hello` under the hello key, the standby's `Hello`
//! under the session key, then the primary's confirmation, its `Hello` again under the session
//! key ([`write_confirm`], [`open_confirm`]). A replayed `Hello` cannot produce the confirmation,
//! so a session counts only from it. Whether a new session may replace a live one is
//! [`admit`]: only the newer primary may.

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

/// The initiator's confirmation: its `Hello` again, sealed under the session key, as the
/// session's first frame. It proves the initiator holds the cluster key now, in this session
/// (a `Hello` under the hello key could be a recording).
pub fn write_confirm(
    sess: &mut Session,
    hello: &msg::Hello,
    out: &mut [u8],
) -> Result<usize, postcard::Error> {
    sess.write(Kind::Hello, hello, out)
}

/// Verify the initiator's confirmation ([`write_confirm`]) of `hello`.
pub fn open_confirm(sess: &mut Session, buf: &[u8], hello: &msg::Hello) -> Result<(), FrameError> {
    sess.open(buf)?;
    let f = frame::Frame::new_checked(buf)?;
    if f.kind_byte() != Kind::Hello as u8 {
        return Err(FrameError::Unexpected {
            kind: Kind::from_u8(f.kind_byte()).unwrap_or(Kind::Hello),
            state: "waiting for the primary's confirmation of its Hello",
        });
    }
    let h: msg::Hello = msg::decode(Kind::Hello, f.body())?;
    if &h != hello {
        return Err(FrameError::Body {
            kind: Kind::Hello,
            why: "the confirmation differs from the Hello",
        });
    }
    Ok(())
}

/// Which primary a `Hello` says it is: what [`admit`] compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// Node name.
    pub node: heapless::String<{ msg::NODE_NAME_LEN }>,
    /// Activation epoch.
    pub epoch: u64,
    /// Incarnation of the primary's process.
    pub incarnation: u64,
    /// The session's initiator nonce (fresh in every genuine `Hello`).
    pub nonce: [u8; 16],
}

impl Claim {
    /// The claim of a `Hello`.
    pub fn of(h: &msg::Hello) -> Claim {
        Claim {
            node: h.node.clone(),
            epoch: h.epoch.0,
            incarnation: h.incarnation,
            nonce: h.nonce,
        }
    }
}

/// The live session, as [`admit`] sees it.
#[derive(Debug, Clone, Copy)]
pub struct Live<'a> {
    /// Its primary's claim.
    pub claim: &'a Claim,
    /// Nothing heard from its primary for longer than the standby's silence bound.
    pub silent: bool,
    /// Its connection was accepted before the newcomer's (strictly: an earlier turn of the
    /// standby's loop). See [`Admit::Reconnected`] for what that proves.
    pub connected_first: bool,
}

/// Why a new session may take the place of the live one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// There is no live session.
    NoSession,
    /// The newcomer's epoch is higher: it is the primary of a later activation.
    NewerEpoch,
    /// The same node in the same epoch with a higher incarnation: the primary restarted.
    Restarted,
    /// The same primary process (node, epoch and incarnation), on a connection accepted after
    /// the live session's: it gave the live one up and reconnected. A primary holds one
    /// replication connection at a time, and it can confirm a session only on a connection it
    /// still holds after reading the standby's answer on it; so had it opened the live
    /// session's connection after this one, the standby would have accepted this one first.
    /// (The live connection may still deliver bytes for seconds: a primary that drops a lossy
    /// connection leaves its kernel sending what was queued on it, slowly while the link loses
    /// or the congestion control still holds its rate down, so it does not go silent.)
    Reconnected,
    /// The live session has gone silent.
    Silent,
}

impl std::fmt::Display for Admit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Admit::NoSession => "no session is live",
            Admit::NewerEpoch => "a newer epoch than the live session's",
            Admit::Restarted => "the same primary restarted (a higher incarnation)",
            Admit::Reconnected => {
                "the same primary reconnected, on a newer connection than the live session's"
            }
            Admit::Silent => "the live session has gone silent",
        })
    }
}

/// Why a new session may not replace the live one (sent to its primary in a `Refuse`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Its nonce is in use by another connection: a replayed or duplicated `Hello`.
    Replayed,
    /// Its epoch is lower than the live session's.
    OlderEpoch {
        /// The newcomer's epoch.
        epoch: u64,
        /// The live session's.
        live: u64,
    },
    /// The live session's own node, in the same epoch, without a higher incarnation.
    NotNewer {
        /// The node.
        node: heapless::String<{ msg::NODE_NAME_LEN }>,
        /// The newcomer's incarnation.
        incarnation: u64,
        /// The live session's.
        live: u64,
    },
    /// The live session's own primary process, on a connection accepted no later than the
    /// live session's: a confirmation that took its time, from a connection it gave up.
    EarlierConnection {
        /// The node.
        node: heapless::String<{ msg::NODE_NAME_LEN }>,
        /// The incarnation both claim.
        incarnation: u64,
    },
    /// Another node, in the same epoch, while the live session's primary streams.
    AnotherPrimary {
        /// The live session's node.
        live: heapless::String<{ msg::NODE_NAME_LEN }>,
        /// The epoch both claim.
        epoch: u64,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Replayed => {
                f.write_str("a connection with this session nonce exists: a replayed Hello")
            }
            Refusal::OlderEpoch { epoch, live } => write!(
                f,
                "epoch {epoch} is older than the live session's epoch {live}"
            ),
            Refusal::NotNewer {
                node,
                incarnation,
                live,
            } => write!(
                f,
                "a session of {node} (incarnation {live}) is live; incarnation {incarnation} is not newer"
            ),
            Refusal::EarlierConnection { node, incarnation } => write!(
                f,
                "a session of {node} (incarnation {incarnation}) is live on a connection no older than this one"
            ),
            Refusal::AnotherPrimary { live, epoch } => write!(
                f,
                "primary {live} holds a live session in epoch {epoch}; another node needs a newer epoch, or that session to go silent"
            ),
        }
    }
}

impl Refusal {
    /// A short stable name for counters and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Refusal::Replayed => "replayed",
            Refusal::OlderEpoch { .. } => "older-epoch",
            Refusal::NotNewer { .. } => "not-newer",
            Refusal::EarlierConnection { .. } => "earlier-connection",
            Refusal::AnotherPrimary { .. } => "another-primary",
        }
    }
}

/// The replace-or-refuse rule (DESIGN.md §6): a session replaces the live one only if its
/// primary proves it is the newer one: a higher epoch, or the same node in the same epoch with a
/// higher incarnation (restarted), or the same primary process on a newer connection
/// (reconnected, [`Admit::Reconnected`]), or the live session has gone silent. A lower epoch is
/// never taken (rule 8). `nonce_in_use`: another connection already carries this `Hello`'s
/// nonce. Pure: the standby applies it when the `Hello` arrives (to refuse early) and again when
/// its confirmation does (the live session may have changed meanwhile); only the confirmation
/// proves the claim, so only then does the session change hands.
pub fn admit(live: Option<Live<'_>>, new: &Claim, nonce_in_use: bool) -> Result<Admit, Refusal> {
    if nonce_in_use || live.is_some_and(|l| l.claim.nonce == new.nonce) {
        return Err(Refusal::Replayed);
    }
    let Some(live) = live else {
        return Ok(Admit::NoSession);
    };
    let cur = live.claim;
    if new.epoch > cur.epoch {
        return Ok(Admit::NewerEpoch);
    }
    if new.epoch < cur.epoch {
        return Err(Refusal::OlderEpoch {
            epoch: new.epoch,
            live: cur.epoch,
        });
    }
    let same_node = new.node == cur.node;
    if same_node && new.incarnation > cur.incarnation {
        return Ok(Admit::Restarted);
    }
    let same_process = same_node && new.incarnation == cur.incarnation;
    if same_process && live.connected_first {
        return Ok(Admit::Reconnected);
    }
    if live.silent {
        return Ok(Admit::Silent);
    }
    if same_process {
        Err(Refusal::EarlierConnection {
            node: new.node.clone(),
            incarnation: new.incarnation,
        })
    } else if same_node {
        Err(Refusal::NotNewer {
            node: new.node.clone(),
            incarnation: new.incarnation,
            live: cur.incarnation,
        })
    } else {
        Err(Refusal::AnotherPrimary {
            live: cur.node.clone(),
            epoch: cur.epoch,
        })
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "session_admission_tests.rs"]
mod admission;
