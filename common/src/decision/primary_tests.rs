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

/// A run stepped only at its inputs and at `next_deadline` decides what a run ticked every
/// millisecond decides, never later: the deadline misses no timer of the authority.
#[test]
fn stepping_at_the_deadlines_misses_no_timer() {
    // Inputs at fixed times: checkpoints and acks for a while, then the standby goes quiet,
    // two witnesses grant, then nothing (the leases run out: fence), then acks again.
    let mut script: Vec<(u64, Input)> = Vec::new();
    for i in 1..=20u64 {
        script.push((i * 20, Input::CheckpointSent { ckpt: i }));
        script.push((
            i * 20 + 3,
            Input::Ack {
                ckpt: i,
                epoch: Epoch(1),
            },
        ));
    }
    script.push((430, Input::CheckpointSent { ckpt: 21 }));
    let mut ticked = PrimaryAuthority::new(Config::default(), Epoch(1), ms(0));
    let mut by_deadline = ticked.clone();
    // Replies answer whatever request is open: collect the request numbers from the actions.
    let run = |p: &mut PrimaryAuthority, every_ms: bool| -> Vec<(u64, &'static str)> {
        let mut got = Vec::new();
        let mut next_input = 0;
        let mut granted = 0;
        let end = 6_000_000u64; // 6 s, in microseconds
        let mut t = 0u64; // microseconds
        while t <= end {
            let mut inputs: Vec<Input> = Vec::new();
            while next_input < script.len() && script[next_input].0 * 1000 <= t {
                inputs.push(script[next_input].1);
                next_input += 1;
            }
            inputs.push(Input::Tick);
            for input in inputs {
                let acts = p.step(Nanos(t * 1000), input);
                for a in acts.iter() {
                    if let Action::RequestLeases(r) = a {
                        if granted < 2 && t >= 500_000 {
                            granted += 1;
                            for w in [1, 2] {
                                let _ = p.step(
                                    Nanos(t * 1000),
                                    Input::LeaseReply(LeaseReply {
                                        witness: w,
                                        req: r.req,
                                        epoch: Epoch(1),
                                        verdict: Verdict::Grant,
                                        duration: Duration::from_secs(2),
                                    }),
                                );
                            }
                        }
                    }
                }
                for n in names(&acts) {
                    got.push((t, n));
                }
            }
            let next_script = script.get(next_input).map(|s| s.0 * 1000);
            t = if every_ms {
                t + 1000
            } else {
                let d = p.next_deadline(Nanos(t * 1000)).map(|d| d.0.div_ceil(1000));
                match (d, next_script) {
                    (Some(d), Some(s)) => d.min(s),
                    (Some(d), None) => d,
                    (None, Some(s)) => s,
                    (None, None) => break,
                }
                .max(t + 1)
            };
        }
        got
    };
    let a = run(&mut ticked, true);
    let b = run(&mut by_deadline, false);
    let kinds = |v: &[(u64, &'static str)]| v.iter().map(|x| x.1).collect::<Vec<_>>();
    assert_eq!(kinds(&a), kinds(&b), "same decisions");
    assert!(
        kinds(&a).contains(&"fence"),
        "the scenario reaches a fence: {a:?}"
    );
    assert!(kinds(&a).contains(&"request-leases"));
    for (x, y) in a.iter().zip(b.iter()) {
        assert!(
            y.0 <= x.0,
            "{} at {} us by deadline, {} us ticked",
            y.1,
            y.0,
            x.0
        );
    }
}
