//! `hsb-xen-e2e trace [N]` (`just xen-trace`): record a page trace of the rig's guest running a
//! real workload, redis-server under redis-benchmark from the rig's namespace
//! (`tests/xen-rig/build-trace-guest.sh` builds that guest), with `hsb-page-trace` in host 1's
//! dom0, then bring it here and replay it through the real checkpoint path, plain and encoded.
//! The trace lands in `target/xen-rig/trace/redis.hsbtrace`; `tests/data/xen-rig-redis.hsbtrace`
//! is one such recording, kept as test data.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hsb_domain::codec_policy::CodecMode;
use hsb_tests::pagetrace::{replay_file, ReplayStats};

use super::run::boot;
use super::{log, ns_cmd, ns_cmd_within, rig, wait, Fail, KillOnDrop, Report, GUEST};

const GUEST_IP: &str = "10.99.0.21";
/// The rig's checkpoint period under TCG (`checkpoint_period` of the rig's primary): the default.
pub(super) const PERIOD_MS: u64 = 200;
/// How long redis-benchmark runs before the recording starts.
const WARM_UP: Duration = Duration::from_secs(30);
/// redis-benchmark's requests: keys, hash fields and counters drawn from 100,000 (bounded
/// memory: no list grows without end), 64-byte values, four clients.
const BENCH_ARGS: &[&str] = &[
    "-r",
    "100000",
    "-d",
    "64",
    "-c",
    "4",
    "-l",
    "-q",
    "-t",
    "set,get,incr,hset",
];

fn rig_dir() -> PathBuf {
    std::env::var_os("HSB_RIG_DIR").map_or_else(
        || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/xen-rig")),
        PathBuf::from,
    )
}

/// Whether the guest's redis answers PING (from the rig's namespace).
fn redis_answers() -> bool {
    ns_cmd("redis-cli")
        .args(["-h", GUEST_IP, "ping"])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("PONG"))
}

/// One replay's line of the report.
fn line(what: &str, s: &ReplayStats, plain: &ReplayStats) -> String {
    format!(
        "{what}: {} checkpoints after the first, {} pages ({:.1} MiB of pages), {:.2} MiB on the wire, {:.1}x fewer bytes than plain, {} of them encoded",
        s.checkpoints - 1,
        s.pages,
        s.page_bytes as f64 / 1048576.0,
        s.wire_bytes as f64 / 1048576.0,
        plain.wire_bytes as f64 / s.wire_bytes.max(1) as f64,
        s.encoded
    )
}

/// One argument of `trace`, within its bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TraceArg {
    /// Checkpoints to record (2 to 10,000).
    Count(u64),
    /// `bench`: redis-benchmark's load.
    Bench,
    /// `values=B`: random values of up to B bytes (16 to 65,536).
    Values(usize),
    /// `period=MS`: a checkpoint every MS milliseconds (10 to 10,000).
    Period(u64),
}

/// `a` as an argument of `trace`, if it is one (and within its bounds).
pub(super) fn trace_arg(a: &str) -> Option<TraceArg> {
    if a == "bench" {
        return Some(TraceArg::Bench);
    }
    if let Some(v) = a.strip_prefix("values=") {
        return within(v, 16, 65536).map(TraceArg::Values);
    }
    if let Some(v) = a.strip_prefix("period=") {
        return within(v, 10, 10_000).map(TraceArg::Period);
    }
    within(a, 2, 10_000).map(TraceArg::Count)
}

/// `v` as a number from `lo` to `hi`.
fn within<T: std::str::FromStr + PartialOrd>(v: &str, lo: T, hi: T) -> Option<T> {
    v.parse().ok().filter(|x| (lo..=hi).contains(x))
}

/// What `trace [N] [bench|values=B] [period=MS]` asks (the first of each kind counts), with
/// the defaults for the rest.
pub(super) struct TraceOpts {
    pub(super) checkpoints: u64,
    pub(super) period_ms: u64,
    pub(super) load: Load,
}

impl TraceOpts {
    /// From the command line's arguments; those that are not `trace`'s are left alone.
    pub(super) fn from_args(args: &[String]) -> TraceOpts {
        let (mut count, mut period, mut values, mut bench) = (None, None, None, false);
        for t in args.iter().filter_map(|a| trace_arg(a)) {
            match t {
                TraceArg::Count(n) => _ = count.get_or_insert(n),
                TraceArg::Period(ms) => _ = period.get_or_insert(ms),
                TraceArg::Values(b) => _ = values.get_or_insert(b),
                TraceArg::Bench => bench = true,
            }
        }
        TraceOpts {
            checkpoints: count.unwrap_or(300),
            period_ms: period.unwrap_or(PERIOD_MS),
            load: if bench {
                Load::Benchmark
            } else {
                Load::Random(values.unwrap_or(1024))
            },
        }
    }
}

/// The load on the guest's redis while a trace is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Load {
    /// redis-benchmark (`BENCH_ARGS`): 64-byte values of one repeated letter.
    Benchmark,
    /// [`redis_load`]: random printable values of up to this many bytes.
    Random(usize),
}

impl Load {
    /// The trace's file name here, without the period and extension.
    fn file(self) -> String {
        match self {
            Load::Benchmark => "redis-benchmark".into(),
            Load::Random(b) => format!("redis-random-{b}"),
        }
    }

    fn describe(self) -> String {
        match self {
            Load::Benchmark => format!("redis-benchmark {}", BENCH_ARGS.join(" ")),
            Load::Random(b) => format!(
                "hsb-xen-e2e redis-load (4 connections: 40% SET of one of 20,000 keys to random printable values of {} to {b} bytes, 30% GET, 20% INCR, 10% HSET)",
                b / 4
            ),
        }
    }
}

/// Record `checkpoints` checkpoints, one every `period_ms`, under `load`.
pub(super) fn run_trace(
    keep: bool,
    checkpoints: u64,
    period_ms: u64,
    load: Load,
) -> Result<Report, Fail> {
    let mut rep = Report::default();
    let script = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/xen-rig/build-trace-guest.sh"
    ));
    let st = Command::new("bash")
        .arg(&script)
        .status()
        .map_err(|e| Fail::Rig(format!("{}: {e}", script.display())))?;
    if !st.success() {
        return Err(Fail::Rig(format!("{} failed ({st})", script.display())));
    }
    let (_rig, dir, _bin) = boot(false, keep, &mut rep)?;
    let rd = rig_dir();
    for (src, dst) in [
        (
            "guest-redis-initrd.cpio",
            "/var/lib/hsb-rig/guest-redis-initrd.cpio",
        ),
        ("guest-redis.cfg", "/etc/xen/hsb-guest-redis.cfg"),
    ] {
        rig(&["push", "1", &rd.join(src).to_string_lossy(), dst]).map_err(Fail::Rig)?;
    }
    let t = Instant::now();
    rig(&["guest-up", "1", "/etc/xen/hsb-guest-redis.cfg"]).map_err(Fail::Rig)?;
    wait(
        "redis in the guest to answer PING",
        Duration::from_secs(120),
        Duration::from_secs(1),
        || redis_answers().then_some(()),
    )
    .map_err(Fail::Rig)?;
    rep.add(format!(
        "guest {GUEST} (PVH, 128 MiB) with redis-server answering on host 1 after {:.0} s",
        t.elapsed().as_secs_f64()
    ));
    // The load runs for the warm-up and the recording, and stops by itself after that.
    let secs = WARM_UP.as_secs() + checkpoints * (period_ms + 2_000) / 1000 + 120;
    let logf = std::fs::File::create(dir.join("load.log")).map_err(|e| e.to_string())?;
    let mut cmd = match load {
        Load::Benchmark => {
            let mut c = ns_cmd_within(secs, "redis-benchmark");
            c.args(["-h", GUEST_IP]).args(BENCH_ARGS);
            c
        }
        Load::Random(b) => {
            let mut c = ns_cmd_within(secs, std::env::current_exe().map_err(|e| e.to_string())?);
            c.args([
                "redis-load",
                &format!("{GUEST_IP}:6379"),
                &secs.to_string(),
                &b.to_string(),
            ]);
            c
        }
    };
    let _load = KillOnDrop(
        cmd.process_group(0)
            .stdout(logf)
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("the load: {e}"))?,
    );
    log(&format!("{}: warming up for {WARM_UP:?}", load.describe()));
    std::thread::sleep(WARM_UP);
    let keys = ns_cmd("redis-cli")
        .args(["-h", GUEST_IP, "dbsize"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let note = format!(
        "Xen 4.17 rig under QEMU TCG, PVH guest of 128 MiB running redis-server 7.0 under {} from the rig network ({keys} keys when recording began); {checkpoints} checkpoints, one every {period_ms} ms, cooperative suspend as hsb-primary takes them",
        load.describe()
    );
    let t = Instant::now();
    let out = rig(&[
        "run",
        "-t",
        &(checkpoints * (period_ms + 5_000) / 1000 + 120).to_string(),
        "1",
        &format!(
            "hsb-page-trace {GUEST} /tmp/guest.trace --checkpoints {checkpoints} --period {period_ms} --note '{note}' >/tmp/page-trace.out 2>&1; rc=$?; tail -n 3 /tmp/page-trace.out; exit $rc"
        ),
    ])?;
    rep.add(format!(
        "recorded in {:.0} s on host 1:\n```\n{}\n```",
        t.elapsed().as_secs_f64(),
        out.trim()
    ));
    let traces = rd.join("trace");
    std::fs::create_dir_all(&traces).map_err(|e| e.to_string())?;
    let file = traces.join(format!("{}-{period_ms}ms.hsbtrace", load.file()));
    rig(&["pull", "1", "/tmp/guest.trace", &file.to_string_lossy()])?;
    let load_log = std::fs::read_to_string(dir.join("load.log")).unwrap_or_default();
    let last = load_log
        .rsplit(['\r', '\n'])
        .find(|l| !l.trim().is_empty())
        .unwrap_or("(none)")
        .trim()
        .to_string();
    rep.add(format!("the load's last words: {last}"));
    // A trace of a guest whose workload died (redis killed by the guest's OOM killer, say) is
    // not a trace of that workload: the run fails.
    if !redis_answers() {
        return Err(Fail::Run(
            "redis in the guest no longer answers PING after the recording: the trace is not of the workload (the guest's console log may say why)".into(),
        ));
    }
    if load == Load::Benchmark {
        // redis-benchmark's lines say nothing of errors: redis answering is the check.
    } else if !last.contains(" err=0 ") {
        return Err(Fail::Run(format!(
            "the load had errors while the trace was recorded: {last}"
        )));
    }
    interrupted(&mut rep, &traces)?;
    let plain = replay_file(&file, CodecMode::Never, 0)?;
    let enc = replay_file(&file, CodecMode::Always, 0)?;
    let size = std::fs::metadata(&file).map_or(0, |m| m.len());
    rep.add(format!(
        "trace {} ({:.2} MiB); replayed through Staging, Session and Receiver, every page checked on the replica",
        file.display(),
        size as f64 / 1048576.0
    ));
    rep.add(line("plain (encode = never)", &plain, &plain));
    rep.add(line("encoded (encode = always)", &enc, &plain));
    rep.ok = true;
    Ok(rep)
}

/// Ctrl-C in the middle of a recording (`SIGINT` 5 s into it, 20 checkpoints a second, so
/// likely while the guest is suspended): the recorder stops after the checkpoint under way, the
/// guest runs on (redis answers), and the trace holds whole checkpoints only.
fn interrupted(rep: &mut Report, traces: &Path) -> Result<(), Fail> {
    let out = rig(&[
        "run",
        "-t",
        "120",
        "1",
        &format!(
            "hsb-page-trace {GUEST} /tmp/stopped.trace --checkpoints 10000 --period 50 >/tmp/stopped.out 2>&1 & p=$!; sleep 5; kill -INT $p; wait $p; rc=$?; tail -n 2 /tmp/stopped.out; exit $rc"
        ),
    ])
    .map_err(|e| Fail::Run(format!("a recording stopped with SIGINT: {e}")))?;
    if !out.contains("stopped by SIGINT") {
        return Err(Fail::Run(format!(
            "a recording stopped with SIGINT did not say so: {}",
            out.trim()
        )));
    }
    if !redis_answers() {
        return Err(Fail::Run(
            "after a recording stopped with SIGINT, redis in the guest no longer answers PING (the guest was left suspended?)".into(),
        ));
    }
    let file = traces.join("stopped-by-sigint.hsbtrace");
    rig(&["pull", "1", "/tmp/stopped.trace", &file.to_string_lossy()])?;
    let r = replay_file(&file, CodecMode::Never, 0)
        .map_err(|e| Fail::Run(format!("the trace of a recording stopped with SIGINT: {e}")))?;
    rep.add(format!(
        "a recording stopped with SIGINT 5 s in: exit 0, the guest answers, its trace whole ({} checkpoints, every page checked):\n```\n{}\n```",
        r.checkpoints,
        out.trim()
    ));
    Ok(())
}

/// Keys the load draws from.
const KEYS: u64 = 20_000;

/// `hsb-xen-e2e redis-load ADDR SECONDS VALUE_BYTES` (run in the rig's namespace): four
/// connections to redis, each looping over SET of a key drawn from 20,000 with a value of
/// random printable bytes (6 bits of entropy a byte, like encoded ids or text; up to
/// VALUE_BYTES, a quarter of that at least), GET of such a key, INCR of one of 1,000 counters
/// and HSET of a field of one of 10,000 hashes, until SECONDS have passed. Unlike
/// redis-benchmark, whose values are a run of one letter, its values do not compress away.
/// Prints `redis-load ops=N err=N secs=S` every 10 s and at the end.
pub(super) fn redis_load(addr: &str, seconds: u64, value_bytes: usize) -> std::process::ExitCode {
    use std::io::{BufRead, BufReader, Write};
    let deadline = Instant::now() + Duration::from_secs(seconds);
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    use std::sync::Arc;
    let value_bytes = value_bytes.clamp(4, 1 << 20);
    let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let addr = addr.to_string();
            let counts = Arc::clone(&counts);
            std::thread::spawn(move || {
                let mut rng = hsb_common::rng::SplitMix64::new(0x5eed + t);
                while Instant::now() < deadline {
                    let Ok(s) = std::net::TcpStream::connect(&addr) else {
                        counts[1].fetch_add(1, Relaxed);
                        std::thread::sleep(Duration::from_millis(200));
                        continue;
                    };
                    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut w = match s.try_clone() {
                        Ok(w) => w,
                        Err(_) => continue,
                    };
                    let mut r = BufReader::new(s);
                    let mut line = String::new();
                    while Instant::now() < deadline {
                        let key = rng.below(KEYS);
                        let args: Vec<Vec<u8>> = match rng.below(10) {
                            0..=3 => {
                                let lo = value_bytes / 4;
                                let n = lo + rng.below((value_bytes - lo + 1) as u64) as usize;
                                vec![
                                    b"SET".to_vec(),
                                    format!("key:{key}").into_bytes(),
                                    printable(&mut rng, n),
                                ]
                            }
                            4..=6 => vec![b"GET".to_vec(), format!("key:{key}").into_bytes()],
                            7..=8 => vec![
                                b"INCR".to_vec(),
                                format!("counter:{}", key % 1000).into_bytes(),
                            ],
                            _ => vec![
                                b"HSET".to_vec(),
                                format!("user:{}", key % 10_000).into_bytes(),
                                format!("f{}", key % 16).into_bytes(),
                                printable(&mut rng, 16),
                            ],
                        };
                        let mut req = format!("*{}\r\n", args.len()).into_bytes();
                        for a in &args {
                            req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
                            req.extend_from_slice(a);
                            req.extend_from_slice(b"\r\n");
                        }
                        line.clear();
                        let ok = w.write_all(&req).is_ok()
                            && r.read_line(&mut line).is_ok_and(|n| n > 0)
                            && match line.as_bytes().first() {
                                Some(b'+' | b':') => true,
                                // A bulk reply: its bytes and CRLF follow (none for $-1).
                                Some(b'$') => match line[1..].trim().parse::<i64>() {
                                    Ok(n) if n >= 0 => {
                                        let mut skip = vec![0u8; n as usize + 2];
                                        std::io::Read::read_exact(&mut r, &mut skip).is_ok()
                                    }
                                    Ok(_) => true,
                                    Err(_) => false,
                                },
                                _ => false,
                            };
                        if !ok {
                            counts[1].fetch_add(1, Relaxed);
                            break;
                        }
                        counts[0].fetch_add(1, Relaxed);
                    }
                }
            })
        })
        .collect();
    let t = Instant::now();
    let report = || {
        println!(
            "redis-load ops={} err={} secs={:.1}",
            counts[0].load(Relaxed),
            counts[1].load(Relaxed),
            t.elapsed().as_secs_f64()
        );
    };
    while Instant::now() < deadline {
        std::thread::sleep(
            Duration::from_secs(10).min(deadline.saturating_duration_since(Instant::now())),
        );
        report();
    }
    for h in threads {
        let _ = h.join();
    }
    report();
    std::process::ExitCode::SUCCESS
}

/// `n` random bytes from a 64-letter alphabet.
fn printable(rng: &mut hsb_common::rng::SplitMix64, n: usize) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        let mut x = rng.next_u64();
        for _ in 0..10 {
            if v.len() == n {
                break;
            }
            v.push(ALPHABET[(x & 63) as usize]);
            x >>= 6;
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_arguments_are_read_within_their_bounds_and_the_first_counts() {
        assert_eq!(trace_arg("bench"), Some(TraceArg::Bench));
        assert_eq!(trace_arg("2"), Some(TraceArg::Count(2)));
        assert_eq!(trace_arg("10000"), Some(TraceArg::Count(10_000)));
        assert_eq!(trace_arg("values=16"), Some(TraceArg::Values(16)));
        assert_eq!(trace_arg("period=10000"), Some(TraceArg::Period(10_000)));
        for bad in [
            "1",
            "10001",
            "values=15",
            "values=65537",
            "period=9",
            "period=x",
            "trace",
        ] {
            assert_eq!(trace_arg(bad), None, "{bad}");
        }
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let t = TraceOpts::from_args(&args(&["trace", "--keep"]));
        assert_eq!(
            (t.checkpoints, t.period_ms, t.load),
            (300, PERIOD_MS, Load::Random(1024))
        );
        let t = TraceOpts::from_args(&args(&[
            "trace",
            "50",
            "60",
            "period=400",
            "values=64",
            "values=99",
        ]));
        assert_eq!(
            (t.checkpoints, t.period_ms, t.load),
            (50, 400, Load::Random(64))
        );
        let t = TraceOpts::from_args(&args(&["trace", "values=64", "bench"]));
        assert_eq!(t.load, Load::Benchmark);
    }
}
