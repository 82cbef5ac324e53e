//! Messages between the decision cores (serde, to travel as postcard bodies in authenticated frames),
//! and the small vocabularies they use, each with a text form for logs, records and case files.
//!
//! Times never travel: only durations. Each receiver measures intervals on its own monotonic clock.

use core::fmt;
use core::time::Duration;

use serde::{Deserialize, Serialize};

use super::{format_duration, parse_duration, Epoch, QueryId, WitnessId};

words! {
    /// What a probe of the application (or a daemon) got, as a client would see it.
    #[derive(Serialize, Deserialize)]
    ProbeClass {
        /// The expected answer in time.
        Ok => "ok",
        /// Connection refused.
        Refused => "refused",
        /// No answer in time.
        Timeout => "timeout",
        /// An answer, but a wrong one (error status, bad content).
        AppError => "app-error",
    }
}

words! {
    /// What a witness probes.
    #[derive(Serialize, Deserialize)]
    ProbeTarget {
        /// The protected application, the way clients use it.
        PrimaryApp => "primary-app",
        /// The hsb-primary daemon (its witness endpoint).
        PrimaryHost => "primary-host",
        /// The hsb-standby daemon (its witness endpoint).
        StandbyHost => "standby-host",
    }
}

words! {
    /// A witness's summary of the primary's application.
    #[derive(Serialize, Deserialize)]
    AppVerdict {
        /// No probe result yet.
        Unknown => "unknown",
        /// Answering.
        Up => "up",
        /// Failing, but not long enough to call it down.
        Failing => "failing",
        /// Not answering, and the primary daemon does not answer either: host or path failure.
        Down => "down",
        /// Not answering while the primary daemon answers: the guest itself failed, and the replica
        /// is the same guest, so failing over would not help (F5).
        GuestFailure => "guest-failure",
        /// Answering only a fraction of probes over a lossy path to its host (the primary daemon
        /// does not answer every ping either), while the standby's host answers cleanly: a gray
        /// path, and a switchover candidate (rule 6). Not a reason to take over.
        Lossy => "lossy",
    }
}

words! {
    /// What a standby asks the witnesses to vote for.
    #[derive(Serialize, Deserialize)]
    VoteKind {
        /// Heartbeat lost: activate the replica (rule 1).
        Takeover => "takeover",
        /// Heartbeat fine but clients cannot reach the primary: coordinated switchover (rule 6).
        Switchover => "switchover",
        /// The operator asked for the standby to become active (rule 9): granted whatever the
        /// probes say, under the same lease and promise rules, so a quorum learns the new
        /// epoch before the replica serves and stops leasing to the old one.
        Operator => "operator",
    }
}

/// Why a witness refused a vote or a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefuseReason {
    /// Its probes say the primary's application answers (rule 1).
    PrimaryAnswers,
    /// The application is failing but not yet long enough; ask again after this.
    NotYet(Duration),
    /// The guest itself failed (application silent, primary daemon answers): no failover (F5).
    GuestFailure,
    /// This witness cannot reach the standby's daemon, so it votes for no move to it: neither a
    /// switchover (rule 6) nor a takeover (rule 1: a witness that hears neither daemon knows
    /// more of its own paths than of the primary).
    StandbyUnreachable,
    /// It granted to another epoch; free again after this (rule 3).
    LeaseActive(Duration),
    /// It restarted recently and waits out the longest lease; free after this.
    Restarting(Duration),
    /// The request's epoch is older than this one (rule 8).
    StaleEpoch(Epoch),
    /// It voted for a takeover to this epoch and leases nothing older.
    Promised(Epoch),
    /// No probe results yet.
    NoData,
}

impl fmt::Display for RefuseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefuseReason::PrimaryAnswers => f.write_str("primary-answers"),
            RefuseReason::NotYet(d) => write!(f, "not-yet:{}", format_duration(*d)),
            RefuseReason::GuestFailure => f.write_str("guest-failure"),
            RefuseReason::StandbyUnreachable => f.write_str("standby-unreachable"),
            RefuseReason::LeaseActive(d) => write!(f, "lease-active:{}", format_duration(*d)),
            RefuseReason::Restarting(d) => write!(f, "restarting:{}", format_duration(*d)),
            RefuseReason::StaleEpoch(e) => write!(f, "stale-epoch:{e}"),
            RefuseReason::Promised(e) => write!(f, "promised:{e}"),
            RefuseReason::NoData => f.write_str("no-data"),
        }
    }
}

impl RefuseReason {
    /// From the text form (`not-yet:20ms`, `stale-epoch:3`, ...).
    pub fn parse(s: &str) -> Option<RefuseReason> {
        let (word, arg) = match s.split_once(':') {
            Some((w, a)) => (w, Some(a)),
            None => (s, None),
        };
        let dur = || arg.and_then(parse_duration);
        let epoch = || arg.and_then(|a| a.parse().ok()).map(Epoch);
        Some(match word {
            "primary-answers" if arg.is_none() => RefuseReason::PrimaryAnswers,
            "not-yet" => RefuseReason::NotYet(dur()?),
            "guest-failure" if arg.is_none() => RefuseReason::GuestFailure,
            "standby-unreachable" if arg.is_none() => RefuseReason::StandbyUnreachable,
            "lease-active" => RefuseReason::LeaseActive(dur()?),
            "restarting" => RefuseReason::Restarting(dur()?),
            "stale-epoch" => RefuseReason::StaleEpoch(epoch()?),
            "promised" => RefuseReason::Promised(epoch()?),
            "no-data" if arg.is_none() => RefuseReason::NoData,
            _ => return None,
        })
    }

    /// When asking again could get another answer, if the reason says so.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RefuseReason::NotYet(d)
            | RefuseReason::LeaseActive(d)
            | RefuseReason::Restarting(d) => Some(*d),
            _ => None,
        }
    }
}

/// A witness's answer to a vote or lease request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// Granted (for the duration in the reply).
    Grant,
    /// Refused, with the reason.
    Refuse(RefuseReason),
}

impl Verdict {
    /// Whether granted.
    pub fn granted(&self) -> bool {
        matches!(self, Verdict::Grant)
    }

    /// From the text form: `grant` or `refuse:<reason>`.
    pub fn parse(s: &str) -> Option<Verdict> {
        if s == "grant" {
            return Some(Verdict::Grant);
        }
        s.strip_prefix("refuse:")
            .and_then(RefuseReason::parse)
            .map(Verdict::Refuse)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Grant => f.write_str("grant"),
            Verdict::Refuse(r) => write!(f, "refuse:{r}"),
        }
    }
}

/// What a witness currently sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WitnessView {
    /// The primary's application.
    pub app: AppVerdict,
    /// Whether the hsb-primary daemon answered recently.
    pub primary_host: bool,
    /// Whether the hsb-standby daemon answered recently.
    pub standby_host: bool,
    /// Success rates over the witness's rate window (the evidence of a gray path).
    pub rates: Rates,
}

impl Default for WitnessView {
    fn default() -> Self {
        WitnessView {
            app: AppVerdict::Unknown,
            primary_host: false,
            standby_host: false,
            rates: Rates::default(),
        }
    }
}

/// Share of probes answered in time over a witness's rate window, in percent, per target
/// (`None`: too few probes in the window to say).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Rates {
    /// The primary's application.
    pub app: Option<u8>,
    /// The hsb-primary daemon.
    pub primary: Option<u8>,
    /// The hsb-standby daemon.
    pub standby: Option<u8>,
}

/// Witness → standby (and primary), periodically: what the witness sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WitnessReport {
    /// The reporting witness.
    pub witness: WitnessId,
    /// Highest epoch the witness knows to be active.
    pub epoch: Epoch,
    /// What it sees.
    pub view: WitnessView,
    /// If it leased to the primary of `epoch`: the primary's last acked checkpoint then (rule 5).
    pub unprotected_after: Option<u64>,
}

/// Standby → witnesses: vote for activating epoch `epoch.next()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteRequest {
    /// The standby's epoch (that of the primary it replicates).
    pub epoch: Epoch,
    /// Query number, echoed in the votes.
    pub query: QueryId,
    /// Takeover or switchover.
    pub kind: VoteKind,
}

/// Witness → standby: the answer to a [`VoteRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    /// The voting witness.
    pub witness: WitnessId,
    /// The query answered.
    pub query: QueryId,
    /// Highest epoch the witness knows to be active.
    pub epoch: Epoch,
    /// Grant or refuse.
    pub verdict: Verdict,
    /// A grant is a lease to the new epoch for this long (counted by the standby from its query).
    pub duration: Duration,
    /// What the witness sees.
    pub view: WitnessView,
    /// If it leased to the primary of the request's epoch: that primary's last acked checkpoint.
    pub unprotected_after: Option<u64>,
}

/// Primary → witnesses: a lease (the primary lost its standby and runs unprotected).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRequest {
    /// The primary's epoch.
    pub epoch: Epoch,
    /// Request number, echoed in the replies.
    pub req: u32,
    /// Last checkpoint the standby acknowledged (0 if none): output after it exists only here.
    pub last_acked: u64,
    /// Newest checkpoint this primary has captured so far (its checkpoint numbers never go
    /// back). Output released under this lease belongs to later checkpoints, so only a
    /// [`ProtectedNotice`] acknowledging a checkpoint beyond it can clear the witness's
    /// stale-replica mark; a notice sent before this request (delayed, reordered, replayed)
    /// cannot.
    pub last_sent: u64,
}

/// Witness → primary: the answer to a [`LeaseRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseReply {
    /// The witness.
    pub witness: WitnessId,
    /// The request answered.
    pub req: u32,
    /// Highest epoch the witness knows to be active.
    pub epoch: Epoch,
    /// Grant or refuse.
    pub verdict: Verdict,
    /// Granted duration (counted by the primary from its request).
    pub duration: Duration,
}

/// Standby → witnesses: the votes of this query will not be used (no quorum, stale replica).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withdraw {
    /// The epoch the votes were for.
    pub epoch: Epoch,
    /// The query.
    pub query: QueryId,
}

/// Primary → witnesses: protected (the standby acknowledged `acked`, which includes everything
/// this primary released): the replica is current. Sent periodically while protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtectedNotice {
    /// The primary's epoch.
    pub epoch: Epoch,
    /// The checkpoint acknowledged.
    pub acked: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_round_trip() {
        let reasons = [
            RefuseReason::PrimaryAnswers,
            RefuseReason::NotYet(Duration::from_millis(20)),
            RefuseReason::GuestFailure,
            RefuseReason::StandbyUnreachable,
            RefuseReason::LeaseActive(Duration::from_micros(1500)),
            RefuseReason::Restarting(Duration::from_secs(2)),
            RefuseReason::StaleEpoch(Epoch(3)),
            RefuseReason::Promised(Epoch(4)),
            RefuseReason::NoData,
        ];
        for r in reasons {
            assert_eq!(RefuseReason::parse(&r.to_string()), Some(r));
            let v = Verdict::Refuse(r);
            assert_eq!(Verdict::parse(&v.to_string()), Some(v));
        }
        assert_eq!(Verdict::parse("grant"), Some(Verdict::Grant));
        for bad in [
            "",
            "refuse:",
            "refuse:x",
            "not-yet",
            "stale-epoch:x",
            "primary-answers:1",
        ] {
            assert_eq!(
                Verdict::parse(bad).or(RefuseReason::parse(bad).map(Verdict::Refuse)),
                None,
                "{bad}"
            );
        }
        for c in ProbeClass::ALL {
            assert_eq!(ProbeClass::parse(c.name()), Some(*c));
        }
        for a in AppVerdict::ALL {
            assert_eq!(AppVerdict::parse(a.name()), Some(*a));
        }
    }

    #[test]
    fn postcard_round_trip() {
        let v = Vote {
            witness: 2,
            query: 7,
            epoch: Epoch(1),
            verdict: Verdict::Refuse(RefuseReason::LeaseActive(Duration::from_millis(300))),
            duration: Duration::from_secs(2),
            view: WitnessView {
                app: AppVerdict::Lossy,
                primary_host: false,
                standby_host: true,
                rates: Rates {
                    app: Some(25),
                    primary: Some(48),
                    standby: None,
                },
            },
            unprotected_after: Some(41),
        };
        let mut buf = [0u8; 64];
        let used = postcard::to_slice(&v, &mut buf).expect("encode");
        let back: Vote = postcard::from_bytes(used).expect("decode");
        assert_eq!(back, v);
    }
}
