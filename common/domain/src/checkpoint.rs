//! Checkpoint bookkeeping, no network I/O.
//!
//! Primary: [`Staging::capture`] copies dirty pages and state into frames laid out in a buffer
//! allocated at start-up (this is the part done while the guest is suspended); after the guest
//! has resumed (before it runs again: the daemons are single-threaded), [`Staging::put_disk`]
//! appends the epoch's disk writes from the journal as `Disk` frames (a full synchronisation:
//! the rest of the disk resynchronisation), and [`Staging::seal`] encodes the pages where that
//! pays (zero pages, the words that changed since the version the standby holds, LZ4:
//! [`crate::page_codec`], with the primary's [`PageCache`] of what it sent and the
//! [`CodecPolicy`] saying when), fills CRCs and MACs and appends the `End` record, whose CRC
//! covers the disk frames like the pages; or does the same a part at a time
//! ([`Staging::begin_seal`], [`Staging::seal_some`]: the same bytes) so the daemon writes the
//! sealed frames while it seals the rest. While a full synchronisation is pending,
//! [`ResyncSender`] streams the disk resynchronisation's block copies as `DiskSync` frames with
//! the guest running.
//!
//! Standby: [`Receiver`] decodes each frame's pages into staging as it comes (a delta against
//! the replica's page: the replica is still at N-1, which is what the primary encoded against),
//! stages checkpoint N whole (pages, state and disk writes), checks it against its `End` record
//! (whose CRC covers the decoded pages), and only then lets [`Receiver::apply`] write it into
//! the replica: the disk first (durably), then memory. Any error before that discards the
//! staged checkpoint: memory and disk stay exactly at N-1. A disk that fails while applying
//! leaves the replica unusable rather than half-way ([`Receiver::applied`] becomes `None`).

use hsb_common::decision::Epoch;
use std::collections::VecDeque;
use std::fmt;

use crate::codec_policy::{Choice, Codec, CodecMode, CodecPolicy};
use crate::disk::{Disk, DiskError, PIECE_OVERHEAD};

mod disk;
mod receiver;
mod seal;

use crate::domain::{CheckpointSource, DomainError, Replica};
use crate::page_cache::PageCache;
use crate::page_codec::{self, PagesEncoder, MAX_RECORD, PAGES_HEAD_MAX};
use crate::PAGE_SIZE;
pub use disk::ResyncSender;
use disk::{disk_refusal, DiskRx};
use hsb_common::frame::{self, FrameError, Header, Kind, HEADER_LEN};
use hsb_common::msg::{
    self, Begin, DiskPlan, DiskWrite, End, Pages, PagesHead, State, DISK_HEAD_MAX, DISK_PIECE,
    MAX_STATE_LEN, PAGES_LZ4, PAGES_PER_FRAME, PAGES_PLAIN, PAGES_RECORDS,
};
use hsb_common::session::{self, Session};
use hsb_common::time::Nanos;
pub use receiver::{Complete, Receiver};

/// Pages the primary's cache of sent pages holds at most by default (128 MiB); a smaller
/// domain's cache holds all of it.
pub const DEFAULT_CACHE_PAGES: u64 = 32768;
/// Checkpoints whose cost the codec rule can still be told ([`Staging::acked`]).
const PENDING_MAX: usize = 32;
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
    precopy: Option<precopy::Precopy>,
    /// Where each staged `Pages` frame's page data starts (pre-copy only).
    frame_data: Vec<usize>,
    /// Pages dirtied during a pre-copy (bounded like `pfns`).
    dirty: Vec<u64>,
    /// What the standby holds of recently sent pages.
    cache: PageCache,
    /// When to encode.
    policy: CodecPolicy,
    /// Encoding scratch, one frame's worth.
    enc: PagesEncoder,
    /// Sealed checkpoints not yet acknowledged: (checkpoint, choice, page bytes, sealed bytes,
    /// when sealing began).
    pending: VecDeque<(u64, Choice, u64, u64, Nanos)>,
    /// A seal under way ([`Staging::begin_seal`]).
    sealing: Option<seal::Sealing>,
    /// The staged checkpoint is not sealed yet (nor being sealed).
    unsealed: bool,
    /// Bytes at the start of the buffer that are sealed: ready to send.
    ready: usize,
    /// The last seal's figures.
    sealed: SealStats,
    /// Since start: checkpoints sealed encoded, bytes of pages sealed, bytes sealed.
    totals: [u64; 3],
    /// When the last ack came ([`Staging::acked`]).
    last_ack: Option<Nanos>,
    /// Whether the staged checkpoint is a full synchronisation.
    full: bool,
    /// The domain has a disk whose part of the checkpoint is not staged yet.
    disk_due: bool,
    /// `Disk` frames staged, their data bytes, and `DiskSync` frames sent before (for `End`).
    disk_writes: u64,
    disk_bytes: u64,
    disk_synced: u64,
}

/// What one [`Staging::seal`] did (for logs and benchmarks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SealStats {
    /// Checkpoint number.
    pub ckpt: u64,
    /// Whether its pages were encoded.
    pub encoded: bool,
    /// Bytes of pages captured.
    pub page_bytes: u64,
    /// Bytes of the sealed checkpoint (every frame, the `End` record included).
    pub wire_bytes: u64,
    /// Pages sent as zero-page, raw, delta and sparse records (plain pages count as raw).
    pub records: [u64; 4],
    /// `Pages` frames sent as records, and of those compressed with LZ4.
    pub frames_encoded: u64,
    /// See `frames_encoded`.
    pub frames_lz4: u64,
}

impl Staging {
    /// Allocate for a domain of `pages` pages (all memory is allocated here, once), encoding
    /// when it pays, with a cache of up to [`DEFAULT_CACHE_PAGES`].
    pub fn new(pages: u64) -> Staging {
        Staging::with_codec(pages, CodecMode::Auto, pages.min(DEFAULT_CACHE_PAGES))
    }

    /// Allocate for a domain of `pages` pages and a disk whose checkpoints carry at most
    /// `journal_max` bytes of `Disk` frames, encoding when it pays.
    pub fn with_disk(pages: u64, journal_max: usize) -> Staging {
        Staging::new(pages).with_journal(journal_max)
    }

    /// Room for a disk whose checkpoints carry at most `journal_max` bytes of `Disk` frames
    /// (allocated now).
    pub fn with_journal(mut self, journal_max: usize) -> Staging {
        self.buf.resize(self.buf.len() + journal_max, 0);
        self
    }

    /// Allocate for a domain of `pages` pages, encoding as `mode` says with a cache of
    /// `cache_pages` sent pages (0: no deltas, only zero and sparse pages and LZ4).
    pub fn with_codec(pages: u64, mode: CodecMode, cache_pages: u64) -> Staging {
        Staging {
            full: false,
            disk_due: false,
            disk_writes: 0,
            disk_bytes: 0,
            disk_synced: 0,
            buf: vec![0u8; staging_capacity(pages)],
            len: 0,
            pfns: Vec::with_capacity(pages as usize),
            ckpt: 0,
            precopy: None,
            frame_data: Vec::with_capacity((pages as usize).div_ceil(PAGES_PER_FRAME)),
            dirty: Vec::with_capacity(pages as usize),
            cache: PageCache::new(cache_pages as usize),
            policy: CodecPolicy::new(mode),
            enc: PagesEncoder::new(),
            pending: VecDeque::with_capacity(PENDING_MAX),
            sealing: None,
            unsealed: false,
            ready: 0,
            sealed: SealStats::default(),
            totals: [0; 3],
            last_ack: None,
        }
    }

    /// Status lines of the encoding: setting, checkpoints encoded, bytes of pages against
    /// bytes sealed since start, and what the rule measured.
    pub fn codec_status(&self) -> Vec<(&'static str, String)> {
        let mode = CodecMode::WORDS[match self.policy.mode() {
            CodecMode::Auto => 0,
            CodecMode::Always => 1,
            CodecMode::Never => 2,
        }];
        let (plain, enc) = self.policy.costs_ns_per_kib();
        let cost = |c: Option<f64>| c.map_or("-".to_string(), |v| format!("{v:.0}"));
        vec![
            ("encode", mode.to_string()),
            ("encode_cache_pages", self.cache.capacity().to_string()),
            ("checkpoints_encoded", self.totals[0].to_string()),
            ("page_bytes_sealed", self.totals[1].to_string()),
            ("bytes_sealed", self.totals[2].to_string()),
            ("encode_cost_plain_ns_per_kib", cost(plain)),
            ("encode_cost_encoded_ns_per_kib", cost(enc)),
            (
                "encoded_size_ratio",
                self.policy
                    .encoded_ratio()
                    .map_or("-".to_string(), |r| format!("{r:.3}")),
            ),
        ]
    }

    /// Encode as `mode` says from the next checkpoint on (what the rule measured is dropped).
    pub fn set_codec_mode(&mut self, mode: CodecMode) {
        self.policy = CodecPolicy::new(mode);
        self.pending.clear();
    }

    /// The encoding rule (its setting and what it measured).
    pub fn policy(&self) -> &CodecPolicy {
        &self.policy
    }

    /// Bytes allocated for the cache of sent pages.
    pub fn cache_bytes(&self) -> usize {
        self.cache.bytes()
    }

    /// What the last [`Staging::seal`] did.
    pub fn last_seal(&self) -> SealStats {
        self.sealed
    }

    /// The seal under way, or else the last sealed checkpoint's, began at `at` (the caller's
    /// clock: this module reads none).
    pub fn sealing_began(&mut self, at: Nanos) {
        if let Some(s) = self.sealing.as_mut() {
            s.began = at;
        } else if let Some(p) = self.pending.back_mut() {
            p.4 = at;
        }
    }

    /// Checkpoint `ckpt` was acknowledged at `now` (the clock of [`Staging::sealing_began`]):
    /// what it cost goes to the encoding rule. Earlier checkpoints not reported are dropped.
    ///
    /// Its cost is the time it had the pipeline to itself: from the later of its sealing and
    /// the previous ack, to its ack. Time spent queued behind earlier checkpoints is theirs
    /// (on a saturated link a checkpoint's whole latency would charge it with the bytes of the
    /// ones before it, whatever their codec).
    pub fn acked(&mut self, ckpt: u64, now: Nanos) {
        while let Some(&(n, choice, bytes, wire, began)) = self.pending.front() {
            if n > ckpt {
                break;
            }
            self.pending.pop_front();
            if n == ckpt {
                let from = self.last_ack.map_or(began, |a| a.max(began));
                let ns = now.since(from).as_nanos().min(u64::MAX as u128) as u64;
                self.policy.observe(choice, bytes, wire, ns);
            }
        }
        self.last_ack = Some(now);
    }

    /// The sealed bytes: once a seal is complete, the frames to send; while one goes on
    /// ([`Staging::seal_some`]), those sealed so far, which never change again.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.ready]
    }

    /// Bytes allocated.
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Capture checkpoint `ckpt` from a **suspended** domain: dirty pages (all pages if `full`)
    /// and state, into unsealed frames. Only copies: CRC and MAC come later in [`Staging::seal`]
    /// (or [`Staging::begin_seal`] and [`Staging::seal_some`]).
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

    /// Reset and take the checkpoint's frame list (every page if `full`), then its `Begin`.
    fn begin(
        &mut self,
        dom: &mut dyn CheckpointSource,
        ckpt: u64,
        epoch: u64,
        full: bool,
    ) -> Result<(), CheckpointError> {
        self.len = 0;
        self.ready = 0;
        self.sealing = None;
        self.unsealed = true;
        self.ckpt = ckpt;
        self.full = full;
        self.disk_due = false;
        self.pfns.clear();
        if full {
            // The standby's replica is rewritten whole: nothing it held is a reference now.
            self.cache.clear();
            self.pending.clear();
            self.last_ack = None;
        }
        dom.take_dirty(full, &mut self.pfns)?;
        let begin = Begin {
            ckpt,
            full,
            pages: self.pfns.len() as u64,
            epoch: Epoch(epoch),
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
        let head = PagesHead {
            ckpt,
            pfns: chunk,
            codec: PAGES_PLAIN,
        };
        let mut n = msg::encode(&head, body).map_err(|_| CheckpointError::StagingFull {
            need: start + need,
            have: start,
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
}

#[path = "checkpoint_precopy.rs"]
mod precopy;
pub use precopy::{precopy_again, PrecopyStats, PRECOPY_MAX_ROUNDS, PRECOPY_SETTLED_PAGES};

#[cfg(test)]
#[path = "checkpoint_precopy_tests.rs"]
mod precopy_tests;

#[cfg(test)]
#[path = "checkpoint_tests.rs"]
mod tests;

#[cfg(test)]
mod disk_tests;

#[cfg(test)]
mod seal_tests;
