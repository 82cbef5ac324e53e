//! Records the git commit the daemons were built from, for `hsb-X --version`.
//!
//! `HSB_COMMIT` in the build's environment wins (a build from a source tarball has no git
//! history); otherwise `git rev-parse` in this checkout; otherwise "unknown". Cargo reruns this
//! when HEAD or the branch it names moves, so a commit never shows a stale hash.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let dir = std::env::var("CARGO_MANIFEST_DIR").ok()?;
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=HSB_COMMIT");
    println!("cargo:rerun-if-changed=build.rs");
    let commit = match std::env::var("HSB_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ => git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into()),
    };
    // Watch the files whose change means another commit: HEAD, the branch it names (loose or
    // packed). Only existing files: a missing one would rerun this script on every build.
    let mut watch = vec!["HEAD".to_string(), "packed-refs".to_string()];
    if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch.push(r);
    }
    for w in watch {
        if let Some(p) = git(&["rev-parse", "--git-path", &w]) {
            let p = Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default()).join(p);
            if p.exists() {
                println!("cargo:rerun-if-changed={}", p.display());
            }
        }
    }
    println!("cargo:rustc-env=HSB_COMMIT={commit}");
}
