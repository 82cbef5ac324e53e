//! The README's configuration reference is what the daemons say of themselves: every row that
//! `hsb-X config-reference` prints appears in README.md as it is, so a new or changed key cannot
//! go undocumented.

use std::process::Command;

use hsb_tests::bin;

#[test]
fn readme_configuration_reference_matches_the_daemons() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let mut missing = Vec::new();
    for daemon in ["hsb-primary", "hsb-standby", "hsb-witness"] {
        let out = Command::new(bin(daemon))
            .arg("config-reference")
            .output()
            .unwrap_or_else(|e| panic!("{daemon}: {e}"));
        assert!(out.status.success(), "{daemon} config-reference failed");
        let text = String::from_utf8(out.stdout).expect("utf-8");
        let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("| `")).collect();
        assert!(rows.len() > 5, "{daemon} printed only {} keys", rows.len());
        for row in rows {
            if !readme.lines().any(|l| l == row) {
                missing.push(format!("{daemon}: {row}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "README.md's configuration reference is out of date (regenerate it with `just readme-config`); missing or different rows:\n{}",
        missing.join("\n")
    );
}
