//! The primary node's part of disk replication (issue 14): a session's full synchronisation
//! completes the disk's resynchronisation, so it waits for the standby's report (its `Hello`
//! and `DiskDirty` frames), plans the copy for that full synchronisation's number, and lets
//! the copy run while the guest does until what is left fits the checkpoint; no checkpoint is
//! written while copies are; acknowledged checkpoints are the disk's too; a session that ends
//! stops the journal; and an epoch ends early when its journal is three quarters full. The
//! disk itself (image, journal, track table, activity log, copies) is the shell's
//! (`disk.rs`).

use std::time::Duration;

use hsb_common::time::Nanos;

use super::{push, Busy, Effect, Effects, Event, Link, PrimaryNode};

/// How often a disk resynchronisation's copy goes on while nothing is being written.
const RESYNC_STEP: Duration = Duration::from_millis(1);

/// Where a session's disk resynchronisation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DiskPhase {
    /// None under way (no session, or its full synchronisation was captured).
    #[default]
    Off,
    /// The session is open; the standby's report is not complete yet.
    AwaitReport,
    /// The copy for full synchronisation `ckpt` is planned and goes on while the guest runs.
    Planned {
        /// The full synchronisation that completes it.
        ckpt: u64,
    },
}

/// The node's disk state (the guest has a disk).
#[derive(Debug, Default)]
pub(super) struct DiskState {
    pub(super) phase: DiskPhase,
    /// Copies are being written to the connection: no checkpoint meanwhile.
    pub(super) copying: bool,
    /// The last step found the copy ready: no more steps between periods (the next period's
    /// checkpoint asks again: the guest may have written meanwhile).
    ready: bool,
    /// Within the step that heard it: the copy is ready for its full synchronisation.
    ready_now: bool,
    /// Epochs ended early because the journal was three quarters full.
    pub(super) ended_early: u64,
}

impl PrimaryNode {
    /// The disk's events.
    pub(super) fn on_disk_event(&mut self, now: Nanos, ev: Event, fx: &mut Effects) {
        match ev {
            Event::DiskReport => self.on_disk_report(fx),
            Event::ResyncStepped {
                ready,
                copying,
                error,
            } => self.on_resync_stepped(now, ready, copying, error, fx),
            Event::ResyncSent => self.on_resync_sent(),
            Event::JournalHigh => self.on_journal_high(now),
            _ => {}
        }
    }

    /// A session opened: its full synchronisation waits for the standby's disk report.
    pub(super) fn disk_session(&mut self) {
        if let Some(d) = self.disk.as_mut() {
            d.phase = DiskPhase::AwaitReport;
            d.copying = false;
            d.ready = false;
        }
    }

    /// The standby's report is complete: the copy is planned for the coming full
    /// synchronisation (the next checkpoint: none is taken before it).
    pub(super) fn on_disk_report(&mut self, fx: &mut Effects) {
        let ckpt = self.next_ckpt;
        let streaming = self.link == Link::Streaming && self.need_full;
        let Some(d) = self.disk.as_mut() else {
            return;
        };
        if !streaming || d.phase != DiskPhase::AwaitReport {
            log::debug!("disk: a report outside a session's start ignored");
            return;
        }
        d.phase = DiskPhase::Planned { ckpt };
        push(fx, Effect::PlanDisk { ckpt });
    }

    /// The session is gone: no copy goes on, the journal stops.
    pub(super) fn disk_lost(&mut self, fx: &mut Effects) {
        if let Some(d) = self.disk.as_mut() {
            d.phase = DiskPhase::Off;
            d.copying = false;
            d.ready = false;
            push(fx, Effect::DiskStop);
        }
    }

    /// A full synchronisation was captured: it carried the rest of the copy.
    pub(super) fn disk_synced(&mut self) {
        if let Some(d) = self.disk.as_mut() {
            d.phase = DiskPhase::Off;
            d.ready = false;
        }
    }

    /// Whether the full synchronisation may be captured as far as the disk goes (its plan was
    /// sent and what is left of the copy fits it). If not, the copy's next step is asked for
    /// when it may be taken.
    pub(super) fn disk_ready_for_full(&mut self, fx: &mut Effects) -> bool {
        if !self.need_full {
            return true;
        }
        let ckpt = self.next_ckpt;
        let idle = self.busy.is_none();
        let Some(d) = self.disk.as_mut() else {
            return true;
        };
        if d.ready_now {
            return true;
        }
        if d.phase == (DiskPhase::Planned { ckpt }) && !d.copying && idle {
            self.busy = Some(Busy::Resync);
            push(fx, Effect::ResyncStep { ckpt });
        }
        false
    }

    /// The copy's step was taken: if the copy is ready, the checkpoint that asked goes on (the
    /// switchover's final one, or the period's).
    pub(super) fn on_resync_stepped(
        &mut self,
        now: Nanos,
        ready: bool,
        copying: bool,
        error: Option<String>,
        fx: &mut Effects,
    ) {
        if self.busy == Some(Busy::Resync) {
            self.busy = None;
        }
        let Some(d) = self.disk.as_mut() else {
            return;
        };
        d.copying = copying && self.link == Link::Streaming;
        d.ready = ready && !d.copying;
        if let Some(why) = error {
            log::error!("disk resynchronisation: {why}");
            self.lose_standby(now, "the disk resynchronisation failed".into(), None, fx);
            return;
        }
        if !ready {
            return;
        }
        d.ready_now = true;
        self.final_checkpoint(now, fx);
        if self.busy.is_none() && self.may_checkpoint() && !self.stepped_down() {
            self.checkpoint(now, fx);
        }
        if let Some(d) = self.disk.as_mut() {
            d.ready_now = false;
        }
    }

    /// The copies are written: the connection is free for the next ones, or a checkpoint.
    pub(super) fn on_resync_sent(&mut self) {
        if let Some(d) = self.disk.as_mut() {
            d.copying = false;
        }
    }

    /// Whether copies are being written (no checkpoint may be).
    pub(super) fn disk_copying(&self) -> bool {
        self.disk.as_ref().is_some_and(|d| d.copying)
    }

    /// A planned copy that can take its next step now (a step every millisecond, as the loop
    /// turns for a pre-copy), until a step finds it ready.
    pub(super) fn resync_pending(&self) -> bool {
        self.need_full
            && self
                .disk
                .as_ref()
                .is_some_and(|d| matches!(d.phase, DiskPhase::Planned { .. }) && !d.ready)
            && self.may_checkpoint()
            && self.dom != super::Dom::HardPaused
    }

    /// When the copy's next step is due, if one is.
    pub(super) fn resync_deadline(&self, now: Nanos) -> Option<Nanos> {
        self.resync_pending().then(|| now.plus(RESYNC_STEP))
    }

    /// The open epoch's journal is three quarters full: the epoch ends now if a checkpoint may
    /// be taken (otherwise writes that do not fit wait for one).
    pub(super) fn on_journal_high(&mut self, now: Nanos) {
        if self.disk.is_none()
            || now >= self.next_period
            || self.need_full
            || !self.may_checkpoint()
        {
            return;
        }
        self.next_period = now;
        if let Some(d) = self.disk.as_mut() {
            d.ended_early += 1;
            if d.ended_early.is_power_of_two() {
                log::info!(
                    "disk: the epoch's journal is three quarters full: epoch ended early ({} times so far)",
                    d.ended_early
                );
            }
        }
    }

    /// Invariants of the disk's part.
    pub(super) fn check_disk_invariants(&self) {
        let Some(d) = self.disk.as_ref() else {
            return;
        };
        match d.phase {
            DiskPhase::Off => {}
            DiskPhase::AwaitReport => assert!(
                self.link == Link::Streaming && self.need_full,
                "a disk report awaited outside a session's full synchronisation"
            ),
            DiskPhase::Planned { ckpt } => assert!(
                self.link == Link::Streaming && self.need_full && ckpt == self.next_ckpt,
                "a disk copy planned for {ckpt}, not for the coming full synchronisation {}",
                self.next_ckpt
            ),
        }
        assert!(
            !d.copying || self.link == Link::Streaming,
            "disk copies written without a session"
        );
        assert!(
            !(d.copying && self.sending),
            "disk copies and a checkpoint written at once"
        );
        assert!(!d.ready_now, "a disk copy's readiness outlived its step");
    }

    /// The disk's part, for status: (phase, epochs ended early).
    pub fn disk_view(&self) -> Option<(DiskPhase, u64)> {
        self.disk.as_ref().map(|d| (d.phase, d.ended_early))
    }
}
