//! Real (virtual) hosts for fault tests: network namespaces joined by bridges, with faults made by
//! taking links down and by nftables rules inside the namespaces.
//!
//! ```text
//!  client network 10.77.N.0/24 (bridge hcN): test process .254, host A .1, host B .2,
//!                                            witnesses .11 .12 .13, service address .100
//!  replication network 10.78.N.0/24 (bridge hrN): host A .1, host B .2
//! ```
//! Everything is removed on drop (processes first, by their own `Daemon` guards), even when a
//! test fails. Where namespaces cannot be made, [`available`] says why and the caller skips.

use std::process::{Command, Stdio};

/// The hosts of a topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    A,
    B,
    W(u8),
}

impl Host {
    fn tag(self) -> String {
        match self {
            Host::A => "a".into(),
            Host::B => "b".into(),
            Host::W(i) => format!("w{i}"),
        }
    }

    fn octet(self) -> u8 {
        match self {
            Host::A => 1,
            Host::B => 2,
            Host::W(i) => 10 + i,
        }
    }
}

/// Which network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Net {
    Client,
    Replication,
}

/// Run a command, returning its stderr on failure.
pub fn sh(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether this machine lets the tests make namespaces (root, iproute2, nftables); the reason if not.
pub fn available() -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or("?");
    if uid != "0" {
        return Err(format!("network namespaces need root (uid is {uid})"));
    }
    for tool in ["ip", "nft"] {
        if Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            return Err(format!(
                "`{tool}` is not installed (Debian: iproute2, nftables)"
            ));
        }
    }
    // A name no other call makes: tests of one process run on several threads, and a shared
    // name made the loser fail with `File exists` (and skip a test that could run).
    let ns = probe_name();
    // A leftover of this name can only be from a dead process that had our pid.
    let _ = sh(&["ip", "netns", "del", &ns]);
    sh(&["ip", "netns", "add", &ns])?;
    let _ = sh(&["ip", "netns", "del", &ns]);
    Ok(())
}

/// A probe namespace name unique to this call: the process id and a process-wide counter.
fn probe_name() -> String {
    static NEXT_PROBE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT_PROBE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("hsbp{}-{n}", std::process::id())
}

/// Whether this machine can start programs in time namespaces with an offset monotonic clock
/// (`unshare --time`, Linux 5.6+, util-linux 2.36+); the reason if not.
pub fn time_namespaces_available() -> Result<(), String> {
    sh(&[
        "unshare",
        "--time",
        "--monotonic",
        "3600",
        "--boottime",
        "3600",
        "true",
    ])
    .map_err(|e| format!("time namespaces unavailable: {e}"))
}

/// Where suites record which topology number they use (one file per number, naming the pid).
fn owner_file(n: u32) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("hsb-netns-{n}.owner"))
}

/// Take a topology number 20..=219 no live process holds: suites running at the same time (in
/// other worktrees too) never share names or subnets, and leftovers of a suite that died are
/// only cleaned under their own number once its process is gone. Names are `hsbN*`, `hvN*`
/// (N a number), so they never meet other rigs' names such as `hsb-rig` or `rigbr0`.
fn claim_number() -> Result<u32, String> {
    let start = std::process::id() % 200;
    for i in 0..200 {
        let n = 20 + (start + i) % 200;
        let f = owner_file(n);
        let mine = std::process::id().to_string();
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&f)
        {
            Ok(mut file) => {
                use std::io::Write;
                file.write_all(mine.as_bytes())
                    .map_err(|e| format!("{}: {e}", f.display()))?;
                return Ok(n);
            }
            Err(_) => {
                let owner = std::fs::read_to_string(&f).unwrap_or_default();
                let owner = owner.trim();
                // An empty file is being written by its owner right now.
                let alive =
                    owner.is_empty() || std::path::Path::new(&format!("/proc/{owner}")).exists();
                if !alive {
                    // Its suite is gone : take the number over.
                    let _ = std::fs::remove_file(&f);
                    if std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&f)
                        .and_then(|mut file| {
                            use std::io::Write;
                            file.write_all(mine.as_bytes())
                        })
                        .is_ok()
                    {
                        return Ok(n);
                    }
                }
            }
        }
    }
    Err("every topology number 20..=219 is in use".into())
}

/// A topology of namespaces and bridges.
pub struct Topology {
    n: u32,
    hosts: Vec<Host>,
}

impl Topology {
    /// Make hosts A, B and `witnesses` witness hosts; A and B are on both networks.
    pub fn new(witnesses: u8) -> Result<Topology, String> {
        let n = claim_number()?;
        let mut t = Topology { n, hosts: vec![] };
        t.cleanup_leftovers();
        for br in [t.bridge(Net::Client), t.bridge(Net::Replication)] {
            sh(&["ip", "link", "add", &br, "type", "bridge"])?;
            sh(&["ip", "link", "set", &br, "up"])?;
        }
        // The test process (the client, and relays that sit on a path) is .254 on both.
        for net in [Net::Client, Net::Replication] {
            sh(&[
                "ip",
                "addr",
                "add",
                &format!("{}/24", t.relay_ip(net)),
                "dev",
                &t.bridge(net),
            ])?;
        }
        let mut hosts = vec![Host::A, Host::B];
        hosts.extend((1..=witnesses).map(Host::W));
        for h in hosts {
            t.add_host(h)?;
        }
        Ok(t)
    }

    /// The test process's own address on a network (where relays listen).
    pub fn relay_ip(&self, net: Net) -> String {
        self.ip_str(net, 254)
    }

    fn cleanup_leftovers(&self) {
        for h in [
            Host::A,
            Host::B,
            Host::W(1),
            Host::W(2),
            Host::W(3),
            Host::W(4),
            Host::W(5),
        ] {
            let _ = sh(&["ip", "netns", "del", &self.ns_name(h)]);
            for net in [Net::Client, Net::Replication] {
                let _ = sh(&["ip", "link", "del", &self.veth(h, net)]);
            }
        }
        let _ = sh(&["ip", "link", "del", &self.bridge(Net::Client)]);
        let _ = sh(&["ip", "link", "del", &self.bridge(Net::Replication)]);
    }

    fn bridge(&self, net: Net) -> String {
        match net {
            Net::Client => format!("hsbc{}", self.n),
            Net::Replication => format!("hsbr{}", self.n),
        }
    }

    /// The namespace name of a host.
    pub fn ns_name(&self, h: Host) -> String {
        format!("hsb{}{}", self.n, h.tag())
    }

    fn veth(&self, h: Host, net: Net) -> String {
        format!(
            "hv{}{}{}",
            self.n,
            h.tag(),
            if net == Net::Client { "c" } else { "r" }
        )
    }

    fn ip_str(&self, net: Net, octet: u8) -> String {
        match net {
            Net::Client => format!("10.77.{}.{octet}", self.n),
            Net::Replication => format!("10.78.{}.{octet}", self.n),
        }
    }

    /// A host's address on a network.
    pub fn ip(&self, h: Host, net: Net) -> String {
        self.ip_str(net, h.octet())
    }

    /// The service address that moves with the active copy.
    pub fn service_ip(&self) -> String {
        self.ip_str(Net::Client, 100)
    }

    fn add_host(&mut self, h: Host) -> Result<(), String> {
        let ns = self.ns_name(h);
        sh(&["ip", "netns", "add", &ns])?;
        self.hosts.push(h);
        sh(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
        // Hosts may bind the service address before they hold it (the standby binds at activation).
        sh(&[
            "ip",
            "netns",
            "exec",
            &ns,
            "sysctl",
            "-qw",
            "net.ipv4.ip_nonlocal_bind=1",
        ])?;
        let nets: &[Net] = if matches!(h, Host::W(_)) {
            &[Net::Client]
        } else {
            &[Net::Client, Net::Replication]
        };
        for (i, net) in nets.iter().enumerate() {
            let outside = self.veth(h, *net);
            let inside = format!("{outside}i");
            sh(&[
                "ip", "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ])?;
            sh(&["ip", "link", "set", &inside, "netns", &ns])?;
            let dev = format!("eth{i}");
            sh(&["ip", "-n", &ns, "link", "set", &inside, "name", &dev])?;
            sh(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", self.ip(h, *net)),
                "dev",
                &dev,
            ])?;
            sh(&["ip", "-n", &ns, "link", "set", &dev, "up"])?;
            sh(&["ip", "link", "set", &outside, "master", &self.bridge(*net)])?;
            sh(&["ip", "link", "set", &outside, "up"])?;
        }
        Ok(())
    }

    /// A command run inside a host's namespace.
    pub fn command(&self, h: Host, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns_name(h)]).arg(program);
        c
    }

    /// A command run inside a host's namespace and in a new time namespace whose monotonic and
    /// boot-time clocks are `offset` ahead of this machine's (set before the program starts: the
    /// kernel allows no change once a process is inside). The wall clock is not namespaced.
    pub fn command_with_clock(
        &self,
        h: Host,
        program: &std::path::Path,
        offset: std::time::Duration,
    ) -> Command {
        let s = offset.as_secs().to_string();
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns_name(h)])
            .args(["unshare", "--time", "--monotonic", &s, "--boottime", &s])
            .arg(program);
        c
    }

    /// Run a command inside a host's namespace.
    pub fn exec(&self, h: Host, args: &[&str]) -> Result<(), String> {
        let ns = self.ns_name(h);
        let mut v = vec!["ip", "netns", "exec", ns.as_str()];
        v.extend_from_slice(args);
        sh(&v)
    }

    /// Whether host `h` has address `ip` on one of its interfaces.
    pub fn has_addr(&self, h: Host, ip: &str) -> bool {
        Command::new("ip")
            .args(["-n", &self.ns_name(h), "-o", "addr", "show"])
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .any(|w| w.split('/').next() == Some(ip))
            })
    }

    /// Take a host's link on a network down (both directions, like a pulled cable) or up again.
    pub fn link(&self, h: Host, net: Net, up: bool) -> Result<(), String> {
        sh(&[
            "ip",
            "link",
            "set",
            &self.veth(h, net),
            if up { "up" } else { "down" },
        ])
    }

    /// Drop, inside host `h`, what arrives on its interface for `net` (one direction only),
    /// with probability `percent` (100: everything). Replaces earlier rules of `h`.
    pub fn drop_arriving(&self, h: Host, net: Net, percent: u8) -> Result<(), String> {
        let dev = if net == Net::Client { "eth0" } else { "eth1" };
        let rule = if percent >= 100 {
            format!("in iifname \"{dev}\" drop")
        } else {
            format!("in iifname \"{dev}\" numgen random mod 100 < {percent} drop")
        };
        self.set_rules(h, &[rule])
    }

    /// Limit what host `h` sends on `net` to `mbit` Mbit/s: htb with one class (tc, inside the
    /// host), whose default queue is the device's FIFO (txqueuelen packets). This kernel has htb
    /// but no netem or tbf (shared/research/fault-injection-here.md). Replaces an earlier limit.
    pub fn shape(&self, h: Host, net: Net, mbit: u32) -> Result<(), String> {
        let dev = if net == Net::Client { "eth0" } else { "eth1" };
        self.clear_shape(h, net);
        let rate = format!("{mbit}mbit");
        self.exec(
            h,
            &[
                "tc", "qdisc", "add", "dev", dev, "root", "handle", "1:", "htb", "default", "10",
            ],
        )?;
        self.exec(
            h,
            &[
                "tc", "class", "add", "dev", dev, "parent", "1:", "classid", "1:10", "htb", "rate",
                &rate, "ceil", &rate,
            ],
        )
    }

    /// Remove a limit set by [`Topology::shape`].
    pub fn clear_shape(&self, h: Host, net: Net) {
        let dev = if net == Net::Client { "eth0" } else { "eth1" };
        let _ = self.exec(h, &["tc", "qdisc", "del", "dev", dev, "root"]);
    }

    /// Cut host `h` off from `peers` (addresses) both ways, inside `h`. Replaces earlier rules.
    pub fn isolate_from(&self, h: Host, peers: &[String]) -> Result<(), String> {
        let mut rules = vec![];
        for p in peers {
            rules.push(format!("in ip saddr {p} drop"));
            rules.push(format!("out ip daddr {p} drop"));
        }
        self.set_rules(h, &rules)
    }

    /// Install nftables rules inside host `h`, each `in ...` (input hook) or `out ...` (output
    /// hook), in a table of the suite's own, replacing earlier rules of `h`.
    pub fn set_rules(&self, h: Host, rules: &[String]) -> Result<(), String> {
        self.clear_rules(h);
        let mut script = String::from("add table inet hsbfault\nadd chain inet hsbfault in { type filter hook input priority 0; }\nadd chain inet hsbfault out { type filter hook output priority 0; }\n");
        for r in rules {
            script.push_str(&format!("add rule inet hsbfault {r}\n"));
        }
        let path = std::env::temp_dir().join(format!("hsb-nft-{}-{}.nft", self.n, h.tag()));
        std::fs::write(&path, script).map_err(|e| e.to_string())?;
        let r = self.exec(h, &["nft", "-f", &path.display().to_string()]);
        let _ = std::fs::remove_file(&path);
        r
    }

    /// Remove the fault rules of a host.
    pub fn clear_rules(&self, h: Host) {
        let _ = self.exec(h, &["nft", "delete", "table", "inet", "hsbfault"]);
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for h in &self.hosts {
            let _ = sh(&["ip", "netns", "del", &self.ns_name(*h)]);
            for net in [Net::Client, Net::Replication] {
                let _ = sh(&["ip", "link", "del", &self.veth(*h, net)]);
            }
        }
        let _ = sh(&["ip", "link", "del", &self.bridge(Net::Client)]);
        let _ = sh(&["ip", "link", "del", &self.bridge(Net::Replication)]);
        let _ = std::fs::remove_file(owner_file(self.n));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two tests of one process probing at once must not share a namespace name.
    #[test]
    fn probe_names_are_unique_across_threads() {
        let names: Vec<String> = (0..8)
            .map(|_| std::thread::spawn(probe_name))
            .map(|h| h.join().expect("thread"))
            .chain((0..8).map(|_| probe_name()))
            .collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        // `ip netns` names are file names under /run/netns.
        assert!(names.iter().all(|n| n.len() < 64 && !n.contains('/')));
    }
}
