//! The NBD export of the guest's disk (`disk.nbd_socket`, issue 14), real processes on
//! loopback, model backend with no disk workload of its own (`model.disk_rate = 0`): only the
//! NBD client changes the disk. The client is `qemu-io` (Debian's qemu-utils), a real NBD
//! implementation; bad input is sent by hand.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use hsb_tests::nbdclient::*;
use hsb_tests::{num, Pair, PairOpts, TempDir};

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
    assert!(num(&st, "nbd_last_write_checkpoint") >= 1, "{st:?}");
    wait_last_write_acked(&pair);
    kill_primary_and_activate(&mut pair);
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
    wait_last_write_acked(&pair);
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
    kill_primary_and_activate(&mut pair);
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
        // That probe was the export's one client: until the export has seen it go, qemu-io
        // would be refused as a second one (the CI rehearsal's "EOF before the initial magic").
        while !daemon.log_text().contains("disk: NBD export: client gone") {
            assert!(
                t.elapsed() < Duration::from_secs(30) && daemon.alive(),
                "{bin} does not notice its probe client leave\n{}",
                daemon.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
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
