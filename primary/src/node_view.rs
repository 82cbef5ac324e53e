//! What can be read of the primary node (status, the periodic log line) and what must hold of
//! it after every step (its invariants).

use std::time::Duration;

use hsb_common::decision::primary::Mode;
use hsb_common::decision::Epoch;
use hsb_common::time::Nanos;

use super::{Dom, Link, PrimaryNode, Stats};

impl PrimaryNode {
    /// Invariants (checked after every step; a failure is a bug: the process stops).
    pub(super) fn check_invariants(&self, now: Nanos) {
        assert!(
            self.acked < self.next_ckpt,
            "acked beyond the next checkpoint"
        );
        assert!(
            self.next_ckpt - 1 <= self.reserved,
            "checkpoint {} used without a reservation (up to {})",
            self.next_ckpt - 1,
            self.reserved
        );
        let mut prev = self.acked;
        for &(n, _) in &self.unacked {
            assert!(n > prev && n < self.next_ckpt, "unacked {n} out of order");
            prev = n;
        }
        // A switchover's final checkpoint may go beyond the window by one.
        assert!(self.unacked.len() <= self.cfg.max_unacked + 1);
        if let Some(f) = self.full_unacked {
            assert!(self.unacked.iter().any(|&(n, _)| n == f));
        }
        assert!(
            !self.sending || self.link == Link::Streaming,
            "sending without a session"
        );
        if let Some(f) = &self.failover {
            assert!(!f.stepped_down || f.fenced, "stepped down but not fenced");
            if matches!(f.authority.mode(now), Mode::Protected | Mode::Degraded) {
                assert!(
                    self.released <= self.acked,
                    "released {} beyond acked {} while protected",
                    self.released,
                    self.acked
                );
            }
        }
    }
}

/// A read-only view for status and the periodic log line.
impl PrimaryNode {
    /// The session's phase.
    pub fn link(&self) -> Link {
        self.link
    }
    /// The domain's state as the node sees it.
    pub fn dom(&self) -> Dom {
        self.dom
    }
    /// This primary's epoch.
    pub fn epoch(&self) -> Epoch {
        self.start.epoch
    }
    /// The next checkpoint's number.
    pub fn next_checkpoint(&self) -> u64 {
        self.next_ckpt
    }
    /// The last acknowledged checkpoint.
    pub fn acked(&self) -> u64 {
        self.acked
    }
    /// Checkpoints waiting for their ack.
    pub fn unacked(&self) -> usize {
        self.unacked.len()
    }
    /// A checkpoint is being written.
    pub fn sending(&self) -> bool {
        self.sending
    }
    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
    /// Counters, to reset the report window.
    pub fn stats_mut(&mut self) -> &mut Stats {
        &mut self.stats
    }
    /// Fenced (rule 4): the domain takes no requests.
    pub fn is_fenced(&self) -> bool {
        self.fenced()
    }
    /// Whether the authority lets output leave at `now` (acknowledged output while protected,
    /// all of it under a lease); without failover, always (acknowledged output only).
    pub fn may_release_output(&self, now: Nanos) -> bool {
        self.failover
            .as_ref()
            .is_none_or(|f| f.authority.may_release_output(now))
    }
    /// Replica lag: checkpoints taken and not acknowledged, and how long the oldest waits.
    pub fn replica_lag(&self, now: Nanos) -> (u64, Duration) {
        let taken = self.next_ckpt.saturating_sub(1);
        let age = self
            .unacked
            .front()
            .map_or(Duration::ZERO, |&(_, sent)| now.since(sent));
        (taken.saturating_sub(self.acked), age)
    }
    /// The failover side, if on: (authority mode, fenced, stepped down, maintenance,
    /// heartbeats sent, the standby's presence and heartbeat replies).
    pub fn failover_view(&self, now: Nanos) -> Option<FailoverView> {
        self.failover.as_ref().map(|f| FailoverView {
            mode: f.authority.mode(now),
            fenced: f.fenced,
            stepped_down: f.stepped_down,
            maintenance: f.maintenance_until.is_some_and(|u| now < u),
            heartbeats: f.heartbeats,
            standby_present: f.authority.standby_present(now),
            standby_replies: f.standby_replies,
        })
    }
}

/// The failover side in status.
#[derive(Debug, Clone, Copy)]
pub struct FailoverView {
    /// The authority's mode.
    pub mode: Mode,
    /// Fenced.
    pub fenced: bool,
    /// Stepped down.
    pub stepped_down: bool,
    /// The standby's operator paused automatic takeovers.
    pub maintenance: bool,
    /// Heartbeats sent.
    pub heartbeats: u64,
    /// The standby is there (its heartbeat replies, and progress within `standby-timeout`).
    pub standby_present: bool,
    /// Heartbeat replies received from the standby.
    pub standby_replies: u64,
}

/// Whether the standby has been silent too long for its session to be kept (DESIGN §2: a
/// link that broke and healed must not resume the old session, the standby gets a fresh full
/// synchronisation): the oldest unacknowledged checkpoint has waited longer than a lease. A
/// full synchronisation is exempt: ending its session would only start the same full sync
/// again, and a large one may take longer than a lease to copy and apply (on the Xen rig,
/// 128 MiB were ended four times in a row before one got through).
pub fn silent_too_long(
    oldest: Option<(u64, Nanos)>,
    full_unacked: Option<u64>,
    now: Nanos,
    lease: Duration,
) -> bool {
    silent_from(oldest, full_unacked, lease).is_some_and(|at| now >= at)
}

/// From when [`silent_too_long`] holds: a lease (and a nanosecond) after the oldest
/// unacknowledged checkpoint was sent; never for a full synchronisation or with nothing
/// unacknowledged.
pub fn silent_from(
    oldest: Option<(u64, Nanos)>,
    full_unacked: Option<u64>,
    lease: Duration,
) -> Option<Nanos> {
    match oldest {
        Some((ckpt, _)) if full_unacked == Some(ckpt) => None,
        Some((_, sent)) => Some(sent.plus(lease).plus(Duration::from_nanos(1))),
        None => None,
    }
}
