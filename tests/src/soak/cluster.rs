//! The soak's cluster: hosts A and B and witnesses 1-3 in network namespaces ([`Topology`]),
//! with **symmetric** configurations so roles can swap again and again. Each host has a
//! primary configuration whose `rejoin_config` is its standby configuration, and a standby
//! configuration whose `promote_config` is its primary configuration, both with the host's own
//! `state_file`. The service address moves with the active copy: a standby's `on_activate`
//! claims it (with gratuitous ARP), a primary's `on_fence` releases it.
//!
//! A host runs one process at a time, whatever its role (a hand-over execs in place). A host
//! whose daemon died is restarted with its primary configuration: the restart rule makes it
//! rejoin as the standby when its state says it is one, or when it ran the primary whose model
//! domain died with the process (README: the restart matrix). Its service address goes with
//! the domain.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::netns::{Host, Net, Topology};
use crate::soak::capture::Capture;
use crate::soak::monitor::host_status;
use crate::soak::HOSTS;
use crate::{bin, Daemon};

/// Port of the model service on the service address.
pub const SERVICE_PORT: u16 = 7000;

/// The namespace host of host index `h` (0: A, 1: B).
pub fn host(h: usize) -> Host {
    if h == 0 {
        Host::A
    } else {
        Host::B
    }
}

/// The namespace host of witness index `i` (0..3: witnesses 1-3).
pub fn witness(i: usize) -> Host {
    Host::W(i as u8 + 1)
}

/// A running soak cluster. Fields drop in order: daemons and sniffers first, the namespaces last.
pub struct SoakCluster {
    hosts: [Option<Daemon>; 2],
    witnesses: [Option<Daemon>; 3],
    pub capture: Option<Capture>,
    starts: [u32; 2],
    wstarts: [u32; 3],
    pub dir: PathBuf,
    pub service: SocketAddr,
    pub topo: Topology,
}

fn write_script(path: &Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

impl SoakCluster {
    /// Make the namespaces, write every configuration into `dir` (which must exist and be
    /// empty), start the witnesses, B's standby and A's primary, and wait until A is protected
    /// and every witness sees the application.
    pub fn start(dir: &Path, policy: &str) -> Result<SoakCluster, String> {
        let topo = Topology::new(3)?;
        let vip = topo.service_ip();
        let service: SocketAddr = format!("{vip}:{SERVICE_PORT}")
            .parse()
            .map_err(|_| format!("bad service address {vip}"))?;
        let mut c = SoakCluster {
            hosts: [None, None],
            witnesses: [None, None, None],
            capture: None,
            starts: [0; 2],
            wstarts: [0; 3],
            dir: dir.to_path_buf(),
            service,
            topo,
        };
        c.write_configs(policy)?;
        for i in 0..3 {
            c.start_witness(i);
        }
        let t = Instant::now();
        c.spawn(1, "standby");
        while c.status(1).is_empty() {
            if t.elapsed() > Duration::from_secs(20) {
                return Err(format!(
                    "host B's standby did not start:\n{}",
                    c.log_tail(1)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        c.topo.exec(
            Host::A,
            &["ip", "addr", "add", &format!("{vip}/24"), "dev", "eth0"],
        )?;
        c.spawn(0, "primary");
        loop {
            let s = c.status(0);
            if s.get("authority").is_some_and(|a| a == "protected") {
                break;
            }
            if t.elapsed() > Duration::from_secs(60) {
                return Err(format!(
                    "host A's primary was not protected within 60 s; status {s:?}\n{}",
                    c.log_tail(0)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(c)
    }

    fn write_configs(&self, policy: &str) -> Result<(), String> {
        let d = &self.dir;
        let key = d.join("cluster.key");
        hsb_common::key::ClusterKey::generate(&key).map_err(|e| e.to_string())?;
        let topo = &self.topo;
        let vip = topo.service_ip();
        let peers: Vec<String> = (0..3)
            .map(|i| format!("{}={}:7400", i + 1, topo.ip(witness(i), Net::Client)))
            .collect();
        write_script(
            &d.join("claim-address"),
            &format!("#!/bin/sh\nip addr add {vip}/24 dev eth0 2>/dev/null\narping -q -U -c 2 -w 1 -I eth0 {vip} || true\n"),
        )?;
        write_script(
            &d.join("release-address"),
            &format!("#!/bin/sh\nip addr del {vip}/24 dev eth0 2>/dev/null || true\n"),
        )?;
        // Rule 6 switchovers: the defaults (2 s hold, 60 s between two, counted from the
        // standby's start too) would keep most of them out of a run whose roles swap every few
        // seconds; FAULTS.md's suite uses the same values.
        let common = format!(
            "cluster_key = {}\nfailover = true\nfailover.policy = {policy}\nfailover.witnesses = 1,2,3\nfailover.switchover-hold = 1s\nfailover.switchover-min-interval = 2s\nmodel.memory = 8MiB\nmodel.service = {vip}:{SERVICE_PORT}\nstats_interval = 10s\nwitness_peers = {}\n",
            key.display(),
            peers.join(",")
        );
        for (h, name) in HOSTS.iter().enumerate() {
            let o = 1 - h;
            let mine = topo.ip(host(h), Net::Replication);
            let other = topo.ip(host(o), Net::Replication);
            let state = d.join(format!("{name}.state"));
            write(
                &self.conf(h, "primary"),
                &format!(
                    "node = host-{name}\nstate_file = {}\nstandby = {other}:7100\ncontrol = {}\nreconnect_interval = 50ms\nheartbeat_peers = {other}:7200\nwitness_listen = 0.0.0.0:7300\nstandby_witness = {other}:7300\nrejoin_config = {}\non_fence = {}\n{common}",
                    state.display(),
                    self.sock(h, "primary").display(),
                    self.conf(h, "standby").display(),
                    d.join("release-address").display(),
                ),
            )?;
            write(
                &self.conf(h, "standby"),
                &format!(
                    "node = host-{name}\nstate_file = {}\nlisten = {mine}:7100\ncontrol = {}\nheartbeat_listen = {mine}:7200\nwitness_listen = 0.0.0.0:7300\nprimary_witness = {other}:7300\npromote_config = {}\npromote_image = {}\non_activate = {}\n{common}",
                    state.display(),
                    self.sock(h, "standby").display(),
                    self.conf(h, "primary").display(),
                    d.join(format!("{name}.img")).display(),
                    d.join("claim-address").display(),
                ),
            )?;
        }
        for i in 0..3 {
            let n = i + 1;
            write(
                &d.join(format!("w{n}.conf")),
                &format!(
                    "id = {n}\nnode = witness-{n}\nlisten = {}:7400\nprimary = {}:7300\nstandby = {}:7300\nprobe = line {vip}:{SERVICE_PORT} PING PONG\nstate_file = {}\ncontrol = {}\ncluster_key = {}\nfailover.policy = {policy}\nfailover.witnesses = 1,2,3\n",
                    topo.ip(witness(i), Net::Client),
                    topo.ip(Host::A, Net::Client),
                    topo.ip(Host::B, Net::Client),
                    d.join(format!("w{n}.state")).display(),
                    d.join(format!("w{n}.sock")).display(),
                    key.display(),
                ),
            )?;
        }
        Ok(())
    }

    /// Host `h`'s configuration for `role`.
    pub fn conf(&self, h: usize, role: &str) -> PathBuf {
        self.dir.join(format!("{}-{role}.conf", HOSTS[h]))
    }

    /// Host `h`'s control socket in `role`.
    pub fn sock(&self, h: usize, role: &str) -> PathBuf {
        self.dir.join(format!("{}-{role}.sock", HOSTS[h]))
    }

    /// Both control sockets of each host, for the monitor.
    pub fn sockets(&self) -> [[PathBuf; 2]; 2] {
        [0, 1].map(|h| [self.sock(h, "primary"), self.sock(h, "standby")])
    }

    /// Witness `i`'s control socket.
    pub fn witness_sock(&self, i: usize) -> PathBuf {
        self.dir.join(format!("w{}.sock", i + 1))
    }

    /// Host `h`'s log of its `n`th start.
    pub fn log_path(&self, h: usize, n: u32) -> PathBuf {
        self.dir.join(format!("{}.{n}.log", HOSTS[h]))
    }

    /// Every log file of host `h`, in start order.
    pub fn logs(&self, h: usize) -> Vec<PathBuf> {
        (1..=self.starts[h]).map(|n| self.log_path(h, n)).collect()
    }

    /// The last lines of host `h`'s current log.
    pub fn log_tail(&self, h: usize) -> String {
        let text = std::fs::read_to_string(self.log_path(h, self.starts[h])).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn spawn(&mut self, h: usize, role: &str) {
        self.starts[h] += 1;
        let mut cmd = self.topo.command(host(h), &bin(&format!("hsb-{role}")));
        cmd.arg("run").arg("-c").arg(self.conf(h, role));
        let d = Daemon::start_command(
            &format!("host {}", HOSTS[h]),
            cmd,
            &self.sock(h, role),
            &self.log_path(h, self.starts[h]),
        );
        self.hosts[h] = Some(d);
    }

    /// Host `h`'s daemon status (whatever its role; empty if it does not answer).
    pub fn status(&self, h: usize) -> HashMap<String, String> {
        host_status(&[self.sock(h, "primary"), self.sock(h, "standby")])
    }

    /// Witness `i`'s status (empty if it does not answer).
    pub fn witness_status(&self, i: usize) -> HashMap<String, String> {
        crate::parse_status(
            &hsb_common::ctl::request(&self.witness_sock(i), "status", Duration::from_millis(300))
                .unwrap_or_default(),
        )
    }

    /// kill -9 host `h`'s daemon.
    pub fn kill_host(&mut self, h: usize) {
        if let Some(mut d) = self.hosts[h].take() {
            d.kill9();
        }
    }

    /// Start host `h` again after its daemon died: the service address went with its model
    /// domain; the primary configuration decides (restart rule) whether it rejoins.
    pub fn restart_host(&mut self, h: usize) {
        self.kill_host(h);
        let vip = format!("{}/24", self.topo.service_ip());
        let _ = self
            .topo
            .exec(host(h), &["ip", "addr", "del", &vip, "dev", "eth0"]);
        self.spawn(h, "primary");
    }

    /// Send a signal (`STOP`, `CONT`) to host `h`'s daemon.
    pub fn signal_host(&self, h: usize, sig: &str) {
        if let Some(d) = &self.hosts[h] {
            d.signal(sig);
        }
    }

    /// kill -9 witness `i`.
    pub fn kill_witness(&mut self, i: usize) {
        if let Some(mut d) = self.witnesses[i].take() {
            d.kill9();
        }
    }

    /// Start witness `i` (again): a new process, a new incarnation, the same state file.
    pub fn start_witness(&mut self, i: usize) {
        self.kill_witness(i);
        self.wstarts[i] += 1;
        let n = i + 1;
        let mut cmd = self.topo.command(witness(i), &bin("hsb-witness"));
        cmd.arg("run")
            .arg("-c")
            .arg(self.dir.join(format!("w{n}.conf")));
        self.witnesses[i] = Some(Daemon::start_command(
            &format!("witness {n}"),
            cmd,
            &self.witness_sock(i),
            &self.dir.join(format!("w{n}.{}.log", self.wstarts[i])),
        ));
    }

    /// Send a signal to witness `i`.
    pub fn signal_witness(&self, i: usize, sig: &str) {
        if let Some(d) = &self.witnesses[i] {
            d.signal(sig);
        }
    }

    /// Run `hsb-standby ARGS --control SOCK` against host `h`'s standby: (exit code, output).
    /// Bounded: killed after `timeout` (exit code -1).
    pub fn standby_cli(&self, h: usize, args: &[&str], timeout: Duration) -> (i32, String) {
        run_bounded(self.standby_command(h, args), timeout)
    }

    /// The command `hsb-standby ARGS --control SOCK` for host `h`'s standby.
    pub fn standby_command(&self, h: usize, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("hsb-standby"));
        cmd.args(args).arg("--control").arg(self.sock(h, "standby"));
        cmd
    }

    /// Whether host `h` holds the service address.
    pub fn has_service_address(&self, h: usize) -> bool {
        self.topo.has_addr(host(h), &self.topo.service_ip())
    }
}

/// Run a command with its output captured, killing it after `timeout`: (exit code, output).
pub fn run_bounded(mut cmd: Command, timeout: Duration) -> (i32, String) {
    use std::io::Read;
    use std::process::Stdio;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return (-1, format!("cannot start: {e}")),
    };
    let t = Instant::now();
    let code = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s.code().unwrap_or(-1),
            Ok(None) if t.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                break -1;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => break -1,
        }
    };
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut out);
    }
    (code, out)
}
