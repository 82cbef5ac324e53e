//! hsb-witness: runs on client machines, probes the protected application the way clients use
//! it, pings the two hsb daemons, and reports to the standby and the primary. It answers the
//! standby's takeover votes and the primary's lease requests through the witness core, which
//! never grants a lease and a takeover vote at overlapping times (DESIGN.md rule 3).
//!
//! The daemon has one shape (ARCHITECTURE.md): this file is the command line; `node` decides
//! everything as a pure state machine; `daemon` is the mio loop that feeds it events and
//! carries out its effects; `status` answers the control socket.

mod config;
mod daemon;
mod metrics;
// The engine's API is complete (status, limits, defaults); the daemon uses part of it.
#[allow(dead_code, unused_imports)]
mod probe;
mod status;

use hsb_witness::{node, state};

use std::process::ExitCode;

use hsb_common::cli::{Args, Program};
use hsb_common::config::{Config, Sectioned};
use hsb_common::key::ClusterKey;

use config::{schema, Settings};
use daemon::Daemon;

const USAGE: &str = "\
hsb-witness: probe the protected application as its clients do, and vote on failovers

usage:
  hsb-witness run -c FILE [--set key=value]...    run the witness
  hsb-witness status [-c FILE | --control PATH] [--guest NAME] [--json]
                                                  what it sees, what it granted (--json: as one JSON object;
                                                  --guest: that guest only)
  hsb-witness check -c FILE [--set key=value]...  validate the configuration and key, then exit
  hsb-witness config-reference                    print every configuration key
  hsb-witness --version

One witness can serve several protected guests: after the process-wide keys, one
`[guest NAME]` section per guest (its cluster_key, listen, primary, standby, probe...).

Exit status of `status`, for health checks: 0 healthy (the application answers and both
daemons answer); 1 degraded (no probe result yet, the application failing, or a daemon out of
reach); 2 the application is down (or failed inside the guest); 3 unreachable (no answer on the
control socket, or it refuses us); 4 usage or configuration error. With several guests, the
worst of them. Other commands exit 1 on failure and 2 on a usage error.

Under systemd (Type=notify) it sends READY=1, STATUS= and, with WatchdogSec=, WATCHDOG=1 to
$NOTIFY_SOCKET.";

const PROGRAM: Program = Program::daemon("hsb-witness", "/run/hsb/witness.sock", USAGE, schema);

fn main() -> ExitCode {
    PROGRAM.main(&["json"], &["guest"], |cmd, args| {
        Some(match cmd {
            "run" => PROGRAM.run(
                args,
                "witness",
                |args| load(args).map(|(s, keys, cfg)| ((s, keys, cfg.clone()), cfg)),
                |(s, keys, cfg), signals| Daemon::new(s, keys, cfg)?.run(signals),
            ),
            "check" => check(args),
            "status" => {
                let path = match (&args.control, &args.config) {
                    (Some(p), _) => Ok(p.clone()),
                    (None, Some(_)) => config::control_path(args.config.as_deref(), &args.sets)
                        .map_err(|e| e.to_string()),
                    (None, None) => config::control_path(None, &args.sets)
                        .or_else(|_| config::find_control(std::path::Path::new(config::RUN_DIR))),
                };
                let command = match args.value("guest") {
                    Some(g) => format!("status {g}"),
                    None => "status".to_string(),
                };
                ExitCode::from(hsb_common::ctl::status_cli_at(
                    "hsb-witness",
                    args,
                    path,
                    &command,
                ))
            }
            _ => return None,
        })
    })
}

/// `check`: every guest's configuration, one line each.
fn check(args: &Args) -> ExitCode {
    let s = match load(args) {
        Ok((s, _, _)) => s,
        Err(e) => return PROGRAM.fail(&e),
    };
    for g in &s.guests {
        let guest = if s.guests.len() > 1 || g.name != config::DEFAULT_GUEST {
            format!(" guest {}:", g.name)
        } else {
            String::new()
        };
        println!(
            "configuration ok:{guest} witness {} (id {}) on {}, probing {:?}, primary {}, standby {}, policy {}",
            s.node, g.id, g.listen, g.probe.kind, g.primary, g.standby, g.decision.policy
        );
    }
    ExitCode::SUCCESS
}

/// The configuration, its settings and every guest's cluster key (each guest's cluster has
/// its own: with a shared key, one cluster's datagrams would be accepted at another's address).
fn load(args: &Args) -> Result<(Settings, Vec<ClusterKey>, Config), String> {
    let loaded: Sectioned =
        config::load(args.config.as_deref(), &args.sets).map_err(|e| e.to_string())?;
    let s = Settings::from_sections(&loaded).map_err(|e| e.to_string())?;
    let mut keys: Vec<ClusterKey> = Vec::with_capacity(s.guests.len());
    for g in &s.guests {
        let key =
            ClusterKey::load_configured(&g.config, "cluster_key").map_err(|e| e.to_string())?;
        if let Some(i) = keys.iter().position(|k| k == &key) {
            return Err(g
                .config
                .error_at(
                    "cluster_key",
                    &format!(
                        "the same key as guest {}'s: each guest's cluster needs its own key (with one key, a datagram of one cluster would be accepted at another's address)",
                        s.guests[i].name
                    ),
                )
                .to_string());
        }
        keys.push(key);
    }
    Ok((s, keys, loaded.global))
}
