//! Datagram messages of the failover protocol (heartbeats, witness traffic), carried by
//! [`crate::datagram`] under [`Kind::Heartbeat`] and [`Kind::Witness`].

use serde::{Deserialize, Serialize};

use crate::datagram::{
    self, DatagramError, Dest, Envelope, Inbox, Outbox, SealError, MAX_DATAGRAM,
};
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
    /// Standby → primary and witnesses: automatic takeovers are paused by the operator (sent
    /// every second while on, once when off); receivers show it in their status.
    Maintenance {
        /// Paused.
        on: bool,
    },
    /// Standby → primary, on every heartbeat link every heartbeat interval while it may
    /// acknowledge (the heartbeat reply): it is there, and how much it still hears.
    StandbyAlive {
        /// The standby's epoch (that of the primary it replicates).
        epoch: Epoch,
        /// Its replica's applied checkpoint (`None`: no replica yet).
        applied: Option<u64>,
        /// Heartbeats and replication bytes heard from the primary so far (moves while it
        /// hears the primary, however slowly).
        heard: u64,
        /// Of these, the replication bytes of the current session.
        stream: u64,
    },
}

impl Dgram {
    /// The frame kind a message travels under.
    pub fn kind(&self) -> Kind {
        match self {
            Dgram::Heartbeat { .. } | Dgram::StandbyAlive { .. } => Kind::Heartbeat,
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
            Dgram::Maintenance { .. } => "maintenance",
            Dgram::StandbyAlive { .. } => "standby-alive",
        }
    }
}

/// Seal a message for `to` into `buf`; returns the datagram length. Only a ping may go
/// unaddressed (`to: None`): the pinger may not know who answers at an address yet.
pub fn seal(
    out: &mut Outbox,
    m: &Dgram,
    to: Option<Dest>,
    buf: &mut [u8; MAX_DATAGRAM],
) -> Result<usize, SealError> {
    debug_assert!(to.is_some() || matches!(m, Dgram::Ping { .. }));
    out.seal(m.kind(), m, to, buf)
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
    if env.to.is_none() && !matches!(m, Dgram::Ping { .. }) {
        return Err(DatagramError::Misaddressed);
    }
    Ok((env, m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datagram::Sender;
    use crate::key::ClusterKey;
    use crate::msg::Role;

    const P: Sender = Sender {
        role: Role::Primary,
        id: 0,
    };
    const S: Sender = Sender {
        role: Role::Standby,
        id: 1,
    };

    #[test]
    fn heartbeat_round_trip_and_kind_mismatch() {
        let k = ClusterKey::from_bytes([4; 32]);
        let mut out = Outbox::new(&k, P, 1, 3);
        let mut inbox = Inbox::new(&k, S);
        let mut b = [0u8; MAX_DATAGRAM];
        let to = Some(Dest::node(S));
        let n = seal(
            &mut out,
            &Dgram::Heartbeat { link: 1, acked: 9 },
            to,
            &mut b,
        )
        .unwrap();
        let (env, m) = open(&mut inbox, &b[..n]).unwrap();
        assert_eq!(env.epoch, 3);
        assert_eq!(m, Dgram::Heartbeat { link: 1, acked: 9 });
        let n = out
            .seal(
                Kind::Witness,
                &Dgram::Heartbeat { link: 1, acked: 10 },
                to,
                &mut b,
            )
            .unwrap();
        assert!(open(&mut inbox, &b[..n]).is_err());
    }

    #[test]
    fn standby_alive_round_trip() {
        let k = ClusterKey::from_bytes([4; 32]);
        let mut out = Outbox::new(&k, S, 1, 2);
        let mut inbox = Inbox::new(&k, P);
        let mut b = [0u8; MAX_DATAGRAM];
        let m = Dgram::StandbyAlive {
            epoch: Epoch(2),
            applied: Some(41),
            heard: u64::MAX,
            stream: 7,
        };
        let n = seal(&mut out, &m, Some(Dest::node(P)), &mut b).unwrap();
        let (env, got) = open(&mut inbox, &b[..n]).unwrap();
        assert_eq!((env.from, got), (S, m));
        assert_eq!(m.kind(), Kind::Heartbeat);
    }

    /// Only a ping may go unaddressed: anything else without a destination is dropped.
    #[test]
    fn only_pings_go_unaddressed() {
        let k = ClusterKey::from_bytes([4; 32]);
        let mut out = Outbox::new(&k, P, 1, 3);
        let mut inbox = Inbox::new(&k, S);
        let mut b = [0u8; MAX_DATAGRAM];
        let n = seal(&mut out, &Dgram::Ping { nonce: 7 }, None, &mut b).unwrap();
        assert_eq!(
            open(&mut inbox, &b[..n]).unwrap().1,
            Dgram::Ping { nonce: 7 }
        );
        let n = out
            .seal(
                Kind::Heartbeat,
                &Dgram::Heartbeat { link: 0, acked: 1 },
                None,
                &mut b,
            )
            .unwrap();
        assert_eq!(
            open(&mut inbox, &b[..n]).unwrap_err(),
            DatagramError::Misaddressed
        );
    }
}
