//! The primary's disk I/O (issue 14), for the shell: the guest's disk opened and attached to
//! the model domain, our `Hello`'s disk part, the standby's report (its `Hello`'s disk and its
//! `DiskDirty` frames) checked and gathered, the `DiskPlan` made and queued, the
//! resynchronisation's copies sealed and written while the guest runs, acknowledgements, the
//! journal stopped when the session ends, the activity log's upkeep, and the track table
//! persisted at clean transitions. What waits for what (the full synchronisation for the copy,
//! checkpoints for the copies being written, an epoch ended early when the journal fills) is
//! the node's (`node_disk.rs`). The disk itself belongs to the guest (the model domain's
//! [`hsb_domain::disk::Disk`]); checkpoints carry its journal through
//! [`hsb_domain::checkpoint::Staging::put_disk`].

use std::io;
use std::time::Duration;

use hsb_common::conn::{write_some, OutQueue};
use hsb_common::frame::{FrameError, Kind, HEADER_LEN};
use hsb_common::msg::{self, DiskDirty, DiskHello, DIRTY_BYTES};
use hsb_common::session::Session;
use hsb_common::time::Nanos;
use hsb_domain::checkpoint::{CheckpointError, ResyncSender};
use hsb_domain::disk::{gen_hex, Bitmap, Disk, Geometry, Report};
use hsb_domain::model::ModelDomain;
use hsb_primary::config::Settings;
use hsb_primary::node::Event;

use crate::daemon::Daemon;
use crate::guest::Guest;

/// Bytes of copies sealed at a time while a resynchronisation streams.
const RESYNC_BUFFER: usize = 2 << 20;
/// How often the activity log is trimmed of acknowledged extents (each trim syncs the image
/// first: rarely, so a busy file system stalls the loop rarely).
const TICK: Duration = Duration::from_secs(5);

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
    sending: Option<usize>,
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
            next_tick: now.plus(TICK),
        }
    }

    /// A new session (or none): forget the last one's report and copies.
    fn reset(&mut self) {
        self.pending = None;
        self.planned = false;
        self.sending = None;
    }

    /// The standby's `Hello`: its disk must be this one's size. Returns whether its report is
    /// complete already (no `DiskDirty` frames follow).
    fn standby_hello(&mut self, h: &DiskHello) -> Result<bool, String> {
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
    fn dirty(&mut self, d: &DiskDirty) -> Result<bool, FrameError> {
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

    /// Plan the resynchronisation of the standby's reported disk, to be completed by the full
    /// synchronisation `ckpt`, and queue the `DiskPlan` (the copies start at once).
    fn plan(
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
    fn ready_for_full(&self, disk: &Disk, ckpt: u64) -> bool {
        self.planned
            && self.sending.is_none()
            && disk.resync_ckpt() == Some(ckpt)
            && disk.resync_ready()
    }

    /// With nothing being sent, seal the next copies; returns whether there are bytes to send.
    fn fill(&mut self, disk: &mut Disk, sess: &mut Session) -> Result<bool, CheckpointError> {
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

    /// Whether the activity log is due for its upkeep.
    fn tick_due(&mut self, now: Nanos) -> bool {
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

/// Open the guest's disk image and make it the primary's: its writes belong to this
/// primary's checkpoints from `start_checkpoint + 1` on; a replica's data forks into a lineage
/// of its own. `key` names the configuration key in errors.
pub fn open_primary_disk(
    cfg: &hsb_domain::disk::DiskConfig,
    start_checkpoint: u64,
    key: &str,
) -> io::Result<Disk> {
    let err = |e: String| io::Error::other(format!("{key}: {e}"));
    let mut disk = Disk::open(cfg).map_err(|e| err(e.to_string()))?;
    disk.start_primary(start_checkpoint + 1)
        .map_err(|e| err(e.to_string()))?;
    log::info!(
        "disk {} ({} MiB): {}; journal {} MiB",
        cfg.path.display(),
        cfg.size >> 20,
        disk.describe(),
        cfg.journal_max >> 20
    );
    Ok(disk)
}

/// Open the model domain's disk (`model.disk`) as the primary's and attach it to the domain.
pub fn attach(dom: &mut ModelDomain, s: &Settings) -> io::Result<()> {
    let Some(ds) = &s.disk else {
        return Ok(());
    };
    let disk = open_primary_disk(&ds.disk, s.start_checkpoint, "model.disk")?;
    log::info!(
        "model disk workload {} KiB/s in writes of {} KiB ({})",
        ds.workload.rate >> 10,
        ds.workload.write >> 10,
        if ds.workload.random {
            "random"
        } else {
            "sequential"
        },
    );
    dom.attach_disk(disk, ds.workload, s.start_image.as_os_str().is_empty())
        .map_err(|e| io::Error::other(format!("model.disk: {e}")))
}

/// The guest's disk, if it has one (the model domain's or the Xen guest's).
pub(crate) fn guest_disk(dom: &Guest) -> Option<&Disk> {
    match dom {
        Guest::Model(d) => d.disk_ref(),
        Guest::Xen(x) => x.src.disk_ref(),
    }
}

pub(crate) fn guest_disk_mut(dom: &mut Guest) -> Option<&mut Disk> {
    match dom {
        Guest::Model(d) => d.disk_mut(),
        Guest::Xen(x) => x.src.disk_mut(),
    }
}

impl Daemon {
    /// Our `Hello`'s disk part.
    pub(crate) fn disk_hello(&self) -> DiskHello {
        guest_disk(&self.dom).map_or_else(Default::default, |d| DiskHello {
            size: d.size(),
            gen: d.meta().gen,
            base: d.meta().base,
            torn: false,
            toward: hsb_domain::disk::BLANK,
            dirty_frames: 0,
        })
    }

    /// The standby answered our `Hello` (`opened` is the node's event of it): its disk must be
    /// one this guest's can be replicated to; its report may be complete at once.
    pub(crate) fn session_opened(&mut self, now: Nanos, opened: Event) {
        let h = self
            .repl
            .as_mut()
            .and_then(|r| r.standby_disk.take())
            .unwrap_or_default();
        let checked = match self.disk.as_mut() {
            Some(d) => d.standby_hello(&h),
            None if h.size != 0 => Err(format!(
                "it has a disk of {} bytes, this primary's guest has none (model.disk_size must be the same on both)",
                h.size
            )),
            None => Ok(false),
        };
        match checked {
            Ok(complete) => {
                self.feed(now, opened);
                if complete {
                    self.feed(now, Event::DiskReport);
                }
            }
            Err(why) => {
                log::error!("standby {}: {why}", self.s.standby);
                self.feed(
                    now,
                    Event::Lost {
                        why: "its disk cannot be replicated to".into(),
                        frame_error: None,
                    },
                );
            }
        }
    }

    /// A `DiskDirty` frame of the standby's report; the report may be complete now.
    pub(crate) fn disk_dirty(&mut self, frame: &[u8]) -> Result<Option<Event>, FrameError> {
        let kind = Kind::DiskDirty;
        let Some(sess) = self.repl.as_mut().and_then(|r| r.session.as_mut()) else {
            return Err(FrameError::Unexpected {
                kind,
                state: "waiting for the standby's Hello",
            });
        };
        sess.open(frame)?;
        let d: DiskDirty = msg::decode(kind, &frame[HEADER_LEN..])?;
        let Some(repl) = self.disk.as_mut() else {
            return Err(FrameError::Unexpected {
                kind,
                state: "this primary's guest has no disk",
            });
        };
        Ok(repl.dirty(&d)?.then_some(Event::DiskReport))
    }

    /// [`Effect::PlanDisk`](hsb_primary::node::Effect::PlanDisk): the plan is queued behind
    /// the session's confirmation and flushed with it (a standby that refuses the session has
    /// its Refuse read before any write fails).
    pub(crate) fn plan_disk(&mut self, ckpt: u64) -> Option<Event> {
        let (Some(repl), Some(r), Some(disk)) = (
            self.disk.as_mut(),
            self.repl.as_mut(),
            guest_disk_mut(&mut self.dom),
        ) else {
            return None;
        };
        let sess = r.session.as_mut()?;
        match repl.plan(disk, ckpt, sess, &mut r.out) {
            Ok(()) => None,
            Err(e) => {
                log::error!("disk: {e}");
                Some(Event::Lost {
                    why: "cannot send the disk plan".into(),
                    frame_error: None,
                })
            }
        }
    }

    /// [`Effect::ResyncStep`](hsb_primary::node::Effect::ResyncStep): ready for the full
    /// synchronisation `ckpt`, or the next copies sealed and on their way.
    pub(crate) fn resync_step(&mut self, ckpt: u64) -> Event {
        let stepped = |ready, copying, error| Event::ResyncStepped {
            ready,
            copying,
            error,
        };
        let (Some(repl), Some(disk)) = (self.disk.as_mut(), guest_disk_mut(&mut self.dom)) else {
            return stepped(true, false, None);
        };
        if repl.ready_for_full(disk, ckpt) {
            return stepped(true, false, None);
        }
        let Some(r) = self.repl.as_mut() else {
            return stepped(false, false, Some("no session".into()));
        };
        let Some(sess) = r.session.as_mut() else {
            return stepped(false, false, Some("no session".into()));
        };
        match repl.fill(disk, sess) {
            Ok(true) => {}
            Ok(false) => return stepped(repl.ready_for_full(disk, ckpt), false, None),
            Err(e) => return stepped(false, false, Some(e.to_string())),
        }
        match write_resync(repl, r) {
            Ok(()) => stepped(false, repl.sending.is_some(), None),
            Err(e) => stepped(false, false, Some(format!("write failed: {e}"))),
        }
    }

    /// The connection is writable: go on writing the resynchronisation's copies (after any
    /// queued control frame: the plan).
    pub(crate) fn send_resync(&mut self, now: Nanos) {
        let (Some(repl), Some(r)) = (self.disk.as_mut(), self.repl.as_mut()) else {
            return;
        };
        if repl.sending.is_none() {
            return;
        }
        let ev = match write_resync(repl, r) {
            Ok(()) if repl.sending.is_none() => Event::ResyncSent,
            Ok(()) => return,
            Err(e) => Event::Lost {
                why: format!("write failed: {e}"),
                frame_error: None,
            },
        };
        self.feed(now, ev);
    }

    /// [`Effect::DiskAcked`](hsb_primary::node::Effect::DiskAcked).
    pub(crate) fn disk_acked(&mut self, ckpt: u64) {
        if let Some(d) = guest_disk_mut(&mut self.dom) {
            d.acked(ckpt);
        }
    }

    /// [`Effect::DiskStop`](hsb_primary::node::Effect::DiskStop): no standby; the next one is
    /// resynchronised from the track table, not the journal.
    pub(crate) fn disk_stop(&mut self) {
        if let Some(d) = self.disk.as_mut() {
            d.reset();
        }
        if let Some(d) = guest_disk_mut(&mut self.dom) {
            d.stop_journal();
        }
    }

    /// Completed syncs taken in (every turn: cheap); the activity log's upkeep, every
    /// [`TICK`]; and the node hears when the open epoch's
    /// journal is three quarters full.
    pub(crate) fn disk_upkeep(&mut self, now: Nanos) {
        if guest_disk_mut(&mut self.dom).is_some_and(|d| d.poll_syncs()) {
            self.pump_service();
        }
        let (Some(repl), Some(disk)) = (self.disk.as_mut(), guest_disk_mut(&mut self.dom)) else {
            return;
        };
        if repl.tick_due(now) {
            if let Err(e) = disk.tick() {
                log::error!("disk: activity log: {e}");
            }
        }
        if disk.journal_high() {
            self.feed(now, Event::JournalHigh);
        }
    }

    /// A checkpoint's capture: its disk writes staged, after the guest's memory and before
    /// the guest runs again (the loop is single-threaded).
    pub(crate) fn capture_disk(&mut self) -> Result<(), CheckpointError> {
        self.staging.put_disk(self.dom.source())
    }

    /// Checkpoint `ckpt` is sealed: the next epoch's writes belong to `ckpt + 1`. With debug
    /// logging, the checkpoint's disk writes and the disk's digest as the guest's memory has it
    /// at the capture (what a replica activated from it must hold).
    pub(crate) fn disk_sealed(&mut self, ckpt: u64) {
        if let Some(d) = self.dom.source().disk() {
            d.set_open(ckpt + 1);
        }
        if log::log_enabled!(log::Level::Debug) {
            if let Some(digest) = self.dom.model().and_then(|d| d.disk_digest()) {
                let (w, b) = self.staging.disk_staged();
                log::debug!(
                    "checkpoint {ckpt}: disk {w} writes {b} bytes, disk digest {digest:08x}"
                );
            }
        }
    }

    /// The disk's status lines.
    pub(crate) fn disk_status(&self, kv: &mut dyn FnMut(&str, String)) {
        let Some(disk) = guest_disk(&self.dom) else {
            return;
        };
        hsb_domain::disk::status(disk, kv);
        if let Some((_, ended_early)) = self.node.disk_view() {
            kv("disk_epochs_ended_early", ended_early.to_string());
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

/// Write the sealed copies after any queued control frame, as far as the socket takes them.
fn write_resync(repl: &mut DiskRepl, r: &mut crate::repl::Conn) -> io::Result<()> {
    let Some(mut pos) = repl.sending else {
        return Ok(());
    };
    if r.out.flush(&mut r.stream)? && write_some(&mut r.stream, repl.sender.bytes(), &mut pos)? {
        repl.sending = None;
    } else {
        repl.sending = Some(pos);
    }
    Ok(())
}

fn us(d: Duration) -> String {
    d.as_micros().to_string()
}
