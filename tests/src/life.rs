//! A cluster that lives: two hosts on loopback whose configurations are symmetric, so roles can
//! swap again and again, as in a deployment: each host has a primary configuration whose
//! `rejoin_config` is its standby configuration, and a standby configuration whose
//! `promote_config` is its primary configuration. Both copies serve the model service on one
//! address (the "service address"), which only the active copy binds, and the witnesses probe
//! it the way clients do.
//!
//! A test kills the primary, waits for the other host's promoted primary, restarts the killed
//! host as the standby, waits until the cluster is whole again (protected, the standby trusting
//! the primary's heartbeats, no witness holding a stale-replica mark), and goes round again.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::faults::{check_history, client, Op};
use crate::{free_addr, num, parse_status, Daemon, TempDir};

/// Options for [`Life::start`].
#[derive(Clone)]
pub struct LifeOpts {
    pub policy: &'static str,
    /// Extra `key = value` lines for primary and standby configurations.
    pub extra: Vec<String>,
    /// Extra lines for one host's configurations only (host A, host B).
    pub host_extra: [Vec<String>; 2],
}

impl Default for LifeOpts {
    fn default() -> Self {
        LifeOpts {
            policy: "client-oriented",
            extra: vec![],
            host_extra: [vec![], vec![]],
        }
    }
}

/// The two hosts' names, by index.
pub const HOSTS: [&str; 2] = ["a", "b"];

/// A running two-host cluster with three witnesses.
pub struct Life {
    /// The process of each host (whatever role it runs now: an exec keeps the process).
    pub procs: [Option<Daemon>; 2],
    pub witnesses: Vec<Daemon>,
    /// The service address the active copy serves.
    pub service: SocketAddr,
    /// Which host runs the primary now.
    pub primary: usize,
    /// The primary's epoch.
    pub epoch: u64,
    pub dir: TempDir,
    starts: [u32; 2],
    client_stop: Arc<AtomicBool>,
    client: Option<std::thread::JoinHandle<Vec<Op>>>,
}

impl Life {
    fn conf(&self, h: usize, role: &str) -> PathBuf {
        self.dir.path(&format!("{}-{role}.conf", HOSTS[h]))
    }

    /// The control socket of host `h` in `role` ("primary" or "standby").
    pub fn sock(&self, h: usize, role: &str) -> PathBuf {
        self.dir.path(&format!("{}-{role}.sock", HOSTS[h]))
    }

    /// A status-only handle on host `h`'s control socket in `role`.
    pub fn handle(&self, h: usize, role: &str) -> Daemon {
        Daemon {
            name: format!("host {} {role}", HOSTS[h]),
            child: None,
            log: self.log(h),
            control: self.sock(h, role),
        }
    }

    /// Host `h`'s current log (stderr of its latest process, across execs).
    pub fn log(&self, h: usize) -> PathBuf {
        self.dir
            .path(&format!("{}.{}.log", HOSTS[h], self.starts[h]))
    }

    /// Start witnesses, host A as primary and host B as standby; wait until protected.
    pub fn start(o: LifeOpts) -> Life {
        let dir = TempDir::new("life");
        let key = dir.path("cluster.key");
        hsb_common::key::ClusterKey::generate(&key).expect("key");
        let service = free_addr();
        let repl = [free_addr(), free_addr()];
        let hb = [free_addr(), free_addr()];
        let wit = [free_addr(), free_addr()];
        let waddrs: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();
        let peers: Vec<String> = waddrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect();
        let common = format!(
            "cluster_key = {}\nfailover = true\nfailover.policy = {}\nfailover.witnesses = 1,2,3\nmodel.memory = 8MiB\nmodel.service = {service}\nstats_interval = 1s\nwitness_peers = {}\n{}\n",
            key.display(),
            o.policy,
            peers.join(","),
            o.extra.join("\n")
        );
        let o_host_extra = o.host_extra.clone();
        let mut life = Life {
            procs: [None, None],
            witnesses: vec![],
            service,
            primary: 0,
            epoch: 1,
            dir,
            starts: [0, 0],
            client_stop: Arc::new(AtomicBool::new(false)),
            client: None,
        };
        for h in 0..2 {
            let o = 1 - h;
            let name = HOSTS[h];
            let common = format!("{common}{}\n", o_host_extra[h].join("\n"));
            let state = life
                .dir
                .path(&format!("{name}.state"))
                .display()
                .to_string();
            std::fs::write(
                life.conf(h, "primary"),
                format!(
                    "node = host-{name}\nstate_file = {state}\nstandby = {}\ncontrol = {}\nreconnect_interval = 50ms\nheartbeat_peers = {}\nwitness_listen = {}\nstandby_witness = {}\nrejoin_config = {}\ndecision_log = {}\n{common}",
                    repl[o],
                    life.sock(h, "primary").display(),
                    hb[o],
                    wit[h],
                    wit[o],
                    life.conf(h, "standby").display(),
                    life.dir.path(&format!("{name}-primary.decisions")).display(),
                ),
            )
            .expect("write");
            std::fs::write(
                life.conf(h, "standby"),
                format!(
                    "node = host-{name}\nstate_file = {state}\nlisten = {}\ncontrol = {}\nheartbeat_listen = {}\nwitness_listen = {}\nprimary_witness = {}\npromote_config = {}\npromote_image = {}\ndecision_log = {}\n{common}",
                    repl[h],
                    life.sock(h, "standby").display(),
                    hb[h],
                    wit[h],
                    wit[o],
                    life.conf(h, "primary").display(),
                    life.dir.path(&format!("{name}.img")).display(),
                    life.dir.path(&format!("{name}-standby.decisions")).display(),
                ),
            )
            .expect("write");
        }
        let wcommon = format!(
            "cluster_key = {}\nfailover.policy = {}\nfailover.witnesses = 1,2,3\n",
            key.display(),
            o.policy
        );
        for (i, w) in waddrs.iter().enumerate() {
            let n = i + 1;
            let conf = life.dir.path(&format!("w{n}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "node = witness-{n}\nid = {n}\nlisten = {w}\nprimary = {}\nstandby = {}\nprobe = line {service} PING PONG\nstate_file = {}\ncontrol = {}\n{wcommon}",
                    wit[0],
                    wit[1],
                    life.dir.path(&format!("w{n}.state")).display(),
                    life.dir.path(&format!("w{n}.sock")).display(),
                ),
            )
            .expect("write");
            life.witnesses.push(Daemon::start(
                "hsb-witness",
                &conf,
                &life.dir.path(&format!("w{n}.sock")),
                &life.dir.path(&format!("w{n}.log")),
                &[],
            ));
        }
        life.spawn(1, "standby");
        life.handle(1, "standby")
            .wait_for("standby up", Duration::from_secs(10), |_| true);
        life.spawn(0, "primary");
        life.wait_whole(Duration::from_secs(30));
        for w in &life.witnesses {
            w.wait_for("application up", Duration::from_secs(10), |s| {
                s.get("application").map(String::as_str) == Some("up")
            });
        }
        // Witnesses grant nothing for the longest lease after they start.
        std::thread::sleep(Duration::from_millis(2300));
        life
    }

    /// Start host `h`'s daemon in `role` (a new process, a new log).
    pub fn spawn(&mut self, h: usize, role: &str) {
        self.starts[h] += 1;
        let d = Daemon::start(
            &format!("hsb-{role}"),
            &self.conf(h, role),
            &self.sock(h, role),
            &self.log(h),
            &[],
        );
        self.procs[h] = Some(d);
    }

    /// Start a client that increments the counter through the service address until
    /// [`Life::finish`].
    pub fn start_client(&mut self) {
        self.client = Some(client(self.service, self.client_stop.clone()));
    }

    /// Stop the client and check its whole history: (acknowledged, lost, doubled).
    pub fn finish(&mut self) -> (u64, u64, u64) {
        let (acked, lost, doubled, _) = self.finish_with_gap();
        (acked, lost, doubled)
    }

    /// Like [`Life::finish`], with the longest time the client went without an acknowledged
    /// reply.
    pub fn finish_with_gap(&mut self) -> (u64, u64, u64, Duration) {
        self.client_stop.store(true, Ordering::Relaxed);
        let ops = self
            .client
            .take()
            .map(|c| c.join().unwrap_or_default())
            .unwrap_or_default();
        check_history(&ops)
    }

    /// Run `hsb-standby ARGS --control SOCK` against host `h`'s standby: (exit code, stdout).
    pub fn standby_cli(&self, h: usize, args: &[&str]) -> (i32, String) {
        let out = std::process::Command::new(crate::bin("hsb-standby"))
            .args(args)
            .arg("--control")
            .arg(self.sock(h, "standby"))
            .output()
            .expect("hsb-standby");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }

    /// The current primary's status.
    pub fn primary_status(&self) -> HashMap<String, String> {
        self.handle(self.primary, "primary").status()
    }

    /// Everything the hosts and witnesses logged, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for (h, name) in HOSTS.iter().enumerate() {
            for n in 1..=self.starts[h] {
                let p = self.dir.path(&format!("{name}.{n}.log"));
                s.push_str(&format!(
                    "--- host {name} start {n} ---\n{}\n",
                    tail(&std::fs::read_to_string(p).unwrap_or_default(), 60)
                ));
            }
        }
        for w in &self.witnesses {
            s.push_str(&format!(
                "--- {} ---\n{}\n",
                w.log.display(),
                tail(&w.log_text(), 30)
            ));
        }
        s
    }

    /// Wait until the cluster is whole: the primary protected by the other host's standby,
    /// which trusts its heartbeats and follows it, and no witness holds a stale-replica mark.
    pub fn wait_whole(&self, timeout: Duration) {
        let p = self.primary;
        let t = Instant::now();
        loop {
            let ps = self.handle(p, "primary").status();
            let ss = self.handle(1 - p, "standby").status();
            let marks: Vec<String> = self
                .witnesses
                .iter()
                .map(|w| {
                    w.status()
                        .get("stale_mark")
                        .cloned()
                        .unwrap_or_else(|| "none".into())
                })
                .collect();
            let protected = ps.get("authority").map(String::as_str) == Some("protected")
                && num(&ps, "acked_checkpoint") > 0
                && ps.get("epoch").map(String::as_str) == Some(&self.epoch.to_string());
            let following = ss.get("decision_state").map(String::as_str) == Some("following")
                && ss.get("primary_suspected").map(String::as_str) == Some("false");
            let unmarked = marks.iter().all(|m| m == "none");
            if protected && following && unmarked {
                return;
            }
            let last = format!(
                "primary (host {}): authority {:?} epoch {:?} acked {:?}; standby: state {:?} decision {:?} suspected {:?}; witness marks {marks:?}",
                HOSTS[p],
                ps.get("authority"),
                ps.get("epoch"),
                ps.get("acked_checkpoint"),
                ss.get("state"),
                ss.get("decision_state"),
                ss.get("primary_suspected"),
            );
            if t.elapsed() > timeout {
                panic!(
                    "epoch {}: the cluster was not whole again within {timeout:?}: {last}\n{}",
                    self.epoch,
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// kill -9 the primary's host process; wait for the other host's promoted primary in the
    /// next epoch; returns how long until it served.
    pub fn fail_primary(&mut self, timeout: Duration) -> Duration {
        let p = self.primary;
        let o = 1 - p;
        if let Some(mut d) = self.procs[p].take() {
            d.kill9();
        }
        let t = Instant::now();
        let want = (self.epoch + 1).to_string();
        loop {
            let s = self.handle(o, "primary").status();
            if s.get("role").map(String::as_str) == Some("primary") && s.get("epoch") == Some(&want)
            {
                break;
            }
            if t.elapsed() > timeout {
                let ss = self.handle(o, "standby").status();
                panic!(
                    "epoch {}: host {} was not promoted within {timeout:?} after host {} was killed; its standby status: decision {:?} last {:?}\n{}",
                    self.epoch,
                    HOSTS[o],
                    HOSTS[p],
                    ss.get("decision_state"),
                    ss.get("last_decision"),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let took = t.elapsed();
        self.primary = o;
        self.epoch += 1;
        took
    }

    /// kill -9 host `h`'s process (whatever role it runs).
    pub fn kill(&mut self, h: usize) {
        if let Some(mut d) = self.procs[h].take() {
            d.kill9();
        }
    }

    /// Wait until host `o` runs the promoted primary of epoch `self.epoch + 1`, then take that
    /// as the cluster's state. Returns how long it took.
    pub fn wait_promoted(&mut self, o: usize, timeout: Duration) -> Duration {
        let t = Instant::now();
        let want = (self.epoch + 1).to_string();
        loop {
            let s = self.handle(o, "primary").status();
            if s.get("role").map(String::as_str) == Some("primary") && s.get("epoch") == Some(&want)
            {
                break;
            }
            if t.elapsed() > timeout {
                let ss = self.handle(o, "standby").status();
                panic!(
                    "epoch {}: host {} was not promoted within {timeout:?}; its standby: decision {:?} last {:?}\n{}",
                    self.epoch,
                    HOSTS[o],
                    ss.get("decision_state"),
                    ss.get("last_decision"),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.primary = o;
        self.epoch += 1;
        t.elapsed()
    }

    /// The current log text of host `h`.
    pub fn log_text(&self, h: usize) -> String {
        std::fs::read_to_string(self.log(h)).unwrap_or_default()
    }

    /// Restart the host that does not run the primary as its standby.
    pub fn rejoin(&mut self) {
        let h = 1 - self.primary;
        self.spawn(h, "standby");
    }
}

impl Drop for Life {
    fn drop(&mut self) {
        self.client_stop.store(true, Ordering::Relaxed);
        for d in self.procs.iter_mut().flatten() {
            d.kill9();
        }
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Parse a status answer (re-exported for tests that read sockets directly).
pub fn status_of(text: &str) -> HashMap<String, String> {
    parse_status(text)
}
