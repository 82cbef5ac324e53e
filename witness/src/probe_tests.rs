//! Unit tests of `probe`.

use super::*;
use mio::{Events, Poll};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;

const BASE: usize = 100;

fn spec(kind: ProbeKind, timeout_ms: u64) -> ProbeSpec {
    ProbeSpec {
        kind,
        interval: Duration::from_secs(10),
        timeout: Duration::from_millis(timeout_ms),
    }
}

fn parse(s: &str, timeout_ms: u64) -> ProbeSpec {
    spec(ProbeKind::parse(s).unwrap(), timeout_ms)
}

/// A daemon-like loop: poll, route owned events, tick, take results; until `want` results.
fn drive(set: &mut ProbeSet, poll: &mut Poll, want: usize) -> Vec<ProbeResult> {
    let mut events = Events::with_capacity(16);
    let mut out = Vec::new();
    let give_up = Instant::now() + Duration::from_secs(5);
    loop {
        set.on_tick(poll.registry(), Instant::now());
        out.extend(set.take_results());
        if out.len() >= want {
            return out;
        }
        assert!(Instant::now() < give_up, "no result in 5 s: {out:?}");
        poll_once(poll, &mut events, set.poll_timeout(Instant::now()));
        let now = Instant::now();
        for ev in events.iter() {
            assert!(set.owns(ev.token()), "foreign token {:?}", ev.token());
            set.on_event(poll.registry(), ev, now);
        }
        out.extend(set.take_results());
    }
}

fn poll_once(poll: &mut Poll, events: &mut Events, timeout: Option<Duration>) {
    match poll.poll(events, timeout) {
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => events.clear(),
        r => r.unwrap(),
    }
}

/// Run `specs` once each, concurrently; results by probe index.
fn run_all(specs: Vec<ProbeSpec>) -> Vec<ProbeResult> {
    let n = specs.len();
    let mut poll = Poll::new().unwrap();
    let mut set = ProbeSet::new(specs, BASE).unwrap();
    let mut rs = drive(&mut set, &mut poll, n);
    assert_eq!(rs.len(), n, "{rs:?}");
    rs.sort_by_key(|r| r.probe);
    for (i, r) in rs.iter().enumerate() {
        assert_eq!(r.probe, i);
        assert!(r.detail.len() <= MAX_DETAIL);
        assert_eq!(set.stats(i).unwrap().last.as_ref(), Some(r));
    }
    assert_eq!(set.in_flight(), 0);
    rs
}

/// A server that reads the request, answers `reply` and closes; it sends the request back
/// to the test.
fn server(reply: &'static [u8]) -> (SocketAddr, mpsc::Receiver<Vec<u8>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            let mut req = Vec::new();
            let mut b = [0u8; 1024];
            // A request line, or an HTTP header block.
            let done = |r: &[u8]| match r.windows(10).any(|w| w == b"HTTP/1.1\r\n") {
                true => r.ends_with(b"\r\n\r\n"),
                false => r.ends_with(b"\n"),
            };
            while !done(&req) {
                match s.read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&b[..n]),
                }
            }
            let _ = s.write_all(reply);
            let _ = tx.send(req);
        }
    });
    (a, rx)
}

/// A port nothing listens on (bound, then closed).
fn closed_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A listener whose accept queue is full: new connections hang (SYNs are dropped).
fn full_listener() -> (TcpListener, Vec<TcpStream>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    let mut held = Vec::new();
    while held.len() < 10_000 {
        match TcpStream::connect_timeout(&a, Duration::from_millis(30)) {
            Ok(s) => held.push(s),
            Err(_) => return (l, held),
        }
    }
    panic!("accept queue never filled");
}

#[test]
fn tcp_ok_refused_timeout() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let (full, _held) = full_listener();
    let rs = run_all(vec![
        spec(ProbeKind::Tcp(l.local_addr().unwrap()), 500),
        spec(ProbeKind::Tcp(closed_port()), 500),
        spec(ProbeKind::Tcp(full.local_addr().unwrap()), 150),
    ]);
    assert_eq!(
        (rs[0].class, rs[0].detail.as_str()),
        (Class::Ok, "connected")
    );
    assert_eq!(rs[1].class, Class::Refused, "{:?}", rs[1]);
    assert!(rs[1].detail.contains("refused"), "{:?}", rs[1]);
    assert_eq!(
        (rs[2].class, rs[2].detail.as_str()),
        (Class::Timeout, "not connected within 150ms")
    );
    assert!(rs[2].latency >= Duration::from_millis(150));
    assert!(rs[2].latency < Duration::from_millis(400));
}

#[test]
fn http_ok_wrong_status_malformed_closed_timeout() {
    let (ok, req) = server(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let (wrong, _r1) = server(b"HTTP/1.0 503 Service Unavailable\r\n\r\n");
    let (junk, _r2) = server(b"SSH-2.0-OpenSSH_9.6\r\n");
    let (closed, _r3) = server(b"");
    let (long, _r4) = server(&[b'x'; 5000]);
    let silent = TcpListener::bind("127.0.0.1:0").unwrap(); // never accepts nor answers
    let rs = run_all(vec![
        parse(&format!("http {ok} /health"), 500),
        parse(&format!("http {wrong} /"), 500),
        parse(&format!("http {junk} /"), 500),
        parse(&format!("http {closed} HEAD / 204"), 500),
        parse(&format!("http {long} /"), 500),
        parse(&format!("http {} /", silent.local_addr().unwrap()), 150),
    ]);
    assert_eq!(
        (rs[0].class, rs[0].detail.as_str()),
        (Class::Ok, "HTTP/1.1 200 OK")
    );
    let sent = String::from_utf8(req.recv().unwrap()).unwrap();
    assert!(
        sent.starts_with(&format!("GET /health HTTP/1.1\r\nHost: {ok}\r\n")),
        "{sent:?}"
    );
    assert!(sent.contains("\r\nConnection: close\r\n"), "{sent:?}");
    assert_eq!(
        (rs[1].class, rs[1].detail.as_str()),
        (
            Class::AppError,
            "status 503, expected 200: HTTP/1.0 503 Service Unavailable"
        )
    );
    assert_eq!(
        (rs[2].class, rs[2].detail.as_str()),
        (
            Class::AppError,
            "malformed status line 'SSH-2.0-OpenSSH_9.6'"
        )
    );
    assert_eq!(
        (rs[3].class, rs[3].detail.as_str()),
        (Class::AppError, "closed without a status line")
    );
    assert_eq!(
        (rs[4].class, rs[4].detail.as_str()),
        (Class::AppError, "no line end in the first 4096 bytes")
    );
    assert_eq!(
        (rs[5].class, rs[5].detail.as_str()),
        (Class::Timeout, "no reply within 150ms")
    );
}

#[test]
fn line_ok_wrong_reply() {
    let (ok, req) = server(b"PONG model=ok\n");
    let (wrong, _r) = server(b"ERR overloaded\r\n");
    let rs = run_all(vec![
        parse(&format!("line {ok} PING PONG"), 500),
        parse(&format!("line {wrong} PING PONG"), 500),
        parse(&format!("line {} PING PONG", closed_port()), 500),
    ]);
    assert_eq!(
        (rs[0].class, rs[0].detail.as_str()),
        (Class::Ok, "PONG model=ok")
    );
    assert_eq!(req.recv().unwrap(), b"PING\n");
    assert_eq!(
        (rs[1].class, rs[1].detail.as_str()),
        (
            Class::AppError,
            "reply 'ERR overloaded', expected 'PONG...'"
        )
    );
    assert_eq!(rs[2].class, Class::Refused);
}

#[test]
fn commands_exit_status_output_and_errors() {
    let rs = run_all(vec![
        parse("cmd true", 2000),
        parse("cmd sh -c 'echo; echo broken; echo more; exit 3'", 2000),
        parse("cmd sh -c 'echo oops >&2; exit 2'", 2000),
        parse("cmd /nonexistent/check", 2000),
        // Closes its output early, exits later: found by polling.
        parse("cmd sh -c 'exec >&- 2>&-; sleep 0.05'", 2000),
        // Much output: drained, not kept.
        parse(
            "cmd sh -c 'head -c 300000 /dev/zero | tr \"\\000\" x; exit 0'",
            2000,
        ),
        parse("cmd sh -c 'kill -TERM $$'", 2000),
    ]);
    assert_eq!((rs[0].class, rs[0].detail.as_str()), (Class::Ok, "exit 0"));
    assert_eq!(
        (rs[1].class, rs[1].detail.as_str()),
        (Class::AppError, "exit 3: broken")
    );
    assert_eq!(
        (rs[2].class, rs[2].detail.as_str()),
        (Class::AppError, "exit 2: oops")
    );
    assert_eq!(rs[3].class, Class::AppError);
    assert!(
        rs[3].detail.starts_with("cannot run /nonexistent/check"),
        "{:?}",
        rs[3]
    );
    assert_eq!((rs[4].class, rs[4].detail.as_str()), (Class::Ok, "exit 0"));
    assert!(rs[4].latency >= Duration::from_millis(50));
    assert_eq!(rs[5].class, Class::Ok);
    assert_eq!(rs[5].detail, "x".repeat(MAX_DETAIL));
    assert_eq!(
        (rs[6].class, rs[6].detail.as_str()),
        (Class::AppError, "killed by signal 15")
    );
}

#[test]
fn command_timeout_kills_and_reaps() {
    let mut poll = Poll::new().unwrap();
    let mut set =
        ProbeSet::new(vec![parse("cmd sh -c 'echo $$; exec sleep 5'", 200)], BASE).unwrap();
    let start = Instant::now();
    let r = drive(&mut set, &mut poll, 1).remove(0);
    assert_eq!(r.class, Class::Timeout, "{r:?}");
    assert!(r.latency >= Duration::from_millis(200), "{r:?}");
    assert!(start.elapsed() < Duration::from_secs(1));
    // "no exit within 200ms, killed pid N: N"
    let pid: u32 = r.detail.rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(
        r.detail,
        format!("no exit within 200ms, killed pid {pid}: {pid}")
    );
    let mut events = Events::with_capacity(4);
    while set.unreaped() > 0 {
        assert!(start.elapsed() < Duration::from_secs(1), "not reaped");
        poll_once(&mut poll, &mut events, set.poll_timeout(Instant::now()));
        set.on_tick(poll.registry(), Instant::now());
    }
    // Reaped: no zombie left in /proc.
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}

/// Process state from /proc: None when gone, else the state letter ('Z' for a zombie).
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.trim_start().chars().next()
}

#[test]
fn command_timeout_kills_what_the_command_started() {
    // A script that starts a long job and waits: killing only the shell would leave the
    // job running after every timed-out probe.
    let mut poll = Poll::new().unwrap();
    let mut set = ProbeSet::new(
        vec![parse("cmd sh -c 'sleep 30 & echo $!; wait'", 300)],
        BASE,
    )
    .unwrap();
    let r = drive(&mut set, &mut poll, 1).remove(0);
    assert_eq!(r.class, Class::Timeout, "{r:?}");
    let job: u32 = r.detail.rsplit(' ').next().unwrap().parse().unwrap();
    let start = Instant::now();
    let mut events = Events::with_capacity(4);
    while set.unreaped() > 0 {
        assert!(start.elapsed() < Duration::from_secs(2), "not reaped");
        poll_once(&mut poll, &mut events, set.poll_timeout(Instant::now()));
        set.on_tick(poll.registry(), Instant::now());
    }
    // The job is dead: gone, or a zombie waiting for whoever adopted it.
    loop {
        match proc_state(job) {
            None | Some('Z') => break,
            Some(st) => assert!(
                start.elapsed() < Duration::from_secs(2),
                "the command's job {job} survived its probe (state {st})"
            ),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn runs_repeat_at_their_interval_and_count() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut s = spec(ProbeKind::Tcp(l.local_addr().unwrap()), 100);
    s.interval = Duration::from_millis(30);
    let refused = ProbeSpec {
        interval: Duration::from_millis(30),
        ..spec(ProbeKind::Tcp(closed_port()), 100)
    };
    let mut poll = Poll::new().unwrap();
    let mut set = ProbeSet::new(vec![s, refused], BASE).unwrap();
    let rs = drive(&mut set, &mut poll, 6);
    let oks: Vec<_> = rs.iter().filter(|r| r.probe == 0).collect();
    assert!(oks.len() >= 3 && oks.iter().all(|r| r.class == Class::Ok));
    for w in oks.windows(2) {
        let gap = w[1].at - w[0].at;
        assert!(gap >= Duration::from_millis(25), "{gap:?}");
    }
    let st = set.stats(0).unwrap();
    assert_eq!(st.runs as usize, oks.len());
    assert_eq!(st.streak as usize, oks.len());
    assert_eq!(st.by_class, [st.runs, 0, 0, 0]);
    let lines = set.status_lines();
    assert_eq!(lines.len(), 2);
    assert!(
        lines[0].starts_with(&format!(
            "probe 0 `tcp {}` every 30ms, timeout 100ms: ok x{} (last in ",
            l.local_addr().unwrap(),
            oks.len()
        )),
        "{}",
        lines[0]
    );
    assert!(lines[1].contains("refused x"), "{}", lines[1]);
    // Between runs it sleeps until the next start, never past it.
    let now = Instant::now();
    let wait = set.poll_timeout(now).unwrap();
    assert!(wait <= Duration::from_millis(30), "{wait:?}");
}

#[test]
fn limits_and_tokens() {
    let one = || parse("tcp 127.0.0.1:1", 100);
    assert_eq!(
        ProbeSet::new(vec![one(); MAX_PROBES + 1], 0).err(),
        Some(ProbeSetError::TooMany(MAX_PROBES + 1))
    );
    assert_eq!(
        ProbeSet::new(vec![one()], usize::MAX - 3).err(),
        Some(ProbeSetError::Tokens(usize::MAX - 3))
    );
    let mut zero = one();
    zero.interval = Duration::ZERO;
    let err = ProbeSet::new(vec![one(), zero], 0).err().unwrap();
    assert_eq!(
        err.to_string(),
        format!("probe 1: {}", ProbeSpecError::Period("interval"))
    );
    let set = ProbeSet::new(vec![one(); 3], 7).unwrap();
    assert_eq!(set.tokens(), 7..10);
    assert!(!set.owns(Token(6)) && set.owns(Token(7)) && set.owns(Token(9)));
    assert!(!set.owns(Token(10)));
    // Before the first tick every probe is due.
    let now = Instant::now();
    assert_eq!(set.next_deadline(now), Some(now));
    let empty = ProbeSet::new(Vec::new(), 0).unwrap();
    assert_eq!(empty.poll_timeout(now), None);
}

#[test]
fn details_are_bounded_and_printable() {
    assert_eq!(bounded("a\r\nb"), "a??b");
    let long = "é".repeat(100); // 200 bytes
    let b = bounded(&long);
    assert!(b.len() <= MAX_DETAIL && b.chars().all(|c| c == 'é'));
    assert_eq!(b.len(), MAX_DETAIL);
}
