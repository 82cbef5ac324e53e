//! The replication connection slots: one live session and a bounded pool of pending handshakes
//! (DESIGN.md §6: unauthenticated connections, bounded and with deadlines, cannot starve an
//! authenticated one). Pure: the daemon owns the sockets and the clock.

use std::net::IpAddr;
use std::time::Duration;

use hsb_common::time::Nanos;

/// Pending handshakes held at most, besides the live session.
pub const PENDING: usize = 8;
/// Connection slots: the pending handshakes and the live session.
pub const SLOTS: usize = PENDING + 1;
/// From accept to a confirmed session. A genuine primary sends its `Hello` as soon as it is
/// connected and its confirmation one round trip after our answer: milliseconds.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(2);
/// A live session whose primary has sent nothing (and to which we have acknowledged
/// everything) for this long is silent: another primary may take its place. A streaming primary
/// sends a checkpoint every epoch period (25 ms by default) plus its pause (a model domain's
/// capture, a Xen guest's suspend: milliseconds to tens of them), and a full synchronisation
/// arrives as a stream of 256 KiB frames, so its longest normal gap is well under this; the rest
/// is room for a loaded machine. (It is not how fast a crashed primary is replaced: a restarted
/// one replaces its old session at once, by its incarnation; nor how fast a primary that gave a
/// lossy connection up gets its session back: it does at once, on its newer connection, though
/// the old one may still deliver retransmitted bytes for seconds.)
pub const SESSION_SILENCE: Duration = Duration::from_secs(1);

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Accepted; its `Hello` has not arrived.
    AwaitHello,
    /// Its `Hello` was good and may take the session: it waits for the primary's confirmation.
    Admitted,
    /// Refused: the refusal is being flushed before the connection closes.
    Closing,
    /// The live session.
    Live,
}

/// Which pending handshake gives way to a new connection when the pool is full: a refused one
/// first, then the oldest still waiting for its `Hello`, then the oldest admitted one. Never the
/// live session. `slots` gives each occupied slot's stage and accept time.
pub fn victim(slots: &[Option<(Stage, Nanos)>]) -> Option<usize> {
    [Stage::Closing, Stage::AwaitHello, Stage::Admitted]
        .iter()
        .find_map(|want| {
            slots
                .iter()
                .enumerate()
                .filter_map(|(i, s)| s.filter(|(st, _)| st == want).map(|(_, t)| (t, i)))
                .min()
                .map(|(_, i)| i)
        })
}

/// Whether a live session is silent at `now` ([`SESSION_SILENCE`]): `heard` is the last time
/// its primary was heard from (a frame, or the end of applying one of its checkpoints).
pub fn silent(heard: Nanos, now: Nanos) -> bool {
    now > heard && now.since(heard) > SESSION_SILENCE
}

/// Whether `primary_allow` lets `ip` connect (an empty list lets anyone). An IPv4 address
/// seen as IPv4-mapped IPv6 counts as itself.
pub fn allowed(allow: &[IpAddr], ip: IpAddr) -> bool {
    let canon = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    allow.is_empty() || allow.iter().any(|a| canon(*a) == canon(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slots (stage and accept time of each occupied one), and the victim.
    type Case<'a> = (&'a [Option<(Stage, Nanos)>], Option<usize>);

    #[test]
    fn the_victim_is_never_the_live_session() {
        let t = Nanos::from_millis;
        use Stage::*;
        #[rustfmt::skip]
        let cases: &[Case] = &[
            (&[], None),
            (&[Some((Live, t(0)))], None),
            (&[None, Some((Live, t(0)))], None),
            // The oldest of those still waiting for their Hello, not the live one (older still).
            (&[Some((Live, t(0))), Some((AwaitHello, t(5))), Some((AwaitHello, t(3))), None], Some(2)),
            // Refused ones go first, whatever their age.
            (&[Some((AwaitHello, t(1))), Some((Closing, t(9))), Some((Admitted, t(0)))], Some(1)),
            // Admitted ones only when nothing else is pending.
            (&[Some((Admitted, t(4))), Some((Live, t(0))), Some((Admitted, t(2)))], Some(2)),
            (&[Some((Admitted, t(4))), Some((AwaitHello, t(7)))], Some(1)),
        ];
        for (slots, want) in cases {
            assert_eq!(victim(slots), *want, "{slots:?}");
        }
    }

    #[test]
    fn silence_is_measured_from_the_last_time_the_primary_was_heard() {
        let t = Nanos::from_millis;
        assert!(!silent(t(1000), t(1000)));
        assert!(!silent(t(1000), t(2000)));
        assert!(silent(t(1000), t(2001)));
        // A clock reading before `heard` (a caller's mistake) is not silence.
        assert!(!silent(t(5000), t(10)));
    }

    #[test]
    fn the_allow_list() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(allowed(&[], ip("192.0.2.7")));
        let list = [ip("10.0.0.1"), ip("fe80::1")];
        assert!(allowed(&list, ip("10.0.0.1")));
        assert!(allowed(&list, ip("::ffff:10.0.0.1")));
        assert!(allowed(&list, ip("fe80::1")));
        assert!(!allowed(&list, ip("10.0.0.2")));
        assert!(!allowed(&list, ip("127.0.0.1")));
    }
}
