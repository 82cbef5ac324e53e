//! Page traces: the dirty pages of a guest's checkpoints as recorded on the Xen rig
//! (`hsb-page-trace`, `just xen-trace`), replayed through the real checkpoint path (`Staging`
//! capture and seal, `Session`, `Receiver`) to measure what page encoding saves on real memory
//! (`hsb-bench` section 11, `tests/page_trace.rs`).
//!
//! A trace keeps each page's first version and then only what changed: every page is stored as
//! a page record ([`hsb_domain::page_codec`]) against the version before it in the trace, and
//! each checkpoint as one LZ4 block when that pays. The reader rebuilds every version exactly
//! and checks it against the CRC the recorder took of the pages as read from the guest.
//!
//! ```text
//!  file       = "HSBPTRC1" block(header) block(checkpoint)*
//!  block      = len:u32le crc32(payload):u32le payload[len]
//!  header     = pfn_limit:varint ram_pages:varint period_us:varint note_len:varint note
//!  checkpoint = 0x00 body | 0x01 lz4(body)        (lz4: page_codec::compress's form)
//!  body       = interval_us:varint pause_us:varint count:varint pfn_gap:varint[count]
//!               record[count] pages_crc:u32le
//! ```
//!
//! `pfn_gap` is the first frame number, then each one's distance from the one before (frame
//! numbers strictly ascending); `pages_crc` is the CRC32 of the checkpoint's pages in that order,
//! as the guest held them. Every length is bounded before anything is allocated from it.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};

use hsb_domain::page_codec::{self, Record, MAX_RECORD, RECORD_ROOM};
use hsb_domain::PAGE_SIZE;

/// The file's first bytes.
pub const MAGIC: &[u8; 8] = b"HSBPTRC1";
/// The longest block a reader accepts (a checkpoint of a 128 MiB guest with every page raw is
/// about 129 MiB): bigger is refused, not allocated.
pub const MAX_BLOCK: usize = 160 << 20;
/// The most pages of a guest a trace may describe (4 GiB of RAM).
pub const MAX_RAM_PAGES: u64 = 1 << 20;
/// The highest frame number a trace may name (16 GiB of guest physical address space).
pub const MAX_PFN_LIMIT: u64 = 1 << 22;
/// The longest note.
const MAX_NOTE: usize = 4096;

mod replay;
pub use replay::{header_of, kept, replay, replay_file, ReplayStats, SparseReplica, TraceSource};

const PLAIN: u8 = 0;
const LZ4: u8 = 1;

/// What is wrong with a trace.
#[derive(Debug)]
pub enum TraceError {
    /// Reading or writing the file.
    Io(io::Error),
    /// Not a trace (or a version this reader does not know).
    Magic,
    /// The file ends inside a block (a recording that was stopped mid-write).
    Truncated { block: u64 },
    /// A block's CRC does not match its bytes.
    Crc { block: u64 },
    /// A block's contents are invalid.
    Bad { block: u64, why: String },
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TraceError::Io(e) => write!(f, "page trace: {e}"),
            TraceError::Magic => {
                write!(f, "not an hsb page trace (expected HSBPTRC1 at its start)")
            }
            TraceError::Truncated { block } => {
                write!(
                    f,
                    "page trace: the file ends inside block {block} (recording stopped early?)"
                )
            }
            TraceError::Crc { block } => {
                write!(f, "page trace: block {block} is corrupt (CRC mismatch)")
            }
            TraceError::Bad { block, why } => write!(f, "page trace: block {block}: {why}"),
        }
    }
}

impl std::error::Error for TraceError {}

impl From<io::Error> for TraceError {
    fn from(e: io::Error) -> Self {
        TraceError::Io(e)
    }
}

/// What a trace says about the guest it was recorded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceHeader {
    /// Frame numbers are below this (the guest's p2m size).
    pub pfn_limit: u64,
    /// The guest's RAM pages: the most one checkpoint can carry.
    pub ram_pages: u64,
    /// The checkpoint period the recorder aimed at, in microseconds.
    pub period_us: u64,
    /// Where and how it was recorded (free text).
    pub note: String,
}

/// One recorded checkpoint: the pages the guest dirtied since the one before, as it held them.
#[derive(Debug, Clone, Default)]
pub struct TraceCheckpoint {
    /// Microseconds since the previous checkpoint was taken (since log-dirty was enabled, for
    /// the first).
    pub interval_us: u64,
    /// How long the guest was suspended for this checkpoint, in microseconds.
    pub pause_us: u64,
    /// Dirty frame numbers, ascending.
    pub pfns: Vec<u64>,
    /// Their pages, 4 KiB each, in `pfns` order.
    pub data: Vec<u8>,
}

/// The latest version of each page seen, at most `max` different pages (the guest's RAM: every
/// dirty frame is a RAM frame), so that no input makes it grow past what its header declares.
#[derive(Debug, Default)]
pub struct Versions {
    pages: HashMap<u64, Box<[u8]>>,
    max: usize,
}

impl Versions {
    /// No page yet; at most `max` different ones.
    pub fn new(max: u64) -> Versions {
        Versions {
            pages: HashMap::new(),
            max: usize::try_from(max).unwrap_or(usize::MAX),
        }
    }

    /// The latest version of page `pfn`.
    pub fn get(&self, pfn: u64) -> Option<&[u8]> {
        self.pages.get(&pfn).map(|p| &p[..])
    }

    /// Pages seen.
    pub fn len(&self) -> usize {
        self.pages.len()
    }

    /// Whether no page was seen.
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    /// Every page seen, ascending.
    pub fn pfns(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.pages.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Keep `page` (4 KiB) as page `pfn`'s latest version; refused when it would be one page
    /// more than `max`.
    pub fn store(&mut self, pfn: u64, page: &[u8]) -> Result<(), String> {
        if let Some(p) = self.pages.get_mut(&pfn) {
            p.copy_from_slice(page);
            return Ok(());
        }
        if self.pages.len() >= self.max {
            return Err(format!(
                "page {pfn:#x} would be one more than the guest's {} pages",
                self.max
            ));
        }
        self.pages.insert(pfn, page.into());
        Ok(())
    }
}

fn varint(v: u64, out: &mut Vec<u8>) {
    let mut b = [0u8; 10];
    let n = hsb_common::msg::write_varint(v, &mut b);
    out.extend_from_slice(&b[..n]);
}

/// A cursor over a block's payload that turns every short read into a clear error.
struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
    block: u64,
}

impl<'a> Cursor<'a> {
    fn bad(&self, why: impl Into<String>) -> TraceError {
        TraceError::Bad {
            block: self.block,
            why: why.into(),
        }
    }

    fn varint(&mut self, what: &str) -> Result<u64, TraceError> {
        page_codec::read_varint(self.b, &mut self.pos).map_err(|e| {
            self.bad(match e {
                page_codec::CodecError::Truncated => format!("{what}: the block ends in a number"),
                _ => format!("{what}: a number longer than 64 bits"),
            })
        })
    }

    fn bytes(&mut self, n: usize, what: &str) -> Result<&'a [u8], TraceError> {
        let s = self
            .b
            .get(self.pos..self.pos.saturating_add(n))
            .ok_or_else(|| self.bad(format!("{what}: the block ends early")))?;
        self.pos += n;
        Ok(s)
    }
}

/// Writes a trace: each page against the version of it written before.
pub struct TraceWriter<W: Write> {
    out: W,
    header: TraceHeader,
    /// The last version written of every page (bounded by the guest's RAM).
    pages: Versions,
    body: Vec<u8>,
    packed: Vec<u8>,
    blocks: u64,
    /// A checkpoint failed half-written: the file and the versions kept may disagree, so
    /// nothing more is written.
    broken: bool,
    /// Bytes written so far.
    pub written: u64,
}

impl<W: Write> TraceWriter<W> {
    /// Start a trace on `out` with `header`.
    pub fn new(mut out: W, header: TraceHeader) -> Result<TraceWriter<W>, TraceError> {
        if header.ram_pages == 0
            || header.ram_pages > MAX_RAM_PAGES
            || header.pfn_limit > MAX_PFN_LIMIT
            || header.note.len() > MAX_NOTE
        {
            return Err(TraceError::Bad {
                block: 0,
                why: format!(
                    "header out of bounds: {} RAM pages (1 to {MAX_RAM_PAGES}), frames below {} (at most {MAX_PFN_LIMIT}), a note of {} bytes (at most {MAX_NOTE})",
                    header.ram_pages,
                    header.pfn_limit,
                    header.note.len()
                ),
            });
        }
        let mut h = Vec::new();
        varint(header.pfn_limit, &mut h);
        varint(header.ram_pages, &mut h);
        varint(header.period_us, &mut h);
        varint(header.note.len() as u64, &mut h);
        h.extend_from_slice(header.note.as_bytes());
        out.write_all(MAGIC)?;
        let mut w = TraceWriter {
            out,
            pages: Versions::new(header.ram_pages),
            header,
            body: Vec::new(),
            packed: Vec::new(),
            blocks: 0,
            broken: false,
            written: MAGIC.len() as u64,
        };
        w.block(&[&h])?;
        Ok(w)
    }

    fn block(&mut self, parts: &[&[u8]]) -> Result<(), TraceError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len > MAX_BLOCK {
            return Err(TraceError::Bad {
                block: self.blocks,
                why: format!("{len} bytes, more than a block may hold"),
            });
        }
        let mut crc = crc32fast::Hasher::new();
        parts.iter().for_each(|p| crc.update(p));
        self.out.write_all(&(len as u32).to_le_bytes())?;
        self.out.write_all(&crc.finalize().to_le_bytes())?;
        for p in parts {
            self.out.write_all(p)?;
        }
        self.blocks += 1;
        self.written += 8 + len as u64;
        Ok(())
    }

    /// Append one checkpoint: `pfns` ascending, `data` their pages. A checkpoint refused for
    /// what it is leaves the trace as it was; after a failed write nothing more is accepted.
    pub fn add(&mut self, c: &TraceCheckpoint) -> Result<(), TraceError> {
        if self.broken {
            return Err(TraceError::Bad {
                block: self.blocks,
                why: "an earlier checkpoint failed half-written".into(),
            });
        }
        let bad = |why: String| TraceError::Bad {
            block: self.blocks,
            why,
        };
        if c.data.len() != c.pfns.len() * PAGE_SIZE {
            return Err(bad(format!(
                "{} bytes of pages for {} frames",
                c.data.len(),
                c.pfns.len()
            )));
        }
        if c.pfns.len() as u64 > self.header.ram_pages {
            return Err(bad(format!(
                "{} pages, more than the guest's RAM",
                c.pfns.len()
            )));
        }
        if let Some(w) = c.pfns.windows(2).find(|w| w[0] >= w[1]) {
            return Err(bad(format!(
                "frame numbers not ascending: {} then {}",
                w[0], w[1]
            )));
        }
        if let Some(&p) = c.pfns.last().filter(|&&p| p >= self.header.pfn_limit) {
            return Err(bad(format!("frame {p} is past the guest's frames")));
        }
        let new = c
            .pfns
            .iter()
            .filter(|&&p| self.pages.get(p).is_none())
            .count();
        if (self.pages.len() + new) as u64 > self.header.ram_pages {
            return Err(bad(format!(
                "{new} pages never seen before, more than the guest's {} RAM pages in all",
                self.header.ram_pages
            )));
        }
        self.broken = true;
        self.body.clear();
        varint(c.interval_us, &mut self.body);
        varint(c.pause_us, &mut self.body);
        varint(c.pfns.len() as u64, &mut self.body);
        let mut last = 0;
        for &p in &c.pfns {
            varint(p - last, &mut self.body);
            last = p;
        }
        let mut rec = vec![0u8; RECORD_ROOM];
        for (&pfn, page) in c.pfns.iter().zip(c.data.chunks_exact(PAGE_SIZE)) {
            let (n, _) = page_codec::encode_page(page, self.pages.get(pfn), &mut rec);
            self.body.extend_from_slice(&rec[..n]);
            self.pages.store(pfn, page).map_err(|why| TraceError::Bad {
                block: self.blocks,
                why,
            })?;
        }
        self.body
            .extend_from_slice(&crc32fast::hash(&c.data).to_le_bytes());
        self.packed
            .resize(page_codec::compressed_room(self.body.len()), 0);
        let r = match page_codec::compress(&self.body, &mut self.packed) {
            Some(n) => {
                let packed = std::mem::take(&mut self.packed);
                let r = self.block(&[&[LZ4], &packed[..n]]);
                self.packed = packed;
                r
            }
            None => {
                let body = std::mem::take(&mut self.body);
                let r = self.block(&[&[PLAIN], &body]);
                self.body = body;
                r
            }
        };
        self.broken = r.is_err();
        r
    }

    /// Flush and return the output.
    pub fn finish(mut self) -> Result<W, TraceError> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Reads a trace back, rebuilding every page version exactly.
pub struct TraceReader<R: Read> {
    input: R,
    header: TraceHeader,
    pages: Versions,
    blocks: u64,
}

impl<R: Read> TraceReader<R> {
    /// Open a trace: its magic and header are read and checked.
    pub fn new(mut input: R) -> Result<TraceReader<R>, TraceError> {
        let mut m = [0u8; 8];
        read_full(&mut input, &mut m, 0)?;
        if &m != MAGIC {
            return Err(TraceError::Magic);
        }
        let payload = read_block(&mut input, 0)?.ok_or(TraceError::Truncated { block: 0 })?;
        let mut c = Cursor {
            b: &payload,
            pos: 0,
            block: 0,
        };
        let pfn_limit = c.varint("frame limit")?;
        let ram_pages = c.varint("RAM pages")?;
        let period_us = c.varint("period")?;
        let note_len = c.varint("note length")? as usize;
        if ram_pages == 0
            || ram_pages > MAX_RAM_PAGES
            || pfn_limit > MAX_PFN_LIMIT
            || note_len > MAX_NOTE
        {
            return Err(c.bad(format!(
                "header out of bounds: {ram_pages} RAM pages, frames below {pfn_limit}, a note of {note_len} bytes"
            )));
        }
        let note = String::from_utf8_lossy(c.bytes(note_len, "note")?).into_owned();
        Ok(TraceReader {
            input,
            header: TraceHeader {
                pfn_limit,
                ram_pages,
                period_us,
                note,
            },
            pages: Versions::new(ram_pages),
            blocks: 1,
        })
    }

    /// The trace's header.
    pub fn header(&self) -> &TraceHeader {
        &self.header
    }

    /// The next checkpoint into `c` (its vectors reused); `false` at the end of the trace.
    pub fn next_into(&mut self, c: &mut TraceCheckpoint) -> Result<bool, TraceError> {
        let block = self.blocks;
        let Some(payload) = read_block(&mut self.input, block)? else {
            return Ok(false);
        };
        self.blocks += 1;
        let bad = |why: String| TraceError::Bad { block, why };
        let (&codec, rest) = payload
            .split_first()
            .ok_or_else(|| bad("an empty checkpoint block".into()))?;
        let unpacked;
        let body: &[u8] = match codec {
            PLAIN => rest,
            LZ4 => {
                // Its length first (the varint page_codec::compress writes), bounded by the
                // longest body this guest's checkpoint can have, then exactly that allocated.
                let len = Cursor {
                    b: rest,
                    pos: 0,
                    block,
                }
                .varint("unpacked length")?;
                let max = self.max_body();
                if len > max as u64 {
                    return Err(bad(format!("{len} bytes unpacked, more than {max}")));
                }
                let mut out = vec![0u8; len as usize];
                page_codec::decompress(rest, &mut out, max)
                    .map_err(|e| bad(format!("its LZ4 block: {}", e.why())))?;
                unpacked = out;
                &unpacked
            }
            t => return Err(bad(format!("unknown block codec {t}"))),
        };
        let mut cur = Cursor {
            b: body,
            pos: 0,
            block,
        };
        c.interval_us = cur.varint("interval")?;
        c.pause_us = cur.varint("pause")?;
        let count = cur.varint("page count")?;
        if count > self.header.ram_pages {
            return Err(bad(format!(
                "{count} pages, more than the guest's {} RAM pages",
                self.header.ram_pages
            )));
        }
        c.pfns.clear();
        c.data.clear();
        let mut pfn = 0u64;
        for i in 0..count {
            let gap = cur.varint("frame number")?;
            if i > 0 && gap == 0 {
                return Err(bad("frame numbers not strictly ascending".into()));
            }
            pfn = pfn
                .checked_add(gap)
                .filter(|&p| p < self.header.pfn_limit)
                .ok_or_else(|| {
                    bad(format!(
                        "a frame past the guest's {} frames",
                        self.header.pfn_limit
                    ))
                })?;
            c.pfns.push(pfn);
        }
        c.data.resize(c.pfns.len() * PAGE_SIZE, 0);
        for (i, &pfn) in c.pfns.iter().enumerate() {
            let (rec, len) = page_codec::read_record(&cur.b[cur.pos..])
                .map_err(|e| bad(format!("page {pfn:#x}: {}", e.why())))?;
            cur.pos += len;
            let page = &mut c.data[i * PAGE_SIZE..(i + 1) * PAGE_SIZE];
            match rec {
                Record::Zero => {}
                Record::Raw(p) => page.copy_from_slice(p),
                Record::Sparse(ops) => page_codec::apply_ops(ops, page)
                    .map_err(|e| bad(format!("page {pfn:#x}: {}", e.why())))?,
                Record::Delta(ops) => {
                    let prev = self.pages.get(pfn).ok_or_else(|| {
                        bad(format!("page {pfn:#x}: a change to a page never seen"))
                    })?;
                    page.copy_from_slice(prev);
                    page_codec::apply_ops(ops, page)
                        .map_err(|e| bad(format!("page {pfn:#x}: {}", e.why())))?;
                }
            }
        }
        let crc = cur.bytes(4, "pages CRC")?;
        if cur.pos != cur.b.len() {
            return Err(bad(format!(
                "{} bytes after the pages CRC",
                cur.b.len() - cur.pos
            )));
        }
        if crc32fast::hash(&c.data).to_le_bytes() != crc {
            return Err(bad(
                "the rebuilt pages do not match the CRC the recorder took".into(),
            ));
        }
        for (&pfn, page) in c.pfns.iter().zip(c.data.chunks_exact(PAGE_SIZE)) {
            self.pages.store(pfn, page).map_err(bad)?;
        }
        Ok(true)
    }

    /// The longest body a checkpoint of this guest can have.
    fn max_body(&self) -> usize {
        (self.header.ram_pages as usize).saturating_mul(MAX_RECORD + 10) + 64
    }
}

fn read_full(input: &mut impl Read, buf: &mut [u8], block: u64) -> Result<bool, TraceError> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(TraceError::Truncated { block }),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

/// The next block's payload, `None` at a clean end of the file.
fn read_block(input: &mut impl Read, block: u64) -> Result<Option<Vec<u8>>, TraceError> {
    let mut head = [0u8; 8];
    if !read_full(input, &mut head, block)? {
        return Ok(None);
    }
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if len > MAX_BLOCK {
        return Err(TraceError::Bad {
            block,
            why: format!("a block of {len} bytes (at most {MAX_BLOCK})"),
        });
    }
    let mut payload = vec![0u8; len];
    if !read_full(input, &mut payload, block)? && len > 0 {
        return Err(TraceError::Truncated { block });
    }
    if crc32fast::hash(&payload).to_le_bytes() != head[4..8] {
        return Err(TraceError::Crc { block });
    }
    Ok(Some(payload))
}

#[cfg(test)]
#[path = "pagetrace_tests.rs"]
mod tests;
