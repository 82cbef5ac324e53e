//! Configuration that cannot work is refused by `check` and by `run` alike, before a daemon acts,
//! with the file, the line, the key, the value and what was expected (DESIGN.md §6).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hsb_tests::{bin, TempDir};

/// Run `daemon command -c conf`; a daemon still running after a few seconds accepted the
/// configuration (killed, reported as such).
fn refused(daemon: &str, command: &str, conf: &Path) -> (Option<i32>, String) {
    let mut child = Command::new(bin(daemon))
        .args([command, "-c"])
        .arg(conf)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let out = child.wait_with_output().expect("output");
            return (
                status.code(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            return (
                None,
                format!(
                    "{daemon} {command} kept running: it accepted {}",
                    conf.display()
                ),
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Both `check` and `run` exit with status 1 and say `want`.
fn assert_refused(daemon: &str, conf: &Path, want: &str) {
    for command in ["check", "run"] {
        let (code, err) = refused(daemon, command, conf);
        assert_eq!(code, Some(1), "{daemon} {command}: {err}");
        assert!(
            err.contains(want),
            "{daemon} {command}:\n got  {err}\n want {want}"
        );
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
}

#[test]
fn check_and_run_refuse_configurations_that_cannot_work() {
    let dir = TempDir::new("conf-rules");
    let key = dir.path("cluster.key");
    hsb_common::key::ClusterKey::generate(&key).expect("key");
    let peers = "1=127.0.0.1:7401,2=127.0.0.1:7402,3=127.0.0.1:7403";
    let standby = format!(
        "cluster_key = {}\nlisten = 127.0.0.1:1\ncontrol = {}\nfailover = true\nheartbeat_listen = 127.0.0.1:2\nwitness_peers = {peers}\n",
        key.display(),
        dir.path("s.sock").display()
    );
    let witness = format!(
        "id = 1\ncluster_key = {}\nlisten = 127.0.0.1:3\nprimary = 127.0.0.1:4\nstandby = 127.0.0.1:5\nprobe = tcp 127.0.0.1:6\nstate_file = {}\ncontrol = {}\n",
        key.display(),
        dir.path("w.state").display(),
        dir.path("w.sock").display()
    );
    let primary = format!(
        "cluster_key = {}\nstandby = 127.0.0.1:1\ncontrol = {}\n",
        key.display(),
        dir.path("p.sock").display()
    );
    let conf = dir.path("d.conf");
    // The bases are good: what follows fails for the line added.
    for (daemon, base) in [
        ("hsb-standby", &standby),
        ("hsb-witness", &witness),
        ("hsb-primary", &primary),
    ] {
        std::fs::write(&conf, base).expect("write");
        let out = Command::new(bin(daemon))
            .args(["check", "-c"])
            .arg(&conf)
            .output()
            .expect("check");
        assert!(
            out.status.success(),
            "{daemon}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A renamed key is read under its new name, and `check` says so (it once said nothing:
    // the warning went to a log `check` does not start).
    std::fs::write(&conf, format!("{primary}epoch_period = 40ms\n")).expect("write");
    let out = Command::new(bin("hsb-primary"))
        .args(["check", "-c"])
        .arg(&conf)
        .output()
        .expect("check");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("configuration ok"),
        "{out:?}"
    );
    assert!(
        err.contains("configuration key 'epoch_period' is now 'checkpoint_period'"),
        "{err}"
    );
    let standby_lines = standby.lines().count() + 1;
    let witness_lines = witness.lines().count() + 1;
    let primary_lines = primary.lines().count() + 1;
    let key_dir = dir.path("keydir");
    std::fs::create_dir(&key_dir).expect("mkdir");
    for (daemon, text, want) in [
        (
            "hsb-standby",
            format!("{standby}failover.witnesses = 1,2\n"),
            format!("d.conf:{standby_lines}: key 'failover.witnesses': expected an odd number of witnesses, at least 3 (got 2)"),
        ),
        (
            "hsb-standby",
            standby.replace(peers, "1=127.0.0.1:7401,1=127.0.0.1:7402,2=127.0.0.1:7403,3=127.0.0.1:7404"),
            "d.conf:6: key 'witness_peers': witness 1 is given twice".to_string(),
        ),
        (
            "hsb-standby",
            standby.replace(peers, "1=127.0.0.1:7401,2=127.0.0.1:7402"),
            "d.conf:6: key 'witness_peers': no address for witness 3".to_string(),
        ),
        (
            "hsb-standby",
            format!("{standby}failover.hb-interval = 0s\n"),
            format!("d.conf:{standby_lines}: key 'failover.hb-interval': expected at least 1ms (with 0, heartbeats would be sent in a busy loop), got '0s'"),
        ),
        (
            "hsb-standby",
            format!("{standby}failover.hb-interval = 100ms\nfailover.hb-timeout = 100ms\n"),
            format!("d.conf:{}: key 'failover.hb-timeout': expected at least twice hb-interval (100ms)", standby_lines + 1),
        ),
        (
            "hsb-standby",
            standby.replace(&key.display().to_string(), &key_dir.display().to_string()),
            format!("d.conf:1: key 'cluster_key': cluster key {}: is a directory, expected a file of 64 hex digits", key_dir.display()),
        ),
        (
            "hsb-standby",
            format!("{standby}{}\n", "#".repeat(2 << 20)),
            "d.conf: larger than 1048576 bytes (1 MiB)".to_string(),
        ),
        (
            "hsb-witness",
            format!("{witness}probe_interval = 0s\n"),
            format!("d.conf:{witness_lines}: key 'probe_interval': expected from 1ms to 3600s, got '0'"),
        ),
        (
            "hsb-witness",
            format!("{witness}failover.witnesses = 1,2,3,4\n"),
            format!("d.conf:{witness_lines}: key 'failover.witnesses': expected an odd number of witnesses, at least 3 (got 4)"),
        ),
        (
            "hsb-witness",
            format!("{witness}report_interval = 300ms\n"),
            format!("d.conf:{witness_lines}: key 'report_interval': expected at most half of failover.report-fresh (300ms)"),
        ),
        (
            "hsb-primary",
            format!("{primary}reconnect_interval = 0s\n"),
            format!("d.conf:{primary_lines}: key 'reconnect_interval': expected from 1ms to 5s"),
        ),
    ] {
        std::fs::write(&conf, &text).expect("write");
        assert_refused(daemon, &conf, &want);
    }
}
