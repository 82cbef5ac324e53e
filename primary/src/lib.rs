//! hsb-primary as a library: its configuration and its node, the pure state machine that
//! decides everything the primary does, so that the simulator and tests can drive the real
//! node. The daemon (the binary) is the shell around it.

pub mod config;
pub mod node;
