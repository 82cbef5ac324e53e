//! Unit tests of `casefile`.

use super::*;

#[test]
fn parse_errors_carry_line_numbers() {
    for (text, line) in [
        ("role standby", 1),
        ("case x\nrole nope", 2),
        ("case x\nset lease=1ms", 2),
        ("case x\n\n10ms heartbeat bogus=1", 3),
        ("case x\nxyz", 2),
        ("case x\nevery 10ms: heartbeat", 2),
        ("case x\nevery 10ms until 1s drop 300%: heartbeat", 2),
        ("case x\n>", 2),
        ("case x\n5ms tick\nrole primary", 3),
        ("case x\n> activate at<=zz", 2),
    ] {
        let e = parse_cases(text).expect_err(text);
        assert_eq!(e.line, line, "{text}: {e}");
    }
}

#[test]
fn runs_and_reports_mismatches() {
    let ok = "case ok\nevery 10ms until 100ms: heartbeat\nrun 100ms\n> none\nrun 150ms\n> query kind=takeover at=150ms\ncheck state=deciding";
    let cases = parse_cases(ok).expect("parse");
    run_case(&cases[0]).expect("run");
    let bad = "case bad\nrun 60ms\n> activate";
    let cases = parse_cases(bad).expect("parse");
    let f = run_case(&cases[0]).expect_err("mismatch");
    assert_eq!(f.line, 3, "{f}");
    let late = "case late\nrun 60ms";
    let f = run_case(&parse_cases(late).expect("parse")[0]).expect_err("unexpected");
    assert!(f.message.contains("unexpected actions"), "{f}");
    let back = "case back\n10ms tick\n5ms tick";
    assert!(run_case(&parse_cases(back).expect("parse")[0]).is_err());
}
