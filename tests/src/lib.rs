//! Test harness: real hsb daemons as child processes, talking over real loopback sockets.
//!
//! Binaries are taken from `HSB_BIN_DIR` if set (e.g. the static release build), otherwise from
//! the cargo target directory of the running test (`just test` builds them first).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub mod cluster;
pub mod faults;
pub mod guests;
pub mod life;
pub mod man;
pub mod nbdclient;
pub mod netns;
pub mod nodecase;
pub mod pagetrace;
pub mod prom;
pub mod proxy;
pub mod relay;
pub mod sim;
pub mod slowfs;
pub mod soak;
pub mod xenrig;

/// Path of an hsb binary.
pub fn bin(name: &str) -> PathBuf {
    if let Ok(dir) = std::env::var("HSB_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let mut dir = exe.parent().expect("deps dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let p = dir.join(name);
    assert!(p.exists(), "{} not found: build the daemons first (`cargo build --workspace --bins`, or run `just test`)", p.display());
    p
}

/// Whether the tests run under CI (`CI=true`, as CI services set it; `1` too).
pub fn under_ci() -> bool {
    ci_value_means_ci(std::env::var("CI").ok().as_deref())
}

fn ci_value_means_ci(v: Option<&str>) -> bool {
    v.is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// A test that cannot run here (no root, no `nft`, no Xen rig): it says so, naming the test and
/// the reason, and returns so the caller can return; under CI it panics instead, because a test
/// that cannot run must not pass there. Every test that can skip goes through this.
pub fn skip(test: &str, why: &str) {
    skip_unless_ci(under_ci(), test, why);
}

fn skip_unless_ci(ci: bool, test: &str, why: &str) {
    if ci {
        panic!("{test} cannot run here, and under CI a test that cannot run fails: {why}");
    }
    eprintln!("SKIPPED: {test}: {why}");
    println!("SKIPPED: {test}: {why}");
}

static NEXT: AtomicUsize = AtomicUsize::new(0);
static KEEP: AtomicBool = AtomicBool::new(false);

/// Keep every temporary directory of this process from now on, as `HSB_KEEP_TEST_DIRS=1` does:
/// a failed run's logs and decision logs are its evidence.
pub fn keep_test_dirs() {
    KEEP.store(true, Ordering::Relaxed);
}

/// A fresh temporary directory, removed on drop (unless kept: [`keep_test_dirs`]).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "hsb-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("HSB_KEEP_TEST_DIRS").is_none() && !KEEP.load(Ordering::Relaxed) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

static NEXT_PORT: AtomicUsize = AtomicUsize::new(0);

/// A free loopback address for a daemon. Ports come from 20000-31999, below the kernel's
/// ephemeral range, so sockets the tests bind to port 0 (relays, clients) can never take a port
/// a daemon is about to bind; each is checked free for both TCP and UDP. Test processes running
/// at the same time start at different offsets.
pub fn free_addr() -> SocketAddr {
    let start = (std::process::id() as usize * 7919) % 12000;
    for _ in 0..12000 {
        let n = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
        let port = 20000 + ((start + n * 13) % 12000) as u16;
        let a: SocketAddr = SocketAddr::from(([127, 0, 0, 1], port));
        if TcpListener::bind(a).is_ok() && std::net::UdpSocket::bind(a).is_ok() {
            return a;
        }
    }
    panic!("no free loopback port in 20000-31999");
}

/// A running daemon.
pub struct Daemon {
    pub name: String,
    pub child: Option<Child>,
    pub log: PathBuf,
    pub control: PathBuf,
}

impl Daemon {
    /// Start `binary run -c config` with stderr to `log`.
    pub fn start(
        binary: &str,
        config: &Path,
        control: &Path,
        log: &Path,
        extra: &[&str],
    ) -> Daemon {
        let err = std::fs::File::create(log).expect("log file");
        let mut cmd = Command::new(bin(binary));
        cmd.arg("run")
            .arg("-c")
            .arg(config)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err);
        if std::env::var_os("HSB_LOG").is_none() {
            cmd.env("HSB_LOG", "info");
        }
        let child = cmd.spawn().expect("spawn daemon");
        Daemon {
            name: binary.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
            control: control.to_path_buf(),
        }
    }

    /// Start `cmd` (which runs a daemon's `run -c ...`) with stderr to `log`.
    pub fn start_command(name: &str, mut cmd: Command, control: &Path, log: &Path) -> Daemon {
        let err = std::fs::File::create(log).expect("log file");
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(err);
        let own_level = cmd.get_envs().any(|(k, _)| k == "HSB_LOG");
        if std::env::var_os("HSB_LOG").is_none() && !own_level {
            cmd.env("HSB_LOG", "info");
        }
        let child = cmd.spawn().expect("spawn daemon");
        Daemon {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
            control: control.to_path_buf(),
        }
    }

    /// Send a signal by name (`STOP`, `CONT`, `TERM`, `HUP`...), as `kill -NAME` does.
    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(c.id().to_string())
                .status();
        }
    }

    /// One control command's answer.
    pub fn ctl(&self, cmd: &str) -> std::io::Result<String> {
        hsb_common::ctl::request(&self.control, cmd, Duration::from_secs(5))
    }

    /// `status` as a map (empty if the daemon does not answer).
    pub fn status(&self) -> HashMap<String, String> {
        parse_status(&self.ctl("status").unwrap_or_default())
    }

    /// Wait until `pred` holds on the status, or panic with the log after `timeout`.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&HashMap<String, String>) -> bool,
    ) -> HashMap<String, String> {
        let t = Instant::now();
        loop {
            let s = self.status();
            if !s.is_empty() && pred(&s) {
                return s;
            }
            if t.elapsed() > timeout {
                panic!(
                    "{}: timed out waiting for {what}; last status {s:?}\n--- log ---\n{}",
                    self.name,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Parse `key value` status lines.
pub fn parse_status(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A number from a status map (0 if absent or not a number).
pub fn num(s: &HashMap<String, String>, k: &str) -> u64 {
    s.get(k).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// `"key":<digits>` from a JSON line.
pub fn json_u64(l: &str, key: &str) -> Option<u64> {
    let pat = format!("\"{key}\":");
    let rest = &l[l.find(&pat)? + pat.len()..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// `"key":"<text>"` from a JSON line.
pub fn json_str<'a>(l: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("\"{key}\":\"");
    let rest = &l[l.find(&pat)? + pat.len()..];
    Some(&rest[..rest.find('"')?])
}

/// A primary and a standby on loopback with the model domain.
pub struct Pair {
    pub dir: TempDir,
    pub primary: Daemon,
    pub standby: Daemon,
    pub primary_service: SocketAddr,
    pub standby_service: SocketAddr,
    pub repl: SocketAddr,
}

/// Options for [`Pair::start`].
#[derive(Clone)]
pub struct PairOpts {
    pub memory: &'static str,
    pub dirty_rate: u64,
    pub epoch: &'static str,
    /// Where the primary sends checkpoints (a proxy), if not straight to the standby.
    pub primary_target: Option<SocketAddr>,
    /// The standby's replication address, if the test needs to know it in advance (to put a
    /// proxy in front of it).
    pub repl: Option<SocketAddr>,
    pub extra_primary: Vec<String>,
    pub extra_standby: Vec<String>,
    /// Start the standby under this umask (through `sh -c 'umask ...; exec ...'`).
    pub standby_umask: Option<u32>,
    /// Environment variables of the primary (e.g. `NOTIFY_SOCKET`).
    pub primary_env: Vec<(String, String)>,
    /// The primary's `HSB_LOG` level, if not the default (`debug` logs every checkpoint).
    pub primary_log: Option<&'static str>,
    /// Start the standby through this wrapper command (e.g. `prlimit --fsize=N`).
    pub standby_wrapper: Vec<String>,
    /// Start the primary through this wrapper command (e.g. `prlimit --fsize=N`).
    pub primary_wrapper: Vec<String>,
    /// Environment variables of the standby.
    pub standby_env: Vec<(String, String)>,
}

impl Default for PairOpts {
    fn default() -> Self {
        PairOpts {
            memory: "8MiB",
            dirty_rate: 2000,
            epoch: "25ms",
            primary_target: None,
            repl: None,
            extra_standby: vec![],
            extra_primary: vec![],
            standby_umask: None,
            primary_env: vec![],
            primary_log: None,
            standby_wrapper: vec![],
            primary_wrapper: vec![],
            standby_env: vec![],
        }
    }
}

impl Pair {
    /// The standby's `digest` answer (its disk image against the block CRCs its memory keeps),
    /// asserting that disk and memory agree.
    pub fn standby_disk_agrees_with_memory(&self) -> HashMap<String, String> {
        let d = hsb_common::ctl::request(&self.standby.control, "digest", Duration::from_secs(60))
            .expect("digest");
        let d = parse_status(&d);
        assert_eq!(
            d.get("disk_agrees_with_memory").map(String::as_str),
            Some("yes"),
            "{d:?}"
        );
        d
    }

    /// Start a standby, then a primary, and wait for the first full synchronisation.
    pub fn start(o: PairOpts) -> Pair {
        let dir = TempDir::new("pair");
        let key = dir.path("cluster.key");
        hsb_common::key::ClusterKey::generate(&key).expect("key");
        let repl = o.repl.unwrap_or_else(free_addr);
        let (ps, ss) = (free_addr(), free_addr());
        let standby_conf = dir.path("standby.conf");
        std::fs::write(
            &standby_conf,
            format!(
                "node = standby\nstate_file = {}\ncluster_key = {}\nlisten = {repl}\ncontrol = {}\nmodel.memory = {}\nmodel.service = {ss}\nstats_interval = 1s\n{}\n",
                dir.path("standby.state").display(),
                key.display(),
                dir.path("standby.sock").display(),
                o.memory,
                o.extra_standby.join("\n")
            ),
        )
        .expect("write config");
        let mut cmd = match o.standby_umask {
            None if !o.standby_wrapper.is_empty() => {
                let mut cmd = Command::new(&o.standby_wrapper[0]);
                cmd.args(&o.standby_wrapper[1..])
                    .arg(bin("hsb-standby"))
                    .arg("run")
                    .arg("-c")
                    .arg(&standby_conf);
                cmd
            }
            None => {
                let mut cmd = Command::new(bin("hsb-standby"));
                cmd.arg("run").arg("-c").arg(&standby_conf);
                cmd
            }
            Some(mask) => {
                let mut cmd = Command::new("sh");
                cmd.arg("-c")
                    .arg(format!("umask {mask:03o} && exec \"$0\" run -c \"$1\""))
                    .arg(bin("hsb-standby"))
                    .arg(&standby_conf);
                cmd
            }
        };
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
        let primary_conf = dir.path("primary.conf");
        let mut text = format!(
            "node = primary\nstate_file = {}\ncluster_key = {}\nstandby = {}\ncontrol = {}\nmodel.memory = {}\nmodel.service = {ps}\nmodel.dirty_rate = {}\ncheckpoint_period = {}\nstats_interval = 1s\nreconnect_interval = 50ms\n",
            dir.path("primary.state").display(),
            key.display(),
            o.primary_target.unwrap_or(repl),
            dir.path("primary.sock").display(),
            o.memory,
            o.dirty_rate,
            o.epoch
        );
        for l in &o.extra_primary {
            text.push_str(l);
            text.push('\n');
        }
        std::fs::write(&primary_conf, text).expect("write config");
        let mut cmd = match o.primary_wrapper.split_first() {
            Some((w, args)) => {
                let mut cmd = Command::new(w);
                cmd.args(args).arg(bin("hsb-primary"));
                cmd
            }
            None => Command::new(bin("hsb-primary")),
        };
        cmd.arg("run").arg("-c").arg(&primary_conf);
        for (k, v) in &o.primary_env {
            cmd.env(k, v);
        }
        if let Some(level) = o.primary_log {
            cmd.env("HSB_LOG", level);
        }
        let primary = Daemon::start_command(
            "hsb-primary",
            cmd,
            &dir.path("primary.sock"),
            &dir.path("primary.log"),
        );
        primary.wait_for("first checkpoint acked", Duration::from_secs(30), |s| {
            num(s, "acked_checkpoint") >= 1
        });
        Pair {
            dir,
            primary,
            standby,
            primary_service: ps,
            standby_service: ss,
            repl,
        }
    }

    /// Both logs, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "--- primary ---\n{}\n--- standby ---\n{}",
            self.primary.log_text(),
            self.standby.log_text()
        )
    }
}

/// A blocking line client of the model service.
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    pub fn connect(addr: SocketAddr, timeout: Duration) -> std::io::Result<Client> {
        let s = TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        s.set_nodelay(true)?;
        Ok(Client {
            reader: BufReader::new(s.try_clone()?),
            writer: s,
        })
    }

    /// Send a request; the reply line, or an error (timeout, closed).
    pub fn request(&mut self, line: &str) -> std::io::Result<String> {
        self.writer.write_all(format!("{line}\n").as_bytes())?;
        self.read_line()
    }

    pub fn send_only(&mut self, line: &str) -> std::io::Result<()> {
        self.writer.write_all(format!("{line}\n").as_bytes())
    }

    pub fn read_line(&mut self) -> std::io::Result<String> {
        let mut l = String::new();
        let n = self.reader.read_line(&mut l)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(l.trim_end().to_string())
    }

    pub fn set_timeout(&self, t: Duration) {
        let _ = self.writer.set_read_timeout(Some(t));
        let _ = self.writer.set_write_timeout(Some(t));
    }
}

/// Read a whole stream (used by proxy tests).
pub fn drain(mut s: impl Read) -> Vec<u8> {
    let mut v = Vec::new();
    let _ = s.read_to_end(&mut v);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skip_prints_and_returns_outside_ci() {
        skip_unless_ci(false, "some test", "no nft here");
        assert!(!ci_value_means_ci(None));
        assert!(!ci_value_means_ci(Some("false")));
        assert!(!ci_value_means_ci(Some("")));
    }

    #[test]
    #[should_panic(expected = "under CI a test that cannot run fails: no nft here")]
    fn a_skip_panics_under_ci() {
        assert!(ci_value_means_ci(Some("true")));
        assert!(ci_value_means_ci(Some("TRUE")));
        assert!(ci_value_means_ci(Some("1")));
        skip_unless_ci(true, "some test", "no nft here");
    }
}
