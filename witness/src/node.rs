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
use hsb_common::decision::proto::{ProbeClass, ProbeTarget, Verdict, WitnessView};
use hsb_common::decision::witness::{Action, Input, Persisted};
use hsb_common::decision::{Epoch, Nanos, WitnessCore};
use hsb_common::logging::LogLimiter;
use hsb_common::msg::Role;
use hsb_common::stats::Histogram;
use hsb_common::wire::Dgram;

use crate::hosts::HostRoles;

/// Most effects one step returns (a step answers at most one request, plus a save and a
/// report to each daemon and a ping to each).
pub const MAX_EFFECTS: usize = 8;

/// Where a datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum To {
    /// The daemon configured at slot 0 (`primary`) or 1 (`standby`).
    Slot(usize),
    /// The address a request came from.
    Addr(SocketAddr),
}

/// What the daemon must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Make the rollback guard durable before what follows (state file: tmp, fsync, rename).
    Save(Persisted),
    /// Send a datagram; if `needs` is set, only if that state is on disk (a grant's promise).
    Send {
        /// Where.
        to: To,
        /// For whom (None: a ping, answered by whoever is there).
        dest: Option<Dest>,
        /// What.
        msg: Dgram,
        /// The state that must be durable first.
        needs: Option<Persisted>,
    },
}

/// The effects of one step (bounded).
pub type Effects = heapless::Vec<Effect, MAX_EFFECTS>;

/// An input of the node.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Time passed (pings, timeouts, reports, grant expiry).
    Tick,
    /// The loop did not run since `since`: failures of probes that overlapped it are no
    /// evidence.
    Stalled {
        /// When the loop last ran.
        since: Nanos,
    },
    /// The application probe finished.
    AppProbe {
        /// What it got.
        class: ProbeClass,
        /// How long it ran.
        took: Duration,
        /// What it saw, for the log.
        detail: String,
    },
    /// An authenticated datagram.
    Datagram {
        /// Where it came from.
        from: SocketAddr,
        /// Its envelope.
        env: Envelope,
        /// The message.
        msg: Dgram,
    },
}

/// A daemon ping in flight.
#[derive(Debug, Clone, Copy, Default)]
struct Ping {
    nonce: u64,
    sent: Option<Nanos>,
    answered: u64,
    missed: u64,
}

/// The witness's settings the node needs.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// How often the daemons are pinged.
    pub probe_interval: Duration,
    /// How long a ping may take.
    pub probe_timeout: Duration,
    /// How often reports go out.
    pub report_interval: Duration,
    /// The guest this node watches, named in its log lines (empty: the witness's only guest,
    /// from a file without sections, and the log lines say nothing of guests).
    pub guest: String,
}

/// Counters shown in status.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    /// Votes granted and refused.
    pub votes_granted: u64,
    /// Votes refused.
    pub votes_refused: u64,
    /// Leases granted.
    pub leases_granted: u64,
    /// Leases refused.
    pub leases_refused: u64,
    /// Saves of the rollback guard that failed.
    pub save_failures: u64,
    /// Grants not sent because their promise was not on disk.
    pub grants_withheld: u64,
}

/// What the node observed, for metrics: every probe's outcome and latency by target, and every
/// refusal by reason (cumulative since the start; the counters above count them in all).
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Probes by target (in the order of [`ProbeTarget::ALL`]: the application, the primary's
    /// daemon, the standby's daemon) and outcome (in the order of [`ProbeClass::ALL`]).
    pub probes: [[u64; 4]; 3],
    /// Probe latencies by target (a ping's round trip for the daemons).
    pub latency: [Histogram; 3],
    /// Votes refused, by reason (in the order of [`cause::REASON_WORDS`]).
    pub votes_refused: [u64; cause::REASONS],
    /// Leases refused, by reason.
    pub leases_refused: [u64; cause::REASONS],
}

/// Log lines that can repeat every probe interval or every query, rate-limited per cause: the
/// fixed causes, then one per refusal reason for votes and one per reason for leases. Granted
/// votes are always logged.
pub mod cause {
    use hsb_common::decision::proto::RefuseReason;

    pub const VIEW_CHANGE: usize = 0;
    pub const SAVE_FAILED: usize = 1;
    pub const WITHHELD: usize = 2;
    pub const STALL: usize = 3;
    /// The refusal reasons.
    pub const REASONS: usize = 9;
    pub const COUNT: usize = 4 + 2 * REASONS;
    /// Each reason's word (as in the reason's text form, without its argument).
    pub const REASON_WORDS: [&str; REASONS] = [
        "primary-answers",
        "not-yet",
        "guest-failure",
        "standby-unreachable",
        "lease-active",
        "restarting",
        "stale-epoch",
        "promised",
        "no-data",
    ];

    /// A reason's index.
    pub fn reason(r: &RefuseReason) -> usize {
        match r {
            RefuseReason::PrimaryAnswers => 0,
            RefuseReason::NotYet(_) => 1,
            RefuseReason::GuestFailure => 2,
            RefuseReason::StandbyUnreachable => 3,
            RefuseReason::LeaseActive(_) => 4,
            RefuseReason::Restarting(_) => 5,
            RefuseReason::StaleEpoch(_) => 6,
            RefuseReason::Promised(_) => 7,
            RefuseReason::NoData => 8,
        }
    }

    pub fn vote_refused(r: &RefuseReason) -> usize {
        4 + reason(r)
    }

    pub fn lease_refused(r: &RefuseReason) -> usize {
        4 + REASONS + reason(r)
    }
}
/// The number of log causes.
pub const CAUSES: usize = cause::COUNT;
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
        self.invariants();
        out
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
            if let Some(s) = p.sent {
                t = t.min(s.plus(self.set.probe_timeout));
            }
        }
        if let Some(d) = self.core.next_deadline() {
            t = t.min(d);
        }
        t
    }

    /// Change the report interval (SIGHUP); the next report comes no later than one new interval.
    pub fn set_report_interval(&mut self, now: Nanos, d: Duration) {
        self.set.report_interval = d;
        self.next_report = self.next_report.min(now.plus(d));
    }

    /// What must hold after every step (checked in release builds too): the epoch known never
    /// goes back below what is on disk, and a ping in flight names its slot.
    fn invariants(&self) {
        assert!(
            self.core.epoch_seen() >= self.on_disk.epoch_seen,
            "the epoch seen went back below what is on disk"
        );
        for (i, p) in self.pings.iter().enumerate() {
            assert!(p.sent.is_none() || (p.nonce & 1) as usize == i);
        }
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

    fn count_vote(&mut self, now: Nanos, v: &hsb_common::decision::proto::Vote) {
        // A standby requeries while a refusal holds: the same refusal is logged a few times per
        // window, then with a count.
        let logged = match v.verdict {
            Verdict::Grant => {
                self.counters.votes_granted += 1;
                Some(0)
            }
            Verdict::Refuse(r) => {
                self.counters.votes_refused += 1;
                self.observed.votes_refused[cause::reason(&r)] += 1;
                self.limits.allow(cause::vote_refused(&r), now)
            }
        };
        if let Some(n) = logged {
            let suppressed = if n > 0 {
                format!(",\"similar_suppressed\":{n}")
            } else {
                String::new()
            };
            let guest = if self.set.guest.is_empty() {
                String::new()
            } else {
                format!("\"guest\":\"{}\",", self.set.guest)
            };
            let rate = |r: Option<u8>| r.map_or("null".to_string(), |r| r.to_string());
            log::info!(
                "{{{guest}\"witness\":{},\"decision\":\"vote\",\"query\":{},\"epoch\":{},\"verdict\":\"{}\",\"app\":\"{}\",\"primary_host\":{},\"standby_host\":{},\"app_rate\":{},\"primary_rate\":{},\"standby_rate\":{}{suppressed}}}",
                v.witness, v.query, v.epoch.0, v.verdict, v.view.app, v.view.primary_host, v.view.standby_host,
                rate(v.view.rates.app), rate(v.view.rates.primary), rate(v.view.rates.standby)
            );
        }
    }

    fn count_lease(&mut self, now: Nanos, r: &hsb_common::decision::proto::LeaseReply) {
        match r.verdict {
            Verdict::Grant => {
                self.counters.leases_granted += 1;
                log::debug!(
                    "{}lease {} to the primary of epoch {} for {:?}",
                    self.tag,
                    r.req,
                    r.epoch.0,
                    r.duration
                );
            }
            Verdict::Refuse(why) => {
                self.counters.leases_refused += 1;
                self.observed.leases_refused[cause::reason(&why)] += 1;
                if let Some(n) = self.limits.allow(cause::lease_refused(&why), now) {
                    log::info!(
                        "{}lease {} refused to the primary of epoch {}: {}{}",
                        self.tag,
                        r.req,
                        r.epoch.0,
                        r.verdict,
                        LogLimiter::<CAUSES>::note(n)
                    );
                }
            }
        }
    }

    /// A probe of `target` that ran for `took` ended at `now`.
    fn probe(
        &mut self,
        now: Nanos,
        target: ProbeTarget,
        class: ProbeClass,
        took: Duration,
        detail: &str,
        out: &mut Effects,
    ) {
        let t = ProbeTarget::ALL
            .iter()
            .position(|x| *x == target)
            .unwrap_or(0);
        let c = ProbeClass::ALL
            .iter()
            .position(|x| *x == class)
            .unwrap_or(0);
        self.observed.probes[t][c] += 1;
        self.observed.latency[t].record(took);
        let before = self.core.view(now);
        self.core_step(
            now,
            Input::Probe {
                target,
                class,
                took,
            },
            None,
            out,
        );
        let after = self.core.view(now);
        // The rates move with every probe; a change of the verdicts is what is worth a line.
        let verdicts = |v: &WitnessView| (v.app, v.primary_host, v.standby_host);
        if verdicts(&before) != verdicts(&after) {
            if let Some(n) = self.limits.allow(cause::VIEW_CHANGE, now) {
                let pct = |r: Option<u8>| r.map_or("-".to_string(), |r| format!("{r}%"));
                log::info!(
                    "{}view changed after {target} probe {class} ({detail}): application {} -> {}, primary daemon {} -> {}, standby daemon {} -> {}; answered over the rate window: application {}, primary daemon {}, standby daemon {}{}",
                    self.tag,
                    before.app, after.app, before.primary_host, after.primary_host, before.standby_host, after.standby_host,
                    pct(after.rates.app), pct(after.rates.primary), pct(after.rates.standby),
                    LogLimiter::<CAUSES>::note(n)
                );
            }
        }
    }

    /// The probe target the daemon at `slot` stands for now.
    fn slot_target(&self, slot: usize) -> ProbeTarget {
        if Some(slot) == self.hosts.primary_slot() {
            ProbeTarget::PrimaryHost
        } else {
            ProbeTarget::StandbyHost
        }
    }

    fn pings_tick(&mut self, now: Nanos, out: &mut Effects) {
        for i in 0..2 {
            if let Some(sent) = self.pings[i].sent {
                if now >= sent.plus(self.set.probe_timeout) {
                    self.pings[i].sent = None;
                    self.pings[i].missed += 1;
                    let target = self.slot_target(i);
                    self.probe(
                        now,
                        target,
                        ProbeClass::Timeout,
                        now.since(sent),
                        "no pong",
                        out,
                    );
                }
            }
        }
        if now < self.next_ping {
            return;
        }
        self.next_ping = now.plus(self.set.probe_interval);
        for i in 0..2 {
            if self.pings[i].sent.is_some() {
                continue;
            }
            // The low bit names the slot, so a pong answers exactly the ping it echoes.
            self.pings[i].nonce = (self.pings[i].nonce.wrapping_add(2) & !1) | i as u64;
            self.pings[i].sent = Some(now);
            // Unaddressed: whoever answers at this address says who it is.
            push(
                out,
                Effect::Send {
                    to: To::Slot(i),
                    dest: None,
                    msg: Dgram::Ping {
                        nonce: self.pings[i].nonce,
                    },
                    needs: None,
                },
            );
        }
    }

    fn reports(&mut self, now: Nanos, out: &mut Effects) {
        if now < self.next_report {
            return;
        }
        self.next_report = now.plus(self.set.report_interval);
        let report = Dgram::Report(self.core.report(now));
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

    fn pong(&mut self, now: Nanos, env: Envelope, nonce: u64, out: &mut Effects) {
        let i = (nonce & 1) as usize;
        if env.from.role == Role::Witness {
            return;
        }
        let Some(sent) = self.pings[i].sent.filter(|_| self.pings[i].nonce == nonce) else {
            return;
        };
        self.pings[i].sent = None;
        self.pings[i].answered += 1;
        let before = self.hosts.primary_slot();
        self.hosts.heard(i, env.from, Epoch(env.epoch));
        if self.hosts.primary_slot() != before {
            let now_at = match self.hosts.primary_slot() {
                Some(s) => format!("slot {s}"),
                None => "nowhere (both daemons answer as standbys)".to_string(),
            };
            log::info!(
                "{}the primary's host is now {now_at} (the daemon at slot {i} answers as {:?} in epoch {})",
                self.tag,
                env.from.role,
                env.epoch
            );
        }
        let target = self.slot_target(i);
        self.probe(now, target, ProbeClass::Ok, now.since(sent), "pong", out);
    }

    // Read-only views for status.

    /// The core.
    pub fn core(&self) -> &WitnessCore {
        &self.core
    }

    /// Which configured address hosts the primary.
    pub fn hosts(&self) -> &HostRoles {
        &self.hosts
    }

    /// Pings answered and missed, per slot.
    pub fn pings(&self) -> [(u64, u64); 2] {
        [
            (self.pings[0].answered, self.pings[0].missed),
            (self.pings[1].answered, self.pings[1].missed),
        ]
    }

    /// Whether the standby's operator paused automatic takeovers.
    pub fn maintenance(&self, now: Nanos) -> bool {
        self.maintenance_until.is_some_and(|u| now < u)
    }

    /// The rollback guard the node knows to be on disk.
    pub fn on_disk(&self) -> Persisted {
        self.on_disk
    }

    /// The counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// What it observed, for metrics.
    pub fn observed(&self) -> &Observed {
        &self.observed
    }

    /// The epoch its datagrams carry.
    pub fn epoch(&self) -> Epoch {
        self.core.epoch_seen()
    }
}

fn push(out: &mut Effects, e: Effect) {
    if out.push(e).is_err() {
        log::error!("witness node: more than {MAX_EFFECTS} effects in one step (dropped one)");
        debug_assert!(false, "more than {MAX_EFFECTS} effects in one step");
    }
}

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;
