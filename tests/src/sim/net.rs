//! The simulated network: directed links that can be cut one way or both, with delay, jitter and
//! loss. Datagrams (sealed by the daemons' own code, client requests, the ping node's) are lost on
//! a cut or lossy link. A TCP connection's segments keep their order per direction; a lossy link
//! delays them by a retransmission timeout instead of losing them, and a segment that cannot be
//! delivered (a cut link, a host that is down) blocks its direction and is retransmitted with
//! exponential backoff, as TCP does, until it gets through.
//!
//! A link can also be shaped (a slow replication link, htb in the fault suite): one FIFO at a
//! bandwidth, so a checkpoint takes a while to cross and whatever is sent behind it (heartbeats
//! too) waits for it. Its bytes arrive as they cross (a [`Seg::Part`] every few milliseconds),
//! the checkpoint itself at the end; the sender's socket takes the next one only then.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::SocketAddr;

use hsb_common::rng::SplitMix64;

use super::tcp::Seg;

/// An endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ep {
    /// Host 0 (primary at the start) or 1 (standby at the start): its daemon and application.
    Node(u8),
    /// A witness, by index.
    Witness(u8),
    /// The ping node of the ping-node baseline.
    Ping,
}

/// What travels.
#[derive(Debug, Clone)]
pub enum Msg {
    /// A datagram sealed by the sender's outbox, for the socket bound at `to`.
    Dgram {
        /// The sender's socket.
        from: SocketAddr,
        /// The receiver's socket.
        to: SocketAddr,
        /// The sealed bytes.
        bytes: Vec<u8>,
    },
    /// A segment of TCP connection `conn` (in order per direction).
    Tcp {
        /// The connection.
        conn: u64,
        /// Its content.
        seg: Seg,
    },
    /// The receiver's end of `conn` is gone (its host answers with a reset).
    Rst {
        /// The connection.
        conn: u64,
    },
    /// A client's request to the service (the witness's application probe).
    Request {
        /// Its number.
        id: u64,
    },
    /// The service's answer (released by output commit), or a refused connection.
    Reply {
        /// The request's number.
        id: u64,
        /// Nothing listens at the service address on that host.
        refused: bool,
    },
    /// The ping-node baseline's connect.
    Ping {
        /// Its number.
        id: u64,
    },
    /// Its answer.
    Pong {
        /// The connect's number.
        id: u64,
    },
}

/// A TCP segment's direction of a connection, and its retransmission timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamTag {
    /// The connection.
    pub conn: u64,
    /// 0: from the connecting side, 1: towards it.
    pub dir: u8,
    /// The first retransmission timeout (1 s for a connect, 200 ms for data).
    pub rto_ns: u64,
}

/// A message in flight.
#[derive(Debug, Clone)]
pub struct Flight {
    /// Delivery time, ns.
    pub at: u64,
    seq: u64,
    /// Sender.
    pub from: Ep,
    /// Receiver.
    pub to: Ep,
    /// Payload.
    pub msg: Msg,
    /// A TCP segment's direction.
    pub stream: Option<StreamTag>,
}

impl PartialEq for Flight {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Flight {}
impl PartialOrd for Flight {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Flight {
    // Reversed: BinaryHeap is a max-heap, we want the earliest first.
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// Extra delay of a TCP segment per loss on a lossy link.
const LOSS_RTO_NS: u64 = 30_000_000;
/// Longest retransmission timeout.
const MAX_RTO_NS: u64 = 60_000_000_000;
/// A connection's first retransmission timeout for data (Linux's minimum).
pub const DATA_RTO_NS: u64 = 200_000_000;
/// A connect's first retransmission timeout (Linux: 1 s, then 3 s, 7 s, ...).
pub const SYN_RTO_NS: u64 = 1_000_000_000;

/// One direction of a connection.
#[derive(Debug, Clone, Copy, Default)]
struct Fifo {
    /// The last segment's delivery time (later ones never overtake it).
    last_at: u64,
    /// Nothing is delivered before this (the head waits for its retransmission).
    blocked_until: u64,
    /// Retransmissions of the head so far.
    retries: u32,
}

/// The network.
pub struct Net {
    heap: BinaryHeap<Flight>,
    seq: u64,
    cut: HashSet<(Ep, Ep)>,
    /// Loss in per-mille per directed link.
    loss: HashMap<(Ep, Ep), u64>,
    /// Extra jitter (ns) per directed link.
    jitter: HashMap<(Ep, Ep), u64>,
    fifos: HashMap<(u64, u8), Fifo>,
    /// Shaped links: time (ns) a checkpoint takes to cross, and when the link is free again.
    shaped: HashMap<(Ep, Ep), (u64, u64)>,
    rng: SplitMix64,
}

/// On a shaped link, a checkpoint's bytes are seen arriving this often (ns).
pub const BYTES_EVERY_NS: u64 = 5_000_000;

impl Net {
    /// An empty network with its own random stream.
    pub fn new(seed: u64) -> Net {
        Net {
            heap: BinaryHeap::new(),
            seq: 0,
            cut: HashSet::new(),
            loss: HashMap::new(),
            jitter: HashMap::new(),
            fifos: HashMap::new(),
            shaped: HashMap::new(),
            rng: SplitMix64::new(seed ^ 0x6e65_7477_6f72_6b00),
        }
    }

    fn base(from: Ep, to: Ep) -> (u64, u64) {
        match (from, to) {
            (Ep::Node(_), Ep::Node(_)) => (200_000, 100_000),
            (Ep::Ping, _) | (_, Ep::Ping) => (300_000, 200_000),
            _ => (500_000, 500_000),
        }
    }

    /// Cut `a → b`.
    pub fn cut_one(&mut self, a: Ep, b: Ep) {
        self.cut.insert((a, b));
    }

    /// Cut both ways.
    pub fn cut_both(&mut self, a: Ep, b: Ep) {
        self.cut.insert((a, b));
        self.cut.insert((b, a));
    }

    /// Whether `a → b` is cut.
    pub fn is_cut(&self, a: Ep, b: Ep) -> bool {
        self.cut.contains(&(a, b))
    }

    /// Loss (per mille) and extra jitter on both directions of a link.
    pub fn degrade(&mut self, a: Ep, b: Ep, loss_pm: u64, jitter_ns: u64) {
        for k in [(a, b), (b, a)] {
            self.loss.insert(k, loss_pm);
            self.jitter.insert(k, jitter_ns);
        }
    }

    /// Shape `a → b`: a checkpoint takes `ckpt_ns` to cross; everything queues behind it.
    pub fn shape(&mut self, a: Ep, b: Ep, ckpt_ns: u64) {
        self.shaped.insert((a, b), (ckpt_ns, 0));
    }

    /// Undo every cut, degradation and shaping (segments waiting for a retransmission still
    /// wait for it).
    pub fn heal(&mut self) {
        self.cut.clear();
        self.loss.clear();
        self.jitter.clear();
        self.shaped.clear();
    }

    /// On a shaped `from → to`: when a message sent now starts to cross, and when it has
    /// crossed (a checkpoint takes the link's time, anything else none); the link is busy until
    /// then.
    fn shaping(&mut self, now: u64, from: Ep, to: Ep, checkpoint: bool) -> Option<(u64, u64)> {
        let (ckpt_ns, free) = self.shaped.get(&(from, to)).copied()?;
        let start = free.max(now);
        let end = start + if checkpoint { ckpt_ns } else { 0 };
        self.shaped.insert((from, to), (ckpt_ns, end));
        Some((start, end))
    }

    fn delay(&mut self, from: Ep, to: Ep) -> u64 {
        let (base, jit) = Net::base(from, to);
        let extra = self.jitter.get(&(from, to)).copied().unwrap_or(0);
        base + self.rng.below(jit + extra + 1)
    }

    /// Send a datagram: lost on a cut or (by chance) on a lossy link.
    pub fn send(&mut self, now: u64, from: Ep, to: Ep, msg: Msg) {
        if self.is_cut(from, to) {
            return;
        }
        let delay = self.delay(from, to);
        let loss = self.loss.get(&(from, to)).copied().unwrap_or(0);
        if loss > 0 && self.rng.below(1000) < loss {
            return;
        }
        let at = self
            .shaping(now, from, to, false)
            .map_or(now, |(_, end)| end);
        self.push(at + delay, from, to, msg, None);
    }

    /// Send a TCP segment: after everything sent before it in its direction, later by a
    /// retransmission timeout per loss on a lossy link, behind what a shaped link still
    /// carries. Returns when the sender's socket has handed all of it to the link (later than
    /// `now` only on a shaped link).
    pub fn send_stream(&mut self, now: u64, from: Ep, to: Ep, tag: StreamTag, msg: Msg) -> u64 {
        let checkpoint = matches!(
            msg,
            Msg::Tcp {
                seg: Seg::Checkpoint { .. },
                ..
            }
        );
        let (start, end) = self
            .shaping(now, from, to, checkpoint)
            .unwrap_or((now, now));
        let mut t = start + BYTES_EVERY_NS;
        while t < end {
            // Its bytes, seen arriving as they cross.
            let part = Msg::Tcp {
                conn: tag.conn,
                seg: Seg::Part,
            };
            self.stream_at(t, from, to, tag, part);
            t += BYTES_EVERY_NS;
        }
        self.stream_at(end, from, to, tag, msg);
        end
    }

    fn stream_at(&mut self, now: u64, from: Ep, to: Ep, tag: StreamTag, msg: Msg) {
        let mut at = now + self.delay(from, to);
        let loss = self.loss.get(&(from, to)).copied().unwrap_or(0);
        let mut tries = 0;
        while loss > 0 && tries < 8 && self.rng.below(1000) < loss {
            at += LOSS_RTO_NS;
            tries += 1;
        }
        let f = self.fifos.entry((tag.conn, tag.dir)).or_default();
        at = at.max(f.last_at);
        f.last_at = at;
        self.push(at, from, to, msg, Some(tag));
    }

    /// Queue a message for delivery at `at` (also: held for a paused host, in order).
    pub fn push(&mut self, at: u64, from: Ep, to: Ep, msg: Msg, stream: Option<StreamTag>) {
        self.seq += 1;
        self.heap.push(Flight {
            at,
            seq: self.seq,
            from,
            to,
            msg,
            stream,
        });
    }

    /// Hold `f` until `at` (its receiver is paused): everything behind it waits too.
    pub fn hold(&mut self, f: Flight, at: u64) {
        if let Some(t) = f.stream {
            let q = self.fifos.entry((t.conn, t.dir)).or_default();
            q.blocked_until = q.blocked_until.max(at);
            q.last_at = q.last_at.max(at);
        }
        self.push(at, f.from, f.to, f.msg, f.stream);
    }

    /// A TCP segment that did not get through (its receiver's host is down): retransmitted
    /// after the timeout, doubled each time; its direction waits for it.
    pub fn retransmit(&mut self, now: u64, f: Flight) {
        let Some(t) = f.stream else {
            return;
        };
        let q = self.fifos.entry((t.conn, t.dir)).or_default();
        let rto = t
            .rto_ns
            .saturating_mul(1 << q.retries.min(20))
            .min(MAX_RTO_NS);
        q.retries += 1;
        q.blocked_until = now + rto;
        q.last_at = q.last_at.max(q.blocked_until);
        let at = q.blocked_until;
        self.push(at, f.from, f.to, f.msg, f.stream);
    }

    /// A TCP segment was delivered: its direction's retransmissions start again from the first
    /// timeout.
    pub fn delivered(&mut self, f: &Flight) {
        if let Some(t) = f.stream {
            if let Some(q) = self.fifos.get_mut(&(t.conn, t.dir)) {
                q.retries = 0;
            }
        }
    }

    /// Forget a connection (both its ends are gone): its segments in flight are dropped.
    pub fn forget(&mut self, conn: u64) {
        self.fifos.remove(&(conn, 0));
        self.fifos.remove(&(conn, 1));
    }

    /// The next message due at or before `now`. Datagrams over a link cut meanwhile are dropped;
    /// a TCP segment over a cut link is retransmitted later, and one behind a segment waiting
    /// for its retransmission waits for it.
    pub fn pop_due(&mut self, now: u64) -> Option<Flight> {
        while let Some(top) = self.heap.peek() {
            if top.at > now {
                return None;
            }
            let f = self.heap.pop()?;
            let Some(t) = f.stream else {
                if !self.is_cut(f.from, f.to) {
                    return Some(f);
                }
                continue;
            };
            let Some(q) = self.fifos.get(&(t.conn, t.dir)).copied() else {
                // The connection is gone.
                continue;
            };
            if q.blocked_until > now {
                let at = q.blocked_until;
                self.push(at, f.from, f.to, f.msg, f.stream);
                continue;
            }
            if self.is_cut(f.from, f.to) {
                self.retransmit(now, f);
                continue;
            }
            return Some(f);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(conn: u64) -> StreamTag {
        StreamTag {
            conn,
            dir: 0,
            rto_ns: DATA_RTO_NS,
        }
    }

    fn seg(n: u64) -> Msg {
        Msg::Request { id: n }
    }

    fn drain(net: &mut Net, until: u64) -> Vec<(u64, u64)> {
        let mut got = Vec::new();
        let mut t = 0;
        while t <= until {
            while let Some(f) = net.pop_due(t) {
                if let Msg::Request { id } = f.msg {
                    got.push((t, id));
                }
                net.delivered(&f);
            }
            t += 1_000_000;
        }
        got
    }

    #[test]
    fn a_connection_keeps_its_order_through_loss() {
        let mut net = Net::new(1);
        let (a, b) = (Ep::Node(0), Ep::Node(1));
        net.degrade(a, b, 500, 2_000_000);
        for n in 0..50 {
            net.send_stream(n * 1_000_000, a, b, tag(1), seg(n));
        }
        let got: Vec<u64> = drain(&mut net, 2_000_000_000).iter().map(|g| g.1).collect();
        assert_eq!(got, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn a_cut_link_delays_a_connection_until_a_retransmission_after_it_heals() {
        let mut net = Net::new(2);
        let (a, b) = (Ep::Node(0), Ep::Node(1));
        net.cut_both(a, b);
        net.send_stream(0, a, b, tag(1), seg(1));
        net.send_stream(1_000_000, a, b, tag(1), seg(2));
        net.send(1_000_000, a, b, seg(9));
        // Sent at 0.2 ms, again at 200.2 ms, 600.2 ms, 1400.2 ms (doubling); healed at 1 s.
        let mut got = Vec::new();
        for ms in 0..3_000u64 {
            if ms == 1_000 {
                net.heal();
            }
            while let Some(f) = net.pop_due(ms * 1_000_000) {
                if let Msg::Request { id } = f.msg {
                    got.push((ms, id));
                }
                net.delivered(&f);
            }
        }
        assert_eq!(got, [(1_401, 1), (1_401, 2)], "the datagram is lost");
    }
}
