//! Unit tests of the witness's view when the primary's host crashes: the application and its
//! daemon stop at once (issue 16 item 4: a takeover's votes come as soon as the evidence
//! allows, and a crash is not taken for a guest failure meanwhile).

use super::*;

/// Both answer every 20 ms until `until` (the daemon 2 ms after the application).
fn both_answer(w: &mut WitnessCore, until: u64) {
    for t in (0..until).step_by(20) {
        probe(w, t, ProbeTarget::PrimaryApp, ProbeClass::Ok);
        probe(w, t + 2, ProbeTarget::PrimaryHost, ProbeClass::Ok);
        probe(w, t + 2, ProbeTarget::StandbyHost, ProbeClass::Ok);
    }
}

/// The host crashes at 100 ms (last answers at 80 and 82 ms). The application's probes are
/// refused at once, so it has failed long enough at 140 ms (60 ms after its last answer),
/// while its daemon, last heard at 82 ms, is still within `host_fresh` (70 ms). It was heard
/// before the application was seen failing, so that is no guest failure (which would tell the
/// standby to back off): not yet, until 152 ms, when the daemon has been silent for
/// `host_fresh`; then down. The verdict changes by time alone, and the core says when.
#[test]
fn a_crash_is_not_yet_known_until_the_daemon_is_silent_for_host_fresh() {
    let mut w = WitnessCore::first_boot(cfg(), 1, ms(0));
    both_answer(&mut w, 100);
    for t in [100, 120, 140] {
        probe(&mut w, t, ProbeTarget::PrimaryApp, ProbeClass::Refused);
        probe(&mut w, t, ProbeTarget::StandbyHost, ProbeClass::Ok);
    }
    assert_eq!(w.view(ms(140)).app, AppVerdict::Failing);
    assert_eq!(
        vote(&mut w, 140, 1, 1, VoteKind::Takeover).verdict,
        Verdict::Refuse(RefuseReason::NotYet(Duration::from_millis(12)))
    );
    // At 152 ms exactly the daemon still counts as heard (within `host_fresh`).
    assert_eq!(w.view_changes_at(ms(140)), Some(ms(152)));
    assert_eq!(w.view(ms(152)).app, AppVerdict::Failing);
    assert_eq!(
        w.view_changes_at(ms(152)),
        Some(ms(152).plus(Duration::from_millis(1)))
    );
    assert_eq!(w.view(ms(153)).app, AppVerdict::Down);
    assert_eq!(w.view_changes_at(ms(153)), None);
    assert_eq!(
        vote(&mut w, 153, 1, 2, VoteKind::Takeover).verdict,
        Verdict::Grant
    );
}

/// A hung guest (F5): its daemon answers after the application was seen failing, so it is a
/// guest failure, and nothing changes with time.
#[test]
fn a_daemon_heard_after_the_application_failed_makes_it_a_guest_failure() {
    let mut w = WitnessCore::first_boot(cfg(), 1, ms(0));
    both_answer(&mut w, 100);
    for t in [100, 120, 140] {
        probe(&mut w, t, ProbeTarget::PrimaryApp, ProbeClass::Timeout);
    }
    // Last heard at 82 ms, before the first failure (100 ms): not yet known.
    assert_eq!(w.view(ms(140)).app, AppVerdict::Failing);
    probe(&mut w, 142, ProbeTarget::PrimaryHost, ProbeClass::Ok);
    assert_eq!(w.view(ms(142)).app, AppVerdict::GuestFailure);
    assert_eq!(w.view_changes_at(ms(142)), None);
    assert_eq!(
        vote(&mut w, 142, 1, 1, VoteKind::Takeover).verdict,
        Verdict::Refuse(RefuseReason::GuestFailure)
    );
}

/// The daemons' pings overlap (one every probe interval, each given up after the probe
/// timeout): a ping sent before one that was answered, and given up after it, counts as a
/// loss in the rates but is no failure in a row. Two such must not make a live daemon
/// unreachable.
#[test]
fn an_older_ping_given_up_after_a_newer_answer_is_no_failure_in_a_row() {
    let mut w = WitnessCore::first_boot(cfg(), 1, ms(0));
    both_answer(&mut w, 100);
    // Pings sent at 100 and 120 ms are lost; the one sent at 140 ms is answered at once.
    probe_took(&mut w, 140, ProbeTarget::PrimaryHost, ProbeClass::Ok, 0);
    probe_took(
        &mut w,
        150,
        ProbeTarget::PrimaryHost,
        ProbeClass::Timeout,
        50,
    );
    probe_took(
        &mut w,
        170,
        ProbeTarget::PrimaryHost,
        ProbeClass::Timeout,
        50,
    );
    assert!(w.view(ms(170)).primary_host);
    // A ping sent after the answered one and lost is a failure in a row; two make the
    // daemon unreachable.
    probe_took(
        &mut w,
        210,
        ProbeTarget::PrimaryHost,
        ProbeClass::Timeout,
        50,
    );
    assert!(w.view(ms(210)).primary_host);
    probe_took(
        &mut w,
        230,
        ProbeTarget::PrimaryHost,
        ProbeClass::Timeout,
        50,
    );
    assert!(!w.view(ms(230)).primary_host);
}
