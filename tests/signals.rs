//! Signals on real daemons: SIGTERM, SIGINT and SIGQUIT stop each daemon cleanly (exit 0 within
//! a second, a log line naming the signal, the control socket removed); a primary stopped with
//! output held under commit never releases it; SIGHUP reopens the decision log and reloads the
//! configuration (keys that can change at run time applied, the others logged as waiting for a
//! restart, a broken file refused with the daemon running on); other signals are logged and
//! ignored; SIGPIPE is ignored.

use std::path::Path;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use hsb_tests::cluster::{Cluster, ClusterOpts};
use hsb_tests::relay::{Link, TcpRelay};
use hsb_tests::{free_addr, num, Client, Daemon, Pair, PairOpts};

/// Send `sig` and wait for the exit: its status and how long it took.
fn stop(d: &mut Daemon, sig: &str) -> (ExitStatus, Duration) {
    let t = Instant::now();
    d.signal(sig);
    let child = d.child.as_mut().expect("running");
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            return (st, t.elapsed());
        }
        if t.elapsed() > Duration::from_secs(5) {
            panic!(
                "{}: still running 5 s after {sig}\n{}",
                d.name,
                d.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `sig` stops `d` as a clean exit: status 0 within a second, a log line naming the signal,
/// the control socket file gone.
fn assert_clean_stop(d: &mut Daemon, sig: &str) {
    assert!(
        d.control.exists(),
        "{}: no control socket to begin with",
        d.name
    );
    let (st, took) = stop(d, sig);
    let log = d.log_text();
    assert!(
        st.success(),
        "{}: {sig} ended it with {st}, not exit 0\n{log}",
        d.name
    );
    assert!(
        took < Duration::from_secs(1),
        "{}: {sig} took {took:?} to stop it\n{log}",
        d.name
    );
    assert!(
        log.contains(&format!("{sig}: stopped cleanly (exit status 0)")),
        "{}: no log line for {sig}\n{log}",
        d.name
    );
    assert!(
        !d.control.exists(),
        "{}: control socket {} left behind",
        d.name,
        d.control.display()
    );
    d.child = None;
}

/// A signal mask from /proc/PID/status (`SigIgn`, `SigCgt`).
fn mask(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .expect("field");
    u64::from_str_radix(line.trim(), 16).expect("hex mask")
}

fn bit(sig: u32) -> u64 {
    1 << (sig - 1)
}

/// Wait until the log contains `what`.
fn wait_log(d: &Daemon, what: &str) {
    let t = Instant::now();
    while !d.log_text().contains(what) {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{}: no '{what}' in the log\n{}",
            d.name,
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every daemon stops cleanly on SIGTERM, SIGINT and SIGQUIT; other signals that would end a
/// process are logged and ignored; SIGPIPE is ignored (the Rust runtime's doing, confirmed).
/// On the previous binaries each signal killed its daemon (no exit status, no log line, the
/// socket file left behind).
#[test]
fn signals_stop_each_daemon_cleanly() {
    let mut cl = Cluster::start(ClusterOpts::default());
    for d in [&cl.primary, &cl.standby, &cl.witnesses[0]] {
        let pid = d.child.as_ref().expect("running").id();
        let (ign, cgt) = (mask(pid, "SigIgn"), mask(pid, "SigCgt"));
        assert!(ign & bit(13) != 0, "{}: SIGPIPE not ignored", d.name);
        // SIGHUP 1, SIGINT 2, SIGQUIT 3, SIGUSR1 10, SIGUSR2 12, SIGALRM 14, SIGTERM 15,
        // SIGXCPU 24, SIGXFSZ 25, SIGVTALRM 26, SIGPROF 27, SIGIO 29.
        for sig in [1, 2, 3, 10, 12, 14, 15, 24, 25, 26, 27, 29] {
            assert!(cgt & bit(sig) != 0, "{}: signal {sig} not caught", d.name);
        }
    }
    // A signal that asks nothing is logged and the daemon runs on.
    cl.standby.signal("USR1");
    wait_log(&cl.standby, "SIGUSR1 received and ignored");
    assert!(cl.standby.alive());
    assert!(!cl.standby.status().is_empty());

    let [w1, w2, w3] = &mut cl.witnesses[..] else {
        panic!("three witnesses")
    };
    assert_clean_stop(w1, "SIGTERM");
    assert_clean_stop(w2, "SIGINT");
    assert_clean_stop(w3, "SIGQUIT");
    assert_clean_stop(&mut cl.standby, "SIGINT");
    assert!(
        !cl.standby.log_text().contains("ACTIVAT"),
        "a stopped standby activated\n{}",
        cl.standby.log_text()
    );
    assert_clean_stop(&mut cl.primary, "SIGTERM");
    // The decision logs were flushed: whole lines, the last one complete.
    for f in ["primary.decisions", "standby.decisions"] {
        let text = std::fs::read_to_string(cl.dir.path(f)).expect("decision log");
        assert!(text.ends_with('\n'), "{f} ends mid-record");
        assert!(text.lines().count() > 1, "{f}: {text}");
    }
}

/// A primary stopped while output is held under commit (its standby's link cut: no acks)
/// releases none of it: the client's connection ends without the reply. (The previous binaries
/// did not release it either: the signal killed them outright; this keeps the clean exit from
/// ever flushing what waits.)
#[test]
fn a_primary_stopped_with_output_held_never_releases_it() {
    let repl = free_addr();
    let link = Link::default();
    let relay = TcpRelay::start(repl, link.clone());
    let mut pair = Pair::start(PairOpts {
        repl: Some(repl),
        primary_target: Some(relay.addr),
        ..PairOpts::default()
    });
    let mut c = Client::connect(pair.primary_service, Duration::from_secs(5)).expect("connect");
    assert_eq!(c.request("INCR").unwrap(), "1");
    link.cut();
    // The next reply waits for an ack that cannot come.
    c.set_timeout(Duration::from_millis(500));
    c.send_only("INCR").unwrap();
    assert!(
        c.read_line().is_err(),
        "a reply left without an ack\n{}",
        pair.logs()
    );
    let st = pair.primary.status();
    assert!(num(&st, "held_output_bytes") > 0, "{st:?}");
    c.set_timeout(Duration::from_secs(3));
    assert_clean_stop(&mut pair.primary, "SIGTERM");
    match c.read_line() {
        Ok(l) => panic!(
            "the held reply '{l}' left at the primary's exit\n{}",
            pair.logs()
        ),
        Err(e) => assert!(
            e.kind() != std::io::ErrorKind::WouldBlock && e.kind() != std::io::ErrorKind::TimedOut,
            "the connection should end with the primary, got {e}"
        ),
    }
    let log = pair.primary.log_text();
    assert!(
        log.contains("SIGTERM: stopping: no more checkpoints, and no more output released (")
            && log.contains(" bytes held under commit are dropped, never sent"),
        "{log}"
    );
    // The standby, whose link healed, never saw a reply-releasing ack either: nothing to check
    // there; it stops cleanly too.
    link.heal();
    assert_clean_stop(&mut pair.standby, "SIGTERM");
}

fn replay(file: &Path) -> String {
    let out = std::process::Command::new(hsb_tests::bin("hsb-standby"))
        .arg("replay")
        .arg(file)
        .output()
        .expect("replay");
    assert!(
        out.status.success(),
        "replay {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Rewrite one `key = value` line of a configuration file (or add it).
fn set_key(file: &Path, key: &str, value: &str) {
    let text = std::fs::read_to_string(file).expect("config");
    let mut found = false;
    let mut out: Vec<String> = text
        .lines()
        .map(|l| match l.split_once('=') {
            Some((k, _)) if k.trim() == key => {
                found = true;
                format!("{key} = {value}")
            }
            _ => l.to_string(),
        })
        .collect();
    if !found {
        out.push(format!("{key} = {value}"));
    }
    std::fs::write(file, out.join("\n") + "\n").expect("write config");
}

/// SIGHUP, logrotate's way: the decision log renamed away, SIGHUP, and new records go to a new
/// file at the configured path (starting with a continued config record; each file and both
/// together replay). The configuration is reloaded: keys that can change at run time are
/// applied, any other changed key is logged as waiting for a restart, and a broken file is
/// refused with a log line while the daemon runs on. The previous binaries died of SIGHUP.
#[test]
fn sighup_reopens_the_decision_log_and_reloads_the_configuration() {
    let cl = Cluster::start(ClusterOpts::default());
    for (d, file) in [
        (&cl.standby, "standby.decisions"),
        (&cl.primary, "primary.decisions"),
    ] {
        let path = cl.dir.path(file);
        let old = cl.dir.path(&format!("{file}.rotated"));
        std::fs::rename(&path, &old).expect("rename");
        d.signal("HUP");
        wait_log(d, "SIGHUP: decision log reopened at");
        // New records arrive in the new file (heartbeats at the standby, acks at the primary).
        let t = Instant::now();
        loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.lines().any(|l| l.contains("\"k\":\"input\"")) {
                let first = text.lines().next().expect("a record");
                assert!(
                    first.contains("\"k\":\"config\"") && first.contains("\"continued\":true"),
                    "{first}"
                );
                assert!(first.contains("\"wall\":\"20"), "{first}");
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "{}: no new records in {}\n{}",
                d.name,
                path.display(),
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!d.status().is_empty(), "{}", d.log_text());
        // Each file replays alone, and the two together as one log.
        replay(&old);
        replay(&path);
        let both = cl.dir.path(&format!("{file}.both"));
        let mut text = std::fs::read_to_string(&old).expect("old");
        text.push_str(&std::fs::read_to_string(&path).expect("new"));
        std::fs::write(&both, text).expect("write");
        replay(&both);
    }

    // A reloadable key is applied, a restart-only key is logged and kept.
    let sconf = cl.dir.path("standby.conf");
    set_key(&sconf, "stats_interval", "2s");
    set_key(&sconf, "max_clients", "100");
    cl.standby.signal("HUP");
    wait_log(&cl.standby, "SIGHUP: stats_interval 1s -> 2s");
    wait_log(
        &cl.standby,
        "SIGHUP: key max_clients changed: restart to apply",
    );
    wait_log(
        &cl.standby,
        "SIGHUP: configuration reloaded; 1 changed key(s)",
    );
    let wconf = cl.dir.path("w1.conf");
    set_key(&wconf, "report_interval", "40ms");
    set_key(&wconf, "probe_timeout", "60ms");
    cl.witnesses[0].signal("HUP");
    wait_log(&cl.witnesses[0], "SIGHUP: report_interval 50ms -> 40ms");
    wait_log(
        &cl.witnesses[0],
        "SIGHUP: key probe_timeout changed: restart to apply",
    );

    // A broken file: logged, nothing changes, the daemon runs on.
    let pconf = cl.dir.path("primary.conf");
    let mut text = std::fs::read_to_string(&pconf).expect("config");
    text.push_str("this is not a key\n");
    std::fs::write(&pconf, text).expect("write");
    cl.primary.signal("HUP");
    wait_log(&cl.primary, "expected 'key = value'");
    wait_log(
        &cl.primary,
        "the configuration is not reloaded: running on unchanged",
    );
    std::fs::write(&sconf, "stats_interval = fast\n").expect("write");
    cl.standby.signal("HUP");
    wait_log(&cl.standby, "key 'stats_interval': expected a duration");
    std::thread::sleep(Duration::from_millis(300));
    for d in [&cl.primary, &cl.standby, &cl.witnesses[0]] {
        let st = d.status();
        assert!(
            !st.is_empty(),
            "{} stopped answering\n{}",
            d.name,
            d.log_text()
        );
    }
    assert_eq!(
        cl.primary.status().get("authority").map(String::as_str),
        Some("protected"),
        "{}",
        cl.logs()
    );
}
