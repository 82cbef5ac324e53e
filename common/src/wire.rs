//! Datagram messages of the failover protocol (heartbeats, witness traffic), carried by
//! [`crate::datagram`] under [`Kind::Heartbeat`] and [`Kind::Witness`].

use serde::{Deserialize, Serialize};

use crate::datagram::{self, Envelope, Inbox, Outbox, MAX_DATAGRAM};
use crate::decision::proto::{
    LeaseReply, LeaseRequest, ProtectedNotice, Vote, VoteRequest, Withdraw, WitnessReport,
};
use crate::decision::Epoch;
use crate::frame::{FrameError, Kind};

/// Every failover datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Dgram {
    /// Primary → standby, on every heartbeat link, every heartbeat interval.
    Heartbeat {
        /// Link index.
        link: u8,
        /// Last checkpoint acknowledged by the standby.
        acked: u64,
    },
    /// Witness → daemon: are you there (the witness's host probe)?
    Ping {
        /// Echoed in the pong.
        nonce: u64,
    },
    /// Daemon → witness: answer to a ping.
    Pong {
        /// The ping's nonce.
        nonce: u64,
    },
    /// Witness → standby and primary: what the witness sees.
    Report(WitnessReport),
    /// Standby → witnesses.
    VoteRequest(VoteRequest),
    /// Witness → standby.
    Vote(Vote),
    /// Standby → witnesses.
    Withdraw(Withdraw),
    /// Primary → witnesses.
    LeaseRequest(LeaseRequest),
    /// Witness → primary.
    LeaseReply(LeaseReply),
    /// Primary → witnesses.
    Protected(ProtectedNotice),
    /// Standby → primary: fence for a switchover to `epoch` (rule 6).
    FenceRequest {
        /// The switchover's epoch.
        epoch: Epoch,
    },
    /// Primary → standby: fenced; last checkpoint sent.
    Fenced {
        /// The switchover's epoch.
        epoch: Epoch,
        /// Last checkpoint sent.
        ckpt: u64,
    },
}

impl Dgram {
    /// The frame kind a message travels under.
    pub fn kind(&self) -> Kind {
        match self {
            Dgram::Heartbeat { .. } => Kind::Heartbeat,
            _ => Kind::Witness,
        }
    }

    /// A short name for counters and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Dgram::Heartbeat { .. } => "heartbeat",
            Dgram::Ping { .. } => "ping",
            Dgram::Pong { .. } => "pong",
            Dgram::Report(_) => "report",
            Dgram::VoteRequest(_) => "vote-request",
            Dgram::Vote(_) => "vote",
            Dgram::Withdraw(_) => "withdraw",
            Dgram::LeaseRequest(_) => "lease-request",
            Dgram::LeaseReply(_) => "lease-reply",
            Dgram::Protected(_) => "protected",
            Dgram::FenceRequest { .. } => "fence-request",
            Dgram::Fenced { .. } => "fenced",
        }
    }
}

/// Seal a message into `buf`; returns the datagram length.
pub fn seal(
    out: &mut Outbox,
    m: &Dgram,
    buf: &mut [u8; MAX_DATAGRAM],
) -> Result<usize, postcard::Error> {
    out.seal(m.kind(), m, buf)
}

/// Verify and decode a received datagram.
pub fn open(inbox: &mut Inbox, bytes: &[u8]) -> Result<(Envelope, Dgram), datagram::DatagramError> {
    let (kind, env, rest) = inbox.open(bytes)?;
    let m: Dgram = datagram::decode(kind, rest)?;
    if m.kind() != kind {
        return Err(FrameError::Body {
            kind,
            why: "message does not match its frame kind",
        }
        .into());
    }
    Ok((env, m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datagram::Sender;
    use crate::key::ClusterKey;
    use crate::msg::Role;

    #[test]
    fn heartbeat_round_trip_and_kind_mismatch() {
        let k = ClusterKey::from_bytes([4; 32]);
        let mut out = Outbox::new(
            &k,
            Sender {
                role: Role::Primary,
                id: 0,
            },
            [1; 8],
            3,
        );
        let mut inbox = Inbox::new(&k);
        let mut b = [0u8; MAX_DATAGRAM];
        let n = seal(&mut out, &Dgram::Heartbeat { link: 1, acked: 9 }, &mut b).unwrap();
        let (env, m) = open(&mut inbox, &b[..n]).unwrap();
        assert_eq!(env.epoch, 3);
        assert_eq!(m, Dgram::Heartbeat { link: 1, acked: 9 });
        let n = out
            .seal(
                Kind::Witness,
                &Dgram::Heartbeat { link: 1, acked: 10 },
                &mut b,
            )
            .unwrap();
        assert!(open(&mut inbox, &b[..n]).is_err());
    }
}
