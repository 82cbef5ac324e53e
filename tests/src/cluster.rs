//! A whole hsb cluster on loopback for failover tests: primary, standby and witnesses as real
//! processes, every path between them through a relay that a test can cut:
//! - `repl`: replication, heartbeats and switchover messages between primary and standby;
//! - `standby_witnesses`: the standby's traffic with every witness;
//! - `primary_witnesses`: the primary's traffic with every witness;
//! - `app`: the witnesses' probes of the primary's application.

use std::net::SocketAddr;
use std::time::Duration;

use crate::relay::{Link, TcpRelay, UdpRelay};
use crate::{free_addr, num, Daemon, TempDir};

/// Options for [`Cluster::start`].
#[derive(Clone)]
pub struct ClusterOpts {
    pub policy: &'static str,
    pub witnesses: usize,
    /// Extra `key = value` lines for every daemon.
    pub extra: Vec<String>,
    /// Model domain memory of primary and standby.
    pub memory: &'static str,
    /// Hand-overs on: an activated standby promotes itself to hsb-primary (replicating to a
    /// standby at new addresses), a primary that steps down rejoins as that standby.
    pub rejoin: bool,
    /// Extra `key = value` lines for the standby only (e.g. `metrics_listen`).
    pub standby_extra: Vec<String>,
    /// Extra `key = value` lines for the primary only.
    pub primary_extra: Vec<String>,
    /// Environment variables of the standby (e.g. `NOTIFY_SOCKET`).
    pub standby_env: Vec<(String, String)>,
    /// Environment variables of the primary.
    pub primary_env: Vec<(String, String)>,
}

impl Default for ClusterOpts {
    fn default() -> Self {
        ClusterOpts {
            policy: "client-oriented",
            witnesses: 3,
            extra: vec![],
            memory: "8MiB",
            rejoin: false,
            standby_extra: vec![],
            primary_extra: vec![],
            standby_env: vec![],
            primary_env: vec![],
        }
    }
}

/// A running cluster.
pub struct Cluster {
    pub dir: TempDir,
    pub primary: Daemon,
    pub standby: Daemon,
    pub witnesses: Vec<Daemon>,
    pub primary_service: SocketAddr,
    pub standby_service: SocketAddr,
    pub repl: Link,
    pub standby_witnesses: Link,
    pub primary_witnesses: Link,
    pub app: Link,
    /// The standby's witness UDP address (direct, not through a relay).
    pub standby_witness_addr: SocketAddr,
    /// The standby's replication address (`listen`, direct: the primary goes through `repl`).
    pub standby_listen: SocketAddr,
    /// With `rejoin`: the control sockets of the promoted primary (host B) and of the rejoined
    /// standby (host A).
    pub promoted_control: std::path::PathBuf,
    pub rejoined_control: std::path::PathBuf,
    /// The relay of each witness's datagrams to the standby (what it captured).
    pub witness_to_standby: Vec<std::sync::Arc<crate::relay::RelayStats>>,
    _tcp: Vec<TcpRelay>,
    _udp: Vec<UdpRelay>,
}

impl Cluster {
    /// Start witnesses, standby and primary; wait until the primary is protected.
    pub fn start(o: ClusterOpts) -> Cluster {
        let dir = TempDir::new("cluster");
        let key = dir.path("cluster.key");
        // Each host keeps its own state file, whichever role it runs.
        let a_state = dir.path("a.state").display().to_string();
        let b_state = dir.path("b.state").display().to_string();
        hsb_common::key::ClusterKey::generate(&key).expect("key");
        let (repl, sw, pw, hb) = (
            Link::default(),
            Link::default(),
            Link::default(),
            Link::default(),
        );
        let app = Link::default();
        let _ = hb;
        let (psvc, ssvc) = (free_addr(), free_addr());
        let (s_repl, s_hb, s_wit, p_wit) = (free_addr(), free_addr(), free_addr(), free_addr());
        let ids: Vec<String> = (1..=o.witnesses).map(|i| i.to_string()).collect();
        let wit_addrs: Vec<SocketAddr> = (0..o.witnesses).map(|_| free_addr()).collect();
        let mut tcp = vec![];
        let mut udp = vec![];
        let repl_relay = TcpRelay::start(s_repl, repl.clone());
        let hb_relay = UdpRelay::start(s_hb, vec![repl.clone()]);
        let fence_to_primary = UdpRelay::start(p_wit, vec![repl.clone()]);
        let fenced_to_standby = UdpRelay::start(s_wit, vec![repl.clone()]);
        let app_relay = TcpRelay::start(psvc, app.clone());
        let mut s_peers = vec![];
        let mut p_peers = vec![];
        let mut w_to_s = vec![];
        let mut w_to_p = vec![];
        let mut witness_to_standby = vec![];
        for (i, w) in wit_addrs.iter().enumerate() {
            let a = UdpRelay::start(*w, vec![sw.clone()]);
            let b = UdpRelay::start(*w, vec![pw.clone()]);
            let c = UdpRelay::start(s_wit, vec![sw.clone()]);
            let d = UdpRelay::start(p_wit, vec![pw.clone()]);
            s_peers.push(format!("{}={}", i + 1, a.addr));
            p_peers.push(format!("{}={}", i + 1, b.addr));
            w_to_s.push(c.addr);
            w_to_p.push(d.addr);
            witness_to_standby.push(c.stats.clone());
            udp.extend([a, b, c, d]);
        }
        let common = format!(
            "cluster_key = {}\nfailover.policy = {}\nfailover.witnesses = {}\nstats_interval = 1s\n{}\n",
            key.display(),
            o.policy,
            ids.join(","),
            o.extra.join("\n")
        );
        let mut witnesses = vec![];
        for (i, w) in wit_addrs.iter().enumerate() {
            let conf = dir.path(&format!("w{}.conf", i + 1));
            let text = format!(
                "node = witness-{n}\nid = {n}\nlisten = {w}\nprimary = {}\nstandby = {}\nprobe = line {} PING PONG\nstate_file = {}\ncontrol = {}\n{}",
                w_to_p[i],
                w_to_s[i],
                app_relay.addr,
                dir.path(&format!("w{}.state", i + 1)).display(),
                dir.path(&format!("w{}.sock", i + 1)).display(),
                common.replace("stats_interval = 1s\n", ""),
                n = i + 1
            );
            std::fs::write(&conf, text).expect("write");
            witnesses.push(Daemon::start(
                "hsb-witness",
                &conf,
                &dir.path(&format!("w{}.sock", i + 1)),
                &dir.path(&format!("w{}.log", i + 1)),
                &[],
            ));
        }
        // Host A's standby and host B's primary after the roles swap (direct addresses).
        let (a_repl, a_hb) = (free_addr(), free_addr());
        let policy_lines = common.clone();
        if o.rejoin {
            std::fs::write(
                dir.path("promote.conf"),
                format!(
                    "node = host-b-primary\nstate_file = {b_state}\nstandby = {a_repl}\ncontrol = {}\nmodel.memory = {mem}\nmodel.service = {ssvc}\nreconnect_interval = 50ms\nfailover = true\nheartbeat_peers = {a_hb}\nwitness_listen = {s_wit}\nwitness_peers = {}\nstandby_witness = {p_wit}\n{policy_lines}",
                    dir.path("promoted.sock").display(),
                    s_peers.join(","),
                    mem = o.memory
                ),
            )
            .expect("write");
            std::fs::write(
                dir.path("rejoin.conf"),
                format!(
                    "node = host-a-standby\nstate_file = {a_state}\nlisten = {a_repl}\ncontrol = {}\nmodel.memory = {mem}\nmodel.service = {psvc}\nfailover = true\nheartbeat_listen = {a_hb}\nwitness_listen = {p_wit}\nwitness_peers = {}\nprimary_witness = {s_wit}\n{policy_lines}",
                    dir.path("rejoined.sock").display(),
                    p_peers.join(","),
                    mem = o.memory
                ),
            )
            .expect("write");
        }
        let (promote_lines, rejoin_lines) = if o.rejoin {
            (
                format!(
                    "promote_config = {}\npromote_image = {}\n",
                    dir.path("promote.conf").display(),
                    dir.path("promote.img").display()
                ),
                format!("rejoin_config = {}\n", dir.path("rejoin.conf").display()),
            )
        } else {
            (String::new(), String::new())
        };
        let sconf = dir.path("standby.conf");
        std::fs::write(
            &sconf,
            format!(
                "node = standby\nstate_file = {b_state}\nlisten = {s_repl}\ncontrol = {}\nmodel.memory = {mem}\nmodel.service = {ssvc}\nfailover = true\nheartbeat_listen = {s_hb}\nwitness_listen = {s_wit}\nwitness_peers = {}\nprimary_witness = {}\ndecision_log = {}\n{promote_lines}{common}{}\n",
                dir.path("standby.sock").display(),
                s_peers.join(","),
                fence_to_primary.addr,
                dir.path("standby.decisions").display(),
                o.standby_extra.join("\n"),
                mem = o.memory
            ),
        )
        .expect("write");
        let mut cmd = std::process::Command::new(crate::bin("hsb-standby"));
        cmd.arg("run").arg("-c").arg(&sconf);
        for (k, v) in &o.standby_env {
            cmd.env(k, v);
        }
        let standby = Daemon::start_command(
            "hsb-standby",
            cmd,
            &dir.path("standby.sock"),
            &dir.path("standby.log"),
        );
        standby.wait_for("standby up", Duration::from_secs(10), |_| true);
        let pconf = dir.path("primary.conf");
        std::fs::write(
            &pconf,
            format!(
                "node = primary\nstate_file = {a_state}\nstandby = {}\ncontrol = {}\nmodel.memory = {mem}\nmodel.service = {psvc}\nreconnect_interval = 50ms\nfailover = true\nheartbeat_peers = {}\nwitness_listen = {p_wit}\nwitness_peers = {}\nstandby_witness = {}\ndecision_log = {}\n{rejoin_lines}{common}{}\n",
                repl_relay.addr,
                dir.path("primary.sock").display(),
                hb_relay.addr,
                p_peers.join(","),
                fenced_to_standby.addr,
                dir.path("primary.decisions").display(),
                o.primary_extra.join("\n"),
                mem = o.memory
            ),
        )
        .expect("write");
        let mut cmd = std::process::Command::new(crate::bin("hsb-primary"));
        cmd.arg("run").arg("-c").arg(&pconf);
        for (k, v) in &o.primary_env {
            cmd.env(k, v);
        }
        let primary = Daemon::start_command(
            "hsb-primary",
            cmd,
            &dir.path("primary.sock"),
            &dir.path("primary.log"),
        );
        primary.wait_for("protected", Duration::from_secs(30), |s| {
            num(s, "acked_checkpoint") >= 1
                && s.get("authority").map(String::as_str) == Some("protected")
        });
        tcp.extend([repl_relay, app_relay]);
        udp.extend([hb_relay, fence_to_primary, fenced_to_standby]);
        let (promoted_control, rejoined_control) =
            (dir.path("promoted.sock"), dir.path("rejoined.sock"));
        Cluster {
            dir,
            primary,
            standby,
            witnesses,
            primary_service: psvc,
            standby_service: ssvc,
            repl,
            standby_witnesses: sw,
            primary_witnesses: pw,
            app,
            standby_witness_addr: s_wit,
            standby_listen: s_repl,
            promoted_control,
            rejoined_control,
            witness_to_standby,
            _tcp: tcp,
            _udp: udp,
        }
    }

    /// Wait until every witness is past its restart quiet period and sees the application up.
    pub fn wait_witnesses_ready(&self) {
        for w in &self.witnesses {
            w.wait_for(
                "witness sees the application",
                Duration::from_secs(10),
                |s| s.get("application").map(String::as_str) == Some("up"),
            );
        }
        // A restarted witness grants nothing for the longest lease (default 2 s).
        std::thread::sleep(Duration::from_millis(2200));
    }

    /// Restart witness `n` (1-based) with its configuration: a new process, a new incarnation.
    pub fn restart_witness(&mut self, n: usize) {
        let d = &mut self.witnesses[n - 1];
        d.kill9();
        *d = Daemon::start(
            "hsb-witness",
            &self.dir.path(&format!("w{n}.conf")),
            &self.dir.path(&format!("w{n}.sock")),
            &self.dir.path(&format!("w{n}.log")),
            &[],
        );
    }

    /// Restart the standby with its configuration (it resynchronises from scratch).
    pub fn restart_standby(&mut self) {
        self.standby.kill9();
        self.standby = Daemon::start(
            "hsb-standby",
            &self.dir.path("standby.conf"),
            &self.dir.path("standby.sock"),
            &self.dir.path("standby.log"),
            &[],
        );
    }

    /// Every log, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = format!(
            "--- primary ---\n{}\n--- standby ---\n{}\n",
            self.primary.log_text(),
            self.standby.log_text()
        );
        for w in &self.witnesses {
            s.push_str(&format!("--- {} ---\n{}\n", w.log.display(), w.log_text()));
        }
        s
    }
}
