//! Disk replication end to end (issue 14), real processes on loopback, model backend: the
//! guest's disk travels with its checkpoints, an activated replica's disk is exactly the
//! checkpoint it activated from, a rejoin copies only the tracks that can differ, and a standby
//! whose image runs out of space never acknowledges.

use std::collections::HashMap;
use std::time::Duration;

use hsb_tests::life::{Life, LifeOpts, HOSTS};
use hsb_tests::{num, Client, Pair, PairOpts};

/// The disk digest the primary logged for checkpoint `ckpt` (debug logging: every checkpoint's
/// line ends with the digest of the disk as the guest's memory had it at the capture).
fn logged_digest(log: &str, ckpt: u64) -> Option<String> {
    let head = format!("checkpoint {ckpt}: ");
    log.lines()
        .find(|l| l.contains(&head) && l.contains("disk digest "))
        .and_then(|l| l.rsplit("disk digest ").next())
        .map(|d| d.trim().to_string())
}

/// kill -9 of the primary while its guest writes its disk (a random workload, 16 KiB writes at
/// 4 MiB/s, and PUTs whose log records go to the disk before their replies), then activate: the
/// replica's disk is the primary's disk at the checkpoint it activated from (its image's digest
/// is the one the primary logged for that checkpoint, and every block agrees with the replica's
/// memory), and no acknowledged PUT is missing.
#[test]
fn kill9_with_disk_writes_in_flight_the_activated_disk_is_the_checkpoints() {
    let mut pair = Pair::start(PairOpts {
        primary_log: Some("debug"),
        extra_primary: vec![
            "model.disk_rate = 4MiB".into(),
            "model.disk_write = 16KiB".into(),
            "model.disk_pattern = random".into(),
        ],
        // Once activated, the replica's own workload leaves its disk alone: the digest below is
        // the checkpoint's.
        extra_standby: vec!["model.disk_rate = 0".into()],
        ..PairOpts::default()
    });
    // Four clients PUT their own keys; each keeps what was acknowledged. The primary dies once
    // 40 PUTs are acknowledged (however long a loaded machine takes; at least 2 s).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let clients: Vec<_> = (0..4)
        .map(|n| {
            let (addr, stop, done) = (pair.primary_service, stop.clone(), done.clone());
            std::thread::spawn(move || {
                let mut c = Client::connect(addr, Duration::from_secs(60)).expect("connect");
                let mut acked = HashMap::new();
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let (k, v) = (format!("c{n}key{}", i % 10), format!("value{i}"));
                    match c.request(&format!("PUT {k} {v}")) {
                        Ok(r) if r == "OK" => {
                            acked.insert(k, v);
                            done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        // The primary died with this PUT in flight.
                        _ => break,
                    }
                    i += 1;
                }
                // PUT `i` was in flight: its checkpoint may have been acknowledged by the standby
                // without its reply having left.
                let in_flight = (format!("c{n}key{}", i % 10), format!("value{i}"));
                (acked, in_flight, i)
            })
        })
        .collect();
    // ... and the workload has written more than 50 blocks (each write to an extent new to the
    // activity log waits for its record's sync: a turn of this debug build's loop, which
    // digests the whole disk at every checkpoint for the log).
    let t = std::time::Instant::now();
    let mut st = pair.primary.status();
    while t.elapsed() < Duration::from_secs(2)
        || done.load(std::sync::atomic::Ordering::Relaxed) < 40
        || num(&st, "disk_guest_writes") <= 50
    {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "PUTs are not being acknowledged, or the disk not written\n{st:?}\n{}",
            pair.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
        st = pair.primary.status();
    }
    assert!(num(&st, "disk_guest_writes") > 50, "{st:?}");
    assert!(num(&st, "disk_log_records") > 0, "{st:?}");
    // The primary dies with PUTs in flight and disk writes in its open epoch.
    pair.primary.kill9();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked: HashMap<String, String> = HashMap::new();
    let mut in_flight: HashMap<String, String> = HashMap::new();
    let mut sent = 0;
    for c in clients {
        let (a, (k, v), n) = c.join().expect("client");
        acked.extend(a);
        in_flight.insert(k, v);
        sent += n;
    }
    assert!(
        acked.len() >= 4,
        "only {} keys' PUTs acknowledged (of {sent} PUTs)\n{}",
        acked.len(),
        pair.logs()
    );
    let out = pair.standby.ctl("activate").expect("activate");
    assert!(out.starts_with("activated"), "{out}\n{}", pair.logs());
    let st = pair.standby.status();
    let f = num(&st, "activated_at");
    assert!(f > 1, "{st:?}");
    assert!(
        st.get("disk_verified")
            .is_some_and(|v| v.contains("agrees with memory")),
        "{st:?}\n{}",
        pair.logs()
    );
    let d = pair.standby_disk_agrees_with_memory();
    assert_eq!(d.get("disk_digest"), d.get("disk_memory_digest"), "{d:?}");
    let primary_said = logged_digest(&pair.primary.log_text(), f);
    assert_eq!(
        primary_said.as_ref(),
        d.get("disk_digest"),
        "the primary's disk at checkpoint {f} and the activated replica's disk differ\n{}",
        pair.logs()
    );
    // Every acknowledged PUT is there, with its last acknowledged value.
    let mut s =
        Client::connect(pair.standby_service, Duration::from_secs(5)).expect("standby serves");
    for (k, v) in &acked {
        let got = s.request(&format!("GET {k}")).unwrap();
        assert!(
            &got == v || in_flight.get(k) == Some(&got),
            "key {k}: the replica has {got}, the last acknowledged PUT was {v} (in flight: {:?})",
            in_flight.get(k)
        );
    }
    eprintln!(
        "{sent} PUTs acknowledged, the last acknowledged value of {} keys present; activated from checkpoint {f}, disk digest {}",
        acked.len(),
        d["disk_digest"]
    );
}

/// A standby whose image runs out of space (its process may not write beyond 4 MiB of any file:
/// `prlimit --fsize`, EFBIG) applies checkpoints while the guest writes below that, then never
/// acknowledges again: its status and log say why, the primary logs the refusal, and a reply
/// produced afterwards stays held.
#[test]
fn a_standby_whose_image_runs_out_of_space_never_acks() {
    if std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .is_err()
    {
        hsb_tests::skip(
            "a_standby_whose_image_runs_out_of_space_never_acks",
            "no prlimit",
        );
        return;
    }
    let dir = hsb_tests::TempDir::new("disk-full");
    let image = dir.path("standby.disk");
    // The image exists (64 MiB, sparse, hsb's metadata beside it); the standby may not write
    // beyond its first 4 MiB.
    hsb_domain::disk::Disk::open(&hsb_domain::disk::DiskConfig {
        path: image.clone(),
        size: 64 << 20,
        journal_max: 8 << 20,
    })
    .expect("create the standby's image");
    let mut pair = Pair::start(PairOpts {
        extra_primary: vec![
            "model.disk_rate = 1MiB".into(),
            "model.disk_write = 64KiB".into(),
        ],
        extra_standby: vec![format!("model.disk = {}", image.display())],
        standby_wrapper: vec!["prlimit".into(), format!("--fsize={}", 4 << 20)],
        ..PairOpts::default()
    });
    let mut c = Client::connect(pair.primary_service, Duration::from_secs(10)).expect("connect");
    assert_eq!(c.request("PUT before fine").unwrap(), "OK");
    // The sequential workload reaches 4 MiB of the disk after about 3 s.
    let st = pair
        .standby
        .wait_for("a disk error", Duration::from_secs(30), |s| {
            num(s, "disk_errors") >= 1
        });
    assert!(
        st.get("disk_last_error")
            .is_some_and(|e| e.contains("out of space")),
        "{st:?}"
    );
    let acked = num(&pair.primary.status(), "acked_checkpoint");
    c.set_timeout(Duration::from_secs(3));
    c.send_only("PUT after held").unwrap();
    assert!(
        c.read_line().is_err(),
        "a reply left although the standby could not write its disk\n{}",
        pair.logs()
    );
    let ps = pair.primary.status();
    assert_eq!(
        num(&ps, "acked_checkpoint"),
        acked,
        "the standby acknowledged after its disk failed: {ps:?}"
    );
    assert!(num(&ps, "held_output_bytes") > 0, "{ps:?}");
    assert!(
        pair.primary
            .log_text()
            .contains("the standby's disk failed"),
        "{}",
        pair.logs()
    );
    assert!(
        pair.standby
            .log_text()
            .contains("not acknowledged (the image is out of space)"),
        "{}",
        pair.logs()
    );
    let ss = pair.standby.status();
    assert_ne!(
        ss.get("state").map(String::as_str),
        Some("replicating"),
        "{ss:?}"
    );
    assert!(pair.standby.alive() && pair.primary.alive());
    drop(dir);
    let _ = &mut pair;
}

/// A failover, then the old primary (killed while its guest wrote its disk) rejoins as the
/// standby: its disk is resynchronised by copying only the tracks that can differ (the new
/// primary's writes since the old one's last acknowledged checkpoint, and the extents the old
/// one wrote in epochs never acknowledged, from its activity log), not the whole disk; and
/// afterwards its disk is the new primary's, byte for byte, so its own unacknowledged writes
/// were copied over too.
#[test]
fn a_rejoin_after_failover_copies_only_the_tracks_that_can_differ() {
    // Host A's guest writes its disk; host B's, once it takes over, does not: the model's
    // workload is deterministic, so a B that wrote on would rewrite the very tracks A wrote in
    // its last, unacknowledged epochs, and hide whether those come back from A's activity log.
    let mut life = Life::start(LifeOpts {
        extra: vec!["model.disk_size = 256MiB".into()],
        host_extra: [
            vec!["model.disk_rate = 512KiB".into()],
            vec!["model.disk_rate = 0".into()],
        ],
        ..LifeOpts::default()
    });
    let tracks = (256u64 << 20) / 4096;
    // The first synchronisation of a fresh standby: only the tracks written so far.
    let b = life.handle(1, "standby").status();
    assert_eq!(num(&b, "disk_full_copies"), 0, "{b:?}");
    assert!(num(&b, "disk_resync_tracks") < tracks / 20, "{b:?}");
    std::thread::sleep(Duration::from_millis(1500));
    life.fail_primary(Duration::from_secs(15));
    life.rejoin();
    life.wait_whole(Duration::from_secs(30));
    let a = life.handle(1 - life.primary, "standby").status();
    let p = life.primary_status();
    eprintln!(
        "host {} rejoined: {} of {tracks} tracks copied ({} bytes), full copies {}; host {} planned {}",
        HOSTS[1 - life.primary],
        num(&a, "disk_resync_tracks"),
        num(&a, "disk_resync_bytes"),
        num(&a, "disk_full_copies"),
        HOSTS[life.primary],
        num(&p, "disk_resync_planned_tracks"),
    );
    assert_eq!(num(&a, "disk_full_copies"), 0, "{a:?}\n{}", life.logs());
    let copied = num(&a, "disk_resync_tracks");
    assert!(copied > 0, "{a:?}");
    assert!(
        copied < tracks / 10,
        "{copied} of {tracks} tracks copied: more than what can differ\n{}",
        life.logs()
    );
    assert!(num(&p, "disk_resync_planned_tracks") <= copied, "{p:?}");
    // Host B's guest has not written its disk since it took over: after the resynchronisation
    // the two images are the same, byte for byte (host A's own unacknowledged writes included:
    // they came back from its activity log).
    let image = |h: usize| {
        std::fs::read(life.dir.path(&format!("{}.state.disk", HOSTS[h]))).expect("image")
    };
    let (a_img, b_img) = (image(1 - life.primary), image(life.primary));
    assert_eq!(a_img.len(), b_img.len());
    if let Some(at) = a_img.iter().zip(&b_img).position(|(x, y)| x != y) {
        panic!(
            "host {}'s disk differs from host {}'s at byte {at} (track {})\n{}",
            HOSTS[1 - life.primary],
            HOSTS[life.primary],
            at / 4096,
            life.logs()
        );
    }
}

/// A primary whose disk is not the standby's size does not replicate to it, and says why (the
/// standby's Hello carries its disk's size; the standby refuses such a session too).
#[test]
fn a_disk_of_another_size_is_refused() {
    let pair = Pair::start(PairOpts::default());
    let dir = &pair.dir;
    let conf = dir.path("p2.conf");
    std::fs::write(
        &conf,
        format!(
            "state_file = {}\ncluster_key = {}\nstandby = {}\ncontrol = {}\nmodel.memory = 8MiB\nmodel.disk_size = 32MiB\nmodel.service = {}\nreconnect_interval = 1s\n",
            dir.path("p2.state").display(),
            dir.path("cluster.key").display(),
            pair.repl,
            dir.path("p2.sock").display(),
            hsb_tests::free_addr()
        ),
    )
    .unwrap();
    let p2 = hsb_tests::Daemon::start(
        "hsb-primary",
        &conf,
        &dir.path("p2.sock"),
        &dir.path("p2.log"),
        &[],
    );
    let t = std::time::Instant::now();
    let said = "the standby's disk is 67108864 bytes, this primary's 33554432 (model.disk_size must be the same on both)";
    while !p2.log_text().contains(said) && t.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = p2.log_text();
    assert!(log.contains(said), "{log}");
    assert!(!log.contains("protected"), "{log}");
    assert_eq!(pair.primary.status()["state"], "protected");
}
