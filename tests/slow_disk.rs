//! A slow disk under the primary: its guest's image on `hsb-slowfs`, a FUSE file system whose
//! every `fsync`/`fdatasync` takes 400 ms, as an `fdatasync` under heavy writeback can. The
//! primary's loop also sends the heartbeats and answers the witnesses' probes, so a sync done
//! in it stalls them all; the syncs go through io_uring instead, and the loop goes on.
//!
//! Real processes on loopback (primary, standby, three witnesses; `Cluster`), the guest's disk
//! served at `disk.nbd_socket` and written and flushed by `qemu-io` (Debian's qemu-utils).
//! Needs root and /dev/fuse: skipped otherwise, and failed under CI.
//!
//! The second test covers the activity log's upkeep, which syncs the image every 5 s (`TICK` in
//! primary/src/disk.rs): a guest write that came while that sync was in flight was a `pwrite`
//! in the loop, and where the file system holds the file's inode lock for the whole fsync (FUSE
//! does, `fuse_fsync`; so does btrfs) that `pwrite` waited for the sync, and the loop with it.
//! Guest writes now wait for an image sync in flight outside the loop (`DiskError::Syncing`).
//! The first test still keeps its runs between upkeeps: it is about the guest's own flushes.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hsb_tests::cluster::{Cluster, ClusterOpts};
use hsb_tests::nbdclient::{have_qemu_io, image_bytes, qemu_io_within};
use hsb_tests::slowfs::SlowFs;
use hsb_tests::{num, parse_status};

/// How long each sync of the slow file system takes: twice the heartbeat timeout.
const FSYNC_MS: u64 = 400;
/// The guest's image, in the slow file system.
const IMAGE: &str = "primary.disk";
/// Runs of writes and flushes: each right after one of the activity log's upkeeps has synced
/// the image, and over (about 3 s: seven or eight slow syncs) well before the next, 5 s later.
const RUNS: usize = 2;

/// A cluster whose primary's guest disk is on a slow file system, served over NBD.
struct Slow {
    // (Fields drop in this order: the daemons stop before the file system is unmounted.)
    cl: Cluster,
    sock: PathBuf,
    fs: SlowFs,
}

/// `None` (skipped, or failed under CI) where FUSE, qemu-io or io_uring cannot be had.
fn slow_cluster(test: &str, fsync_ms: u64) -> Option<Slow> {
    if !have_qemu_io(test) {
        return None;
    }
    let fs = SlowFs::mount(test, fsync_ms)?;
    let sock = fs.dir.path("guest.nbd");
    let cl = Cluster::start(ClusterOpts {
        // Twice the heartbeat timeout, never stretched by earlier suspicions: a loop stalled
        // for one slow sync is always seen.
        extra: vec![
            "failover.hb-timeout = 200ms".into(),
            "failover.hb-max-backoff = 1".into(),
        ],
        primary_extra: vec![
            format!("disk.nbd_socket = {}", sock.display()),
            format!("model.disk = {}", fs.mnt.join(IMAGE).display()),
            "model.disk_rate = 0".into(),
        ],
        standby_extra: vec!["model.disk_rate = 0".into()],
        ..ClusterOpts::default()
    });
    let st = cl.primary.status();
    if st
        .get("disk_syncs")
        .is_some_and(|v| !v.starts_with("io_uring"))
    {
        hsb_tests::skip(
            test,
            &format!("no io_uring here: the primary syncs in its loop ({st:?})"),
        );
        return None;
    }
    cl.wait_witnesses_ready();
    Some(Slow { cl, sock, fs })
}

/// [`qemu_io_within`] 30 s, asserted successful.
fn qemu_io(sock: &Path, cmds: &[String]) {
    let (ok, text) = qemu_io_within(30, sock, cmds);
    assert!(ok, "qemu-io {cmds:?}: {text}");
}

fn heartbeats_lost(standby_log: &str) -> usize {
    standby_log.matches("heartbeat lost").count()
}

fn decisions(standby_log: &str) -> Vec<String> {
    standby_log
        .lines()
        .filter(|l| l.contains(" decision {"))
        .map(str::to_string)
        .collect()
}

/// What a watcher saw of both daemons while the guest flushed (their status every 20 ms).
#[derive(Default, Debug)]
struct Seen {
    polls: u64,
    /// Standby: `primary_suspected true`, and every state it was in.
    suspected: u64,
    standby_states: BTreeMap<String, u64>,
    /// Primary: `fenced true`, and every authority it had.
    fenced: u64,
    authorities: BTreeMap<String, u64>,
}

fn watch(standby: PathBuf, primary: PathBuf, stop: Arc<AtomicBool>) -> Seen {
    let status = |p: &Path| {
        parse_status(
            &hsb_common::ctl::request(p, "status", Duration::from_secs(5)).unwrap_or_default(),
        )
    };
    let mut seen = Seen::default();
    while !stop.load(Ordering::Relaxed) {
        let (s, p) = (status(&standby), status(&primary));
        let get = |m: &HashMap<String, String>, k: &str| m.get(k).cloned().unwrap_or_default();
        seen.polls += 1;
        seen.suspected += u64::from(get(&s, "primary_suspected") == "true");
        *seen.standby_states.entry(get(&s, "state")).or_default() += 1;
        seen.fenced += u64::from(get(&p, "fenced") == "true");
        *seen.authorities.entry(get(&p, "authority")).or_default() += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    seen
}

/// The guest writes 64 KiB and flushes, three times a run, in two runs, on an image whose
/// every sync takes 400 ms, twice the heartbeat timeout: the standby never finds the primary
/// silent (no suspicion, no witness query, no activation), the primary never fences, every
/// flush waited for its slow sync, and every write is on the primary's image, read back
/// through the export, and on the replica's. (Each run starts right after the activity log's
/// upkeep has synced the image, and ends before the next one: see the module's documentation.)
#[test]
fn a_slow_fsync_does_not_stop_the_primarys_heartbeats() {
    let test = "a_slow_fsync_does_not_stop_the_primarys_heartbeats";
    let Some(slow) = slow_cluster(test, FSYNC_MS) else {
        return;
    };
    let (cl, sock, fs) = (&slow.cl, &slow.sock, &slow.fs);
    let log = cl.standby.log_text();
    let (lost_before, decisions_before) = (heartbeats_lost(&log), decisions(&log).len());
    let syncs_before = fs.syncs(IMAGE).len();
    let flushes_before = num(&cl.primary.status(), "nbd_flushes");

    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (s, p) = (cl.standby.control.clone(), cl.primary.control.clone());
        let stop = stop.clone();
        std::thread::spawn(move || watch(s, p, stop))
    };
    // Offset (in 256 KiB) → the pattern written there (all in one extent of the activity
    // log: a run waits for one record's sync at most, the first write after an upkeep's).
    let mut written: BTreeMap<u64, u8> = BTreeMap::new();
    let (mut runs, mut failed_run) = (vec![], None);
    let t0 = Instant::now();
    for _ in 0..RUNS {
        // The NBD export is idle: the next sync of the image is the upkeep's (every 5 s while
        // the activity log has extents to cool: the model guest's log block always).
        if !fs.wait_syncs(IMAGE, false, fs.syncs(IMAGE).len(), Duration::from_secs(6)) {
            eprintln!("no upkeep synced the image in 6 s: a run not aligned with the upkeep");
        }
        let mut cmds = vec![];
        for _ in 0..3 {
            let i = written.len() as u64;
            let pattern = 0x5a_u8.wrapping_add(i as u8);
            cmds.push(format!("write -P {pattern:#04x} {}k 64k", i * 256));
            cmds.push("flush".into());
            written.insert(i, pattern);
        }
        let t = Instant::now();
        // (A failed run is reported after what the daemons saw: it fails when they fail.)
        let (ok, out) = qemu_io_within(15, sock, &cmds);
        if !ok {
            failed_run = Some(format!("qemu-io {cmds:?}: {out}"));
            break;
        }
        runs.push(t.elapsed());
    }
    let phase = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    let seen = watcher.join().expect("watcher");
    let (sst, pst) = (cl.standby.status(), cl.primary.status());
    let (slog, plog) = (cl.standby.log_text(), cl.primary.log_text());
    let syncs = fs.syncs(IMAGE);
    eprintln!(
        "{} runs of (write + flush) x 3 in {phase:?}: {:?} ms; watched: {seen:?}",
        runs.len(),
        runs.iter().map(|d| d.as_millis()).collect::<Vec<_>>()
    );
    let evidence = || {
        format!(
            "{seen:?}\nruns {runs:?} in {phase:?}\n--- hsb-slowfs ---\n{}\n{}",
            std::fs::read_to_string(&fs.log).unwrap_or_default(),
            cl.logs()
        )
    };

    // The standby never found the primary silent, and nothing was decided on a silence.
    assert!(
        seen.polls >= 20,
        "the daemons answered their status: {seen:?}"
    );
    assert_eq!(
        heartbeats_lost(&slog),
        lost_before,
        "the standby lost the primary's heartbeat while the guest flushed: {}",
        evidence()
    );
    assert_eq!(seen.suspected, 0, "{}", evidence());
    assert_eq!(
        seen.standby_states.keys().collect::<Vec<_>>(),
        ["replicating"],
        "{}",
        evidence()
    );
    assert_eq!(
        sst.get("activation").map(String::as_str),
        Some("none"),
        "{sst:?}"
    );
    // (The witnesses may find the guest's service slow: the model guest takes no request
    // while the activity log's record for its next log block is being synced. That is decided
    // as a guest failure (rule 6, stay); no decision found the primary silent.)
    for d in &decisions(&slog)[decisions_before..] {
        assert!(
            d.contains("\"suspected\":false") && !d.contains("\"action\":\"activate"),
            "a decision while the guest flushed: {d}\n{}",
            evidence()
        );
    }
    // The primary kept its authority throughout.
    assert_eq!(seen.fenced, 0, "{}", evidence());
    assert!(!plog.contains("FENCED"), "{}", evidence());
    assert_eq!(
        seen.authorities.keys().collect::<Vec<_>>(),
        ["protected"],
        "{}",
        evidence()
    );

    assert_eq!(failed_run, None, "{}", evidence());

    // The slow file system was in the path: each run's three flushes waited for a sync of
    // 400 ms or more each, done by the file system (its own count), through io_uring.
    for (i, d) in runs.iter().enumerate() {
        assert!(
            *d >= Duration::from_millis(3 * FSYNC_MS),
            "run {i} (three writes and flushes) took {d:?}, less than three slow syncs"
        );
    }
    let flushes = num(&pst, "nbd_flushes") - flushes_before;
    let image_syncs = syncs.len() - syncs_before;
    assert!(flushes >= 3 * RUNS as u64, "{flushes} NBD flushes: {pst:?}");
    assert!(
        image_syncs >= 3 * RUNS,
        "{image_syncs} slow syncs of the image: {syncs:?}"
    );
    assert!(
        pst.get("disk_syncs")
            .is_some_and(|v| v.starts_with("io_uring")),
        "{pst:?}"
    );
    assert_eq!(num(&pst, "nbd_errors"), 0, "{pst:?}");
    assert_eq!(num(&pst, "disk_errors"), 0, "{pst:?}");

    // Every write is there: read back through the export, on the primary's image (its backing
    // file), and, once its checkpoint is acknowledged, on the replica's image.
    let reads: Vec<String> = written
        .iter()
        .map(|(i, p)| format!("read -P {p:#04x} {}k 64k", i * 256))
        .collect();
    qemu_io(sock, &reads);
    let last = num(&cl.primary.status(), "nbd_last_write_checkpoint");
    cl.primary.wait_for(
        "the last write's checkpoint acknowledged",
        Duration::from_secs(30),
        |s| num(s, "acked_checkpoint") >= last,
    );
    for (image, what) in [
        (fs.backing.join(IMAGE), "the primary's image"),
        (cl.dir.path("b.state.disk"), "the replica's image"),
    ] {
        for (i, p) in &written {
            assert!(
                image_bytes(&image, i << 18, 64 << 10) == vec![*p; 64 << 10],
                "{what}, at {} KiB: not {p:#04x}",
                i * 256
            );
        }
    }
}

/// The guest writes to its disk just as the activity log's upkeep has begun its image sync
/// (1 s here). On FUSE the kernel holds the image's inode lock for the whole fsync, so a
/// `pwrite` of that write in the primary's loop would wait for the sync: the heartbeats would
/// stop for most of a second, and the standby find the primary silent (it did, before guest
/// writes waited for image syncs in flight outside the loop).
#[test]
fn a_guest_write_during_the_upkeeps_slow_sync_does_not_stop_the_heartbeats() {
    let test = "a_guest_write_during_the_upkeeps_slow_sync_does_not_stop_the_heartbeats";
    let Some(slow) = slow_cluster(test, 1000) else {
        return;
    };
    let (cl, sock, fs) = (&slow.cl, &slow.sock, &slow.fs);
    // The extent written is in the activity log (a write there goes straight to the image).
    qemu_io(sock, &["write -P 0x11 0 64k".into()]);
    let lost_before = heartbeats_lost(&cl.standby.log_text());
    // The export is idle: the next sync of the image is the upkeep's. Write as it begins.
    let begun = fs.begun(IMAGE).len();
    assert!(
        fs.wait_syncs(IMAGE, true, begun, Duration::from_secs(15)),
        "no upkeep synced the image"
    );
    let (_, out) = qemu_io_within(10, sock, &["write -P 0x22 0 64k".into()]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        heartbeats_lost(&cl.standby.log_text()),
        lost_before,
        "qemu-io: {out}\n--- hsb-slowfs ---\n{}\n{}",
        std::fs::read_to_string(&fs.log).unwrap_or_default(),
        cl.logs()
    );
}
