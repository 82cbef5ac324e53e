//! A hand-made NBD client and the NBD tests' shared setup (`tests/nbd.rs`,
//! `tests/nbd_handover.rs`): `qemu-io` (Debian's qemu-utils) where a real client does, and
//! requests written by hand where the test needs their exact bytes.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{Pair, PairOpts, TempDir};

pub fn have_qemu_io(test: &str) -> bool {
    let ok = Command::new("qemu-io")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        crate::skip(test, "no qemu-io (Debian package qemu-utils)");
    }
    ok
}

/// `qemu-io` on the export with `cmds`; its output, asserted successful and free of failures.
pub fn qemu_io(sock: &Path, cmds: &[&str]) -> String {
    let (ok, text) = qemu_io_any(sock, cmds);
    assert!(
        ok && !text.contains("failed") && !text.contains("error"),
        "qemu-io {cmds:?}: {text}"
    );
    text
}

/// `qemu-io` on the export with `cmds`: whether it exited successfully, and its output (for
/// commands that fail).
pub fn qemu_io_any(sock: &Path, cmds: &[&str]) -> (bool, String) {
    let o = qemu_io_output(None, sock, cmds);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

/// `qemu-io` on the export with `cmds`, bounded in time (a stuck export ends it rather than
/// hanging the test): whether it succeeded, free of failures, and its output with its exit
/// status.
pub fn qemu_io_within(secs: u32, sock: &Path, cmds: &[String]) -> (bool, String) {
    let o = qemu_io_output(Some(secs), sock, cmds);
    let text = format!(
        "{}{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
        o.status
    );
    let ok = o.status.success() && !text.contains("failed") && !text.contains("error");
    (ok, text)
}

/// Run `qemu-io` on the export with `cmds` (under `timeout` when `within` seconds are given).
fn qemu_io_output(
    within: Option<u32>,
    sock: &Path,
    cmds: &[impl AsRef<str>],
) -> std::process::Output {
    let mut c = match within {
        Some(secs) => {
            let mut c = Command::new("timeout");
            c.args([secs.to_string(), "qemu-io".into()]);
            c
        }
        None => Command::new("qemu-io"),
    };
    c.args(["-f", "raw"]);
    for cmd in cmds {
        c.args(["-c", cmd.as_ref()]);
    }
    c.arg(format!("nbd+unix:///?socket={}", sock.display()));
    c.output().expect("run qemu-io")
}

/// A pair whose primary serves its guest's disk at the returned socket.
pub fn pair(extra: &[&str]) -> (Pair, TempDir, PathBuf) {
    let d = TempDir::new("nbd");
    let sock = d.path("guest.nbd");
    let mut extra_primary = vec![
        format!("disk.nbd_socket = {}", sock.display()),
        "model.disk_rate = 0".into(),
    ];
    extra_primary.extend(extra.iter().map(|s| s.to_string()));
    let pair = Pair::start(PairOpts {
        extra_primary,
        extra_standby: vec!["model.disk_rate = 0".into()],
        ..PairOpts::default()
    });
    (pair, d, sock)
}

pub fn image_bytes(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).expect("open image");
    let mut b = vec![0u8; len];
    f.read_exact_at(&mut b, offset).expect("read image");
    b
}

pub fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// A hand-made client: greeting read, flags sent, NBD_OPT_EXPORT_NAME for the default export
/// with no zeroes; returns the connection in transmission and the export's size.
pub fn handshake(sock: &Path) -> (UnixStream, u64) {
    let mut s = UnixStream::connect(sock).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut g = [0u8; 18];
    s.read_exact(&mut g).expect("greeting");
    assert_eq!(&g[..16], b"NBDMAGICIHAVEOPT");
    let mut m = 3u32.to_be_bytes().to_vec();
    m.extend_from_slice(b"IHAVEOPT");
    m.extend_from_slice(&1u32.to_be_bytes());
    m.extend_from_slice(&0u32.to_be_bytes());
    s.write_all(&m).unwrap();
    let mut e = [0u8; 10];
    s.read_exact(&mut e).expect("export");
    let mut size = [0u8; 8];
    size.copy_from_slice(&e[..8]);
    (s, u64::from_be_bytes(size))
}

pub fn request(kind: u16, cookie: u64, offset: u64, len: u32) -> Vec<u8> {
    let mut v = 0x2560_9513u32.to_be_bytes().to_vec();
    v.extend_from_slice(&0u16.to_be_bytes());
    v.extend_from_slice(&kind.to_be_bytes());
    v.extend_from_slice(&cookie.to_be_bytes());
    v.extend_from_slice(&offset.to_be_bytes());
    v.extend_from_slice(&len.to_be_bytes());
    v
}

/// The error of the reply to `cookie`.
pub fn reply(s: &mut UnixStream, cookie: u64) -> u32 {
    let mut r = [0u8; 16];
    s.read_exact(&mut r).expect("reply");
    assert_eq!(be32(&r), 0x6744_6698);
    assert_eq!(&r[8..], &cookie.to_be_bytes());
    be32(&r[4..])
}

pub fn closed(s: &mut UnixStream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

/// A pair whose primary serves its guest's disk at `sock` and whose standby (with
/// `extra_standby`) hands over to hsb-primary once activated: `promote_config` names a
/// configuration written here, with its own control socket (`promoted.sock` in `d`), a
/// standby that is not there, and `promote_extra`.
pub fn promoting_pair(
    d: &TempDir,
    sock: &Path,
    extra_standby: Vec<String>,
    promote_extra: &str,
) -> Pair {
    let promote = d.path("promote.conf");
    let mut extra_standby = extra_standby;
    extra_standby.extend([
        "model.disk_rate = 0".to_string(),
        format!("promote_config = {}", promote.display()),
        format!("promote_image = {}", d.path("promote.img").display()),
    ]);
    let pair = Pair::start(PairOpts {
        extra_primary: vec![
            format!("disk.nbd_socket = {}", sock.display()),
            "model.disk_rate = 0".into(),
        ],
        extra_standby,
        ..PairOpts::default()
    });
    std::fs::write(
        &promote,
        format!(
            "node = promoted\ncluster_key = {}\nstandby = {}\ncontrol = {}\nmodel.memory = 8MiB\nmodel.service = {}\nmodel.disk_rate = 0\nreconnect_interval = 50ms\n{promote_extra}",
            pair.dir.path("cluster.key").display(),
            crate::free_addr(),
            d.path("promoted.sock").display(),
            crate::free_addr(),
        ),
    )
    .expect("write promote_config");
    pair
}

/// Wait (at most 30 s) until the checkpoint of the primary's last NBD write is acknowledged;
/// that checkpoint.
pub fn wait_last_write_acked(pair: &Pair) -> u64 {
    let last = crate::num(&pair.primary.status(), "nbd_last_write_checkpoint");
    pair.primary.wait_for(
        "the last write's checkpoint acknowledged",
        Duration::from_secs(30),
        |s| crate::num(s, "acked_checkpoint") >= last,
    );
    last
}

/// The primary killed with kill -9, the standby activated by the operator (asserted).
pub fn kill_primary_and_activate(pair: &mut Pair) {
    pair.primary.kill9();
    let out = pair.standby.ctl("activate").expect("activate");
    assert!(out.starts_with("activated"), "{out}\n{}", pair.logs());
}
