//! `just soak [minutes]`: the cluster on network namespaces under a seeded random nemesis for
//! the whole run (default 10 minutes); prints the markdown report and writes it to
//! `target/soak/report.md`, with the run's configurations and logs in `target/soak/run/`.
//! `HSB_SOAK_SEED=N` replays a schedule; the seed is printed first. `HSB_SOAK_POLICY=heartbeat-only`
//! runs the Remus baseline under the same nemesis (to see what the checks catch). Ctrl-C ends
//! the run early: the current step heals, the report is written, everything is torn down.
//!
//! `hsb-soak sniff` is the datagram sniffer the soak starts in each namespace.

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use hsb_tests::soak::{run, seed_from_env, target_dir, Options};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("sniff") {
        return match hsb_tests::soak::capture::sniff_main() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("hsb-soak sniff: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let minutes: f64 = match args.first().map(|a| a.parse::<f64>()) {
        None => 10.0,
        Some(Ok(m)) if m > 0.0 && m <= 24.0 * 60.0 => m,
        Some(_) => {
            eprintln!("usage: hsb-soak [MINUTES] (0 < MINUTES <= 1440; HSB_SOAK_SEED=N replays a schedule)");
            return ExitCode::from(2);
        }
    };
    if let Err(why) = hsb_tests::netns::available() {
        println!("SKIPPED: the soak needs network namespaces: {why}");
        // Under CI a run that cannot run fails (77, "skipped", would read as a pass).
        return if hsb_tests::under_ci() {
            ExitCode::FAILURE
        } else {
            ExitCode::from(77)
        };
    }
    let seed = seed_from_env();
    let interrupt = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, interrupt.clone()) {
            eprintln!("cannot handle signal {sig}: {e}");
        }
    }
    let policy = std::env::var("HSB_SOAK_POLICY").unwrap_or_else(|_| "client-oriented".into());
    println!("soak seed {seed} (replay: HSB_SOAK_SEED={seed} just soak {minutes})");
    let soak = target_dir().join("soak");
    let exe = std::env::current_exe().unwrap_or_else(|_| "hsb-soak".into());
    let o = Options {
        duration: Duration::from_secs_f64(minutes * 60.0),
        seed,
        dir: soak.join("run"),
        sniffer: exe,
        policy,
        interrupt,
    };
    match run(&o) {
        Ok(report) => {
            let md = report.markdown();
            print!("{md}");
            let path = soak.join("report.md");
            match std::fs::write(&path, &md) {
                Ok(()) => println!("\nreport: {}", path.display()),
                Err(e) => eprintln!("cannot write {}: {e}", path.display()),
            }
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                println!("seed {seed}: FAILED");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            println!("seed {seed}: the soak could not run: {e}");
            ExitCode::FAILURE
        }
    }
}
