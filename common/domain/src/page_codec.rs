//! Page records: how a dirty page travels in an encoded `Pages` frame. Pure functions, no I/O,
//! no allocation.
//!
//! Most dirty pages change in a few places (Remus's observation, and `libxc`'s
//! `xc_compression.c` until 2019): a page is sent as the words that differ from the version the
//! standby holds (XOR with it, then zero runs), or from zero when the primary does not know that
//! version, or as a one-byte zero-page record, and whole only when nothing shorter exists.
//!
//! ```text
//!  record  = 0x00                         zero page
//!          | 0x01 page[4096]              raw page
//!          | 0x02 len:u16le ops[len]      delta: XOR the ops into the standby's current page
//!          | 0x03 len:u16le ops[len]      sparse: XOR the ops into a zero page
//!  ops     = (skip:varint lit:varint word[8 * lit])*
//! ```
//!
//! Ops work on 8-byte words: skip `skip` words (unchanged), then XOR `lit` words (at least one)
//! into the page; a page is 512 words and the ops never go past its end. A delta or sparse
//! record is used only when shorter than a raw one, so a frame of records is never longer than
//! the plain pages plus one byte per page. A frame's records may then be compressed as one LZ4
//! block ([`compress`]), when that pays.

use std::fmt;

use crate::domain::Replica;
use crate::page_cache::PageCache;
use crate::PAGE_SIZE;
use hsb_common::frame::{FrameError, Kind};
use hsb_common::msg::{self, Pages, PagesHead, PAGES_LZ4, PAGES_PER_FRAME, PAGES_RECORDS};

/// Bytes reserved for the head of a `Pages` body (ckpt, up to 64 pfn varints, codec, data
/// length).
pub const PAGES_HEAD_MAX: usize = 10 + 1 + PAGES_PER_FRAME * 10 + 1 + 10;

/// Record tag: a page of zeros.
pub const TAG_ZERO: u8 = 0;
/// Record tag: the page itself follows.
pub const TAG_RAW: u8 = 1;
/// Record tag: ops against the standby's current version of the page.
pub const TAG_DELTA: u8 = 2;
/// Record tag: ops against a zero page.
pub const TAG_SPARSE: u8 = 3;

/// 8-byte words per page.
pub const WORDS: usize = PAGE_SIZE / 8;
/// The longest record (a raw page).
pub const MAX_RECORD: usize = 1 + PAGE_SIZE;
/// The longest ops a decoder accepts: a delta or sparse record is never longer than a raw one.
pub const MAX_OPS: usize = PAGE_SIZE - 3;
/// Room an encoder needs for one record.
pub const RECORD_ROOM: usize = MAX_RECORD;

/// What is wrong with an encoded page or frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecError {
    /// The input ends inside a record.
    Truncated,
    /// A record tag this build does not know.
    UnknownTag(u8),
    /// Ops longer than [`MAX_OPS`].
    OpsTooLong(usize),
    /// An op runs past the end of the page, or a literal run is empty.
    BadOp,
    /// A bad varint in the ops or the compressed length.
    BadVarint,
    /// A compressed frame that does not decompress to its stated length within the bound.
    Lz4,
    /// Compressed records longer than the bound for this many pages.
    TooLong { len: usize, max: usize },
}

impl CodecError {
    /// A short description for `FrameError::Body`.
    pub fn why(&self) -> &'static str {
        match self {
            CodecError::Truncated => "page record ends early",
            CodecError::UnknownTag(_) => "unknown page record tag",
            CodecError::OpsTooLong(_) => "page record ops too long",
            CodecError::BadOp => "page record op outside the page",
            CodecError::BadVarint => "bad varint in page records",
            CodecError::Lz4 => "compressed page records do not decompress",
            CodecError::TooLong { .. } => "compressed page records too long",
        }
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::UnknownTag(t) => write!(f, "unknown page record tag {t}"),
            CodecError::OpsTooLong(n) => {
                write!(f, "page record ops of {n} bytes (at most {MAX_OPS})")
            }
            CodecError::TooLong { len, max } => {
                write!(f, "{len} bytes of page records, at most {max}")
            }
            e => f.write_str(e.why()),
        }
    }
}

impl std::error::Error for CodecError {}

/// What kind of record a page became (for statistics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// A zero page.
    Zero,
    /// The page whole.
    Raw,
    /// The words that differ from the standby's version.
    Delta,
    /// The words that differ from zero.
    Sparse,
}

/// A decoded record, borrowing from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record<'a> {
    /// A zero page.
    Zero,
    /// The page.
    Raw(&'a [u8]),
    /// Ops to XOR into the standby's current page.
    Delta(&'a [u8]),
    /// Ops to XOR into a zero page.
    Sparse(&'a [u8]),
}

fn word(b: &[u8], i: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[i * 8..i * 8 + 8]);
    u64::from_le_bytes(a)
}

/// Whether a page is all zeros.
pub fn is_zero(page: &[u8]) -> bool {
    // Sixteen-byte steps: the compiler turns this into a few vector ORs per step.
    page.chunks_exact(16).all(|c| {
        let mut a = [0u8; 16];
        a.copy_from_slice(c);
        u128::from_ne_bytes(a) == 0
    })
}

/// Write the ops turning `base` (zero if `None`) into `page` into `out`, or `None` once they
/// would exceed `limit` bytes. `out` must hold `limit + 4` bytes.
fn write_ops(page: &[u8], base: Option<&[u8]>, out: &mut [u8], limit: usize) -> Option<usize> {
    // The differing words first, in one pass the compiler can vectorise.
    let mut x = [0u64; WORDS];
    match base {
        Some(b) => {
            for (i, (p, q)) in page.chunks_exact(8).zip(b.chunks_exact(8)).enumerate() {
                x[i] = word(p, 0) ^ word(q, 0);
            }
        }
        None => {
            for (i, p) in page.chunks_exact(8).enumerate() {
                x[i] = word(p, 0);
            }
        }
    }
    let mut n = 0;
    let mut i = 0;
    while i < WORDS {
        let run = i;
        while i < WORDS && x[i] == 0 {
            i += 1;
        }
        if i == WORDS {
            break;
        }
        let lit = i;
        while i < WORDS && x[i] != 0 {
            i += 1;
        }
        if n + 4 + (i - lit) * 8 > limit {
            return None;
        }
        n += msg::write_varint((lit - run) as u64, &mut out[n..]);
        n += msg::write_varint((i - lit) as u64, &mut out[n..]);
        for &v in &x[lit..i] {
            out[n..n + 8].copy_from_slice(&v.to_le_bytes());
            n += 8;
        }
    }
    Some(n)
}

/// Encode `page` (4 KiB) as one record into `out` (at least [`RECORD_ROOM`] bytes), against
/// `previous`, the version the standby holds, when known. Returns the record's length and kind.
pub fn encode_page(page: &[u8], previous: Option<&[u8]>, out: &mut [u8]) -> (usize, RecordKind) {
    debug_assert_eq!(page.len(), PAGE_SIZE);
    debug_assert!(out.len() >= RECORD_ROOM);
    if is_zero(page) {
        out[0] = TAG_ZERO;
        return (1, RecordKind::Zero);
    }
    let (tag, kind) = match previous {
        Some(_) => (TAG_DELTA, RecordKind::Delta),
        None => (TAG_SPARSE, RecordKind::Sparse),
    };
    // Ops go after the tag and the length; bail out as soon as raw would be as short.
    let limit = MAX_OPS - 20;
    if let Some(n) = write_ops(page, previous, &mut out[3..], limit) {
        out[0] = tag;
        out[1..3].copy_from_slice(&(n as u16).to_le_bytes());
        return (3 + n, kind);
    }
    out[0] = TAG_RAW;
    out[1..1 + PAGE_SIZE].copy_from_slice(page);
    (MAX_RECORD, RecordKind::Raw)
}

/// Read the varint (`msg::write_varint`'s form) at `*pos` in `b`, moving `*pos` past it.
pub fn read_varint(b: &[u8], pos: &mut usize) -> Result<u64, CodecError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos).ok_or(CodecError::Truncated)?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(CodecError::BadVarint)
}

/// Read the record at the start of `input`: the record and its length.
pub fn read_record(input: &[u8]) -> Result<(Record<'_>, usize), CodecError> {
    let (&tag, rest) = input.split_first().ok_or(CodecError::Truncated)?;
    match tag {
        TAG_ZERO => Ok((Record::Zero, 1)),
        TAG_RAW => {
            let page = rest.get(..PAGE_SIZE).ok_or(CodecError::Truncated)?;
            Ok((Record::Raw(page), MAX_RECORD))
        }
        TAG_DELTA | TAG_SPARSE => {
            let len = rest.get(..2).ok_or(CodecError::Truncated)?;
            let len = u16::from_le_bytes([len[0], len[1]]) as usize;
            if len > MAX_OPS {
                return Err(CodecError::OpsTooLong(len));
            }
            let ops = rest.get(2..2 + len).ok_or(CodecError::Truncated)?;
            let r = if tag == TAG_DELTA {
                Record::Delta(ops)
            } else {
                Record::Sparse(ops)
            };
            Ok((r, 3 + len))
        }
        t => Err(CodecError::UnknownTag(t)),
    }
}

/// XOR `ops` into `page` (4 KiB). On error the page is partly changed: callers decode into
/// staging, never into the replica.
pub fn apply_ops(ops: &[u8], page: &mut [u8]) -> Result<(), CodecError> {
    debug_assert_eq!(page.len(), PAGE_SIZE);
    let mut pos = 0;
    let mut i = 0usize;
    while pos < ops.len() {
        let skip = read_varint(ops, &mut pos)?;
        let lit = read_varint(ops, &mut pos)?;
        if lit == 0 || skip > WORDS as u64 || lit > WORDS as u64 {
            return Err(CodecError::BadOp);
        }
        i += skip as usize;
        let end = i + lit as usize;
        if end > WORDS {
            return Err(CodecError::BadOp);
        }
        let bytes = lit as usize * 8;
        let src = ops.get(pos..pos + bytes).ok_or(CodecError::Truncated)?;
        for (d, s) in page[i * 8..end * 8].iter_mut().zip(src) {
            *d ^= s;
        }
        pos += bytes;
        i = end;
    }
    Ok(())
}

/// The most bytes [`compress`] writes for `len` bytes of records.
pub fn compressed_room(len: usize) -> usize {
    10 + lz4_flex::block::get_maximum_output_size(len)
}

/// Compress a frame's records into `out` (at least [`compressed_room`] bytes): their length as a
/// varint, then one LZ4 block. `None` when that saves less than an eighth, or does not fit.
pub fn compress(records: &[u8], out: &mut [u8]) -> Option<usize> {
    let n = msg::write_varint(records.len() as u64, out);
    let c = lz4_flex::block::compress_into(records, &mut out[n..]).ok()?;
    (n + c <= records.len() - records.len() / 8).then_some(n + c)
}

/// Decompress what [`compress`] wrote into `out`, accepting at most `max` bytes of records;
/// returns the records.
pub fn decompress<'o>(data: &[u8], out: &'o mut [u8], max: usize) -> Result<&'o [u8], CodecError> {
    let mut pos = 0;
    let len = read_varint(data, &mut pos)?;
    let max = max.min(out.len());
    if len > max as u64 {
        return Err(CodecError::TooLong {
            len: len.min(usize::MAX as u64) as usize,
            max,
        });
    }
    let len = len as usize;
    match lz4_flex::block::decompress_into(&data[pos..], &mut out[..len]) {
        Ok(n) if n == len => Ok(&out[..len]),
        _ => Err(CodecError::Lz4),
    }
}

/// The primary's encoder of `Pages` frames: scratch for one frame, allocated once, and whether
/// LZ4 has been paying.
#[derive(Debug)]
pub struct PagesEncoder {
    /// The frame's page records.
    records: Vec<u8>,
    /// The new body: head, data length, data.
    body: Vec<u8>,
    /// The records compressed.
    packed: Vec<u8>,
    /// Frames to go before LZ4 is tried again, and the current back-off.
    lz4_wait: u32,
    lz4_backoff: u32,
}

/// Most frames LZ4 waits after it did not pay (it is tried again after 1, 2, 4 ... frames).
const LZ4_BACKOFF_MAX: u32 = 64;

impl Default for PagesEncoder {
    fn default() -> Self {
        PagesEncoder::new()
    }
}

impl PagesEncoder {
    /// Scratch for one frame.
    pub fn new() -> PagesEncoder {
        let records = PAGES_PER_FRAME * MAX_RECORD;
        PagesEncoder {
            records: vec![0u8; records],
            body: vec![0u8; PAGES_HEAD_MAX + compressed_room(records)],
            packed: vec![0u8; compressed_room(records)],
            lz4_wait: 0,
            lz4_backoff: 1,
        }
    }

    /// Encode the plain `Pages` body `body` against `cache` (which then holds the new pages),
    /// counting records by kind (zero, raw, delta, sparse) into `counts`. Returns the new
    /// body's length and whether it is compressed ([`PagesEncoder::body`] holds it), or `None`
    /// when it is not shorter than `body`.
    pub fn encode(
        &mut self,
        body: &[u8],
        cache: &mut PageCache,
        counts: &mut [u64; 4],
    ) -> Result<Option<(usize, bool)>, FrameError> {
        let p: Pages = msg::decode(Kind::Pages, body)?;
        let mut n = 0;
        for (&pfn, page) in p.pfns.iter().zip(p.data.chunks_exact(PAGE_SIZE)) {
            let (len, kind) = encode_page(page, cache.get(pfn), &mut self.records[n..]);
            n += len;
            match kind {
                RecordKind::Zero => {
                    // A zero page's next version goes as a sparse record: nothing to hold.
                    cache.forget(pfn);
                    counts[0] += 1;
                }
                k => {
                    cache.store(pfn, page);
                    counts[match k {
                        RecordKind::Raw => 1,
                        RecordKind::Delta => 2,
                        _ => 3,
                    }] += 1;
                }
            }
        }
        let (codec, data) = self.pack(n);
        let head = msg::encode(
            &PagesHead {
                ckpt: p.ckpt,
                pfns: &p.pfns,
                codec,
            },
            &mut self.body,
        )
        .map_err(|_| FrameError::Body {
            kind: Kind::Pages,
            why: "page head does not fit",
        })?;
        let data: &[u8] = match data {
            Some(m) => &self.packed[..m],
            None => &self.records[..n],
        };
        let mut len = head + msg::write_varint(data.len() as u64, &mut self.body[head..]);
        self.body[len..len + data.len()].copy_from_slice(data);
        len += data.len();
        if len >= body.len() {
            return Ok(None);
        }
        Ok(Some((len, codec == PAGES_LZ4)))
    }

    /// The body the last [`PagesEncoder::encode`] made.
    pub fn body(&self, len: usize) -> &[u8] {
        &self.body[..len]
    }

    /// Compress the first `n` bytes of records when LZ4 has been paying: the codec, and the
    /// compressed length if compressed.
    fn pack(&mut self, n: usize) -> (u8, Option<usize>) {
        if self.lz4_wait > 0 {
            self.lz4_wait -= 1;
            return (PAGES_RECORDS, None);
        }
        match compress(&self.records[..n], &mut self.packed) {
            Some(m) => {
                self.lz4_backoff = 1;
                (PAGES_LZ4, Some(m))
            }
            None => {
                self.lz4_wait = self.lz4_backoff;
                self.lz4_backoff = (self.lz4_backoff * 2).min(LZ4_BACKOFF_MAX);
                (PAGES_RECORDS, None)
            }
        }
    }
}

/// Decode one frame's page records for `pfns` onto the end of `data`, delta records against
/// `replica`'s pages (never in a full synchronisation, whose replica is no reference). The
/// records must cover exactly the frame's pages.
pub fn decode_pages(
    records: &[u8],
    pfns: &[u64],
    full: bool,
    data: &mut Vec<u8>,
    replica: &mut dyn Replica,
) -> Result<(), &'static str> {
    let mut pos = 0;
    for &pfn in pfns {
        let (rec, len) = read_record(&records[pos..]).map_err(|e| e.why())?;
        pos += len;
        let at = data.len();
        match rec {
            Record::Raw(page) => data.extend_from_slice(page),
            Record::Zero => data.resize(at + PAGE_SIZE, 0),
            Record::Sparse(ops) => {
                data.resize(at + PAGE_SIZE, 0);
                apply_ops(ops, &mut data[at..]).map_err(|e| e.why())?;
            }
            Record::Delta(ops) => {
                if full {
                    return Err("a delta record in a full synchronisation");
                }
                data.resize(at + PAGE_SIZE, 0);
                replica
                    .read_back(&[pfn], &mut data[at..])
                    .map_err(|_| "the replica's page for a delta record cannot be read")?;
                apply_ops(ops, &mut data[at..]).map_err(|e| e.why())?;
            }
        }
    }
    if pos != records.len() {
        return Err("page records longer than the frame's pages");
    }
    Ok(())
}

#[cfg(test)]
#[path = "page_codec_tests.rs"]
mod tests;
