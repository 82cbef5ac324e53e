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
//! (the disk first, `fdatasync`, then the pages), before `ack(N)`. Until `End` checks out
//! nothing touches the image, so a torn, corrupt or refused checkpoint leaves memory and disk
//! at N-1. A replica whose image fails while applying is not acknowledged and can no longer be
//! activated (its disk is neither N-1 nor N); the next session resynchronises it.
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
//! primary ([`Report::dirty`]). Anything else (another lineage, a torn disk of an ancestor
//! lineage, X older than what the table knows) gets a full copy.
//!
//! **A primary's unacknowledged writes survive its crash** through the **activity log**: the
//! set of 4 MiB extents it may have written since its last acknowledged checkpoint, persisted
//! in the metadata file *before* the first write to an extent not already in it (as DRBD's
//! activity log). After a crash the old primary reports those extents as dirty, so the tracks
//! it wrote in epochs never acknowledged are copied back from the new primary. Extents leave the
//! log once every write to them is acknowledged and durable ([`Disk::tick`], which syncs the
//! image first). At a clean step-down or hand-over the exact table is persisted instead
//! ([`Disk::persist_table`]): the report is then per track.
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

pub mod image;
pub mod journal;
pub mod meta;
pub mod tracks;

use std::fmt;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use hsb_common::msg::{DiskGen, DiskHello, DiskPlan, Fork, DISK_HISTORY, DISK_PIECE};

pub use image::{digest_of, Image};
pub use journal::{Journal, PIECE_OVERHEAD};
pub use meta::{Meta, MetaFile, Role, State, BLANK};
pub use tracks::{Bitmap, Geometry, Tracks, BLOCK};

/// Smallest journal limit (a checkpoint must hold a 1 MiB write and some more).
pub const MIN_JOURNAL: usize = 2 << 20;
/// Rounds of a resynchronisation copy before guest writes wait for it to converge.
pub const RESYNC_ROUNDS: u32 = 8;
/// Applied checkpoints between two refreshes of a replica's metadata record.
pub const META_REFRESH: u64 = 64;

/// A disk failure or refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskError {
    /// An I/O error on the image or a file beside it.
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The error's kind.
        kind: std::io::ErrorKind,
        /// The error.
        detail: String,
    },
    /// Outside the image.
    Bounds {
        /// Offset.
        offset: u64,
        /// Length.
        len: u64,
        /// Image size.
        size: u64,
    },
    /// The open epoch's journal cannot take this write now: end the epoch or wait.
    JournalFull {
        /// Journal bytes the write needs.
        need: usize,
        /// Journal bytes left.
        room: usize,
    },
    /// Larger than the journal can ever hold.
    TooLarge {
        /// Write length.
        len: usize,
        /// Journal limit.
        max: usize,
    },
    /// A resynchronisation is catching up with the guest: writes wait.
    Throttled,
    /// A configuration, metadata or protocol problem.
    Invalid(String),
}

impl DiskError {
    /// Whether the write may succeed later without anything being fixed (it waits).
    pub fn is_wait(&self) -> bool {
        matches!(self, DiskError::JournalFull { .. } | DiskError::Throttled)
    }

    /// Whether the image (or its file system) is out of space.
    pub fn is_out_of_space(&self) -> bool {
        match self {
            DiskError::Io { kind, detail, .. } => {
                *kind == std::io::ErrorKind::StorageFull
                    || *kind == std::io::ErrorKind::FileTooLarge
                    || detail.contains("No space left")
                    || detail.contains("File too large")
            }
            _ => false,
        }
    }
}

impl fmt::Display for DiskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiskError::Io {
                op, path, detail, ..
            } => {
                write!(f, "disk image {}: {op}: {detail}", path.display())?;
                if self.is_out_of_space() {
                    write!(f, " (out of space)")?;
                }
                Ok(())
            }
            DiskError::Bounds { offset, len, size } => write!(
                f,
                "disk write of {len} bytes at {offset} is beyond the image's {size} bytes"
            ),
            DiskError::JournalFull { need, room } => write!(
                f,
                "the epoch's disk journal is full ({need} bytes needed, {room} left)"
            ),
            DiskError::TooLarge { len, max } => write!(
                f,
                "a disk write of {len} bytes cannot fit a checkpoint (disk.journal_max is {max})"
            ),
            DiskError::Throttled => {
                write!(f, "disk writes wait for the resynchronisation to converge")
            }
            DiskError::Invalid(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for DiskError {}

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
    /// Guest writes refused to wait (journal full, resynchronisation catching up).
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
    /// It may hold writes of later checkpoints of `gen` too.
    pub torn: bool,
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
    since_refresh: u64,
    /// The dirty tracks a disk that was a primary's reports.
    dirty: Option<Bitmap>,
    /// The track table was read back from the metadata file (exact, not from the horizon).
    precise: bool,
    source: Option<Source>,
    target: Option<Target>,
    stats: DiskStats,
    last_error: Option<String>,
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
            acked: meta.base,
            meta,
            geo,
            tracks,
            al,
            journal: Journal::new(cfg.journal_max),
            journaling: false,
            open: 0,
            applied: None,
            since_refresh: 0,
            dirty,
            precise: table.is_some(),
            source: None,
            target: None,
            stats: DiskStats::default(),
            last_error: None,
        })
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

    /// The metadata as last written.
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

    fn failed(&mut self, e: DiskError) -> DiskError {
        if matches!(e, DiskError::Io { .. }) {
            self.stats.errors += 1;
            self.last_error = Some(e.to_string());
        }
        e
    }

    /// Write `m` as the newest record (errors are counted by the public caller).
    fn write_meta(&mut self, m: Meta) -> Result<(), DiskError> {
        self.mf.write(&m)?;
        self.meta = m;
        Ok(())
    }

    // ---------------------------------------------------------------- the guest side

    /// Become the primary's disk, whose guest writes belong to checkpoint `first_ckpt` on.
    /// A primary's disk continues its lineage; a replica's data forks (it serves now, its
    /// writes must never pass for later checkpoints of the lineage it came from); a torn or
    /// unknown disk starts a lineage of its own.
    pub fn start_primary(&mut self, first_ckpt: u64) -> Result<(), DiskError> {
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
        if m != self.meta {
            self.write_meta(m)?;
        }
        Ok(())
    }

    /// Fork the lineage at checkpoint `at` (the disk holds exactly `at`): a new lineage whose
    /// history says so, written durably. The disk becomes a primary's.
    fn fork(&mut self, at: u64) -> Result<(), DiskError> {
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
            role: Role::Primary,
            al: Vec::new(),
        };
        self.write_meta(m)?;
        self.al.clear_all();
        Ok(())
    }

    /// A guest write of `data` at `offset`. Completes once it is in the image (durable too if
    /// `fua`), is in the open epoch's journal while a standby is being fed, and is covered by
    /// the activity log. A write that must wait ([`DiskError::is_wait`]) changes nothing.
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
        if let Err(e) = self.heat(offset, len) {
            return Err(self.failed(e));
        }
        if let Err(e) = self.image.write_at(offset, data) {
            return Err(self.failed(e));
        }
        if fua {
            if let Err(e) = self.image.sync() {
                return Err(self.failed(e));
            }
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
        Ok(())
    }

    /// Make every guest write so far durable (a guest's flush).
    pub fn flush(&mut self) -> Result<(), DiskError> {
        self.image.sync().map_err(|e| self.failed(e))
    }

    /// Persist the activity log with the extents of this write in it, if they are not.
    fn heat(&mut self, offset: u64, len: u64) -> Result<(), DiskError> {
        if self.meta.role != Role::Primary {
            return Ok(());
        }
        let ex = self.geo.extents_of(offset, len);
        if ex.clone().all(|e| self.al.get(e)) {
            return Ok(());
        }
        let mut al = self.al.clone();
        al.set_range(ex);
        let mut m = self.meta.clone();
        m.al = al.words().to_vec();
        self.write_meta(m)?;
        self.al = al;
        self.stats.al_writes += 1;
        Ok(())
    }

    /// Periodic upkeep of a primary's disk (about once a second): extents whose every write
    /// is acknowledged leave the activity log, after an `fdatasync` of the image (only then is
    /// their content the acknowledged one even across a power loss), and `base` moves up to the
    /// acknowledged checkpoint. Does nothing when nothing would leave.
    pub fn tick(&mut self) -> Result<(), DiskError> {
        if self.meta.role != Role::Primary {
            return Ok(());
        }
        let mut al = self.al.clone();
        let mut cooled = 0;
        for e in self.al.ones() {
            if self.tracks.extent_lw(e) <= self.acked {
                al.clear(e);
                cooled += 1;
            }
        }
        if cooled == 0 {
            return Ok(());
        }
        if let Err(e) = self.image.sync() {
            return Err(self.failed(e));
        }
        let mut m = self.meta.clone();
        m.al = al.words().to_vec();
        m.base = self.acked;
        if let Err(e) = self.write_meta(m) {
            return Err(self.failed(e));
        }
        self.al = al;
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

    /// Whether a write of `len` bytes would be taken now.
    pub fn can_write(&self, len: usize) -> bool {
        !self.source.as_ref().is_some_and(|s| s.throttled)
            && (!self.journaling || self.journal.check(len).is_ok())
    }

    // ------------------------------------------------------------ resynchronisation (primary)

    /// Plan the resynchronisation of a standby that reported `r`, to be completed by the full
    /// synchronisation `ckpt`; the copy starts at once ([`Disk::resync_next`]).
    pub fn plan(&mut self, r: &Report, ckpt: u64) -> DiskPlan {
        let known = r.base >= self.tracks.horizon()
            && (r.gen == self.meta.gen
                || (!r.torn
                    && self
                        .meta
                        .history
                        .iter()
                        .any(|f| f.gen == r.gen && r.base <= f.at)));
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

    // ------------------------------------------------------------------- the replica side

    /// What this disk says to a primary.
    pub fn report(&self) -> Report {
        match (self.applied, &self.target) {
            (Some(a), None) => Report {
                gen: self.meta.gen,
                base: a,
                torn: false,
                dirty: None,
            },
            _ => Report {
                gen: self.meta.gen,
                base: self.meta.base,
                torn: self.meta.state != State::Clean,
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
            let mut m = self.meta.clone();
            m.state = State::Resyncing;
            if let Err(e) = self.write_meta(m) {
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

    /// Apply checkpoint `ckpt`'s writes, in order, durably; with a resynchronisation under way,
    /// its copies too, and the disk joins the plan's lineage at `ckpt`. After an error the
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
        let geo = self.geo;
        if let Some(t) = self.target.as_ref() {
            if t.plan.ckpt != ckpt {
                return Err(DiskError::Invalid(format!(
                    "checkpoint {ckpt} does not complete the resynchronisation planned for {}",
                    t.plan.ckpt
                )));
            }
            if t.staged.is_some() {
                let mut m = self.meta.clone();
                m.state = State::Applying;
                self.write_meta(m)?;
                self.copy_staged()?;
            }
        } else if self.applied != ckpt.checked_sub(1) {
            return Err(DiskError::Invalid(format!(
                "checkpoint {ckpt} applies to the disk at checkpoint {}, which it is not",
                ckpt.saturating_sub(1)
            )));
        } else if self.meta.state == State::Clean {
            let mut m = self.meta.clone();
            m.state = State::Applying;
            self.write_meta(m)?;
        }
        let mut any = self.target.is_some();
        for (off, data) in writes {
            self.image.write_at(off, data)?;
            if !data.is_empty() {
                let tr = geo.tracks_of(off, data.len() as u64);
                match self.target.as_mut() {
                    Some(t) => t.received.set_range(tr),
                    None => self.tracks.mark(tr, ckpt),
                }
            }
            self.stats.applied_writes += 1;
            self.stats.applied_bytes += data.len() as u64;
            any = true;
        }
        if any {
            self.image.sync()?;
        }
        if let Some(t) = self.target.take() {
            if t.plan.full {
                self.tracks.reset(0);
                self.tracks.mark(0..geo.tracks, ckpt);
            } else {
                self.tracks.reset(t.base);
                for tr in t.received.ones() {
                    self.tracks.mark(tr..tr + 1, ckpt);
                }
            }
            let m = Meta {
                size: geo.size,
                gen: t.plan.gen,
                history: t.plan.history.iter().copied().collect(),
                base: ckpt,
                state: State::Clean,
                role: Role::Replica,
                al: Vec::new(),
            };
            self.write_meta(m)?;
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
            self.since_refresh = 0;
        } else {
            self.since_refresh += 1;
            if self.since_refresh >= META_REFRESH && self.meta.state == State::Applying {
                let mut m = self.meta.clone();
                m.base = ckpt;
                self.write_meta(m)?;
                self.since_refresh = 0;
            }
        }
        self.applied = Some(ckpt);
        Ok(())
    }

    /// Copy the staged resynchronisation tracks into the image.
    fn copy_staged(&mut self) -> Result<(), DiskError> {
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
        let mut m = self.meta.clone();
        match m.role {
            Role::Replica => {
                if let (Some(a), None) = (self.applied, &self.target) {
                    m.base = a;
                    m.state = State::Clean;
                }
            }
            Role::Primary => {
                if let Err(e) = self.image.sync() {
                    return Err(self.failed(e));
                }
                m.base = self.acked;
            }
        }
        if let Err(e) = self
            .mf
            .write_with_table(&m, self.tracks.horizon(), self.tracks.values())
        {
            return Err(self.failed(e));
        }
        self.meta = m;
        Ok(())
    }

    /// Swap the image for a read-only view of it: every write fails (tests of a failing image).
    #[cfg(test)]
    pub(crate) fn make_read_only_for_test(&mut self) -> Result<(), DiskError> {
        self.image = Image::open_read_only(self.image.path())?;
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

/// Take the next run of set bits at or after `from` (contiguous, at most one piece's worth of
/// tracks), clearing them: first track and count.
fn take_run(b: &mut Bitmap, from: u64, geo: Geometry) -> Option<(u64, u64)> {
    take_run_max(b, from, (DISK_PIECE as u64 / geo.track()).max(1))
}

fn take_run_max(b: &mut Bitmap, from: u64, max: u64) -> Option<(u64, u64)> {
    let t = b.next_set(from)?;
    let mut n = 0;
    while n < max && b.get(t + n) {
        b.clear(t + n);
        n += 1;
    }
    Some((t, n))
}

#[cfg(test)]
mod tests;
