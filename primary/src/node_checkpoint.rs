//! The course of a checkpoint, as the primary node orders it: its number reserved in the host
//! state first (rule 10), a full synchronisation's pre-copy and disk copy, the suspend, the
//! capture (resumed unless fenced), and what a captured checkpoint changes (numbering, what
//! waits for an ack, statistics).

use std::time::Duration;

use hsb_common::decision::primary::Input as PInput;
use hsb_common::node_state::{NodeRole, CHECKPOINT_BLOCK};
use hsb_common::stats::ms;
use hsb_common::time::Nanos;

use super::{push, Busy, Dom, Effect, Effects, PrimaryNode};

impl PrimaryNode {
    /// The next checkpoint's number is reserved in the host state; if not, ask for it (a
    /// restart must never number checkpoints again: rule 10).
    pub(super) fn reserved_for_next(&mut self, fx: &mut Effects) -> bool {
        if self.next_ckpt <= self.reserved {
            return true;
        }
        if self.busy.is_none() {
            self.busy = Some(Busy::Reserve);
            push(
                fx,
                Effect::Reserve(
                    self.host_state(NodeRole::Primary, self.next_ckpt + CHECKPOINT_BLOCK),
                ),
            );
        }
        false
    }

    pub(super) fn checkpoint(&mut self, _now: Nanos, fx: &mut Effects) {
        // Paused without a consistent suspend point (a fence the guest did not cooperate
        // with): nothing restorable to capture. A full synchronisation waits for its disk
        // resynchronisation's copy (made while the guest runs) to be small enough to end in it
        // (and only then reserves its number: the copy's steps are frequent).
        if self.dom == Dom::HardPaused
            || !self.disk_ready_for_full(fx)
            || !self.reserved_for_next(fx)
        {
            return;
        }
        // Fenced: the domain is already suspended, and stays so after the capture.
        if self.dom == Dom::Suspended {
            return self.capture(false, fx);
        }
        if self.need_full && self.cfg.precopy {
            self.busy = Some(Busy::Precopy);
            push(
                fx,
                Effect::PrecopyStep {
                    ckpt: self.next_ckpt,
                    epoch: self.start.epoch,
                },
            );
            return;
        }
        self.suspend(fx);
    }

    pub(super) fn suspend(&mut self, fx: &mut Effects) {
        if self.dom == Dom::Running {
            self.dom = Dom::Suspending;
            push(fx, Effect::Suspend);
        }
    }

    /// The domain reached a suspend point (a checkpoint's or a fence's): capture it when a
    /// checkpoint may be taken, and resume it unless fenced.
    pub(super) fn on_suspended(&mut self, waited: Option<Duration>, fx: &mut Effects) {
        self.dom = Dom::Suspended;
        if let Some(w) = waited {
            self.stats.suspend_wait.record(w);
        }
        // A fence that came meanwhile keeps the guest suspended after the capture.
        let resume = !self.fenced();
        if !self.may_checkpoint() || !self.reserved_for_next(fx) {
            // No checkpoint to take now (no session, or the last one unacknowledged or being
            // sent): a fenced guest stays suspended (a period's tick captures it when it
            // may); one unfenced meanwhile runs on.
            if resume {
                self.dom = Dom::Running;
                push(fx, Effect::Resume);
            }
            return;
        }
        self.capture(resume, fx);
    }

    pub(super) fn capture(&mut self, resume: bool, fx: &mut Effects) {
        let ckpt = self.next_ckpt;
        self.busy = Some(Busy::Capture { ckpt, resume });
        push(
            fx,
            Effect::Capture {
                ckpt,
                full: self.need_full,
                resume,
                epoch: self.start.epoch,
            },
        );
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_captured(
        &mut self,
        now: Nanos,
        ckpt: u64,
        pages: u64,
        bytes: u64,
        pause: Duration,
        recopied: Option<u64>,
        precopying: bool,
        fx: &mut Effects,
    ) {
        let Some(Busy::Capture { ckpt: want, resume }) = self.busy.take() else {
            panic!("checkpoint {ckpt} captured, none asked for");
        };
        assert_eq!(want, ckpt, "captured another checkpoint than asked for");
        self.dom = if resume { Dom::Running } else { Dom::Suspended };
        self.precopying = precopying;
        let full = self.need_full;
        let st = &mut self.stats;
        st.pause.record(pause);
        st.checkpoints += 1;
        st.last_dirty = pages;
        st.pages_sent += pages;
        st.window.0 += 1;
        st.window.2 += pages;
        if full {
            st.full_syncs += 1;
            log::info!(
                "checkpoint {ckpt}: full synchronisation, {pages} pages{}, {} KiB staged, pause {} ms",
                recopied.map_or(String::new(), |r| format!(
                    " (pre-copied; {r} written meanwhile, copied again while suspended)"
                )),
                bytes >> 10,
                ms(pause)
            );
        } else {
            log::debug!(
                "checkpoint {ckpt}: {pages} pages, {bytes} bytes staged, pause {} ms",
                ms(pause)
            );
        }
        self.need_full = false;
        if full {
            self.disk_synced();
        }
        self.next_ckpt = ckpt + 1;
        self.unacked.push_back((ckpt, now));
        if full {
            self.full_unacked = Some(ckpt);
        }
        self.sending = true;
        if let Some(f) = self.failover.as_mut() {
            if f.final_asked == Some(ckpt) {
                f.final_ckpt = Some(ckpt);
                log::warn!("switchover: final checkpoint {ckpt} captured");
            }
            self.authority_step(now, PInput::CheckpointSent { ckpt }, fx);
        }
    }
}
