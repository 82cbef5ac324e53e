//! Replication end to end with real processes on loopback (model domain backend, the
//! hypervisor test double): output commit, kill -9 in the middle of a checkpoint, hostile frames.

use std::time::{Duration, Instant};

use hsb_tests::proxy::{Fault, FaultProxy};
use hsb_tests::{num, Client, Pair, PairOpts};

/// A client only ever sees acknowledged state: when a reply with counter v arrives, the standby
/// has already applied a checkpoint whose counter is at least v.
#[test]
fn client_sees_only_acknowledged_state() {
    let pair = Pair::start(PairOpts::default());
    let mut c = Client::connect(pair.primary_service, Duration::from_secs(5)).expect("connect");
    for _ in 0..20 {
        let v: u64 = c.request("INCR").expect("reply").parse().expect("number");
        let st = pair.standby.status();
        assert!(
            num(&st, "counter") >= v,
            "reply {v} released before the standby had it: {st:?}"
        );
    }
    // PUT/GET replies are held too, and state lives in replicated pages.
    assert_eq!(c.request("PUT colour blue").unwrap(), "OK");
    assert_eq!(c.request("GET colour").unwrap(), "blue");
}

/// Without a standby, output is held (not lost, not released); when the standby comes back it
/// gets a fresh full synchronisation and the held reply leaves after its ack.
#[test]
fn output_is_held_while_the_standby_is_away() {
    let mut pair = Pair::start(PairOpts::default());
    let mut c = Client::connect(pair.primary_service, Duration::from_secs(5)).expect("connect");
    assert_eq!(c.request("INCR").unwrap(), "1");
    pair.standby.kill9();
    pair.primary
        .wait_for("standby lost", Duration::from_secs(5), |s| {
            s["state"] != "protected"
        });
    c.set_timeout(Duration::from_millis(500));
    c.send_only("INCR").unwrap();
    assert!(
        c.read_line().is_err(),
        "a reply left without any standby ack"
    );
    // A new standby on the same address: full sync, then the held reply is released.
    let conf = pair.dir.path("standby.conf");
    pair.standby = hsb_tests::Daemon::start(
        "hsb-standby",
        &conf,
        &pair.dir.path("standby.sock"),
        &pair.dir.path("standby2.log"),
        &[],
    );
    c.set_timeout(Duration::from_secs(20));
    assert_eq!(
        c.read_line().expect("held reply released after resync"),
        "2"
    );
    let st = pair.standby.status();
    assert_eq!(num(&st, "full_syncs"), 1, "{st:?}");
    assert!(num(&st, "counter") >= 2);
}

/// kill -9 of the primary while a checkpoint is being staged, then activate: the counter
/// continues from the last acknowledged value; nothing acknowledged lost, nothing applied twice.
#[test]
fn kill9_primary_mid_checkpoint_then_activate() {
    // A heavy workload: every checkpoint carries thousands of pages, so the standby spends most
    // of its time staging.
    let mut pair = Pair::start(PairOpts {
        memory: "64MiB",
        dirty_rate: 400_000,
        ..PairOpts::default()
    });
    let mut c = Client::connect(pair.primary_service, Duration::from_secs(10)).expect("connect");
    let mut last_acked = 0u64;
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(800) {
        let v: u64 = c.request("INCR").expect("reply").parse().expect("number");
        assert_eq!(v, last_acked + 1, "acknowledged values must be consecutive");
        last_acked = v;
    }
    // One more increment in flight (not acknowledged), then kill the primary mid-checkpoint.
    c.send_only("INCR").unwrap();
    let t = Instant::now();
    let mut mid = false;
    while t.elapsed() < Duration::from_secs(5) {
        if pair.standby.status().get("staging").map(String::as_str) == Some("in-progress") {
            mid = true;
            break;
        }
    }
    pair.primary.kill9();
    eprintln!("primary killed (standby staging a checkpoint: {mid}); last acknowledged counter {last_acked}");
    let out = pair.standby.ctl("activate").expect("activate");
    assert!(out.starts_with("activated"), "{out}\n{}", pair.logs());
    let mut s =
        Client::connect(pair.standby_service, Duration::from_secs(5)).expect("standby serves");
    let g: u64 = s.request("GET").unwrap().parse().unwrap();
    assert!(
        g >= last_acked,
        "acknowledged increments lost: replica {g} < acked {last_acked}"
    );
    assert!(
        g <= last_acked + 1,
        "increments applied twice: replica {g} > acked {last_acked} + 1 in flight"
    );
    let n: u64 = s.request("INCR").unwrap().parse().unwrap();
    assert_eq!(n, g + 1);
    assert!(pair.standby.alive());
}

/// Truncated, corrupted, forged, oversized, replayed and unknown frames between primary and
/// standby are detected and counted; the replica is never touched by them; both daemons keep
/// running; replication resumes with a fresh full sync each time.
#[test]
fn hostile_frames_are_detected_and_survived() {
    let standby_repl = hsb_tests::free_addr();
    // The proxy must know the standby's address before the pair starts: start a pair whose
    // primary targets the proxy, and the proxy targets the standby address chosen below.
    let proxy = FaultProxy::start(standby_repl);
    let mut pair = Pair::start(PairOpts {
        dirty_rate: 5000,
        repl: Some(standby_repl),
        primary_target: Some(proxy.addr),
        ..PairOpts::default()
    });
    let mut c = Client::connect(pair.primary_service, Duration::from_secs(10)).expect("connect");
    let cases = [
        (Fault::Corrupt, "frame_errors_bad_crc"),
        (Fault::Forge, "frame_errors_bad_mac"),
        (Fault::Truncate, "frame_errors_truncated"),
        (Fault::Oversized, "frame_errors_oversized"),
        (Fault::Replay, "frame_errors_replay"),
        (Fault::UnknownKind, "frame_errors_unknown_kind"),
    ];
    let mut acked = 0u64;
    for (i, (fault, counter)) in cases.iter().enumerate() {
        acked = c.request("INCR").unwrap().parse().unwrap();
        let before = pair.standby.status();
        let applied_before = num(&before, "checkpoints_applied");
        proxy.inject(*fault);
        // The fault is detected and the connection dropped; the replica keeps its checkpoint.
        let after = pair
            .standby
            .wait_for(counter, Duration::from_secs(10), |s| {
                num(s, counter) >= 1
                    || *fault == Fault::Truncate && num(s, "sessions") > num(&before, "sessions")
            });
        assert!(
            num(&after, "counter") >= acked,
            "replica lost acknowledged state after {fault:?}"
        );
        // Replication resumes: a new session and a fresh full sync.
        pair.standby
            .wait_for("resync", Duration::from_secs(20), |s| {
                num(s, "full_syncs") >= i as u64 + 2
                    && num(s, "checkpoints_applied") > applied_before + 1
            });
        assert_eq!(proxy.injected(), i + 1);
        assert!(
            pair.primary.alive() && pair.standby.alive(),
            "a daemon died on {fault:?}\n{}",
            pair.logs()
        );
    }
    let st = pair.standby.status();
    for (fault, counter) in &cases {
        if *fault != Fault::Truncate {
            assert!(num(&st, counter) >= 1, "{counter} not counted: {st:?}");
        }
    }
    // The replica is intact: activation serves exactly the acknowledged state (the client is
    // idle, so nothing is in flight).
    let ack2: u64 = c.request("INCR").unwrap().parse().unwrap();
    assert_eq!(ack2, acked + 1);
    pair.primary.kill9();
    assert!(pair
        .standby
        .ctl("activate")
        .unwrap()
        .starts_with("activated"));
    let mut s = Client::connect(pair.standby_service, Duration::from_secs(5)).unwrap();
    assert_eq!(s.request("GET").unwrap(), ack2.to_string());
}

/// Configuration and key errors are reported clearly before the daemon acts.
#[test]
fn bad_configuration_and_key_are_reported() {
    let dir = hsb_tests::TempDir::new("badconf");
    let key = dir.path("k");
    hsb_common::key::ClusterKey::generate(&key).unwrap();
    let conf = dir.path("p.conf");
    std::fs::write(
        &conf,
        format!(
            "cluster_key = {}\nstandby = 127.0.0.1:1\ncheckpoint_period = fast\n",
            key.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(hsb_tests::bin("hsb-primary"))
        .args(["check", "-c"])
        .arg(&conf)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("p.conf:3: key 'checkpoint_period': expected a duration"),
        "{err}"
    );
    // A key file readable by others is refused.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(
        &conf,
        format!("cluster_key = {}\nstandby = 127.0.0.1:1\n", key.display()),
    )
    .unwrap();
    let out = std::process::Command::new(hsb_tests::bin("hsb-primary"))
        .args(["run", "-c"])
        .arg(&conf)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
    // Unknown command and option.
    let out = std::process::Command::new(hsb_tests::bin("hsb-standby"))
        .arg("--frobnicate")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown option '--frobnicate'"));
}

/// A standby refuses a primary whose domain size differs, with the reason in both logs.
#[test]
fn geometry_mismatch_is_refused() {
    let pair = Pair::start(PairOpts::default());
    let dir = &pair.dir;
    let conf = dir.path("p2.conf");
    std::fs::write(
        &conf,
        format!(
            "state_file = {}\ncluster_key = {}\nstandby = {}\ncontrol = {}\nmodel.memory = 16MiB\nmodel.service = {}\nreconnect_interval = 1s\n",
            dir.path("p2.state").display(),
            dir.path("cluster.key").display(),
            pair.repl,
            dir.path("p2.sock").display(),
            hsb_tests::free_addr()
        ),
    )
    .unwrap();
    let p2 = hsb_tests::Daemon::start(
        "hsb-primary",
        &conf,
        &dir.path("p2.sock"),
        &dir.path("p2.log"),
        &[],
    );
    let t = Instant::now();
    while !p2.log_text().contains("refused replication") && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        p2.log_text().contains("domain size mismatch"),
        "{}",
        p2.log_text()
    );
    // A refusal ends the session as such, not as a bad frame.
    let log = p2.log_text();
    assert!(log.contains("it refused replication"), "{log}");
    assert!(!log.contains("bad frame"), "{log}");
    // The first primary's session is unaffected.
    let st = pair.primary.status();
    assert_eq!(st["state"], "protected", "{st:?}");
}

/// Activation runs the `on_activate` hook (e.g. to claim the service address) with the epoch,
/// checkpoint and node in its environment.
#[test]
fn activation_runs_the_on_activate_hook() {
    use std::os::unix::fs::PermissionsExt;
    let scratch = hsb_tests::TempDir::new("hook");
    let out = scratch.path("hook.out");
    let script = scratch.path("claim-address");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$HSB_NODE $HSB_EPOCH $HSB_CHECKPOINT\" > {}\n",
            out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut pair = Pair::start(PairOpts {
        extra_standby: vec![format!("on_activate = {}", script.display())],
        ..PairOpts::default()
    });
    pair.primary.kill9();
    let answer = pair.standby.ctl("activate").unwrap();
    assert!(answer.starts_with("activated"), "{answer}");
    let applied = num(&pair.standby.status(), "applied_checkpoint");
    let t = Instant::now();
    // The file exists from the shell's redirection on, before its line is written: wait for
    // the line.
    let written = || std::fs::read_to_string(&out).is_ok_and(|t| t.ends_with('\n'));
    while !written() && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = std::fs::read_to_string(&out).expect("the hook ran");
    assert_eq!(text.trim(), format!("standby 2 {applied}"));
    let t = Instant::now();
    while !pair.standby.log_text().contains("on_activate: done")
        && t.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        pair.standby.log_text().contains("on_activate: done"),
        "{}",
        pair.standby.log_text()
    );
}

/// A full synchronisation is copied while the guest runs (pre-copy); only what the guest wrote
/// meanwhile is copied again while it is suspended, so the replica is still exact.
#[test]
fn full_sync_is_precopied_and_exact() {
    let pair = Pair::start(PairOpts::default());
    let mut c = Client::connect(pair.primary_service, Duration::from_secs(5)).expect("connect");
    for _ in 0..5 {
        c.request("INCR").expect("reply");
    }
    let log = pair.primary.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("full synchronisation,") && l.contains("pause"))
        .unwrap_or_else(|| panic!("no full synchronisation in the primary's log:\n{log}"));
    assert!(line.contains("pre-copied"), "{line}");
    eprintln!("{line}");
    let st = pair.standby.status();
    assert!(num(&st, "counter") >= 5, "{st:?}");
}

/// `hsb-X status` for programs: `--json` prints one JSON object of strings, keys in the order
/// of the text answer, and the exit status is the daemon's health (0 healthy, 1 degraded, 3 no
/// daemon on the control socket, 4 a usage error).
#[test]
fn status_json_and_health_exit_codes() {
    use std::path::Path;
    let mut pair = Pair::start(PairOpts::default());
    pair.standby
        .wait_for("replicating", Duration::from_secs(10), |s| {
            s.get("state").map(String::as_str) == Some("replicating")
        });
    let status = |daemon: &str, control: &Path, extra: &[&str]| {
        let out = std::process::Command::new(hsb_tests::bin(daemon))
            .arg("status")
            .args(extra)
            .arg("--control")
            .arg(control)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, json, err) = status("hsb-standby", &pair.standby.control, &["--json"]);
    assert_eq!(code, Some(0), "{json}{err}\n{}", pair.logs());
    // A tiny check of the shape, independent of the reader below.
    assert!(
        json.starts_with("{\"role\":\"standby\",\"node\":\"standby\",") && json.ends_with("}\n"),
        "{json}"
    );
    assert_eq!(json.lines().count(), 1, "{json}");
    let object = hsb_testkit::fuzzing::json_strings(&json).expect("status --json is JSON");
    let text = pair.standby.ctl("status").unwrap();
    let keys: Vec<&str> = text.lines().filter_map(|l| l.split(' ').next()).collect();
    let json_keys: Vec<&str> = object.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(json_keys, keys);
    let get = |k: &str| object.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("state"), Some("replicating"));
    assert_eq!(get("listen"), Some(pair.repl.to_string().as_str()));
    assert!(get("applied_checkpoint").is_some_and(|v| v.parse::<u64>().is_ok()));
    // The primary, protected: 0, in text.
    let (code, text, err) = status("hsb-primary", &pair.primary.control, &[]);
    assert_eq!(code, Some(0), "{text}{err}");
    assert!(text.contains("\nstate protected\n"), "{text}");
    // Nobody on the control socket: 3.
    let (code, _, err) = status("hsb-standby", &pair.dir.path("nothing.sock"), &["--json"]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("cannot reach"), "{err}");
    // The primary gone: the standby waits for one, degraded: 1.
    pair.primary.kill9();
    pair.standby
        .wait_for("primary gone", Duration::from_secs(10), |s| {
            s.get("state").map(String::as_str) == Some("waiting-for-primary")
        });
    let (code, _, err) = status("hsb-standby", &pair.standby.control, &[]);
    assert_eq!(code, Some(1), "{err}");
    // The standby gone (its socket file left behind): 3.
    pair.standby.kill9();
    let (code, _, err) = status("hsb-standby", &pair.standby.control, &[]);
    assert_eq!(code, Some(3), "{err}");
    // A usage error of `status` is not "down" (2): 4. Other commands keep 2.
    let (code, _, err) = status("hsb-standby", &pair.standby.control, &["--bogus"]);
    assert_eq!(code, Some(4), "{err}");
    let out = std::process::Command::new(hsb_tests::bin("hsb-standby"))
        .args(["activate", "--bogus"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// Issue 10 item 5: a standby started under umask 000 had a socket anyone could use, and user
/// `nobody` activated it. The socket is 0600 whatever the umask, and with its mode loosened by
/// hand the peer-credential check still keeps other users out. (The other-user part needs root.)
#[test]
fn control_socket_keeps_other_users_out_whatever_the_umask() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::os::unix::process::CommandExt;
    let pair = Pair::start(PairOpts {
        standby_umask: Some(0),
        ..PairOpts::default()
    });
    let sock = pair.standby.control.clone();
    let mode = std::fs::metadata(&sock).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o600, "control socket mode {mode:o} under umask 000");
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if !root {
        eprintln!("not root: the part run as user nobody is skipped");
        return;
    }
    let nobody = |cmd: &str| {
        std::process::Command::new(hsb_tests::bin("hsb-standby"))
            .args([cmd, "--control"])
            .arg(&sock)
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap()
    };
    let out = nobody("activate");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ermission denied"),
        "{out:?}"
    );
    assert_eq!(nobody("status").status.code(), Some(3));
    // Loosened by hand: the socket lets nobody connect, the daemon still refuses.
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = nobody("activate");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("error: permission denied: uid 65534 may not use this control socket"),
        "{out:?}"
    );
    let out = nobody("status");
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(
        pair.standby.status().get("state").map(String::as_str),
        Some("replicating"),
        "{}",
        pair.logs()
    );
    assert!(pair
        .standby
        .log_text()
        .contains("control: refused uid 65534"));
}

/// Checkpoints encoded (zero pages, deltas against the standby's pages, LZ4) replicate exactly
/// like plain ones: the counter follows, no frame is refused, no resynchronisation, and far
/// fewer bytes are sealed than the pages they carry.
#[test]
fn encoded_checkpoints_replicate_in_fewer_bytes() {
    let pair = Pair::start(PairOpts {
        dirty_rate: 10_000,
        extra_primary: vec![
            "encode = always".into(),
            "model.write_pattern = lines:2".into(),
        ],
        ..PairOpts::default()
    });
    let mut c = Client::connect(pair.primary_service, Duration::from_secs(5)).expect("connect");
    for _ in 0..40 {
        let v: u64 = c.request("INCR").expect("reply").parse().expect("number");
        let s = pair.standby.status();
        assert!(
            num(&s, "counter") >= v,
            "reply {v}: {s:?}\n{}",
            pair.standby.log_text()
        );
    }
    let p = pair.primary.status();
    let s = pair.standby.status();
    assert_eq!(p["encode"], "always", "{p:?}");
    assert!(num(&p, "checkpoints_encoded") >= 40, "{p:?}");
    assert!(
        num(&p, "bytes_sealed") * 4 < num(&p, "page_bytes_sealed"),
        "{p:?}"
    );
    assert_eq!(num(&s, "full_syncs"), 1, "{s:?}");
    for (k, v) in &s {
        if k.starts_with("frame_errors") {
            assert_eq!(v, "0", "{k}: {s:?}");
        }
    }
}
