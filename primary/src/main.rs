//! hsb-primary: runs beside the protected domain, checkpoints it every period and streams the
//! checkpoints to hsb-standby; output of checkpoint N leaves only after ack(N).
//!
//! The command line. The daemon is three parts (STYLE.md, "the daemon shape"): the node
//! (`hsb_primary::node`, a pure state machine that decides everything), the shell around it
//! (`daemon.rs`: one single-threaded mio loop, the replication connection in `repl.rs`, the
//! domain in `guest.rs`) and what it tells (`status.rs`); `start.rs` applies the host state's
//! restart rule first.

mod backend;
mod daemon;
mod guest;
mod repl;
mod start;
mod status;

use std::process::ExitCode;

use hsb_common::cli::Args;
use hsb_common::config::{reference_markdown, Config};
use hsb_common::key::ClusterKey;
use hsb_common::signals::{SignalHandler, SignalSource};
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
(no standby acknowledging, output held, or released under witness leases); 2 fenced or stepped
down; 3 unreachable (no answer on the control socket, or it refuses us); 4 usage or
configuration error. Other commands exit 1 on failure and 2 on a usage error.

Logging: HSB_LOG=debug|info|warn (default info).";

fn main() -> ExitCode {
    let args = match hsb_common::cli::start(
        "hsb-primary",
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
                let backend = match &s.xen {
                    Some(x) => format!("xen {}", x.domain),
                    None => format!("model {} pages", s.model_pages),
                };
                println!(
                    "configuration ok: standby {}, epoch {:?}, {backend}",
                    s.standby, s.epoch_period
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        Some("status") => status(&args),
        Some("keygen") => match args.rest.first().map(std::path::PathBuf::from) {
            Some(p) => match ClusterKey::generate(&p) {
                Ok(_) => {
                    println!(
                        "wrote a new cluster key to {} (mode 0600); copy it to every hsb node",
                        p.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e.to_string()),
            },
            None => fail("keygen needs a path: hsb-primary keygen /etc/hsb/cluster.key"),
        },
        Some("xen-info") => {
            ExitCode::from(hsb_domain::xen::info_command("hsb-primary", &args.rest))
        }
        Some("config-reference") => {
            print!("{}", reference_markdown(schema()));
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("hsb-primary: unknown command '{other}'\n\n{USAGE}");
            ExitCode::from(2)
        }
        None => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("hsb-primary: {msg}");
    ExitCode::FAILURE
}

fn load(args: &Args) -> Result<(Settings, ClusterKey, Config), String> {
    let cfg =
        Config::load(schema(), args.config.as_deref(), &args.sets).map_err(|e| e.to_string())?;
    let s = Settings::from_config(&cfg).map_err(|e| e.to_string())?;
    let key = ClusterKey::load_configured(&cfg, "cluster_key").map_err(|e| e.to_string())?;
    Ok((s, key, cfg))
}

fn status(args: &Args) -> ExitCode {
    if !args.rest.is_empty() {
        return ExitCode::from(hsb_common::ctl::cli(
            "hsb-primary",
            args,
            schema(),
            "/run/hsb/primary.sock",
            &args.rest.join(" "),
        ));
    }
    ExitCode::from(hsb_common::ctl::status_cli(
        "hsb-primary",
        args,
        schema(),
        "/run/hsb/primary.sock",
    ))
}

fn run(args: &Args) -> ExitCode {
    hsb_common::logging::init("primary");
    // Before the slow start-up (a Xen guest's memory is mapped then): a SIGTERM sent meanwhile
    // waits in the self-pipe and stops the loop at its first turn.
    let signals = match SignalSource::install() {
        Ok(s) => s,
        Err(e) => return fail(&format!("cannot install signal handlers: {e}")),
    };
    let (mut s, key, cfg) = match load(args) {
        Ok(v) => v,
        Err(e) => return fail(&e),
    };
    let start = match start::start(&mut s) {
        Ok(st) => st,
        Err(e) => return fail(&e),
    };
    let signals = SignalHandler::new(signals, args, cfg);
    match daemon::Daemon::new(s, key, start).and_then(|d| d.run(signals)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string()),
    }
}
