//! What every node says, the same way in hsb-primary and hsb-standby: datagrams to its peers,
//! its decisions and the inputs behind them to the decision log, and the epoch its datagrams
//! carry. A node returns these as one effect (`Effect::Talk`); the daemon carries them out here,
//! the simulator over its network, and the node case files show them.

use std::net::SocketAddr;

use mio::net::UdpSocket;

use super::decisions::Decisions;
use super::endpoint::Endpoint;
use crate::datagram::Dest;
use crate::decision::record::AnyInput;
use crate::decision::{Epoch, Evidence};
use crate::time::Nanos;
use crate::wire::Dgram;

/// A node's word to its peers and its decision log.
#[derive(Debug, Clone, PartialEq)]
pub enum Talk {
    /// Send a datagram.
    Send {
        /// Where.
        to: SocketAddr,
        /// For whom.
        dest: Dest,
        /// What.
        msg: Dgram,
    },
    /// A decision: log it at `level`, record it, keep it for status.
    Evidence {
        /// How loud.
        level: log::Level,
        /// What and why.
        evidence: Box<Evidence>,
    },
    /// Record an input of a decision core in the decision log.
    Record(AnyInput),
    /// Datagrams carry this epoch from now on.
    SetEpoch(Epoch),
}

impl Talk {
    /// A pong answering ping `nonce` from `from` (whoever `who` is): every daemon answers pings.
    pub fn pong(from: SocketAddr, who: crate::datagram::Sender, nonce: u64) -> Talk {
        Talk::Send {
            to: from,
            dest: Dest::node(who),
            msg: Dgram::Pong { nonce },
        }
    }

    /// Carry it out at `now`: send on `sock` through `ep`, log and record through `decisions`.
    pub fn carry_out(
        self,
        now: Nanos,
        ep: &mut Endpoint,
        sock: &UdpSocket,
        decisions: &mut Decisions,
    ) {
        match self {
            Talk::Send { to, dest, msg } => ep.send(sock, &msg, to, Some(dest)),
            Talk::Evidence { level, evidence } => {
                decisions.evidence(level, &evidence);
            }
            Talk::Record(input) => decisions.input(now, input),
            Talk::SetEpoch(epoch) => ep.set_epoch(epoch.0),
        }
    }
}
