//! The suite's client and the check of its history: sequential `INCR`s on the service address,
//! each recorded as an [`Op`]; acknowledged values must increase without loss or doubles.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::Client;

/// One request of the client's history.
#[derive(Debug, Clone, Copy)]
pub struct Op {
    pub start: Instant,
    pub end: Instant,
    /// The counter after the increment, if acknowledged.
    pub value: Option<u64>,
}

/// Check a sequential client's history: acknowledged values must increase, and by no more than
/// the requests sent so far allow: each unacknowledged request may have been applied once, at
/// any later time (a request whose reply was lost, or a retransmission of it that arrives only
/// after a partition heals). Returns (acked, lost, doubled, longest time without an
/// acknowledged reply, counted from the first request to the last).
pub fn check_history(ops: &[Op]) -> (u64, u64, u64, Duration) {
    let (mut acked, mut lost, mut doubled) = (0, 0, 0);
    let mut prev: Option<(u64, Instant)> = None;
    // Unacknowledged requests whose effect has not been seen yet.
    let mut maybe_pending = 0u64;
    let mut gap = Duration::ZERO;
    for op in ops {
        match op.value {
            None => maybe_pending += 1,
            Some(v) => {
                acked += 1;
                if let Some((p, t)) = prev {
                    if v <= p {
                        lost += 1;
                    } else {
                        let extra = v - p - 1;
                        if extra > maybe_pending {
                            doubled += 1;
                            maybe_pending = 0;
                        } else {
                            maybe_pending -= extra;
                        }
                    }
                    gap = gap.max(op.end.duration_since(t));
                }
                prev = Some((v, op.end));
            }
        }
    }
    // An outage that lasts to the end of the run counts too (or a run with no reply at all).
    let last_ok = prev.map(|(_, t)| t).or(ops.first().map(|o| o.start));
    if let (Some(t), Some(end)) = (last_ok, ops.last().map(|o| o.end)) {
        gap = gap.max(end.duration_since(t));
    }
    (acked, lost, doubled, gap)
}

/// A sequential client of the service address, recording its history until `stop`.
pub fn client(svc: SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<Op>> {
    client_paced(svc, stop, Duration::from_millis(700), Duration::ZERO)
}

/// Like [`client`], starting a request at most every `every` (a copy serving without output
/// commit answers at once, and an unpaced client would spin the machine's cores for it).
pub fn client_every(
    svc: SocketAddr,
    stop: Arc<AtomicBool>,
    every: Duration,
) -> std::thread::JoinHandle<Vec<Op>> {
    client_paced(svc, stop, Duration::from_millis(700), every)
}

/// [`client`], waiting up to `timeout` for each reply.
pub fn client_with(
    svc: SocketAddr,
    stop: Arc<AtomicBool>,
    timeout: Duration,
) -> std::thread::JoinHandle<Vec<Op>> {
    client_paced(svc, stop, timeout, Duration::ZERO)
}

/// A sequential client waiting up to `timeout` for each reply and starting a request at most
/// every `every`.
fn client_paced(
    svc: SocketAddr,
    stop: Arc<AtomicBool>,
    timeout: Duration,
    every: Duration,
) -> std::thread::JoinHandle<Vec<Op>> {
    std::thread::spawn(move || {
        let mut history = vec![];
        let mut c: Option<Client> = None;
        while !stop.load(Ordering::Relaxed) {
            let t0 = Instant::now();
            if c.is_none() {
                c = Client::connect(svc, Duration::from_millis(300)).ok();
                if let Some(cl) = &c {
                    cl.set_timeout(timeout);
                }
            }
            let value = c
                .as_mut()
                .and_then(|cl| cl.request("INCR").ok())
                .and_then(|v| v.parse().ok());
            if value.is_none() {
                c = None;
                std::thread::sleep(Duration::from_millis(20));
            }
            history.push(Op {
                start: t0,
                end: Instant::now(),
                value,
            });
            if let Some(rest) = every.checked_sub(t0.elapsed()) {
                std::thread::sleep(rest);
            }
        }
        history
    })
}
