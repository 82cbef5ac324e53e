//! The witness node: everything hsb-witness decides, as a pure state machine (STYLE.md, "the
//! daemon shape"). It owns the witness core (leases and votes, rule 3), which configured address
//! hosts the primary now ([`HostRoles`]), the daemon pings and their nonces, the report schedule,
//! the standby's maintenance notices, every counter, and the rate limits of its log lines.
//!
//! `step(now, event)` returns the effects to carry out, in order; the daemon (`daemon.rs`) only
//! turns bytes into events and effects into I/O. A promise reaches the disk before the grant that
//! makes it leaves: a `Save` effect comes first, and the grants after it name the state they
//! need ([`Effect::Send::needs`]); if the save fails, the daemon sends none of them and tells the
//! node ([`WitnessNode::saved`]). Nothing here reads a clock or touches a socket, a file or a
//! process.

use std::net::SocketAddr;
use std::time::Duration;

use hsb_common::datagram::{Dest, Envelope};
use hsb_common::decision::proto::{AppVerdict, ProbeTarget};
use hsb_common::decision::witness::{Action, Input, Persisted};
use hsb_common::decision::{Nanos, WitnessCore};
use hsb_common::logging::LogLimiter;
use hsb_common::wire::Dgram;

use crate::hosts::HostRoles;

#[path = "node_probes.rs"]
mod probes;
#[path = "node_types.rs"]
mod types;
#[path = "node_verdicts.rs"]
mod verdicts;
#[path = "node_view.rs"]
mod view;
pub use types::{
    cause, Counters, Effect, Effects, Event, NodeSettings, Observed, To, CAUSES, MAX_EFFECTS,
};

/// The pings of one daemon: one goes every probe interval, whether or not the ones before
/// were answered yet, so one lost ping leaves a gap of two intervals in what the witness
/// hears, not a probe timeout and more (a lost ping used to hold the next one back until it
/// timed out).
#[derive(Debug, Clone, Copy, Default)]
struct Ping {
    /// The nonce of the last ping sent.
    nonce: u64,
    /// The pings in flight: nonce and when sent.
    flight: [Option<(u64, Nanos)>; FLIGHT],
    answered: u64,
    missed: u64,
    /// The last pings given up: nonce, when sent and given up, and the host each stood for. A
    /// pong for one that comes within [`LATE_PONG`] proves the path delivered it.
    late: [Option<(u64, Nanos, Nanos, ProbeTarget)>; FLIGHT],
}

/// Most pings in flight to one daemon (with the defaults, a ping is given up after 50 ms and
/// one goes every 20 ms: three). With a probe timeout longer than this many intervals, the
/// next ping waits for a free place.
const FLIGHT: usize = 4;

/// How long after it was sent a late pong still counts as delivered (the gray-path rates are
/// about loss; a pong this late is more likely a restarted daemon's echo than a slow path).
const LATE_PONG: Duration = Duration::from_secs(1);

/// At most this many lines of one cause...
const LOG_BURST: u32 = 5;
/// ...in this long.
const LOG_WINDOW: Duration = Duration::from_secs(10);

/// The witness node.
pub struct WitnessNode {
    set: NodeSettings,
    core: WitnessCore,
    /// What the state file holds (the daemon saved it at start).
    on_disk: Persisted,
    hosts: HostRoles,
    pings: [Ping; 2],
    next_ping: Nanos,
    next_report: Nanos,
    /// Whether the last report said the application is down.
    reported_down: bool,
    /// When the application verdict changes with time alone (see
    /// [`WitnessCore::view_changes_at`]): the node looks again then.
    view_changes_at: Option<Nanos>,
    maintenance_until: Option<Nanos>,
    limits: LogLimiter<CAUSES>,
    counters: Counters,
    observed: Observed,
    /// `guest NAME: ` before log lines, or nothing.
    tag: String,
}

impl WitnessNode {
    /// A node around `core`, whose state `on_disk` is on disk already.
    pub fn new(set: NodeSettings, core: WitnessCore, on_disk: Persisted, now: Nanos) -> Self {
        WitnessNode {
            core,
            on_disk,
            hosts: HostRoles::new(),
            pings: [Ping::default(); 2],
            next_ping: now,
            next_report: now,
            reported_down: false,
            view_changes_at: None,
            maintenance_until: None,
            limits: LogLimiter::new(LOG_BURST, LOG_WINDOW),
            counters: Counters::default(),
            observed: Observed::default(),
            tag: if set.guest.is_empty() {
                String::new()
            } else {
                format!("guest {}: ", set.guest)
            },
            set,
        }
    }

    /// One event at `now`.
    pub fn step(&mut self, now: Nanos, event: Event) -> Effects {
        let mut out = Effects::new();
        match event {
            Event::Tick => {
                self.core_step(now, Input::Tick, None, &mut out);
                self.pings_tick(now, &mut out);
                self.reports(now, &mut out);
            }
            Event::Stalled { since } => {
                self.core_step(now, Input::Stalled { since }, None, &mut out);
                if let Some(n) = self.limits.allow(cause::STALL, now) {
                    log::warn!(
                        "{}this witness's loop did not run for {:.0} ms (stopped, paused or starved): failures of probes that overlapped it are discarded, and the application and the primary daemon must be seen failing again before this witness votes{}",
                        self.tag,
                        now.since(since).as_secs_f64() * 1e3,
                        LogLimiter::<CAUSES>::note(n)
                    );
                }
            }
            Event::AppProbe {
                class,
                took,
                detail,
            } => self.probe(now, ProbeTarget::PrimaryApp, class, took, &detail, &mut out),
            Event::Datagram { from, env, msg } => self.datagram(now, from, env, msg, &mut out),
        }
        self.report_down(now, &mut out);
        self.view_changes_at = self.core.view_changes_at(now);
        self.invariants();
        out
    }

    /// The application just turned down in this witness's view: report it at once rather than
    /// at the next report interval. The standby asks the witnesses again on such a report
    /// without waiting out its requery backoff, so a takeover's quorum is known as soon as a
    /// quorum of witnesses sees it, not up to a report interval or a backoff later.
    fn report_down(&mut self, now: Nanos, out: &mut Effects) {
        if !self.reported_down && self.core.view(now).app == AppVerdict::Down {
            self.next_report = now;
            self.reports(now, out);
        }
    }

    /// The outcome of a `Save` effect, and how many grants the daemon did not send for it.
    pub fn saved(&mut self, now: Nanos, state: Persisted, result: Result<(), String>) {
        match result {
            Ok(()) => self.on_disk = state,
            Err(e) => {
                self.counters.save_failures += 1;
                if let Some(n) = self.limits.allow(cause::SAVE_FAILED, now) {
                    log::error!(
                        "{}cannot save the rollback guard: {e}; this witness grants nothing until it can{}",
                        self.tag,
                        LogLimiter::<CAUSES>::note(n)
                    );
                }
            }
        }
    }

    /// A grant the daemon did not send: its promise is not on disk.
    pub fn withheld(&mut self, now: Nanos, msg: &Dgram) {
        self.counters.grants_withheld += 1;
        if let Some(n) = self.limits.allow(cause::WITHHELD, now) {
            let what = match msg {
                Dgram::Vote(v) => format!("vote for query {}", v.query),
                Dgram::LeaseReply(r) => format!("lease {}", r.req),
                other => other.name().to_string(),
            };
            log::error!(
                "{}{what} not sent: its promise is not on disk{}",
                self.tag,
                LogLimiter::<CAUSES>::note(n)
            );
        }
    }

    /// When the node next needs a tick.
    pub fn next_deadline(&self) -> Nanos {
        let mut t = self.next_ping.min(self.next_report);
        for p in &self.pings {
            for (_, s) in p.flight.iter().flatten() {
                t = t.min(s.plus(self.set.probe_timeout));
            }
        }
        if let Some(d) = self.core.next_deadline() {
            t = t.min(d);
        }
        if let Some(d) = self.view_changes_at {
            t = t.min(d);
        }
        t
    }

    /// Change the report interval (SIGHUP); the next report comes no later than one new interval.
    pub fn set_report_interval(&mut self, now: Nanos, d: Duration) {
        self.set.report_interval = d;
        self.next_report = self.next_report.min(now.plus(d));
    }

    fn core_step(
        &mut self,
        now: Nanos,
        input: Input,
        reply_to: Option<(SocketAddr, Dest)>,
        out: &mut Effects,
    ) {
        let actions = self.core.step(now, input);
        let current = self.core.persisted();
        let needs = (current != self.on_disk).then_some(current);
        if let Some(p) = needs {
            push(out, Effect::Save(p));
        }
        for a in actions {
            let (msg, grant) = match a {
                Action::Vote(v) => {
                    self.count_vote(now, &v);
                    (Dgram::Vote(v), v.verdict.granted())
                }
                Action::LeaseReply(r) => {
                    self.count_lease(now, &r);
                    (Dgram::LeaseReply(r), r.verdict.granted())
                }
            };
            if let Some((to, dest)) = reply_to {
                push(
                    out,
                    Effect::Send {
                        to: To::Addr(to),
                        dest: Some(dest),
                        msg,
                        // A grant needs its promise on disk: saved in this batch, or
                        // already there (then there is nothing to wait for).
                        needs: if grant { needs } else { None },
                    },
                );
            }
        }
    }
    fn reports(&mut self, now: Nanos, out: &mut Effects) {
        if now < self.next_report {
            return;
        }
        self.next_report = now.plus(self.set.report_interval);
        let r = self.core.report(now);
        self.reported_down = r.view.app == AppVerdict::Down;
        let report = Dgram::Report(r);
        for slot in [1, 0] {
            push(
                out,
                Effect::Send {
                    to: To::Slot(slot),
                    dest: Some(self.hosts.dest(slot)),
                    msg: report,
                    needs: None,
                },
            );
        }
    }

    fn datagram(
        &mut self,
        now: Nanos,
        from: SocketAddr,
        env: Envelope,
        msg: Dgram,
        out: &mut Effects,
    ) {
        let reply = Some((from, Dest::node(env.from)));
        match msg {
            Dgram::Pong { nonce } => self.pong(now, env, nonce, out),
            Dgram::VoteRequest(r) => self.core_step(now, Input::VoteRequest(r), reply, out),
            Dgram::LeaseRequest(r) => self.core_step(now, Input::LeaseRequest(r), reply, out),
            Dgram::Withdraw(w) => self.core_step(now, Input::Withdraw(w), None, out),
            Dgram::Protected(p) => self.core_step(now, Input::Protected(p), None, out),
            Dgram::Maintenance { on } => {
                if on && self.maintenance_until.is_none_or(|u| now >= u) {
                    log::info!(
                        "{}the standby's operator paused automatic takeovers (maintenance)",
                        self.tag
                    );
                }
                self.maintenance_until = on.then(|| now.plus(Duration::from_secs(3)));
            }
            Dgram::Ping { nonce } => push(
                out,
                Effect::Send {
                    to: To::Addr(from),
                    dest: Some(Dest::node(env.from)),
                    msg: Dgram::Pong { nonce },
                    needs: None,
                },
            ),
            other => log::debug!("{}ignored {} from {from}", self.tag, other.name()),
        }
        // Requests and notices may carry a newer epoch: later datagrams carry it too.
    }
}

/// Push an effect. Unlike the primary's and the standby's nodes (`hsb_common::kit::push`,
/// which stop the daemon), a witness drops an effect past [`MAX_EFFECTS`] and logs it, since a
/// witness that stops serves no guest of its client machine. Effects are pushed in order, so
/// once the list is full every later one is dropped too: a grant never leaves without the save
/// of its promise before it, and a standby whose query got no answer asks again. Debug builds
/// still stop, so tests find such a bug.
fn push(out: &mut Effects, e: Effect) {
    if out.push(e).is_err() {
        log::error!("witness node: more than {MAX_EFFECTS} effects in one step (dropped one)");
        debug_assert!(false, "more than {MAX_EFFECTS} effects in one step");
    }
}

#[cfg(test)]
#[path = "node_tests.rs"]
pub(crate) mod tests;
