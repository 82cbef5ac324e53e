//! `hsb-xen-e2e` (the binary is `src/bin/hsb-xen-e2e.rs`): its arguments and report, and the
//! helpers every part uses to drive the rig (`rig.sh`, commands on its hosts, bounded waits,
//! the daemons' status).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use hsb_tests::parse_status;

mod client;
mod disk;
mod diskbench;
mod etc;
mod remus;
mod run;
mod trace;

use client::{check_puts, client, probe, putter};
use remus::remus;
use run::run;

/// The rig's network namespace (`HSB_RIG_NS`, as rig.sh reads it).
fn ns() -> String {
    std::env::var("HSB_RIG_NS").unwrap_or_else(|_| "hsb-rig".into())
}

/// `program`, to be run in the rig's namespace (`ip netns exec`).
fn ns_cmd(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &ns()]).arg(program);
    c
}

/// `program` in the rig's namespace, killed after `secs` (`timeout`).
fn ns_cmd_within(secs: u64, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = ns_cmd("timeout");
    c.arg(secs.to_string()).arg(program);
    c
}
const GUEST: &str = "hsb-guest";
const GUEST_SERVICE: &str = "10.99.0.21:7000";

/// Failover timing for hosts under TCG emulation, where everything is 10-100 times slower than
/// on hardware: a checkpoint's cooperative suspend alone takes hundreds of milliseconds.
const TCG_TIMING: &str = "\
failover.hb-interval = 100ms
failover.hb-timeout = 1500ms
failover.lease = 6s
failover.lease-max = 6s
failover.ack-lease = 4s
failover.fence-after = 3s
failover.query-timeout = 2s
failover.requery-min = 200ms
failover.requery-max = 2s
failover.report-fresh = 3s
failover.app-down-after = 1500ms
failover.app-down-failures = 3
failover.host-fresh = 1500ms
failover.drift-fixed = 200ms
failover.switchover = false
";

fn rig_sh() -> PathBuf {
    std::env::var_os("HSB_RIG_SH").map_or_else(hsb_tests::xenrig::script, PathBuf::from)
}

fn log(msg: &str) {
    eprintln!("[xen-e2e {}] {msg}", clock());
}

fn clock() -> String {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let s = START.get_or_init(Instant::now).elapsed().as_secs_f64();
    format!("+{s:6.1}s")
}

/// `rig.sh ARGS...`: output and success.
fn rig(args: &[&str]) -> Result<String, String> {
    let out = Command::new("bash")
        .arg(rig_sh())
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("rig.sh {}: {e}", args.join(" ")))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!(
            "rig.sh {} failed ({}): {}",
            args.join(" "),
            out.status,
            text.trim()
        ))
    }
}

/// Run a shell command in host `n`'s dom0.
fn on(n: u8, cmd: &str) -> Result<String, String> {
    rig(&["run", &n.to_string(), cmd])
}

/// Like [`on`], giving up after `secs` (for polls, which are retried).
fn on_quick(n: u8, cmd: &str, secs: u32) -> Result<String, String> {
    rig(&["run", "-t", &secs.to_string(), &n.to_string(), cmd])
}

/// Poll `f` every `every` until it returns `Some`, for at most `limit`.
fn wait<T>(
    what: &str,
    limit: Duration,
    every: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Result<T, String> {
    let t = Instant::now();
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if t.elapsed() > limit {
            return Err(format!("timed out after {limit:?} waiting for {what}"));
        }
        std::thread::sleep(every);
    }
}

/// A daemon's status on host `n`, with its exit status as `health` (0 healthy, 1 degraded, 2
/// down: `status` answers with the daemon's health, so a degraded daemon, such as an activated
/// replica without a standby of its own, exits 1 and still answers; 3, unreachable, is `None`).
fn status(n: u8, daemon: &str) -> Option<std::collections::HashMap<String, String>> {
    status_of(n, daemon, &format!("/etc/hsb/{}.conf", &daemon[4..]))
}

/// [`status`] of the daemon configured by `conf`.
fn status_of(n: u8, daemon: &str, conf: &str) -> Option<std::collections::HashMap<String, String>> {
    let out = on(n, &format!("{daemon} status -c {conf}; echo \"health $?\"")).ok()?;
    let st = parse_status(&out);
    (st.len() > 1 && st.get("health").is_some_and(|h| h != "3")).then_some(st)
}

fn num(st: &std::collections::HashMap<String, String>, k: &str) -> u64 {
    st.get(k).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// The rig, torn down on drop unless kept.
struct Rig {
    keep: bool,
}

impl Drop for Rig {
    fn drop(&mut self) {
        if self.keep {
            log("--keep: the rig stays up (tests/xen-rig/rig.sh down removes it)");
        } else {
            log("tearing the rig down");
            let _ = rig(&["down"]);
        }
    }
}

/// Exit status when the rig itself could not be brought up (hosts or guest did not boot), so
/// nothing of hsb was exercised: CI tells this apart from an hsb failure (status 1).
const RIG_UNAVAILABLE: u8 = 3;

/// Why a run ended early: the rig could not be brought up, or a step of the run failed.
enum Fail {
    Rig(String),
    Run(String),
}

impl From<String> for Fail {
    fn from(e: String) -> Fail {
        Fail::Run(e)
    }
}

#[derive(Default)]
struct Report {
    lines: Vec<String>,
    ok: bool,
}

impl Report {
    fn add(&mut self, s: impl Into<String>) {
        let s = s.into();
        log(&s);
        self.lines.push(s);
    }
}

/// Which cases a run of the hsb rig covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Protect, F1 (the CI smoke).
    Smoke,
    /// Protect, F2, heal, F1.
    All,
    /// Protect, host 1 isolated while alive (fence, failover), heal (step down).
    Isolate,
    /// Disk write throughput and latency on the rig, replicated and not (issue 14's benchmark).
    DiskBench,
    /// A guest with an ext4 data disk replicated by hsb (issue 14): protect, PUTs fsynced by
    /// the guest, F2 with an incremental disk resync, F1; every acknowledged PUT on the
    /// replica, its file system clean.
    Disk,
    /// A page trace of the guest running redis (issue 16.2), recorded and replayed.
    Trace,
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The whole program (`main`).
pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("probe") {
        return match (args.get(1), args.get(2).and_then(|s| s.parse().ok())) {
            (Some(a), Some(secs)) => probe(a, secs),
            _ => {
                eprintln!("usage: hsb-xen-e2e probe ADDR SECONDS");
                ExitCode::from(2)
            }
        };
    }
    if args.first().map(String::as_str) == Some("redis-load") {
        return match (
            args.get(1),
            args.get(2).and_then(|s| s.parse().ok()),
            args.get(3).and_then(|s| s.parse().ok()),
        ) {
            (Some(a), Some(secs), Some(bytes)) => trace::redis_load(a, secs, bytes),
            _ => {
                eprintln!("usage: hsb-xen-e2e redis-load ADDR SECONDS VALUE_BYTES");
                ExitCode::from(2)
            }
        };
    }
    if let Some(sub @ ("client" | "putter" | "check-puts")) = args.first().map(String::as_str) {
        return match (args.get(1), args.get(2).and_then(|s| s.parse().ok())) {
            (Some(a), Some(n)) => match sub {
                "client" => client(a, n),
                "putter" => putter(a, n),
                _ => check_puts(a, n),
            },
            _ => {
                eprintln!(
                    "usage: hsb-xen-e2e {sub} ADDR {}",
                    if sub == "check-puts" {
                        "LAST"
                    } else {
                        "SECONDS"
                    }
                );
                ExitCode::from(2)
            }
        };
    }
    let mode = if args.iter().any(|a| a == "smoke") {
        Mode::Smoke
    } else if args.iter().any(|a| a == "isolate") {
        Mode::Isolate
    } else if args.iter().any(|a| a == "disk") {
        Mode::Disk
    } else if args.iter().any(|a| a == "disk-bench") {
        Mode::DiskBench
    } else if args.iter().any(|a| a == "trace") {
        Mode::Trace
    } else {
        Mode::All
    };
    let baseline = args.iter().any(|a| a == "remus");
    let keep = args.iter().any(|a| a == "--keep");
    if let Some(bad) = args.iter().find(|a| {
        !matches!(
            a.as_str(),
            "smoke" | "all" | "isolate" | "disk" | "disk-bench" | "trace" | "remus" | "--keep"
        ) && (mode != Mode::Trace || trace::trace_arg(a).is_none())
    }) {
        eprintln!("hsb-xen-e2e: unknown argument '{bad}'; usage: hsb-xen-e2e [smoke|all|isolate|disk|disk-bench|trace [CHECKPOINTS, 2 to 10000] [bench|values=BYTES, 16 to 65536] [period=MS, 10 to 10000]|remus] [--keep]");
        return ExitCode::from(2);
    }
    let started = Instant::now();
    let result = if baseline && mode == Mode::Disk {
        remus::remus_disk(keep).map_err(Fail::Run)
    } else if baseline {
        remus(keep).map_err(Fail::Run)
    } else if mode == Mode::Disk {
        disk::run_disk(keep)
    } else if mode == Mode::DiskBench {
        diskbench::run_disk_bench(keep)
    } else if mode == Mode::Trace {
        let t = trace::TraceOpts::from_args(&args);
        trace::run_trace(keep, t.checkpoints, t.period_ms, t.load)
    } else {
        run(mode, keep)
    };
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# hsb on the two-host Xen rig ({}; {:.0} s)\n",
        if baseline && mode == Mode::Disk {
            "xl remus baseline, a guest with an ext4 data disk"
        } else if baseline {
            "xl remus baseline"
        } else {
            match mode {
                Mode::All => "hsb, all cases",
                Mode::Smoke => "hsb, smoke",
                Mode::Isolate => "hsb, host 1 isolated",
                Mode::Disk => "hsb, a guest with a replicated ext4 disk",
                Mode::DiskBench => "hsb, disk write benchmark",
                Mode::Trace => "a page trace of the guest running redis",
            }
        },
        started.elapsed().as_secs_f64()
    );
    let code = match result {
        Ok(rep) => {
            for l in &rep.lines {
                let _ = writeln!(md, "- {l}");
            }
            let _ = writeln!(
                md,
                "\nResult: {}",
                if rep.ok {
                    "all correct"
                } else {
                    "WRONG outcomes above"
                }
            );
            if rep.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(Fail::Run(e)) => {
            let _ = writeln!(md, "FAILED: {e}");
            ExitCode::FAILURE
        }
        Err(Fail::Rig(e)) => {
            let _ = writeln!(md, "RIG UNAVAILABLE (nothing of hsb was tried): {e}");
            ExitCode::from(RIG_UNAVAILABLE)
        }
    };
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/xen-rig/e2e-report.md"
    ));
    let _ = std::fs::write(&path, &md);
    println!("{md}");
    eprintln!("report: {}", path.display());
    code
}
