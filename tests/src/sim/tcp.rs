//! TCP connections between the simulated hosts: the replication connection from a primary to
//! its standby. A connection has two ends, each belonging to one process of one boot of a host;
//! its segments keep their order per direction and are retransmitted until they get through
//! ([`super::net`]). An end whose process exec'd closes with a FIN; one whose host crashed goes
//! silent; a segment for an end that is gone gets a reset.
//!
//! The frames are the replication protocol's, as the nodes see them (the daemons' byte-level
//! framing, keys and page encoding are not simulated): the Hellos and the confirmation, the
//! checkpoints (carrying the model guest's state, see [`super::host`]), acks and refusals.

use std::collections::HashMap;

use hsb_common::decision::Epoch;
use hsb_common::msg::Hello;

use super::net::{Ep, Msg, Net, StreamTag, DATA_RTO_NS, SYN_RTO_NS};

/// A segment of the replication connection.
#[derive(Debug, Clone)]
pub enum Seg {
    /// Connect.
    Syn,
    /// Accepted (by the kernel: the listen backlog).
    SynAck,
    /// The sender closed its end.
    Fin,
    /// The primary's Hello.
    Hello(Box<Hello>),
    /// The standby's Hello in answer: its node name, epoch and replica's last checkpoint.
    HelloBack {
        /// Its node name.
        node: String,
        /// Its epoch.
        epoch: u64,
        /// Its replica's last checkpoint.
        last_ckpt: u64,
    },
    /// The primary confirms its Hello under the session key.
    Confirm,
    /// The standby refuses the session.
    Refuse {
        /// Why.
        reason: String,
    },
    /// Part of a checkpoint crossing a shaped link (the receiver sees its bytes arrive).
    Part,
    /// A checkpoint: its number, whether it is a full synchronisation, and the guest's state
    /// (its history length) at the capture.
    Checkpoint {
        /// Number.
        ckpt: u64,
        /// Full synchronisation.
        full: bool,
        /// The model guest's state.
        state: u64,
    },
    /// The standby acknowledges `ckpt`.
    Ack {
        /// Number.
        ckpt: u64,
        /// Its epoch.
        epoch: Epoch,
    },
}

impl Seg {
    /// Its size on the wire, roughly (the receiver counts the bytes it reads).
    pub fn bytes(&self) -> u64 {
        match self {
            Seg::Syn | Seg::SynAck | Seg::Fin => 0,
            Seg::Part => 64 * 1024,
            Seg::Checkpoint { full: true, .. } => super::setup::PAGES * 4096,
            Seg::Checkpoint { .. } => 4096,
            _ => 128,
        }
    }
}

/// One end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct End {
    /// The host.
    pub host: u8,
    /// Its boot (a crash ends every connection of the boot).
    pub boot: u64,
    /// The process that owns it.
    pub proc: u64,
    /// Not closed by its process.
    pub open: bool,
}

/// A connection: the connecting end (0) and the accepting one (1).
#[derive(Debug, Clone)]
pub struct Conn {
    /// The ends (the accepting one once the connect arrived).
    pub ends: [Option<End>; 2],
}

/// Every connection.
#[derive(Debug, Default)]
pub struct Conns {
    map: HashMap<u64, Conn>,
    next: u64,
}

impl Conns {
    /// Start connecting from `client` to host `server`: the connect is sent.
    pub fn connect(&mut self, net: &mut Net, now: u64, client: End, server: u8) -> u64 {
        self.next += 1;
        let id = self.next;
        self.map.insert(
            id,
            Conn {
                ends: [Some(client), None],
            },
        );
        let tag = StreamTag {
            conn: id,
            dir: 0,
            rto_ns: SYN_RTO_NS,
        };
        let (from, to) = (Ep::Node(client.host), Ep::Node(server));
        net.send_stream(
            now,
            from,
            to,
            tag,
            Msg::Tcp {
                conn: id,
                seg: Seg::Syn,
            },
        );
        id
    }

    /// The connection `id`.
    pub fn get(&self, id: u64) -> Option<&Conn> {
        self.map.get(&id)
    }

    /// The connect of `id` arrived at `server`: its accepting end.
    pub fn accept(&mut self, id: u64, server: End) {
        if let Some(c) = self.map.get_mut(&id) {
            c.ends[1] = Some(server);
        }
    }

    /// Which side of `id` lives on `host` (0: the connecting one).
    pub fn side_on(&self, id: u64, host: u8) -> Option<usize> {
        let c = self.map.get(&id)?;
        (0..2).find(|&i| c.ends[i].is_some_and(|e| e.host == host))
    }

    /// Send `seg` from side `side` of `id` (if that end is open): when the sender's socket
    /// has handed all of it to the link (see [`Net::send_stream`]).
    pub fn send(&mut self, net: &mut Net, now: u64, id: u64, side: usize, seg: Seg) -> u64 {
        let Some(c) = self.map.get(&id) else {
            return now;
        };
        let (Some(me), Some(peer)) = (c.ends[side], c.ends[1 - side]) else {
            return now;
        };
        if !me.open {
            return now;
        }
        let tag = StreamTag {
            conn: id,
            dir: side as u8,
            rto_ns: DATA_RTO_NS,
        };
        net.send_stream(
            now,
            Ep::Node(me.host),
            Ep::Node(peer.host),
            tag,
            Msg::Tcp { conn: id, seg },
        )
    }

    /// Side `side` of `id` closes: a FIN follows what it sent.
    pub fn close(&mut self, net: &mut Net, now: u64, id: u64, side: usize) {
        let _ = self.send(net, now, id, side, Seg::Fin);
        self.gone(net, id, side);
    }

    /// Side `side` of `id` is gone without a word (a reset received, or its peer's FIN read);
    /// the connection is forgotten once neither end is open (a FIN still in flight then
    /// matters to nobody).
    pub fn gone(&mut self, net: &mut Net, id: u64, side: usize) {
        let Some(c) = self.map.get_mut(&id) else {
            return;
        };
        if let Some(e) = c.ends[side].as_mut() {
            e.open = false;
        }
        if c.ends.iter().all(|e| e.is_none_or(|e| !e.open)) {
            self.forget(net, id);
        }
    }

    /// Forget `id` entirely.
    pub fn forget(&mut self, net: &mut Net, id: u64) {
        self.map.remove(&id);
        net.forget(id);
    }

    /// Every connection with an open end owned by process `proc` of `host`.
    pub fn owned_by(&self, host: u8, proc: u64) -> Vec<(u64, usize)> {
        let mut v: Vec<(u64, usize)> = self
            .map
            .iter()
            .flat_map(|(&id, c)| {
                (0..2).filter_map(move |i| {
                    c.ends[i]
                        .filter(|e| e.host == host && e.proc == proc && e.open)
                        .map(|_| (id, i))
                })
            })
            .collect();
        v.sort_unstable();
        v
    }
}
