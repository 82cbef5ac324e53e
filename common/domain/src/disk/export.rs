//! The NBD export of a guest's disk (`disk.nbd_socket`, issue 14), shared by both daemons: a
//! unix socket on which one client at a time (in dom0, the kernel's `nbd` driver; in the tests,
//! `qemu-io`) reads and writes the guest's block device. The protocol is [`super::nbd`]'s core;
//! this is its mio shell: the socket, the buffers, and the commands carried out against a
//! [`BlockDevice`]. hsb-primary serves the guest's disk; hsb-standby serves its replica's disk
//! (a Xen replica's `phy:/dev/nbdN` must exist before the replica does), refusing writes until
//! the replica is activated ([`ReadOnly`]).
//!
//! A write goes through `Disk::write`: journaled for the open epoch (so it travels in that
//! epoch's checkpoint, in the order the client issued it) and answered once it is in the local
//! image. A write longer than [`PIECE`] is written a piece at a time, each piece a write of the
//! epoch it lands in, and answered after the last. FUA writes and `NBD_CMD_FLUSH` are answered
//! once `Disk::start_flush`'s sync has completed: the loop goes on meanwhile (a ring's
//! completion wakes it, [`DISK_SYNC`]), while the export takes no further request, so replies
//! stay in order and a hand-over finds the command still at the front. Reads come from the
//! image. When the journal cannot take the next piece
//! (or a resynchronisation throttles writes) the export stops reading requests until a
//! checkpoint has taken the epoch's writes (`nbd_waits`, logged). While the primary is fenced
//! or its guest suspended, commands wait too. Memory: one message (at most 32 MiB and a
//! header) read at a time, and replies are written before the next request is taken.
//!
//! The export outlives its daemon's `exec` (the activated standby handing over to hsb-primary,
//! `promote_config`): [`NbdExport::hand_over`] keeps the listener and the client's connection
//! open across it and writes the session's unread requests and unsent replies beside the
//! socket ([`handover_path`]); the new program takes both over ([`NbdExport::open`] with an
//! [`Inherit`]) and goes on with the next request. The kernel's `nbd` connection, and with it
//! the guest's disk, never closes.

use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};

pub use super::block::{BlockDevice, ReadOnly};
use super::nbd::{self, Event, Export, Op, Server};
use super::DiskError;
pub use handover::{handover_path, Inherit};

/// The listener's token and the client's, in both daemons (the token plan: `kit::shell`).
pub const NBD_LISTEN: Token = Token(2);
/// The client's token.
pub const NBD_CONN: Token = Token(3);
/// The disk's sync ring's token (`Disk::use_ring`), in both daemons.
pub const DISK_SYNC: Token = Token(4);

/// Bytes of a write carried out at a time.
pub const PIECE: usize = 256 << 10;
/// Bytes asked of the socket at a time.
const READ_CHUNK: usize = 256 << 10;
/// Unsent reply bytes above which no further request is taken.
const OUT_HIGH: usize = 1 << 20;
/// Messages handled in one turn of the loop (the rest in the next turns).
const PER_TURN: usize = 256;
/// The export's name (the default export, the empty name, is the same).
pub const EXPORT_NAME: &str = "hsb";

/// Counters of the export (`nbd_*` in status).
#[derive(Debug, Default, Clone, Copy)]
pub struct NbdStats {
    pub connections: u64,
    pub refused: u64,
    pub requests: u64,
    pub reads: u64,
    pub writes: u64,
    pub write_bytes: u64,
    pub flushes: u64,
    /// Commands answered with an error.
    pub errors: u64,
    /// Connections closed for input that breaks the protocol.
    pub protocol_errors: u64,
    /// Times a write waited for the journal (or a resynchronisation).
    pub waits: u64,
}

/// A write being carried out piece by piece (its message stays at the front of the input).
struct Pending {
    cookie: u64,
    offset: u64,
    len: usize,
    done: usize,
    fua: bool,
    /// Write zeroes (no payload).
    zeroes: bool,
    /// The message's bytes.
    used: usize,
}

/// A flush (or a FUA write's flush) whose sync is under way: its message stays at the front
/// of the input until it is answered, and no further request is taken (replies stay in order).
struct Flushing {
    cookie: u64,
    used: usize,
    ticket: u64,
}

struct Conn {
    stream: UnixStream,
    proto: Server,
    input: Vec<u8>,
    out: Vec<u8>,
    sent: usize,
    pending: Option<Pending>,
    flushing: Option<Flushing>,
    /// Close once the output is written.
    closing: bool,
}

/// The export: its listener, its one client, its counters.
pub struct NbdExport {
    path: PathBuf,
    file_id: Option<(u64, u64)>,
    listener: UnixListener,
    conn: Option<Conn>,
    size: u64,
    zeroes: Vec<u8>,
    waiting: bool,
    /// Messages were left for the next turn.
    more: bool,
    pub stats: NbdStats,
    /// The checkpoint the last write answered belongs to (it is the standby's once acked).
    pub last_write_ckpt: Option<u64>,
}

fn rate_limited(n: u64) -> bool {
    n <= 10 || n.is_power_of_two()
}

impl NbdExport {
    /// Listen at `path` (mode 0600; a stale socket is replaced, a live one or another file
    /// is not) for a disk of `size` bytes.
    pub fn bind(path: &Path, size: u64, registry: &Registry) -> io::Result<NbdExport> {
        let ctx = |what: &str, e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("disk.nbd_socket {}: {what}: {e}", path.display()),
            )
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| ctx("cannot create its directory", e))?;
        }
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => {
                match std::os::unix::net::UnixStream::connect(path) {
                    Ok(_) => {
                        return Err(ctx(
                            "another process serves it",
                            io::Error::from(io::ErrorKind::AddrInUse),
                        ))
                    }
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                        std::fs::remove_file(path)
                            .map_err(|e| ctx("cannot remove the stale socket", e))?;
                    }
                    Err(e) => return Err(ctx("cannot tell whether it is served", e)),
                }
            }
            Ok(_) => {
                return Err(ctx(
                    "exists and is not a socket",
                    io::Error::from(io::ErrorKind::AlreadyExists),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(ctx("cannot inspect", e)),
        }
        let mut listener = UnixListener::bind(path).map_err(|e| ctx("cannot bind", e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| ctx("cannot set its mode", e))?;
        registry
            .register(&mut listener, NBD_LISTEN, Interest::READABLE)
            .map_err(|e| ctx("cannot register", e))?;
        log::info!(
            "disk: NBD export '{EXPORT_NAME}' of {size} bytes at {} (one client at a time)",
            path.display()
        );
        Ok(NbdExport::listening(path, listener, size))
    }

    /// An export listening (registered already) at `path`, with no client yet.
    fn listening(path: &Path, listener: UnixListener, size: u64) -> NbdExport {
        NbdExport {
            path: path.to_path_buf(),
            file_id: std::fs::symlink_metadata(path)
                .ok()
                .map(|m| (m.dev(), m.ino())),
            listener,
            conn: None,
            size,
            zeroes: vec![0u8; PIECE],
            waiting: false,
            more: false,
            stats: NbdStats::default(),
            last_write_ckpt: None,
        }
    }

    /// Whether a client is connected.
    pub fn connected(&self) -> bool {
        self.conn.is_some()
    }

    /// Whether messages were left for the next turn (the loop must not sleep).
    pub fn has_more(&self) -> bool {
        self.more
    }

    /// New clients: the first is served, any other is refused while it is.
    pub fn accept(&mut self, registry: &Registry) {
        loop {
            let (mut stream, _) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::error!("disk: NBD export: accept failed: {e}");
                    return;
                }
            };
            if self.conn.is_some() {
                self.stats.refused += 1;
                if rate_limited(self.stats.refused) {
                    log::warn!(
                        "disk: NBD export: a second client refused: one client at a time ({} refused)",
                        self.stats.refused
                    );
                }
                continue;
            }
            if let Err(e) = registry.register(
                &mut stream,
                NBD_CONN,
                Interest::READABLE | Interest::WRITABLE,
            ) {
                log::error!("disk: NBD export: cannot register a client: {e}");
                continue;
            }
            self.stats.connections += 1;
            log::info!("disk: NBD export: a client connected");
            let mut out = Vec::new();
            Server::greeting(&mut out);
            self.conn = Some(Conn {
                stream,
                proto: Server::new(Export {
                    name: EXPORT_NAME.into(),
                    size: self.size,
                }),
                input: Vec::new(),
                out,
                sent: 0,
                pending: None,
                flushing: None,
                closing: false,
            });
        }
    }

    fn close(&mut self, registry: &Registry, why: &str) {
        if let Some(mut c) = self.conn.take() {
            let _ = registry.deregister(&mut c.stream);
            log::info!("disk: NBD export: client gone: {why}");
        }
        self.waiting = false;
    }

    /// Serve the client as far as it and the disk allow: write replies, carry out commands,
    /// read requests. `paused`: the guest may not do I/O now (suspended or fenced).
    pub fn pump(
        &mut self,
        registry: &Registry,
        mut dev: Option<&mut dyn BlockDevice>,
        paused: bool,
    ) {
        self.more = false;
        for _ in 0..PER_TURN {
            let Some(c) = self.conn.as_mut() else { return };
            // Replies first.
            while c.sent < c.out.len() {
                match c.stream.write(&c.out[c.sent..]) {
                    Ok(0) => return self.close(registry, "it does not read"),
                    Ok(n) => c.sent += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return self.close(registry, &format!("write failed: {e}")),
                }
            }
            if c.sent == c.out.len() {
                c.out.clear();
                c.sent = 0;
            }
            if c.closing {
                if c.out.is_empty() {
                    self.close(registry, "session ended");
                }
                return;
            }
            if c.out.len() - c.sent > OUT_HIGH {
                return;
            }
            if let Some(f) = c.flushing.as_ref() {
                if paused {
                    return;
                }
                let done = match dev.as_deref() {
                    Some(d) => d.flush_done(f.ticket),
                    None => Some(Err(no_disk())),
                };
                let Some(r) = done else { return };
                let (cookie, used) = (f.cookie, f.used);
                c.flushing = None;
                self.answer(cookie, r);
                self.drain(used);
                continue;
            }
            if c.pending.is_some() {
                if paused || !self.carry_on(dev.as_deref_mut()) {
                    return;
                }
                continue;
            }
            if c.proto.transmitting() && paused {
                return;
            }
            let c = match self.conn.as_mut() {
                Some(c) => c,
                None => return,
            };
            let step = c.proto.step(&c.input, &mut c.out);
            match step {
                Ok(st) => match st.event {
                    Event::Incomplete { need } => match fill(c, need) {
                        Ok(true) => {}
                        Ok(false) => return,
                        Err(why) => return self.close(registry, &why),
                    },
                    Event::Answered => {
                        c.input.drain(..st.used);
                    }
                    Event::Ready => {
                        c.input.drain(..st.used);
                        log::info!("disk: NBD export: handshake done, serving requests");
                    }
                    Event::End => {
                        c.input.drain(..st.used);
                        c.closing = true;
                    }
                    Event::Command(cmd) => {
                        self.stats.requests += 1;
                        let used = st.used;
                        let (cookie, op) = (cmd.cookie, cmd.op);
                        let pending = |offset, len, fua, zeroes| Pending {
                            cookie,
                            offset,
                            len,
                            done: 0,
                            fua,
                            zeroes,
                            used,
                        };
                        match op {
                            Op::Write { offset, data, fua } => {
                                c.pending = Some(pending(offset, data.len(), fua, false))
                            }
                            Op::WriteZeroes { offset, len, fua } => {
                                c.pending = Some(pending(offset, len as usize, fua, true))
                            }
                            Op::Read { offset, len } => {
                                self.read(dev.as_deref(), cookie, offset, len as usize);
                                self.drain(used);
                            }
                            Op::Flush => {
                                self.stats.flushes += 1;
                                let started = dev
                                    .as_deref_mut()
                                    .map_or_else(|| Err(no_disk()), |d| d.start_flush());
                                match started {
                                    Ok(ticket) => {
                                        c.flushing = Some(Flushing {
                                            cookie,
                                            used,
                                            ticket,
                                        })
                                    }
                                    Err(e) => {
                                        self.answer(cookie, Err(e));
                                        self.drain(used);
                                    }
                                }
                            }
                        }
                    }
                },
                Err(e) => {
                    self.stats.protocol_errors += 1;
                    if rate_limited(self.stats.protocol_errors) {
                        log::warn!(
                            "disk: NBD export: closing the client's connection: {e} ({} so far)",
                            self.stats.protocol_errors
                        );
                    }
                    c.closing = true;
                }
            }
        }
        self.more = true;
    }

    /// Status lines.
    pub fn status(&self, kv: &mut dyn FnMut(&str, String)) {
        let st = &self.stats;
        kv("nbd_socket", self.path.display().to_string());
        kv(
            "nbd_client",
            match (&self.conn, self.waiting) {
                (None, _) => "none".into(),
                (Some(_), true) => "connected, a write waits for the journal".into(),
                (Some(c), false) if c.flushing.is_some() => {
                    "connected, a flush waits for its sync".into()
                }
                (Some(_), false) => "connected".into(),
            },
        );
        for (k, v) in [
            ("nbd_connections", st.connections),
            ("nbd_refused", st.refused),
            ("nbd_requests", st.requests),
            ("nbd_reads", st.reads),
            ("nbd_writes", st.writes),
            ("nbd_write_bytes", st.write_bytes),
            ("nbd_flushes", st.flushes),
            ("nbd_errors", st.errors),
            ("nbd_protocol_errors", st.protocol_errors),
            ("nbd_waits", st.waits),
        ] {
            kv(k, v.to_string());
        }
        kv(
            "nbd_last_write_checkpoint",
            self.last_write_ckpt
                .map_or("none".into(), |c| c.to_string()),
        );
    }
}

impl Drop for NbdExport {
    /// The socket goes with the export, if it is still this one's.
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if ours.is_some() && ours == self.file_id {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Read from the client until `need` bytes are buffered (or a chunk more): true when something
/// was read, false when the socket has nothing now; an error (or the end) closes.
fn fill(c: &mut Conn, need: usize) -> Result<bool, String> {
    let have = c.input.len();
    let want = need.max(have + READ_CHUNK).min(nbd::MAX_MESSAGE.max(need));
    if want <= have {
        return Ok(false);
    }
    c.input.resize(want, 0);
    loop {
        match c.stream.read(&mut c.input[have..]) {
            Ok(0) => {
                c.input.truncate(have);
                return Err(if have == 0 {
                    "it closed the connection".into()
                } else {
                    format!("it closed the connection in the middle of a message ({have} bytes)")
                });
            }
            Ok(n) => {
                c.input.truncate(have + n);
                return Ok(true);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                c.input.truncate(have);
                return if e.kind() == io::ErrorKind::WouldBlock {
                    Ok(false)
                } else {
                    Err(format!("read failed: {e}"))
                };
            }
        }
    }
}

fn no_disk() -> DiskError {
    DiskError::Invalid("the guest has no disk this export can serve".into())
}

/// The protocol's error value for a disk error.
fn errno(e: &DiskError) -> u32 {
    match e {
        DiskError::Bounds { .. } => nbd::ENOSPC,
        DiskError::ReadOnly => nbd::EPERM,
        e if e.is_out_of_space() => nbd::ENOSPC,
        DiskError::Io { .. } => nbd::EIO,
        _ => nbd::EIO,
    }
}

#[path = "export_commands.rs"]
mod commands;
#[path = "export_handover.rs"]
mod handover;
