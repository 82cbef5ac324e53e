//! Hostile-input paths as functions of arbitrary bytes, each shared by a cargo-fuzz target
//! (`common/fuzz`, `just fuzz TARGET`) and a seeded property test that runs in `just test`.
//!
//! - [`decode`] (target `decode`): bytes go through the frame reader, the session (CRC, MAC,
//!   sequence), every message decoder and the checkpoint receiver with its page decoders. A
//!   first byte of 0 makes the input a list of mutations of a valid sealed checkpoint stream
//!   (plain and encoded checkpoints), so the checks behind the MAC are reached too.
//! - [`page_codec`] (target `codec`): bytes are page records, ops and LZ4 frames for the page
//!   decoders, and also two pages whose encoding must decode back to the same page.
//! - [`control`] (target `control`): the control server's command-line parsing, and the client's
//!   reading of an answer (`status --json`, the health exit code).
//! - [`datagram`] (target `datagram`): bytes are datagrams for a standby's receiver (frame
//!   header, MAC, envelope, destination, incarnation order, replay windows, message decoder);
//!   a first byte of 0 makes the rest a schedule of deliveries of valid datagrams from senders
//!   that restart, reordered, replayed and mutated. Nothing is accepted twice, none addressed to
//!   another node, none from an incarnation older than one already accepted.
//! - [`config`] (target `config`): bytes are a configuration file, loaded with `--set`
//!   overrides the way the daemons load theirs, then read through every typed getter and the
//!   shared settings (`failover.*`, `witness_peers`, heartbeat addresses, `model.*`, `xen.*`).
//! - [`nbd`] (target `nbd`): bytes are what an NBD client sends hsb-primary's export, whole and
//!   in arbitrary deliveries, after a valid prefix or none (`fuzzing_nbd.rs`).
//!
//! Nothing may panic or allocate beyond the configured bounds.

use std::path::PathBuf;
use std::sync::OnceLock;

use hsb_common::config::{Config, KeySpec, ValueKind};
use hsb_common::conn::{Fill, FrameReader};
use hsb_common::frame::{Kind, HEADER_LEN};
use hsb_common::key::ClusterKey;
use hsb_common::msg;
use hsb_common::session::{Session, Side};
use hsb_domain::checkpoint::{Receiver, Staging};
use hsb_domain::codec_policy::CodecMode;
use hsb_domain::domain::CheckpointSource;
use hsb_domain::model::{ModelDomain, WritePattern, MIN_PAGES};
use hsb_domain::page_codec::{self, Record};
use hsb_domain::PAGE_SIZE;

#[path = "fuzzing_nbd.rs"]
mod nbd_body;
pub use nbd_body::nbd;

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

/// Checkpoints in [`valid_stream`].
pub const VALID_CHECKPOINTS: usize = 3;

/// A sealed full checkpoint (encoded: zero and sparse pages, LZ4), an encoded incremental one
/// (deltas) and a plain incremental one.
pub fn valid_stream() -> Vec<u8> {
    let key = ClusterKey::from_bytes([7; 32]);
    let mut tx = Session::new(&key, &[1; 16], &[2; 16], Side::Initiator);
    let mut d = ModelDomain::new(PAGES, 1000, 3).with_pattern(WritePattern::Lines(1));
    let mut st = Staging::with_codec(PAGES, CodecMode::Always, PAGES);
    let mut bytes = Vec::new();
    for (n, full) in [(1u64, true), (2, false), (3, false)] {
        d.run(hsb_common::time::Nanos::from_millis(n * 10));
        d.handle("INCR");
        if n == 3 {
            st.set_codec_mode(CodecMode::Never);
        }
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
            let _ = msg::decode::<msg::DiskWrite>(Kind::Disk, body);
            let _ = msg::decode::<msg::DiskPlan>(Kind::DiskPlan, body);
            let _ = msg::decode::<msg::DiskDirty>(Kind::DiskDirty, body);
            let hash = match rx.open(&frame) {
                Ok(h) => h,
                // Unauthenticated inputs still exercise the receiver's own checks.
                Err(_) if !authenticated => hsb_common::frame::body_crc(body),
                Err(_) => return applied,
            };
            match receiver.on_frame(kind, body, &hash, &mut replica) {
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

/// Feed `data` to the page decoders, and check that pages encode to records that decode back
/// to them. The first byte picks the page of the input's first 8 KiB (as a page and its
/// previous version) that changes; the rest is also read as records, ops and an LZ4 frame.
/// Returns the length of the record the page became.
pub fn page_codec(data: &[u8]) -> usize {
    let (&pick, rest) = data.split_first().unwrap_or((&0, &[]));
    let mut out = vec![0u8; 3 * PAGE_SIZE];
    if let Ok((Record::Delta(ops) | Record::Sparse(ops), _)) = page_codec::read_record(rest) {
        let _ = page_codec::apply_ops(ops, &mut out[..PAGE_SIZE]);
    }
    let _ = page_codec::apply_ops(rest, &mut out[..PAGE_SIZE]);
    let _ = page_codec::decompress(rest, &mut out, 2 * PAGE_SIZE);
    // Round trip: the previous version, and the page as it is now (some of its bytes from
    // the input, the others unchanged).
    let mut prev = vec![0u8; PAGE_SIZE];
    let mut page = vec![0u8; PAGE_SIZE];
    for (i, &b) in rest.iter().take(2 * PAGE_SIZE).enumerate() {
        if i < PAGE_SIZE {
            prev[i] = b;
        } else {
            page[i - PAGE_SIZE] = b;
        }
    }
    for (i, p) in page.iter_mut().enumerate() {
        if (i / 64) % 4 != usize::from(pick % 4) {
            *p = prev[i];
        }
    }
    let previous = (pick & 4 == 0).then_some(&prev[..]);
    let mut rec = vec![0u8; page_codec::RECORD_ROOM];
    let (n, _) = page_codec::encode_page(&page, previous, &mut rec);
    let (r, len) = page_codec::read_record(&rec[..n]).expect("an encoded page reads back");
    assert_eq!(len, n);
    let mut back = match previous {
        Some(p) => p.to_vec(),
        None => vec![0u8; PAGE_SIZE],
    };
    match r {
        Record::Zero => back.fill(0),
        Record::Raw(p) => back.copy_from_slice(p),
        Record::Sparse(ops) => {
            back.fill(0);
            page_codec::apply_ops(ops, &mut back).expect("sparse ops apply");
        }
        Record::Delta(ops) => page_codec::apply_ops(ops, &mut back).expect("delta ops apply"),
    }
    assert_eq!(back, page, "the page decodes to itself");
    n
}

/// Feed `data` to both ends of the control protocol. The first byte says where the bytes are
/// split in two deliveries; the rest is what a client sent to the control socket, and also what
/// a daemon answered. Checks: a command is bounded, trimmed and free of control characters; more
/// bytes never change a command already complete; `to_json` is JSON that reads back as the same
/// values under unique names. Returns the command's length, if there is one.
pub fn control(data: &[u8]) -> Option<usize> {
    use hsb_common::ctl::{parse_command, CommandError, Health, Line, Status, MAX_COMMAND};
    let (split, rest) = data.split_first()?;
    let mut command = None;
    for eof in [false, true] {
        match parse_command(rest, eof) {
            Ok(Line::Command(c)) => {
                assert!(c.len() <= MAX_COMMAND);
                assert!(!c.chars().any(|ch| ch.is_control() && ch != '\t'));
                assert_eq!(c, c.trim());
                command = Some(c.len());
            }
            Ok(Line::Incomplete) => {
                assert!(rest.len() <= MAX_COMMAND && !rest.contains(&b'\n'));
                assert!(!eof || rest.is_empty());
            }
            Err(CommandError::TooLong) => assert!(rest.len() > MAX_COMMAND),
            Err(_) => {}
        }
    }
    let k = usize::from(*split) % (rest.len() + 1);
    if let Ok(Line::Command(c)) = parse_command(&rest[..k], false) {
        assert_eq!(parse_command(rest, false), Ok(Line::Command(c)));
    }
    let text = String::from_utf8_lossy(rest);
    let status = Status::parse(&text);
    let json = status.to_json();
    let back = json_strings(&json).expect("to_json writes JSON");
    assert_eq!(back.len(), status.lines.len());
    let mut names = std::collections::HashSet::new();
    for ((name, value), (key, v)) in back.iter().zip(&status.lines) {
        assert_eq!(value, v);
        assert!(name.starts_with(key));
        assert!(names.insert(name.clone()), "a repeated name: {name}");
    }
    for role in ["primary", "standby", "witness", ""] {
        assert_ne!(Health::of(&status, role), Health::Unreachable);
    }
    command
}

/// Read the one JSON shape `status --json` writes: an object of string values followed by a
/// newline. A strict reader for tests and the fuzz target (any whitespace or other value type
/// is refused). `None` if `s` is not that shape.
pub fn json_strings(s: &str) -> Option<Vec<(String, String)>> {
    let mut it = s.strip_suffix('\n')?.chars().peekable();
    let mut out = Vec::new();
    if it.next()? != '{' {
        return None;
    }
    if it.peek() == Some(&'}') {
        it.next();
        return it.next().is_none().then_some(out);
    }
    loop {
        let k = json_string_body(&mut it)?;
        if it.next()? != ':' {
            return None;
        }
        let v = json_string_body(&mut it)?;
        out.push((k, v));
        match it.next()? {
            ',' => {}
            '}' => return it.next().is_none().then_some(out),
            _ => return None,
        }
    }
}

fn json_string_body(it: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<String> {
    if it.next()? != '"' {
        return None;
    }
    let mut out = String::new();
    loop {
        match it.next()? {
            '"' => return Some(out),
            '\\' => match it.next()? {
                '"' => out.push('"'),
                '\\' => out.push('\\'),
                '/' => out.push('/'),
                'b' => out.push('\u{8}'),
                'f' => out.push('\u{c}'),
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                'u' => {
                    let hex = |it: &mut std::iter::Peekable<std::str::Chars<'_>>| {
                        let mut n = 0u32;
                        for _ in 0..4 {
                            n = n * 16 + it.next()?.to_digit(16)?;
                        }
                        Some(n)
                    };
                    let hi = hex(it)?;
                    let c = if (0xd800..0xdc00).contains(&hi) {
                        if it.next()? != '\\' || it.next()? != 'u' {
                            return None;
                        }
                        let lo = hex(it)?;
                        if !(0xdc00..0xe000).contains(&lo) {
                            return None;
                        }
                        char::from_u32(0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00))?
                    } else {
                        char::from_u32(hi)?
                    };
                    out.push(c);
                }
                _ => return None,
            },
            c if u32::from(c) < 0x20 => return None,
            c => out.push(c),
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
    hsb_common::failover::schema_with(OWN, hsb_domain::backend_keys(), &SCHEMA)
}

/// Most `--set` overrides taken from one input.
const MAX_SETS: usize = 8;
/// Longest error message accepted: values are quoted back only in part ([`hsb_common::config::excerpt`]).
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
    let settings = hsb_common::failover::peers(&c, "heartbeat")
        .map(|_| ())
        .and_then(|()| hsb_domain::model::pages_from_config(&c).map(|_| ()))
        .and_then(|()| hsb_domain::xen::XenSettings::from_config(&c).map(|_| ()));
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

/// The receiving side of the datagram layer (see the module docs). Returns how many datagrams
/// were accepted.
pub fn datagram(data: &[u8]) -> usize {
    use hsb_common::datagram::{Dest, Inbox, Outbox, Sender, MAX_DATAGRAM};
    use hsb_common::msg::Role;
    use hsb_common::wire::{self, Dgram};
    let key = ClusterKey::from_bytes([7; 32]);
    let me = Sender {
        role: Role::Standby,
        id: 77,
    };
    let mut inbox = Inbox::new(&key, me);
    let Some((&first, rest)) = data.split_first() else {
        return 0;
    };
    if first != 0 {
        // Arbitrary bytes, cut into datagrams by the next byte's length.
        let mut accepted = 0;
        let mut r = rest;
        while let Some((&n, tail)) = r.split_first() {
            let n = usize::from(n).min(tail.len());
            accepted += usize::from(wire::open(&mut inbox, &tail[..n]).is_ok());
            r = &tail[n..];
        }
        return accepted;
    }
    // Valid datagrams: witness 1 in two incarnations, witness 2, the primary, one for another
    // node and an unaddressed ping.
    let w = |id| Sender {
        role: Role::Witness,
        id,
    };
    let primary = Sender {
        role: Role::Primary,
        id: 55,
    };
    let mut made: Vec<Vec<u8>> = Vec::new();
    let mut seal = |out: &mut Outbox, m: Dgram, to: Option<Dest>| {
        let mut b = [0u8; MAX_DATAGRAM];
        if let Ok(n) = wire::seal(out, &m, to, &mut b) {
            made.push(b[..n].to_vec());
        }
    };
    let mut w1a = Outbox::new(&key, w(1), 100, 1);
    let mut w1b = Outbox::new(&key, w(1), 101, 1);
    let mut w2 = Outbox::new(&key, w(2), 500, 1);
    let mut p = Outbox::new(&key, primary, 9, 1);
    let to_me = Some(Dest::node(me));
    for i in 0..3 {
        seal(&mut w1a, Dgram::Ping { nonce: i }, to_me);
        seal(
            &mut w2,
            Dgram::Pong { nonce: i },
            Some(Dest::role(Role::Standby)),
        );
        seal(&mut p, Dgram::Heartbeat { link: 0, acked: i }, to_me);
    }
    seal(&mut w1b, Dgram::Ping { nonce: 9 }, to_me);
    seal(&mut w1b, Dgram::Maintenance { on: true }, to_me);
    seal(
        &mut p,
        Dgram::Heartbeat { link: 1, acked: 3 },
        Some(Dest::node(w(3))),
    );
    seal(&mut w2, Dgram::Ping { nonce: 10 }, None);
    // Unaddressed and not a ping: the receiver must drop it (sealed below the wire layer,
    // which refuses to make one).
    let m = Dgram::Maintenance { on: false };
    let mut b = [0u8; MAX_DATAGRAM];
    if let Ok(n) = w2.seal(m.kind(), &m, None, &mut b) {
        made.push(b[..n].to_vec());
    }
    // Each (which, position, xor) delivers datagram `which`, flipped at `position` by `xor`.
    let mut seen: Vec<(Sender, u64, Option<Dest>, u64)> = Vec::new();
    let mut newest: Vec<(Sender, u64)> = Vec::new();
    let mut accepted = 0;
    for step in rest.chunks_exact(3).take(256) {
        let mut d = made[usize::from(step[0]) % made.len()].clone();
        let pos = usize::from(step[1]) % d.len();
        d[pos] ^= step[2];
        let Ok((env, m)) = wire::open(&mut inbox, &d) else {
            continue;
        };
        accepted += 1;
        let seq = u64::from_le_bytes(d[8..16].try_into().unwrap_or_default());
        let id = (env.from, env.incarnation, env.to, seq);
        assert!(!seen.contains(&id), "accepted twice: {id:?}");
        seen.push(id);
        assert!(
            env.to.is_some_and(|t| t.matches(me)) || matches!(m, Dgram::Ping { .. }),
            "accepted a datagram for another node: {env:?} {m:?}"
        );
        match newest.iter_mut().find(|(s, _)| *s == env.from) {
            Some((_, inc)) => {
                assert!(
                    env.incarnation >= *inc,
                    "accepted incarnation {} after {}",
                    env.incarnation,
                    *inc
                );
                *inc = env.incarnation;
            }
            None => newest.push((env.from, env.incarnation)),
        }
    }
    accepted
}

#[cfg(test)]
#[path = "fuzzing_tests.rs"]
mod tests;
