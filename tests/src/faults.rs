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
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::netns::{Host, Net, Topology};
use crate::relay::{Link, Shaper, TcpRelay, UdpRelay};
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
    /// Host A is cut off from the client network; the replication network is fine.
    F4,
    /// The guest's application hangs: host A takes no TCP to the service port (witness probes
    /// and clients time out) while its daemon, the heartbeat and replication are fine.
    F5,
    /// The primary is paused (SIGSTOP) for less than a lease, then continued.
    F6Short,
    /// The primary is paused for twice the lease, then continued.
    F6Long,
    /// Host B is cut off from everything.
    F7,
    /// A and B cut off from each other (both networks); witness 1 on A's side, 2 and 3 on B's.
    F8MajorityB,
    /// A and B cut off from each other; witnesses 1 and 2 on A's side, 3 on B's.
    F8MajorityA,
    /// Every witness unreachable and the replication link cut.
    F9,
    /// 30% loss of what B receives on the replication network (heartbeats and checkpoints).
    F10,
    /// F10's loss, and every path through a relay adding 20 ms ± 15 ms (replication stream and
    /// heartbeats, witness datagrams both ways, witness probes).
    F10Delay,
    /// Every host's monotonic clock offset differently (time namespaces), then host A crashes.
    F11Crash,
    /// Every host's monotonic clock offset differently, then the replication link is cut.
    F11Cut,
    /// F1, then host A comes back and starts as the standby of the promoted copy on B.
    F12AfterF1,
    /// F4 with hand-overs on: B switches over and promotes itself to primary, the old primary
    /// steps down and rejoins as B's standby; then A's client link heals.
    F12AfterF4,
    /// Issue 12: A's replication link limited to 10 Mbit/s (htb) with a busy guest (50,000
    /// pages/s), so acks come later than the ack lease while the standby is alive; after
    /// [`SLOW_FOR`] host A crashes. Protection must hold throughout (output waits for the acks)
    /// and the crash fail over with nothing acknowledged lost.
    F13SlowLink,
    /// Issue 12: 20% of what arrives at host A on the client network is lost (witness probes and
    /// pings, clients) for [`GRAY_FOR`]; host B reachable cleanly. No switchover.
    F14Gray20,
    /// The same at 50%: one switchover (rule 6).
    F14Gray50,
    /// The same at 80%: one switchover.
    F14Gray80,
    /// Not a fault: the operator runs `hsb-standby activate` on B while the primary is alive
    /// and serving (rule 9). It used to split the brain (both copies served for 8-18 s).
    OperatorActivate,
}

/// How long F13's slow link lasts before host A crashes.
pub const SLOW_FOR: Duration = Duration::from_secs(15);
/// How long F14's loss lasts.
pub const GRAY_FOR: Duration = Duration::from_secs(12);
/// F13's replication link, Mbit/s.
pub const SLOW_MBIT: u32 = 10;
/// F13's guest: pages written per second.
pub const BUSY_PAGES: u32 = 50_000;

impl Fault {
    /// Every fault, in order.
    pub const ALL: [Fault; 22] = [
        Fault::F1,
        Fault::F2,
        Fault::F3,
        Fault::F4,
        Fault::F5,
        Fault::F6Short,
        Fault::F6Long,
        Fault::F7,
        Fault::F8MajorityB,
        Fault::F8MajorityA,
        Fault::F9,
        Fault::F10,
        Fault::F10Delay,
        Fault::F11Crash,
        Fault::F11Cut,
        Fault::F12AfterF1,
        Fault::F12AfterF4,
        Fault::F13SlowLink,
        Fault::F14Gray20,
        Fault::F14Gray50,
        Fault::F14Gray80,
        Fault::OperatorActivate,
    ];

    /// Name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Fault::F1 => "F1 host A crash",
            Fault::F2 => "F2 replication link cut",
            Fault::F3 => "F3 one-way loss A->B",
            Fault::F4 => "F4 host A cut off from clients",
            Fault::F5 => "F5 guest application hung",
            Fault::F6Short => "F6 primary paused 0.5 s",
            Fault::F6Long => "F6 primary paused 4 s (2x lease)",
            Fault::F7 => "F7 host B isolated",
            Fault::F8MajorityB => "F8 split: W1 with A, W2 W3 with B",
            Fault::F8MajorityA => "F8 split: W1 W2 with A, W3 with B",
            Fault::F9 => "F9 witnesses unreachable, link cut",
            Fault::F10 => "F10 30% loss A->B",
            Fault::F10Delay => "F10 30% loss + 20±15 ms delay, all paths",
            Fault::F11Crash => "F11 clocks offset per host, A crash",
            Fault::F11Cut => "F11 clocks offset per host, link cut",
            Fault::F12AfterF1 => "F12 rejoin after F1",
            Fault::F12AfterF4 => "F12 rejoin after F4",
            Fault::F13SlowLink => "F13 slow link 10 Mbit/s, busy guest, then A crash",
            Fault::F14Gray20 => "F14-20 gray client path, 20% loss to A",
            Fault::F14Gray50 => "F14-50 gray client path, 50% loss to A",
            Fault::F14Gray80 => "F14-80 gray client path, 80% loss to A",
            Fault::OperatorActivate => "R9 operator activate, primary alive",
        }
    }

    /// Whether failing over is the right decision (`None`: either, as long as one copy serves).
    pub fn failover_expected(self) -> Option<bool> {
        match self {
            Fault::F1
            | Fault::F4
            | Fault::F8MajorityB
            | Fault::F11Crash
            | Fault::F12AfterF1
            | Fault::F12AfterF4
            | Fault::F13SlowLink
            | Fault::F14Gray50
            | Fault::F14Gray80
            | Fault::OperatorActivate => Some(true),
            // A frozen primary looks dead to its clients after a detection time: failing over
            // is right as long as it is fenced when it resumes (never two active).
            Fault::F6Short | Fault::F6Long => None,
            _ => Some(false),
        }
    }

    /// The fault injected, for the cases that add something around another one.
    fn base(self) -> Fault {
        match self {
            Fault::F11Crash | Fault::F12AfterF1 => Fault::F1,
            Fault::F11Cut => Fault::F2,
            Fault::F12AfterF4 => Fault::F4,
            f => f,
        }
    }

    fn setup(self) -> Setup {
        Setup {
            clocks: matches!(self, Fault::F11Crash | Fault::F11Cut),
            relays: self == Fault::F10Delay,
            // Hand-overs are configured in every case, so every case ends with the healing
            // check (F12); only where host A stays down is there nothing to heal.
            rejoin: true,
            dirty_rate: (self == Fault::F13SlowLink).then_some(BUSY_PAGES),
            // Over a slow link a reply waits seconds for its ack: the client waits too.
            client_timeout: if self == Fault::F13SlowLink {
                Duration::from_secs(30)
            } else {
                Duration::from_millis(700)
            },
        }
    }
}

/// How a case's cluster is set up beyond the defaults.
#[derive(Debug, Clone, Copy)]
struct Setup {
    /// Each host's daemon in a time namespace with its own monotonic offset ([`CLOCKS`]).
    clocks: bool,
    /// Every path between daemons (and the witnesses' probes) through a relay in the root
    /// namespace whose delay the case sets.
    relays: bool,
    /// Hand-overs: an activated standby promotes itself to hsb-primary, a primary that steps
    /// down rejoins as its standby (every case).
    rejoin: bool,
    /// The model guest's workload (pages written per second), if not the default.
    dirty_rate: Option<u32>,
    /// How long the client waits for each reply.
    client_timeout: Duration,
}

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
    /// F12 after this fault: `Some(ms)` if, that long after healing, one copy served protected by
    /// the other, which it had synchronised from scratch; `None` if not within the bound; not
    /// checked (`healable == false`) where host A stays down.
    pub healed_ms: Option<u64>,
    pub healable: bool,
    pub note: String,
}

/// Check a sequential client's history: acknowledged values must increase, and by no more than
/// the requests sent so far allow: each unacknowledged request may have been applied once, at
/// any later time (a request whose reply was lost, or a retransmission of it that arrives only
/// after a partition heals). Returns (acked, lost, doubled, longest time without an
/// acknowledged reply, counted from the first request to the last).
pub fn check_history(ops: &[Op]) -> (u64, u64, u64, Duration) {
    let (mut acked, mut lost, mut doubled) = (0, 0, 0);
    let mut prev: Option<(u64, Instant)> = None;
    // Unacknowledged requests whose effect has not been seen yet.
    let mut maybe_pending = 0u64;
    let mut gap = Duration::ZERO;
    for op in ops {
        match op.value {
            None => maybe_pending += 1,
            Some(v) => {
                acked += 1;
                if let Some((p, t)) = prev {
                    if v <= p {
                        lost += 1;
                    } else {
                        let extra = v - p - 1;
                        if extra > maybe_pending {
                            doubled += 1;
                            maybe_pending = 0;
                        } else {
                            maybe_pending -= extra;
                        }
                    }
                    gap = gap.max(op.end.duration_since(t));
                }
                prev = Some((v, op.end));
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

/// Fields drop in order: the daemons stop before the relays, namespaces and files go.
struct Nodes {
    primary: Daemon,
    standby: Daemon,
    _witnesses: Vec<Daemon>,
    /// Daemons a case starts later (host A restarted as a standby).
    extra: Vec<Daemon>,
    service: SocketAddr,
    /// The shaper of every relay (with [`Setup::relays`]).
    shaper: Shaper,
    _relays: (Vec<TcpRelay>, Vec<UdpRelay>),
    dir: TempDir,
    topo: Topology,
}

impl Nodes {
    /// A status-only handle on a control socket (after a hand-over the process is the same,
    /// its control socket is the new configuration's).
    fn handle(&self, name: &str, sock: &str, log: &str) -> Daemon {
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

fn start(policy: &str, setup: Setup) -> Result<Nodes, String> {
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
        let mut cmd = command(Host::W(i), "hsb-witness");
        cmd.args(["run", "-c"]).arg(&conf);
        witnesses.push(Daemon::start_command(
            &format!("witness {i}"),
            cmd,
            &dir.path(&format!("w{i}.sock")),
            &dir.path(&format!("w{i}.log")),
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
    let mut cmd = command(Host::B, "hsb-standby");
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
            "node = host-a\nstate_file = {a_state}\nstandby = {primary_repl}\ncontrol = {}\nreconnect_interval = 50ms\nheartbeat_peers = {primary_hb}\nwitness_listen = 0.0.0.0:7301\nwitness_peers = {}\nstandby_witness = {primary_fence}\non_fence = {}\ndecision_log = {}\n{rejoin_lines}{common}",
            dir.path("a.sock").display(),
            p_peers.join(","),
            release.display(),
            dir.path("a.decisions").display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let mut cmd = command(Host::A, "hsb-primary");
    cmd.args(["run", "-c"]).arg(&pconf);
    let primary = Daemon::start_command(
        "hsb-primary (host A)",
        cmd,
        &dir.path("a.sock"),
        &dir.path("a.log"),
    );
    // Protected, unless the standby activates first (then the case starts again).
    let t = Instant::now();
    loop {
        if primary.status().get("authority").map(String::as_str) == Some("protected") {
            break;
        }
        if standby.status().get("state").is_some_and(|s| s == "active")
            || promoted_status(&dir.0).contains_key("role")
        {
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
    if standby.status().get("state").is_some_and(|s| s == "active")
        || promoted_status(&dir.0).contains_key("role")
    {
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

/// Why [`start`] gives up on a cluster whose standby activated before any fault (the
/// heartbeat-only baseline does when the primary's first full synchronisation delays its first
/// heartbeats past the detector's timeout).
const STARTUP_ACTIVATION: &str = "the standby activated during startup, before the fault";

/// How long after healing a case waits for one copy protected by the other (F12).
const HEAL_WAIT: Duration = Duration::from_secs(20);

/// Starts a case tries before it reports a startup activation as its outcome.
const STARTS: u32 = 6;

/// The status of B's promoted primary (empty while there is none).
fn promoted_status(dir: &std::path::Path) -> std::collections::HashMap<String, String> {
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
fn b_serving(n: &Nodes) -> bool {
    n.standby
        .status()
        .get("state")
        .is_some_and(|s| s == "active")
        || promoted_status(&n.dir.0).contains_key("role")
}

/// What the monitor saw, sampling every daemon's status every 20 ms.
#[derive(Debug, Default)]
struct Seen {
    /// Time during which A's copy and B's copy both had authority to release output.
    split: Duration,
    /// When B's copy first served (activated standby or promoted primary).
    b_active_at: Option<Instant>,
    /// B said the guest failed (F5's alert).
    guest_alert: bool,
    /// Times B's heartbeat detector went from trusting to suspecting the primary.
    suspicions: u32,
    /// Changes of A's authority (protected, unprotected, holding, fenced).
    authority_changes: u32,
}

fn has_authority(s: &std::collections::HashMap<String, String>) -> bool {
    // Protected, degraded counts too: it releases (acknowledged) output.
    matches!(
        s.get("authority").map(String::as_str),
        Some("protected" | "protected-degraded" | "unprotected")
    )
}

fn monitor(dir: &std::path::Path, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Seen> {
    let sock = |n: &str| dir.join(n);
    let (a, b, promoted, rejoined) = (
        sock("a.sock"),
        sock("b.sock"),
        sock("promoted.sock"),
        sock("rejoined.sock"),
    );
    std::thread::spawn(move || {
        let status = |p: &std::path::Path| {
            crate::parse_status(
                &hsb_common::ctl::request(p, "status", Duration::from_millis(200))
                    .unwrap_or_default(),
            )
        };
        let mut seen = Seen::default();
        let (mut last, mut suspected, mut authority) = (Instant::now(), false, None::<String>);
        while !stop.load(Ordering::Relaxed) {
            // B's side first: A counted as serving after B was seen serving is a real overlap.
            let (sb, sp) = (status(&b), status(&promoted));
            let (sa, sr) = (status(&a), status(&rejoined));
            let now = Instant::now();
            let a_serves = has_authority(&sa) || sr.get("state").is_some_and(|s| s == "active");
            let b_serves = sb.get("state").is_some_and(|s| s == "active") || has_authority(&sp);
            if b_serves && seen.b_active_at.is_none() {
                seen.b_active_at = Some(now);
            }
            if a_serves && b_serves {
                seen.split += now - last;
            }
            seen.guest_alert |= sb.get("last_decision").is_some_and(|d| d.contains("guest"));
            if let Some(s) = sb.get("primary_suspected") {
                let now_suspected = s == "true";
                seen.suspicions += u32::from(now_suspected && !suspected);
                suspected = now_suspected;
            }
            if let Some(auth) = sa.get("authority") {
                if authority.as_ref().is_some_and(|x| x != auth) {
                    seen.authority_changes += 1;
                }
                authority = Some(auth.clone());
            }
            last = now;
            std::thread::sleep(Duration::from_millis(20));
        }
        seen
    })
}

/// A sequential client of the service address, recording its history until `stop`.
pub fn client(svc: SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<Op>> {
    client_paced(svc, stop, Duration::from_millis(700), Duration::ZERO)
}

/// Like [`client`], starting a request at most every `every` (a copy serving without output
/// commit answers at once, and an unpaced client would spin the machine's cores for it).
pub fn client_every(
    svc: SocketAddr,
    stop: Arc<AtomicBool>,
    every: Duration,
) -> std::thread::JoinHandle<Vec<Op>> {
    client_paced(svc, stop, Duration::from_millis(700), every)
}

/// [`client`], waiting up to `timeout` for each reply.
pub fn client_with(
    svc: SocketAddr,
    stop: Arc<AtomicBool>,
    timeout: Duration,
) -> std::thread::JoinHandle<Vec<Op>> {
    client_paced(svc, stop, timeout, Duration::ZERO)
}

/// A sequential client waiting up to `timeout` for each reply and starting a request at most
/// every `every`.
fn client_paced(
    svc: SocketAddr,
    stop: Arc<AtomicBool>,
    timeout: Duration,
    every: Duration,
) -> std::thread::JoinHandle<Vec<Op>> {
    std::thread::spawn(move || {
        let mut history = vec![];
        let mut c: Option<Client> = None;
        while !stop.load(Ordering::Relaxed) {
            let t0 = Instant::now();
            if c.is_none() {
                c = Client::connect(svc, Duration::from_millis(300)).ok();
                if let Some(cl) = &c {
                    cl.set_timeout(timeout);
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
            history.push(Op {
                start: t0,
                end: Instant::now(),
                value,
            });
            if let Some(rest) = every.checked_sub(t0.elapsed()) {
                std::thread::sleep(rest);
            }
        }
        history
    })
}

/// F14's loss, percent.
fn gray_loss(fault: Fault) -> u8 {
    match fault {
        Fault::F14Gray20 => 20,
        Fault::F14Gray50 => 50,
        _ => 80,
    }
}

/// The rates each witness reported in B's switchover decision (its decision log).
fn switchover_rates(log: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let e = text
        .lines()
        .filter(|l| l.contains("\"k\":\"evidence\"") && l.contains("rule6:switchover"))
        .find_map(|l| hsb_common::decision::Evidence::from_json_line(l).ok())?;
    let pct = |r: Option<u8>| r.map_or("-".to_string(), |r| format!("{r}%"));
    let ws: Vec<String> = e
        .witnesses
        .iter()
        .map(|w| {
            format!(
                "w{} {} app {} primary {} standby {}",
                w.id,
                w.app,
                pct(w.rates.app),
                pct(w.rates.primary),
                pct(w.rates.standby)
            )
        })
        .collect();
    Some(ws.join(", "))
}

/// Addresses of the witnesses, by number.
fn witness_ips(topo: &Topology, ws: &[u8]) -> Vec<String> {
    ws.iter()
        .map(|i| topo.ip(Host::W(*i), Net::Client))
        .collect()
}

/// Run one fault case under `policy` ("client-oriented" or "heartbeat-only").
pub fn run_case(fault: Fault, policy: &str) -> Result<Outcome, String> {
    let setup = fault.setup();
    if setup.clocks {
        crate::netns::time_namespaces_available()?;
    }
    let mut discarded = 0;
    // F13: whether A was ever seen unprotected while its standby was slow but there.
    let mut slow_unprotected = false;
    // F13: whether A's status ever said protected-degraded without the words and the lag.
    let mut slow_unworded = false;
    let (mut n, stop, client, monitor) = loop {
        let started = start(policy, setup).and_then(|n| {
            // Traffic and sampling start before the fault; B must not be serving yet.
            let stop = Arc::new(AtomicBool::new(false));
            let client = client_with(n.service, stop.clone(), setup.client_timeout);
            let monitor = monitor(&n.dir.0, stop.clone());
            std::thread::sleep(Duration::from_secs(1));
            if b_serving(&n) {
                stop.store(true, Ordering::Relaxed);
                let _ = client.join();
                let _ = monitor.join();
                return Err(STARTUP_ACTIVATION.to_string());
            }
            Ok((n, stop, client, monitor))
        });
        match started {
            Err(e) if e == STARTUP_ACTIVATION && discarded < STARTS - 1 => discarded += 1,
            Err(e) if e == STARTUP_ACTIVATION => {
                // A result too: this policy cannot even start a protected pair on this machine
                // now (the fault is never injected).
                return Ok(Outcome {
                    fault,
                    policy: policy.to_string(),
                    failed_over: true,
                    correct: false,
                    decide_ms: None,
                    unavailable_ms: 0,
                    split_ms: 0,
                    acked: 0,
                    lost: 0,
                    doubled: 0,
                    healed_ms: None,
                    healable: false,
                    note: format!("the standby activated during startup in all {STARTS} starts; fault not injected"),
                });
            }
            other => break other?,
        }
    };
    // A's replication sessions and full synchronisations before the fault.
    let a_before = {
        let a = n.primary.status();
        (num(&a, "sessions"), num(&a, "full_syncs"))
    };
    let mut injected = Instant::now();
    let mut note = String::new();
    if discarded > 0 {
        note.push_str(&format!(
            "{discarded} start(s) discarded: the standby activated before the fault; "
        ));
    }
    let (a_c, b_c) = (
        n.topo.ip(Host::A, Net::Client),
        n.topo.ip(Host::B, Net::Client),
    );
    let f8_sides: Option<(&[u8], &[u8])> = match fault {
        Fault::F8MajorityB => Some((&[1], &[2, 3])),
        Fault::F8MajorityA => Some((&[1, 2], &[3])),
        _ => None,
    };
    let topo = &n.topo;
    match fault.base() {
        Fault::F1 => {
            n.primary.kill9();
            topo.link(Host::A, Net::Client, false)?;
            topo.link(Host::A, Net::Replication, false)?;
        }
        Fault::F2 => topo.link(Host::A, Net::Replication, false)?,
        Fault::F3 => topo.drop_arriving(Host::B, Net::Replication, 100)?,
        Fault::F4 => topo.link(Host::A, Net::Client, false)?,
        Fault::F5 => topo.set_rules(Host::A, &["in tcp dport 7000 drop".into()])?,
        Fault::F6Short | Fault::F6Long => n.primary.signal("STOP"),
        Fault::F7 => {
            topo.link(Host::B, Net::Client, false)?;
            topo.link(Host::B, Net::Replication, false)?;
        }
        Fault::F8MajorityA | Fault::F8MajorityB => {
            let (a_side, b_side) = f8_sides.unwrap_or_default();
            // The sides first, the replication link last: were the link cut first, A would
            // get a lease from a quorum that still includes B's side, run unprotected, and B
            // would rightly refuse its stale replica (rule 5) instead of taking over.
            let mut from_a = vec![b_c.clone()];
            from_a.extend(witness_ips(topo, b_side));
            topo.isolate_from(Host::A, &from_a)?;
            let mut from_b = vec![a_c.clone()];
            from_b.extend(witness_ips(topo, a_side));
            topo.isolate_from(Host::B, &from_b)?;
            topo.link(Host::A, Net::Replication, false)?;
        }
        Fault::F9 => {
            for i in 1..=3 {
                topo.link(Host::W(i), Net::Client, false)?;
            }
            topo.link(Host::A, Net::Replication, false)?;
        }
        Fault::F10 => topo.drop_arriving(Host::B, Net::Replication, 30)?,
        Fault::F10Delay => {
            n.shaper.set(DELAY, JITTER);
            topo.drop_arriving(Host::B, Net::Replication, 30)?;
        }
        Fault::OperatorActivate => {
            let out = std::process::Command::new(bin("hsb-standby"))
                .arg("activate")
                .arg("--control")
                .arg(n.dir.path("b.sock"))
                .output()
                .map_err(|e| format!("hsb-standby activate: {e}"))?;
            let answer = String::from_utf8_lossy(&out.stdout);
            note.push_str(&format!(
                "operator: `hsb-standby activate` said {:?}; ",
                answer.trim()
            ));
        }
        Fault::F13SlowLink => {
            topo.shape(Host::A, Net::Replication, SLOW_MBIT)?;
            // What protection looked like from A while the link was slow, sampled every 100 ms.
            let mut modes: std::collections::BTreeMap<String, u32> = Default::default();
            let (mut lag, mut lag_ms, mut ckpts) = (0u64, 0f64, (0u64, 0u64));
            // Samples protected-degraded whose `protection` did not say so with the lag.
            let mut unworded = 0u32;
            let t = Instant::now();
            ckpts.0 = num(&n.primary.status(), "checkpoints");
            while t.elapsed() < SLOW_FOR {
                let a = n.primary.status();
                if let Some(m) = a.get("authority") {
                    *modes.entry(m.clone()).or_default() += 1;
                    // Status says it in words too, with the lag (issue 12).
                    let said = a.get("protection").map_or("", String::as_str);
                    if m == "protected-degraded"
                        && !(said.starts_with("protected, degraded")
                            && said.contains("replica lag"))
                    {
                        unworded += 1;
                    }
                }
                lag = lag.max(num(&a, "replica_lag_checkpoints"));
                lag_ms = lag_ms.max(
                    a.get("replica_lag_ms")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0.0),
                );
                ckpts.1 = num(&a, "checkpoints");
                std::thread::sleep(Duration::from_millis(100));
            }
            let samples: Vec<String> = modes.iter().map(|(m, c)| format!("{m} {c}")).collect();
            let unprotected = modes.get("unprotected").copied().unwrap_or(0);
            if unprotected > 0 {
                slow_unprotected = true;
            }
            if unworded > 0 {
                slow_unworded = true;
                note.push_str(&format!(
                    "{unworded} protected-degraded sample(s) of A's status without \"protected, degraded\" and the lag in `protection`; "
                ));
            }
            note.push_str(&format!(
                "{} Mbit/s for {} s: A's authority samples {}; {:.2} ckpt/s; replica lag up to {lag} checkpoint(s), {:.0} ms; then A crashed; ",
                SLOW_MBIT,
                SLOW_FOR.as_secs(),
                samples.join(", "),
                ckpts.1.saturating_sub(ckpts.0) as f64 / SLOW_FOR.as_secs_f64(),
                lag_ms
            ));
            n.primary.kill9();
            topo.link(Host::A, Net::Client, false)?;
            topo.link(Host::A, Net::Replication, false)?;
            injected = Instant::now();
        }
        Fault::F14Gray20 | Fault::F14Gray50 | Fault::F14Gray80 => {
            topo.drop_arriving(Host::A, Net::Client, gray_loss(fault))?
        }
        other => return Err(format!("{other:?} has no injection of its own")),
    }
    let hold = match fault {
        Fault::F6Short => Duration::from_millis(500),
        Fault::F6Long => Duration::from_secs(4),
        Fault::F14Gray20 | Fault::F14Gray50 | Fault::F14Gray80 => GRAY_FOR,
        _ => Duration::from_secs(5),
    };
    std::thread::sleep(hold);
    if matches!(
        fault,
        Fault::F14Gray20 | Fault::F14Gray50 | Fault::F14Gray80
    ) {
        // What the witnesses measured, at the end of the loss.
        let rates: Vec<String> = n
            ._witnesses
            .iter()
            .map(|w| {
                let st = w.status();
                let r = |k: &str| st.get(k).cloned().unwrap_or_else(|| "?".into());
                format!(
                    "{}/{}/{}",
                    r("application_rate"),
                    r("primary_daemon_rate"),
                    r("standby_daemon_rate")
                )
            })
            .collect();
        note.push_str(&format!(
            "witness rates at the end (application/primary/standby %): {}; ",
            rates.join(", ")
        ));
    }
    let healed = Instant::now();
    let topo = &n.topo;
    match fault.base() {
        Fault::F1 if fault == Fault::F12AfterF1 => {
            // Host A reboots: without the VM (so without its address), and starts hsb-standby
            // for the copy that now runs on B.
            let _ = topo.exec(
                Host::A,
                &[
                    "ip",
                    "addr",
                    "del",
                    &format!("{}/24", topo.service_ip()),
                    "dev",
                    "eth0",
                ],
            );
            topo.link(Host::A, Net::Client, true)?;
            topo.link(Host::A, Net::Replication, true)?;
            let mut cmd = topo.command(Host::A, &bin("hsb-standby"));
            cmd.args(["run", "-c"]).arg(n.dir.path("rejoin.conf"));
            n.extra.push(Daemon::start_command(
                "hsb-standby (host A, restarted)",
                cmd,
                &n.dir.path("rejoined.sock"),
                &n.dir.path("a-restarted.log"),
            ));
            note.push_str("host A restarted as the standby; ");
        }
        Fault::F1 => note.push_str("host A stays down; "),
        Fault::F2 => topo.link(Host::A, Net::Replication, true)?,
        Fault::F3 | Fault::F10 => topo.clear_rules(Host::B),
        Fault::F14Gray20 | Fault::F14Gray50 | Fault::F14Gray80 => topo.clear_rules(Host::A),
        Fault::F13SlowLink => note.push_str("host A stays down; "),
        Fault::F10Delay => {
            n.shaper.clear();
            topo.clear_rules(Host::B);
        }
        Fault::F5 => topo.clear_rules(Host::A),
        Fault::F6Short | Fault::F6Long => n.primary.signal("CONT"),
        Fault::F7 => {
            topo.link(Host::B, Net::Client, true)?;
            topo.link(Host::B, Net::Replication, true)?;
        }
        // A fenced old primary gives up the service address itself (`on_fence`).
        Fault::F4 => topo.link(Host::A, Net::Client, true)?,
        Fault::OperatorActivate => {}
        Fault::F8MajorityA | Fault::F8MajorityB => {
            topo.clear_rules(Host::A);
            topo.clear_rules(Host::B);
            topo.link(Host::A, Net::Replication, true)?;
        }
        Fault::F9 => {
            for i in 1..=3 {
                topo.link(Host::W(i), Net::Client, true)?;
            }
            topo.link(Host::A, Net::Replication, true)?;
        }
        _ => {}
    }
    // F12: one copy must end up serving, protected by the other, synchronised from scratch after
    // the fault (bounded wait), before the last stretch of traffic. If B took over: B's promoted
    // primary protected by A rejoined as its standby. If not: A protected again, by a full
    // synchronisation if its session with B was lost.
    let healable =
        !(fault.base() == Fault::F1 && fault != Fault::F12AfterF1) && fault != Fault::F13SlowLink;
    let mut healed_in = None;
    let mut took_over = false;
    if healable {
        let promoted = n.handle("promoted primary (host B)", "promoted.sock", "b.log");
        let rejoined = n.handle("rejoined standby (host A)", "rejoined.sock", "a.log");
        let t = Instant::now();
        while t.elapsed() < HEAL_WAIT {
            let p = promoted.status();
            let b_took_over = !p.is_empty() || b_serving(&n);
            took_over = b_took_over;
            let ok = if b_took_over {
                let r = rejoined.status();
                p.get("authority").is_some_and(|a| a == "protected")
                    && num(&p, "full_syncs") >= 1
                    && r.get("role").is_some_and(|r| r == "standby")
                    && r.get("state").is_some_and(|s| s != "active")
            } else {
                let a = n.primary.status();
                a.get("authority").is_some_and(|x| x == "protected")
                    && (num(&a, "sessions") == a_before.0 || num(&a, "full_syncs") > a_before.1)
            };
            if ok {
                healed_in = Some(healed.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if matches!(fault, Fault::F12AfterF1 | Fault::F12AfterF4) {
            match (healed_in, took_over) {
                (Some(d), true) => note.push_str(&format!(
                    "B promoted, A resynchronised from scratch, B protected {} ms after healing; ",
                    d.as_millis()
                )),
                (Some(_), false) => note.push_str("no takeover, so no rejoin: A protected again; "),
                (None, _) => note.push_str("no rejoin: B not protected by a resynchronised A; "),
            }
        }
    }
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let ops = client.join().unwrap_or_default();
    let seen = monitor.join().unwrap_or_default();
    let vip = n.topo.service_ip();
    // A host that crashed and stayed down holds nothing.
    let a_down = !healable;
    let holders: Vec<&str> = [(Host::A, "A"), (Host::B, "B")]
        .iter()
        .filter(|(h, _)| !(a_down && *h == Host::A) && n.topo.has_addr(*h, &vip))
        .map(|(_, name)| *name)
        .collect();
    let (acked, lost, doubled, gap) = check_history(&ops);
    if let Some(path) = std::env::var_os("HSB_FAULTS_HISTORY") {
        // For debugging a case: the client's history, one request a line.
        let t0 = ops.first().map(|o| o.start);
        let lines: Vec<String> = ops
            .iter()
            .map(|o| {
                let at = t0.map_or(0, |t| o.start.duration_since(t).as_millis());
                let took = o.end.duration_since(o.start).as_millis();
                format!(
                    "{at} {took} {}",
                    o.value.map_or("-".into(), |v| v.to_string())
                )
            })
            .collect();
        let mut path = std::path::PathBuf::from(path);
        path.set_extension(policy);
        let _ = std::fs::write(path, lines.join("\n"));
    }
    let failed_over = seen.b_active_at.is_some();
    let mut decision_ok = fault.failover_expected().is_none_or(|e| e == failed_over);
    if matches!(fault, Fault::F6Short | Fault::F6Long) && failed_over {
        note.push_str("failed over while the primary was frozen; ");
    }
    if fault == Fault::F5 {
        // DESIGN.md §5: no failover, and an alert naming the guest.
        decision_ok &= seen.guest_alert;
        note.push_str(if seen.guest_alert {
            "guest-failure alert; "
        } else {
            "no guest-failure alert; "
        });
    }
    if matches!(fault, Fault::F12AfterF1 | Fault::F12AfterF4) {
        decision_ok &= healed_in.is_some();
    }
    if fault == Fault::F13SlowLink && slow_unprotected {
        // Issue 12: running unprotected is for a standby that is gone, not for a slow one.
        decision_ok = false;
        note.push_str("A ran unprotected during the slow link; ");
    }
    if fault == Fault::F13SlowLink && slow_unworded {
        decision_ok = false;
    }
    if matches!(
        fault,
        Fault::F14Gray20 | Fault::F14Gray50 | Fault::F14Gray80
    ) {
        // At most one switchover per incident: the serving copy's epoch.
        let epoch = num(&promoted_status(&n.dir.0), "epoch");
        let switchovers = epoch.saturating_sub(1);
        note.push_str(&format!("{switchovers} switchover(s); "));
        decision_ok &= switchovers <= 1;
        if let Some(rates) = switchover_rates(&n.dir.path("b.decisions")) {
            note.push_str(&format!("switchover evidence: {rates}; "));
        }
    }
    if matches!(fault, Fault::F10 | Fault::F10Delay | Fault::F13SlowLink) {
        note.push_str(&format!(
            "{} suspicion(s), {} authority change(s) on A; ",
            seen.suspicions, seen.authority_changes
        ));
    }
    if holders.len() != 1 || holders == ["B"] {
        note.push_str(&format!(
            "service address at the end on {}; ",
            if holders.is_empty() {
                "no host".to_string()
            } else {
                holders.join(" and ")
            }
        ));
    }
    if setup.clocks {
        note.push_str("monotonic clocks A +10 h, B +3 d, W1 +1 h, W3 +30 d; ");
    }
    Ok(Outcome {
        fault,
        policy: policy.to_string(),
        failed_over,
        correct: decision_ok && seen.split.is_zero() && lost == 0 && doubled == 0,
        decide_ms: seen
            .b_active_at
            .map(|t| t.saturating_duration_since(injected).as_millis() as u64),
        unavailable_ms: gap.as_millis() as u64,
        split_ms: seen.split.as_millis() as u64,
        acked,
        lost,
        doubled,
        healed_ms: healed_in.map(|d| d.as_millis() as u64),
        healable,
        note: note.trim_end_matches("; ").to_string(),
    })
}

impl Outcome {
    /// The healing column: `yes, N ms`, `**no**`, or `-` where host A stays down.
    pub fn healed(&self) -> String {
        match (self.healable, self.healed_ms) {
            (false, _) => "-".into(),
            (true, Some(ms)) => format!("yes, {ms} ms"),
            (true, None) => "**no**".into(),
        }
    }
}

/// A markdown table of outcomes.
pub fn markdown(outcomes: &[Outcome]) -> String {
    let mut s = String::from("| fault | policy | decision | correct | time to decide | longest unavailability | split brain | acked writes | acked lost | applied twice | healed (F12) | note |\n|---|---|---|---|---:|---:|---:|---:|---:|---:|---|---|\n");
    for o in outcomes {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} ms | {} ms | {} | {} | {} | {} | {} |\n",
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
            o.healed(),
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
                "{{\"fault\":\"{}\",\"policy\":\"{}\",\"failed_over\":{},\"correct\":{},\"decide_ms\":{},\"unavailable_ms\":{},\"split_brain_ms\":{},\"acked\":{},\"acked_lost\":{},\"applied_twice\":{},\"healable\":{},\"healed_ms\":{},\"note\":\"{}\"}}",
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
                o.healable,
                o.healed_ms.map_or("null".into(), |m| m.to_string()),
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

/// One measurement of [`shaped_link_bench`].
#[derive(Debug, Clone)]
pub struct LinkBench {
    /// The replication link's rate, Mbit/s (0: not shaped).
    pub mbit: u32,
    /// The guest's workload, pages written per second.
    pub pages: u32,
    /// How long the measurement ran.
    pub secs: f64,
    /// Reply latency of acknowledged requests (a sequential client): p50, p99, max.
    pub latency: (Duration, Duration, Duration),
    /// Requests acknowledged.
    pub acked: usize,
    /// Checkpoints per second, and MiB/s of checkpoint bytes sent.
    pub ckpt_per_s: f64,
    pub mib_per_s: f64,
    /// Replica lag (checkpoints taken but not acknowledged; age of the oldest): p50 and max.
    pub lag_ckpts: (u64, u64),
    pub lag_ms: (u64, u64),
    /// A's authority at each sample, counted.
    pub modes: std::collections::BTreeMap<String, u32>,
}

/// Output latency, checkpoints per second and replica lag of a protected pair whose
/// replication link is limited to `mbit` Mbit/s (htb on host A's side; 0: not shaped), with a
/// guest writing `pages` pages a second, over `secs` seconds after a warm-up (the witnesses,
/// defaults otherwise, as in the fault cases). BENCHMARKS.md, "Shaped replication link".
pub fn shaped_link_bench(mbit: u32, pages: u32, secs: u64) -> Result<LinkBench, String> {
    let setup = Setup {
        clocks: false,
        relays: false,
        rejoin: false,
        dirty_rate: Some(pages),
        client_timeout: Duration::from_secs(60),
    };
    let n = start("client-oriented", setup)?;
    if mbit > 0 {
        n.topo.shape(Host::A, Net::Replication, mbit)?;
    }
    // Past the onset (the link's queue fills up), then measure.
    std::thread::sleep(Duration::from_secs(3));
    let stop = Arc::new(AtomicBool::new(false));
    let client = client_with(n.service, stop.clone(), Duration::from_secs(60));
    let a0 = n.primary.status();
    let t0 = Instant::now();
    let (mut lags, mut lag_ms, mut modes) = (vec![], vec![], std::collections::BTreeMap::new());
    while t0.elapsed() < Duration::from_secs(secs) {
        let a = n.primary.status();
        if let Some(m) = a.get("authority") {
            *modes.entry(m.clone()).or_default() += 1;
        }
        lags.push(num(&a, "replica_lag_checkpoints"));
        lag_ms.push(
            a.get("replica_lag_ms")
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0) as u64,
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let a1 = n.primary.status();
    let elapsed = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let ops = client.join().unwrap_or_default();
    let mut lat: Vec<Duration> = ops
        .iter()
        .filter(|o| o.value.is_some())
        .map(|o| o.end.duration_since(o.start))
        .collect();
    lat.sort_unstable();
    let q = |v: &[Duration], p: f64| {
        v.get(((v.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or_default()
    };
    lags.sort_unstable();
    lag_ms.sort_unstable();
    let mid = |v: &[u64]| v.get(v.len() / 2).copied().unwrap_or(0);
    let d = |k: &str| num(&a1, k).saturating_sub(num(&a0, k)) as f64;
    Ok(LinkBench {
        mbit,
        pages,
        secs: elapsed,
        latency: (
            q(&lat, 0.5),
            q(&lat, 0.99),
            lat.last().copied().unwrap_or_default(),
        ),
        acked: lat.len(),
        ckpt_per_s: d("checkpoints") / elapsed,
        mib_per_s: d("bytes_sent") / elapsed / f64::from(1u32 << 20),
        lag_ckpts: (mid(&lags), lags.last().copied().unwrap_or(0)),
        lag_ms: (mid(&lag_ms), lag_ms.last().copied().unwrap_or(0)),
        modes,
    })
}

/// A markdown table of [`shaped_link_bench`] results.
pub fn link_bench_markdown(rows: &[LinkBench]) -> String {
    let mut s = String::from("| replication link | guest writes | reply latency p50 / p99 / max | replies | checkpoints/s | MiB/s sent | replica lag p50 / max (checkpoints) | replica lag p50 / max (ms) | A's authority (samples) |\n|---|---:|---:|---:|---:|---:|---:|---:|---|\n");
    for r in rows {
        let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1e3);
        let modes: Vec<String> = r.modes.iter().map(|(m, c)| format!("{m} {c}")).collect();
        s.push_str(&format!(
            "| {} | {} pages/s | {} / {} / {} ms | {} | {:.2} | {:.2} | {} / {} | {} / {} | {} |\n",
            if r.mbit == 0 {
                "not shaped".to_string()
            } else {
                format!("{} Mbit/s (htb)", r.mbit)
            },
            r.pages,
            ms(r.latency.0),
            ms(r.latency.1),
            ms(r.latency.2),
            r.acked,
            r.ckpt_per_s,
            r.mib_per_s,
            r.lag_ckpts.0,
            r.lag_ckpts.1,
            r.lag_ms.0,
            r.lag_ms.1,
            modes.join(", ")
        ));
    }
    s
}

#[cfg(test)]
#[path = "faults_tests.rs"]
mod tests;
