//! The fault-injection suite on real (virtual) hosts: hsb daemons in network namespaces
//! ([`crate::netns`]), a client on the client network using the service address that moves with
//! the active copy (the standby's `on_activate` claims it and announces it with gratuitous ARP),
//! faults made by links going down, nftables rules, kill -9 and SIGSTOP, then healing.
//!
//! Each case records the client's history and the daemons' states, and checks: no acknowledged
//! write lost, none applied twice, the split-brain window (both copies holding authority to
//! release output), the unavailability window and the time to decide.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::netns::{Host, Net, Topology};
use crate::{bin, num, Client, Daemon, TempDir};

/// The faults the suite injects (DESIGN.md §5 numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Host A crashes: its daemon is killed and its links go down.
    F1,
    /// The replication network is cut both ways.
    F2,
    /// Host B receives nothing on the replication network (one way: heartbeats and checkpoints
    /// from A are lost, B's acks still reach A).
    F3,
    /// The primary is paused (SIGSTOP) for less than a lease, then continued.
    F6Short,
    /// The primary is paused for twice the lease, then continued.
    F6Long,
    /// Host B is cut off from everything.
    F7,
    /// Host A is cut off from the client network; the replication network is fine.
    F4,
    /// Every witness unreachable and the replication link cut.
    F9,
    /// 30% loss of what B receives on the replication network (heartbeats and checkpoints).
    F10,
}

impl Fault {
    /// Every fault, in order.
    pub const ALL: [Fault; 9] = [
        Fault::F1,
        Fault::F2,
        Fault::F3,
        Fault::F4,
        Fault::F6Short,
        Fault::F6Long,
        Fault::F7,
        Fault::F9,
        Fault::F10,
    ];

    /// Name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Fault::F1 => "F1 host A crash",
            Fault::F2 => "F2 replication link cut",
            Fault::F3 => "F3 one-way loss A->B",
            Fault::F6Short => "F6 primary paused 0.5 s",
            Fault::F6Long => "F6 primary paused 4 s (2x lease)",
            Fault::F7 => "F7 host B isolated",
            Fault::F4 => "F4 host A cut off from clients",
            Fault::F9 => "F9 witnesses unreachable, link cut",
            Fault::F10 => "F10 30% loss A->B",
        }
    }

    /// Whether failing over is the right decision (`None`: either, as long as one copy serves).
    pub fn failover_expected(self) -> Option<bool> {
        match self {
            Fault::F1 | Fault::F4 => Some(true),
            // A frozen primary looks dead to its clients after a detection time: failing over
            // is right as long as it is fenced when it resumes (never two active).
            Fault::F6Short | Fault::F6Long => None,
            _ => Some(false),
        }
    }
}

/// One request of the client's history.
#[derive(Debug, Clone, Copy)]
pub struct Op {
    pub start: Instant,
    pub end: Instant,
    /// The counter after the increment, if acknowledged.
    pub value: Option<u64>,
}

/// What a case showed.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub fault: Fault,
    pub policy: String,
    pub failed_over: bool,
    pub correct: bool,
    pub decide_ms: Option<u64>,
    pub unavailable_ms: u64,
    pub split_ms: u64,
    pub acked: u64,
    pub lost: u64,
    pub doubled: u64,
    pub note: String,
}

/// Check a sequential client's history: acknowledged values must increase, by at most one more
/// than the number of unacknowledged requests in between. Returns (acked, lost, doubled,
/// longest time without an acknowledged reply, counted from the first request to the last).
pub fn check_history(ops: &[Op]) -> (u64, u64, u64, Duration) {
    let (mut acked, mut lost, mut doubled) = (0, 0, 0);
    let mut prev: Option<(u64, Instant)> = None;
    let mut unacked_since = 0u64;
    let mut gap = Duration::ZERO;
    for op in ops {
        match op.value {
            None => unacked_since += 1,
            Some(v) => {
                acked += 1;
                if let Some((p, t)) = prev {
                    if v <= p {
                        lost += 1;
                    } else if v - p - 1 > unacked_since {
                        doubled += 1;
                    }
                    gap = gap.max(op.end.duration_since(t));
                }
                prev = Some((v, op.end));
                unacked_since = 0;
            }
        }
    }
    // An outage that lasts to the end of the run counts too (or a run with no reply at all).
    let last_ok = prev.map(|(_, t)| t).or(ops.first().map(|o| o.start));
    if let (Some(t), Some(end)) = (last_ok, ops.last().map(|o| o.end)) {
        gap = gap.max(end.duration_since(t));
    }
    (acked, lost, doubled, gap)
}

/// Fields drop in order: the daemons stop before their namespaces and files go.
struct Nodes {
    primary: Daemon,
    standby: Daemon,
    _witnesses: Vec<Daemon>,
    service: SocketAddr,
    _dir: TempDir,
    _topo: Topology,
}

fn start(policy: &str) -> Result<Nodes, String> {
    let topo = Topology::new(3)?;
    let dir = TempDir::new("faults");
    let key = dir.path("cluster.key");
    hsb_common::key::ClusterKey::generate(&key).map_err(|e| e.to_string())?;
    let ip = |h, n| topo.ip(h, n);
    let (a_c, b_c, b_r) = (
        ip(Host::A, Net::Client),
        ip(Host::B, Net::Client),
        ip(Host::B, Net::Replication),
    );
    let vip = topo.service_ip();
    let peers: Vec<String> = (1..=3)
        .map(|i| format!("{i}={}:7400", ip(Host::W(i), Net::Client)))
        .collect();
    let common = format!("cluster_key = {}\nfailover = true\nfailover.policy = {policy}\nfailover.witnesses = 1,2,3\nfailover.switchover-hold = 1s\nfailover.switchover-min-interval = 2s\nwitness_peers = {}\nmodel.memory = 8MiB\nmodel.service = {vip}:7000\nstats_interval = 1s\n", key.display(), peers.join(","));
    let claim = dir.path("claim-address");
    std::fs::write(&claim, format!("#!/bin/sh\nip addr add {vip}/24 dev eth0 2>/dev/null\narping -q -U -c 2 -w 1 -I eth0 {vip} || true\n")).map_err(|e| e.to_string())?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&claim, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
    }
    let wcommon = format!(
        "cluster_key = {}\nfailover.policy = {policy}\nfailover.witnesses = 1,2,3\n",
        key.display()
    );
    let mut witnesses = vec![];
    for i in 1..=3u8 {
        let conf = dir.path(&format!("w{i}.conf"));
        std::fs::write(
            &conf,
            format!(
                "id = {i}\nnode = witness-{i}\nlisten = {}:7400\nprimary = {a_c}:7301\nstandby = {b_c}:7300\nprobe = line {vip}:7000 PING PONG\nstate_file = {}\ncontrol = {}\n{wcommon}",
                ip(Host::W(i), Net::Client),
                dir.path(&format!("w{i}.state")).display(),
                dir.path(&format!("w{i}.sock")).display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let mut cmd = topo.command(Host::W(i), &bin("hsb-witness"));
        cmd.args(["run", "-c"]).arg(&conf);
        witnesses.push(Daemon::start_command(
            &format!("witness {i}"),
            cmd,
            &dir.path(&format!("w{i}.sock")),
            &dir.path(&format!("w{i}.log")),
        ));
    }
    let sconf = dir.path("standby.conf");
    std::fs::write(
        &sconf,
        format!(
            "node = host-b\nlisten = {b_r}:7100\ncontrol = {}\nheartbeat_listen = {b_r}:7200\nwitness_listen = {b_c}:7300\nprimary_witness = {a_c}:7301\non_activate = {}\ndecision_log = {}\n{common}",
            dir.path("b.sock").display(),
            claim.display(),
            dir.path("b.decisions").display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let mut cmd = topo.command(Host::B, &bin("hsb-standby"));
    cmd.args(["run", "-c"]).arg(&sconf);
    let standby = Daemon::start_command(
        "hsb-standby (host B)",
        cmd,
        &dir.path("b.sock"),
        &dir.path("b.log"),
    );
    standby.wait_for("standby up", Duration::from_secs(10), |_| true);
    topo.exec(
        Host::A,
        &["ip", "addr", "add", &format!("{vip}/24"), "dev", "eth0"],
    )?;
    let pconf = dir.path("primary.conf");
    std::fs::write(
        &pconf,
        format!(
            "node = host-a\nstandby = {b_r}:7100\ncontrol = {}\nreconnect_interval = 50ms\nheartbeat_peers = {b_r}:7200\nwitness_listen = {a_c}:7301\nstandby_witness = {b_c}:7300\ndecision_log = {}\n{common}",
            dir.path("a.sock").display(),
            dir.path("a.decisions").display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let mut cmd = topo.command(Host::A, &bin("hsb-primary"));
    cmd.args(["run", "-c"]).arg(&pconf);
    let primary = Daemon::start_command(
        "hsb-primary (host A)",
        cmd,
        &dir.path("a.sock"),
        &dir.path("a.log"),
    );
    primary.wait_for("protected", Duration::from_secs(30), |s| {
        s.get("authority").map(String::as_str) == Some("protected")
    });
    for w in &witnesses {
        w.wait_for("application up", Duration::from_secs(10), |s| {
            s.get("application").map(String::as_str) == Some("up")
        });
    }
    // Witnesses grant nothing for the longest lease after they start.
    std::thread::sleep(Duration::from_millis(2300));
    let service = format!("{vip}:7000")
        .parse()
        .map_err(|_| "bad service address")?;
    Ok(Nodes {
        primary,
        standby,
        _witnesses: witnesses,
        service,
        _dir: dir,
        _topo: topo,
    })
}

/// Run one fault case under `policy` ("client-oriented" or "heartbeat-only").
pub fn run_case(fault: Fault, policy: &str) -> Result<Outcome, String> {
    let mut n = start(policy)?;
    let stop = Arc::new(AtomicBool::new(false));
    let history: Arc<Mutex<Vec<Op>>> = Arc::new(Mutex::new(Vec::new()));
    let (st, h, svc) = (stop.clone(), history.clone(), n.service);
    let client = std::thread::spawn(move || {
        let mut c: Option<Client> = None;
        while !st.load(Ordering::Relaxed) {
            let t0 = Instant::now();
            if c.is_none() {
                c = Client::connect(svc, Duration::from_millis(300)).ok();
                if let Some(cl) = &c {
                    cl.set_timeout(Duration::from_millis(700));
                }
            }
            let value = c
                .as_mut()
                .and_then(|cl| cl.request("INCR").ok())
                .and_then(|v| v.parse().ok());
            if value.is_none() {
                c = None;
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Ok(mut h) = h.lock() {
                h.push(Op {
                    start: t0,
                    end: Instant::now(),
                    value,
                });
            }
        }
    });
    // Split-brain monitor: the old primary holding authority while the standby is active.
    let (a_ctl, b_ctl) = (n.primary.control.clone(), n.standby.control.clone());
    let st = stop.clone();
    let monitor = std::thread::spawn(move || {
        let (mut split, mut active_at) = (Duration::ZERO, None::<Instant>);
        let mut last = Instant::now();
        while !st.load(Ordering::Relaxed) {
            let a = crate::parse_status(
                &hsb_common::ctl::request(&a_ctl, "status", Duration::from_millis(200))
                    .unwrap_or_default(),
            );
            let b = crate::parse_status(
                &hsb_common::ctl::request(&b_ctl, "status", Duration::from_millis(200))
                    .unwrap_or_default(),
            );
            let now = Instant::now();
            let b_active = b.get("state").map(String::as_str) == Some("active");
            let a_authority = matches!(
                a.get("authority").map(String::as_str),
                Some("protected" | "unprotected")
            );
            if b_active && active_at.is_none() {
                active_at = Some(now);
            }
            if b_active && a_authority {
                split += now - last;
            }
            last = now;
            std::thread::sleep(Duration::from_millis(20));
        }
        (split, active_at)
    });
    std::thread::sleep(Duration::from_secs(1));
    let injected = Instant::now();
    let topo = &n._topo;
    let mut note = String::new();
    match fault {
        Fault::F1 => {
            n.primary.kill9();
            topo.link(Host::A, Net::Client, false)?;
            topo.link(Host::A, Net::Replication, false)?;
        }
        Fault::F2 => topo.link(Host::A, Net::Replication, false)?,
        Fault::F3 => topo.drop_arriving(Host::B, Net::Replication, 100)?,
        Fault::F6Short | Fault::F6Long => n.primary.signal("STOP"),
        Fault::F7 => {
            topo.link(Host::B, Net::Client, false)?;
            topo.link(Host::B, Net::Replication, false)?;
        }
        Fault::F10 => topo.drop_arriving(Host::B, Net::Replication, 30)?,
        Fault::F4 => topo.link(Host::A, Net::Client, false)?,
        Fault::F9 => {
            for i in 1..=3 {
                topo.link(Host::W(i), Net::Client, false)?;
            }
            topo.link(Host::A, Net::Replication, false)?;
        }
    }
    let hold = match fault {
        Fault::F6Short => Duration::from_millis(500),
        Fault::F6Long => Duration::from_secs(4),
        _ => Duration::from_secs(5),
    };
    std::thread::sleep(hold);
    // Heal.
    match fault {
        Fault::F1 => note.push_str("host A stays down; "),
        Fault::F2 => topo.link(Host::A, Net::Replication, true)?,
        Fault::F3 | Fault::F10 => topo.clear_rules(Host::B),
        Fault::F6Short | Fault::F6Long => n.primary.signal("CONT"),
        Fault::F7 => {
            topo.link(Host::B, Net::Client, true)?;
            topo.link(Host::B, Net::Replication, true)?;
        }
        Fault::F4 => {
            // The fenced old primary still holds the address: take it back, as a VM that moved
            // would no longer have it.
            topo.exec(
                Host::A,
                &[
                    "ip",
                    "addr",
                    "del",
                    &format!("{}/24", topo.service_ip()),
                    "dev",
                    "eth0",
                ],
            )?;
            topo.link(Host::A, Net::Client, true)?;
            note.push_str("address removed from A before its link came back; ");
        }
        Fault::F9 => {
            for i in 1..=3 {
                topo.link(Host::W(i), Net::Client, true)?;
            }
            topo.link(Host::A, Net::Replication, true)?;
        }
    }
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let _ = client.join();
    let (split, active_at) = monitor.join().unwrap_or((Duration::ZERO, None));
    let ops = history.lock().map(|h| h.clone()).unwrap_or_default();
    let (acked, lost, doubled, gap) = check_history(&ops);
    let failed_over = active_at.is_some();
    let decision_ok = fault.failover_expected().is_none_or(|e| e == failed_over);
    if matches!(fault, Fault::F6Short | Fault::F6Long) && failed_over {
        note.push_str("failed over while the primary was frozen; ");
    }
    if num(&n.primary.status(), "acked_checkpoint") == 0 && fault != Fault::F1 {
        note.push_str("primary status unavailable at the end; ");
    }
    Ok(Outcome {
        fault,
        policy: policy.to_string(),
        failed_over,
        correct: decision_ok && split.is_zero() && lost == 0 && doubled == 0,
        decide_ms: active_at.map(|t| t.duration_since(injected).as_millis() as u64),
        unavailable_ms: gap.as_millis() as u64,
        split_ms: split.as_millis() as u64,
        acked,
        lost,
        doubled,
        note: note.trim_end_matches("; ").to_string(),
    })
}

/// A markdown table of outcomes.
pub fn markdown(outcomes: &[Outcome]) -> String {
    let mut s = String::from("| fault | policy | decision | correct | time to decide | longest unavailability | split brain | acked writes | acked lost | applied twice | note |\n|---|---|---|---|---:|---:|---:|---:|---:|---:|---|\n");
    for o in outcomes {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} ms | {} ms | {} | {} | {} | {} |\n",
            o.fault.name(),
            o.policy,
            if o.failed_over { "failover" } else { "stay" },
            if o.correct { "yes" } else { "**no**" },
            o.decide_ms.map_or("-".into(), |m| format!("{m} ms")),
            o.unavailable_ms,
            o.split_ms,
            o.acked,
            o.lost,
            o.doubled,
            o.note
        ));
    }
    s
}

/// The outcomes as a JSON array.
pub fn json(outcomes: &[Outcome]) -> String {
    let items: Vec<String> = outcomes
        .iter()
        .map(|o| {
            format!(
                "{{\"fault\":\"{}\",\"policy\":\"{}\",\"failed_over\":{},\"correct\":{},\"decide_ms\":{},\"unavailable_ms\":{},\"split_brain_ms\":{},\"acked\":{},\"acked_lost\":{},\"applied_twice\":{},\"note\":\"{}\"}}",
                o.fault.name(),
                o.policy,
                o.failed_over,
                o.correct,
                o.decide_ms.map_or("null".into(), |m| m.to_string()),
                o.unavailable_ms,
                o.split_ms,
                o.acked,
                o.lost,
                o.doubled,
                o.note.replace('"', "'")
            )
        })
        .collect();
    format!("[\n  {}\n]\n", items.join(",\n  "))
}

/// Write `target/faults/report.{md,json}` next to the running executable's target directory.
pub fn write_report(outcomes: &[Outcome]) -> std::io::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let target = exe
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "target"))
        .map(|p| p.to_path_buf())
        .unwrap_or_else(std::env::temp_dir);
    let dir = target.join("faults");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("report.md"), markdown(outcomes))?;
    std::fs::write(dir.join("report.json"), json(outcomes))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(v: Option<u64>, t: u64) -> Op {
        let base = Instant::now();
        Op {
            start: base,
            end: base + Duration::from_millis(t),
            value: v,
        }
    }

    #[test]
    fn history_checker_finds_loss_and_doubles() {
        assert_eq!(
            check_history(&[op(Some(1), 1), op(Some(2), 2), op(None, 3), op(Some(4), 4)]).1,
            0
        );
        let (_, lost, _, _) = check_history(&[op(Some(5), 1), op(Some(3), 2)]);
        assert_eq!(lost, 1, "rollback is a loss");
        let (_, lost, _, _) = check_history(&[op(Some(5), 1), op(Some(5), 2)]);
        assert_eq!(lost, 1, "a repeated value lost an acknowledged increment");
        let (_, _, doubled, _) = check_history(&[op(Some(5), 1), op(Some(8), 2)]);
        assert_eq!(
            doubled, 1,
            "two extra increments without unacknowledged requests"
        );
    }
}
