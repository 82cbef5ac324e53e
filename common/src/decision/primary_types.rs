//! The primary authority's vocabulary: its [`Input`]s, the [`Action`]s it asks of the daemon
//! and the [`Mode`] of its authority.

use super::*;

/// An input to the primary authority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// Checkpoint `ckpt` was sent to the standby now.
    CheckpointSent {
        /// Checkpoint number.
        ckpt: u64,
    },
    /// The standby acknowledged `ckpt`.
    Ack {
        /// Checkpoint number.
        ckpt: u64,
        /// The standby's epoch.
        epoch: Epoch,
    },
    /// A witness answered a lease request.
    LeaseReply(LeaseReply),
    /// A message carried a higher epoch.
    HigherEpoch {
        /// That epoch.
        epoch: Epoch,
    },
    /// The standby switches over to `epoch` and asks this primary to fence first (rule 6).
    FenceRequest {
        /// The epoch the standby starts.
        epoch: Epoch,
    },
    /// The standby's heartbeat reply: it is there and may acknowledge (it sends them every
    /// heartbeat interval while it may).
    StandbyAlive {
        /// The standby's epoch.
        epoch: Epoch,
        /// Its replica's applied checkpoint (`None`: it has no replica, e.g. it restarted).
        applied: Option<u64>,
        /// How much it has heard from this primary so far (heartbeats and replication bytes):
        /// a count that moves means it still hears us, however slowly.
        heard: u64,
        /// Of these, the replication bytes of its current session (a stream that moves).
        stream: u64,
    },
    /// Time passed.
    Tick,
}

/// What the primary daemon must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this lease request to every witness.
    RequestLeases(LeaseRequest),
    /// Send this to every witness: the replica is current again.
    NotifyProtected(ProtectedNotice),
    /// Hold output and pause the domain (rule 4).
    Fence {
        /// Why.
        evidence: Box<Evidence>,
    },
    /// Resume the domain; output may leave again under the authority regained.
    Unfence {
        /// Why.
        evidence: Box<Evidence>,
    },
    /// Stop being primary for good (the domain stays paused); become a standby of `epoch`.
    StepDown {
        /// The newer epoch.
        epoch: Epoch,
        /// Why.
        evidence: Box<Evidence>,
    },
    /// Ask the new primary for a full synchronisation.
    RequestFullSync,
    /// Tell the switching standby that this primary is fenced, last checkpoint sent `ckpt`.
    ConfirmFenced {
        /// The standby's new epoch.
        epoch: Epoch,
        /// Last checkpoint sent.
        ckpt: u64,
    },
    /// Tell the operator (e.g. running unprotected).
    Alert {
        /// What and why.
        evidence: Box<Evidence>,
    },
}

/// The primary's authority at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Release output of acknowledged checkpoints.
    Protected,
    /// Protected, degraded: acks come later than the ack lease but the standby is there;
    /// output of acknowledged checkpoints only, as the acks arrive.
    Degraded,
    /// Release output without acks (lease quorum, or a baseline policy).
    Unprotected,
    /// No authority: output held, domain running.
    Holding,
    /// No authority: output held, domain paused.
    Fenced,
    /// A newer epoch exists: never again.
    SteppedDown,
}

impl Mode {
    /// The text form.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Protected => "protected",
            Mode::Degraded => "protected-degraded",
            Mode::Unprotected => "unprotected",
            Mode::Holding => "holding",
            Mode::Fenced => "fenced",
            Mode::SteppedDown => "stepped-down",
        }
    }
}

impl Action {
    /// The evidence, for decisions that carry one.
    pub fn evidence(&self) -> Option<&Evidence> {
        match self {
            Action::Fence { evidence }
            | Action::Unfence { evidence }
            | Action::StepDown { evidence, .. }
            | Action::Alert { evidence } => Some(evidence),
            _ => None,
        }
    }
}
