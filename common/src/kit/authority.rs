//! Carrying out what a primary's authority decided (DESIGN.md rules 3, 4, 5, 8), for hsb-primary
//! and for an activated hsb-standby alike: the input recorded, the witness traffic and the
//! evidence become [`Talk`], carried out as every node's is;
//! what touches the domain is handed back as [`Duty`]s for the node.

use std::net::SocketAddr;

use super::talk::Talk;
use crate::datagram::{Dest, Sender};
use crate::decision::primary::{Action, Input};
use crate::decision::record::AnyInput;
use crate::decision::{Actions, Epoch, Evidence, WitnessId};
use crate::msg::Role;
use crate::wire::Dgram;

/// What the daemon must do to its domain, in the order [`plan`] gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Duty {
    /// Hold output and stop the domain (rule 4).
    Fence,
    /// Resume the domain; output may leave again.
    Unfence,
    /// A newer epoch exists: stop for good (the domain stays stopped), become a standby.
    StepDown(Epoch),
    /// A switching standby waits for this primary's fence confirmation.
    ConfirmFenced {
        /// The standby's new epoch.
        epoch: Epoch,
        /// The last checkpoint sent.
        ckpt: u64,
    },
    /// Ask the new primary for a full synchronisation.
    RequestFullSync,
}

/// Witness `id` as a datagram destination.
pub fn witness(id: WitnessId) -> Dest {
    Dest::node(Sender {
        role: Role::Witness,
        id: u32::from(id),
    })
}

/// What the authority's step comes to: the input recorded, datagrams for the witnesses,
/// evidence to record and log, and duties for the daemon, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Said: the input to the decision log, a request or notice to a witness, a decision.
    Talk(Talk),
    /// For the daemon.
    Duty(Duty),
}

/// The authority's step on `input` (which gave `actions`) as [`Step`]s (pure): the input is
/// recorded unless it was a tick that changed nothing.
pub fn plan(
    input: Input,
    actions: Actions<Action>,
    witnesses: &[(WitnessId, SocketAddr)],
) -> Vec<Step> {
    let mut steps = Vec::new();
    if input != Input::Tick || !actions.is_empty() {
        steps.push(Step::Talk(Talk::Record(AnyInput::Primary(input))));
    }
    for a in actions {
        match a {
            Action::RequestLeases(r) => {
                log::debug!(
                    "asking the witnesses for a lease (request {}, last acked {})",
                    r.req,
                    r.last_acked
                );
                for &(id, to) in witnesses {
                    steps.push(Step::Talk(Talk::Send {
                        to,
                        dest: witness(id),
                        msg: Dgram::LeaseRequest(r),
                    }));
                }
            }
            Action::NotifyProtected(n) => {
                for &(id, to) in witnesses {
                    steps.push(Step::Talk(Talk::Send {
                        to,
                        dest: witness(id),
                        msg: Dgram::Protected(n),
                    }));
                }
            }
            Action::Fence { evidence } => {
                steps.push(decided(log::Level::Error, evidence));
                steps.push(Step::Duty(Duty::Fence));
            }
            Action::Unfence { evidence } => {
                steps.push(decided(log::Level::Warn, evidence));
                steps.push(Step::Duty(Duty::Unfence));
            }
            Action::StepDown { epoch, evidence } => {
                steps.push(decided(log::Level::Error, evidence));
                steps.push(Step::Duty(Duty::StepDown(epoch)));
            }
            Action::RequestFullSync => steps.push(Step::Duty(Duty::RequestFullSync)),
            Action::ConfirmFenced { epoch, ckpt } => {
                steps.push(Step::Duty(Duty::ConfirmFenced { epoch, ckpt }))
            }
            Action::Alert { evidence } => steps.push(decided(log::Level::Warn, evidence)),
        }
    }
    steps
}

/// A decision to log at `level` and record.
fn decided(level: log::Level, evidence: Box<Evidence>) -> Step {
    Step::Talk(Talk::Evidence { level, evidence })
}
