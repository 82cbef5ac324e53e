//! What hsb-standby tells, and the control commands: `status` (one `key value` per line;
//! `status --json` is made from it by the CLI), `digest`, `maintenance`; the operator's
//! commands go to the node. And the periodic statistics line.

use hsb_common::frame::FrameError;
use hsb_common::stats::ms;
use hsb_common::time::Nanos;
use hsb_standby::node::{Event, OperatorCmd};

use crate::daemon::Daemon;

impl Daemon {
    /// A control command on connection `conn`.
    pub(crate) fn command(&mut self, now: Nanos, conn: usize, cmd: &str) {
        let op = match cmd {
            "activate" => Some(OperatorCmd::Activate { force: false }),
            "activate --force" => Some(OperatorCmd::Activate { force: true }),
            "switchover" => Some(OperatorCmd::Switchover),
            "maintenance on" => Some(OperatorCmd::Maintenance(true)),
            "maintenance off" => Some(OperatorCmd::Maintenance(false)),
            "force-stale" => Some(OperatorCmd::ForceStale),
            _ => None,
        };
        if let Some(cmd) = op {
            return self.feed(now, Event::Operator { conn, cmd });
        }
        let text = match cmd {
            "status" | "" => text(self, now),
            "digest" => format!(
                "applied_checkpoint {}\ndigest {:08x}\n{}",
                self.receiver
                    .applied()
                    .map_or("none".into(), |a| a.to_string()),
                self.replica.digest().unwrap_or(0),
                self.replica
                    .model()
                    .map_or(String::new(), crate::disk::digest_lines)
            ),
            "maintenance" => format!(
                "maintenance {}\n",
                if self.node.maintenance() { "on" } else { "off" }
            ),
            other => format!(
                "error: unknown command '{other}'; try: status, digest, activate [--force], switchover, maintenance on|off, force-stale\n"
            ),
        };
        self.surface.ctl.answer(self.poll.registry(), conn, &text);
    }
}

/// The answer to `status`.
pub fn text(d: &Daemon, now: Nanos) -> String {
    let n = &d.node;
    let st = n.stats();
    let mut s = String::new();
    let mut kv = |k: &str, v: String| s.push_str(&format!("{k} {v}\n"));
    kv("role", "standby".into());
    kv("node", d.s.node.clone());
    kv("backend", d.replica.describe());
    kv("state", n.state_name().into());
    kv("epoch", n.epoch().0.to_string());
    kv("listen", d.s.listen.to_string());
    let primary = n
        .current()
        .and_then(|i| n.slot(i))
        .map(|c| format!("{} ({})", c.peer, c.node));
    kv("primary", primary.unwrap_or_else(|| "none".into()));
    kv(
        "applied_checkpoint",
        d.receiver
            .applied()
            .map_or("none".into(), |a| a.to_string()),
    );
    kv(
        "activated_at",
        n.activated().map_or("none".into(), |a| a.to_string()),
    );
    kv("checkpoints_applied", st.applied.to_string());
    kv("full_syncs", st.full_syncs.to_string());
    kv("sessions", st.sessions.to_string());
    kv("sessions_replaced", st.sessions_replaced.to_string());
    kv("handshakes_pending", n.pending_handshakes().to_string());
    kv("connections_refused", st.connections_refused.to_string());
    kv(
        "connections_disallowed",
        st.connections_disallowed.to_string(),
    );
    kv("handshakes_evicted", st.handshakes_evicted.to_string());
    kv("handshakes_expired", st.handshakes_expired.to_string());
    kv("bytes_applied", st.bytes.to_string());
    kv("pages_applied", st.pages.to_string());
    kv(
        "last_applied_ms_ago",
        st.last_applied_at
            .map_or("none".into(), |t| ms(now.since(t))),
    );
    kv("apply_ms_p99", ms(st.apply.quantile(0.99)));
    kv(
        "staging",
        if d.receiver.staging() {
            "in-progress".into()
        } else {
            "idle".into()
        },
    );
    kv("staging_bytes", d.receiver.capacity().to_string());
    d.disk_status(&mut kv);
    if let Some(c) = d.replica.counter() {
        kv("counter", c.to_string());
    }
    kv(
        "service",
        d.service
            .as_ref()
            .map_or("none".into(), |s| s.addr().to_string()),
    );
    match (n.failover_view(now), &d.failover) {
        (Some(v), Some(f)) => {
            kv("failover", format!("on ({})", d.s.decision.policy));
            kv("decision_state", v.state.name().to_string());
            kv(
                "maintenance",
                if v.maintenance {
                    "on (automatic takeovers paused by the operator)".into()
                } else {
                    "off".into()
                },
            );
            kv(
                "operator_request",
                v.operator
                    .map_or("none".into(), |a| format!("{a} under way")),
            );
            kv("primary_suspected", v.suspected.to_string());
            kv("query_wait_ms", v.query_wait.as_millis().to_string());
            kv("heartbeats", st.heartbeats.to_string());
            kv("heartbeat_replies", f.replies.to_string());
            kv("bad_datagrams", f.ep.rejected.to_string());
            kv("decisions", f.decisions.count.to_string());
            for (k, v) in f.decisions.recorder.status() {
                kv(k, v);
            }
            kv("authority", v.authority.unwrap_or("none").to_string());
            kv("last_decision", f.decisions.last_or_none());
            kv("activation", v.activation.unwrap_or_else(|| "none".into()));
        }
        _ => kv("failover", "off (operator activation only)".into()),
    }
    kv("requests", d.requests.to_string());
    for (name, n) in FrameError::COUNTERS.iter().zip(st.frame_errors.iter()) {
        kv(&format!("frame_errors_{name}"), n.to_string());
    }
    if let Some(line) = d.surface.metrics_status() {
        kv("metrics", line);
    }
    d.surface.turns.status(now, &mut kv);
    s
}

/// One line for systemd's STATUS: the epoch, the replica's state, the decision state and
/// maintenance (failover on), the authority (once activated), the replica's checkpoint.
pub fn summary(d: &Daemon, now: Nanos) -> String {
    let n = &d.node;
    let mut s = format!("standby, epoch {}: {}", n.epoch().0, n.state_name());
    if let Some(v) = n.failover_view(now) {
        match v.authority {
            Some(mode) => s.push_str(&format!(", authority {mode}")),
            None => s.push_str(&format!(", decision {}", v.state.name())),
        }
        if v.maintenance {
            s.push_str(", maintenance on");
        }
    }
    match (n.activated(), d.receiver.applied()) {
        (Some(a), _) => s.push_str(&format!(", serving since checkpoint {a}")),
        (None, Some(a)) => s.push_str(&format!(", checkpoint {a} applied")),
        (None, None) => s.push_str(", no checkpoint applied"),
    }
    s
}

/// The periodic statistics line.
pub fn log_stats(d: &mut Daemon, now: Nanos) {
    let secs = d.s.stats_interval.as_secs_f64().max(1e-9);
    let state = d.node.state_name();
    let applied = d
        .receiver
        .applied()
        .map_or("none".into(), |a| a.to_string());
    if d.node.activated().is_some() {
        log::info!(
            "active: counter {}, {} requests served",
            d.replica.counter().unwrap_or(0),
            d.requests
        );
    }
    let st = d.node.stats_mut();
    let (ckpts, bytes) = std::mem::take(&mut st.window);
    if state != "active" {
        log::info!(
            "{state}: applied {applied} ({:.1} ckpt/s, {:.1} MiB/s); last {} ms ago; apply p99 {} ms",
            ckpts as f64 / secs,
            bytes as f64 / secs / (1u64 << 20) as f64,
            st.last_applied_at.map_or("-".into(), |t| ms(now.since(t))),
            ms(st.apply.quantile(0.99)),
        );
    }
}
