//! The simulated network: directed links that can be cut one way or both, with delay, jitter and
//! loss. Datagrams are lost; stream messages (checkpoints, acks, sync and fence requests: TCP in the
//! daemons) are delayed by a retransmission timeout instead, and dropped only while a link is cut.
//!
//! A link can also be shaped (a slow replication link, htb in the fault suite): one FIFO at a
//! bandwidth, so a checkpoint takes a while to cross and whatever is sent behind it (heartbeats
//! too) waits for it. Its bytes arrive as they cross ([`Msg::Bytes`], every few milliseconds),
//! the checkpoint itself at the end.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};

use hsb_common::rng::SplitMix64;

use super::world::Msg;

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

/// Retransmission timeout of the stream channel.
const RTO_NS: u64 = 30_000_000;

/// The network.
pub struct Net {
    heap: BinaryHeap<Flight>,
    seq: u64,
    cut: HashSet<(Ep, Ep)>,
    /// Loss in per-mille per directed link.
    loss: HashMap<(Ep, Ep), u64>,
    /// Extra jitter (ns) per directed link.
    jitter: HashMap<(Ep, Ep), u64>,
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

    /// Whether `a → b` is shaped and still busy with what was sent on it (the sender's
    /// socket is full: its next checkpoint waits, and the epoch stretches).
    pub fn busy(&self, a: Ep, b: Ep, now: u64) -> bool {
        self.shaped
            .get(&(a, b))
            .is_some_and(|&(_, free)| free > now)
    }

    /// Undo every cut and degradation.
    pub fn heal(&mut self) {
        self.cut.clear();
        self.loss.clear();
        self.jitter.clear();
        self.shaped.clear();
    }

    /// Send a datagram (`stream == false`) or a stream message.
    pub fn send(&mut self, now: u64, from: Ep, to: Ep, msg: Msg, stream: bool) {
        if self.is_cut(from, to) {
            return;
        }
        let (base, jit) = Net::base(from, to);
        let extra = self.jitter.get(&(from, to)).copied().unwrap_or(0);
        let mut delay = base + self.rng.below(jit + extra + 1);
        let loss = self.loss.get(&(from, to)).copied().unwrap_or(0);
        if loss > 0 {
            if stream {
                let mut tries = 0;
                while tries < 8 && self.rng.below(1000) < loss {
                    delay += RTO_NS;
                    tries += 1;
                }
            } else if self.rng.below(1000) < loss {
                return;
            }
        }
        if let Some(&(ckpt_ns, free)) = self.shaped.get(&(from, to)) {
            // One FIFO: wait for what is ahead, then cross at the link's rate.
            let start = free.max(now);
            let cross = if matches!(msg, Msg::Checkpoint { .. }) {
                ckpt_ns
            } else {
                0
            };
            self.shaped.insert((from, to), (ckpt_ns, start + cross));
            let mut t = BYTES_EVERY_NS;
            while t < cross {
                self.push(start + t + delay, from, to, Msg::Bytes);
                t += BYTES_EVERY_NS;
            }
            self.push(start + cross + delay, from, to, msg);
            return;
        }
        self.push(now + delay, from, to, msg);
    }

    /// Queue a message for delivery at `at` (used to hold messages for a paused host).
    pub fn push(&mut self, at: u64, from: Ep, to: Ep, msg: Msg) {
        self.seq += 1;
        self.heap.push(Flight {
            at,
            seq: self.seq,
            from,
            to,
            msg,
        });
    }

    /// The next message due at or before `now`; messages over a link cut meanwhile are dropped.
    pub fn pop_due(&mut self, now: u64) -> Option<Flight> {
        while let Some(top) = self.heap.peek() {
            if top.at > now {
                return None;
            }
            let f = self.heap.pop()?;
            if !self.is_cut(f.from, f.to) {
                return Some(f);
            }
        }
        None
    }
}
