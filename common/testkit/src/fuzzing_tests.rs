//! Unit tests of `fuzzing`.

use super::*;
use hsb_common::rng::SplitMix64;

#[test]
fn valid_stream_applies_its_checkpoints() {
    let mut input = vec![0u8];
    assert_eq!(decode(&input), VALID_CHECKPOINTS);
    input.extend_from_slice(&[0, 0, 0, 0]); // xor with 0: no change
    assert_eq!(decode(&input), VALID_CHECKPOINTS);
    // Every codec is in it, so mutations reach every page decoder.
    let v = valid_stream();
    let (mut pos, mut codecs) = (0, std::collections::BTreeSet::new());
    while pos < v.len() {
        let h = hsb_common::frame::Header::parse(&v[pos..], 1 << 20).unwrap();
        if h.kind == Kind::Pages {
            let p: msg::Pages =
                msg::decode(Kind::Pages, &v[pos + HEADER_LEN..pos + h.frame_len()]).unwrap();
            codecs.insert(p.codec);
        }
        pos += h.frame_len();
    }
    assert_eq!(
        codecs.into_iter().collect::<Vec<_>>(),
        vec![msg::PAGES_PLAIN, msg::PAGES_RECORDS, msg::PAGES_LZ4]
    );
}

#[test]
fn random_page_codec_inputs_round_trip() {
    let mut rng = SplitMix64::new(16);
    let valid = valid_stream();
    for i in 0..3000 {
        let n = rng.below(9000) as usize;
        let mut buf = vec![0u8; n + 1];
        rng.fill(&mut buf);
        if i % 4 == 1 {
            // Mostly zero pages: sparse and zero records.
            buf.iter_mut()
                .skip(1)
                .for_each(|b| *b &= u8::from(rng.below(50) == 0));
        }
        if i % 4 == 2 && n > 100 {
            let at = rng.below(valid.len() as u64 - 100) as usize;
            buf[1..101].copy_from_slice(&valid[at..at + 100]);
        }
        assert!(page_codec(&buf) <= hsb_domain::page_codec::MAX_RECORD);
    }
    page_codec(&[]);
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
        assert!(applied <= VALID_CHECKPOINTS);
    }
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

#[test]
fn control_protocol_examples() {
    assert_eq!(control(b"\x03status\n"), Some(6));
    assert_eq!(control(b"\x00"), None);
    assert_eq!(control(b""), None);
    assert_eq!(
        json_strings("{\"a\":\"x\\u00e9\\ud83d\\ude00\\n\",\"b\":\"\"}\n"),
        Some(vec![
            ("a".into(), "x\u{e9}\u{1f600}\n".into()),
            ("b".into(), String::new())
        ])
    );
    assert_eq!(json_strings("{}\n"), Some(vec![]));
    for bad in [
        "{}",
        "{\"a\":1}\n",
        "{\"a\":\"b\"} \n",
        "{\"a\":\"\n\"}\n",
        "[]\n",
    ] {
        assert_eq!(json_strings(bad), None, "{bad:?}");
    }
}

#[test]
fn random_control_inputs_keep_the_invariants() {
    let mut rng = SplitMix64::new(11);
    let words: [&[u8]; 8] = [
        b"status",
        b"activate",
        b"\n",
        b"\r\n",
        b" ",
        b"\"",
        b"\\",
        b"role primary\nstate protected\n",
    ];
    for _ in 0..4000 {
        let mut buf = vec![0u8; 1];
        rng.fill(&mut buf);
        while buf.len() < 1 + rng.below(400) as usize {
            if rng.below(3) == 0 {
                let mut b = [0u8; 1];
                rng.fill(&mut b);
                buf.push(b[0]);
            } else {
                buf.extend_from_slice(words[rng.below(words.len() as u64) as usize]);
            }
        }
        control(&buf);
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
fn datagram_deliveries_keep_the_receivers_promises() {
    // In order, each once: every valid datagram for this node is accepted.
    let mut input = vec![0u8];
    for i in 0..14u8 {
        input.extend_from_slice(&[i, 0, 0]);
    }
    let in_order = datagram(&input);
    assert!(in_order >= 10, "{in_order}");
    // The same again: replays, nothing more.
    let mut twice = input.clone();
    twice.extend_from_slice(&input[1..]);
    assert_eq!(datagram(&twice), in_order);
    let mut rng = SplitMix64::new(11);
    for _ in 0..2000 {
        let n = rng.below(300) as usize;
        let mut buf = vec![0u8; n + 1];
        rng.fill(&mut buf);
        if rng.below(2) == 0 {
            buf[0] = 0;
            // Mostly unmutated deliveries, so ordering and replays are exercised.
            for c in buf[1..].chunks_mut(3) {
                if c.len() == 3 && rng.below(4) > 0 {
                    c[2] = 0;
                }
            }
        }
        datagram(&buf);
    }
}

#[test]
fn random_nbd_inputs_keep_the_protocols_bounds() {
    let mut rng = SplitMix64::new(14);
    let mut commands = 0;
    for i in 0..4000 {
        let n = rng.below(300) as usize;
        let mut buf = vec![0u8; n + 5];
        rng.fill(&mut buf);
        buf[0] = (i % 3) as u8;
        if i % 4 == 0 && n >= 28 {
            // A request header's magic and small lengths: commands get carried out.
            buf[5..9].copy_from_slice(&0x2560_9513u32.to_be_bytes());
            buf[9..13].copy_from_slice(&[0, (i % 2) as u8, 0, rng.below(8) as u8]);
            buf[21..29].copy_from_slice(&rng.below(1 << 30).to_be_bytes());
            buf[29..33].copy_from_slice(&(rng.below(64) as u32).to_be_bytes());
        }
        let events = nbd(&buf);
        if buf[0] == 2 && i % 4 == 0 && n >= 28 {
            commands += usize::from(events > 1);
        }
    }
    assert!(commands > 100, "{commands}");
    nbd(&[]);
    nbd(&[2]);
}
