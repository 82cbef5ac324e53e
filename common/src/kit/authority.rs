//! Carrying out what a primary's authority decided (DESIGN.md rules 3, 4, 5, 8), for hsb-primary
//! and for an activated hsb-standby alike: the witness traffic and the evidence are done here;
//! what touches the domain is handed back as [`Duty`]s for the daemon.

use std::net::SocketAddr;

use mio::net::UdpSocket;

use super::decisions::Decisions;
use super::endpoint::Endpoint;
use crate::datagram::{Dest, Sender};
use crate::decision::primary::Action;
use crate::decision::{Actions, Epoch, Evidence, WitnessId, MAX_ACTIONS};
use crate::msg::Role;
use crate::wire::Dgram;

/// What the daemon must do to its domain after [`carry_out`].
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

/// What the authority's actions come to: datagrams for the witnesses, evidence to record and
/// log, and duties for the daemon, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send `msg` to the witness at `to`.
    Send {
        /// The witness's address.
        to: SocketAddr,
        /// The witness.
        dest: Dest,
        /// The request or notice.
        msg: Dgram,
    },
    /// A decision: log it at `level` and record it (rule 7).
    Evidence {
        /// How loud.
        level: log::Level,
        /// What and why.
        evidence: Box<Evidence>,
    },
    /// For the daemon.
    Duty(Duty),
}

/// The authority's actions as [`Step`]s (pure).
pub fn plan(actions: Actions<Action>, witnesses: &[(WitnessId, SocketAddr)]) -> Vec<Step> {
    let mut steps = Vec::new();
    for a in actions {
        match a {
            Action::RequestLeases(r) => {
                log::debug!(
                    "asking the witnesses for a lease (request {}, last acked {})",
                    r.req,
                    r.last_acked
                );
                for &(id, to) in witnesses {
                    steps.push(Step::Send {
                        to,
                        dest: witness(id),
                        msg: Dgram::LeaseRequest(r),
                    });
                }
            }
            Action::NotifyProtected(n) => {
                for &(id, to) in witnesses {
                    steps.push(Step::Send {
                        to,
                        dest: witness(id),
                        msg: Dgram::Protected(n),
                    });
                }
            }
            Action::Fence { evidence } => {
                steps.push(Step::Evidence {
                    level: log::Level::Error,
                    evidence,
                });
                steps.push(Step::Duty(Duty::Fence));
            }
            Action::Unfence { evidence } => {
                steps.push(Step::Evidence {
                    level: log::Level::Warn,
                    evidence,
                });
                steps.push(Step::Duty(Duty::Unfence));
            }
            Action::StepDown { epoch, evidence } => {
                steps.push(Step::Evidence {
                    level: log::Level::Error,
                    evidence,
                });
                steps.push(Step::Duty(Duty::StepDown(epoch)));
            }
            Action::RequestFullSync => steps.push(Step::Duty(Duty::RequestFullSync)),
            Action::ConfirmFenced { epoch, ckpt } => {
                steps.push(Step::Duty(Duty::ConfirmFenced { epoch, ckpt }))
            }
            Action::Alert { evidence } => steps.push(Step::Evidence {
                level: log::Level::Warn,
                evidence,
            }),
        }
    }
    steps
}

/// Carry out [`plan`] at once for a daemon that owns its endpoint and decision log (an activated
/// standby): witness traffic sent, evidence logged and recorded, duties handed back in order.
pub fn carry_out(
    actions: Actions<Action>,
    ep: &mut Endpoint,
    sock: &UdpSocket,
    witnesses: &[(WitnessId, SocketAddr)],
    decisions: &mut Decisions,
) -> heapless::Vec<Duty, MAX_ACTIONS> {
    let mut duties = heapless::Vec::new();
    for step in plan(actions, witnesses) {
        match step {
            Step::Send { to, dest, msg } => ep.send(sock, &msg, to, Some(dest)),
            Step::Evidence { level, evidence } => {
                decisions.evidence(level, &evidence);
            }
            Step::Duty(d) => {
                if let Duty::StepDown(e) = d {
                    ep.set_epoch(e.0);
                }
                // At most one duty per action: the bound is the actions'.
                let _ = duties.push(d);
            }
        }
    }
    duties
}
