//! Several protected guests on one pair of hosts: per guest an hsb-primary on host A and an
//! hsb-standby on host B, side by side (their own ports, paths and cluster key), and three
//! hsb-witness processes, each serving every guest (one `[guest NAME]` section per guest), as a
//! client machine runs one witness for all the guests it watches.
//!
//! The same cluster runs on loopback ([`Layout::loopback`], every address a free port of
//! 127.0.0.1) or on network namespaces ([`Layout::netns`], the hosts of a [`Topology`], each
//! guest with its own service address that moves with its active copy).

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::netns::{Host, Net, Topology};
use crate::{bin, free_addr, num, parse_status, Daemon, TempDir};

/// One guest's addresses.
#[derive(Debug, Clone)]
pub struct GuestAddrs {
    pub name: String,
    /// The standby's replication address (`listen`), heartbeat address, and the two hosts'
    /// witness addresses (A's, B's).
    pub repl: SocketAddr,
    pub hb: SocketAddr,
    pub a_wit: SocketAddr,
    pub b_wit: SocketAddr,
    /// The service of the primary's copy (A) and of the activated replica (B): the same
    /// address on namespaces (it moves), two ports on loopback.
    pub a_svc: SocketAddr,
    pub b_svc: SocketAddr,
    /// Each witness's address for this guest.
    pub witnesses: Vec<SocketAddr>,
}

/// Where the guests' daemons run and how they are reached.
pub struct Layout {
    pub guests: Vec<GuestAddrs>,
    /// The namespaces, or none on loopback.
    pub topo: Option<Topology>,
}

impl Layout {
    /// `n` guests on loopback: every address its own free port.
    pub fn loopback(n: usize) -> Layout {
        let guests = (1..=n)
            .map(|g| GuestAddrs {
                name: format!("g{g}"),
                repl: free_addr(),
                hb: free_addr(),
                a_wit: free_addr(),
                b_wit: free_addr(),
                a_svc: free_addr(),
                b_svc: free_addr(),
                witnesses: (0..3).map(|_| free_addr()).collect(),
            })
            .collect();
        Layout { guests, topo: None }
    }

    /// `n` guests on the hosts of `topo`: guest `g`'s ports are 7100+g (replication), 7200+g
    /// (heartbeats), 7300+g (the hosts' witness addresses), 7400+g (the witnesses'), and its
    /// service is port 7000 of the client network's .100+g.
    pub fn netns(topo: Topology, n: usize) -> Result<Layout, String> {
        let addr = |h: Host, net: Net, port: usize| -> Result<SocketAddr, String> {
            format!("{}:{port}", topo.ip(h, net))
                .parse()
                .map_err(|e| format!("{e}"))
        };
        let mut guests = vec![];
        for g in 1..=n {
            let svc: SocketAddr = format!("{}:7000", service_ip(&topo, g))
                .parse()
                .map_err(|e| format!("{e}"))?;
            guests.push(GuestAddrs {
                name: format!("g{g}"),
                repl: addr(Host::B, Net::Replication, 7100 + g)?,
                hb: addr(Host::B, Net::Replication, 7200 + g)?,
                a_wit: addr(Host::A, Net::Client, 7300 + g)?,
                b_wit: addr(Host::B, Net::Client, 7300 + g)?,
                a_svc: svc,
                b_svc: svc,
                witnesses: (1..=3u8)
                    .map(|w| addr(Host::W(w), Net::Client, 7400 + g))
                    .collect::<Result<_, _>>()?,
            });
        }
        Ok(Layout {
            guests,
            topo: Some(topo),
        })
    }

    fn command(&self, h: Host, program: &str) -> Command {
        match &self.topo {
            Some(t) => t.command(h, &bin(program)),
            None => Command::new(bin(program)),
        }
    }
}

/// Guest `g`'s (1-based) service address on a topology.
pub fn service_ip(topo: &Topology, g: usize) -> String {
    let base = topo.service_ip();
    let (net, last) = base.rsplit_once('.').unwrap_or((&base, "100"));
    format!("{net}.{}", last.parse::<usize>().unwrap_or(100) + g)
}

/// The running guests.
pub struct Guests {
    pub primaries: Vec<Daemon>,
    pub standbys: Vec<Daemon>,
    pub witnesses: Vec<Daemon>,
    /// Witness 1's metrics address.
    pub metrics: Option<SocketAddr>,
    pub layout: Layout,
    pub dir: TempDir,
}

fn write_script(path: &std::path::Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).map_err(|e| e.to_string())?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())
}

impl Guests {
    /// Start every guest's standby and primary and the three witnesses; wait until every
    /// primary is protected and every witness sees every guest's application.
    pub fn start(layout: Layout, extra: &str) -> Result<Guests, String> {
        let dir = TempDir::new("guests");
        let e = |x: std::io::Error| x.to_string();
        let ids = "failover.witnesses = 1,2,3\n";
        // Witnesses first: each serves every guest.
        let metrics = free_addr();
        let mut witnesses = vec![];
        for w in 1..=3usize {
            let mut text = format!(
                "id = {w}\nnode = client-{w}\ncontrol = {}\nstate_file = {}\n{ids}{}",
                dir.path(&format!("w{w}.sock")).display(),
                dir.path(&format!("w{w}-{{guest}}.state")).display(),
                if w == 1 && layout.topo.is_none() {
                    format!("metrics_listen = {metrics}\n")
                } else {
                    String::new()
                }
            );
            for g in &layout.guests {
                let key = dir.path(&format!("{}.key", g.name));
                if !key.exists() {
                    hsb_common::key::ClusterKey::generate(&key).map_err(|x| x.to_string())?;
                }
                text.push_str(&format!(
                    "\n[guest {}]\ncluster_key = {}\nlisten = {}\nprimary = {}\nstandby = {}\nprobe = line {} PING PONG\n",
                    g.name,
                    key.display(),
                    g.witnesses[w - 1],
                    g.a_wit,
                    g.b_wit,
                    g.a_svc
                ));
            }
            let conf = dir.path(&format!("w{w}.conf"));
            std::fs::write(&conf, text).map_err(e)?;
            let mut cmd = layout.command(Host::W(w as u8), "hsb-witness");
            cmd.args(["run", "-c"]).arg(&conf);
            witnesses.push(Daemon::start_command(
                &format!("witness {w}"),
                cmd,
                &dir.path(&format!("w{w}.sock")),
                &dir.path(&format!("w{w}.log")),
            ));
        }
        let mut primaries = vec![];
        let mut standbys = vec![];
        for (i, g) in layout.guests.iter().enumerate() {
            let n = &g.name;
            let key = dir.path(&format!("{n}.key"));
            let peers: Vec<String> = g
                .witnesses
                .iter()
                .enumerate()
                .map(|(w, a)| format!("{}={a}", w + 1))
                .collect();
            let common = format!(
                "cluster_key = {}\nfailover = true\n{ids}witness_peers = {}\nmodel.memory = 8MiB\nstats_interval = 1s\n{extra}\n",
                key.display(),
                peers.join(",")
            );
            // On namespaces the replica claims its guest's own address when it activates.
            let claim = match &layout.topo {
                Some(_) => {
                    let p = dir.path(&format!("{n}-claim"));
                    let ip = g.b_svc.ip();
                    write_script(
                        &p,
                        &format!("#!/bin/sh\nip addr add {ip}/24 dev eth0 2>/dev/null\narping -q -U -c 2 -w 1 -I eth0 {ip} || true\n"),
                    )?;
                    format!("on_activate = {}\n", p.display())
                }
                None => String::new(),
            };
            let sconf = dir.path(&format!("{n}-standby.conf"));
            std::fs::write(
                &sconf,
                format!(
                    "node = host-b-{n}\nstate_file = {}\ncontrol = {}\nlisten = {}\nheartbeat_listen = {}\nwitness_listen = {}\nprimary_witness = {}\nmodel.service = {}\n{claim}{common}",
                    dir.path(&format!("{n}-b.state")).display(),
                    dir.path(&format!("{n}-b.sock")).display(),
                    g.repl,
                    g.hb,
                    g.b_wit,
                    g.a_wit,
                    g.b_svc
                ),
            )
            .map_err(e)?;
            let mut cmd = layout.command(Host::B, "hsb-standby");
            cmd.args(["run", "-c"]).arg(&sconf);
            standbys.push(Daemon::start_command(
                &format!("standby {n}"),
                cmd,
                &dir.path(&format!("{n}-b.sock")),
                &dir.path(&format!("{n}-b.log")),
            ));
            if let Some(t) = &layout.topo {
                t.exec(
                    Host::A,
                    &[
                        "ip",
                        "addr",
                        "add",
                        &format!("{}/24", g.a_svc.ip()),
                        "dev",
                        "eth0",
                    ],
                )?;
            }
            let pconf = dir.path(&format!("{n}-primary.conf"));
            std::fs::write(
                &pconf,
                format!(
                    "node = host-a-{n}\nstate_file = {}\ncontrol = {}\nstandby = {}\nheartbeat_peers = {}\nwitness_listen = {}\nstandby_witness = {}\nmodel.service = {}\nreconnect_interval = 50ms\n{common}",
                    dir.path(&format!("{n}-a.state")).display(),
                    dir.path(&format!("{n}-a.sock")).display(),
                    g.repl,
                    g.hb,
                    g.a_wit,
                    g.b_wit,
                    g.a_svc
                ),
            )
            .map_err(e)?;
            standbys[i].wait_for("standby up", Duration::from_secs(10), |_| true);
            let mut cmd = layout.command(Host::A, "hsb-primary");
            cmd.args(["run", "-c"]).arg(&pconf);
            primaries.push(Daemon::start_command(
                &format!("primary {n}"),
                cmd,
                &dir.path(&format!("{n}-a.sock")),
                &dir.path(&format!("{n}-a.log")),
            ));
        }
        let guests = Guests {
            primaries,
            standbys,
            witnesses,
            metrics: layout.topo.is_none().then_some(metrics),
            layout,
            dir,
        };
        let t = Instant::now();
        for (i, p) in guests.primaries.iter().enumerate() {
            loop {
                let s = p.status();
                if num(&s, "acked_checkpoint") >= 1
                    && s.get("authority").is_some_and(|a| a == "protected")
                {
                    break;
                }
                if guests.b_serving(i) {
                    return Err(format!(
                        "guest {}'s standby activated during startup",
                        guests.name(i)
                    ));
                }
                if t.elapsed() > Duration::from_secs(60) {
                    return Err(format!(
                        "guest {} not protected within 60 s\n{}",
                        guests.name(i),
                        guests.logs()
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        for w in 0..3 {
            for i in 0..guests.primaries.len() {
                let t = Instant::now();
                while guests
                    .witness_status(w, i)
                    .get("application")
                    .map(String::as_str)
                    != Some("up")
                {
                    if t.elapsed() > Duration::from_secs(15) {
                        return Err(format!(
                            "witness {} does not see guest {}'s application: {:?}\n{}",
                            w + 1,
                            guests.name(i),
                            guests.witness_status(w, i),
                            guests.logs()
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        // Witnesses grant nothing for the longest lease after they start.
        std::thread::sleep(Duration::from_millis(2300));
        Ok(guests)
    }

    /// Guest `i`'s name.
    pub fn name(&self, i: usize) -> &str {
        &self.layout.guests[i].name
    }

    /// What witness `w` (0-based) says of guest `i` alone (`status GUEST`).
    pub fn witness_status(&self, w: usize, i: usize) -> std::collections::HashMap<String, String> {
        parse_status(
            &self.witnesses[w]
                .ctl(&format!("status {}", self.name(i)))
                .unwrap_or_default(),
        )
    }

    /// Whether guest `i`'s replica serves (its standby activated).
    pub fn b_serving(&self, i: usize) -> bool {
        self.standbys[i]
            .status()
            .get("state")
            .is_some_and(|s| s == "active")
    }

    /// Every log, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for d in self
            .primaries
            .iter()
            .chain(&self.standbys)
            .chain(&self.witnesses)
        {
            s.push_str(&format!("--- {} ---\n{}\n", d.name, d.log_text()));
        }
        s
    }
}

/// A fault on one guest's cluster (guest g1), the other guests' clusters left alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestFault {
    /// g1's VM and its hsb-primary crash on host A (kill -9, its address gone); host A and the
    /// other guests run on. g1 must fail over.
    Crash,
    /// g1's replication and heartbeats are cut (host B drops its ports only). g1 must stay,
    /// its primary unprotected under the witnesses' lease.
    ReplicationCut,
}

impl GuestFault {
    pub fn name(self) -> &'static str {
        match self {
            GuestFault::Crash => "g1's VM and primary crash on host A",
            GuestFault::ReplicationCut => "g1's replication and heartbeats cut",
        }
    }
}

/// What one guest went through in a case.
#[derive(Debug, Clone)]
pub struct GuestOutcome {
    pub guest: String,
    /// Its replica served (its standby activated).
    pub failed_over: bool,
    /// Both its copies held authority at once, in total (sampled every 20 ms).
    pub split_ms: u64,
    pub acked: u64,
    pub lost: u64,
    pub doubled: u64,
    pub unavailable_ms: u64,
    /// Its primary's replication sessions and full synchronisations after the fault, less
    /// before (a disturbed guest reconnects and resynchronises).
    pub new_sessions: u64,
    pub new_full_syncs: u64,
    /// Its primary's authority at the end.
    pub authority: String,
}

/// Run `fault` on g1 of three guests on network namespaces: each guest's client history, and
/// what each guest's daemons did.
pub fn run_guest_fault(
    fault: GuestFault,
    witnesses_extra: &str,
) -> Result<Vec<GuestOutcome>, String> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let topo = Topology::new(3)?;
    let layout = Layout::netns(topo, 3)?;
    let mut g = Guests::start(layout, witnesses_extra)?;
    let n = g.primaries.len();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = g
        .layout
        .guests
        .iter()
        .map(|x| crate::faults::client_every(x.a_svc, stop.clone(), Duration::from_millis(5)))
        .collect();
    // Every guest's copies, sampled: when both hold authority at once.
    let socks: Vec<(std::path::PathBuf, std::path::PathBuf)> = (0..n)
        .map(|i| {
            (
                g.primaries[i].control.clone(),
                g.standbys[i].control.clone(),
            )
        })
        .collect();
    let monitor = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let status = |p: &std::path::Path| {
                parse_status(
                    &hsb_common::ctl::request(p, "status", Duration::from_millis(200))
                        .unwrap_or_default(),
                )
            };
            let mut split = vec![Duration::ZERO; socks.len()];
            let mut served = vec![false; socks.len()];
            let mut last = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                for (i, (a, b)) in socks.iter().enumerate() {
                    let b_serves = status(b).get("state").is_some_and(|s| s == "active");
                    let a_serves = matches!(
                        status(a).get("authority").map(String::as_str),
                        Some("protected" | "unprotected")
                    );
                    served[i] |= b_serves;
                    if a_serves && b_serves {
                        split[i] += last.elapsed();
                    }
                }
                last = Instant::now();
                std::thread::sleep(Duration::from_millis(20));
            }
            (split, served)
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    let before: Vec<(u64, u64)> = g
        .primaries
        .iter()
        .map(|p| {
            let s = p.status();
            (num(&s, "sessions"), num(&s, "full_syncs"))
        })
        .collect();
    let topo = g.layout.topo.as_ref().ok_or("no topology")?;
    let g1 = g.layout.guests[0].clone();
    match fault {
        GuestFault::Crash => {
            g.primaries[0].kill9();
            topo.exec(
                Host::A,
                &[
                    "ip",
                    "addr",
                    "del",
                    &format!("{}/24", g1.a_svc.ip()),
                    "dev",
                    "eth0",
                ],
            )?;
        }
        GuestFault::ReplicationCut => topo.set_rules(
            Host::B,
            &[
                format!("in tcp dport {} drop", g1.repl.port()),
                format!("in udp dport {} drop", g1.hb.port()),
            ],
        )?,
    }
    std::thread::sleep(Duration::from_secs(6));
    stop.store(true, Ordering::Relaxed);
    let histories: Vec<_> = clients
        .into_iter()
        .map(|c| c.join().unwrap_or_default())
        .collect();
    let (split, served) = monitor.join().map_err(|_| "monitor panicked")?;
    let mut out = vec![];
    for i in 0..n {
        let (acked, lost, doubled, gap) = crate::faults::check_history(&histories[i]);
        // A loaded machine can delay acks past the ack lease for a moment: the authority at the
        // end is the one it settles on within a few seconds.
        let t = Instant::now();
        let mut s = g.primaries[i].status();
        while i != 0
            && s.get("authority").is_some_and(|a| a != "protected")
            && t.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(50));
            s = g.primaries[i].status();
        }
        out.push(GuestOutcome {
            guest: g.name(i).to_string(),
            failed_over: served[i] || g.b_serving(i),
            split_ms: split[i].as_millis() as u64,
            acked,
            lost,
            doubled,
            unavailable_ms: gap.as_millis() as u64,
            new_sessions: num(&s, "sessions").saturating_sub(before[i].0),
            new_full_syncs: num(&s, "full_syncs").saturating_sub(before[i].1),
            authority: s.get("authority").cloned().unwrap_or_else(|| "-".into()),
        });
    }
    if fault == GuestFault::ReplicationCut {
        topo.clear_rules(Host::B);
    }
    if std::env::var_os("HSB_GUESTS_LOGS").is_some() {
        eprintln!("{}", g.logs());
    }
    Ok(out)
}

/// A markdown table of a case's outcomes.
pub fn guest_markdown(fault: GuestFault, outcomes: &[GuestOutcome]) -> String {
    let mut s = format!("{}\n\n| guest | decision | split brain | acked writes | acked lost | applied twice | longest unavailability | new sessions | new full syncs | authority at the end |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---|\n", fault.name());
    for o in outcomes {
        s.push_str(&format!(
            "| {} | {} | {} ms | {} | {} | {} | {} ms | {} | {} | {} |\n",
            o.guest,
            if o.failed_over { "failover" } else { "stay" },
            o.split_ms,
            o.acked,
            o.lost,
            o.doubled,
            o.unavailable_ms,
            o.new_sessions,
            o.new_full_syncs,
            o.authority
        ));
    }
    s
}
