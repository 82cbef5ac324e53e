//! hsb-primary's datagram side, when failover is on: the witness endpoint and the decision
//! log opened at start, and authenticated datagrams read into node events.

use std::io;

use mio::Poll;

use hsb_common::datagram::Sender;
use hsb_common::decision;
use hsb_common::decision::record;
use hsb_common::key::ClusterKey;
use hsb_common::kit::decisions::Decisions;
use hsb_common::kit::endpoint::{Endpoint, Received};
use hsb_common::msg::Role;
use hsb_common::time::Nanos;
use hsb_primary::config::Settings;
use hsb_primary::node::{Event, Start};

use crate::daemon::{Daemon, Failover, WITNESS_UDP};

impl Daemon {
    /// Authenticated datagrams, each stepped as it is read.
    pub(crate) fn on_udp(&mut self, now: Nanos) {
        loop {
            let Some(f) = self.failover.as_mut() else {
                return;
            };
            match f.ep.recv(&f.udp) {
                Received::Datagram { from, env, msg } => {
                    self.feed(now, Event::Datagram { from, env, msg })
                }
                Received::Rejected => {}
                Received::Empty => return,
            }
        }
    }
}

/// The witness endpoint and the decision log (failover on).
pub(crate) fn open_failover(
    s: &Settings,
    key: &ClusterKey,
    start: &Start,
    poll: &Poll,
    now: Nanos,
) -> io::Result<Failover> {
    let udp = hsb_common::kit::endpoint::bind(
        "witness address",
        s.witness_listen,
        poll.registry(),
        WITNESS_UDP,
    )?;
    let me = Sender {
        role: Role::Primary,
        id: hsb_common::datagram::node_sender_id(&s.node),
    };
    let decisions = Decisions::open(
        &s.decision_log,
        s.decision_log_rotation,
        now,
        decision::Role::Primary,
        start.epoch,
        &s.decision,
        record::Start {
            seq_base: start.request_base,
            resume_at: start.first_checkpoint.saturating_sub(1),
            ..record::Start::default()
        },
    )?;
    log::info!(
        "automatic failover on: policy {}; heartbeats every {:?} to {:?}; witnesses {:?}; output needs a fresh ack, or a witness-quorum lease once the standby is lost",
        s.decision.policy,
        s.decision.heartbeat.interval,
        s.heartbeat_peers,
        s.witness_peers
    );
    Ok(Failover {
        udp,
        // Heartbeats and requests carry this primary's epoch (a promoted primary's are not
        // epoch 1: its standby drops lower epochs as stale).
        ep: {
            let ep = Endpoint::new(key, me, start.incarnation, start.epoch.0);
            // A promoted standby: reports to it as the standby may still be on their way.
            if start.promoted {
                ep.with_former_role(Role::Standby)
            } else {
                ep
            }
        },
        decisions,
    })
}
