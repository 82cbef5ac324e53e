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
