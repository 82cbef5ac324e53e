//! Unit tests of `witness`.

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
    // has not failed twice nor been silent for `host_fresh` (70 ms) since the stall.
    assert_eq!(
        vote(&mut w, 1_260, 1, 3, VoteKind::Takeover).verdict,
        Verdict::Refuse(RefuseReason::NotYet(Duration::from_millis(10)))
    );
    assert_eq!(w.view(ms(1_260)).app, AppVerdict::Failing);
    probe(&mut w, 1_270, ProbeTarget::PrimaryHost, ProbeClass::Timeout);
    probe(&mut w, 1_280, ProbeTarget::PrimaryHost, ProbeClass::Timeout);
    // The standby's daemon not heard since the stall either: no vote to move to it.
    assert_eq!(
        vote(&mut w, 1_280, 1, 4, VoteKind::Takeover).verdict,
        Verdict::Refuse(RefuseReason::StandbyUnreachable)
    );
    probe(&mut w, 1_280, ProbeTarget::StandbyHost, ProbeClass::Ok);
    assert_eq!(
        vote(&mut w, 1_280, 1, 5, VoteKind::Takeover).verdict,
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
    for t in (1_000..=1_070).step_by(10) {
        probe(&mut w, t, ProbeTarget::PrimaryApp, ProbeClass::Refused);
        probe(&mut w, t, ProbeTarget::StandbyHost, ProbeClass::Ok);
    }
    // `host_fresh` is 70 ms.
    assert_eq!(w.view(ms(1_069)).app, AppVerdict::Failing);
    assert_eq!(w.view(ms(1_070)).app, AppVerdict::Down);
    assert_eq!(
        vote(&mut w, 1_070, 1, 1, VoteKind::Takeover).verdict,
        Verdict::Grant
    );
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
                    for a in w.step(now, Input::VoteRequest(VoteRequest { epoch, query, kind })) {
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

/// Rule 9: an operator's request is granted while the primary answers, but only when no
/// lease to the old epoch is out, and it promises the new epoch like a takeover vote does.
#[test]
fn an_operator_vote_needs_no_failure_but_keeps_the_lease_rules() {
    let mut w = WitnessCore::first_boot(cfg(), 1, ms(0));
    for t in (0..200).step_by(10) {
        probe(&mut w, t, ProbeTarget::PrimaryApp, ProbeClass::Ok);
        probe(&mut w, t, ProbeTarget::PrimaryHost, ProbeClass::Ok);
    }
    assert_eq!(
        vote(&mut w, 200, 1, 1, VoteKind::Takeover).verdict,
        Verdict::Refuse(RefuseReason::PrimaryAnswers)
    );
    // A lease to epoch 1 is out: the operator's vote waits for it.
    assert!(lease(&mut w, 210, 1, 1, 5).verdict.granted());
    assert!(matches!(
        vote(&mut w, 220, 1, 2, VoteKind::Operator).verdict,
        Verdict::Refuse(RefuseReason::LeaseActive(_))
    ));
    assert_eq!(
        vote(&mut w, 2_300, 1, 3, VoteKind::Operator).verdict,
        Verdict::Grant
    );
    // Promised epoch 2: no lease to epoch 1 any more.
    assert_eq!(
        lease(&mut w, 2_310, 1, 2, 5).verdict,
        Verdict::Refuse(RefuseReason::Promised(Epoch(2)))
    );
}

/// Success rates over a window (issue 12).
#[path = "witness_rate_tests.rs"]
mod rates;

#[path = "witness_crash_tests.rs"]
mod crash;
