//! Checkpoint bookkeeping, no network I/O.
//!
//! Primary: [`Staging::capture`] copies dirty pages and state into frames laid out in a buffer
//! allocated at start-up (this is the part done while the guest is suspended); after the guest
//! has resumed (before it runs again: the daemons are single-threaded), [`Staging::put_disk`]
//! appends the epoch's disk writes from the journal as `Disk` frames (a full synchronisation:
//! the rest of the disk resynchronisation), and [`Staging::seal`] fills CRCs and MACs and
//! appends the `End` record, whose CRC covers the disk frames like the pages. While a full
//! synchronisation is pending, [`ResyncSender`] streams the disk resynchronisation's block
//! copies as `DiskSync` frames with the guest running.
//!
//! Standby: [`Receiver`] stages checkpoint N whole (pages, state and disk writes), checks it
//! against its `End` record, and only then lets [`Receiver::apply`] write it into the replica:
//! the disk first (durably), then memory. Any error before that discards the staged checkpoint:
//! memory and disk stay exactly at N-1. A disk that fails while applying leaves the replica
//! unusable rather than half-way ([`Receiver::applied`] becomes `None`).

use std::fmt;

use crate::disk::{Disk, DiskError, PIECE_OVERHEAD};

mod disk;
mod receiver;

use crate::domain::{CheckpointSource, DomainError, Replica};
use crate::PAGE_SIZE;
pub use disk::ResyncSender;
use disk::{disk_refusal, DiskRx};
use hsb_common::frame::{self, FrameError, Header, Kind, HEADER_LEN};
use hsb_common::msg::{
    self, Begin, DiskPlan, DiskWrite, End, Pages, PagesHead, State, DISK_HEAD_MAX, DISK_PIECE,
    MAX_STATE_LEN, PAGES_PER_FRAME,
};
use hsb_common::session::{self, Session};
pub use receiver::{Complete, Receiver};

/// Bytes reserved for the head of a `Pages` body (ckpt and up to 64 pfn varints, data length).
const PAGES_HEAD_MAX: usize = 10 + 1 + PAGES_PER_FRAME * 10 + 10;
/// Bytes reserved for a small record frame.
const SMALL_FRAME: usize = HEADER_LEN + 64;

/// Staging buffer size needed for a full checkpoint of `pages` pages.
pub fn staging_capacity(pages: u64) -> usize {
    let frames = (pages as usize).div_ceil(PAGES_PER_FRAME);
    frames * (HEADER_LEN + PAGES_HEAD_MAX)
        + pages as usize * PAGE_SIZE
        + 2 * SMALL_FRAME
        + HEADER_LEN
        + 16
        + MAX_STATE_LEN
}

/// What one capture did (for logs and benchmarks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CaptureStats {
    /// Checkpoint number.
    pub ckpt: u64,
    /// Full synchronisation.
    pub full: bool,
    /// Pages captured.
    pub pages: u64,
    /// Bytes staged before sealing.
    pub bytes: usize,
}

/// A checkpoint error on either side.
#[derive(Debug)]
pub enum CheckpointError {
    /// The staging buffer is too small (a configuration bug on the primary).
    StagingFull { need: usize, have: usize },
    /// The domain backend failed.
    Domain(DomainError),
    /// A frame or record was invalid.
    Frame(FrameError),
    /// The disk failed or refused (its image, or a write that must wait).
    Disk(DiskError),
}

impl fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckpointError::StagingFull { need, have } => {
                write!(f, "staging buffer of {have} bytes cannot hold {need}")
            }
            CheckpointError::Domain(e) => write!(f, "{e}"),
            CheckpointError::Frame(e) => write!(f, "{e}"),
            CheckpointError::Disk(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for CheckpointError {}

impl From<DomainError> for CheckpointError {
    fn from(e: DomainError) -> Self {
        CheckpointError::Domain(e)
    }
}

impl From<FrameError> for CheckpointError {
    fn from(e: FrameError) -> Self {
        CheckpointError::Frame(e)
    }
}

impl From<DiskError> for CheckpointError {
    fn from(e: DiskError) -> Self {
        CheckpointError::Disk(e)
    }
}

/// The primary's staging buffer: one checkpoint, laid out as ready-to-send frames.
#[derive(Debug)]
pub struct Staging {
    buf: Vec<u8>,
    len: usize,
    pfns: Vec<u64>,
    ckpt: u64,
    /// A full synchronisation being copied while the guest runs.
    precopy: Option<Precopy>,
    /// Where each staged `Pages` frame's page data starts (pre-copy only).
    frame_data: Vec<usize>,
    /// Pages dirtied during a pre-copy (bounded like `pfns`).
    dirty: Vec<u64>,
    /// Whether the staged checkpoint is a full synchronisation.
    full: bool,
    /// The domain has a disk whose part of the checkpoint is not staged yet.
    disk_due: bool,
    /// `Disk` frames staged, their data bytes, and `DiskSync` frames sent before (for `End`).
    disk_writes: u64,
    disk_bytes: u64,
    disk_synced: u64,
}

/// Progress of a pre-copied full synchronisation.
#[derive(Debug, Clone, Copy)]
struct Precopy {
    /// The epoch its `Begin` record names.
    epoch: u64,
    /// Index into `pfns` of the next page to copy.
    next: usize,
}

/// What [`Staging::finish_precopy`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrecopyStats {
    /// The checkpoint as captured (a full synchronisation).
    pub capture: CaptureStats,
    /// Pages copied again while suspended: dirtied since the pre-copy began.
    pub recopied: u64,
    /// Dirtied pages outside the full synchronisation's set, skipped (frames that were holes).
    pub skipped: u64,
}

impl Staging {
    /// Allocate for a domain of `pages` pages (all memory is allocated here, once).
    pub fn new(pages: u64) -> Staging {
        Staging::with_disk(pages, 0)
    }

    /// Allocate for a domain of `pages` pages and a disk whose checkpoints carry at most
    /// `journal_max` bytes of `Disk` frames (0: no disk).
    pub fn with_disk(pages: u64, journal_max: usize) -> Staging {
        Staging {
            full: false,
            disk_due: false,
            disk_writes: 0,
            disk_bytes: 0,
            disk_synced: 0,
            buf: vec![0u8; staging_capacity(pages) + journal_max],
            len: 0,
            pfns: Vec::with_capacity(pages as usize),
            ckpt: 0,
            precopy: None,
            frame_data: Vec::with_capacity((pages as usize).div_ceil(PAGES_PER_FRAME)),
            dirty: Vec::with_capacity(pages as usize),
        }
    }

    /// The staged bytes (after [`Staging::seal`]: the frames to send).
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Bytes allocated.
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Capture checkpoint `ckpt` from a **suspended** domain: dirty pages (all pages if `full`)
    /// and state, into unsealed frames. Only copies: CRC and MAC come later in [`Staging::seal`].
    pub fn capture(
        &mut self,
        dom: &mut dyn CheckpointSource,
        ckpt: u64,
        epoch: u64,
        full: bool,
    ) -> Result<CaptureStats, CheckpointError> {
        self.precopy = None;
        self.begin(dom, ckpt, epoch, full)?;
        for i in (0..self.pfns.len()).step_by(PAGES_PER_FRAME) {
            self.put_pages(dom, i, false)?;
        }
        self.put_state(dom, full)
    }

    /// Start a full synchronisation while the guest **runs** (pre-copy): take every page's
    /// frame number and clear the dirty log, so that [`Staging::precopy_step`] can copy the
    /// pages bit by bit and [`Staging::finish_precopy`], with the guest suspended, copies again
    /// only what was written meanwhile. The guest's pause for a full synchronisation is then
    /// the pages dirtied during the copy, not all of its memory. Frames need to come in
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
        self.precopy = Some(Precopy { epoch, next: 0 });
        Ok(())
    }

    /// Whether a pre-copy is under way (started and not finished or abandoned).
    pub fn precopying(&self) -> bool {
        self.precopy.is_some()
    }

    /// Copy up to `max_pages` more pages of the pre-copy (whole frames); returns whether every
    /// page is copied (then [`Staging::finish_precopy`] may run once the guest is suspended).
    pub fn precopy_step(
        &mut self,
        dom: &mut dyn CheckpointSource,
        max_pages: usize,
    ) -> Result<bool, CheckpointError> {
        let Some(mut pc) = self.precopy else {
            return Ok(true);
        };
        let stop = pc
            .next
            .saturating_add(max_pages.max(PAGES_PER_FRAME))
            .min(self.pfns.len());
        while pc.next < stop {
            if let Err(e) = self.put_pages(dom, pc.next, true) {
                self.precopy = None;
                return Err(e);
            }
            pc.next += PAGES_PER_FRAME;
        }
        let done = pc.next >= self.pfns.len();
        self.precopy = Some(pc);
        Ok(done)
    }

    /// Finish a pre-copy with the guest **suspended**: copy what is left, then copy again every
    /// page dirtied since [`Staging::start_precopy`] into its place, and stage the state.
    /// `ckpt` and `epoch` must be those the pre-copy began with.
    pub fn finish_precopy(
        &mut self,
        dom: &mut dyn CheckpointSource,
        ckpt: u64,
        epoch: u64,
    ) -> Result<PrecopyStats, CheckpointError> {
        let Some(pc) = self.precopy else {
            return Err(CheckpointError::Domain(DomainError {
                op: "pre-copy",
                detail: "no pre-copy under way".into(),
            }));
        };
        if (self.ckpt, pc.epoch) != (ckpt, epoch) {
            self.precopy = None;
            return Err(CheckpointError::Domain(DomainError {
                op: "pre-copy",
                detail: format!(
                    "begun for checkpoint {} in epoch {}, finished for {ckpt} in {epoch}",
                    self.ckpt, pc.epoch
                ),
            }));
        }
        debug_assert!(pc.next <= self.pfns.len() + PAGES_PER_FRAME);
        // (A failed step has ended the pre-copy already.)
        self.precopy_step(dom, usize::MAX)?;
        self.precopy = None;
        self.dirty.clear();
        dom.take_dirty(false, &mut self.dirty)?;
        let (mut recopied, mut skipped) = (0u64, 0u64);
        for k in 0..self.dirty.len() {
            let pfn = self.dirty[k];
            let Ok(i) = self.pfns.binary_search(&pfn) else {
                skipped += 1;
                continue;
            };
            let at = self.frame_data[i / PAGES_PER_FRAME] + (i % PAGES_PER_FRAME) * PAGE_SIZE;
            dom.read_pages(&[pfn], &mut self.buf[at..at + PAGE_SIZE])?;
            recopied += 1;
        }
        let capture = self.put_state(dom, true)?;
        Ok(PrecopyStats {
            capture,
            recopied,
            skipped,
        })
    }

    /// Reset and take the checkpoint's frame list (every page if `full`), then its `Begin`.
    fn begin(
        &mut self,
        dom: &mut dyn CheckpointSource,
        ckpt: u64,
        epoch: u64,
        full: bool,
    ) -> Result<(), CheckpointError> {
        self.len = 0;
        self.ckpt = ckpt;
        self.full = full;
        self.disk_due = false;
        self.pfns.clear();
        dom.take_dirty(full, &mut self.pfns)?;
        let begin = Begin {
            ckpt,
            full,
            pages: self.pfns.len() as u64,
            epoch,
        };
        self.put_record(Kind::Begin, &begin)
    }

    /// Stage the `Pages` frame holding `pfns[first..]` (at most one frame's worth), noting where
    /// its page data starts if `note`.
    fn put_pages(
        &mut self,
        dom: &mut dyn CheckpointSource,
        first: usize,
        note: bool,
    ) -> Result<(), CheckpointError> {
        let ckpt = self.ckpt;
        let end = (first + PAGES_PER_FRAME).min(self.pfns.len());
        let chunk = &self.pfns[first..end];
        let start = self.len;
        let room = self.buf.len() - start;
        let need = HEADER_LEN + PAGES_HEAD_MAX + chunk.len() * PAGE_SIZE;
        if room < need {
            return Err(CheckpointError::StagingFull {
                need: start + need,
                have: self.buf.len(),
            });
        }
        let body = &mut self.buf[start + HEADER_LEN..];
        let mut n = msg::encode(&PagesHead { ckpt, pfns: chunk }, body).map_err(|_| {
            CheckpointError::StagingFull {
                need: start + need,
                have: start,
            }
        })?;
        let data_len = chunk.len() * PAGE_SIZE;
        n += msg::write_varint(data_len as u64, &mut body[n..]);
        dom.read_pages(chunk, &mut body[n..n + data_len])?;
        if note {
            self.frame_data.push(start + HEADER_LEN + n);
        }
        n += data_len;
        Header {
            kind: Kind::Pages,
            body_len: n as u32,
            seq: 0,
        }
        .emit(&mut self.buf[start..]);
        self.len = start + HEADER_LEN + n;
        Ok(())
    }

    /// Stage the `State` record, last; the capture's figures.
    fn put_state(
        &mut self,
        dom: &mut dyn CheckpointSource,
        full: bool,
    ) -> Result<CaptureStats, CheckpointError> {
        // State: body is postcard(State { ckpt, data }) = varint ckpt, varint len, bytes.
        let mut state = [0u8; MAX_STATE_LEN];
        let slen = dom.save_state(&mut state)?;
        let st = State {
            ckpt: self.ckpt,
            data: &state[..slen],
        };
        self.put_record(Kind::State, &st)?;
        self.disk_due = dom.disk().is_some();
        Ok(CaptureStats {
            ckpt: self.ckpt,
            full,
            pages: self.pfns.len() as u64,
            bytes: self.len,
        })
    }

    fn put_record<M: serde::Serialize>(
        &mut self,
        kind: Kind,
        m: &M,
    ) -> Result<(), CheckpointError> {
        let start = self.len;
        let n = session::write_unsealed(kind, m, &mut self.buf[start..]).map_err(|_| {
            CheckpointError::StagingFull {
                need: start + SMALL_FRAME,
                have: self.buf.len(),
            }
        })?;
        self.len = start + n;
        Ok(())
    }

    /// Seal every staged frame for `session` and append the `End` record. Done after the guest
    /// has resumed: this is the CRC and MAC pass over the checkpoint.
    pub fn seal(&mut self, session: &mut Session) -> Result<usize, CheckpointError> {
        if self.disk_due {
            return Err(disk_refusal(
                "sealing a checkpoint whose disk part is not staged (put_disk)",
            ));
        }
        let mut ckpt_crc = crc32fast::Hasher::new();
        let mut total: u64 = 0;
        let mut pos = 0;
        while pos < self.len {
            let h = Header::parse(&self.buf[pos..self.len], frame::MAX_BODY_LEN)?;
            let end = pos + h.frame_len();
            let body_hash = frame::body_crc(&self.buf[pos + HEADER_LEN..end]);
            ckpt_crc.combine(&body_hash);
            total += h.body_len as u64;
            session.seal_with(&mut self.buf[pos..end], &body_hash);
            pos = end;
        }
        let end = End {
            ckpt: self.ckpt,
            pages: self.pfns.len() as u64,
            total_len: total,
            crc: ckpt_crc.finalize(),
            disk_writes: self.disk_writes,
            disk_bytes: self.disk_bytes,
            disk_synced: self.disk_synced,
        };
        let start = self.len;
        let n = session
            .write(Kind::End, &end, &mut self.buf[start..])
            .map_err(|_| CheckpointError::StagingFull {
                need: start + SMALL_FRAME,
                have: self.buf.len(),
            })?;
        self.len = start + n;
        Ok(self.len)
    }
}

#[cfg(test)]
#[path = "checkpoint_tests.rs"]
mod tests;

#[cfg(test)]
mod disk_tests;
