//! systemd's notification protocol from real daemons: a real unix datagram socket stands where
//! systemd's would (`$NOTIFY_SOCKET`, a path or an abstract `@name`) and receives what a daemon
//! sends: `READY=1` with a `STATUS=`, `STATUS=` updates, `WATCHDOG=1` every half of
//! `$WATCHDOG_USEC` from the daemon's loop (none while the loop is stopped), `STOPPING=1`.

use std::net::{SocketAddr, TcpListener};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use hsb_tests::{bin, free_addr, Daemon, TempDir};

/// A notification as received, with when.
struct Note {
    at: Instant,
    text: String,
}

/// Receive for `d`, or until `until` says stop.
fn receive(sock: &UnixDatagram, d: Duration, until: impl Fn(&[Note]) -> bool) -> Vec<Note> {
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .expect("timeout");
    let end = Instant::now() + d;
    let mut got = vec![];
    let mut buf = [0u8; 4096];
    while Instant::now() < end && !until(&got) {
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(Note {
                at: Instant::now(),
                text: String::from_utf8_lossy(&buf[..n]).into_owned(),
            });
        }
    }
    got
}

fn service() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let a = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for c in l.incoming() {
            drop(c);
        }
    });
    a
}

/// A witness configuration (one guest, probing a live service) in `dir`.
fn witness_conf(dir: &TempDir) -> std::path::PathBuf {
    let key = dir.path("k");
    hsb_common::key::ClusterKey::generate(&key).expect("key");
    let conf = dir.path("w.conf");
    std::fs::write(
        &conf,
        format!(
            "id = 1\ncluster_key = {}\ncontrol = {}\nstate_file = {}\nlisten = {}\nprimary = {}\nstandby = {}\nprobe = tcp {}\n",
            key.display(),
            dir.path("w.sock").display(),
            dir.path("w.state").display(),
            free_addr(),
            free_addr(),
            free_addr(),
            service()
        ),
    )
    .expect("write");
    conf
}

fn start(dir: &TempDir, env: &[(&str, String)]) -> Daemon {
    let mut cmd = Command::new(bin("hsb-witness"));
    cmd.arg("run").arg("-c").arg(witness_conf(dir));
    for (k, v) in env {
        cmd.env(k, v);
    }
    Daemon::start_command("hsb-witness", cmd, &dir.path("w.sock"), &dir.path("w.log"))
}

fn texts(notes: &[Note]) -> Vec<&str> {
    notes.iter().map(|n| n.text.as_str()).collect()
}

#[test]
fn a_witness_notifies_ready_status_watchdog_and_stopping_and_its_watchdog_stops_with_its_loop() {
    let dir = TempDir::new("notify");
    let path = dir.path("notify.sock");
    let sock = UnixDatagram::bind(&path).expect("bind");
    let mut w = start(
        &dir,
        &[
            ("NOTIFY_SOCKET", path.display().to_string()),
            ("WATCHDOG_USEC", "200000".into()),
        ],
    );
    // READY first, with a status; then the watchdog every 100 ms and the status once the
    // application is seen.
    let notes = receive(&sock, Duration::from_secs(10), |n| {
        n.iter().filter(|x| x.text == "WATCHDOG=1\n").count() >= 12
            && n.iter().any(|x| x.text.contains("STATUS=application up"))
    });
    let t = texts(&notes);
    assert!(
        t.first().is_some_and(|x| x.starts_with("READY=1\nSTATUS=")),
        "{t:?}\n{}",
        w.log_text()
    );
    assert!(
        t.iter().any(|x| x.starts_with("STATUS=application up, ")),
        "{t:?}"
    );
    let dogs: Vec<Instant> = notes
        .iter()
        .filter(|n| n.text == "WATCHDOG=1\n")
        .map(|n| n.at)
        .collect();
    assert!(dogs.len() >= 12, "{t:?}");
    let gaps: Vec<u128> = dogs.windows(2).map(|w| (w[1] - w[0]).as_millis()).collect();
    // Half of WATCHDOG_USEC, from the loop's deadlines: never much later (a loaded machine may
    // add a little); datagrams that waited for this thread arrive together, so the mean, not
    // each gap, shows the period.
    assert!(gaps.iter().all(|g| *g <= 600), "{gaps:?}");
    let mean = gaps.iter().sum::<u128>() / gaps.len() as u128;
    assert!((80..=200).contains(&mean), "mean {mean} ms: {gaps:?}");

    // A stopped loop pets no watchdog: that is what lets systemd restart a hung daemon.
    w.signal("STOP");
    std::thread::sleep(Duration::from_millis(100));
    let _ = receive(&sock, Duration::from_millis(50), |_| false);
    let stopped = receive(&sock, Duration::from_millis(600), |_| false);
    assert!(
        !texts(&stopped).contains(&"WATCHDOG=1\n"),
        "{:?}",
        texts(&stopped)
    );
    w.signal("CONT");
    let resumed = receive(&sock, Duration::from_secs(3), |n| {
        n.iter().any(|x| x.text == "WATCHDOG=1\n")
    });
    assert!(texts(&resumed).contains(&"WATCHDOG=1\n"));

    w.signal("TERM");
    let last = receive(&sock, Duration::from_secs(5), |n| {
        n.iter().any(|x| x.text.starts_with("STOPPING=1"))
    });
    assert!(
        texts(&last).contains(&"STOPPING=1\nSTATUS=SIGTERM: stopping\n"),
        "{:?}",
        texts(&last)
    );
    let t0 = Instant::now();
    while w.alive() && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!w.alive());
}

#[test]
fn an_abstract_socket_is_reached_and_another_process_s_watchdog_is_not_petted() {
    let dir = TempDir::new("notify-abstract");
    let name = format!("hsb-notify-test-{}", std::process::id());
    let sock = UnixDatagram::bind_addr(
        &std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("addr"),
    )
    .expect("bind");
    // WATCHDOG_PID names another process (systemd sets it for the main process only).
    let _w = start(
        &dir,
        &[
            ("NOTIFY_SOCKET", format!("@{name}")),
            ("WATCHDOG_USEC", "100000".into()),
            ("WATCHDOG_PID", "1".into()),
        ],
    );
    let notes = receive(&sock, Duration::from_secs(10), |n| !n.is_empty());
    assert!(
        texts(&notes)
            .first()
            .is_some_and(|x| x.starts_with("READY=1\nSTATUS=")),
        "{:?}",
        texts(&notes)
    );
    let more = receive(&sock, Duration::from_millis(600), |_| false);
    assert!(
        !texts(&more).contains(&"WATCHDOG=1\n"),
        "{:?}",
        texts(&more)
    );
}

#[test]
fn without_notify_socket_nothing_is_sent_and_a_bad_one_is_said_and_ignored() {
    let dir = TempDir::new("notify-bad");
    let w = start(&dir, &[("NOTIFY_SOCKET", "relative/path".into())]);
    w.wait_for("running", Duration::from_secs(10), |_| true);
    let log = w.log_text();
    assert!(
        log.contains("systemd notification: NOTIFY_SOCKET=\"relative/path\": expected an absolute path or @name"),
        "{log}"
    );
}
