//! Runs every fault case of `common/testdata/decision/*.txt` through the decision cores.

use std::path::Path;

use hsb_testkit::casefile::{parse_cases, run_case};

#[test]
fn decision_cases() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/decision");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("testdata/decision")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no case files in {}", dir.display());
    let (mut cases, mut failures) = (0, Vec::new());
    for f in &files {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = std::fs::read_to_string(f).expect("read case file");
        let parsed = match parse_cases(&text) {
            Ok(c) => c,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        for c in &parsed {
            cases += 1;
            if let Err(e) = run_case(c) {
                failures.push(format!("{name}: {e}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cases} cases failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    assert!(cases >= 40, "only {cases} cases");
}
