//! The monitoring examples in contrib/: the Prometheus alert rules pass `promtool check rules`
//! and their own unit tests (`promtool test rules`), the Grafana dashboard is JSON, and every
//! hsb metric either names is one the daemons really export (each daemon's in a real scrape of
//! that daemon: a witness, and a primary and standby replicating with failover on), so
//! neither can drift from the code.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hsb_tests::{free_addr, prom, skip, Daemon, TempDir};

fn contrib(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../contrib")
        .join(p)
}

fn has_promtool() -> bool {
    Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    if !has_promtool() {
        return skip(
            "the_alert_rules_pass_promtool_and_their_unit_tests",
            "no promtool (apt-get install prometheus)",
        );
    }
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(contrib("prometheus/hsb-alerts.yml"))
        .output()
        .expect("promtool");
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.contains("SUCCESS"), "{said}");
    let out = Command::new("promtool")
        .args(["test", "rules", "hsb-alerts.test.yml"])
        .current_dir(contrib("prometheus"))
        .output()
        .expect("promtool");
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.contains("SUCCESS"), "{said}");
}

/// Every `hsb_...` name in `text`.
fn hsb_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("hsb_") {
        let before = rest[..at].chars().last();
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '/') {
            out.insert(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    out
}

/// The names a scrape exports (samples and families).
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| {
            let l = l
                .strip_prefix("# HELP ")
                .or(l.strip_prefix("# TYPE "))
                .unwrap_or(l);
            l.split(['{', ' ']).next()
        })
        .filter(|n| n.starts_with("hsb_"))
        .map(str::to_string)
        .collect()
}

/// A scrape of a real witness serving one guest.
fn witness_scrape(dir: &TempDir) -> (Daemon, String) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let svc = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for c in l.incoming() {
            drop(c);
        }
    });
    let key = dir.path("k");
    hsb_common::key::ClusterKey::generate(&key).expect("key");
    let m = free_addr();
    let conf = dir.path("w.conf");
    std::fs::write(
        &conf,
        format!(
            "id = 1\ncluster_key = {}\ncontrol = {}\nstate_file = {}\nlisten = {}\nprimary = {}\nstandby = {}\nprobe = tcp {svc}\nmetrics_listen = {m}\n",
            key.display(),
            dir.path("w.sock").display(),
            dir.path("w.state").display(),
            free_addr(),
            free_addr(),
            free_addr(),
        ),
    )
    .expect("write");
    let w = Daemon::start(
        "hsb-witness",
        &conf,
        &dir.path("w.sock"),
        &dir.path("w.log"),
        &[],
    );
    let t = Instant::now();
    loop {
        if let Ok(text) = prom::scrape(m) {
            return (w, text);
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no scrape\n{}",
            w.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_dashboard_and_the_alerts_name_only_metrics_the_daemons_export() {
    let dashboard = std::fs::read_to_string(contrib("grafana/hsb.json")).expect("dashboard");
    let rules = std::fs::read_to_string(contrib("prometheus/hsb-alerts.yml")).expect("rules");
    // JSON, read by a real parser where there is one (Python's).
    if let Ok(out) = Command::new("python3")
        .args([
            "-c",
            "import json,sys; d=json.load(sys.stdin); print(len(d['panels']))",
        ])
        .stdin(std::fs::File::open(contrib("grafana/hsb.json")).expect("open"))
        .output()
    {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let dir = TempDir::new("monitoring");
    let (_w, text) = witness_scrape(&dir);
    let witness = exported(&text);
    // And a primary's and a standby's, replicating with failover on (three witnesses).
    let (pm, sm) = (free_addr(), free_addr());
    let cl = hsb_tests::cluster::Cluster::start(hsb_tests::cluster::ClusterOpts {
        primary_extra: vec![format!("metrics_listen = {pm}")],
        standby_extra: vec![format!("metrics_listen = {sm}")],
        ..Default::default()
    });
    // Once the standby has applied checkpoints and heard heartbeats (every family then has
    // its samples, but the activated standby's authority).
    let t = Instant::now();
    let standby = loop {
        let text = prom::scrape(sm).unwrap_or_else(|e| panic!("{e}\n{}", cl.logs()));
        if text.contains("\nhsb_standby_decision_state{state=\"following\"} 1\n")
            && !text.contains("\nhsb_standby_heartbeats_received_total 0\n")
        {
            break exported(&text);
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "the standby not following\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let primary = exported(&prom::scrape(pm).unwrap_or_else(|e| panic!("{e}\n{}", cl.logs())));
    let have: BTreeSet<String> = witness
        .iter()
        .chain(&primary)
        .chain(&standby)
        .cloned()
        .collect();
    for (what, named) in [
        ("dashboard", hsb_names(&dashboard)),
        ("alert rules", hsb_names(&rules)),
    ] {
        assert!(!named.is_empty(), "{what} names no hsb metric");
        let missing: Vec<&String> = named.iter().filter(|n| !have.contains(*n)).collect();
        assert!(
            missing.is_empty(),
            "the {what} name metrics no daemon exports: {missing:?}\nexported: {have:?}"
        );
        // Each daemon's own names are in that daemon's scrape.
        for (prefix, scrape) in [
            ("hsb_witness_", &witness),
            ("hsb_primary_", &primary),
            ("hsb_standby_", &standby),
        ] {
            let mine: Vec<&String> = named.iter().filter(|n| n.starts_with(prefix)).collect();
            assert!(!mine.is_empty(), "the {what} name no {prefix}* metric");
            let missing: Vec<&&String> = mine.iter().filter(|n| !scrape.contains(**n)).collect();
            assert!(
                missing.is_empty(),
                "the {what} name {missing:?}, not in a real {prefix}* scrape: {scrape:?}"
            );
        }
    }
}
