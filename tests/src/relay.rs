//! Relays for tests: a TCP proxy and a UDP relay that can be cut and healed, and that can delay
//! what they carry by a seeded delay distribution (base delay plus uniform jitter).
//!
//! A cut black-holes traffic the way a broken link does: the TCP proxy stops moving bytes
//! without closing anything (senders see silence, then backpressure), the UDP relay drops
//! datagrams. Healing resumes forwarding.
//!
//! Delay stands in for `tc netem`, which the development kernel lacks (see
//! shared/research/fault-injection-here.md): every datagram, and every chunk of a TCP stream,
//! waits `delay ± jitter` in a bounded queue before it is sent on. Datagrams may overtake each
//! other (as with netem's jitter); a TCP stream keeps its order, so a chunk never leaves before
//! the one read before it. A full queue drops datagrams (a router's tail drop) and stops reading
//! a stream (backpressure). Every thread polls a stop flag and gives up a stalled write after a
//! timeout, so a relay goes away within a bounded time after it is dropped.
//!
//! Relays bind where the caller says: on loopback for the loopback cluster, or on a bridge's
//! address in the fault suite's root namespace to sit on a path between two network namespaces.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hsb_common::rng::SplitMix64;

/// How often blocked relay threads look at their stop flag.
const POLL: Duration = Duration::from_millis(20);
/// Datagrams or stream chunks one direction of a relay holds at most.
pub const QUEUE_LIMIT: usize = 4096;
/// A write to a stalled TCP peer is given up after this long (the connection is closed).
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest delay a shaper accepts (bounded time: nothing waits longer in a relay).
pub const MAX_DELAY: Duration = Duration::from_secs(5);

/// A cut switch shared by relays.
#[derive(Clone, Default)]
pub struct Link(Arc<AtomicBool>);

impl Link {
    pub fn cut(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn heal(&self) {
        self.0.store(false, Ordering::SeqCst);
    }
    pub fn is_cut(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// A delay distribution: `delay` plus a uniform offset in `-jitter..=jitter`, never below zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Shape {
    pub delay: Duration,
    pub jitter: Duration,
}

impl Shape {
    /// One delay, from 64 random bits (pure: the caller owns the generator).
    pub fn sample(self, bits: u64) -> Duration {
        let j = self.jitter.min(MAX_DELAY).as_micros() as u64;
        let base = self.delay.min(MAX_DELAY).as_micros() as u64;
        if j == 0 {
            return Duration::from_micros(base);
        }
        // Uniform in 0..=2j, then shifted by -j.
        let r = ((bits as u128 * (2 * j + 1) as u128) >> 64) as u64;
        Duration::from_micros((base + r).saturating_sub(j)).min(MAX_DELAY)
    }
}

/// The delay of one or more relays, changed while they run (e.g. only during a fault). Seeded:
/// the sequence of delays drawn is the same for a seed, though which packet gets which one
/// depends on the order threads draw them.
#[derive(Clone)]
pub struct Shaper(Arc<Mutex<(Shape, SplitMix64)>>);

impl Shaper {
    /// No delay until [`Shaper::set`].
    pub fn new(seed: u64) -> Shaper {
        Shaper(Arc::new(Mutex::new((
            Shape::default(),
            SplitMix64::new(seed),
        ))))
    }

    /// Delay everything by `delay ± jitter` from now on (each capped at [`MAX_DELAY`]).
    pub fn set(&self, delay: Duration, jitter: Duration) {
        if let Ok(mut s) = self.0.lock() {
            s.0 = Shape { delay, jitter };
        }
    }

    /// No delay from now on.
    pub fn clear(&self) {
        self.set(Duration::ZERO, Duration::ZERO);
    }

    /// The current shape.
    pub fn shape(&self) -> Shape {
        self.0.lock().map(|s| s.0).unwrap_or_default()
    }

    fn draw(&self) -> Duration {
        match self.0.lock() {
            Ok(mut s) => {
                let bits = s.1.next_u64();
                s.0.sample(bits)
            }
            Err(_) => Duration::ZERO,
        }
    }
}

/// A bounded queue of items waiting for their send time. In stream order (`ordered`), an item
/// is due no earlier than the one pushed before it, so a stream is never reordered.
pub struct DelayQueue<T> {
    heap: BinaryHeap<Reverse<(Instant, u64, Slot<T>)>>,
    seq: u64,
    limit: usize,
    ordered: bool,
    last_due: Option<Instant>,
}

/// Heap entries compare by (due, sequence) only.
struct Slot<T>(T);

impl<T> PartialEq for Slot<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl<T> Eq for Slot<T> {}
impl<T> PartialOrd for Slot<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Slot<T> {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl<T> DelayQueue<T> {
    pub fn new(limit: usize, ordered: bool) -> DelayQueue<T> {
        DelayQueue {
            heap: BinaryHeap::new(),
            seq: 0,
            limit,
            ordered,
            last_due: None,
        }
    }

    /// Queue `item` to leave `delay` after `now`; gives it back if the queue is full.
    pub fn push(&mut self, now: Instant, delay: Duration, item: T) -> Result<(), T> {
        if self.heap.len() >= self.limit {
            return Err(item);
        }
        let mut due = now + delay;
        if self.ordered {
            if let Some(last) = self.last_due {
                due = due.max(last);
            }
            self.last_due = Some(due);
        }
        self.seq += 1;
        self.heap.push(Reverse((due, self.seq, Slot(item))));
        Ok(())
    }

    /// The next item due at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<T> {
        if self
            .heap
            .peek()
            .is_some_and(|Reverse((due, _, _))| *due <= now)
        {
            self.heap.pop().map(|Reverse((_, _, Slot(t)))| t)
        } else {
            None
        }
    }

    /// When the next item is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((due, _, _))| *due)
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.heap.len() >= self.limit
    }
}

/// Stops its threads when dropped.
struct Stop(Arc<AtomicBool>);

impl Drop for Stop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Counters of one relay.
#[derive(Default)]
pub struct RelayStats {
    /// Datagrams dropped because a queue was full.
    pub queue_drops: AtomicU64,
    /// Datagrams or chunks forwarded.
    pub forwarded: AtomicU64,
    /// The first [`CAPTURED`] datagrams a UDP relay received from its front (what an attacker on
    /// that network could capture), for replay tests.
    pub captured: Mutex<Vec<Vec<u8>>>,
}

/// Datagrams a UDP relay keeps in [`RelayStats::captured`].
pub const CAPTURED: usize = 16;

/// One direction of a relay: items from `rx` leave through `deliver` after the shaper's delay.
/// Datagram lines (`ordered == false`) drop when full; stream lines stop taking from `rx`, so
/// its sender blocks. Returns when `rx` is closed and the queue is empty, when `deliver` fails,
/// or when `stop` is set.
fn delay_line(
    rx: Receiver<Vec<u8>>,
    shaper: Shaper,
    ordered: bool,
    stop: Arc<AtomicBool>,
    stats: Arc<RelayStats>,
    mut deliver: impl FnMut(&[u8]) -> bool,
) {
    let mut q: DelayQueue<Vec<u8>> = DelayQueue::new(QUEUE_LIMIT, ordered);
    let mut open = true;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        while let Some(item) = q.pop_due(now) {
            if !deliver(&item) {
                return;
            }
            stats.forwarded.fetch_add(1, Ordering::Relaxed);
        }
        if !open && q.is_empty() {
            return;
        }
        let wait = q
            .next_due()
            .map_or(POLL, |d| d.saturating_duration_since(now).min(POLL));
        if !open || (ordered && q.is_full()) {
            std::thread::sleep(wait);
            continue;
        }
        match rx.recv_timeout(wait) {
            Ok(item) => {
                if q.push(Instant::now(), shaper.draw(), item).is_err() {
                    stats.queue_drops.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => open = false,
        }
    }
}

/// A TCP proxy to `target` controlled by `link`.
pub struct TcpRelay {
    pub addr: SocketAddr,
    pub stats: Arc<RelayStats>,
    _stop: Stop,
}

impl TcpRelay {
    /// On a free loopback port, without delay.
    pub fn start(target: SocketAddr, link: Link) -> TcpRelay {
        let any: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
        TcpRelay::start_on(any, target, link, Shaper::new(0)).expect("loopback TCP relay")
    }

    /// Listening on `bind`, forwarding each connection to `target` through `shaper`'s delay in
    /// both directions.
    pub fn start_on(
        bind: SocketAddr,
        target: SocketAddr,
        link: Link,
        shaper: Shaper,
    ) -> std::io::Result<TcpRelay> {
        let l = TcpListener::bind(bind)?;
        let addr = l.local_addr()?;
        l.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(RelayStats::default());
        let (st, stt) = (stop.clone(), stats.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((a, _)) if !link.is_cut() => {
                        let _ = a.set_nonblocking(false);
                        let Ok(b) = TcpStream::connect_timeout(&target, Duration::from_secs(1))
                        else {
                            continue;
                        };
                        for s in [&a, &b] {
                            let _ = s.set_nodelay(true);
                            let _ = s.set_write_timeout(Some(WRITE_TIMEOUT));
                        }
                        for (x, y) in [(&a, &b), (&b, &a)] {
                            let (Ok(x), Ok(y)) = (x.try_clone(), y.try_clone()) else {
                                continue;
                            };
                            let (link, st, sh, stt) =
                                (link.clone(), st.clone(), shaper.clone(), stt.clone());
                            std::thread::spawn(move || pump(x, y, link, sh, st, stt));
                        }
                    }
                    // While cut, a connection attempt goes unanswered (dropped SYN): close it.
                    Ok((a, _)) => drop(a),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(TcpRelay {
            addr,
            stats,
            _stop: Stop(stop),
        })
    }
}

/// One direction of a proxied connection: a reader here, a delay line in its own thread.
fn pump(
    mut from: TcpStream,
    to: TcpStream,
    link: Link,
    shaper: Shaper,
    stop: Arc<AtomicBool>,
    stats: Arc<RelayStats>,
) {
    let _ = from.set_read_timeout(Some(POLL));
    let (tx, rx) = sync_channel::<Vec<u8>>(64);
    let line = {
        let (stop, mut to) = (stop.clone(), to);
        std::thread::spawn(move || {
            delay_line(rx, shaper, true, stop, stats, |b| to.write_all(b).is_ok());
            let _ = to.shutdown(Shutdown::Both);
        })
    };
    let mut buf = vec![0u8; 64 * 1024];
    'read: while !stop.load(Ordering::SeqCst) {
        if link.is_cut() {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                // Blocks while the line is full (backpressure), but never past a stop.
                let mut chunk = buf[..n].to_vec();
                loop {
                    match tx.try_send(chunk) {
                        Ok(()) => break,
                        Err(TrySendError::Full(c)) => {
                            if stop.load(Ordering::SeqCst) {
                                break 'read;
                            }
                            chunk = c;
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        Err(TrySendError::Disconnected(_)) => break 'read,
                    }
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    drop(tx);
    let _ = line.join();
    let _ = from.shutdown(Shutdown::Both);
}

/// A bidirectional UDP relay: datagrams to `addr` go to `target`; replies come back to the last
/// sender. Several links may control it: it drops while any of them is cut.
pub struct UdpRelay {
    pub addr: SocketAddr,
    pub stats: Arc<RelayStats>,
    _stop: Stop,
}

impl UdpRelay {
    /// On a free loopback port, without delay.
    pub fn start(target: SocketAddr, links: Vec<Link>) -> UdpRelay {
        let any: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
        UdpRelay::start_on(any, any, target, links, Shaper::new(0)).expect("loopback UDP relay")
    }

    /// Receiving on `bind`, sending on from a socket bound to `back` (port 0: any), with
    /// `shaper`'s delay both ways.
    pub fn start_on(
        bind: SocketAddr,
        back: SocketAddr,
        target: SocketAddr,
        links: Vec<Link>,
        shaper: Shaper,
    ) -> std::io::Result<UdpRelay> {
        let front = UdpSocket::bind(bind)?;
        let back = UdpSocket::bind(back)?;
        let addr = front.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(RelayStats::default());
        let peer: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        let cut = move || links.iter().any(Link::is_cut);
        for s in [&front, &back] {
            s.set_read_timeout(Some(POLL))?;
        }
        let (front_out, back_out) = (front.try_clone()?, back.try_clone()?);
        // Inbound: front -> delay -> back -> target.
        let (tx_in, rx_in) = sync_channel::<Vec<u8>>(QUEUE_LIMIT);
        // Replies: back -> delay -> front -> last sender.
        let (tx_out, rx_out) = sync_channel::<Vec<u8>>(QUEUE_LIMIT);
        {
            let (st, sh, stt) = (stop.clone(), shaper.clone(), stats.clone());
            std::thread::spawn(move || {
                delay_line(rx_in, sh, false, st, stt, |b| {
                    let _ = back_out.send_to(b, target);
                    true
                })
            });
        }
        {
            let (st, sh, stt, p) = (stop.clone(), shaper, stats.clone(), peer.clone());
            std::thread::spawn(move || {
                delay_line(rx_out, sh, false, st, stt, |b| {
                    if let Some(to) = p.lock().ok().and_then(|p| *p) {
                        let _ = front_out.send_to(b, to);
                    }
                    true
                })
            });
        }
        let receive = |sock: UdpSocket,
                       tx: SyncSender<Vec<u8>>,
                       learn: Option<Arc<Mutex<Option<SocketAddr>>>>,
                       cut: Box<dyn Fn() -> bool + Send>,
                       st: Arc<AtomicBool>,
                       stt: Arc<RelayStats>| {
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !st.load(Ordering::SeqCst) {
                    if let Ok((n, from)) = sock.recv_from(&mut buf) {
                        if let Some(p) = &learn {
                            if let Ok(mut p) = p.lock() {
                                *p = Some(from);
                            }
                            if let Ok(mut c) = stt.captured.lock() {
                                if c.len() < CAPTURED {
                                    c.push(buf[..n].to_vec());
                                }
                            }
                        }
                        if !cut() && tx.try_send(buf[..n].to_vec()).is_err() {
                            stt.queue_drops.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        };
        let cut2 = cut.clone();
        receive(
            front,
            tx_in,
            Some(peer),
            Box::new(cut),
            stop.clone(),
            stats.clone(),
        );
        receive(
            back,
            tx_out,
            None,
            Box::new(cut2),
            stop.clone(),
            stats.clone(),
        );
        Ok(UdpRelay {
            addr,
            stats,
            _stop: Stop(stop),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_samples_stay_within_delay_plus_minus_jitter() {
        let s = Shape {
            delay: Duration::from_millis(20),
            jitter: Duration::from_millis(15),
        };
        let mut rng = SplitMix64::new(7);
        let (mut lo, mut hi) = (Duration::MAX, Duration::ZERO);
        for _ in 0..10_000 {
            let d = s.sample(rng.next_u64());
            lo = lo.min(d);
            hi = hi.max(d);
        }
        assert!(
            lo >= Duration::from_millis(5) && lo < Duration::from_millis(6),
            "{lo:?}"
        );
        assert!(
            hi <= Duration::from_millis(35) && hi > Duration::from_millis(34),
            "{hi:?}"
        );
        // Never negative, never beyond the cap.
        let wide = Shape {
            delay: Duration::from_millis(1),
            jitter: Duration::from_secs(60),
        };
        for b in [0, u64::MAX / 3, u64::MAX] {
            assert!(wide.sample(b) <= MAX_DELAY);
        }
        assert_eq!(Shape::default().sample(12345), Duration::ZERO);
    }

    #[test]
    fn delay_queue_orders_streams_bounds_its_length_and_releases_when_due() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let mut q = DelayQueue::new(3, true);
        q.push(t, ms(30), 1).unwrap();
        q.push(t, ms(10), 2).unwrap(); // a stream: not before 1
        q.push(t, ms(40), 3).unwrap();
        assert_eq!(q.push(t, ms(1), 4), Err(4), "bounded");
        assert_eq!(q.pop_due(t + ms(29)), None);
        assert_eq!(q.pop_due(t + ms(30)), Some(1));
        assert_eq!(q.pop_due(t + ms(30)), Some(2));
        assert_eq!(q.next_due(), Some(t + ms(40)));
        assert_eq!(q.pop_due(t + ms(40)), Some(3));
        assert!(q.is_empty());
        // Datagrams may overtake each other.
        let mut d = DelayQueue::new(8, false);
        d.push(t, ms(30), 'a').unwrap();
        d.push(t, ms(10), 'b').unwrap();
        assert_eq!(d.pop_due(t + ms(50)), Some('b'));
        assert_eq!(d.pop_due(t + ms(50)), Some('a'));
    }

    #[test]
    fn udp_relay_delays_and_tcp_relay_keeps_order() {
        let lo: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
        let sink = UdpSocket::bind(lo).unwrap();
        sink.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let shaper = Shaper::new(1);
        shaper.set(Duration::from_millis(60), Duration::from_millis(10));
        let r =
            UdpRelay::start_on(lo, lo, sink.local_addr().unwrap(), vec![], shaper.clone()).unwrap();
        let src = UdpSocket::bind(lo).unwrap();
        let t = Instant::now();
        src.send_to(b"hello", r.addr).unwrap();
        let mut buf = [0u8; 16];
        let (n, _) = sink.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert!(
            t.elapsed() >= Duration::from_millis(50),
            "{:?}",
            t.elapsed()
        );

        let server = TcpListener::bind(lo).unwrap();
        let target = server.local_addr().unwrap();
        let r = TcpRelay::start_on(lo, target, Link::default(), shaper).unwrap();
        let mut c = TcpStream::connect(r.addr).unwrap();
        let (mut s, _) = server.accept().unwrap();
        for i in 0..50u8 {
            c.write_all(&[i]).unwrap();
        }
        drop(c);
        let got = crate::drain(&mut s);
        assert_eq!(
            got,
            (0..50u8).collect::<Vec<_>>(),
            "a stream keeps its order"
        );
    }
}
