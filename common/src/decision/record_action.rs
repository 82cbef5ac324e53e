//! The canonical text form of the cores' actions (their `Display`), which case files and the
//! replay tool compare: `activate epoch=2 rule=rule1:quorum-no-answer grants=2/3`.

use super::*;
use crate::decision::evidence::{ActionKind, Evidence};

fn grants_of(e: &Evidence) -> String {
    format!("{}/{}", e.grants, e.configured)
}

impl fmt::Display for standby::Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use standby::Action as A;
        match self {
            A::Ack { ckpt, epoch } => write!(f, "ack ckpt={ckpt} epoch={epoch}"),
            A::QueryWitnesses(r) => write!(
                f,
                "query kind={} query={} epoch={}",
                r.kind, r.query, r.epoch
            ),
            A::Withdraw(w) => write!(f, "withdraw query={} epoch={}", w.query, w.epoch),
            A::PingNode => write!(f, "ping-node"),
            A::Activate {
                epoch, evidence, ..
            } => {
                write!(
                    f,
                    "activate epoch={epoch} rule={} grants={}",
                    evidence.rule,
                    grants_of(evidence)
                )?;
                if evidence.forced {
                    write!(f, " forced=true")?;
                }
                Ok(())
            }
            A::Switchover { epoch, evidence } => write!(
                f,
                "switchover epoch={epoch} rule={} grants={}",
                evidence.rule,
                grants_of(evidence)
            ),
            A::CannotDecide { evidence } => write!(
                f,
                "cannot-decide rule={} answers={}",
                evidence.rule, evidence.answers
            ),
            A::RefuseStale { evidence } => write!(
                f,
                "refuse-stale rule={} grants={}",
                evidence.rule,
                grants_of(evidence)
            ),
            A::Alert { evidence } => {
                write!(f, "alert rule={}", evidence.rule)?;
                if evidence.action != ActionKind::Stay {
                    write!(f, " action={}", evidence.action)?;
                }
                Ok(())
            }
            A::StepDown { epoch, evidence } => {
                write!(f, "step-down epoch={epoch} rule={}", evidence.rule)
            }
            A::RequestFullSync => write!(f, "request-full-sync"),
        }
    }
}

impl fmt::Display for primary::Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use primary::Action as A;
        match self {
            A::RequestLeases(r) => write!(
                f,
                "request-leases req={} epoch={} last-acked={} last-sent={}",
                r.req, r.epoch, r.last_acked, r.last_sent
            ),
            A::NotifyProtected(n) => {
                write!(f, "notify-protected epoch={} acked={}", n.epoch, n.acked)
            }
            A::Fence { evidence } => write!(f, "fence rule={}", evidence.rule),
            A::Unfence { evidence } => write!(f, "unfence rule={}", evidence.rule),
            A::StepDown { epoch, evidence } => {
                write!(f, "step-down epoch={epoch} rule={}", evidence.rule)
            }
            A::RequestFullSync => write!(f, "request-full-sync"),
            A::ConfirmFenced { epoch, ckpt } => {
                write!(f, "confirm-fenced epoch={epoch} ckpt={ckpt}")
            }
            A::Alert { evidence } => {
                write!(f, "alert rule={}", evidence.rule)?;
                if evidence.action != ActionKind::Stay {
                    write!(f, " action={}", evidence.action)?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for witness::Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            witness::Action::Vote(v) => {
                write!(
                    f,
                    "vote query={} verdict={} epoch={} app={}",
                    v.query, v.verdict, v.epoch, v.view.app
                )?;
                if v.verdict.granted() {
                    write!(f, " duration={}", format_duration(v.duration))?;
                }
                if let Some(n) = v.unprotected_after {
                    write!(f, " unprotected-after={n}")?;
                }
                Ok(())
            }
            witness::Action::LeaseReply(r) => {
                write!(
                    f,
                    "lease-reply req={} verdict={} epoch={}",
                    r.req, r.verdict, r.epoch
                )?;
                if r.verdict.granted() {
                    write!(f, " duration={}", format_duration(r.duration))?;
                }
                Ok(())
            }
        }
    }
}
