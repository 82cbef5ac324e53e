//! hsb-witness: runs on client machines, probes the protected application the way clients use
//! it, and reports to the standby and the primary. This build loads and checks its
//! configuration; reports, votes and leases arrive with the failover milestone.

mod config;

use std::process::ExitCode;

use hsb_common::cli::Args;
use hsb_common::config::{reference_markdown, Config};
use hsb_common::key::ClusterKey;

use config::{Settings, SCHEMA};

const USAGE: &str = "\
hsb-witness: probe the protected application as its clients do and report to hsb

usage:
  hsb-witness check -c FILE [--set key=value]...  validate the configuration and key, then exit
  hsb-witness run -c FILE [--set key=value]...    (this build: validates, then says what is missing)
  hsb-witness config-reference                    print every configuration key
  hsb-witness --version";

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1), &[]) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("hsb-witness: {e}");
            return ExitCode::from(2);
        }
    };
    if args.flag("help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if args.flag("version") {
        println!("hsb-witness {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    match args.command.as_deref() {
        Some(cmd @ ("check" | "run")) => match load(&args) {
            Ok(s) => {
                println!(
                    "configuration ok: witness {} (id {}) on {}, probing `{}`, reporting to primary {} and standby {}",
                    s.node, s.id, s.listen, s.probe, s.primary, s.standby
                );
                if cmd == "run" {
                    eprintln!("hsb-witness: this build only validates its configuration; the witness protocol is not implemented yet");
                    return ExitCode::FAILURE;
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("hsb-witness: {e}");
                ExitCode::FAILURE
            }
        },
        Some("config-reference") => {
            print!("{}", reference_markdown(SCHEMA));
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

fn load(args: &Args) -> Result<Settings, String> {
    let cfg =
        Config::load(SCHEMA, args.config.as_deref(), &args.sets).map_err(|e| e.to_string())?;
    let s = Settings::from_config(&cfg).map_err(|e| e.to_string())?;
    ClusterKey::load(&s.cluster_key).map_err(|e| e.to_string())?;
    Ok(s)
}
