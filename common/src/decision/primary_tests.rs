//! Unit tests of `primary`.

use super::*;
use crate::decision::proto::Verdict;

fn ms(n: u64) -> Nanos {
    Nanos::from_millis(n)
}

fn grant(w: WitnessId, req: u32) -> Input {
    Input::LeaseReply(LeaseReply {
        witness: w,
        req,
        epoch: Epoch(1),
        verdict: Verdict::Grant,
        duration: Duration::from_secs(2),
    })
}

fn names(a: &Actions<Action>) -> Vec<&'static str> {
    a.iter()
        .map(|a| match a {
            Action::RequestLeases(_) => "request-leases",
            Action::NotifyProtected(_) => "notify-protected",
            Action::Fence { .. } => "fence",
            Action::Unfence { .. } => "unfence",
            Action::StepDown { .. } => "step-down",
            Action::RequestFullSync => "request-full-sync",
            Action::ConfirmFenced { .. } => "confirm-fenced",
            Action::Alert { .. } => "alert",
        })
        .collect()
}

#[test]
fn ack_is_a_lease_counted_from_the_send() {
    let mut p = PrimaryAuthority::new(Config::default(), Epoch(1), ms(0));
    assert_eq!(p.mode(ms(0)), Mode::Holding);
    p.step(ms(0), Input::CheckpointSent { ckpt: 1 });
    p.step(
        ms(30),
        Input::Ack {
            ckpt: 1,
            epoch: Epoch(1),
        },
    );
    // 80 ms ack lease minus (0.8 ms + 5 ms) margin, from the send at 0.
    assert!(p.may_release_output(ms(74)));
    assert_eq!(p.mode(Nanos(74_200_000 - 1)), Mode::Protected);
    assert_eq!(p.mode(Nanos(74_200_000)), Mode::Holding);
    // Unknown checkpoint or stale epoch: no authority.
    p.step(
        ms(75),
        Input::Ack {
            ckpt: 9,
            epoch: Epoch(1),
        },
    );
    p.step(
        ms(75),
        Input::Ack {
            ckpt: 1,
            epoch: Epoch(0),
        },
    );
    assert!(!p.may_release_output(ms(75)));
}

#[test]
fn lost_standby_runs_under_a_lease_then_fences_without_one() {
    let mut p = PrimaryAuthority::new(Config::default(), Epoch(1), ms(0));
    p.step(ms(0), Input::CheckpointSent { ckpt: 7 });
    p.step(
        ms(1),
        Input::Ack {
            ckpt: 7,
            epoch: Epoch(1),
        },
    );
    assert!(names(&p.step(ms(50), Input::Tick)).is_empty());
    p.step(ms(60), Input::CheckpointSent { ckpt: 8 });
    let a = p.step(ms(75), Input::Tick);
    assert_eq!(names(&a), ["request-leases"]);
    assert!(matches!(
        a[0],
        Action::RequestLeases(LeaseRequest {
            req: 1,
            last_acked: 7,
            ..
        })
    ));
    assert_eq!(p.mode(ms(75)), Mode::Holding);
    p.step(ms(76), grant(1, 1));
    assert_eq!(names(&p.step(ms(76), grant(2, 1))), ["alert"]);
    assert_eq!(p.mode(ms(76)), Mode::Unprotected);
    // Valid until asked_at + 2 s - 25 ms.
    assert!(p.may_release_output(Nanos(2_050_000_000 - 1)));
    assert_eq!(
        names(&p.step(ms(1_075), Input::Tick)),
        ["request-leases"],
        "renewal at half the lease"
    );
    assert_eq!(p.mode(ms(2_050)), Mode::Holding);
    // No renewal granted: retries every query timeout, fenced after fence_after.
    assert_eq!(names(&p.step(ms(2_100), Input::Tick)), ["request-leases"]);
    assert_eq!(names(&p.step(ms(2_150), Input::Tick)), ["fence"]);
    assert_eq!(p.mode(ms(2_150)), Mode::Fenced);
    // A late ack of a checkpoint from before the unprotected output does not protect.
    p.step(
        ms(2_160),
        Input::Ack {
            ckpt: 8,
            epoch: Epoch(1),
        },
    );
    assert_eq!(p.mode(ms(2_160)), Mode::Fenced);
    // A full resync acked: protected again, unfenced, witnesses told.
    p.step(ms(2_200), Input::CheckpointSent { ckpt: 9 });
    let a = p.step(
        ms(2_201),
        Input::Ack {
            ckpt: 9,
            epoch: Epoch(1),
        },
    );
    assert_eq!(names(&a), ["notify-protected", "unfence"]);
    assert!(matches!(
        a[0],
        Action::NotifyProtected(ProtectedNotice { acked: 9, .. })
    ));
    assert_eq!(p.mode(ms(2_201)), Mode::Protected);
}

#[test]
fn higher_epoch_steps_down_for_good() {
    let mut p = PrimaryAuthority::new(Config::default(), Epoch(1), ms(0));
    p.step(ms(0), Input::CheckpointSent { ckpt: 1 });
    p.step(
        ms(1),
        Input::Ack {
            ckpt: 1,
            epoch: Epoch(1),
        },
    );
    let a = p.step(
        ms(2),
        Input::LeaseReply(LeaseReply {
            witness: 1,
            req: 9,
            epoch: Epoch(1),
            verdict: Verdict::Refuse(RefuseReason::StaleEpoch(Epoch(2))),
            duration: Duration::ZERO,
        }),
    );
    assert_eq!(names(&a), ["fence", "step-down", "request-full-sync"]);
    assert_eq!(p.mode(ms(2)), Mode::SteppedDown);
    assert!(p
        .step(
            ms(3),
            Input::Ack {
                ckpt: 1,
                epoch: Epoch(2)
            }
        )
        .is_empty());
    assert!(!p.may_release_output(ms(3)));
}

#[test]
fn switchover_fence_request() {
    let mut p = PrimaryAuthority::new(Config::default(), Epoch(1), ms(0));
    p.step(ms(0), Input::CheckpointSent { ckpt: 4 });
    let a = p.step(ms(1), Input::FenceRequest { epoch: Epoch(2) });
    assert_eq!(
        names(&a),
        ["fence", "confirm-fenced", "step-down", "request-full-sync"]
    );
    assert!(matches!(
        a[1],
        Action::ConfirmFenced {
            epoch: Epoch(2),
            ckpt: 4
        }
    ));
    assert!(p
        .step(ms(2), Input::FenceRequest { epoch: Epoch(2) })
        .is_empty());
}

#[test]
fn baseline_continues_unprotected_without_lease() {
    let cfg = Config {
        policy: Policy::HeartbeatOnly,
        ..Config::default()
    };
    let mut p = PrimaryAuthority::new(cfg, Epoch(1), ms(0));
    p.step(ms(0), Input::CheckpointSent { ckpt: 1 });
    p.step(
        ms(1),
        Input::Ack {
            ckpt: 1,
            epoch: Epoch(1),
        },
    );
    assert_eq!(names(&p.step(ms(100), Input::Tick)), ["alert"]);
    assert_eq!(p.mode(ms(100_000)), Mode::Unprotected);
}

/// The baselines wait for a standby that acknowledged and sends heartbeat replies until it is
/// lost (`standby-timeout` without progress), as Remus waits for its backup until it declares
/// it failed; only then do they continue unprotected (the mode used to say unprotected as soon
/// as the ack lease ran out, while the authority's own evaluation waited).
#[test]
fn a_baseline_waits_for_its_standby_until_it_is_lost() {
    for policy in [Policy::HeartbeatOnly, Policy::PingNode] {
        let cfg = Config {
            policy,
            ..Config::default()
        };
        let mut p = PrimaryAuthority::new(cfg, Epoch(1), ms(0));
        p.step(ms(0), Input::CheckpointSent { ckpt: 1 });
        p.step(ms(1), alive(1));
        p.step(
            ms(2),
            Input::Ack {
                ckpt: 1,
                epoch: Epoch(1),
            },
        );
        p.step(ms(10), Input::CheckpointSent { ckpt: 2 });
        // Silent from here: no ack, no reply. The ack lease runs out at about 80 ms.
        let mut alerts = 0;
        for t in 11..=600 {
            let a = p.step(ms(t), Input::Tick);
            alerts += names(&a).iter().filter(|n| **n == "alert").count();
            if t < 502 {
                assert!(
                    !matches!(p.mode(ms(t)), Mode::Unprotected),
                    "{policy:?} at {t} ms: {:?}",
                    p.mode(ms(t))
                );
            }
        }
        // Lost 500 ms after the last progress (the ack at 2 ms): unprotected, said once.
        assert!(p.standby_lost(ms(600)));
        assert_eq!(p.mode(ms(600)), Mode::Unprotected, "{policy:?}");
        assert!(p.may_release_output(ms(600)));
        assert_eq!(alerts, 1, "{policy:?}");
    }
}

fn alive(heard: u64) -> Input {
    Input::StandbyAlive {
        epoch: Epoch(1),
        applied: Some(1),
        heard,
        stream: heard,
    }
}

/// Issue 12: a standby that is there and hears us, whose acks come later than the ack lease
/// (a slow link), is waited for: never a lease request (nothing unacknowledged can leave),
/// never a fence, and only acknowledged output may leave (the daemon releases up to
/// `last_acked` in this mode). Ack delays from 100 ms to 3 s, epochs stretched to one
/// checkpoint in flight, heartbeat replies every 10 ms.
#[test]
fn a_slow_standby_is_waited_for_however_slow() {
    let mut rng = crate::rng::SplitMix64::new(12);
    let mut p = PrimaryAuthority::new(Config::default(), Epoch(1), ms(0));
    let mut t = 0u64;
    let mut ckpt = 1u64;
    p.step(ms(t), Input::CheckpointSent { ckpt });
    let mut ack_at = 1;
    let mut heard = 0;
    let mut modes = std::collections::HashSet::new();
    while t < 60_000 {
        t += 1;
        if t.is_multiple_of(10) {
            heard += 1 + rng.below(50);
            let a = p.step(ms(t), alive(heard));
            assert!(
                names(&a)
                    .iter()
                    .all(|n| *n == "alert" || *n == "notify-protected"),
                "{t}: {a:?}"
            );
        }
        if t == ack_at {
            let a = p.step(
                ms(t),
                Input::Ack {
                    ckpt,
                    epoch: Epoch(1),
                },
            );
            assert!(
                names(&a)
                    .iter()
                    .all(|n| *n == "notify-protected" || n == &"alert"),
                "{t}: {a:?}"
            );
            // The next checkpoint once this one is acked (a stretched epoch).
            ckpt += 1;
            p.step(ms(t), Input::CheckpointSent { ckpt });
            ack_at = t + if t < 1_000 {
                20
            } else {
                100 + rng.below(3_000)
            };
        }
        let a = p.step(ms(t), Input::Tick);
        for n in names(&a) {
            assert!(
                n == "alert" || n == "notify-protected",
                "{t}: {n} while the standby is slow but there"
            );
        }
        let m = p.mode(ms(t));
        assert!(matches!(m, Mode::Protected | Mode::Degraded), "{t}: {m:?}");
        modes.insert(m.name());
    }
    assert_eq!(
        modes.len(),
        2,
        "both protected and degraded seen: {modes:?}"
    );
    assert_eq!(p.last_acked(), ckpt - 1);
}

/// The same slow standby under `slow-standby = lease` (availability over protection): the
/// old trade, output under the witnesses' lease as soon as the ack lease runs out.
#[test]
fn slow_standby_lease_setting_keeps_the_old_trade() {
    let cfg = Config {
        slow_standby: SlowStandby::Lease,
        ..Config::default()
    };
    let mut p = PrimaryAuthority::new(cfg, Epoch(1), ms(0));
    p.step(ms(0), Input::CheckpointSent { ckpt: 1 });
    p.step(ms(1), alive(1));
    p.step(
        ms(2),
        Input::Ack {
            ckpt: 1,
            epoch: Epoch(1),
        },
    );
    p.step(ms(10), Input::CheckpointSent { ckpt: 2 });
    for t in (20..=70).step_by(10) {
        p.step(ms(t), alive(t));
    }
    let a = p.step(ms(75), Input::Tick);
    assert_eq!(names(&a), ["request-leases"]);
    assert!(p.standby_present(ms(75)));
    assert_eq!(p.mode(ms(75)), Mode::Holding);
}

/// A higher epoch in a heartbeat reply (the standby follows a newer primary): step down.
#[test]
fn a_reply_of_a_higher_epoch_steps_down() {
    let mut p = PrimaryAuthority::new(Config::default(), Epoch(1), ms(0));
    let a = p.step(
        ms(1),
        Input::StandbyAlive {
            epoch: Epoch(3),
            applied: None,
            heard: 0,
            stream: 0,
        },
    );
    assert_eq!(names(&a), ["fence", "step-down", "request-full-sync"]);
    assert_eq!(p.epoch(), Epoch(3));
}

/// A lease granted while the standby was lost is no authority once the standby acknowledges
/// again and is only waited for (its replies paused): output is held. Released under that
/// lease, it would lie beyond the checkpoint whose ack clears the witnesses' stale mark, and a
/// crash would lose it (the fault suite's F13 found this: a late ack of an older checkpoint,
/// then a pause of the replies while the lease still ran).
#[test]
fn an_old_lease_releases_nothing_while_a_returning_standby_is_waited_for() {
    let mut p = PrimaryAuthority::new(Config::default(), Epoch(1), ms(0));
    p.step(ms(0), Input::CheckpointSent { ckpt: 1 });
    p.step(ms(1), alive(1));
    p.step(
        ms(2),
        Input::Ack {
            ckpt: 1,
            epoch: Epoch(1),
        },
    );
    p.step(ms(10), Input::CheckpointSent { ckpt: 2 });
    // Silent: lost after standby-timeout; two witnesses grant.
    let mut req = None;
    for t in 11..=700 {
        for a in p.step(ms(t), Input::Tick).iter() {
            if let Action::RequestLeases(r) = a {
                req.get_or_insert(r.req);
            }
        }
    }
    let req = req.expect("a lease request once the standby is lost");
    p.step(ms(700), grant(1, req));
    p.step(ms(700), grant(2, req));
    assert_eq!(p.mode(ms(700)), Mode::Unprotected);
    p.step(ms(710), Input::CheckpointSent { ckpt: 3 });
    for t in 711..800 {
        p.step(ms(t), Input::Tick);
    }
    // Back: a reply, and the late ack of checkpoint 2 (protection needs one of 3 or later).
    p.step(ms(800), alive(800));
    p.step(
        ms(800),
        Input::Ack {
            ckpt: 2,
            epoch: Epoch(1),
        },
    );
    assert_eq!(p.mode(ms(801)), Mode::Degraded);
    // Its replies pause: waited for, not lost, and the lease still runs: nothing leaves.
    for t in 801..=850 {
        p.step(ms(t), Input::Tick);
    }
    assert!(!p.standby_lost(ms(850)));
    assert_eq!(p.mode(ms(850)), Mode::Holding);
    assert!(!p.may_release_output(ms(850)));
}

#[test]
fn activated_standby_holds_its_votes_as_leases() {
    let mut leases = LeaseSet::new();
    leases.insert(1, ms(2_000));
    leases.insert(2, ms(1_900));
    let mut p = PrimaryAuthority::activated(Config::default(), Epoch(2), ms(100), &leases, 50);
    assert_eq!(p.mode(ms(100)), Mode::Unprotected);
    let a = p.step(ms(100), Input::Tick);
    assert!(
        matches!(
            a.first(),
            Some(Action::RequestLeases(LeaseRequest {
                epoch: Epoch(2),
                last_acked: 50,
                ..
            }))
        ),
        "{a:?}"
    );
    assert_eq!(p.mode(ms(1_900)), Mode::Holding);
}

/// Rule 9: a forced activation serves on the operator's word, asks the witnesses for
/// leases (so they learn the new epoch), takes the usual authority once granted, and
/// steps down to a higher epoch like any primary.
#[test]
fn a_forced_activation_serves_until_the_usual_authority_takes_over() {
    let cfg = Config::default();
    let mut p = PrimaryAuthority::activated(cfg, Epoch(2), ms(0), &LeaseSet::new(), 30)
        .with_operator_authority();
    let a = p.step(ms(1), Input::Tick);
    assert!(p.may_release_output(ms(1)), "no witness answered yet");
    let req = a
        .iter()
        .find_map(|x| match x {
            Action::RequestLeases(r) => Some(*r),
            _ => None,
        })
        .expect("asks the witnesses at once");
    assert_eq!(req.epoch, Epoch(2));
    // Long without any answer: still serving, never fenced, still asking.
    let mut last = req;
    for t in (10..5_000).step_by(10) {
        let a = p.step(ms(t), Input::Tick);
        assert!(!a.iter().any(|x| matches!(x, Action::Fence { .. })));
        for x in &a {
            if let Action::RequestLeases(r) = x {
                last = *r;
            }
        }
    }
    assert_ne!(last.req, req.req, "it keeps asking");
    assert!(p.may_release_output(ms(5_000)));
    // A quorum grants: from now on, the lease rules.
    for w in [1, 2] {
        p.step(
            ms(5_001),
            Input::LeaseReply(LeaseReply {
                witness: w,
                req: last.req,
                epoch: Epoch(2),
                verdict: Verdict::Grant,
                duration: Duration::from_secs(2),
            }),
        );
    }
    assert!(p.may_release_output(ms(5_002)));
    // Without renewals the grants run out, and then it holds output and fences like any
    // primary.
    let mut fenced = false;
    for t in (5_010..9_000).step_by(10) {
        fenced |= p
            .step(ms(t), Input::Tick)
            .iter()
            .any(|x| matches!(x, Action::Fence { .. }));
    }
    assert!(
        fenced,
        "the operator's word ended with the first lease quorum"
    );
    let mut q =
        PrimaryAuthority::activated(Config::default(), Epoch(2), ms(0), &LeaseSet::new(), 30)
            .with_operator_authority();
    let a = q.step(ms(1), Input::HigherEpoch { epoch: Epoch(3) });
    assert!(a.iter().any(|x| matches!(x, Action::StepDown { .. })));
    assert!(!q.may_release_output(ms(2)));
}

/// `next_deadline` against a run ticked every millisecond.
#[path = "primary_deadline_tests.rs"]
mod deadline;
