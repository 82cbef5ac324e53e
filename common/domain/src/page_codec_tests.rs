//! Unit tests of `page_codec`.

use super::*;
use hsb_common::rng::SplitMix64;

fn decode(rec: &[u8], reference: &[u8]) -> Vec<u8> {
    let (r, len) = read_record(rec).unwrap();
    assert_eq!(len, rec.len(), "a record is read whole");
    let mut page = vec![0u8; PAGE_SIZE];
    match r {
        Record::Zero => {}
        Record::Raw(p) => page.copy_from_slice(p),
        Record::Delta(ops) => {
            page.copy_from_slice(reference);
            apply_ops(ops, &mut page).unwrap();
        }
        Record::Sparse(ops) => apply_ops(ops, &mut page).unwrap(),
    }
    page
}

fn round_trip(page: &[u8], previous: Option<&[u8]>) -> (usize, RecordKind) {
    let mut out = vec![0u8; RECORD_ROOM];
    let (n, kind) = encode_page(page, previous, &mut out);
    assert!(n <= MAX_RECORD);
    let zero = vec![0u8; PAGE_SIZE];
    assert_eq!(decode(&out[..n], previous.unwrap_or(&zero)), page);
    (n, kind)
}

#[test]
fn every_kind_of_page_round_trips() {
    let mut rng = SplitMix64::new(16);
    let zero = vec![0u8; PAGE_SIZE];
    assert_eq!(round_trip(&zero, None), (1, RecordKind::Zero));
    assert_eq!(round_trip(&zero, Some(&zero)), (1, RecordKind::Zero));
    let mut random = vec![0u8; PAGE_SIZE];
    rng.fill(&mut random);
    assert_eq!(round_trip(&random, None), (MAX_RECORD, RecordKind::Raw));
    // A counter changed: one word differs.
    let mut next = random.clone();
    next[808] ^= 1;
    let (n, kind) = round_trip(&next, Some(&random));
    assert_eq!(kind, RecordKind::Delta);
    assert_eq!(
        n,
        3 + 1 + 1 + 8,
        "tag, length, skip 101 words, one literal word"
    );
    // Unchanged since the last version: an empty delta.
    assert_eq!(round_trip(&random, Some(&random)), (3, RecordKind::Delta));
    // A few cache lines rewritten.
    let mut lines = random.clone();
    for l in [0usize, 17, 63] {
        rng.fill(&mut lines[l * 64..l * 64 + 64]);
    }
    let (n, kind) = round_trip(&lines, Some(&random));
    assert_eq!(kind, RecordKind::Delta);
    assert!(n < 3 * 64 + 32, "{n}");
    // Rewritten whole: raw, even with a previous version.
    let mut other = vec![0u8; PAGE_SIZE];
    rng.fill(&mut other);
    assert_eq!(round_trip(&other, Some(&random)).1, RecordKind::Raw);
    // Mostly zero, no previous version: sparse.
    let mut sparse = zero.clone();
    sparse[4088..].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(round_trip(&sparse, None), (3 + 3 + 8, RecordKind::Sparse));
}

/// Property: random pages made of random runs of changed words round-trip, whatever the mix.
#[test]
fn random_runs_round_trip() {
    let mut rng = SplitMix64::new(2026);
    let mut base = vec![0u8; PAGE_SIZE];
    for _ in 0..2000 {
        rng.fill(&mut base);
        let mut page = base.clone();
        let runs = rng.below(80);
        for _ in 0..runs {
            let at = rng.below(PAGE_SIZE as u64) as usize;
            let len = (rng.below(300) as usize).min(PAGE_SIZE - at);
            rng.fill(&mut page[at..at + len]);
        }
        if rng.below(4) == 0 {
            page.fill(0);
            page[rng.below(PAGE_SIZE as u64) as usize] = 1;
        }
        let with = rng.below(2) == 0;
        round_trip(&page, with.then_some(&base[..]));
    }
}

#[test]
fn bad_records_are_errors() {
    assert_eq!(read_record(&[]), Err(CodecError::Truncated));
    assert_eq!(read_record(&[9]), Err(CodecError::UnknownTag(9)));
    assert_eq!(read_record(&[TAG_RAW, 1, 2]), Err(CodecError::Truncated));
    assert_eq!(read_record(&[TAG_DELTA, 1]), Err(CodecError::Truncated));
    assert_eq!(
        read_record(&[TAG_DELTA, 0xff, 0xff]),
        Err(CodecError::OpsTooLong(0xffff))
    );
    assert_eq!(
        read_record(&[TAG_SPARSE, 4, 0, 1, 1]),
        Err(CodecError::Truncated)
    );
    let mut page = vec![0u8; PAGE_SIZE];
    // Past the end of the page, by the skip or the literal.
    assert_eq!(
        apply_ops(&[0x80, 0x04, 1, 0, 0, 0, 0, 0, 0, 0, 0], &mut page),
        Err(CodecError::BadOp)
    );
    let mut past = vec![0xff, 0x03, 2];
    past.extend([7u8; 16]);
    assert_eq!(apply_ops(&past, &mut page), Err(CodecError::BadOp));
    // An empty literal.
    assert_eq!(apply_ops(&[0, 0], &mut page), Err(CodecError::BadOp));
    // A literal that ends early, a varint that never ends.
    assert_eq!(
        apply_ops(&[0, 1, 1, 2, 3], &mut page),
        Err(CodecError::Truncated)
    );
    assert_eq!(
        apply_ops(&[0x80; 12], &mut page),
        Err(CodecError::BadVarint)
    );
    assert_eq!(apply_ops(&[0x80], &mut page), Err(CodecError::Truncated));
    // The last word exactly: fine.
    let mut last = vec![0xff, 0x03, 1];
    last.extend([9u8; 8]);
    apply_ops(&last, &mut page).unwrap();
    assert_eq!(&page[PAGE_SIZE - 8..], &[9u8; 8]);
}

#[test]
fn compression_round_trips_and_refuses_what_does_not_pay() {
    let mut rng = SplitMix64::new(5);
    let mut text = Vec::new();
    while text.len() < 64 * 1024 {
        text.extend_from_slice(format!("line {} of a log file\n", rng.below(100)).as_bytes());
    }
    let mut out = vec![0u8; compressed_room(text.len())];
    let n = compress(&text, &mut out).expect("text compresses");
    assert!(n < text.len() / 2);
    let mut back = vec![0u8; text.len()];
    assert_eq!(
        decompress(&out[..n], &mut back, text.len()).unwrap(),
        &text[..]
    );
    // Bounded: more than `max` is refused before decompressing.
    assert!(matches!(
        decompress(&out[..n], &mut back, text.len() - 1),
        Err(CodecError::TooLong { .. })
    ));
    // Corrupt or cut short: an error, never a panic.
    assert_eq!(
        decompress(&out[..n / 2], &mut back, text.len()),
        Err(CodecError::Lz4)
    );
    let mut random = vec![0u8; 64 * 1024];
    rng.fill(&mut random);
    let mut out = vec![0u8; compressed_room(random.len())];
    assert_eq!(compress(&random, &mut out), None);
}

/// Property: arbitrary bytes never panic any decoder, and never write outside the page.
#[test]
fn random_bytes_never_panic() {
    let mut rng = SplitMix64::new(77);
    let mut buf = vec![0u8; 600];
    let mut page = vec![0u8; PAGE_SIZE];
    let mut out = vec![0u8; 4 * PAGE_SIZE];
    for i in 0..50_000 {
        let n = rng.below(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        if i % 3 == 0 && n > 0 {
            buf[0] = (i % 5) as u8;
        }
        if let Ok((Record::Delta(ops) | Record::Sparse(ops), _)) = read_record(&buf[..n]) {
            let _ = apply_ops(ops, &mut page);
        }
        let _ = apply_ops(&buf[..n], &mut page);
        let _ = decompress(&buf[..n], &mut out, 3 * PAGE_SIZE);
    }
}
