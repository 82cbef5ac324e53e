//! Where a standby starts from: the host state's newest epoch, written back with this
//! process's incarnation before anything is sent (README: the restart matrix).

use hsb_common::node_state::{standby_start, NodeRole, NodeState};
use hsb_standby::config::Settings;

/// Load the host's state, follow the newest epoch it knows, and write it back with this
/// process's incarnation before anything is sent (README: the restart matrix).
pub fn host_state(s: &Settings) -> Result<NodeState, String> {
    let saved = NodeState::load(&s.state_file)
        .map_err(|e| format!("state_file {}: {e}", s.state_file.display()))?;
    let st = NodeState {
        epoch: standby_start(saved),
        role: NodeRole::Standby,
        checkpoint: saved.map_or(0, |x| x.checkpoint),
        incarnation: hsb_common::datagram::next_incarnation(
            saved.map(|x| x.incarnation),
            hsb_common::datagram::wall_clock_micros(),
        ),
        maintenance: saved.is_some_and(|x| x.maintenance),
    };
    if let Some(prev) = saved {
        log::info!(
            "host state {}: epoch {} ({}); this standby follows epoch {}",
            s.state_file.display(),
            prev.epoch,
            prev.role.name(),
            st.epoch
        );
    }
    st.save(&s.state_file)
        .map_err(|e| format!("cannot save state_file {}: {e}", s.state_file.display()))?;
    Ok(st)
}
