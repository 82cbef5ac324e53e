//! Unit tests of `recorder`.

use super::*;
use crate::decision::json;
use crate::decision::standby::Input as SInput;

#[test]
fn wall_clock_stamps_are_rfc3339_utc_milliseconds() {
    assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(rfc3339_millis(951_782_400_000), "2000-02-29T00:00:00.000Z");
    assert_eq!(rfc3339_millis(951_868_799_999), "2000-02-29T23:59:59.999Z");
    assert_eq!(
        rfc3339_millis(1_700_000_000_123),
        "2023-11-14T22:13:20.123Z"
    );
    assert_eq!(
        rfc3339_millis(4_102_444_799_999),
        "2099-12-31T23:59:59.999Z"
    );
    assert_eq!(
        rfc3339_millis(4_107_542_400_000),
        "2100-03-01T00:00:00.000Z"
    );
    let now = wall_clock_rfc3339();
    assert!(
        now.len() == 24 && now.ends_with('Z') && now > "2024".into(),
        "{now}"
    );
}

#[test]
fn the_stamp_goes_after_t() {
    assert_eq!(
        stamped("{\"k\":\"input\",\"t\":5,\"role\":\"x\"}", "W", ""),
        "{\"k\":\"input\",\"t\":5,\"wall\":\"W\",\"role\":\"x\"}"
    );
    assert_eq!(
        stamped("{\"k\":\"config\",\"t\":5}", "W", ",\"continued\":true"),
        "{\"k\":\"config\",\"t\":5,\"wall\":\"W\",\"continued\":true}"
    );
    assert_eq!(stamped("{\"a\":1}", "W", ""), "{\"wall\":\"W\",\"a\":1}");
    assert_eq!(stamped("{}", "W", ""), "{\"wall\":\"W\"}");
    assert_eq!(stamped("x", "W", ""), "x");
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "hsb-recorder-{tag}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("dir");
    d
}

fn open(path: &Path, rotation: Rotation) -> Recorder {
    Recorder::open(
        path,
        rotation,
        Nanos(0),
        Role::Standby,
        Epoch(1),
        &Config::default(),
        Start {
            replica: Some(0),
            ..Start::default()
        },
    )
    .expect("open")
}

fn heartbeat(r: &mut Recorder, i: u64) {
    r.input(
        Nanos::from_millis(i),
        AnyInput::Standby(SInput::Heartbeat {
            link: 0,
            epoch: Epoch(1),
        }),
    );
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

/// Every record carries the wall clock, and the replay still reads the log.
#[test]
fn records_carry_the_wall_clock_and_replay() {
    let d = scratch("wall");
    let p = d.join("decisions");
    let mut r = open(&p, Rotation::default());
    for i in 0..10 {
        heartbeat(&mut r, i * 10);
    }
    r.flush();
    let l = lines(&p);
    assert_eq!(l.len(), 11);
    for line in &l {
        let v = json::parse(line).expect("json");
        let wall = v.get("wall").and_then(json::Value::as_text).expect("wall");
        assert!(wall.len() == 24 && wall.ends_with('Z'), "{wall}");
    }
    crate::decision::replay(
        l.iter().map(String::as_str),
        crate::decision::Policy::ClientOriented,
    )
    .expect("replays");
    assert_eq!(r.stats().records, 11);
    std::fs::remove_dir_all(&d).expect("cleanup");
}

/// Regression: the log stopped for good at 256 MiB (one warning). It now rotates: the newest
/// records are in FILE, older ones in FILE.1 .. FILE.keep, nothing past keep, and each file
/// starts with a config record, so each replays on its own and together they replay as one.
#[test]
fn the_log_rotates_and_keeps_n_files() {
    let d = scratch("rotate");
    let p = d.join("decisions");
    let rot = Rotation {
        max_bytes: MIN_MAX_BYTES,
        keep: 2,
    };
    let mut r = open(&p, rot);
    let mut i = 0;
    while r.stats().rotations < 4 {
        heartbeat(&mut r, i);
        i += 1;
        r.flush();
        assert!(i < 100_000, "never rotated");
    }
    heartbeat(&mut r, i);
    r.flush();
    let numbered = |n: u32| PathBuf::from(format!("{}.{n}", p.display()));
    assert!(numbered(1).exists() && numbered(2).exists());
    assert!(!numbered(3).exists(), "keeps 2");
    let mut all = Vec::new();
    for f in [numbered(2), numbered(1), p.clone()] {
        let size = std::fs::metadata(&f).expect("file").len();
        assert!(size <= MIN_MAX_BYTES, "{} is {size} bytes", f.display());
        let l = lines(&f);
        assert!(l[0].contains("\"k\":\"config\""), "{}", l[0]);
        assert!(l[0].contains("\"continued\":true"), "{}", l[0]);
        crate::decision::replay(
            l.iter().map(String::as_str),
            crate::decision::Policy::ClientOriented,
        )
        .expect("a rotated file replays alone");
        all.extend(l);
    }
    crate::decision::replay(
        all.iter().map(String::as_str),
        crate::decision::Policy::ClientOriented,
    )
    .expect("the files replay together");
    // The last record is the last heartbeat; none is missing between the files kept.
    let last = json::parse(all.last().expect("records")).expect("json");
    assert_eq!(
        last.get("t").and_then(json::Value::as_text),
        Some(Nanos::from_millis(i).0.to_string())
    );
    let stats = r.stats();
    assert_eq!((stats.errors, stats.lost, stats.rotations), (0, 0, 4));
    // keep = 0: the log starts over.
    let q = d.join("small");
    let mut r = open(
        &q,
        Rotation {
            max_bytes: MIN_MAX_BYTES,
            keep: 0,
        },
    );
    while r.stats().rotations < 2 {
        heartbeat(&mut r, 0);
        r.flush();
    }
    assert!(!PathBuf::from(format!("{}.1", q.display())).exists());
    assert!(std::fs::metadata(&q).expect("file").len() <= MIN_MAX_BYTES);
    std::fs::remove_dir_all(&d).expect("cleanup");
}

/// logrotate's way: rename the file, then SIGHUP (reopen): new records go to a new file at
/// the configured path, and what was taken before goes to the renamed one.
#[test]
fn reopen_starts_a_new_file_at_the_path() {
    let d = scratch("reopen");
    let p = d.join("decisions");
    let mut r = open(&p, Rotation::default());
    heartbeat(&mut r, 1);
    let old = d.join("decisions.old");
    std::fs::rename(&p, &old).expect("rename");
    r.reopen(Nanos::from_millis(2)).expect("reopen");
    heartbeat(&mut r, 3);
    r.flush();
    assert_eq!(lines(&old).len(), 2, "config and the first heartbeat");
    let new = lines(&p);
    assert_eq!(new.len(), 2, "{new:?}");
    assert!(new[0].contains("\"continued\":true"));
    assert_eq!(r.stats().reopens, 1);
    std::fs::remove_dir_all(&d).expect("cleanup");
}

/// A failing file is counted, records wait (bounded) and go out once it works again; while
/// the file cannot be opened at all, opening is tried again.
#[test]
fn failures_are_counted_and_retried() {
    let d = scratch("fail");
    let p = d.join("sub").join("decisions");
    let mut r = open(&p, Rotation::default());
    // The directory goes away and a file takes its place: reopening fails.
    std::fs::remove_dir_all(d.join("sub")).expect("rm");
    std::fs::write(d.join("sub"), b"not a directory").expect("file");
    assert!(r.reopen(Nanos::from_millis(1)).is_err());
    heartbeat(&mut r, 2);
    r.flush();
    let s = r.stats();
    assert!(s.errors >= 1, "{s:?}");
    assert_eq!(s.lost, 0);
    // Fixed: the next attempt after RETRY opens it and the waiting record is written.
    std::fs::remove_file(d.join("sub")).expect("rm");
    if let Some(l) = r.log.as_mut() {
        l.retry_at = None;
    }
    r.flush();
    let l = lines(&p);
    assert!(
        l.iter().any(|l| l.contains("\"in\":\"heartbeat\"")),
        "{l:?}"
    );
    // Writes to a full device fail, are counted, and records beyond the buffer are lost
    // and counted, never silently dropped.
    if Path::new("/dev/full").exists() {
        let mut r = open(Path::new("/dev/full"), Rotation::default());
        for i in 0..40_000 {
            heartbeat(&mut r, i);
        }
        r.flush();
        let s = r.stats();
        assert!(s.errors >= 1, "{s:?}");
        assert!(s.lost >= 1, "{s:?}");
        assert_eq!(s.records + s.lost, 40_001, "{s:?}");
    }
    std::fs::remove_dir_all(&d).expect("cleanup");
}
