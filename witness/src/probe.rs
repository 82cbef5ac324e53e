//! Application probes, driven by the witness's one mio loop: TCP connect, an HTTP request with an
//! expected status, a request line with an expected reply prefix, or a command with a timeout (a
//! child process whose stdout pipe the loop watches). Results are classified the way a client
//! would see them: ok, refused, timeout, application error.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mio::net::TcpStream;
use mio::unix::pipe;
use mio::{Interest, Registry, Token};

use hsb_common::decision::proto::ProbeClass;
use hsb_common::time::Nanos;

/// Largest reply read from a probed service or command.
const MAX_REPLY: usize = 4096;

/// What to probe and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeKind {
    /// Ok when a TCP connection is established.
    Tcp(SocketAddr),
    /// `GET path`, ok when the status matches.
    Http {
        addr: SocketAddr,
        path: String,
        status: u16,
    },
    /// Send `request\n`, ok when the reply line starts with `expect`.
    Line {
        addr: SocketAddr,
        request: String,
        expect: String,
    },
    /// Run a command, ok when it exits 0.
    Cmd(Vec<String>),
}

/// A probe specification with its period and timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    pub kind: ProbeKind,
    pub interval: Duration,
    pub timeout: Duration,
}

impl ProbeKind {
    /// Parse `tcp IP:PORT`, `http IP:PORT PATH [STATUS]`, `line IP:PORT REQUEST PREFIX`,
    /// `cmd PROGRAM [ARGS...]`.
    pub fn parse(s: &str) -> Result<ProbeKind, String> {
        let w: Vec<&str> = s.split_whitespace().collect();
        let addr = |i: usize| -> Result<SocketAddr, String> {
            w.get(i)
                .ok_or_else(|| "missing address IP:PORT".to_string())?
                .parse()
                .map_err(|_| {
                    format!(
                        "'{}' is not an address IP:PORT (no host names: the binary is static)",
                        w[i]
                    )
                })
        };
        match w.first().copied() {
            Some("tcp") if w.len() == 2 => Ok(ProbeKind::Tcp(addr(1)?)),
            Some("http") if (3..=4).contains(&w.len()) => Ok(ProbeKind::Http {
                addr: addr(1)?,
                path: w[2].to_string(),
                status: match w.get(3) {
                    Some(s) => s.parse().map_err(|_| format!("'{s}' is not an HTTP status"))?,
                    None => 200,
                },
            }),
            Some("line") if w.len() == 4 => Ok(ProbeKind::Line { addr: addr(1)?, request: w[2].to_string(), expect: w[3].to_string() }),
            Some("cmd") if w.len() >= 2 => Ok(ProbeKind::Cmd(w[1..].iter().map(|s| s.to_string()).collect())),
            _ => Err("expected `tcp IP:PORT`, `http IP:PORT PATH [STATUS]`, `line IP:PORT REQUEST PREFIX` or `cmd PROGRAM ARGS...`".into()),
        }
    }
}

/// One finished probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    pub class: ProbeClass,
    pub latency: Duration,
    pub detail: String,
}

enum Run {
    Net {
        stream: TcpStream,
        connected: bool,
        req: Vec<u8>,
        sent: usize,
        buf: Vec<u8>,
    },
    Child {
        child: Child,
        out: pipe::Receiver,
        buf: Vec<u8>,
        eof: bool,
    },
}

/// One probe and its run in flight (at most one).
pub struct Prober {
    pub spec: ProbeSpec,
    token: Token,
    next_at: Nanos,
    run: Option<(Run, Nanos)>,
    pub last: Option<ProbeResult>,
    pub runs: u64,
}

impl Prober {
    /// A prober using `token` for its sockets and pipes; first run at `now`.
    pub fn new(spec: ProbeSpec, token: Token, now: Nanos) -> Prober {
        Prober {
            spec,
            token,
            next_at: now,
            run: None,
            last: None,
            runs: 0,
        }
    }

    /// When this prober next needs the loop: its deadline or its next start.
    pub fn deadline(&self) -> Nanos {
        match &self.run {
            Some((Run::Child { .. }, started)) => started
                .plus(self.spec.timeout)
                .min(self.next_poll(*started)),
            Some((_, started)) => started.plus(self.spec.timeout),
            None => self.next_at,
        }
    }

    fn next_poll(&self, started: Nanos) -> Nanos {
        // A child may exit without closing stdout (its own children hold it): poll it often.
        started.plus(Duration::from_millis(5))
    }

    /// Start a due probe, expire an overdue one, and poll a child; returns a finished result.
    pub fn tick(&mut self, registry: &Registry, now: Nanos) -> Option<ProbeResult> {
        if let Some((_, started)) = &self.run {
            let started = *started;
            if now >= started.plus(self.spec.timeout) {
                return Some(self.finish(
                    registry,
                    now,
                    ProbeClass::Timeout,
                    format!("no answer within {:?}", self.spec.timeout),
                ));
            }
            if matches!(self.run, Some((Run::Child { .. }, _))) {
                return self.poll_child(registry, now);
            }
            return None;
        }
        if now < self.next_at {
            return None;
        }
        self.next_at = now.plus(self.spec.interval);
        self.runs += 1;
        match self.start(registry) {
            Ok(run) => {
                self.run = Some((run, now));
                None
            }
            Err((class, detail)) => Some(self.result(now, now, class, detail)),
        }
    }

    fn start(&self, registry: &Registry) -> Result<Run, (ProbeClass, String)> {
        let net = |addr: SocketAddr, req: Vec<u8>| -> Result<Run, (ProbeClass, String)> {
            let mut stream = TcpStream::connect(addr).map_err(|e| (classify(&e), e.to_string()))?;
            registry
                .register(
                    &mut stream,
                    self.token,
                    Interest::READABLE | Interest::WRITABLE,
                )
                .map_err(|e| (ProbeClass::AppError, format!("register: {e}")))?;
            Ok(Run::Net {
                stream,
                connected: false,
                req,
                sent: 0,
                buf: Vec::new(),
            })
        };
        match &self.spec.kind {
            ProbeKind::Tcp(a) => net(*a, Vec::new()),
            ProbeKind::Http { addr, path, .. } => {
                net(*addr, format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: hsb-witness\r\nConnection: close\r\n\r\n").into_bytes())
            }
            ProbeKind::Line { addr, request, .. } => net(*addr, format!("{request}\n").into_bytes()),
            ProbeKind::Cmd(argv) => {
                let mut child = Command::new(&argv[0])
                    .args(&argv[1..])
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .map_err(|e| (ProbeClass::AppError, format!("cannot run {}: {e}", argv[0])))?;
                let Some(stdout) = child.stdout.take() else {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err((ProbeClass::AppError, "no stdout pipe".into()));
                };
                let mut out = pipe::Receiver::from(stdout);
                let setup = out.set_nonblocking(true).and_then(|_| registry.register(&mut out, self.token, Interest::READABLE));
                if let Err(e) = setup {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err((ProbeClass::AppError, format!("watch child: {e}")));
                }
                Ok(Run::Child { child, out, buf: Vec::new(), eof: false })
            }
        }
    }

    /// Whether a token is this prober's.
    pub fn owns(&self, t: Token) -> bool {
        t == self.token
    }

    /// Progress the run in flight after an event.
    pub fn on_event(&mut self, registry: &Registry, now: Nanos) -> Option<ProbeResult> {
        let kind = self.spec.kind.clone();
        let (run, _) = self.run.as_mut()?;
        match run {
            Run::Net {
                stream,
                connected,
                req,
                sent,
                buf,
            } => {
                if !*connected {
                    if let Ok(Some(e)) | Err(e) = stream.take_error() {
                        return Some(self.finish(registry, now, classify(&e), e.to_string()));
                    }
                    match stream.peer_addr() {
                        Ok(_) => *connected = true,
                        Err(e) if e.kind() == io::ErrorKind::NotConnected => return None,
                        Err(e) => {
                            return Some(self.finish(registry, now, classify(&e), e.to_string()))
                        }
                    }
                    if matches!(kind, ProbeKind::Tcp(_)) {
                        return Some(self.finish(
                            registry,
                            now,
                            ProbeClass::Ok,
                            "connected".into(),
                        ));
                    }
                }
                while *sent < req.len() {
                    match stream.write(&req[*sent..]) {
                        Ok(n) => *sent += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                        Err(e) => {
                            return Some(self.finish(registry, now, classify(&e), e.to_string()))
                        }
                    }
                }
                let mut chunk = [0u8; 1024];
                let mut eof = false;
                loop {
                    match stream.read(&mut chunk) {
                        Ok(0) => {
                            eof = true;
                            break;
                        }
                        Ok(n) => {
                            let room = MAX_REPLY - buf.len();
                            buf.extend_from_slice(&chunk[..n.min(room)]);
                            if buf.len() >= MAX_REPLY {
                                break;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            return Some(self.finish(registry, now, classify(&e), e.to_string()))
                        }
                    }
                }
                let line_end = buf.iter().position(|&b| b == b'\n');
                if line_end.is_none() && !eof && buf.len() < MAX_REPLY {
                    return None;
                }
                let line = String::from_utf8_lossy(&buf[..line_end.unwrap_or(buf.len())])
                    .trim_end()
                    .to_string();
                let (class, detail) = judge(&kind, &line);
                Some(self.finish(registry, now, class, detail))
            }
            Run::Child { out, buf, eof, .. } => {
                let mut chunk = [0u8; 1024];
                loop {
                    match out.read(&mut chunk) {
                        Ok(0) => {
                            *eof = true;
                            break;
                        }
                        Ok(n) => {
                            let room = MAX_REPLY - buf.len();
                            buf.extend_from_slice(&chunk[..n.min(room)]);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => {
                            *eof = true;
                            break;
                        }
                    }
                }
                self.poll_child(registry, now)
            }
        }
    }

    fn poll_child(&mut self, registry: &Registry, now: Nanos) -> Option<ProbeResult> {
        let Some((Run::Child { child, buf, .. }, _)) = self.run.as_mut() else {
            return None;
        };
        match child.try_wait() {
            Ok(Some(status)) => {
                let first = String::from_utf8_lossy(buf)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string();
                let (class, detail) = if status.success() {
                    (ProbeClass::Ok, first)
                } else {
                    (ProbeClass::AppError, format!("{status}: {first}"))
                };
                Some(self.finish(registry, now, class, detail))
            }
            Ok(None) => None,
            Err(e) => Some(self.finish(registry, now, ProbeClass::AppError, format!("wait: {e}"))),
        }
    }

    fn finish(
        &mut self,
        registry: &Registry,
        now: Nanos,
        class: ProbeClass,
        detail: String,
    ) -> ProbeResult {
        let started = self.run.as_ref().map_or(now, |(_, s)| *s);
        if let Some((run, _)) = self.run.take() {
            match run {
                Run::Net { mut stream, .. } => {
                    let _ = registry.deregister(&mut stream);
                }
                Run::Child {
                    mut child, mut out, ..
                } => {
                    let _ = registry.deregister(&mut out);
                    // Never leave a child behind: kill (no-op if it exited) and reap.
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        self.result(started, now, class, detail)
    }

    fn result(
        &mut self,
        started: Nanos,
        now: Nanos,
        class: ProbeClass,
        mut detail: String,
    ) -> ProbeResult {
        if detail.len() > 120 {
            let mut cut = 120;
            while !detail.is_char_boundary(cut) {
                cut -= 1;
            }
            detail.truncate(cut);
        }
        let r = ProbeResult {
            class,
            latency: now.since(started),
            detail,
        };
        self.last = Some(r.clone());
        r
    }
}

fn classify(e: &io::Error) -> ProbeClass {
    match e.kind() {
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset => ProbeClass::Refused,
        io::ErrorKind::TimedOut => ProbeClass::Timeout,
        _ => ProbeClass::Refused,
    }
}

fn judge(kind: &ProbeKind, line: &str) -> (ProbeClass, String) {
    match kind {
        ProbeKind::Http { status, .. } => {
            let mut w = line.split_whitespace();
            match (w.next(), w.next().and_then(|s| s.parse::<u16>().ok())) {
                (Some(v), Some(got)) if v.starts_with("HTTP/") => {
                    if got == *status {
                        (ProbeClass::Ok, line.to_string())
                    } else {
                        (
                            ProbeClass::AppError,
                            format!("status {got}, expected {status}"),
                        )
                    }
                }
                _ if line.is_empty() => (
                    ProbeClass::AppError,
                    "connection closed without a response".into(),
                ),
                _ => (ProbeClass::AppError, format!("malformed response '{line}'")),
            }
        }
        ProbeKind::Line { expect, .. } => {
            if line.starts_with(expect.as_str()) {
                (ProbeClass::Ok, line.to_string())
            } else if line.is_empty() {
                (
                    ProbeClass::AppError,
                    "connection closed without a reply".into(),
                )
            } else {
                (
                    ProbeClass::AppError,
                    format!("reply '{line}', expected '{expect}...'"),
                )
            }
        }
        _ => (ProbeClass::Ok, line.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hsb_common::time::Clock;
    use mio::{Events, Poll};
    use std::net::TcpListener;

    fn drive(kind: ProbeKind, timeout: Duration) -> ProbeResult {
        let mut poll = Poll::new().unwrap();
        let clock = Clock::new();
        let spec = ProbeSpec {
            kind,
            interval: Duration::from_secs(10),
            timeout,
        };
        let mut p = Prober::new(spec, Token(7), clock.now());
        let mut events = Events::with_capacity(8);
        loop {
            let now = clock.now();
            if let Some(r) = p.tick(poll.registry(), now) {
                return r;
            }
            let wait = p.deadline().since(now).max(Duration::from_millis(1));
            poll.poll(&mut events, Some(wait)).unwrap();
            let now = clock.now();
            for ev in events.iter() {
                if p.owns(ev.token()) {
                    if let Some(r) = p.on_event(poll.registry(), now) {
                        return r;
                    }
                }
            }
        }
    }

    fn server(reply: &'static [u8]) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = l.accept() {
                let mut b = [0u8; 512];
                let _ = s.read(&mut b);
                let _ = s.write_all(reply);
            }
        });
        a
    }

    fn closed_port() -> SocketAddr {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    #[test]
    fn tcp_ok_and_refused() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        assert_eq!(
            drive(
                ProbeKind::Tcp(l.local_addr().unwrap()),
                Duration::from_secs(1)
            )
            .class,
            ProbeClass::Ok
        );
        assert_eq!(
            drive(ProbeKind::Tcp(closed_port()), Duration::from_secs(1)).class,
            ProbeClass::Refused
        );
    }

    #[test]
    fn http_status_ok_wrong_malformed_and_timeout() {
        let ok = server(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(
            drive(
                ProbeKind::Http {
                    addr: ok,
                    path: "/".into(),
                    status: 200
                },
                Duration::from_secs(1)
            )
            .class,
            ProbeClass::Ok
        );
        let bad = server(b"HTTP/1.1 503 Unavailable\r\n\r\n");
        let r = drive(
            ProbeKind::Http {
                addr: bad,
                path: "/".into(),
                status: 200,
            },
            Duration::from_secs(1),
        );
        assert_eq!(
            (r.class, r.detail.as_str()),
            (ProbeClass::AppError, "status 503, expected 200")
        );
        let junk = server(b"SSH-2.0-x\r\n");
        assert_eq!(
            drive(
                ProbeKind::Http {
                    addr: junk,
                    path: "/".into(),
                    status: 200
                },
                Duration::from_secs(1)
            )
            .class,
            ProbeClass::AppError
        );
        // Accepts but never answers.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let r = drive(
            ProbeKind::Http {
                addr: l.local_addr().unwrap(),
                path: "/".into(),
                status: 200,
            },
            Duration::from_millis(150),
        );
        assert_eq!(r.class, ProbeClass::Timeout);
        assert!(r.latency >= Duration::from_millis(150));
    }

    #[test]
    fn line_reply_prefix() {
        let a = server(b"PONG\n");
        assert_eq!(
            drive(
                ProbeKind::Line {
                    addr: a,
                    request: "PING".into(),
                    expect: "PONG".into()
                },
                Duration::from_secs(1)
            )
            .class,
            ProbeClass::Ok
        );
        let b = server(b"ERR no\n");
        assert_eq!(
            drive(
                ProbeKind::Line {
                    addr: b,
                    request: "PING".into(),
                    expect: "PONG".into()
                },
                Duration::from_secs(1)
            )
            .class,
            ProbeClass::AppError
        );
    }

    #[test]
    fn commands_exit_status_and_timeout_without_zombies() {
        assert_eq!(
            drive(ProbeKind::Cmd(vec!["true".into()]), Duration::from_secs(2)).class,
            ProbeClass::Ok
        );
        let r = drive(
            ProbeKind::Cmd(vec!["sh".into(), "-c".into(), "echo broken; exit 3".into()]),
            Duration::from_secs(2),
        );
        assert_eq!(r.class, ProbeClass::AppError);
        assert!(r.detail.contains("broken"), "{}", r.detail);
        let r = drive(
            ProbeKind::Cmd(vec!["sleep".into(), "5".into()]),
            Duration::from_millis(200),
        );
        assert_eq!(r.class, ProbeClass::Timeout);
        assert!(r.latency < Duration::from_secs(2));
        let r = drive(
            ProbeKind::Cmd(vec!["/nonexistent/probe".into()]),
            Duration::from_secs(1),
        );
        assert_eq!(r.class, ProbeClass::AppError);
    }

    #[test]
    fn spec_parsing() {
        assert_eq!(
            ProbeKind::parse("tcp 10.0.0.5:80").unwrap(),
            ProbeKind::Tcp("10.0.0.5:80".parse().unwrap())
        );
        assert!(matches!(
            ProbeKind::parse("http 10.0.0.5:80 /health").unwrap(),
            ProbeKind::Http { status: 200, .. }
        ));
        assert!(ProbeKind::parse("tcp example.com:80")
            .unwrap_err()
            .contains("no host names"));
        assert!(ProbeKind::parse("udp 1.2.3.4:5").is_err());
        assert!(ProbeKind::parse("http 1.2.3.4:5 / abc").is_err());
    }
}
