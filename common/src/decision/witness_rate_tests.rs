//! Unit tests of the witness's success rates (issue 12): a lossy path told from a hung guest.

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
