//! The NBD export of the guest's disk (`disk.nbd_socket`, issue 14), real processes on
//! loopback, model backend with no disk workload of its own (`model.disk_rate = 0`): only the
//! NBD client changes the disk. The client is `qemu-io` (Debian's qemu-utils), a real NBD
//! implementation; bad input is sent by hand.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hsb_tests::{num, Pair, PairOpts, TempDir};

fn have_qemu_io(test: &str) -> bool {
    let ok = Command::new("qemu-io")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        hsb_tests::skip(test, "no qemu-io (Debian package qemu-utils)");
    }
    ok
}

/// `qemu-io` on the export with `cmds`; its output, asserted successful and free of failures.
fn qemu_io(sock: &Path, cmds: &[&str]) -> String {
    let (ok, text) = qemu_io_any(sock, cmds);
    assert!(
        ok && !text.contains("failed") && !text.contains("error"),
        "qemu-io {cmds:?}: {text}"
    );
    text
}

/// `qemu-io` on the export with `cmds`: whether it exited successfully, and its output (for
/// commands that fail).
fn qemu_io_any(sock: &Path, cmds: &[&str]) -> (bool, String) {
    let mut c = Command::new("qemu-io");
    c.args(["-f", "raw"]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    c.arg(format!("nbd+unix:///?socket={}", sock.display()));
    let o = c.output().expect("run qemu-io");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

/// A pair whose primary serves its guest's disk at the returned socket.
fn pair(extra: &[&str]) -> (Pair, TempDir, PathBuf) {
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

fn image_bytes(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).expect("open image");
    let mut b = vec![0u8; len];
    f.read_exact_at(&mut b, offset).expect("read image");
    b
}

/// Written and flushed through NBD, including a 16 MiB write through a 2 MiB journal (it
/// waits for checkpoints, and is counted); once the checkpoint of the last write is
/// acknowledged, the primary is killed with kill -9 and the standby activated: the replica's
/// image holds exactly the writes, byte for byte, and its memory agrees with it.
#[test]
fn flushed_nbd_writes_are_on_the_activated_replicas_disk() {
    if !have_qemu_io("flushed_nbd_writes_are_on_the_activated_replicas_disk") {
        return;
    }
    let (mut pair, _d, sock) = pair(&["disk.journal_max = 2MiB"]);
    qemu_io(
        &sock,
        &[
            "write -P 0x5a 1M 1M",
            "write -P 0xa5 16M 16M",
            "write -z 40M 64k",
            "write -P 0x11 40M 4k",
            "write -P 0x22 41M 512",
            "flush",
        ],
    );
    qemu_io(&sock, &["write -f -P 0x33 50M 8k"]);
    let st = pair.primary.status();
    assert_eq!(num(&st, "nbd_writes"), 6, "{st:?}");
    assert!(num(&st, "nbd_flushes") >= 1, "{st:?}");
    assert!(
        num(&st, "nbd_waits") >= 1,
        "a 16 MiB write through a 2 MiB journal waits: {st:?}"
    );
    assert_eq!(num(&st, "nbd_errors"), 0, "{st:?}");
    let last = num(&st, "nbd_last_write_checkpoint");
    assert!(last >= 1, "{st:?}");
    pair.primary.wait_for(
        "the last write's checkpoint acked",
        Duration::from_secs(30),
        |s| num(s, "acked_checkpoint") >= last,
    );
    pair.primary.kill9();
    let out = pair.standby.ctl("activate").expect("activate");
    assert!(out.starts_with("activated"), "{out}\n{}", pair.logs());
    let image = pair.dir.path("standby.state.disk");
    let mb = 1 << 20;
    assert_eq!(
        image_bytes(&image, mb, mb as usize),
        vec![0x5a; mb as usize]
    );
    assert_eq!(
        image_bytes(&image, 2 * mb, 4096),
        vec![0; 4096],
        "nothing beyond"
    );
    assert_eq!(image_bytes(&image, 16 * mb, 16 << 20), vec![0xa5; 16 << 20]);
    let mut want = vec![0x11; 4096];
    want.resize(64 << 10, 0);
    assert_eq!(image_bytes(&image, 40 * mb, 64 << 10), want);
    let mut want = vec![0x22; 512];
    want.resize(4096, 0);
    assert_eq!(image_bytes(&image, 41 * mb, 4096), want);
    assert_eq!(image_bytes(&image, 50 * mb, 8192), vec![0x33; 8192]);
    // The replica's memory (the block CRCs the guest keeps) agrees with its disk.
    pair.standby_disk_agrees_with_memory();
}

/// Reads come back as written (and unwritten blocks as zeros), across connections.
#[test]
fn nbd_reads_come_back_as_written() {
    if !have_qemu_io("nbd_reads_come_back_as_written") {
        return;
    }
    let (pair, _d, sock) = pair(&[]);
    qemu_io(&sock, &["write -P 0x77 3M 256k", "write -P 0x78 3M 100"]);
    qemu_io(
        &sock,
        &[
            "read -P 0x78 3M 100",
            "read -P 0x77 3145828 262044",
            "read -P 0 8M 1M",
            "read -P 0 4M 4k",
        ],
    );
    let st = pair.primary.status();
    assert_eq!(num(&st, "nbd_reads"), 4, "{st:?}");
    assert_eq!(num(&st, "nbd_connections"), 2, "{st:?}");
    assert_eq!(
        st.get("nbd_client").map(String::as_str),
        Some("none"),
        "{st:?}"
    );
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// A hand-made client: greeting read, flags sent, NBD_OPT_EXPORT_NAME for the default export
/// with no zeroes; returns the connection in transmission and the export's size.
fn handshake(sock: &Path) -> (UnixStream, u64) {
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

fn request(kind: u16, cookie: u64, offset: u64, len: u32) -> Vec<u8> {
    let mut v = 0x2560_9513u32.to_be_bytes().to_vec();
    v.extend_from_slice(&0u16.to_be_bytes());
    v.extend_from_slice(&kind.to_be_bytes());
    v.extend_from_slice(&cookie.to_be_bytes());
    v.extend_from_slice(&offset.to_be_bytes());
    v.extend_from_slice(&len.to_be_bytes());
    v
}

/// The error of the reply to `cookie`.
fn reply(s: &mut UnixStream, cookie: u64) -> u32 {
    let mut r = [0u8; 16];
    s.read_exact(&mut r).expect("reply");
    assert_eq!(be32(&r), 0x6744_6698);
    assert_eq!(&r[8..], &cookie.to_be_bytes());
    be32(&r[4..])
}

fn closed(s: &mut UnixStream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

/// Garbage, a second client, out-of-range and oversized requests: each gets its clear error
/// (a reply, or the connection closed with a log line), and the daemon goes on serving.
#[test]
fn bad_nbd_input_gets_a_clear_error_and_harms_nothing() {
    let (pair, _d, sock) = pair(&[]);
    // Not an NBD client: its first bytes are taken for client flags and refused.
    let mut s = UnixStream::connect(&sock).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut g = [0u8; 18];
    s.read_exact(&mut g).expect("greeting");
    assert!(closed(&mut s));
    // Flags fine, then an option with a bad magic.
    let mut s = UnixStream::connect(&sock).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.read_exact(&mut g).expect("greeting");
    s.write_all(&[0, 0, 0, 1]).unwrap();
    s.write_all(b"NOTOPTS!\0\0\0\x07\0\0\0\0").unwrap();
    assert!(closed(&mut s));
    // In transmission: a second client is refused meanwhile.
    let (mut s, size) = handshake(&sock);
    assert_eq!(size, 64 << 20);
    let mut second = UnixStream::connect(&sock).expect("connect");
    second
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert!(closed(&mut second), "a second client is refused");
    // A write beyond the export: ENOSPC, its payload consumed, the session goes on.
    let mut w = request(1, 1, size - 512, 1024);
    w.extend_from_slice(&[9u8; 1024]);
    s.write_all(&w).unwrap();
    assert_eq!(reply(&mut s, 1), 28);
    // A read beyond it, and a read longer than 32 MiB: EINVAL.
    s.write_all(&request(0, 2, size, 4096)).unwrap();
    assert_eq!(reply(&mut s, 2), 22);
    s.write_all(&request(0, 3, 0, (32 << 20) + 1)).unwrap();
    assert_eq!(reply(&mut s, 3), 22);
    // TRIM is not offered: EINVAL.
    s.write_all(&request(4, 4, 0, 4096)).unwrap();
    assert_eq!(reply(&mut s, 4), 22);
    // A valid write and read still work on this connection.
    let mut w = request(1, 5, 8 << 20, 4);
    w.extend_from_slice(b"hsb!");
    s.write_all(&w).unwrap();
    assert_eq!(reply(&mut s, 5), 0);
    s.write_all(&request(0, 6, 8 << 20, 4)).unwrap();
    assert_eq!(reply(&mut s, 6), 0);
    let mut b = [0u8; 4];
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"hsb!");
    // A write whose payload would be longer than 32 MiB cannot be skipped: closed.
    s.write_all(&request(1, 7, 0, (32 << 20) + 1)).unwrap();
    assert!(closed(&mut s));
    // Garbage in transmission: a bad request magic closes.
    let (mut s, _) = handshake(&sock);
    s.write_all(&[0xffu8; 28]).unwrap();
    assert!(closed(&mut s));
    let st = pair
        .primary
        .wait_for("errors counted", Duration::from_secs(10), |s| {
            num(s, "nbd_protocol_errors") >= 4
        });
    assert_eq!(num(&st, "nbd_refused"), 1, "{st:?}");
    assert_eq!(num(&st, "nbd_writes"), 1, "{st:?}");
    let log = pair.primary.log_text();
    for want in [
        "unknown client flags",
        "bad magic number in the option header",
        "bad magic number in the request header",
        "a write of 33554433 bytes: at most 33554432",
        "a second client refused",
    ] {
        assert!(log.contains(want), "the log says {want:?}:\n{log}");
    }
    // The daemon is unharmed: still replicating, and serving the next client.
    let acked = num(&st, "acked_checkpoint");
    pair.primary
        .wait_for("checkpoints go on", Duration::from_secs(10), |s| {
            num(s, "acked_checkpoint") > acked
        });
    let (mut s, _) = handshake(&sock);
    s.write_all(&request(0, 8, 8 << 20, 4)).unwrap();
    assert_eq!(reply(&mut s, 8), 0);
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"hsb!");
    s.write_all(&request(2, 9, 0, 0)).unwrap();
    assert!(closed(&mut s), "NBD_CMD_DISC ends the session");
}

/// The hand-over keeps the device: the activated standby execs hsb-primary
/// (`promote_config`), which serves the replica's disk at its own `disk.nbd_socket`; a client
/// there reads what the old primary's client wrote, and writes on.
#[test]
fn after_a_hand_over_the_promoted_primary_serves_the_replicas_disk() {
    if !have_qemu_io("after_a_hand_over_the_promoted_primary_serves_the_replicas_disk") {
        return;
    }
    let d = TempDir::new("nbd-handover");
    let (sock, promoted_sock) = (d.path("guest.nbd"), d.path("promoted.nbd"));
    let promote = d.path("promote.conf");
    let mut pair = Pair::start(PairOpts {
        extra_primary: vec![
            format!("disk.nbd_socket = {}", sock.display()),
            "model.disk_rate = 0".into(),
        ],
        extra_standby: vec![
            "model.disk_rate = 0".into(),
            format!("promote_config = {}", promote.display()),
            format!("promote_image = {}", d.path("promote.img").display()),
        ],
        ..PairOpts::default()
    });
    std::fs::write(
        &promote,
        format!(
            "node = promoted\ncluster_key = {}\nstandby = {}\ncontrol = {}\nmodel.memory = 8MiB\nmodel.service = {}\nmodel.disk_rate = 0\nreconnect_interval = 50ms\ndisk.nbd_socket = {}\n",
            pair.dir.path("cluster.key").display(),
            hsb_tests::free_addr(),
            d.path("promoted.sock").display(),
            hsb_tests::free_addr(),
            promoted_sock.display()
        ),
    )
    .expect("write");
    qemu_io(&sock, &["write -P 0x5a 5M 1M", "flush"]);
    let last = num(&pair.primary.status(), "nbd_last_write_checkpoint");
    pair.primary.wait_for(
        "the write's checkpoint acked",
        Duration::from_secs(30),
        |s| num(s, "acked_checkpoint") >= last,
    );
    pair.primary.kill9();
    let out = pair.standby.ctl("activate").expect("activate");
    assert!(out.starts_with("activated"), "{out}\n{}", pair.logs());
    let t = std::time::Instant::now();
    while UnixStream::connect(&promoted_sock).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the promoted primary does not serve {}\n{}",
            promoted_sock.display(),
            pair.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    qemu_io(
        &promoted_sock,
        &[
            "read -P 0x5a 5M 1M",
            "write -P 0x6b 6M 64k",
            "read -P 0x6b 6M 64k",
        ],
    );
}

/// A full image: the primary's process may not write beyond 4 MiB of any file (`prlimit
/// --fsize`, EFBIG). A write there is answered `ENOSPC`, counted and logged as out of space;
/// nothing else is harmed (a write below the limit works, and is read back).
#[test]
fn a_full_image_answers_enospc_through_the_export() {
    if std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .is_err()
    {
        hsb_tests::skip(
            "a_full_image_answers_enospc_through_the_export",
            "no prlimit",
        );
        return;
    }
    let d = TempDir::new("nbd-full");
    let (sock, image) = (d.path("guest.nbd"), d.path("primary.disk"));
    // The image exists (64 MiB, sparse, with hsb's metadata): only writes into it are limited.
    hsb_domain::disk::Disk::open(&hsb_domain::disk::DiskConfig {
        path: image.clone(),
        size: 64 << 20,
        journal_max: 8 << 20,
    })
    .expect("create the primary's image");
    let pair = Pair::start(PairOpts {
        extra_primary: vec![
            format!("disk.nbd_socket = {}", sock.display()),
            format!("model.disk = {}", image.display()),
            "model.disk_rate = 0".into(),
        ],
        extra_standby: vec!["model.disk_rate = 0".into()],
        primary_wrapper: vec!["prlimit".into(), format!("--fsize={}", 4 << 20)],
        ..PairOpts::default()
    });
    let (mut s, _) = handshake(&sock);
    let mut w = request(1, 1, 32 << 20, 4096);
    w.extend_from_slice(&[7u8; 4096]);
    s.write_all(&w).unwrap();
    assert_eq!(reply(&mut s, 1), 28, "ENOSPC");
    let mut w = request(1, 2, 2 << 20, 4);
    w.extend_from_slice(b"fine");
    s.write_all(&w).unwrap();
    assert_eq!(reply(&mut s, 2), 0);
    s.write_all(&request(0, 3, 2 << 20, 4)).unwrap();
    assert_eq!(reply(&mut s, 3), 0);
    let mut b = [0u8; 4];
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"fine");
    let st = pair.primary.status();
    assert_eq!(num(&st, "nbd_errors"), 1, "{st:?}");
    assert_eq!(num(&st, "disk_errors"), 1, "{st:?}");
    assert!(
        st.get("disk_last_error")
            .is_some_and(|e| e.contains("out of space")),
        "{st:?}"
    );
    let log = pair.primary.log_text();
    assert!(
        log.contains("NBD export: a command failed") && log.contains("out of space"),
        "{log}"
    );
}

/// hsb-standby serves its replica's disk (`disk.nbd_socket`; a Xen replica's `phy:/dev/nbdN`
/// goes through it): what the primary's guest wrote is read back from the replica once its
/// checkpoint is acknowledged; a write is refused (`EPERM`, counted) and changes nothing while
/// the replica is not activated; once activated, writes go to its disk.
#[test]
fn the_standby_serves_its_replicas_disk_read_only_until_activated() {
    if !have_qemu_io("the_standby_serves_its_replicas_disk_read_only_until_activated") {
        return;
    }
    let d = TempDir::new("nbd-standby");
    let metrics = hsb_tests::free_addr();
    let (sock, standby_sock) = (d.path("guest.nbd"), d.path("replica.nbd"));
    let mut pair = Pair::start(PairOpts {
        extra_primary: vec![
            format!("disk.nbd_socket = {}", sock.display()),
            "model.disk_rate = 0".into(),
        ],
        extra_standby: vec![
            format!("disk.nbd_socket = {}", standby_sock.display()),
            "model.disk_rate = 0".into(),
            format!("metrics_listen = {metrics}"),
        ],
        ..PairOpts::default()
    });
    qemu_io(&sock, &["write -P 0x5a 3M 1M", "flush"]);
    let last = num(&pair.primary.status(), "nbd_last_write_checkpoint");
    pair.primary.wait_for(
        "the write's checkpoint acked",
        Duration::from_secs(30),
        |s| num(s, "acked_checkpoint") >= last,
    );
    qemu_io(&standby_sock, &["read -P 0x5a 3M 1M", "read -P 0 4M 4k"]);
    let (_, out) = qemu_io_any(&standby_sock, &["write -P 0x77 3M 4k"]);
    assert!(
        out.contains("Operation not permitted"),
        "a write to a replica that is not activated is refused with EPERM: {out}"
    );
    let st = pair.standby.status();
    assert_eq!(num(&st, "nbd_errors"), 1, "{st:?}");
    assert_eq!(num(&st, "nbd_writes"), 0, "{st:?}");
    // The same in the standby's metrics, beside what the checkpoints applied to its disk.
    let text = hsb_tests::prom::scrape(metrics).expect("scrape the standby");
    // (Checked by promtool and Prometheus's own parser.)
    hsb_tests::prom::parse_checked(
        "the_standby_serves_its_replicas_disk_read_only_until_activated",
        &text,
    );
    let m = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(-1.0)
    };
    assert_eq!(m("hsb_standby_nbd_errors_total"), 1.0, "{text}");
    assert_eq!(m("hsb_standby_nbd_writes_total"), 0.0, "{text}");
    assert!(m("hsb_standby_nbd_reads_total") >= 2.0, "{text}");
    assert_eq!(m("hsb_standby_nbd_client_connected"), 0.0, "{text}");
    assert!(
        m("hsb_standby_disk_applied_bytes_total") >= f64::from(1 << 20),
        "{text}"
    );
    let image = pair.dir.path("standby.state.disk");
    assert_eq!(image_bytes(&image, 3 << 20, 4096), vec![0x5a; 4096]);
    pair.primary.kill9();
    let out = pair.standby.ctl("activate").expect("activate");
    assert!(out.starts_with("activated"), "{out}\n{}", pair.logs());
    qemu_io(
        &standby_sock,
        &["write -P 0x77 3M 4k", "flush", "read -P 0x77 3M 4k"],
    );
    assert_eq!(image_bytes(&image, 3 << 20, 4096), vec![0x77; 4096]);
    assert_eq!(
        image_bytes(&image, (3 << 20) + 4096, 4096),
        vec![0x5a; 4096]
    );
    assert_eq!(num(&pair.standby.status(), "nbd_writes"), 1);
}

/// A daemon configured for a Xen guest with a replicated disk whose domain does not exist
/// (here: no Xen at all) serves the disk meanwhile, since the guest's `phy:/dev/nbdN` must
/// exist before the domain is created: hsb-primary reads and writes, hsb-standby reads only;
/// each locks its memory first (a dom0 must not deadlock on its own disk's server).
/// SIGTERM then stops it cleanly (exit status 0, the socket removed).
#[test]
fn a_daemon_serves_a_xen_guests_disk_while_the_domain_does_not_exist_yet() {
    let test = "a_daemon_serves_a_xen_guests_disk_while_the_domain_does_not_exist_yet";
    if !have_qemu_io(test) {
        return;
    }
    if Path::new("/proc/xen/privcmd").exists() {
        hsb_tests::skip(
            test,
            "this is a Xen dom0: the domain lookup would not fail here",
        );
        return;
    }
    let d = TempDir::new("nbd-xen-wait");
    let key = d.path("cluster.key");
    hsb_common::key::ClusterKey::generate(&key).expect("key");
    for (bin, writable) in [("hsb-primary", true), ("hsb-standby", false)] {
        let sock = d.path(&format!("{bin}.nbd"));
        let image = d.path(&format!("{bin}.img"));
        let conf = d.path(&format!("{bin}.conf"));
        let control = d.path(&format!("{bin}.sock"));
        let role = if writable {
            format!("standby = {}\n", hsb_tests::free_addr())
        } else {
            format!("listen = {}\n", hsb_tests::free_addr())
        };
        std::fs::write(
            &conf,
            format!(
                "node = {bin}\ncluster_key = {}\n{role}control = {}\nstate_file = {}\nbackend = xen\nxen.domain = hsb-no-such-guest\nxen.disk = {}\nxen.disk_size = 16MiB\ndisk.nbd_socket = {}\n",
                key.display(),
                control.display(),
                d.path(&format!("{bin}.state")).display(),
                image.display(),
                sock.display()
            ),
        )
        .expect("write config");
        let log = d.path(&format!("{bin}.log"));
        let mut daemon = hsb_tests::Daemon::start(bin, &conf, &control, &log, &[]);
        let t = std::time::Instant::now();
        while UnixStream::connect(&sock).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(30) && daemon.alive(),
                "{bin} does not serve {}\n{}",
                sock.display(),
                daemon.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        if writable {
            qemu_io(
                &sock,
                &["write -P 0x3c 1M 64k", "flush", "read -P 0x3c 1M 64k"],
            );
            assert_eq!(image_bytes(&image, 1 << 20, 64 << 10), vec![0x3c; 64 << 10]);
        } else {
            qemu_io(&sock, &["read -P 0 1M 64k"]);
            let (_, out) = qemu_io_any(&sock, &["write -P 0x3c 1M 4k"]);
            assert!(out.contains("Operation not permitted"), "{out}");
            assert_eq!(image_bytes(&image, 1 << 20, 4096), vec![0; 4096]);
        }
        let text = daemon.log_text();
        assert!(
            text.contains("waiting for domain 'hsb-no-such-guest'"),
            "{bin} says what it waits for\n{text}"
        );
        assert!(
            text.contains("xen.disk: memory locked"),
            "{bin} serving its dom0 a disk locks its memory first\n{text}"
        );
        daemon.signal("TERM");
        let mut child = daemon.child.take().expect("child");
        let status = child.wait().expect("wait");
        let text = daemon.log_text();
        assert!(status.success(), "{bin}: {status}\n{text}");
        assert!(
            text.contains("SIGTERM: stopping while waiting for domain 'hsb-no-such-guest'"),
            "{text}"
        );
        assert!(!sock.exists(), "{bin} removes its socket");
    }
}

/// The hand-over keeps the device: the activated standby serving its replica's disk to a
/// client execs hsb-primary (`promote_config`), which takes the export over, its listener and
/// the client's connection with it (`disk.nbd_inherit`), as the kernel's nbd connection in
/// dom0 must be kept. A client that floods reads across the activation and the exec gets
/// every reply, in order and correct, on one connection; its write afterwards lands on the
/// image the replica's disk is. (A build without the hand-over closes the connection at the
/// exec: the reader sees the end before the last reply.)
#[test]
fn the_hand_over_keeps_the_nbd_clients_connection() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let d = TempDir::new("nbd-keep");
    let (sock, standby_sock) = (d.path("guest.nbd"), d.path("replica.nbd"));
    let (promote, promoted_ctl) = (d.path("promote.conf"), d.path("promoted.sock"));
    let mut pair = Pair::start(PairOpts {
        extra_primary: vec![
            format!("disk.nbd_socket = {}", sock.display()),
            "model.disk_rate = 0".into(),
        ],
        extra_standby: vec![
            format!("disk.nbd_socket = {}", standby_sock.display()),
            "model.disk_rate = 0".into(),
            format!("promote_config = {}", promote.display()),
            format!("promote_image = {}", d.path("promote.img").display()),
        ],
        ..PairOpts::default()
    });
    // The promoted primary's own configuration names no disk and no socket: the hand-over
    // passes the replica's.
    std::fs::write(
        &promote,
        format!(
            "node = promoted\ncluster_key = {}\nstandby = {}\ncontrol = {}\nmodel.memory = 8MiB\nmodel.service = {}\nmodel.disk_rate = 0\nreconnect_interval = 50ms\n",
            pair.dir.path("cluster.key").display(),
            hsb_tests::free_addr(),
            promoted_ctl.display(),
            hsb_tests::free_addr(),
        ),
    )
    .expect("write");
    // The old primary's guest writes a pattern (by hand: no qemu-io needed).
    const MB: u64 = 1 << 20;
    let (mut w, _) = handshake(&sock);
    for i in 0..8u64 {
        let mut req = request(1, i, (1 + i) * MB, MB as u32);
        req.extend(std::iter::repeat_n(0x5a, MB as usize));
        w.write_all(&req).unwrap();
        assert_eq!(reply(&mut w, i), 0);
    }
    let last = num(&pair.primary.status(), "nbd_last_write_checkpoint");
    pair.primary.wait_for(
        "the writes' checkpoint acked",
        Duration::from_secs(30),
        |s| num(s, "acked_checkpoint") >= last,
    );
    // A client of the replica's disk reads it without a pause: 256 KiB reads, pipelined,
    // until told to stop; then a write, a read of it, and the end of the session.
    let (s, size) = handshake(&standby_sock);
    assert_eq!(size, 64 << 20);
    let mut reader = s.try_clone().expect("clone");
    reader
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // The write's cookie, once it is known (stored before the write is sent).
    let last = Arc::new(AtomicU64::new(u64::MAX));
    const LEN: u32 = 256 << 10;
    let writer = {
        let (stop, last, mut s) = (stop.clone(), last.clone(), s);
        std::thread::spawn(move || -> std::io::Result<()> {
            let mut cookie = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let offset = MB + (cookie % 32) * u64::from(LEN);
                s.write_all(&request(0, cookie, offset, LEN))?;
                cookie += 1;
            }
            last.store(cookie, Ordering::SeqCst);
            let mut req = request(1, cookie, 20 * MB, 4096);
            req.extend_from_slice(&[0x6b; 4096]);
            req.extend(request(0, cookie + 1, 20 * MB, 4096));
            req.extend(request(2, cookie + 2, 0, 0));
            s.write_all(&req)
        })
    };
    // Every reply, in order: the reads' data, then the write's answer and its data read back.
    let checker = {
        let last = last.clone();
        std::thread::spawn(move || -> Result<u64, String> {
            let mut data = vec![0u8; LEN as usize];
            let mut head = [0u8; 16];
            let mut next = |cookie: u64, data: &mut [u8]| -> Result<(), String> {
                reader
                    .read_exact(&mut head)
                    .map_err(|e| format!("reply {cookie}: {e}"))?;
                let (magic, error) = (be32(&head), be32(&head[4..]));
                let got = u64::from_be_bytes(head[8..].try_into().unwrap_or_default());
                if magic != 0x6744_6698 || got != cookie || error != 0 {
                    return Err(format!(
                        "reply {cookie}: magic {magic:#x}, cookie {got}, error {error}"
                    ));
                }
                reader
                    .read_exact(data)
                    .map_err(|e| format!("reply {cookie}'s data: {e}"))
            };
            let mut cookie = 0u64;
            loop {
                if cookie == last.load(Ordering::SeqCst) {
                    next(cookie, &mut [])?;
                    let mut back = [0u8; 4096];
                    next(cookie + 1, &mut back)?;
                    if back != [0x6b; 4096] {
                        return Err("the write is not read back".into());
                    }
                    return Ok(cookie);
                }
                next(cookie, &mut data)?;
                if data.iter().any(|&b| b != 0x5a) {
                    return Err(format!("reply {cookie}: wrong data"));
                }
                cookie += 1;
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    pair.primary.kill9();
    let out = pair.standby.ctl("activate").expect("activate");
    assert!(out.starts_with("activated"), "{out}\n{}", pair.logs());
    // The promoted primary (its own control socket) serves the client it took over.
    let t = std::time::Instant::now();
    let st = loop {
        let st = hsb_tests::parse_status(
            &hsb_common::ctl::request(&promoted_ctl, "status", Duration::from_secs(5))
                .unwrap_or_default(),
        );
        if st.get("nbd_reads").and_then(|v| v.parse::<u64>().ok()) >= Some(200) {
            break st;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60) && !checker.is_finished(),
            "the promoted primary does not serve the client it took over: {st:?}\n{}",
            pair.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    stop.store(true, Ordering::SeqCst);
    writer
        .join()
        .expect("writer")
        .expect("the connection stays open");
    let reads = checker
        .join()
        .expect("checker")
        .unwrap_or_else(|e| panic!("{e}\n{}", pair.logs()));
    assert_eq!(
        num(&st, "nbd_connections"),
        1,
        "taken over, not connected again: {st:?}"
    );
    let log = pair.standby.log_text();
    let taken = log
        .lines()
        .find(|l| l.contains("taken over with its client's session"))
        .unwrap_or_else(|| panic!("the log says the session was taken over:\n{log}"));
    eprintln!("{reads} reads on one connection across the hand-over; {taken}");
    let image = pair.dir.path("standby.state.disk");
    assert_eq!(image_bytes(&image, 20 * MB, 4096), vec![0x6b; 4096]);
    assert!(
        !handover_path_exists(&standby_sock),
        "the session file is removed once read"
    );
}

fn handover_path_exists(sock: &Path) -> bool {
    hsb_domain::disk::export::handover_path(sock).exists()
}
