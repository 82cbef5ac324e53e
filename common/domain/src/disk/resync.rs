//! The primary's side of a resynchronisation: the plan made from a standby's report, and the
//! copies handed out round after round while the guest runs (see the module documentation of
//! [`super`]).

use hsb_common::msg::{DiskPlan, DISK_HISTORY, DISK_PIECE};

use super::{Bitmap, Disk, Geometry, Report, Source, PIECE_OVERHEAD, RESYNC_ROUNDS};

impl Disk {
    /// Plan the resynchronisation of a standby that reported `r`, to be completed by the full
    /// synchronisation `ckpt`; the copy starts at once ([`Disk::resync_next`]).
    pub fn plan(&mut self, r: &Report, ckpt: u64) -> DiskPlan {
        // At `base` of this lineage, or of an ancestor before its fork; and if torn, torn by
        // this lineage's own writes (which the track table covers), not another's.
        let known = r.base >= self.tracks.horizon()
            && (r.gen == self.meta.gen
                || self
                    .meta
                    .history
                    .iter()
                    .any(|f| f.gen == r.gen && r.base <= f.at))
            && (!r.torn || r.toward == self.meta.gen);
        let mut pending = Bitmap::new(self.geo.tracks);
        let dirty_fits = match &r.dirty {
            Some(d) => d.len() == pending.len(),
            None => true,
        };
        let full = !(known && dirty_fits && self.tracks.changed_since(r.base, &mut pending));
        if full {
            pending.fill();
        } else if let Some(d) = &r.dirty {
            pending.union(d);
        }
        let tracks = pending.count();
        self.stats.resyncs += 1;
        self.stats.full_copies += u64::from(full);
        self.stats.resync_planned = tracks;
        self.stats.resync_tracks = 0;
        self.stats.resync_bytes = 0;
        self.journal.clear();
        self.journaling = false;
        self.source = Some(Source {
            ckpt,
            full,
            pending,
            cursor: 0,
            round: 1,
            throttled: false,
            frames: 0,
        });
        let mut history = heapless::Vec::new();
        for f in self.meta.history.iter().take(DISK_HISTORY) {
            let _ = history.push(*f);
        }
        DiskPlan {
            ckpt,
            gen: self.meta.gen,
            history,
            full,
            tracks,
            track: self.geo.track() as u32,
            journal_max: self.journal.limit() as u64,
        }
    }

    /// Whether a resynchronisation is being copied.
    pub fn resyncing(&self) -> bool {
        self.source.is_some()
    }

    /// The full synchronisation the resynchronisation under way completes.
    pub fn resync_ckpt(&self) -> Option<u64> {
        self.source.as_ref().map(|s| s.ckpt)
    }

    fn pending_cost(&self) -> usize {
        self.source.as_ref().map_or(0, |s| {
            s.pending.count() as usize * (self.geo.track() as usize + PIECE_OVERHEAD)
        })
    }

    /// Whether what is left of the copy fits the full synchronisation (at most the journal
    /// limit), so it may be captured now.
    pub fn resync_ready(&self) -> bool {
        self.source.is_none() || self.pending_cost() <= self.journal.limit()
    }

    /// The next run of tracks to copy while the guest runs (its bits cleared: a guest write
    /// sets them again), at most [`DISK_PIECE`] bytes: offset and length. `None` once the
    /// round is over: then either [`Disk::resync_ready`], or another round has begun (and
    /// after [`RESYNC_ROUNDS`], guest writes wait until it is ready).
    pub fn resync_next(&mut self) -> Option<(u64, usize)> {
        let ready = self.resync_ready();
        let geo = self.geo;
        let s = self.source.as_mut()?;
        match take_run(&mut s.pending, s.cursor, geo) {
            Some((t, n)) => {
                s.cursor = t + n;
                s.frames += 1;
                let (off, len) = geo.span(t, n);
                self.stats.resync_tracks += n;
                self.stats.resync_bytes += len;
                Some((off, len as usize))
            }
            None => {
                if !ready {
                    s.cursor = 0;
                    s.round += 1;
                    if s.round > RESYNC_ROUNDS && !s.throttled {
                        s.throttled = true;
                        log::warn!(
                            "disk resynchronisation: {} tracks still pending after {RESYNC_ROUNDS} rounds: guest writes wait until it converges",
                            s.pending.count()
                        );
                    }
                }
                None
            }
        }
    }

    /// The next run of what is left, for the full synchronisation's `Disk` frames (the guest
    /// is stopped or not running in between): offset and length; `None` when nothing is left.
    pub fn resync_final_next(&mut self) -> Option<(u64, usize)> {
        let geo = self.geo;
        let s = self.source.as_mut()?;
        let (t, n) = take_run(&mut s.pending, 0, geo)?;
        let (off, len) = geo.span(t, n);
        self.stats.resync_tracks += n;
        self.stats.resync_bytes += len;
        Some((off, len as usize))
    }

    /// Copies handed out by [`Disk::resync_next`] so far (`DiskSync` frames).
    pub fn resync_frames(&self) -> u64 {
        self.source.as_ref().map_or(0, |s| s.frames)
    }

    /// Bytes of data (and frames) the final part of the copy takes now.
    pub fn resync_final_cost(&self) -> usize {
        self.pending_cost()
    }

    /// The full synchronisation completing the copy is staged: the copy is over, the next
    /// epoch's writes go to the journal.
    pub fn finish_resync(&mut self) {
        if let Some(s) = self.source.take() {
            debug_assert_eq!(s.pending.count(), 0);
            log::info!(
                "disk resynchronisation for checkpoint {}: {} of {} tracks copied ({} MiB{})",
                s.ckpt,
                self.stats.resync_tracks,
                self.geo.tracks,
                self.stats.resync_bytes >> 20,
                if s.full { ", a full copy" } else { "" }
            );
        }
        self.start_journal();
    }
}

/// Take the next run of set bits at or after `from` (contiguous, at most one piece's worth of
/// tracks), clearing them: first track and count.
pub(super) fn take_run(b: &mut Bitmap, from: u64, geo: Geometry) -> Option<(u64, u64)> {
    take_run_max(b, from, (DISK_PIECE as u64 / geo.track()).max(1))
}

pub(super) fn take_run_max(b: &mut Bitmap, from: u64, max: u64) -> Option<(u64, u64)> {
    let t = b.next_set(from)?;
    let mut n = 0;
    while n < max && b.get(t + n) {
        b.clear(t + n);
        n += 1;
    }
    Some((t, n))
}
