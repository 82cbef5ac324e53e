//! hsb-standby's Prometheus metrics (`metrics_listen`): what the replica holds (checkpoints,
//! full synchronisations, bytes and pages applied, apply times as a histogram, the age of the
//! last checkpoint applied), the replication connection slots (sessions, replacements,
//! refusals, handshakes evicted and expired, frame errors by kind), the failover side (the
//! standby core's decision state, a suspected primary, maintenance, heartbeats and the replies
//! to them, bad datagrams, decisions by rule and action), the activation and, after it, the
//! authority. Read from the node's view and the shell's counters at scrape time; nothing here
//! is counted twice. Names follow hsb-primary's (`hsb_primary_*`): the same word for the same
//! thing.

use hsb_common::decision::primary::Mode;
use hsb_common::decision::standby::State;
use hsb_common::kit::metrics::{self, Exposition, Kind};
use hsb_common::kit::shell::Surface;
use hsb_common::time::Nanos;
use hsb_standby::node::STATES;

use crate::daemon::Daemon;
use crate::replica::Rep;

/// The standby core's states, in export order.
const DECISION_STATES: [State; 8] = [
    State::Unsynced,
    State::Following,
    State::Deciding,
    State::Waiting,
    State::SwitchingOver,
    State::RefusedStale,
    State::Activated,
    State::SteppedDown,
];

/// The activated node's authority modes, in export order.
const MODES: [Mode; 6] = [
    Mode::Protected,
    Mode::Degraded,
    Mode::Unprotected,
    Mode::Holding,
    Mode::Fenced,
    Mode::SteppedDown,
];

/// `name{label}`: 1 for `current`, 0 for every other of `all` (and `current` itself if `all`
/// does not list it, so the current value is always there).
fn one_of(e: &mut Exposition, name: &str, label: &str, all: &[&str], current: &str) {
    for v in all {
        e.sample(name, &[(label, v)], f64::from(u8::from(*v == current)));
    }
    if !all.contains(&current) {
        e.sample(name, &[(label, current)], 1.0);
    }
}

fn flag(b: bool) -> f64 {
    f64::from(u8::from(b))
}

/// The exposition at `now`.
pub fn text(d: &Daemon, now: Nanos) -> String {
    let n = &d.node;
    let st = n.stats();
    let mut e = Surface::exposition("hsb-standby", now);
    e.gauge(
        "hsb_standby_epoch",
        "the activation epoch this standby follows, or serves in once activated (rule 8)",
        n.epoch().0 as f64,
    );
    let fam = "hsb_standby_replication";
    e.family(
        fam,
        Kind::Gauge,
        "the replica's state as status says it: 1 for the current one (replicating: a live session and a replica; active: activated, serving)",
    );
    one_of(&mut e, fam, "state", &STATES, n.state_name());
    e.gauge(
        "hsb_standby_activated",
        "1 once this standby's replica was activated (it serves, and takes no checkpoints)",
        flag(n.activated().is_some()),
    );
    let fam = "hsb_standby_applied_checkpoint";
    e.family(
        fam,
        Kind::Gauge,
        "the last checkpoint applied to the replica (none applied yet: no sample)",
    );
    if let Some(a) = d.receiver.applied() {
        e.sample(fam, &[], a as f64);
    }
    let fam = "hsb_standby_last_applied_age_seconds";
    e.family(
        fam,
        Kind::Gauge,
        "time since the last checkpoint was applied (none applied by this process yet: no sample)",
    );
    if let Some(t) = st.last_applied_at {
        e.sample(fam, &[], now.since(t).as_secs_f64());
    }
    e.counter(
        "hsb_standby_checkpoints_applied_total",
        "checkpoints applied to the replica (each verified whole before it is applied and acknowledged)",
        st.applied,
    );
    e.counter(
        "hsb_standby_full_syncs_total",
        "full synchronisations applied (each new session starts with one)",
        st.full_syncs,
    );
    e.counter(
        "hsb_standby_applied_bytes_total",
        "checkpoint bytes applied (as received on the wire)",
        st.bytes,
    );
    e.counter(
        "hsb_standby_applied_pages_total",
        "guest pages applied",
        st.pages,
    );
    let fam = "hsb_standby_apply_seconds";
    e.family(
        fam,
        Kind::Histogram,
        "how long applying a checkpoint to the replica took (part of the primary's ack round trip)",
    );
    e.histogram(fam, &[], &st.apply);
    e.gauge(
        "hsb_standby_staging",
        "1 while a checkpoint is being received (staged whole before it is applied)",
        flag(d.receiver.staging()),
    );
    e.counter(
        "hsb_standby_sessions_total",
        "replication sessions that went live",
        st.sessions,
    );
    e.counter(
        "hsb_standby_sessions_replaced_total",
        "live sessions replaced by a newer primary's",
        st.sessions_replaced,
    );
    e.gauge(
        "hsb_standby_handshakes_pending",
        "replication connections waiting for their handshake (bounded)",
        n.pending_handshakes() as f64,
    );
    e.counter(
        "hsb_standby_connections_refused_total",
        "sessions refused (not a primary, another domain size, an older primary, this standby active)",
        st.connections_refused,
    );
    e.counter(
        "hsb_standby_connections_disallowed_total",
        "connections closed at once: from an address outside primary_allow",
        st.connections_disallowed,
    );
    e.counter(
        "hsb_standby_handshakes_evicted_total",
        "pending handshakes that gave way to newer connections (the pool was full)",
        st.handshakes_evicted,
    );
    e.counter(
        "hsb_standby_handshakes_expired_total",
        "handshakes that did not make a session within their deadline",
        st.handshakes_expired,
    );
    metrics::frame_errors(
        &mut e,
        "hsb_standby_frame_errors_total",
        "frames refused on replication connections, by kind (each drops its connection)",
        &st.frame_errors,
    );
    let view = n.failover_view(now);
    e.gauge(
        "hsb_standby_maintenance",
        "1 while the operator paused automatic takeovers (maintenance on)",
        flag(view.as_ref().is_some_and(|v| v.maintenance)),
    );
    let fam = "hsb_standby_decision_state";
    e.family(
        fam,
        Kind::Gauge,
        "the standby core's state (failover on): 1 for the current one (following: healthy; refused-stale, stepped-down: it will not take over)",
    );
    let fam_auth = "hsb_standby_authority";
    match (&view, &d.failover) {
        (Some(v), Some(f)) => {
            let names: Vec<&str> = DECISION_STATES.iter().map(|s| s.name()).collect();
            one_of(&mut e, fam, "state", &names, v.state.name());
            e.gauge(
                "hsb_standby_primary_suspected",
                "1 while the heartbeat detector suspects the primary (the witnesses are being asked)",
                flag(v.suspected),
            );
            e.family(
                fam_auth,
                Kind::Gauge,
                "after activation with failover on: the authority to serve, 1 for its current mode (protected: acks; protected-degraded: acks slower than the ack lease; unprotected: a witness lease; holding, fenced, stepped-down: none)",
            );
            if let Some(mode) = v.authority {
                let names: Vec<&str> = MODES.iter().map(|m| m.name()).collect();
                one_of(&mut e, fam_auth, "mode", &names, mode);
            }
            e.counter(
                "hsb_standby_heartbeats_received_total",
                "heartbeats received from the primary (all links)",
                st.heartbeats,
            );
            e.counter(
                "hsb_standby_heartbeat_replies_total",
                "heartbeat replies sent to the primary (all links): they tell it the standby is there and still hears it, so it waits for a slow standby instead of running unprotected",
                f.replies,
            );
            e.counter(
                "hsb_standby_bad_datagrams_total",
                "datagrams dropped: forged, corrupt, replayed or misaddressed",
                f.ep.rejected,
            );
            metrics::decisions(&mut e, "hsb_standby_decisions_total", &f.decisions);
        }
        _ => {
            e.family(
                fam_auth,
                Kind::Gauge,
                "after activation with failover on: the authority to serve (failover off: none)",
            );
            e.family(
                "hsb_standby_decisions_total",
                Kind::Counter,
                "decisions taken, by the rule that fired and the action (failover off: none)",
            );
        }
    }
    if let Rep::Model(_) = &d.replica {
        if let Some(svc) = &d.service {
            e.gauge(
                "hsb_standby_model_clients",
                "model service after activation: client connections",
                svc.clients() as f64,
            );
        }
        e.counter(
            "hsb_standby_model_requests_total",
            "model service after activation: requests served",
            d.requests,
        );
    }
    if let Some(disk) = d.replica.disk_ref() {
        hsb_domain::disk::metrics::export(&mut e, "hsb_standby", disk, d.nbd.as_ref());
    }
    d.surface.finish_exposition(e)
}
