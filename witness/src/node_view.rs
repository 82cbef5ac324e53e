//! What can be read of the witness node (status, metrics) and what must hold of it after every
//! step (its invariants).

use hsb_common::decision::witness::Persisted;
use hsb_common::decision::{Epoch, Nanos, WitnessCore};

use super::{Counters, Observed, WitnessNode};
use crate::hosts::HostRoles;

impl WitnessNode {
    /// What must hold after every step (checked in release builds too): the epoch known never
    /// goes back below what is on disk, and a ping in flight names its slot.
    pub(super) fn invariants(&self) {
        assert!(
            self.core.epoch_seen() >= self.on_disk.epoch_seen,
            "the epoch seen went back below what is on disk"
        );
        for (i, p) in self.pings.iter().enumerate() {
            assert!(p
                .flight
                .iter()
                .flatten()
                .all(|(n, _)| (n & 1) as usize == i));
        }
    }

    // Read-only views for status.

    /// The core.
    pub fn core(&self) -> &WitnessCore {
        &self.core
    }

    /// Which configured address hosts the primary.
    pub fn hosts(&self) -> &HostRoles {
        &self.hosts
    }

    /// Pings answered and missed, per slot.
    pub fn pings(&self) -> [(u64, u64); 2] {
        [
            (self.pings[0].answered, self.pings[0].missed),
            (self.pings[1].answered, self.pings[1].missed),
        ]
    }

    /// Whether the standby's operator paused automatic takeovers.
    pub fn maintenance(&self, now: Nanos) -> bool {
        self.maintenance_until.is_some_and(|u| now < u)
    }

    /// The rollback guard the node knows to be on disk.
    pub fn on_disk(&self) -> Persisted {
        self.on_disk
    }

    /// The counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// What it observed, for metrics.
    pub fn observed(&self) -> &Observed {
        &self.observed
    }

    /// The epoch its datagrams carry.
    pub fn epoch(&self) -> Epoch {
        self.core.epoch_seen()
    }
}
