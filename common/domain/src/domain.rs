//! The narrow interface between the replication engine and a hypervisor (DESIGN.md §3).
//!
//! Primary side: suspend at a consistent point, read and clear dirty pages, read pages and state,
//! resume. Standby side: write pages and state into a paused replica. Either side's domain may
//! have a disk ([`crate::disk`]), whose writes travel with the checkpoints. Activation is the
//! daemon's (it differs per backend: the model serves its TCP service, Xen unpauses a domain).

use std::fmt;

use crate::disk::Disk;

/// A backend failure, naming the operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainError {
    /// The operation, e.g. "suspend" or "write_pages".
    pub op: &'static str,
    /// What went wrong.
    pub detail: String,
}

impl fmt::Display for DomainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "domain {}: {}", self.op, self.detail)
    }
}

impl std::error::Error for DomainError {}

/// The protected domain, seen from the primary.
pub trait CheckpointSource {
    /// Number of guest pages (page frame numbers are `0..pages()`).
    fn pages(&self) -> u64;
    /// The most pages one checkpoint can carry (guest RAM; smaller than `pages()` when the
    /// frame space has holes, as a Xen guest's p2m does).
    fn max_pages(&self) -> u64 {
        self.pages()
    }
    /// Stop the guest at a consistent point.
    fn suspend(&mut self) -> Result<(), DomainError>;
    /// Let the guest run again ("suspend cancelled": it keeps its devices).
    fn resume(&mut self) -> Result<(), DomainError>;
    /// Append the pages dirtied since the last call (every page if `full`) to `out`, and clear
    /// the dirty log. `out` has capacity for every page; implementations never grow it.
    fn take_dirty(&mut self, full: bool, out: &mut Vec<u64>) -> Result<(), DomainError>;
    /// Copy pages `pfns` into `dst` (4 KiB each, in order).
    fn read_pages(&mut self, pfns: &[u64], dst: &mut [u8]) -> Result<(), DomainError>;
    /// Write the vCPU/platform state record into `dst`; returns its length.
    fn save_state(&mut self, dst: &mut [u8]) -> Result<usize, DomainError>;
    /// The guest's disk, if it has one: its writes travel with the checkpoints.
    fn disk(&mut self) -> Option<&mut Disk> {
        None
    }
}

/// The paused replica, seen from the standby.
pub trait Replica {
    /// Number of guest pages (page frame numbers are `0..pages()`).
    fn pages(&self) -> u64;
    /// The most pages one checkpoint can carry (see [`CheckpointSource::max_pages`]).
    fn max_pages(&self) -> u64 {
        self.pages()
    }
    /// Overwrite pages `pfns` with `data` (4 KiB each, in order).
    fn write_pages(&mut self, pfns: &[u64], data: &[u8]) -> Result<(), DomainError>;
    /// Copy pages `pfns` as last written into `dst` (4 KiB each, in order): the reference a
    /// delta record is decoded against.
    fn read_back(&mut self, pfns: &[u64], dst: &mut [u8]) -> Result<(), DomainError>;
    /// Load a state record written by [`CheckpointSource::save_state`].
    fn load_state(&mut self, state: &[u8]) -> Result<(), DomainError>;
    /// The replica's disk, if it has one: checkpoints' disk writes are applied to it.
    fn disk(&mut self) -> Option<&mut Disk> {
        None
    }
}
