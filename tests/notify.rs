//! systemd's notification protocol from real daemons: a real unix datagram socket stands where
//! systemd's would (`$NOTIFY_SOCKET`, a path or an abstract `@name`) and receives what a daemon
//! sends: `READY=1` with a `STATUS=`, `STATUS=` updates, `WATCHDOG=1` every half of
//! `$WATCHDOG_USEC` from the daemon's loop (none while the loop is stopped), `STOPPING=1`.
//! Where it matters, the sender's process id is read from its credentials (`SCM_CREDENTIALS`),
//! as systemd reads it to apply `NotifyAccess=main`: a hand-over's exec keeps the main PID.

use std::net::{SocketAddr, TcpListener};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use hsb_tests::{bin, free_addr, num, Daemon, Pair, PairOpts, TempDir};

/// A notification as received, with when and from which process (with `SO_PASSCRED` on).
struct Note {
    at: Instant,
    text: String,
    pid: Option<i32>,
}

/// A socket where systemd's would be, reading senders' credentials as systemd does.
fn notify_socket(path: &std::path::Path) -> UnixDatagram {
    let sock = UnixDatagram::bind(path).expect("bind");
    rustix::net::sockopt::set_socket_passcred(&sock, true).expect("SO_PASSCRED");
    sock
}

/// One datagram and its sender's pid (if the socket passes credentials).
fn recv_note(sock: &UnixDatagram) -> Option<Note> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    let mut buf = [0u8; 4096];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmCredentials(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(
        sock,
        &mut [std::io::IoSliceMut::new(&mut buf)],
        &mut control,
        RecvFlags::empty(),
    )
    .ok()?;
    let pid = control.drain().find_map(|m| match m {
        RecvAncillaryMessage::ScmCredentials(c) => Some(c.pid.as_raw_nonzero().get()),
        _ => None,
    });
    Some(Note {
        at: Instant::now(),
        text: String::from_utf8_lossy(&buf[..got.bytes.min(buf.len())]).into_owned(),
        pid,
    })
}

/// Receive for `d`, or until `until` says stop.
fn receive(sock: &UnixDatagram, d: Duration, until: impl Fn(&[Note]) -> bool) -> Vec<Note> {
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .expect("timeout");
    let end = Instant::now() + d;
    let mut got = vec![];
    while Instant::now() < end && !until(&got) {
        if let Some(n) = recv_note(sock) {
            got.push(n);
        }
    }
    got
}

/// The gaps between `WATCHDOG=1` notes (ms): each at most `max`, their mean within `mean`.
fn watchdog_gaps(notes: &[Note], max: u128, mean: std::ops::RangeInclusive<u128>) {
    let dogs: Vec<Instant> = notes
        .iter()
        .filter(|n| n.text == "WATCHDOG=1\n")
        .map(|n| n.at)
        .collect();
    let gaps: Vec<u128> = dogs.windows(2).map(|w| (w[1] - w[0]).as_millis()).collect();
    assert!(gaps.len() >= 10, "{gaps:?}");
    // Datagrams that waited for this (loaded) test thread arrive together: the mean, not each
    // gap, shows the period.
    assert!(gaps.iter().all(|g| *g <= max), "{gaps:?}");
    let m = gaps.iter().sum::<u128>() / gaps.len() as u128;
    assert!(mean.contains(&m), "mean {m} ms: {gaps:?}");
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

/// The pid of `d`'s process.
fn pid_of(d: &Daemon) -> i32 {
    d.child
        .as_ref()
        .map(|c| i32::try_from(c.id()).expect("pid"))
        .expect("running")
}

/// The checkpoint a standby's STATUS says it applied.
fn status_checkpoint(text: &str) -> Option<u64> {
    text.split(", checkpoint ")
        .nth(1)?
        .split(' ')
        .next()?
        .parse()
        .ok()
}

#[test]
fn a_standby_notifies_ready_status_watchdog_and_stopping_on_sigterm() {
    let ndir = TempDir::new("notify-standby");
    let path = ndir.path("notify.sock");
    let sock = notify_socket(&path);
    let mut pair = Pair::start(PairOpts {
        standby_env: vec![
            ("NOTIFY_SOCKET".into(), path.display().to_string()),
            ("WATCHDOG_USEC".into(), "200000".into()),
        ],
        ..Default::default()
    });
    let pid = pid_of(&pair.standby);
    // READY once the loop starts (before any primary), then the watchdog every 100 ms and the
    // status as checkpoints are applied, at most once a second.
    let t0 = Instant::now();
    let notes = receive(&sock, Duration::from_secs(15), |n| {
        n.iter().filter(|x| x.text == "WATCHDOG=1\n").count() >= 20
            && n.iter()
                .filter(|x| x.text.starts_with("STATUS=standby, epoch 1: replicating"))
                .count()
                >= 2
    });
    let secs = t0.elapsed().as_secs_f64();
    let t = texts(&notes);
    assert!(
        t.first().is_some_and(|x| x.starts_with(
            "READY=1\nSTATUS=standby, epoch 1: waiting-for-primary, no checkpoint applied\n"
        )),
        "{t:?}\n{}",
        pair.logs()
    );
    assert!(
        notes.iter().all(|n| n.pid == Some(pid)),
        "every notification from the main process {pid}"
    );
    let applied: Vec<u64> = t
        .iter()
        .filter(|x| x.starts_with("STATUS=standby, epoch 1: replicating, checkpoint "))
        .filter_map(|x| status_checkpoint(x))
        .collect();
    assert!(applied.len() >= 2, "{t:?}");
    assert!(applied.windows(2).all(|w| w[0] < w[1]), "{applied:?}");
    let now = num(&pair.standby.status(), "applied_checkpoint");
    assert!(applied.iter().all(|a| *a <= now), "{applied:?} vs {now}");
    let statuses = t.iter().filter(|x| x.starts_with("STATUS=")).count();
    assert!(
        (statuses as f64) <= secs + 2.0,
        "{statuses} STATUS in {secs:.1} s: {t:?}"
    );
    watchdog_gaps(&notes, 600, 80..=200);

    pair.standby.signal("TERM");
    let last = receive(&sock, Duration::from_secs(5), |n| {
        n.iter().any(|x| x.text.starts_with("STOPPING=1"))
    });
    assert!(
        texts(&last).contains(&"STOPPING=1\nSTATUS=SIGTERM: stopping\n"),
        "{:?}",
        texts(&last)
    );
    let t0 = Instant::now();
    while pair.standby.alive() && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let code = pair
        .standby
        .child
        .as_mut()
        .and_then(|c| c.try_wait().ok().flatten())
        .and_then(|s| s.code());
    assert_eq!(code, Some(0), "{}", pair.standby.log_text());
}

/// `NotifyAccess=main` across a hand-over: the activated standby execs hsb-primary in the same
/// process, so systemd's main PID sends the primary's READY=1 too (systemd accepts READY=1 in
/// a running service: it is only a start's or a reload's end, and otherwise changes nothing),
/// and the watchdog is petted across the exec with time to spare.
#[test]
fn a_hand_over_keeps_the_main_pid_and_hsb_primary_notifies_ready_again() {
    let ndir = TempDir::new("notify-handover");
    let path = ndir.path("notify.sock");
    let sock = notify_socket(&path);
    let promote = ndir.path("promote.conf");
    // Both configurations name the same metrics address, as the examples do.
    let m = free_addr();
    let pair = Pair::start(PairOpts {
        extra_standby: vec![
            format!("promote_config = {}", promote.display()),
            format!("promote_image = {}", ndir.path("promote.img").display()),
            format!("metrics_listen = {m}"),
        ],
        standby_env: vec![
            ("NOTIFY_SOCKET".into(), path.display().to_string()),
            ("WATCHDOG_USEC".into(), "2000000".into()),
        ],
        ..Default::default()
    });
    let pid = pid_of(&pair.standby);
    std::fs::write(
        &promote,
        format!(
            "node = promoted\ncluster_key = {}\nstandby = {}\ncontrol = {}\nmodel.memory = 8MiB\nmodel.service = {}\nreconnect_interval = 50ms\nmetrics_listen = {m}\n",
            pair.dir.path("cluster.key").display(),
            free_addr(),
            ndir.path("promoted.sock").display(),
            free_addr()
        ),
    )
    .expect("write");
    let answer = pair.standby.ctl("activate").expect("activate");
    assert!(answer.starts_with("activated"), "{answer}");
    let notes = receive(&sock, Duration::from_secs(20), |n| {
        n.iter()
            .any(|x| x.text.starts_with("READY=1\nSTATUS=primary, epoch 2: "))
            && n.iter()
                .rev()
                .take_while(|x| !x.text.starts_with("READY=1\nSTATUS=primary"))
                .filter(|x| x.text == "WATCHDOG=1\n")
                .count()
                >= 2
    });
    let t = texts(&notes);
    let handing = notes
        .iter()
        .position(|n| n.text.contains("handing over to hsb-primary"))
        .unwrap_or_else(|| panic!("no hand-over status: {t:?}\n{}", pair.logs()));
    // A last status, and the watchdog petted: the new program has a whole period for READY.
    let h = &notes[handing].text;
    assert!(
        h.starts_with("STATUS=standby, epoch 2: activated from checkpoint ")
            && h.ends_with("; handing over to hsb-primary\nWATCHDOG=1\n"),
        "{h:?}"
    );
    let ready = notes
        .iter()
        .position(|n| n.text.starts_with("READY=1\nSTATUS=primary, epoch 2: "))
        .unwrap_or_else(|| panic!("no READY from hsb-primary: {t:?}"));
    assert!(handing < ready, "{t:?}");
    assert!(
        t.iter().filter(|x| x.starts_with("READY=1\n")).count() == 2,
        "the standby's READY and the primary's: {t:?}"
    );
    assert!(
        !t.iter().any(|x| x.contains("STOPPING=1")),
        "a hand-over is no stop: {t:?}"
    );
    // Every notification, before and after the exec, comes from the unit's main process.
    assert!(
        notes.iter().all(|n| n.pid == Some(pid)),
        "pids {:?}, main {pid}",
        notes.iter().map(|n| n.pid).collect::<Vec<_>>()
    );
    // The watchdog never went unpetted for a whole WATCHDOG_USEC (2 s) across the exec.
    let first_dog_after = notes[ready..]
        .iter()
        .find(|n| n.text == "WATCHDOG=1\n")
        .map(|n| n.at)
        .expect("the primary's watchdog");
    let gap = first_dog_after - notes[handing].at;
    assert!(gap < Duration::from_secs(2), "{gap:?}");
    assert!(
        pair.standby.log_text().contains("promoting: exec "),
        "{}",
        pair.standby.log_text()
    );
    // The same address now serves the primary's metrics (the exec closed the standby's).
    let text = hsb_tests::prom::scrape(m).unwrap_or_else(|e| panic!("{e}\n{}", pair.logs()));
    assert!(
        text.contains("hsb_build_info{daemon=\"hsb-primary\"")
            && text.contains("\nhsb_primary_epoch 2\n"),
        "{text}"
    );

    // hsb-primary, in the same process, stops on SIGTERM with STOPPING=1 too.
    pair.standby.signal("TERM");
    let last = receive(&sock, Duration::from_secs(5), |n| {
        n.iter().any(|x| x.text.starts_with("STOPPING=1"))
    });
    let stop = last
        .iter()
        .find(|n| n.text.starts_with("STOPPING=1"))
        .unwrap_or_else(|| panic!("{:?}", texts(&last)));
    assert_eq!(stop.text, "STOPPING=1\nSTATUS=SIGTERM: stopping\n");
    assert_eq!(stop.pid, Some(pid));
}

/// A planned switchover hands over both ways at once: the standby's process becomes the
/// primary, and the old primary's process, stepping down, becomes the standby. Each process
/// tells systemd its new role with `READY=1` from the same PID, after a last status that pets
/// the watchdog, and neither says STOPPING.
#[test]
fn a_switchover_hands_over_both_ways_and_each_process_notifies_ready_in_its_new_role() {
    use hsb_tests::cluster::{Cluster, ClusterOpts};
    let ndir = TempDir::new("notify-switchover");
    let (ppath, spath) = (ndir.path("primary.sock"), ndir.path("standby.sock"));
    let (psock, ssock) = (notify_socket(&ppath), notify_socket(&spath));
    let env = |p: &std::path::Path| {
        vec![
            ("NOTIFY_SOCKET".to_string(), p.display().to_string()),
            ("WATCHDOG_USEC".to_string(), "2000000".to_string()),
        ]
    };
    let cl = Cluster::start(ClusterOpts {
        rejoin: true,
        extra: vec![
            "failover.switchover-hold = 500ms".into(),
            "failover.switchover-min-interval = 1s".into(),
            "failover.hb-timeout = 1s".into(),
        ],
        primary_env: env(&ppath),
        standby_env: env(&spath),
        ..ClusterOpts::default()
    });
    let (ppid, spid) = (pid_of(&cl.primary), pid_of(&cl.standby));
    cl.wait_witnesses_ready();
    // The answer comes once the witnesses agreed and the primary confirmed its fence.
    let answer = cl.standby.ctl("switchover").unwrap_or_default();
    let (mut p, mut s) = (vec![], vec![]);
    let reborn = |n: &[Note], role: &str| {
        n.iter().any(|x| {
            x.text
                .starts_with(&format!("READY=1\nSTATUS={role}, epoch 2: "))
        })
    };
    let t0 = Instant::now();
    while !(reborn(&p, "standby") && reborn(&s, "primary")) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{answer}\nprimary's: {:?}\nstandby's: {:?}\n{}",
            texts(&p),
            texts(&s),
            cl.logs()
        );
        p.extend(receive(&psock, Duration::from_millis(50), |_| false));
        s.extend(receive(&ssock, Duration::from_millis(50), |_| false));
    }
    for (notes, pid, from, to, leaving) in [
        (
            &p,
            ppid,
            "primary",
            "standby",
            "stepped down; rejoining as hsb-standby",
        ),
        (
            &s,
            spid,
            "standby",
            "primary",
            "handing over to hsb-primary",
        ),
    ] {
        let t = texts(notes);
        assert!(
            t.first()
                .is_some_and(|x| x.starts_with(&format!("READY=1\nSTATUS={from}, epoch 1: "))),
            "{t:?}"
        );
        let last = notes
            .iter()
            .position(|n| n.text.contains(leaving) && n.text.ends_with("\nWATCHDOG=1\n"))
            .unwrap_or_else(|| panic!("{from}: no last status: {t:?}"));
        let ready = notes
            .iter()
            .position(|n| {
                n.text
                    .starts_with(&format!("READY=1\nSTATUS={to}, epoch 2: "))
            })
            .unwrap_or_else(|| panic!("{from}: no READY as {to}: {t:?}"));
        assert!(last < ready, "{t:?}");
        assert!(!t.iter().any(|x| x.contains("STOPPING=1")), "{t:?}");
        assert!(
            notes.iter().all(|n| n.pid == Some(pid)),
            "{from}'s process {pid}: {:?}",
            notes.iter().map(|n| n.pid).collect::<Vec<_>>()
        );
    }
}
