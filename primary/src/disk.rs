//! The primary's part of disk replication (issue 14), apart from the loop in main.rs, which
//! calls it at a few points: the standby's `Hello` and `DiskDirty` frames (its report), the
//! `DiskPlan` sent once the report is complete, the resynchronisation's copies streamed while
//! the full synchronisation waits ([`DiskRepl::fill`]), and upkeep (the activity log, epochs
//! ended early when the journal fills). The disk itself belongs to the guest (the model
//! domain's [`hsb_domain::disk::Disk`]); checkpoints carry its journal through
//! [`hsb_domain::checkpoint::Staging::put_disk`].

use std::time::Duration;

use hsb_common::conn::{write_some, OutQueue};
use hsb_common::frame::{FrameError, Kind};
use hsb_common::msg::{DiskDirty, DiskHello, DIRTY_BYTES};
use hsb_common::session::Session;
use hsb_common::time::Nanos;
use hsb_domain::checkpoint::{CheckpointError, ResyncSender};
use hsb_domain::disk::{gen_hex, Bitmap, Disk, Geometry, Report};

use crate::guest::Guest;
use crate::{Phase, Primary};

/// Bytes of copies sealed at a time while a resynchronisation streams.
const RESYNC_BUFFER: usize = 2 << 20;
/// How often the activity log is trimmed of acknowledged extents (each trim syncs the image
/// first: rarely, so a busy file system stalls the loop rarely).
const TICK: std::time::Duration = std::time::Duration::from_secs(5);

/// The standby's report while its `DiskDirty` frames come in.
#[derive(Debug)]
struct Pending {
    report: Report,
    frames_left: u32,
}

/// The primary's disk replication state (when the guest has a disk).
pub struct DiskRepl {
    geo: Geometry,
    pending: Option<Pending>,
    /// The plan was sent in this session.
    planned: bool,
    sender: ResyncSender,
    /// Bytes of the sender's buffer already written, while copies are being sent.
    pub sending: Option<usize>,
    /// Epochs ended early because the journal was three quarters full.
    pub ended_early: u64,
    next_tick: Nanos,
}

impl DiskRepl {
    /// For a disk of this geometry; allocates the copy buffer.
    pub fn new(geo: Geometry, now: Nanos) -> DiskRepl {
        DiskRepl {
            geo,
            pending: None,
            planned: false,
            sender: ResyncSender::new(RESYNC_BUFFER),
            sending: None,
            ended_early: 0,
            next_tick: now.plus(TICK),
        }
    }

    /// This primary's `Hello` fields.
    pub fn hello(disk: &Disk) -> DiskHello {
        DiskHello {
            size: disk.size(),
            gen: disk.meta().gen,
            base: disk.meta().base,
            torn: false,
            toward: hsb_domain::disk::BLANK,
            dirty_frames: 0,
        }
    }

    /// A new session (or none): forget the last one's report and copies.
    pub fn reset(&mut self) {
        self.pending = None;
        self.planned = false;
        self.sending = None;
    }

    /// The standby's `Hello`: its disk must be this one's size. Returns whether its report is
    /// complete already (no `DiskDirty` frames follow).
    pub fn standby_hello(&mut self, h: &DiskHello) -> Result<bool, String> {
        self.reset();
        if h.size != self.geo.size {
            return Err(format!(
                "the standby's disk is {} bytes, this primary's {} (model.disk_size must be the same on both)",
                h.size, self.geo.size
            ));
        }
        let most = self.geo.tracks.div_ceil(8).div_ceil(DIRTY_BYTES as u64);
        if u64::from(h.dirty_frames) > most {
            return Err(format!(
                "the standby announces {} dirty-track frames, a disk of this size needs at most {most}",
                h.dirty_frames
            ));
        }
        self.pending = Some(Pending {
            report: Report {
                gen: h.gen,
                base: h.base,
                torn: h.torn,
                toward: h.toward,
                dirty: (h.dirty_frames > 0).then(|| Bitmap::new(self.geo.tracks)),
            },
            frames_left: h.dirty_frames,
        });
        Ok(h.dirty_frames == 0)
    }

    /// One `DiskDirty` frame; returns whether the report is complete now.
    pub fn dirty(&mut self, d: &DiskDirty) -> Result<bool, FrameError> {
        let bad = |why| FrameError::Body {
            kind: Kind::DiskDirty,
            why,
        };
        let p = self
            .pending
            .as_mut()
            .filter(|p| p.frames_left > 0)
            .ok_or(bad("dirty tracks not announced in the standby's Hello"))?;
        if d.bits.len() > DIRTY_BYTES || d.first >= self.geo.tracks {
            return Err(bad("dirty tracks beyond the disk"));
        }
        if let Some(b) = p.report.dirty.as_mut() {
            b.or_bytes(d.first, d.bits);
        }
        p.frames_left -= 1;
        Ok(p.frames_left == 0)
    }

    /// The standby's report is complete: plan its resynchronisation, to be completed by the
    /// full synchronisation `ckpt`, and queue the `DiskPlan` (the copies start at once).
    pub fn plan(
        &mut self,
        disk: &mut Disk,
        ckpt: u64,
        sess: &mut Session,
        out: &mut OutQueue,
    ) -> Result<(), String> {
        let Some(p) = self.pending.take() else {
            return Err("no report to plan from".into());
        };
        let plan = disk.plan(&p.report, ckpt);
        log::info!(
            "disk: the standby's disk is lineage {} at checkpoint {}{}{}; {}: {} of {} tracks to copy before checkpoint {ckpt}",
            gen_hex(&p.report.gen),
            p.report.base,
            if p.report.torn {
                format!(", torn toward lineage {}", gen_hex(&p.report.toward))
            } else {
                String::new()
            },
            p.report
                .dirty
                .as_ref()
                .map_or(String::new(), |d| format!(", {} tracks it wrote as a primary", d.count())),
            if plan.full {
                "an unknown or foreign disk gets a full copy"
            } else {
                "only the tracks that can differ are copied"
            },
            plan.tracks,
            self.geo.tracks
        );
        let mut buf = [0u8; 1024];
        let n = sess
            .write(Kind::DiskPlan, &plan, &mut buf)
            .map_err(|e| format!("cannot encode the disk plan: {e}"))?;
        if !out.push(&buf[..n]) {
            return Err("the standby does not read".into());
        }
        self.planned = true;
        Ok(())
    }

    /// Whether the plan for full synchronisation `ckpt` was sent and its copy may end in it.
    pub fn ready_for_full(&self, disk: &Disk, ckpt: u64) -> bool {
        self.planned
            && self.sending.is_none()
            && disk.resync_ckpt() == Some(ckpt)
            && disk.resync_ready()
    }

    /// Whether copies wait to be made or sent (the loop turns quickly meanwhile).
    pub fn streaming(&self, disk: &Disk) -> bool {
        self.planned && (self.sending.is_some() || (disk.resyncing() && !disk.resync_ready()))
    }

    /// With nothing being sent, seal the next copies; returns whether there are bytes to send
    /// ([`DiskRepl::bytes`] from [`DiskRepl::sending`] on).
    pub fn fill(&mut self, disk: &mut Disk, sess: &mut Session) -> Result<bool, CheckpointError> {
        if self.sending.is_some() {
            return Ok(true);
        }
        if !self.planned || !disk.resyncing() {
            return Ok(false);
        }
        let n = self.sender.fill(disk, sess)?;
        if n > 0 {
            self.sending = Some(0);
        }
        Ok(n > 0)
    }

    /// The sealed copies.
    pub fn bytes(&self) -> &[u8] {
        self.sender.bytes()
    }

    /// Whether the activity log is due for its upkeep.
    pub fn tick_due(&mut self, now: Nanos) -> bool {
        if now < self.next_tick {
            return false;
        }
        self.next_tick = now.plus(TICK);
        true
    }

    /// When the upkeep is due next.
    pub fn next_tick(&self) -> Nanos {
        self.next_tick
    }
}

/// The guest's disk, if it has one (the model domain's).
pub(crate) fn guest_disk(dom: &Guest) -> Option<&hsb_domain::disk::Disk> {
    match dom {
        Guest::Model(d) => d.disk_ref(),
        Guest::Xen(_) => None,
    }
}

pub(crate) fn guest_disk_mut(dom: &mut Guest) -> Option<&mut hsb_domain::disk::Disk> {
    match dom {
        Guest::Model(d) => d.disk_mut(),
        Guest::Xen(_) => None,
    }
}

/// Disk replication (issue 14): the points where the loop meets it; the rest is in disk.rs.
impl Primary {
    /// The standby's disk report is complete: plan its resynchronisation for the coming full
    /// synchronisation, and queue the plan.
    pub(crate) fn plan_disk(&mut self, now: Nanos) {
        let ckpt = self.next_ckpt;
        let (Some(repl), Some(r), Some(disk)) = (
            self.disk.as_mut(),
            self.repl.as_mut(),
            guest_disk_mut(&mut self.dom),
        ) else {
            return;
        };
        let Some(sess) = r.session.as_mut() else {
            return;
        };
        // Queued behind the session's confirmation and flushed as it is (a standby that
        // refuses the session has its Refuse read before any write fails).
        if let Err(e) = repl.plan(disk, ckpt, sess, &mut r.out) {
            log::error!("disk: {e}");
            self.lose_standby(now, "cannot send the disk plan");
        }
    }

    /// Copies of a disk resynchronisation wait to be made or sent: the loop turns every
    /// millisecond meanwhile, as for a pre-copy.
    pub(crate) fn resync_pending(&self) -> bool {
        self.need_full
            && self
                .repl
                .as_ref()
                .is_some_and(|r| r.phase == Phase::Streaming)
            && match (&self.disk, guest_disk(&self.dom)) {
                (Some(repl), Some(d)) => repl.streaming(d),
                _ => false,
            }
    }

    /// Whether the full synchronisation may be captured as far as the disk goes: its plan was
    /// sent and what is left of the copy fits it. Meanwhile, the copies are made and sent.
    pub(crate) fn disk_ready_for_full(&mut self, now: Nanos) -> bool {
        let ckpt = self.next_ckpt;
        let (Some(repl), Some(disk)) = (self.disk.as_mut(), guest_disk_mut(&mut self.dom)) else {
            return true;
        };
        if repl.ready_for_full(disk, ckpt) {
            return true;
        }
        let Some(sess) = self.repl.as_mut().and_then(|r| r.session.as_mut()) else {
            return false;
        };
        match repl.fill(disk, sess) {
            Ok(true) => {}
            Ok(false) => return repl.ready_for_full(disk, ckpt),
            Err(e) => {
                log::error!("disk resynchronisation: {e}");
                self.lose_standby(now, "the disk resynchronisation failed");
                return false;
            }
        }
        self.send_resync(now);
        false
    }

    /// Write the resynchronisation's sealed copies, after any queued control frame (the plan).
    pub(crate) fn send_resync(&mut self, now: Nanos) {
        let (Some(repl), Some(r)) = (self.disk.as_mut(), self.repl.as_mut()) else {
            return;
        };
        let Some(mut pos) = repl.sending else {
            return;
        };
        let res = match r.out.flush(&mut r.stream) {
            Ok(true) => write_some(&mut r.stream, repl.bytes(), &mut pos),
            Ok(false) => Ok(false),
            Err(e) => Err(e),
        };
        match res {
            Ok(true) => repl.sending = None,
            Ok(false) => repl.sending = Some(pos),
            Err(e) => self.lose_standby(now, &format!("write failed: {e}")),
        }
    }

    /// The activity log's upkeep, and an epoch ended early when the journal is three quarters
    /// full (if a checkpoint may start now; otherwise writes that do not fit wait).
    pub(crate) fn disk_upkeep(&mut self, now: Nanos) {
        let (Some(repl), Some(disk)) = (self.disk.as_mut(), guest_disk_mut(&mut self.dom)) else {
            return;
        };
        if repl.tick_due(now) {
            if let Err(e) = disk.tick() {
                log::error!("disk: activity log: {e}");
            }
        }
        let high = disk.journal_high();
        if high && now < self.next_epoch && self.may_checkpoint() {
            let Some(repl) = self.disk.as_mut() else {
                return;
            };
            repl.ended_early += 1;
            if repl.ended_early.is_power_of_two() {
                log::info!(
                    "disk: the epoch's journal is three quarters full: epoch ended early ({} times so far)",
                    repl.ended_early
                );
            }
            self.next_epoch = now;
        }
    }

    /// With debug logging: the checkpoint's disk writes and the disk's digest as the guest's
    /// memory has it at the capture (what a replica activated from it must hold).
    pub(crate) fn disk_debug(&self) -> String {
        if !log::log_enabled!(log::Level::Debug) {
            return String::new();
        }
        let Guest::Model(d) = &self.dom else {
            return String::new();
        };
        let Some(digest) = d.disk_digest() else {
            return String::new();
        };
        let (w, b) = self.staging.disk_staged();
        format!(", disk {w} writes {b} bytes, disk digest {digest:08x}")
    }

    pub(crate) fn disk_status(&self, kv: &mut dyn FnMut(&str, String)) {
        let Some(disk) = guest_disk(&self.dom) else {
            return;
        };
        hsb_domain::disk::status(disk, kv);
        if let Some(repl) = &self.disk {
            kv("disk_epochs_ended_early", repl.ended_early.to_string());
        }
        if let Guest::Model(d) = &self.dom {
            if let Some(st) = d.disk_stats() {
                kv("disk_guest_writes", st.writes.to_string());
                kv("disk_guest_waits", st.waits.to_string());
                kv("disk_guest_errors", st.errors.to_string());
                kv("disk_log_records", st.log_records.to_string());
                kv("disk_write_us_p50", us(st.latency.quantile(0.5)));
                kv("disk_write_us_p99", us(st.latency.quantile(0.99)));
            }
        }
    }

    /// Persist the disk's track table (a clean stop, a step-down): the next process, as the
    /// primary or as this host's standby, knows exactly what this one wrote.
    pub(crate) fn persist_disk(&mut self, why: &str) {
        if let Some(disk) = guest_disk_mut(&mut self.dom) {
            match disk.persist_table() {
                Ok(()) => log::info!("{why}: disk track table persisted ({})", disk.describe()),
                Err(e) => log::error!("{why}: cannot persist the disk's track table: {e}"),
            }
        }
    }
}

fn us(d: Duration) -> String {
    d.as_micros().to_string()
}
