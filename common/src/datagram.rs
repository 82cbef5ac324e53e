//! Authenticated datagrams (UDP) for heartbeats and witness traffic.
//!
//! A datagram is one [`crate::frame`] whose MAC key is derived from the cluster key for
//! datagrams, and whose body starts with an [`Envelope`]: the sender's identity, its
//! incarnation, its activation epoch and the datagram's destination. The MAC covers all of it.
//!
//! Replays (DESIGN.md §6) are rejected in three ways, none of which lets a replayed, reordered or
//! forged datagram make a receiver ignore a live sender:
//! - **Destination.** Every datagram names the node it is for (role, and the node id once the
//!   sender knows it); a receiver drops datagrams addressed to anyone else, so a datagram
//!   captured on its way to one daemon cannot be delivered to another.
//! - **Ordered incarnations.** A sender's incarnation is a number that grows with each start
//!   of the process ([`next_incarnation`]: above the last one saved, and above the wall clock in
//!   microseconds). A receiver keeps the highest incarnation it has seen per sender and drops
//!   lower ones for good; a higher one replaces it. A captured datagram of an earlier
//!   incarnation, replayed after a restart of sender or receiver, can therefore never displace
//!   the live incarnation (it used to: any unknown incarnation was taken as a restart, and the
//!   live one was then dropped as "earlier").
//! - **Sequence numbers per destination**, with a sliding window per (sender, destination) as
//!   in IPsec: each datagram is accepted once, in any order within [`REPLAY_WINDOW`].
//!
//! Replies that matter for safety (votes, lease grants) also echo a request number that starts
//! at random in each process, so they cannot answer another process's request.

use serde::{Deserialize, Serialize};

use crate::frame::{self, FrameError, Header, Kind, MacKey, HEADER_LEN};
use crate::key::ClusterKey;
use crate::msg::Role;

const DATAGRAM_CONTEXT: &str = "hsb 2026-12-06 datagram key v2";
/// Largest datagram body accepted.
pub const MAX_DATAGRAM_BODY: usize = 1200;
/// Largest datagram on the wire.
pub const MAX_DATAGRAM: usize = HEADER_LEN + MAX_DATAGRAM_BODY;
/// How far out of order a datagram may arrive (per sender and destination) and still be
/// accepted, once.
pub const REPLAY_WINDOW: u64 = 256;
/// Senders tracked.
pub const MAX_SENDERS: usize = 32;
/// Destinations one sender keeps sequence numbers for (bounded by configuration: witnesses,
/// the peer daemon in its two roles, with and without a known node id).
pub const MAX_DESTINATIONS: usize = 48;
/// Destinations one receiver keeps windows for, per sender (unaddressed pings, its role with
/// and without its id, in at most two roles over a process's life).
const WINDOWS_PER_SENDER: usize = 6;

/// Who sent a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Sender {
    /// Role of the sender.
    pub role: Role,
    /// Node id: for primary and standby one derived from the node's name
    /// ([`node_sender_id`]), the witness id for witnesses.
    pub id: u32,
}

/// Whom a datagram is for: a role, and the node id when the sender knows it (a witness learns
/// the daemons' ids from their pongs; daemons learn each other's from the replication Hello).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Dest {
    /// The receiver's role.
    pub role: Role,
    /// The receiver's node id, if known.
    pub id: Option<u32>,
}

impl Dest {
    /// Exactly this node.
    pub fn node(s: Sender) -> Dest {
        Dest {
            role: s.role,
            id: Some(s.id),
        }
    }

    /// Whichever node has `role` (before its id is known).
    pub fn role(role: Role) -> Dest {
        Dest { role, id: None }
    }

    /// Whether a datagram addressed to `self` is for `me`.
    pub fn matches(&self, me: Sender) -> bool {
        self.role == me.role && self.id.is_none_or(|i| i == me.id)
    }
}

/// The sender id of a primary or standby, from its node name (the low 32 bits of its FNV-1a
/// hash). Two nodes in the same role must differ: after a failover the promoted primary on one
/// host and the old primary on the other run at once. With 32 bits two names collide with a
/// chance of about 1 in 4 billion (it was 1 in 256 with one byte).
pub fn node_sender_id(node: &str) -> u32 {
    let h = node.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    h as u32
}

/// The incarnation of a process starting now: above the last one it saved (if its state file
/// keeps one) and above the wall clock in microseconds (so a process whose state was lost
/// still starts above its predecessors unless the clock went back, too).
pub fn next_incarnation(saved: Option<u64>, wall_clock_micros: u64) -> u64 {
    saved
        .map_or(1, |s| s.saturating_add(1))
        .max(wall_clock_micros)
}

/// The wall clock in microseconds since 1970 (0 if it is before that).
pub fn wall_clock_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The envelope inside every datagram body, before the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Sender identity.
    pub from: Sender,
    /// Grows with each start of the sender ([`next_incarnation`]).
    pub incarnation: u64,
    /// Sender's activation epoch.
    pub epoch: u64,
    /// The destination; `None` only for a ping (any daemon may answer it).
    pub to: Option<Dest>,
}

/// The datagram MAC key.
pub fn datagram_key(cluster: &ClusterKey) -> MacKey {
    MacKey(blake3::derive_key(DATAGRAM_CONTEXT, cluster.as_bytes()))
}

/// Why a datagram could not be sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SealError {
    /// The message does not fit a datagram.
    Encode(postcard::Error),
    /// More distinct destinations than [`MAX_DESTINATIONS`].
    TooManyDestinations,
}

impl std::fmt::Display for SealError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SealError::Encode(e) => write!(f, "cannot encode: {e}"),
            SealError::TooManyDestinations => write!(
                f,
                "more than {MAX_DESTINATIONS} destinations (a configuration this large is not supported)"
            ),
        }
    }
}

/// The sending side: identity, incarnation and a sequence number per destination.
#[derive(Debug)]
pub struct Outbox {
    key: MacKey,
    from: Sender,
    incarnation: u64,
    epoch: u64,
    seqs: heapless::Vec<(Option<Dest>, u64), MAX_DESTINATIONS>,
}

impl Outbox {
    /// A sender of incarnation `incarnation` ([`next_incarnation`]).
    pub fn new(cluster: &ClusterKey, from: Sender, incarnation: u64, epoch: u64) -> Outbox {
        Outbox {
            key: datagram_key(cluster),
            from,
            incarnation,
            epoch,
            seqs: heapless::Vec::new(),
        }
    }

    /// Set the epoch carried in later datagrams.
    pub fn set_epoch(&mut self, epoch: u64) {
        self.epoch = epoch;
    }

    /// Speak in another role from now on (an activated standby answers as the primary).
    pub fn set_role(&mut self, role: Role) {
        self.from.role = role;
    }

    /// Who this sender is.
    pub fn sender(&self) -> Sender {
        self.from
    }

    /// This sender's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Encode `m` of `kind` for `to` into `out`; returns the datagram length.
    pub fn seal<M: Serialize>(
        &mut self,
        kind: Kind,
        m: &M,
        to: Option<Dest>,
        out: &mut [u8; MAX_DATAGRAM],
    ) -> Result<usize, SealError> {
        let i = match self.seqs.iter().position(|(d, _)| *d == to) {
            Some(i) => i,
            None => {
                self.seqs
                    .push((to, 1))
                    .map_err(|_| SealError::TooManyDestinations)?;
                self.seqs.len() - 1
            }
        };
        let env = Envelope {
            from: self.from,
            incarnation: self.incarnation,
            epoch: self.epoch,
            to,
        };
        let body = &mut out[HEADER_LEN..];
        let n1 = postcard::to_slice(&env, body)
            .map_err(SealError::Encode)?
            .len();
        let n2 = postcard::to_slice(m, &mut body[n1..])
            .map_err(SealError::Encode)?
            .len();
        let len = n1 + n2;
        let seq = &mut self.seqs[i].1;
        Header {
            kind,
            body_len: len as u32,
            seq: *seq,
        }
        .emit(&mut out[..]);
        frame::seal(&mut out[..HEADER_LEN + len], &self.key);
        *seq += 1;
        Ok(HEADER_LEN + len)
    }
}

/// Anti-replay with a sliding window (as in IPsec): datagrams may arrive out of order by up to
/// [`REPLAY_WINDOW`] sequence numbers, each is accepted once, older ones never.
#[derive(Debug, Clone, Copy)]
struct Window {
    max_seq: u64,
    /// Bit i set: sequence `max_seq - i` was seen (bit 0 is `max_seq` itself).
    seen: [u64; (REPLAY_WINDOW / 64) as usize],
}

impl Window {
    fn first(seq: u64) -> Window {
        let mut seen = [0u64; (REPLAY_WINDOW / 64) as usize];
        seen[0] = 1;
        Window { max_seq: seq, seen }
    }

    fn bit(&self, back: u64) -> bool {
        self.seen[(back / 64) as usize] & (1 << (back % 64)) != 0
    }

    fn set(&mut self, back: u64) {
        self.seen[(back / 64) as usize] |= 1 << (back % 64);
    }

    /// Shift the bitmap by `n` positions towards older sequence numbers.
    fn shift(&mut self, n: u64) {
        if n >= REPLAY_WINDOW {
            self.seen = [0; (REPLAY_WINDOW / 64) as usize];
            return;
        }
        let words = (n / 64) as usize;
        let bits = (n % 64) as u32;
        let len = self.seen.len();
        for i in (0..len).rev() {
            let lo = i.checked_sub(words).map_or(0, |j| self.seen[j]);
            let carry = if bits == 0 {
                0
            } else {
                i.checked_sub(words + 1)
                    .map_or(0, |j| self.seen[j] >> (64 - bits))
            };
            self.seen[i] = if bits == 0 { lo } else { (lo << bits) | carry };
        }
    }

    fn accept(&mut self, seq: u64) -> Result<(), DatagramError> {
        if seq > self.max_seq {
            self.shift(seq - self.max_seq);
            self.max_seq = seq;
            self.set(0);
            return Ok(());
        }
        let back = self.max_seq - seq;
        if back >= REPLAY_WINDOW || self.bit(back) {
            return Err(DatagramError::Replay);
        }
        self.set(back);
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct Peer {
    from: Sender,
    incarnation: u64,
    windows: heapless::Vec<(Option<Dest>, Window), WINDOWS_PER_SENDER>,
}

/// Why a datagram was dropped (beyond frame errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatagramError {
    /// Bad frame, MAC, or body.
    Frame(FrameError),
    /// Sequence number seen before, or older than the window.
    Replay,
    /// An incarnation lower than one this receiver has seen of the same sender.
    OldIncarnation,
    /// Addressed to another node (or unaddressed and not a ping).
    Misaddressed,
    /// Addressed to this node in the role it had before its last change of role (a report to
    /// the standby that was on its way while the standby activated): expected for a moment
    /// after a failover or switchover, dropped quietly.
    FormerRole,
    /// Too many distinct senders, or destinations of one sender.
    TooManySenders,
}

impl std::fmt::Display for DatagramError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatagramError::Frame(e) => write!(f, "{e}"),
            DatagramError::Replay => write!(f, "replayed datagram (sequence number seen before)"),
            DatagramError::OldIncarnation => {
                write!(f, "datagram from an earlier incarnation of its sender")
            }
            DatagramError::Misaddressed => write!(f, "datagram addressed to another node"),
            DatagramError::FormerRole => {
                write!(f, "datagram addressed to this node's former role")
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
            DatagramError::Misaddressed | DatagramError::FormerRole => "misaddressed",
            DatagramError::TooManySenders => "too_many_senders",
        }
    }
}

impl From<FrameError> for DatagramError {
    fn from(e: FrameError) -> Self {
        DatagramError::Frame(e)
    }
}

/// How many datagrams addressed to a node's former role are dropped quietly after a change of
/// role (in flight at that moment: two or three seen at each failover); any more are logged as
/// misaddressed.
pub const FORMER_ROLE_QUIET: u8 = 16;

/// The receiving side: verifies datagrams, checks they are for this node, rejects replays.
#[derive(Debug)]
pub struct Inbox {
    key: MacKey,
    me: Sender,
    /// This node before its last change of role, and how many more datagrams addressed to it
    /// are told apart as such (see [`DatagramError::FormerRole`]); bounded, so that a stream of
    /// replays addressed to the former role is not quiet.
    former: Option<Sender>,
    former_quiet: u8,
    peers: Vec<Peer>,
}

impl Inbox {
    /// A receiver for the cluster's datagrams addressed to `me`.
    pub fn new(cluster: &ClusterKey, me: Sender) -> Inbox {
        Inbox {
            key: datagram_key(cluster),
            me,
            former: None,
            former_quiet: 0,
            peers: Vec::with_capacity(MAX_SENDERS),
        }
    }

    /// Take datagrams for another role from now on (an activated standby is the primary).
    pub fn set_role(&mut self, role: Role) {
        if role != self.me.role {
            self.set_former(self.me.role);
        }
        self.me.role = role;
    }

    /// This node had role `role` before (in this process or the one it replaced): the first
    /// [`FORMER_ROLE_QUIET`] datagrams still on their way to it are [`DatagramError::FormerRole`].
    pub fn set_former(&mut self, role: Role) {
        self.former = Some(Sender {
            role,
            id: self.me.id,
        });
        self.former_quiet = FORMER_ROLE_QUIET;
    }

    /// Verify a datagram; returns its kind, envelope and the message bytes (postcard). An
    /// unaddressed datagram (`to: None`) passes here; the caller accepts it only as a ping.
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
        if let Some(d) = env.to.filter(|d| !d.matches(self.me)) {
            return Err(match self.former {
                Some(f) if d.matches(f) && self.former_quiet > 0 => {
                    self.former_quiet -= 1;
                    DatagramError::FormerRole
                }
                _ => DatagramError::Misaddressed,
            });
        }
        self.check(&env, h.seq)?;
        Ok((h.kind, env, rest))
    }

    fn check(&mut self, env: &Envelope, seq: u64) -> Result<(), DatagramError> {
        let Some(p) = self.peers.iter_mut().find(|p| p.from == env.from) else {
            if self.peers.len() >= MAX_SENDERS {
                return Err(DatagramError::TooManySenders);
            }
            let mut windows = heapless::Vec::new();
            let _ = windows.push((env.to, Window::first(seq)));
            self.peers.push(Peer {
                from: env.from,
                incarnation: env.incarnation,
                windows,
            });
            return Ok(());
        };
        if env.incarnation < p.incarnation {
            return Err(DatagramError::OldIncarnation);
        }
        if env.incarnation > p.incarnation {
            // The sender restarted: its sequence numbers start again.
            p.incarnation = env.incarnation;
            p.windows.clear();
        }
        match p.windows.iter_mut().find(|(d, _)| *d == env.to) {
            Some((_, w)) => w.accept(seq),
            None => p
                .windows
                .push((env.to, Window::first(seq)))
                .map_err(|_| DatagramError::TooManySenders),
        }
    }
}

/// Log a rejected datagram (the `count`th): the first 20, then at powers of two, so a flood of
/// forged datagrams cannot flood the log. Every one is counted in status output regardless.
pub fn log_rejected(count: u64, from: std::net::SocketAddr, e: &DatagramError) {
    if *e == DatagramError::FormerRole {
        // Sent to this node before it changed role, and still on its way: nothing is wrong.
        log::debug!("dropped a datagram from {from}: {e}");
    } else if count <= 20 || count.is_power_of_two() {
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
#[path = "datagram_tests.rs"]
mod tests;
