//! The witness's decision core: what it sees of the application, and the leases and votes it grants.
//!
//! A witness holds at most one grant at a time, to one epoch: a lease to the primary of epoch `e`,
//! or a takeover vote, which is a lease to the epoch `e + 1` the standby would start. It grants to a
//! different epoch only after the current grant has expired plus the drift margin, so it never
//! leases to the primary and votes for a takeover at overlapping times (rule 3). After voting for
//! epoch `E` it promises to lease nothing older than `E` (a rollback guard), until the standby
//! withdraws that query (the vote itself still runs its course) or epoch `E` shows up. Restarted, it grants nothing until the longest lease
//! anyone could hold from its previous incarnation has run out.
//!
//! It votes for a takeover only if its own probes say the primary's application does not answer and
//! the primary daemon does not answer either (if the daemon answers, the guest itself failed and
//! the replica is the same guest: F5), and the standby daemon answers (a witness that hears neither
//! daemon learns more of its own paths than of the primary). So does a switchover vote.
//!
//! A lossy path is not a hung guest (rule 6). Besides the last results, the witness keeps the
//! share of probes answered over `rate-window`, per target. The application answering fewer than
//! `gray-below` percent while the primary daemon misses pings too (below `lossy-below`: the
//! path to that host is lossy) and the standby daemon answers cleanly (at least `clean-above`)
//! is [`AppVerdict::Lossy`]: a switchover candidate, never a takeover. An application that
//! answers nobody while its daemon answers everybody stays a guest failure.
//!
//! A witness's own stall is no evidence. When its daemon reports that its loop did not run for a
//! while ([`Input::Stalled`]: SIGSTOP, a paused VM, a starved CPU), failures of probes that were
//! running during the stall are discarded (they timed out because nobody looked), the failures
//! counted before it are forgotten, and silence is measured from the stall's end: the full
//! `app_down_after` and `app_down_failures` must be seen again, and the primary daemon must be
//! seen unreachable again (failed twice or silent for `host_fresh`), before it can say `Down`.

use core::time::Duration;

use super::epoch::{compare, EpochOrder};
use super::proto::{
    AppVerdict, LeaseReply, LeaseRequest, ProbeClass, ProbeTarget, ProtectedNotice, Rates,
    RefuseReason, Verdict, Vote, VoteKind, VoteRequest, Withdraw, WitnessReport, WitnessView,
};
use super::rate::RateWindow;
use super::{elapsed, emit, later, nanos_of, Actions, Config, Epoch, Nanos, QueryId, WitnessId};

/// An input to the witness core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// A probe finished with this result.
    Probe {
        /// What was probed.
        target: ProbeTarget,
        /// What it got.
        class: ProbeClass,
        /// How long it ran (it started at `now - took`); a failure of a probe that started before
        /// the end of the last stall is discarded.
        took: Duration,
    },
    /// A daemon's ping given up at `timed_out_at` was answered late: the path to that host
    /// delivered it, so the daemon was alive (F10 with delay: a slow path is not a down host).
    /// The success rate counts it; freshness counts it as heard at `timed_out_at`, as an answer
    /// in time is heard at most the probe timeout after its ping; if it was the last failure
    /// seen, the failures are taken back. For the rate window, the host's silence must then
    /// last `host-fresh` plus the most an answer was late before it counts as down.
    Delivered {
        /// The host pinged (`PrimaryHost` or `StandbyHost`).
        target: ProbeTarget,
        /// When the ping was given up.
        timed_out_at: Nanos,
    },
    /// The daemon's own loop did not run from `since` until now: the probes it was running could
    /// not be watched, so what they say is no evidence.
    Stalled {
        /// The last moment the loop is known to have run.
        since: Nanos,
    },
    /// The standby asks for a vote.
    VoteRequest(VoteRequest),
    /// The primary asks for a lease.
    LeaseRequest(LeaseRequest),
    /// The standby will not use the votes of a query.
    Withdraw(Withdraw),
    /// The primary is protected again.
    Protected(ProtectedNotice),
    /// Time passed.
    Tick,
}

/// What the witness daemon must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send this vote to the standby that asked.
    Vote(Vote),
    /// Send this reply to the primary that asked.
    LeaseReply(LeaseReply),
}

/// What survives a witness restart, if the daemon stores it (strongly advised): the rollback guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Persisted {
    /// Highest epoch known active.
    pub epoch_seen: Epoch,
    /// Epoch of an outstanding takeover promise.
    pub promised: Option<Epoch>,
    /// The stale-replica mark (rule 5): a restart must not forget that it leased the primary
    /// authority beyond the replica.
    pub mark: Option<StaleMark>,
}

/// Rule 5: this witness leased the primary of `epoch` authority while the replica was at
/// `after`; the grants it gave were asked for with the primary at checkpoint `upto` at most.
/// Only a protected notice acknowledging a checkpoint beyond `upto` clears it: such a notice
/// was sent after every request this witness granted (checkpoint numbers never go back), so it
/// covers all output released under those grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaleMark {
    /// The primary's epoch.
    pub epoch: Epoch,
    /// The replica's last acknowledged checkpoint when the first grant was given.
    pub after: u64,
    /// The newest checkpoint the primary had captured in any request granted since.
    pub upto: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GrantKind {
    Lease,
    Vote,
}

#[derive(Debug, Clone, Copy)]
struct Grant {
    epoch: Epoch,
    kind: GrantKind,
    free_at: Nanos,
}

#[derive(Debug, Clone, Copy)]
struct Promise {
    epoch: Epoch,
    query: Option<QueryId>,
}

#[derive(Debug, Clone, Copy, Default)]
struct TargetView {
    last_ok: Option<Nanos>,
    /// When the newest answered probe started: a probe started before it that fails later (the
    /// daemons' pings overlap) says nothing new of the target.
    ok_started: Option<Nanos>,
    last: Option<(Nanos, ProbeClass)>,
    fails: u32,
    /// The last late answer, and the most any answer was late over the rate window until then.
    late: Option<(Nanos, Duration)>,
    /// When the first of the failures in a row was seen.
    failing_since: Option<Nanos>,
}

/// The witness core.
#[derive(Debug, Clone)]
pub struct WitnessCore {
    cfg: Config,
    id: WitnessId,
    /// Evidence counts from here: the start, or the end of the last stall of the daemon's loop.
    fresh_from: Nanos,
    stalls: u64,
    discarded: u64,
    quiet_until: Nanos,
    epoch_seen: Epoch,
    promise: Option<Promise>,
    grant: Option<Grant>,
    mark: Option<StaleMark>,
    views: [TargetView; 3],
    /// Share of probes answered over `rate_window`, per target (the gray-path evidence).
    rates: [RateWindow; 3],
}

impl WitnessCore {
    /// A witness that may have run before (the safe default): it grants nothing until the longest
    /// lease of an earlier incarnation has run out. `saved` restores the rollback guard.
    pub fn new(cfg: Config, id: WitnessId, now: Nanos, saved: Option<Persisted>) -> WitnessCore {
        let quiet = cfg.lease.grantor_free_at(now, cfg.lease.max_duration);
        let mut w = WitnessCore::first_boot(cfg, id, now);
        w.quiet_until = quiet;
        if let Some(p) = saved {
            w.epoch_seen = p.epoch_seen.max(Epoch::FIRST);
            w.promise = p.promised.map(|epoch| Promise { epoch, query: None });
            w.mark = p.mark.filter(|m| m.epoch >= w.epoch_seen);
        }
        w
    }

    /// A witness that cannot have granted anything before (cluster bootstrap, simulator start).
    pub fn first_boot(cfg: Config, id: WitnessId, now: Nanos) -> WitnessCore {
        WitnessCore {
            id,
            fresh_from: now,
            stalls: 0,
            discarded: 0,
            quiet_until: now,
            epoch_seen: Epoch::FIRST,
            promise: None,
            grant: None,
            mark: None,
            views: [TargetView::default(); 3],
            rates: core::array::from_fn(|_| RateWindow::new(cfg.rate_window)),
            cfg,
        }
    }

    /// What to store so a restart keeps the rollback guard.
    pub fn persisted(&self) -> Persisted {
        Persisted {
            epoch_seen: self.epoch_seen,
            promised: self.promise.map(|p| p.epoch),
            mark: self.mark,
        }
    }

    /// The stale-replica mark, if this witness holds one (rule 5).
    pub fn mark(&self) -> Option<StaleMark> {
        self.mark
    }

    /// This witness's id.
    pub fn id(&self) -> WitnessId {
        self.id
    }

    /// Highest epoch known active.
    pub fn epoch_seen(&self) -> Epoch {
        self.epoch_seen
    }

    /// The epoch of the current grant (lease or vote) and when this witness is free of it.
    pub fn grant(&self) -> Option<(Epoch, bool, Nanos)> {
        self.grant
            .map(|g| (g.epoch, g.kind == GrantKind::Vote, g.free_at))
    }

    /// One input at `now`.
    pub fn step(&mut self, now: Nanos, input: Input) -> Actions<Action> {
        let mut out = Actions::new();
        match input {
            Input::Probe {
                target,
                class,
                took,
            } => self.probe(now, target, class, took),
            Input::Delivered {
                target,
                timed_out_at,
            } => self.delivered(now, target, timed_out_at),
            Input::Stalled { since } => self.stalled(since, now),
            Input::VoteRequest(r) => emit(&mut out, Action::Vote(self.vote(now, r))),
            Input::LeaseRequest(r) => emit(&mut out, Action::LeaseReply(self.lease(now, r))),
            Input::Withdraw(w) => {
                if let Some(p) = self.promise {
                    // Only the promise goes: the vote itself stays held until it expires, so a lease
                    // and a vote never overlap in time, withdrawn or not.
                    if p.epoch == w.epoch && p.query == Some(w.query) {
                        self.promise = None;
                    }
                }
            }
            Input::Protected(n) => {
                self.learn_epoch(n.epoch);
                if let Some(m) = self.mark {
                    if m.epoch == n.epoch && n.acked > m.upto {
                        self.mark = None;
                    }
                }
            }
            Input::Tick => {
                if let Some(g) = self.grant {
                    if now >= g.free_at {
                        self.grant = None;
                    }
                }
            }
        }
        out
    }

    fn probe(&mut self, now: Nanos, target: ProbeTarget, class: ProbeClass, took: Duration) {
        let started = Nanos(now.0.saturating_sub(nanos_of(took)));
        if class != ProbeClass::Ok && started < self.fresh_from {
            // It ran while our own loop stalled: it may have failed only because nobody looked.
            // (An answer is evidence whenever it came.)
            self.discarded = self.discarded.saturating_add(1);
            return;
        }
        self.rates[target as usize].record(now, class == ProbeClass::Ok);
        let v = &mut self.views[target as usize];
        if class != ProbeClass::Ok && v.ok_started.is_some_and(|s| started < s) {
            // Older than a probe answered since (pings overlap): a loss for the rates, but no
            // failure in a row.
            return;
        }
        v.last = Some((now, class));
        if class == ProbeClass::Ok {
            v.last_ok = Some(now);
            v.ok_started = Some(v.ok_started.map_or(started, |s| s.max(started)));
            v.fails = 0;
            v.failing_since = None;
        } else {
            v.fails = v.fails.saturating_add(1);
            v.failing_since.get_or_insert(now);
        }
    }

    /// Our own loop stalled from `since` to `now`: start counting evidence again.
    fn stalled(&mut self, since: Nanos, now: Nanos) {
        if now <= since {
            return;
        }
        self.stalls = self.stalls.saturating_add(1);
        self.fresh_from = self.fresh_from.max(now);
        for v in &mut self.views {
            v.fails = 0;
            v.failing_since = None;
            // Answers read late because nobody looked say nothing of the path.
            v.late = None;
        }
        // Rates over the stall would count probes nobody watched: start the window again.
        for r in &mut self.rates {
            r.clear();
        }
    }

    /// A ping given up at `timed_out_at` was answered late, at `now` (see
    /// [`Input::Delivered`]).
    fn delivered(&mut self, now: Nanos, target: ProbeTarget, timed_out_at: Nanos) {
        if target == ProbeTarget::PrimaryApp || timed_out_at < self.fresh_from {
            return;
        }
        self.rates[target as usize].amend(timed_out_at);
        let slack = self.slack(now, target);
        let v = &mut self.views[target as usize];
        v.last_ok = v.last_ok.max(Some(timed_out_at));
        v.late = Some((now, slack.max(elapsed(now, timed_out_at))));
        // The last failure was this ping's: the daemon answered after every earlier one.
        if v.last == Some((timed_out_at, ProbeClass::Timeout)) {
            v.fails = 0;
            v.failing_since = None;
        }
    }

    /// How late past the probe timeout the host's answers came over the rate window: a path
    /// that slow is given that much longer before its silence says the host is down, and its
    /// timeouts alone say nothing (the answers may be on their way).
    fn slack(&self, now: Nanos, target: ProbeTarget) -> Duration {
        match self.views[target as usize].late {
            Some((at, by)) if elapsed(now, at) <= self.cfg.rate_window => by,
            _ => Duration::ZERO,
        }
    }

    /// Stalls of the daemon's loop reported so far, and probe failures discarded because they
    /// overlapped one.
    pub fn stalls(&self) -> (u64, u64) {
        (self.stalls, self.discarded)
    }

    /// What this witness sees now.
    pub fn view(&self, now: Nanos) -> WitnessView {
        WitnessView {
            app: self.app(now).0,
            primary_host: self.host_reachable(now, ProbeTarget::PrimaryHost),
            standby_host: self.host_reachable(now, ProbeTarget::StandbyHost),
            rates: self.rates(now),
        }
    }

    /// The periodic report (the daemon sends it every report interval).
    pub fn report(&self, now: Nanos) -> WitnessReport {
        WitnessReport {
            witness: self.id,
            epoch: self.epoch_seen,
            view: self.view(now),
            unprotected_after: self.mark_for(self.epoch_seen),
        }
    }

    fn mark_for(&self, epoch: Epoch) -> Option<u64> {
        self.mark.filter(|m| m.epoch == epoch).map(|m| m.after)
    }

    /// A newer epoch is active: older grants and promises are moot, and the roles behind the probe
    /// targets changed, so the views start again.
    fn learn_epoch(&mut self, e: Epoch) {
        if e > self.epoch_seen {
            self.epoch_seen = e;
            if self.promise.is_some_and(|p| p.epoch <= e) {
                self.promise = None;
            }
            if self.mark.is_some_and(|m| m.epoch < e) {
                self.mark = None;
            }
            self.views = [TargetView::default(); 3];
            for r in &mut self.rates {
                r.clear();
            }
        }
    }

    /// Refusal if another epoch holds a grant, or we are still quiet after a restart.
    fn busy(&self, now: Nanos, epoch: Epoch) -> Option<RefuseReason> {
        if now < self.quiet_until {
            return Some(RefuseReason::Restarting(elapsed(self.quiet_until, now)));
        }
        match self.grant {
            Some(g) if g.epoch != epoch && now < g.free_at => {
                Some(RefuseReason::LeaseActive(elapsed(g.free_at, now)))
            }
            _ => None,
        }
    }

    fn vote(&mut self, now: Nanos, r: VoteRequest) -> Vote {
        let target = r.epoch.next();
        let verdict = self.vote_verdict(now, r, target);
        if verdict.granted() {
            self.promise = Some(Promise {
                epoch: target,
                query: Some(r.query),
            });
            self.grant = Some(Grant {
                epoch: target,
                kind: GrantKind::Vote,
                free_at: self.cfg.lease.grantor_free_at(now, self.cfg.lease.duration),
            });
        }
        Vote {
            witness: self.id,
            query: r.query,
            epoch: self.epoch_seen,
            verdict,
            duration: if verdict.granted() {
                self.cfg.lease.duration
            } else {
                Duration::ZERO
            },
            view: self.view(now),
            unprotected_after: self.mark_for(r.epoch),
        }
    }

    fn vote_verdict(&mut self, now: Nanos, r: VoteRequest, target: Epoch) -> Verdict {
        use RefuseReason as R;
        match compare(self.epoch_seen, r.epoch) {
            EpochOrder::Stale => return Verdict::Refuse(R::StaleEpoch(self.epoch_seen)),
            EpochOrder::Newer => self.learn_epoch(r.epoch),
            EpochOrder::Current => {}
        }
        if let Some(reason) = self.busy(now, target) {
            return Verdict::Refuse(reason);
        }
        if r.kind == VoteKind::Operator {
            // The operator decided (rule 9); the vote is still a lease to the new epoch, given
            // only when no lease to another epoch is out, and promising nothing older.
            return match self.promise {
                Some(p) if p.epoch > target => Verdict::Refuse(R::Promised(p.epoch)),
                _ => Verdict::Grant,
            };
        }
        match self.app(now) {
            (AppVerdict::Unknown, _) => return Verdict::Refuse(R::NoData),
            (AppVerdict::Up, _) => return Verdict::Refuse(R::PrimaryAnswers),
            (AppVerdict::Failing, wait) => return Verdict::Refuse(R::NotYet(wait)),
            (AppVerdict::GuestFailure, _) => return Verdict::Refuse(R::GuestFailure),
            // A gray path is a reason to switch over, never to take over: the primary still
            // answers some of its clients.
            (AppVerdict::Lossy, _) if r.kind == VoteKind::Takeover => {
                return Verdict::Refuse(R::PrimaryAnswers)
            }
            (AppVerdict::Lossy | AppVerdict::Down, _) => {}
        }
        // Either vote needs the standby's daemon answering: one that does not is where clients
        // would go, and a witness that hears neither daemon learns more of its own paths than
        // of the primary (its relays or its network stalled, not host A).
        if !self.host_reachable(now, ProbeTarget::StandbyHost) {
            return Verdict::Refuse(R::StandbyUnreachable);
        }
        if let Some(p) = self.promise {
            if p.epoch > target {
                return Verdict::Refuse(R::Promised(p.epoch));
            }
        }
        Verdict::Grant
    }

    fn lease(&mut self, now: Nanos, r: LeaseRequest) -> LeaseReply {
        let verdict = self.lease_verdict(now, r);
        if verdict.granted() {
            self.grant = Some(Grant {
                epoch: r.epoch,
                kind: GrantKind::Lease,
                free_at: self.cfg.lease.grantor_free_at(now, self.cfg.lease.duration),
            });
            // Rule 5: the primary may release output the replica (at `last_acked`) does not have,
            // of checkpoints after `last_sent`.
            let upto = r.last_sent.max(r.last_acked);
            self.mark = Some(match self.mark.filter(|m| m.epoch == r.epoch) {
                Some(m) => StaleMark {
                    upto: m.upto.max(upto),
                    ..m
                },
                None => StaleMark {
                    epoch: r.epoch,
                    after: r.last_acked,
                    upto,
                },
            });
        }
        LeaseReply {
            witness: self.id,
            req: r.req,
            epoch: self.epoch_seen,
            verdict,
            duration: if verdict.granted() {
                self.cfg.lease.duration
            } else {
                Duration::ZERO
            },
        }
    }

    fn lease_verdict(&mut self, now: Nanos, r: LeaseRequest) -> Verdict {
        if compare(self.epoch_seen, r.epoch) == EpochOrder::Stale {
            return Verdict::Refuse(RefuseReason::StaleEpoch(self.epoch_seen));
        }
        if let Some(p) = self.promise {
            if r.epoch < p.epoch {
                return Verdict::Refuse(RefuseReason::Promised(p.epoch));
            }
        }
        // A primary of a newer epoch exists: it was activated.
        self.learn_epoch(r.epoch);
        match self.busy(now, r.epoch) {
            Some(reason) => Verdict::Refuse(reason),
            None => Verdict::Grant,
        }
    }

    /// When this witness next needs a tick (its grant expiring), if ever.
    pub fn next_deadline(&self) -> Option<Nanos> {
        self.grant.map(|g| g.free_at)
    }

    /// How long after `now` the current grant keeps this witness busy (zero if free).
    pub fn busy_for(&self, now: Nanos) -> Duration {
        self.grant
            .map_or(Duration::ZERO, |g| elapsed(g.free_at, now))
            .max(elapsed(self.quiet_until, now))
    }
}

#[path = "witness_view.rs"]
mod view;

#[cfg(test)]
#[path = "witness_tests.rs"]
mod tests;
