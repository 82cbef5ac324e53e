//! Unit tests of `datagram`.

use super::*;
use crate::decision::Epoch;
use crate::msg::Ack;

fn key() -> ClusterKey {
    ClusterKey::from_bytes([9; 32])
}

const W3: Sender = Sender {
    role: Role::Witness,
    id: 3,
};
const STANDBY: Sender = Sender {
    role: Role::Standby,
    id: 77,
};
const PRIMARY: Sender = Sender {
    role: Role::Primary,
    id: 55,
};

fn dgram(out: &mut Outbox, to: Sender, ckpt: u64) -> Vec<u8> {
    let mut b = [0u8; MAX_DATAGRAM];
    let n = out
        .seal(
            Kind::Witness,
            &Ack {
                ckpt,
                epoch: Epoch(1),
            },
            Some(Dest::node(to)),
            &mut b,
        )
        .expect("seal");
    b[..n].to_vec()
}

#[test]
fn round_trip_replay_and_restart() {
    let mut out = Outbox::new(&key(), W3, 100, 5);
    let mut inbox = Inbox::new(&key(), STANDBY);
    let b1 = dgram(&mut out, STANDBY, 1);
    let b2 = dgram(&mut out, STANDBY, 2);
    let (k, env, rest) = inbox.open(&b1).unwrap();
    assert_eq!((k, env.from, env.epoch), (Kind::Witness, W3, 5));
    assert_eq!(env.to, Some(Dest::node(STANDBY)));
    assert_eq!(
        decode::<Ack>(k, rest).unwrap(),
        Ack {
            ckpt: 1,
            epoch: Epoch(1)
        }
    );
    inbox.open(&b2).unwrap();
    assert_eq!(inbox.open(&b1).unwrap_err(), DatagramError::Replay);
    // A restart (a higher incarnation) is accepted; the old incarnation never again.
    let mut out2 = Outbox::new(&key(), W3, 101, 5);
    inbox.open(&dgram(&mut out2, STANDBY, 3)).unwrap();
    assert_eq!(
        inbox.open(&dgram(&mut out, STANDBY, 4)).unwrap_err(),
        DatagramError::OldIncarnation
    );
}

/// Regression (issue: one replayed datagram silences a witness): a datagram captured from an
/// earlier incarnation of a witness, replayed to a receiver that restarted, used to be taken
/// as a restart of the witness, after which every live datagram was dropped as "from an
/// earlier incarnation". Whatever the order, the live incarnation wins.
#[test]
fn a_replayed_old_incarnation_never_displaces_the_live_one() {
    let mut old = Outbox::new(&key(), W3, next_incarnation(None, 1_000), 1);
    let captured = dgram(&mut old, STANDBY, 1);
    // Ten restarts of the witness later (each above the last saved incarnation).
    let mut inc = old.incarnation();
    for _ in 0..10 {
        inc = next_incarnation(Some(inc), 900);
    }
    let mut live = Outbox::new(&key(), W3, inc, 1);
    // The receiver (restarted: it knows nobody) hears the live witness first, then the replay.
    let mut inbox = Inbox::new(&key(), STANDBY);
    inbox.open(&dgram(&mut live, STANDBY, 2)).unwrap();
    assert_eq!(
        inbox.open(&captured).unwrap_err(),
        DatagramError::OldIncarnation
    );
    for i in 3..100 {
        inbox
            .open(&dgram(&mut live, STANDBY, i))
            .expect("live accepted");
    }
    // The replay first, then the live witness: the live one replaces it.
    let mut inbox = Inbox::new(&key(), STANDBY);
    inbox.open(&captured).unwrap();
    for i in 100..200 {
        inbox
            .open(&dgram(&mut live, STANDBY, i))
            .expect("live accepted");
    }
    assert_eq!(
        inbox.open(&captured).unwrap_err(),
        DatagramError::OldIncarnation
    );
}

#[test]
fn incarnations_grow_across_restarts_even_when_the_clock_goes_back() {
    assert_eq!(next_incarnation(None, 5_000), 5_000);
    assert_eq!(
        next_incarnation(Some(5_000), 4_000),
        5_001,
        "clock went back"
    );
    assert_eq!(next_incarnation(Some(5_000), 9_000), 9_000);
    assert_eq!(next_incarnation(Some(u64::MAX), 0), u64::MAX);
    assert!(wall_clock_micros() > 1_700_000_000_000_000);
}

/// Regression (issue item 9): a genuine witness datagram addressed to the primary, re-sent
/// to the standby, was accepted (205 of 205). The destination is under the MAC now.
#[test]
fn a_datagram_for_another_node_is_rejected() {
    let mut out = Outbox::new(&key(), W3, 1, 1);
    let to_primary = dgram(&mut out, PRIMARY, 1);
    let mut standby = Inbox::new(&key(), STANDBY);
    assert_eq!(
        standby.open(&to_primary).unwrap_err(),
        DatagramError::Misaddressed
    );
    // Another standby (another node id) does not take this standby's datagrams either.
    let other = Sender {
        role: Role::Standby,
        id: 78,
    };
    let mut b = [0u8; MAX_DATAGRAM];
    let n = out
        .seal(
            Kind::Witness,
            &Ack {
                ckpt: 2,
                epoch: Epoch(1),
            },
            Some(Dest::node(STANDBY)),
            &mut b,
        )
        .unwrap();
    assert_eq!(
        Inbox::new(&key(), other).open(&b[..n]).unwrap_err(),
        DatagramError::Misaddressed
    );
    // A datagram for "the standby" (id not known yet) is taken by a standby.
    let n = out
        .seal(
            Kind::Witness,
            &Ack {
                ckpt: 3,
                epoch: Epoch(1),
            },
            Some(Dest::role(Role::Standby)),
            &mut b,
        )
        .unwrap();
    assert!(Inbox::new(&key(), other).open(&b[..n]).is_ok());
    // After activation the standby takes datagrams for the primary role.
    let mut act = Inbox::new(&key(), STANDBY);
    act.set_role(Role::Primary);
    let for_p = dgram(
        &mut out,
        Sender {
            role: Role::Primary,
            id: 77,
        },
        4,
    );
    assert!(act.open(&for_p).is_ok());
}

/// Sequence numbers are per destination: datagrams to other nodes leave no gaps in a
/// receiver's window, and reordering is tolerated per destination.
#[test]
fn reordered_datagrams_are_accepted_once_within_the_window() {
    let mut out = Outbox::new(&key(), W3, 1, 1);
    let mut inbox = Inbox::new(&key(), STANDBY);
    let frames: Vec<Vec<u8>> = (0..400)
        .map(|i| {
            // Interleaved with traffic to the primary, which must not use up the window.
            let _ = dgram(&mut out, PRIMARY, i);
            dgram(&mut out, STANDBY, i)
        })
        .collect();
    inbox.open(&frames[5]).unwrap();
    inbox.open(&frames[3]).unwrap(); // overtaken: accepted
    inbox.open(&frames[4]).unwrap();
    assert_eq!(inbox.open(&frames[3]).unwrap_err(), DatagramError::Replay);
    inbox.open(&frames[300]).unwrap();
    inbox.open(&frames[60]).unwrap(); // 240 behind: still in the window
    inbox.open(&frames[100]).unwrap();
    assert_eq!(
        inbox.open(&frames[40]).unwrap_err(),
        DatagramError::Replay,
        "beyond the window"
    );
    assert_eq!(inbox.open(&frames[300]).unwrap_err(), DatagramError::Replay);
    inbox.open(&frames[301]).unwrap();
    inbox.open(&frames[399]).unwrap();
    for f in &frames[250..=399] {
        let _ = inbox.open(f);
    }
    for f in &frames[250..=399] {
        assert_eq!(inbox.open(f).unwrap_err(), DatagramError::Replay);
    }
}

#[test]
fn window_shift_keeps_bits_across_words() {
    let mut w = Window::first(1000);
    for s in [999, 990, 940, 900, 800] {
        w.accept(s).unwrap();
    }
    w.accept(1070).unwrap(); // shift by 70: crosses a word
    for s in [1070, 1000, 999, 990, 940, 900] {
        assert!(w.accept(s).is_err(), "{s} seen");
    }
    for s in [1069, 1001, 901, 816] {
        w.accept(s).expect("unseen, within the window");
    }
    assert!(w.accept(814).is_err(), "beyond the window");
    w.accept(1070 + 128).unwrap(); // exactly two words
    assert!(w.accept(1070).is_err());
    assert!(w.accept(1069).is_err());
    w.accept(1068).unwrap();
    w.accept(5000).unwrap(); // far: everything older is gone
    assert!(w.accept(1068 + 2000).is_err());
}

#[test]
fn forged_truncated_and_wrong_key_are_rejected() {
    let mut out = Outbox::new(&key(), PRIMARY, 1, 1);
    let mut b = [0u8; MAX_DATAGRAM];
    let n = out
        .seal(
            Kind::Heartbeat,
            &Ack {
                ckpt: 1,
                epoch: Epoch(1),
            },
            Some(Dest::node(STANDBY)),
            &mut b,
        )
        .unwrap();
    let mut inbox = Inbox::new(&ClusterKey::from_bytes([8; 32]), STANDBY);
    assert_eq!(
        inbox.open(&b[..n]).unwrap_err(),
        DatagramError::Frame(FrameError::BadMac)
    );
    let mut inbox = Inbox::new(&key(), STANDBY);
    assert!(matches!(
        inbox.open(&b[..n - 1]),
        Err(DatagramError::Frame(FrameError::Truncated { .. }))
    ));
    let mut f = b;
    f[n - 1] ^= 1;
    assert!(inbox.open(&f[..n]).is_err());
    assert!(inbox.open(&b[..n]).is_ok());
}

#[test]
fn destinations_and_senders_are_bounded() {
    let mut out = Outbox::new(&key(), PRIMARY, 1, 1);
    let mut b = [0u8; MAX_DATAGRAM];
    for id in 0..MAX_DESTINATIONS as u32 {
        let to = Dest::node(Sender {
            role: Role::Witness,
            id,
        });
        out.seal(
            Kind::Witness,
            &Ack {
                ckpt: 1,
                epoch: Epoch(1),
            },
            Some(to),
            &mut b,
        )
        .unwrap();
    }
    let to = Dest::node(Sender {
        role: Role::Witness,
        id: 999,
    });
    assert_eq!(
        out.seal(
            Kind::Witness,
            &Ack {
                ckpt: 1,
                epoch: Epoch(1)
            },
            Some(to),
            &mut b
        ),
        Err(SealError::TooManyDestinations)
    );
    let mut inbox = Inbox::new(&key(), STANDBY);
    for id in 0..MAX_SENDERS as u32 + 1 {
        let mut o = Outbox::new(
            &key(),
            Sender {
                role: Role::Witness,
                id,
            },
            1,
            1,
        );
        let d = dgram(&mut o, STANDBY, 1);
        let r = inbox.open(&d).map(|_| ());
        if (id as usize) < MAX_SENDERS {
            r.unwrap();
        } else {
            assert_eq!(r.unwrap_err(), DatagramError::TooManySenders);
        }
    }
}

#[test]
fn node_sender_ids_are_stable_and_tell_the_usual_nodes_apart() {
    assert_eq!(node_sender_id("host-a"), node_sender_id("host-a"));
    // FNV-1a of "a" (0xaf63dc4c8601ec8c): the low 32 bits, so ids stay stable across builds.
    assert_eq!(node_sender_id("a"), 0x8601_ec8c);
    let names = [
        "primary",
        "standby",
        "host-a",
        "host-b",
        "host-a-standby",
        "host-b-primary",
    ];
    for (i, a) in names.iter().enumerate() {
        for b in &names[i + 1..] {
            assert_ne!(node_sender_id(a), node_sender_id(b), "{a} and {b}");
        }
    }
}

/// A node that changed role (a standby that activated) drops what was on its way to its former
/// role as such, not as a datagram for another node: it is expected for a moment after every
/// failover, and was logged as a WARN burst at each activation.
#[test]
fn a_datagram_for_this_node_s_former_role_is_told_apart() {
    let mut out = Outbox::new(&key(), W3, 1, 1);
    let to_standby = dgram(&mut out, STANDBY, 1);
    let b_as_primary = Sender {
        role: Role::Primary,
        id: STANDBY.id,
    };
    let to_primary = dgram(&mut out, b_as_primary, 2);
    let mut b = Inbox::new(&key(), STANDBY);
    b.set_role(Role::Primary);
    assert_eq!(b.open(&to_standby).unwrap_err(), DatagramError::FormerRole);
    // A datagram for another node is still misaddressed, and one for its new role is taken.
    let other = Sender {
        role: Role::Standby,
        id: STANDBY.id + 1,
    };
    let to_other = dgram(&mut out, other, 3);
    assert_eq!(b.open(&to_other).unwrap_err(), DatagramError::Misaddressed);
    assert!(b.open(&to_primary).is_ok(), "its new role's datagrams");
    // Both count as misaddressed in the counters.
    assert_eq!(DatagramError::FormerRole.counter(), "misaddressed");
    // Bounded: past FORMER_ROLE_QUIET, replays addressed to the former role are misaddressed
    // (and logged as such) again.
    let mut quiet = 1; // the first one above
    let mut n = 10;
    loop {
        let d = dgram(&mut out, STANDBY, n);
        n += 1;
        match b.open(&d).unwrap_err() {
            DatagramError::FormerRole => quiet += 1,
            DatagramError::Misaddressed => break,
            e => panic!("{e}"),
        }
    }
    assert_eq!(quiet, FORMER_ROLE_QUIET);
}
