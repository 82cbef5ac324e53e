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
