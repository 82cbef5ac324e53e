//! The run's cluster key and configuration (in `target/xen-rig/e2e`): both hosts' daemons
//! (`etc/`) and the three witnesses.

use std::path::Path;
use std::process::Command;

use super::{GUEST, GUEST_SERVICE, TCG_TIMING};

/// The disk of the `disk` mode (`xen.disk`, served at `disk.nbd_socket`; attached in dom0 as
/// `/dev/nbd0`, the guest's `xvdb`).
pub(super) const PRIMARY_NBD: &str = "/run/hsb/guest.nbd";
pub(super) const STANDBY_NBD: &str = "/run/hsb/replica.nbd";
const DISK_SIZE: &str = "64MiB";
/// Host 2's hsb-primary configuration in the `disk` mode: the activated standby hands the
/// guest over to it (`promote_config`), with the disk's NBD export and its kernel connection.
pub(super) const PROMOTE_CONF: &str = "/etc/hsb/promote.conf";
/// The disk benchmark's export, and its epoch.
pub(super) const BENCH_NBD: &str = "/run/hsb/bench.nbd";
pub(super) const BENCH_PERIOD: &str = "100ms";

/// The run's configuration; with `disk`, both daemons replicate the guest's data disk.
pub(super) fn write_etc(dir: &Path, bin: &Path, disk: bool) -> Result<(), String> {
    let etc = dir.join("etc");
    std::fs::create_dir_all(&etc).map_err(|e| e.to_string())?;
    let key = etc.join("cluster.key");
    let _ = std::fs::remove_file(&key);
    let out = Command::new(bin.join("hsb-primary"))
        .arg("keygen")
        .arg(&key)
        .output()
        .map_err(|e| format!("hsb-primary keygen: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "keygen: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    // Each witness on its own address of the rig network, as on three client machines.
    let peers = "1=10.99.0.101:7400,2=10.99.0.102:7400,3=10.99.0.103:7400";
    let common = format!(
        "cluster_key = /etc/hsb/cluster.key\nbackend = xen\nxen.domain = {GUEST}\nfailover = true\nfailover.witnesses = 1,2,3\nwitness_peers = {peers}\nstats_interval = 5s\n{TCG_TIMING}"
    );
    // HSB_E2E_ENCODE=always|never|auto sets the primary's `encode` (default: its default, auto).
    let encode = std::env::var("HSB_E2E_ENCODE")
        .map(|e| format!("encode = {e}\n"))
        .unwrap_or_default();
    let primary = format!(
        "{common}{encode}node = host1\nstandby = 10.98.0.2:7100\nheartbeat_peers = 10.98.0.2:7200\nwitness_listen = 10.99.0.1:7301\nstandby_witness = 10.99.0.2:7300\ncontrol = /run/hsb/primary.sock\ncheckpoint_period = 200ms\nxen.output = plug\nxen.suspend_timeout = 5s\ndecision_log = /var/log/hsb-primary.decisions\n"
    );
    let standby = format!(
        "{common}node = host2\nlisten = 10.98.0.2:7100\nheartbeat_listen = 10.98.0.2:7200\nwitness_listen = 10.99.0.2:7300\nprimary_witness = 10.99.0.1:7301\ncontrol = /run/hsb/standby.sock\ndecision_log = /var/log/hsb-standby.decisions\n"
    );
    let write = |name: &str, text: &str| {
        std::fs::write(etc.join(name), text).map_err(|e| format!("{name}: {e}"))
    };
    let replica_disk = format!("xen.disk = /var/lib/hsb/replica-disk.img\nxen.disk_size = {DISK_SIZE}\ndisk.nbd_socket = {STANDBY_NBD}\n");
    let (primary, standby) = if disk {
        (
            format!("{primary}xen.disk = /var/lib/hsb/guest-disk.img\nxen.disk_size = {DISK_SIZE}\ndisk.nbd_socket = {PRIMARY_NBD}\n"),
            format!("{standby}{replica_disk}promote_config = {PROMOTE_CONF}\n"),
        )
    } else {
        (primary, standby)
    };
    write("primary.conf", &primary)?;
    write("standby.conf", &standby)?;
    // Host 2 as the primary after the hand-over: host 1 (dead) would be its standby, the
    // witnesses reach it at the standby's witness address, as they know it.
    write(
        "promote.conf",
        &format!("{common}node = host2-primary\nstandby = 10.98.0.1:7100\nheartbeat_peers = 10.98.0.1:7200\nwitness_listen = 10.99.0.2:7300\nstandby_witness = 10.99.0.1:7301\ncontrol = /run/hsb/promoted.sock\ncheckpoint_period = 200ms\nxen.output = plug\nxen.suspend_timeout = 5s\ndecision_log = /var/log/hsb-promoted.decisions\n{replica_disk}"),
    )?;
    // The disk benchmark's pair (`disk-bench`): the model backend (the hypervisor test double)
    // replicating a 64 MiB disk that hsb-primary serves by NBD, on the rig's two dom0s.
    let bench = "cluster_key = /etc/hsb/cluster.key\nbackend = model\nmodel.memory = 16MiB\nmodel.dirty_rate = 0\nmodel.disk_size = 64MiB\nmodel.disk_rate = 0\nstats_interval = 5s\n";
    write(
        "bench-primary.conf",
        &format!("{bench}node = host1\nstandby = 10.98.0.2:7110\nstate_file = /var/lib/hsb/bench.state\ncontrol = /run/hsb/bench-primary.sock\nmodel.service = 127.0.0.1:7090\ndisk.nbd_socket = {BENCH_NBD}\ncheckpoint_period = {BENCH_PERIOD}\n"),
    )?;
    write(
        "bench-standby.conf",
        &format!("{bench}node = host2\nlisten = 10.98.0.2:7110\nstate_file = /var/lib/hsb/bench.state\ncontrol = /run/hsb/bench-standby.sock\nmodel.service = 127.0.0.1:7091\n"),
    )?;
    for i in 1..=3 {
        let w = format!(
            "id = {i}\nnode = witness-{i}\ncluster_key = {}\nlisten = 10.99.0.10{i}:7400\nprimary = 10.99.0.1:7301\nstandby = 10.99.0.2:7300\nprobe = line {GUEST_SERVICE} PING PONG\nprobe_interval = 200ms\nprobe_timeout = 1s\nreport_interval = 300ms\nstate_file = {}\ncontrol = {}\nfailover.witnesses = 1,2,3\n{TCG_TIMING}",
            key.display(),
            dir.join(format!("w{i}.state")).display(),
            dir.join(format!("w{i}.sock")).display(),
        );
        std::fs::write(dir.join(format!("w{i}.conf")), w).map_err(|e| e.to_string())?;
    }
    // Check every configuration here, before any host boots.
    for (b, f) in [
        ("hsb-primary", etc.join("primary.conf")),
        ("hsb-standby", etc.join("standby.conf")),
        ("hsb-primary", etc.join("promote.conf")),
        ("hsb-witness", dir.join("w1.conf")),
        ("hsb-primary", etc.join("bench-primary.conf")),
        ("hsb-standby", etc.join("bench-standby.conf")),
    ] {
        let mut cmd = Command::new(bin.join(b));
        cmd.arg("check").arg("-c").arg(&f);
        if b != "hsb-witness" {
            cmd.arg("--set")
                .arg(format!("cluster_key={}", key.display()));
        }
        let out = cmd.output().map_err(|e| format!("{b} check: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{b} check {}: {}",
                f.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok(())
}
