//! A trace replayed through the real checkpoint path: each recorded checkpoint is captured by
//! `Staging` from a [`TraceSource`], sealed for a `Session` (encoded or plain as the mode
//! says), opened by the other end's `Session`, staged and decoded by a `Receiver` and applied
//! to a [`SparseReplica`], which must then hold exactly the pages the guest held.
//!
//! The trace's first checkpoint is sent as the full synchronisation (the replica starts from
//! it, and the primary's page cache is empty after it, as after any full synchronisation); the
//! bytes of every later checkpoint are counted.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use hsb_common::frame::{Header, HEADER_LEN, MAX_BODY_LEN};
use hsb_common::key::ClusterKey;
use hsb_common::session::{Session, Side};
use hsb_domain::checkpoint::{Receiver, Staging};
use hsb_domain::codec_policy::CodecMode;
use hsb_domain::domain::{CheckpointSource, DomainError, Replica};
use hsb_domain::PAGE_SIZE;

use super::{TraceCheckpoint, TraceError, TraceHeader, TraceReader, Versions};

/// The guest of a trace, at the checkpoint being replayed: every page version the trace has
/// shown so far.
#[derive(Debug)]
pub struct TraceSource {
    pfn_limit: u64,
    ram_pages: u64,
    pages: Versions,
    /// The checkpoint's dirty frames (what `take_dirty` hands out).
    dirty: Vec<u64>,
    checkpoints: u64,
}

fn refused(op: &'static str, detail: String) -> DomainError {
    DomainError { op, detail }
}

impl TraceSource {
    /// A guest of `pfn_limit` frames and `ram_pages` pages of RAM, no page seen yet.
    pub fn new(pfn_limit: u64, ram_pages: u64) -> TraceSource {
        TraceSource {
            pfn_limit,
            ram_pages,
            pages: Versions::new(ram_pages),
            dirty: Vec::new(),
            checkpoints: 0,
        }
    }

    /// The guest as of checkpoint `c`: its pages written, its frames the dirty ones.
    pub fn advance(&mut self, c: &TraceCheckpoint) -> Result<(), String> {
        for (&pfn, page) in c.pfns.iter().zip(c.data.chunks_exact(PAGE_SIZE)) {
            self.pages.store(pfn, page)?;
        }
        self.dirty.clone_from(&c.pfns);
        Ok(())
    }

    /// The current version of page `pfn`, if the trace has shown it.
    pub fn page(&self, pfn: u64) -> Option<&[u8]> {
        self.pages.get(pfn)
    }
}

impl CheckpointSource for TraceSource {
    fn pages(&self) -> u64 {
        self.pfn_limit
    }

    fn max_pages(&self) -> u64 {
        self.ram_pages
    }

    fn suspend(&mut self) -> Result<(), DomainError> {
        Ok(())
    }

    fn resume(&mut self) -> Result<(), DomainError> {
        Ok(())
    }

    /// A full synchronisation carries every page seen so far; a checkpoint, its dirty ones.
    fn take_dirty(&mut self, full: bool, out: &mut Vec<u64>) -> Result<(), DomainError> {
        if full {
            out.extend_from_slice(&self.pages.pfns());
        } else {
            out.extend_from_slice(&self.dirty);
        }
        Ok(())
    }

    fn read_pages(&mut self, pfns: &[u64], dst: &mut [u8]) -> Result<(), DomainError> {
        for (&pfn, d) in pfns.iter().zip(dst.chunks_exact_mut(PAGE_SIZE)) {
            let p = self
                .pages
                .get(pfn)
                .ok_or_else(|| refused("read_pages", format!("frame {pfn:#x} not in the trace")))?;
            d.copy_from_slice(p);
        }
        Ok(())
    }

    fn save_state(&mut self, dst: &mut [u8]) -> Result<usize, DomainError> {
        self.checkpoints += 1;
        let s = self.checkpoints.to_le_bytes();
        dst.get_mut(..s.len())
            .ok_or_else(|| refused("save_state", "buffer too small".into()))?
            .copy_from_slice(&s);
        Ok(s.len())
    }
}

/// A replica that holds only the pages written to it (a trace's guest is mostly never
/// dirtied); a page never written reads as zeros.
#[derive(Debug)]
pub struct SparseReplica {
    pfn_limit: u64,
    pages: Versions,
    state: Vec<u8>,
}

impl SparseReplica {
    /// An empty replica of `pfn_limit` frames, at most `ram_pages` of them written.
    pub fn new(pfn_limit: u64, ram_pages: u64) -> SparseReplica {
        SparseReplica {
            pfn_limit,
            pages: Versions::new(ram_pages),
            state: Vec::new(),
        }
    }

    /// Page `pfn` as the replica holds it.
    pub fn page(&self, pfn: u64) -> Option<&[u8]> {
        self.pages.get(pfn)
    }
}

impl Replica for SparseReplica {
    fn pages(&self) -> u64 {
        self.pfn_limit
    }

    fn write_pages(&mut self, pfns: &[u64], data: &[u8]) -> Result<(), DomainError> {
        for (&pfn, page) in pfns.iter().zip(data.chunks_exact(PAGE_SIZE)) {
            if pfn >= self.pfn_limit {
                return Err(refused(
                    "write_pages",
                    format!("frame {pfn:#x} out of range"),
                ));
            }
            self.pages
                .store(pfn, page)
                .map_err(|e| refused("write_pages", e))?;
        }
        Ok(())
    }

    fn read_back(&mut self, pfns: &[u64], dst: &mut [u8]) -> Result<(), DomainError> {
        for (&pfn, d) in pfns.iter().zip(dst.chunks_exact_mut(PAGE_SIZE)) {
            match self.pages.get(pfn) {
                Some(p) => d.copy_from_slice(p),
                None => d.fill(0),
            }
        }
        Ok(())
    }

    fn load_state(&mut self, state: &[u8]) -> Result<(), DomainError> {
        self.state = state.to_vec();
        Ok(())
    }
}

/// What a replay sent and checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayStats {
    /// Checkpoints in the trace (the first one is the full synchronisation).
    pub checkpoints: u64,
    /// Dirty pages in the checkpoints after the first.
    pub pages: u64,
    /// Their bytes as pages (4 KiB each).
    pub page_bytes: u64,
    /// Bytes on the wire for the checkpoints after the first: every frame, headers, CRC and
    /// MAC included.
    pub wire_bytes: u64,
    /// Bytes on the wire of the full synchronisation.
    pub full_wire_bytes: u64,
    /// Microseconds the recorded checkpoints after the first spanned.
    pub span_us: u64,
    /// Pages checked equal on the replica after their checkpoint was applied.
    pub pages_checked: u64,
    /// Checkpoints the encoding rule encoded, after the first.
    pub encoded: u64,
}

/// Replay the trace read from `input` with page encoding `mode` and a page cache of
/// `cache_pages` (0: the default of a guest this size, as the primary has it); every page of
/// every checkpoint is checked on the replica after it is applied.
pub fn replay(input: impl Read, mode: CodecMode, cache_pages: u64) -> Result<ReplayStats, String> {
    let mut tr = TraceReader::new(input).map_err(|e| e.to_string())?;
    let h = tr.header().clone();
    let mut src = TraceSource::new(h.pfn_limit, h.ram_pages);
    // As the primary has it: staging for the guest's RAM, the cache at most that.
    let cache = if cache_pages == 0 {
        hsb_domain::checkpoint::DEFAULT_CACHE_PAGES
    } else {
        cache_pages
    };
    let mut st = Staging::with_codec(h.ram_pages, mode, cache.min(h.ram_pages));
    let mut rx = Receiver::for_layout(h.pfn_limit, h.ram_pages, false);
    let mut replica = SparseReplica::new(h.pfn_limit, h.ram_pages);
    let k = ClusterKey::from_bytes([0x5a; 32]);
    let (ni, nr) = ([1u8; 16], [2u8; 16]);
    let mut stx = Session::new(&k, &ni, &nr, Side::Initiator);
    let mut srx = Session::new(&k, &ni, &nr, Side::Responder);
    let mut c = TraceCheckpoint::default();
    let mut stats = ReplayStats::default();
    while tr
        .next_into(&mut c)
        .map_err(|e: TraceError| e.to_string())?
    {
        src.advance(&c)?;
        let ckpt = stats.checkpoints + 1;
        let full = ckpt == 1;
        st.capture(&mut src, ckpt, 1, full)
            .map_err(|e| format!("capture of checkpoint {ckpt}: {e}"))?;
        let len = st
            .seal(&mut stx)
            .map_err(|e| format!("seal of checkpoint {ckpt}: {e}"))?;
        let encoded = st.last_seal().encoded;
        let bytes = st.bytes();
        let mut pos = 0;
        let mut applied = false;
        while pos < bytes.len() {
            let hd = Header::parse(&bytes[pos..], MAX_BODY_LEN)
                .map_err(|e| format!("checkpoint {ckpt}: a frame: {e}"))?;
            let f = &bytes[pos..pos + hd.frame_len()];
            let hash = srx
                .open(f)
                .map_err(|e| format!("checkpoint {ckpt}: open: {e}"))?;
            if rx
                .on_frame(hd.kind, &f[HEADER_LEN..], &hash, &mut replica)
                .map_err(|e| format!("checkpoint {ckpt}: receive: {e}"))?
                .is_some()
            {
                rx.apply(&mut replica)
                    .map_err(|e| format!("checkpoint {ckpt}: apply: {e}"))?;
                applied = true;
            }
            pos += hd.frame_len();
        }
        if !applied {
            return Err(format!("checkpoint {ckpt} was not completed by its frames"));
        }
        st.acked(ckpt, hsb_common::time::Nanos(ckpt * 1_000_000));
        let pfns = if full {
            src.pages.pfns()
        } else {
            c.pfns.clone()
        };
        let checked = pfns.len();
        for pfn in pfns {
            if replica.page(pfn) != src.page(pfn) {
                return Err(format!(
                    "checkpoint {ckpt}: page {pfn:#x} on the replica differs from the guest's"
                ));
            }
        }
        stats.pages_checked += checked as u64;
        stats.checkpoints = ckpt;
        if full {
            stats.full_wire_bytes = len as u64;
        } else {
            stats.pages += c.pfns.len() as u64;
            stats.page_bytes += (c.pfns.len() * PAGE_SIZE) as u64;
            stats.wire_bytes += len as u64;
            stats.span_us += c.interval_us;
            stats.encoded += u64::from(encoded);
        }
    }
    if stats.checkpoints < 2 {
        return Err(format!(
            "the trace has {} checkpoints: at least 2 are needed (the first is the full synchronisation)",
            stats.checkpoints
        ));
    }
    Ok(stats)
}

/// The traces kept as test data (`tests/data/*.hsbtrace`), in name order.
pub fn kept() -> Result<Vec<PathBuf>, String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "hsbtrace"))
        .collect();
    v.sort();
    Ok(v)
}

fn open(path: &Path) -> Result<BufReader<File>, String> {
    File::open(path)
        .map(BufReader::new)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The header of the trace in file `path`; an error names the file.
pub fn header_of(path: &Path) -> Result<TraceHeader, String> {
    TraceReader::new(open(path)?)
        .map(|r| r.header().clone())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// [`replay`] of the trace in file `path`; an error names the file.
pub fn replay_file(path: &Path, mode: CodecMode, cache_pages: u64) -> Result<ReplayStats, String> {
    replay(open(path)?, mode, cache_pages).map_err(|e| format!("{}: {e}", path.display()))
}
