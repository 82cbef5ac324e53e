//! hsb-witness as a library: its node, the pure state machine that decides everything the
//! witness does, which host is the primary ([`hosts`]), and the order that keeps its promises
//! durable before a grant leaves ([`state`]), so that the simulator and tests can drive the real
//! node. The daemon (the binary) is the shell around it.

pub mod hosts;
pub mod node;
pub mod state;
