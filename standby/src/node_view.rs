//! What can be read of the standby node (status, the periodic log line, the daemon's
//! questions) and what must hold of it after every step (its invariants).

use hsb_common::decision::standby::State;
use hsb_common::decision::Epoch;
use hsb_common::node_state::NodeState;
use hsb_common::time::Nanos;

use super::{Slot, StandbyNode, Stats, SLOTS};
use crate::slots::Stage;

/// Every word [`StandbyNode::state_name`] says, in the order of a standby's life.
pub const STATES: [&str; 4] = [
    "waiting-for-primary",
    "synchronising",
    "replicating",
    "active",
];

/// The failover side in status.
#[derive(Debug, Clone)]
pub struct FailoverView {
    /// The standby core's state.
    pub state: State,
    /// Automatic takeovers paused.
    pub maintenance: bool,
    /// The operator's request under way, by name.
    pub operator: Option<&'static str>,
    /// The heartbeat detector suspects the primary.
    pub suspected: bool,
    /// How long the next witness query waits for its votes (longer than `query-timeout` while
    /// the witnesses' answers come late).
    pub query_wait: std::time::Duration,
    /// After activation: the authority's mode, by name.
    pub authority: Option<&'static str>,
    /// The activation's evidence, as one JSON line.
    pub activation: Option<String>,
}

impl StandbyNode {
    /// Invariants (checked after every step; a failure is a bug: the process stops).
    pub(super) fn check_invariants(&self) {
        let live: Vec<usize> = (0..SLOTS)
            .filter(|&i| {
                self.slots[i]
                    .as_ref()
                    .is_some_and(|s| s.stage == Stage::Live)
            })
            .collect();
        match self.current {
            Some(i) => assert_eq!(live, [i], "the live session is the current one"),
            None => assert!(live.is_empty(), "a live session that is not current"),
        }
        assert!(
            self.pending_handshakes() <= crate::slots::PENDING + 1,
            "pending handshakes beyond the pool"
        );
        assert!(
            STATES.contains(&self.state_name()),
            "a state word not in STATES"
        );
        if let Some(a) = self.activated {
            assert!(
                self.applied.is_some_and(|n| n >= a),
                "activated beyond the replica"
            );
            assert!(self.current.is_none(), "a live session after activation");
        }
    }

    /// The connection in `slot`.
    pub fn slot(&self, slot: usize) -> Option<&Slot> {
        self.slots.get(slot).and_then(Option::as_ref)
    }
    /// The live session's slot.
    pub fn current(&self) -> Option<usize> {
        self.current
    }
    /// The replica's last applied checkpoint.
    pub fn applied(&self) -> Option<u64> {
        self.applied
    }
    /// Active since this checkpoint.
    pub fn activated(&self) -> Option<u64> {
        self.activated
    }
    /// The host state as last written.
    pub fn host(&self) -> NodeState {
        self.host
    }
    /// The epoch as peers see it.
    pub fn epoch(&self) -> Epoch {
        self.current_epoch()
    }
    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
    /// Counters, to reset the report window.
    pub fn stats_mut(&mut self) -> &mut Stats {
        &mut self.stats
    }
    /// Whether the activated replica may serve now (no authority needed without failover).
    pub fn may_serve(&self, now: Nanos) -> bool {
        self.failover
            .as_ref()
            .and_then(|f| f.authority.as_ref())
            .is_none_or(|a| a.may_release_output(now))
    }
    /// The state word of status.
    pub fn state_name(&self) -> &'static str {
        match (self.activated, self.current, self.applied) {
            (Some(_), _, _) => "active",
            (None, Some(_), Some(_)) => "replicating",
            (None, Some(_), None) => "synchronising",
            (None, None, _) => "waiting-for-primary",
        }
    }
    /// The failover side, if on.
    pub fn failover_view(&self, now: Nanos) -> Option<FailoverView> {
        self.failover.as_ref().map(|f| FailoverView {
            state: f.core.state(),
            maintenance: f.core.maintenance(),
            operator: f.core.operator().map(|a| a.name()),
            suspected: f.core.detector().suspected(),
            query_wait: f.core.query_wait(),
            authority: f.authority.as_ref().map(|a| a.mode(now).name()),
            activation: f.activation.as_ref().map(|e| e.to_json_line()),
        })
    }
}
