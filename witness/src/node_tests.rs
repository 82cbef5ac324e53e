//! The witness node's unit tests.

use super::*;
use hsb_common::datagram::Sender;
use hsb_common::decision::proto::{ProbeClass, RefuseReason, VoteKind, VoteRequest};
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
    // The application and the primary daemon stay silent until the witness may vote.
    for t in (0..2_200).step_by(10) {
        n.step(
            ms(t),
            Event::AppProbe {
                class: ProbeClass::Timeout,
                took: Duration::from_millis(50),
                detail: String::new(),
            },
        );
        n.step(ms(t), Event::Tick);
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
                        n.step(
                            ms(t),
                            Event::Datagram {
                                from: addr(),
                                env: env(Role::Primary, 8, 1),
                                msg: Dgram::Pong { nonce },
                            },
                        );
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
