//! Unit tests of what the witness reads from paths that are not clean: success rates (issue 12: a
//! lossy path told from a hung guest), late answers, a daemon's blip after its guest failed, and a
//! standby it cannot hear.

use super::*;

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
                let pass = |rng: &mut SplitMix64| rng.below(100) >= loss && rng.below(100) >= loss;
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

/// One round of probes while the application's output is held: the application times out, the
/// standby's daemon answers, and a ping to the primary's daemon sent at `t` is given up at
/// `t + 50`.
fn held_output_round(w: &mut WitnessCore, t: u64) {
    probe(w, t, ProbeTarget::PrimaryApp, ProbeClass::Timeout);
    probe(w, t, ProbeTarget::StandbyHost, ProbeClass::Ok);
    probe_took(w, t + 50, ProbeTarget::PrimaryHost, ProbeClass::Timeout, 50);
}

/// F10 with delay: the primary's daemon answers every ping, but after the probe timeout (round
/// trips of 50 to 105 ms against 50 ms, one ping in flight, sent on a 20 ms tick: its last
/// answer is up to 115 ms old, more than `host-fresh`). Its application holds its answers
/// (output waits for a stalled replication link). The daemon answers, so this is a guest
/// failure at worst, never a takeover; once it stops answering at all, it is down after
/// `host-fresh` plus the most its answers were late.
#[test]
fn a_daemon_answering_late_is_not_down() {
    let mut w = WitnessCore::first_boot(cfg(), 1, ms(0));
    let mut rng = SplitMix64::new(10);
    let mut t = 0;
    let mut most_late = 0;
    while t < 3_000 {
        let rtt = if t < 300 { 105 } else { 50 + rng.below(56) };
        most_late = most_late.max(rtt - 50);
        held_output_round(&mut w, t);
        let delivered = Input::Delivered {
            target: ProbeTarget::PrimaryHost,
            timed_out_at: ms(t + 50),
        };
        // From its first late answer on (before it, a timeout is a timeout).
        let check = |w: &WitnessCore, at: u64| {
            assert!(t < 60 || w.view(ms(at)).primary_host, "at {at} ms");
        };
        (t + 50..t + rtt).for_each(|at| check(&w, at));
        w.step(ms(t + rtt), delivered);
        // The next ping goes on the first tick after the timeout.
        let next = t + 60;
        (t + rtt..next + 50).for_each(|at| check(&w, at));
        t = next;
    }
    assert_eq!(w.view(ms(t)).app, AppVerdict::GuestFailure);
    assert_eq!(
        vote(&mut w, t, 1, 1, VoteKind::Takeover).verdict,
        Verdict::Refuse(RefuseReason::GuestFailure)
    );
    // The daemon dies: nothing comes back. Its last answer counts as heard at `t - 10`.
    let last = t - 10;
    let down_at = last + cfg().host_fresh.as_millis() as u64 + most_late;
    while t < down_at + 100 {
        held_output_round(&mut w, t);
        assert_eq!(
            w.view(ms(t + 50)).primary_host,
            t + 50 <= down_at,
            "at {} ms",
            t + 50
        );
        t += 60;
    }
    // It answered while its application failed: the guest failed, not the host, until the
    // daemon has been silent for a lease.
    assert_eq!(
        vote(&mut w, t, 1, 2, VoteKind::Takeover).verdict,
        Verdict::Refuse(RefuseReason::GuestFailure)
    );
    let fenced = last + 2_000;
    while t <= fenced {
        held_output_round(&mut w, t);
        t += 60;
    }
    assert_eq!(w.view(ms(t)).app, AppVerdict::Down);
    assert_eq!(
        vote(&mut w, t, 1, 3, VoteKind::Takeover).verdict,
        Verdict::Grant
    );
}

/// F10 on a loaded machine: the replication link stalls, so the application's output is held
/// and it answers nobody; its daemon answers, so the guest "failed" (F5's reading). Then the
/// daemon itself misses its pings for 300 ms (its CPU starved, no late answers either). That
/// is no host crash: no takeover vote, until the daemon has been silent for a lease. A host
/// that crashes takes its application and daemon down together and is down after
/// `host-fresh`, as before.
#[test]
fn a_daemon_that_saw_its_guest_fail_is_not_down_for_a_blip() {
    let mut w = WitnessCore::first_boot(cfg(), 1, ms(0));
    let mut t = 0;
    while t < 3_000 {
        probe(&mut w, t, ProbeTarget::PrimaryApp, ProbeClass::Timeout);
        probe(&mut w, t, ProbeTarget::StandbyHost, ProbeClass::Ok);
        // Answers until 2,500 ms, then 300 ms of nothing, then answers again.
        let class = if (2_500..2_800).contains(&t) {
            ProbeClass::Timeout
        } else {
            ProbeClass::Ok
        };
        probe(&mut w, t, ProbeTarget::PrimaryHost, class);
        assert_ne!(w.view(ms(t)).app, AppVerdict::Down, "at {t} ms");
        if t >= 200 {
            assert_eq!(
                vote(&mut w, t, 1, t as u32, VoteKind::Takeover).verdict,
                Verdict::Refuse(RefuseReason::GuestFailure),
                "at {t} ms"
            );
        }
        t += 20;
    }
    // The same, but the host then crashes for good: down a lease after its last answer.
    while t < 5_000 {
        probe(&mut w, t, ProbeTarget::PrimaryApp, ProbeClass::Timeout);
        probe(&mut w, t, ProbeTarget::StandbyHost, ProbeClass::Ok);
        probe(&mut w, t, ProbeTarget::PrimaryHost, ProbeClass::Timeout);
        let down = t >= 2_980 + 2_000;
        assert_eq!(w.view(ms(t)).app == AppVerdict::Down, down, "at {t} ms");
        t += 20;
    }
}

/// Neither a switchover nor a takeover without the standby's daemon answering: a witness that
/// hears neither daemon (its relays or network stalled: all three witnesses of the F10-with-
/// delay case at once, both daemons' pings timing out together) learns nothing of host A.
#[test]
fn no_move_to_a_standby_this_witness_cannot_hear() {
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
        Verdict::Refuse(RefuseReason::StandbyUnreachable)
    );
    probe(&mut w, 210, ProbeTarget::StandbyHost, ProbeClass::Ok);
    assert_eq!(
        vote(&mut w, 210, 1, 3, VoteKind::Takeover).verdict,
        Verdict::Grant
    );
}
