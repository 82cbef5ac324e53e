//! Section 1a of `hsb-bench`: the library pipeline (capture, seal, TCP, open, stage, apply)
//! against a raw TCP copy of the same bytes, and the per-stage costs.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Instant;

use hsb_common::conn::{Fill, FrameReader};
use hsb_common::frame::{self, Header, HEADER_LEN, MAX_BODY_LEN};
use hsb_common::key::ClusterKey;
use hsb_common::session::{Session, Side};
use hsb_common::time::Nanos;
use hsb_domain::checkpoint::{Receiver, Staging};
use hsb_domain::codec_policy::CodecMode;
use hsb_domain::domain::CheckpointSource;
use hsb_domain::model::ModelDomain;

use super::stats::{met, mib_s, table};
use super::{progress, Ctx, GIB, MIB, MODEL_PAGES, R};

/// Full checkpoints timed in the library pipeline (after one untimed warm-up checkpoint).
const PIPE_CHECKPOINTS: u64 = 20;
/// Raw TCP write size.
const RAW_WRITE: usize = 256 * 1024;
/// Alternating rounds of pipeline and raw runs in section 1a.
const ROUNDS: usize = 5;

pub fn tcp_pair() -> R<(TcpStream, TcpStream)> {
    let l = TcpListener::bind("127.0.0.1:0").ctx("bind")?;
    let a = TcpStream::connect(l.local_addr().ctx("addr")?).ctx("connect")?;
    let (b, _) = l.accept().ctx("accept")?;
    a.set_nodelay(true).ctx("nodelay")?;
    b.set_nodelay(true).ctx("nodelay")?;
    Ok((a, b))
}

/// Both ends of one session (primary = initiator, standby = responder).
pub fn sessions() -> (Session, Session) {
    let k = ClusterKey::from_bytes([0x42; 32]);
    let (ni, nr) = ([1u8; 16], [2u8; 16]);
    (
        Session::new(&k, &ni, &nr, Side::Initiator),
        Session::new(&k, &ni, &nr, Side::Responder),
    )
}

/// Staging that never encodes: sections 1 and 2 measure the plain pipeline (encoding has its
/// own section).
pub fn plain_staging() -> Staging {
    Staging::with_codec(MODEL_PAGES, CodecMode::Never, 0)
}

/// A 64 MiB model domain whose workload has written every workload page once.
pub fn workload_domain() -> ModelDomain {
    let mut d = ModelDomain::new(MODEL_PAGES, 100_000_000, 7);
    d.run(Nanos(1));
    d.run(Nanos(1 + 1_000_000));
    d.set_rate(0);
    d
}

/// Capture (full), seal and write one checkpoint; returns its sealed length.
pub fn send_checkpoint(
    dom: &mut ModelDomain,
    st: &mut Staging,
    sess: &mut Session,
    sock: &mut TcpStream,
    ckpt: u64,
) -> R<usize> {
    dom.suspend().ctx("suspend")?;
    let cap = st.capture(dom, ckpt, 1, true);
    dom.resume().ctx("resume")?;
    cap.ctx("capture")?;
    let len = st.seal(sess).ctx("seal")?;
    sock.write_all(st.bytes()).ctx("write")?;
    Ok(len)
}

/// Receive `total` checkpoints; returns the time from the first apply to the last, and the
/// replica's digest.
pub fn receive_checkpoints(mut sock: TcpStream, mut sess: Session, total: u64) -> R<(f64, u32)> {
    let mut reader = FrameReader::new(MAX_BODY_LEN);
    let mut rx = Receiver::new(MODEL_PAGES);
    let mut replica = ModelDomain::blank(MODEL_PAGES);
    let mut applied = 0;
    let mut first = None;
    loop {
        while let Some((h, f)) = reader.next_frame().ctx("frame")? {
            let hash = sess.open(f).ctx("open")?;
            if rx
                .on_frame(h.kind, &f[HEADER_LEN..], &hash, &mut replica)
                .ctx("on_frame")?
                .is_some()
            {
                rx.apply(&mut replica).ctx("apply")?;
                applied += 1;
                if applied == 1 {
                    first = Some(Instant::now());
                }
                if applied == total {
                    let secs = first.map_or(0.0, |t| t.elapsed().as_secs_f64());
                    return Ok((secs, replica.digest()));
                }
            }
        }
        if reader.fill(&mut sock).ctx("read")? == Fill::Eof {
            return Err(format!("sender closed after {applied} checkpoints"));
        }
    }
}

pub struct Pipe {
    pub secs: f64,
    pub ckpt_len: usize,
    pub digest_ok: bool,
}

/// One untimed warm-up checkpoint, then `n` timed ones (first apply to last apply).
pub fn pipeline_run(n: u64) -> R<Pipe> {
    let (mut tx_sock, rx_sock) = tcp_pair()?;
    let (mut stx, srx) = sessions();
    let rx_thread = thread::spawn(move || receive_checkpoints(rx_sock, srx, n + 1));
    let mut dom = workload_domain();
    let mut st = plain_staging();
    let mut ckpt_len = 0;
    let mut send_err = None;
    for ckpt in 1..=n + 1 {
        match send_checkpoint(&mut dom, &mut st, &mut stx, &mut tx_sock, ckpt) {
            Ok(l) => ckpt_len = l,
            Err(e) => {
                send_err = Some(e);
                break;
            }
        }
    }
    drop(tx_sock);
    let res = rx_thread
        .join()
        .map_err(|_| "receiver thread panicked".to_string())?;
    let (secs, digest) = match (res, send_err) {
        (Ok(v), _) => v,
        (Err(e), Some(se)) => return Err(format!("receiver: {e}; sender: {se}")),
        (Err(e), None) => return Err(format!("receiver: {e}")),
    };
    Ok(Pipe {
        secs,
        ckpt_len,
        digest_ok: digest == dom.digest(),
    })
}

/// Raw TCP: `total` bytes written in 256 KiB writes from a 64 MiB buffer; the receiver reads
/// into a 256 KiB buffer and discards it, or copies it on into a 64 MiB buffer. Timed on the
/// receiver from byte `warm` to the last byte.
pub fn raw_run(total: u64, warm: u64, copy: bool) -> R<f64> {
    let (mut a, mut b) = tcp_pair()?;
    let sender = thread::spawn(move || -> R<()> {
        let src = vec![0x5au8; 64 << 20];
        let mut sent = 0u64;
        let mut off = 0usize;
        while sent < total {
            let k = (RAW_WRITE as u64).min(total - sent) as usize;
            if off + k > src.len() {
                off = 0;
            }
            a.write_all(&src[off..off + k]).ctx("raw write")?;
            off += k;
            sent += k as u64;
        }
        Ok(())
    });
    let mut buf = vec![0u8; RAW_WRITE];
    let mut dst = if copy { vec![1u8; 64 << 20] } else { vec![] };
    let (mut got, mut off) = (0u64, 0usize);
    let mut first = None;
    while got < total {
        let k = b.read(&mut buf).ctx("raw read")?;
        if k == 0 {
            return Err(format!("raw sender closed after {got} bytes"));
        }
        if copy {
            if off + k > dst.len() {
                off = 0;
            }
            dst[off..off + k].copy_from_slice(&buf[..k]);
            off += k;
        }
        got += k as u64;
        if first.is_none() && got >= warm {
            first = Some(Instant::now());
        }
    }
    let secs = first.map_or(0.0, |t| t.elapsed().as_secs_f64());
    sender
        .join()
        .map_err(|_| "raw sender panicked".to_string())??;
    std::hint::black_box(&dst);
    Ok(secs)
}

/// Per-stage single-thread costs (best of 3) over full 64 MiB checkpoints, in seconds.
#[derive(Default, Clone, Copy)]
pub struct Stages {
    pub bytes: f64,
    pub memcpy: f64,
    pub capture: f64,
    pub crc: f64,
    pub seal: f64,
    pub open: f64,
    pub on_frame: f64,
    pub apply: f64,
}

pub fn stage_costs() -> R<Stages> {
    let mut dom = workload_domain();
    let mut st = plain_staging();
    let (mut stx, mut srx) = sessions();
    let mut rx = Receiver::new(MODEL_PAGES);
    let mut replica = ModelDomain::blank(MODEL_PAGES);
    let src = vec![0x5au8; 64 << 20];
    let mut dst = vec![1u8; 64 << 20];
    let inf = f64::INFINITY;
    let mut best = Stages {
        bytes: 0.0,
        memcpy: inf,
        capture: inf,
        crc: inf,
        seal: inf,
        open: inf,
        on_frame: inf,
        apply: inf,
    };
    // Round 0 warms every buffer (first-touch page faults) and is not counted.
    for round in 0..4u64 {
        let t = Instant::now();
        dst.copy_from_slice(&src);
        let memcpy = t.elapsed().as_secs_f64();
        std::hint::black_box(&dst);

        let t = Instant::now();
        dom.suspend().ctx("suspend")?;
        let cap = st.capture(&mut dom, round + 1, 1, true);
        dom.resume().ctx("resume")?;
        cap.ctx("capture")?;
        let capture = t.elapsed().as_secs_f64();

        let t = Instant::now();
        std::hint::black_box(frame::body_crc(st.bytes()).finalize());
        let crc = t.elapsed().as_secs_f64();

        let t = Instant::now();
        let len = st.seal(&mut stx).ctx("seal")?;
        let seal = t.elapsed().as_secs_f64();

        let bytes = st.bytes();
        let (mut open, mut on_frame, mut apply) = (0.0, 0.0, 0.0);
        let mut pos = 0;
        while pos < bytes.len() {
            let h = Header::parse(&bytes[pos..], MAX_BODY_LEN).ctx("parse")?;
            let f = &bytes[pos..pos + h.frame_len()];
            let t = Instant::now();
            let hash = srx.open(f).ctx("open")?;
            open += t.elapsed().as_secs_f64();
            let t = Instant::now();
            let done = rx
                .on_frame(h.kind, &f[HEADER_LEN..], &hash, &mut replica)
                .ctx("on_frame")?;
            on_frame += t.elapsed().as_secs_f64();
            if done.is_some() {
                let t = Instant::now();
                rx.apply(&mut replica).ctx("apply")?;
                apply += t.elapsed().as_secs_f64();
            }
            pos += h.frame_len();
        }
        if round == 0 {
            continue;
        }
        best.bytes = len as f64;
        best.memcpy = best.memcpy.min(memcpy);
        best.capture = best.capture.min(capture);
        best.crc = best.crc.min(crc);
        best.seal = best.seal.min(seal);
        best.open = best.open.min(open);
        best.on_frame = best.on_frame.min(on_frame);
        best.apply = best.apply.min(apply);
    }
    if replica.digest() != dom.digest() {
        return Err("stage costs: replica digest differs from the domain".into());
    }
    Ok(best)
}

pub struct Raw {
    pub discard: f64,
    pub copy: f64,
}

pub fn section_1a() -> R<(String, Raw)> {
    let n = PIPE_CHECKPOINTS;
    // Alternating rounds; the median of each is reported (other work may share the machine, and
    // loopback throughput depends on where the scheduler puts the two threads).
    let mut digest_ok = true;
    let mut ckpt_len = 0;
    let mut pipe_all = vec![];
    let mut raw_d_all = vec![];
    let mut raw_c_all = vec![];
    for _ in 0..ROUNDS {
        let p = pipeline_run(n)?;
        ckpt_len = p.ckpt_len;
        let total = (n + 1) * p.ckpt_len as u64;
        let timed = (n * p.ckpt_len as u64) as f64;
        pipe_all.push(mib_s(timed, p.secs));
        raw_d_all.push(mib_s(timed, raw_run(total, p.ckpt_len as u64, false)?));
        raw_c_all.push(mib_s(timed, raw_run(total, p.ckpt_len as u64, true)?));
        digest_ok &= p.digest_ok;
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let (pipe, raw_d, raw_c) = (median(&pipe_all), median(&raw_d_all), median(&raw_c_all));
    let all = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let ratio_d = pipe / raw_d;
    let ratio_c = pipe / raw_c;
    let mut s = String::new();
    let _ = write!(
        s,
        "## 1. Checkpoint throughput (target: at least 70% of a raw TCP copy of the same bytes)\n\n\
         ### 1a. Library pipeline over loopback TCP, two threads\n\n\
         {n} full checkpoints of the 64 MiB model domain ({:.1} MiB each, sealed), after one untimed warm-up \
         checkpoint. Sender thread: `Staging::capture` + `Staging::seal` (CRC32 + keyed BLAKE3 MAC per frame) + \
         socket write. Receiver thread: `FrameReader` + `Session::open` + `Receiver::on_frame` + `Receiver::apply` \
         into a blank replica. Raw: the same number of bytes in 256 KiB writes. Timed on the receiver from the end \
         of the warm-up checkpoint to the last byte; median of {ROUNDS} alternating rounds (every round in brackets, in order). \
         Replica digest equals the primary's after every run: {}.\n\n",
        ckpt_len as f64 / MIB,
        if digest_ok { "yes" } else { "**NO**" }
    );
    s.push_str(&table(
        &["Path", "MiB/s", "Pipeline as % of it", "Target", "Result"],
        &[
            vec![
                "raw TCP, receiver discards".into(),
                format!("{raw_d:.0} [{}]", all(&raw_d_all)),
                format!("{:.0}%", ratio_d * 100.0),
                "≥ 70%".into(),
                met(ratio_d >= 0.7),
            ],
            vec![
                "raw TCP, receiver copies into a 64 MiB buffer".into(),
                format!("{raw_c:.0} [{}]", all(&raw_c_all)),
                format!("{:.0}%", ratio_c * 100.0),
                "≥ 70%".into(),
                met(ratio_c >= 0.7),
            ],
            vec![
                "**hsb pipeline** (capture, seal, TCP, open, stage, apply)".into(),
                format!("**{pipe:.0}** [{}]", all(&pipe_all)),
                "".into(),
                "".into(),
                "".into(),
            ],
        ],
    ));

    progress("1a: per-stage costs");
    let c = stage_costs()?;
    let per_gib = |secs: f64| secs * GIB / c.bytes * 1e3;
    let row = |name: &str, side: &str, secs: f64| {
        vec![
            name.to_string(),
            side.to_string(),
            format!("{:.0}", per_gib(secs)),
            format!("{:.2}", c.bytes / GIB / secs.max(1e-12)),
        ]
    };
    let mac = (c.seal - c.crc).max(0.0);
    let sender = c.capture + c.seal;
    let receiver = c.open + c.on_frame + c.apply;
    let raw_ms = 1e3 * 1024.0 / raw_d;
    s.push_str(
        "Breakdown: each stage alone on one core over full 64 MiB checkpoints (best of 3, warm buffers). \
         The pipeline runs the sender stages on one thread and the receiver stages on the other, plus the \
         kernel's copies in and out of the socket.\n\n",
    );
    s.push_str(&table(
        &["Stage", "Thread", "ms per GiB", "GiB/s"],
        &[
            row("memcpy 64 MiB → 64 MiB (reference)", "-", c.memcpy),
            row(
                "`Staging::capture` (page copy into frames)",
                "sender",
                c.capture,
            ),
            row("CRC32 alone (crc32fast)", "sender", c.crc),
            row("`Staging::seal` (CRC32 + BLAKE3 MAC)", "sender", c.seal),
            row("  of which MAC ≈ seal − CRC", "sender", mac),
            row("`Session::open` (CRC32 + MAC verify)", "receiver", c.open),
            row(
                "`Receiver::on_frame` (copy into staging)",
                "receiver",
                c.on_frame,
            ),
            row(
                "`Receiver::apply` (copy into the replica)",
                "receiver",
                c.apply,
            ),
            row("**sender total** (capture + seal)", "sender", sender),
            row(
                "**receiver total** (open + on_frame + apply)",
                "receiver",
                receiver,
            ),
            vec![
                "raw loopback TCP (both kernel copies, from the run above)".into(),
                "both".into(),
                format!("{raw_ms:.0}"),
                format!("{:.2}", raw_d / 1024.0),
            ],
        ],
    ));
    let _ = writeln!(
        s,
        "Without the kernel, the slower thread ({}) caps the pipeline at about {:.0} MiB/s.\n",
        if sender > receiver {
            "sender"
        } else {
            "receiver"
        },
        1024.0 * 1e3 / per_gib(sender.max(receiver))
    );
    Ok((
        s,
        Raw {
            discard: raw_d,
            copy: raw_c,
        },
    ))
}
