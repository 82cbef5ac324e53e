//! The primary's part of disk replication (issue 14), apart from the loop in main.rs, which
//! calls it at a few points: the standby's `Hello` and `DiskDirty` frames (its report), the
//! `DiskPlan` sent once the report is complete, the resynchronisation's copies streamed while
//! the full synchronisation waits ([`DiskRepl::fill`]), and upkeep (the activity log, epochs
//! ended early when the journal fills). The disk itself belongs to the guest (the model
//! domain's [`hsb_domain::disk::Disk`]); checkpoints carry its journal through
//! [`hsb_domain::checkpoint::Staging::put_disk`].

use hsb_common::conn::OutQueue;
use hsb_common::frame::{FrameError, Kind};
use hsb_common::msg::{DiskDirty, DiskHello, DIRTY_BYTES};
use hsb_common::session::Session;
use hsb_common::time::Nanos;
use hsb_domain::checkpoint::{CheckpointError, ResyncSender};
use hsb_domain::disk::{gen_hex, Bitmap, Disk, Geometry, Report};

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
            if p.report.torn { ", torn" } else { "" },
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
