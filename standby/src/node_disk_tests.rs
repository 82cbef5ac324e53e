//! Unit tests of the standby node's disk decisions (`node_disk.rs`), with the node tests'
//! harness: a disk that fails is never acknowledged and its session is refused; after a failed
//! apply the replica cannot be activated until a resynchronisation; an activation forks the
//! disk before the host state is written, and a disk that cannot fork activates nothing; a
//! primary whose disk is not this one's size is refused.

use super::*;

fn with_disk(failover: bool) -> Harness {
    let mut h = Harness::new(failover);
    h.node = StandbyNode::new(
        NodeConfig {
            disk_size: 64 << 20,
            ..config(failover)
        },
        host(),
        Nanos(0),
    );
    h
}

fn disk_hello() -> Hello {
    Hello {
        disk: msg::DiskHello {
            size: 64 << 20,
            ..msg::DiskHello::default()
        },
        ..hello("primary", 1, 1, 7, 2048)
    }
}

fn applied(h: &mut Harness, slot: usize, ckpt: u64) {
    h.feed(Event::Applied {
        slot,
        ckpt,
        full: ckpt == 1,
        pages: 1,
        bytes: 1,
        took: Duration::ZERO,
    });
}

fn acks(h: &Harness) -> usize {
    h.effects
        .iter()
        .filter(|e| matches!(e, Effect::Ack { .. }))
        .count()
}

#[test]
fn a_disk_that_fails_applying_is_never_acknowledged_and_the_replica_is_unusable() {
    let mut h = with_disk(false);
    let slot = h.session(disk_hello());
    applied(&mut h, slot, 1);
    applied(&mut h, slot, 2);
    assert_eq!(acks(&h), 2);
    h.feed(Event::DiskFailed {
        slot,
        ckpt: Some(3),
        error: "disk image: write: No space left on device".into(),
        out_of_space: true,
    });
    assert_eq!(acks(&h), 2, "checkpoint 3 is not acknowledged");
    match &h.effects[h.effects.len() - 2..] {
        [Effect::Refuse { slot: s, reason }, Effect::Discard] => {
            assert_eq!(*s, slot);
            assert!(reason.starts_with("the standby's disk failed"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(h.node.current(), None);
    assert_eq!(h.node.slot(slot).map(|s| s.stage), Some(Stage::Closing));
    assert_eq!(h.node.stats().connections_refused, 1);
    assert_eq!(h.node.applied(), None);
    assert_eq!(h.node.state_name(), "waiting-for-primary");
    // Nothing to activate from: the disk is neither checkpoint 2 nor 3.
    h.feed(Event::Operator {
        conn: 1,
        cmd: OperatorCmd::Activate { force: false },
    });
    assert!(h.answers()[0].starts_with("error: nothing to activate"));
    assert!(!h
        .effects
        .iter()
        .any(|e| matches!(e, Effect::ForkDisk { .. } | Effect::RecordHost { .. })));
    // A late frame's failure on a closed session changes nothing more.
    h.feed(Event::DiskFailed {
        slot,
        ckpt: None,
        error: "late".into(),
        out_of_space: false,
    });
    assert_eq!(h.node.stats().connections_refused, 1);
}

#[test]
fn a_resynchronisation_that_fails_leaves_the_replica_at_its_checkpoint() {
    let mut h = with_disk(false);
    let slot = h.session(disk_hello());
    applied(&mut h, slot, 1);
    // The next session's resynchronisation copies are staged beside the image: its failure
    // leaves the replica at checkpoint 1.
    let slot = h.session(Hello {
        incarnation: 2,
        nonce: [9; 16],
        ..disk_hello()
    });
    h.feed(Event::DiskFailed {
        slot,
        ckpt: None,
        error: "disk image.resync: write: EIO".into(),
        out_of_space: false,
    });
    assert_eq!(h.node.current(), None);
    assert_eq!(h.node.applied(), Some(1));
}

#[test]
fn an_activation_forks_the_disk_before_the_host_state_is_written() {
    let mut h = with_disk(false);
    let slot = h.session(disk_hello());
    applied(&mut h, slot, 5);
    h.effects.clear();
    h.feed(Event::Operator {
        conn: 4,
        cmd: OperatorCmd::Activate { force: false },
    });
    let order: Vec<&str> = h
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::ForkDisk { ckpt } => {
                assert_eq!(*ckpt, 5);
                Some("fork")
            }
            Effect::RecordHost { .. } => Some("record"),
            Effect::Activate { .. } => Some("activate"),
            _ => None,
        })
        .collect();
    assert_eq!(order, ["fork", "record", "activate"]);
    assert_eq!(h.node.activated(), Some(5));
}

#[test]
fn a_disk_that_cannot_fork_activates_nothing() {
    let mut h = with_disk(false);
    let slot = h.session(disk_hello());
    applied(&mut h, slot, 5);
    h.fork_ok = false;
    h.feed(Event::Operator {
        conn: 4,
        cmd: OperatorCmd::Activate { force: false },
    });
    assert_eq!(h.node.activated(), None);
    assert_eq!(
        h.node.host().role,
        NodeRole::Standby,
        "the host state unchanged"
    );
    assert_eq!(h.node.current(), Some(slot), "still replicating");
    assert!(!h
        .effects
        .iter()
        .any(|e| matches!(e, Effect::RecordHost { .. } | Effect::Activate { .. })));
    assert!(h.answers()[0].starts_with("error: activation failed: not activated"));
    // It can be tried again.
    h.fork_ok = true;
    h.feed(Event::Operator {
        conn: 5,
        cmd: OperatorCmd::Activate { force: false },
    });
    assert_eq!(h.node.activated(), Some(5));
}

#[test]
fn a_primary_whose_disk_is_another_size_is_refused() {
    let mut h = with_disk(false);
    let slot = h.connect(1).expect("a slot");
    h.feed(Event::Hello {
        slot,
        hello: hello("primary", 1, 1, 7, 2048),
    });
    match h.last() {
        Some(Effect::AnswerHello {
            refuse: Some(why), ..
        }) => assert!(why.contains("disk size mismatch"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(h.node.slot(slot).map(|s| s.stage), Some(Stage::Closing));
}
