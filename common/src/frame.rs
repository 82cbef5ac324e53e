//! The frame: the envelope of every hsb message on TCP streams and in datagrams.
//!
//! ```text
//!  0      2    3    4         8                16       20                       36
//!  +------+----+----+---------+----------------+--------+------------------------+------...
//!  | "HS" |ver |kind| body len|   sequence     | CRC32  |  MAC (16 bytes)        | body
//!  +------+----+----+---------+----------------+--------+------------------------+------...
//! ```
//! All integers little-endian. The CRC32 covers bytes 0..16 and the body; the MAC (keyed BLAKE3
//! truncated to 128 bits, with a per-session, per-direction key from [`crate::session`]) covers
//! bytes 0..20 and the body. The body is a postcard message ([`crate::msg`]).
//!
//! Shaped like smoltcp's wire modules: [`Frame`] is a checked view over bytes whose field offsets
//! live in [`field`], [`Header`] is the meaning of a header with symmetric `parse`/`emit`.

use std::fmt;

/// Two magic bytes opening every frame.
pub const MAGIC: [u8; 2] = *b"HS";
/// Protocol version carried in every frame. Version 2 (issue 16): a `Pages` body names its codec
/// (plain pages, page records, or LZ4-compressed records), and the `End` record's length and CRC
/// cover `Pages` bodies in their plain form. Version 3 (issue 14, disk replication): `Hello`
/// carries the sender's disk, `End` counts a checkpoint's disk writes, and the disk frame kinds
/// exist. A peer of another version is refused with [`FrameError::UnsupportedVersion`] at its
/// first frame.
pub const VERSION: u8 = 3;
/// Length of the fixed header.
pub const HEADER_LEN: usize = 36;
/// Length of the MAC.
pub const MAC_LEN: usize = 16;
/// Hard protocol ceiling on a body; daemons may configure a lower limit.
pub const MAX_BODY_LEN: usize = 1 << 20;

/// Byte ranges of the header fields.
pub mod field {
    use std::ops::Range;
    /// Magic bytes.
    pub const MAGIC: Range<usize> = 0..2;
    /// Version byte.
    pub const VERSION: usize = 2;
    /// Message kind byte.
    pub const KIND: usize = 3;
    /// Body length, u32 LE.
    pub const LENGTH: Range<usize> = 4..8;
    /// Sequence number, u64 LE.
    pub const SEQ: Range<usize> = 8..16;
    /// CRC32 of bytes 0..16 and the body, u32 LE.
    pub const CRC: Range<usize> = 16..20;
    /// MAC over bytes 0..20 and the body.
    pub const MAC: Range<usize> = 20..36;
    /// Start of the body.
    pub const BODY: usize = 36;
}

/// Message kinds. The body of each is the postcard struct of the same name in [`crate::msg`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// Session opening, either direction.
    Hello = 1,
    /// Start of a checkpoint.
    Begin = 2,
    /// A batch of pages of a checkpoint.
    Pages = 3,
    /// vCPU/platform state of a checkpoint.
    State = 4,
    /// End of a checkpoint, with its length and CRC.
    End = 5,
    /// Standby to primary: checkpoint applied.
    Ack = 6,
    /// Either side: refusing the session, with a reason, before closing.
    Refuse = 7,
    /// A guest disk write of a checkpoint (between its `Begin` and `End`), or a piece of one.
    Disk = 8,
    /// A block copy of a disk resynchronisation, sent before the full synchronisation that
    /// completes it.
    DiskSync = 9,
    /// Primary to standby: how the standby's disk is resynchronised, and the lineage it joins.
    DiskPlan = 10,
    /// Standby to primary: tracks its disk may hold beyond its base checkpoint (it was a primary).
    DiskDirty = 11,
    /// Heartbeat datagram between primary and standby.
    Heartbeat = 16,
    /// Witness datagram (reports, queries, votes, leases).
    Witness = 17,
}

impl Kind {
    /// The kind for a byte, if known.
    pub fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Hello,
            2 => Kind::Begin,
            3 => Kind::Pages,
            4 => Kind::State,
            5 => Kind::End,
            6 => Kind::Ack,
            7 => Kind::Refuse,
            8 => Kind::Disk,
            9 => Kind::DiskSync,
            10 => Kind::DiskPlan,
            11 => Kind::DiskDirty,
            16 => Kind::Heartbeat,
            17 => Kind::Witness,
            _ => return None,
        })
    }
}

/// Everything that can be wrong with a frame. Each variant has a counter name for status output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes than the header or the body length says.
    Truncated { have: usize, need: usize },
    /// The first two bytes are not "HS".
    BadMagic([u8; 2]),
    /// A protocol version this build does not speak.
    UnsupportedVersion(u8),
    /// An unknown message kind.
    UnknownKind(u8),
    /// A body longer than the limit.
    Oversized { len: usize, max: usize },
    /// The CRC does not match: corrupted in transit.
    BadCrc { expected: u32, got: u32 },
    /// The MAC does not match: forged, corrupted, or from another session.
    BadMac,
    /// A sequence number other than the next one: replayed, reordered or dropped.
    Replay { expected: u64, got: u64 },
    /// A kind not allowed at this point of the protocol.
    Unexpected { kind: Kind, state: &'static str },
    /// The body is not a valid postcard message of its kind.
    Body { kind: Kind, why: &'static str },
}

impl FrameError {
    /// A short stable name, used as the counter name in status output and logs.
    pub fn counter(&self) -> &'static str {
        match self {
            FrameError::Truncated { .. } => "truncated",
            FrameError::BadMagic(_) => "bad_magic",
            FrameError::UnsupportedVersion(_) => "bad_version",
            FrameError::UnknownKind(_) => "unknown_kind",
            FrameError::Oversized { .. } => "oversized",
            FrameError::BadCrc { .. } => "bad_crc",
            FrameError::BadMac => "bad_mac",
            FrameError::Replay { .. } => "replay",
            FrameError::Unexpected { .. } => "unexpected",
            FrameError::Body { .. } => "bad_body",
        }
    }

    /// All counter names, in a fixed order.
    pub const COUNTERS: [&'static str; 10] = [
        "truncated",
        "bad_magic",
        "bad_version",
        "unknown_kind",
        "oversized",
        "bad_crc",
        "bad_mac",
        "replay",
        "unexpected",
        "bad_body",
    ];
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Truncated { have, need } => {
                write!(f, "truncated frame: {have} bytes, expected {need}")
            }
            FrameError::BadMagic(m) => write!(f, "bad magic {m:02x?}, expected \"HS\""),
            FrameError::UnsupportedVersion(v) => write!(
                f,
                "the peer speaks wire version {v}, this build (hsb {}) speaks wire version {VERSION}: \
                 all daemons of a cluster must run releases with the same wire version \
                 (`hsb-X --version` shows it; upgrade every node, see DEPLOY.md, Upgrades)",
                env!("CARGO_PKG_VERSION")
            ),
            FrameError::UnknownKind(k) => write!(f, "unknown message kind {k}"),
            FrameError::Oversized { len, max } => {
                write!(f, "frame body of {len} bytes exceeds the limit of {max}")
            }
            FrameError::BadCrc { expected, got } => {
                write!(
                    f,
                    "CRC mismatch: header says {expected:08x}, data gives {got:08x}"
                )
            }
            FrameError::BadMac => write!(f, "MAC mismatch: forged, corrupted or wrong cluster key"),
            FrameError::Replay { expected, got } => {
                write!(
                    f,
                    "sequence {got}, expected {expected}: replayed or reordered frame"
                )
            }
            FrameError::Unexpected { kind, state } => {
                write!(f, "unexpected {kind:?} frame while {state}")
            }
            FrameError::Body { kind, why } => write!(f, "malformed {kind:?} body: {why}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// The meaning of a frame header (CRC and MAC are checked separately, see [`verify`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Message kind.
    pub kind: Kind,
    /// Body length in bytes.
    pub body_len: u32,
    /// Sequence number in the sender's direction of the session.
    pub seq: u64,
}

impl Header {
    /// Parse the first [`HEADER_LEN`] bytes, checking magic, version, kind and the body limit.
    pub fn parse(buf: &[u8], max_body: usize) -> Result<Header, FrameError> {
        let f = Frame::new_checked_header(buf)?;
        if f.magic() != MAGIC {
            return Err(FrameError::BadMagic(f.magic()));
        }
        if f.version() != VERSION {
            return Err(FrameError::UnsupportedVersion(f.version()));
        }
        let kind = Kind::from_u8(f.kind_byte()).ok_or(FrameError::UnknownKind(f.kind_byte()))?;
        let body_len = f.body_len();
        if body_len as usize > max_body.min(MAX_BODY_LEN) {
            return Err(FrameError::Oversized {
                len: body_len as usize,
                max: max_body.min(MAX_BODY_LEN),
            });
        }
        Ok(Header {
            kind,
            body_len,
            seq: f.seq(),
        })
    }

    /// Write magic, version, kind, length and sequence into `buf[..16]`; CRC and MAC are
    /// filled by [`seal`]. `buf` must be at least [`HEADER_LEN`] long.
    pub fn emit(&self, buf: &mut [u8]) {
        buf[field::MAGIC].copy_from_slice(&MAGIC);
        buf[field::VERSION] = VERSION;
        buf[field::KIND] = self.kind as u8;
        buf[field::LENGTH].copy_from_slice(&self.body_len.to_le_bytes());
        buf[field::SEQ].copy_from_slice(&self.seq.to_le_bytes());
    }

    /// Total frame length: header plus body.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.body_len as usize
    }
}

/// A checked view over the bytes of a frame.
#[derive(Debug)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// A view that only guarantees a whole header is present.
    pub fn new_checked_header(buffer: T) -> Result<Frame<T>, FrameError> {
        let have = buffer.as_ref().len();
        if have < HEADER_LEN {
            return Err(FrameError::Truncated {
                have,
                need: HEADER_LEN,
            });
        }
        Ok(Frame { buffer })
    }

    /// A view that guarantees the header and the whole body are present.
    pub fn new_checked(buffer: T) -> Result<Frame<T>, FrameError> {
        let f = Frame::new_checked_header(buffer)?;
        let need = HEADER_LEN + f.body_len() as usize;
        let have = f.buffer.as_ref().len();
        if have < need {
            return Err(FrameError::Truncated { have, need });
        }
        Ok(f)
    }

    /// The magic bytes.
    pub fn magic(&self) -> [u8; 2] {
        let b = self.buffer.as_ref();
        [b[0], b[1]]
    }
    /// The version byte.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION]
    }
    /// The kind byte.
    pub fn kind_byte(&self) -> u8 {
        self.buffer.as_ref()[field::KIND]
    }
    /// The body length field.
    pub fn body_len(&self) -> u32 {
        u32::from_le_bytes(le4(&self.buffer.as_ref()[field::LENGTH]))
    }
    /// The sequence number.
    pub fn seq(&self) -> u64 {
        u64::from_le_bytes(le8(&self.buffer.as_ref()[field::SEQ]))
    }
    /// The CRC field.
    pub fn crc(&self) -> u32 {
        u32::from_le_bytes(le4(&self.buffer.as_ref()[field::CRC]))
    }
    /// The MAC field.
    pub fn mac(&self) -> &[u8] {
        &self.buffer.as_ref()[field::MAC]
    }
    /// The body (only valid on a view made by [`Frame::new_checked`]).
    pub fn body(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let end = (HEADER_LEN + self.body_len() as usize).min(b.len());
        &b[HEADER_LEN..end]
    }
}

fn le4(b: &[u8]) -> [u8; 4] {
    let mut o = [0u8; 4];
    o.copy_from_slice(&b[..4]);
    o
}

fn le8(b: &[u8]) -> [u8; 8] {
    let mut o = [0u8; 8];
    o.copy_from_slice(&b[..8]);
    o
}

/// A 256-bit MAC key (derived per session and direction, see [`crate::session`]).
#[derive(Clone, PartialEq, Eq)]
pub struct MacKey(pub [u8; 32]);

impl fmt::Debug for MacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MacKey(..)")
    }
}

/// CRC32 of a body, as a hasher so it can be combined into a running checkpoint CRC.
pub fn body_crc(body: &[u8]) -> crc32fast::Hasher {
    let mut h = crc32fast::Hasher::new();
    h.update(body);
    h
}

fn frame_crc(header16: &[u8], body: &crc32fast::Hasher) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(header16);
    h.combine(body);
    h.finalize()
}

fn mac(key: &MacKey, header20: &[u8], body: &[u8]) -> [u8; MAC_LEN] {
    let mut h = blake3::Hasher::new_keyed(&key.0);
    h.update(header20);
    h.update(body);
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(&h.finalize().as_bytes()[..MAC_LEN]);
    out
}

/// Fill CRC and MAC of a frame whose header (first 16 bytes) and body are written.
/// `body_hash` is [`body_crc`] of the body, computed once by callers that also need it.
pub fn seal_with(buf: &mut [u8], key: &MacKey, body_hash: &crc32fast::Hasher) {
    let crc = frame_crc(&buf[..field::CRC.start], body_hash);
    buf[field::CRC].copy_from_slice(&crc.to_le_bytes());
    let (head, body) = buf.split_at_mut(HEADER_LEN);
    let m = mac(key, &head[..field::MAC.start], body);
    head[field::MAC].copy_from_slice(&m);
}

/// Fill CRC and MAC of a complete frame (`buf` is exactly header plus body).
pub fn seal(buf: &mut [u8], key: &MacKey) {
    let h = body_crc(&buf[HEADER_LEN..]);
    seal_with(buf, key, &h);
}

/// Check CRC then MAC of a complete frame (`buf` is exactly header plus body).
/// Returns the body's CRC hasher for callers that keep a running checkpoint CRC.
pub fn verify(buf: &[u8], key: &MacKey) -> Result<crc32fast::Hasher, FrameError> {
    let f = Frame::new_checked(buf)?;
    let body = f.body();
    let h = body_crc(body);
    let got = frame_crc(&buf[..field::CRC.start], &h);
    if got != f.crc() {
        return Err(FrameError::BadCrc {
            expected: f.crc(),
            got,
        });
    }
    let m = mac(key, &buf[..field::MAC.start], body);
    if !ct_eq(&m, f.mac()) {
        return Err(FrameError::BadMac);
    }
    Ok(h)
}

/// Constant-time equality of two byte strings of equal length.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: MacKey = MacKey([7u8; 32]);

    fn sample() -> Vec<u8> {
        let mut buf = vec![0u8; HEADER_LEN + 3];
        Header {
            kind: Kind::Ack,
            body_len: 3,
            seq: 0x0102_0304_0506_0708,
        }
        .emit(&mut buf);
        buf[HEADER_LEN..].copy_from_slice(&[0xaa, 0xbb, 0xcc]);
        seal(&mut buf, &KEY);
        buf
    }

    #[test]
    fn header_literal_bytes() {
        let buf = sample();
        assert_eq!(
            &buf[..16],
            &[
                b'H', b'S', 3, 6, // magic, version, kind = Ack
                3, 0, 0, 0, // body length
                8, 7, 6, 5, 4, 3, 2, 1, // sequence, little-endian
            ]
        );
        // CRC32 (IEEE) of the first 16 bytes followed by the body, computed independently.
        let mut all = buf[..16].to_vec();
        all.extend_from_slice(&[0xaa, 0xbb, 0xcc]);
        assert_eq!(&buf[16..20], &crc32fast::hash(&all).to_le_bytes());
    }

    #[test]
    fn parse_and_emit_are_symmetric() {
        let buf = sample();
        let h = Header::parse(&buf, MAX_BODY_LEN).unwrap();
        assert_eq!(
            h,
            Header {
                kind: Kind::Ack,
                body_len: 3,
                seq: 0x0102_0304_0506_0708
            }
        );
        let mut again = vec![0u8; HEADER_LEN];
        h.emit(&mut again);
        assert_eq!(&again[..16], &buf[..16]);
        assert!(verify(&buf, &KEY).is_ok());
    }

    #[test]
    fn header_errors() {
        let buf = sample();
        assert_eq!(
            Header::parse(&buf[..10], MAX_BODY_LEN),
            Err(FrameError::Truncated { have: 10, need: 36 })
        );
        let mut b = buf.clone();
        b[0] = b'X';
        assert!(matches!(
            Header::parse(&b, MAX_BODY_LEN),
            Err(FrameError::BadMagic(_))
        ));
        let mut b = buf.clone();
        b[2] = 9;
        assert_eq!(
            Header::parse(&b, MAX_BODY_LEN),
            Err(FrameError::UnsupportedVersion(9))
        );
        // An operator reading the log must learn what to do, not only that a byte was wrong.
        let said = FrameError::UnsupportedVersion(9).to_string();
        assert!(
            said.contains("the peer speaks wire version 9")
                && said.contains(&format!("speaks wire version {VERSION}"))
                && said.contains("same wire version"),
            "{said}"
        );
        let mut b = buf.clone();
        b[3] = 200;
        assert_eq!(
            Header::parse(&b, MAX_BODY_LEN),
            Err(FrameError::UnknownKind(200))
        );
        let mut b = buf.clone();
        b[4..8].copy_from_slice(&(2u32 << 20).to_le_bytes());
        assert!(matches!(
            Header::parse(&b, MAX_BODY_LEN),
            Err(FrameError::Oversized { .. })
        ));
        assert!(matches!(
            Header::parse(&buf, 2),
            Err(FrameError::Oversized { len: 3, max: 2 })
        ));
        assert!(matches!(
            verify(&buf[..38], &KEY),
            Err(FrameError::Truncated { .. })
        ));
    }

    #[test]
    fn every_bit_flip_is_detected() {
        let buf = sample();
        for i in 0..buf.len() * 8 {
            let mut b = buf.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(verify(&b, &KEY).is_err(), "flip of bit {i} not detected");
        }
    }

    #[test]
    fn wrong_key_is_bad_mac() {
        let buf = sample();
        assert_eq!(
            verify(&buf, &MacKey([8u8; 32])).unwrap_err(),
            FrameError::BadMac
        );
    }

    #[test]
    fn counters_cover_every_error() {
        for e in [
            FrameError::BadMac,
            FrameError::Replay {
                expected: 1,
                got: 0,
            },
            FrameError::Body {
                kind: Kind::Ack,
                why: "x",
            },
        ] {
            assert!(FrameError::COUNTERS.contains(&e.counter()));
            assert!(!e.to_string().is_empty());
        }
    }
}
