//! Section 11 of `hsb-bench`: page encoding on recorded traces of real guests (issue 16.2).
//!
//! Each trace in `tests/data/*.hsbtrace` (recorded on the Xen rig by `just xen-trace`) is
//! replayed through the real checkpoint path (`hsb_tests::pagetrace::replay_file`: `Staging` capture
//! and seal, `Session`, `Receiver`, every page checked on the replica) plain, encoded with the
//! primary's default page cache, and encoded without deltas (no cache: zero pages, sparse
//! records and LZ4 only). Bytes on the wire are every frame of the checkpoints after the first
//! (the first stands for the full synchronisation), headers, CRC and MAC included.

use std::path::Path;
use std::time::Instant;

use hsb_domain::codec_policy::CodecMode;
use hsb_tests::pagetrace::{header_of, kept, replay_file, ReplayStats};

use super::{met, progress, table, R};

fn timed(path: &Path, mode: CodecMode, cache: u64) -> R<(ReplayStats, f64)> {
    let t = Instant::now();
    let s = replay_file(path, mode, cache)?;
    Ok((s, t.elapsed().as_secs_f64()))
}

pub fn section_11() -> R<String> {
    let mut md = String::from(
        "### 11. Page encoding on recorded traces of real guests (issue 16.2)\n\n\
         Each trace (`tests/data/*.hsbtrace`, recorded on the Xen rig by `just xen-trace`) replayed through \
         `Staging`, `Session` and `Receiver`, every page checked on the replica. Bytes on the wire: every frame of \
         the checkpoints after the first (which stands for the full synchronisation). The replay time covers \
         reading the trace, capture, seal, open, decode and apply on one core.\n\n",
    );
    let traces = kept()?;
    if traces.is_empty() {
        return Err("no trace in tests/data (just xen-trace records one)".into());
    }
    for path in traces {
        progress(&format!("11: replaying {}", path.display()));
        let note = header_of(&path)?.note;
        let (plain, tp) = timed(&path, CodecMode::Never, 0)?;
        let (enc, te) = timed(&path, CodecMode::Always, 0)?;
        let (nodelta, tn) = timed(&path, CodecMode::Always, 1)?;
        let pages = plain.pages.max(1);
        let mib = |b: u64| format!("{:.2}", b as f64 / 1048576.0);
        let row = |what: &str, s: &ReplayStats, t: f64| {
            vec![
                what.to_string(),
                mib(s.wire_bytes),
                format!(
                    "{:.2}",
                    plain.wire_bytes as f64 / s.wire_bytes.max(1) as f64
                ),
                format!("{:.0}", s.wire_bytes as f64 / pages as f64),
                format!("{t:.2}"),
            ]
        };
        let ratio = plain.wire_bytes as f64 / enc.wire_bytes.max(1) as f64;
        md.push_str(&format!(
            "`{}` ({:.2} MiB): {}\n\n{} checkpoints after the first over {:.1} s, {} dirty pages ({:.1} per checkpoint, {} MiB of pages).\n\n",
            path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            std::fs::metadata(&path).map_or(0, |m| m.len()) as f64 / 1048576.0,
            note,
            plain.checkpoints - 1,
            plain.span_us as f64 / 1e6,
            plain.pages,
            plain.pages as f64 / (plain.checkpoints - 1) as f64,
            mib(plain.page_bytes),
        ));
        md.push_str(&table(
            &[
                "encoding",
                "MiB on the wire",
                "fewer bytes than plain (x)",
                "bytes per page",
                "replay s",
            ],
            &[
                row("plain (`encode = never`)", &plain, tp),
                row("encoded, no page cache (zero, sparse, LZ4)", &nodelta, tn),
                row(
                    "encoded, the default page cache (`encode = always`)",
                    &enc,
                    te,
                ),
            ],
        ));
        md.push_str(&format!(
            "\nTarget at least 3x fewer bytes on the wire on the rig trace: {:.1}x, {}.\n\n",
            ratio,
            met(ratio >= 3.0)
        ));
    }
    Ok(md)
}
