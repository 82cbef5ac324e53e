//! hsb-standby: keeps a paused replica of the protected domain. It stages each checkpoint
//! whole, verifies it, applies it, and only then acknowledges it. `activate` makes the replica
//! serve from the last applied checkpoint.
//!
//! The command line. The daemon is three parts (STYLE.md, "the daemon shape"): the node
//! (`hsb_standby::node`, a pure state machine that decides everything), the shell around it
//! (`daemon.rs`: one single-threaded mio loop, the replication connections in `conns.rs`, the
//! replica in `replica.rs` and its disk in `disk.rs`, the hand-over in `handover.rs`) and what
//! it tells (`status.rs`); `start.rs` follows the host state first.

mod conns;
mod daemon;
mod disk;
mod handover;
mod metrics;
mod replica;
mod sockets;
mod start;
mod status;

use std::process::ExitCode;

use hsb_common::cli::{Args, Program};
use hsb_common::config::Config;
use hsb_common::key::ClusterKey;
use hsb_common::node_state::NodeState;
use hsb_standby::config::{schema, Settings};

const USAGE: &str = "\
hsb-standby: keep a verified replica of the protected domain and activate it on demand

usage:
  hsb-standby run -c FILE [--set key=value]...      run the daemon
  hsb-standby status [-c FILE | --control PATH] [--json]
                                                    show the running daemon's state (--json: as one JSON object)
  hsb-standby activate [--force] [-c FILE | --control PATH]
                                                    make this standby active (with failover on: through the
                                                    witnesses, which must agree; --force: without them, and you
                                                    guarantee the primary is stopped)
  hsb-standby switchover [-c FILE | --control PATH] planned hand-over: the primary fences after a final checkpoint,
                                                    this standby applies it and takes over (nothing is lost)
  hsb-standby maintenance on|off [-c FILE | --control PATH]
                                                    pause or resume automatic takeovers (decisions are still logged)
  hsb-standby force-stale [-c FILE | --control PATH] let the failover decision activate a stale replica (rule 5)
  hsb-standby replay FILE [--policy P]              re-run a decision log through the decision core under policy P
  hsb-standby check -c FILE [--set key=value]...    validate the configuration and key, then exit
  hsb-standby xen-info DOMAIN                       show what the xen backend sees of a domain (read-only)
  hsb-standby config-reference                      print every configuration key
  hsb-standby --version

Exit status of `status`, for health checks: 0 healthy (replicating, following the primary);
1 degraded or unprotected (waiting for the primary, synchronising, deciding a failover, or
activated and serving without a standby); 2 stepped down, or refusing to activate a stale
replica; 3 unreachable (no answer on the control socket, or it refuses us); 4 usage or
configuration error. Other commands exit 1 on failure and 2 on a usage error.";

const PROGRAM: Program = Program::daemon("hsb-standby", "/run/hsb/standby.sock", USAGE, schema)
    .with_xen_info(hsb_domain::xen::info_command);

fn main() -> ExitCode {
    PROGRAM.main(&["force", "json"], &["policy"], |cmd, args| {
        Some(match cmd {
            "run" => PROGRAM.run(args, "standby", load, |(s, key, host), mut signals| {
                match daemon::Daemon::new(s, key, host, &mut signals)? {
                    Some(d) => d.run(signals),
                    None => Ok(()),
                }
            }),
            "check" => PROGRAM.check(args, Settings::from_config, |s| {
                let backend = hsb_domain::describe_backend(s.xen.as_ref(), s.model_pages);
                format!("listening on {}, {backend}", s.listen)
            }),
            cmd @ ("digest" | "activate" | "force-stale" | "switchover" | "maintenance") => {
                let line = match cmd {
                    "activate" if args.flag("force") => "activate --force".to_string(),
                    "maintenance" => match args.rest.first().map(String::as_str) {
                        Some(w @ ("on" | "off")) => format!("maintenance {w}"),
                        None => "maintenance".to_string(),
                        Some(other) => {
                            eprintln!("hsb-standby: maintenance takes on or off, not '{other}'");
                            return Some(ExitCode::from(2));
                        }
                    },
                    other => other.to_string(),
                };
                PROGRAM.control(args, &line)
            }
            "replay" => replay(args),
            _ => return None,
        })
    })
}

fn replay(args: &Args) -> ExitCode {
    let Some(path) = args.rest.first() else {
        return PROGRAM.fail("replay needs a decision log: hsb-standby replay FILE [--policy client-oriented|heartbeat-only|ping-node]");
    };
    let policy = match args.value("policy") {
        Some(p) => match hsb_common::decision::Policy::parse(p) {
            Some(p) => Some(p),
            None => {
                return PROGRAM.fail(&format!(
                    "unknown policy '{p}'; expected client-oriented, heartbeat-only or ping-node"
                ))
            }
        },
        None => None,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return PROGRAM.fail(&format!("{path}: {e}")),
    };
    let policy = policy.unwrap_or(hsb_common::decision::Policy::ClientOriented);
    match hsb_common::decision::replay(text.lines(), policy) {
        Ok(decisions) => {
            for d in &decisions {
                println!("{d}");
                if let Some(e) = d.action.evidence() {
                    println!("    {}", e.to_json_line());
                }
            }
            println!("{} decisions", decisions.len());
            ExitCode::SUCCESS
        }
        Err(e) => PROGRAM.fail(&format!("{path}: {e}")),
    }
}

/// What `run` needs: the settings, the cluster key and the host state it starts in.
fn load(args: &Args) -> Result<((Settings, ClusterKey, NodeState), Config), String> {
    let (s, key, cfg) = PROGRAM.load(args, Settings::from_config)?;
    let host = start::host_state(&s)?;
    Ok(((s, key, host), cfg))
}
