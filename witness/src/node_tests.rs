//! The witness node's unit tests.

use super::*;
use hsb_common::datagram::Sender;
use hsb_common::decision::proto::{AppVerdict, ProbeClass, RefuseReason, VoteKind, VoteRequest};
use hsb_common::decision::{Config, Epoch};
use hsb_common::msg::Role;

fn ms(n: u64) -> Nanos {
    Nanos::from_millis(n)
}

fn node() -> WitnessNode {
    let core = WitnessCore::first_boot(Config::default(), 1, ms(0));
    let p = core.persisted();
    WitnessNode::new(
        NodeSettings {
            probe_interval: Duration::from_millis(20),
            probe_timeout: Duration::from_millis(50),
            report_interval: Duration::from_millis(50),
            guest: String::new(),
        },
        core,
        p,
        ms(0),
    )
}

fn env(role: Role, id: u32, epoch: u64) -> Envelope {
    Envelope {
        from: Sender { role, id },
        incarnation: 1,
        epoch,
        to: None,
    }
}

fn addr() -> SocketAddr {
    "127.0.0.1:9".parse().expect("addr")
}

/// Every refusal reason has its own log cause, for votes and for leases, all in range.
#[test]
fn log_causes_are_distinct_and_in_range() {
    let reasons = [
        RefuseReason::PrimaryAnswers,
        RefuseReason::NotYet(Duration::ZERO),
        RefuseReason::GuestFailure,
        RefuseReason::StandbyUnreachable,
        RefuseReason::LeaseActive(Duration::ZERO),
        RefuseReason::Restarting(Duration::ZERO),
        RefuseReason::StaleEpoch(Epoch(1)),
        RefuseReason::Promised(Epoch(1)),
        RefuseReason::NoData,
    ];
    let mut all = vec![
        cause::VIEW_CHANGE,
        cause::SAVE_FAILED,
        cause::WITHHELD,
        cause::STALL,
    ];
    all.extend(reasons.iter().map(cause::vote_refused));
    all.extend(reasons.iter().map(cause::lease_refused));
    let n = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), n, "shared causes");
    assert!(all.iter().all(|&c| c < cause::COUNT));
    assert_eq!(n, cause::COUNT);
}

/// A tick pings both daemons (unaddressed) and reports to both; a pong answers exactly
/// its ping and teaches the node which slot hosts the primary.
#[test]
fn pings_reports_and_pongs() {
    let mut n = node();
    let fx = n.step(ms(0), Event::Tick);
    let pings: Vec<_> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::Send {
                to: To::Slot(s),
                dest: None,
                msg: Dgram::Ping { nonce },
                ..
            } => Some((*s, *nonce)),
            _ => None,
        })
        .collect();
    assert_eq!(pings.len(), 2);
    assert!(fx.iter().any(|e| matches!(
        e,
        Effect::Send {
            msg: Dgram::Report(_),
            ..
        }
    )));
    // Slot 1's daemon answers as the primary of epoch 2 (after a failover).
    let (slot, nonce) = pings[1];
    assert_eq!(slot, 1);
    n.step(
        ms(3),
        Event::Datagram {
            from: addr(),
            env: env(Role::Primary, 8, 2),
            msg: Dgram::Pong { nonce },
        },
    );
    assert_eq!(n.hosts().primary_slot(), Some(1));
    assert_eq!(n.pings()[1], (1, 0));
    // A pong with the other slot's nonce does not count.
    n.step(
        ms(4),
        Event::Datagram {
            from: addr(),
            env: env(Role::Standby, 7, 2),
            msg: Dgram::Pong {
                nonce: pings[0].1 ^ 1,
            },
        },
    );
    assert_eq!(n.pings()[0], (0, 0));
    // Unanswered: a miss after the probe timeout.
    n.step(ms(60), Event::Tick);
    assert_eq!(n.pings()[0].1, 1);
}

/// A grant's promise is saved first and the grant names it; a failed save is counted.
#[test]
fn a_grant_follows_its_save() {
    let mut n = node();
    // The application and the primary daemon stay silent until the witness may vote; the
    // standby's daemon answers.
    for t in (0..2_200).step_by(10) {
        n.step(
            ms(t),
            Event::AppProbe {
                class: ProbeClass::Timeout,
                took: Duration::from_millis(50),
                detail: String::new(),
            },
        );
        tick_standby_answering(&mut n, t);
    }
    let fx = n.step(
        ms(2_200),
        Event::Datagram {
            from: addr(),
            env: env(Role::Standby, 7, 1),
            msg: Dgram::VoteRequest(VoteRequest {
                epoch: Epoch(1),
                query: 5,
                kind: VoteKind::Takeover,
            }),
        },
    );
    let save = fx.iter().position(|e| matches!(e, Effect::Save(_)));
    let vote = fx.iter().position(|e| {
        matches!(e, Effect::Send { msg: Dgram::Vote(v), needs: Some(_), .. } if v.verdict.granted())
    });
    assert!(save.is_some() && vote.is_some() && save < vote, "{fx:?}");
    let Some(Effect::Save(p)) = save.map(|i| fx[i].clone()) else {
        panic!("no save");
    };
    n.saved(ms(2_200), p, Err("disk full".into()));
    assert_eq!(n.counters().save_failures, 1);
    assert_eq!(n.counters().votes_granted, 1);
}

/// A daemon whose pongs come after the probe timeout (a loaded host, a slow path) is late, not
/// lost: its success rate (the gray-path evidence) counts the late pongs, so a busy primary is
/// not taken for one behind a lossy path (F10 with delay once switched over on this). Pongs for
/// pings nobody sent, or later than a second, do not count.
#[test]
fn late_pongs_count_as_delivered_in_the_path_rate() {
    let rate = |late: bool| {
        let mut n = node();
        let mut t = 0;
        let mut sent: std::collections::VecDeque<(u64, u64)> = Default::default();
        while t < 3_000 {
            for e in n.step(ms(t), Event::Tick).iter() {
                if let Effect::Send {
                    to: To::Slot(0),
                    msg: Dgram::Ping { nonce },
                    ..
                } = e
                {
                    sent.push_back((*nonce, t));
                }
            }
            // Slot 0's daemon answers every ping 70 ms after it was sent (timeout 50 ms).
            while let Some(&(nonce, at)) = sent.front() {
                if t < at + 70 {
                    break;
                }
                sent.pop_front();
                {
                    if late {
                        pong(&mut n, t, nonce);
                    }
                }
            }
            t += 5;
        }
        n.core().rates(ms(t)).primary
    };
    // Primary: nobody heard a pong in time, so slot 0 still stands for the configured primary.
    assert_eq!(rate(false), Some(0), "unanswered pings are misses");
    // (The pings still in flight at the end are misses so far.)
    assert!(
        rate(true).is_some_and(|r| r >= 90),
        "late pongs are delivered: {:?}",
        rate(true)
    );
}

fn pings_sent(fx: &Effects, slot: usize) -> Vec<u64> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Send {
                to: To::Slot(s),
                msg: Dgram::Ping { nonce },
                ..
            } if *s == slot => Some(*nonce),
            _ => None,
        })
        .collect()
}

fn reports(fx: &Effects) -> Vec<AppVerdict> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Send {
                msg: Dgram::Report(r),
                ..
            } => Some(r.view.app),
            _ => None,
        })
        .collect()
}

/// A tick at `t`, the standby's daemon (slot 1) answering at once every ping the tick sent it:
/// a witness votes for no move to a standby it cannot hear.
pub(crate) fn tick_standby_answering(n: &mut WitnessNode, t: u64) {
    let fx = n.step(ms(t), Event::Tick);
    for e in fx.iter() {
        if let Effect::Send {
            to: To::Slot(1),
            msg: Dgram::Ping { nonce },
            ..
        } = e
        {
            pong_from(n, t, env(Role::Standby, 7, 1), *nonce);
        }
    }
}

/// The primary's daemon (id 8, epoch 1) answers the ping `nonce` at `t`.
fn pong(n: &mut WitnessNode, t: u64, nonce: u64) -> Effects {
    pong_from(n, t, env(Role::Primary, 8, 1), nonce)
}

fn pong_from(n: &mut WitnessNode, t: u64, from: Envelope, nonce: u64) -> Effects {
    n.step(
        ms(t),
        Event::Datagram {
            from: addr(),
            env: from,
            msg: Dgram::Pong { nonce },
        },
    )
}

fn app(n: &mut WitnessNode, t: u64, class: ProbeClass) -> Effects {
    n.step(
        ms(t),
        Event::AppProbe {
            class,
            took: Duration::ZERO,
            detail: String::new(),
        },
    )
}

/// Issue 16 item 4: a ping goes every probe interval even while an earlier one is
/// unanswered, so a lost ping is a gap of two intervals, not a probe timeout and more; a pong
/// for any ping in flight counts.
#[test]
fn pings_go_every_interval_while_others_are_in_flight() {
    let mut n = node();
    let first = pings_sent(&n.step(ms(0), Event::Tick), 0);
    let second = pings_sent(&n.step(ms(20), Event::Tick), 0);
    let third = pings_sent(&n.step(ms(40), Event::Tick), 0);
    assert_eq!((first.len(), second.len(), third.len()), (1, 1, 1));
    // The first is lost; the second is answered.
    pong(&mut n, 41, second[0]);
    assert_eq!(n.pings()[0], (1, 0));
    n.step(ms(50), Event::Tick);
    assert_eq!(n.pings()[0], (1, 1), "the first given up at 50 ms");
    assert!(n.core().view(ms(50)).primary_host);
    pong(&mut n, 51, third[0]);
    assert_eq!(n.pings()[0], (2, 1));
}

/// Issue 16 item 4: the primary's host crashes; the moment this witness's view of the
/// application turns down (by time alone: its daemon silent for `host_fresh`), the node
/// reports it, without waiting for the next report interval; the standby asks the witnesses
/// again on such a report.
#[test]
fn the_application_down_is_reported_the_moment_the_view_turns() {
    let mut n = node();
    let mut t = 0;
    while t < 100 {
        let fx = n.step(ms(t), Event::Tick);
        if let Some(&nonce) = pings_sent(&fx, 0).first() {
            pong(&mut n, t + 2, nonce);
        }
        app(&mut n, t, ProbeClass::Ok);
        t += 20;
    }
    // Crash at 100 ms: last pong at 82 ms, last application answer at 80 ms.
    for t in [100, 120, 140] {
        n.step(ms(t), Event::Tick);
        app(&mut n, t, ProbeClass::Refused);
    }
    assert_eq!(n.core().view(ms(140)).app, AppVerdict::Failing);
    // The daemon has been silent for `host_fresh` (70 ms) a moment after 152 ms: the node
    // wakes then (the next periodic report is due at 200 ms) and reports at once.
    let (at, fx) = loop {
        let at = n.next_deadline();
        let fx = n.step(at, Event::Tick);
        if reports(&fx).contains(&AppVerdict::Down) || at > ms(1_000) {
            break (at, fx);
        }
    };
    assert_eq!(at, ms(152).plus(Duration::from_millis(1)));
    assert_eq!(
        reports(&fx),
        vec![AppVerdict::Down, AppVerdict::Down],
        "{fx:?}"
    );
    // Once said, it waits for the report interval again.
    let fx = n.step(ms(154), Event::Tick);
    assert!(reports(&fx).is_empty());
}
