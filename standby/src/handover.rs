//! Becoming the primary after an activation (with `promote_config`): the model domain's image
//! is written and hsb-primary is exec'd in this epoch from the replica's checkpoint.

use std::path::Path;

use hsb_common::decision::Epoch;
use hsb_common::time::Nanos;

use crate::daemon::Daemon;
use crate::replica::Rep;

/// Write the domain image and exec hsb-primary at `epoch` with `promote_config`. It starts
/// unprotected under the witnesses' leases and synchronises the standby it is configured for
/// from scratch. Returns only if the hand-over fails, and then this process keeps serving.
/// Under systemd the unit's main process stays this one: hsb-primary notifies `READY=1` in its
/// place once it is up.
pub fn hand_over(d: &mut Daemon, now: Nanos, epoch: Epoch, ckpt: u64, forced: bool) {
    use std::os::unix::process::CommandExt;
    // The disk stays with its image: the track table says exactly what it holds.
    d.persist_disk("hand-over to hsb-primary");
    let image = &d.s.promote_image;
    if let Some(dir) = image.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    // A Xen guest stays where it runs: hsb-primary attaches to it (xen.domain in
    // promote_config). The model domain lives in this process and moves as an image.
    let saved = match &d.replica {
        Rep::Model(m) => m.save_image(image).map(|()| true),
        Rep::Xen(_) => Ok(false),
    };
    let with_image = match saved {
        Ok(w) => w,
        Err(e) => {
            log::error!(
                "promote: cannot write the domain image {}: {e}; staying hsb-standby",
                image.display()
            );
            return;
        }
    };
    let primary = match std::env::current_exe() {
        Ok(p) => p.with_file_name("hsb-primary"),
        Err(e) => {
            log::error!("promote: cannot find this executable: {e}");
            return;
        }
    };
    let s = &d.s;
    // Checkpoint numbers go on from the replica's: witnesses hold this epoch's stale mark
    // against them (rule 10: they never go back). The guest's disk goes on where it is: the
    // image is this one's (`disk_args`).
    let mut sets = vec![
        if with_image {
            format!("start_image={}", image.display())
        } else {
            "start_image=".to_string()
        },
        format!("start_epoch={}", epoch.0),
        format!("start_checkpoint={ckpt}"),
        format!("state_file={}", s.state_file.display()),
        format!("start_forced={forced}"),
    ];
    sets.extend(disk_args(s));
    // A configuration hsb-primary would refuse must not replace this process: it serves the
    // activated guest (and its disk) on.
    if let Err(e) = check(&primary, &s.promote_config, &sets) {
        log::error!(
            "promote: {} refuses promote_config {}: {e}; staying hsb-standby, serving the activated guest unprotected (fix the file; the hand-over is not tried again)",
            primary.display(),
            s.promote_config.display()
        );
        return;
    }
    // The export's sockets (the kernel's nbd connection in dom0) stay open across the exec.
    if let Some(n) = d.nbd.as_mut() {
        match n.hand_over() {
            Ok(inherit) => sets.push(format!("disk.nbd_inherit={}", inherit.value())),
            Err(e) => {
                log::error!("promote: {e}; staying hsb-standby");
                return;
            }
        }
    }
    log::warn!(
        "promoting: exec {} run -c {} in epoch {epoch} from {} (checkpoint {ckpt})",
        primary.display(),
        s.promote_config.display(),
        image.display()
    );
    log::logger().flush();
    d.surface.notify.before_exec(
        now,
        &format!(
            "standby, epoch {epoch}: activated from checkpoint {ckpt}; handing over to hsb-primary"
        ),
    );
    let e = std::process::Command::new(&primary)
        .arg("run")
        .arg("-c")
        .arg(&s.promote_config)
        .args(sets.iter().flat_map(|a| ["--set", a.as_str()]))
        .exec();
    log::error!(
        "promote: exec {} failed: {e}; staying hsb-standby",
        primary.display()
    );
    if let Some(n) = d.nbd.as_mut() {
        n.keep_after_failed_exec();
    }
}

/// How long `hsb-primary check` may take.
const CHECK_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether hsb-primary accepts `config` with `sets` (`hsb-primary check`, bounded by
/// [`CHECK_LIMIT`]); its complaint if not.
fn check(primary: &Path, config: &Path, sets: &[String]) -> Result<(), String> {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let mut child = Command::new(primary)
        .arg("check")
        .arg("-c")
        .arg(config)
        .args(sets.iter().flat_map(|a| ["--set", a.as_str()]))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run its check: {e}"))?;
    let t0 = std::time::Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if t0.elapsed() < CHECK_LIMIT => {
                std::thread::sleep(std::time::Duration::from_millis(5))
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("its check did not end in {CHECK_LIMIT:?}"));
            }
            Err(e) => return Err(format!("cannot wait for its check: {e}")),
        }
    };
    if status.success() {
        return Ok(());
    }
    let mut said = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = (&mut err).take(4096).read_to_string(&mut said);
    }
    Err(format!("{} ({status})", said.trim()))
}

/// The disk hsb-primary goes on with: this one's image and size (whatever `promote_config`
/// says: the guest's disk is this image), and the export's socket.
fn disk_args(s: &hsb_standby::config::Settings) -> Vec<String> {
    let mut v = Vec::new();
    let image = |v: &mut Vec<String>, prefix: &str, c: &hsb_domain::disk::DiskConfig| {
        v.push(format!("{prefix}.disk={}", c.path.display()));
        v.push(format!("{prefix}.disk_size={}", c.size));
    };
    if let Some(c) = s.xen.as_ref().and_then(|x| x.disk.as_ref()) {
        image(&mut v, "xen", c);
    } else if let Some(m) = &s.disk {
        image(&mut v, "model", &m.disk);
    }
    if let Some(p) = &s.nbd_socket {
        v.push(format!("disk.nbd_socket={}", p.display()));
    }
    v
}
