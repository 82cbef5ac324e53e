//! The model with a disk: PUTs logged before their reply, the disk workload, and memory
//! and disk agreeing at every checkpoint of a replica.
use super::*;
use crate::checkpoint::{Receiver, ResyncSender, Staging};
use crate::disk::{Disk, DiskConfig};
use crate::domain::CheckpointSource;
use hsb_common::frame::{self, Header, Kind, HEADER_LEN};
use hsb_common::key::ClusterKey;
use hsb_common::session::{Session, Side};
use hsb_common::time::Nanos;

const SIZE: u64 = 8 << 20;

struct Dir(std::path::PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
fn dir(tag: &str) -> Dir {
    let p = std::env::temp_dir().join(format!("hsb-model-disk-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    Dir(p)
}
fn cfg(d: &Dir, name: &str) -> DiskConfig {
    DiskConfig {
        path: d.0.join(name),
        size: SIZE,
        journal_max: 4 << 20,
    }
}
fn wl(rate: u64, write: u64, random: bool) -> DiskWorkload {
    DiskWorkload {
        rate,
        write,
        random,
    }
}
fn primary(d: &Dir, rate: u64, w: DiskWorkload) -> ModelDomain {
    let mut m = ModelDomain::new(min_pages(SIZE) + 50, rate, 3);
    let mut disk = Disk::open(&cfg(d, "p.img")).unwrap();
    disk.start_primary(1).unwrap();
    m.attach_disk(disk, w, true).unwrap();
    m
}

#[test]
fn a_put_is_on_the_disk_before_its_reply_and_the_log_agrees_with_memory() {
    let d = dir("put");
    let mut m = primary(&d, 0, wl(0, 4096, false));
    assert_eq!(m.handle("PUT colour blue"), "OK");
    assert_eq!(m.log_seq(), 1);
    // The record is in the image already (the reply is produced after it).
    let mut b = vec![0u8; 4096];
    m.disk_ref().unwrap().read(0, &mut b).unwrap();
    assert_eq!(parse_record(&b[..RECORD]).map(|r| r.2), Some(&b"blue"[..]));
    for i in 0..100 {
        assert_eq!(m.handle(&format!("PUT k{} v{i}", i % 7)), "OK");
    }
    assert_eq!(m.handle("GET k3"), "v94");
    assert_eq!(m.verify_disk_log().unwrap(), 101);
    m.verify_disk().unwrap();
    assert_eq!(
        m.disk_digest(),
        Some(m.disk_ref().unwrap().digest().unwrap())
    );
    assert!(m
        .handle(&format!("PUT k {}", "v".repeat(85)))
        .starts_with("ERR"));
    assert_eq!(m.log_seq(), 101, "a refused PUT logs nothing");
}

#[test]
fn the_log_is_a_ring_and_the_check_covers_what_it_holds() {
    let d = dir("ring");
    let mut m = primary(&d, 0, wl(0, 4096, false));
    let cap = m.disk.as_ref().unwrap().layout.log_blocks * RECORDS_PER_BLOCK;
    for i in 0..cap + 40 {
        assert_eq!(m.handle(&format!("PUT key{} {i}", i % 300)), "OK");
    }
    let n = m.verify_disk_log().unwrap();
    assert!(n > cap - RECORDS_PER_BLOCK && n <= cap, "{n} of {cap}");
    m.verify_disk().unwrap();
}

#[test]
fn the_put_log_reads_back_from_the_image_file() {
    let d = dir("readback");
    let mut m = primary(&d, 0, wl(0, 4096, false));
    for i in 0..40 {
        assert_eq!(m.handle(&format!("PUT key{i} value{i}")), "OK");
    }
    // Read from outside the guest, as the fault suite reads a daemon's image.
    let image = std::fs::read(d.0.join("p.img")).unwrap();
    let log = &image[..put_log_bytes(SIZE) as usize];
    let recs = put_log_records(log);
    assert_eq!(recs.len(), 40);
    assert!(recs.contains(&(7, "key7".into(), "value7".into())));
    assert!(put_log_records(&log[RECORD * 16..]).len() == 24);
}

#[test]
fn the_workload_writes_disk_blocks_at_its_rate_and_memory_keeps_their_crcs() {
    for (w, random) in [(4096, false), (64 << 10, true), (1 << 20, false)] {
        let d = dir(&format!("wl{w}{random}"));
        let mut m = primary(&d, 0, wl(400 * w, w, random));
        m.run(Nanos(0));
        m.run(Nanos::from_millis(250));
        assert_eq!(m.disk_stats().unwrap().writes, 100, "write size {w}");
        assert_eq!(m.disk_writes(), 100);
        m.verify_disk().unwrap();
        assert_eq!(
            m.disk_digest(),
            Some(m.disk_ref().unwrap().digest().unwrap())
        );
        assert_eq!(m.disk_stats().unwrap().latency.count(), 100);
    }
}

#[test]
fn a_put_that_cannot_be_logged_waits_and_changes_nothing() {
    let d = dir("wait");
    let mut m = primary(&d, 0, wl(0, 4096, false));
    assert_eq!(m.handle("PUT a 1"), "OK");
    let disk = m.disk_mut().unwrap();
    disk.start_journal();
    while disk.write(1 << 20, &[1; 4096], false).is_ok() {}
    assert!(!m.can_take_request());
    assert_eq!(m.handle("PUT a 2"), "ERR disk busy, try again");
    assert_eq!(m.handle("GET a"), "1");
    assert_eq!(m.log_seq(), 1);
    m.disk_mut().unwrap().clear_journal();
    assert!(m.can_take_request());
    assert_eq!(m.handle("PUT a 2"), "OK");
}

#[test]
fn a_put_of_a_later_checkpoint_on_the_disk_is_found() {
    let d = dir("later");
    let mut m = primary(&d, 0, wl(0, 4096, false));
    m.handle("PUT a 1");
    let img = d.0.join("mem.img");
    m.save_image(&img).unwrap();
    m.handle("PUT a 2");
    // The memory as it was before the second PUT, the disk as it is after it.
    let disk = m.take_disk().unwrap();
    let mut back = ModelDomain::load_image(&img, m.page_count(), 0).unwrap();
    back.attach_disk(disk, wl(0, 4096, false), false).unwrap();
    let e = back.verify_disk_log().unwrap_err();
    assert!(e.contains("later checkpoint"), "{e}");
    assert!(back.verify_disk().is_err());
}

#[test]
fn memory_and_disk_agree_at_every_checkpoint_of_the_replica() {
    let d = dir("agree");
    let mut p = primary(&d, 3000, wl(2 << 20, 16 << 10, true));
    let pages = p.page_count();
    let mut r = ModelDomain::blank(pages);
    r.attach_disk(
        Disk::open(&cfg(&d, "r.img")).unwrap(),
        wl(0, 4096, false),
        false,
    )
    .unwrap();
    let k = ClusterKey::from_bytes([3; 32]);
    let mut tx = Session::new(&k, &[1; 16], &[2; 16], Side::Initiator);
    let mut rxs = Session::new(&k, &[1; 16], &[2; 16], Side::Responder);
    let mut st = Staging::with_disk(pages, 4 << 20);
    let mut rx = Receiver::new(pages).with_disk(SIZE, 4 << 20);
    let mut rs = ResyncSender::new(1 << 20);
    let mut wire = Vec::new();
    let mut t = 0;
    // Session: report, plan, copies while the guest runs, then the full sync.
    let rep = r.disk_ref().unwrap().report();
    let plan = p.disk_mut().unwrap().plan(&rep, 1);
    let mut buf = vec![0u8; 1024];
    let n = tx.write(Kind::DiskPlan, &plan, &mut buf).unwrap();
    wire.extend_from_slice(&buf[..n]);
    loop {
        let n = rs.fill(p.disk_mut().unwrap(), &mut tx).unwrap();
        wire.extend_from_slice(rs.bytes());
        t += 1;
        p.run(Nanos::from_millis(t));
        if n == 0 && p.disk_ref().unwrap().resync_ready() {
            break;
        }
    }
    for ckpt in 1..30u64 {
        if ckpt > 1 {
            t += 25;
            p.run(Nanos::from_millis(t));
            p.handle(&format!("PUT key{} value{ckpt}", ckpt % 5));
            p.handle("INCR");
        }
        p.suspend().unwrap();
        st.capture(&mut p, ckpt, 1, ckpt == 1).unwrap();
        let (mem, disk) = (p.digest(), p.disk_digest());
        p.resume().unwrap();
        st.put_disk(&mut p).unwrap();
        st.seal(&mut tx).unwrap();
        p.disk_mut().unwrap().set_open(ckpt + 1);
        wire.extend_from_slice(st.bytes());
        // Deliver.
        let mut pos = 0;
        while pos < wire.len() {
            let h = Header::parse(&wire[pos..], frame::MAX_BODY_LEN).unwrap();
            let end = pos + h.frame_len();
            let hash = rxs.open(&wire[pos..end]).unwrap();
            let got = rx
                .on_frame_to(h.kind, &wire[pos + HEADER_LEN..end], &hash, &mut r)
                .unwrap();
            if got.is_some() {
                assert_eq!(rx.apply(&mut r).unwrap(), ckpt);
            }
            pos = end;
        }
        wire.clear();
        // The replica at `ckpt`: the primary's memory and disk at its capture.
        assert_eq!(r.digest(), mem, "memory at checkpoint {ckpt}");
        assert_eq!(r.disk_digest(), disk, "memory's disk table at {ckpt}");
        assert_eq!(
            r.disk_ref().unwrap().digest().unwrap(),
            disk.unwrap(),
            "the replica's image at {ckpt}"
        );
        r.verify_disk().unwrap();
        r.verify_disk_log().unwrap();
        p.disk_mut().unwrap().acked(ckpt);
    }
    assert!(p.disk_stats().unwrap().writes > 50, "{:?}", p.disk_stats());
    assert_eq!(r.handle("GET key3"), "value28");
}

#[test]
fn a_failing_image_at_the_primary_fails_the_put_and_changes_nothing() {
    let d = dir("fail");
    let mut m = primary(&d, 0, wl(1 << 20, 4096, false));
    assert_eq!(m.handle("PUT a 1"), "OK");
    m.disk_mut().unwrap().make_read_only_for_test().unwrap();
    let r = m.handle("PUT a 2");
    assert!(r.starts_with("ERR disk: disk image"), "{r}");
    assert_eq!(m.handle("GET a"), "1");
    assert_eq!(m.log_seq(), 1);
    // The workload's writes fail too: counted, and memory keeps what the disk has.
    m.run(Nanos(0));
    m.run(Nanos::from_millis(100));
    let st = m.disk_stats().unwrap();
    assert!(st.errors >= 1 && st.writes == 0, "{st:?}");
    assert!(m.disk_ref().unwrap().stats().errors >= 2);
    assert!(m.disk_ref().unwrap().last_error().is_some());
    m.verify_disk().unwrap();
    m.verify_disk_log().unwrap();
}

#[test]
fn disk_settings_are_checked_before_a_daemon_acts() {
    use hsb_common::config::{Config, KeySpec, ValueKind};
    static SCHEMA: std::sync::OnceLock<Vec<KeySpec>> = std::sync::OnceLock::new();
    let schema = SCHEMA.get_or_init(|| {
        let mut v: Vec<KeySpec> = DISK_KEYS.to_vec();
        v.push(KeySpec {
            key: "state_file",
            kind: ValueKind::Path,
            default: Some("/var/lib/hsb/hsb.state"),
            help: "",
        });
        v
    });
    let load = |text: &str| {
        let c = Config::from_text(schema, "t.conf", text, &[]).map_err(|e| e.to_string())?;
        DiskSettings::from_config(&c).map_err(|e| e.to_string())
    };
    let d = load("state_file = /x/a.state\n").unwrap().unwrap();
    assert_eq!(d.disk.path, std::path::PathBuf::from("/x/a.state.disk"));
    assert_eq!((d.disk.size, d.disk.journal_max), (64 << 20, 8 << 20));
    assert_eq!(d.workload.write, 4096);
    assert!(load("model.disk_size = 0\n").unwrap().is_none());
    for (text, key) in [
        ("model.disk_size = 5000\n", "model.disk_size"),
        ("disk.journal_max = 1MiB\n", "disk.journal_max"),
        ("model.disk_write = 6KiB\n", "model.disk_write"),
        ("model.disk_write = 2MiB\n", "model.disk_write"),
        (
            "model.disk_size = 1MiB\nmodel.disk_write = 512KiB\n",
            "model.disk_write",
        ),
        (
            "model.disk_write = 1MiB\ndisk.journal_max = 2MiB\n",
            "disk.journal_max",
        ),
    ] {
        let e = load(text).unwrap_err();
        assert!(e.contains(&format!("key '{key}'")), "{text}: {e}");
    }
}

#[test]
fn block_writes_from_outside_keep_memory_and_disk_agreeing() {
    let d = dir("block");
    let mut m = primary(&d, 0, wl(0, 4096, false));
    m.disk_mut().unwrap().start_journal();
    // Whole blocks, a block written in part, a write across a block boundary, an empty one.
    m.block_write(2 << 20, &[0x5a; 8192], false).unwrap();
    m.block_write((3 << 20) + 100, b"partial", true).unwrap();
    m.block_write((4 << 20) - 3, b"across", false).unwrap();
    m.block_write(5 << 20, &[], false).unwrap();
    m.verify_disk().expect("memory agrees with the disk");
    let j = m.disk_ref().unwrap().journal().bytes();
    assert_eq!(j, 8192 + 7 + 6, "every byte journaled for the open epoch");
    let mut b = [0u8; 7];
    m.disk_ref().unwrap().read((3 << 20) + 100, &mut b).unwrap();
    assert_eq!(&b, b"partial");
    // Beyond the disk: refused, nothing changes.
    assert!(m.block_write(SIZE - 1, b"xy", false).is_err());
    m.verify_disk().expect("still agrees");
    let mut none = ModelDomain::new(MIN_PAGES, 0, 1);
    assert!(none.block_write(0, b"x", false).is_err());
}
