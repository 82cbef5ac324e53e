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
//! the replica is the same guest: F5). A switchover vote also needs the standby daemon reachable.
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
use super::{elapsed, emit, nanos_of, Actions, Config, Epoch, Nanos, QueryId, WitnessId};

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
    last: Option<(Nanos, ProbeClass)>,
    fails: u32,
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
        v.last = Some((now, class));
        if class == ProbeClass::Ok {
            v.last_ok = Some(now);
            v.fails = 0;
        } else {
            v.fails = v.fails.saturating_add(1);
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
        }
        // Rates over the stall would count probes nobody watched: start the window again.
        for r in &mut self.rates {
            r.clear();
        }
    }

    /// Reachable: answered within `host_fresh`, and not failed `app_down_failures` times since.
    fn host_reachable(&self, now: Nanos, target: ProbeTarget) -> bool {
        let v = &self.views[target as usize];
        v.fails < self.cfg.app_down_failures
            && v.last_ok
                .is_some_and(|t| elapsed(now, t) <= self.cfg.host_fresh)
    }

    /// How long until a host that is not reachable counts as unreachable on fresh evidence: zero
    /// once it failed `app_down_failures` times, or stayed silent for `host_fresh`, since the
    /// evidence started (the start, or the end of our last stall).
    fn host_unreachable_in(&self, now: Nanos, target: ProbeTarget) -> Duration {
        let v = &self.views[target as usize];
        if v.fails >= self.cfg.app_down_failures {
            return Duration::ZERO;
        }
        let heard = v.last_ok.unwrap_or(self.fresh_from).max(self.fresh_from);
        self.cfg.host_fresh.saturating_sub(elapsed(now, heard))
    }

    /// The success rates over the rate window, percent.
    pub fn rates(&self, now: Nanos) -> Rates {
        let r = |t: ProbeTarget| self.rates[t as usize].rate(now);
        Rates {
            app: r(ProbeTarget::PrimaryApp),
            primary: r(ProbeTarget::PrimaryHost),
            standby: r(ProbeTarget::StandbyHost),
        }
    }

    /// A gray path (rule 6): the application answers only a fraction of probes, the path to its
    /// host is lossy (the primary daemon misses pings too), and the standby's host answers
    /// cleanly. A guest that answers nobody while its daemon answers everybody is not this
    /// (the daemon's path is clean), nor is a host that answers nothing at all (that is down).
    fn gray(&self, now: Nanos) -> bool {
        let r = self.rates(now);
        let (Some(app), Some(primary), Some(standby)) = (r.app, r.primary, r.standby) else {
            return false;
        };
        app < self.cfg.gray_below
            && primary < self.cfg.lossy_below
            && standby >= self.cfg.clean_above
            && (app > 0 || primary > 0)
    }

    /// The application verdict, and for `Failing` how long until it could become `Down`. What
    /// the last probes say, unless the rates say the path is gray (and the last probes do not
    /// say the host is down).
    fn app(&self, now: Nanos) -> (AppVerdict, Duration) {
        let base = self.app_now(now);
        match base.0 {
            AppVerdict::Up | AppVerdict::Failing | AppVerdict::GuestFailure if self.gray(now) => {
                (AppVerdict::Lossy, Duration::ZERO)
            }
            _ => base,
        }
    }

    /// The application verdict from the last probes alone.
    fn app_now(&self, now: Nanos) -> (AppVerdict, Duration) {
        let v = &self.views[ProbeTarget::PrimaryApp as usize];
        let Some((_, class)) = v.last else {
            return (AppVerdict::Unknown, Duration::ZERO);
        };
        if class == ProbeClass::Ok {
            return (AppVerdict::Up, Duration::ZERO);
        }
        let heard = v.last_ok.unwrap_or(self.fresh_from).max(self.fresh_from);
        let silent = elapsed(now, heard);
        if v.fails < self.cfg.app_down_failures || silent < self.cfg.app_down_after {
            let wait = self.cfg.app_down_after.saturating_sub(silent);
            return (AppVerdict::Failing, wait.max(Duration::from_millis(1)));
        }
        if self.host_reachable(now, ProbeTarget::PrimaryHost) {
            return (AppVerdict::GuestFailure, Duration::ZERO);
        }
        // Not seen answering, but not seen failing since our last stall either: wait to know.
        let wait = self.host_unreachable_in(now, ProbeTarget::PrimaryHost);
        if wait > Duration::ZERO {
            return (AppVerdict::Failing, wait.max(Duration::from_millis(1)));
        }
        (AppVerdict::Down, Duration::ZERO)
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
        if r.kind == VoteKind::Switchover && !self.host_reachable(now, ProbeTarget::StandbyHost) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    fn ms(n: u64) -> Nanos {
        Nanos::from_millis(n)
    }

    fn cfg() -> Config {
        Config::default()
    }

    fn probe(w: &mut WitnessCore, t: u64, target: ProbeTarget, class: ProbeClass) {
        probe_took(w, t, target, class, 0);
    }

    fn probe_took(w: &mut WitnessCore, t: u64, target: ProbeTarget, class: ProbeClass, took: u64) {
        w.step(
            ms(t),
            Input::Probe {
                target,
                class,
                took: Duration::from_millis(took),
            },
        );
    }

    fn vote(w: &mut WitnessCore, t: u64, epoch: u64, query: u32, kind: VoteKind) -> Vote {
        let a = w.step(
            ms(t),
            Input::VoteRequest(VoteRequest {
                epoch: Epoch(epoch),
                query,
                kind,
            }),
        );
        match a.first() {
            Some(Action::Vote(v)) => *v,
            other => panic!("expected a vote, got {other:?}"),
        }
    }

    fn lease(w: &mut WitnessCore, t: u64, epoch: u64, req: u32, last_acked: u64) -> LeaseReply {
        lease_sent(w, t, epoch, req, last_acked, last_acked)
    }

    fn lease_sent(
        w: &mut WitnessCore,
        t: u64,
        epoch: u64,
        req: u32,
        last_acked: u64,
        last_sent: u64,
    ) -> LeaseReply {
        let a = w.step(
            ms(t),
            Input::LeaseRequest(LeaseRequest {
                epoch: Epoch(epoch),
                req,
                last_acked,
                last_sent,
            }),
        );
        match a.first() {
            Some(Action::LeaseReply(r)) => *r,
            other => panic!("expected a lease reply, got {other:?}"),
        }
    }

    /// Primary host and app silent from `from` until `to` (probes every 10 ms), standby fine.
    fn primary_dead(w: &mut WitnessCore, from: u64, to: u64) {
        for t in (from..to).step_by(10) {
            probe(w, t, ProbeTarget::PrimaryApp, ProbeClass::Timeout);
            probe(w, t, ProbeTarget::PrimaryHost, ProbeClass::Timeout);
            probe(w, t, ProbeTarget::StandbyHost, ProbeClass::Ok);
        }
    }

    #[test]
    fn votes_only_when_the_primary_is_down_long_enough() {
        let mut w = WitnessCore::first_boot(cfg(), 1, ms(0));
        let v = vote(&mut w, 1, 1, 1, VoteKind::Takeover);
        assert_eq!(v.verdict, Verdict::Refuse(RefuseReason::NoData));
        probe(&mut w, 10, ProbeTarget::PrimaryApp, ProbeClass::Ok);
        probe(&mut w, 10, ProbeTarget::PrimaryHost, ProbeClass::Ok);
        assert_eq!(
            vote(&mut w, 11, 1, 2, VoteKind::Takeover).verdict,
            Verdict::Refuse(RefuseReason::PrimaryAnswers)
        );
        primary_dead(&mut w, 20, 50);
        assert!(matches!(
            vote(&mut w, 50, 1, 3, VoteKind::Takeover).verdict,
            Verdict::Refuse(RefuseReason::NotYet(_))
        ));
        primary_dead(&mut w, 50, 80);
        let v = vote(&mut w, 80, 1, 4, VoteKind::Takeover);
        assert_eq!(v.verdict, Verdict::Grant);
        assert_eq!(v.duration, Duration::from_secs(2));
        assert_eq!(v.view.app, AppVerdict::Down);
        // Promised epoch 2: the old primary gets no lease, even after the vote expired.
        assert_eq!(
            lease(&mut w, 5_000, 1, 1, 0).verdict,
            Verdict::Refuse(RefuseReason::Promised(Epoch(2)))
        );
        // The new primary renews its vote as a lease; the epoch is now known active.
        assert_eq!(lease(&mut w, 100, 2, 1, 0).verdict, Verdict::Grant);
        assert_eq!(w.epoch_seen(), Epoch(2));
        assert_eq!(
            lease(&mut w, 200, 1, 2, 0).verdict,
            Verdict::Refuse(RefuseReason::StaleEpoch(Epoch(2)))
        );
    }

    /// Issue 10 item 7: the witness's own loop stalls for a second while the primary is fine;
    /// the probes it was running "time out" the moment it runs again. They are no evidence.
    #[test]
    fn no_vote_on_probes_that_timed_out_during_its_own_stall() {
        let mut w = WitnessCore::first_boot(cfg(), 1, ms(0));
        for t in (0..=100).step_by(10) {
            probe(&mut w, t, ProbeTarget::PrimaryApp, ProbeClass::Ok);
            probe(&mut w, t, ProbeTarget::PrimaryHost, ProbeClass::Ok);
            probe(&mut w, t, ProbeTarget::StandbyHost, ProbeClass::Ok);
        }
        w.step(ms(1_100), Input::Stalled { since: ms(100) });
        // Every probe in flight since 100 ms times out at once, and a late one too.
        for target in ProbeTarget::ALL.iter().copied() {
            probe_took(&mut w, 1_100, target, ProbeClass::Timeout, 1_000);
        }
        probe_took(
            &mut w,
            1_101,
            ProbeTarget::PrimaryApp,
            ProbeClass::Timeout,
            30,
        );
        assert_eq!(w.stalls(), (1, 4));
        assert_ne!(w.view(ms(1_101)).app, AppVerdict::Down);
        let v = vote(&mut w, 1_101, 1, 1, VoteKind::Takeover);
        assert_eq!(v.verdict, Verdict::Refuse(RefuseReason::PrimaryAnswers));
        // Fresh probes answer: still up.
        probe(&mut w, 1_120, ProbeTarget::PrimaryApp, ProbeClass::Ok);
        assert_eq!(w.view(ms(1_120)).app, AppVerdict::Up);
    }

    /// The primary really was down before the stall: the evidence must be seen again, counted
    /// from the stall's end (the full `app_down_after` and `app_down_failures`, and the primary
    /// daemon failing or silent again), before the witness votes.
    #[test]
    fn after_a_stall_a_vote_needs_fresh_evidence() {
        let mut w = WitnessCore::first_boot(cfg(), 1, ms(0));
        probe(&mut w, 0, ProbeTarget::PrimaryApp, ProbeClass::Ok);
        primary_dead(&mut w, 10, 200);
        assert_eq!(w.view(ms(200)).app, AppVerdict::Down);
        w.step(ms(1_200), Input::Stalled { since: ms(200) });
        assert!(matches!(
            vote(&mut w, 1_200, 1, 1, VoteKind::Takeover).verdict,
            Verdict::Refuse(RefuseReason::NotYet(_))
        ));
        // The runs in flight during the stall are discarded; fresh ones start at 1200 ms and
        // fail (a refused connection, at once).
        probe_took(
            &mut w,
            1_200,
            ProbeTarget::PrimaryApp,
            ProbeClass::Timeout,
            1_000,
        );
        probe_took(
            &mut w,
            1_200,
            ProbeTarget::PrimaryHost,
            ProbeClass::Timeout,
            1_000,
        );
        for t in [1_210, 1_220] {
            probe(&mut w, t, ProbeTarget::PrimaryApp, ProbeClass::Refused);
        }
        // Two fresh failures, but only 20 ms of silence since the stall (60 ms needed).
        assert_eq!(
            vote(&mut w, 1_220, 1, 2, VoteKind::Takeover).verdict,
            Verdict::Refuse(RefuseReason::NotYet(Duration::from_millis(40)))
        );
        for t in [1_230, 1_240, 1_250, 1_260] {
            probe(&mut w, t, ProbeTarget::PrimaryApp, ProbeClass::Refused);
        }
        // 60 ms of fresh silence and failures; the primary daemon was not heard either, but it
        // has not failed twice nor been silent for `host_fresh` (100 ms) since the stall.
        assert_eq!(
            vote(&mut w, 1_260, 1, 3, VoteKind::Takeover).verdict,
            Verdict::Refuse(RefuseReason::NotYet(Duration::from_millis(40)))
        );
        assert_eq!(w.view(ms(1_260)).app, AppVerdict::Failing);
        probe(&mut w, 1_270, ProbeTarget::PrimaryHost, ProbeClass::Timeout);
        probe(&mut w, 1_280, ProbeTarget::PrimaryHost, ProbeClass::Timeout);
        assert_eq!(
            vote(&mut w, 1_280, 1, 4, VoteKind::Takeover).verdict,
            Verdict::Grant
        );
    }

    /// A silent primary daemon counts as unreachable after `host_fresh` since the stall, even
    /// without failed pings (they may all be in flight).
    #[test]
    fn after_a_stall_a_silent_host_is_unreachable_after_host_fresh() {
        let mut w = WitnessCore::first_boot(cfg(), 1, ms(0));
        primary_dead(&mut w, 0, 200);
        w.step(ms(1_000), Input::Stalled { since: ms(200) });
        for t in (1_000..=1_100).step_by(10) {
            probe(&mut w, t, ProbeTarget::PrimaryApp, ProbeClass::Refused);
        }
        assert_eq!(w.view(ms(1_099)).app, AppVerdict::Failing);
        assert_eq!(w.view(ms(1_100)).app, AppVerdict::Down);
        assert_eq!(
            vote(&mut w, 1_100, 1, 1, VoteKind::Takeover).verdict,
            Verdict::Grant
        );
    }

    /// Issue 12: probes over a lossy path, seeded. At 50% and 80% loss each way the rates say
    /// gray (a switchover vote, never a takeover vote) within the rate window, whatever the
    /// last probe said; at 20% never, over a minute.
    #[test]
    fn a_lossy_path_is_told_from_a_hung_guest_by_rates() {
        for (loss, gray) in [(20u64, false), (50, true), (80, true)] {
            for seed in 0..5u64 {
                let mut rng = SplitMix64::new(seed);
                let mut w = WitnessCore::first_boot(cfg(), 1, ms(0));
                let mut ever_lossy = false;
                let mut lossy_after_window = true;
                for t in (0..60_000u64).step_by(20) {
                    // A round trip survives (1 - loss)^2.
                    let pass =
                        |rng: &mut SplitMix64| rng.below(100) >= loss && rng.below(100) >= loss;
                    let class = |ok| {
                        if ok {
                            ProbeClass::Ok
                        } else {
                            ProbeClass::Timeout
                        }
                    };
                    let app = pass(&mut rng);
                    let host = pass(&mut rng);
                    probe(&mut w, t, ProbeTarget::PrimaryApp, class(app));
                    probe(&mut w, t, ProbeTarget::PrimaryHost, class(host));
                    probe(&mut w, t, ProbeTarget::StandbyHost, ProbeClass::Ok);
                    let lossy = w.view(ms(t)).app == AppVerdict::Lossy;
                    ever_lossy |= lossy;
                    if t >= 2_500 && !lossy && w.view(ms(t)).app != AppVerdict::Down {
                        lossy_after_window = false;
                    }
                }
                assert_eq!(ever_lossy, gray, "{loss}% seed {seed}");
                if gray {
                    assert!(lossy_after_window, "{loss}% seed {seed}: gray or down");
                    let r = w.rates(ms(59_980));
                    assert!(r.app.is_some_and(|a| a < 40) && r.standby == Some(100));
                    // The last probes may say down at that moment (two lost pings in a row):
                    // then a takeover vote is what it always was.
                    if w.view(ms(59_980)).app == AppVerdict::Lossy {
                        assert_eq!(
                            vote(&mut w, 59_980, 1, 1, VoteKind::Takeover).verdict,
                            Verdict::Refuse(RefuseReason::PrimaryAnswers),
                            "{loss}% seed {seed}"
                        );
                    }
                    assert_eq!(
                        vote(&mut w, 59_980, 1, 2, VoteKind::Switchover).verdict,
                        Verdict::Grant,
                        "{loss}% seed {seed}"
                    );
                }
            }
        }
    }

    #[test]
    fn guest_failure_is_no_reason_to_fail_over() {
        let mut w = WitnessCore::first_boot(cfg(), 1, ms(0));
        for t in (0..200).step_by(10) {
            probe(&mut w, t, ProbeTarget::PrimaryApp, ProbeClass::AppError);
            probe(&mut w, t, ProbeTarget::PrimaryHost, ProbeClass::Ok);
            probe(&mut w, t, ProbeTarget::StandbyHost, ProbeClass::Ok);
        }
        assert_eq!(w.view(ms(200)).app, AppVerdict::GuestFailure);
        for kind in [VoteKind::Takeover, VoteKind::Switchover] {
            assert_eq!(
                vote(&mut w, 200, 1, 1, kind).verdict,
                Verdict::Refuse(RefuseReason::GuestFailure)
            );
        }
    }

    #[test]
    fn switchover_needs_the_standby_side() {
        let mut w = WitnessCore::first_boot(cfg(), 1, ms(0));
        for t in (0..200).step_by(10) {
            probe(&mut w, t, ProbeTarget::PrimaryApp, ProbeClass::Timeout);
            probe(&mut w, t, ProbeTarget::PrimaryHost, ProbeClass::Timeout);
            probe(&mut w, t, ProbeTarget::StandbyHost, ProbeClass::Timeout);
        }
        assert_eq!(
            vote(&mut w, 200, 1, 1, VoteKind::Switchover).verdict,
            Verdict::Refuse(RefuseReason::StandbyUnreachable)
        );
        assert_eq!(
            vote(&mut w, 200, 1, 2, VoteKind::Takeover).verdict,
            Verdict::Grant
        );
    }

    #[test]
    fn no_vote_while_a_lease_is_out_and_mark_reported() {
        let mut w = WitnessCore::first_boot(cfg(), 1, ms(0));
        assert_eq!(lease(&mut w, 0, 1, 1, 41).verdict, Verdict::Grant);
        primary_dead(&mut w, 0, 3_000);
        let v = vote(&mut w, 1_000, 1, 1, VoteKind::Takeover);
        assert_eq!(
            v.verdict,
            Verdict::Refuse(RefuseReason::LeaseActive(Duration::from_millis(1_025)))
        );
        assert_eq!(v.unprotected_after, Some(41));
        let v = vote(&mut w, 2_025, 1, 2, VoteKind::Takeover);
        assert_eq!(v.verdict, Verdict::Grant);
        assert_eq!(
            v.unprotected_after,
            Some(41),
            "stale replica reported (rule 5)"
        );
        assert_eq!(w.report(ms(2_025)).unprotected_after, Some(41));
        // Withdrawn: the promise goes, the vote runs its course, then the primary may lease again.
        w.step(
            ms(2_030),
            Input::Withdraw(Withdraw {
                epoch: Epoch(2),
                query: 1,
            }),
        );
        assert_eq!(
            lease(&mut w, 2_030, 1, 1, 41).verdict,
            Verdict::Refuse(RefuseReason::Promised(Epoch(2))),
            "wrong query"
        );
        w.step(
            ms(2_030),
            Input::Withdraw(Withdraw {
                epoch: Epoch(2),
                query: 2,
            }),
        );
        assert!(matches!(
            lease(&mut w, 2_031, 1, 1, 41).verdict,
            Verdict::Refuse(RefuseReason::LeaseActive(_))
        ));
        assert_eq!(lease(&mut w, 4_050, 1, 1, 41).verdict, Verdict::Grant);
        // Protected again: the mark is cleared only by a newer ack.
        w.step(
            ms(4_060),
            Input::Protected(ProtectedNotice {
                epoch: Epoch(1),
                acked: 41,
            }),
        );
        assert_eq!(w.report(ms(4_060)).unprotected_after, Some(41));
        w.step(
            ms(4_060),
            Input::Protected(ProtectedNotice {
                epoch: Epoch(1),
                acked: 42,
            }),
        );
        assert_eq!(w.report(ms(4_060)).unprotected_after, None);
    }

    #[test]
    fn restarted_witness_waits_out_the_longest_lease() {
        let mut w = WitnessCore::new(
            cfg(),
            1,
            ms(0),
            Some(Persisted {
                epoch_seen: Epoch(3),
                promised: Some(Epoch(4)),
                mark: None,
            }),
        );
        primary_dead(&mut w, 0, 2_100);
        assert!(matches!(
            vote(&mut w, 1_000, 3, 1, VoteKind::Takeover).verdict,
            Verdict::Refuse(RefuseReason::Restarting(_))
        ));
        assert!(matches!(
            lease(&mut w, 1_000, 3, 1, 0).verdict,
            Verdict::Refuse(RefuseReason::Promised(Epoch(4)))
        ));
        assert_eq!(
            vote(&mut w, 2_025, 3, 2, VoteKind::Takeover).verdict,
            Verdict::Grant
        );
        assert_eq!(
            vote(&mut w, 2_030, 2, 3, VoteKind::Takeover).verdict,
            Verdict::Refuse(RefuseReason::StaleEpoch(Epoch(3)))
        );
        assert_eq!(
            w.persisted(),
            Persisted {
                epoch_seen: Epoch(3),
                promised: Some(Epoch(4)),
                mark: None,
            }
        );
    }

    /// Rule 3 invariant, for any interleaving of requests: the interval in which a lease granted to
    /// epoch e is valid never overlaps a grant to another epoch (a vote is a grant to e + 1), and a
    /// lease to an older epoch never follows a vote for a newer one unless withdrawn.
    #[test]
    fn grants_to_different_epochs_never_overlap() {
        let c = cfg();
        for seed in 0..300u64 {
            let mut rng = SplitMix64::new(seed);
            let mut w = if seed % 2 == 0 {
                WitnessCore::first_boot(c.clone(), 1, ms(0))
            } else {
                WitnessCore::new(c.clone(), 1, ms(0), None)
            };
            // (epoch, granted_at, duration) of every grant.
            let mut grants: Vec<(Epoch, Nanos, Duration)> = Vec::new();
            let mut t = 0u64;
            let mut query = 0u32;
            for _ in 0..400 {
                t += rng.below(300_000_000);
                let now = Nanos(t);
                let class = if rng.below(3) == 0 {
                    ProbeClass::Ok
                } else {
                    ProbeClass::Timeout
                };
                let target = ProbeTarget::ALL[rng.below(3) as usize];
                let took = Duration::from_nanos(rng.below(100_000_000));
                w.step(
                    now,
                    Input::Probe {
                        target,
                        class,
                        took,
                    },
                );
                if rng.below(20) == 0 {
                    w.step(
                        now,
                        Input::Stalled {
                            since: Nanos(t.saturating_sub(rng.below(2_000_000_000))),
                        },
                    );
                }
                let epoch = Epoch(1 + rng.below(3));
                match rng.below(5) {
                    0 | 1 => {
                        query += 1;
                        let kind = if rng.below(2) == 0 {
                            VoteKind::Takeover
                        } else {
                            VoteKind::Switchover
                        };
                        for a in w.step(now, Input::VoteRequest(VoteRequest { epoch, query, kind }))
                        {
                            if let Action::Vote(v) = a {
                                if v.verdict.granted() {
                                    grants.push((epoch.next(), now, v.duration));
                                }
                            }
                        }
                    }
                    2 | 3 => {
                        for a in w.step(
                            now,
                            Input::LeaseRequest(LeaseRequest {
                                epoch,
                                req: 1,
                                last_acked: 0,
                                last_sent: 0,
                            }),
                        ) {
                            if let Action::LeaseReply(r) = a {
                                if r.verdict.granted() {
                                    grants.push((epoch, now, r.duration));
                                }
                            }
                        }
                    }
                    _ => {
                        w.step(
                            now,
                            Input::Withdraw(Withdraw {
                                epoch: epoch.next(),
                                query: query.saturating_sub(rng.below(2) as u32),
                            }),
                        );
                    }
                }
                w.step(now, Input::Tick);
            }
            // A restarted witness grants nothing during its quiet period.
            if seed % 2 == 1 {
                let quiet = c.lease.grantor_free_at(ms(0), c.lease.max_duration);
                assert!(
                    grants.iter().all(|g| g.1 >= quiet),
                    "seed {seed}: grant while restarting"
                );
            }
            for (i, a) in grants.iter().enumerate() {
                for b in &grants[i + 1..] {
                    if a.0 != b.0 {
                        // b is later than a: b may start only after a's grantor-side end + margin.
                        let free = c.lease.grantor_free_at(a.1, a.2);
                        assert!(
                            b.1 >= free,
                            "seed {seed}: grant to {:?} at {:?} overlaps grant to {:?} at {:?}",
                            b.0,
                            b.1,
                            a.0,
                            a.1
                        );
                    }
                }
            }
        }
    }

    /// Regression (the second automatic failover was refused as stale in 19 of 19 rounds): a
    /// notice sent before a granted request, however late it arrives, must not clear the mark,
    /// and one sent after every granted request must, even long after re-protection.
    #[test]
    fn only_a_notice_beyond_every_granted_request_clears_the_mark() {
        let mut w = WitnessCore::first_boot(cfg(), 1, ms(0));
        // The promoted primary: replica at 5000, captured up to 5000 when it asked.
        assert!(lease_sent(&mut w, 100, 2, 1, 5000, 5000).verdict.granted());
        let m = w.mark().expect("marked");
        assert_eq!((m.epoch, m.after, m.upto), (Epoch(2), 5000, 5000));
        // A renewal after more checkpoints: the mark keeps `after`, raises `upto`.
        assert!(lease_sent(&mut w, 1_100, 2, 2, 5000, 5040)
            .verdict
            .granted());
        assert_eq!(w.mark().map(|m| (m.after, m.upto)), Some((5000, 5040)));
        // A notice from before the renewal (acked 5030 < 5040) arrives late: the mark stays.
        w.step(
            ms(1_200),
            Input::Protected(ProtectedNotice {
                epoch: Epoch(2),
                acked: 5030,
            }),
        );
        assert_eq!(w.report(ms(1_200)).unprotected_after, Some(5000));
        // Equal is not beyond.
        w.step(
            ms(1_300),
            Input::Protected(ProtectedNotice {
                epoch: Epoch(2),
                acked: 5040,
            }),
        );
        assert!(w.mark().is_some());
        // Another epoch's notice says nothing about this mark.
        w.step(
            ms(1_400),
            Input::Protected(ProtectedNotice {
                epoch: Epoch(1),
                acked: 9_999,
            }),
        );
        assert!(w.mark().is_some());
        // A periodic notice long after re-protection still clears it.
        w.step(
            ms(60_000),
            Input::Protected(ProtectedNotice {
                epoch: Epoch(2),
                acked: 5041,
            }),
        );
        assert_eq!(w.mark(), None);
        assert_eq!(w.report(ms(60_000)).unprotected_after, None);
    }

    /// The mark is part of the rollback guard: a restart keeps it.
    #[test]
    fn a_restart_keeps_the_stale_mark() {
        let mut w = WitnessCore::first_boot(cfg(), 1, ms(0));
        assert!(lease_sent(&mut w, 100, 1, 1, 41, 45).verdict.granted());
        let saved = w.persisted();
        assert_eq!(
            saved.mark,
            Some(StaleMark {
                epoch: Epoch(1),
                after: 41,
                upto: 45
            })
        );
        let w2 = WitnessCore::new(cfg(), 1, ms(0), Some(saved));
        assert_eq!(w2.report(ms(10)).unprotected_after, Some(41));
        // A mark of an epoch older than the one known is moot.
        let old = Persisted {
            epoch_seen: Epoch(3),
            ..saved
        };
        let w3 = WitnessCore::new(cfg(), 1, ms(0), Some(old));
        assert_eq!(w3.mark(), None);
    }
}
