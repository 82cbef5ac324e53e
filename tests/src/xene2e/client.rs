//! The client and the reply-time probe, run by this binary inside the rig's namespace, and
//! what their histories show.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hsb_tests::faults::{check_history, Op};

use super::{log, ns_cmd, ns_cmd_within, GUEST_SERVICE};

/// The client: a child in the rig namespace whose stdout lines the parent timestamps.
pub(super) struct ClientRun {
    child: Child,
    ops: Arc<Mutex<Vec<Op>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl ClientRun {
    /// The INCR client.
    pub(super) fn start(seconds: u64) -> Result<ClientRun, String> {
        ClientRun::start_kind("client", seconds)
    }

    /// `client` (INCR, the value) or `putter` (PUT, the key's number).
    pub(super) fn start_kind(kind: &str, seconds: u64) -> Result<ClientRun, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = ns_cmd(exe)
            .args([kind, GUEST_SERVICE, &seconds.to_string()])
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

    pub(super) fn snapshot(&self) -> Vec<Op> {
        self.ops.lock().map(|v| v.clone()).unwrap_or_default()
    }

    pub(super) fn stop(mut self) -> Vec<Op> {
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
pub(super) type Conn = Option<(TcpStream, BufReader<TcpStream>)>;

/// Send one request line on `conn` (connecting first if needed) and read the reply line.
pub(super) fn request(conn: &mut Conn, addr: SocketAddr, req: &[u8]) -> std::io::Result<String> {
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
pub(super) fn client(addr: &str, seconds: u64) -> ExitCode {
    request_loop(
        "client",
        addr,
        seconds,
        |_| "INCR\n".into(),
        |r, _| r.parse::<u64>().is_ok().then(|| r.to_string()),
    )
}

/// The PUT client (inside the namespace): `PUT kN vN` for N = 1, 2, ..., one at a time,
/// reconnecting after errors (a key not acknowledged is not sent again: the next goes under the
/// next number); the guest logs each record on its ext4 data disk and fsyncs it before
/// answering `OK`. One line per request: `ok MICROS N` or `err MICROS`.
pub(super) fn putter(addr: &str, seconds: u64) -> ExitCode {
    request_loop(
        "putter",
        addr,
        seconds,
        |n| format!("PUT k{n} v{n}\n"),
        |r, n| r.starts_with("OK").then(|| n.to_string()),
    )
}

/// Requests `req(1)`, `req(2)`, ... one at a time for `seconds`, 50 ms apart, reconnecting
/// after errors; one line per request: `ok MICROS WHAT` when `ok(reply, n)` gives WHAT, else
/// `err MICROS`.
fn request_loop(
    name: &str,
    addr: &str,
    seconds: u64,
    req: impl Fn(u64) -> String,
    ok: impl Fn(&str, u64) -> Option<String>,
) -> ExitCode {
    let Ok(addr) = addr.parse::<SocketAddr>() else {
        eprintln!("{name}: bad address {addr}");
        return ExitCode::from(2);
    };
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut out = std::io::stdout();
    let mut conn: Conn = None;
    let mut n = 0u64;
    while Instant::now() < until {
        n += 1;
        let t = Instant::now();
        let r = request(&mut conn, addr, req(n).as_bytes());
        let us = t.elapsed().as_micros();
        let line = match r.ok().and_then(|r| ok(&r, n)) {
            Some(what) => format!("ok {us} {what}\n"),
            None => {
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

/// Look up keys `k1 ..= kN` (inside the namespace) with `GETK`: prints `have N`, `missing N`
/// (the guest answered `NONE`) or `error N` per key, then `records COUNT` (`RECORDS`).
pub(super) fn check_puts(addr: &str, last: u64) -> ExitCode {
    let Ok(addr) = addr.parse::<SocketAddr>() else {
        eprintln!("check-puts: bad address {addr}");
        return ExitCode::from(2);
    };
    let mut conn: Conn = None;
    for n in 1..=last {
        let line = match request(&mut conn, addr, format!("GETK k{n}\n").as_bytes()) {
            Ok(v) if v == format!("v{n}") => format!("have {n}"),
            Ok(v) if v == "NONE" => format!("missing {n}"),
            Ok(v) => format!("error {n} {v}"),
            Err(e) => {
                conn = None;
                format!("error {n} {e}")
            }
        };
        println!("{line}");
    }
    match request(&mut conn, addr, b"RECORDS\n") {
        Ok(v) => println!("records {v}"),
        Err(e) => println!("records error {e}"),
    }
    ExitCode::SUCCESS
}

/// The reply-time probe (inside the namespace): `GET` one at a time, 5 ms apart, on one
/// connection, for `seconds`; prints one summary line (see [`Probe::parse`]). Without output
/// commit a reply is late only while the guest is stopped, so its slow replies measure the
/// pause per checkpoint from the client's side; with output commit they measure the commit.
pub(super) fn probe(addr: &str, seconds: u64) -> ExitCode {
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
pub(super) struct Probe {
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
    pub(super) fn run(seconds: u64) -> Result<Probe, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let out = ns_cmd_within(seconds + 60, exe)
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

    pub(super) fn describe(&self) -> String {
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

pub(super) fn history_line(name: &str, ops: &[Op]) -> (String, bool) {
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
pub(super) fn save_history(path: &Path, ops: &[Op], killed: Instant) {
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
pub(super) fn after_kill(ops: &[Op], killed: Instant) -> (Option<Duration>, Option<u64>) {
    let first = ops.iter().find(|o| o.value.is_some() && o.start >= killed);
    (
        first.map(|o| o.end.duration_since(killed)),
        first.and_then(|o| o.value),
    )
}

pub(super) fn acked_between(ops: &[Op], from: Instant, to: Instant) -> usize {
    ops.iter()
        .filter(|o| o.value.is_some() && o.end >= from && o.end <= to)
        .count()
}
