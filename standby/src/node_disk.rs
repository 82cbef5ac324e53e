//! The standby node's part of disk replication (issue 14): what a disk that fails means (the
//! checkpoint is not acknowledged, the session is refused with the reason so that the primary
//! keeps its output held, and a replica whose disk failed while applying can no longer be
//! activated: its disk is neither the last checkpoint nor the one being applied), and an
//! activation's first step (the disk forks before the host state says primary).

use hsb_common::time::Nanos;

use super::{push, Effect, Effects, Noise, StandbyNode};

impl StandbyNode {
    /// The replica's disk failed while the live session on `slot` was staging or applying.
    pub(super) fn disk_failed(
        &mut self,
        now: Nanos,
        slot: usize,
        ckpt: Option<u64>,
        error: &str,
        out_of_space: bool,
        fx: &mut Effects,
    ) {
        if self.current != Some(slot) {
            return;
        }
        if ckpt.is_some() {
            // Until a resynchronisation, there is no checkpoint to activate from.
            self.applied = None;
        }
        let what = ckpt.map_or("a disk resynchronisation".to_string(), |c| {
            format!("checkpoint {c}")
        });
        let space = if out_of_space {
            " (the image is out of space)"
        } else {
            ""
        };
        self.noisy(Noise::DiskFailed, now, || {
            format!("disk: {what} not applied, not acknowledged{space}: {error}")
        });
        let reason = format!("the standby's disk failed: {error}");
        push(
            fx,
            Effect::Refuse {
                slot,
                reason: reason.clone(),
            },
        );
        // The session ends here: nothing more of it is applied or acknowledged; the refusal is
        // flushed, then the connection closes.
        self.current = None;
        push(fx, Effect::Discard);
        log::warn!(
            "replication ended: the replica's disk failed; replica {}",
            self.applied
                .map_or("unusable until a resynchronisation".into(), |a| {
                    format!("stays at checkpoint {a}")
                })
        );
        self.refused(now, slot, &reason);
    }

    /// The disk forked for the activation under way (or could not: nothing is activated).
    pub(super) fn disk_forked(&mut self, error: Option<String>, fx: &mut Effects) {
        if self.activating.is_none() {
            return;
        }
        if let Some(e) = error {
            self.activating = None;
            log::error!("activation failed: not activated: {e}");
            self.operator_answer(format!("error: activation failed: not activated: {e}\n"));
            return;
        }
        self.record_activation(fx);
    }
}
