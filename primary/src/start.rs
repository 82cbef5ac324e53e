//! Where a primary starts from: the host state's restart rule (README, "the restart matrix"),
//! applied before the daemon does anything, and the exec of hsb-standby when this host must
//! rejoin as the standby.

use std::io;

use hsb_common::node_state::{primary_start, NodeRole, NodeState, PrimaryArgs, PrimaryStart};
use hsb_primary::config::Settings;
use hsb_primary::node::Start;

/// A random 32-bit number (request and query numbers start at one per process).
fn random_u32() -> io::Result<u32> {
    let mut b = [0u8; 4];
    hsb_common::rng::os_random(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

/// Apply the restart rule (README: the restart matrix) before anything else: a host that is a
/// standby, or whose primary stepped down, or whose model domain died with its daemon, never
/// serves as the primary; it rejoins as the standby (exec `rejoin_config`) or refuses to start.
/// Otherwise the epoch and first checkpoint are set in `s`, and the state is written durably
/// (epoch, role, a block of checkpoint numbers, the incarnation) before the daemon acts.
pub fn start(s: &mut Settings) -> Result<Start, String> {
    // A promoting standby passes its replica's checkpoint; a fresh or restarted primary has
    // none in its configuration.
    let promoted = s.start_checkpoint > 0;
    let saved = NodeState::load(&s.state_file)
        .map_err(|e| format!("state_file {}: {e}", s.state_file.display()))?;
    let handed_over = !s.start_image.as_os_str().is_empty() && s.start_image.exists();
    let args = PrimaryArgs {
        start_epoch: s.start_epoch,
        start_checkpoint: s.start_checkpoint,
        handed_over,
        domain_survives: s.xen.is_some(),
    };
    match primary_start(saved, args) {
        PrimaryStart::Rejoin { epoch, why } => {
            log::error!("not starting as the primary of epoch {epoch}: {why}");
            if s.rejoin_config.as_os_str().is_empty() {
                return Err(format!(
                    "not the primary: {why}; start hsb-standby on this host (no rejoin_config is set)"
                ));
            }
            let e = exec_standby(&s.rejoin_config, &s.state_file);
            Err(format!("rejoin: {e}"))
        }
        PrimaryStart::Run {
            epoch,
            first_checkpoint,
        } => {
            s.start_epoch = epoch.0;
            s.start_checkpoint = first_checkpoint.saturating_sub(1);
            let incarnation = hsb_common::datagram::next_incarnation(
                saved.map(|x| x.incarnation),
                hsb_common::datagram::wall_clock_micros(),
            );
            let reserved = s
                .start_checkpoint
                .saturating_add(hsb_common::node_state::CHECKPOINT_BLOCK);
            let maintenance = saved.is_some_and(|x| x.maintenance);
            NodeState {
                epoch,
                role: NodeRole::Primary,
                checkpoint: reserved,
                incarnation,
                maintenance,
            }
            .save(&s.state_file)
            .map_err(|e| format!("cannot save state_file {}: {e}", s.state_file.display()))?;
            if let Some(prev) = saved {
                log::info!(
                    "host state {}: epoch {} ({}), checkpoints up to {}; this primary runs in epoch {epoch} from checkpoint {first_checkpoint}",
                    s.state_file.display(),
                    prev.epoch,
                    prev.role.name(),
                    prev.checkpoint
                );
            }
            Ok(Start {
                epoch,
                first_checkpoint,
                reserved,
                incarnation,
                maintenance,
                promoted,
                forced: s.start_forced,
                request_base: random_u32()
                    .map_err(|e| format!("cannot read /dev/urandom for request numbers: {e}"))?,
            })
        }
    }
}

impl crate::daemon::Daemon {
    /// After stepping down: become this node's standby (exec hsb-standby with `rejoin_config`),
    /// which the new primary then synchronises from scratch. Returns only if that fails. Under
    /// systemd the unit's main process stays this one: hsb-standby notifies `READY=1` in its
    /// place once it is up.
    pub(crate) fn rejoin(&mut self) {
        // The standby this host becomes reports exactly what this primary wrote since its
        // last acknowledged checkpoint.
        self.persist_disk("stepping down");
        if self.s.rejoin_config.as_os_str().is_empty() {
            log::error!("no rejoin_config: restart this node as hsb-standby to resynchronise it");
            return;
        }
        if let Some(f) = self.failover.as_mut() {
            f.decisions.recorder.flush();
        }
        let now = self.clock.now();
        self.surface.notify.before_exec(
            now,
            &format!(
                "primary, epoch {}: stepped down; rejoining as hsb-standby",
                self.node.epoch().0
            ),
        );
        let e = exec_standby(&self.s.rejoin_config, &self.s.state_file);
        log::error!("rejoin: exec hsb-standby failed: {e}; staying paused");
    }
}

/// Become this host's standby: exec hsb-standby with `config`, passing the state file on.
/// Returns only if the exec fails.
pub fn exec_standby(config: &std::path::Path, state_file: &std::path::Path) -> io::Error {
    use std::os::unix::process::CommandExt;
    let standby = match std::env::current_exe() {
        Ok(p) => p.with_file_name("hsb-standby"),
        Err(e) => return e,
    };
    log::warn!(
        "rejoining as the standby: exec {} run -c {}",
        standby.display(),
        config.display()
    );
    log::logger().flush();
    std::process::Command::new(&standby)
        .arg("run")
        .arg("-c")
        .arg(config)
        .arg("--set")
        .arg(format!("state_file={}", state_file.display()))
        .exec()
}
