//! Section 3 of `hsb-bench`: the reply latency added by output commit at 10 ms and 25 ms
//! epochs.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use hsb_tests::{num, Client, Pair, PairOpts};

use super::machine::daemon_mem;
use super::stats::{met, ms2, pct, table, Pct};
use super::{progress, Ctx, R};

/// Sequential INCRs on one connection (after 20 warm-ups); checks the counter increases.
pub fn incr_seq(addr: SocketAddr, n: usize) -> R<Vec<Duration>> {
    let mut c = Client::connect(addr, Duration::from_secs(5)).ctx("connect")?;
    let mut last = 0u64;
    let mut v = Vec::with_capacity(n);
    for i in 0..n + 20 {
        let t = Instant::now();
        let r = c.request("INCR").ctx("INCR")?;
        let took = t.elapsed();
        let val: u64 = r.parse().map_err(|_| format!("bad reply '{r}'"))?;
        if val <= last {
            return Err(format!("counter went from {last} to {val}"));
        }
        last = val;
        if i >= 20 {
            v.push(took);
        }
    }
    Ok(v)
}

/// `clients` concurrent connections, `n` sequential INCRs each.
pub fn incr_concurrent(addr: SocketAddr, clients: usize, n: usize) -> R<Vec<Duration>> {
    thread::scope(|sc| {
        let hs: Vec<_> = (0..clients)
            .map(|_| sc.spawn(move || incr_seq(addr, n)))
            .collect();
        let mut all = vec![];
        for h in hs {
            all.extend(
                h.join()
                    .map_err(|_| "client thread panicked".to_string())??,
            );
        }
        Ok(all)
    })
}

pub const SEQ_REQUESTS: usize = 500;
pub const CONC_CLIENTS: usize = 4;
pub const CONC_REQUESTS: usize = 150;

pub fn section_3(mem_rows: &mut Vec<Vec<String>>) -> R<String> {
    let mut rows = vec![];
    let mut base: Option<(Pct, Pct)> = None;
    let mut commit = vec![];
    let mut notes = String::new();
    for (epoch, epoch_ms) in [("10ms", 10.0f64), ("25ms", 25.0)] {
        progress(&format!("3: output commit at {epoch} epochs"));
        let mut pair = Pair::start(PairOpts {
            memory: "64MiB",
            dirty_rate: 2000,
            epoch,
            ..PairOpts::default()
        });
        thread::sleep(Duration::from_secs(1));
        if epoch == "25ms" {
            mem_rows.insert(
                0,
                daemon_mem(&pair.standby, "idle, 1 s after the full sync"),
            );
            mem_rows.insert(
                0,
                daemon_mem(&pair.primary, "idle, 1 s after the full sync"),
            );
        }
        let seq = pct(incr_seq(pair.primary_service, SEQ_REQUESTS)?);
        let conc = pct(incr_concurrent(
            pair.primary_service,
            CONC_CLIENTS,
            CONC_REQUESTS,
        )?);
        let st = pair.primary.status();
        let _ = write!(
            notes,
            "{} epochs: primary ack round trip p50 {} ms, p99 {} ms; pause p99 {} ms; stretched epochs: {}; {} checkpoints. ",
            epoch.replace("ms", " ms"),
            st.get("ack_rtt_ms_p50").map_or("?", |v| v),
            st.get("ack_rtt_ms_p99").map_or("?", |v| v),
            st.get("pause_ms_p99").map_or("?", |v| v),
            num(&st, "stretched_epochs"),
            num(&st, "checkpoints"),
        );
        if epoch == "25ms" {
            mem_rows.insert(
                2,
                daemon_mem(&pair.primary, "after section 3's clients (steady state)"),
            );
            mem_rows.insert(
                3,
                daemon_mem(&pair.standby, "after section 3's clients (steady state)"),
            );
        }
        commit.push((epoch, epoch_ms, seq, conc));
        if base.is_none() {
            progress("3: baseline on an activated standby (no output commit)");
            pair.primary.kill9();
            let a = pair.standby.ctl("activate").ctx("activate")?;
            if !a.starts_with("activated") {
                return Err(format!("activation failed: {a}"));
            }
            let seq = pct(incr_seq(pair.standby_service, SEQ_REQUESTS)?);
            let conc = pct(incr_concurrent(
                pair.standby_service,
                CONC_CLIENTS,
                CONC_REQUESTS,
            )?);
            base = Some((seq, conc));
        }
    }
    let (bseq, bconc) = base.ok_or("no baseline")?;
    for (label, b) in [("1 client", bseq), ("4 clients", bconc)] {
        rows.push(vec![
            "—".into(),
            format!("baseline: activated standby, no output commit, {label}"),
            b.n.to_string(),
            ms2(b.p50),
            ms2(b.p99),
            ms2(b.max),
            "".into(),
            "".into(),
            "".into(),
        ]);
    }
    for (epoch, epoch_ms, seq, conc) in commit {
        for (label, p, b) in [("1 client", seq, bseq), ("4 clients", conc, bconc)] {
            let target = epoch_ms + 2.0;
            let p99 = p.p99.as_secs_f64() * 1e3;
            rows.push(vec![
                epoch.replace("ms", " ms"),
                format!("primary with output commit, {label}"),
                p.n.to_string(),
                ms2(p.p50),
                ms2(p.p99),
                ms2(p.max),
                format!(
                    "+{} / +{}",
                    ms2(p.p50.saturating_sub(b.p50)),
                    ms2(p.p99.saturating_sub(b.p99))
                ),
                format!("p99 ≤ {target:.0} ms"),
                met(p99 <= target),
            ]);
        }
    }
    let mut s = format!(
        "## 3. Reply latency added by output commit (target: p99 at most one epoch + 2 ms)\n\n\
         `INCR` request/reply round trips over loopback TCP against the primary's model service (64 MiB, \
         default workload of 2000 pages/s) while it replicates to its standby: {SEQ_REQUESTS} sequential \
         requests on one connection, then {CONC_CLIENTS} concurrent connections × {CONC_REQUESTS} requests \
         (20 warm-up requests per connection not counted). Baseline: the same requests against a standby \
         activated with `hsb-standby activate`, which answers at once. A sequential client's next request \
         arrives just after the previous reply was released, so it waits for almost a whole epoch: \
         the expected added latency is about one epoch plus the checkpoint's transfer and ack.\n\n"
    );
    s.push_str(&table(
        &[
            "Epoch",
            "Path",
            "Requests",
            "p50 ms",
            "p99 ms",
            "max ms",
            "Added p50 / p99 ms",
            "Target",
            "Result",
        ],
        &rows,
    ));
    let _ = writeln!(s, "{}\n", notes.trim_end());
    Ok(s)
}
