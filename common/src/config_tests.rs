//! Unit tests of `config`.

use super::*;

static SCHEMA: &[KeySpec] = &[
    KeySpec {
        key: "listen",
        kind: ValueKind::Addr,
        default: None,
        help: "where to listen",
    },
    KeySpec {
        key: "checkpoint_period",
        kind: ValueKind::Duration,
        default: Some("25ms"),
        help: "checkpoint period",
    },
    KeySpec {
        key: "model.memory",
        kind: ValueKind::Size,
        default: Some("64MiB"),
        help: "guest memory",
    },
    KeySpec {
        key: "policy",
        kind: ValueKind::Choice(&["a", "b"]),
        default: Some("a"),
        help: "policy",
    },
    KeySpec {
        key: "n",
        kind: ValueKind::Int { min: 1, max: 9 },
        default: Some("3"),
        help: "n",
    },
];

#[test]
fn loads_values_defaults_and_overrides() {
    let c = Config::from_text(
        SCHEMA,
        "p.conf",
        "# comment\nlisten = 127.0.0.1:7100  # trailing\nmodel.memory = 8MiB\n",
        &["checkpoint_period=10ms".into()],
    )
    .unwrap();
    assert_eq!(c.addr("listen").unwrap(), "127.0.0.1:7100".parse().unwrap());
    assert_eq!(
        c.duration("checkpoint_period").unwrap(),
        Duration::from_millis(10)
    );
    assert_eq!(c.size("model.memory").unwrap(), 8 << 20);
    assert_eq!(c.int("n").unwrap(), 3);
    assert!(c
        .dump()
        .contains("checkpoint_period = 10ms    # command line"));
}

#[test]
fn errors_name_file_line_key_and_expectation() {
    let e = Config::from_text(
        SCHEMA,
        "p.conf",
        "listen = 1.2.3.4:5\ncheckpoint_period = fast\n",
        &[],
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "p.conf:2: key 'checkpoint_period': expected a duration like 25ms, 2s or 500us, got 'fast'"
    );
    let e = Config::from_text(SCHEMA, "p.conf", "lisen = 1.2.3.4:5\n", &[]).unwrap_err();
    assert!(e.to_string().contains("did you mean listen"), "{e}");
    let e = Config::from_text(SCHEMA, "p.conf", "", &[]).unwrap_err();
    assert!(e.to_string().contains("key 'listen': required"), "{e}");
    let e = Config::from_text(SCHEMA, "p.conf", "listen\n", &[]).unwrap_err();
    assert!(
        e.to_string().contains("p.conf:1: expected 'key = value'"),
        "{e}"
    );
    let e =
        Config::from_text(SCHEMA, "p.conf", "listen=1.2.3.4:5\nlisten=1.2.3.4:6", &[]).unwrap_err();
    assert!(e.to_string().contains("set twice"));
    let e = Config::from_text(SCHEMA, "p", "listen=1.2.3.4:5", &["n=10".into()]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "<command line>: key 'n': expected an integer from 1 to 9, got '10'"
    );
    let e = Config::from_text(SCHEMA, "p", "listen=1.2.3.4:5", &["policy=c".into()]).unwrap_err();
    assert!(e.to_string().contains("one of: a, b"));
    assert!(
        Config::load(SCHEMA, Some(Path::new("/nonexistent/x.conf")), &[])
            .unwrap_err()
            .to_string()
            .starts_with("/nonexistent/x.conf: cannot read")
    );
}

fn scratch(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("hsb-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

/// A file is read to at most 1 MiB whatever it claims to be; the message says why.
#[test]
fn files_are_bounded_text() {
    let big = scratch("big.conf");
    let mut text = "listen = 1.2.3.4:5\n".to_string();
    text.push_str(&"#".repeat(MAX_CONFIG_BYTES as usize));
    std::fs::write(&big, &text).unwrap();
    let e = Config::load(SCHEMA, Some(&big), &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.ends_with(
            "big.conf: larger than 1048576 bytes (1 MiB), the most a configuration file may be"
        ),
        "{e}"
    );
    // A device that never ends is refused the same way, not read forever.
    let e = Config::load(SCHEMA, Some(Path::new("/dev/zero")), &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("larger than 1048576 bytes"), "{e}");
    let dir = big.parent().unwrap();
    let e = Config::load(SCHEMA, Some(dir), &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.ends_with(": is a directory, expected a configuration file (key = value lines)"),
        "{e}"
    );
    let bin = scratch("bin.conf");
    std::fs::write(&bin, b"listen = 1.2.3.4:5\n# \xff\xfe\n").unwrap();
    let e = Config::load(SCHEMA, Some(&bin), &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.ends_with("bin.conf:2: not UTF-8 text (invalid byte at offset 21)"),
        "{e}"
    );
    let ok = scratch("ok.conf");
    std::fs::write(&ok, "listen = 1.2.3.4:5\n").unwrap();
    Config::load(SCHEMA, Some(&ok), &[]).unwrap();
    // --set text is bounded as a file is.
    let huge = format!("n={}", "1".repeat(MAX_CONFIG_BYTES as usize));
    let e = Config::load(SCHEMA, Some(&ok), &[huge])
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("<command line>: --set values of 1048578 bytes in all exceed 1 MiB"),
        "{e}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// Values are quoted back in part, control characters escaped; a long unknown key is cheap.
#[test]
fn messages_quote_values_in_part() {
    let long = "x".repeat(500_000);
    let e = Config::from_text(
        SCHEMA,
        "p",
        &format!("checkpoint_period = {long}\u{1b}"),
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(e.len() < 200, "{e}");
    assert!(e.ends_with(&format!("got '{}...'", "x".repeat(80))), "{e}");
    let e = Config::from_text(SCHEMA, "p", "checkpoint_period = 1\u{1b}[2J", &[])
        .unwrap_err()
        .to_string();
    assert!(e.ends_with("got '1\\u{1b}[2J'"), "{e}");
    let t = std::time::Instant::now();
    let e = Config::from_text(SCHEMA, "p", &format!("{long} = 1"), &[])
        .unwrap_err()
        .to_string();
    assert!(e.len() < 400 && e.contains("unknown key"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert_eq!(excerpt("a\tb"), "a\\tb");
}

#[test]
fn changed_keys_compare_meanings() {
    let a = Config::from_text(
        SCHEMA,
        "p",
        "listen = 127.0.0.1:7100\ncheckpoint_period = 1s\n",
        &[],
    )
    .unwrap();
    let same = Config::from_text(
        SCHEMA,
        "p",
        "# reordered, respelled\ncheckpoint_period = 1000ms\nlisten = 127.0.0.1:7100\nmodel.memory = 64MiB\n",
        &[],
    )
    .unwrap();
    assert!(a.changed_keys(&same).is_empty());
    let other = Config::from_text(
        SCHEMA,
        "p",
        "listen = 127.0.0.1:7101\ncheckpoint_period = 1s\nn = 4\n",
        &[],
    )
    .unwrap();
    assert_eq!(a.changed_keys(&other), ["listen", "n"]);
}

#[test]
fn value_parsers() {
    assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
    assert_eq!(parse_duration("500us"), Ok(Duration::from_micros(500)));
    assert!(parse_duration("5").is_err());
    assert!(parse_duration("-5s").is_err());
    assert!(parse_duration("1e999s").is_err());
    assert_eq!(parse_size("1GiB"), Ok(1 << 30));
    assert!(parse_size("99999999999999999999G").is_err());
    assert!(parse_size("12XB").is_err());
    assert_eq!(parse_addr_list(""), Ok(vec![]));
    assert!(parse_addr("localhost:80").is_err());
    assert!(reference_markdown(SCHEMA).contains("| `listen` |"));
}

/// `epoch_period` was renamed `checkpoint_period` (issue 13: "epoch" is the activation epoch
/// only). A configuration written with the old name still loads, from a file and from `--set`;
/// both names in one file are the same key set twice.
#[test]
fn a_renamed_key_is_still_read_under_its_old_name() {
    let c = Config::from_text(
        SCHEMA,
        "p.conf",
        "listen = 127.0.0.1:7100\nepoch_period = 40ms\n",
        &[],
    )
    .unwrap();
    assert_eq!(
        c.duration("checkpoint_period").unwrap(),
        Duration::from_millis(40)
    );
    let c = Config::from_text(
        SCHEMA,
        "p.conf",
        "listen = 127.0.0.1:7100\n",
        &["epoch_period=5ms".into()],
    )
    .unwrap();
    assert_eq!(
        c.duration("checkpoint_period").unwrap(),
        Duration::from_millis(5)
    );
    let e = Config::from_text(
        SCHEMA,
        "p.conf",
        "listen = 127.0.0.1:7100\nepoch_period = 40ms\ncheckpoint_period = 40ms\n",
        &[],
    )
    .unwrap_err();
    assert_eq!(
        (e.line, e.message.as_str()),
        (Some(3), "set twice in this file")
    );
}
