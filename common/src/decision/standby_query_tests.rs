//! Unit tests of how long the standby's witness queries wait (`query_wait`): late answers
//! lengthen the next query's wait, prompt ones bring it back, and it stays bounded.

use super::*;
use crate::decision::proto::WitnessView;

fn ms(t: u64) -> Nanos {
    Nanos(t * 1_000_000)
}

fn grant(witness: u8, query: QueryId, cfg: &Config) -> Input {
    Input::Vote(Vote {
        witness,
        query,
        epoch: Epoch(1),
        verdict: Verdict::Grant,
        duration: cfg.lease.duration,
        view: WitnessView {
            app: AppVerdict::Down,
            primary_host: false,
            standby_host: true,
            rates: Rates::default(),
        },
        unprotected_after: None,
    })
}

/// Tick every millisecond from `*t` until the core asks the witnesses; the query's number.
fn next_query(c: &mut StandbyCore, t: &mut u64) -> QueryId {
    for _ in 0..5_000 {
        *t += 1;
        for a in c.step(ms(*t), Input::Tick) {
            if let Action::QueryWitnesses(r) = a {
                return r.query;
            }
        }
    }
    panic!("no witness query by {} ms: {:?}", *t, c.state());
}

/// A standby whose primary went silent at 0 ms (its last heartbeat), with a replica.
fn silent_primary(cfg: &Config) -> StandbyCore {
    let mut c = StandbyCore::new(cfg.clone(), Epoch(1), ms(0), Some(5));
    let _ = c.step(
        ms(0),
        Input::Heartbeat {
            link: 0,
            epoch: Epoch(1),
        },
    );
    c
}

/// The witnesses (or the paths to them, or this host: starved) answer 150 ms after a query
/// that waits 100 ms: the first query ends unanswered and its votes come too late. Those late
/// votes are not counted (the query was withdrawn), but the next query waits long enough for
/// such answers, and a quorum of them activates. (With a fixed wait, every query would end
/// before its votes came, and the standby would never take over.)
#[test]
fn late_votes_lengthen_the_next_query_and_then_count() {
    let cfg = Config::default();
    let mut c = silent_primary(&cfg);
    let mut t = 0;
    let q1 = next_query(&mut c, &mut t);
    let sent = t;
    assert_eq!(c.query_wait(), cfg.query_timeout);
    let mut withdrawn = false;
    while t < sent + 150 {
        t += 1;
        withdrawn |= c
            .step(ms(t), Input::Tick)
            .iter()
            .any(|a| matches!(a, Action::Withdraw(w) if w.query == q1));
    }
    assert!(withdrawn, "the first query ends at its deadline");
    for w in 1..=3 {
        let out = c.step(ms(t), grant(w, q1, &cfg));
        assert!(
            !out.iter().any(|a| matches!(a, Action::Activate { .. })),
            "a late vote is never counted"
        );
    }
    assert_eq!(
        c.query_wait(),
        Duration::from_millis(225),
        "150 ms and half again"
    );
    let q2 = next_query(&mut c, &mut t);
    assert_ne!(q1, q2);
    let sent = t;
    while t < sent + 150 {
        t += 1;
        let out = c.step(ms(t), Input::Tick);
        assert!(
            !out.iter()
                .any(|a| matches!(a, Action::Withdraw(w) if w.query == q2)),
            "the second query still waits at {} ms",
            t - sent
        );
    }
    for w in 1..=2 {
        let _ = c.step(ms(t), grant(w, q2, &cfg));
    }
    assert!(
        matches!(c.state(), State::Waiting | State::Activated),
        "a quorum of the second query's votes: {:?}",
        c.state()
    );
}

/// The wait never exceeds half of what a vote is worth, however late an answer; answers that
/// come promptly again bring it back to `query-timeout`.
#[test]
fn the_wait_is_bounded_and_comes_back() {
    let cfg = Config::default();
    let mut c = silent_primary(&cfg);
    let l = &cfg.lease;
    let max = (l.duration - l.margin(l.duration)) / 2;
    assert_eq!(c.query_wait_max(), max);
    assert!(max > cfg.query_timeout);
    c.note_round_trip(Duration::from_secs(3600), true);
    assert_eq!(c.query_wait(), max);
    // A later, less late answer does not shorten it; a query's prompt answers do.
    c.note_round_trip(Duration::from_millis(200), true);
    assert_eq!(c.query_wait(), max);
    c.note_round_trip(Duration::from_millis(10), false);
    assert_eq!(c.query_wait(), cfg.query_timeout);
    // Through the core: a query answered promptly (two refusals, one grant) sets it.
    c.note_round_trip(Duration::from_millis(400), true);
    let mut t = 0;
    let q = next_query(&mut c, &mut t);
    for w in 1..=3 {
        let _ = c.step(
            ms(t + 5),
            Input::Vote(Vote {
                verdict: Verdict::Refuse(RefuseReason::NotYet(Duration::from_millis(5))),
                ..match grant(w, q, &cfg) {
                    Input::Vote(v) => v,
                    _ => unreachable!(),
                }
            }),
        );
    }
    assert_eq!(c.query_wait(), cfg.query_timeout, "answered in 5 ms");
}
