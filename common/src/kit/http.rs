//! A small, bounded HTTP/1.0 and 1.1 responder for metrics scrapes (`metrics_listen`), driven
//! by the daemon's own mio loop on tokens the daemon hands it: no thread, no async runtime.
//!
//! Bounds, so that nothing a client does can cost the daemon more than a little:
//! - at most [`MAX_CONNS`] connections; a new one beyond that closes the oldest that has not
//!   finished its request (a slow or idle client cannot lock out a scrape), or is refused at
//!   once when all of them are being answered;
//! - a request head of at most [`MAX_REQUEST`] bytes (`431` past it), read within
//!   [`REQUEST_TIMEOUT`] of the accept; the answer must be taken within [`ANSWER_TIMEOUT`];
//! - at most [`ACCEPTS_PER_TURN`] accepts per turn of the loop;
//! - every answer closes the connection (`Connection: close`): no keep-alive to track.
//!
//! Only `GET` (and `HEAD`) of `/metrics` is served: [`MetricsServer::on_event`] returns the
//! connection, the daemon renders its exposition and hands it to [`MetricsServer::answer`].
//! Anything else is answered here: `400` for a malformed request, `404` for another path, `405`
//! for another method, `505` for another HTTP version.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use crate::logging::LogLimiter;
use crate::slots::{self, Slot};
use crate::time::Nanos;

/// Most connections open at once.
pub const MAX_CONNS: usize = 4;
/// Largest request head (request line and headers).
pub const MAX_REQUEST: usize = 4096;
/// Time from accept to a complete request head.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Time to take the answer once it is ready.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// Most connections accepted per turn of the loop.
pub const ACCEPTS_PER_TURN: usize = 16;
/// Largest answer body (a larger exposition is answered with `500`).
pub const MAX_BODY: usize = super::metrics::MAX_EXPOSITION;

/// The `metrics_listen` key, the same for the three daemons.
pub const METRICS_LISTEN_KEY: crate::config::KeySpec = crate::config::KeySpec {
    key: "metrics_listen",
    kind: crate::config::ValueKind::Str,
    default: Some(""),
    help: "TCP address ip:port serving Prometheus metrics at /metrics (HTTP); empty: off",
};

/// The `metrics_listen` address of a configuration (`None`: off).
pub fn metrics_listen(
    c: &crate::config::Config,
) -> Result<Option<SocketAddr>, crate::config::ConfigError> {
    let v = c.str("metrics_listen")?;
    match v.trim() {
        "" => Ok(None),
        a => crate::config::parse_addr(a).map(Some).map_err(|_| {
            c.error_at(
                "metrics_listen",
                &format!(
                    "expected an address ip:port, e.g. 127.0.0.1:9400, or nothing (off), got '{}'",
                    crate::config::excerpt(a)
                ),
            )
        }),
    }
}

/// What a request head asks, once complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// `GET /metrics` (`head`: `HEAD`, headers only).
    Metrics {
        /// A `HEAD` request.
        head: bool,
    },
    /// Anything else, answered with this status.
    Refuse(Status),
}

/// An HTTP status this responder sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    HeaderTooLarge,
    ServerError,
    VersionNotSupported,
}

impl Status {
    fn line(self) -> &'static str {
        match self {
            Status::Ok => "200 OK",
            Status::BadRequest => "400 Bad Request",
            Status::NotFound => "404 Not Found",
            Status::MethodNotAllowed => "405 Method Not Allowed",
            Status::HeaderTooLarge => "431 Request Header Fields Too Large",
            Status::ServerError => "500 Internal Server Error",
            Status::VersionNotSupported => "505 HTTP Version Not Supported",
        }
    }
}

/// Read a request head from `buf`: `None` while it is incomplete (no empty line yet and fewer
/// than [`MAX_REQUEST`] bytes), otherwise what it asks.
pub fn parse_request(buf: &[u8]) -> Option<Request> {
    let end = find_head_end(buf);
    let Some(end) = end else {
        return (buf.len() >= MAX_REQUEST).then_some(Request::Refuse(Status::HeaderTooLarge));
    };
    let head = &buf[..end];
    let Ok(head) = std::str::from_utf8(head) else {
        return Some(Request::Refuse(Status::BadRequest));
    };
    let line = head.split('\n').next().unwrap_or("").trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Some(Request::Refuse(Status::BadRequest));
    };
    if method.is_empty() || target.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Some(Request::Refuse(Status::BadRequest));
    }
    if !version.starts_with("HTTP/") {
        return Some(Request::Refuse(Status::BadRequest));
    }
    if version != "HTTP/1.0" && version != "HTTP/1.1" {
        return Some(Request::Refuse(Status::VersionNotSupported));
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Some(Request::Refuse(Status::MethodNotAllowed)),
    };
    let path = target.split(['?', '#']).next().unwrap_or("");
    Some(if path == "/metrics" {
        Request::Metrics { head: head_only }
    } else {
        Request::Refuse(Status::NotFound)
    })
}

/// The end of the head (after its empty line), if there is one within [`MAX_REQUEST`] bytes.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    let buf = &buf[..buf.len().min(MAX_REQUEST)];
    (0..buf.len()).find_map(|i| {
        if buf[i..].starts_with(b"\r\n\r\n") {
            Some(i + 4)
        } else if buf[i..].starts_with(b"\n\n") {
            Some(i + 2)
        } else {
            None
        }
    })
}

/// A complete response: status line, headers, and (unless `head`) the body.
pub fn response(status: Status, content_type: &str, body: &str, head: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        status.line(),
        body.len()
    );
    if status == Status::MethodNotAllowed {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    if !head {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading the request head.
    Reading,
    /// Handed to the daemon: waiting for [`MetricsServer::answer`].
    Rendering { head: bool },
    /// Writing the answer.
    Writing,
}

struct Conn {
    stream: TcpStream,
    buf: heapless::Vec<u8, MAX_REQUEST>,
    out: Vec<u8>,
    written: usize,
    phase: Phase,
    opened: Nanos,
    deadline: Nanos,
}

impl Slot for Conn {
    type Stream = TcpStream;
    fn deadline(&self) -> Nanos {
        self.deadline
    }
    fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }
}

/// Counters of the responder (exported by the daemon with its own metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpStats {
    /// Scrapes answered with `200`.
    pub scrapes: u64,
    /// Requests refused (`4xx`, `5xx`).
    pub refused: u64,
    /// Connections closed because a newer one needed the slot.
    pub evicted: u64,
    /// Connections closed at their deadline.
    pub timeouts: u64,
}

/// Log causes of the responder.
const LOG_ACCEPT: usize = 0;
const LOG_DROPPED: usize = 1;

/// The responder: a listener at token `base` and its connections at `base + 1 ..= base +
/// MAX_CONNS`.
pub struct MetricsServer {
    listener: TcpListener,
    base: usize,
    conns: Vec<Option<Conn>>,
    stats: HttpStats,
    logs: LogLimiter<2>,
}

impl MetricsServer {
    /// Listen at `addr` and register with `registry` under `base`.
    pub fn bind(addr: SocketAddr, registry: &Registry, base: usize) -> io::Result<MetricsServer> {
        let mut listener = TcpListener::bind(addr)?;
        registry.register(&mut listener, Token(base), Interest::READABLE)?;
        Ok(MetricsServer {
            listener,
            base,
            conns: (0..MAX_CONNS).map(|_| None).collect(),
            stats: HttpStats::default(),
            logs: LogLimiter::new(3, Duration::from_secs(60)),
        })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Whether a token is this server's.
    pub fn owns(&self, t: Token) -> bool {
        t.0 >= self.base && t.0 <= self.base + MAX_CONNS
    }

    /// The counters.
    pub fn stats(&self) -> HttpStats {
        self.stats
    }

    /// Handle an event of one of its tokens at `now`. Returns a connection whose request asks
    /// for the metrics: render them and call [`MetricsServer::answer`].
    pub fn on_event(&mut self, registry: &Registry, t: Token, now: Nanos) -> Option<usize> {
        if t.0 == self.base {
            self.accept(registry, now);
            return None;
        }
        let i = t.0.checked_sub(self.base + 1)?;
        let wanted = self.read(registry, i, now);
        self.flush(registry, i);
        wanted
    }

    /// Answer connection `conn` with `body` (the exposition), or with `500` if it is larger
    /// than [`MAX_BODY`].
    pub fn answer(&mut self, registry: &Registry, conn: usize, body: &str, now: Nanos) {
        let Some(c) = self.conns.get_mut(conn).and_then(Option::as_mut) else {
            return;
        };
        let Phase::Rendering { head } = c.phase else {
            return;
        };
        c.out = if body.len() > MAX_BODY {
            self.stats.refused += 1;
            response(
                Status::ServerError,
                "text/plain; charset=utf-8",
                "metrics larger than the bound\n",
                head,
            )
        } else {
            self.stats.scrapes += 1;
            response(Status::Ok, super::metrics::CONTENT_TYPE, body, head)
        };
        c.phase = Phase::Writing;
        c.deadline = now.plus(ANSWER_TIMEOUT);
        self.flush(registry, conn);
    }

    /// The earliest deadline of a connection.
    pub fn next_deadline(&self) -> Option<Nanos> {
        slots::next_deadline(&self.conns)
    }

    /// Close connections past their deadline.
    pub fn tick(&mut self, registry: &Registry, now: Nanos) {
        let closed = slots::close_expired(registry, &mut self.conns, now);
        if closed > 0 {
            self.stats.timeouts += closed;
            if let Some(n) = self.logs.allow(LOG_DROPPED, now) {
                log::warn!(
                    "metrics: closed {closed} connection(s) that sent no request within {REQUEST_TIMEOUT:?} or did not take the answer within {ANSWER_TIMEOUT:?}{}",
                    LogLimiter::<2>::note(n)
                );
            }
        }
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.conns.iter().flatten().count()
    }

    fn accept(&mut self, registry: &Registry, now: Nanos) {
        for _ in 0..ACCEPTS_PER_TURN {
            match self.listener.accept() {
                Ok((stream, _)) => self.admit(registry, stream, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if let Some(n) = self.logs.allow(LOG_ACCEPT, now) {
                        log::warn!("metrics: accept failed: {e}{}", LogLimiter::<2>::note(n));
                    }
                    return;
                }
            }
        }
        // More wait: mio's readiness is edge-triggered, so come back at the next turn.
        let _ = registry.reregister(&mut self.listener, Token(self.base), Interest::READABLE);
    }

    fn admit(&mut self, registry: &Registry, mut stream: TcpStream, now: Nanos) {
        let slot = match self.conns.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                // The oldest that has not finished its request gives way; answers in progress
                // are kept (the newcomer is closed instead).
                let oldest = self
                    .conns
                    .iter()
                    .enumerate()
                    .filter_map(|(i, c)| c.as_ref().map(|c| (i, c)))
                    .filter(|(_, c)| c.phase == Phase::Reading)
                    .min_by_key(|(_, c)| c.opened)
                    .map(|(i, _)| i);
                match oldest {
                    Some(i) => {
                        self.close(registry, i);
                        self.stats.evicted += 1;
                        i
                    }
                    None => {
                        self.stats.refused += 1;
                        return;
                    }
                }
            }
        };
        if registry
            .register(
                &mut stream,
                Token(self.base + 1 + slot),
                Interest::READABLE | Interest::WRITABLE,
            )
            .is_err()
        {
            return;
        }
        self.conns[slot] = Some(Conn {
            stream,
            buf: heapless::Vec::new(),
            out: Vec::new(),
            written: 0,
            phase: Phase::Reading,
            opened: now,
            deadline: now.plus(REQUEST_TIMEOUT),
        });
        // Data that arrived with the connection is reported by the registration itself.
    }

    /// Read what arrived on `i`; the connection if its request asks for the metrics.
    fn read(&mut self, registry: &Registry, i: usize, now: Nanos) -> Option<usize> {
        let c = self.conns.get_mut(i)?.as_mut()?;
        if c.phase != Phase::Reading {
            return None;
        }
        let mut chunk = [0u8; 1024];
        // None: wait for more; Some(None): close; Some(Some(r)): complete.
        let got: Option<Option<Request>> = loop {
            let room = MAX_REQUEST - c.buf.len();
            if room == 0 {
                break parse_request(&c.buf).map(Some);
            }
            let want = room.min(chunk.len());
            match c.stream.read(&mut chunk[..want]) {
                // Closed before a complete request: nothing to answer.
                Ok(0) => break Some(None),
                Ok(n) => {
                    // Cannot fail: at most `room` bytes were read.
                    let _ = c.buf.extend_from_slice(&chunk[..n]);
                    if let Some(r) = parse_request(&c.buf) {
                        break Some(Some(r));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break Some(None),
            }
        };
        match got? {
            None => {
                self.close(registry, i);
                None
            }
            Some(Request::Metrics { head }) => {
                c.phase = Phase::Rendering { head };
                Some(i)
            }
            Some(Request::Refuse(status)) => {
                self.stats.refused += 1;
                c.out = response(status, "text/plain; charset=utf-8", "", false);
                c.phase = Phase::Writing;
                c.deadline = now.plus(ANSWER_TIMEOUT);
                None
            }
        }
    }

    /// Write what is pending on `i`; close it once all is written or on an error.
    fn flush(&mut self, registry: &Registry, i: usize) {
        let Some(c) = self.conns.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        if c.phase != Phase::Writing {
            return;
        }
        while c.written < c.out.len() {
            match c.stream.write(&c.out[c.written..]) {
                Ok(0) => break,
                Ok(n) => c.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = c.stream.flush();
        let _ = c.stream.shutdown(std::net::Shutdown::Write);
        self.close(registry, i);
    }

    fn close(&mut self, registry: &Registry, i: usize) {
        slots::close(registry, &mut self.conns, i);
    }
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
