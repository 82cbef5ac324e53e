//! Unit tests of the pre-copy rounds.

use super::*;
use crate::model::{ModelDomain, MIN_PAGES};
use hsb_common::time::Nanos;

#[test]
fn rounds_go_on_while_the_dirty_set_shrinks_to_a_bound() {
    assert!(precopy_again(1, 16384, 4000));
    assert!(!precopy_again(1, 16384, 16384), "not shrinking");
    assert!(!precopy_again(3, 4000, 5000), "growing");
    assert!(
        !precopy_again(2, 4000, PRECOPY_SETTLED_PAGES),
        "small enough"
    );
    assert!(precopy_again(2, 4000, PRECOPY_SETTLED_PAGES + 1));
    assert!(
        !precopy_again(PRECOPY_MAX_ROUNDS, 100_000, 50_000),
        "bounded"
    );
}

/// A pre-copy of a domain whose workload writes `per_step` pages between steps of `budget`
/// pages; returns the stats and whether the staged full sync equals the domain when suspended.
fn precopy(per_step: u64, budget: usize) -> (PrecopyStats, bool) {
    let pages = MIN_PAGES + 4000;
    let mut d = ModelDomain::new(pages, per_step * 1000, 5);
    let mut st = Staging::new(pages);
    let (mut tx, mut rxs) = super::tests::sessions();
    st.start_precopy(&mut d, 1, 1).unwrap();
    let mut t = 0;
    d.run(Nanos::from_millis(t));
    let mut steps = 0;
    while !st.precopy_step(&mut d, budget).unwrap() {
        t += 1;
        d.run(Nanos::from_millis(t));
        steps += 1;
        assert!(steps < 10_000, "bounded");
    }
    t += 1;
    d.run(Nanos::from_millis(t));
    d.suspend().unwrap();
    let stats = st.finish_precopy(&mut d, 1, 1).unwrap();
    let at_suspend = d.digest();
    d.resume().unwrap();
    st.seal(&mut tx).unwrap();
    let mut rep = ModelDomain::blank(pages);
    let mut rx = Receiver::new(pages);
    let b = st.bytes().to_vec();
    super::tests::feed(&mut rx, &mut rxs, &b, &mut rep).unwrap();
    (stats, rep.digest() == at_suspend)
}

#[test]
fn rounds_shrink_the_suspended_copy_of_a_busy_guest() {
    // The workload writes 200 pages while a step copies 256: one pass leaves about 3,000 pages
    // to copy while suspended; rounds bring that down geometrically.
    let (s, exact) = precopy(200, 256);
    assert!(exact, "{s:?}");
    assert!(s.rounds >= 3, "{s:?}");
    assert!(s.recopied < 1000, "{s:?}");
    assert!(s.recopied_running > 2000, "{s:?}");
}

#[test]
fn a_guest_faster_than_the_copy_stops_the_rounds() {
    let (s, exact) = precopy(400, 256);
    assert!(exact, "{s:?}");
    assert!(s.rounds <= 2, "{s:?}");
}

#[test]
fn an_idle_guest_needs_no_round() {
    let (s, exact) = precopy(0, 1 << 20);
    assert!(exact, "{s:?}");
    assert_eq!((s.rounds, s.recopied), (1, 0), "{s:?}");
}
