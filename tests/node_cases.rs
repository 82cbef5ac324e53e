//! Runs every node case of `primary/testdata/node/*.txt` and `standby/testdata/node/*.txt`
//! through the real nodes ([`hsb_tests::nodecase`]).

use std::path::Path;

use hsb_tests::nodecase::{parse_cases, run_case};

fn run_dir(dir: &str) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    let mut cases = 0;
    let mut failures = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let parsed = parse_cases(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for c in &parsed {
            cases += 1;
            if let Err(e) = run_case(c) {
                failures.push(format!("{}: {e}", f.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    cases
}

#[test]
fn primary_node_cases() {
    assert!(run_dir("../primary/testdata/node") >= 4);
}

#[test]
fn standby_node_cases() {
    assert!(run_dir("../standby/testdata/node") >= 4);
}
