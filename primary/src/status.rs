//! What hsb-primary tells: the control socket's `status` (one `key value` per line; `status
//! --json` is made from it by the CLI) and the periodic statistics line.

use hsb_common::decision::primary::Mode as AuthorityMode;
use hsb_common::frame::FrameError;
use hsb_common::stats::ms;
use hsb_common::time::Nanos;
use hsb_primary::node::Link;

use crate::daemon::Daemon;
use crate::guest::Guest;

fn state(d: &Daemon) -> &'static str {
    match d.node.link() {
        Link::Streaming => "protected",
        Link::AwaitHello | Link::Connecting => "connecting",
        Link::Down(_) => "standby-unreachable",
    }
}

/// What protects the clients' output, in words, for the log line, `status` (`protection`) and
/// systemd's STATUS: "protected"; "protected, degraded (...)" with the replica's lag while the
/// standby acknowledges more slowly than the ack lease and output waits for it (issue 12);
/// "unprotected" under the witnesses' lease; otherwise the replication link's state.
pub fn protection(d: &Daemon, now: Nanos) -> String {
    match d.node.failover_view(now).map(|v| v.mode) {
        Some(AuthorityMode::Degraded) => {
            let (lag_ckpts, lag) = d.node.replica_lag(now);
            format!(
                "protected, degraded (acks slower than the ack lease; replica lag {lag_ckpts} checkpoint(s), {} ms)",
                ms(lag)
            )
        }
        Some(AuthorityMode::Unprotected) => "unprotected".to_string(),
        _ => match d.node.link() {
            Link::Streaming => "protected",
            Link::Down(_) => "standby unreachable",
            _ => "connecting",
        }
        .to_string(),
    }
}

/// The answer to `status`.
pub fn text(d: &Daemon, now: Nanos) -> String {
    let n = &d.node;
    let st = n.stats();
    let mut s = String::new();
    let mut kv = |k: &str, v: String| s.push_str(&format!("{k} {v}\n"));
    kv("role", "primary".into());
    kv("node", d.s.node.clone());
    kv("backend", d.dom.describe());
    kv("state", state(d).into());
    kv("standby", d.s.standby.to_string());
    kv("epoch", n.epoch().0.to_string());
    kv("uptime_s", format!("{:.1}", now.as_millis_f64() / 1e3));
    kv("checkpoint_period_ms", ms(d.s.checkpoint_period));
    kv("next_checkpoint", n.next_checkpoint().to_string());
    kv("acked_checkpoint", n.acked().to_string());
    let (lag_ckpts, lag) = n.replica_lag(now);
    kv("replica_lag_checkpoints", lag_ckpts.to_string());
    kv("replica_lag_ms", ms(lag));
    kv("unacked", n.unacked().to_string());
    kv("sending", n.sending().to_string());
    kv("checkpoints", st.checkpoints.to_string());
    kv("full_syncs", st.full_syncs.to_string());
    kv("sessions", st.sessions.to_string());
    kv("stretched_epochs", st.stretched.to_string());
    kv("last_dirty_pages", st.last_dirty.to_string());
    kv("pages_sent", st.pages_sent.to_string());
    kv("checkpoints_sent", st.checkpoints_sent.to_string());
    kv("bytes_sent", st.bytes_sent.to_string());
    for (k, v) in d.staging.codec_status() {
        kv(k, v);
    }
    kv("pause_ms_p50", ms(st.pause.quantile(0.5)));
    kv("pause_ms_p99", ms(st.pause.quantile(0.99)));
    kv("pause_ms_max", ms(st.pause.max()));
    if matches!(d.dom, Guest::Xen(_)) {
        kv("suspend_wait_ms_p50", ms(st.suspend_wait.quantile(0.5)));
        kv("suspend_wait_ms_p99", ms(st.suspend_wait.quantile(0.99)));
    }
    kv("ack_rtt_ms_p50", ms(st.ack_rtt.quantile(0.5)));
    kv("ack_rtt_ms_p99", ms(st.ack_rtt.quantile(0.99)));
    kv("held_output_bytes", d.output.held_bytes().to_string());
    if let Some(svc) = &d.service {
        kv("service", svc.addr().to_string());
        kv("clients", svc.clients().to_string());
        kv("requests", d.requests.to_string());
    }
    if let Some(c) = d.dom.counter() {
        kv("counter", c.to_string());
    }
    if let Some(p) = &d.plug {
        kv("output_commit", "plug".into());
        kv(
            "output_held_for",
            p.pending()
                .map_or("none".into(), |c| format!("checkpoint {c}")),
        );
        kv("output_releases", p.releases.to_string());
    }
    match (n.failover_view(now), &d.failover) {
        (Some(v), Some(f)) => {
            kv("failover", format!("on ({})", d.s.decision.policy));
            kv("authority", v.mode.name().to_string());
            kv("protection", protection(d, now));
            kv("standby_present", v.standby_present.to_string());
            kv("standby_replies", v.standby_replies.to_string());
            kv(
                "maintenance",
                if v.maintenance {
                    "on (automatic takeovers paused by the standby's operator)".into()
                } else {
                    "off".into()
                },
            );
            kv("fenced", v.fenced.to_string());
            kv("stepped_down", v.stepped_down.to_string());
            kv("heartbeats_sent", v.heartbeats.to_string());
            kv("bad_datagrams", f.ep.rejected.to_string());
            for (k, v) in f.decisions.recorder.status() {
                kv(k, v);
            }
            kv("last_decision", f.decisions.last_or_none());
        }
        _ => kv("failover", "off".into()),
    }
    kv("staging_bytes", d.staging.capacity().to_string());
    d.disk_status(&mut kv);
    if let Some(n) = &d.nbd {
        n.status(&mut kv);
    }
    for (name, n) in FrameError::COUNTERS.iter().zip(d.frame_errors.iter()) {
        kv(&format!("frame_errors_{name}"), n.to_string());
    }
    if let Some(line) = d.surface.metrics_status() {
        kv("metrics", line);
    }
    d.surface.turns.status(now, &mut kv);
    s
}

/// The periodic statistics line (every `stats_interval`), and a warning when periods stretched.
pub fn log_stats(d: &mut Daemon, now: Nanos) {
    let secs = d.s.stats_interval.as_secs_f64().max(1e-9);
    let state = protection(d, now);
    let held = d.output.held_bytes();
    let clients = d.service.as_ref().map_or(0, |s| s.clients());
    let (unacked, sending) = (d.node.unacked(), d.node.sending());
    let acked = d.node.acked();
    let st = d.node.stats_mut();
    let (ckpts, bytes, pages) = std::mem::take(&mut st.window);
    log::info!(
        "{state}: {:.1} ckpt/s, {:.0} pages/s, {:.1} MiB/s; acked {acked} ; pause p50 {} p99 {} max {} ms; ack rtt p99 {} ms; stretched {}; held output {held} B; clients {clients}",
        ckpts as f64 / secs,
        pages as f64 / secs,
        bytes as f64 / secs / (1u64 << 20) as f64,
        ms(st.pause.quantile(0.5)),
        ms(st.pause.quantile(0.99)),
        ms(st.pause.max()),
        ms(st.ack_rtt.quantile(0.99)),
        st.stretched,
    );
    if st.stretched > st.stretched_reported {
        log::warn!(
            "{} epochs stretched since the last report: the standby or the link is slower than the dirty rate (unacked {unacked}, send in progress: {sending})",
            st.stretched - st.stretched_reported,
        );
        st.stretched_reported = st.stretched;
    }
}

/// One line for systemd's STATUS: the role, epoch, replication state and authority.
pub fn summary(d: &Daemon, now: Nanos) -> String {
    let n = &d.node;
    let authority = match n.failover_view(now) {
        // "protected, degraded" with the lag (issue 12).
        Some(v) if v.mode == AuthorityMode::Degraded => {
            format!(", authority {}", protection(d, now))
        }
        Some(v) => format!(", authority {}", v.mode.name()),
        None => String::new(),
    };
    format!(
        "primary, epoch {}: {}{authority}, checkpoint {} acknowledged",
        n.epoch().0,
        state(d),
        n.acked()
    )
}
