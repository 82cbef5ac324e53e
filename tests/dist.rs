//! The release tarball (`just dist` = `just static` + contrib/dist.sh): contrib/dist.sh is run
//! here on the binaries under test (not static: building those takes minutes; `just static`
//! checks static linking itself), and the tarball is checked as an operator would use it: its
//! name, its layout for /usr/local, its checksums, man pages for every daemon, and every example
//! configuration accepted by `hsb-X check` with a freshly generated key.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use hsb_tests::{bin, TempDir};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// `key = value` lines of a configuration file, comments dropped.
fn keys(path: &Path) -> HashMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default())
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn the_release_tarball_has_everything_and_its_examples_pass_check() {
    let dir = TempDir::new("dist");
    let bins = bin("hsb-primary").parent().expect("bin dir").to_path_buf();
    let out = run(Command::new(root().join("contrib/dist.sh"))
        .arg(&bins)
        .arg(dir.path("dist"))
        .env("HSB_MAN", bin("hsb-man")));
    let name = format!("hsb-{}-x86_64-linux", env!("CARGO_PKG_VERSION"));
    let tarball = dir.path(&format!("dist/{name}.tar.gz"));
    assert_eq!(out.trim(), tarball.display().to_string());

    // The checksum beside the tarball.
    run(Command::new("sha256sum")
        .args(["--check", "--strict", "SHA256SUMS"])
        .current_dir(dir.path("dist")));

    // Its contents, laid out for /usr/local.
    let listing = run(Command::new("tar").arg("-tzf").arg(&tarball));
    let files: Vec<&str> = listing
        .lines()
        .filter(|l| !l.ends_with('/'))
        .map(|l| {
            l.strip_prefix(&format!("{name}/"))
                .expect("one top directory")
        })
        .collect();
    let mut want = vec![
        "SHA256SUMS",
        "sbin/hsb-primary",
        "sbin/hsb-standby",
        "sbin/hsb-witness",
        "share/man/man8/hsb-primary.8",
        "share/man/man8/hsb-standby.8",
        "share/man/man8/hsb-witness.8",
        "lib/systemd/system/hsb-primary@.service",
        "lib/systemd/system/hsb-standby@.service",
        "lib/systemd/system/hsb-witness.service",
        "lib/sysusers.d/hsb.conf",
        "lib/modules-load.d/hsb.conf",
        "share/doc/hsb/README.md",
        "share/doc/hsb/DEPLOY.md",
        "share/doc/hsb/examples/model/hsb-address",
        "share/doc/hsb/prometheus/hsb-alerts.yml",
        "share/doc/hsb/prometheus/hsb-alerts.test.yml",
        "share/doc/hsb/grafana/hsb.json",
    ];
    let mut examples = vec![];
    for backend in ["model", "xen"] {
        for host in ["host-a", "host-b"] {
            for role in ["primary", "standby"] {
                examples.push(format!("{backend}/{host}/{role}.conf"));
            }
        }
        for w in 1..=3 {
            examples.push(format!("{backend}/witness-{w}.conf"));
        }
    }
    // One witness for two guests ([guest NAME] sections, a key each).
    examples.push("xen/witness-1-guests.conf".to_string());
    let example_files: Vec<String> = examples
        .iter()
        .map(|e| format!("share/doc/hsb/examples/{e}"))
        .collect();
    want.extend(example_files.iter().map(String::as_str));
    let mut sorted_want = want.clone();
    sorted_want.sort_unstable();
    let mut sorted_files = files.clone();
    sorted_files.sort_unstable();
    assert_eq!(sorted_files, sorted_want, "tarball contents");

    // Unpacked: checksums of every file, modes, man pages, examples.
    run(Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(dir.path("")));
    let top = dir.path(&name);
    run(Command::new("sha256sum")
        .args(["--check", "--strict", "--quiet", "SHA256SUMS"])
        .current_dir(&top));
    let sums = std::fs::read_to_string(top.join("SHA256SUMS")).expect("SHA256SUMS");
    assert_eq!(
        sums.lines().count(),
        files.len() - 1,
        "every file but itself"
    );
    for b in ["hsb-primary", "hsb-standby", "hsb-witness"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(top.join("sbin").join(b))
            .expect("binary")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755, "{b}");
        let page = std::fs::read_to_string(top.join(format!("share/man/man8/{b}.8"))).expect("man");
        assert!(
            page.contains(&format!(".TH {} 8", b.to_uppercase())),
            "{b}.8"
        );
        assert!(
            page.contains(".SH CONFIGURATION") && page.contains("cluster_key"),
            "{b}.8"
        );
        // The page lists every key the daemon knows.
        let reference = run(Command::new(top.join("sbin").join(b)).arg("config-reference"));
        for row in reference.lines().filter(|l| l.starts_with("| `")) {
            let key = row.split('`').nth(1).expect("key");
            assert!(
                page.contains(&format!("\\fB{}\\fR", key.replace('-', "\\-"))),
                "{b}.8 lacks {key}"
            );
        }
    }

    // Every example passes `check` (the key they name is /etc/hsb/cluster.key: a fresh one here).
    let key = dir.path("cluster.key");
    hsb_common::key::ClusterKey::generate(&key).expect("key");
    for e in &examples {
        let mut path = top.join("share/doc/hsb/examples").join(e);
        if e.ends_with("-guests.conf") {
            // Each guest names its own key: a fresh one each here (one --set would give both
            // the same key, which the witness refuses).
            let text = std::fs::read_to_string(&path).expect("example");
            let mut n = 0;
            let text: Vec<String> = text
                .lines()
                .map(|l| match l.strip_prefix("cluster_key = ") {
                    Some(_) => {
                        n += 1;
                        let k = dir.path(&format!("guest-{n}.key"));
                        hsb_common::key::ClusterKey::generate(&k).expect("key");
                        format!("cluster_key = {}", k.display())
                    }
                    None => l.to_string(),
                })
                .collect();
            assert_eq!(n, 2, "{e}");
            path = dir.path("witness-guests.conf");
            std::fs::write(&path, text.join("\n")).expect("write");
            run(Command::new(top.join("sbin/hsb-witness"))
                .arg("check")
                .arg("-c")
                .arg(&path));
            continue;
        }
        let daemon = if e.ends_with("primary.conf") {
            "hsb-primary"
        } else if e.ends_with("standby.conf") {
            "hsb-standby"
        } else {
            "hsb-witness"
        };
        run(Command::new(top.join("sbin").join(daemon))
            .arg("check")
            .arg("-c")
            .arg(&path)
            .arg("--set")
            .arg(format!("cluster_key={}", key.display())));
    }

    // And they fit together: each host's primary replicates to the other's standby, each
    // host's two roles share a state file and hand over to each other, the witnesses find them.
    let ex = |p: &str| keys(&top.join("share/doc/hsb/examples").join(p));
    for backend in ["model", "xen"] {
        for (me, peer) in [("host-a", "host-b"), ("host-b", "host-a")] {
            let p = ex(&format!("{backend}/{me}/primary.conf"));
            let s = ex(&format!("{backend}/{me}/standby.conf"));
            let peer_s = ex(&format!("{backend}/{peer}/standby.conf"));
            assert_eq!(p["standby"], peer_s["listen"], "{backend} {me}");
            assert_eq!(p["state_file"], s["state_file"], "{backend} {me}");
            assert_eq!(p["witness_listen"], s["witness_listen"], "{backend} {me}");
            assert_eq!(p["backend"], backend);
            assert_eq!(s["backend"], backend);
            assert!(s["promote_config"].ends_with("/primary.conf"));
            assert!(p["rejoin_config"].ends_with("/standby.conf"));
            assert_eq!(p["heartbeat_peers"], peer_s["heartbeat_listen"]);
            // One metrics address per host and guest, whichever role runs (a hand-over).
            assert_eq!(
                p.get("metrics_listen"),
                s.get("metrics_listen"),
                "{backend} {me}"
            );
        }
        for w in 1..=3 {
            let c = ex(&format!("{backend}/witness-{w}.conf"));
            assert_eq!(
                c["primary"],
                ex(&format!("{backend}/host-a/primary.conf"))["witness_listen"]
            );
            assert_eq!(
                c["standby"],
                ex(&format!("{backend}/host-b/primary.conf"))["witness_listen"]
            );
            let peers = ex(&format!("{backend}/host-a/primary.conf"))["witness_peers"].clone();
            assert!(
                peers.contains(&format!("{w}={}", c["listen"])),
                "{backend} witness {w}"
            );
        }
        if backend == "model" {
            let svc: Vec<String> = [
                "host-a/primary",
                "host-a/standby",
                "host-b/primary",
                "host-b/standby",
            ]
            .iter()
            .map(|f| ex(&format!("model/{f}.conf"))["model.service"].clone())
            .collect();
            assert!(
                svc.iter().all(|s| *s == svc[0]),
                "one service address: {svc:?}"
            );
            let probe = &ex("model/witness-1.conf")["probe"];
            assert_eq!(*probe, format!("line {} PING PONG", svc[0]));
        }
    }
}
