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

use crate::PAGE_SIZE;
use hsb_common::msg;

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

fn read_varint(b: &[u8], pos: &mut usize) -> Result<u64, CodecError> {
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

#[cfg(test)]
#[path = "page_codec_tests.rs"]
mod tests;
