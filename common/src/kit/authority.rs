//! Carrying out what a primary's authority decided (DESIGN.md rules 3, 4, 5, 8), for hsb-primary
//! and for an activated hsb-standby alike: the witness traffic and the evidence are done here;
//! what touches the domain is handed back as [`Duty`]s for the daemon.

use std::net::SocketAddr;

use mio::net::UdpSocket;

use super::decisions::Decisions;
use super::endpoint::Endpoint;
use crate::datagram::{Dest, Sender};
use crate::decision::primary::Action;
use crate::decision::{Actions, Epoch, WitnessId, MAX_ACTIONS};
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

/// Send the authority's witness traffic, log and record its evidence, and return what is left
/// for the daemon, in order.
pub fn carry_out(
    actions: Actions<Action>,
    ep: &mut Endpoint,
    sock: &UdpSocket,
    witnesses: &[(WitnessId, SocketAddr)],
    decisions: &mut Decisions,
) -> heapless::Vec<Duty, MAX_ACTIONS> {
    let mut duties = heapless::Vec::new();
    for a in actions {
        let duty = match a {
            Action::RequestLeases(r) => {
                log::debug!(
                    "asking the witnesses for a lease (request {}, last acked {})",
                    r.req,
                    r.last_acked
                );
                for &(id, addr) in witnesses {
                    ep.send(sock, &Dgram::LeaseRequest(r), addr, Some(witness(id)));
                }
                None
            }
            Action::NotifyProtected(n) => {
                for &(id, addr) in witnesses {
                    ep.send(sock, &Dgram::Protected(n), addr, Some(witness(id)));
                }
                None
            }
            Action::Fence { evidence } => {
                decisions.evidence(log::Level::Error, &evidence);
                Some(Duty::Fence)
            }
            Action::Unfence { evidence } => {
                decisions.evidence(log::Level::Warn, &evidence);
                Some(Duty::Unfence)
            }
            Action::StepDown { epoch, evidence } => {
                decisions.evidence(log::Level::Error, &evidence);
                ep.set_epoch(epoch.0);
                Some(Duty::StepDown(epoch))
            }
            Action::RequestFullSync => Some(Duty::RequestFullSync),
            Action::ConfirmFenced { epoch, ckpt } => Some(Duty::ConfirmFenced { epoch, ckpt }),
            Action::Alert { evidence } => {
                decisions.evidence(log::Level::Warn, &evidence);
                None
            }
        };
        if let Some(d) = duty {
            // At most one duty per action: the bound is the actions'.
            let _ = duties.push(d);
        }
    }
    duties
}
