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
mod hosts;
mod node;
// The engine's API is complete (status, limits, defaults); the daemon uses part of it.
#[allow(dead_code, unused_imports)]
mod probe;
mod state;
mod status;

use std::process::ExitCode;

use hsb_common::cli::Args;
use hsb_common::config::{reference_markdown, Config};
use hsb_common::key::ClusterKey;
use hsb_common::signals::{SignalHandler, SignalSource};

use config::{schema, Settings};
use daemon::Daemon;

const USAGE: &str = "\
hsb-witness: probe the protected application as its clients do, and vote on failovers

usage:
  hsb-witness run -c FILE [--set key=value]...    run the witness
  hsb-witness status [-c FILE | --control PATH] [--json]
                                                  what it sees, what it granted (--json: as one JSON object)
  hsb-witness check -c FILE [--set key=value]...  validate the configuration and key, then exit
  hsb-witness config-reference                    print every configuration key
  hsb-witness --version

Exit status of `status`, for health checks: 0 healthy (the application answers and both
daemons answer); 1 degraded (no probe result yet, the application failing, or a daemon out of
reach); 2 the application is down (or failed inside the guest); 3 unreachable (no answer on the
control socket, or it refuses us); 4 usage or configuration error. Other commands exit 1 on
failure and 2 on a usage error.

Logging: HSB_LOG=debug|info|warn (default info).";

fn main() -> ExitCode {
    let args = match hsb_common::cli::start(
        "hsb-witness",
        env!("CARGO_PKG_VERSION"),
        USAGE,
        &["json"],
        &[],
    ) {
        Ok(a) => a,
        Err(code) => return code,
    };
    match args.command.as_deref() {
        Some("run") => run(&args),
        Some("check") => match load(&args) {
            Ok((s, _, _)) => {
                println!(
                    "configuration ok: witness {} (id {}) on {}, probing {:?}, primary {}, standby {}, policy {}",
                    s.node, s.id, s.listen, s.probe.kind, s.primary, s.standby, s.decision.policy
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("hsb-witness: {e}");
                ExitCode::FAILURE
            }
        },
        Some("status") => ExitCode::from(hsb_common::ctl::status_cli_with(
            "hsb-witness",
            &args,
            schema(),
            config::control_path,
            || config::find_control(std::path::Path::new(config::RUN_DIR)),
        )),
        Some("config-reference") => {
            print!("{}", reference_markdown(schema()));
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("hsb-witness: unknown command '{other}'\n\n{USAGE}");
            ExitCode::from(2)
        }
        None => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn load(args: &Args) -> Result<(Settings, ClusterKey, Config), String> {
    let cfg =
        Config::load(schema(), args.config.as_deref(), &args.sets).map_err(|e| e.to_string())?;
    let s = Settings::from_config(&cfg).map_err(|e| e.to_string())?;
    let key = ClusterKey::load_configured(&cfg, "cluster_key").map_err(|e| e.to_string())?;
    Ok((s, key, cfg))
}

fn run(args: &Args) -> ExitCode {
    hsb_common::logging::init("witness");
    let fail = |e: &str| {
        eprintln!("hsb-witness: {e}");
        ExitCode::FAILURE
    };
    // Before the start-up: a SIGTERM sent meanwhile waits in the self-pipe and stops the loop
    // at its first turn.
    let signals = match SignalSource::install() {
        Ok(s) => s,
        Err(e) => return fail(&format!("cannot install signal handlers: {e}")),
    };
    let (s, key, cfg) = match load(args) {
        Ok(v) => v,
        Err(e) => return fail(&e),
    };
    let signals = SignalHandler::new(signals, args, cfg);
    match Daemon::new(s, key).and_then(|w| w.run(signals)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string()),
    }
}
