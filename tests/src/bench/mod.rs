//! `hsb-bench` (the binary is `src/bin/hsb-bench.rs`): the run of the sections, the report
//! it writes, and the clean-up of child daemons on every path.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use hsb_common::PAGE_SIZE;

mod daemons;
mod disk;
mod failover;
mod latency;
mod links;
mod machine;
mod memory;
mod pause;
mod pipeline;
mod stats;
mod trace;

use daemons::section_1b;
use latency::section_3;
use machine::{header, loadavg, Cpu};
use memory::section_4;
use pause::section_2;
use pipeline::section_1a;
use stats::{met, ms2, pct, table, Pct};

/// 64 MiB of 4 KiB pages.
const MODEL_PAGES: u64 = (64 << 20) / PAGE_SIZE as u64;
const MIB: f64 = (1u64 << 20) as f64;
const GIB: f64 = (1u64 << 30) as f64;
/// Whole-run bound: the watchdog kills the daemons and exits after this.
const WATCHDOG: Duration = Duration::from_secs(900);

type R<T> = Result<T, String>;

trait Ctx<T> {
    fn ctx(self, what: &str) -> R<T>;
}

impl<T, E: std::fmt::Display> Ctx<T> for Result<T, E> {
    fn ctx(self, what: &str) -> R<T> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

/// The whole run (`main`).
pub fn main() -> std::process::ExitCode {
    // The raw TCP stream of sections 7 and 8, run by this binary inside a namespace.
    let args: Vec<String> = std::env::args().collect();
    if let Some(r) = links::raw_subcommand(&args) {
        return match r {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("hsb-bench {}: {e}", args[1]);
                std::process::ExitCode::FAILURE
            }
        };
    }
    // The primary logs every checkpoint's pause at debug level: exact pauses for section 2.
    // Set before any thread starts; the daemons inherit it.
    if std::env::var_os("HSB_LOG").is_none() {
        std::env::set_var("HSB_LOG", "info,hsb_primary=debug");
    }
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        kill_children();
        default_hook(info);
    }));
    thread::spawn(|| {
        thread::sleep(WATCHDOG);
        eprintln!("hsb-bench: watchdog: still running after {WATCHDOG:?}; killing the daemons");
        kill_children();
        std::process::exit(3);
    });

    let started = Instant::now();
    let only = std::env::var("HSB_BENCH_ONLY").unwrap_or_default();
    let run = |sec: &str| only.is_empty() || only.split(',').any(|s| s.trim() == sec);
    let mut out = Report::default();
    out.emit(&header());

    let mut raw = None;
    let mut mem_rows = vec![];
    let run_cpu = Cpu::now();
    if run("1") {
        progress("1a: library pipeline and raw TCP");
        let cpu = Cpu::now();
        match section_1a() {
            Ok((text, r)) => {
                out.section(&text, cpu);
                raw = Some(r);
            }
            Err(e) => out.emit(&format!("### 1a. Library pipeline\n\nfailed: {e}\n\n")),
        }
        progress("1b: daemons at full dirty rate");
        let cpu = Cpu::now();
        let text = section_1b(raw, &mut mem_rows).unwrap_or_else(failed("1b. Daemons"));
        out.section(&text, cpu);
    }
    if run("2") {
        progress("2: pause per epoch");
        let cpu = Cpu::now();
        out.section(
            &section_2().unwrap_or_else(failed("2. Pause per epoch")),
            cpu,
        );
    }
    if run("3") {
        progress("3: reply latency");
        let cpu = Cpu::now();
        let text = section_3(&mut mem_rows).unwrap_or_else(failed("3. Reply latency"));
        out.section(&text, cpu);
    }
    if run("4") {
        progress("4: resident memory");
        out.emit(&section_4(mem_rows));
    }
    if run("7") || run("8") {
        progress("7, 8: checkpoints on shaped links (network namespaces, htb)");
        let cpu = Cpu::now();
        let text = links::sections_7_8().unwrap_or_else(failed("7. Checkpoints on shaped links"));
        out.section(&text, cpu);
    }
    if run("5") {
        progress("5: failover time (up to 40 runs, a fresh cluster each)");
        let cpu = Cpu::now();
        let text = failover::section_5().unwrap_or_else(failed("5. Failover time"));
        out.section(&text, cpu);
    }
    if run("9") {
        progress("9: disk replication");
        let cpu = Cpu::now();
        let text = disk::section_9().unwrap_or_else(failed("9. Disk replication"));
        out.section(&text, cpu);
    }
    if run("11") {
        progress("11: page encoding on recorded traces");
        let cpu = Cpu::now();
        let text =
            trace::section_11().unwrap_or_else(failed("11. Page encoding on recorded traces"));
        out.section(&text, cpu);
    }
    out.emit(&format!(
        "Run took {:.0} s; other processes used {:.0}% of the machine's CPU time during it; load average at the end: {}.\n",
        started.elapsed().as_secs_f64(),
        Cpu::now().others_since(&run_cpu),
        loadavg()
    ));

    let path = results_path();
    match std::fs::write(&path, &out.md) {
        Ok(()) => progress(&format!("results written to {}", path.display())),
        Err(e) => eprintln!("hsb-bench: cannot write {}: {e}", path.display()),
    }
    std::process::ExitCode::SUCCESS
}

fn failed(what: &'static str) -> impl Fn(String) -> String {
    move |e| format!("### {what}\n\nfailed: {e}\n\n")
}

fn progress(s: &str) {
    eprintln!("hsb-bench: {s}");
}

#[derive(Default)]
struct Report {
    md: String,
}

impl Report {
    /// Emit a section followed by how busy other processes kept the machine meanwhile.
    fn section(&mut self, text: &str, since: Cpu) {
        self.emit(text);
        let others = Cpu::now().others_since(&since);
        self.emit(&format!(
            "_Other processes used {others:.0}% of the machine's CPU time during this section._\n\n"
        ));
    }

    fn emit(&mut self, text: &str) {
        print!("{text}");
        let _ = std::io::stdout().flush();
        self.md.push_str(text);
    }
}

/// `target/bench-results.md`, next to the `release` directory holding this binary.
fn results_path() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent()?.parent().map(|p| p.join("bench-results.md")))
        .unwrap_or_else(|| PathBuf::from("target/bench-results.md"))
}

/// Kill (SIGKILL) every child process of this process, by pid.
fn kill_children() {
    let me = std::process::id();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return;
    };
    let mut pids = vec![];
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command name in parentheses: state, ppid, ...
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        if rest.split_whitespace().nth(1).and_then(|p| p.parse().ok()) == Some(me) {
            pids.push(pid.to_string());
        }
    }
    if !pids.is_empty() {
        let _ = Command::new("kill").arg("-9").args(&pids).status();
    }
}
