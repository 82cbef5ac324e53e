//! Tests of the model service's client slots: who gives way to a newcomer when all are taken.

use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream as StdStream;
use std::time::{Duration, Instant};

use mio::{Events, Poll};

use super::*;

/// The victim, one case a row: each client (closed its side how long ago, idle how long,
/// waiting for a reply) or a free slot, and the slot that gives way.
#[test]
fn the_victim_is_abandoned_or_idle_never_a_client_that_waits_with_its_side_open() {
    let now = Instant::now() + Duration::from_secs(3600);
    let ago = |ms: u64| now - Duration::from_millis(ms);
    let c = |eof: Option<u64>, idle: u64, waiting: bool| {
        Some(ClientView {
            eof_at: eof.map(ago),
            active_at: ago(idle),
            waiting,
        })
    };
    #[rustfmt::skip]
    let cases: &[(&[Option<ClientView>], Option<usize>)] = &[
        (&[], None),
        // Waiting for held replies with their side open (a client whose reply is slow): kept,
        // however long; the newcomer is refused.
        (&[c(None, 60_000, true), c(None, 5_000, true)], None),
        // Closed their side, kept for a held reply: the one gone longest gives way, once it has
        // been gone for ABANDONED_AFTER.
        (&[c(None, 60_000, true), c(Some(1_500), 1_500, true), c(Some(3_000), 3_000, true)], Some(2)),
        (&[c(None, 60_000, true), c(Some(999), 999, true)], None),
        (&[c(None, 60_000, true), c(Some(1_000), 1_000, true)], Some(1)),
        // Abandoned before idle, whatever their ages.
        (&[c(None, 60_000, false), c(Some(1_200), 1_200, true)], Some(1)),
        // Idle (nothing either way, nothing held) for IDLE_AFTER: the one idle longest.
        (&[c(None, 9_999, false), c(None, 20_000, false), c(None, 12_000, false)], Some(1)),
        (&[c(None, 9_999, false), c(None, 30_000, true)], None),
        (&[None, c(None, 10_000, false)], Some(1)),
    ];
    for (clients, want) in cases {
        assert_eq!(victim(clients, now), *want, "{clients:?}");
    }
}

/// Holds every request's reply (as output commit does while the standby is slow).
#[derive(Default)]
struct HoldAll {
    held: HashSet<ClientId>,
    closed: Vec<ClientId>,
}

impl Handler for HoldAll {
    fn can_take(&mut self) -> bool {
        true
    }
    fn handle(&mut self, id: ClientId, _line: &str) -> Option<String> {
        self.held.insert(id);
        None
    }
    fn holds(&self, id: ClientId) -> bool {
        self.held.contains(&id)
    }
    fn closed(&mut self, id: ClientId) {
        self.held.remove(&id);
        self.closed.push(id);
    }
}

/// Run the service's events for `d`.
fn run(poll: &mut Poll, svc: &mut Service, h: &mut HoldAll, d: Duration) {
    let end = Instant::now() + d;
    let mut events = Events::with_capacity(64);
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        poll.poll(&mut events, Some(left)).unwrap();
        for ev in events.iter() {
            svc.on_event(poll.registry(), ev.token(), h);
        }
    }
}

/// A request, its reply held; then, if `leave`, the client closes its socket.
fn client(svc: &Service, leave: bool) -> Option<StdStream> {
    let mut c = StdStream::connect(svc.addr()).unwrap();
    c.write_all(b"INCR\n").unwrap();
    c.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    (!leave).then_some(c)
}

/// Whether the service closed `c` (refused it): its read ends rather than timing out.
fn closed_by_the_service(c: &mut StdStream) -> bool {
    let mut b = [0u8; 16];
    match c.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
        Err(_) => true,
    }
}

/// F10 (2026-12-07): in a long degraded spell the witnesses' probes, which time out and close
/// while their replies are held, filled every slot and the test client was refused for 12.7 s.
#[test]
fn clients_that_went_away_give_their_slots_to_newcomers_those_that_wait_do_not() {
    let mut poll = Poll::new().unwrap();
    let mut svc = Service::bind("127.0.0.1:0".parse().unwrap(), poll.registry(), 0, 2).unwrap();
    let mut h = HoldAll::default();
    let step = Duration::from_millis(100);

    // Two clients wait for their held replies with their sockets open: a third is refused.
    let mut waiting: Vec<StdStream> = (0..2).filter_map(|_| client(&svc, false)).collect();
    run(&mut poll, &mut svc, &mut h, step);
    assert_eq!((svc.clients(), h.held.len()), (2, 2));
    let mut third = client(&svc, false).unwrap();
    run(&mut poll, &mut svc, &mut h, step);
    assert!(
        closed_by_the_service(&mut third),
        "refused: both slots wait"
    );
    assert!(h.closed.is_empty());

    // They give up and close (as a probe does at its timeout); their replies are still held.
    waiting.clear();
    run(&mut poll, &mut svc, &mut h, step);
    assert_eq!(svc.clients(), 2, "kept while their replies are held");
    // Too recently gone: the newcomer is still refused.
    let mut early = client(&svc, false).unwrap();
    run(&mut poll, &mut svc, &mut h, step);
    assert!(closed_by_the_service(&mut early));
    assert!(h.closed.is_empty());

    // Gone for longer than ABANDONED_AFTER: newcomers take their slots, oldest first.
    std::thread::sleep(ABANDONED_AFTER);
    let mut next = client(&svc, false).unwrap();
    run(&mut poll, &mut svc, &mut h, step);
    assert!(!closed_by_the_service(&mut next), "served in a freed slot");
    assert_eq!(h.closed.len(), 1);
    assert_eq!(svc.clients(), 2);
    let mut last = client(&svc, false).unwrap();
    run(&mut poll, &mut svc, &mut h, step);
    assert!(!closed_by_the_service(&mut last));
    assert_eq!(h.closed.len(), 2);
    // Both now wait with their sockets open: nobody else gets in.
    let mut more = client(&svc, false).unwrap();
    run(&mut poll, &mut svc, &mut h, step);
    assert!(closed_by_the_service(&mut more));
    assert_eq!(h.closed.len(), 2);
}
