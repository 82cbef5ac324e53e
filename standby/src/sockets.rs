//! The standby shell's other sockets: the witness and heartbeat endpoints (datagrams into
//! node events), the ping node's connection, and the activated replica (Xen domain unpaused,
//! or the model domain's service bound and answering under the authority).

use std::io;

use mio::net::TcpStream;
use mio::{Interest, Poll, Token};

use hsb_common::datagram::Sender;
use hsb_common::decision::{self, record, Epoch};
use hsb_common::key::ClusterKey;
use hsb_common::kit::decisions::Decisions;
use hsb_common::kit::endpoint::{Endpoint, Received};
use hsb_common::msg::Role;
use hsb_common::node_state::NodeState;
use hsb_common::time::Nanos;
use hsb_common::wire::Dgram;
use hsb_domain::model::ModelDomain;
use hsb_domain::service::{ClientId, Handler, Service};
use hsb_standby::config::Settings;
use hsb_standby::node::Event;

use crate::daemon::{
    Daemon, Failover, HEARTBEAT_BASE, HEARTBEAT_LINKS, PING, SERVICE_BASE, WITNESS_UDP,
};
use crate::replica::Rep;

/// Requests of the activated replica's service: answered at once (no standby behind it).
struct Direct<'a> {
    dom: &'a mut ModelDomain,
    requests: &'a mut u64,
    /// Under automatic failover: whether this node holds authority to release output now.
    authority: bool,
}

impl Handler for Direct<'_> {
    fn can_take(&mut self) -> bool {
        self.authority
    }
    fn handle(&mut self, _id: ClientId, line: &str) -> Option<String> {
        *self.requests += 1;
        Some(self.dom.handle(line))
    }
    fn holds(&self, _id: ClientId) -> bool {
        false
    }
    fn closed(&mut self, _id: ClientId) {}
}

impl Daemon {
    /// Make the replica serve from `ckpt` (its host state is already written).
    pub(crate) fn activate(
        &mut self,
        now: Nanos,
        ckpt: u64,
        epoch: Epoch,
        by: &str,
    ) -> Result<(), String> {
        if let Rep::Xen(x) = &mut self.replica {
            x.activate()
                .map_err(|e| format!("activate the replica: {e}"))?;
            log::warn!(
                "ACTIVATED by {by}: Xen replica domain {} runs from checkpoint {ckpt}; epoch {epoch}",
                x.domid()
            );
            return Ok(());
        }
        // (Its disk forked before the host state was written: ForkDisk.)
        self.verify_disk(ckpt);
        if let Some(d) = self.replica.model() {
            d.reset_clock();
            d.set_rate(self.s.dirty_rate);
            d.run(now);
        }
        // The copy that served before may hold the address for a moment more: then it is tried
        // again from the loop (see `bind_service`).
        self.service = Service::try_bind(
            self.s.service,
            self.poll.registry(),
            SERVICE_BASE,
            self.s.max_clients,
        )
        .map_err(|e| format!("model service {}: {e}", self.s.service))?;
        log::warn!(
            "ACTIVATED by {by}: replica at checkpoint {ckpt} (counter {}) now serves on {}{}; epoch {epoch}",
            self.replica.counter().unwrap_or(0),
            self.s.service,
            if self.service.is_none() { " (busy: retried until it is free)" } else { "" },
        );
        Ok(())
    }

    /// Activated with the service address still busy: try again.
    pub(crate) fn bind_service(&mut self) {
        if self.node.activated().is_none()
            || self.service.is_some()
            || self.replica.model().is_none()
        {
            return;
        }
        self.service = Service::try_bind_logged(
            self.s.service,
            self.poll.registry(),
            SERVICE_BASE,
            self.s.max_clients,
        );
    }

    pub(crate) fn on_service(&mut self, now: Nanos, t: Token) {
        let authority = self.node.may_serve(now);
        if let (Some(svc), Some(dom)) = (self.service.as_mut(), self.replica.model()) {
            let mut h = Direct {
                dom,
                requests: &mut self.requests,
                authority,
            };
            svc.on_event(self.poll.registry(), t, &mut h);
        }
    }

    /// Read every heartbeat link until it is empty, at `now`. Done before anything else of a
    /// turn steps the node, and again before the node's tick: the silence the heartbeat
    /// detector measures must be the primary's, never this loop's own (a turn that applied a
    /// full synchronisation for tens of milliseconds, or a loop the CPU did not run). Heartbeats
    /// waiting unread in the socket meanwhile are counted first. A false suspicion costs a
    /// witness query and stretches the timeout for `hb-calm` (hysteresis): a crash soon after
    /// was detected only after twice the timeout (issue 16.4).
    pub(crate) fn drain_heartbeats(&mut self, now: Nanos) {
        let links = self.failover.as_ref().map_or(0, |f| f.heartbeat_udp.len());
        for i in 0..links {
            self.on_udp(now, Token(HEARTBEAT_BASE + i));
        }
    }

    pub(crate) fn on_udp(&mut self, now: Nanos, t: Token) {
        loop {
            let Some(f) = self.failover.as_mut() else {
                return;
            };
            let link = (t != WITNESS_UDP).then(|| t.0 - HEARTBEAT_BASE);
            let sock = match link {
                None => &f.witness_udp,
                Some(i) => match f.heartbeat_udp.get(i) {
                    Some(s) => s,
                    None => return,
                },
            };
            match f.ep.recv(sock) {
                Received::Datagram { from, env, msg } => {
                    // The heartbeat replies go back the way the heartbeats came.
                    if let (Some(i), Dgram::Heartbeat { .. }) = (link, &msg) {
                        if let Some(slot) = f.heartbeat_from.get_mut(i) {
                            *slot = Some((from, env.from));
                        }
                    }
                    self.feed(now, Event::Datagram { from, env, msg })
                }
                Received::Rejected => {}
                Received::Empty => return,
            }
        }
    }

    /// Ping-node baseline: a TCP connect to the ping node; the answer feeds the node.
    pub(crate) fn start_ping(&mut self) -> Option<Event> {
        let addr = self.s.ping_node?;
        let f = self.failover.as_mut()?;
        match TcpStream::connect(addr) {
            Ok(mut st) => {
                if self
                    .poll
                    .registry()
                    .register(&mut st, PING, Interest::WRITABLE)
                    .is_ok()
                {
                    f.ping = Some(st);
                    return None;
                }
                Some(Event::PingDone { ok: false })
            }
            Err(_) => Some(Event::PingDone { ok: false }),
        }
    }

    pub(crate) fn on_ping(&mut self, now: Nanos) {
        let Some(st) = self.failover.as_mut().and_then(|f| f.ping.as_mut()) else {
            return;
        };
        let ok = match st.take_error() {
            Ok(None) => match st.peer_addr() {
                Ok(_) => true,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(_) => false,
            },
            _ => false,
        };
        if let Some(mut st) = self.failover.as_mut().and_then(|f| f.ping.take()) {
            let _ = self.poll.registry().deregister(&mut st);
        }
        self.feed(now, Event::PingDone { ok });
    }
}

/// The witness and heartbeat endpoints and the decision log (failover on).
pub(crate) fn open_failover(
    s: &Settings,
    key: &ClusterKey,
    poll: &Poll,
    now: Nanos,
    host: &NodeState,
    query_base: u32,
) -> io::Result<Failover> {
    let witness_udp = hsb_common::kit::endpoint::bind(
        "witness address",
        s.witness_listen,
        poll.registry(),
        WITNESS_UDP,
    )?;
    if s.heartbeat_listen.len() > HEARTBEAT_LINKS {
        return Err(io::Error::other(format!(
            "heartbeat_listen: {} links, at most {HEARTBEAT_LINKS}",
            s.heartbeat_listen.len()
        )));
    }
    let mut heartbeat_udp = Vec::new();
    for (i, a) in s.heartbeat_listen.iter().enumerate() {
        let u = hsb_common::kit::endpoint::bind(
            "heartbeat address",
            *a,
            poll.registry(),
            Token(HEARTBEAT_BASE + i),
        )?;
        heartbeat_udp.push(u);
    }
    let me = Sender {
        role: Role::Standby,
        id: hsb_common::datagram::node_sender_id(&s.node),
    };
    let decisions = Decisions::open(
        &s.decision_log,
        s.decision_log_rotation,
        now,
        decision::Role::Standby,
        host.epoch,
        &s.decision,
        record::Start {
            seq_base: query_base,
            ..record::Start::default()
        },
    )?;
    log::info!(
        "automatic failover on: policy {}, {} heartbeat link(s) on {:?} (every {:?}, suspect after {:?}), witnesses {:?} (quorum {}), witness traffic on {}",
        s.decision.policy,
        s.heartbeat_listen.len(),
        s.heartbeat_listen,
        s.decision.heartbeat.interval,
        s.decision.heartbeat.timeout,
        s.witness_peers,
        s.decision.witnesses.quorum(),
        s.witness_listen
    );
    Ok(Failover {
        witness_udp,
        heartbeat_from: vec![None; heartbeat_udp.len()],
        replies: 0,
        heartbeat_udp,
        // This host may have been the primary until now (a rejoin): datagrams to it in that
        // role may still be on their way.
        ep: Endpoint::new(key, me, host.incarnation, host.epoch.0).with_former_role(Role::Primary),
        decisions,
        ping: None,
    })
}
