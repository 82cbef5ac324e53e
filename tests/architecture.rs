//! The architecture as tests (issue 13): what each part may depend on.

use std::process::Command;

/// The witness runs on any Linux client machine: it links nothing of a hypervisor. The domain
/// backends (xen-sys, xenstore-rs) live in hsb-domain, which only the primary and the standby
/// use.
#[test]
fn the_witness_links_no_hypervisor_crate() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "-p",
            "hsb-witness",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("cargo tree");
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(tree.contains("hsb-common"), "{tree}");
    for banned in ["xen-sys", "xenstore-rs", "hsb-domain", "hsb-testkit"] {
        assert!(
            !tree.lines().any(|l| l.starts_with(banned)),
            "hsb-witness depends on {banned}:\n{tree}"
        );
    }
}

/// Each daemon's node decides and does no I/O (STYLE.md, "the daemon shape"): it names no
/// socket, file, process, thread or clock, so the daemons, the simulator and tests drive the
/// same code. (`SocketAddr` is a value, not I/O.)
#[test]
fn nodes_import_no_io() {
    let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let banned = [
        "mio",
        "std::fs",
        "std::process",
        "std::thread",
        "std::io",
        "UdpSocket",
        "TcpStream",
        "TcpListener",
        "UnixStream",
        "Instant",
        "SystemTime",
        "Clock",
        "File",
    ];
    let mut checked = 0;
    // node.rs and its parts (node_*.rs) of each daemon.
    let mut files = Vec::new();
    for daemon in ["primary", "standby", "witness"] {
        let Ok(dir) = std::fs::read_dir(root.join(daemon).join("src")) else {
            continue;
        };
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == "node.rs" || (name.starts_with("node_") && name.ends_with(".rs")) {
                files.push(entry.path());
            }
        }
    }
    for path in files {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        checked += 1;
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            for b in banned {
                let hit = code
                    .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                    .any(|w| w == b || w.starts_with(&format!("{b}::")));
                assert!(
                    !hit,
                    "{}:{}: the node names {b}: {line}",
                    path.display(),
                    n + 1
                );
            }
        }
    }
    assert!(checked >= 2, "no node.rs found");
}

/// No source file is longer than a reader can hold (issue 13): at most 600 lines, tests and
/// harness included. A file that grows past it is split by responsibility, not by line number.
#[test]
fn no_source_file_is_over_600_lines() {
    const MAX_LINES: usize = 600;
    let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let out = Command::new("git")
        .args([
            "ls-files",
            "--cached",
            "--others",
            "--exclude-standard",
            "*.rs",
        ])
        .current_dir(root)
        .output()
        .expect("git ls-files");
    assert!(out.status.success(), "git ls-files failed");
    let list = String::from_utf8_lossy(&out.stdout);
    let mut long = Vec::new();
    let mut checked = 0;
    for name in list.lines() {
        let Ok(text) = std::fs::read_to_string(root.join(name)) else {
            continue;
        };
        checked += 1;
        let n = text.lines().count();
        if n > MAX_LINES {
            long.push(format!("{name}: {n} lines"));
        }
    }
    assert!(checked > 100, "only {checked} source files found");
    assert!(
        long.is_empty(),
        "over {MAX_LINES} lines (split by responsibility):\n{}",
        long.join("\n")
    );
}
