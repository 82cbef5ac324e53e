//! Unit tests of `xen`.

use super::source::request_needed;
use super::*;
use hsb_common::config::{Config, ConfigError, KeySpec, ValueKind};
use std::time::Duration;

#[test]
fn a_suspend_is_requested_once_until_it_completes_or_expires() {
    assert!(request_needed(false, false));
    // A fence arriving while a checkpoint's suspend is under way must not write the
    // request again: the guest would suspend a second time after its resume.
    assert!(!request_needed(false, true));
    assert!(!request_needed(true, false));
}

#[test]
fn runs_stop_at_gaps_and_chunk_edges() {
    assert_eq!(run_len(&[]), 0);
    assert_eq!(run_len(&[5]), 1);
    assert_eq!(run_len(&[5, 6, 7, 9]), 3);
    assert_eq!(run_len(&[CHUNK_PFNS - 2, CHUNK_PFNS - 1, CHUNK_PFNS]), 2);
    assert_eq!(run_len(&[CHUNK_PFNS, CHUNK_PFNS + 1]), 2);
    assert_eq!(run_len(&[3, 3]), 1);
    let r: Vec<_> = runs(&[5, 6, 7, 9, 10, 12]).collect();
    assert_eq!(r, vec![(0, 5, 3), (3, 9, 2), (5, 12, 1)]);
    assert_eq!(runs(&[]).count(), 0);
}

#[test]
fn state_record_round_trip_and_checks() {
    let mut params = heapless::Vec::new();
    params.push((hvm_param::STORE_PFN, 0xfeffc)).unwrap();
    let hvm = [7u8; 100];
    let s = XenState {
        version: STATE_VERSION,
        tsc: (2, 1_000_000, 3),
        tsc_elapsed_nsec: 42,
        params,
        hvm: &hvm,
    };
    let mut buf = [0u8; 512];
    let b = postcard::to_slice(&s, &mut buf).unwrap();
    assert_eq!(XenState::decode(b).unwrap(), s);

    // An event-channel param is never accepted: the replica keeps its own.
    let mut bad = heapless::Vec::new();
    bad.push((hvm_param::STORE_EVTCHN, 5)).unwrap();
    let s2 = XenState { params: bad, ..s };
    let mut buf2 = [0u8; 512];
    let b2 = postcard::to_slice(&s2, &mut buf2).unwrap();
    let e = XenState::decode(b2).unwrap_err();
    assert!(e.detail.contains("param 2"), "{e}");

    // Truncated and wrong-version records are refused, never panic.
    for n in 0..b.len() {
        let _ = XenState::decode(&b[..n]);
    }
    let mut v = b.to_vec();
    v[0] = 9;
    assert!(XenState::decode(&v)
        .unwrap_err()
        .detail
        .contains("version 9"));
}

fn settings(text: &str) -> Result<Option<XenSettings>, ConfigError> {
    static SCHEMA: std::sync::OnceLock<Vec<KeySpec>> = std::sync::OnceLock::new();
    let schema = SCHEMA.get_or_init(|| {
        let mut v = KEYS.to_vec();
        v.push(KeySpec {
            key: "backend",
            kind: ValueKind::Choice(&["model", "xen"]),
            default: Some("model"),
            help: "",
        });
        v
    });
    let c = Config::from_text(schema, "t.conf", text, &[])?;
    XenSettings::from_config(&c)
}

#[test]
fn settings_from_config() {
    assert_eq!(
        settings("").unwrap(),
        None,
        "model backend: no xen settings"
    );
    let x = settings("backend = xen\nxen.domain = guest\n")
        .unwrap()
        .unwrap();
    assert_eq!(x.domain, DomainRef::Name("guest".into()));
    assert!(x.plug);
    assert_eq!(x.vif, None);
    assert_eq!(x.suspend_timeout, Duration::from_secs(2));
    let x = settings("backend = xen\nxen.domain = 7\nxen.output = none\nxen.vif = vif7.0\n")
        .unwrap()
        .unwrap();
    assert_eq!(x.domain, DomainRef::Id(7));
    assert!(!x.plug);
    assert_eq!(x.vif.as_deref(), Some("vif7.0"));
    for (text, want) in [
        ("backend = xen\n", "key 'xen.domain': the xen backend needs"),
        ("backend = xen\nxen.domain = 0\n", "not dom0"),
        (
            "backend = xen\nxen.domain = a/b\n",
            "expected a domain name or id",
        ),
        (
            "backend = xen\nxen.domain = g\nxen.vif = a/b\n",
            "expected a network device name",
        ),
        (
            "backend = xen\nxen.domain = g\nxen.output = tc\n",
            "xen.output",
        ),
        (
            "backend = xen\nxen.domain = g\nxen.suspend_timeout = 0s\n",
            "t.conf:3: key 'xen.suspend_timeout': expected at least 1ms",
        ),
    ] {
        let e = settings(text).unwrap_err().to_string();
        assert!(e.contains(want), "{text:?}: {e}");
    }
}

#[test]
fn without_xen_opening_says_so() {
    if std::path::Path::new("/dev/xen/privcmd").exists() {
        return;
    }
    let e = XenSource::open(1, Duration::from_secs(1), &mut || {}).unwrap_err();
    assert!(e.to_string().contains("not a Xen dom0"), "{e}");
    let e = XenReplica::open(1).unwrap_err();
    assert!(e.to_string().contains("not a Xen dom0"), "{e}");
    let e = describe(&DomainRef::Id(1)).unwrap_err();
    assert!(e.to_string().contains("not a Xen dom0"), "{e}");
}
