//! hsb-primary: runs beside the protected domain, checkpoints it every period and streams the
//! checkpoints to hsb-standby; output of checkpoint N leaves only after ack(N).
//!
//! The command line. The daemon is three parts (STYLE.md, "the daemon shape"): the node
//! (`hsb_primary::node`, a pure state machine that decides everything), the shell around it
//! (`daemon.rs`: one single-threaded mio loop, the replication connection in `repl.rs`, the
//! witness endpoint in `datagrams.rs`, the domain in `guest.rs` and `backend.rs`, its disk in
//! `disk.rs`) and what it tells (`status.rs`); `start.rs` applies the host state's restart rule
//! first.

mod backend;
mod daemon;
mod datagrams;
mod disk;
mod guest;
mod metrics;
mod repl;
mod start;
mod status;

use std::process::ExitCode;

use hsb_common::cli::{Args, Program};
use hsb_common::config::Config;
use hsb_common::key::ClusterKey;
use hsb_primary::config::{schema, Settings};

const USAGE: &str = "\
hsb-primary: checkpoint a domain and stream it to hsb-standby

usage:
  hsb-primary run -c FILE [--set key=value]...   run the daemon
  hsb-primary status [-c FILE | --control PATH] [--json]
                                                 show the running daemon's state (--json: as one JSON object)
  hsb-primary check -c FILE [--set key=value]... validate the configuration and key, then exit
  hsb-primary keygen PATH                        create a new cluster key file (mode 0600)
  hsb-primary xen-info DOMAIN                       show what the xen backend sees of a domain (read-only)
  hsb-primary config-reference                   print every configuration key
  hsb-primary --version

Exit status of `status`, for health checks: 0 healthy (protected); 1 degraded or unprotected
(protected-degraded: acks slower than the ack lease, output waits for them; no standby
acknowledging, output held, or released under witness leases); 2 fenced or stepped
down; 3 unreachable (no answer on the control socket, or it refuses us); 4 usage or
configuration error. Other commands exit 1 on failure and 2 on a usage error.";

const PROGRAM: Program = Program::daemon("hsb-primary", "/run/hsb/primary.sock", USAGE, schema)
    .with_xen_info(hsb_domain::xen::info_command);

fn main() -> ExitCode {
    PROGRAM.main(&["json"], &[], |cmd, args| {
        Some(match cmd {
            "run" => PROGRAM.run(args, "primary", load, |(s, key, start), mut signals| {
                match daemon::Daemon::new(s, key, start, &mut signals)? {
                    Some(d) => d.run(signals),
                    None => Ok(()),
                }
            }),
            "check" => PROGRAM.check(args, Settings::from_config, |s| {
                let backend = hsb_domain::describe_backend(s.xen.as_ref(), s.model_pages);
                format!(
                    "standby {}, epoch {:?}, {backend}",
                    s.standby, s.checkpoint_period
                )
            }),
            _ => return None,
        })
    })
}

/// What `run` needs: the settings, the cluster key and the host state's restart rule applied.
fn load(args: &Args) -> Result<((Settings, ClusterKey, hsb_primary::node::Start), Config), String> {
    let (mut s, key, cfg) = PROGRAM.load(args, Settings::from_config)?;
    let start = start::start(&mut s)?;
    Ok(((s, key, start), cfg))
}
