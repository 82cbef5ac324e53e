//! The export's hand-over across its daemon's `exec` (the activated standby becoming
//! hsb-primary, `promote_config`): what goes (the listener, the client's connection in
//! transmission, its unread requests and unsent replies in [`handover_path`]) and how the new
//! program takes it over; and which export a daemon serves ([`NbdExport::for_disk`]). See
//! [`super`].

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry};

use super::{
    nbd, Conn, Export, NbdExport, Server, EXPORT_NAME, NBD_CONN, NBD_LISTEN, OUT_HIGH, READ_CHUNK,
};

/// The export's descriptors handed to the program its daemon execs (`disk.nbd_inherit`):
/// the listener, and the client's connection if one was in transmission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inherit {
    pub listen: RawFd,
    pub conn: Option<RawFd>,
}

impl Inherit {
    /// `LISTEN` or `LISTEN,CONN` (descriptor numbers); empty: nothing inherited.
    pub fn parse(s: &str) -> Result<Option<Inherit>, String> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(None);
        }
        let fd = |t: &str| {
            t.trim()
                .parse::<RawFd>()
                .ok()
                .filter(|&n| n > 2)
                .ok_or_else(|| {
                    format!("expected LISTEN or LISTEN,CONN descriptor numbers above 2, not '{s}'")
                })
        };
        let mut it = s.split(',');
        let listen = fd(it.next().unwrap_or_default())?;
        let conn = it.next().map(fd).transpose()?;
        if it.next().is_some() || conn == Some(listen) {
            return Err(format!(
                "expected LISTEN or LISTEN,CONN (two different descriptors), not '{s}'"
            ));
        }
        Ok(Some(Inherit { listen, conn }))
    }

    /// The value [`Inherit::parse`] reads.
    pub fn value(&self) -> String {
        match self.conn {
            Some(c) => format!("{},{c}", self.listen),
            None => self.listen.to_string(),
        }
    }
}

/// The file beside the socket that carries a session across the exec of a hand-over.
pub fn handover_path(socket: &Path) -> PathBuf {
    let mut p = socket.as_os_str().to_owned();
    p.push(".handover");
    PathBuf::from(p)
}

/// The hand-over file's first bytes.
const SESSION_MAGIC: &[u8; 8] = b"HSBNBDS1";
/// Most bytes of a session carried over: unread requests (at most a message and a chunk read
/// beyond it) and unsent replies (at most a read's data beyond the high mark).
const SESSION_MAX: usize = 2 * (nbd::MAX_MESSAGE + READ_CHUNK) + OUT_HIGH;

/// A session in transmission as the hand-over file holds it: the magic, the lengths of the
/// unread requests and of the unsent replies, both, and a CRC32 of all before it.
fn encode_session(input: &[u8], out: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(28 + input.len() + out.len());
    v.extend_from_slice(SESSION_MAGIC);
    v.extend_from_slice(&(input.len() as u64).to_le_bytes());
    v.extend_from_slice(&(out.len() as u64).to_le_bytes());
    v.extend_from_slice(input);
    v.extend_from_slice(out);
    let crc = crc32fast::hash(&v);
    v.extend_from_slice(&crc.to_le_bytes());
    v
}

/// The unread requests and unsent replies of a hand-over file's bytes.
fn decode_session(b: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
    if b.len() < 28 || &b[..8] != SESSION_MAGIC {
        return Err("not a session hand-over file (no HSBNBDS1 header)".into());
    }
    let (body, crc) = b.split_at(b.len() - 4);
    let crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32fast::hash(body) != crc {
        return Err("its CRC32 does not match: torn or corrupt".into());
    }
    let len = |at: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&body[at..at + 8]);
        u64::from_le_bytes(a)
    };
    let (inp, out) = (len(8), len(16));
    if inp.checked_add(out) != Some(body.len() as u64 - 24) {
        return Err(format!(
            "its lengths ({inp} and {out} bytes) do not add up to its {} bytes",
            body.len() - 24
        ));
    }
    let (inp, out) = body[24..].split_at(inp as usize);
    Ok((inp.to_vec(), out.to_vec()))
}

/// Read and remove the hand-over file at `path`.
fn load_session(path: &Path) -> Result<(Vec<u8>, Vec<u8>), String> {
    let f = std::fs::File::open(path).map_err(|e| format!("cannot open it: {e}"))?;
    let mut b = Vec::new();
    f.take(SESSION_MAX as u64 + 29)
        .read_to_end(&mut b)
        .map_err(|e| format!("cannot read it: {e}"))?;
    let _ = std::fs::remove_file(path);
    if b.len() > SESSION_MAX + 28 {
        return Err(format!(
            "longer than a session can be ({SESSION_MAX} bytes)"
        ));
    }
    decode_session(&b)
}

impl NbdExport {
    /// A daemon's export (`disk.nbd_socket`, if set: bound, or taken over from `inherit`) of
    /// its guest's disk of `size` bytes (`None`: no disk), or the one it served already while
    /// its Xen domain did not exist (`early`).
    pub fn for_disk(
        early: Option<NbdExport>,
        (path, inherit): (Option<&Path>, Option<Inherit>),
        size: Option<u64>,
        registry: &Registry,
    ) -> io::Result<Option<NbdExport>> {
        if early.is_some() {
            return Ok(early);
        }
        let Some(path) = path else { return Ok(None) };
        let size = size
            .ok_or_else(|| io::Error::other("disk.nbd_socket: the guest has no disk to serve"))?;
        NbdExport::open(path, size, inherit, registry).map(Some)
    }

    /// The export at `path`: bound ([`NbdExport::bind`]), or taken over from the daemon that
    /// exec'd this one (`inherit`): its listener, and its client's session in transmission
    /// with the requests it had not read and the replies it had not sent (from
    /// [`handover_path`]). A session that cannot be taken over (its file missing or corrupt) is
    /// closed with a logged error, and the client must connect again; a listener that cannot
    /// be taken over is an error.
    pub fn open(
        path: &Path,
        size: u64,
        inherit: Option<Inherit>,
        registry: &Registry,
    ) -> io::Result<NbdExport> {
        let Some(inherit) = inherit else {
            return NbdExport::bind(path, size, registry);
        };
        let ctx = |what: &str, e: String| {
            io::Error::other(format!("disk.nbd_inherit {}: {what}: {e}", inherit.value()))
        };
        let taken = xen_sys::process::take_inherited(inherit.listen)
            .map_err(|e| ctx("cannot take over the export's listener", e.to_string()))?;
        let listener = std::os::unix::net::UnixListener::from(taken);
        listener
            .set_nonblocking(true)
            .map_err(|e| ctx("cannot make the listener non-blocking", e.to_string()))?;
        let mut listener = UnixListener::from_std(listener);
        registry
            .register(&mut listener, NBD_LISTEN, Interest::READABLE)
            .map_err(|e| ctx("cannot register the listener", e.to_string()))?;
        let mut export = NbdExport::listening(path, listener, size);
        let session = handover_path(path);
        let Some(fd) = inherit.conn else {
            let _ = std::fs::remove_file(&session);
            log::info!(
                "disk: NBD export '{EXPORT_NAME}' of {size} bytes at {} taken over (no client was connected)",
                path.display()
            );
            return Ok(export);
        };
        let conn = xen_sys::process::take_inherited(fd)
            .map_err(|e| format!("cannot take over the client's connection: {e}"))
            .and_then(|c| {
                load_session(&session)
                    .map(|s| (c, s))
                    .map_err(|e| format!("the session file {}: {e}", session.display()))
            });
        let (taken, (input, out)) = match conn {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_file(&session);
                log::error!(
                    "disk: NBD export at {}: the client's session is not taken over ({e}): its connection closes, and the client must connect again",
                    path.display()
                );
                return Ok(export);
            }
        };
        let stream = std::os::unix::net::UnixStream::from(taken);
        stream
            .set_nonblocking(true)
            .map_err(|e| ctx("cannot make the connection non-blocking", e.to_string()))?;
        let mut stream = UnixStream::from_std(stream);
        registry
            .register(
                &mut stream,
                NBD_CONN,
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| ctx("cannot register the connection", e.to_string()))?;
        log::info!(
            "disk: NBD export '{EXPORT_NAME}' of {size} bytes at {} taken over with its client's session ({} request bytes unread, {} reply bytes unsent)",
            path.display(),
            input.len(),
            out.len()
        );
        export.stats.connections = 1;
        export.conn = Some(Conn {
            stream,
            proto: Server::transmitting_already(Export {
                name: EXPORT_NAME.into(),
                size,
            }),
            input,
            out,
            sent: 0,
            pending: None,
            flushing: None,
            closing: false,
        });
        Ok(export)
    }

    /// Before this process execs the program that takes the export over: its listener and,
    /// if the client is in transmission, its connection stay open across the exec, and the
    /// session's unread requests and unsent replies go to [`handover_path`] (a write being
    /// carried out piece by piece is still whole at the front of the requests: the new program
    /// writes it again, all of it, which leaves the image as one write would). A client in its
    /// handshake, or closing, is not handed over (it must connect again). On an error nothing
    /// is handed over and the export stays this process's.
    pub fn hand_over(&mut self) -> io::Result<Inherit> {
        let session = handover_path(&self.path);
        let ctx = |what: &str, e: io::Error| {
            io::Error::new(e.kind(), format!("disk: NBD export: {what}: {e}"))
        };
        let conn = match &self.conn {
            Some(c) if c.proto.transmitting() && !c.closing => {
                let bytes = encode_session(&c.input, &c.out[c.sent..]);
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&session)
                    .and_then(|mut f| f.write_all(&bytes))
                    .map_err(|e| ctx(&format!("cannot write {}", session.display()), e))?;
                Some(c.stream.as_raw_fd())
            }
            Some(_) => {
                log::warn!(
                    "disk: NBD export: the client is in its handshake: its connection is not handed over (it must connect again)"
                );
                None
            }
            None => None,
        };
        let keep = |fd: std::os::fd::BorrowedFd<'_>| {
            xen_sys::process::keep_across_exec(fd, true).map_err(|e| {
                ctx(
                    "cannot keep a socket open across the exec",
                    io::Error::other(e),
                )
            })
        };
        let kept = keep(self.listener.as_fd()).and_then(|()| match (&self.conn, conn) {
            (Some(c), Some(_)) => keep(c.stream.as_fd()),
            _ => Ok(()),
        });
        if let Err(e) = kept {
            self.keep_after_failed_exec();
            return Err(e);
        }
        Ok(Inherit {
            listen: self.listener.as_raw_fd(),
            conn,
        })
    }

    /// The exec after [`NbdExport::hand_over`] failed: the export stays this process's (its
    /// sockets close-on-exec again, the session file removed).
    pub fn keep_after_failed_exec(&mut self) {
        let _ = xen_sys::process::keep_across_exec(self.listener.as_fd(), false);
        if let Some(c) = &self.conn {
            let _ = xen_sys::process::keep_across_exec(c.stream.as_fd(), false);
        }
        let _ = std::fs::remove_file(handover_path(&self.path));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inherit_values_parse_and_print() {
        assert_eq!(Inherit::parse(""), Ok(None));
        let both = Inherit {
            listen: 5,
            conn: Some(7),
        };
        assert_eq!(Inherit::parse("5,7"), Ok(Some(both)));
        assert_eq!(Inherit::parse(&both.value()), Ok(Some(both)));
        let one = Inherit {
            listen: 9,
            conn: None,
        };
        assert_eq!(Inherit::parse(" 9 "), Ok(Some(one)));
        assert_eq!(one.value(), "9");
        for bad in ["x", "1", "5,", "5,5", "5,6,7", "-4", "5,2"] {
            let e = Inherit::parse(bad).expect_err(bad);
            assert!(e.contains("LISTEN"), "{bad}: {e}");
        }
    }

    /// A session's bytes come back as they went; anything else is refused with a reason,
    /// never a panic, never a wrong session.
    #[test]
    fn session_files_round_trip_and_refuse_damage() {
        let input = b"requests".repeat(100);
        let out = b"replies".repeat(7);
        let b = encode_session(&input, &out);
        assert_eq!(decode_session(&b), Ok((input.clone(), out.clone())));
        assert_eq!(
            decode_session(&encode_session(&[], &[])),
            Ok((vec![], vec![]))
        );
        for cut in 0..b.len() {
            assert!(decode_session(&b[..cut]).is_err(), "cut at {cut}");
        }
        for at in 0..b.len() {
            let mut d = b.clone();
            d[at] ^= 0x20;
            assert!(decode_session(&d).is_err(), "flip at {at}");
        }
        // Lengths that do not add up, under a CRC that matches.
        let mut d = b[..b.len() - 4].to_vec();
        d[8] = d[8].wrapping_add(1);
        let crc = crc32fast::hash(&d);
        d.extend_from_slice(&crc.to_le_bytes());
        let e = decode_session(&d).expect_err("lengths");
        assert!(e.contains("do not add up"), "{e}");
        let mut d = b[..24].to_vec();
        d[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        let crc = crc32fast::hash(&d);
        d.extend_from_slice(&crc.to_le_bytes());
        assert!(decode_session(&d).is_err());
    }

    /// In one process, as a new program after the exec sees them: a listener and a client's
    /// connection left open without close-on-exec, and the session file beside the socket.
    /// `file`: the session file's bytes (`None`: none written).
    fn inherited(dir: &Path, file: Option<Vec<u8>>) -> (Inherit, std::os::unix::net::UnixStream) {
        use std::os::fd::IntoRawFd;
        let sock = dir.join("d.nbd");
        let listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
        let (ours, client) = std::os::unix::net::UnixStream::pair().expect("pair");
        for fd in [listener.as_fd(), ours.as_fd()] {
            xen_sys::process::keep_across_exec(fd, true).expect("keep across exec");
        }
        if let Some(b) = file {
            std::fs::write(handover_path(&sock), b).expect("session file");
        }
        let inherit = Inherit {
            listen: listener.into_raw_fd(),
            conn: Some(ours.into_raw_fd()),
        };
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        (inherit, client)
    }

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("hsb-handover-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        d
    }

    /// Taken over: the unsent replies reach the client first, then the unread request is
    /// answered (a read past the end: EINVAL), on the same connection; the file is gone.
    #[test]
    fn a_session_is_taken_over_with_its_bytes() {
        let dir = temp_dir("ok");
        let mut unread = nbd::REQUEST_MAGIC.to_be_bytes().to_vec();
        unread.extend_from_slice(&[0, 0, 0, 0]);
        unread.extend_from_slice(&7u64.to_be_bytes());
        unread.extend_from_slice(&(1u64 << 40).to_be_bytes());
        unread.extend_from_slice(&512u32.to_be_bytes());
        let (inherit, mut client) = inherited(&dir, Some(encode_session(&unread, b"unsent")));
        let poll = mio::Poll::new().expect("poll");
        let mut e = NbdExport::open(&dir.join("d.nbd"), 1 << 20, Some(inherit), poll.registry())
            .expect("taken over");
        assert!(e.connected());
        assert!(!handover_path(&dir.join("d.nbd")).exists());
        e.pump(poll.registry(), None, false);
        let mut b = [0u8; 6 + nbd::REPLY_LEN];
        client.read_exact(&mut b).expect("replies");
        assert_eq!(&b[..6], b"unsent");
        let mut want = Vec::new();
        nbd::simple_reply(&mut want, 7, nbd::EINVAL);
        assert_eq!(&b[6..], &want[..]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A missing or corrupt session file: the listener is still taken over, the client's
    /// connection is closed (it sees the end, and can connect again), and the file is gone.
    #[test]
    fn a_session_that_cannot_be_read_is_closed_not_guessed() {
        for (name, file) in [
            ("missing", None),
            ("corrupt", Some(b"HSBNBDS1 and then garbage".to_vec())),
        ] {
            let dir = temp_dir(name);
            let (inherit, mut client) = inherited(&dir, file);
            let poll = mio::Poll::new().expect("poll");
            let e = NbdExport::open(&dir.join("d.nbd"), 1 << 20, Some(inherit), poll.registry())
                .expect("the listener is taken over");
            assert!(!e.connected(), "{name}");
            let mut b = [0u8; 1];
            assert!(
                matches!(client.read(&mut b), Ok(0)),
                "{name}: the client's connection is closed"
            );
            assert!(!handover_path(&dir.join("d.nbd")).exists(), "{name}");
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
