//! `hsb-xen-e2e trace [N]` (`just xen-trace`): record a page trace of the rig's guest running a
//! real workload, redis-server under redis-benchmark from the rig's namespace
//! (`tests/xen-rig/build-trace-guest.sh` builds that guest), with `hsb-page-trace` in host 1's
//! dom0, then bring it here and replay it through the real checkpoint path, plain and encoded.
//! The trace lands in `target/xen-rig/trace/redis.hsbtrace`; `tests/data/xen-rig-redis.hsbtrace`
//! is one such recording, kept as test data.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hsb_domain::codec_policy::CodecMode;
use hsb_tests::pagetrace::{replay, ReplayStats};

use super::run::boot;
use super::{log, ns, rig, wait, Fail, KillOnDrop, Report, GUEST};

const GUEST_IP: &str = "10.99.0.21";
/// The rig's checkpoint period under TCG (`checkpoint_period` of the rig's primary).
const PERIOD_MS: u64 = 200;
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

fn ns_cmd(program: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &ns(), program]);
    c
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

pub(super) fn run_trace(keep: bool, checkpoints: u64) -> Result<Report, Fail> {
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
        || {
            let out = ns_cmd("redis-cli")
                .args(["-h", GUEST_IP, "ping"])
                .stderr(Stdio::null())
                .output()
                .ok()?;
            String::from_utf8_lossy(&out.stdout)
                .contains("PONG")
                .then_some(())
        },
    )
    .map_err(Fail::Rig)?;
    rep.add(format!(
        "guest {GUEST} (PVH, 128 MiB) with redis-server answering on host 1 after {:.0} s",
        t.elapsed().as_secs_f64()
    ));
    // The load runs for the warm-up and the recording, and stops by itself after that.
    let secs = WARM_UP.as_secs() + checkpoints * (PERIOD_MS + 2_000) / 1000 + 120;
    let logf = std::fs::File::create(dir.join("redis-benchmark.log")).map_err(|e| e.to_string())?;
    let _load = KillOnDrop(
        Command::new("ip")
            .args(["netns", "exec", &ns(), "timeout", &secs.to_string()])
            .arg("redis-benchmark")
            .args(["-h", GUEST_IP])
            .args(BENCH_ARGS)
            .process_group(0)
            .stdout(logf)
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("redis-benchmark: {e}"))?,
    );
    log(&format!(
        "redis-benchmark {}: warming up for {WARM_UP:?}",
        BENCH_ARGS.join(" ")
    ));
    std::thread::sleep(WARM_UP);
    let keys = ns_cmd("redis-cli")
        .args(["-h", GUEST_IP, "dbsize"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let note = format!(
        "Xen 4.17 rig under QEMU TCG, PVH guest of 128 MiB running redis-server 7.0 under redis-benchmark {} from the rig network ({keys} keys when recording began); {checkpoints} checkpoints, one every {PERIOD_MS} ms, cooperative suspend as hsb-primary takes them",
        BENCH_ARGS.join(" ")
    );
    let t = Instant::now();
    let out = rig(&[
        "run",
        "-t",
        &(checkpoints * 5 + 120).to_string(),
        "1",
        &format!(
            "hsb-page-trace {GUEST} /tmp/guest.trace --checkpoints {checkpoints} --period {PERIOD_MS} --note '{note}' 2>&1 | tail -n 3"
        ),
    ])?;
    rep.add(format!(
        "recorded in {:.0} s on host 1:\n```\n{}\n```",
        t.elapsed().as_secs_f64(),
        out.trim()
    ));
    let traces = rd.join("trace");
    std::fs::create_dir_all(&traces).map_err(|e| e.to_string())?;
    let file = traces.join("redis.hsbtrace");
    rig(&["pull", "1", "/tmp/guest.trace", &file.to_string_lossy()])?;
    let bench_tail = std::fs::read_to_string(dir.join("redis-benchmark.log")).unwrap_or_default();
    rep.add(format!(
        "redis-benchmark's last lines: {}",
        bench_tail
            .rsplit('\r')
            .find(|l| !l.trim().is_empty())
            .unwrap_or("(none)")
            .trim()
    ));
    let read = |mode| -> Result<ReplayStats, String> {
        let f = std::fs::File::open(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        replay(std::io::BufReader::new(f), mode, 0)
    };
    let plain = read(CodecMode::Never)?;
    let enc = read(CodecMode::Always)?;
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
