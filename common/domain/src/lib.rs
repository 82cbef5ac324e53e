//! hsb-domain: what the primary and the standby need of a hypervisor, and nothing the witness
//! needs (the witness links neither xen-sys nor xenstore-rs).
//!
//! - [`domain`]: the narrow interface between the replication engine and a hypervisor.
//! - [`checkpoint`]: checkpoint capture and sealing (primary), staging and verification
//!   (standby), no I/O.
//! - [`disk`]: the guest's disk, replicated with its checkpoints: the journal of each epoch's
//!   writes, lineages, the per-track table and activity log that say what can differ, and
//!   resynchronisation (issue 14).
//! - [`output`]: output-commit bookkeeping: replies of checkpoint N leave only after ack(N).
//! - [`xen`]: the real backend (hypercalls through `xen-sys`, xenstore through `xenstore-rs`).
//! - [`model`]: the `model` domain, **a test double for the hypervisor** (DESIGN.md §3), and
//!   [`service`], its TCP service.

pub mod checkpoint;
pub mod disk;
pub mod domain;
pub mod model;
pub mod output;
pub mod service;
pub mod xen;

pub use hsb_common::PAGE_SIZE;
