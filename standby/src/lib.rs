//! hsb-standby as a library: its configuration, its connection slots' rules and its node, the
//! pure state machine that decides everything the standby does, so that the simulator and
//! tests can drive the real node. The daemon (the binary) is the shell around it.

pub mod config;
pub mod node;
pub mod slots;
