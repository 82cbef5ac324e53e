//! Hostile-input paths as functions of arbitrary bytes, each shared by a cargo-fuzz target
//! (`common/fuzz`, `just fuzz TARGET`) and a seeded property test that runs in `just test`.
//!
//! - [`decode`] (target `decode`): bytes go through the frame reader, the session (CRC, MAC,
//!   sequence), every message decoder and the checkpoint receiver. A first byte of 0 makes the
//!   input a list of mutations of a valid sealed checkpoint stream, so the checks behind the MAC
//!   are reached too.
//! - [`config`] (target `config`): bytes are a configuration file, loaded with `--set`
//!   overrides the way the daemons load theirs, then read through every typed getter and the
//!   shared settings (`failover.*`, `witness_peers`, heartbeat addresses, `model.*`, `xen.*`).
//!
//! Nothing may panic or allocate beyond the configured bounds.

use std::path::PathBuf;
use std::sync::OnceLock;

use crate::checkpoint::{Receiver, Staging};
use crate::config::{Config, KeySpec, ValueKind};
use crate::conn::{Fill, FrameReader};
use crate::domain::CheckpointSource;
use crate::frame::{Kind, HEADER_LEN};
use crate::key::ClusterKey;
use crate::model::{ModelDomain, MIN_PAGES};
use crate::msg;
use crate::session::{Session, Side};

const PAGES: u64 = MIN_PAGES + 8;

/// Feed `data` to the receive path. Returns how many checkpoints were applied.
pub fn decode(data: &[u8]) -> usize {
    match data.split_first() {
        Some((0, rest)) => {
            let mut bytes = valid_stream();
            for m in rest.chunks_exact(4) {
                let pos = u32::from_le_bytes([m[0], m[1], m[2], 0]) as usize % bytes.len();
                bytes[pos] ^= m[3];
            }
            stream(&bytes, true)
        }
        Some((_, rest)) => stream(rest, false),
        None => 0,
    }
}

/// A sealed full checkpoint followed by an incremental one.
pub fn valid_stream() -> Vec<u8> {
    let key = ClusterKey::from_bytes([7; 32]);
    let mut tx = Session::new(&key, &[1; 16], &[2; 16], Side::Initiator);
    let mut d = ModelDomain::new(PAGES, 0, 3);
    let mut st = Staging::new(PAGES);
    let mut bytes = Vec::new();
    for (n, full) in [(1u64, true), (2, false)] {
        d.handle("INCR");
        let ok = d.suspend().is_ok() && st.capture(&mut d, n, 1, full).is_ok();
        let ok = d.resume().is_ok() && ok && st.seal(&mut tx).is_ok();
        if ok {
            bytes.extend_from_slice(st.bytes());
        }
    }
    bytes
}

fn stream(data: &[u8], authenticated: bool) -> usize {
    let key = ClusterKey::from_bytes([7; 32]);
    let mut rx = Session::new(&key, &[1; 16], &[2; 16], Side::Responder);
    let mut receiver = Receiver::new(PAGES);
    let mut replica = ModelDomain::blank(PAGES);
    let mut reader = FrameReader::new(300_000);
    let mut src = data;
    let mut applied = 0;
    loop {
        match reader.fill(&mut src) {
            Ok(Fill::Data(n)) if n > 0 || reader.buffered() > 0 => {}
            _ => return applied,
        }
        loop {
            let (kind, frame) = match reader.next_frame() {
                Ok(Some((h, f))) => (h.kind, f.to_vec()),
                Ok(None) => break,
                Err(_) => return applied,
            };
            let body = &frame[HEADER_LEN..];
            let _ = msg::decode::<msg::Hello>(Kind::Hello, body);
            let _ = msg::decode::<msg::Pages>(Kind::Pages, body);
            let _ = msg::decode::<msg::End>(Kind::End, body);
            let _ = msg::decode::<msg::Refuse>(Kind::Refuse, body);
            let hash = match rx.open(&frame) {
                Ok(h) => h,
                // Unauthenticated inputs still exercise the receiver's own checks.
                Err(_) if !authenticated => crate::frame::body_crc(body),
                Err(_) => return applied,
            };
            match receiver.on_frame(kind, body, &hash) {
                Ok(Some(_)) => {
                    if receiver.apply(&mut replica).is_ok() {
                        applied += 1;
                    }
                }
                Ok(None) => {}
                Err(_) => return applied,
            }
            if reader.buffered() == 0 && src.is_empty() {
                return applied;
            }
        }
    }
}

/// A daemon-like schema: one key of every value type (one of them required), the `xen.*` keys
/// and the `failover.*` keys.
static OWN: &[KeySpec] = &[
    KeySpec {
        key: "listen",
        kind: ValueKind::Addr,
        default: None,
        help: "required address",
    },
    KeySpec {
        key: "node",
        kind: ValueKind::Str,
        default: Some("n"),
        help: "text",
    },
    KeySpec {
        key: "cluster_key",
        kind: ValueKind::Path,
        default: Some(""),
        help: "path",
    },
    KeySpec {
        key: "heartbeat",
        kind: ValueKind::AddrList,
        default: Some(""),
        help: "addresses",
    },
    KeySpec {
        key: "witness_peers",
        kind: ValueKind::Str,
        default: Some(""),
        help: "peers",
    },
    KeySpec {
        key: "failover",
        kind: ValueKind::Bool,
        default: Some("false"),
        help: "bool",
    },
    KeySpec {
        key: "model.memory",
        kind: ValueKind::Size,
        default: Some("8MiB"),
        help: "size",
    },
    KeySpec {
        key: "stats_interval",
        kind: ValueKind::Duration,
        default: Some("1s"),
        help: "duration",
    },
    KeySpec {
        key: "max_clients",
        kind: ValueKind::Int { min: 1, max: 4096 },
        default: Some("256"),
        help: "int",
    },
    KeySpec {
        key: "backend",
        kind: ValueKind::Choice(&["model", "xen"]),
        default: Some("model"),
        help: "choice",
    },
];

static SCHEMA: OnceLock<Vec<KeySpec>> = OnceLock::new();

/// The schema [`config`] loads against.
pub fn config_schema() -> &'static [KeySpec] {
    crate::failover::schema_with(OWN, crate::xen::KEYS, &SCHEMA)
}

/// Most `--set` overrides taken from one input.
const MAX_SETS: usize = 8;
/// Longest error message accepted: values are quoted back only in part ([`crate::config::excerpt`]).
pub const MAX_MESSAGE: usize = 4096;

/// How far [`config`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigOutcome {
    /// The loader refused the input.
    Refused,
    /// Loaded, then refused by the shared settings (`failover.*`, peers, `model.*`, `xen.*`).
    SettingsRefused,
    /// Loaded and accepted.
    Accepted,
}

/// Load `data` as a configuration file: bytes up to the first 0 are the file, each further
/// 0-separated piece (at most [`MAX_SETS`]) a `--set key=value`. The file really is written
/// and loaded with [`Config::load`], so the bounded read and the UTF-8 check are exercised.
///
/// Panics (the finding) if the loader panics, if an error message is longer than
/// [`MAX_MESSAGE`], or if a value the loader accepted is refused by its typed getter.
pub fn config(data: &[u8]) -> ConfigOutcome {
    let mut parts = data.split(|b| *b == 0);
    let file = parts.next().unwrap_or_default();
    let sets: Vec<String> = parts
        .take(MAX_SETS)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    let path = scratch_file();
    if std::fs::write(&path, file).is_err() {
        return ConfigOutcome::Refused;
    }
    let outcome = load_and_read(&path, &sets);
    let _ = std::fs::remove_file(&path);
    outcome
}

fn load_and_read(path: &std::path::Path, sets: &[String]) -> ConfigOutcome {
    let schema = config_schema();
    let c = match Config::load(schema, Some(path), sets) {
        Ok(c) => c,
        Err(e) => {
            bounded_message(&e.to_string());
            return ConfigOutcome::Refused;
        }
    };
    for spec in schema {
        let k = spec.key;
        let ok = match spec.kind {
            ValueKind::Str => c.str(k).is_ok(),
            ValueKind::Path => c.path(k).is_ok(),
            ValueKind::Addr => c.addr(k).is_ok(),
            ValueKind::AddrList => c.addrs(k).is_ok(),
            ValueKind::Duration => c.duration(k).is_ok(),
            ValueKind::Size => c.size(k).is_ok(),
            ValueKind::Int { .. } => c.int(k).is_ok(),
            ValueKind::Bool => c.bool(k).is_ok(),
            ValueKind::Choice(_) => c.str(k).is_ok(),
        };
        assert!(ok, "key {k}: accepted by the loader, refused by its getter");
    }
    let _ = c.dump();
    let settings = crate::failover::peers(&c, "heartbeat")
        .map(|_| ())
        .and_then(|()| crate::model::pages_from_config(&c).map(|_| ()))
        .and_then(|()| crate::xen::XenSettings::from_config(&c).map(|_| ()));
    match settings {
        Ok(()) => ConfigOutcome::Accepted,
        Err(e) => {
            bounded_message(&e.to_string());
            ConfigOutcome::SettingsRefused
        }
    }
}

fn bounded_message(m: &str) {
    assert!(
        m.len() <= MAX_MESSAGE,
        "error message of {} bytes: {m:.200}",
        m.len()
    );
}

/// A file of this process and thread (the property tests run on several threads).
fn scratch_file() -> PathBuf {
    let t = format!("{:?}", std::thread::current().id());
    let t: String = t.chars().filter(char::is_ascii_digit).collect();
    std::env::temp_dir().join(format!("hsb-fuzz-config-{}-{t}.conf", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    #[test]
    fn valid_stream_applies_two_checkpoints() {
        let mut input = vec![0u8];
        assert_eq!(decode(&input), 2);
        input.extend_from_slice(&[0, 0, 0, 0]); // xor with 0: no change
        assert_eq!(decode(&input), 2);
    }

    #[test]
    fn any_single_mutation_stops_before_applying_it() {
        let len = valid_stream().len();
        let mut rng = SplitMix64::new(42);
        for _ in 0..400 {
            let pos = rng.below(len as u64) as u32;
            let x = (rng.below(255) + 1) as u8;
            let p = pos.to_le_bytes();
            let applied = decode(&[0, p[0], p[1], p[2], x]);
            assert!(applied <= 2);
        }
    }

    /// Lines made of the schema's keys and awkward values, with noise, then `--set` pieces.
    fn config_input(rng: &mut SplitMix64) -> Vec<u8> {
        const VALUES: &[&str] = &[
            "",
            "0",
            "0s",
            "1ms",
            "25ms",
            "1.5s",
            "-1s",
            "1e999s",
            "99999999999999999999",
            "1,2",
            "1,2,3",
            "1,2,3,4",
            "1,1,3",
            "4,5,6",
            "1=127.0.0.1:1,2=127.0.0.1:2,3=127.0.0.1:3",
            "1=127.0.0.1:1,1=127.0.0.1:2",
            "1=127.0.0.1:1,2=127.0.0.1:1",
            "127.0.0.1:7100",
            "[::1]:7",
            "true",
            "xen",
            "model",
            "64MiB",
            "1GiB",
            "500µs",
            "é",
            "\u{7}\u{1b}[2J",
            "heartbeat-only",
            "ping-node",
            "2s",
            "=",
            "#",
            "a=b=c",
            "10s",
            "100ms",
            "7",
        ];
        let schema = config_schema();
        let pick = |rng: &mut SplitMix64, v: &[&'static str]| v[rng.below(v.len() as u64) as usize];
        let mut out = Vec::new();
        if rng.below(4) > 0 {
            out.extend_from_slice(b"listen = 127.0.0.1:7100\n");
        }
        let mut used = Vec::new();
        for _ in 0..rng.below(8) {
            if rng.below(20) == 0 {
                let mut noise = vec![0u8; rng.below(40) as usize];
                rng.fill(&mut noise);
                out.extend_from_slice(&noise);
                out.push(b'\n');
                continue;
            }
            let spec = schema[rng.below(schema.len() as u64) as usize];
            if used.contains(&spec.key) && rng.below(10) > 0 {
                continue;
            }
            used.push(spec.key);
            // Mostly the key's own default (valid alone), else an awkward value.
            let value = match spec.default {
                Some(d) if rng.below(3) > 0 => d,
                _ => pick(rng, VALUES),
            };
            out.extend_from_slice(format!("{} = {value}\n", spec.key).as_bytes());
        }
        for _ in 0..rng.below(3) {
            out.push(0);
            let key = schema[rng.below(schema.len() as u64) as usize].key;
            out.extend_from_slice(format!("{key}={}", pick(rng, VALUES)).as_bytes());
        }
        out
    }

    #[test]
    fn random_configurations_never_panic() {
        let mut rng = SplitMix64::new(11);
        let mut seen = [0usize; 3];
        for _ in 0..3000 {
            let input = config_input(&mut rng);
            seen[config(&input) as usize] += 1;
        }
        // The generator gets past the loader and past the settings, not only into errors.
        assert!(seen.iter().all(|n| *n > 20), "{seen:?}");
    }

    #[test]
    fn config_inputs_split_into_file_and_sets() {
        assert_eq!(config(b""), ConfigOutcome::Refused, "listen is required");
        assert_eq!(config(b"listen = 127.0.0.1:1\n"), ConfigOutcome::Accepted);
        assert_eq!(
            config(b"\0listen=127.0.0.1:1\0failover.hb-interval=0s"),
            ConfigOutcome::SettingsRefused
        );
        // A megabyte-long key or value is refused with a short message (asserted inside).
        let mut long = b"listen = 127.0.0.1:1\n".to_vec();
        long.extend(std::iter::repeat_n(b'k', 1 << 19));
        long.extend_from_slice(b" = 1\n");
        assert_eq!(config(&long), ConfigOutcome::Refused);
        let mut long = b"listen = 127.0.0.1:1\nnode = ".to_vec();
        long.extend(std::iter::repeat_n(b'\x1b', 1 << 19));
        assert_eq!(config(&long), ConfigOutcome::Accepted);
        let mut long = b"listen = 127.0.0.1:1\nfailover.witnesses = ".to_vec();
        long.extend(std::iter::repeat_n(b'9', 1 << 19));
        assert_eq!(config(&long), ConfigOutcome::SettingsRefused);
    }

    #[test]
    fn random_inputs_never_panic() {
        let mut rng = SplitMix64::new(7);
        let valid = valid_stream();
        for i in 0..3000 {
            let n = rng.below(600) as usize;
            let mut buf = vec![0u8; n + 1];
            rng.fill(&mut buf);
            // Mix in prefixes of the valid stream so headers parse and bodies get decoded.
            if i % 3 == 0 && n > 40 {
                let k = (rng.below(valid.len() as u64) as usize).min(n);
                buf[1..1 + k].copy_from_slice(&valid[..k]);
            }
            decode(&buf);
        }
    }
}
