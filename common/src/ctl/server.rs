//! The daemon side of the control socket: [`CtlServer`], its listener and its few
//! connections, each with a deadline, driven by the daemon's mio loop.

use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mio::net::{UnixListener, UnixStream as MioUnixStream};
use mio::{Interest, Registry, Token};

use super::socket::{create_private_dirs, describe, io_err, restrict};
use super::{
    parse_command, peer_allowed, ControlGroup, CtlError, Line, ANSWER_TIMEOUT, COMMAND_TIMEOUT,
    MAX_COMMAND, MAX_CONNS,
};
use crate::slots::{self, Slot};
use crate::time::Nanos;

/// At most one log line per kind of trouble (refused peers, dropped connections) this often.
const LOG_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the command line.
    Reading,
    /// The command went to the daemon; its answer comes with [`CtlServer::answer`].
    Executing,
    /// Writing the answer, then closing.
    Writing,
}

struct CtlConn {
    stream: MioUnixStream,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    pos: usize,
    phase: Phase,
    /// Accept order, for evicting the oldest.
    seq: u64,
    deadline: Nanos,
}

impl Slot for CtlConn {
    type Stream = MioUnixStream;
    fn deadline(&self) -> Nanos {
        self.deadline
    }
    fn stream(&mut self) -> &mut MioUnixStream {
        &mut self.stream
    }
}

/// One warning line per [`LOG_INTERVAL`]; the lines left out are counted into the next.
#[derive(Debug, Default)]
struct LogLimit {
    next: Nanos,
    suppressed: u64,
}

impl LogLimit {
    /// `Some(lines left out since the last one)` when a line may be logged now.
    fn allow(&mut self, now: Nanos) -> Option<u64> {
        if now >= self.next {
            self.next = now.plus(LOG_INTERVAL);
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

fn more(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} more not logged)")
    }
}

/// The daemon side: a listener and a few connections, driven by the daemon's mio loop.
/// Tokens `base..base + 1 + MAX_CONNS` belong to it.
pub struct CtlServer {
    listener: UnixListener,
    conns: Vec<Option<CtlConn>>,
    base: usize,
    euid: u32,
    group: Option<ControlGroup>,
    accepted: u64,
    refused_log: LogLimit,
    dropped_log: LogLimit,
    /// Where the socket was bound, and its file's (device, inode), to remove it at exit.
    path: PathBuf,
    file_id: Option<(u64, u64)>,
}

impl CtlServer {
    /// Bind at `path` and register with `registry`. The socket gets mode 0600, or 0660 and
    /// `group` as its group; its directory, when missing, is created 0700 (0710 in `group`). A
    /// stale socket is replaced; a live daemon's socket, or anything that is not a socket, is not.
    pub fn bind(
        path: &Path,
        group: Option<&ControlGroup>,
        registry: &Registry,
        base: usize,
    ) -> Result<CtlServer, CtlError> {
        if let Some(dir) = path.parent() {
            create_private_dirs(dir, group)?;
        }
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => match UnixStream::connect(path) {
                Ok(_) => {
                    return Err(CtlError::InUse {
                        path: path.to_path_buf(),
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    std::fs::remove_file(path)
                        .map_err(io_err("cannot remove the stale socket", path))?;
                    log::info!("control: replaced the stale socket {}", path.display());
                }
                Err(e) => {
                    return Err(CtlError::Io {
                        op: "cannot tell whether a daemon listens on",
                        path: path.to_path_buf(),
                        err: e,
                    })
                }
            },
            Ok(m) => {
                return Err(CtlError::NotASocket {
                    path: path.to_path_buf(),
                    found: describe(m.file_type()),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("cannot inspect", path)(e)),
        }
        let mut listener = UnixListener::bind(path).map_err(io_err("cannot bind", path))?;
        // The mode the umask gave at bind is replaced at once; a connection in between is still
        // checked by its peer credentials.
        if let Err(e) = restrict(path, group) {
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        registry
            .register(&mut listener, Token(base), Interest::READABLE)
            .map_err(io_err("cannot register", path))?;
        let file_id = std::fs::symlink_metadata(path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        Ok(CtlServer {
            path: path.to_path_buf(),
            file_id,
            listener,
            conns: (0..MAX_CONNS).map(|_| None).collect(),
            base,
            euid: rustix::process::geteuid().as_raw(),
            group: group.cloned(),
            accepted: 0,
            refused_log: LogLimit::default(),
            dropped_log: LogLimit::default(),
        })
    }

    /// Whether a token is this server's.
    pub fn owns(&self, t: Token) -> bool {
        t.0 >= self.base && t.0 <= self.base + MAX_CONNS
    }

    /// Handle an event at `now`. Returns a complete command line received on connection `conn`,
    /// which the daemon executes and then answers with [`CtlServer::answer`] (so the answer
    /// reflects the command's effect).
    pub fn on_event(
        &mut self,
        registry: &Registry,
        t: Token,
        now: Nanos,
    ) -> Option<(usize, String)> {
        if t.0 == self.base {
            loop {
                match self.listener.accept() {
                    Ok((stream, _)) => self.admit(registry, stream, now),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        log::warn!("control: accept failed: {e}");
                        break;
                    }
                }
            }
            return None;
        }
        let i = t.0.checked_sub(self.base + 1)?;
        let command = self.read_command(registry, i, now);
        self.flush(registry, i);
        command.map(|c| (i, c))
    }

    /// Give the daemon until `until` to answer the command received on `conn` (an operator's
    /// request that waits for the witnesses, the primary's final checkpoint, ...). The CLI
    /// waits 10 s at most; keep `until` below that.
    pub fn defer(&mut self, conn: usize, until: Nanos) {
        if let Some(c) = self.conns.get_mut(conn).and_then(Option::as_mut) {
            if c.phase == Phase::Executing {
                c.deadline = c.deadline.max(until);
            }
        }
    }

    /// Answer the command received on `conn`.
    pub fn answer(&mut self, registry: &Registry, conn: usize, text: &str) {
        if let Some(c) = self.conns.get_mut(conn).and_then(Option::as_mut) {
            if c.phase == Phase::Executing {
                c.out = text.as_bytes().to_vec();
                c.phase = Phase::Writing;
            }
        }
        self.flush(registry, conn);
    }

    /// The earliest time [`CtlServer::tick`] has something to do.
    pub fn next_deadline(&self) -> Option<Nanos> {
        slots::next_deadline(&self.conns)
    }

    /// Close the connections whose deadline has passed.
    pub fn tick(&mut self, registry: &Registry, now: Nanos) {
        let closed = slots::close_expired(registry, &mut self.conns, now);
        if closed > 0 {
            if let Some(n) = self.dropped_log.allow(now) {
                log::warn!(
                    "control: closed {closed} connection(s) that sent no command within {COMMAND_TIMEOUT:?} or did not take the answer within {ANSWER_TIMEOUT:?}{}",
                    more(n)
                );
            }
        }
    }

    /// The end of a clean stop on `signal`: the socket file is removed (a warning if it cannot
    /// be) and the log says the process stopped cleanly.
    pub fn stopped(&self, signal: &str) {
        if let Err(e) = self.remove_socket() {
            log::warn!(
                "{signal}: cannot remove the control socket {}: {e}",
                self.path.display()
            );
        }
        log::info!("{signal}: stopped cleanly (exit status 0)");
    }

    /// Remove the socket file at a clean exit, if it is still the one this server bound (not
    /// one another daemon bound at the same path since). Whether it was removed.
    pub fn remove_socket(&self) -> io::Result<bool> {
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if m.file_type().is_socket() && Some((m.dev(), m.ino())) == self.file_id => {
                std::fs::remove_file(&self.path)?;
                Ok(true)
            }
            Ok(_) => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Where the socket is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Open connections (for tests and status).
    pub fn connections(&self) -> usize {
        self.conns.iter().flatten().count()
    }

    fn admit(&mut self, registry: &Registry, mut stream: MioUnixStream, now: Nanos) {
        let cred = match rustix::net::sockopt::socket_peercred(&stream) {
            Ok(c) => c,
            Err(e) => {
                if let Some(n) = self.refused_log.allow(now) {
                    log::warn!(
                        "control: refused a connection whose credentials cannot be read: {e}{}",
                        more(n)
                    );
                }
                return;
            }
        };
        let (uid, gid) = (cred.uid.as_raw(), cred.gid.as_raw());
        if !peer_allowed(uid, gid, self.euid, self.group.as_ref()) {
            let pid = cred.pid.as_raw_nonzero().get();
            if let Some(n) = self.refused_log.allow(now) {
                log::warn!(
                    "control: refused uid {uid} (gid {gid}, pid {pid}): not root, not this daemon's user, not in control_group{}",
                    more(n)
                );
            }
            // What the peer sent so far is read, so the close does not reset the connection
            // before the peer reads the one-line answer. One try each: the socket is non-blocking.
            let mut b = [0u8; 512];
            let _ = stream.read(&mut b);
            let _ = stream.write(
                format!("error: permission denied: uid {uid} may not use this control socket\n")
                    .as_bytes(),
            );
            return;
        }
        let slot = match self.conns.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                // Full: the oldest connection that has not sent its command makes room.
                let oldest = (0..self.conns.len())
                    .filter_map(|i| self.conns[i].as_ref().map(|c| (i, c)))
                    .filter(|(_, c)| c.phase == Phase::Reading)
                    .min_by_key(|(_, c)| c.seq)
                    .map(|(i, _)| i);
                let log_line = self.dropped_log.allow(now);
                match oldest {
                    Some(i) => {
                        if let Some(n) = log_line {
                            log::warn!("control: {MAX_CONNS} connections open; closed the oldest that had sent no command{}", more(n));
                        }
                        self.close(registry, i);
                        i
                    }
                    None => {
                        if let Some(n) = log_line {
                            log::warn!(
                                "control: {MAX_CONNS} connections busy with answers; refused one{}",
                                more(n)
                            );
                        }
                        return;
                    }
                }
            }
        };
        let tok = Token(self.base + 1 + slot);
        if let Err(e) = registry.register(&mut stream, tok, Interest::READABLE | Interest::WRITABLE)
        {
            log::warn!("control: cannot register a connection: {e}");
            return;
        }
        self.accepted += 1;
        self.conns[slot] = Some(CtlConn {
            stream,
            inbuf: Vec::with_capacity(MAX_COMMAND + 1),
            out: Vec::new(),
            pos: 0,
            phase: Phase::Reading,
            seq: self.accepted,
            deadline: now.plus(COMMAND_TIMEOUT),
        });
    }

    /// Read what connection `i` sent; its command line once complete.
    fn read_command(&mut self, registry: &Registry, i: usize, now: Nanos) -> Option<String> {
        let c = self.conns.get_mut(i)?.as_mut()?;
        if c.phase != Phase::Reading {
            return None;
        }
        let mut eof = false;
        let mut b = [0u8; 512];
        while c.inbuf.len() <= MAX_COMMAND {
            let room = (MAX_COMMAND + 1 - c.inbuf.len()).min(b.len());
            match c.stream.read(&mut b[..room]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => c.inbuf.extend_from_slice(&b[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.close(registry, i);
                    return None;
                }
            }
        }
        let command = match parse_command(&c.inbuf, eof) {
            Ok(Line::Incomplete) => {
                if eof {
                    self.close(registry, i);
                }
                return None;
            }
            Ok(Line::Command(cmd)) => {
                c.phase = Phase::Executing;
                Some(cmd.to_string())
            }
            Err(e) => {
                c.out = format!("error: {e}\n").into_bytes();
                c.phase = Phase::Writing;
                None
            }
        };
        c.inbuf = Vec::new();
        c.deadline = now.plus(ANSWER_TIMEOUT);
        command
    }

    /// Write what is left of connection `i`'s answer; close it when done.
    fn flush(&mut self, registry: &Registry, i: usize) {
        let Some(c) = self.conns.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        if c.phase != Phase::Writing {
            return;
        }
        match crate::conn::write_some(&mut c.stream, &c.out, &mut c.pos) {
            Ok(true) | Err(_) => self.close(registry, i),
            Ok(false) => {}
        }
    }

    fn close(&mut self, registry: &Registry, i: usize) {
        slots::close(registry, &mut self.conns, i);
    }
}
