//! The `disk-bench` mode (issue 14's benchmark on the rig): write throughput and latency of a
//! disk that hsb-primary serves by NBD in host 1's dom0 (the kernel's `nbd` driver, as a Xen
//! guest's disk is served), replicated to hsb-standby on host 2 over the rig's replication
//! network; then the same with no standby (through the export, not replicated), then a loop
//! device over a file (no hsb at all). The daemons use the `model` backend (the hypervisor test
//! double: the benchmark writes the disk from dom0, not from a guest). Timings are TCG's.

use std::time::{Duration, Instant};

use super::etc::{BENCH_NBD, BENCH_PERIOD};
use super::run::boot;
use super::{log, num, on, status_of, wait, Fail, Report};

/// MiB written per sequential pattern (and × 64 random 4 KiB writes).
const MIB: u32 = 16;

fn bench_status(n: u8, daemon: &str) -> Option<std::collections::HashMap<String, String>> {
    status_of(n, daemon, &format!("/etc/hsb/bench-{}.conf", &daemon[4..]))
}

/// `hsb-disk-bench`'s lines on host 1 for `dev`, as a table row each (`setting` first).
fn bench(setting: &str, dev: &str, rows: &mut Vec<String>) -> Result<(), String> {
    let out = on(1, &format!("hsb-disk-bench {dev} {MIB}"))?;
    for l in out.lines().filter(|l| l.starts_with("bench ")) {
        let f: Vec<&str> = l.split_whitespace().collect();
        let kv = |k: &str| {
            f.iter()
                .find_map(|w| w.strip_prefix(k))
                .unwrap_or("?")
                .to_string()
        };
        rows.push(format!(
            "| {setting} | {} | {} | {} | {} |",
            f.get(1).unwrap_or(&"?"),
            kv("mib_s="),
            kv("p50_us="),
            kv("p99_us=")
        ));
    }
    if rows.is_empty() {
        return Err(format!("hsb-disk-bench printed nothing: {out}"));
    }
    Ok(())
}

pub(super) fn run_disk_bench(keep: bool) -> Result<Report, Fail> {
    let mut rep = Report::default();
    let (_rig, _dir, _bin) = boot(false, keep, &mut rep)?;
    on(
        2,
        "mkdir -p /run/hsb /var/lib/hsb; HSB_LOG=info setsid hsb-standby run -c /etc/hsb/bench-standby.conf >/var/log/hsb-bench-standby.log 2>&1 </dev/null & sleep 2; tail -2 /var/log/hsb-bench-standby.log",
    )?;
    on(
        1,
        &format!("mkdir -p /run/hsb /var/lib/hsb; modprobe nbd; HSB_LOG=info setsid hsb-primary run -c /etc/hsb/bench-primary.conf >/var/log/hsb-bench-primary.log 2>&1 </dev/null & for i in $(seq 100); do [ -S {BENCH_NBD} ] && break; sleep 0.2; done; nbd-client -unix {BENCH_NBD} -N hsb /dev/nbd0"),
    )?;
    let t = Instant::now();
    wait(
        "the bench standby's first checkpoints",
        Duration::from_secs(300),
        Duration::from_secs(2),
        || bench_status(2, "hsb-standby").filter(|s| num(s, "checkpoints_applied") >= 3),
    )?;
    log(&format!(
        "bench pair protected after {:.0} s",
        t.elapsed().as_secs_f64()
    ));
    let mut rows = Vec::new();
    bench(
        "replicated (hsb-primary's export, hsb-standby acknowledging)",
        "/dev/nbd0",
        &mut rows,
    )?;
    let p = bench_status(1, "hsb-primary").unwrap_or_default();
    let s = bench_status(2, "hsb-standby").unwrap_or_default();
    let replicated = format!(
        "replicated: {} NBD writes ({} MiB), {} waits for the journal, {} epochs ended early, {} checkpoints acknowledged; the standby applied {} disk writes ({} MiB)",
        num(&p, "nbd_writes"),
        num(&p, "nbd_write_bytes") >> 20,
        num(&p, "nbd_waits"),
        num(&p, "disk_epochs_ended_early"),
        num(&p, "acked_checkpoint"),
        num(&s, "disk_applied_writes"),
        num(&s, "disk_applied_bytes") >> 20
    );
    on(
        2,
        "pkill -x hsb-standby; sleep 2; pgrep -x hsb-standby || echo stopped",
    )?;
    bench(
        "not replicated (the same export, no standby)",
        "/dev/nbd0",
        &mut rows,
    )?;
    bench(
        "no hsb (a loop device over a file in dom0)",
        "$(modprobe loop; truncate -s 64M /var/tmp/raw.img; losetup -f --show /var/tmp/raw.img)",
        &mut rows,
    )?;
    rep.add(format!(
        "disk writes from host 1's dom0 (hsb-disk-bench: O_DIRECT, {MIB} MiB per sequential pattern, {} random 4 KiB writes, fdatasync at the end; checkpoint_period {BENCH_PERIOD}; TCG):\n\n| setting | pattern | MiB/s | p50 µs | p99 µs |\n|---|---|---|---|---|\n{}\n",
        MIB * 64,
        rows.join("\n")
    ));
    rep.add(replicated);
    rep.ok = true;
    Ok(rep)
}
