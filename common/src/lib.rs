//! hsb-common: what the three hsb daemons share.
//!
//! - [`frame`]: the authenticated, CRC-checked frame every message travels in.
//! - [`msg`]: the postcard message bodies.
//! - [`session`]: per-connection keys, nonces and sequence numbers (replay protection).
//! - [`key`]: the pre-shared cluster key file.
//! - [`config`]: configuration files with typed, located errors.
//! - [`checkpoint`]: checkpoint encoding (primary) and staging/verification (standby), no I/O.
//! - [`output`]: output-commit bookkeeping: replies of checkpoint N leave only after ack(N).
//! - [`model`]: the `model` domain, a test double for the hypervisor (DESIGN.md §3).
//! - [`domain`]: the narrow interface between the replication engine and a hypervisor.
//! - [`node_state`]: what a primary or standby host keeps across restarts, and the restart rules.
//! - [`conn`], [`ctl`]: thin non-blocking I/O shells shared by the daemons.
//! - [`signals`]: what each signal asks of a daemon, delivered to its mio loop.
//! - [`recorder`]: the decision log (rotated, reopened on SIGHUP, stamped with the wall clock).

pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod conn;
pub mod ctl;
pub mod datagram;
pub mod decision;
pub mod domain;
pub mod failover;
pub mod frame;
pub mod fuzzing;
pub mod key;
pub mod logging;
pub mod model;
pub mod msg;
pub mod node_state;
pub mod output;
pub mod recorder;
pub mod rng;
pub mod service;
pub mod session;
pub mod signals;
pub mod stats;
pub mod time;
pub mod wire;
pub mod xen;

/// Size of a guest page in bytes (x86 4 KiB pages).
pub const PAGE_SIZE: usize = 4096;
