//! Metrics (`metrics_listen`): each daemon serves the Prometheus text format from its own loop.
//! A scrape of a real daemon is read by real parsers of the format (the Python client library's
//! and `promtool check metrics`), and what it says is checked against what the daemon sees.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::{Duration, Instant};

use hsb_tests::prom::{self, scrape_until, Sample};
use hsb_tests::{free_addr, Daemon, TempDir};

/// A TCP service that accepts and closes every connection (a `tcp` probe's answer).
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

fn witness_conf(dir: &TempDir, body: &str) -> std::path::PathBuf {
    let p = dir.path("w.conf");
    std::fs::write(&p, body).expect("write");
    p
}

fn key(dir: &TempDir, name: &str) -> String {
    let p = dir.path(name);
    hsb_common::key::ClusterKey::generate(&p).expect("key");
    p.display().to_string()
}

#[test]
fn a_witness_serving_two_guests_says_what_it_sees_per_guest() {
    let test = "a_witness_serving_two_guests_says_what_it_sees_per_guest";
    let dir = TempDir::new("metrics-witness");
    let (m, up_svc, down_svc) = (free_addr(), service(), free_addr());
    let conf = witness_conf(
        &dir,
        &format!(
            "id = 1\nnode = client-1\ncontrol = {}\nmetrics_listen = {m}\nstate_file = {}\n\n[guest up]\ncluster_key = {}\nlisten = {}\nprimary = {}\nstandby = {}\nprobe = tcp {up_svc}\n\n[guest down]\ncluster_key = {}\nlisten = {}\nprimary = {}\nstandby = {}\nprobe = tcp {down_svc}\n",
            dir.path("w.sock").display(),
            dir.path("w-{guest}.state").display(),
            key(&dir, "up.key"),
            free_addr(),
            free_addr(),
            free_addr(),
            key(&dir, "down.key"),
            free_addr(),
            free_addr(),
            free_addr(),
        ),
    );
    let w = Daemon::start(
        "hsb-witness",
        &conf,
        &dir.path("w.sock"),
        &dir.path("w.log"),
        &[],
    );
    let text = scrape_until(m, &w, "guest up's application up, pings timed out", |t| {
        t.contains("hsb_witness_application{guest=\"up\",state=\"up\"} 1\n")
            && ["up", "down"].iter().all(|g| {
                !t.contains(&format!(
                    "hsb_witness_probes_total{{guest=\"{g}\",target=\"primary-daemon\",outcome=\"timeout\"}} 0\n"
                ))
            })
    });
    let Some(s) = prom::parse_checked(test, &text) else {
        return;
    };
    let v = |name: &str, with: &[(&str, &str)]| prom::value(&s, name, with);
    assert_eq!(v("hsb_witness_guests", &[]), 2.0);
    let info = prom::find(&s, "hsb_build_info", &[("daemon", "hsb-witness")]);
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].label("version"), Some(env!("CARGO_PKG_VERSION")));
    assert_eq!(info[0].kind, "gauge");
    for g in ["up", "down"] {
        // Exactly one state at a time.
        let states: f64 = prom::find(&s, "hsb_witness_application", &[("guest", g)])
            .iter()
            .map(|x| x.value)
            .sum();
        assert_eq!(states, 1.0, "{g}");
        assert_eq!(v("hsb_witness_epoch_seen", &[("guest", g)]), 1.0);
        // No daemon answers: every ping times out; nothing is granted.
        assert_eq!(
            v(
                "hsb_witness_daemon_up",
                &[("guest", g), ("daemon", "primary")]
            ),
            0.0
        );
        assert!(
            v(
                "hsb_witness_probes_total",
                &[
                    ("guest", g),
                    ("target", "primary-daemon"),
                    ("outcome", "timeout")
                ]
            ) > 0.0
        );
        assert_eq!(
            v(
                "hsb_witness_votes_total",
                &[("guest", g), ("answer", "granted")]
            ),
            0.0
        );
        assert_eq!(
            prom::find(
                &s,
                "hsb_witness_votes_total",
                &[("guest", g), ("answer", "refused")]
            )
            .len(),
            9,
            "one series per refusal reason"
        );
        // Every probe of the application has its latency in the histogram.
        let runs: f64 = prom::find(
            &s,
            "hsb_witness_probes_total",
            &[("guest", g), ("target", "application")],
        )
        .iter()
        .map(|x| x.value)
        .sum();
        let count = v(
            "hsb_witness_probe_duration_seconds_count",
            &[("guest", g), ("target", "application")],
        );
        assert_eq!(runs, count, "{g}");
        assert!(runs > 0.0);
    }
    assert!(
        v(
            "hsb_witness_probes_total",
            &[
                ("guest", "up"),
                ("target", "application"),
                ("outcome", "ok")
            ]
        ) > 0.0
    );
    assert_eq!(
        v(
            "hsb_witness_probes_total",
            &[
                ("guest", "down"),
                ("target", "application"),
                ("outcome", "ok")
            ]
        ),
        0.0
    );
    assert_eq!(
        v(
            "hsb_witness_application",
            &[("guest", "down"), ("state", "up")]
        ),
        0.0
    );
    // The shares of probes answered over the rate window (issue 12), once there are enough:
    // nothing answers guest down's witness.
    assert!(text.contains("# TYPE hsb_witness_answered_ratio gauge\n"));
    for target in ["application", "primary-daemon", "standby-daemon"] {
        for x in prom::find(
            &s,
            "hsb_witness_answered_ratio",
            &[("guest", "down"), ("target", target)],
        ) {
            assert_eq!(x.value, 0.0, "{target}");
        }
    }
    for x in s
        .iter()
        .filter(|x| x.name.starts_with("hsb_witness_") && x.name.ends_with("_total"))
    {
        assert_eq!(x.kind, "counter", "{}", x.name);
    }

    // The responder: other paths, methods and versions are refused; HEAD has no body; the
    // scrapes are counted.
    let answer = |req: &[u8]| prom::http(m, req).expect("http");
    assert!(answer(b"GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));
    assert!(
        answer(b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").starts_with("HTTP/1.1 405 ")
    );
    assert!(answer(b"GET /metrics HTTP/2.0\r\n\r\n").starts_with("HTTP/1.1 505 "));
    assert!(answer(b"GARBAGE\r\n\r\n").starts_with("HTTP/1.1 400 "));
    let head = answer(b"HEAD /metrics HTTP/1.0\r\n\r\n");
    assert!(
        head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"),
        "{head}"
    );
    let text = prom::scrape(m).expect("scrape");
    let s = prom::parse_python(&text).unwrap_or_else(|e| panic!("{e:?}"));
    assert!(prom::value(&s, "hsb_metrics_scrapes_total", &[]) >= 3.0);
    assert!(prom::value(&s, "hsb_metrics_refused_total", &[]) >= 4.0);
    let status = w.ctl("status").expect("status");
    assert!(status.contains(&format!("\nmetrics {m} (")), "{status}");
}

#[test]
fn a_witness_without_sections_labels_its_guest_default_and_metrics_are_off_by_default() {
    let test = "a_witness_without_sections_labels_its_guest_default_and_metrics_are_off_by_default";
    let dir = TempDir::new("metrics-witness-1");
    let m = free_addr();
    let base = format!(
        "id = 2\ncluster_key = {}\ncontrol = {}\nstate_file = {}\nlisten = {}\nprimary = {}\nstandby = {}\nprobe = tcp {}\n",
        key(&dir, "k"),
        dir.path("w.sock").display(),
        dir.path("w.state").display(),
        free_addr(),
        free_addr(),
        free_addr(),
        service()
    );
    // Off by default: nothing listens at an address no configuration names.
    let conf = witness_conf(&dir, &base);
    let mut w = Daemon::start(
        "hsb-witness",
        &conf,
        &dir.path("w.sock"),
        &dir.path("w.log"),
        &[],
    );
    w.wait_for("up", Duration::from_secs(10), |_| true);
    assert!(!w.status().contains_key("metrics"));
    w.signal("TERM");
    let t = Instant::now();
    while w.alive() && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let conf = witness_conf(&dir, &format!("{base}metrics_listen = {m}\n"));
    let w = Daemon::start(
        "hsb-witness",
        &conf,
        &dir.path("w.sock"),
        &dir.path("w2.log"),
        &[],
    );
    let text = scrape_until(m, &w, "probes counted", |t| {
        t.contains(
            "hsb_witness_probes_total{guest=\"default\",target=\"application\",outcome=\"ok\"} ",
        )
    });
    let Some(s) = prom::parse_checked(test, &text) else {
        return;
    };
    assert_eq!(prom::value(&s, "hsb_witness_guests", &[]), 1.0);
    assert!(prom::find(&s, "hsb_witness_epoch_seen", &[("guest", "default")]).len() == 1);
    assert!(Path::new(&dir.path("w.state")).exists());
}

/// hsb-primary's metrics, scraped from a real primary replicating to a real standby, and its
/// systemd notifications on a real unix datagram socket.
#[test]
fn a_primary_exports_replication_metrics_and_notifies_systemd() {
    let test = "a_primary_exports_replication_metrics_and_notifies_systemd";
    let m = free_addr();
    let ndir = TempDir::new("metrics-primary-notify");
    let npath = ndir.path("notify.sock");
    let nsock = std::os::unix::net::UnixDatagram::bind(&npath).expect("bind");
    nsock
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let pair = hsb_tests::Pair::start(hsb_tests::PairOpts {
        extra_primary: vec![format!("metrics_listen = {m}")],
        primary_env: vec![
            ("NOTIFY_SOCKET".into(), npath.display().to_string()),
            ("WATCHDOG_USEC".into(), "400000".into()),
        ],
        ..Default::default()
    });
    let text = scrape_until(m, &pair.primary, "10 checkpoints acknowledged", |t| {
        t.lines()
            .find_map(|l| l.strip_prefix("hsb_primary_acked_checkpoint "))
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|v| v >= 10.0)
    });
    // systemd's view: READY with the role and state, then the watchdog.
    let mut notes = vec![];
    let mut buf = [0u8; 1024];
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(5)
        && notes
            .iter()
            .filter(|n: &&String| n.as_str() == "WATCHDOG=1\n")
            .count()
            < 3
    {
        if let Ok(n) = nsock.recv(&mut buf) {
            notes.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    assert!(
        notes
            .first()
            .is_some_and(|n| n.starts_with("READY=1\nSTATUS=primary, epoch 1: ")),
        "{notes:?}"
    );
    assert!(
        notes
            .iter()
            .filter(|n| n.as_str() == "WATCHDOG=1\n")
            .count()
            >= 3,
        "{notes:?}"
    );
    let Some(s) = prom::parse_checked(test, &text) else {
        return;
    };
    let v = |name: &str, with: &[(&str, &str)]| prom::value(&s, name, with);
    assert_eq!(
        prom::find(&s, "hsb_build_info", &[("daemon", "hsb-primary")]).len(),
        1
    );
    assert_eq!(v("hsb_primary_epoch", &[]), 1.0);
    assert_eq!(v("hsb_primary_replication", &[("state", "protected")]), 1.0);
    let ckpts = v("hsb_primary_checkpoints_total", &[]);
    assert!(ckpts >= 10.0);
    // Every checkpoint's pause is in the histogram; acks of all but the unacked ones.
    assert_eq!(v("hsb_primary_pause_seconds_count", &[]), ckpts);
    assert!(v("hsb_primary_ack_rtt_seconds_count", &[]) >= 10.0);
    assert!(
        v("hsb_primary_sent_bytes_total", &[]) > 8.0 * 1024.0 * 1024.0,
        "a full sync of 8 MiB at least"
    );
    assert_eq!(v("hsb_primary_full_syncs_total", &[]), 1.0);
    assert!(v("hsb_primary_replica_lag_checkpoints", &[]) <= 5.0);
    assert_eq!(
        prom::find(&s, "hsb_primary_frame_errors_total", &[]).len(),
        hsb_common::frame::FrameError::COUNTERS.len()
    );
    assert!(prom::find(&s, "hsb_primary_frame_errors_total", &[])
        .iter()
        .all(|x| x.value == 0.0));
    assert!(
        prom::find(&s, "hsb_primary_authority", &[]).is_empty(),
        "failover is off"
    );
    // The model's disk (its workload writes it): written, none waited or failed; no export.
    assert!(v("hsb_primary_disk_writes_total", &[]) > 0.0);
    assert!(v("hsb_primary_disk_write_bytes_total", &[]) > 0.0);
    assert_eq!(v("hsb_primary_disk_errors_total", &[]), 0.0);
    assert!(prom::find(&s, "hsb_primary_nbd_client_connected", &[]).is_empty());
    // Off by default: the standby, without metrics_listen, says none in its status.
    assert!(!pair.standby.status().contains_key("metrics"));
}

/// A metric between two readings of a status key (taken before and after the scrape).
fn between(
    s: &[Sample],
    name: &str,
    before: &std::collections::HashMap<String, String>,
    after: &std::collections::HashMap<String, String>,
    key: &str,
) {
    let v = prom::value(s, name, &[]);
    let (lo, hi) = (
        hsb_tests::num(before, key) as f64,
        hsb_tests::num(after, key) as f64,
    );
    assert!(
        lo <= v && v <= hi,
        "{name} {v}: status {key} went {lo} -> {hi}"
    );
}

/// hsb-standby's metrics, scraped from a real standby of a cluster with failover on (three
/// witnesses), read by both parsers and checked against its status around the scrape; then
/// maintenance, and an operator's forced activation: the authority, the decision by rule and
/// action, requests served.
#[test]
fn a_standby_exports_what_it_applies_and_decides_and_after_activation_its_authority() {
    use hsb_tests::cluster::{Cluster, ClusterOpts};
    let test = "a_standby_exports_what_it_applies_and_decides_and_after_activation_its_authority";
    let m = free_addr();
    let cl = Cluster::start(ClusterOpts {
        standby_extra: vec![format!("metrics_listen = {m}")],
        ..Default::default()
    });
    let sb = &cl.standby;
    let num_at = |t: &str, line: &str| -> f64 {
        t.lines()
            .find_map(|l| l.strip_prefix(line))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(-1.0)
    };
    scrape_until(m, sb, "10 checkpoints applied, heartbeats heard", |t| {
        num_at(t, "hsb_standby_checkpoints_applied_total ") >= 10.0
            && num_at(t, "hsb_standby_heartbeats_received_total ") > 0.0
            && t.contains("hsb_standby_decision_state{state=\"following\"} 1\n")
    });
    let before = sb.status();
    let text = prom::scrape(m).unwrap_or_else(|e| panic!("{e}\n{}", cl.logs()));
    let after = sb.status();
    let Some(s) = prom::parse_checked(test, &text) else {
        return;
    };
    let v = |name: &str, with: &[(&str, &str)]| prom::value(&s, name, with);
    let info = prom::find(&s, "hsb_build_info", &[("daemon", "hsb-standby")]);
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].label("version"), Some(env!("CARGO_PKG_VERSION")));
    for (name, key) in [
        (
            "hsb_standby_checkpoints_applied_total",
            "checkpoints_applied",
        ),
        ("hsb_standby_applied_bytes_total", "bytes_applied"),
        ("hsb_standby_applied_pages_total", "pages_applied"),
        ("hsb_standby_applied_checkpoint", "applied_checkpoint"),
        ("hsb_standby_full_syncs_total", "full_syncs"),
        ("hsb_standby_sessions_total", "sessions"),
        ("hsb_standby_sessions_replaced_total", "sessions_replaced"),
        (
            "hsb_standby_connections_refused_total",
            "connections_refused",
        ),
        (
            "hsb_standby_connections_disallowed_total",
            "connections_disallowed",
        ),
        ("hsb_standby_handshakes_evicted_total", "handshakes_evicted"),
        ("hsb_standby_handshakes_expired_total", "handshakes_expired"),
        ("hsb_standby_heartbeats_received_total", "heartbeats"),
        ("hsb_standby_heartbeat_replies_total", "heartbeat_replies"),
        ("hsb_standby_bad_datagrams_total", "bad_datagrams"),
        ("hsb_standby_model_requests_total", "requests"),
        ("hsb_standby_epoch", "epoch"),
    ] {
        between(&s, name, &before, &after, key);
    }
    assert_eq!(v("hsb_standby_full_syncs_total", &[]), 1.0);
    assert_eq!(v("hsb_standby_sessions_total", &[]), 1.0);
    assert_eq!(v("hsb_standby_epoch", &[]), 1.0);
    assert!(
        v("hsb_standby_applied_bytes_total", &[]) > 8.0 * 1024.0 * 1024.0,
        "a full sync of 8 MiB at least"
    );
    // Every checkpoint applied has its apply time in the histogram.
    assert_eq!(
        v("hsb_standby_apply_seconds_count", &[]),
        v("hsb_standby_checkpoints_applied_total", &[])
    );
    assert!(v("hsb_standby_last_applied_age_seconds", &[]) < 5.0);
    // One state at a time, and the one status says.
    for (fam, label, key) in [
        ("hsb_standby_replication", "state", "state"),
        ("hsb_standby_decision_state", "state", "decision_state"),
    ] {
        let all = prom::find(&s, fam, &[]);
        assert_eq!(all.iter().map(|x| x.value).sum::<f64>(), 1.0, "{fam}");
        let now = all
            .iter()
            .find(|x| x.value == 1.0)
            .and_then(|x| x.label(label));
        assert_eq!(now, after.get(key).map(String::as_str), "{fam}");
    }
    assert_eq!(
        v("hsb_standby_replication", &[("state", "replicating")]),
        1.0
    );
    assert_eq!(
        prom::find(&s, "hsb_standby_decision_state", &[]).len(),
        8,
        "one series per state of the standby core"
    );
    assert_eq!(v("hsb_standby_primary_suspected", &[]), 0.0);
    assert_eq!(
        after.get("primary_suspected").map(String::as_str),
        Some("false")
    );
    assert_eq!(v("hsb_standby_maintenance", &[]), 0.0);
    assert_eq!(v("hsb_standby_activated", &[]), 0.0);
    assert!(
        prom::find(&s, "hsb_standby_authority", &[]).is_empty(),
        "not activated"
    );
    // Decisions by rule and action add up to status's count.
    let decided = prom::find(&s, "hsb_standby_decisions_total", &[]);
    let sum: f64 = decided.iter().map(|x| x.value).sum();
    assert!(
        hsb_tests::num(&before, "decisions") as f64 <= sum
            && sum <= hsb_tests::num(&after, "decisions") as f64,
        "{decided:?} vs {after:?}"
    );
    let errors = prom::find(&s, "hsb_standby_frame_errors_total", &[]);
    assert_eq!(errors.len(), hsb_common::frame::FrameError::COUNTERS.len());
    for e in &errors {
        let kind = e.label("kind").expect("kind");
        assert_eq!(e.value, 0.0, "{kind}");
        assert_eq!(
            after
                .get(&format!("frame_errors_{kind}"))
                .map(String::as_str),
            Some("0")
        );
    }
    for x in s
        .iter()
        .filter(|x| x.name.starts_with("hsb_standby_") && x.name.ends_with("_total"))
    {
        assert_eq!(x.kind, "counter", "{}", x.name);
    }
    assert!(after
        .get("metrics")
        .is_some_and(|l| l.starts_with(&format!("{m} ("))));

    // A bad frame, counted by its kind in both.
    {
        use std::io::Write;
        let mut c = std::net::TcpStream::connect(cl.standby_listen).expect("connect");
        c.write_all(&[0x5a; 64]).expect("garbage");
    }
    scrape_until(m, sb, "a bad frame counted", |t| {
        t.contains("\nhsb_standby_frame_errors_total{kind=\"bad_magic\"} 1\n")
    });
    assert_eq!(
        sb.status()
            .get("frame_errors_bad_magic")
            .map(String::as_str),
        Some("1")
    );

    // Maintenance, as the operator turns it on and off.
    let on = sb.ctl("maintenance on").expect("maintenance on");
    assert!(on.starts_with("maintenance on"), "{on}");
    scrape_until(m, sb, "maintenance on", |t| {
        t.contains("\nhsb_standby_maintenance 1\n")
    });
    let off = sb.ctl("maintenance off").expect("maintenance off");
    assert!(off.starts_with("maintenance off"), "{off}");

    // The operator's forced activation: the replica serves, under the operator's word.
    let answer = sb.ctl("activate --force").expect("activate");
    assert!(answer.starts_with("activated"), "{answer}\n{}", cl.logs());
    let mut c = hsb_tests::Client::connect(cl.standby_service, Duration::from_secs(5))
        .expect("the activated standby serves");
    c.request("GET").expect("GET");
    let text = scrape_until(m, sb, "activated and a request served", |t| {
        t.contains("\nhsb_standby_activated 1\n")
            && num_at(t, "hsb_standby_model_requests_total ") >= 1.0
    });
    let status = sb.status();
    let Some(s) = prom::parse_checked(test, &text) else {
        return;
    };
    let v = |name: &str, with: &[(&str, &str)]| prom::value(&s, name, with);
    assert_eq!(v("hsb_standby_replication", &[("state", "active")]), 1.0);
    assert_eq!(
        v("hsb_standby_decision_state", &[("state", "activated")]),
        1.0
    );
    assert_eq!(v("hsb_standby_epoch", &[]), 2.0);
    let modes = prom::find(&s, "hsb_standby_authority", &[]);
    // protected, protected-degraded, unprotected, holding, fenced, stepped-down.
    assert_eq!(modes.len(), 6, "one series per authority mode");
    let mode = modes
        .iter()
        .find(|x| x.value == 1.0)
        .and_then(|x| x.label("mode"));
    assert_eq!(
        mode,
        status.get("authority").map(String::as_str),
        "{status:?}"
    );
    assert_eq!(
        v(
            "hsb_standby_decisions_total",
            &[("rule", "rule9:operator-forced"), ("action", "activate")]
        ),
        1.0
    );
    // After activation the authority's decisions are counted too, in the metric as in
    // status's `decisions` (which counts every decision logged, the core's and the
    // authority's alike).
    let decided: f64 = prom::find(&s, "hsb_standby_decisions_total", &[])
        .iter()
        .map(|x| x.value)
        .sum();
    assert!(decided >= hsb_tests::num(&status, "decisions") as f64);
    assert!(v("hsb_standby_model_clients", &[]) >= 1.0);
}
