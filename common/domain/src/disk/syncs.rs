//! Syncs that do not block the daemon's loop. A primary's loop also sends the heartbeats and
//! drives the checkpoints that release the guest's output; an `fdatasync` under writeback can
//! take hundreds of milliseconds, and a loop stalled that long reads as a dead primary to its
//! standby. So with a ring ([`Disk::use_ring`], io_uring through `xen_sys::uring`) the three
//! syncs of a primary's disk run in the kernel while the loop goes on:
//!
//! - **a guest's flush** (`NBD_CMD_FLUSH`, or a FUA write): [`Disk::start_flush`] hands out a
//!   ticket, [`Disk::flush_done`] answers for it once its image sync has completed: a sync of
//!   its own, or the one in flight when it was asked. No write reaches the image while an image
//!   sync is in flight (guest writes wait, [`DiskError::Syncing`]; the standby's replica writes
//!   happen only where no image sync is ever begun), so the sync in flight covers every write
//!   completed before the flush;
//! - **the activity log's record** before a write to a new extent: the record is written, its
//!   sync started, and the write waits ([`DiskError::Syncing`]) until the record is durable;
//! - **the activity log's upkeep** ([`Disk::tick`]): the image sync, then the record without
//!   the cooled extents, then its sync; the in-memory log changes when the record is durable.
//!
//! One record is in flight at a time, and a record written synchronously (a role change, a
//! resynchronisation, a clean stop) waits for it first ([`Disk::settle`]). Without a ring
//! (tests; a kernel with io_uring disabled) every sync is carried out at once, as before.
//!
//! An image sync that fails fails every flush after it: after a failed `fdatasync` the kernel
//! may have dropped the dirty pages it could not write, so no later sync proves them durable.

use std::os::fd::RawFd;

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use xen_sys::uring::SyncRing;

use super::image::io_err;
use super::{Bitmap, Disk, DiskError, Meta, Role};

/// A completion's tag: the metadata record's sync.
const META: u64 = 0;

/// The syncs' state (see the module documentation).
#[derive(Debug, Default)]
pub(super) struct Syncs {
    ring: Option<SyncRing>,
    /// Image syncs begun, and completed.
    begun: u64,
    done: u64,
    /// The first image sync that failed (every flush after it fails).
    failed: Option<DiskError>,
    /// The record written whose sync is in flight (adopted once it is durable).
    record: Option<Meta>,
    /// The activity log's upkeep waiting for image sync `ticket`: extents all of whose
    /// writes are at or before `upto` then leave the log.
    tick: Option<(u64, u64)>,
    /// The open checkpoint at the last upkeep (`None` before the first): an extent written
    /// since stays in the log, so a busy extent is not cooled and heated again every upkeep.
    last_tick_open: Option<u64>,
    /// Counters: image syncs, record syncs.
    pub(super) image_syncs: u64,
    pub(super) record_syncs: u64,
}

impl Disk {
    /// Carry syncs out through an io_uring ring from now on, registered with the loop's
    /// `registry` at `token` (readable when a sync completed: then call [`Disk::poll_syncs`]).
    /// Where the kernel refuses a ring, syncs stay as they were, carried out at once, and the
    /// log says what that costs.
    pub fn use_ring(&mut self, registry: &Registry, token: Token) {
        if self.syncs.ring.is_some() {
            return;
        }
        let ring = SyncRing::new().and_then(|r| {
            let fd: RawFd = r.fd();
            registry.register(&mut SourceFd(&fd), token, Interest::READABLE)?;
            Ok(r)
        });
        match ring {
            Ok(r) => {
                self.syncs.ring = Some(r);
                log::debug!("disk: guest flushes and activity-log syncs run through io_uring");
            }
            Err(e) => log::warn!(
                "disk: no io_uring ({e}): guest flushes and activity-log syncs block the daemon's loop while they run; a sync slower than the heartbeat timeout reads as a dead primary"
            ),
        }
    }

    /// Image syncs and record syncs completed, and whether they go through a ring.
    pub fn sync_counts(&self) -> (u64, u64, bool) {
        (
            self.syncs.image_syncs,
            self.syncs.record_syncs,
            self.syncs.ring.is_some(),
        )
    }

    /// A guest's flush: a ticket for [`Disk::flush_done`], which answers once every write
    /// completed before this call is durable. While an image sync is in flight no write
    /// completes (see the module documentation), so that sync is the flush's.
    pub fn start_flush(&mut self) -> Result<u64, DiskError> {
        self.sync_failure()?;
        if self.syncs.ring.is_none() {
            self.syncs.begun += 1;
            let r = self.image.sync();
            self.image_synced(r);
            return Ok(self.syncs.begun);
        }
        if self.image_sync_in_flight() {
            return Ok(self.syncs.begun);
        }
        self.begin_image_sync()?;
        Ok(self.syncs.begun)
    }

    /// The flush of `ticket`: `None` while it is in flight.
    pub fn flush_done(&self, ticket: u64) -> Option<Result<(), DiskError>> {
        if let Some(e) = &self.syncs.failed {
            return Some(Err(e.clone()));
        }
        (ticket <= self.syncs.done).then_some(Ok(()))
    }

    /// The sync failure every later flush and new extent fails with, if one failed.
    pub(super) fn sync_failure(&self) -> Result<(), DiskError> {
        match &self.syncs.failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Whether an image sync is in flight: guest writes wait for it (a write may wait for the
    /// inode's lock a sync holds, and the loop with it), as they do for a guest's flush. That
    /// wait is also what lets a flush asked meanwhile share the sync in flight
    /// ([`Disk::start_flush`]): no write may reach the image until it completes.
    pub(super) fn image_sync_in_flight(&self) -> bool {
        self.syncs.begun > self.syncs.done
    }

    /// Before an image write that does not wait for an image sync (the replica's): none may
    /// be in flight, since a flush asked meanwhile shares it ([`Disk::start_flush`]). A replica
    /// taking checkpoints begins none.
    pub(super) fn debug_assert_no_image_sync(&self) {
        debug_assert!(
            !self.image_sync_in_flight(),
            "an image write during an image sync"
        );
    }

    /// Whether extent `e` is in the log of the record in flight, if one is.
    pub(super) fn stays_in_log(&self, e: u64) -> bool {
        self.syncs.record.as_ref().is_none_or(|m| {
            m.al.get((e / 64) as usize)
                .is_some_and(|w| w >> (e % 64) & 1 == 1)
        })
    }

    /// Whether a record's sync is in flight (a write to a new extent waits for it).
    pub(super) fn record_in_flight(&self) -> bool {
        self.syncs.record.is_some()
    }

    fn begin_image_sync(&mut self) -> Result<(), DiskError> {
        let Some(ring) = self.syncs.ring.as_mut() else {
            return Ok(());
        };
        if let Err(e) = ring.datasync(self.image.file(), self.syncs.begun + 1) {
            let e = io_err("sync", self.image.path(), e);
            return Err(self.failed(e));
        }
        self.syncs.begun += 1;
        Ok(())
    }

    fn image_synced(&mut self, r: Result<(), DiskError>) {
        self.syncs.image_syncs += 1;
        self.syncs.done = self.syncs.begun;
        if let Err(e) = r {
            let e = self.failed(e);
            log::error!("disk: {e}: every flush fails from now on (its writes may be lost)");
            self.syncs.failed.get_or_insert(e);
        }
    }

    /// Write `m` as the newest record: at once without a ring; with one, its sync is started
    /// and `m` becomes the disk's record (and activity log) when it completes.
    pub(super) fn write_record(&mut self, m: Meta) -> Result<(), DiskError> {
        debug_assert!(self.syncs.record.is_none());
        let Some(ring) = self.syncs.ring.as_mut() else {
            self.syncs.record_syncs += 1;
            self.write_meta(m)?;
            self.al = Bitmap::from_words(self.meta.al.clone(), self.geo.extents);
            return Ok(());
        };
        self.mf.put(&m)?;
        ring.datasync(self.mf.file(), META)
            .map_err(|e| io_err("sync", self.mf.path(), e))?;
        self.syncs.record = Some(m);
        Ok(())
    }

    fn record_synced(&mut self, r: std::io::Result<()>) {
        self.syncs.record_syncs += 1;
        let Some(m) = self.syncs.record.take() else {
            return;
        };
        match r {
            Ok(()) => {
                self.al = Bitmap::from_words(m.al.clone(), self.geo.extents);
                self.durable = m.clone();
                self.meta = m;
            }
            Err(e) => {
                let e = self.failed(io_err("sync", self.mf.path(), e));
                log::error!(
                    "disk: activity log: {e}: every flush and new extent fails from now on"
                );
                self.syncs.failed.get_or_insert(e);
            }
        }
    }

    /// Completed syncs taken in, and what waited for them carried on (the activity log's
    /// upkeep goes on). Cheap when nothing completed: call it
    /// whenever the loop wakes. Returns whether a sync completed (what waited may go on).
    pub fn poll_syncs(&mut self) -> bool {
        let mut image = None;
        let mut record = None;
        if let Some(ring) = self.syncs.ring.as_mut() {
            ring.reap(&mut |tag, r| {
                if tag == META {
                    record = Some(r);
                } else {
                    image = Some(r);
                }
            });
        }
        let progressed = image.is_some() || record.is_some();
        if let Some(r) = image {
            let path = self.image.path().to_path_buf();
            self.image_synced(r.map_err(|e| io_err("sync", &path, e)));
        }
        if let Some(r) = record {
            self.record_synced(r);
        }
        if let Err(e) = self.tick_on() {
            log::error!("disk: activity log: {e}");
        }
        progressed
    }

    /// Block until no sync is in flight (before a record is written synchronously, and before
    /// the disk is handed over or closed).
    pub fn settle(&mut self) {
        loop {
            let busy = self.syncs.ring.as_ref().is_some_and(|r| r.in_flight() > 0);
            if !busy && self.syncs.tick.is_none() {
                return;
            }
            if let Some(ring) = self.syncs.ring.as_mut() {
                if let Err(e) = ring.wait() {
                    log::error!("disk: waiting for a sync: {e}");
                    return;
                }
            }
            self.poll_syncs();
            if !busy && self.syncs.tick.is_some() {
                // Nothing in flight, yet the upkeep waits: it cannot go on (a failed sync).
                self.syncs.tick = None;
            }
        }
    }

    /// Periodic upkeep of a primary's disk (about once a second): extents whose every write
    /// is acknowledged, and not written since the last upkeep, leave the activity log, after
    /// an `fdatasync` of the image (only then is their content the acknowledged one even across
    /// a power loss), and `base` moves up to the checkpoint that covers. Does nothing when
    /// nothing would leave, or while the last upkeep is under way.
    pub fn tick(&mut self) -> Result<(), DiskError> {
        if self.meta.role != Role::Primary || self.syncs.tick.is_some() {
            return Ok(());
        }
        let upto = self.acked.min(
            self.syncs
                .last_tick_open
                .map_or(u64::MAX, |o| o.saturating_sub(1)),
        );
        self.syncs.last_tick_open = Some(self.open);
        if !self.al.ones().any(|e| self.tracks.extent_lw(e) <= upto) {
            return Ok(());
        }
        let ticket = self.start_flush()?;
        self.syncs.tick = Some((ticket, upto));
        self.tick_on()
    }

    /// The upkeep's next step, once its image sync is done and no record is in flight: the
    /// record without the extents whose writes are all at or before the checkpoint it planned
    /// with (a write since then is not covered by the sync: it belongs to a later checkpoint,
    /// so its extent stays).
    fn tick_on(&mut self) -> Result<(), DiskError> {
        let Some((ticket, upto)) = self.syncs.tick else {
            return Ok(());
        };
        if self.record_in_flight() {
            return Ok(());
        }
        match self.flush_done(ticket) {
            None => return Ok(()),
            Some(Err(e)) => {
                self.syncs.tick = None;
                return Err(e);
            }
            Some(Ok(())) => self.syncs.tick = None,
        }
        let mut al = self.al.clone();
        for e in self.al.ones() {
            if self.tracks.extent_lw(e) <= upto {
                al.clear(e);
            }
        }
        if al == self.al {
            return Ok(());
        }
        let mut m = self.meta.clone();
        m.al = al.words().to_vec();
        m.base = upto;
        self.write_record(m).map_err(|e| self.failed(e))
    }
}
