//! hsb end to end on the two-host Xen rig (`tests/xen-rig`, real Xen 4.17 under QEMU).
//!
//! Boots both hosts with the static hsb binaries and their configuration in each dom0, starts
//! the rig's PVH guest on host 1, makes the paused replica on host 2 the way an operator would
//! (`xl save -c` on host 1, copied over the replication network, `xl restore -p` on host 2),
//! starts hsb-primary (host 1), hsb-standby (host 2) and three hsb-witness processes in the
//! rig's namespace, and a client that increments the guest's counter and records its history.
//! Then the cases, each checked from the client's history (no acknowledged increment lost,
//! none applied twice):
//!
//! - F2: the replication network is cut while the witnesses still reach the guest: no
//!   failover; the guest keeps answering from host 1 (unprotected under the witnesses' lease).
//!   Healed: the standby is synchronised from scratch.
//! - F1: host 1's QEMU is killed: the standby activates the replica; the counter continues.
//! - Isolation (`isolate`, instead of F1): host 1 is cut off from both networks but keeps
//!   running: its primary fences its guest, the standby activates the replica, and after the
//!   heal the old primary steps down with its guest still stopped.
//!
//! ```text
//! hsb-xen-e2e [smoke|all] [--keep]     smoke: protect + F1; all: protect + F2 + heal + F1
//! hsb-xen-e2e isolate [--keep]         protect + host 1 isolated alive (fence, failover) + heal
//! hsb-xen-e2e remus                    the same guest under `xl remus` (the baseline): F1, F2
//! hsb-xen-e2e client ADDR SECONDS      (internal) the client, run inside the rig namespace
//! hsb-xen-e2e probe ADDR SECONDS       (internal) the reply-time probe, likewise
//! ```
//!
//! Needs root, the rig's images (`just xen-rig-images`) and `HSB_BIN_DIR` with static
//! hsb-primary, hsb-standby and hsb-witness (`just static`). Every wait is bounded; the rig is
//! torn down on every exit path unless `--keep`. The report goes to
//! `target/xen-rig/e2e-report.md`. Exit status: 0 all correct, 1 a wrong outcome or a failed
//! step, 3 the rig's hosts or guest did not come up (nothing of hsb was tried).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hsb_tests::faults::{check_history, Op};
use hsb_tests::parse_status;

/// The rig's network namespace (`HSB_RIG_NS`, as rig.sh reads it).
fn ns() -> String {
    std::env::var("HSB_RIG_NS").unwrap_or_else(|_| "hsb-rig".into())
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
    let out = on(
        n,
        &format!(
            "{daemon} status -c /etc/hsb/{}.conf; echo \"health $?\"",
            &daemon[4..]
        ),
    )
    .ok()?;
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

fn write_etc(dir: &Path, bin: &Path) -> Result<(), String> {
    let etc = dir.join("etc");
    std::fs::create_dir_all(&etc).map_err(|e| e.to_string())?;
    let key = etc.join("cluster.key");
    let _ = std::fs::remove_file(&key);
    let out = Command::new(bin.join("hsb-primary"))
        .arg("keygen")
        .arg(&key)
        .output()
        .map_err(|e| format!("hsb-primary keygen: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "keygen: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    // Each witness on its own address of the rig network, as on three client machines.
    let peers = "1=10.99.0.101:7400,2=10.99.0.102:7400,3=10.99.0.103:7400";
    let common = format!(
        "cluster_key = /etc/hsb/cluster.key\nbackend = xen\nxen.domain = {GUEST}\nfailover = true\nfailover.witnesses = 1,2,3\nwitness_peers = {peers}\nstats_interval = 5s\n{TCG_TIMING}"
    );
    // HSB_E2E_ENCODE=always|never|auto sets the primary's `encode` (default: its default, auto).
    let encode = std::env::var("HSB_E2E_ENCODE")
        .map(|e| format!("encode = {e}\n"))
        .unwrap_or_default();
    let primary = format!(
        "{common}{encode}node = host1\nstandby = 10.98.0.2:7100\nheartbeat_peers = 10.98.0.2:7200\nwitness_listen = 10.99.0.1:7301\nstandby_witness = 10.99.0.2:7300\ncontrol = /run/hsb/primary.sock\nepoch_period = 200ms\nxen.output = plug\nxen.suspend_timeout = 5s\ndecision_log = /var/log/hsb-primary.decisions\n"
    );
    let standby = format!(
        "{common}node = host2\nlisten = 10.98.0.2:7100\nheartbeat_listen = 10.98.0.2:7200\nwitness_listen = 10.99.0.2:7300\nprimary_witness = 10.99.0.1:7301\ncontrol = /run/hsb/standby.sock\ndecision_log = /var/log/hsb-standby.decisions\n"
    );
    let write = |name: &str, text: &str| {
        std::fs::write(etc.join(name), text).map_err(|e| format!("{name}: {e}"))
    };
    write("primary.conf", &primary)?;
    write("standby.conf", &standby)?;
    for i in 1..=3 {
        let w = format!(
            "id = {i}\nnode = witness-{i}\ncluster_key = {}\nlisten = 10.99.0.10{i}:7400\nprimary = 10.99.0.1:7301\nstandby = 10.99.0.2:7300\nprobe = line {GUEST_SERVICE} PING PONG\nprobe_interval = 200ms\nprobe_timeout = 1s\nreport_interval = 300ms\nstate_file = {}\ncontrol = {}\nfailover.witnesses = 1,2,3\n{TCG_TIMING}",
            key.display(),
            dir.join(format!("w{i}.state")).display(),
            dir.join(format!("w{i}.sock")).display(),
        );
        std::fs::write(dir.join(format!("w{i}.conf")), w).map_err(|e| e.to_string())?;
    }
    // Check every configuration here, before any host boots.
    for (b, f) in [
        ("hsb-primary", etc.join("primary.conf")),
        ("hsb-standby", etc.join("standby.conf")),
        ("hsb-witness", dir.join("w1.conf")),
    ] {
        let mut cmd = Command::new(bin.join(b));
        cmd.arg("check").arg("-c").arg(&f);
        if b != "hsb-witness" {
            cmd.arg("--set")
                .arg(format!("cluster_key={}", key.display()));
        }
        let out = cmd.output().map_err(|e| format!("{b} check: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{b} check {}: {}",
                f.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok(())
}

/// The client: a child in the rig namespace whose stdout lines the parent timestamps.
struct ClientRun {
    child: Child,
    ops: Arc<Mutex<Vec<Op>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl ClientRun {
    fn start(seconds: u64) -> Result<ClientRun, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns()])
            .arg(exe)
            .args(["client", GUEST_SERVICE, &seconds.to_string()])
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("client: {e}"))?;
        let out = child.stdout.take().ok_or("client: no stdout")?;
        let ops = Arc::new(Mutex::new(Vec::new()));
        let sink = ops.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let end = Instant::now();
                let mut it = line.split_whitespace();
                let (Some(kind), Some(us)) = (it.next(), it.next()) else {
                    continue;
                };
                let took = Duration::from_micros(us.parse().unwrap_or(0));
                let value = match kind {
                    "ok" => it.next().and_then(|v| v.parse().ok()),
                    _ => None,
                };
                let start = end.checked_sub(took).unwrap_or(end);
                if let Ok(mut v) = sink.lock() {
                    v.push(Op { start, end, value });
                }
            }
        });
        Ok(ClientRun {
            child,
            ops,
            reader: Some(reader),
        })
    }

    fn snapshot(&self) -> Vec<Op> {
        self.ops.lock().map(|v| v.clone()).unwrap_or_default()
    }

    fn stop(mut self) -> Vec<Op> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.snapshot()
    }
}

impl Drop for ClientRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A connection to the guest's counter, made on first use and again after an error.
type Conn = Option<(TcpStream, BufReader<TcpStream>)>;

/// Send one request line on `conn` (connecting first if needed) and read the reply line.
fn request(conn: &mut Conn, addr: SocketAddr, req: &[u8]) -> std::io::Result<String> {
    if conn.is_none() {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.set_nodelay(true)?;
        let r = BufReader::new(s.try_clone()?);
        *conn = Some((s, r));
    }
    let Some((s, r)) = conn.as_mut() else {
        return Err(std::io::Error::other("no connection"));
    };
    s.write_all(req)?;
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::Error::other("closed"));
    }
    Ok(line.trim().to_string())
}

/// The client loop (inside the namespace): INCR, one at a time, reconnecting after errors;
/// one line per request: `ok MICROS VALUE` or `err MICROS`.
fn client(addr: &str, seconds: u64) -> ExitCode {
    let Ok(addr) = addr.parse::<SocketAddr>() else {
        eprintln!("client: bad address {addr}");
        return ExitCode::from(2);
    };
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut out = std::io::stdout();
    let mut conn: Conn = None;
    while Instant::now() < until {
        let t = Instant::now();
        let r = request(&mut conn, addr, b"INCR\n");
        let us = t.elapsed().as_micros();
        let line = match r {
            Ok(v) if v.parse::<u64>().is_ok() => format!("ok {us} {v}\n"),
            _ => {
                conn = None;
                std::thread::sleep(Duration::from_millis(200));
                format!("err {us}\n")
            }
        };
        if out
            .write_all(line.as_bytes())
            .and_then(|()| out.flush())
            .is_err()
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    ExitCode::SUCCESS
}

/// The reply-time probe (inside the namespace): `GET` one at a time, 5 ms apart, on one
/// connection, for `seconds`; prints one summary line (see [`Probe::parse`]). Without output
/// commit a reply is late only while the guest is stopped, so its slow replies measure the
/// pause per checkpoint from the client's side; with output commit they measure the commit.
fn probe(addr: &str, seconds: u64) -> ExitCode {
    let Ok(addr) = addr.parse::<SocketAddr>() else {
        eprintln!("probe: bad address {addr}");
        return ExitCode::from(2);
    };
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let mut lat = Vec::new();
    let mut errors = 0u64;
    let mut conn: Conn = None;
    while Instant::now() < until {
        let t = Instant::now();
        match request(&mut conn, addr, b"GET\n") {
            Ok(_) => lat.push(t.elapsed().as_micros() as u64),
            Err(_) => {
                errors += 1;
                conn = None;
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort_unstable();
    let q = |v: &[u64], f: f64| {
        v.get(((v.len() as f64 * f) as usize).min(v.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let slow: Vec<u64> = lat.iter().copied().filter(|&u| u > 100_000).collect();
    println!(
        "probe n={} err={errors} secs={secs:.1} p50_us={} p99_us={} max_us={} slow={} slow_p50_us={} slow_p99_us={}",
        lat.len(),
        q(&lat, 0.5),
        q(&lat, 0.99),
        lat.last().copied().unwrap_or(0),
        slow.len(),
        q(&slow, 0.5),
        q(&slow, 0.99),
    );
    ExitCode::SUCCESS
}

/// A [`probe`]'s summary, read back by the harness.
#[derive(Debug, Default)]
struct Probe {
    n: u64,
    errors: u64,
    secs: f64,
    p50: f64,
    p99: f64,
    max: f64,
    slow: u64,
    slow_p50: f64,
    slow_p99: f64,
}

impl Probe {
    /// Run the probe in the rig namespace for `seconds`.
    fn run(seconds: u64) -> Result<Probe, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let out = Command::new("timeout")
            .arg((seconds + 60).to_string())
            .args(["ip", "netns", "exec", &ns()])
            .arg(exe)
            .args(["probe", GUEST_SERVICE, &seconds.to_string()])
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("probe: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        Probe::parse(&text).ok_or_else(|| format!("probe printed no summary: {text:?}"))
    }

    /// `probe n=.. err=.. secs=.. p50_us=.. ...` (times in ms afterwards).
    fn parse(line: &str) -> Option<Probe> {
        let line = line.lines().find(|l| l.starts_with("probe "))?;
        let kv: std::collections::HashMap<&str, &str> = line
            .split_whitespace()
            .filter_map(|w| w.split_once('='))
            .collect();
        let f = |k: &str| kv.get(k).and_then(|v| v.parse::<f64>().ok());
        let ms = |k: &str| f(k).map(|u| u / 1000.0);
        Some(Probe {
            n: f("n")? as u64,
            errors: f("err")? as u64,
            secs: f("secs")?,
            p50: ms("p50_us")?,
            p99: ms("p99_us")?,
            max: ms("max_us")?,
            slow: f("slow")? as u64,
            slow_p50: ms("slow_p50_us")?,
            slow_p99: ms("slow_p99_us")?,
        })
    }

    fn describe(&self) -> String {
        format!(
            "{} GET replies in {:.0} s ({} errors): p50 {:.1} ms, p99 {:.0} ms, max {:.0} ms; {} replies over 100 ms ({:.2}/s), their p50 {:.0} ms, p99 {:.0} ms",
            self.n,
            self.secs,
            self.errors,
            self.p50,
            self.p99,
            self.max,
            self.slow,
            self.slow as f64 / self.secs.max(1.0),
            self.slow_p50,
            self.slow_p99
        )
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

fn history_line(name: &str, ops: &[Op]) -> (String, bool) {
    let (acked, lost, doubled, gap) = check_history(ops);
    let ok = lost == 0 && doubled == 0 && acked > 0;
    (
        format!(
            "{name}: {} requests, {acked} acknowledged, lost {lost}, applied twice {doubled}, longest gap {:.1} s: {}",
            ops.len(),
            gap.as_secs_f64(),
            if ok { "ok" } else { "WRONG" }
        ),
        ok,
    )
}

/// The client's history, one request a line: start and end in ms relative to the kill, and the
/// value (or `-` for no acknowledged reply), for a look after the run.
fn save_history(path: &Path, ops: &[Op], killed: Instant) {
    let ms = |t: Instant| {
        if t >= killed {
            t.duration_since(killed).as_secs_f64() * 1e3
        } else {
            -(killed.duration_since(t).as_secs_f64() * 1e3)
        }
    };
    let mut text = String::from("# start_ms end_ms value (relative to the kill of host 1)\n");
    for o in ops {
        let v = o.value.map_or("-".to_string(), |v| v.to_string());
        let _ = writeln!(text, "{:.0} {:.0} {v}", ms(o.start), ms(o.end));
    }
    if let Err(e) = std::fs::write(path, text) {
        log(&format!("cannot write {}: {e}", path.display()));
    }
}

/// After a kill at `killed`: how long until the first acknowledged reply, and its value.
fn after_kill(ops: &[Op], killed: Instant) -> (Option<Duration>, Option<u64>) {
    let first = ops.iter().find(|o| o.value.is_some() && o.start >= killed);
    (
        first.map(|o| o.end.duration_since(killed)),
        first.and_then(|o| o.value),
    )
}

fn acked_between(ops: &[Op], from: Instant, to: Instant) -> usize {
    ops.iter()
        .filter(|o| o.value.is_some() && o.end >= from && o.end <= to)
        .count()
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
}

fn run(mode: Mode, keep: bool) -> Result<Report, Fail> {
    let bin =
        PathBuf::from(std::env::var("HSB_BIN_DIR").map_err(|_| {
            "HSB_BIN_DIR must name the static hsb binaries (just static)".to_string()
        })?);
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/xen-rig/e2e"
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    write_etc(&dir, &bin)?;
    let mut rep = Report::default();

    log("booting the rig (two Xen hosts under QEMU TCG)");
    let t = Instant::now();
    std::env::set_var("HSB_BIN_DIR", &bin);
    std::env::set_var("HSB_RIG_ETC", dir.join("etc"));
    let _rig = Rig { keep };
    rig(&["up"]).map_err(Fail::Rig)?;
    rep.add(format!(
        "rig up in {:.0} s (both hosts: Xen 4.17, Debian dom0)",
        t.elapsed().as_secs_f64()
    ));
    let t = Instant::now();
    rig(&["guest-up", "1"]).map_err(Fail::Rig)?;
    rep.add(format!(
        "guest {GUEST} (PVH, 128 MiB) answering on host 1 after {:.0} s",
        t.elapsed().as_secs_f64()
    ));
    let info = on(1, &format!("hsb-primary xen-info {GUEST}"))?;
    rep.add(format!(
        "xen-info on host 1 (what hsb's xen-sys reads from real Xen):\n```\n{info}```"
    ));
    // xen-sys's event-channel path (bind, notify, delivery, unmask, unbind), which the rig's
    // guest gives no suspend channel to exercise, checked on a dom0 loopback channel.
    let evtchn = info
        .lines()
        .find(|l| l.starts_with("evtchn_loopback"))
        .unwrap_or("evtchn_loopback missing");
    if !evtchn.starts_with("evtchn_loopback ok") {
        return Err(Fail::Run(format!("xen-info on host 1: {evtchn}")));
    }

    // The replica, made once by the toolstack.
    let t = Instant::now();
    on(1, &format!("xl save -c {GUEST} /var/tmp/guest.img"))?;
    // Host 2 receives in the foreground of its console while host 1 sends from its own.
    let recv = std::thread::spawn(|| {
        on(
            2,
            "rm -f /var/tmp/guest.img; timeout 280 socat -u TCP-LISTEN:9100,reuseaddr CREATE:/var/tmp/guest.img && ls -l /var/tmp/guest.img",
        )
    });
    std::thread::sleep(Duration::from_secs(5));
    on(
        1,
        "socat -u OPEN:/var/tmp/guest.img TCP:10.98.0.2:9100,retry=20 && ls -l /var/tmp/guest.img && rm -f /var/tmp/guest.img",
    )?;
    let got = recv
        .join()
        .map_err(|_| "the receiving thread panicked".to_string())??;
    log(&format!("image on host 2: {}", got.trim()));
    on(
        2,
        &format!("xl restore -p /etc/xen/{GUEST}.cfg /var/tmp/guest.img && rm -f /var/tmp/guest.img && xl list"),
    )?;
    rep.add(format!(
        "replica: xl save -c on host 1, copied, xl restore -p on host 2 in {:.0} s",
        t.elapsed().as_secs_f64()
    ));

    // The daemons.
    on(
        2,
        "mkdir -p /run/hsb; HSB_LOG=info setsid hsb-standby run -c /etc/hsb/standby.conf >/var/log/hsb-standby.log 2>&1 </dev/null & sleep 2; tail -5 /var/log/hsb-standby.log",
    )?;
    on(
        1,
        "mkdir -p /run/hsb; for m in ifb sch_plug sch_ingress cls_matchall act_mirred; do modprobe $m; done; HSB_LOG=info setsid hsb-primary run -c /etc/hsb/primary.conf >/var/log/hsb-primary.log 2>&1 </dev/null & sleep 2; tail -5 /var/log/hsb-primary.log",
    )?;
    let mut witnesses = Vec::new();
    for i in 1..=3 {
        let logf =
            std::fs::File::create(dir.join(format!("w{i}.log"))).map_err(|e| e.to_string())?;
        let child = Command::new("ip")
            .args(["netns", "exec", &ns()])
            .arg(bin.join("hsb-witness"))
            .args(["run", "-c"])
            .arg(dir.join(format!("w{i}.conf")))
            .env("HSB_LOG", "info")
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .map_err(|e| format!("witness {i}: {e}"))?;
        witnesses.push(KillOnDrop(child));
    }
    let t = Instant::now();
    let st = wait(
        "the first checkpoints applied on host 2",
        Duration::from_secs(600),
        Duration::from_secs(3),
        || status(2, "hsb-standby").filter(|s| num(s, "checkpoints_applied") >= 3),
    )
    .map_err(|e| {
        let p = on(1, "tail -20 /var/log/hsb-primary.log").unwrap_or_default();
        let s = on(2, "tail -20 /var/log/hsb-standby.log").unwrap_or_default();
        format!("{e}\n--- primary ---\n{p}\n--- standby ---\n{s}")
    })?;
    rep.add(format!(
        "protected: full synchronisation and {} checkpoints applied after {:.0} s",
        num(&st, "checkpoints_applied"),
        t.elapsed().as_secs_f64()
    ));

    // Steady state with a client.
    let client = ClientRun::start(3600)?;
    let p0 = status(1, "hsb-primary").unwrap_or_default();
    let t0 = Instant::now();
    let probe = Probe::run(20);
    let p1 = status(1, "hsb-primary").unwrap_or_default();
    let secs = t0.elapsed().as_secs_f64();
    let ckpts = num(&p1, "checkpoints").saturating_sub(num(&p0, "checkpoints"));
    rep.add(format!(
        "steady state (TCG): {:.1} checkpoints/s at a 200 ms epoch period; pause per epoch p50 {} ms, p99 {} ms, of which the guest's suspend p50 {} ms; ack round trip p50 {} ms; last dirty pages {}; {} client increments acknowledged in {:.0} s",
        ckpts as f64 / secs,
        p1.get("pause_ms_p50").cloned().unwrap_or_default(),
        p1.get("pause_ms_p99").cloned().unwrap_or_default(),
        p1.get("suspend_wait_ms_p50").cloned().unwrap_or_default(),
        p1.get("ack_rtt_ms_p50").cloned().unwrap_or_default(),
        p1.get("last_dirty_pages").cloned().unwrap_or_default(),
        acked_between(&client.snapshot(), t0, Instant::now()),
        secs
    ));
    let d = |k: &str| num(&p1, k).saturating_sub(num(&p0, k));
    rep.add(format!(
        "checkpoint encoding (encode = {}): {} of {ckpts} checkpoints encoded; {} KiB of pages sealed into {} KiB ({:.2}x fewer bytes); measured cost per KiB plain {} ns, encoded {} ns; encoded size ratio {}",
        p1.get("encode").cloned().unwrap_or_default(),
        d("checkpoints_encoded"),
        d("page_bytes_sealed") >> 10,
        d("bytes_sealed") >> 10,
        d("page_bytes_sealed") as f64 / d("bytes_sealed").max(1) as f64,
        p1.get("encode_cost_plain_ns_per_kib").cloned().unwrap_or_default(),
        p1.get("encode_cost_encoded_ns_per_kib").cloned().unwrap_or_default(),
        p1.get("encoded_size_ratio").cloned().unwrap_or_default(),
    ));
    rep.add(match probe {
        Ok(p) => format!(
            "reply-time probe meanwhile (every reply held until its checkpoint is acknowledged): {}",
            p.describe()
        ),
        Err(e) => format!("reply-time probe failed: {e}"),
    });
    let mut ok = true;

    if mode == Mode::All {
        // F2: the replication network cut; the witnesses still reach the guest.
        let syncs_before = status(2, "hsb-standby").map_or(0, |s| num(&s, "full_syncs"));
        rig(&["cut-repl"])?;
        let cut = Instant::now();
        std::thread::sleep(Duration::from_secs(30));
        let s2 = status(2, "hsb-standby").unwrap_or_default();
        let p2 = status(1, "hsb-primary").unwrap_or_default();
        let served = acked_between(
            &client.snapshot(),
            cut + Duration::from_secs(10),
            Instant::now(),
        );
        let stayed = s2.get("state").map(String::as_str) != Some("active");
        rig(&["heal-repl"])?;
        let f2_ok = stayed && served > 0;
        ok &= f2_ok;
        rep.add(format!(
            "F2 replication link cut 30 s: standby state {:?} (no failover: {}), primary authority {:?}, {served} increments acknowledged from host 1 during the last 20 s of the cut: {}",
            s2.get("state").cloned().unwrap_or_default(),
            stayed,
            p2.get("authority").cloned().unwrap_or_default(),
            if f2_ok { "correct" } else { "WRONG" }
        ));
        let t = Instant::now();
        let healed = wait(
            "a fresh full synchronisation after the heal",
            Duration::from_secs(300),
            Duration::from_secs(3),
            || {
                status(2, "hsb-standby")
                    .filter(|s| num(s, "full_syncs") > syncs_before && s["state"] == "replicating")
            },
        );
        match healed {
            Ok(s) => rep.add(format!(
                "heal: standby resynchronised from scratch ({} full syncs) {:.0} s after the heal",
                num(&s, "full_syncs"),
                t.elapsed().as_secs_f64()
            )),
            Err(e) => {
                ok = false;
                rep.add(format!("heal: WRONG: {e}"));
            }
        }
    }

    if mode == Mode::Isolate {
        let (iso_ok, ops, at) = isolate_host1(&mut rep, client)?;
        ok &= iso_ok;
        let (line, hist_ok) = history_line("client history", &ops);
        ok &= hist_ok;
        rep.add(line);
        save_history(&dir.join("history.txt"), &ops, at);
        rep.ok = ok;
        drop(witnesses);
        return Ok(rep);
    }

    // F1: host 1 dies.
    std::thread::sleep(Duration::from_secs(5));
    let before_kill = client.snapshot();
    let last_acked = before_kill.iter().rev().find_map(|o| o.value);
    rig(&["kill", "1"])?;
    let killed = Instant::now();
    let active = wait(
        "the standby's activation",
        Duration::from_secs(120),
        Duration::from_secs(1),
        || status(2, "hsb-standby").filter(|s| s["state"] == "active"),
    );
    let decided = killed.elapsed();
    std::thread::sleep(Duration::from_secs(20));
    let ops = client.stop();
    let (first_after, after) = after_kill(&ops, killed);
    let f1_ok = active.is_ok() && first_after.is_some();
    ok &= f1_ok;
    rep.add(format!(
        "F1 host 1 killed: standby {} after {:.1} s (status polled every 1 s through the serial console); first client reply from the replica {:.1} s after the kill; last acknowledged value before {:?}, first after {:?}: {}",
        if active.is_ok() { "activated" } else { "did NOT activate" },
        decided.as_secs_f64(),
        first_after.map_or(f64::NAN, |d| d.as_secs_f64()),
        last_acked,
        after,
        if f1_ok { "correct" } else { "WRONG" }
    ));
    if let Err(e) = active {
        rep.add(format!(
            "standby log:\n```\n{}```",
            on(2, "tail -30 /var/log/hsb-standby.log").unwrap_or(e)
        ));
    }
    let (line, hist_ok) = history_line("client history", &ops);
    ok &= hist_ok;
    rep.add(line);
    save_history(&dir.join("history.txt"), &ops, killed);
    rep.ok = ok;
    drop(witnesses);
    Ok(rep)
}

/// Host 1 isolated from everything while it keeps running (both of its networks dropped): its
/// primary loses the standby's acks and the witnesses' leases and must fence its own guest
/// (suspended, output held) before the standby, told by the witnesses that the guest cannot be
/// reached, activates the replica. Then the heal: the old primary hears of the newer epoch and
/// steps down, its guest still stopped, so there is one active copy. Returns whether all that
/// held, the client's history and when the isolation began.
fn isolate_host1(rep: &mut Report, client: ClientRun) -> Result<(bool, Vec<Op>, Instant), String> {
    std::thread::sleep(Duration::from_secs(5));
    let last_acked = client.snapshot().iter().rev().find_map(|o| o.value);
    rig(&["isolate", "1"])?;
    rig(&["isolate", "1", "repl"])?;
    let cut = Instant::now();
    let active = wait(
        "the standby's activation",
        Duration::from_secs(120),
        Duration::from_secs(1),
        || status(2, "hsb-standby").filter(|s| s["state"] == "active"),
    );
    let decided = cut.elapsed();
    std::thread::sleep(Duration::from_secs(15));
    // The serial consoles still reach host 1: what its primary and Xen say while it is cut off.
    let p1 = status(1, "hsb-primary").unwrap_or_default();
    let xl1 = on(1, &format!("xl list {GUEST} | tail -1")).unwrap_or_default();
    rig(&["unisolate", "1"])?;
    rig(&["unisolate", "1", "repl"])?;
    let stepped = wait(
        "the old primary to step down after the heal",
        Duration::from_secs(90),
        Duration::from_secs(2),
        || {
            status(1, "hsb-primary")
                .filter(|s| s.get("stepped_down").map(String::as_str) == Some("true"))
        },
    );
    let xl1b = on(1, &format!("xl list {GUEST} | tail -1")).unwrap_or_default();
    let s2 = status(2, "hsb-standby").unwrap_or_default();
    std::thread::sleep(Duration::from_secs(10));
    let ops = client.stop();
    let (first_after, after) = after_kill(&ops, cut);
    let fenced = p1.get("fenced").map(String::as_str) == Some("true");
    // `xl list` state column: r running, b blocked, p paused, s shut down (suspended).
    let stopped = |l: &str| {
        l.split_whitespace()
            .nth(4)
            .is_some_and(|st| !st.contains('r') && !st.contains('b'))
    };
    let one_active = stopped(&xl1b) && s2.get("state").map(String::as_str) == Some("active");
    let ok = active.is_ok()
        && first_after.is_some()
        && fenced
        && stopped(&xl1)
        && stepped.is_ok()
        && one_active;
    rep.add(format!(
        "host 1 isolated (alive): its primary fenced: {fenced} (authority {:?}), its guest stopped: {} (`{}`); standby {} after {:.1} s; first client reply from the replica {:.1} s after the isolation; last acknowledged value before {last_acked:?}, first after {after:?}",
        p1.get("authority").cloned().unwrap_or_default(),
        stopped(&xl1),
        xl1.trim(),
        if active.is_ok() { "activated" } else { "did NOT activate" },
        decided.as_secs_f64(),
        first_after.map_or(f64::NAN, |d| d.as_secs_f64()),
    ));
    rep.add(format!(
        "heal: old primary {}; its guest `{}`; standby state {:?}; one active copy: {one_active}: {}",
        if stepped.is_ok() { "stepped down" } else { "did NOT step down" },
        xl1b.trim(),
        s2.get("state").cloned().unwrap_or_default(),
        if ok { "correct" } else { "WRONG" }
    ));
    if !ok {
        rep.add(format!(
            "primary log (host 1):\n```\n{}```",
            on(1, "tail -30 /var/log/hsb-primary.log").unwrap_or_default()
        ));
    }
    Ok((ok, ops, cut))
}

/// Boot the rig with the guest on host 1 and `xl remus` protecting it to host 2, as Xen ships
/// it (research/xen-rig.md): the receiver under socat with TCP keepalive (without it a dead
/// primary is never noticed), 200 ms interval, no network buffering (`-n`, like
/// `xen.output = none`; the rig's dom0 could buffer, but libxl's netbuf script needs udev).
fn remus_up(rep: &mut Report, keep: bool) -> Result<Rig, String> {
    let t = Instant::now();
    let r = Rig { keep };
    rig(&["up"])?;
    rig(&["guest-up", "1"])?;
    on(
        2,
        // Debug logging on the receiver, each line stamped (bash's EPOCHREALTIME), so the
        // checkpoints can be counted on host 2 (one `Record: 4` per checkpoint end) without
        // slowing the sender, whose log stays at -v.
        "(socat TCP-LISTEN:8002,reuseaddr,keepalive,keepidle=2,keepintvl=1,keepcnt=3 EXEC:'xl -vvv migrate-receive -r -e',nofork 2>&1 | while IFS= read -r l; do printf '%s %s\\n' \"$EPOCHREALTIME\" \"$l\"; done >/var/log/remus-recv.log &); sleep 1",
    )?;
    on(
        1,
        &format!("(xl -v remus -F -n -e -i 200 -s '' {GUEST} 'socat - TCP:10.98.0.2:8002' >/var/log/remus.log 2>&1 &); sleep 1"),
    )?;
    // The receiving domain appears when the stream starts; the first checkpoint (a full copy
    // of 128 MiB) took about 28 s here in the research runs: wait for the domain, then 45 s.
    wait(
        "xl remus's incoming domain on host 2",
        Duration::from_secs(300),
        Duration::from_secs(3),
        || {
            on_quick(2, &format!("xl list | grep -c {GUEST} || true"), 45)
                .ok()
                .filter(|o| {
                    o.lines()
                        .any(|l| l.trim().parse::<u32>().is_ok_and(|n| n >= 1))
                })
        },
    )?;
    std::thread::sleep(Duration::from_secs(45));
    rep.add(format!(
        "xl remus: rig, guest and (assumed) first checkpoint in {:.0} s",
        t.elapsed().as_secs_f64()
    ));
    Ok(r)
}

/// Checkpoints per second of `xl remus` over the last `window` seconds of host 2's clock,
/// from the receiver's stamped log.
fn remus_checkpoint_rate(window: f64) -> Result<f64, String> {
    let out = on(
        2,
        "grep 'Record: 4,' /var/log/remus-recv.log | tail -400 | cut -d' ' -f1",
    )?;
    let stamps: Vec<f64> = out
        .lines()
        .filter_map(|l| l.trim().parse::<f64>().ok())
        .collect();
    let last = *stamps.last().ok_or("no checkpoint records on host 2")?;
    let recent: Vec<f64> = stamps.into_iter().filter(|&t| t >= last - window).collect();
    match (recent.first(), recent.len()) {
        (Some(&first), n) if n >= 2 && last > first => Ok((n - 1) as f64 / (last - first)),
        _ => Err("fewer than two checkpoints on host 2".into()),
    }
}

fn remus(keep: bool) -> Result<Report, String> {
    let mut rep = Report {
        ok: true,
        ..Report::default()
    };
    std::env::remove_var("HSB_RIG_ETC");
    // F1: host 1 dies.
    {
        let _rig = remus_up(&mut rep, keep)?;
        let client = ClientRun::start(3600)?;
        let probe = Probe::run(20);
        let rate = remus_checkpoint_rate(20.0);
        rep.add(format!(
            "xl remus steady state (TCG): {} at a 200 ms interval (counted on host 2, checkpoint-end records in the last 20 s)",
            rate.map_or_else(|e| format!("checkpoints/s unknown ({e})"), |r| format!("{r:.1} checkpoints/s"))
        ));
        rep.add(match probe {
            Ok(p) => format!(
                "xl remus reply-time probe meanwhile (no output commit, so a slow reply is the guest stopped for a checkpoint): {}",
                p.describe()
            ),
            Err(e) => format!("xl remus reply-time probe failed: {e}"),
        });
        let last = client.snapshot().iter().rev().find_map(|o| o.value);
        rig(&["kill", "1"])?;
        let killed = Instant::now();
        std::thread::sleep(Duration::from_secs(40));
        let ops = client.stop();
        let (first_after, after) = after_kill(&ops, killed);
        rep.add(format!(
            "xl remus F1 host 1 killed: first client reply from host 2 {} after the kill; last acknowledged value before {last:?}, first after {after:?}",
            first_after.map_or("never (40 s)".into(), |d| format!("{:.1} s", d.as_secs_f64()))
        ));
        let (line, _) = history_line("xl remus F1 client history", &ops);
        rep.add(line);
        rep.add(format!(
            "xl remus receiver log (host 2):\n```\n{}```",
            on(2, "tail -6 /var/log/remus-recv.log").unwrap_or_default()
        ));
    }
    // F2: the replication link cut for 60 s while clients still reach the guest, then healed.
    {
        let _rig = remus_up(&mut rep, keep)?;
        let client = ClientRun::start(3600)?;
        std::thread::sleep(Duration::from_secs(10));
        rig(&["cut-repl"])?;
        std::thread::sleep(Duration::from_secs(60));
        let h2 = on(2, "xl list").unwrap_or_default();
        rig(&["heal-repl"])?;
        std::thread::sleep(Duration::from_secs(30));
        let h1 = on(1, "xl list").unwrap_or_default();
        let h2b = on(2, "xl list").unwrap_or_default();
        let ops = client.stop();
        let running = |l: &str| {
            l.lines()
                .any(|x| x.contains(GUEST) && (x.contains("r-") || x.contains("-b")))
        };
        let (line, hist_ok) = history_line("xl remus F2 client history", &ops);
        rep.add(format!(
            "xl remus F2 replication link cut 60 s, then healed 30 s: guest running on host 1 after the heal: {}, on host 2 during the cut: {}, after the heal: {} (two copies: {})",
            running(&h1),
            running(&h2),
            running(&h2b),
            running(&h1) && running(&h2b)
        ));
        rep.add(format!(
            "{line} (lost or doubled increments are xl remus's split brain)"
        ));
        let _ = hist_ok;
    }
    Ok(rep)
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() -> ExitCode {
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
    if args.first().map(String::as_str) == Some("client") {
        return match (args.get(1), args.get(2).and_then(|s| s.parse().ok())) {
            (Some(a), Some(secs)) => client(a, secs),
            _ => {
                eprintln!("usage: hsb-xen-e2e client ADDR SECONDS");
                ExitCode::from(2)
            }
        };
    }
    let mode = if args.iter().any(|a| a == "smoke") {
        Mode::Smoke
    } else if args.iter().any(|a| a == "isolate") {
        Mode::Isolate
    } else {
        Mode::All
    };
    let baseline = args.iter().any(|a| a == "remus");
    let keep = args.iter().any(|a| a == "--keep");
    if let Some(bad) = args
        .iter()
        .find(|a| !matches!(a.as_str(), "smoke" | "all" | "isolate" | "remus" | "--keep"))
    {
        eprintln!("hsb-xen-e2e: unknown argument '{bad}'; usage: hsb-xen-e2e [smoke|all|isolate|remus] [--keep]");
        return ExitCode::from(2);
    }
    let started = Instant::now();
    let result = if baseline {
        remus(keep).map_err(Fail::Run)
    } else {
        run(mode, keep)
    };
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# hsb on the two-host Xen rig ({}; {:.0} s)\n",
        if baseline {
            "xl remus baseline"
        } else {
            match mode {
                Mode::All => "hsb, all cases",
                Mode::Smoke => "hsb, smoke",
                Mode::Isolate => "hsb, host 1 isolated",
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
