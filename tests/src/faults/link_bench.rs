//! `hsb-faults --bench-link`: protection over a shaped replication link (BENCHMARKS.md
//! section 10).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::netns::{Host, Net};
use crate::num;

use super::history::client_with;
use super::nodes::start;
use super::Setup;

/// One measurement of [`shaped_link_bench`].
#[derive(Debug, Clone)]
pub struct LinkBench {
    /// The replication link's rate, Mbit/s (0: not shaped).
    pub mbit: u32,
    /// The guest's workload, pages written per second.
    pub pages: u32,
    /// How long the measurement ran.
    pub secs: f64,
    /// Reply latency of acknowledged requests (a sequential client): p50, p99, max.
    pub latency: (Duration, Duration, Duration),
    /// Requests acknowledged.
    pub acked: usize,
    /// Checkpoints per second, and MiB/s of checkpoint bytes sent.
    pub ckpt_per_s: f64,
    pub mib_per_s: f64,
    /// Replica lag (checkpoints taken but not acknowledged; age of the oldest): p50 and max.
    pub lag_ckpts: (u64, u64),
    pub lag_ms: (u64, u64),
    /// A's authority at each sample, counted.
    pub modes: std::collections::BTreeMap<String, u32>,
}

/// Output latency, checkpoints per second and replica lag of a protected pair whose
/// replication link is limited to `mbit` Mbit/s (htb on host A's side; 0: not shaped), with a
/// guest writing `pages` pages a second, over `secs` seconds after a warm-up (the witnesses,
/// defaults otherwise, as in the fault cases). BENCHMARKS.md, "Shaped replication link".
pub fn shaped_link_bench(mbit: u32, pages: u32, secs: u64) -> Result<LinkBench, String> {
    let setup = Setup {
        clocks: false,
        relays: false,
        rejoin: false,
        dirty_rate: Some(pages),
        client_timeout: Duration::from_secs(60),
    };
    let n = start("client-oriented", setup)?;
    if mbit > 0 {
        n.topo.shape(Host::A, Net::Replication, mbit)?;
    }
    // Past the onset (the link's queue fills up), then measure.
    std::thread::sleep(Duration::from_secs(3));
    let stop = Arc::new(AtomicBool::new(false));
    let client = client_with(n.service, stop.clone(), Duration::from_secs(60));
    let a0 = n.primary.status();
    let t0 = Instant::now();
    let (mut lags, mut lag_ms, mut modes) = (vec![], vec![], std::collections::BTreeMap::new());
    while t0.elapsed() < Duration::from_secs(secs) {
        let a = n.primary.status();
        if let Some(m) = a.get("authority") {
            *modes.entry(m.clone()).or_default() += 1;
        }
        lags.push(num(&a, "replica_lag_checkpoints"));
        lag_ms.push(
            a.get("replica_lag_ms")
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0) as u64,
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let a1 = n.primary.status();
    let elapsed = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let ops = client.join().unwrap_or_default();
    let mut lat: Vec<Duration> = ops
        .iter()
        .filter(|o| o.value.is_some())
        .map(|o| o.end.duration_since(o.start))
        .collect();
    lat.sort_unstable();
    let q = |v: &[Duration], p: f64| {
        v.get(((v.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or_default()
    };
    lags.sort_unstable();
    lag_ms.sort_unstable();
    let mid = |v: &[u64]| v.get(v.len() / 2).copied().unwrap_or(0);
    let d = |k: &str| num(&a1, k).saturating_sub(num(&a0, k)) as f64;
    Ok(LinkBench {
        mbit,
        pages,
        secs: elapsed,
        latency: (
            q(&lat, 0.5),
            q(&lat, 0.99),
            lat.last().copied().unwrap_or_default(),
        ),
        acked: lat.len(),
        ckpt_per_s: d("checkpoints") / elapsed,
        mib_per_s: d("bytes_sent") / elapsed / f64::from(1u32 << 20),
        lag_ckpts: (mid(&lags), lags.last().copied().unwrap_or(0)),
        lag_ms: (mid(&lag_ms), lag_ms.last().copied().unwrap_or(0)),
        modes,
    })
}

/// A markdown table of [`shaped_link_bench`] results.
pub fn link_bench_markdown(rows: &[LinkBench]) -> String {
    let mut s = String::from("| replication link | guest writes | reply latency p50 / p99 / max | replies | checkpoints/s | MiB/s sent | replica lag p50 / max (checkpoints) | replica lag p50 / max (ms) | A's authority (samples) |\n|---|---:|---:|---:|---:|---:|---:|---:|---|\n");
    for r in rows {
        let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1e3);
        let modes: Vec<String> = r.modes.iter().map(|(m, c)| format!("{m} {c}")).collect();
        s.push_str(&format!(
            "| {} | {} pages/s | {} / {} / {} ms | {} | {:.2} | {:.2} | {} / {} | {} / {} | {} |\n",
            if r.mbit == 0 {
                "not shaped".to_string()
            } else {
                format!("{} Mbit/s (htb)", r.mbit)
            },
            r.pages,
            ms(r.latency.0),
            ms(r.latency.1),
            ms(r.latency.2),
            r.acked,
            r.ckpt_per_s,
            r.mib_per_s,
            r.lag_ckpts.0,
            r.lag_ckpts.1,
            r.lag_ms.0,
            r.lag_ms.1,
            modes.join(", ")
        ));
    }
    s
}
