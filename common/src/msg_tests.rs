//! Unit tests of `msg`.

use super::*;
use crate::decision::Epoch;
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
            epoch: Epoch(2),
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
        let _ = decode::<DiskWrite>(Kind::Disk, &buf[..n]);
        let _ = decode::<DiskPlan>(Kind::DiskPlan, &buf[..n]);
        let _ = decode::<DiskDirty>(Kind::DiskDirty, &buf[..n]);
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
            epoch: Epoch(rng.next_u64()),
            nonce,
            domain_pages: rng.next_u64(),
            last_ckpt: rng.next_u64() >> rng.below(64),
            incarnation: rng.next_u64() >> rng.below(64),
            disk: DiskHello {
                size: rng.next_u64() >> rng.below(64),
                gen: nonce,
                base: rng.next_u64() >> rng.below(64),
                torn: rng.below(2) == 1,
                toward: [rng.next_u64() as u8; 16],
                dirty_frames: rng.next_u64() as u32,
            },
        };
        assert_eq!(round_trip(&h, &mut buf, Kind::Hello), h);
        let mut history = heapless::Vec::new();
        for _ in 0..rng.below(DISK_HISTORY as u64 + 1) {
            let _ = history.push(Fork {
                gen: nonce,
                at: rng.next_u64() >> rng.below(64),
            });
        }
        let plan = DiskPlan {
            ckpt: rng.next_u64(),
            gen: nonce,
            history,
            full: rng.below(2) == 1,
            tracks: rng.next_u64() >> rng.below(64),
            track: rng.next_u64() as u32,
            journal_max: rng.next_u64() >> rng.below(64),
        };
        assert_eq!(round_trip(&plan, &mut buf, Kind::DiskPlan), plan);
        let b = Begin {
            ckpt: rng.next_u64(),
            full: rng.below(2) == 1,
            pages: rng.next_u64(),
            epoch: Epoch(rng.next_u64()),
        };
        assert_eq!(round_trip(&b, &mut buf, Kind::Begin), b);
        let e = End {
            ckpt: rng.next_u64(),
            pages: rng.next_u64(),
            total_len: rng.next_u64(),
            crc: rng.next_u64() as u32,
            disk_writes: rng.next_u64() >> rng.below(64),
            disk_bytes: rng.next_u64() >> rng.below(64),
            disk_synced: rng.next_u64() >> rng.below(64),
        };
        assert_eq!(round_trip(&e, &mut buf, Kind::End), e);
        let a = Ack {
            ckpt: rng.next_u64(),
            epoch: Epoch(rng.next_u64()),
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
        let dd = DiskDirty {
            first: rng.next_u64() >> rng.below(64),
            bits: &data[..data.len().min(DIRTY_BYTES)],
        };
        let n = encode(&dd, &mut buf).unwrap();
        assert_eq!(decode::<DiskDirty>(Kind::DiskDirty, &buf[..n]).unwrap(), dd);
    }
}

#[test]
fn disk_write_head_plus_data_equals_postcard_disk_write() {
    let mut rng = SplitMix64::new(14);
    for len in [0usize, 1, 511, 4096, DISK_PIECE] {
        let mut data = vec![0u8; len];
        rng.fill(&mut data);
        let w = DiskWrite {
            ckpt: rng.next_u64() >> rng.below(64),
            offset: rng.next_u64() >> rng.below(64),
            data: &data,
        };
        let mut a = vec![0u8; DISK_PIECE + 64];
        let la = encode(&w, &mut a).unwrap();
        let mut b = vec![0u8; DISK_PIECE + 64];
        let n = disk_write_head(w.ckpt, w.offset, len, &mut b);
        assert!(n <= DISK_HEAD_MAX);
        b[n..n + len].copy_from_slice(&data);
        assert_eq!(&a[..la], &b[..n + len]);
        assert_eq!(decode::<DiskWrite>(Kind::Disk, &a[..la]).unwrap(), w);
    }
    // Literal: checkpoint 300, offset 4096, three bytes.
    let mut b = [0u8; 16];
    let n = encode(
        &DiskWrite {
            ckpt: 300,
            offset: 4096,
            data: &[1, 2, 3],
        },
        &mut b,
    )
    .unwrap();
    assert_eq!(&b[..n], &[0xac, 0x02, 0x80, 0x20, 0x03, 1, 2, 3]);
}

#[test]
fn a_plan_with_too_long_a_history_is_an_error_not_a_panic() {
    // postcard: ckpt, gen (16 bytes), history length 9 ...
    let mut b = vec![1u8];
    b.extend([0u8; 16]);
    b.push(DISK_HISTORY as u8 + 1);
    b.extend(std::iter::repeat_n(0u8, 17 * (DISK_HISTORY + 1)));
    b.extend([0, 0, 0, 0]);
    assert!(matches!(
        decode::<DiskPlan>(Kind::DiskPlan, &b),
        Err(FrameError::Body { .. })
    ));
}

#[test]
fn the_largest_hello_fits_hello_max_body() {
    let h = Hello {
        role: Role::Witness,
        node: node_name(&"\u{10FFFF}".repeat(NODE_NAME_LEN)),
        epoch: Epoch(u64::MAX),
        nonce: [0xff; 16],
        domain_pages: u64::MAX,
        last_ckpt: u64::MAX,
        incarnation: u64::MAX,
        disk: DiskHello {
            size: u64::MAX,
            gen: [0xff; 16],
            base: u64::MAX,
            torn: true,
            toward: [0xff; 16],
            dirty_frames: u32::MAX,
        },
    };
    assert_eq!(h.node.len(), NODE_NAME_LEN);
    let mut b = [0u8; 256];
    let n = encode(&h, &mut b).unwrap();
    assert_eq!(n, 148);
    assert!(n <= HELLO_MAX_BODY);
}

#[test]
fn literal_hello_body() {
    let h = Hello {
        role: Role::Primary,
        node: node_name("a"),
        epoch: Epoch(2),
        nonce: [7; 16],
        domain_pages: 300,
        last_ckpt: 0,
        incarnation: 1,
        disk: DiskHello {
            size: 4096,
            gen: [5; 16],
            base: 3,
            torn: false,
            toward: [0; 16],
            dirty_frames: 0,
        },
    };
    let mut b = [0u8; 128];
    let n = encode(&h, &mut b).unwrap();
    let mut want = vec![0x00, 0x01, b'a', 0x02];
    want.extend([7u8; 16]);
    want.extend([0xac, 0x02, 0x00, 0x01]);
    want.extend([0x80, 0x20]);
    want.extend([5u8; 16]);
    want.extend([0x03, 0x00]);
    want.extend([0u8; 16]);
    want.push(0x00);
    assert_eq!(&b[..n], &want[..]);
    assert_eq!(decode::<Hello>(Kind::Hello, &want).unwrap(), h);
}

#[test]
fn trailing_bytes_rejected() {
    let mut b = [0u8; 16];
    let n = encode(
        &Ack {
            ckpt: 1,
            epoch: Epoch(1),
        },
        &mut b,
    )
    .unwrap();
    assert!(decode::<Ack>(Kind::Ack, &b[..n + 1]).is_err());
}
