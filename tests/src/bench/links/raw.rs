//! The raw TCP stream of sections 7 and 8: this binary run as `--raw-sink` in host B and
//! `--raw-source` in host A gives a shaped link's rate in the same run as the checkpoints.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use hsb_tests::netns::{Host, Net, Topology};

use crate::bench::{Ctx, R};

/// Seconds of the raw TCP stream per link.
pub const RAW_SECS: f64 = 3.0;

/// `--raw-sink ADDR` / `--raw-source ADDR SECS`: the raw TCP stream, run inside a namespace
/// by this binary. `None` if the arguments are not one of these.
pub fn raw_subcommand(args: &[String]) -> Option<R<()>> {
    match args.get(1).map(String::as_str) {
        Some("--raw-sink") => Some(raw_sink(args.get(2)?)),
        Some("--raw-source") => {
            let secs: f64 = args.get(3)?.parse().ok()?;
            Some(raw_source(args.get(2)?, secs))
        }
        _ => None,
    }
}

/// Accept one connection, read and discard until EOF; print `bytes nanos` (first to last byte).
fn raw_sink(addr: &str) -> R<()> {
    let l = TcpListener::bind(addr).ctx("bind")?;
    println!("listening");
    let _ = std::io::stdout().flush();
    let (mut s, _) = l.accept().ctx("accept")?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut bytes, mut first, mut last) = (0u64, None, Instant::now());
    loop {
        let n = s.read(&mut buf).ctx("read")?;
        if n == 0 {
            break;
        }
        let now = Instant::now();
        // The first read's bytes only start the clock.
        if first.is_none() {
            first = Some(now);
        } else {
            bytes += n as u64;
        }
        last = now;
    }
    let nanos = first.map_or(0, |f| last.duration_since(f).as_nanos());
    println!("{bytes} {nanos}");
    Ok(())
}

/// Connect and write for `secs` seconds.
fn raw_source(addr: &str, secs: f64) -> R<()> {
    let t = Instant::now();
    let mut s = loop {
        match TcpStream::connect(addr) {
            Ok(s) => break s,
            Err(e) if t.elapsed() < Duration::from_secs(5) => {
                let _ = e;
                thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(format!("connect {addr}: {e}")),
        }
    };
    let buf = vec![0x5au8; 256 * 1024];
    let t = Instant::now();
    while t.elapsed().as_secs_f64() < secs {
        s.write_all(&buf).ctx("write")?;
    }
    Ok(())
}

/// The raw TCP payload rate from host A to host B, bytes per second.
pub fn raw_tcp(topo: &Topology) -> R<f64> {
    let exe = std::env::current_exe().ctx("current_exe")?;
    let addr = format!("{}:7900", topo.ip(Host::B, Net::Replication));
    let mut sink = topo
        .command(Host::B, &exe)
        .args(["--raw-sink", &addr])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ctx("raw sink")?;
    let mut out = sink.stdout.take().ok_or("raw sink: no stdout")?;
    let mut line = [0u8; 10];
    out.read_exact(&mut line).ctx("raw sink ready")?;
    let st = topo
        .command(Host::A, &exe)
        .args(["--raw-source", &addr, &RAW_SECS.to_string()])
        .stdout(Stdio::null())
        .status()
        .ctx("raw source")?;
    let mut text = String::new();
    out.read_to_string(&mut text).ctx("raw sink output")?;
    let _ = sink.wait();
    if !st.success() {
        return Err(format!("raw source failed: {st}"));
    }
    let mut it = text.split_whitespace();
    let bytes: f64 = it
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or("raw sink output")?;
    let nanos: f64 = it
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or("raw sink output")?;
    Ok(bytes / (nanos / 1e9).max(1e-9))
}
