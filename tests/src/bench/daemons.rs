//! Section 1b of `hsb-bench`: checkpoint throughput of the real daemons at full dirty rate.

use std::thread;
use std::time::{Duration, Instant};

use hsb_tests::{num, Pair, PairOpts};

use super::machine::daemon_mem;
use super::pause::logged_pauses;
use super::pipeline::Raw;
use super::stats::{met, mib_s, ms, pct, table};
use super::R;

pub fn section_1b(raw: Option<Raw>, mem_rows: &mut Vec<Vec<String>>) -> R<String> {
    let pair = Pair::start(PairOpts {
        memory: "64MiB",
        dirty_rate: 5_000_000,
        epoch: "1ms",
        ..PairOpts::default()
    });
    thread::sleep(Duration::from_millis(500));
    let (s0, p0, t0) = (pair.standby.status(), pair.primary.status(), Instant::now());
    thread::sleep(Duration::from_millis(2500));
    mem_rows.push(daemon_mem(&pair.primary, "throughput run (1b)"));
    mem_rows.push(daemon_mem(&pair.standby, "throughput run (1b)"));
    thread::sleep(Duration::from_millis(2500));
    let (s1, p1, secs) = (
        pair.standby.status(),
        pair.primary.status(),
        t0.elapsed().as_secs_f64(),
    );
    if s1.is_empty() || p1.is_empty() {
        return Err(format!("a daemon stopped answering\n{}", pair.logs()));
    }
    let d = |a: &std::collections::HashMap<String, String>, b: &_, k: &str| {
        num(b, k).saturating_sub(num(a, k))
    };
    let bytes = d(&s0, &s1, "bytes_applied") as f64;
    let ckpts = d(&s0, &s1, "checkpoints_applied");
    let pages = d(&s0, &s1, "pages_applied");
    let rate = mib_s(bytes, secs);
    let pauses = pct(logged_pauses(&pair.primary, num(&p0, "next_checkpoint"))
        .into_iter()
        .map(|x| x.1)
        .collect());
    let mut rows = vec![vec![
        "**hsb-primary → hsb-standby** (standby `bytes_applied`)".into(),
        format!("**{rate:.0}**"),
        "".into(),
        "".into(),
        "".into(),
    ]];
    if let Some(r) = raw {
        for (name, v) in [
            ("raw TCP, receiver discards (1a)", r.discard),
            ("raw TCP, receiver copies (1a)", r.copy),
        ] {
            rows.push(vec![
                name.into(),
                format!("{v:.0}"),
                format!("{:.0}%", rate / v * 100.0),
                "≥ 70%".into(),
                met(rate / v >= 0.7),
            ]);
        }
    }
    let mut s = format!(
        "### 1b. The daemons: hsb-primary and hsb-standby processes\n\n\
         `model.memory = 64MiB`, `model.dirty_rate = 5000000` (every epoch dirties every page), \
         `checkpoint_period = 1ms`, `max_unacked` default (4); standby `bytes_applied` growth over {secs:.1} s \
         after the initial full synchronisation. {ckpts} checkpoints applied ({:.1}/s, {:.0} pages each on \
         average); the primary stretched {} epochs (an epoch stretches while a checkpoint is still being \
         sent); ack round trip (from the end of sealing to the ack) p50 {} ms, p99 {} ms; \
         pause (suspend, capture of every page, resume) p50 {} ms, p99 {} ms.\n\n",
        ckpts as f64 / secs,
        pages as f64 / ckpts.max(1) as f64,
        d(&p0, &p1, "stretched_epochs"),
        p1.get("ack_rtt_ms_p50").map_or("?", |v| v),
        p1.get("ack_rtt_ms_p99").map_or("?", |v| v),
        ms(pauses.p50),
        ms(pauses.p99),
    );
    s.push_str(&table(
        &["Path", "MiB/s", "Daemons as % of it", "Target", "Result"],
        &rows,
    ));
    Ok(s)
}
