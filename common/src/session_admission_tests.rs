//! Unit tests of session admission: which claim of a primary's session a standby takes.

use super::*;
use crate::decision::Epoch;

fn claim(node: &str, epoch: u64, incarnation: u64, nonce: u8) -> Claim {
    Claim {
        node: msg::node_name(node),
        epoch,
        incarnation,
        nonce: [nonce; 16],
    }
}

/// One case: the live session (claim, silent, its connection accepted before the newcomer's)
/// or none, the newcomer, whether its nonce is in use elsewhere, and the verdict's name.
type Case<'a> = (Option<(&'a Claim, bool, bool)>, Claim, bool, &'static str);

/// The replace-or-refuse rule, one case a row: the live session (claim, silent, connected
/// first) or none, the newcomer, whether its nonce is in use elsewhere, and the verdict's name.
#[test]
fn replace_or_refuse_table() {
    let a1 = claim("a", 1, 100, 1);
    #[rustfmt::skip]
    let cases: &[Case] = &[
        // Nothing live: anyone with the key, unless its nonce is a replay.
        (None, claim("b", 1, 5, 2), false, "no-session"),
        (None, claim("b", 1, 5, 2), true, "replayed"),
        // The live session's own Hello again (recorded and replayed): refused, even silent or
        // on a later connection.
        (Some((&a1, false, false)), claim("a", 1, 100, 1), false, "replayed"),
        (Some((&a1, true, false)), claim("a", 1, 100, 1), false, "replayed"),
        (Some((&a1, false, true)), claim("a", 1, 100, 1), false, "replayed"),
        // A newer epoch always replaces; an older one never, even when the live one is silent
        // or on an earlier connection.
        (Some((&a1, false, false)), claim("b", 2, 1, 2), false, "newer-epoch"),
        (Some((&a1, false, false)), claim("a", 2, 1, 2), false, "newer-epoch"),
        (Some((&a1, false, false)), claim("a", 0, 999, 2), false, "older-epoch"),
        (Some((&a1, true, false)), claim("b", 0, 999, 2), false, "older-epoch"),
        (Some((&a1, true, true)), claim("a", 0, 100, 2), false, "older-epoch"),
        // Same node, same epoch: a restart (higher incarnation) replaces at once.
        (Some((&a1, false, false)), claim("a", 1, 101, 2), false, "restarted"),
        (Some((&a1, true, false)), claim("a", 1, 101, 2), false, "restarted"),
        // The same process (same incarnation) on a later connection: it gave the live one up
        // and reconnected, even while the live one still trickles in (F10, 2026-12-07).
        (Some((&a1, false, true)), claim("a", 1, 100, 2), false, "reconnected"),
        (Some((&a1, true, true)), claim("a", 1, 100, 2), false, "reconnected"),
        // ... but not on an earlier connection (a late confirmation of one it gave up): only
        // once the live one is silent.
        (Some((&a1, false, false)), claim("a", 1, 100, 2), false, "earlier-connection"),
        (Some((&a1, true, false)), claim("a", 1, 100, 2), false, "silent"),
        // An older process of the same node (a lower incarnation): never by its connection,
        // only once the live one is silent.
        (Some((&a1, false, false)), claim("a", 1, 99, 2), false, "not-newer"),
        (Some((&a1, false, true)), claim("a", 1, 99, 2), false, "not-newer"),
        (Some((&a1, true, true)), claim("a", 1, 99, 2), false, "silent"),
        // Another node in the same epoch (issue 10 item 3): refused while the live one
        // streams, whatever its incarnation or connection; admitted once the live one is silent.
        (Some((&a1, false, false)), claim("b", 1, 101, 2), false, "another-primary"),
        (Some((&a1, false, true)), claim("b", 1, 100, 2), false, "another-primary"),
        (Some((&a1, false, false)), claim("b", 1, 1, 2), false, "another-primary"),
        (Some((&a1, true, false)), claim("b", 1, 1, 2), false, "silent"),
        (Some((&a1, true, false)), claim("b", 1, 1, 2), true, "replayed"),
        (Some((&a1, false, true)), claim("a", 1, 100, 2), true, "replayed"),
    ];
    for (i, (live, new, in_use, want)) in cases.iter().enumerate() {
        let live = live.map(|(claim, silent, connected_first)| Live {
            claim,
            silent,
            connected_first,
        });
        let got = match admit(live, new, *in_use) {
            Ok(Admit::NoSession) => "no-session",
            Ok(Admit::NewerEpoch) => "newer-epoch",
            Ok(Admit::Restarted) => "restarted",
            Ok(Admit::Reconnected) => "reconnected",
            Ok(Admit::Silent) => "silent",
            Err(r) => r.name(),
        };
        assert_eq!(got, *want, "case {i}: live {live:?}, new {new:?}");
    }
}

#[test]
fn refusals_say_why_and_fit_a_refuse_frame() {
    let long = "n".repeat(msg::NODE_NAME_LEN);
    let live = claim(&long, u64::MAX, u64::MAX, 1);
    for (new, want) in [
        (claim("b", u64::MAX, 1, 2), "holds a live session in epoch"),
        (claim(&long, u64::MAX, 1, 2), "is not newer"),
        (
            claim(&long, u64::MAX, u64::MAX, 2),
            "is live on a connection no older",
        ),
        (
            claim("b", 1, 1, 2),
            "is older than the live session's epoch",
        ),
        (claim("b", 1, 1, 1), "replayed"),
    ] {
        let why = admit(
            Some(Live {
                claim: &live,
                silent: false,
                connected_first: false,
            }),
            &new,
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(why.contains(want), "{why}");
        assert!(why.len() <= msg::REASON_LEN, "{} bytes: {why}", why.len());
    }
}

fn pair(k: &ClusterKey) -> (Session, Session) {
    (
        Session::new(k, &[2; 16], &[3; 16], Side::Initiator),
        Session::new(k, &[2; 16], &[3; 16], Side::Responder),
    )
}

#[test]
fn a_confirmation_must_repeat_the_hello_under_the_session_key() {
    let k = ClusterKey::from_bytes([5; 32]);
    let h = msg::Hello {
        role: msg::Role::Primary,
        node: msg::node_name("host-a"),
        epoch: Epoch(3),
        nonce: [2; 16],
        domain_pages: 16384,
        last_ckpt: 7,
        incarnation: 9,
        disk: msg::DiskHello::default(),
    };
    let mut buf = [0u8; 256];
    // The genuine confirmation.
    let (mut i, mut r) = pair(&k);
    let n = write_confirm(&mut i, &h, &mut buf).unwrap();
    open_confirm(&mut r, &buf[..n], &h).unwrap();
    // The Hello frame itself (hello key), replayed in its place: wrong key.
    let (_, mut r) = pair(&k);
    let n = write_hello(&k, &h, &mut buf).unwrap();
    assert_eq!(
        open_confirm(&mut r, &buf[..n], &h).unwrap_err(),
        FrameError::BadMac
    );
    // Another Hello under the session key: refused.
    let (mut i, mut r) = pair(&k);
    let other = msg::Hello {
        incarnation: 10,
        ..h.clone()
    };
    let n = write_confirm(&mut i, &other, &mut buf).unwrap();
    assert!(matches!(
        open_confirm(&mut r, &buf[..n], &h).unwrap_err(),
        FrameError::Body { .. }
    ));
    // Another kind first: refused.
    let (mut i, mut r) = pair(&k);
    let n = i
        .write(
            Kind::Ack,
            &msg::Ack {
                ckpt: 1,
                epoch: Epoch(3),
            },
            &mut buf,
        )
        .unwrap();
    assert!(matches!(
        open_confirm(&mut r, &buf[..n], &h).unwrap_err(),
        FrameError::Unexpected { .. }
    ));
}
