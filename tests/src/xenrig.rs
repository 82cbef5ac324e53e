//! The two-host Xen test rig (`tests/xen-rig`, see its README) from Rust: a thin wrapper over
//! `rig.sh`, which does the work (QEMU, namespace, serial consoles). Root only; everything is slow
//! under TCG, so the rig's own generous timeouts apply. The rig is torn down when the value drops.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The rig network (clients, witnesses, dom0 and guest addresses) or the replication network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RigNet {
    Rig,
    Repl,
}

/// Addresses of the rig (fixed by `rig.sh` and the images).
pub mod addr {
    /// The machine's side of the rig network, in the rig's namespace.
    pub const MACHINE: &str = "10.99.0.254";
    /// Spare machine-side addresses for witnesses and clients.
    pub const WITNESSES: [&str; 3] = ["10.99.0.101", "10.99.0.102", "10.99.0.103"];
    /// The guest's address; its counter listens on port 7000.
    pub const GUEST: &str = "10.99.0.21";
    pub const GUEST_PORT: u16 = 7000;

    /// dom0 of host `n` (1 or 2) on the rig network.
    pub fn dom0(n: u8) -> String {
        format!("10.99.0.{n}")
    }

    /// dom0 of host `n` on the replication network.
    pub fn repl(n: u8) -> String {
        format!("10.98.0.{n}")
    }
}

/// A running rig. Dropping it runs `rig.sh down`.
pub struct XenRig {
    script: PathBuf,
    env: Vec<(String, String)>,
}

/// `tests/xen-rig/rig.sh` of this checkout.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("xen-rig/rig.sh")
}

/// Whether the rig can run here: root, /dev/net/tun, QEMU, and images built by `build-images.sh`.
pub fn available() -> Result<(), String> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map_err(|e| format!("id: {e}"))?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Err("the Xen rig needs root".into());
    }
    if !Path::new("/dev/net/tun").exists() {
        return Err("no /dev/net/tun".into());
    }
    let dir = std::env::var("HSB_RIG_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/xen-rig"));
    for f in ["xen.bin", "vmlinuz", "dom0.cpio"] {
        if !dir.join(f).exists() {
            return Err(format!(
                "no {}: run `just xen-rig-images`",
                dir.join(f).display()
            ));
        }
    }
    Ok(())
}

impl XenRig {
    /// Boots both hosts. `bin_dir`: executables that appear as `/usr/local/sbin/*` in both dom0s;
    /// `etc_dir`: files that appear as `/etc/hsb/*` (an executable `rig-boot.sh` there runs at boot).
    pub fn up(bin_dir: Option<&Path>, etc_dir: Option<&Path>) -> Result<XenRig, String> {
        let mut env = Vec::new();
        if let Some(d) = bin_dir {
            env.push(("HSB_BIN_DIR".to_string(), d.display().to_string()));
        }
        if let Some(d) = etc_dir {
            env.push(("HSB_RIG_ETC".to_string(), d.display().to_string()));
        }
        let rig = XenRig {
            script: script(),
            env,
        };
        // On a failed bring-up rig.sh has already torn everything down; drop does it again (harmless).
        rig.call(&["up"])?;
        Ok(rig)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.script);
        c.args(args).stdin(Stdio::null());
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// Runs `rig.sh ARGS`; stdout on success, stdout+stderr in the error otherwise.
    pub fn call(&self, args: &[&str]) -> Result<String, String> {
        let out = self
            .command(args)
            .output()
            .map_err(|e| format!("rig.sh {}: {e}", args.join(" ")))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(format!(
                "rig.sh {} failed ({}): {}{}",
                args.join(" "),
                out.status,
                stdout,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Runs `cmd` in host `n`'s dom0: its output (stdout and stderr) and exit status
    /// (124 when `timeout_s` passed).
    pub fn run(&self, n: u8, cmd: &str, timeout_s: u32) -> Result<(String, i32), String> {
        let (host, t) = (n.to_string(), timeout_s.to_string());
        let out = self
            .command(&["run", "-t", &t, &host, cmd])
            .output()
            .map_err(|e| format!("rig.sh run: {e}"))?;
        let code = out.status.code().unwrap_or(-1);
        if code == 125 {
            return Err(format!(
                "host{n}: console unreachable: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok((String::from_utf8_lossy(&out.stdout).into_owned(), code))
    }

    /// `run`, and an error unless the command succeeded.
    pub fn run_ok(&self, n: u8, cmd: &str, timeout_s: u32) -> Result<String, String> {
        match self.run(n, cmd, timeout_s)? {
            (out, 0) => Ok(out),
            (out, code) => Err(format!("host{n}: `{cmd}` exited with {code}: {out}")),
        }
    }

    /// Copies a local file into host `n`'s dom0 (over the rig network).
    pub fn push(&self, n: u8, src: &Path, dst: &str) -> Result<(), String> {
        let src = src.display().to_string();
        self.call(&["push", &n.to_string(), &src, dst]).map(|_| ())
    }

    /// `xl create` of the guest on host `n`; returns when its counter answers.
    pub fn guest_up(&self, n: u8) -> Result<(), String> {
        self.call(&["guest-up", &n.to_string()]).map(|_| ())
    }

    /// `xl create` of the guest with its data disk (`/etc/xen/hsb-guest-disk.cfg`: dom0's
    /// `/dev/nbd0` as xvdb, ext4, mounted on /data, the counter's records in /data/records);
    /// returns when its counter answers. The disk must be attached first ([`XenRig::disk_attach`]).
    pub fn guest_up_disk(&self, n: u8) -> Result<(), String> {
        self.call(&["guest-up", &n.to_string(), "disk"]).map(|_| ())
    }

    /// hsb-primary (model backend, replicating nowhere) in host `n`'s dom0 as the NBD server of a
    /// fresh, empty image of `size` (e.g. `64MiB`) on `/run/hsb/guest.nbd`. Needs the daemons in
    /// dom0 (`up` with a `bin_dir` holding `just static`'s binaries).
    pub fn disk_serve(&self, n: u8, size: &str) -> Result<(), String> {
        self.call(&["disk-serve", &n.to_string(), size]).map(|_| ())
    }

    /// `nbd-client -unix /run/hsb/guest.nbd /dev/nbd0` in host `n`'s dom0.
    pub fn disk_attach(&self, n: u8) -> Result<(), String> {
        self.call(&["disk-attach", &n.to_string()]).map(|_| ())
    }

    /// `nbd-client -d /dev/nbd0` in host `n`'s dom0.
    pub fn disk_detach(&self, n: u8) -> Result<(), String> {
        self.call(&["disk-detach", &n.to_string()]).map(|_| ())
    }

    /// `e2fsck -fy /dev/nbd0` in host `n`'s dom0 (the guest destroyed first), then the file
    /// system's `/records`: the output, an error when e2fsck found errors it could not correct.
    pub fn disk_check(&self, n: u8) -> Result<String, String> {
        self.call(&["disk-check", &n.to_string()])
    }

    /// One request to the guest's counter from the rig namespace; `None` when nothing answers.
    pub fn counter(&self, request: &str) -> Option<String> {
        let out = self.call(&["counter", request]).ok()?;
        let line = out.lines().next()?.trim().to_string();
        (!line.is_empty()).then_some(line)
    }

    /// Kills host `n` at once (QEMU `quit`): a host crash.
    pub fn kill(&self, n: u8) -> Result<(), String> {
        self.call(&["kill", &n.to_string()]).map(|_| ())
    }

    /// Boots a killed host again.
    pub fn boot(&self, n: u8) -> Result<(), String> {
        self.call(&["boot", &n.to_string()]).map(|_| ())
    }

    /// Cuts (or heals) the network between the two hosts; the machine still reaches both.
    pub fn cut(&self, net: RigNet, cut: bool) -> Result<(), String> {
        let what = match (net, cut) {
            (RigNet::Rig, true) => "cut-rig",
            (RigNet::Rig, false) => "heal-rig",
            (RigNet::Repl, true) => "cut-repl",
            (RigNet::Repl, false) => "heal-repl",
        };
        self.call(&[what]).map(|_| ())
    }

    /// Drops all of host `n`'s traffic on one network, the machine's included (or restores it).
    pub fn isolate(&self, n: u8, net: RigNet, isolated: bool) -> Result<(), String> {
        let verb = if isolated { "isolate" } else { "unisolate" };
        let host = n.to_string();
        let mut args = vec![verb, host.as_str()];
        if net == RigNet::Repl {
            args.push("repl");
        }
        self.call(&args).map(|_| ())
    }

    /// A command run inside the rig's network namespace (witnesses, clients).
    pub fn ns_command(&self, program: &Path) -> Command {
        let ns = std::env::var("HSB_RIG_NS").unwrap_or_else(|_| "hsb-rig".into());
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &ns]).arg(program);
        c
    }
}

impl Drop for XenRig {
    fn drop(&mut self) {
        let _ = self.command(&["down"]).output();
    }
}
