//! Unit tests of the replication session: framing, acks, reading and writing.

use super::*;
use crate::decision::Epoch;
use crate::msg::{Ack, Role};

fn pair() -> (Session, Session) {
    let k = ClusterKey::from_bytes([1; 32]);
    let (ni, nr) = ([2u8; 16], [3u8; 16]);
    (
        Session::new(&k, &ni, &nr, Side::Initiator),
        Session::new(&k, &ni, &nr, Side::Responder),
    )
}

#[test]
fn frames_flow_and_replays_are_rejected() {
    let (mut a, mut b) = pair();
    let mut f0 = [0u8; 64];
    let n0 = a
        .write(
            Kind::Ack,
            &Ack {
                ckpt: 1,
                epoch: Epoch(1),
            },
            &mut f0,
        )
        .unwrap();
    let mut f1 = [0u8; 64];
    let n1 = a
        .write(
            Kind::Ack,
            &Ack {
                ckpt: 2,
                epoch: Epoch(1),
            },
            &mut f1,
        )
        .unwrap();
    b.open(&f0[..n0]).unwrap();
    assert_eq!(
        b.open(&f0[..n0]).unwrap_err(),
        FrameError::Replay {
            expected: 1,
            got: 0
        }
    );
    b.open(&f1[..n1]).unwrap();
}

#[test]
fn reflected_and_cross_session_frames_fail_mac() {
    let (mut a, _b) = pair();
    let mut f = [0u8; 64];
    let n = a
        .write(
            Kind::Ack,
            &Ack {
                ckpt: 1,
                epoch: Epoch(1),
            },
            &mut f,
        )
        .unwrap();
    // Reflected back at its sender: the receive key differs from the send key.
    let (mut a2, _) = pair();
    assert_eq!(a2.open(&f[..n]).unwrap_err(), FrameError::BadMac);
    // Another session (different responder nonce).
    let k = ClusterKey::from_bytes([1; 32]);
    let mut other = Session::new(&k, &[2; 16], &[4; 16], Side::Responder);
    assert_eq!(other.open(&f[..n]).unwrap_err(), FrameError::BadMac);
}

#[test]
fn hello_round_trip_and_wrong_cluster_key() {
    let k = ClusterKey::from_bytes([5; 32]);
    let h = msg::Hello {
        role: Role::Primary,
        node: msg::node_name("host-a"),
        epoch: Epoch(3),
        nonce: [9; 16],
        domain_pages: 16384,
        last_ckpt: 0,
        incarnation: 1_700_000_000_000_000,
        disk: msg::DiskHello::default(),
    };
    let mut buf = [0u8; 128];
    let n = write_hello(&k, &h, &mut buf).unwrap();
    assert_eq!(open_hello(&k, &buf[..n]).unwrap(), h);
    let other = ClusterKey::from_bytes([6; 32]);
    assert_eq!(
        open_hello(&other, &buf[..n]).unwrap_err(),
        FrameError::BadMac
    );
}
