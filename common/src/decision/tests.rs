//! Unit tests of `decision`.

use super::*;

#[test]
fn durations_round_trip() {
    for (t, ns) in [
        ("50ms", 50_000_000u64),
        ("1.5s", 1_500_000_000),
        ("250us", 250_000),
        ("7ns", 7),
        ("7", 7),
        ("0", 0),
        ("0.25ms", 250_000),
    ] {
        let d = parse_duration(t).expect(t);
        assert_eq!(nanos_of(d), ns, "{t}");
        assert_eq!(parse_duration(&format_duration(d)), Some(d));
    }
    for bad in [
        "",
        "ms",
        "1.x",
        "5m",
        "1.0000000001s",
        "99999999999999999999999s",
    ] {
        assert_eq!(parse_duration(bad), None, "{bad}");
    }
}

#[test]
fn quorum_is_strict_majority() {
    for (n, q) in [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (15, 8)] {
        let ids: Vec<u8> = (0..n).collect();
        assert_eq!(WitnessSet::new(&ids).expect("set").quorum(), q as usize);
    }
    assert!(WitnessSet::new(&[]).is_err());
    assert!(WitnessSet::new(&[1, 1]).is_err());
    assert!(WitnessSet::new(&(0..16).collect::<Vec<u8>>()).is_err());
}

/// Each rule of `Config::check`: the pairs that break it, the key blamed and what it says.
#[test]
fn check_refuses_what_cannot_work() {
    for (pairs, key, says) in [
        (
            &[("witnesses", "1,2")][..],
            "witnesses",
            "an odd number of witnesses, at least 3 (got 2)",
        ),
        (&[("witnesses", "1,2,3,4")], "witnesses", "an odd number"),
        (&[("witnesses", "7")], "witnesses", "at least 3 (got 1)"),
        (
            &[("hb-interval", "0")],
            "hb-interval",
            "at least 1ms (with 0, heartbeats would be sent in a busy loop)",
        ),
        (&[("hb-interval", "999us")], "hb-interval", "at least 1ms"),
        (&[("hb-timeout", "0")], "hb-timeout", "at least 1ms"),
        (
            &[("hb-interval", "50ms")],
            "hb-timeout",
            "at least twice hb-interval (50ms)",
        ),
        (
            &[("hb-interval", "30ms"), ("hb-timeout", "59ms")],
            "hb-timeout",
            "at least twice",
        ),
        (&[("hb-calm", "0")], "hb-calm", "at least 1ms"),
        (
            &[("hb-calm", "49ms")],
            "hb-calm",
            "at least hb-timeout (50ms)",
        ),
        (
            &[("hb-max-backoff", "0")],
            "hb-max-backoff",
            "an integer from 1 to 64",
        ),
        (
            &[("hb-trust-after", "0")],
            "hb-trust-after",
            "an integer from 1 to 100",
        ),
        (&[("hb-links", "0")], "hb-links", "an integer from 1 to 4"),
        (&[("lease", "0")], "lease", "at least 1ms"),
        (
            &[("lease", "10ms")],
            "lease",
            "a lease more than twice its drift margin (5100us",
        ),
        (
            &[("lease", "1s"), ("drift-ppm", "500000")],
            "lease",
            "more than twice its drift margin",
        ),
        (
            &[("lease-max", "1s")],
            "lease-max",
            "at least the lease duration (2s)",
        ),
        (&[("drift-fixed", "0")], "drift-fixed", "at least 1ms"),
        (
            &[("drift-ppm", "500001")],
            "drift-ppm",
            "an integer from 0 to 500000",
        ),
        (&[("ack-lease", "0")], "ack-lease", "at least 1ms"),
        (
            &[("ack-lease", "5ms")],
            "ack-lease",
            "longer than its drift margin (5050us)",
        ),
        (
            &[("ack-lease", "2s")],
            "ack-lease",
            "shorter than the lease less its margin (1975ms)",
        ),
        (
            &[("ack-lease", "1960ms")],
            "ack-lease",
            "the standby waits the last ack lease out",
        ),
        (&[("query-timeout", "0")], "query-timeout", "at least 1ms"),
        (
            &[("query-timeout", "1975ms")],
            "query-timeout",
            "votes must still be valid",
        ),
        (&[("requery-min", "0")], "requery-min", "at least 1ms"),
        (&[("requery-max", "0")], "requery-max", "at least 1ms"),
        (
            &[("requery-max", "10ms")],
            "requery-max",
            "at least requery-min (20ms)",
        ),
        (
            &[("report-fresh", "0")],
            "report-fresh",
            "every report would be stale",
        ),
        (&[("switchover-hold", "0")], "switchover-hold", "anti-flap"),
        (&[("host-fresh", "0")], "host-fresh", "at least 1ms"),
        (&[("ping-interval", "0")], "ping-interval", "busy loop"),
        (
            &[("app-down-failures", "0")],
            "app-down-failures",
            "an integer from 1 to 1000",
        ),
        (
            &[("standby-timeout", "0")],
            "standby-timeout",
            "at least 1ms",
        ),
        (
            &[("standby-timeout", "19ms")],
            "standby-timeout",
            "at least two heartbeat periods (20ms)",
        ),
        (
            &[("slow-standby", "sometimes")],
            "slow-standby",
            "wait (keep protection) or lease (availability)",
        ),
        (&[("rate-window", "0")], "rate-window", "at least 1ms"),
        (
            &[("gray-below", "0")],
            "gray-below",
            "an integer from 1 to 100",
        ),
        (
            &[("clean-above", "101")],
            "clean-above",
            "an integer from 1 to 100",
        ),
        (
            &[("gray-below", "95")],
            "gray-below",
            "at most clean-above (90)",
        ),
        (
            &[("lossy-below", "95")],
            "lossy-below",
            "at most clean-above (90)",
        ),
    ] {
        let mut c = Config::default();
        let e = c.set_many(pairs).expect_err(key);
        assert_eq!(e.key, key, "{pairs:?}: {e}");
        assert!(e.expected.contains(says), "{pairs:?}: {e}");
        assert_eq!(c, Config::default(), "nothing changes on error");
    }
}

#[test]
fn check_accepts_meaningful_zeros_and_real_configurations() {
    Config::default().check().expect("defaults");
    let mut c = Config::default();
    c.set_many(&[
        ("fence-after", "0"),
        ("app-down-after", "0"),
        ("switchover-min-interval", "0"),
        ("witnesses", "1,2,3,4,5"),
    ])
    .expect("zeros that mean something");
    // The Xen rig's timing (tests/src/bin/hsb-xen-e2e.rs, TCG_TIMING).
    let mut c = Config::default();
    c.set_many(&[
        ("hb-interval", "100ms"),
        ("hb-timeout", "1500ms"),
        ("lease", "6s"),
        ("lease-max", "6s"),
        ("ack-lease", "4s"),
        ("fence-after", "3s"),
        ("query-timeout", "2s"),
        ("requery-min", "200ms"),
        ("requery-max", "2s"),
        ("report-fresh", "3s"),
        ("app-down-after", "1500ms"),
        ("app-down-failures", "3"),
        ("host-fresh", "1500ms"),
        ("drift-fixed", "200ms"),
        ("switchover", "false"),
    ])
    .expect("the rig's timing");
}

#[test]
fn config_fields_round_trip() {
    let mut c = Config::default();
    c.set("policy", "ping-node").expect("policy");
    c.set("witnesses", "4,5,6,7,8").expect("witnesses");
    c.set("lease", "400ms").expect("lease");
    let mut d = Config::default();
    for (k, v) in c.fields() {
        d.set(k, &v).expect(k);
    }
    assert_eq!(c, d);
    assert!(c.set("lease", "1ms").is_err());
    assert!(c.set("nope", "1").is_err());
    assert!(c.set("witnesses", "1,x").is_err());
}
