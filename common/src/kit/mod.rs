//! The daemon kit: what the three daemons' event loops share, so that each daemon is a thin
//! shell around its pure node (STYLE.md, "the daemon shape").
//!
//! - [`deadlines`]: named deadlines; the poll timeout is the time to the earliest.
//! - [`hooks`]: commands run on events, watched by the loop, never waited for in it.
//! - [`endpoint`]: sealed datagrams, sent and received with errors counted.
//! - [`decisions`]: evidence into the log, the decision log and status (rule 7).
//! - [`authority`]: carrying out a primary's authority (witness traffic, evidence, duties).
//! - [`metrics`]: the Prometheus text format (families, counters, gauges, histograms).
//! - [`http`]: the bounded HTTP responder that serves it (`metrics_listen`) on the loop's tokens.
//! - [`notify`]: systemd's READY, STATUS, STOPPING and WATCHDOG notifications, from the loop.
//! - [`talk`]: what every node says (datagrams, decisions, decision-log inputs, its epoch).
//! - [`shell`]: the operator's surface (control socket, metrics, systemd), signals first, SIGHUP.

pub mod authority;
pub mod deadlines;
pub mod decisions;
pub mod endpoint;
pub mod hooks;
pub mod http;
pub mod metrics;
pub mod notify;
pub mod shell;
pub mod talk;
pub mod turns;

/// Push a node's effect onto its bounded list (`heapless::Vec`): more than the list holds in one
/// step is a bug in the node (effects per step are bounded by design, ARCHITECTURE.md rule 6),
/// and stops the daemon rather than dropping what the node decided.
pub fn push<T, const N: usize>(fx: &mut heapless::Vec<T, N>, e: T) {
    assert!(fx.push(e).is_ok(), "more than {N} effects in one step");
}
