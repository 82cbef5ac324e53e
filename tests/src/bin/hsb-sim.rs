//! hsb-sim: the seeded simulator of the daemons' real nodes (see `hsb_tests::sim`).
//!
//! ```text
//! hsb-sim [--seeds N] [--first-seed S] [--fault F2] [--policy heartbeat-only]   # sweep, markdown
//! hsb-sim --fault F2 --policy heartbeat-only --seed 1234 [--trace]              # one run, exactly
//! hsb-sim --fault F13 --set slow-standby=lease                                  # another setting
//! ```

use std::process::ExitCode;

use hsb_common::decision::Policy;
use hsb_tests::sim::{run_one_with, run_sweep_with, sim_config, Fault, Outcome};

const USAGE: &str = "usage: hsb-sim [--seeds N] [--first-seed S] [--fault F1..F14-80] [--policy client-oriented|heartbeat-only|ping-node] [--seed S [--trace]] [--set key=value]...";

fn main() -> ExitCode {
    let mut seeds = 100u64;
    let mut first = 0u64;
    let mut faults: Vec<Fault> = Fault::ALL.to_vec();
    let mut policies: Vec<Policy> = Policy::ALL.to_vec();
    let mut one: Option<u64> = None;
    let mut trace = false;
    let mut sets: Vec<(String, String)> = vec![];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |what: &str| match args.next() {
            Some(v) => Ok(v),
            None => Err(format!("{a} needs {what}")),
        };
        let r: Result<(), String> = match a.as_str() {
            "--seeds" => value("a number").and_then(|v| {
                v.parse()
                    .map(|n| seeds = n)
                    .map_err(|_| format!("--seeds {v}: not a number"))
            }),
            "--first-seed" => value("a number").and_then(|v| {
                v.parse()
                    .map(|n| first = n)
                    .map_err(|_| format!("--first-seed {v}: not a number"))
            }),
            "--seed" => value("a number").and_then(|v| {
                v.parse()
                    .map(|n| one = Some(n))
                    .map_err(|_| format!("--seed {v}: not a number"))
            }),
            "--fault" => value("F1..F12, F13, F14-20, F14-50 or F14-80").and_then(|v| {
                Fault::parse(&v).map(|f| faults = vec![f]).ok_or(format!(
                    "--fault {v}: expected F1..F12, F13, F14-20, F14-50 or F14-80"
                ))
            }),
            "--policy" => value("a policy").and_then(|v| {
                Policy::parse(&v).map(|p| policies = vec![p]).ok_or(format!(
                    "--policy {v}: expected client-oriented, heartbeat-only or ping-node"
                ))
            }),
            "--trace" => {
                trace = true;
                Ok(())
            }
            "--set" => value("key=value").and_then(|v| match v.split_once('=') {
                Some((k, val)) => {
                    sets.push((k.to_string(), val.to_string()));
                    Ok(())
                }
                None => Err(format!("--set {v}: expected key=value")),
            }),
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => Err(format!("unknown argument {other}")),
        };
        if let Err(e) = r {
            eprintln!("hsb-sim: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    let sets: Vec<(&str, &str)> = sets.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    if let Some(seed) = one {
        let mut bad = false;
        for &f in &faults {
            for &p in &policies {
                let mut cfg = sim_config(p);
                if let Err(e) = cfg.set_many(&sets) {
                    eprintln!("hsb-sim: --set: {e}");
                    return ExitCode::from(2);
                }
                let r = run_one_with(f, cfg, seed, trace);
                for l in &r.trace {
                    println!("{l}");
                }
                println!(
                    "{f} {p} seed {seed} [{}]: {:?}{} | split-brain {}ms | unserved {}ms | decided {} | lost {}",
                    r.variant,
                    r.outcome,
                    if r.why.is_empty() { String::new() } else { format!(" ({})", r.why) },
                    r.split_ms,
                    r.unserved_ms,
                    match (&r.decision, r.decide_ms) {
                        (Some(d), Some(ms)) => format!("{d} after {ms}ms"),
                        _ => "nothing".into(),
                    },
                    r.lost
                );
                bad |= p == Policy::ClientOriented && r.outcome != Outcome::Correct;
            }
        }
        return if bad {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }
    let report = match run_sweep_with(
        &faults,
        &policies,
        first..first.saturating_add(seeds),
        &sets,
    ) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hsb-sim: --set: {e}");
            return ExitCode::from(2);
        }
    };
    let with: Vec<String> = sets.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!(
        "## hsb-sim: {seeds} seeds from {first} per fault and policy{}\n",
        if with.is_empty() {
            String::new()
        } else {
            format!(", with {}", with.join(" "))
        }
    );
    print!("{}", report.to_markdown());
    let co_bad = report
        .rows
        .iter()
        .any(|r| r.policy == Policy::ClientOriented && (r.wrong > 0 || r.split_ms > 0));
    if co_bad {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
