//! The metrics responder's tests: request heads as literal bytes, and a real loop on loopback.

use super::*;
use mio::{Events, Poll};
use std::io::{Read, Write};
use std::net::TcpStream as StdStream;

#[test]
fn request_heads_in_literal_bytes() {
    let m = Some(Request::Metrics { head: false });
    assert_eq!(
        parse_request(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
        m
    );
    assert_eq!(parse_request(b"GET /metrics HTTP/1.0\r\n\r\n"), m);
    assert_eq!(parse_request(b"GET /metrics?x=1 HTTP/1.0\n\n"), m);
    assert_eq!(
        parse_request(b"HEAD /metrics HTTP/1.1\r\n\r\n"),
        Some(Request::Metrics { head: true })
    );
    // Incomplete: wait.
    assert_eq!(parse_request(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"), None);
    assert_eq!(parse_request(b""), None);
    let refuse = |s| Some(Request::Refuse(s));
    assert_eq!(
        parse_request(b"GET / HTTP/1.1\r\n\r\n"),
        refuse(Status::NotFound)
    );
    assert_eq!(
        parse_request(b"GET /metricsx HTTP/1.1\r\n\r\n"),
        refuse(Status::NotFound)
    );
    assert_eq!(
        parse_request(b"POST /metrics HTTP/1.1\r\n\r\n"),
        refuse(Status::MethodNotAllowed)
    );
    assert_eq!(
        parse_request(b"GET /metrics HTTP/2.0\r\n\r\n"),
        refuse(Status::VersionNotSupported)
    );
    for bad in [
        &b"GET /metrics\r\n\r\n"[..],
        b"GET  /metrics HTTP/1.1\r\n\r\n",
        b"get /metrics HTTP/1.1\r\n\r\n",
        b"GET /metrics FTP/1.1\r\n\r\n",
        b"GET /metrics HTTP/1.1 x\r\n\r\n",
        b"\xff\xfe /metrics HTTP/1.1\r\n\r\n",
        b"\r\n\r\n",
    ] {
        assert_eq!(parse_request(bad), refuse(Status::BadRequest), "{bad:?}");
    }
    // A head that never ends is refused once it reaches the bound, not read on.
    let long = vec![b'a'; MAX_REQUEST];
    assert_eq!(parse_request(&long), refuse(Status::HeaderTooLarge));
    let mut late = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
    late.resize(MAX_REQUEST, b'x');
    late.extend_from_slice(b"\r\n\r\n");
    assert_eq!(parse_request(&late), refuse(Status::HeaderTooLarge));
}

#[test]
fn responses_in_literal_bytes() {
    assert_eq!(
        response(Status::Ok, "text/plain", "a 1\n", false),
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 4\r\nConnection: close\r\n\r\na 1\n"
    );
    assert_eq!(
        response(Status::Ok, "text/plain", "a 1\n", true),
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 4\r\nConnection: close\r\n\r\n"
    );
    let r = String::from_utf8(response(Status::MethodNotAllowed, "t", "", false)).expect("utf8");
    assert!(
        r.starts_with("HTTP/1.1 405 Method Not Allowed\r\n")
            && r.contains("\r\nAllow: GET, HEAD\r\n")
    );
}

/// A loop like a daemon's: the server on tokens 10.., answering every scrape with `body`.
struct Loop {
    poll: Poll,
    server: MetricsServer,
    now: Nanos,
}

impl Loop {
    fn new() -> Loop {
        let poll = Poll::new().expect("poll");
        let server = MetricsServer::bind("127.0.0.1:0".parse().expect("addr"), poll.registry(), 10)
            .expect("bind");
        Loop {
            poll,
            server,
            now: Nanos::ZERO,
        }
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.server.local_addr().expect("addr")
    }

    /// Turns of the loop for `ms` of real time, with the server's clock at `self.now`.
    fn run(&mut self, ms: u64, body: &str) {
        let mut events = Events::with_capacity(16);
        let end = std::time::Instant::now() + Duration::from_millis(ms);
        while std::time::Instant::now() < end {
            self.poll
                .poll(&mut events, Some(Duration::from_millis(5)))
                .expect("poll");
            for ev in events.iter() {
                if self.server.owns(ev.token()) {
                    if let Some(c) =
                        self.server
                            .on_event(self.poll.registry(), ev.token(), self.now)
                    {
                        self.server.answer(self.poll.registry(), c, body, self.now);
                    }
                }
            }
            self.server.tick(self.poll.registry(), self.now);
        }
    }
}

fn send(addr: std::net::SocketAddr, bytes: &[u8]) -> StdStream {
    let mut s = StdStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(bytes).expect("write");
    s
}

fn read_all(mut s: StdStream) -> String {
    let mut v = Vec::new();
    let _ = s.read_to_end(&mut v);
    String::from_utf8_lossy(&v).into_owned()
}

#[test]
fn scrapes_are_answered_and_everything_else_refused_on_a_real_socket() {
    let mut l = Loop::new();
    let a = l.addr();
    let ok = send(a, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let nf = send(a, b"GET /nothing HTTP/1.0\r\n\r\n");
    // Split across writes: read on until the head is complete.
    let mut split = send(a, b"GET /met");
    l.run(50, "hsb_up 1\n");
    split.write_all(b"rics HTTP/1.0\r\n\r\n").expect("write");
    l.run(100, "hsb_up 1\n");
    let text = read_all(ok);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains(
        "\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: 9\r\nConnection: close\r\n\r\nhsb_up 1\n"
    ));
    assert!(read_all(nf).starts_with("HTTP/1.1 404 Not Found\r\n"));
    assert!(read_all(split).ends_with("\r\n\r\nhsb_up 1\n"));
    let s = l.server.stats();
    assert_eq!((s.scrapes, s.refused), (2, 1));
    assert_eq!(l.server.connections(), 0);
}

#[test]
fn idle_connections_are_evicted_and_expire() {
    let mut l = Loop::new();
    let a = l.addr();
    // Fill every slot with connections that never send a request.
    let idle: Vec<StdStream> = (0..MAX_CONNS).map(|_| send(a, b"")).collect();
    l.run(50, "x 1\n");
    assert_eq!(l.server.connections(), MAX_CONNS);
    // A scrape still gets through: the oldest idle one gives way.
    l.now = Nanos::from_millis(10);
    let ok = send(a, b"GET /metrics HTTP/1.1\r\n\r\n");
    l.run(100, "x 1\n");
    assert!(read_all(ok).ends_with("\r\n\r\nx 1\n"));
    assert_eq!(l.server.stats().evicted, 1);
    // The rest expire at their deadline.
    l.now = Nanos::from_duration(REQUEST_TIMEOUT + Duration::from_millis(20));
    l.run(20, "x 1\n");
    assert_eq!(l.server.connections(), 0);
    assert_eq!(l.server.stats().timeouts, (MAX_CONNS - 1) as u64);
    drop(idle);
}

#[test]
fn a_head_past_the_bound_is_refused_and_the_connection_closed() {
    let mut l = Loop::new();
    let a = l.addr();
    let mut big = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
    big.resize(MAX_REQUEST + 100, b'x');
    let s = send(a, &big);
    l.run(100, "x 1\n");
    assert!(read_all(s).starts_with("HTTP/1.1 431 "));
    assert_eq!(l.server.connections(), 0);
}
