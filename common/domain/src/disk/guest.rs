//! The guest's side of a disk: becoming a primary's disk, guest writes (journal, activity log,
//! track table), acknowledgements and the activity log's upkeep (see the module documentation
//! of [`super`]).

use hsb_common::msg::{Fork, DISK_HISTORY};

use super::{new_gen, Disk, DiskError, Journal, Meta, Role, State};

impl Disk {
    /// Become the primary's disk, whose guest writes belong to checkpoint `first_ckpt` on.
    /// A primary's disk continues its lineage; a replica's data forks (it serves now, its
    /// writes must never pass for later checkpoints of the lineage it came from); a torn or
    /// unknown disk starts a lineage of its own.
    pub fn start_primary(&mut self, first_ckpt: u64) -> Result<(), DiskError> {
        self.settle();
        let r = self.start_primary_inner(first_ckpt);
        r.map_err(|e| self.failed(e))
    }

    fn start_primary_inner(&mut self, first_ckpt: u64) -> Result<(), DiskError> {
        self.open = first_ckpt;
        self.target = None;
        self.dirty = None;
        let torn = self.meta.state != State::Clean;
        match (self.meta.role, torn) {
            (Role::Primary, false) => {
                // Extents written after `base` at checkpoints nobody knows (a crash): their
                // tracks count as written now, so every peer gets them again.
                if !self.precise {
                    for e in self.al.ones().collect::<Vec<_>>() {
                        self.tracks.mark(self.geo.tracks_of_extent(e), first_ckpt);
                    }
                }
                self.acked = self.meta.base;
            }
            (Role::Replica, false) => {
                let at = self.meta.base;
                self.fork(at)?;
                self.acked = at;
            }
            (_, true) => {
                let base = first_ckpt.saturating_sub(1);
                let m = Meta {
                    size: self.geo.size,
                    gen: new_gen()?,
                    history: Vec::new(),
                    base,
                    state: State::Clean,
                    toward: super::BLANK,
                    role: Role::Primary,
                    al: Vec::new(),
                };
                self.write_meta(m)?;
                self.al.clear_all();
                self.tracks.reset(base);
                self.acked = base;
            }
        }
        let mut m = self.meta.clone();
        m.role = Role::Primary;
        m.state = State::Clean;
        m.toward = super::BLANK;
        if m != self.meta {
            self.write_meta(m)?;
        }
        Ok(())
    }

    /// Fork the lineage at checkpoint `at` (the disk holds exactly `at`): a new lineage whose
    /// history says so, written durably. The disk becomes a primary's.
    pub(super) fn fork(&mut self, at: u64) -> Result<(), DiskError> {
        let mut history = vec![Fork {
            gen: self.meta.gen,
            at,
        }];
        history.extend(self.meta.history.iter().copied().take(DISK_HISTORY - 1));
        let m = Meta {
            size: self.geo.size,
            gen: new_gen()?,
            history,
            base: at,
            state: State::Clean,
            toward: super::BLANK,
            role: Role::Primary,
            al: Vec::new(),
        };
        self.write_meta(m)?;
        self.al.clear_all();
        Ok(())
    }

    /// A guest write of `data` at `offset`. Completes once it is in the image (durable too if
    /// `fua`, blocking until it is: the NBD export instead asks [`Disk::start_flush`]), is in
    /// the open epoch's journal while a standby is being fed, and is covered by the activity
    /// log. A write that must wait ([`DiskError::is_wait`]) changes nothing.
    pub fn write(&mut self, offset: u64, data: &[u8], fua: bool) -> Result<(), DiskError> {
        let len = data.len() as u64;
        if !self.geo.contains(offset, len) {
            return Err(DiskError::Bounds {
                offset,
                len,
                size: self.geo.size,
            });
        }
        if len == 0 {
            return Ok(());
        }
        if self.image_sync_in_flight() {
            // On some file systems (FUSE, btrfs) a write waits for the inode's lock, which a
            // sync holds throughout: in the daemon's loop, that wait would be the sync's.
            self.stats.waits += 1;
            return Err(DiskError::Syncing);
        }
        if self.source.as_ref().is_some_and(|s| s.throttled) {
            self.stats.waits += 1;
            return Err(DiskError::Throttled);
        }
        if self.journaling {
            if let Err(e) = self.journal.check(data.len()) {
                self.stats.waits += u64::from(e.is_wait());
                return Err(e);
            }
        }
        match self.heat(offset, len) {
            Ok(()) => {}
            Err(DiskError::Syncing) => {
                self.stats.waits += 1;
                return Err(DiskError::Syncing);
            }
            Err(e) => return Err(self.failed(e)),
        }
        if let Err(e) = self.image.write_at(offset, data) {
            return Err(self.failed(e));
        }
        if self.journaling {
            self.journal.push(offset, data)?;
        }
        let tr = self.geo.tracks_of(offset, len);
        self.tracks.mark(tr.clone(), self.open);
        if let Some(s) = self.source.as_mut() {
            s.pending.set_range(tr);
        }
        self.stats.writes += 1;
        self.stats.bytes += len;
        if fua {
            self.flush()?;
        }
        Ok(())
    }

    /// Make every guest write so far durable, blocking until it is (tests, and the rare
    /// callers that may block; the daemons' guests flush with [`Disk::start_flush`]).
    pub fn flush(&mut self) -> Result<(), DiskError> {
        self.settle();
        let t = self.start_flush()?;
        self.settle();
        self.flush_done(t)
            .unwrap_or_else(|| Err(DiskError::Invalid("a flush did not complete".into())))
    }

    /// Persist the activity log with the extents of this write in it, if they are not. With
    /// a ring the record's sync runs while the write waits ([`DiskError::Syncing`]).
    fn heat(&mut self, offset: u64, len: u64) -> Result<(), DiskError> {
        if self.meta.role != Role::Primary {
            return Ok(());
        }
        let ex = self.geo.extents_of(offset, len);
        // In the log, and staying there: a record in flight may be taking extents out (the
        // upkeep's); a write to one of those waits for it, then puts its extent back.
        if ex.clone().all(|e| self.al.get(e) && self.stays_in_log(e)) {
            return Ok(());
        }
        self.sync_failure()?;
        if self.record_in_flight() {
            return Err(DiskError::Syncing);
        }
        let mut al = self.al.clone();
        al.set_range(ex);
        let mut m = self.meta.clone();
        m.al = al.words().to_vec();
        self.write_record(m)?;
        self.stats.al_writes += 1;
        if self.record_in_flight() {
            return Err(DiskError::Syncing);
        }
        Ok(())
    }

    /// Extents in the activity log.
    pub fn hot_extents(&self) -> u64 {
        self.al.count()
    }

    /// Guest writes belong to checkpoint `ckpt` from now on.
    pub fn set_open(&mut self, ckpt: u64) {
        self.open = ckpt;
    }

    /// The checkpoint guest writes belong to now (a write's replica is safe once this
    /// checkpoint is acknowledged).
    pub fn open_checkpoint(&self) -> u64 {
        self.open
    }

    /// Checkpoint `ckpt` is acknowledged (its writes are the standby's).
    pub fn acked(&mut self, ckpt: u64) {
        self.acked = self.acked.max(ckpt);
    }

    /// Start journaling the open epoch's writes (a standby is being fed incrementally).
    pub fn start_journal(&mut self) {
        self.journal.clear();
        self.journaling = true;
    }

    /// Stop journaling (no standby: the next one is resynchronised from the track table).
    pub fn stop_journal(&mut self) {
        self.journal.clear();
        self.journaling = false;
        self.source = None;
    }

    /// Whether writes are journaled.
    pub fn journaling(&self) -> bool {
        self.journaling
    }

    /// The open epoch's journal.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Empty the journal (its writes are staged in a checkpoint).
    pub fn clear_journal(&mut self) {
        self.journal.clear();
    }

    /// The journal is three quarters full: time to end the epoch early.
    pub fn journal_high(&self) -> bool {
        self.journaling && self.journal.cost() * 4 >= self.journal.limit() * 3
    }

    /// Whether a write of `len` bytes at `offset` would be taken now. If its extent must enter
    /// the activity log first, the log's record is started (with a ring, its completion wakes
    /// the loop; until then this says no). A failed disk says yes: the write reports why.
    pub fn ready_for(&mut self, offset: u64, len: u64) -> bool {
        self.can_write(len as usize) && self.heat(offset, len) != Err(DiskError::Syncing)
    }

    /// Whether a write of `len` bytes would be taken now.
    pub fn can_write(&self, len: usize) -> bool {
        !self.source.as_ref().is_some_and(|s| s.throttled)
            && (!self.journaling || self.journal.check(len).is_ok())
            && !self.image_sync_in_flight()
    }
}
