//! Section 5b of `hsb-bench`: false failovers under 30% random loss on the heartbeat link (a
//! cluster whose heartbeats pass a lossy UDP relay, a client on the primary throughout).

use std::fmt::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hsb_tests::{free_addr, num, Client, Daemon, TempDir};

use super::tally;
use crate::bench::{ms2, pct, table, Ctx, R};
use hsb_tests::{json_str, json_u64};

/// Heartbeat loss experiment.
const LOSS: f64 = 0.30;
const LOSS_FOR: Duration = Duration::from_secs(20);

/// Stops the relay's thread when dropped.
struct LossyUdp {
    addr: SocketAddr,
    /// Drop probability in parts per million.
    loss_ppm: Arc<AtomicU32>,
    passed: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Drop for LossyUdp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl LossyUdp {
    /// A one-way UDP relay to `target` that drops each datagram with the set probability
    /// (heartbeats go one way, primary to standby).
    fn start(target: SocketAddr) -> R<LossyUdp> {
        let front = UdpSocket::bind("127.0.0.1:0").ctx("bind")?;
        let back = UdpSocket::bind("127.0.0.1:0").ctx("bind")?;
        front
            .set_read_timeout(Some(Duration::from_millis(20)))
            .ctx("timeout")?;
        let r = LossyUdp {
            addr: front.local_addr().ctx("addr")?,
            loss_ppm: Arc::default(),
            passed: Arc::default(),
            dropped: Arc::default(),
            stop: Arc::default(),
        };
        let (loss, passed, dropped, stop) = (
            r.loss_ppm.clone(),
            r.passed.clone(),
            r.dropped.clone(),
            r.stop.clone(),
        );
        let mut rng = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0x9e37_79b9_7f4a_7c15, |d| d.as_nanos() as u64)
            | 1;
        thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::SeqCst) {
                let Ok((n, _)) = front.recv_from(&mut buf) else {
                    continue;
                };
                // xorshift64*
                rng ^= rng >> 12;
                rng ^= rng << 25;
                rng ^= rng >> 27;
                let x = rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32;
                if x % 1_000_000 < u64::from(loss.load(Ordering::SeqCst)) {
                    dropped.fetch_add(1, Ordering::Relaxed);
                } else {
                    passed.fetch_add(1, Ordering::Relaxed);
                    let _ = back.send_to(&buf[..n], target);
                }
            }
        });
        Ok(r)
    }
}

/// A cluster like [`Cluster`](hsb_tests::cluster::Cluster) but with direct paths, except the
/// heartbeat link, which goes through a lossy relay.
struct LossyCluster {
    dir: TempDir,
    primary: Daemon,
    standby: Daemon,
    witnesses: Vec<Daemon>,
    primary_service: SocketAddr,
    hb: LossyUdp,
}

impl LossyCluster {
    fn start() -> R<LossyCluster> {
        let dir = TempDir::new("bench-loss");
        let key = dir.path("cluster.key");
        hsb_common::key::ClusterKey::generate(&key).ctx("key")?;
        let (psvc, ssvc) = (free_addr(), free_addr());
        let (s_repl, s_hb, s_wit, p_wit) = (free_addr(), free_addr(), free_addr(), free_addr());
        let wits: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();
        let hb = LossyUdp::start(s_hb)?;
        let peers = wits
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let common = format!(
            "cluster_key = {}\nfailover.policy = client-oriented\nfailover.witnesses = 1,2,3\n",
            key.display()
        );
        let write = |name: &str, text: String| -> R<std::path::PathBuf> {
            let p = dir.path(name);
            std::fs::write(&p, text).ctx("write config")?;
            Ok(p)
        };
        let mut witnesses = vec![];
        for (i, w) in wits.iter().enumerate() {
            let n = i + 1;
            let conf = write(
                &format!("w{n}.conf"),
                format!(
                    "node = witness-{n}\nid = {n}\nlisten = {w}\nprimary = {p_wit}\nstandby = {s_wit}\nprobe = line {psvc} PING PONG\nstate_file = {}\ncontrol = {}\n{common}",
                    dir.path(&format!("w{n}.state")).display(),
                    dir.path(&format!("w{n}.sock")).display(),
                ),
            )?;
            witnesses.push(Daemon::start(
                "hsb-witness",
                &conf,
                &dir.path(&format!("w{n}.sock")),
                &dir.path(&format!("w{n}.log")),
                &[],
            ));
        }
        let sconf = write(
            "standby.conf",
            format!(
                "node = standby\nstate_file = {}\nlisten = {s_repl}\ncontrol = {}\nmodel.memory = 8MiB\nmodel.service = {ssvc}\nfailover = true\nheartbeat_listen = {s_hb}\nwitness_listen = {s_wit}\nwitness_peers = {peers}\nprimary_witness = {p_wit}\ndecision_log = {}\nstats_interval = 1s\n{common}",
                dir.path("standby.state").display(),
                dir.path("standby.sock").display(),
                dir.path("standby.decisions").display(),
            ),
        )?;
        let standby = Daemon::start(
            "hsb-standby",
            &sconf,
            &dir.path("standby.sock"),
            &dir.path("standby.log"),
            &[],
        );
        standby.wait_for("standby up", Duration::from_secs(10), |_| true);
        let pconf = write(
            "primary.conf",
            format!(
                "node = primary\nstate_file = {}\nstandby = {s_repl}\ncontrol = {}\nmodel.memory = 8MiB\nmodel.service = {psvc}\nreconnect_interval = 50ms\nfailover = true\nheartbeat_peers = {}\nwitness_listen = {p_wit}\nwitness_peers = {peers}\nstandby_witness = {s_wit}\ndecision_log = {}\nstats_interval = 1s\n{common}",
                dir.path("primary.state").display(),
                dir.path("primary.sock").display(),
                hb.addr,
                dir.path("primary.decisions").display(),
            ),
        )?;
        let primary = Daemon::start(
            "hsb-primary",
            &pconf,
            &dir.path("primary.sock"),
            &dir.path("primary.log"),
            &[],
        );
        primary.wait_for("protected", Duration::from_secs(30), |s| {
            num(s, "acked_checkpoint") >= 1
                && s.get("authority").map(String::as_str) == Some("protected")
        });
        for w in &witnesses {
            w.wait_for("application up", Duration::from_secs(10), |s| {
                s.get("application").map(String::as_str) == Some("up")
            });
        }
        thread::sleep(Duration::from_millis(2200));
        Ok(LossyCluster {
            dir,
            primary,
            standby,
            witnesses,
            primary_service: psvc,
            hb,
        })
    }
}

/// Standby log counts: witness queries, activations, decision lines by rule.
fn count_log(log: &str) -> (usize, usize, Vec<(String, usize)>, u64) {
    let queries = log.matches("heartbeat lost: asking the witnesses").count();
    let activations = log.matches("ACTIVATED by").count();
    let mut rules: Vec<(String, usize)> = vec![];
    let mut max_timeout = 0;
    for l in log.lines().filter(|l| l.contains(" decision {")) {
        let rule = format!(
            "{}→{}",
            json_str(l, "rule").unwrap_or("?"),
            json_str(l, "action").unwrap_or("?")
        );
        max_timeout = max_timeout.max(json_u64(l, "timeout_ns").unwrap_or(0));
        tally(&mut rules, &rule);
    }
    (queries, activations, rules, max_timeout)
}

fn witness_votes(ws: &[Daemon]) -> (u64, u64) {
    ws.iter().fold((0, 0), |(g, r), w| {
        let s = w.status();
        (g + num(&s, "votes_granted"), r + num(&s, "votes_refused"))
    })
}

pub fn loss_run() -> R<String> {
    let t_setup = Instant::now();
    let cl = LossyCluster::start()?;
    let setup = t_setup.elapsed();
    let log0 = cl.standby.log_text();
    let (q0, a0, _, _) = count_log(&log0);
    let (g0, r0) = witness_votes(&cl.witnesses);
    let (p0, d0) = (
        cl.hb.passed.load(Ordering::Relaxed),
        cl.hb.dropped.load(Ordering::Relaxed),
    );
    let hb0 = num(&cl.standby.status(), "heartbeats");
    cl.hb.loss_ppm.store((LOSS * 1e6) as u32, Ordering::SeqCst);
    // A client keeps using the primary meanwhile.
    let addr = cl.primary_service;
    let client = thread::spawn(move || {
        let t = Instant::now();
        let (mut ok, mut failed, mut lat) = (0u64, 0u64, vec![]);
        let mut c = None;
        while t.elapsed() < LOSS_FOR {
            if c.is_none() {
                c = Client::connect(addr, Duration::from_secs(1)).ok();
            }
            let Some(cc) = c.as_mut() else {
                failed += 1;
                thread::sleep(Duration::from_millis(10));
                continue;
            };
            let t1 = Instant::now();
            match cc.request("INCR") {
                Ok(_) => {
                    ok += 1;
                    lat.push(t1.elapsed());
                }
                Err(_) => {
                    failed += 1;
                    c = None;
                }
            }
        }
        (ok, failed, lat)
    });
    let (ok, failed, lat) = client
        .join()
        .map_err(|_| "client thread panicked".to_string())?;
    cl.hb.loss_ppm.store(0, Ordering::SeqCst);
    let (passed, dropped) = (
        cl.hb.passed.load(Ordering::Relaxed) - p0,
        cl.hb.dropped.load(Ordering::Relaxed) - d0,
    );
    let st = cl.standby.status();
    let pst = cl.primary.status();
    let (g1, r1) = witness_votes(&cl.witnesses);
    let log = cl.standby.log_text();
    let new = log.get(log0.len()..).unwrap_or("");
    let (q, a, rules, max_timeout) = count_log(new);
    let (q_total, a_total, _, _) = count_log(&log);
    let lat = pct(lat);
    let _ = (&cl.dir, q_total);
    let mut s = format!(
        "#### 5b. 30% random loss on the heartbeat link for {} s\n\n\
         A cluster like the one above with default settings (set up in {:.1} s), except that the \
         primary's heartbeats reach the standby through a relay that drops each datagram with \
         probability {:.0}% (replication over TCP and all witness traffic are not affected: a \
         user-space relay cannot make TCP lose segments). A client sends sequential `INCR`s to the \
         primary throughout.\n\n",
        LOSS_FOR.as_secs(),
        setup.as_secs_f64(),
        LOSS * 100.0
    );
    s.push_str(&table(
        &["Measure", "Value"],
        &[
            vec![
                "heartbeats through the relay / dropped (observed loss)".into(),
                format!(
                    "{passed} / {dropped} ({:.1}%); standby counted {} heartbeats",
                    dropped as f64 * 100.0 / (passed + dropped).max(1) as f64,
                    num(&st, "heartbeats").saturating_sub(hb0)
                ),
            ],
            vec![
                "**false failovers** (standby activations)".into(),
                format!(
                    "**{a}** (standby state at the end: `{}`; activations before the loss: {a0}; in total: {a_total})",
                    st.get("state").map_or("?", |v| v)
                ),
            ],
            vec![
                "witness queries triggered (heartbeat timeouts that asked the witnesses)".into(),
                format!(
                    "{q} (before the loss: {q0}); witness votes: {} granted, {} refused",
                    g1.saturating_sub(g0),
                    r1.saturating_sub(r0)
                ),
            ],
            vec![
                "standby decisions logged, rule → action".into(),
                if rules.is_empty() {
                    "none".into()
                } else {
                    rules
                        .iter()
                        .map(|(k, n)| format!("`{k}` × {n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            ],
            vec![
                "heartbeat timeout at the last decision (hysteresis stretches it after false suspicions)"
                    .into(),
                if max_timeout == 0 {
                    "-".into()
                } else {
                    format!("up to {} ms", max_timeout / 1_000_000)
                },
            ],
            vec![
                "primary at the end".into(),
                format!(
                    "authority `{}`",
                    pst.get("authority").map_or("?", |v| v)
                ),
            ],
            vec![
                "client `INCR`s on the primary: answered / failed; p50 / p99 / max ms".into(),
                format!(
                    "{ok} / {failed}; {} / {} / {}",
                    ms2(lat.p50),
                    ms2(lat.p99),
                    ms2(lat.max)
                ),
            ],
        ],
    ));
    let _ = writeln!(
        s,
        "For comparison (external reference, research/keepalived-measured.md, not this run): keepalived \
         with 30% loss for 60 s on the backup's link flapped to MASTER 3 times (default), 14 times \
         (aggressive), 137 times (minimum timers).\n"
    );
    Ok(s)
}
