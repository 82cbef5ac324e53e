//! Unit tests of `model`.

use super::*;

#[test]
fn service_state_lives_in_pages() {
    let mut d = ModelDomain::new(MIN_PAGES + 10, 0, 1);
    let mut v = Vec::with_capacity(d.pages as usize);
    d.take_dirty(false, &mut v).unwrap();
    assert_eq!(v.len() as u64, d.pages, "a new domain is all dirty");
    assert_eq!(d.handle("INCR"), "1");
    assert_eq!(d.handle("incr"), "2");
    assert_eq!(d.handle("GET"), "2");
    assert_eq!(d.handle("PUT k hello"), "OK");
    assert_eq!(d.handle("GET k"), "hello");
    assert_eq!(d.handle("GET nope"), "NIL");
    assert_eq!(d.handle("PING"), "PONG");
    assert!(d.handle("FROB").starts_with("ERR"));
    assert!(d
        .handle(&format!("PUT {} v", "k".repeat(41)))
        .starts_with("ERR"));
    v.clear();
    d.take_dirty(false, &mut v).unwrap();
    assert!(v.contains(&0));
    assert!(v
        .iter()
        .any(|&p| (KV_FIRST_PAGE..KV_FIRST_PAGE + KV_PAGES).contains(&p)));
    // Copy every page and the state into a replica: identical domains.
    let mut r = ModelDomain::blank(d.pages);
    let all: Vec<u64> = (0..d.pages).collect();
    let mut buf = vec![0u8; all.len() * PAGE_SIZE];
    d.read_pages(&all, &mut buf).unwrap();
    r.write_pages(&all, &buf).unwrap();
    let mut s = [0u8; STATE_LEN];
    let n = d.save_state(&mut s).unwrap();
    r.load_state(&s[..n]).unwrap();
    assert_eq!(r.digest(), d.digest());
    assert_eq!(r.handle("GET k"), "hello");
    assert_eq!(r.handle("INCR"), "3");
}

#[test]
fn workload_writes_at_its_rate_and_not_while_suspended() {
    let mut d = ModelDomain::new(MIN_PAGES + 5000, 1000, 7);
    let mut v = Vec::with_capacity(d.pages as usize);
    d.take_dirty(false, &mut v).unwrap();
    d.run(Nanos(0));
    d.run(Nanos::from_millis(100));
    v.clear();
    d.take_dirty(false, &mut v).unwrap();
    assert_eq!(v.len(), 100);
    d.suspend().unwrap();
    d.run(Nanos::from_millis(200));
    v.clear();
    d.take_dirty(false, &mut v).unwrap();
    assert!(v.is_empty());
    assert!(d.suspend().is_err());
    d.resume().unwrap();
}

#[test]
fn write_patterns_change_what_they_say() {
    for (word, pattern) in [
        ("counters", WritePattern::Counters),
        ("lines:3", WritePattern::Lines(3)),
        ("lines:64", WritePattern::Lines(64)),
        ("pages", WritePattern::Pages),
    ] {
        assert_eq!(WritePattern::parse(word), Some(pattern));
        assert_eq!(pattern.to_string(), word);
    }
    for bad in ["", "lines:0", "lines:65", "lines:", "line:3", "Pages"] {
        assert_eq!(WritePattern::parse(bad), None, "{bad}");
    }
    for (pattern, most) in [
        (WritePattern::Counters, 8),
        (WritePattern::Lines(3), 3 * 64),
        (WritePattern::Pages, PAGE_SIZE),
    ] {
        let mut d = ModelDomain::new(MIN_PAGES + 100, 1000, 3).with_pattern(pattern);
        let before = d.mem.clone();
        let mut v = Vec::with_capacity(d.pages as usize);
        d.take_dirty(false, &mut v).unwrap();
        v.clear();
        d.run(Nanos(0));
        d.run(Nanos::from_millis(50));
        d.take_dirty(false, &mut v).unwrap();
        v.retain(|&p| p >= KV_FIRST_PAGE + KV_PAGES);
        assert_eq!(v.len(), 50, "{pattern}");
        for &p in &v {
            let at = p as usize * PAGE_SIZE;
            let changed = (at..at + PAGE_SIZE)
                .filter(|&i| d.mem[i] != before[i])
                .count();
            assert!(changed > 0 && changed <= most, "{pattern}: {changed} bytes");
        }
    }
}

#[test]
fn image_round_trip_and_bad_images() {
    let mut d = ModelDomain::new(MIN_PAGES + 3, 0, 4);
    d.handle("INCR");
    d.handle("PUT a b");
    let dir = std::env::temp_dir().join(format!("hsb-image-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("img");
    d.save_image(&p).unwrap();
    let back = ModelDomain::load_image(&p, d.page_count(), 0).unwrap();
    assert_eq!(back.digest(), d.digest());
    assert!(ModelDomain::load_image(&p, d.page_count() + 1, 0).is_err());
    std::fs::write(&p, b"junk").unwrap();
    assert!(ModelDomain::load_image(&p, d.page_count(), 0)
        .unwrap_err()
        .contains("not a model domain image"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn replica_rejects_bad_input() {
    let mut r = ModelDomain::blank(MIN_PAGES);
    assert!(r.write_pages(&[MIN_PAGES], &[0u8; PAGE_SIZE]).is_err());
    assert!(r.write_pages(&[0], &[0u8; 10]).is_err());
    assert!(r.load_state(&[1, 2, 3]).is_err());
    assert!(!r.formatted());
}

#[test]
fn whole_pages_leave_nothing_to_save() {
    // `pages` is made from a pool (cheap to write), yet neither a delta against the page's
    // previous version nor LZ4 over a frame's worth of pages finds anything to save.
    let pattern = WritePattern::Pages;
    let mut rng = SplitMix64::new(9);
    let mut frame = vec![0u8; 64 * PAGE_SIZE];
    let mut out = vec![0u8; crate::page_codec::RECORD_ROOM];
    for p in frame.chunks_exact_mut(PAGE_SIZE) {
        pattern.write(p, &mut rng);
        let before = p.to_vec();
        pattern.write(p, &mut rng);
        let (_, kind) = crate::page_codec::encode_page(p, Some(&before), &mut out);
        assert_eq!(kind, crate::page_codec::RecordKind::Raw, "no delta pays");
        let same = p.iter().zip(&before).filter(|(a, b)| a == b).count();
        assert!(same < PAGE_SIZE / 64, "{same} bytes unchanged");
    }
    let mut packed = vec![0u8; crate::page_codec::compressed_room(frame.len())];
    assert_eq!(
        crate::page_codec::compress(&frame, &mut packed),
        None,
        "LZ4 saves nothing"
    );
    let raw = lz4_flex::block::compress(&frame);
    assert!(
        raw.len() >= frame.len(),
        "LZ4: {} of {}",
        raw.len(),
        frame.len()
    );
}
