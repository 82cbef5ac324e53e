//! Unit tests of `record`.

use super::*;
use crate::decision::json;
use crate::decision::proto::RefuseReason;

fn samples() -> Vec<AnyInput> {
    let view = WitnessView {
        app: AppVerdict::Down,
        primary_host: false,
        standby_host: true,
        rates: Rates::default(),
    };
    let lossy = WitnessView {
        app: AppVerdict::Lossy,
        primary_host: true,
        standby_host: true,
        rates: Rates {
            app: Some(24),
            primary: Some(0),
            standby: Some(100),
        },
    };
    vec![
        AnyInput::Standby(standby::Input::Heartbeat {
            link: 1,
            epoch: Epoch(3),
        }),
        AnyInput::Standby(standby::Input::Report(WitnessReport {
            witness: 2,
            epoch: Epoch(1),
            view,
            unprotected_after: Some(9),
        })),
        AnyInput::Standby(standby::Input::Vote(Vote {
            witness: 3,
            query: 4,
            epoch: Epoch(1),
            verdict: Verdict::Refuse(RefuseReason::NotYet(Duration::from_millis(12))),
            duration: Duration::ZERO,
            view,
            unprotected_after: None,
        })),
        AnyInput::Standby(standby::Input::Report(WitnessReport {
            witness: 3,
            epoch: Epoch(2),
            view: lossy,
            unprotected_after: None,
        })),
        AnyInput::Standby(standby::Input::ReplicaApplied {
            ckpt: 77,
            epoch: Epoch(1),
        }),
        AnyInput::Standby(standby::Input::Ping { ok: false }),
        AnyInput::Standby(standby::Input::OperatorForce),
        AnyInput::Standby(standby::Input::Operator {
            ask: standby::OperatorAsk::Switchover,
            force: false,
        }),
        AnyInput::Standby(standby::Input::Maintenance { on: true }),
        AnyInput::Standby(standby::Input::HigherEpoch { epoch: Epoch(5) }),
        AnyInput::Standby(standby::Input::PrimaryFenced {
            epoch: Epoch(2),
            ckpt: 8,
        }),
        AnyInput::Standby(standby::Input::Resynced {
            epoch: Epoch(2),
            ckpt: 0,
        }),
        AnyInput::Standby(standby::Input::StreamProgress),
        AnyInput::Standby(standby::Input::Tick),
        AnyInput::Primary(primary::Input::CheckpointSent { ckpt: 1 }),
        AnyInput::Primary(primary::Input::Ack {
            ckpt: 1,
            epoch: Epoch(1),
        }),
        AnyInput::Primary(primary::Input::LeaseReply(LeaseReply {
            witness: 1,
            req: 2,
            epoch: Epoch(1),
            verdict: Verdict::Grant,
            duration: Duration::from_secs(2),
        })),
        AnyInput::Primary(primary::Input::HigherEpoch { epoch: Epoch(2) }),
        AnyInput::Primary(primary::Input::FenceRequest { epoch: Epoch(2) }),
        AnyInput::Primary(primary::Input::StandbyAlive {
            epoch: Epoch(1),
            applied: Some(41),
            heard: 12_345,
            stream: 12_000,
        }),
        AnyInput::Primary(primary::Input::StandbyAlive {
            epoch: Epoch(3),
            applied: None,
            heard: 0,
            stream: 0,
        }),
        AnyInput::Primary(primary::Input::Tick),
        AnyInput::Witness(witness::Input::Probe {
            target: ProbeTarget::StandbyHost,
            class: ProbeClass::AppError,
            took: Duration::ZERO,
        }),
        AnyInput::Witness(witness::Input::Probe {
            target: ProbeTarget::PrimaryApp,
            class: ProbeClass::Timeout,
            took: Duration::from_millis(50),
        }),
        AnyInput::Witness(witness::Input::Stalled {
            since: Nanos::from_millis(1_250),
        }),
        AnyInput::Witness(witness::Input::VoteRequest(VoteRequest {
            epoch: Epoch(1),
            query: 3,
            kind: VoteKind::Switchover,
        })),
        AnyInput::Witness(witness::Input::LeaseRequest(LeaseRequest {
            epoch: Epoch(1),
            req: 3,
            last_acked: 12,
            last_sent: 15,
        })),
        AnyInput::Witness(witness::Input::Withdraw(Withdraw {
            epoch: Epoch(2),
            query: 3,
        })),
        AnyInput::Witness(witness::Input::Protected(ProtectedNotice {
            epoch: Epoch(1),
            acked: 13,
        })),
        AnyInput::Witness(witness::Input::Tick),
    ]
}

#[test]
fn text_and_json_round_trip() {
    let d = Defaults {
        epoch: Epoch(9),
        lease: Duration::from_secs(1),
    };
    for i in samples() {
        let text = i.to_text();
        let mut tokens = text.split_whitespace();
        let name = tokens.next().expect("name");
        let mut f = Fields::from_tokens(tokens).expect("tokens");
        assert_eq!(AnyInput::parse(i.role(), name, &mut f, d), Ok(i), "{text}");

        let line = i.to_json_line(Nanos(5));
        let v = json::parse(&line).expect("json");
        let mut f = Fields::from_json(&v, &["k", "t", "role", "in"]).expect("fields");
        let name = v.get("in").and_then(json::Value::as_text).expect("in");
        assert_eq!(AnyInput::parse(i.role(), &name, &mut f, d), Ok(i), "{line}");
    }
}

#[test]
fn defaults_and_errors() {
    let d = Defaults {
        epoch: Epoch(4),
        lease: Duration::from_secs(1),
    };
    let mut f = Fields::from_tokens("w=1 query=2 verdict=grant".split(' ')).expect("tokens");
    let AnyInput::Standby(standby::Input::Vote(v)) =
        AnyInput::parse(Role::Standby, "vote", &mut f, d).expect("vote")
    else {
        panic!("not a vote")
    };
    assert_eq!(
        (v.epoch, v.duration, v.view.app),
        (Epoch(4), Duration::from_secs(1), AppVerdict::Down)
    );
    let err = |role, name, text: &str| {
        let mut f = Fields::from_tokens(text.split_whitespace()).expect("tokens");
        AnyInput::parse(role, name, &mut f, d).expect_err(text)
    };
    assert_eq!(
        err(Role::Standby, "vote", "w=1 query=2"),
        FieldError::Missing("verdict")
    );
    assert_eq!(
        err(Role::Standby, "heartbeat", "link=0 x=1"),
        FieldError::Unknown("x".into())
    );
    assert_eq!(
        err(Role::Standby, "nope", ""),
        FieldError::UnknownInput("nope".into())
    );
    assert!(matches!(
        err(Role::Witness, "probe", "target=x class=ok"),
        FieldError::Bad { .. }
    ));
    assert!(matches!(
        err(Role::Standby, "heartbeat", "link=300"),
        FieldError::Bad { .. }
    ));
    assert!(Fields::from_tokens(["novalue"].into_iter()).is_err());
}
