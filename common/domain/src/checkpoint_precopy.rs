//! Pre-copy of a full synchronisation (part of [`super::Staging`]): memory is copied into
//! staging while the guest runs, in rounds, and only what the guest wrote during the last round
//! is copied again with the guest suspended.
//!
//! Round 0 copies every page. Each further round takes the pages dirtied during the previous
//! one and copies them again into their places, still with the guest running. Rounds go on
//! while the dirty set shrinks, until it is small ([`PRECOPY_SETTLED_PAGES`]) or after
//! [`PRECOPY_MAX_ROUNDS`] ([`precopy_again`]); a guest that writes as fast as the copy runs
//! cannot make them go on. Each call of [`super::Staging::precopy_step`] copies a bounded number
//! of pages and a round boundary ends it, so the guest runs (the daemon's loop turns) between
//! rounds.

use super::{CaptureStats, CheckpointError, Staging};
use crate::domain::{CheckpointSource, DomainError};
use crate::PAGE_SIZE;
use hsb_common::msg::PAGES_PER_FRAME;

/// Most rounds after the first full pass.
pub const PRECOPY_MAX_ROUNDS: u32 = 8;
/// A round that dirtied at most this many pages is the last: copying them again while
/// suspended is as short as another round would leave it.
pub const PRECOPY_SETTLED_PAGES: usize = 256;

/// Whether to copy again after round `round` (1 or more) re-copied `dirtied` pages, which were
/// dirtied while the round before copied `previous` pages (all of them for round 1).
pub fn precopy_again(round: u32, previous: usize, dirtied: usize) -> bool {
    round < PRECOPY_MAX_ROUNDS && dirtied > PRECOPY_SETTLED_PAGES && dirtied < previous
}

/// Progress of a pre-copied full synchronisation.
#[derive(Debug, Clone, Copy)]
pub(super) struct Precopy {
    /// The epoch its `Begin` record names.
    epoch: u64,
    /// Round 0: index into `pfns` of the next page to copy.
    next: usize,
    /// The round under way.
    round: u32,
    /// Rounds 1 and later: index into `dirty` of the next page to copy again.
    again: usize,
    /// Pages the previous round copied.
    previous: usize,
    /// The next round starts by taking the dirty log.
    take: bool,
    /// No more rounds: finish when the guest is suspended.
    settled: bool,
    /// Pages copied again while the guest ran, and dirtied pages that are not in the set.
    recopied: u64,
    skipped: u64,
}

/// What [`Staging::finish_precopy`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrecopyStats {
    /// The checkpoint as captured (a full synchronisation).
    pub capture: CaptureStats,
    /// Pages copied again while suspended: dirtied during the last round.
    pub recopied: u64,
    /// Dirtied pages outside the full synchronisation's set, skipped (frames that were holes).
    pub skipped: u64,
    /// Rounds after the first full pass (0: the pass alone).
    pub rounds: u32,
    /// Pages copied again by those rounds, while the guest ran.
    pub recopied_running: u64,
}

impl Staging {
    /// Start a full synchronisation while the guest **runs** (pre-copy): take every page's
    /// frame number and clear the dirty log, so that [`Staging::precopy_step`] can copy the
    /// pages bit by bit, in rounds, and [`Staging::finish_precopy`], with the guest suspended,
    /// copies again only what was written during the last round. Frames need to come in
    /// ascending order (both backends list them so); otherwise this errs and the caller takes a
    /// plain [`Staging::capture`].
    pub fn start_precopy(
        &mut self,
        dom: &mut dyn CheckpointSource,
        ckpt: u64,
        epoch: u64,
    ) -> Result<(), CheckpointError> {
        self.precopy = None;
        self.begin(dom, ckpt, epoch, true)?;
        if !self.pfns.is_sorted() {
            return Err(CheckpointError::Domain(DomainError {
                op: "pre-copy",
                detail: "the domain's frames are not in ascending order".into(),
            }));
        }
        self.frame_data.clear();
        self.precopy = Some(Precopy {
            epoch,
            next: 0,
            round: 0,
            again: 0,
            previous: 0,
            take: false,
            settled: false,
            recopied: 0,
            skipped: 0,
        });
        Ok(())
    }

    /// Whether a pre-copy is under way (started and not finished or abandoned).
    pub fn precopying(&self) -> bool {
        self.precopy.is_some()
    }

    /// Copy up to `max_pages` more pages of the pre-copy (whole frames in the first pass);
    /// returns whether the rounds are over (then [`Staging::finish_precopy`] may run once the
    /// guest is suspended). A round ends the call: the guest runs before the next one.
    pub fn precopy_step(
        &mut self,
        dom: &mut dyn CheckpointSource,
        max_pages: usize,
    ) -> Result<bool, CheckpointError> {
        let Some(mut pc) = self.precopy else {
            return Ok(true);
        };
        match self.precopy_work(dom, &mut pc, max_pages, true) {
            Ok(done) => {
                self.precopy = Some(pc);
                Ok(done)
            }
            Err(e) => {
                self.precopy = None;
                Err(e)
            }
        }
    }

    /// Copy up to `budget` pages of the round under way; at its end, decide on another round
    /// (if `rounds`: not when finishing). Whether the pre-copy is settled.
    fn precopy_work(
        &mut self,
        dom: &mut dyn CheckpointSource,
        pc: &mut Precopy,
        budget: usize,
        rounds: bool,
    ) -> Result<bool, CheckpointError> {
        if pc.settled {
            return Ok(true);
        }
        if pc.take {
            if !rounds {
                // Finishing: the last take is the suspended one.
                return Ok(true);
            }
            pc.take = false;
            pc.again = 0;
            self.dirty.clear();
            dom.take_dirty(false, &mut self.dirty)?;
        }
        let mut budget = budget.max(PAGES_PER_FRAME);
        let copied = if pc.round == 0 {
            while pc.next < self.pfns.len() && budget > 0 {
                self.put_pages(dom, pc.next, true)?;
                pc.next += PAGES_PER_FRAME;
                budget = budget.saturating_sub(PAGES_PER_FRAME);
            }
            if pc.next < self.pfns.len() {
                return Ok(false);
            }
            self.pfns.len()
        } else {
            while pc.again < self.dirty.len() && budget > 0 {
                let pfn = self.dirty[pc.again];
                pc.again += 1;
                budget -= 1;
                if self.copy_again(dom, pfn)? {
                    pc.recopied += 1;
                } else {
                    pc.skipped += 1;
                }
            }
            if pc.again < self.dirty.len() {
                return Ok(false);
            }
            self.dirty.len()
        };
        if !rounds || (pc.round > 0 && !precopy_again(pc.round, pc.previous, copied)) {
            pc.settled = true;
            return Ok(true);
        }
        pc.previous = copied;
        pc.round += 1;
        pc.take = true;
        Ok(false)
    }

    /// Copy page `pfn` again into its place in staging; false if it is not in the set.
    fn copy_again(
        &mut self,
        dom: &mut dyn CheckpointSource,
        pfn: u64,
    ) -> Result<bool, CheckpointError> {
        let Ok(i) = self.pfns.binary_search(&pfn) else {
            return Ok(false);
        };
        let at = self.frame_data[i / PAGES_PER_FRAME] + (i % PAGES_PER_FRAME) * PAGE_SIZE;
        dom.read_pages(&[pfn], &mut self.buf[at..at + PAGE_SIZE])?;
        Ok(true)
    }

    /// Finish a pre-copy with the guest **suspended**: copy what is left of the round under
    /// way, then copy again every page dirtied since the last round took the dirty log into
    /// its place, and stage the state. `ckpt` and `epoch` must be those the pre-copy began
    /// with.
    pub fn finish_precopy(
        &mut self,
        dom: &mut dyn CheckpointSource,
        ckpt: u64,
        epoch: u64,
    ) -> Result<PrecopyStats, CheckpointError> {
        let Some(mut pc) = self.precopy.take() else {
            return Err(CheckpointError::Domain(DomainError {
                op: "pre-copy",
                detail: "no pre-copy under way".into(),
            }));
        };
        if (self.ckpt, pc.epoch) != (ckpt, epoch) {
            return Err(CheckpointError::Domain(DomainError {
                op: "pre-copy",
                detail: format!(
                    "begun for checkpoint {} in epoch {}, finished for {ckpt} in {epoch}",
                    self.ckpt, pc.epoch
                ),
            }));
        }
        debug_assert!(pc.next <= self.pfns.len() + PAGES_PER_FRAME);
        self.precopy_work(dom, &mut pc, usize::MAX, false)?;
        let running = pc.recopied;
        self.dirty.clear();
        dom.take_dirty(false, &mut self.dirty)?;
        let (mut recopied, mut skipped) = (0u64, pc.skipped);
        for k in 0..self.dirty.len() {
            if self.copy_again(dom, self.dirty[k])? {
                recopied += 1;
            } else {
                skipped += 1;
            }
        }
        let capture = self.put_state(dom, true)?;
        Ok(PrecopyStats {
            capture,
            recopied,
            skipped,
            rounds: pc.round - u32::from(pc.take),
            recopied_running: running,
        })
    }
}
