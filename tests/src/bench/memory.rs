//! Section 4 of `hsb-bench`: resident memory of the daemons.

use std::thread;
use std::time::Duration;

use hsb_common::key::ClusterKey;
use hsb_tests::{Daemon, TempDir};

use super::machine::daemon_mem;
use super::stats::table;

pub fn witness_row() -> Vec<String> {
    let na = |why: &str| {
        vec![
            "hsb-witness".into(),
            "-".into(),
            format!("n/a ({why})"),
            "n/a".into(),
        ]
    };
    let exists = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("hsb-witness").exists()))
        .unwrap_or(false);
    if !exists {
        return na("witness binary not built");
    }
    let dir = TempDir::new("bench-witness");
    let key = dir.path("cluster.key");
    if ClusterKey::generate(&key).is_err() {
        return na("cannot write a key");
    }
    let conf = dir.path("witness.conf");
    let (l, p, sb, svc) = (
        hsb_tests::free_addr(),
        hsb_tests::free_addr(),
        hsb_tests::free_addr(),
        hsb_tests::free_addr(),
    );
    if std::fs::write(
        &conf,
        format!(
            "node = witness\nid = 1\ncluster_key = {}\nlisten = {l}\nprimary = {p}\nstandby = {sb}\nprobe = tcp {svc}\nstate_file = {}\ncontrol = {}\n",
            key.display(),
            dir.path("witness.state").display(),
            dir.path("witness.sock").display()
        ),
    )
    .is_err()
    {
        return na("cannot write a config");
    }
    let mut w = Daemon::start(
        "hsb-witness",
        &conf,
        &dir.path("witness.sock"),
        &dir.path("witness.log"),
        &[],
    );
    thread::sleep(Duration::from_secs(1));
    if !w.alive() {
        let why = w
            .log_text()
            .lines()
            .last()
            .unwrap_or("exited")
            .trim_start_matches("hsb-witness: ")
            .replace('|', "/");
        return na(&format!("`hsb-witness run` exited: {why}"));
    }
    // Probing: its pings and application probes go unanswered (no cluster behind the
    // addresses), as a witness's do while the hosts are down.
    daemon_mem(&w, "running 1 s, probing")
}

pub fn section_4(mut rows: Vec<Vec<String>>) -> String {
    rows.push(witness_row());
    let mut s = String::from(
        "## 4. Resident memory (64 MiB model domain)\n\n\
         `VmRSS` (resident now) and `VmHWM` (peak resident) from `/proc/PID/status`. Idle: the 25 ms pair of \
         section 3 with the default workload (2000 pages/s), 1 s after the first full synchronisation and \
         again about 20 s later, once the workload has touched every page and the clients are done. \
         Throughput: the pair of section 1b, mid-run.\n\n",
    );
    s.push_str(&table(
        &["Daemon", "Phase", "VmRSS MiB", "VmHWM MiB"],
        &rows,
    ));
    s
}
