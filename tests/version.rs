//! `--version` says what an operator needs to know before an upgrade (release, commit, wire
//! version), and a daemon that meets another wire version says so in words, not as a bare
//! frame error (DEPLOY.md, "Upgrades": daemons interoperate only with the same wire version).

use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use hsb_common::frame::{self, HEADER_LEN};
use hsb_tests::{bin, free_addr, Daemon, TempDir};

#[test]
fn version_names_release_commit_and_wire_version() {
    for daemon in ["hsb-primary", "hsb-standby", "hsb-witness"] {
        let out = Command::new(bin(daemon))
            .arg("--version")
            .output()
            .expect("run");
        assert!(out.status.success(), "{daemon} --version failed");
        let text = String::from_utf8(out.stdout).expect("utf-8");
        let want = format!(
            "{daemon} {} (commit {}, wire version {})",
            env!("CARGO_PKG_VERSION"),
            hsb_common::cli::COMMIT,
            frame::VERSION
        );
        assert_eq!(
            text.trim(),
            want,
            "(a different commit: the daemons were built from another commit than the tests; `cargo build --workspace --bins`)"
        );
        assert_ne!(
            hsb_common::cli::COMMIT,
            "unknown",
            "built from a git checkout, the commit must be known"
        );
    }
}

/// A frame header of wire version `v` (an Ack with an empty body; the version byte is the
/// first thing checked after the magic).
fn header_of_version(v: u8) -> Vec<u8> {
    let mut h = vec![0u8; HEADER_LEN];
    h[0..2].copy_from_slice(&frame::MAGIC);
    h[2] = v;
    h[3] = 6;
    h
}

fn wait_for_log(d: &Daemon, what: &str) -> String {
    let t = Instant::now();
    loop {
        let log = d.log_text();
        if log.contains(what) {
            return log;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{}: no '{what}' in the log:\n{log}",
            d.name
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_peer_of_another_wire_version_is_named_as_such() {
    let dir = TempDir::new("version");
    let key = dir.path("cluster.key");
    hsb_common::key::ClusterKey::generate(&key).expect("key");
    let (repl, svc, wit, wlisten) = (free_addr(), free_addr(), free_addr(), free_addr());
    let conf = dir.path("standby.conf");
    std::fs::write(
        &conf,
        format!(
            "state_file = {}\ncluster_key = {}\nlisten = {repl}\ncontrol = {}\nmodel.memory = 1MiB\nmodel.service = {svc}\nwitness_listen = {wit}\n",
            dir.path("standby.state").display(),
            key.display(),
            dir.path("standby.sock").display(),
        ),
    )
    .expect("write");
    let standby = Daemon::start(
        "hsb-standby",
        &conf,
        &dir.path("standby.sock"),
        &dir.path("standby.log"),
        &[],
    );
    standby.wait_for("control socket", Duration::from_secs(20), |_| true);
    let next = frame::VERSION.wrapping_add(1);
    let mut c = TcpStream::connect(repl).expect("connect");
    c.write_all(&header_of_version(next)).expect("send");
    let log = wait_for_log(&standby, "bad_version");
    let said = format!("the peer speaks wire version {next}");
    assert!(
        log.contains(&said) && log.contains("same wire version"),
        "{log}"
    );
    assert_eq!(
        standby
            .status()
            .get("frame_errors_bad_version")
            .map(String::as_str),
        Some("1")
    );

    // A witness meets a datagram of another version the same way.
    let wconf = dir.path("witness.conf");
    std::fs::write(
        &wconf,
        format!(
            "id = 1\ncluster_key = {}\nlisten = {wlisten}\nprimary = {}\nstandby = {wit}\nprobe = tcp {svc}\nstate_file = {}\ncontrol = {}\n",
            key.display(),
            free_addr(),
            dir.path("w1.state").display(),
            dir.path("w1.sock").display(),
        ),
    )
    .expect("write");
    let witness = Daemon::start(
        "hsb-witness",
        &wconf,
        &dir.path("w1.sock"),
        &dir.path("w1.log"),
        &[],
    );
    witness.wait_for("control socket", Duration::from_secs(20), |_| true);
    let u = UdpSocket::bind("127.0.0.1:0").expect("bind");
    u.send_to(&header_of_version(next), wlisten).expect("send");
    let log = wait_for_log(&witness, "bad_version");
    assert!(log.contains(&said), "{log}");
}
