//! Sections 7 and 8 of `hsb-bench`: checkpoints over a shaped link (issue 16). Hosts A
//! (hsb-primary) and B (hsb-standby) are network namespaces joined by veth pairs and a bridge
//! (`hsb_tests::netns`); both hosts' replication interfaces are shaped with htb (this kernel has
//! no tbf or netem) to 1 or 10 Gbit/s. In the same run and over the same link, a raw TCP stream
//! (this binary, `--raw-source` in A, `--raw-sink` in B, which discards) gives the link's rate.
//!
//! 7. Per link, model write pattern and `encode` setting (`never`: plain pages; `auto`: the
//!    adaptive rule), with a dirty rate above what the link carries and 25 ms epochs: checkpoints
//!    per second, dirty pages per second protected (applied by the standby), bytes of pages and
//!    on the wire, link efficiency (bytes on the wire per second against the raw stream), pause,
//!    reply time of a sequential client (output commit), and CPU time per GiB of pages on each
//!    side. Then, on 1 Gbit/s, a dirty rate twice what plain checkpoints carried: whether 25 ms
//!    epochs hold.
//! 8. The pause of a pre-copied full synchronisation of a guest dirtying memory at 10%, 50% and
//!    100% of the 1 Gbit/s link's rate (in pages per second).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use hsb_tests::netns::{self, Host, Net, Topology};
use hsb_tests::{num, Client, Daemon, TempDir};

use super::stats::fnum;
use super::{pct, progress, table, Ctx, Pct, GIB, MIB, R};

mod raw;

pub use raw::raw_subcommand;
use raw::{raw_tcp, RAW_SECS};

const PAGE: f64 = 4096.0;
/// Warm-up after the first full synchronisation is acknowledged (the adaptive rule measures
/// both codecs first), and the measured window.
const WARMUP: Duration = Duration::from_secs(3);
const WINDOW: Duration = Duration::from_secs(5);
/// Clock ticks per second of /proc/PID/stat (USER_HZ: 100 on Linux).
const TICKS: f64 = 100.0;

/// The two hosts and their shaped link.
struct Link {
    topo: Topology,
    name: &'static str,
    /// Raw TCP payload over it, bytes per second.
    raw: f64,
}

fn shape(topo: &Topology, rate: &str, burst: &str) -> R<()> {
    for h in [Host::A, Host::B] {
        topo.exec(
            h,
            &[
                "tc", "qdisc", "replace", "dev", "eth1", "root", "handle", "1:", "htb", "default",
                "1",
            ],
        )?;
        topo.exec(
            h,
            &[
                "tc", "class", "replace", "dev", "eth1", "parent", "1:", "classid", "1:1", "htb",
                "rate", rate, "ceil", rate, "burst", burst, "cburst", burst, "quantum", "65536",
            ],
        )?;
    }
    Ok(())
}

fn make_link(name: &'static str, rate: &str, burst: &str) -> R<Link> {
    let topo = Topology::new(0)?;
    shape(&topo, rate, burst)?;
    let raw = raw_tcp(&topo)?;
    Ok(Link { topo, name, raw })
}

/// One cluster run's settings.
#[derive(Clone)]
struct RunOpts {
    pattern: &'static str,
    dirty_rate: u64,
    encode: &'static str,
    memory: &'static str,
    precopy: bool,
    /// Measure a steady state (false: only the first full synchronisation).
    steady: bool,
}

impl RunOpts {
    /// Section 7's runs: a 64 MiB guest, pre-copy on, the steady state measured.
    fn steady(pattern: &'static str, dirty_rate: u64, encode: &'static str) -> RunOpts {
        RunOpts {
            pattern,
            dirty_rate,
            encode,
            memory: "64MiB",
            precopy: true,
            steady: true,
        }
    }
}

/// What one run measured.
#[derive(Default)]
struct RunResult {
    ckpts: f64,
    pages: f64,
    page_bytes: f64,
    wire: f64,
    stretched: f64,
    encoded_share: f64,
    pause: Option<Pct>,
    reply: Option<Pct>,
    cpu_primary: f64,
    cpu_standby: f64,
    /// Loop turns over 50 ms in the window (`loop_long_turns`), primary and standby, and the
    /// longest turn each had since it started, in ms (`loop_turn_max_ms`).
    long_turns: (f64, f64),
    turn_max: (f64, f64),
    /// The full synchronisation's log line and pause in ms.
    full_sync: Option<(f64, String)>,
}

fn ticks(d: &Daemon) -> u64 {
    let Some(pid) = d.child.as_ref().map(|c| c.id()) else {
        return 0;
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')').map_or(0, |(_, r)| {
        r.split_whitespace()
            .skip(11)
            .take(2)
            .filter_map(|x| x.parse::<u64>().ok())
            .sum()
    })
}

fn bin(name: &str) -> std::path::PathBuf {
    hsb_tests::bin(name)
}

fn run(link: &Link, o: &RunOpts) -> R<RunResult> {
    let topo = &link.topo;
    let dir = TempDir::new("links");
    let key = dir.path("cluster.key");
    hsb_common::key::ClusterKey::generate(&key).ctx("key")?;
    let b_r = topo.ip(Host::B, Net::Replication);
    let a_c = topo.ip(Host::A, Net::Client);
    let common = format!(
        "cluster_key = {}\nmodel.memory = {}\nstats_interval = 0s\n",
        key.display(),
        o.memory
    );
    let sconf = dir.path("standby.conf");
    std::fs::write(
        &sconf,
        format!(
            "node = host-b\nstate_file = {}\nlisten = {b_r}:7100\ncontrol = {}\n{common}",
            dir.path("b.state").display(),
            dir.path("b.sock").display()
        ),
    )
    .ctx("standby.conf")?;
    let pconf = dir.path("primary.conf");
    std::fs::write(
        &pconf,
        format!(
            "node = host-a\nstate_file = {}\nstandby = {b_r}:7100\ncontrol = {}\nmodel.service = {a_c}:7000\nmodel.dirty_rate = {}\nmodel.write_pattern = {}\nencode = {}\ncheckpoint_period = 25ms\nprecopy = {}\nreconnect_interval = 50ms\n{common}",
            dir.path("a.state").display(),
            dir.path("a.sock").display(),
            o.dirty_rate,
            o.pattern,
            o.encode,
            o.precopy
        ),
    )
    .ctx("primary.conf")?;
    let mut cmd = topo.command(Host::B, &bin("hsb-standby"));
    cmd.args(["run", "-c"]).arg(&sconf);
    let standby =
        Daemon::start_command("hsb-standby", cmd, &dir.path("b.sock"), &dir.path("b.log"));
    standby.wait_for("standby up", Duration::from_secs(10), |_| true);
    let mut cmd = topo.command(Host::A, &bin("hsb-primary"));
    cmd.args(["run", "-c"]).arg(&pconf);
    let primary =
        Daemon::start_command("hsb-primary", cmd, &dir.path("a.sock"), &dir.path("a.log"));
    primary.wait_for(
        "first checkpoint acknowledged",
        Duration::from_secs(60),
        |s| num(s, "acked_checkpoint") >= 1,
    );
    let mut r = RunResult {
        full_sync: full_sync_line(&primary.log_text()),
        ..RunResult::default()
    };
    if !o.steady {
        return Ok(r);
    }
    thread::sleep(WARMUP);
    // The window runs from one applied checkpoint to another: whole checkpoints only (at
    // 1 Gbit/s a plain checkpoint of 64 MiB is half a second of the link, so a window cut
    // anywhere would count one more or one fewer: 12% of 5 s).
    let snapshot = || {
        let s = at_apply(&standby);
        let t = Instant::now();
        (primary.status(), s, ticks(&primary), ticks(&standby), t)
    };
    let (p0, s0, tp0, ts0, t0) = snapshot();
    let stop = Arc::new(AtomicBool::new(false));
    let service: SocketAddr = format!("{a_c}:7000").parse().ctx("service address")?;
    let client = {
        let stop = stop.clone();
        thread::spawn(move || -> Vec<Duration> {
            let mut v = vec![];
            let Ok(mut c) = Client::connect(service, Duration::from_secs(5)) else {
                return v;
            };
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                if c.request("INCR").is_err() {
                    break;
                }
                v.push(t.elapsed());
            }
            v
        })
    };
    thread::sleep(WINDOW);
    let (p1, s1, tp1, ts1, t1) = snapshot();
    let secs = t1.duration_since(t0).as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let replies = client.join().unwrap_or_default();
    let d = |a: &std::collections::HashMap<String, String>,
             b: &std::collections::HashMap<String, String>,
             k: &str| num(b, k).saturating_sub(num(a, k)) as f64;
    r.ckpts = d(&s0, &s1, "checkpoints_applied") / secs;
    r.pages = d(&s0, &s1, "pages_applied") / secs;
    r.page_bytes = r.pages * PAGE;
    // Bytes on the wire: the primary's mean sealed checkpoint times the checkpoints applied
    // (its own count moves a whole checkpoint at a time, and not at the standby's moments).
    // `bytes_sent` counts checkpoints as they are written (`checkpoints_sent`); a primary
    // without that key counted them when sealed, all at once with the capture.
    let key = if p1.contains_key("checkpoints_sent") {
        "checkpoints_sent"
    } else {
        "checkpoints"
    };
    let sent = d(&p0, &p1, key);
    r.wire = if sent > 0.0 {
        d(&p0, &p1, "bytes_sent") / sent * r.ckpts
    } else {
        d(&p0, &p1, "bytes_sent") / secs
    };
    r.stretched = d(&p0, &p1, "stretched_epochs") / secs;
    let sealed = d(&p0, &p1, "checkpoints").max(1.0);
    r.encoded_share = d(&p0, &p1, "checkpoints_encoded") / sealed;
    let gib = (r.page_bytes * secs / GIB).max(1e-9);
    r.cpu_primary = tp1.saturating_sub(tp0) as f64 / TICKS / gib;
    r.cpu_standby = ts1.saturating_sub(ts0) as f64 / TICKS / gib;
    r.long_turns = (
        d(&p0, &p1, "loop_long_turns"),
        d(&s0, &s1, "loop_long_turns"),
    );
    // `loop_turn_max_ms` has a decimal.
    r.turn_max = (fnum(&p1, "loop_turn_max_ms"), fnum(&s1, "loop_turn_max_ms"));
    let (a0, a1) = (num(&p0, "acked_checkpoint"), num(&p1, "acked_checkpoint"));
    r.pause = pauses(&primary.log_text(), a0, a1);
    r.reply = (!replies.is_empty()).then(|| pct(replies));
    Ok(r)
}

/// The standby's status at the moment it applied a checkpoint (polled every 2 ms, for at most
/// 10 s).
fn at_apply(standby: &Daemon) -> std::collections::HashMap<String, String> {
    let a = num(&standby.status(), "checkpoints_applied");
    let t = Instant::now();
    loop {
        let s = standby.status();
        if num(&s, "checkpoints_applied") != a || t.elapsed() > Duration::from_secs(10) {
            return s;
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// The primary's per-checkpoint pauses (debug log) of checkpoints `from+1..=to`.
fn pauses(log: &str, from: u64, to: u64) -> Option<Pct> {
    let v: Vec<Duration> = log
        .lines()
        .filter_map(|l| {
            let rest = &l[l.find("checkpoint ")? + 11..];
            let (n, rest) = rest.split_once(':')?;
            let n: u64 = n.parse().ok()?;
            if n <= from || n > to {
                return None;
            }
            let p = rest.split("pause ").nth(1)?;
            let ms: f64 = p.split_whitespace().next()?.parse().ok()?;
            Some(Duration::from_secs_f64(ms / 1e3))
        })
        .collect();
    (!v.is_empty()).then(|| pct(v))
}

fn full_sync_line(log: &str) -> Option<(f64, String)> {
    let l = log
        .lines()
        .find(|l| l.contains("full synchronisation,") && l.contains("pause"))?;
    let ms: f64 = l
        .split("pause ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let text = log
        .lines()
        .find_map(|l| Some(l[l.find("pre-copy: ")? + 10..].to_string()))
        .unwrap_or_else(|| "not pre-copied".into());
    Some((ms, text))
}

fn f0(v: f64) -> String {
    format!("{v:.0}")
}

fn f1(v: f64) -> String {
    format!("{v:.1}")
}

fn p(o: Option<Pct>) -> String {
    o.map_or("-".into(), |p| {
        format!(
            "{:.1} / {:.1}",
            p.p50.as_secs_f64() * 1e3,
            p.p99.as_secs_f64() * 1e3
        )
    })
}

/// Pages per second of the raw stream.
fn link_pages(l: &Link) -> f64 {
    l.raw / PAGE
}

/// Section 7 and 8's markdown, and the figures for the targets table: (1 Gbit/s protected pages
/// ratio auto/never per pattern, 10 Gbit/s ratio per pattern, byte ratio per pattern).
pub fn sections_7_8() -> R<String> {
    netns::available()?;
    let mut s = String::new();
    let patterns = ["counters", "lines:4", "pages"];
    let mut links = vec![];
    for (name, rate, burst) in [("1 Gbit/s", "1gbit", "256k"), ("10 Gbit/s", "10gbit", "2m")] {
        progress(&format!("7: {name}: raw TCP"));
        links.push(make_link(name, rate, burst)?);
    }
    let _ = writeln!(
        s,
        "### 7. Checkpoints on shaped links (issue 16)\n\nHosts A (hsb-primary) and B (hsb-standby) are network namespaces joined by veth and a bridge; both replication interfaces are shaped with htb (`rate = ceil`, burst 256 KiB at 1 Gbit/s and 2 MiB at 10 Gbit/s; this kernel has no tbf or netem). Model domain of 64 MiB, 25 ms epochs, `max_unacked` 4, release build. The raw stream is one TCP connection over the same link in the same run, receiver discarding, {RAW_SECS} s.\n"
    );
    s.push_str(&table(
        &["Link", "raw TCP MiB/s", "= pages/s"],
        &links
            .iter()
            .map(|l| vec![l.name.into(), f0(l.raw / MIB), f0(link_pages(l))])
            .collect::<Vec<_>>(),
    ));
    let mut rows = vec![];
    let mut summary = vec![];
    for l in &links {
        // Twice what plain pages carry: the link, not the workload, limits.
        let rate = (2.0 * link_pages(l)) as u64;
        for pattern in patterns {
            let mut pair = vec![];
            for encode in ["never", "auto"] {
                progress(&format!("7: {}: {pattern}, encode {encode}", l.name));
                let o = RunOpts::steady(pattern, rate, encode);
                let r = run(l, &o)?;
                rows.push(vec![
                    l.name.into(),
                    pattern.into(),
                    encode.into(),
                    f0(rate as f64),
                    f1(r.ckpts),
                    f0(r.pages),
                    f0(r.page_bytes / MIB),
                    f0(r.wire / MIB),
                    format!("{:.0}%", 100.0 * r.wire / l.raw),
                    format!("{:.1}x", r.page_bytes / r.wire.max(1.0)),
                    format!("{:.0}%", 100.0 * r.encoded_share),
                    p(r.pause),
                    p(r.reply),
                    format!("{:.2} / {:.2}", r.cpu_primary, r.cpu_standby),
                    format!(
                        "{:.0} / {:.0} ({:.1} / {:.1})",
                        r.long_turns.0, r.long_turns.1, r.turn_max.0, r.turn_max.1
                    ),
                ]);
                pair.push(r);
            }
            summary.push((
                l.name,
                pattern,
                pair[1].pages / pair[0].pages.max(1.0),
                pair[1].page_bytes / pair[1].wire.max(1.0),
            ));
        }
    }
    let _ = writeln!(
        s,
        "Dirty rate twice the raw link's pages per second (so the link, not the workload, limits), measured over whole checkpoints: from a checkpoint applied by the standby to the first one applied {} s later, after {} s of warm-up following the first full synchronisation. Pages/s: dirty pages protected, i.e. applied by the standby; MiB/s of pages and on the wire (sealed frames: the primary's mean sealed checkpoint times checkpoints applied per second); link efficiency: bytes on the wire per second against the raw stream; ratio: pages against wire bytes; encoded: share of checkpoints the rule encoded; pause and reply (a sequential `INCR` client, output commit) p50 / p99 in ms; CPU: seconds of CPU per GiB of pages protected, primary / standby; long turns: turns of each daemon's event loop over 50 ms in the window (a turn that long delays heartbeats and output), primary / standby, with the longest turn since the daemon started (the full synchronisation included) in ms.\n",
        WINDOW.as_secs(),
        WARMUP.as_secs()
    );
    s.push_str(&table(
        &[
            "Link",
            "pattern",
            "encode",
            "dirty pages/s",
            "ckpt/s",
            "pages/s protected",
            "pages MiB/s",
            "wire MiB/s",
            "link eff.",
            "ratio",
            "encoded",
            "pause ms",
            "reply ms",
            "CPU s/GiB P / S",
            "long turns P / S (max ms)",
        ],
        &rows,
    ));
    // Same epoch length: twice what plain checkpoints carried on 1 Gbit/s.
    let one = &links[0];
    let mut held = vec![];
    for pattern in ["counters", "lines:4"] {
        progress(&format!(
            "7: 1 Gbit/s, {pattern} at twice the plain capacity"
        ));
        let plain = run(
            one,
            &RunOpts::steady(pattern, (0.9 * link_pages(one)) as u64, "never"),
        )?;
        for (times, encode) in [(2.0, "never"), (2.0, "auto"), (3.0, "auto")] {
            let rate = (times * plain.pages) as u64;
            let r = run(one, &RunOpts::steady(pattern, rate, encode))?;
            held.push(vec![
                pattern.into(),
                encode.into(),
                f0(plain.pages),
                f0(rate as f64),
                f1(r.ckpts),
                f1(r.stretched),
                f0(r.pages),
                p(r.reply),
            ]);
        }
    }
    let _ = writeln!(
        s,
        "\nSame epoch length on 1 Gbit/s: first plain checkpoints at 90% of the raw link's pages/s (what they protect is the plain capacity), then a dirty rate twice that capacity, plain and with `encode = auto`, and three times it with `encode = auto`. 25 ms epochs hold when checkpoints/s stay near 40 and no epoch stretches.\n"
    );
    s.push_str(&table(
        &[
            "pattern",
            "encode",
            "plain capacity pages/s",
            "dirty pages/s",
            "ckpt/s",
            "stretched epochs/s",
            "pages/s protected",
            "reply ms p50 / p99",
        ],
        &held,
    ));
    let _ = writeln!(s, "Protected pages/s with `encode = auto` against plain (saturated runs above), and pages against wire bytes:\n");
    s.push_str(&table(
        &["Link", "pattern", "auto / never pages/s", "ratio (auto)"],
        &summary
            .iter()
            .map(|(l, pat, x, r)| {
                vec![
                    (*l).into(),
                    (*pat).into(),
                    format!("{x:.2}x"),
                    format!("{r:.1}x"),
                ]
            })
            .collect::<Vec<_>>(),
    ));

    // 8. Full-sync pause against dirty rate.
    let _ = writeln!(
        s,
        "### 8. Full-synchronisation pause of a busy guest (issue 16, item 3)\n\nThe 1 Gbit/s link of section 7, a 256 MiB model domain (pattern lines:4), `precopy = true` (rounds while the dirty set shrinks) and, for reference, `precopy = false` (all memory copied while suspended). The pause is the primary's own figure for the first full synchronisation (suspend to resume).\n"
    );
    let mut fs = vec![];
    for (share, precopy) in [(0.1, true), (0.5, true), (1.0, true), (1.0, false)] {
        let rate = (share * link_pages(one)) as u64;
        progress(&format!(
            "8: full sync at {:.0}% of the link, precopy {precopy}",
            share * 100.0
        ));
        let r = run(
            one,
            &RunOpts {
                pattern: "lines:4",
                dirty_rate: rate,
                encode: "auto",
                memory: "256MiB",
                precopy,
                steady: false,
            },
        )?;
        let (ms, line) = r.full_sync.unwrap_or((f64::NAN, "-".into()));
        fs.push(vec![
            format!("{:.0}%", share * 100.0),
            f0(rate as f64),
            precopy.to_string(),
            format!("{ms:.1}"),
            line,
        ]);
    }
    s.push_str(&table(
        &[
            "dirty rate / link",
            "pages/s",
            "precopy",
            "pause ms",
            "pre-copy (primary's log)",
        ],
        &fs,
    ));
    Ok(s)
}
