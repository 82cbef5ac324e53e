//! `hsb-disk-bench DEVICE [MIB]`: write throughput and latency of a block device, for the Xen
//! rig's disk benchmark (`hsb-xen-e2e disk-bench`, BENCHMARKS.md): sequential writes of 4 KiB,
//! 64 KiB and 1 MiB (MIB MiB each, default 16) and random 4 KiB writes (MIB × 64 of them), each
//! with `O_DIRECT` and an `fdatasync` at the end, from the start of the device. Prints one line a
//! pattern: `bench PATTERN mib_s=.. p50_us=.. p99_us=.. writes=..`. Static, std only (it runs in
//! the rig's dom0). It overwrites the device.

use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::process::ExitCode;
use std::time::Instant;

/// `O_DIRECT` on x86_64 Linux.
const O_DIRECT: i32 = 0o40000;
const ALIGN: usize = 4096;

/// A buffer with a window of `len` bytes aligned for `O_DIRECT` (at the returned offset),
/// filled with a pattern (over-allocated, so that no raw allocation is needed).
fn aligned(len: usize) -> (Vec<u8>, usize) {
    let mut v = vec![0u8; len + ALIGN];
    let off = v.as_ptr().align_offset(ALIGN);
    for (i, b) in v[off..off + len].iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    (v, off)
}

/// A small xorshift for the random offsets (a fixed seed: the same offsets every run).
fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

fn quantile(v: &[u64], q: f64) -> u64 {
    v.get(((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dev) = args.first() else {
        eprintln!("usage: hsb-disk-bench DEVICE [MIB]");
        return ExitCode::from(2);
    };
    let mib: u64 = match args.get(1).map(|s| s.parse()) {
        None => 16,
        Some(Ok(n)) if (1..=1024).contains(&n) => n,
        Some(_) => {
            eprintln!("hsb-disk-bench: MIB must be 1 to 1024");
            return ExitCode::from(2);
        }
    };
    let f = match OpenOptions::new()
        .write(true)
        .custom_flags(O_DIRECT)
        .open(dev)
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!("hsb-disk-bench: {dev}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let size = match std::fs::metadata(dev) {
        Ok(_) => {
            // A block device's metadata says 0: ask for its end.
            use std::io::{Seek, SeekFrom};
            match std::fs::File::open(dev).and_then(|mut g| g.seek(SeekFrom::End(0))) {
                Ok(n) => n,
                Err(e) => {
                    eprintln!("hsb-disk-bench: {dev}: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        Err(e) => {
            eprintln!("hsb-disk-bench: {dev}: {e}");
            return ExitCode::FAILURE;
        }
    };
    if size < mib << 20 {
        eprintln!("hsb-disk-bench: {dev} has {size} bytes, fewer than {mib} MiB");
        return ExitCode::FAILURE;
    }
    let patterns: [(&str, usize, bool); 4] = [
        ("seq-4k", 4 << 10, false),
        ("seq-64k", 64 << 10, false),
        ("seq-1m", 1 << 20, false),
        ("rand-4k", 4 << 10, true),
    ];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for (name, bs, random) in patterns {
        let (mem, off) = aligned(bs);
        let buf = &mem[off..off + bs];
        let writes = if random {
            mib * 64
        } else {
            (mib << 20) / bs as u64
        };
        let blocks = size / bs as u64;
        let mut lat = Vec::with_capacity(writes as usize);
        let t0 = Instant::now();
        for i in 0..writes {
            let at = if random { next(&mut seed) % blocks } else { i } * bs as u64;
            let t = Instant::now();
            if let Err(e) = f.write_all_at(buf, at) {
                eprintln!("hsb-disk-bench: {dev}: write of {bs} bytes at {at}: {e}");
                return ExitCode::FAILURE;
            }
            lat.push(t.elapsed().as_micros() as u64);
        }
        if let Err(e) = f.sync_data() {
            eprintln!("hsb-disk-bench: {dev}: fdatasync: {e}");
            return ExitCode::FAILURE;
        }
        let secs = t0.elapsed().as_secs_f64();
        lat.sort_unstable();
        println!(
            "bench {name} mib_s={:.1} p50_us={} p99_us={} writes={writes}",
            (writes * bs as u64) as f64 / (1 << 20) as f64 / secs,
            quantile(&lat, 0.5),
            quantile(&lat, 0.99),
        );
    }
    ExitCode::SUCCESS
}
