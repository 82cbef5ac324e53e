//! `just faults`: every fault of the suite under the client-oriented policy and the
//! heartbeat-only baseline, on network namespaces; prints a markdown table and writes
//! `target/faults/report.{md,json}`. `hsb-faults F13 F14-50` runs only those.

use std::process::ExitCode;

use hsb_tests::faults::{markdown, run_case, write_report, Fault};

fn main() -> ExitCode {
    if let Err(why) = hsb_tests::netns::available() {
        println!("SKIPPED: the fault suite needs network namespaces: {why}");
        // Under CI a suite that cannot run fails (77, "skipped", would read as a pass).
        return if hsb_tests::under_ci() {
            ExitCode::FAILURE
        } else {
            ExitCode::from(77)
        };
    }
    // `hsb-faults --bench-link [seconds]`: BENCHMARKS.md's shaped replication link table.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "--bench-link") {
        // `--bench-link SECONDS MBIT PAGES`: one row only.
        let secs = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(20);
        let mut cases = vec![
            (0, 2_000),
            (100, 2_000),
            (10, 2_000),
            (0, 50_000),
            (100, 50_000),
            (10, 50_000),
        ];
        if let (Some(m), Some(p)) = (
            args.get(2).and_then(|s| s.parse().ok()),
            args.get(3).and_then(|s| s.parse().ok()),
        ) {
            cases = vec![(m, p)];
        }
        let mut rows = vec![];
        for (mbit, pages) in cases {
            eprintln!("shaped link: {mbit} Mbit/s, {pages} pages/s, {secs} s");
            match hsb_tests::faults::shaped_link_bench(mbit, pages, secs) {
                Ok(r) => rows.push(r),
                Err(e) => {
                    eprintln!("shaped link {mbit} Mbit/s: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        print!("{}", hsb_tests::faults::link_bench_markdown(&rows));
        return ExitCode::SUCCESS;
    }
    // `hsb-faults F5 F8`: only those faults (every variant of each), both policies; `F14`
    // runs F14-20, F14-50 and F14-80, `F14-50` that one.
    let only: Vec<String> = std::env::args().skip(1).collect();
    let mut outcomes = vec![];
    let mut failed: Vec<String> = vec![];
    for fault in Fault::ALL {
        let number = fault.name().split(' ').next().unwrap_or_default();
        let named = |o: &String| {
            number == o
                || number
                    .strip_prefix(o.as_str())
                    .is_some_and(|rest| rest.starts_with('-'))
        };
        if !only.is_empty() && !only.iter().any(named) {
            continue;
        }
        for policy in ["client-oriented", "heartbeat-only"] {
            // HSB_FAULTS_POLICY=client-oriented: one policy only (for debugging a case).
            if std::env::var("HSB_FAULTS_POLICY").is_ok_and(|p| p != policy) {
                continue;
            }
            eprintln!("running {} under {policy}", fault.name());
            // A case that panics (a daemon that never comes up) has cleaned up by the time the
            // panic is caught; the others still run.
            let r = std::panic::catch_unwind(|| run_case(fault, policy))
                .unwrap_or_else(|_| Err("the case panicked (see above)".into()));
            match r {
                Ok(o) => outcomes.push(o),
                Err(e)
                    if e.starts_with("time namespaces unavailable") && !hsb_tests::under_ci() =>
                {
                    println!("SKIPPED: {} under {policy}: {e}", fault.name());
                }
                Err(e) => {
                    eprintln!("{} under {policy}: could not run: {e}", fault.name());
                    failed.push(format!("{} under {policy}: {e}", fault.name()));
                }
            }
        }
    }
    print!("{}", markdown(&outcomes));
    match write_report(&outcomes) {
        Ok(dir) => println!("\nreport: {}/report.md and report.json", dir.display()),
        Err(e) => eprintln!("cannot write the report: {e}"),
    }
    let wrong = outcomes
        .iter()
        .filter(|o| {
            o.policy == "client-oriented" && (!o.correct || (o.healable && o.healed_ms.is_none()))
        })
        .count();
    for f in &failed {
        println!("could not run: {f}");
    }
    if !failed.is_empty() {
        return ExitCode::FAILURE;
    }
    if wrong > 0 {
        eprintln!("{wrong} wrong outcome(s) under the client-oriented policy");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
