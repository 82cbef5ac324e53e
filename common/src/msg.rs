//! Message bodies, encoded with postcard inside a [`crate::frame`].
//!
//! Replication stream (TCP, primary → standby unless noted):
//! `Hello` (both ways) → `Hello` again, sealed under the session key (the primary's
//! confirmation) → (standby) `DiskDirty`* → `DiskPlan` → `DiskSync`* → `Begin` → `Pages`* →
//! `State` → `Disk`* → `End` → (standby) `Ack`.
//! A standby that will not take the session answers its `Hello` with a `Refuse`.
//!
//! The disk frames (issue 14) exist only when both sides have a disk ([`DiskHello::size`] is
//! not 0, and equal): the standby's `Hello` says where its disk stands (lineage, base
//! checkpoint, torn or not) and how many `DiskDirty` frames follow the confirmation (tracks it
//! wrote as a primary beyond its base); the primary answers with a `DiskPlan` (which lineage the
//! standby's disk joins, full copy or only the tracks that can differ), streams `DiskSync`
//! block copies while the guest runs, and completes the resynchronisation in the next full
//! synchronisation's `Disk` frames. Every later checkpoint carries its epoch's guest writes as
//! `Disk` frames, in the order the guest issued them, covered by the `End` record's CRC.
//! "ckpt" is the checkpoint number N whose output is released by ack(N); "epoch" is the
//! activation epoch of DESIGN.md rule 8.

use serde::{Deserialize, Serialize};

use crate::decision::Epoch;
use crate::frame::{FrameError, Kind};

/// Pages per `Pages` frame: 64 pages = 256 KiB of data per frame.
pub const PAGES_PER_FRAME: usize = 64;
/// Largest `State` record.
pub const MAX_STATE_LEN: usize = 256 * 1024;
/// Longest node name.
pub const NODE_NAME_LEN: usize = 32;
/// Longest refusal reason.
pub const REASON_LEN: usize = 160;
/// Largest encoded [`Hello`] body (the longest node name and every varint at its longest:
/// 1 + 33 + 16 + 4 × 10 = 90 bytes, plus its [`DiskHello`]: 10 + 16 + 10 + 1 + 16 + 5 = 58
/// bytes, 148 in all), with room to spare. A connection that has not proved it holds the cluster key
/// gets a frame reader of this size, not of the configured frame maximum.
pub const HELLO_MAX_BODY: usize = 192;
/// Largest piece of disk data in one `Disk` or `DiskSync` frame: larger writes are split.
pub const DISK_PIECE: usize = 256 * 1024;
/// Forks of a disk lineage carried in a [`DiskPlan`] (older ones are forgotten: a disk from
/// further back gets a full copy).
pub const DISK_HISTORY: usize = 8;
/// Bytes of track bitmap in one [`DiskDirty`] frame (16384 tracks), so the frame fits the
/// primary's small reader.
pub const DIRTY_BYTES: usize = 2048;

/// A disk lineage ("generation", as DRBD calls it): a random identifier made when a disk's
/// history starts (a fresh or unknown image) or forks (a replica activated from a checkpoint).
pub type DiskGen = [u8; 16];

/// Where the sender's disk stands, in its [`Hello`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DiskHello {
    /// Image size in bytes; 0: no disk. Both sides must agree.
    pub size: u64,
    /// The lineage its contents belong to.
    pub gen: DiskGen,
    /// The checkpoint of that lineage it holds (a standby: last applied; a primary: last
    /// acknowledged), except for the tracks announced in `DiskDirty` frames.
    pub base: u64,
    /// A checkpoint or resynchronisation was being written when it stopped: tracks of
    /// lineage `toward` (at checkpoints after `base`) may be there too.
    pub torn: bool,
    /// The lineage a torn disk's last writes came from (all zeros: unknown).
    pub toward: DiskGen,
    /// `DiskDirty` frames the standby sends after the primary's confirmation.
    pub dirty_frames: u32,
}

/// Who is speaking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// hsb-primary.
    Primary,
    /// hsb-standby.
    Standby,
    /// hsb-witness.
    Witness,
}

/// Opens a session. The initiator's nonce and the responder's nonce together derive the session
/// keys ([`crate::session`]). Node, epoch and incarnation say which primary this is: a standby
/// lets a new session replace a live one only if it is the newer primary
/// ([`crate::session::admit`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Sender's role.
    pub role: Role,
    /// Sender's node name (for logs).
    pub node: heapless::String<NODE_NAME_LEN>,
    /// Sender's activation epoch.
    pub epoch: Epoch,
    /// Fresh random nonce of this session.
    pub nonce: [u8; 16],
    /// Pages of the protected domain (the replica must match).
    pub domain_pages: u64,
    /// Last checkpoint the sender applied (standby) or acknowledged (primary), 0 if none.
    pub last_ckpt: u64,
    /// Grows with each start of the sender's process
    /// ([`crate::datagram::next_incarnation`]): a restarted primary is newer than its
    /// predecessor, whose connection the standby may still hold.
    pub incarnation: u64,
    /// The sender's disk.
    pub disk: DiskHello,
}

/// Start of checkpoint `ckpt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Begin {
    /// Checkpoint number.
    pub ckpt: u64,
    /// Full synchronisation (every page follows) rather than incremental.
    pub full: bool,
    /// Number of pages that follow in `Pages` frames.
    pub pages: u64,
    /// Sender's activation epoch.
    pub epoch: Epoch,
}

/// [`Pages::codec`]: `data` is the pages themselves, 4 KiB each, in order.
pub const PAGES_PLAIN: u8 = 0;
/// [`Pages::codec`]: `data` is one page record per page, in order (zero page, raw page, or the
/// page's words that differ from the standby's copy or from zero; `hsb_domain::page_codec`).
pub const PAGES_RECORDS: u8 = 1;
/// [`Pages::codec`]: `data` is the records' length (varint) and the records compressed as one
/// LZ4 block.
pub const PAGES_LZ4: u8 = 2;

/// A batch of at most [`PAGES_PER_FRAME`] pages, as `codec` says ([`PAGES_PLAIN`]: `data`
/// holds `pfns.len()` pages in order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pages<'a> {
    /// Checkpoint number.
    pub ckpt: u64,
    /// Page frame numbers.
    pub pfns: heapless::Vec<u64, PAGES_PER_FRAME>,
    /// How `data` holds the pages: [`PAGES_PLAIN`], [`PAGES_RECORDS`] or [`PAGES_LZ4`].
    pub codec: u8,
    /// The pages.
    #[serde(borrow)]
    pub data: &'a [u8],
}

/// The head of a [`Pages`] body, so the primary can write page data straight after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PagesHead<'a> {
    /// Checkpoint number.
    pub ckpt: u64,
    /// Page frame numbers.
    pub pfns: &'a [u64],
    /// How the data that follows holds the pages.
    pub codec: u8,
}

/// vCPU and platform state of checkpoint `ckpt` (backend-defined bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State<'a> {
    /// Checkpoint number.
    pub ckpt: u64,
    /// Opaque state record.
    #[serde(borrow)]
    pub data: &'a [u8],
}

/// End of checkpoint `ckpt`: the standby checks these against what it staged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct End {
    /// Checkpoint number.
    pub ckpt: u64,
    /// Pages sent.
    pub pages: u64,
    /// Bytes of all `Begin`, `Pages`, `State` and `Disk` bodies, each `Pages` body counted in its
    /// plain form (codec [`PAGES_PLAIN`], the pages as decoded).
    pub total_len: u64,
    /// CRC32 of those bodies, concatenated, in the same form: the checkpoint's digest covers
    /// the decoded pages, whatever encoding carried them (each frame's own CRC and MAC cover
    /// the bytes on the wire).
    pub crc: u32,
    /// `Disk` frames in the checkpoint.
    pub disk_writes: u64,
    /// Bytes of disk data in them.
    pub disk_bytes: u64,
    /// `DiskSync` frames sent before it (a full synchronisation completing a disk
    /// resynchronisation; 0 otherwise).
    pub disk_synced: u64,
}

/// A fork of a disk lineage: the lineage `gen` was left at its checkpoint `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fork {
    /// The lineage left.
    pub gen: DiskGen,
    /// Its last checkpoint shared with the newer lineage.
    pub at: u64,
}

/// Primary → standby, once per session before any `DiskSync`: how the standby's disk is
/// brought into the primary's lineage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskPlan {
    /// The full synchronisation that completes the resynchronisation.
    pub ckpt: u64,
    /// The lineage the standby's disk joins.
    pub gen: DiskGen,
    /// That lineage's forks, newest first.
    pub history: heapless::Vec<Fork, DISK_HISTORY>,
    /// Every track follows (an unknown or mismatched disk), not only those that can differ.
    pub full: bool,
    /// Tracks in the first round of the copy.
    pub tracks: u64,
    /// Track size in bytes (the unit of copies).
    pub track: u32,
    /// The primary's journal limit: the most disk bytes (with frame overhead) in a checkpoint.
    pub journal_max: u64,
}

/// Disk data at a byte offset: a guest write of checkpoint `ckpt` (kind `Disk`), or a block copy
/// of the resynchronisation that checkpoint `ckpt` completes (kind `DiskSync`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskWrite<'a> {
    /// Checkpoint number.
    pub ckpt: u64,
    /// Byte offset in the image.
    pub offset: u64,
    /// The bytes, at most [`DISK_PIECE`].
    #[serde(borrow)]
    pub data: &'a [u8],
}

/// Standby → primary: tracks `first + i` for every bit `i` set in `bits` (LSB first) may
/// differ from the standby's base checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskDirty<'a> {
    /// Track of bit 0.
    pub first: u64,
    /// At most [`DIRTY_BYTES`] bytes of bitmap.
    #[serde(borrow)]
    pub bits: &'a [u8],
}

/// Write the head of a [`DiskWrite`] body (checkpoint, offset, data length) into `out`, so the
/// data can be copied straight after it; returns the head's length (at most 30 bytes).
pub fn disk_write_head(ckpt: u64, offset: u64, len: usize, out: &mut [u8]) -> usize {
    let mut n = write_varint(ckpt, out);
    n += write_varint(offset, &mut out[n..]);
    n + write_varint(len as u64, &mut out[n..])
}

/// Most bytes a [`disk_write_head`] takes.
pub const DISK_HEAD_MAX: usize = 30;

/// Standby → primary: checkpoint `ckpt` is applied to the replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// Checkpoint number.
    pub ckpt: u64,
    /// Standby's activation epoch.
    pub epoch: Epoch,
}

/// Refusal of a session, before the sender closes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refuse {
    /// Why, for the peer's log.
    pub reason: heapless::String<REASON_LEN>,
}

/// Decode a body of a known kind; errors are [`FrameError::Body`], never panics.
pub fn decode<'a, M: Deserialize<'a>>(kind: Kind, body: &'a [u8]) -> Result<M, FrameError> {
    match postcard::take_from_bytes::<M>(body) {
        Ok((m, [])) => Ok(m),
        Ok(_) => Err(FrameError::Body {
            kind,
            why: "trailing bytes",
        }),
        Err(e) => Err(FrameError::Body {
            kind,
            why: postcard_why(&e),
        }),
    }
}

/// Encode a body into `out`, returning its length.
pub fn encode<M: Serialize>(msg: &M, out: &mut [u8]) -> Result<usize, postcard::Error> {
    postcard::to_slice(msg, out).map(|s| s.len())
}

fn postcard_why(e: &postcard::Error) -> &'static str {
    use postcard::Error as E;
    match e {
        E::DeserializeUnexpectedEnd => "ends early",
        E::DeserializeBadVarint => "bad varint",
        E::DeserializeBadBool => "bad bool",
        E::DeserializeBadUtf8 => "bad UTF-8",
        E::DeserializeBadEnum => "bad enum tag",
        E::DeserializeBadOption => "bad option tag",
        E::DeserializeBadChar => "bad char",
        _ => "invalid encoding or a bound exceeded",
    }
}

/// Write `v` as an unsigned LEB128 varint (postcard's integer encoding); returns bytes written.
/// `out` must have room for 10 bytes.
pub fn write_varint(mut v: u64, out: &mut [u8]) -> usize {
    let mut i = 0;
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out[i] = b;
            return i + 1;
        }
        out[i] = b | 0x80;
        i += 1;
    }
}

/// A node name for [`Hello`], truncated to [`NODE_NAME_LEN`] bytes on a character boundary.
pub fn node_name(s: &str) -> heapless::String<NODE_NAME_LEN> {
    let mut out = heapless::String::new();
    for c in s.chars() {
        if out.push(c).is_err() {
            break;
        }
    }
    out
}

/// A refusal reason, truncated to [`REASON_LEN`] bytes.
pub fn reason(s: &str) -> heapless::String<REASON_LEN> {
    let mut out = heapless::String::new();
    for c in s.chars() {
        if out.push(c).is_err() {
            break;
        }
    }
    out
}

#[cfg(test)]
#[path = "msg_tests.rs"]
mod tests;
