//! The witness node's inputs and outputs: the events the daemon feeds it, the effects it asks
//! for, its settings, its counters and what it observed, and the causes of its log lines.

use std::net::SocketAddr;
use std::time::Duration;

use hsb_common::datagram::{Dest, Envelope};
use hsb_common::decision::proto::ProbeClass;
use hsb_common::decision::witness::Persisted;
use hsb_common::decision::Nanos;
use hsb_common::stats::Histogram;
use hsb_common::wire::Dgram;

/// Most effects one step returns (a step answers at most one request, plus a save and a
/// report to each daemon and a ping to each).
pub const MAX_EFFECTS: usize = 8;

/// Where a datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum To {
    /// The daemon configured at slot 0 (`primary`) or 1 (`standby`).
    Slot(usize),
    /// The address a request came from.
    Addr(SocketAddr),
}

/// What the daemon must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Make the rollback guard durable before what follows (state file: tmp, fsync, rename).
    Save(Persisted),
    /// Send a datagram; if `needs` is set, only if that state is on disk (a grant's promise).
    Send {
        /// Where.
        to: To,
        /// For whom (None: a ping, answered by whoever is there).
        dest: Option<Dest>,
        /// What.
        msg: Dgram,
        /// The state that must be durable first.
        needs: Option<Persisted>,
    },
}

/// The effects of one step (bounded).
pub type Effects = heapless::Vec<Effect, MAX_EFFECTS>;

/// An input of the node.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Time passed (pings, timeouts, reports, grant expiry).
    Tick,
    /// The loop did not run since `since`: failures of probes that overlapped it are no
    /// evidence.
    Stalled {
        /// When the loop last ran.
        since: Nanos,
    },
    /// The application probe finished.
    AppProbe {
        /// What it got.
        class: ProbeClass,
        /// How long it ran.
        took: Duration,
        /// What it saw, for the log.
        detail: String,
    },
    /// An authenticated datagram.
    Datagram {
        /// Where it came from.
        from: SocketAddr,
        /// Its envelope.
        env: Envelope,
        /// The message.
        msg: Dgram,
    },
}

/// The witness's settings the node needs.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// How often the daemons are pinged.
    pub probe_interval: Duration,
    /// How long a ping may take.
    pub probe_timeout: Duration,
    /// How often reports go out.
    pub report_interval: Duration,
    /// The guest this node watches, named in its log lines (empty: the witness's only guest,
    /// from a file without sections, and the log lines say nothing of guests).
    pub guest: String,
}

/// Counters shown in status.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    /// Votes granted and refused.
    pub votes_granted: u64,
    /// Votes refused.
    pub votes_refused: u64,
    /// Leases granted.
    pub leases_granted: u64,
    /// Leases refused.
    pub leases_refused: u64,
    /// Saves of the rollback guard that failed.
    pub save_failures: u64,
    /// Grants not sent because their promise was not on disk.
    pub grants_withheld: u64,
}

/// What the node observed, for metrics: every probe's outcome and latency by target, and every
/// refusal by reason (cumulative since the start; the counters above count them in all).
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Probes by target (in the order of
    /// [`ProbeTarget::ALL`](hsb_common::decision::proto::ProbeTarget::ALL): the application,
    /// the primary's daemon, the standby's daemon) and outcome (in the order of
    /// [`ProbeClass::ALL`]).
    pub probes: [[u64; 4]; 3],
    /// Probe latencies by target (a ping's round trip for the daemons).
    pub latency: [Histogram; 3],
    /// Votes refused, by reason (in the order of [`cause::REASON_WORDS`]).
    pub votes_refused: [u64; cause::REASONS],
    /// Leases refused, by reason.
    pub leases_refused: [u64; cause::REASONS],
}

/// Log lines that can repeat every probe interval or every query, rate-limited per cause: the
/// fixed causes, then one per refusal reason for votes and one per reason for leases. Granted
/// votes are always logged.
pub mod cause {
    use hsb_common::decision::proto::RefuseReason;

    pub const VIEW_CHANGE: usize = 0;
    pub const SAVE_FAILED: usize = 1;
    pub const WITHHELD: usize = 2;
    pub const STALL: usize = 3;
    /// The refusal reasons.
    pub const REASONS: usize = 9;
    pub const COUNT: usize = 4 + 2 * REASONS;
    /// Each reason's word (as in the reason's text form, without its argument).
    pub const REASON_WORDS: [&str; REASONS] = [
        "primary-answers",
        "not-yet",
        "guest-failure",
        "standby-unreachable",
        "lease-active",
        "restarting",
        "stale-epoch",
        "promised",
        "no-data",
    ];

    /// A reason's index.
    pub fn reason(r: &RefuseReason) -> usize {
        match r {
            RefuseReason::PrimaryAnswers => 0,
            RefuseReason::NotYet(_) => 1,
            RefuseReason::GuestFailure => 2,
            RefuseReason::StandbyUnreachable => 3,
            RefuseReason::LeaseActive(_) => 4,
            RefuseReason::Restarting(_) => 5,
            RefuseReason::StaleEpoch(_) => 6,
            RefuseReason::Promised(_) => 7,
            RefuseReason::NoData => 8,
        }
    }

    pub fn vote_refused(r: &RefuseReason) -> usize {
        4 + reason(r)
    }

    pub fn lease_refused(r: &RefuseReason) -> usize {
        4 + REASONS + reason(r)
    }
}
/// The number of log causes.
pub const CAUSES: usize = cause::COUNT;
