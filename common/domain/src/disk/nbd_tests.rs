//! Unit tests of `nbd`: literal bytes for every message, each decoder fed truncated and
//! garbage input.

use super::*;

const SIZE: u64 = 64 << 20;

fn server() -> Server {
    Server::new(Export {
        name: "disk".into(),
        size: SIZE,
    })
}

fn option(opt: u32, data: &[u8]) -> Vec<u8> {
    let mut v = IHAVEOPT.to_be_bytes().to_vec();
    v.extend_from_slice(&opt.to_be_bytes());
    v.extend_from_slice(&(data.len() as u32).to_be_bytes());
    v.extend_from_slice(data);
    v
}

fn request(flags: u16, kind: u16, cookie: u64, offset: u64, len: u32) -> Vec<u8> {
    let mut v = REQUEST_MAGIC.to_be_bytes().to_vec();
    v.extend_from_slice(&flags.to_be_bytes());
    v.extend_from_slice(&kind.to_be_bytes());
    v.extend_from_slice(&cookie.to_be_bytes());
    v.extend_from_slice(&offset.to_be_bytes());
    v.extend_from_slice(&len.to_be_bytes());
    v
}

/// Feed all of `input`, one message at a time; returns the events (commands as text), the
/// output, and the error that ended the session, if any.
fn run(s: &mut Server, input: &[u8]) -> (Vec<String>, Vec<u8>, Option<NbdError>) {
    let (mut evs, mut out, mut pos) = (Vec::new(), Vec::new(), 0);
    loop {
        match s.step(&input[pos..], &mut out) {
            Ok(st) => {
                assert!(pos + st.used <= input.len());
                pos += st.used;
                match st.event {
                    Event::Incomplete { need } => {
                        assert!(need > input.len() - pos && need <= MAX_MESSAGE);
                        return (evs, out, None);
                    }
                    Event::End => {
                        evs.push("end".into());
                        return (evs, out, None);
                    }
                    e => evs.push(format!("{e:?}")),
                }
            }
            Err(e) => return (evs, out, Some(e)),
        }
    }
}

/// A session in transmission (NBD_OPT_GO), its output cleared.
fn transmitting() -> Server {
    let mut s = server();
    let mut input = 3u32.to_be_bytes().to_vec();
    input.extend(option(OPT_GO, &[0, 0, 0, 0, 0, 0]));
    let (evs, _, err) = run(&mut s, &input);
    assert_eq!(err, None);
    assert_eq!(evs.last().map(String::as_str), Some("Ready"));
    s
}

#[test]
fn greeting_is_nbdmagic_ihaveopt_and_flags() {
    let mut out = Vec::new();
    Server::greeting(&mut out);
    assert_eq!(out, b"NBDMAGICIHAVEOPT\x00\x03");
    assert_eq!(out.len(), GREETING_LEN);
}

#[test]
fn export_name_answers_size_flags_and_zeroes_unless_declined() {
    for (flags, zeroes) in [(1u32, 124), (3, 0)] {
        let mut s = server();
        let mut input = flags.to_be_bytes().to_vec();
        input.extend(option(OPT_EXPORT_NAME, b""));
        let (evs, out, err) = run(&mut s, &input);
        assert_eq!((evs, err), (vec!["Answered".into(), "Ready".into()], None));
        let mut want = vec![0, 0, 0, 0, 4, 0, 0, 0, 0, 0b0100_1101];
        want.extend(std::iter::repeat_n(0, zeroes));
        assert_eq!(out, want);
        assert!(s.transmitting());
    }
    // By its name too; any other name ends the session (it cannot be answered).
    let mut s = server();
    let mut input = 1u32.to_be_bytes().to_vec();
    input.extend(option(OPT_EXPORT_NAME, b"disk"));
    assert_eq!(run(&mut s, &input).2, None);
    let mut s = server();
    let mut input = 1u32.to_be_bytes().to_vec();
    input.extend(option(OPT_EXPORT_NAME, b"other"));
    assert_eq!(
        run(&mut s, &input).2,
        Some(NbdError::UnknownExport { len: 5 })
    );
}

#[test]
fn go_and_info_answer_export_name_block_size_then_ack() {
    let mut s = server();
    let mut input = 1u32.to_be_bytes().to_vec();
    // INFO for "disk" asking NAME and BLOCK_SIZE, then GO for the default export.
    let mut d = 4u32.to_be_bytes().to_vec();
    d.extend_from_slice(b"disk");
    d.extend_from_slice(&[0, 2, 0, 1, 0, 3]);
    input.extend(option(OPT_INFO, &d));
    input.extend(option(OPT_GO, &[0, 0, 0, 0, 0, 0]));
    let (evs, out, err) = run(&mut s, &input);
    assert_eq!(err, None);
    assert_eq!(evs, ["Answered", "Answered", "Ready"]);
    let rep = |opt: u32, kind: u32, data: &[u8]| {
        let mut v = Vec::new();
        option_reply(&mut v, opt, kind, data);
        v
    };
    let export = [0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0x4d];
    let bs = [0, 3, 0, 0, 0, 1, 0, 0, 0x10, 0, 2, 0, 0, 0];
    let mut want = rep(OPT_INFO, REP_INFO, &export);
    want.extend(rep(OPT_INFO, REP_INFO, b"\x00\x01disk"));
    want.extend(rep(OPT_INFO, REP_INFO, &bs));
    want.extend(rep(OPT_INFO, REP_ACK, &[]));
    want.extend(rep(OPT_GO, REP_INFO, &export));
    want.extend(rep(OPT_GO, REP_INFO, &bs));
    want.extend(rep(OPT_GO, REP_ACK, &[]));
    assert_eq!(out, want);
    // The literal bytes of one reply header.
    assert_eq!(
        &want[..20],
        &[0, 3, 0xe8, 0x89, 4, 0x55, 0x65, 0xa9, 0, 0, 0, 6, 0, 0, 0, 3, 0, 0, 0, 12]
    );
}

#[test]
fn malformed_or_unknown_go_is_an_error_reply_not_the_end() {
    for (data, kind) in [
        (vec![], REP_ERR_INVALID),
        (vec![0, 0, 0, 9, b'x', 0, 0], REP_ERR_INVALID),
        (vec![0, 0, 0, 0, 0, 2, 0, 0], REP_ERR_INVALID),
        (vec![0, 0, 0, 0, 0, 0, 0], REP_ERR_INVALID),
        (vec![0xff, 0xff, 0xff, 0xff, 0, 0], REP_ERR_INVALID),
        (vec![0, 0, 0, 1, b'x', 0, 0], REP_ERR_UNKNOWN),
    ] {
        let mut s = server();
        let mut input = 1u32.to_be_bytes().to_vec();
        input.extend(option(OPT_GO, &data));
        let (evs, out, err) = run(&mut s, &input);
        assert_eq!((evs.len(), err), (2, None), "{data:?}");
        assert_eq!(be32(&out[12..]), kind, "{data:?}");
        assert!(!s.transmitting());
    }
}

#[test]
fn list_abort_and_unknown_options() {
    let mut s = server();
    let mut input = 1u32.to_be_bytes().to_vec();
    input.extend(option(OPT_LIST, b""));
    input.extend(option(OPT_LIST, b"x"));
    input.extend(option(OPT_STRUCTURED_REPLY, b""));
    input.extend(option(OPT_STARTTLS, b""));
    input.extend(option(0xdead, b"junk"));
    input.extend(option(OPT_ABORT, b""));
    let (evs, out, err) = run(&mut s, &input);
    assert_eq!(err, None);
    assert_eq!(evs.len(), 7);
    assert_eq!(evs.last().map(String::as_str), Some("end"));
    let mut want = Vec::new();
    option_reply(&mut want, OPT_LIST, REP_SERVER, b"\x00\x00\x00\x04disk");
    option_reply(&mut want, OPT_LIST, REP_ACK, &[]);
    option_reply(
        &mut want,
        OPT_LIST,
        REP_ERR_INVALID,
        b"NBD_OPT_LIST takes no data",
    );
    for opt in [OPT_STRUCTURED_REPLY, OPT_STARTTLS, 0xdead] {
        option_reply(&mut want, opt, REP_ERR_UNSUP, b"not supported by hsb");
    }
    option_reply(&mut want, OPT_ABORT, REP_ACK, &[]);
    assert_eq!(out, want);
    // After the end, nothing more is read.
    let (evs, _, _) = run(&mut s, b"more");
    assert_eq!(evs, ["end"]);
}

#[test]
fn an_oversized_option_is_skipped_and_answered_too_big() {
    let mut s = server();
    let mut input = 1u32.to_be_bytes().to_vec();
    input.extend(option(0x77, &vec![7u8; MAX_OPTION_DATA as usize + 1]));
    input.extend(option(OPT_LIST, b""));
    // Fed a byte at a time after the header, as a slow socket would.
    let mut out = Vec::new();
    let mut pos = 0;
    let mut steps = 0;
    while pos < input.len() {
        let end = (pos + 1).max(pos + 20).min(input.len());
        let st = s.step(&input[pos..end], &mut out).expect("step");
        pos += st.used;
        steps += 1;
        assert!(steps < 10_000);
    }
    assert_eq!(be32(&out[12..]), REP_ERR_TOO_BIG);
    assert!(out.len() > 40);
    // An oversized export name cannot be answered: the end.
    let mut s = server();
    let mut input = 1u32.to_be_bytes().to_vec();
    input.extend(option(OPT_EXPORT_NAME, &vec![b'a'; 9000]));
    assert!(matches!(
        run(&mut s, &input).2,
        Some(NbdError::UnknownExport { .. })
    ));
}

#[test]
fn bad_magic_flags_and_too_many_options_end_the_session() {
    let mut s = server();
    assert_eq!(run(&mut s, &[0, 0, 0, 4]).2, Some(NbdError::ClientFlags(4)));
    let mut s = server();
    let (_, _, err) = run(&mut s, b"\x00\x00\x00\x01GET / HTTP/1.1\r\n\r\n");
    assert!(matches!(
        err,
        Some(NbdError::BadMagic {
            what: "option header",
            ..
        })
    ));
    assert!(err.unwrap().to_string().contains("bad magic number"));
    let mut s = server();
    let mut input = 1u32.to_be_bytes().to_vec();
    for _ in 0..=MAX_OPTIONS {
        input.extend(option(OPT_LIST, b""));
    }
    assert_eq!(run(&mut s, &input).2, Some(NbdError::TooManyOptions));
    let mut s = transmitting();
    let (_, _, err) = run(
        &mut s,
        &[
            0x25, 0x60, 0x95, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0, 0, 0,
        ],
    );
    assert!(matches!(
        err,
        Some(NbdError::BadMagic {
            what: "request header",
            ..
        })
    ));
}

#[test]
fn requests_decode_to_commands_with_their_cookies() {
    let mut s = transmitting();
    let mut input = request(0, CMD_READ, 7, 4096, 512);
    input.extend(request(CMD_FLAG_FUA, CMD_WRITE, 8, 0, 3));
    input.extend_from_slice(b"abc");
    input.extend(request(0, CMD_FLUSH, 9, 0, 0));
    input.extend(request(
        CMD_FLAG_NO_HOLE,
        CMD_WRITE_ZEROES,
        10,
        SIZE - 4096,
        4096,
    ));
    input.extend(request(0, CMD_DISC, 11, 0, 0));
    let mut out = Vec::new();
    let mut pos = 0;
    let mut ops = Vec::new();
    loop {
        let st = s.step(&input[pos..], &mut out).expect("step");
        pos += st.used;
        match st.event {
            Event::Command(c) => ops.push(format!("{} {:?}", c.cookie, c.op)),
            Event::End => break,
            e => panic!("{e:?}"),
        }
    }
    assert_eq!(pos, input.len());
    assert!(out.is_empty());
    assert_eq!(
        ops,
        [
            "7 Read { offset: 4096, len: 512 }",
            "8 Write { offset: 0, data: [97, 98, 99], fua: true }",
            "9 Flush",
            "10 WriteZeroes { offset: 67104768, len: 4096, fua: false }",
        ]
    );
    // The literal bytes of a request and of a reply.
    assert_eq!(
        request(1, 1, 2, 3, 4),
        [
            0x25, 0x60, 0x95, 0x13, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3, 0,
            0, 0, 4
        ]
    );
    let mut r = Vec::new();
    simple_reply(&mut r, 2, EINVAL);
    assert_eq!(
        r,
        [0x67, 0x44, 0x66, 0x98, 0, 0, 0, 22, 0, 0, 0, 0, 0, 0, 0, 2]
    );
}

/// The error a lone request gets, or its command.
fn answer(req: &[u8]) -> Result<String, NbdError> {
    let mut s = transmitting();
    let mut out = Vec::new();
    let st = s.step(req, &mut out)?;
    Ok(match st.event {
        Event::Answered => {
            assert_eq!(st.used, req.len());
            assert_eq!(out.len(), REPLY_LEN);
            format!("error {}", be32(&out[4..]))
        }
        e => format!("{e:?}"),
    })
}

#[test]
fn bounds_lengths_and_flags_are_refused_per_the_protocol() {
    let ok = |r: Result<String, NbdError>| r.expect("no error");
    // Reads beyond the export or longer than the maximum payload: EINVAL, the session goes on.
    assert_eq!(ok(answer(&request(0, CMD_READ, 1, SIZE, 1))), "error 22");
    assert_eq!(
        ok(answer(&request(0, CMD_READ, 1, u64::MAX, 2))),
        "error 22"
    );
    assert_eq!(
        ok(answer(&request(0, CMD_READ, 1, 0, MAX_PAYLOAD + 1))),
        "error 22"
    );
    assert!(ok(answer(&request(0, CMD_READ, 1, 0, MAX_PAYLOAD))).starts_with("Command"));
    // A write beyond the export: ENOSPC once its payload is in.
    let mut w = request(0, CMD_WRITE, 1, SIZE - 1, 2);
    w.extend_from_slice(b"xy");
    assert_eq!(ok(answer(&w)), "error 28");
    // A write whose payload is too long ends the session.
    assert_eq!(
        answer(&request(0, CMD_WRITE, 1, 0, MAX_PAYLOAD + 1)),
        Err(NbdError::PayloadTooLong {
            len: MAX_PAYLOAD + 1
        })
    );
    // Write zeroes: ENOSPC beyond the export, EOVERFLOW beyond the maximum payload.
    assert_eq!(
        ok(answer(&request(0, CMD_WRITE_ZEROES, 1, SIZE, 1))),
        "error 28"
    );
    assert_eq!(
        ok(answer(&request(0, CMD_WRITE_ZEROES, 1, 0, MAX_PAYLOAD + 1))),
        "error 75"
    );
    // TRIM is not offered, nor unknown commands or flags.
    assert_eq!(ok(answer(&request(0, CMD_TRIM, 1, 0, 4096))), "error 22");
    assert_eq!(ok(answer(&request(0, 99, 1, 0, 0))), "error 22");
    assert_eq!(ok(answer(&request(1 << 5, CMD_READ, 1, 0, 1))), "error 22");
    assert_eq!(
        ok(answer(&request(CMD_FLAG_NO_HOLE, CMD_READ, 1, 0, 1))),
        "error 22"
    );
    let mut w = request(CMD_FLAG_NO_HOLE, CMD_WRITE, 1, 0, 1);
    w.push(0);
    assert_eq!(ok(answer(&w)), "error 22");
}

#[test]
fn truncated_input_asks_for_what_is_missing_and_uses_nothing() {
    let mut s = server();
    let mut out = Vec::new();
    for n in 0..4 {
        let st = s.step(&[0, 0, 0][..n.min(3)], &mut out).unwrap();
        assert_eq!((st.used, st.event), (0, Event::Incomplete { need: 4 }));
    }
    let mut s = transmitting();
    let mut w = request(0, CMD_WRITE, 1, 0, 100);
    w.extend_from_slice(&[1u8; 100]);
    for cut in 0..w.len() {
        let st = s.step(&w[..cut], &mut out).unwrap();
        let need = if cut < REQUEST_LEN {
            REQUEST_LEN
        } else {
            w.len()
        };
        assert_eq!((st.used, st.event), (0, Event::Incomplete { need }));
    }
    assert!(out.is_empty());
    let mut s = server();
    let mut input = 1u32.to_be_bytes().to_vec();
    input.extend(option(OPT_GO, &[0, 0, 0, 0, 0, 0]));
    let (used, mut seen) = (4, Vec::new());
    s.step(&input, &mut out).unwrap();
    for cut in used..input.len() {
        let st = s.step(&input[used..cut], &mut out).unwrap();
        seen.push(st.event);
        assert_eq!(st.used, 0);
    }
    assert!(seen.iter().all(|e| matches!(e, Event::Incomplete { .. })));
}

#[test]
fn garbage_never_panics_and_stays_bounded() {
    let mut rng = hsb_common::rng::SplitMix64::new(14);
    for i in 0..3000 {
        let n = rng.below(200) as usize;
        let mut buf = vec![0u8; n];
        rng.fill(&mut buf);
        let mut s = if i % 2 == 0 { server() } else { transmitting() };
        if i % 3 == 0 && n >= 4 {
            // Valid prefixes get further in.
            buf[..4].copy_from_slice(&1u32.to_be_bytes());
            if n >= 12 && i % 2 == 0 {
                buf[4..12].copy_from_slice(&IHAVEOPT.to_be_bytes());
            }
        }
        let (evs, out, _) = run(&mut s, &buf);
        assert!(evs.len() <= n + 1);
        assert!(out.len() <= 64 * (n + 1) + 200);
    }
}

/// A session taken over after an exec (`transmitting_already`) reads requests at once, as the
/// session whose handshake it did not see: the same commands, the same answers.
#[test]
fn a_session_taken_over_goes_on_with_requests() {
    let mut taken = Server::transmitting_already(Export {
        name: "disk".into(),
        size: SIZE,
    });
    assert!(taken.transmitting());
    let mut input = request(0, CMD_READ, 7, 4096, 512);
    input.extend(request(0, CMD_TRIM, 8, 0, 4096));
    input.extend(request(0, CMD_DISC, 9, 0, 0));
    let mut fresh = transmitting();
    assert_eq!(run(&mut taken, &input), run(&mut fresh, &input));
    let (evs, _, err) = run(&mut taken, &request(0, CMD_READ, 1, 0, 1));
    assert_eq!(
        (evs, err),
        (vec!["end".to_string()], None),
        "nothing after the end"
    );
}
