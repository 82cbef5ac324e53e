//! hsb-common: what the three hsb daemons share. Nothing here knows a hypervisor: the domain
//! backends, checkpoints and output commit are in `hsb-domain`, which the witness does not link.
//!
//! - [`frame`]: the authenticated, CRC-checked frame every message travels in.
//! - [`msg`]: the postcard message bodies.
//! - [`session`]: per-connection keys, nonces and sequence numbers (replay protection).
//! - [`key`]: the pre-shared cluster key file.
//! - [`config`]: configuration files with typed, located errors.
//! - [`decision`]: the failover decision as pure state machines (rules 1-9), evidence, replay.
//! - [`datagram`], [`wire`]: authenticated datagrams (heartbeats, witness traffic).
//! - [`node_state`]: what a primary or standby host keeps across restarts, and the restart rules.
//! - [`conn`], [`ctl`]: thin non-blocking I/O shells shared by the daemons.
//! - [`signals`]: what each signal asks of a daemon, delivered to its mio loop.
//! - [`recorder`]: the decision log (rotated, reopened on SIGHUP, stamped with the wall clock).

pub mod cli;
pub mod config;
pub mod conn;
pub mod ctl;
pub mod datagram;
pub mod decision;
pub mod failover;
pub mod frame;
pub mod key;
pub mod kit;
pub mod logging;
pub mod msg;
pub mod node_state;
pub mod recorder;
pub mod rng;
pub mod session;
pub mod signals;
pub(crate) mod slots;
pub mod stats;
pub mod time;
pub mod wire;

/// Size of a guest page in bytes (x86 4 KiB pages).
pub const PAGE_SIZE: usize = 4096;
