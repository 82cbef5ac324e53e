//! The cluster a fault case runs on: hosts A and B, three witnesses, optional relays and clock
//! offsets, the hand-over configurations, started until the primary is protected.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::netns::{Host, Net, Topology};
use crate::relay::{Link, Shaper, TcpRelay, UdpRelay};
use crate::{bin, Daemon, TempDir};

use super::Setup;

/// Monotonic (and boot-time) clock offsets of hosts A, B and witnesses 1-3 in the F11 cases:
/// 10 h, 3 days, 1 h, none, 30 days ahead of this machine's.
pub const CLOCKS: [(Host, Duration); 5] = [
    (Host::A, Duration::from_secs(10 * 3600)),
    (Host::B, Duration::from_secs(3 * 86400)),
    (Host::W(1), Duration::from_secs(3600)),
    (Host::W(2), Duration::ZERO),
    (Host::W(3), Duration::from_secs(30 * 86400)),
];

/// The delay the F10 relay case adds on every path.
pub const DELAY: Duration = Duration::from_millis(20);
/// Its jitter (uniform, ±).
pub const JITTER: Duration = Duration::from_millis(15);

/// Why [`start`] gives up on a cluster whose standby activated before any fault (the
/// heartbeat-only baseline does when the primary's first full synchronisation delays its first
/// heartbeats past the detector's timeout).
pub(super) const STARTUP_ACTIVATION: &str =
    "the standby activated during startup, before the fault";

/// The status of B's promoted primary (empty while there is none).
pub(super) fn promoted_status(dir: &std::path::Path) -> std::collections::HashMap<String, String> {
    crate::parse_status(
        &hsb_common::ctl::request(
            &dir.join("promoted.sock"),
            "status",
            Duration::from_millis(200),
        )
        .unwrap_or_default(),
    )
}

/// Whether B's copy serves: the standby activated, or it promoted itself to primary.
pub(super) fn b_serving(n: &Nodes) -> bool {
    serving(&n.standby, &n.dir.0)
}

/// Whether B's copy serves, from its standby daemon and the cluster's directory.
fn serving(standby: &Daemon, dir: &std::path::Path) -> bool {
    standby.status().get("state").is_some_and(|s| s == "active")
        || promoted_status(dir).contains_key("role")
}

/// Fields drop in order: the daemons stop before the relays, namespaces and files go.
pub(super) struct Nodes {
    pub(super) primary: Daemon,
    pub(super) standby: Daemon,
    pub(super) _witnesses: Vec<Daemon>,
    /// Daemons a case starts later (host A restarted as a standby).
    pub(super) extra: Vec<Daemon>,
    pub(super) service: SocketAddr,
    /// The shaper of every relay (with [`Setup::relays`]).
    pub(super) shaper: Shaper,
    pub(super) _relays: (Vec<TcpRelay>, Vec<UdpRelay>),
    pub(super) dir: TempDir,
    pub(super) topo: Topology,
}

impl Nodes {
    /// A status-only handle on a control socket (after a hand-over the process is the same,
    /// its control socket is the new configuration's).
    pub(super) fn handle(&self, name: &str, sock: &str, log: &str) -> Daemon {
        Daemon {
            name: name.into(),
            child: None,
            log: self.dir.path(log),
            control: self.dir.path(sock),
        }
    }
}

fn write_script(path: &std::path::Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).map_err(|e| e.to_string())?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| format!("bad address {s}"))
}

pub(super) fn start(policy: &str, setup: Setup) -> Result<Nodes, String> {
    let topo = Topology::new(3)?;
    let dir = TempDir::new("faults");
    let key = dir.path("cluster.key");
    // Each host keeps its own state file, whichever role it runs.
    let a_state = dir.path("a.state").display().to_string();
    let b_state = dir.path("b.state").display().to_string();
    hsb_common::key::ClusterKey::generate(&key).map_err(|e| e.to_string())?;
    let ip = |h, n| topo.ip(h, n);
    let (a_c, b_c, a_r, b_r) = (
        ip(Host::A, Net::Client),
        ip(Host::B, Net::Client),
        ip(Host::A, Net::Replication),
        ip(Host::B, Net::Replication),
    );
    let vip = topo.service_ip();
    let shaper = Shaper::new(0x05ee_df10);
    let (mut tcp, mut udp) = (vec![], vec![]);
    // Where a daemon reaches `target` (TCP or UDP): directly, or through a relay at `port` of
    // the test process's address on `net`.
    let mut via = |net: Net, port: u16, target: String, is_tcp: bool| -> Result<String, String> {
        if !setup.relays {
            return Ok(target);
        }
        let bind = parse_addr(&format!("{}:{port}", topo.relay_ip(net)))?;
        let back = parse_addr(&format!("{}:0", topo.relay_ip(net)))?;
        let t = parse_addr(&target)?;
        let e = |e: std::io::Error| format!("relay on {bind}: {e}");
        if is_tcp {
            let r = TcpRelay::start_on(bind, t, Link::default(), shaper.clone()).map_err(e)?;
            tcp.push(r);
        } else {
            let r = UdpRelay::start_on(bind, back, t, vec![], shaper.clone()).map_err(e)?;
            udp.push(r);
        }
        Ok(bind.to_string())
    };
    let (c, r) = (Net::Client, Net::Replication);
    let primary_repl = via(r, 17100, format!("{b_r}:7100"), true)?;
    let primary_hb = via(r, 17200, format!("{b_r}:7200"), false)?;
    // Fence requests and confirmations between primary and standby go with the replication
    // network (the daemons' witness sockets listen on both networks).
    let primary_fence = via(r, 17321, format!("{b_r}:7300"), false)?;
    let standby_fence = via(r, 17320, format!("{a_r}:7301"), false)?;
    let (mut s_peers, mut p_peers, mut w_standby, mut w_primary, mut w_probe) =
        (vec![], vec![], vec![], vec![], vec![]);
    for i in 1..=3u8 {
        let w = format!("{}:7400", ip(Host::W(i), Net::Client));
        let p = u16::from(i);
        s_peers.push(format!("{i}={}", via(c, 17400 + p, w.clone(), false)?));
        p_peers.push(format!("{i}={}", via(c, 17410 + p, w, false)?));
        w_standby.push(via(c, 17300 + p, format!("{b_c}:7300"), false)?);
        w_primary.push(via(c, 17310 + p, format!("{a_c}:7301"), false)?);
        w_probe.push(via(c, 17700 + p, format!("{vip}:7000"), true)?);
    }
    let clock = |h: Host| {
        CLOCKS
            .iter()
            .find(|(x, _)| *x == h)
            .map_or(Duration::ZERO, |(_, d)| *d)
    };
    let command = |h: Host, program: &str| {
        if setup.clocks {
            topo.command_with_clock(h, &bin(program), clock(h))
        } else {
            topo.command(h, &bin(program))
        }
    };
    // `program run -c conf` on host `h`, as daemon `name` with its control socket and log.
    let launch =
        |h: Host, program: &str, name: &str, conf: &std::path::Path, sock: &str, log: &str| {
            let mut cmd = command(h, program);
            cmd.args(["run", "-c"]).arg(conf);
            Daemon::start_command(name, cmd, &dir.path(sock), &dir.path(log))
        };
    let mut common = format!("cluster_key = {}\nfailover = true\nfailover.policy = {policy}\nfailover.witnesses = 1,2,3\nfailover.switchover-hold = 1s\nfailover.switchover-min-interval = 2s\nmodel.memory = 8MiB\nmodel.service = {vip}:7000\nstats_interval = 1s\n", key.display());
    if let Some(rate) = setup.dirty_rate {
        common.push_str(&format!("model.dirty_rate = {rate}\n"));
    }
    let (claim, release) = (dir.path("claim-address"), dir.path("release-address"));
    write_script(&claim, &format!("#!/bin/sh\nip addr add {vip}/24 dev eth0 2>/dev/null\narping -q -U -c 2 -w 1 -I eth0 {vip} || true\n"))?;
    write_script(
        &release,
        &format!("#!/bin/sh\nip addr del {vip}/24 dev eth0 2>/dev/null || true\n"),
    )?;
    let wcommon = format!(
        "cluster_key = {}\nfailover.policy = {policy}\nfailover.witnesses = 1,2,3\n",
        key.display()
    );
    let mut witnesses = vec![];
    for i in 1..=3u8 {
        let k = usize::from(i - 1);
        let conf = dir.path(&format!("w{i}.conf"));
        std::fs::write(
            &conf,
            format!(
                "id = {i}\nnode = witness-{i}\nlisten = {}:7400\nprimary = {}\nstandby = {}\nprobe = line {} PING PONG\nstate_file = {}\ncontrol = {}\n{wcommon}",
                ip(Host::W(i), Net::Client),
                w_primary[k],
                w_standby[k],
                w_probe[k],
                dir.path(&format!("w{i}.state")).display(),
                dir.path(&format!("w{i}.sock")).display()
            ),
        )
        .map_err(|e| e.to_string())?;
        witnesses.push(launch(
            Host::W(i),
            "hsb-witness",
            &format!("witness {i}"),
            &conf,
            &format!("w{i}.sock"),
            &format!("w{i}.log"),
        ));
    }
    // After a hand-over: B is the primary replicating to A, A the standby (direct addresses).
    let (promote, rejoin) = (dir.path("promote.conf"), dir.path("rejoin.conf"));
    if setup.rejoin {
        std::fs::write(
            &promote,
            format!(
                "node = host-b-primary\nstate_file = {b_state}\nstandby = {a_r}:7100\ncontrol = {}\nreconnect_interval = 50ms\nheartbeat_peers = {a_r}:7200\nwitness_listen = 0.0.0.0:7300\nwitness_peers = {}\nstandby_witness = {a_r}:7301\non_fence = {}\ndecision_log = {}\n{common}",
                dir.path("promoted.sock").display(),
                s_peers.join(","),
                release.display(),
                dir.path("promoted.decisions").display()
            ),
        )
        .map_err(|e| e.to_string())?;
        std::fs::write(
            &rejoin,
            format!(
                "node = host-a-standby\nstate_file = {a_state}\nlisten = {a_r}:7100\ncontrol = {}\nheartbeat_listen = {a_r}:7200\nwitness_listen = 0.0.0.0:7301\nwitness_peers = {}\nprimary_witness = {b_r}:7300\non_activate = {}\ndecision_log = {}\n{common}",
                dir.path("rejoined.sock").display(),
                p_peers.join(","),
                claim.display(),
                dir.path("rejoined.decisions").display()
            ),
        )
        .map_err(|e| e.to_string())?;
    }
    let (promote_lines, rejoin_lines) = if setup.rejoin {
        (
            format!(
                "promote_config = {}\npromote_image = {}\n",
                promote.display(),
                dir.path("promote.img").display()
            ),
            format!("rejoin_config = {}\n", rejoin.display()),
        )
    } else {
        (String::new(), String::new())
    };
    let sconf = dir.path("standby.conf");
    std::fs::write(
        &sconf,
        format!(
            "node = host-b\nstate_file = {b_state}\nlisten = {b_r}:7100\ncontrol = {}\nheartbeat_listen = {b_r}:7200\nwitness_listen = 0.0.0.0:7300\nwitness_peers = {}\nprimary_witness = {standby_fence}\non_activate = {}\ndecision_log = {}\n{promote_lines}{common}",
            dir.path("b.sock").display(),
            s_peers.join(","),
            claim.display(),
            dir.path("b.decisions").display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let standby = launch(
        Host::B,
        "hsb-standby",
        "hsb-standby (host B)",
        &sconf,
        "b.sock",
        "b.log",
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
            "node = host-a\nstate_file = {a_state}\nstandby = {primary_repl}\ncontrol = {}\nreconnect_interval = 50ms\nheartbeat_peers = {primary_hb}\nwitness_listen = 0.0.0.0:7301\nwitness_peers = {}\nstandby_witness = {primary_fence}\non_fence = {}\ndecision_log = {}\n{rejoin_lines}{common}",
            dir.path("a.sock").display(),
            p_peers.join(","),
            release.display(),
            dir.path("a.decisions").display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let primary = launch(
        Host::A,
        "hsb-primary",
        "hsb-primary (host A)",
        &pconf,
        "a.sock",
        "a.log",
    );
    // Protected, unless the standby activates first (then the case starts again).
    let t = Instant::now();
    loop {
        if primary.status().get("authority").map(String::as_str) == Some("protected") {
            break;
        }
        if serving(&standby, &dir.0) {
            return Err(STARTUP_ACTIVATION.into());
        }
        if t.elapsed() > Duration::from_secs(30) {
            return Err(format!(
                "the primary was not protected within 30 s:\n{}",
                primary.log_text()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for w in &witnesses {
        w.wait_for("application up", Duration::from_secs(10), |s| {
            s.get("application").map(String::as_str) == Some("up")
        });
    }
    // Witnesses grant nothing for the longest lease after they start.
    std::thread::sleep(Duration::from_millis(2300));
    if serving(&standby, &dir.0) {
        return Err(STARTUP_ACTIVATION.into());
    }
    let service = parse_addr(&format!("{vip}:7000"))?;
    Ok(Nodes {
        primary,
        standby,
        _witnesses: witnesses,
        extra: vec![],
        service,
        shaper,
        _relays: (tcp, udp),
        dir,
        topo,
    })
}
