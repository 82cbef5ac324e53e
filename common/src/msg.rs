//! Message bodies, encoded with postcard inside a [`crate::frame`].
//!
//! Replication stream (TCP, primary → standby unless noted):
//! `Hello` (both ways) → `Hello` again, sealed under the session key (the primary's
//! confirmation) → `Begin` → `Pages`* → `State` → `End` → (standby) `Ack`.
//! A standby that will not take the session answers its `Hello` with a `Refuse`.
//! "ckpt" is the checkpoint number N whose output is released by ack(N); "epoch" is the
//! activation epoch of DESIGN.md rule 8.

use serde::{Deserialize, Serialize};

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
/// 1 + 33 + 16 + 4 × 10 = 90 bytes), with room to spare. A connection that has not proved it
/// holds the cluster key gets a frame reader of this size, not of the configured frame maximum.
pub const HELLO_MAX_BODY: usize = 128;

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
    pub epoch: u64,
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
    pub epoch: u64,
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
    /// Bytes of all `Begin`, `Pages` and `State` bodies, each `Pages` body counted in its plain
    /// form (codec [`PAGES_PLAIN`], the pages as decoded).
    pub total_len: u64,
    /// CRC32 of those bodies, concatenated, in the same form: the checkpoint's digest covers
    /// the decoded pages, whatever encoding carried them (each frame's own CRC and MAC cover
    /// the bytes on the wire).
    pub crc: u32,
}

/// Standby → primary: checkpoint `ckpt` is applied to the replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// Checkpoint number.
    pub ckpt: u64,
    /// Standby's activation epoch.
    pub epoch: u64,
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
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    #[test]
    fn pages_head_plus_varint_equals_postcard_pages() {
        let mut rng = SplitMix64::new(1);
        for n in [0usize, 1, 7, PAGES_PER_FRAME] {
            let pfns: Vec<u64> = (0..n).map(|_| rng.next_u64() >> rng.below(64)).collect();
            let mut data = vec![0u8; n * 4096];
            rng.fill(&mut data);
            let pages = Pages {
                ckpt: rng.next_u64(),
                pfns: heapless::Vec::from_slice(&pfns).unwrap(),
                codec: rng.below(3) as u8,
                data: &data,
            };
            let mut a = vec![0u8; 300_000];
            let la = encode(&pages, &mut a).unwrap();
            let mut b = vec![0u8; 300_000];
            let mut lb = encode(
                &PagesHead {
                    ckpt: pages.ckpt,
                    pfns: &pfns,
                    codec: pages.codec,
                },
                &mut b,
            )
            .unwrap();
            lb += write_varint(data.len() as u64, &mut b[lb..]);
            b[lb..lb + data.len()].copy_from_slice(&data);
            lb += data.len();
            assert_eq!(&a[..la], &b[..lb]);
            let back: Pages = decode(Kind::Pages, &a[..la]).unwrap();
            assert_eq!(back, pages);
        }
    }

    #[test]
    fn literal_pages_body() {
        let p = Pages {
            ckpt: 300,
            pfns: heapless::Vec::from_slice(&[1, 129]).unwrap(),
            codec: PAGES_RECORDS,
            data: &[0x00, 0x00],
        };
        let mut b = [0u8; 32];
        let n = encode(&p, &mut b).unwrap();
        // ckpt, 2 pfns, codec, data length, data (two zero-page records).
        let want = [0xac, 0x02, 0x02, 0x01, 0x81, 0x01, 0x01, 0x02, 0x00, 0x00];
        assert_eq!(&b[..n], &want);
        assert_eq!(decode::<Pages>(Kind::Pages, &want).unwrap(), p);
    }

    #[test]
    fn literal_ack_body() {
        let mut b = [0u8; 16];
        let n = encode(
            &Ack {
                ckpt: 300,
                epoch: 2,
            },
            &mut b,
        )
        .unwrap();
        assert_eq!(&b[..n], &[0xac, 0x02, 0x02]);
    }

    #[test]
    fn too_many_pfns_is_an_error_not_a_panic() {
        let pfns: Vec<u64> = (0..65).collect();
        let mut b = vec![0u8; 4096];
        let mut n = encode(
            &PagesHead {
                ckpt: 1,
                pfns: &pfns,
                codec: PAGES_PLAIN,
            },
            &mut b,
        )
        .unwrap();
        n += write_varint(0, &mut b[n..]);
        assert!(matches!(
            decode::<Pages>(Kind::Pages, &b[..n]),
            Err(FrameError::Body { .. })
        ));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = SplitMix64::new(99);
        let mut buf = [0u8; 64];
        for _ in 0..20_000 {
            let n = rng.below(64) as usize;
            rng.fill(&mut buf[..n]);
            let _ = decode::<Hello>(Kind::Hello, &buf[..n]);
            let _ = decode::<Pages>(Kind::Pages, &buf[..n]);
            let _ = decode::<End>(Kind::End, &buf[..n]);
            let _ = decode::<Refuse>(Kind::Refuse, &buf[..n]);
        }
    }

    fn string<const N: usize>(rng: &mut SplitMix64) -> heapless::String<N> {
        let mut s = heapless::String::new();
        for _ in 0..rng.below(N as u64 + 1) {
            let c = char::from_u32(rng.below(0x2FF) as u32 + 0x20).unwrap_or('x');
            if s.push(c).is_err() {
                break;
            }
        }
        s
    }

    fn round_trip<'a, M>(m: &M, buf: &'a mut [u8], kind: Kind) -> M
    where
        M: Serialize + Deserialize<'a> + PartialEq + std::fmt::Debug,
    {
        let n = encode(m, buf).unwrap();
        decode(kind, &buf[..n]).unwrap()
    }

    /// Property: every message decodes to itself, for random field values.
    #[test]
    fn every_message_round_trips() {
        let mut rng = SplitMix64::new(2026);
        let mut buf = vec![0u8; 300_000];
        for _ in 0..2000 {
            let roles = [Role::Primary, Role::Standby, Role::Witness];
            let mut nonce = [0u8; 16];
            rng.fill(&mut nonce);
            let h = Hello {
                role: roles[rng.below(3) as usize],
                node: string(&mut rng),
                epoch: rng.next_u64(),
                nonce,
                domain_pages: rng.next_u64(),
                last_ckpt: rng.next_u64() >> rng.below(64),
                incarnation: rng.next_u64() >> rng.below(64),
            };
            assert_eq!(round_trip(&h, &mut buf, Kind::Hello), h);
            let b = Begin {
                ckpt: rng.next_u64(),
                full: rng.below(2) == 1,
                pages: rng.next_u64(),
                epoch: rng.next_u64(),
            };
            assert_eq!(round_trip(&b, &mut buf, Kind::Begin), b);
            let e = End {
                ckpt: rng.next_u64(),
                pages: rng.next_u64(),
                total_len: rng.next_u64(),
                crc: rng.next_u64() as u32,
            };
            assert_eq!(round_trip(&e, &mut buf, Kind::End), e);
            let a = Ack {
                ckpt: rng.next_u64(),
                epoch: rng.next_u64(),
            };
            assert_eq!(round_trip(&a, &mut buf, Kind::Ack), a);
            let r = Refuse {
                reason: string(&mut rng),
            };
            assert_eq!(round_trip(&r, &mut buf, Kind::Refuse), r);
            let mut data = vec![0u8; rng.below(2000) as usize];
            rng.fill(&mut data);
            let st = State {
                ckpt: rng.next_u64(),
                data: &data,
            };
            let n = encode(&st, &mut buf).unwrap();
            assert_eq!(decode::<State>(Kind::State, &buf[..n]).unwrap(), st);
        }
    }

    #[test]
    fn the_largest_hello_fits_hello_max_body() {
        let h = Hello {
            role: Role::Witness,
            node: node_name(&"\u{10FFFF}".repeat(NODE_NAME_LEN)),
            epoch: u64::MAX,
            nonce: [0xff; 16],
            domain_pages: u64::MAX,
            last_ckpt: u64::MAX,
            incarnation: u64::MAX,
        };
        assert_eq!(h.node.len(), NODE_NAME_LEN);
        let mut b = [0u8; 256];
        let n = encode(&h, &mut b).unwrap();
        assert_eq!(n, 90);
        assert!(n <= HELLO_MAX_BODY);
    }

    #[test]
    fn literal_hello_body() {
        let h = Hello {
            role: Role::Primary,
            node: node_name("a"),
            epoch: 2,
            nonce: [7; 16],
            domain_pages: 300,
            last_ckpt: 0,
            incarnation: 1,
        };
        let mut b = [0u8; 64];
        let n = encode(&h, &mut b).unwrap();
        let mut want = vec![0x00, 0x01, b'a', 0x02];
        want.extend([7u8; 16]);
        want.extend([0xac, 0x02, 0x00, 0x01]);
        assert_eq!(&b[..n], &want[..]);
        assert_eq!(decode::<Hello>(Kind::Hello, &want).unwrap(), h);
    }

    #[test]
    fn trailing_bytes_rejected() {
        let mut b = [0u8; 16];
        let n = encode(&Ack { ckpt: 1, epoch: 1 }, &mut b).unwrap();
        assert!(decode::<Ack>(Kind::Ack, &b[..n + 1]).is_err());
    }
}
