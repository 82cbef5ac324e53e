//! The hand-over keeps the guest's disk (issue 14): the activated standby execs hsb-primary
//! (`promote_config`), which goes on serving the replica's disk; real processes on loopback,
//! the model backend, clients by hand and `qemu-io` (`hsb_tests::nbdclient`).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use hsb_tests::nbdclient::*;
use hsb_tests::{num, TempDir};

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
    let mut pair = promoting_pair(
        &d,
        &sock,
        vec![],
        &format!("disk.nbd_socket = {}\n", promoted_sock.display()),
    );
    qemu_io(&sock, &["write -P 0x5a 5M 1M", "flush"]);
    wait_last_write_acked(&pair);
    kill_primary_and_activate(&mut pair);
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
    let promoted_ctl = d.path("promoted.sock");
    // The promoted primary's own configuration names no disk and no socket: the hand-over
    // passes the replica's.
    let mut pair = promoting_pair(
        &d,
        &sock,
        vec![format!("disk.nbd_socket = {}", standby_sock.display())],
        "",
    );
    // The old primary's guest writes a pattern (by hand: no qemu-io needed).
    const MB: u64 = 1 << 20;
    let (mut w, _) = handshake(&sock);
    for i in 0..8u64 {
        let mut req = request(1, i, (1 + i) * MB, MB as u32);
        req.extend(std::iter::repeat_n(0x5a, MB as usize));
        w.write_all(&req).unwrap();
        assert_eq!(reply(&mut w, i), 0);
    }
    wait_last_write_acked(&pair);
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
    kill_primary_and_activate(&mut pair);
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

/// A `promote_config` hsb-primary refuses (here an unknown key) never replaces the activated
/// standby: hsb-standby checks it first (`hsb-primary check` with the hand-over's settings),
/// says why in its log, and serves on: its status answers, and its NBD client's connection
/// goes on, now writable. (Without the check the exec'd hsb-primary would exit at once, and
/// the guest's disk with it.)
#[test]
fn a_promote_config_hsb_primary_refuses_leaves_the_standby_serving() {
    let d = TempDir::new("nbd-badpromote");
    let (sock, standby_sock) = (d.path("guest.nbd"), d.path("replica.nbd"));
    let mut pair = promoting_pair(
        &d,
        &sock,
        vec![format!("disk.nbd_socket = {}", standby_sock.display())],
        "no_such_key = 1\n",
    );
    let (mut s, _) = handshake(&standby_sock);
    pair.primary
        .wait_for("a checkpoint acked", Duration::from_secs(30), |s| {
            num(s, "acked_checkpoint") >= 1
        });
    kill_primary_and_activate(&mut pair);
    let st = pair
        .standby
        .wait_for("the refusal logged", Duration::from_secs(30), |_| {
            pair.standby.log_text().contains("refuses promote_config")
        });
    assert_eq!(
        st.get("role").map(String::as_str),
        Some("standby"),
        "{st:?}"
    );
    assert_eq!(
        st.get("state").map(String::as_str),
        Some("active"),
        "{st:?}"
    );
    let log = pair.standby.log_text();
    assert!(
        log.contains("no_such_key"),
        "the check's reason is logged:\n{log}"
    );
    let mut w = request(1, 1, 4 << 20, 4);
    w.extend_from_slice(b"kept");
    s.write_all(&w).unwrap();
    assert_eq!(
        reply(&mut s, 1),
        0,
        "the activated standby's disk takes writes"
    );
    s.write_all(&request(0, 2, 4 << 20, 4)).unwrap();
    assert_eq!(reply(&mut s, 2), 0);
    let mut b = [0u8; 4];
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"kept");
    assert!(pair.standby.alive(), "hsb-standby still runs");
}
