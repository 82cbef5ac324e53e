//! `hsb-page-trace`: record a running Xen guest's dirty pages, checkpoint by checkpoint, the way
//! hsb-primary takes them (cooperative suspend, log-dirty bitmap, pages read through a read-only
//! mapping, resume), into a page trace (`hsb_tests::pagetrace`). A test tool for dom0: the trace
//! is replayed through the real checkpoint path by `hsb-bench` section 11 and
//! `tests/page_trace.rs`. `just xen-trace` records one on the Xen rig.
//!
//! ```text
//! hsb-page-trace DOMAIN OUT [--checkpoints N] [--period MS] [--note TEXT]
//! hsb-page-trace replay TRACE
//! ```
//!
//! `replay` runs a trace (recorded anywhere) through the real checkpoint path, plain and
//! encoded, every page checked, and prints what the checkpoints need of the replication link at
//! the recorded pace: sizing a link for a guest before protecting it.
//!
//! DOMAIN is a name or id; N checkpoints (default 300), one every MS milliseconds (default 200,
//! the rig's checkpoint period under TCG) measured from one suspend to the next. It must not run
//! beside hsb-primary or `xl remus` on the same guest (each owns the guest's log-dirty
//! tracking). The guest is resumed on every path out; progress goes to stderr, a summary line to
//! stdout. `SIGINT` (Ctrl-C), `SIGTERM` or `SIGQUIT` stop the recording after the checkpoint
//! under way: the guest runs again, its log-dirty tracking is switched off and the trace is
//! complete with the checkpoints taken so far. Exit status: 0 recorded (also when stopped so),
//! 1 failed (the file holds the checkpoints recorded before), 2 bad arguments.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use hsb_common::signals::{Request, SignalSource};
use hsb_domain::codec_policy::CodecMode;
use hsb_domain::domain::CheckpointSource;
use hsb_domain::xen::{resolve, DomainRef, XenSource};
use hsb_domain::PAGE_SIZE;
use hsb_tests::pagetrace::{self, TraceCheckpoint, TraceHeader, TraceWriter};

const USAGE: &str = "usage: hsb-page-trace DOMAIN OUT [--checkpoints N] [--period MS] [--note TEXT]\n       hsb-page-trace replay TRACE";
/// Bounds on the arguments.
const MAX_CHECKPOINTS: u64 = 100_000;
const MAX_PERIOD_MS: u64 = 60_000;
/// How long the guest has to reach its suspend point.
const SUSPEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait between two looks at the signals while waiting for the next checkpoint.
const SIGNAL_LOOK: Duration = Duration::from_millis(50);

struct Args {
    domain: DomainRef,
    out: String,
    checkpoints: u64,
    period: Duration,
    note: String,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut pos = Vec::new();
    let (mut checkpoints, mut period_ms, mut note) = (300u64, 200u64, String::new());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |what: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs {what}"))
        };
        match a.as_str() {
            "--checkpoints" => {
                checkpoints = value("a count")?
                    .parse()
                    .ok()
                    .filter(|n| (2..=MAX_CHECKPOINTS).contains(n))
                    .ok_or(format!(
                        "--checkpoints: a count from 2 to {MAX_CHECKPOINTS}"
                    ))?;
            }
            "--period" => {
                period_ms = value("milliseconds")?
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_PERIOD_MS).contains(n))
                    .ok_or(format!("--period: milliseconds from 1 to {MAX_PERIOD_MS}"))?;
            }
            "--note" => note = value("a text")?,
            s if s.starts_with('-') => return Err(format!("unknown option '{s}'")),
            _ => pos.push(a.clone()),
        }
    }
    let [domain, out] = <[String; 2]>::try_from(pos)
        .map_err(|p| format!("expected DOMAIN and OUT, got {} arguments", p.len()))?;
    Ok(Args {
        domain: match domain.parse() {
            Ok(id) => DomainRef::Id(id),
            Err(_) => DomainRef::Name(domain),
        },
        out,
        checkpoints,
        period: Duration::from_millis(period_ms),
        note,
    })
}

/// Suspend, take the dirty pages, resume: the guest is resumed whatever failed in between.
fn take(src: &mut XenSource, c: &mut TraceCheckpoint) -> Result<(), String> {
    src.suspend().map_err(|e| e.to_string())?;
    c.pfns.clear();
    let taken = src
        .take_dirty(false, &mut c.pfns)
        .and_then(|()| {
            c.data.resize(c.pfns.len() * PAGE_SIZE, 0);
            src.read_pages(&c.pfns, &mut c.data)
        })
        .map_err(|e| e.to_string());
    let resumed = src.resume().map_err(|e| format!("resume: {e}"));
    taken.and(resumed)
}

/// The stop signal received since the last look, if any (the others are ignored here).
fn stop_asked(signals: &mut SignalSource) -> Option<&'static str> {
    signals.take().into_iter().find_map(|r| match r {
        Request::Stop(name) => Some(name),
        _ => None,
    })
}

fn record(a: &Args) -> Result<String, String> {
    // Before the guest is touched: from here a stop signal waits for the checkpoint under way
    // (a process killed between suspend and resume would leave the guest suspended).
    let mut signals =
        SignalSource::install().map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let domid = resolve(&a.domain).map_err(|e| e.to_string())?;
    let mut src = XenSource::open(domid, SUSPEND_TIMEOUT, &mut || {})
        .map_err(|e| format!("attach to {}: {e}", a.domain))?;
    let mut c = TraceCheckpoint {
        pfns: Vec::with_capacity(src.max_pages() as usize),
        ..TraceCheckpoint::default()
    };
    let header = TraceHeader {
        pfn_limit: src.pages(),
        ram_pages: src.max_pages(),
        period_us: a.period.as_micros() as u64,
        note: a.note.clone(),
    };
    let file = File::create(&a.out).map_err(|e| format!("create {}: {e}", a.out))?;
    let mut w = TraceWriter::new(BufWriter::new(file), header).map_err(|e| e.to_string())?;
    eprintln!(
        "hsb-page-trace: {} (domain {domid}, {} RAM pages, frames below {}): {} checkpoints every {:?} into {}",
        a.domain,
        src.max_pages(),
        src.pages(),
        a.checkpoints,
        a.period,
        a.out
    );
    let started = Instant::now();
    let mut last = started;
    let (mut pages, mut pause_max) = (0u64, Duration::ZERO);
    let (mut taken, mut stopped) = (0u64, None);
    for i in 1..=a.checkpoints {
        // Until the next checkpoint is due, or a stop signal came.
        stopped = loop {
            if let Some(sig) = stop_asked(&mut signals) {
                break Some(sig);
            }
            match (last + a.period).checked_duration_since(Instant::now()) {
                Some(wait) => std::thread::sleep(wait.min(SIGNAL_LOOK)),
                None => break None,
            }
        };
        if let Some(sig) = stopped {
            eprintln!("hsb-page-trace: {sig}: stopping after {taken} checkpoints");
            break;
        }
        let t = Instant::now();
        take(&mut src, &mut c).map_err(|e| format!("checkpoint {i}: {e}"))?;
        let pause = t.elapsed();
        c.interval_us = t.duration_since(last).as_micros() as u64;
        c.pause_us = pause.as_micros() as u64;
        last = t;
        w.add(&c).map_err(|e| format!("checkpoint {i}: {e}"))?;
        taken = i;
        pages += c.pfns.len() as u64;
        pause_max = pause_max.max(pause);
        if i % 20 == 0 || i == a.checkpoints {
            eprintln!(
                "hsb-page-trace: {i}/{} checkpoints, {pages} pages, trace {:.1} MiB, longest pause {:.0} ms",
                a.checkpoints,
                w.written as f64 / 1048576.0,
                pause_max.as_secs_f64() * 1e3
            );
        }
    }
    let written = w.written;
    w.finish().map_err(|e| e.to_string())?;
    Ok(format!(
        "recorded {taken} checkpoints of {}{} over {:.1} s: {pages} dirty pages ({:.1} MiB) in a trace of {:.2} MiB ({})",
        a.domain,
        stopped.map_or(String::new(), |sig| format!(
            " (stopped by {sig}; {} asked)",
            a.checkpoints
        )),
        started.elapsed().as_secs_f64(),
        (pages * PAGE_SIZE as u64) as f64 / 1048576.0,
        written as f64 / 1048576.0,
        a.out
    ))
}

/// `replay TRACE`: the trace's checkpoints plain and encoded, and the link they need.
fn replay(path: &str) -> Result<String, String> {
    let path = Path::new(path);
    let header = pagetrace::header_of(path)?;
    let plain = pagetrace::replay_file(path, CodecMode::Never, 0)?;
    let enc = pagetrace::replay_file(path, CodecMode::Always, 0)?;
    let secs = (plain.span_us as f64 / 1e6).max(1e-6);
    let mib = |b: u64| b as f64 / 1048576.0;
    let rate = |b: u64| {
        let bps = b as f64 / secs;
        format!(
            "{:.1} MiB/s ({:.0} Mbit/s)",
            bps / 1048576.0,
            bps * 8.0 / 1e6
        )
    };
    Ok(format!(
        "trace: {}\n\
         checkpoints: {} after the first, over {secs:.1} s; {} dirty pages ({:.1} per checkpoint)\n\
         plain: {:.2} MiB on the wire, {} at the recorded pace\n\
         encoded (encode = always, the default page cache): {:.2} MiB on the wire, {} ({:.1}x fewer bytes)\n\
         every page of every checkpoint checked on the replica: {} pages",
        if header.note.is_empty() { "(no note)" } else { header.note.as_str() },
        plain.checkpoints - 1,
        plain.pages,
        plain.pages as f64 / (plain.checkpoints - 1) as f64,
        mib(plain.wire_bytes),
        rate(plain.wire_bytes),
        mib(enc.wire_bytes),
        rate(enc.wire_bytes),
        plain.wire_bytes as f64 / enc.wire_bytes.max(1) as f64,
        plain.pages_checked + enc.pages_checked,
    ))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if args.first().map(String::as_str) == Some("replay") {
        let [_, path] = args.as_slice() else {
            eprintln!("hsb-page-trace: replay needs one trace file\n{USAGE}");
            return ExitCode::from(2);
        };
        return match replay(path) {
            Ok(report) => {
                println!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("hsb-page-trace: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let a = match parse(&args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("hsb-page-trace: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match record(&a) {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hsb-page-trace: {e}");
            ExitCode::FAILURE
        }
    }
}
