//! The recorded page trace of the Xen rig's guest running redis (`tests/data`, issue 16.2),
//! replayed through the real checkpoint path, and the recorder's command line.
//!
//! The replay checks every page of every checkpoint on the replica, plain and encoded; what
//! encoding saves is reported by `hsb-bench` section 11 (a figure, not asserted here beyond
//! "fewer bytes", which holds by construction).

use std::process::Command;

use hsb_domain::codec_policy::CodecMode;
use hsb_tests::pagetrace::{replay, TraceReader};

fn trace() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/xen-rig-redis.hsbtrace")
}

fn open() -> std::io::BufReader<std::fs::File> {
    let p = trace();
    std::io::BufReader::new(
        std::fs::File::open(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
    )
}

#[test]
fn the_rig_trace_is_a_real_guest_of_a_few_hundred_checkpoints() {
    let r = TraceReader::new(open()).expect("the trace's header");
    let h = r.header();
    // 128 MiB of RAM and a few special pages (PVH: xenstore, console, ...).
    assert!(
        (32768..33024).contains(&h.ram_pages),
        "a 128 MiB guest: {h:?}"
    );
    assert!(h.note.contains("redis"), "{h:?}");
    let plain = replay(open(), CodecMode::Never, 0).expect("plain replay");
    assert!(plain.checkpoints >= 200, "{plain:?}");
    assert!(plain.pages > plain.checkpoints * 10, "{plain:?}");
}

#[test]
fn every_page_of_the_rig_trace_lands_exactly_encoded_or_not() {
    let plain = replay(open(), CodecMode::Never, 0).expect("plain replay");
    let enc = replay(open(), CodecMode::Always, 0).expect("encoded replay");
    assert_eq!(plain.pages_checked, enc.pages_checked);
    assert_eq!(enc.encoded, enc.checkpoints - 1);
    assert!(enc.wire_bytes < plain.wire_bytes, "{enc:?} {plain:?}");
}

#[test]
fn the_recorder_says_what_is_wrong_with_its_command_line_and_its_host() {
    let run = |args: &[&str]| {
        let o = Command::new(hsb_tests::bin("hsb-page-trace"))
            .args(args)
            .output()
            .expect("run hsb-page-trace");
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["guest"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("expected DOMAIN and OUT") && err.contains("usage:"),
        "{err}"
    );
    let (code, err) = run(&["guest", "/tmp/x", "--checkpoints", "1"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--checkpoints: a count from 2"), "{err}");
    let (code, err) = run(&["guest", "/tmp/x", "--bogus"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("unknown option '--bogus'"), "{err}");
    // Not a Xen dom0 here: a clear error, and no file left behind.
    let dir = hsb_tests::TempDir::new("page-trace");
    let out = dir.path("t.hsbtrace");
    let (code, err) = run(&["guest", out.to_str().expect("utf-8 path")]);
    if std::path::Path::new("/proc/xen/privcmd").exists() {
        return;
    }
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("xenstore") || err.contains("privcmd"), "{err}");
    assert!(!out.exists());
}
