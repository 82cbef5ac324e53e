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
