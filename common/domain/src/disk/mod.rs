//! The guest's disk, replicated with its checkpoints (issue 14; DESIGN.md §2, Remus's
//! "protocol D"). [`Disk`] is one image and what hsb keeps beside it; the checkpoint code
//! ([`crate::checkpoint`]) moves its writes over the wire.
//!
//! **At the primary** a guest write completes once it is in the local image ([`Disk::write`];
//! a FUA write or [`Disk::flush`] only once it is durable), and is also appended to the
//! **journal** of the open epoch ([`journal`]): bounded, in the order the guest issued the
//! writes. The checkpoint of that epoch carries the journal as `Disk` frames, covered by the
//! checkpoint's CRC like its pages; then the journal starts over. A write the journal cannot
//! take is refused before it touches the image ([`DiskError::JournalFull`]): the daemon ends
//! the epoch early, or the write waits. Memory never grows beyond the limit.
//!
//! **At the standby** a checkpoint's writes are staged with its pages and applied together
//! (the disk first, then the pages), before `ack(N)`. Until `End` checks out nothing touches
//! the image, so a torn, corrupt or refused checkpoint leaves memory and disk at N-1. A write
//! that fails (a full or failing image) is never acknowledged, and the replica can no longer be
//! activated (its disk is neither N-1 nor N); the next session resynchronises it. There is no
//! `fdatasync` per checkpoint: the replica's memory does not outlive its host either, so a disk
//! durable at every checkpoint would buy nothing, and a sync on a busy file system can stall
//! the loop for seconds. What the metadata claims is what must survive a crash: it says
//! `Applying` or `Resyncing` (durably) before the first write lands after a clean state, so a
//! crash in the middle is detected and resynchronised from the last checkpoint it claims, and
//! it claims a checkpoint exactly (`Clean`) only after a sync: at a clean stop, at a hand-over.
//! (After a resynchronisation the record keeps its old lineage and base, marked torn, until
//! then: no sync delays a session's first acknowledgements.)
//!
//! **Crashes and power loss.** A process that dies (kill -9) leaves its writes in the page
//! cache: everything above holds. Across a power loss what holds is what was synced: the
//! records' claims are made only of synced data (a torn marker keeps the last claim that was;
//! `Clean` after an `fdatasync`; the activity log is trimmed after one), with one exception
//! kept for the failover's speed: the record written when a replica is activated (its fork)
//! does not wait for the image's writeback, so a host that loses power right after an
//! activation must have its disk treated as unknown (remove `IMAGE.meta`: it gets a full copy).
//!
//! **Lineages (generations).** Every image belongs to a lineage: a random identifier made when
//! a disk's history starts (an image hsb did not create: unknown contents) or forks (a replica
//! activated from checkpoint F becomes lineage G' whose history says "left G at F"; a replica's
//! data that starts serving always forks, so its later writes are never mistaken for a later
//! checkpoint of the lineage it came from). An image hsb creates is all zeros, lineage
//! [`BLANK`] at checkpoint 0. The metadata file beside the image ([`meta`]) holds the lineage,
//! its forks, the checkpoint the image holds (`base`), whether it was being written when it
//! stopped (`Applying`, `Resyncing`), and its role.
//!
//! **What can differ.** Each disk keeps, per track (4 KiB), the last checkpoint that wrote it
//! ([`tracks::Tracks`]): the primary marks each guest write with the open checkpoint, a
//! replica each applied write with its checkpoint. For a peer at checkpoint X of the same
//! lineage, or of an ancestor lineage with X at or before the fork, the tracks that can differ
//! are those written after X, plus the tracks the peer itself wrote beyond X if it was a
//! primary ([`Report::dirty`]). A disk stopped while being written ("torn") says whose writes
//! those were; it counts as at X only if they were the primary's own lineage's. Anything else
//! (another lineage, a torn disk toward another lineage, X older than what the table knows) gets
//! a full copy.
//!
//! **A primary's unacknowledged writes survive its crash** through the **activity log**: the
//! set of 4 MiB extents it may have written since its last acknowledged checkpoint, persisted
//! in the metadata file *before* the first write to an extent not already in it (as DRBD's
//! activity log). After a crash the old primary reports those extents as dirty, so the tracks
//! it wrote in epochs never acknowledged are copied back from the new primary. Extents leave the
//! log once every write to them is acknowledged and durable and none came since the last upkeep
//! ([`Disk::tick`], which syncs the image first; a busy extent is not cooled and heated again at
//! every upkeep). The syncs run off the daemon's loop (`syncs.rs`). At a clean step-down or
//! hand-over the exact table is persisted instead ([`Disk::persist_table`]): the report is then
//! per track.
//!
//! **Resynchronisation** (after a reconnect, a standby restart, a rejoin after failover) sends
//! only those tracks: the primary plans from the standby's report ([`Disk::plan`]), copies the
//! tracks while the guest runs (round after round, re-copying what the guest wrote meanwhile;
//! after [`RESYNC_ROUNDS`] guest writes wait until it converges), and the full synchronisation
//! that follows carries the last ones. A standby with a replica it could activate stages the
//! copies in a file beside its image (`IMAGE.resync`) and applies them with that full
//! synchronisation, so an interrupted resync leaves its disk as it was; one with nothing to
//! keep (a restarted standby, a rejoining old primary) writes them straight into its image,
//! marked `Resyncing` first.

mod block;
mod error;
pub mod export;
mod guest;
pub mod image;
pub mod journal;
pub mod meta;
pub mod metrics;
pub mod nbd;
mod replica;
mod resync;
mod syncs;
pub mod tracks;

use std::fs::File;
use std::path::{Path, PathBuf};

use hsb_common::msg::{DiskGen, DiskHello, DiskPlan};

pub use error::DiskError;
pub use image::{digest_of, Image};
pub use journal::{Journal, PIECE_OVERHEAD};
pub use meta::{Meta, MetaFile, Role, State, BLANK};
pub use tracks::{Bitmap, Geometry, Tracks, BLOCK};

/// Smallest journal limit (a checkpoint must hold a 1 MiB write and some more).
pub const MIN_JOURNAL: usize = 2 << 20;
/// Rounds of a resynchronisation copy before guest writes wait for it to converge.
pub const RESYNC_ROUNDS: u32 = 8;

/// Where and how big.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    /// The image file (created, sparse, if missing).
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// The journal limit: disk bytes (with frame overhead) one checkpoint may carry.
    pub journal_max: usize,
}

/// The metadata file of an image.
pub fn meta_path(image: &Path) -> PathBuf {
    let mut p = image.as_os_str().to_owned();
    p.push(".meta");
    PathBuf::from(p)
}

/// The resynchronisation staging file of an image.
pub fn resync_path(image: &Path) -> PathBuf {
    let mut p = image.as_os_str().to_owned();
    p.push(".resync");
    PathBuf::from(p)
}

/// Counters for status and logs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DiskStats {
    /// Guest writes done.
    pub writes: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Guest writes refused to wait (journal full, resynchronisation catching up, a sync in
    /// flight).
    pub waits: u64,
    /// I/O errors.
    pub errors: u64,
    /// Activity-log records written before a write to a new extent.
    pub al_writes: u64,
    /// Writes applied from checkpoints (replica).
    pub applied_writes: u64,
    /// Their bytes.
    pub applied_bytes: u64,
    /// Resynchronisations begun (either side).
    pub resyncs: u64,
    /// Of them, full copies.
    pub full_copies: u64,
    /// Tracks copied by the last resynchronisation (sent, or received).
    pub resync_tracks: u64,
    /// Tracks in the last resynchronisation's plan.
    pub resync_planned: u64,
    /// Bytes copied by the last resynchronisation.
    pub resync_bytes: u64,
}

/// What a disk says of itself to a primary (in its `Hello`, and `DiskDirty` frames).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Lineage.
    pub gen: DiskGen,
    /// The checkpoint of `gen` it holds.
    pub base: u64,
    /// It may hold writes beyond `base` too, of lineage `toward`.
    pub torn: bool,
    /// See `torn` ([`BLANK`]: unknown).
    pub toward: DiskGen,
    /// Tracks it wrote itself beyond `base` (it was a primary).
    pub dirty: Option<Bitmap>,
}

impl Report {
    /// The `Hello` fields of this report for an image of `size` bytes.
    pub fn hello(&self, size: u64) -> DiskHello {
        DiskHello {
            size,
            gen: self.gen,
            base: self.base,
            torn: self.torn,
            toward: self.toward,
            dirty_frames: self.dirty_frames(),
        }
    }

    /// `DiskDirty` frames the dirty bitmap takes.
    pub fn dirty_frames(&self) -> u32 {
        self.dirty.as_ref().map_or(0, |d| {
            d.len()
                .div_ceil(8)
                .div_ceil(hsb_common::msg::DIRTY_BYTES as u64)
        }) as u32
    }
}

/// A resynchronisation the primary is copying.
#[derive(Debug)]
struct Source {
    ckpt: u64,
    full: bool,
    pending: Bitmap,
    cursor: u64,
    round: u32,
    throttled: bool,
    /// Copies handed out while the guest runs (`DiskSync` frames).
    frames: u64,
}

/// A resynchronisation the replica is receiving.
#[derive(Debug)]
struct Target {
    plan: DiskPlan,
    /// The staging file, if the replica's disk is kept as it is until the end.
    staged: Option<File>,
    received: Bitmap,
    /// The base the plan was made from.
    base: u64,
}

/// A disk image and what hsb keeps beside it. See the module documentation.
#[derive(Debug)]
pub struct Disk {
    image: Image,
    mf: MetaFile,
    meta: Meta,
    geo: Geometry,
    tracks: Tracks,
    /// The activity log as persisted (extents).
    al: Bitmap,
    journal: Journal,
    journaling: bool,
    /// The checkpoint guest writes belong to now.
    open: u64,
    /// Primary: the last acknowledged checkpoint.
    acked: u64,
    /// Replica: the last checkpoint applied (and durable) in this process.
    applied: Option<u64>,
    /// The dirty tracks a disk that was a primary's reports.
    dirty: Option<Bitmap>,
    /// The record as last written (`meta` is this process's view, which may be ahead of it: a
    /// replica's new lineage after a resynchronisation, until its next clean transition).
    durable: Meta,
    /// The track table was read back from the metadata file (exact, not from the horizon).
    precise: bool,
    /// The image was created (all zeros) when this process opened it.
    created: bool,
    source: Option<Source>,
    target: Option<Target>,
    stats: DiskStats,
    last_error: Option<String>,
    syncs: syncs::Syncs,
}

fn new_gen() -> Result<DiskGen, DiskError> {
    let mut g = [0u8; 16];
    hsb_common::rng::os_random(&mut g).map_err(|e| DiskError::Io {
        op: "random lineage",
        path: PathBuf::from("/dev/urandom"),
        kind: e.kind(),
        detail: e.to_string(),
    })?;
    if g == BLANK {
        g[0] = 1;
    }
    Ok(g)
}

/// A lineage identifier for logs.
pub fn gen_hex(g: &DiskGen) -> String {
    g[..6].iter().map(|b| format!("{b:02x}")).collect()
}

impl Disk {
    /// Open the image (creating it, all zeros, if missing) and its metadata. An existing image
    /// without valid metadata has unknown contents: a lineage of its own, marked torn (any
    /// primary gives it a full copy).
    pub fn open(cfg: &DiskConfig) -> Result<Disk, DiskError> {
        let geo = Geometry::new(cfg.size)?;
        if cfg.journal_max < MIN_JOURNAL {
            return Err(DiskError::Invalid(format!(
                "disk.journal_max of {} bytes: expected at least 2MiB",
                cfg.journal_max
            )));
        }
        let (image, created) = Image::open(&cfg.path, cfg.size)?;
        let (mut mf, found) = MetaFile::open(&meta_path(&cfg.path), geo.tracks)?;
        let mut table = None;
        let meta = match found.meta {
            _ if created => {
                let m = Meta::blank(cfg.size);
                mf.write(&m)?;
                m
            }
            Some(m) if m.size == cfg.size => {
                table = found.table;
                m
            }
            other => {
                log::warn!(
                    "disk {}: {}; its contents are unknown: any primary copies it whole",
                    cfg.path.display(),
                    match other {
                        Some(m) => format!("metadata for an image of {} bytes", m.size),
                        None => format!("no valid metadata in {}", mf.path().display()),
                    }
                );
                let m = Meta {
                    size: cfg.size,
                    gen: new_gen()?,
                    history: Vec::new(),
                    base: 0,
                    state: State::Resyncing,
                    toward: BLANK,
                    role: Role::Replica,
                    al: Vec::new(),
                };
                mf.write(&m)?;
                m
            }
        };
        let tracks = match &table {
            Some(t) => Tracks::from_table(geo, t.horizon, t.lw.clone()),
            None if meta.state == State::Clean || meta.role == Role::Primary => {
                Tracks::new(geo, meta.base)
            }
            None => Tracks::new(geo, u64::MAX),
        };
        let al = Bitmap::from_words(meta.al.clone(), geo.extents);
        let dirty = (meta.role == Role::Primary).then(|| {
            let mut d = Bitmap::new(geo.tracks);
            let precise = table.is_some() && tracks.changed_since(meta.base, &mut d);
            if !precise {
                d.clear_all();
                for e in al.ones() {
                    d.set_range(geo.tracks_of_extent(e));
                }
            }
            d
        });
        Ok(Disk {
            image,
            mf,
            durable: meta.clone(),
            acked: meta.base,
            meta,
            geo,
            tracks,
            al,
            journal: Journal::new(cfg.journal_max),
            journaling: false,
            open: 0,
            applied: None,
            dirty,
            precise: table.is_some(),
            created,
            source: None,
            target: None,
            stats: DiskStats::default(),
            last_error: None,
            syncs: syncs::Syncs::default(),
        })
    }

    /// Whether the image was created (all zeros) when it was opened.
    pub fn created(&self) -> bool {
        self.created
    }

    /// The geometry.
    pub fn geometry(&self) -> Geometry {
        self.geo
    }

    /// Image size.
    pub fn size(&self) -> u64 {
        self.geo.size
    }

    /// The image's path.
    pub fn path(&self) -> &Path {
        self.image.path()
    }

    /// The metadata as this process knows it. The durable record may be older (a replica's
    /// new lineage is recorded at its next clean transition), but never claims more.
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// The per-track table.
    pub fn tracks(&self) -> &Tracks {
        &self.tracks
    }

    /// Counters.
    pub fn stats(&self) -> DiskStats {
        self.stats
    }

    /// The last I/O error, if any.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// The journal limit.
    pub fn journal_max(&self) -> usize {
        self.journal.limit()
    }

    /// Read `buf.len()` bytes at `offset`.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        self.image.read_at(offset, buf)
    }

    /// The image's digest (reads the whole image).
    pub fn digest(&self) -> Result<u32, DiskError> {
        self.image.digest()
    }

    /// The CRC32 of every 4 KiB block of the image (reads the whole image; [`digest_of`] them
    /// is [`Disk::digest`]).
    pub fn image_block_crcs(&self, out: &mut Vec<u32>) -> Result<(), DiskError> {
        self.image.block_crcs(out)
    }

    pub(super) fn failed(&mut self, e: DiskError) -> DiskError {
        if matches!(e, DiskError::Io { .. }) {
            self.stats.errors += 1;
            self.last_error = Some(e.to_string());
        }
        e
    }

    /// Write `m` as the newest record (errors are counted by the public caller).
    pub(super) fn write_meta(&mut self, m: Meta) -> Result<(), DiskError> {
        debug_assert!(
            !self.record_in_flight(),
            "settle before a synchronous record"
        );
        self.mf.write(&m)?;
        self.durable = m.clone();
        self.meta = m;
        Ok(())
    }

    /// Before writes of lineage `toward` land in the image: the durable record must say it is
    /// torn toward that lineage (from what it last claimed durably, never from this process's
    /// newer view, whose base may not be on the disk yet). Writes the marker if it does not.
    pub(super) fn mark_torn(&mut self, state: State, toward: DiskGen) -> Result<(), DiskError> {
        debug_assert!(
            !self.record_in_flight(),
            "settle before a synchronous record"
        );
        if self.durable.state != State::Clean && self.durable.toward == toward {
            return Ok(());
        }
        let mut m = self.durable.clone();
        m.state = state;
        m.toward = toward;
        self.mf.write(&m)?;
        self.durable = m;
        self.meta.state = state;
        self.meta.toward = toward;
        Ok(())
    }
}

/// Status lines of the disk (both daemons show the same names).
pub fn status(disk: &Disk, kv: &mut dyn FnMut(&str, String)) {
    let st = disk.stats();
    kv("disk", disk.describe());
    kv("disk_size", disk.size().to_string());
    kv("disk_writes", st.writes.to_string());
    kv("disk_bytes", st.bytes.to_string());
    kv("disk_waits", st.waits.to_string());
    kv("disk_errors", st.errors.to_string());
    kv(
        "disk_last_error",
        disk.last_error().unwrap_or("none").to_string(),
    );
    kv("disk_journal_bytes", disk.journal().bytes().to_string());
    kv("disk_activity_log_writes", st.al_writes.to_string());
    kv("disk_hot_extents", disk.hot_extents().to_string());
    let (image, record, ring) = disk.sync_counts();
    kv("disk_image_syncs", image.to_string());
    kv("disk_record_syncs", record.to_string());
    kv(
        "disk_syncs",
        if ring {
            "io_uring (the loop never waits)".into()
        } else {
            "at once (the loop waits for each)".into()
        },
    );
    kv("disk_resyncs", st.resyncs.to_string());
    kv("disk_full_copies", st.full_copies.to_string());
    kv("disk_resync_planned_tracks", st.resync_planned.to_string());
    kv("disk_resync_tracks", st.resync_tracks.to_string());
    kv("disk_resync_bytes", st.resync_bytes.to_string());
}

#[cfg(test)]
#[path = "syncs_tests.rs"]
mod syncs_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_common;
