//! The systemd units in contrib/systemd/: `systemd-analyze verify` accepts them without a word
//! (an unknown key is only a warning to systemd, so any output fails here), the two dom0 units
//! carry the same hardening (a hand-over turns one role into the other inside the same unit) and
//! are `Type=notify` with the watchdog like the witness's, the witness unit stays unprivileged,
//! and the paths they make are the daemons' defaults.

use std::path::{Path, PathBuf};
use std::process::Command;

use hsb_tests::{bin, skip, TempDir};

fn contrib() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/systemd")
}

fn unit(name: &str) -> String {
    std::fs::read_to_string(contrib().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn has_systemd_analyze() -> bool {
    Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

const UNITS: [&str; 3] = [
    "hsb-primary@.service",
    "hsb-standby@.service",
    "hsb-witness.service",
];

#[test]
fn systemd_analyze_verify_accepts_the_units() {
    if !has_systemd_analyze() {
        return skip(
            "systemd_analyze_verify_accepts_the_units",
            "no systemd-analyze (apt-get install systemd)",
        );
    }
    // verify checks that ExecStart's program exists: point it at the binaries under test.
    let dir = TempDir::new("units");
    let bins = bin("hsb-primary")
        .parent()
        .expect("bin dir")
        .display()
        .to_string();
    let mut paths = vec![];
    for u in UNITS {
        let text = unit(u).replace("/usr/local/sbin/", &format!("{bins}/"));
        let p = dir.path(u);
        std::fs::write(&p, text).expect("write");
        paths.push(p);
    }
    // --man=no: the man pages are installed from the release tarball (just dist), not here.
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&paths)
        .output()
        .expect("systemd-analyze");
    let said =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {}\n{said}",
        out.status
    );

    // The witness runs with nothing privileged; the exposure score says so (lower is better).
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(dir.path("hsb-witness.service"))
        .output()
        .expect("systemd-analyze security");
    let text = String::from_utf8_lossy(&out.stdout);
    let score = text
        .lines()
        .find_map(|l| l.split("hsb-witness.service: ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok());
    match score {
        Some(s) => assert!(s <= 2.0, "hsb-witness.service exposure {s}:\n{text}"),
        None => println!("systemd-analyze security --offline not available here:\n{text}"),
    }
}

/// The part of a unit from its hardening marker on.
fn hardening(text: &str) -> &str {
    let at = text.find("# --- Hardening").expect("hardening marker");
    &text[at..]
}

#[test]
fn both_dom0_units_carry_the_same_privileges_and_exclude_each_other() {
    let p = unit("hsb-primary@.service");
    let s = unit("hsb-standby@.service");
    assert_eq!(
        hardening(&p),
        hardening(&s),
        "hsb-primary@ and hsb-standby@ must harden alike: a hand-over execs one role in the other's unit"
    );
    assert!(p.contains("\nConflicts=hsb-standby@%i.service\n"));
    assert!(s.contains("\nConflicts=hsb-primary@%i.service\n"));
    assert!(p.contains("\nExecStart=/usr/local/sbin/hsb-primary run -c /etc/hsb/%i/primary.conf\n"));
    assert!(s.contains("\nExecStart=/usr/local/sbin/hsb-standby run -c /etc/hsb/%i/standby.conf\n"));
    for u in [&p, &s] {
        assert!(u.contains("\nRestart=on-failure\n"));
        // Both programs notify, and a hand-over keeps the main PID: notify, the main process
        // only, with the watchdog (tests/notify.rs: the READY after a hand-over's exec comes
        // from the same PID).
        for line in ["Type=notify", "NotifyAccess=main", "WatchdogSec=10s"] {
            assert!(u.contains(&format!("\n{line}\n")), "{line}");
        }
        assert!(!u.contains("Type=simple"));
        for dev in ["privcmd", "hypercall", "xenbus"] {
            assert!(
                u.contains(&format!("\nDeviceAllow=/dev/xen/{dev} rw\n")),
                "{dev}"
            );
        }
        assert!(
            u.contains("AF_NETLINK"),
            "the plug qdisc is driven over rtnetlink"
        );
    }
}

#[test]
fn the_witness_unit_is_unprivileged_and_makes_the_witness_default_paths() {
    let w = unit("hsb-witness.service");
    for line in [
        "User=hsb",
        "CapabilityBoundingSet=",
        "NoNewPrivileges=yes",
        "StateDirectory=hsb",
        "RuntimeDirectory=hsb",
        "Restart=on-failure",
        "Type=notify",
        "WatchdogSec=10s",
    ] {
        assert!(w.contains(&format!("\n{line}\n")), "{line}");
    }
    assert!(unit("hsb.sysusers").contains("\nu hsb "));
    // StateDirectory=hsb and RuntimeDirectory=hsb are /var/lib/hsb and /run/hsb: where the
    // witness puts its files by default.
    let out = Command::new(bin("hsb-witness"))
        .arg("config-reference")
        .output()
        .expect("config-reference");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("`/var/lib/hsb/witness-{id}.state`"), "{text}");
    assert!(text.contains("`/run/hsb/witness-{id}.sock`"), "{text}");
}
