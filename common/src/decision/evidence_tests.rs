//! Unit tests of `evidence`.

use super::*;
use crate::decision::proto::RefuseReason;
use core::time::Duration;

fn sample() -> Evidence {
    let mut e = Evidence::new(
        Nanos(123_456_789),
        Role::Standby,
        Policy::ClientOriented,
        Rule::QuorumNoAnswer,
        ActionKind::Activate,
        Epoch(1),
    );
    e.new_epoch = Some(Epoch(2));
    e.heartbeat = Some(HeartbeatSummary {
        suspected: true,
        silent_ns: 61_000_000,
        timeout_ns: 50_000_000,
    });
    e.checkpoint = Some(99);
    e.configured = 3;
    e.quorum = 2;
    e.grants = 2;
    e.answers = 3;
    e.push_witness(WitnessSaid {
        id: 1,
        said: SaidKind::Grant,
        reason: None,
        app: AppVerdict::Down,
        primary_host: false,
        standby_host: true,
        rates: Rates::default(),
        unprotected_after: None,
        age_ns: 1_000,
    });
    e.push_witness(WitnessSaid {
        id: 3,
        said: SaidKind::Refuse,
        reason: Some(RefuseReason::LeaseActive(Duration::from_millis(5))),
        app: AppVerdict::Lossy,
        primary_host: true,
        standby_host: true,
        rates: Rates {
            app: Some(23),
            primary: Some(51),
            standby: Some(100),
        },
        unprotected_after: Some(98),
        age_ns: 2_000,
    });
    e
}

#[test]
fn json_round_trip() {
    let e = sample();
    let line = e.to_json_line();
    assert!(!line.contains('\n'));
    assert!(
        line.starts_with("{\"k\":\"evidence\",\"t\":123456789,"),
        "{line}"
    );
    assert_eq!(Evidence::from_json_line(&line), Ok(e.clone()));
    let mut bare = Evidence::new(
        Nanos(0),
        Role::Primary,
        Policy::HeartbeatOnly,
        Rule::NoAuthority,
        ActionKind::Fence,
        Epoch(7),
    );
    bare.forced = true;
    assert_eq!(Evidence::from_json_line(&bare.to_json_line()), Ok(bare));
    assert!(e
        .to_string()
        .starts_with("rule1:quorum-no-answer -> activate epoch 2 (grants 2/3"));
}

#[test]
fn bad_lines_are_typed_errors() {
    let line = sample().to_json_line();
    assert!(matches!(
        Evidence::from_json_line(&line[..20]),
        Err(EvidenceError::Json(_))
    ));
    let wrong = line.replace("rule1:quorum-no-answer", "rule9:nope");
    assert_eq!(
        Evidence::from_json_line(&wrong),
        Err(EvidenceError::Field {
            key: "rule",
            expected: "a rule name"
        })
    );
    let wrong = line.replace("\"grants\":2", "\"grants\":300");
    assert!(matches!(
        Evidence::from_json_line(&wrong),
        Err(EvidenceError::Field { key: "grants", .. })
    ));
    let wrong = line.replace("\"app_rate\":23", "\"app_rate\":101");
    assert_ne!(wrong, line);
    assert!(matches!(
        Evidence::from_json_line(&wrong),
        Err(EvidenceError::Field {
            key: "app_rate",
            ..
        })
    ));
    // A line from before the rates were recorded still reads (rates unknown).
    let old = line
        .replace(",\"app_rate\":23", "")
        .replace(",\"primary_rate\":51", "")
        .replace(",\"standby_rate\":100", "");
    let back = Evidence::from_json_line(&old).expect("old line");
    assert_eq!(back.witnesses[1].rates, Rates::default());
}

#[test]
fn every_rule_name_is_unique_and_parses() {
    for r in Rule::ALL {
        assert_eq!(Rule::parse(r.name()), Some(*r));
        assert_eq!(Rule::ALL.iter().filter(|x| x.name() == r.name()).count(), 1);
    }
}
