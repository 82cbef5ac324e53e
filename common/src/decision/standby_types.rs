//! The standby core's vocabulary: its [`Input`]s, the [`Action`]s it asks of the daemon, the
//! [`OperatorAsk`]s of rule 9 and the [`State`] it is in.

use super::*;

/// An input to the standby core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// A heartbeat from the primary on `link`.
    Heartbeat {
        /// Link index.
        link: u8,
        /// The primary's epoch.
        epoch: Epoch,
    },
    /// A witness's periodic report.
    Report(WitnessReport),
    /// A witness's vote.
    Vote(Vote),
    /// The replica applied checkpoint `ckpt` (complete and verified) of `epoch`.
    ReplicaApplied {
        /// Checkpoint number.
        ckpt: u64,
        /// The primary's epoch.
        epoch: Epoch,
    },
    /// The ping node answered (`ok`) or not (ping-node baseline).
    Ping {
        /// Whether it answered.
        ok: bool,
    },
    /// The operator forces activation of a stale replica (rule 5).
    OperatorForce,
    /// The operator asks for this standby to become active (rule 9): through the witnesses,
    /// unless `force` (the operator says the primary is stopped).
    Operator {
        /// Activation, or a planned switchover.
        ask: OperatorAsk,
        /// Activate without the witnesses (and whatever the replica's staleness).
        force: bool,
    },
    /// The operator pauses (`on`) or resumes automatic takeovers (maintenance mode).
    Maintenance {
        /// Paused.
        on: bool,
    },
    /// A message carried a higher epoch.
    HigherEpoch {
        /// That epoch.
        epoch: Epoch,
    },
    /// The primary confirmed it fenced itself for the switchover to `epoch`.
    PrimaryFenced {
        /// The switchover's epoch.
        epoch: Epoch,
        /// The primary's last checkpoint sent.
        ckpt: u64,
    },
    /// A full synchronisation from the primary of `epoch` completed at `ckpt`.
    Resynced {
        /// The primary's epoch.
        epoch: Epoch,
        /// Checkpoint number.
        ckpt: u64,
    },
    /// Replication bytes arrived (the daemon says so while the primary is suspected, at most
    /// once per heartbeat interval): a slow link's stream still gets through.
    StreamProgress,
    /// Time passed.
    Tick,
}

/// What the operator asks for (rule 9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorAsk {
    /// `hsb-standby activate`: serve from the replica now. The witnesses vote (a quorum learns
    /// the new epoch, so the old primary cannot renew its leases); the primary is asked to
    /// fence, and if it does not answer its ack authority is waited out.
    Activate,
    /// `hsb-standby switchover`: planned. As `Activate`, but the primary must confirm its fence
    /// after a final checkpoint, which the standby applies before it activates (nothing the
    /// primary processed is lost); without the primary's confirmation nothing happens.
    Switchover,
}

impl OperatorAsk {
    /// The text form.
    pub fn name(self) -> &'static str {
        match self {
            OperatorAsk::Activate => "activate",
            OperatorAsk::Switchover => "switchover",
        }
    }

    /// From the text form.
    pub fn parse(s: &str) -> Option<OperatorAsk> {
        match s {
            "activate" => Some(OperatorAsk::Activate),
            "switchover" => Some(OperatorAsk::Switchover),
            _ => None,
        }
    }

    pub(super) fn rule(self) -> Rule {
        match self {
            OperatorAsk::Activate => Rule::OperatorActivate,
            OperatorAsk::Switchover => Rule::OperatorSwitchover,
        }
    }
}

/// What the standby daemon must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send ack(`ckpt`) to the primary (the core withholds acks once it is deciding to activate).
    Ack {
        /// Checkpoint number.
        ckpt: u64,
        /// The standby's epoch.
        epoch: Epoch,
    },
    /// Send this vote request to every witness.
    QueryWitnesses(VoteRequest),
    /// Send this to every witness: the votes of that query will not be used.
    Withdraw(Withdraw),
    /// Ping the configured ping node and report with [`Input::Ping`].
    PingNode,
    /// Activate the replica in `epoch`; continue as a primary holding `leases`.
    Activate {
        /// The new epoch.
        epoch: Epoch,
        /// The votes, as leases (empty under the baselines).
        leases: Box<LeaseSet>,
        /// Why.
        evidence: Box<Evidence>,
    },
    /// Rule 6: send `FenceRequest(epoch)` to the primary; `Activate` follows when it confirms or its
    /// ack authority has run out.
    Switchover {
        /// The new epoch.
        epoch: Epoch,
        /// Why.
        evidence: Box<Evidence>,
    },
    /// Not enough information to act (alert).
    CannotDecide {
        /// Why.
        evidence: Box<Evidence>,
    },
    /// The replica is stale; not activated (alert; the operator may force).
    RefuseStale {
        /// Why.
        evidence: Box<Evidence>,
    },
    /// Tell the operator.
    Alert {
        /// What and why.
        evidence: Box<Evidence>,
    },
    /// A newer epoch exists: drop the replica.
    StepDown {
        /// The newer epoch.
        epoch: Epoch,
        /// Why.
        evidence: Box<Evidence>,
    },
    /// Ask the primary for a full synchronisation.
    RequestFullSync,
}

impl Action {
    /// The evidence, for decisions that carry one.
    pub fn evidence(&self) -> Option<&Evidence> {
        match self {
            Action::Activate { evidence, .. }
            | Action::Switchover { evidence, .. }
            | Action::CannotDecide { evidence }
            | Action::RefuseStale { evidence }
            | Action::Alert { evidence }
            | Action::StepDown { evidence, .. } => Some(evidence),
            _ => None,
        }
    }
}

/// Where the standby is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No complete replica: nothing to activate.
    Unsynced,
    /// Replicating; the primary is trusted.
    Following,
    /// The heartbeat is lost: asking the witnesses (or the ping node).
    Deciding,
    /// A quorum voted; waiting for the primary's ack authority to run out.
    Waiting,
    /// Switchover decided; waiting for the primary to fence (or its ack authority to run out).
    SwitchingOver,
    /// A quorum voted but the replica is stale: refused (rule 5).
    RefusedStale,
    /// Activated: the core is done.
    Activated,
    /// A higher epoch exists: waiting for a full synchronisation.
    SteppedDown,
}

impl State {
    /// The text form.
    pub fn name(self) -> &'static str {
        match self {
            State::Unsynced => "unsynced",
            State::Following => "following",
            State::Deciding => "deciding",
            State::Waiting => "waiting",
            State::SwitchingOver => "switching-over",
            State::RefusedStale => "refused-stale",
            State::Activated => "activated",
            State::SteppedDown => "stepped-down",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
