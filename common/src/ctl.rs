//! The control socket: a Unix stream socket taking one command line and answering with text.
//! `hsb-primary status`, `hsb-standby status`, `hsb-standby activate` talk to it.
//!
//! It is hostile input like any other (DESIGN.md §6): the socket is mode 0600 (0660 in the
//! `control_group`) whatever the umask, every connection's peer credentials are checked
//! ([`access`]), a connection has [`COMMAND_TIMEOUT`] to send its command and
//! [`ANSWER_TIMEOUT`] to take the answer, a full table makes room by closing the oldest
//! connection still waiting for a command, and a path that is not a socket is never replaced.
//! The daemon drives time: it calls [`CtlServer::tick`] and wakes for
//! [`CtlServer::next_deadline`].

pub mod access;
pub mod status;

use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mio::net::{UnixListener, UnixStream as MioUnixStream};
use mio::{Interest, Registry, Token};

use crate::time::Nanos;
pub use access::{control_group, peer_allowed, ControlGroup, CONTROL_GROUP_KEY};
pub use status::{Health, Status};

/// Longest command line accepted (without its newline).
pub const MAX_COMMAND: usize = 256;
/// Most control connections open at once.
pub const MAX_CONNS: usize = 8;
/// Time from accepting a connection to its complete command line.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Time from a complete command line to the whole answer written.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest answer a client reads.
pub const MAX_ANSWER: u64 = 1 << 20;
/// At most one log line per kind of trouble (refused peers, dropped connections) this often.
const LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Why a command line is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandError {
    /// No newline within [`MAX_COMMAND`] bytes.
    TooLong,
    /// The line is not UTF-8.
    NotUtf8,
    /// The line holds control characters (other than a tab, or a final carriage return).
    ControlCharacter,
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::TooLong => write!(f, "command too long (at most {MAX_COMMAND} bytes)"),
            CommandError::NotUtf8 => f.write_str("command is not UTF-8"),
            CommandError::ControlCharacter => f.write_str("command contains control characters"),
        }
    }
}

impl std::error::Error for CommandError {}

/// What the bytes received so far on a control connection hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line<'a> {
    /// No complete line yet.
    Incomplete,
    /// A complete command line, trimmed (empty means `status`, by the daemons' convention).
    Command(&'a str),
}

/// Parse the command line at the start of `buf`: up to the first newline, or all of `buf` once
/// the peer has finished sending (`eof`). Bytes after the newline are ignored (one command a
/// connection). Pure, so it is fuzzed (`hsb_testkit::fuzzing::control`).
pub fn parse_command(buf: &[u8], eof: bool) -> Result<Line<'_>, CommandError> {
    let window = &buf[..buf.len().min(MAX_COMMAND + 1)];
    let line = match window.iter().position(|&b| b == b'\n') {
        Some(nl) => &buf[..nl],
        None if buf.len() > MAX_COMMAND => return Err(CommandError::TooLong),
        None if eof && !buf.is_empty() => buf,
        None => return Ok(Line::Incomplete),
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text = std::str::from_utf8(line).map_err(|_| CommandError::NotUtf8)?;
    if text.chars().any(|c| c.is_control() && c != '\t') {
        return Err(CommandError::ControlCharacter);
    }
    Ok(Line::Command(text.trim()))
}

/// Why the control socket could not be set up.
#[derive(Debug)]
pub enum CtlError {
    /// Something that is not a socket is at the path: it is never replaced.
    NotASocket {
        /// The control path.
        path: PathBuf,
        /// What is there, e.g. `a regular file`.
        found: &'static str,
    },
    /// A running daemon answers on the socket.
    InUse {
        /// The control path.
        path: PathBuf,
    },
    /// A file-system or socket operation failed.
    Io {
        /// What was being done, e.g. `cannot bind`.
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The error.
        err: io::Error,
    },
}

impl fmt::Display for CtlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CtlError::NotASocket { path, found } => write!(
                f,
                "{} exists and is {found}, not a socket: refusing to replace it (move it away or choose another `control` path)",
                path.display()
            ),
            CtlError::InUse { path } => {
                write!(f, "{} is in use by a running daemon", path.display())
            }
            CtlError::Io { op, path, err } => write!(f, "{op} {}: {err}", path.display()),
        }
    }
}

impl std::error::Error for CtlError {}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CtlError + 'a {
    move |err| CtlError::Io {
        op,
        path: path.to_path_buf(),
        err,
    }
}

/// Send one command and read the whole answer (blocking, with a timeout). Used by the CLIs.
/// A daemon that refuses us may answer and close before it reads the command: its answer is
/// still returned.
pub fn request(path: &Path, command: &str, timeout: Duration) -> io::Result<String> {
    let mut s = UnixStream::connect(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot reach the daemon's control socket {}: {e} (is it running?)",
                path.display()
            ),
        )
    })?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let sent = s.write_all(format!("{command}\n").as_bytes());
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    while (answer.len() as u64) < MAX_ANSWER {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Closed with our command unread: what came before the reset is the answer.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset && !answer.is_empty() => break,
            Err(e) => return Err(sent.err().unwrap_or(e)),
        }
    }
    if answer.is_empty() {
        sent?;
    }
    answer.truncate(MAX_ANSWER as usize);
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

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
        self.conns.iter().flatten().map(|c| c.deadline).min()
    }

    /// Close the connections whose deadline has passed.
    pub fn tick(&mut self, registry: &Registry, now: Nanos) {
        let mut closed = 0;
        for i in 0..self.conns.len() {
            if self.conns[i].as_ref().is_some_and(|c| c.deadline <= now) {
                self.close(registry, i);
                closed += 1;
            }
        }
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
        if let Some(mut c) = self.conns.get_mut(i).and_then(Option::take) {
            let _ = registry.deregister(&mut c.stream);
        }
    }
}

/// Create the missing directories of `dir` (and only those) private: 0700, or 0710 in `group`
/// so its members can reach the socket. Existing directories are left as they are.
fn create_private_dirs(dir: &Path, group: Option<&ControlGroup>) -> Result<(), CtlError> {
    let mut missing = Vec::new();
    for d in dir.ancestors().filter(|d| !d.as_os_str().is_empty()) {
        match std::fs::metadata(d) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(d),
            Err(e) => return Err(io_err("cannot inspect", d)(e)),
        }
    }
    for d in missing.into_iter().rev() {
        match std::fs::DirBuilder::new().mode(0o700).create(d) {
            Ok(()) => {}
            // Made by someone else meanwhile: not ours to change.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err("cannot create the directory", d)(e)),
        }
        let mode = match group {
            Some(g) => {
                std::os::unix::fs::chown(d, None, Some(g.gid))
                    .map_err(io_err("cannot give control_group the directory", d))?;
                0o710
            }
            None => 0o700,
        };
        // Exactly this mode, whatever the umask took away.
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode))
            .map_err(io_err("cannot set the mode of the directory", d))?;
    }
    Ok(())
}

/// Give the socket at `path` its mode (and group), whatever the umask made of it.
fn restrict(path: &Path, group: Option<&ControlGroup>) -> Result<(), CtlError> {
    let mode = match group {
        Some(g) => {
            std::os::unix::fs::chown(path, None, Some(g.gid))
                .map_err(io_err("cannot give control_group the socket", path))?;
            0o660
        }
        None => 0o600,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io_err("cannot set the mode of the socket", path))
}

fn describe(t: std::fs::FileType) -> &'static str {
    if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "something else"
    }
}

/// The control socket of a daemon whose control path is derived from its configuration
/// (`resolve`, e.g. from its id) and whose default needs looking for (`default`, called only
/// without `--control` and without a usable `control` in the configuration).
fn control_path_with(
    args: &crate::cli::Args,
    schema: &'static [crate::config::KeySpec],
    resolve: impl Fn(&crate::config::Config) -> Result<PathBuf, crate::config::ConfigError>,
    default: impl FnOnce() -> Result<PathBuf, String>,
) -> Result<PathBuf, String> {
    match &args.control {
        Some(p) => Ok(p.clone()),
        None => match crate::config::Config::load(schema, args.config.as_deref(), &args.sets) {
            Ok(c) => resolve(&c).or_else(|_| default()),
            Err(_) if args.config.is_none() => default(),
            Err(e) => Err(e.to_string()),
        },
    }
}

/// The CLI side of `hsb-standby activate` and friends: find the control socket (`--control`,
/// else the configuration's `control` key, else `default`), send `command`, print the answer.
/// Returns the process exit status: 0 on an answer that is not an `error:`, else 1.
pub fn cli(
    daemon: &str,
    args: &crate::cli::Args,
    schema: &'static [crate::config::KeySpec],
    default: &str,
    command: &str,
) -> u8 {
    cli_with(
        daemon,
        args,
        schema,
        |c| c.path("control"),
        || Ok(default.into()),
        command,
    )
}

/// Like [`cli`], for a daemon whose control path is derived from its configuration (see
/// [`control_path_with`]).
pub fn cli_with(
    daemon: &str,
    args: &crate::cli::Args,
    schema: &'static [crate::config::KeySpec],
    resolve: impl Fn(&crate::config::Config) -> Result<PathBuf, crate::config::ConfigError>,
    default: impl FnOnce() -> Result<PathBuf, String>,
    command: &str,
) -> u8 {
    let path = match control_path_with(args, schema, resolve, default) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{daemon}: {e}");
            return 1;
        }
    };
    match request(&path, command, Duration::from_secs(10)) {
        Ok(out) => {
            print!("{out}");
            // An operator's request refused, or not finished yet, is not a success either.
            u8::from(
                out.starts_with("error")
                    || out.starts_with("refused")
                    || out.starts_with("in progress")
                    || out.is_empty(),
            )
        }
        Err(e) => {
            eprintln!("{daemon}: {e}");
            1
        }
    }
}

/// The CLI side of `hsb-X status [--json]`: print the daemon's status (as one JSON object with
/// `--json`) and return its [`Health`] as the exit status: 0 healthy, 1 degraded or
/// unprotected, 2 fenced, stepped down or down, 3 no status (the control socket cannot be
/// reached, or refuses us), [`status::USAGE_EXIT`] for a configuration that cannot be read.
pub fn status_cli(
    daemon: &str,
    args: &crate::cli::Args,
    schema: &'static [crate::config::KeySpec],
    default: &str,
) -> u8 {
    status_cli_with(
        daemon,
        args,
        schema,
        |c| c.path("control"),
        || Ok(default.into()),
    )
}

/// Like [`status_cli`], for a daemon whose control path is derived from its configuration
/// (see [`control_path_with`]).
pub fn status_cli_with(
    daemon: &str,
    args: &crate::cli::Args,
    schema: &'static [crate::config::KeySpec],
    resolve: impl Fn(&crate::config::Config) -> Result<PathBuf, crate::config::ConfigError>,
    default: impl FnOnce() -> Result<PathBuf, String>,
) -> u8 {
    status_cli_at(
        daemon,
        args,
        control_path_with(args, schema, resolve, default),
        "status",
    )
}

/// Like [`status_cli`], with the control socket already found (or why it could not be) and
/// the status command to send (`status`, or e.g. `status GUEST` to a witness).
pub fn status_cli_at(
    daemon: &str,
    args: &crate::cli::Args,
    path: Result<PathBuf, String>,
    command: &str,
) -> u8 {
    let path = match path {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{daemon}: {e}");
            return status::USAGE_EXIT;
        }
    };
    let text = match request(&path, command, Duration::from_secs(10)) {
        Ok(t) if !t.starts_with("error") && !t.trim().is_empty() => t,
        Ok(t) => {
            eprintln!(
                "{daemon}: {} gave no status: {}",
                path.display(),
                if t.trim().is_empty() {
                    "it closed the connection"
                } else {
                    t.trim()
                }
            );
            return Health::Unreachable.code();
        }
        Err(e) => {
            eprintln!("{daemon}: {e}");
            return Health::Unreachable.code();
        }
    };
    let st = Status::parse(&text);
    if args.flag("json") {
        print!("{}", st.to_json());
    } else {
        print!("{text}");
    }
    Health::of(&st, daemon.strip_prefix("hsb-").unwrap_or(daemon)).code()
}

#[cfg(test)]
#[path = "ctl_tests.rs"]
mod tests;
