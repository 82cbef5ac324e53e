//! The replica's side: its report, a resynchronisation received (staged beside the image or
//! straight into it), checkpoints applied durably, activation (a fork), and the table persisted
//! at clean transitions (see the module documentation of [`super`]).

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use hsb_common::msg::{DiskPlan, DISK_PIECE};

use super::resync::take_run_max;
use super::{
    gen_hex, image, resync_path, Bitmap, Disk, DiskError, Meta, Report, Role, State, Target, BLANK,
};

impl Disk {
    /// What this disk says to a primary.
    pub fn report(&self) -> Report {
        match (self.applied, &self.target) {
            (Some(a), None) => Report {
                gen: self.meta.gen,
                base: a,
                torn: false,
                toward: BLANK,
                dirty: None,
            },
            _ => Report {
                gen: self.meta.gen,
                base: self.meta.base,
                torn: self.meta.state != State::Clean,
                toward: self.meta.toward,
                dirty: self.dirty.clone(),
            },
        }
    }

    /// The last checkpoint applied in this process (`None`: none, or the image failed).
    pub fn applied(&self) -> Option<u64> {
        self.applied
    }

    /// A resynchronisation begins (`plan` from the primary). With `preserve` (the replica
    /// could be activated now) copies are staged beside the image until the full
    /// synchronisation that completes them is applied; without, they go straight into the
    /// image, marked `Resyncing` first.
    pub fn begin_resync(&mut self, plan: &DiskPlan, preserve: bool) -> Result<(), DiskError> {
        self.settle();
        self.abort_resync();
        if plan.track as u64 != self.geo.track() {
            return Err(DiskError::Invalid(format!(
                "the primary copies tracks of {} bytes, this disk's are {}",
                plan.track,
                self.geo.track()
            )));
        }
        if plan.journal_max > self.journal.limit() as u64 {
            return Err(DiskError::Invalid(format!(
                "the primary's disk.journal_max ({}) is larger than this standby's ({})",
                plan.journal_max,
                self.journal.limit()
            )));
        }
        let base = self.report().base;
        let staged = if preserve {
            let p = resync_path(self.image.path());
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&p)
                .and_then(|f| f.set_len(self.geo.size).map(|()| f))
                .map_err(|e| image::io_err("create", &p, e));
            Some(f.map_err(|e| self.failed(e))?)
        } else {
            // Straight into the image: the record must say so first (unless it says torn
            // already).
            if let Err(e) = self.mark_torn(State::Resyncing, plan.gen) {
                return Err(self.failed(e));
            }
            self.applied = None;
            None
        };
        self.stats.resyncs += 1;
        self.stats.full_copies += u64::from(plan.full);
        self.stats.resync_planned = plan.tracks;
        self.stats.resync_tracks = 0;
        self.stats.resync_bytes = 0;
        self.target = Some(Target {
            plan: plan.clone(),
            staged,
            received: Bitmap::new(self.geo.tracks),
            base,
        });
        Ok(())
    }

    /// Whether a resynchronisation is being received.
    pub fn receiving(&self) -> Option<&DiskPlan> {
        self.target.as_ref().map(|t| &t.plan)
    }

    /// A block copy of the resynchronisation (whole tracks).
    pub fn resync_write(&mut self, offset: u64, data: &[u8]) -> Result<(), DiskError> {
        self.debug_assert_no_image_sync();
        let geo = self.geo;
        let len = data.len() as u64;
        let aligned = offset.is_multiple_of(geo.track())
            && (len.is_multiple_of(geo.track()) || offset + len == geo.size)
            && len > 0;
        if !aligned || !geo.contains(offset, len) {
            return Err(DiskError::Invalid(format!(
                "a resynchronisation copy of {len} bytes at {offset} is not whole tracks of the image"
            )));
        }
        let Some(t) = self.target.as_mut() else {
            return Err(DiskError::Invalid(
                "a resynchronisation copy without a plan".into(),
            ));
        };
        let res = match &t.staged {
            Some(f) => f
                .write_all_at(data, offset)
                .map_err(|e| image::io_err("write", &resync_path(self.image.path()), e)),
            None => self.image.write_at(offset, data),
        };
        if let Err(e) = res {
            return Err(self.failed(e));
        }
        t.received.set_range(geo.tracks_of(offset, len));
        self.stats.resync_tracks += geo.tracks_of(offset, len).count() as u64;
        self.stats.resync_bytes += len;
        Ok(())
    }

    /// Forget a resynchronisation that will not complete (its session is gone). Staged copies
    /// are dropped; copies written into the image stay, and the disk says `Resyncing`.
    pub fn abort_resync(&mut self) {
        if let Some(t) = self.target.take() {
            if let Some(f) = t.staged {
                let _ = f.set_len(0);
            }
        }
    }

    /// Apply checkpoint `ckpt`'s writes, in order; with a resynchronisation under way, its
    /// copies too, and the disk joins the plan's lineage at `ckpt`. After an error the
    /// replica is unusable ([`Disk::applied`] is `None`) until a resynchronisation.
    pub fn apply<'a>(
        &mut self,
        ckpt: u64,
        writes: impl Iterator<Item = (u64, &'a [u8])>,
    ) -> Result<(), DiskError> {
        let res = self.apply_inner(ckpt, writes);
        if let Err(e) = &res {
            self.applied = None;
            if let Some(t) = self.target.take() {
                if let Some(f) = t.staged {
                    let _ = f.set_len(0);
                }
            }
            let e = self.failed(e.clone());
            log::error!("disk: checkpoint {ckpt} not applied: {e}");
        }
        res
    }

    fn apply_inner<'a>(
        &mut self,
        ckpt: u64,
        writes: impl Iterator<Item = (u64, &'a [u8])>,
    ) -> Result<(), DiskError> {
        self.debug_assert_no_image_sync();
        let geo = self.geo;
        if let Some(t) = self.target.as_ref() {
            if t.plan.ckpt != ckpt {
                return Err(DiskError::Invalid(format!(
                    "checkpoint {ckpt} does not complete the resynchronisation planned for {}",
                    t.plan.ckpt
                )));
            }
            if t.staged.is_some() {
                let toward = t.plan.gen;
                self.mark_torn(State::Applying, toward)?;
                self.copy_staged()?;
            }
        } else if self.applied != ckpt.checked_sub(1) {
            return Err(DiskError::Invalid(format!(
                "checkpoint {ckpt} applies to the disk at checkpoint {}, which it is not",
                ckpt.saturating_sub(1)
            )));
        } else {
            self.mark_torn(State::Applying, self.meta.gen)?;
        }
        for (off, data) in writes {
            self.image.write_at(off, data)?;
            if !data.is_empty() {
                let tr = geo.tracks_of(off, data.len() as u64);
                match self.target.as_mut() {
                    Some(t) => {
                        self.stats.resync_bytes += data.len() as u64;
                        t.received.set_range(tr);
                    }
                    None => self.tracks.mark(tr, ckpt),
                }
            }
            self.stats.applied_writes += 1;
            self.stats.applied_bytes += data.len() as u64;
        }
        // No `fdatasync` per checkpoint: the replica's memory does not outlive its host either,
        // so a disk durable at each checkpoint would buy nothing, and a sync on a busy file
        // system can stall the loop for seconds. What must hold across a crash is what the
        // metadata claims: `Applying` is durable before any checkpoint's write lands, and a
        // record claiming a checkpoint exactly (`Clean`) is written only after a sync.
        if let Some(t) = self.target.take() {
            self.stats.resync_tracks = t.received.count();
            if t.plan.full {
                self.tracks.reset(0);
                self.tracks.mark(0..geo.tracks, ckpt);
            } else {
                self.tracks.reset(t.base);
                for tr in t.received.ones() {
                    self.tracks.mark(tr..tr + 1, ckpt);
                }
            }
            // The disk joins the plan's lineage at `ckpt` in this process's view; the durable
            // record keeps saying what it said (torn, from the old base: `Resyncing` or
            // `Applying`), which a restart resynchronises correctly, until a clean transition
            // writes the new one after a sync ([`Disk::persist_table`]). No `fdatasync` here:
            // the first acknowledgements of a session must not wait for a busy file system.
            debug_assert_ne!(self.meta.state, State::Clean);
            self.meta = Meta {
                size: geo.size,
                gen: t.plan.gen,
                history: t.plan.history.iter().copied().collect(),
                base: ckpt,
                state: State::Applying,
                toward: t.plan.gen,
                role: Role::Replica,
                al: Vec::new(),
            };
            self.al.clear_all();
            self.dirty = None;
            if let Some(f) = t.staged {
                let _ = f.set_len(0);
            }
            log::info!(
                "disk: resynchronised into lineage {} at checkpoint {ckpt}: {} tracks copied{}",
                gen_hex(&t.plan.gen),
                t.received.count(),
                if t.plan.full { " (a full copy)" } else { "" }
            );
        }
        self.applied = Some(ckpt);
        Ok(())
    }

    /// Copy the staged resynchronisation tracks into the image.
    fn copy_staged(&mut self) -> Result<(), DiskError> {
        self.debug_assert_no_image_sync();
        let geo = self.geo;
        let Some(t) = self.target.as_mut() else {
            return Ok(());
        };
        let Some(f) = t.staged.as_ref() else {
            return Ok(());
        };
        let sp = resync_path(self.image.path());
        let mut buf = vec![0u8; DISK_PIECE];
        let per = (DISK_PIECE as u64 / geo.track()).max(1);
        let mut copy = t.received.clone();
        while let Some((tr, n)) = take_run_max(&mut copy, 0, per) {
            let (off, len) = geo.span(tr, n);
            let b = &mut buf[..len as usize];
            f.read_exact_at(b, off)
                .map_err(|e| image::io_err("read", &sp, e))?;
            self.image.write_at(off, b)?;
        }
        Ok(())
    }

    /// Activate the replica at checkpoint `at` (which it must hold): its lineage forks there and
    /// it becomes a primary's disk, guest writes belonging to checkpoint `at + 1` on.
    pub fn activate(&mut self, at: u64) -> Result<(), DiskError> {
        self.settle();
        if self.applied != Some(at) {
            return Err(DiskError::Invalid(format!(
                "the disk is not at checkpoint {at} (applied: {:?})",
                self.applied
            )));
        }
        self.abort_resync();
        if let Err(e) = self.fork(at) {
            return Err(self.failed(e));
        }
        self.acked = at;
        self.open = at + 1;
        self.journaling = false;
        self.dirty = None;
        log::info!(
            "disk: lineage {} forked from {} at checkpoint {at}",
            gen_hex(&self.meta.gen),
            gen_hex(&self.meta.history[0].gen)
        );
        Ok(())
    }

    /// Persist the exact track table (a hand-over to another daemon, a step-down, a clean
    /// stop), so the next process knows per track what it wrote: a replica at its last applied
    /// checkpoint, exactly; a primary at its last acknowledged one with its writes since.
    pub fn persist_table(&mut self) -> Result<(), DiskError> {
        self.settle();
        let mut m = self.meta.clone();
        match m.role {
            Role::Replica => {
                if let (Some(a), None) = (self.applied, &self.target) {
                    m.base = a;
                    m.state = State::Clean;
                    m.toward = BLANK;
                }
            }
            Role::Primary => m.base = self.acked,
        }
        // Claimed exactly from now on: durable first.
        if let Err(e) = self.image.sync() {
            return Err(self.failed(e));
        }
        if let Err(e) = self
            .mf
            .write_with_table(&m, self.tracks.horizon(), self.tracks.values())
        {
            return Err(self.failed(e));
        }
        self.durable = m.clone();
        self.meta = m;
        Ok(())
    }

    /// Swap the image for a read-only view of it: every write fails (tests of a failing image).
    #[cfg(test)]
    pub(crate) fn make_read_only_for_test(&mut self) -> Result<(), DiskError> {
        self.image = super::Image::open_read_only(self.image.path())?;
        Ok(())
    }

    /// A line for status: what the disk is doing.
    pub fn describe(&self) -> String {
        if let Some(s) = &self.source {
            return format!(
                "resynchronising for checkpoint {}: round {}, {} tracks pending{}",
                s.ckpt,
                s.round,
                s.pending.count(),
                if s.throttled {
                    ", guest writes wait"
                } else {
                    ""
                }
            );
        }
        if let Some(t) = &self.target {
            return format!(
                "receiving a resynchronisation for checkpoint {} ({} of {} tracks{})",
                t.plan.ckpt,
                t.received.count(),
                t.plan.tracks,
                if t.staged.is_some() { ", staged" } else { "" }
            );
        }
        let state = match self.meta.state {
            State::Clean => "",
            State::Applying => " (applying)",
            State::Resyncing => " (resynchronisation incomplete)",
        };
        match self.meta.role {
            Role::Primary => format!(
                "primary, lineage {}, acknowledged {}, {} extents in the activity log",
                gen_hex(&self.meta.gen),
                self.acked,
                self.al.count()
            ),
            Role::Replica => match self.applied {
                Some(a) => format!("replica, lineage {}, at {a}", gen_hex(&self.meta.gen)),
                None => format!(
                    "replica, lineage {}, base {}{state}",
                    gen_hex(&self.meta.gen),
                    self.meta.base
                ),
            },
        }
    }
}
