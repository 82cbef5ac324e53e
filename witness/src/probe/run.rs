//! One probe and its run in flight (at most one): a TCP exchange or a child process, moved on by
//! readiness events and ticks, never blocking. A run ends in an outcome (class and detail); the
//! probe tears the run down (deregisters, kills and reaps) and records the result.

use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::unix::pipe;
use mio::{Interest, Registry, Token};

use super::spec::{ProbeKind, ProbeSpec};
use super::{bounded, Class, ProbeResult, ProbeStats};

/// Largest reply (first line) kept from a service or a command; the rest is read and dropped.
pub const MAX_REPLY: usize = 4096;
/// How often a command whose output is still open is asked whether it exited (it may have
/// exited while a grandchild holds its output open).
const CHILD_POLL: Duration = Duration::from_millis(10);
/// How often a command whose output reached end of file is asked whether it exited: closing its
/// output is the last thing an exiting process does, shortly before it can be reaped.
const EXIT_POLL: Duration = Duration::from_millis(1);
/// How often a killed command that could not be reaped at once is asked again.
const REAP_POLL: Duration = Duration::from_millis(5);
/// Reads from a command's output per call, so that a chatty command cannot hold the loop.
const MAX_READS: usize = 16;

// Linux errno values: std gives these error kinds only from Rust 1.83 on.
const ENETUNREACH: i32 = 101;
const EHOSTUNREACH: i32 = 113;

/// How a run ended.
type Outcome = (Class, String);

/// One probe: its spec, schedule, run in flight, and counts.
pub(super) struct Probe {
    pub spec: ProbeSpec,
    index: usize,
    token: Token,
    /// The bytes a network probe sends, built once.
    request: Vec<u8>,
    /// Reply or command output, reused by every run.
    buf: Box<[u8; MAX_REPLY]>,
    filled: usize,
    /// Next start; `None` before the first.
    next_start: Option<Instant>,
    run: Option<Run>,
    /// A timed-out command that was killed but not yet reaped, and when to ask again. While it
    /// is there no new command starts, so each probe has at most one child process.
    killed: Option<(Child, Instant)>,
    pub stats: ProbeStats,
}

struct Run {
    started: Instant,
    deadline: Instant,
    io: Io,
}

enum Io {
    Net {
        stream: TcpStream,
        connected: bool,
        sent: usize,
    },
    Child {
        child: Child,
        /// Its stdout and stderr (one pipe); `None` once at end of file.
        out: Option<pipe::Receiver>,
        /// When to ask it next whether it exited.
        next_wait: Instant,
    },
}

impl Probe {
    pub fn new(spec: ProbeSpec, index: usize, token: Token) -> Probe {
        let request = match &spec.kind {
            ProbeKind::Http {
                addr, method, path, ..
            } => {
                let body = if matches!(method.as_str(), "POST" | "PUT" | "PATCH") {
                    "Content-Length: 0\r\n"
                } else {
                    ""
                };
                format!(
                    "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: hsb-witness\r\n\
                     Accept: */*\r\n{body}Connection: close\r\n\r\n"
                )
                .into_bytes()
            }
            ProbeKind::Line { request, .. } => format!("{request}\n").into_bytes(),
            ProbeKind::Tcp(_) | ProbeKind::Cmd(_) => Vec::new(),
        };
        Probe {
            spec,
            index,
            token,
            request,
            buf: Box::new([0; MAX_REPLY]),
            filled: 0,
            next_start: None,
            run: None,
            killed: None,
            stats: ProbeStats::default(),
        }
    }

    pub fn in_flight(&self) -> bool {
        self.run.is_some()
    }

    pub fn unreaped(&self) -> bool {
        self.killed.is_some()
    }

    /// When this probe next needs a tick: its run's deadline or next exit check, its next start,
    /// or the next attempt to reap a killed command.
    pub fn next_deadline(&self, now: Instant) -> Instant {
        let mut d = match &self.run {
            Some(run) => match &run.io {
                Io::Child { next_wait, .. } => run.deadline.min(*next_wait),
                Io::Net { .. } => run.deadline,
            },
            None => self.next_start.unwrap_or(now),
        };
        if let Some((_, at)) = &self.killed {
            d = d.min(*at);
        }
        d
    }

    /// Reap, expire, poll a command, or start a due run; a result when a run ended.
    pub fn tick(&mut self, registry: &Registry, now: Instant) -> Option<ProbeResult> {
        self.reap(now);
        if let Some(run) = &self.run {
            let expired = now >= run.deadline;
            let poll_child = matches!(&run.io, Io::Child { next_wait, .. } if now >= *next_wait);
            // A command that exited by now is judged on its exit, even at the deadline.
            if poll_child || (expired && matches!(run.io, Io::Child { .. })) {
                if let Some(outcome) = self.child_progress(registry, now, true) {
                    return Some(self.finish(registry, now, outcome));
                }
            }
            if expired {
                let detail = self.timeout_detail();
                return Some(self.finish(registry, now, (Class::Timeout, detail)));
            }
            return None;
        }
        if now < self.next_start.unwrap_or(now) {
            return None;
        }
        // Keep the phase; if a long run made us late, count the period from now.
        self.next_start = Some(match self.next_start {
            Some(t) if t + self.spec.interval > now => t + self.spec.interval,
            _ => now + self.spec.interval,
        });
        if let Some((child, _)) = &self.killed {
            let detail = format!(
                "previous command (pid {}) killed but not yet reaped",
                child.id()
            );
            return Some(self.finish(registry, now, (Class::Timeout, detail)));
        }
        match self.start(registry, now) {
            Ok(run) => {
                self.run = Some(run);
                None
            }
            Err(outcome) => Some(self.finish(registry, now, outcome)),
        }
    }

    /// Move the run on after a readiness event on this probe's token; a result when it ended.
    /// Events are hints: spurious or stale ones find nothing to do.
    pub fn on_ready(&mut self, registry: &Registry, now: Instant) -> Option<ProbeResult> {
        let outcome = match &self.run.as_ref()?.io {
            Io::Net { .. } => self.net_progress()?,
            Io::Child { .. } => self.child_progress(registry, now, false)?,
        };
        Some(self.finish(registry, now, outcome))
    }

    fn start(&mut self, registry: &Registry, now: Instant) -> Result<Run, Outcome> {
        self.filled = 0;
        let io = match &self.spec.kind {
            ProbeKind::Tcp(addr) | ProbeKind::Http { addr, .. } | ProbeKind::Line { addr, .. } => {
                let mut stream = TcpStream::connect(*addr).map_err(|e| connect_failed(&e))?;
                registry
                    .register(
                        &mut stream,
                        self.token,
                        Interest::READABLE | Interest::WRITABLE,
                    )
                    .map_err(|e| (Class::AppError, format!("cannot watch the connection: {e}")))?;
                Io::Net {
                    stream,
                    connected: false,
                    sent: 0,
                }
            }
            ProbeKind::Cmd(argv) => {
                let Some((program, args)) = argv.split_first() else {
                    return Err((Class::AppError, "empty command".into()));
                };
                let (mut child, mut out) = spawn(program, args)
                    .map_err(|e| (Class::AppError, format!("cannot run {program}: {e}")))?;
                if let Err(e) = registry.register(&mut out, self.token, Interest::READABLE) {
                    kill_tree(&mut child);
                    debug_assert!(self.killed.is_none(), "at most one child per probe");
                    self.killed = parked(child, now);
                    return Err((Class::AppError, format!("cannot watch {program}: {e}")));
                }
                Io::Child {
                    child,
                    out: Some(out),
                    next_wait: now + CHILD_POLL,
                }
            }
        };
        Ok(Run {
            started: now,
            deadline: now + self.spec.timeout,
            io,
        })
    }

    /// Connect, send, read the first line, judge it.
    fn net_progress(&mut self) -> Option<Outcome> {
        let Some(Run {
            io:
                Io::Net {
                    stream,
                    connected,
                    sent,
                },
            ..
        }) = &mut self.run
        else {
            return None;
        };
        if !*connected {
            if let Ok(Some(e)) | Err(e) = stream.take_error() {
                return Some(connect_failed(&e));
            }
            match stream.peer_addr() {
                Ok(_) => *connected = true,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return None,
                Err(e) => return Some(connect_failed(&e)),
            }
            if let ProbeKind::Tcp(_) = self.spec.kind {
                return Some((Class::Ok, "connected".into()));
            }
        }
        while *sent < self.request.len() {
            match stream.write(&self.request[*sent..]) {
                Ok(0) => return Some((Class::AppError, "connection closed while sending".into())),
                Ok(n) => *sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Some((Class::AppError, format!("send failed: {e}"))),
            }
        }
        let mut eof = false;
        while self.filled < MAX_REPLY {
            match stream.read(&mut self.buf[self.filled..]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    let new = &self.buf[self.filled..self.filled + n];
                    self.filled += n;
                    if new.contains(&b'\n') {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Some((Class::AppError, format!("receive failed: {e}"))),
            }
        }
        let got = &self.buf[..self.filled];
        let line = match got.iter().position(|&b| b == b'\n') {
            Some(end) => &got[..end],
            None if self.filled == MAX_REPLY => {
                return Some((
                    Class::AppError,
                    format!("no line end in the first {MAX_REPLY} bytes"),
                ))
            }
            None if eof => got,
            None => return None,
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        Some(judge(&self.spec.kind, line, eof && got.is_empty()))
    }

    /// Drain a command's output; on end of file or when `poll` asks, see whether it exited.
    fn child_progress(&mut self, registry: &Registry, now: Instant, poll: bool) -> Option<Outcome> {
        let Some(Run {
            io:
                Io::Child {
                    child,
                    out,
                    next_wait,
                },
            ..
        }) = &mut self.run
        else {
            return None;
        };
        let mut eof = false;
        if let Some(rx) = out.as_mut() {
            let mut chunk = [0u8; 4096];
            for _ in 0..MAX_READS {
                match rx.read(&mut chunk) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => {
                        let keep = n.min(MAX_REPLY - self.filled);
                        self.buf[self.filled..self.filled + keep].copy_from_slice(&chunk[..keep]);
                        self.filled += keep;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        eof = true;
                        break;
                    }
                }
            }
            if eof {
                let _ = registry.deregister(rx);
                *out = None;
            }
        }
        if !eof && !poll {
            return None;
        }
        match child.try_wait() {
            Ok(Some(status)) => Some(judge_exit(status, first_line(&self.buf[..self.filled]))),
            Ok(None) => {
                *next_wait = now + if out.is_some() { CHILD_POLL } else { EXIT_POLL };
                None
            }
            Err(e) => Some((Class::AppError, format!("cannot wait for the command: {e}"))),
        }
    }

    fn timeout_detail(&self) -> String {
        let t = self.spec.timeout;
        match self.run.as_ref().map(|r| &r.io) {
            Some(Io::Net {
                connected: false, ..
            }) => format!("not connected within {t:?}"),
            Some(Io::Net { sent, .. }) if *sent < self.request.len() => {
                format!("request not sent within {t:?}")
            }
            Some(Io::Child { child, .. }) => {
                let out = first_line(&self.buf[..self.filled]);
                let sep = if out.is_empty() { "" } else { ": " };
                format!("no exit within {t:?}, killed pid {}{sep}{out}", child.id())
            }
            _ if self.filled > 0 => format!("incomplete reply within {t:?}"),
            _ => format!("no reply within {t:?}"),
        }
    }

    /// End the run in flight (if any): deregister, close, kill and reap; record the result.
    fn finish(&mut self, registry: &Registry, now: Instant, outcome: Outcome) -> ProbeResult {
        let started = self.run.as_ref().map_or(now, |r| r.started);
        if let Some(run) = self.run.take() {
            match run.io {
                Io::Net { mut stream, .. } => {
                    let _ = registry.deregister(&mut stream);
                }
                Io::Child { mut child, out, .. } => {
                    if let Some(mut rx) = out {
                        let _ = registry.deregister(&mut rx);
                    }
                    // Whether it exited or not, what it left running in its group goes too.
                    let exited = matches!(child.try_wait(), Ok(Some(_)));
                    kill_tree(&mut child);
                    if !exited {
                        debug_assert!(self.killed.is_none(), "at most one child per probe");
                        self.killed = parked(child, now);
                    }
                }
            }
        }
        let (class, detail) = outcome;
        let result = ProbeResult {
            probe: self.index,
            class,
            latency: now.saturating_duration_since(started),
            detail: bounded(&detail),
            at: now,
        };
        self.stats.record(&result);
        result
    }

    fn reap(&mut self, now: Instant) {
        if let Some((child, at)) = &mut self.killed {
            if now >= *at {
                match child.try_wait() {
                    Ok(None) => *at = now + REAP_POLL,
                    Ok(Some(_)) | Err(_) => self.killed = None,
                }
            }
        }
    }
}

impl Drop for Probe {
    /// Leave no child behind: kill and reap (a SIGKILLed child is gone promptly).
    fn drop(&mut self) {
        let run = self.run.take().map(|r| r.io);
        let killed = self.killed.take().map(|(c, _)| c);
        let children = [
            match run {
                Some(Io::Child { child, .. }) => Some(child),
                _ => None,
            },
            killed,
        ];
        for mut child in children.into_iter().flatten() {
            kill_tree(&mut child);
            let _ = child.wait();
        }
    }
}

/// Kill a command probe's whole process group (the child leads its own, see [`spawn`]), so
/// what a script started (a `curl` under `sh -c`, say) does not outlive a timed-out run, then
/// the child itself. While any member of the group lives, its id stays reserved, so the
/// signal cannot reach an unrelated group even when the child itself was reaped first.
fn kill_tree(child: &mut Child) {
    if let Some(pgid) = i32::try_from(child.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        // ESRCH (the group is gone) is the usual answer for a command that exited by itself.
        let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
    }
    let _ = child.kill();
}

/// A killed child: reaped now if it is gone already, else kept to retry on ticks (a child in
/// uninterruptible sleep must not block the loop).
fn parked(mut child: Child, now: Instant) -> Option<(Child, Instant)> {
    match child.try_wait() {
        Ok(None) => Some((child, now + REAP_POLL)),
        Ok(Some(_)) | Err(_) => None,
    }
}

/// Start a command with stdin empty and stdout and stderr on one pipe whose reading end, non
/// blocking, the loop watches. The command leads a process group of its own, so a timed-out
/// run is killed with everything it started ([`kill_tree`]).
fn spawn(program: &str, args: &[String]) -> io::Result<(Child, pipe::Receiver)> {
    let (tx, rx) = pipe::new()?;
    // The child's end blocks, as programs expect; ours stays non-blocking.
    tx.set_nonblocking(false)?;
    let stdout = OwnedFd::from(tx);
    let stderr = stdout.try_clone()?;
    // The Command, holding our copies of the writing end, is dropped at the end of this
    // statement, so end of file comes when the child (and its children) close theirs.
    let child = Command::new(program)
        .args(args)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        .spawn()?;
    Ok((child, rx))
}

/// Classify a failed connection attempt the way a client would see it.
fn connect_failed(e: &io::Error) -> Outcome {
    let class = match e.kind() {
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset => Class::Refused,
        io::ErrorKind::TimedOut => Class::Timeout,
        _ if matches!(e.raw_os_error(), Some(ENETUNREACH | EHOSTUNREACH)) => Class::Refused,
        // Local trouble (no descriptors, no buffers): not a verdict on the service, but not ok.
        _ => Class::AppError,
    };
    (class, format!("connect: {e}"))
}

/// Judge the first reply line of a network probe. `closed` means the peer closed without a byte.
fn judge(kind: &ProbeKind, line: &[u8], closed: bool) -> Outcome {
    let text = String::from_utf8_lossy(line);
    match kind {
        ProbeKind::Http { status, .. } => {
            if closed {
                return (Class::AppError, "closed without a status line".into());
            }
            match http_status(line) {
                Some(got) if got == *status => (Class::Ok, text.into_owned()),
                Some(got) => (
                    Class::AppError,
                    format!("status {got}, expected {status}: {text}"),
                ),
                None => (Class::AppError, format!("malformed status line '{text}'")),
            }
        }
        ProbeKind::Line { expect, .. } => {
            if closed {
                (Class::AppError, "closed without a reply".into())
            } else if line.starts_with(expect.as_bytes()) {
                (Class::Ok, text.into_owned())
            } else {
                (
                    Class::AppError,
                    format!("reply '{text}', expected '{expect}...'"),
                )
            }
        }
        ProbeKind::Tcp(_) | ProbeKind::Cmd(_) => (Class::Ok, text.into_owned()),
    }
}

/// The status code of an HTTP/1.x status line (`HTTP/1.1 200 OK`), if it is one.
fn http_status(line: &[u8]) -> Option<u16> {
    let rest = line.strip_prefix(b"HTTP/")?;
    let sp = rest.iter().position(|&b| b == b' ')?;
    let (version, rest) = (&rest[..sp], &rest[sp + 1..]);
    if version.is_empty() || !version.iter().all(|&b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let code = rest.get(..3)?;
    if !code.iter().all(u8::is_ascii_digit) || !matches!(rest.get(3), None | Some(b' ')) {
        return None;
    }
    code.iter()
        .try_fold(0u16, |n, &d| Some(n * 10 + u16::from(d - b'0')))
}

/// Classify a command's exit.
fn judge_exit(status: ExitStatus, out: String) -> Outcome {
    let sep = if out.is_empty() { "" } else { ": " };
    match (status.code(), status.signal()) {
        (Some(0), _) => (
            Class::Ok,
            if out.is_empty() { "exit 0".into() } else { out },
        ),
        (Some(code), _) => (Class::AppError, format!("exit {code}{sep}{out}")),
        (None, Some(sig)) => (Class::AppError, format!("killed by signal {sig}{sep}{out}")),
        (None, None) => (Class::AppError, format!("{status}{sep}{out}")),
    }
}

/// The first non-blank line of some output, trimmed.
fn first_line(out: &[u8]) -> String {
    String::from_utf8_lossy(out)
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .to_string()
}

#[cfg(test)]
#[path = "run_tests.rs"]
mod tests;
