//! hsb-primary's Prometheus metrics (`metrics_listen`): replication (checkpoints, pauses and
//! ack round trips as histograms, bytes, replica lag), the authority (protected-degraded with
//! the replica lag beside it: issue 12), the standby's presence and the activation epoch,
//! decisions by rule and action, frame errors by kind, the disk and its NBD export. Read from the node and the daemon at
//! scrape time; nothing here is counted twice.

use hsb_common::decision::primary::Mode;
use hsb_common::kit::metrics::{self, Kind};
use hsb_common::kit::shell::Surface;
use hsb_common::time::Nanos;
use hsb_primary::node::Link;

use crate::daemon::Daemon;

/// The authority's modes, in export order.
const MODES: [Mode; 6] = [
    Mode::Protected,
    Mode::Degraded,
    Mode::Unprotected,
    Mode::Holding,
    Mode::Fenced,
    Mode::SteppedDown,
];

/// The replication link's states, as `status` names them.
const LINKS: [&str; 3] = ["protected", "connecting", "standby-unreachable"];

/// The exposition at `now`.
pub fn text(d: &Daemon, now: Nanos) -> String {
    let n = &d.node;
    let st = n.stats();
    let mut e = Surface::exposition("hsb-primary", now);
    e.gauge(
        "hsb_primary_epoch",
        "the activation epoch this primary serves in (rule 8)",
        n.epoch().0 as f64,
    );
    let link = match n.link() {
        Link::Streaming => "protected",
        Link::AwaitHello | Link::Connecting => "connecting",
        Link::Down(_) => "standby-unreachable",
    };
    let fam = "hsb_primary_replication";
    e.family(
        fam,
        Kind::Gauge,
        "the replication link: 1 for its current state (protected: checkpoints flow to the standby)",
    );
    for l in LINKS {
        e.sample(fam, &[("state", l)], f64::from(u8::from(l == link)));
    }
    let view = n.failover_view(now);
    let fam = "hsb_primary_authority";
    e.family(
        fam,
        Kind::Gauge,
        "the authority to release output (failover on): 1 for its current mode (protected: acks; protected-degraded: acks slower than the ack lease, output waits for them; unprotected: a witness lease; holding, fenced, stepped-down: none)",
    );
    if let Some(v) = &view {
        for m in MODES {
            e.sample(fam, &[("mode", m.name())], f64::from(u8::from(v.mode == m)));
        }
    }
    e.gauge(
        "hsb_primary_maintenance",
        "1 while the standby's operator paused automatic takeovers",
        f64::from(u8::from(view.as_ref().is_some_and(|v| v.maintenance))),
    );
    e.counter(
        "hsb_primary_checkpoints_total",
        "checkpoints taken",
        st.checkpoints,
    );
    e.counter(
        "hsb_primary_full_syncs_total",
        "full synchronisations taken (each new session gets one)",
        st.full_syncs,
    );
    e.counter(
        "hsb_primary_sessions_total",
        "replication sessions opened",
        st.sessions,
    );
    e.counter(
        "hsb_primary_stretched_epochs_total",
        "checkpoint periods that passed without a checkpoint (the standby or the link slower than the dirty rate)",
        st.stretched,
    );
    e.counter(
        "hsb_primary_sent_bytes_total",
        "checkpoint bytes sent",
        st.bytes_sent,
    );
    e.counter(
        "hsb_primary_sent_pages_total",
        "guest pages sent",
        st.pages_sent,
    );
    e.gauge(
        "hsb_primary_acked_checkpoint",
        "the last checkpoint the standby acknowledged",
        n.acked() as f64,
    );
    e.gauge(
        "hsb_primary_unacked_checkpoints",
        "checkpoints sent and not yet acknowledged",
        n.unacked() as f64,
    );
    let (lag_ckpts, lag) = n.replica_lag(now);
    e.gauge(
        "hsb_primary_replica_lag_checkpoints",
        "checkpoints taken that the replica does not have yet",
        lag_ckpts as f64,
    );
    e.gauge(
        "hsb_primary_replica_lag_seconds",
        "how far the replica is behind the guest (time since the capture of its newest checkpoint)",
        lag.as_secs_f64(),
    );
    e.gauge(
        "hsb_primary_held_output_bytes",
        "output held under commit, waiting for its checkpoint's ack",
        d.output.held_bytes() as f64,
    );
    for (name, help, h) in [
        (
            "hsb_primary_pause_seconds",
            "how long the guest was paused for a checkpoint",
            &st.pause,
        ),
        (
            "hsb_primary_ack_rtt_seconds",
            "from a checkpoint's capture to its ack (the added latency of output commit)",
            &st.ack_rtt,
        ),
        (
            "hsb_primary_suspend_wait_seconds",
            "xen: from the suspend request to the guest's suspend point (part of the pause)",
            &st.suspend_wait,
        ),
    ] {
        e.family(name, Kind::Histogram, help);
        e.histogram(name, &[], h);
    }
    metrics::frame_errors(
        &mut e,
        "hsb_primary_frame_errors_total",
        "frames refused on the replication connection, by kind (each drops the connection)",
        &d.frame_errors,
    );
    if let (Some(v), Some(f)) = (&view, &d.failover) {
        e.counter(
            "hsb_primary_heartbeats_sent_total",
            "heartbeats sent to the standby (all links)",
            v.heartbeats,
        );
        e.gauge(
            "hsb_primary_standby_present",
            "1 while the standby is there: its heartbeat replies arrive and it still hears this primary (failover.standby-timeout); a slow standby that is present is waited for (protected-degraded), only a lost one lets output leave under the witnesses' lease",
            f64::from(u8::from(v.standby_present)),
        );
        e.counter(
            "hsb_primary_standby_replies_total",
            "heartbeat replies received from the standby (all links)",
            v.standby_replies,
        );
        e.counter(
            "hsb_primary_bad_datagrams_total",
            "datagrams dropped: forged, corrupt, replayed or misaddressed",
            f.ep.rejected,
        );
        metrics::decisions(&mut e, "hsb_primary_decisions_total", &f.decisions);
    } else {
        e.family(
            "hsb_primary_decisions_total",
            Kind::Counter,
            "decisions taken, by the rule that fired and the action (failover off: none)",
        );
    }
    if let Some(svc) = &d.service {
        e.gauge(
            "hsb_primary_model_clients",
            "model service: client connections",
            svc.clients() as f64,
        );
        e.counter(
            "hsb_primary_model_requests_total",
            "model service: requests served",
            d.requests,
        );
    }
    if let Some(disk) = crate::disk::guest_disk(&d.dom) {
        hsb_domain::disk::metrics::export(&mut e, "hsb_primary", disk, d.nbd.as_ref());
    }
    d.surface.finish_exposition(e)
}
