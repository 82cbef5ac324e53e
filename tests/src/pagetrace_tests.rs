use super::*;
use hsb_domain::codec_policy::CodecMode;

fn header() -> TraceHeader {
    TraceHeader {
        pfn_limit: 4096,
        ram_pages: 1024,
        period_us: 25_000,
        note: "unit test".into(),
    }
}

/// A small guest's checkpoints: counters bumped in a few words of some pages, a page rewritten
/// whole now and then, zero pages, pages seen for the first time.
fn checkpoints(n: u64) -> Vec<TraceCheckpoint> {
    let mut mem: HashMap<u64, Vec<u8>> = HashMap::new();
    let mut rng = hsb_common::rng::SplitMix64::new(7);
    let mut out = Vec::new();
    for i in 0..n {
        let mut pfns: Vec<u64> = (0..20).map(|_| rng.below(300) * 3).collect();
        pfns.sort_unstable();
        pfns.dedup();
        let mut data = Vec::new();
        for &p in &pfns {
            let page = mem.entry(p).or_insert_with(|| vec![0u8; PAGE_SIZE]);
            match p % 5 {
                0 => {}
                1 => page.iter_mut().for_each(|b| *b = rng.below(256) as u8),
                _ => {
                    let at = (rng.below(512) * 8) as usize;
                    page[at..at + 8].copy_from_slice(&(i + 1).to_le_bytes());
                }
            }
            data.extend_from_slice(page);
        }
        out.push(TraceCheckpoint {
            interval_us: 25_000 + i,
            pause_us: 100 + i,
            pfns,
            data,
        });
    }
    out
}

/// A checkpoint of `pfns` whose pages are all `byte`.
fn same_pages(byte: u8, pfns: Vec<u64>) -> TraceCheckpoint {
    TraceCheckpoint {
        data: vec![byte; pfns.len() * PAGE_SIZE],
        pfns,
        ..TraceCheckpoint::default()
    }
}

fn written(cs: &[TraceCheckpoint]) -> Vec<u8> {
    let mut w = TraceWriter::new(Vec::new(), header()).expect("writer");
    for c in cs {
        w.add(c).expect("add");
    }
    w.finish().expect("finish")
}

#[test]
fn a_trace_reads_back_every_page_version_exactly() {
    let cs = checkpoints(40);
    let file = written(&cs);
    let raw: usize = cs.iter().map(|c| c.data.len()).sum();
    assert!(
        file.len() < raw / 3,
        "{} bytes for {raw} of pages",
        file.len()
    );
    let mut r = TraceReader::new(&file[..]).expect("reader");
    assert_eq!(r.header(), &header());
    let mut c = TraceCheckpoint::default();
    for want in &cs {
        assert!(r.next_into(&mut c).expect("next"));
        assert_eq!(c.pfns, want.pfns);
        assert_eq!(c.data, want.data);
        assert_eq!(
            (c.interval_us, c.pause_us),
            (want.interval_us, want.pause_us)
        );
    }
    assert!(!r.next_into(&mut c).expect("end"));
}

#[test]
fn a_damaged_trace_is_refused_with_where_and_why() {
    let file = written(&checkpoints(5));
    let mut c = TraceCheckpoint::default();
    let read_all = |b: &[u8]| -> Result<u64, TraceError> {
        let mut r = TraceReader::new(b)?;
        let mut n = 0;
        let mut c = TraceCheckpoint::default();
        while r.next_into(&mut c)? {
            n += 1;
        }
        Ok(n)
    };
    assert!(matches!(read_all(b"HSBPTRC9"), Err(TraceError::Magic)));
    assert!(matches!(
        read_all(&file[..file.len() - 3]),
        Err(TraceError::Truncated { block: 5 })
    ));
    let mut bent = file.clone();
    let at = bent.len() - 10;
    bent[at] ^= 1;
    assert!(matches!(read_all(&bent), Err(TraceError::Crc { block: 5 })));
    // A block that claims more than a block may hold is refused before any allocation.
    let mut huge = file[..8].to_vec();
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    huge.extend_from_slice(&[0; 4]);
    let e = read_all(&huge).expect_err("huge");
    assert!(e.to_string().contains("at most"), "{e}");
    // Every prefix is either a clean, shorter trace or a clear error: never a panic.
    for n in 0..file.len() {
        let _ = read_all(&file[..n]);
    }
    let mut r = TraceReader::new(&file[..]).expect("reader");
    assert!(r.next_into(&mut c).expect("first"));
}

#[test]
fn the_writer_refuses_what_a_reader_could_not_take() {
    let mut w = TraceWriter::new(Vec::new(), header()).expect("writer");
    let c = |pfns| same_pages(1, pfns);
    assert!(w.add(&c(vec![5, 5])).is_err());
    assert!(w.add(&c(vec![7, 3])).is_err());
    assert!(w.add(&c(vec![4096])).is_err());
    assert!(w.add(&c(vec![1, 2, 4095])).is_ok());
    let bad = TraceHeader {
        ram_pages: 0,
        ..header()
    };
    assert!(TraceWriter::new(Vec::new(), bad).is_err());
}

#[test]
fn a_replay_lands_every_page_and_encoding_sends_fewer_bytes() {
    let file = written(&checkpoints(40));
    let plain = replay(&file[..], CodecMode::Never, 0).expect("plain replay");
    let enc = replay(&file[..], CodecMode::Always, 0).expect("encoded replay");
    assert_eq!(plain.checkpoints, 40);
    assert_eq!(plain.pages, enc.pages);
    assert_eq!(plain.pages_checked, enc.pages_checked);
    assert_eq!(enc.encoded, 39);
    assert_eq!(plain.encoded, 0);
    assert!(plain.wire_bytes > plain.page_bytes);
    assert!(
        enc.wire_bytes * 2 < plain.wire_bytes,
        "encoded {} plain {}",
        enc.wire_bytes,
        plain.wire_bytes
    );
    // Without a cache there are no deltas: more bytes than with one, still exact.
    let small = replay(&file[..], CodecMode::Always, 1).expect("tiny cache");
    assert!(small.wire_bytes > enc.wire_bytes);
}

#[test]
fn no_trace_holds_more_pages_than_its_guest_has() {
    let mut v = Versions::new(2);
    let page = vec![7u8; PAGE_SIZE];
    assert!(v.store(1, &page).is_ok());
    assert!(v.store(9, &page).is_ok());
    assert!(
        v.store(1, &page).is_ok(),
        "a new version of a page it holds"
    );
    let e = v.store(5, &page).expect_err("a third page");
    assert!(e.contains("one more than the guest's 2 pages"), "{e}");
    assert_eq!(v.pfns(), vec![1, 9]);
    // The writer refuses a checkpoint that would pass the guest's RAM pages in all.
    let mut w = TraceWriter::new(
        Vec::new(),
        TraceHeader {
            ram_pages: 3,
            ..header()
        },
    )
    .expect("writer");
    let c = |pfns| same_pages(7, pfns);
    assert!(w.add(&c(vec![1, 2])).is_ok());
    assert!(w.add(&c(vec![2, 3])).is_ok());
    let e = w.add(&c(vec![3, 4])).expect_err("a fourth page");
    assert!(
        e.to_string().contains("more than the guest's 3 RAM pages"),
        "{e}"
    );
    // Refused for what it is, the checkpoint left the trace as it was.
    assert!(w.add(&c(vec![1, 3])).is_ok());
    let file = w.finish().expect("finish");
    let mut r = TraceReader::new(&file[..]).expect("reader");
    let mut got = TraceCheckpoint::default();
    let mut n = 0;
    while r.next_into(&mut got).expect("every checkpoint reads back") {
        n += 1;
    }
    assert_eq!(n, 3);
}
