//! The model domain's disk: the guest's side of [`crate::disk`].
//!
//! `PUT` appends a record to a log on the disk before it changes memory and before its reply
//! is produced; the workload writes disk blocks at a set rate (sequential or random, of a set
//! size). The guest keeps, in its memory, the CRC32 of every disk block it wrote, so memory and
//! disk can be checked against each other at any checkpoint ([`ModelDomain::verify_disk`]), and
//! an activated replica checks its PUT log against its memory
//! ([`ModelDomain::verify_disk_log`]): every PUT of its memory is on its disk, no PUT of a
//! later checkpoint is, and each key's last logged value is the one memory holds.
//!
//! Memory: page 65 is the log's tail block, the next pages the block CRC table (4 bytes a block;
//! 0 means an all-zero block), then the page workload's region. The header page (0) holds the
//! log's next sequence number and the disk workload's state.
//!
//! Disk: the first blocks (1 MiB, or a quarter of a small disk) are the PUT log, 16 records of
//! 256 bytes a block, written whole as a ring; the rest is the workload's.

use super::{ModelDomain, KV_FIRST_PAGE, KV_PAGES, MAX_KEY, MIN_PAGES};
use crate::disk::{digest_of, Disk, DiskConfig, DiskError, Journal, BLOCK, MIN_JOURNAL};
use crate::PAGE_SIZE;
use hsb_common::config::{Config, ConfigError, KeySpec, ValueKind};
use hsb_common::rng::SplitMix64;
use hsb_common::stats::Histogram;

/// Next PUT log record's sequence number.
pub(super) const OFF_LOG_SEQ: usize = 24;
/// Disk workload: writes done, sequential cursor, PRNG state, bytes owed (in millionths).
const OFF_DWRITES: usize = 32;
const OFF_DCURSOR: usize = 40;
const OFF_DRNG: usize = 48;
const OFF_DCARRY: usize = 56;
/// With a disk: the log's tail block, then the block CRC table.
const LOG_PAGE: u64 = KV_FIRST_PAGE + KV_PAGES;
const TABLE_FIRST_PAGE: u64 = LOG_PAGE + 1;
/// PUT log records.
pub(super) const RECORD: usize = 256;
pub(super) const RECORDS_PER_BLOCK: u64 = BLOCK / RECORD as u64;
pub(super) const RECORD_MAGIC: &[u8; 2] = b"PL";
/// Most log blocks (1 MiB).
pub(super) const MAX_LOG_BLOCKS: u64 = 256;
/// Largest workload write.
pub const MAX_DISK_WRITE: u64 = 1 << 20;
/// Most disk workload writes in one turn of [`ModelDomain::run`].
const MAX_WRITES_PER_RUN: u64 = 4096;

/// Configuration keys of the model's disk, shared by both daemons (a standby applies what the
/// primary's guest wrote, and runs the workload itself once activated).
pub static DISK_KEYS: &[KeySpec] = &[
    KeySpec { key: "model.disk", kind: ValueKind::Path, default: Some(""), help: "model domain's disk image (created sparse, all zeros, if missing; IMAGE.meta beside it says which lineage and checkpoint it holds); empty: STATE_FILE.disk beside this host's state file. The primary and standby configurations of one host must name the same image, as they do the state file" },
    KeySpec { key: "model.disk_size", kind: ValueKind::Size, default: Some("64MiB"), help: "model domain's disk size (a multiple of 4KiB up to 1TiB; 0: no disk); must be the same on both nodes" },
    KeySpec { key: "model.disk_rate", kind: ValueKind::Size, default: Some("256KiB"), help: "model workload: disk bytes written per second (0: none; PUT writes its log record whatever this is)" },
    KeySpec { key: "model.disk_write", kind: ValueKind::Size, default: Some("4KiB"), help: "model workload: bytes per disk write (a multiple of 4KiB up to 1MiB, at most a quarter of model.disk_size)" },
    KeySpec { key: "model.disk_pattern", kind: ValueKind::Choice(&["sequential", "random"]), default: Some("sequential"), help: "model workload: where its disk writes go" },
    KeySpec { key: "disk.nbd_socket", kind: ValueKind::Path, default: Some(""), help: "serve the guest's disk as an NBD export (fixed newstyle, export name `hsb` or the default) on this unix socket, one client at a time (mode 0600): in dom0 the kernel's nbd driver (`nbd-client -unix PATH /dev/nbd0`), the guest's disk then `phy:/dev/nbd0`. hsb-primary: the guest's writes are journaled and replicated with the checkpoints; hsb-standby: the replica's disk, reads only until the replica is activated; needs a disk (model.disk_size above 0, or xen.disk, which needs it); empty: off" },
    KeySpec { key: "disk.journal_max", kind: ValueKind::Size, default: Some("8MiB"), help: "most disk bytes (with 66 bytes a piece) one checkpoint carries: the epoch's write journal, allocated at start-up; when it is three quarters full the epoch ends early, when a write does not fit it waits; from 2MiB to 1GiB; a standby's must be at least its primary's" },
];

/// The model's disk, from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSettings {
    /// The image, its size and the journal limit.
    pub disk: DiskConfig,
    /// The workload.
    pub workload: DiskWorkload,
}

impl DiskSettings {
    /// From the [`DISK_KEYS`] (and `state_file`, beside which the image goes by default);
    /// `None` when `model.disk_size` is 0.
    pub fn from_config(c: &Config) -> Result<Option<DiskSettings>, ConfigError> {
        let size = c.size("model.disk_size")?;
        if size == 0 {
            return Ok(None);
        }
        if !size.is_multiple_of(BLOCK) || size > crate::disk::tracks::MAX_DISK {
            return Err(c.error_at(
                "model.disk_size",
                "expected a multiple of 4KiB up to 1TiB, or 0 for no disk",
            ));
        }
        let journal_max = c.size("disk.journal_max")?;
        if journal_max < MIN_JOURNAL as u64 || journal_max > 1 << 30 {
            return Err(c.error_at("disk.journal_max", "expected from 2MiB to 1GiB"));
        }
        let write = c.size("model.disk_write")?;
        if write == 0 || !write.is_multiple_of(BLOCK) || write > MAX_DISK_WRITE || write * 4 > size
        {
            return Err(c.error_at(
                "model.disk_write",
                "expected a multiple of 4KiB up to 1MiB, and at most a quarter of model.disk_size",
            ));
        }
        if Journal::cost_of(write as usize) * 2 > journal_max as usize {
            return Err(c.error_at(
                "disk.journal_max",
                "expected room for two of the workload's writes (model.disk_write)",
            ));
        }
        let mut path = c.path("model.disk")?;
        if path.as_os_str().is_empty() {
            let mut p = c.path("state_file")?.into_os_string();
            p.push(".disk");
            path = p.into();
        }
        Ok(Some(DiskSettings {
            disk: DiskConfig {
                path,
                size,
                journal_max: journal_max as usize,
            },
            workload: DiskWorkload {
                rate: c.size("model.disk_rate")?,
                write,
                random: c.str("model.disk_pattern")? == "random",
            },
        }))
    }
}

/// The smallest model domain with a disk of `disk_size` bytes (0: none).
pub fn min_pages(disk_size: u64) -> u64 {
    if disk_size == 0 {
        return MIN_PAGES;
    }
    TABLE_FIRST_PAGE + table_pages(disk_size / BLOCK) + 1
}

fn table_pages(blocks: u64) -> u64 {
    (blocks * 4).div_ceil(PAGE_SIZE as u64)
}

/// How the model's workload writes its disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DiskWorkload {
    /// Bytes per second (0: none).
    pub rate: u64,
    /// Bytes per write: a multiple of 4 KiB up to [`MAX_DISK_WRITE`].
    pub write: u64,
    /// Random offsets (aligned to the write size) rather than sequential ones.
    pub random: bool,
}

/// Where the disk's pieces are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DiskLayout {
    blocks: u64,
    log_blocks: u64,
    table_pages: u64,
}

/// The model's disk figures (the guest's view: its writes and how long they took).
#[derive(Debug, Clone, Default)]
pub struct ModelDiskStats {
    /// Workload writes done.
    pub writes: u64,
    /// Their bytes.
    pub bytes: u64,
    /// PUT log records written.
    pub log_records: u64,
    /// Times the workload's writes had to wait (journal full, resynchronisation).
    pub waits: u64,
    /// Failed writes.
    pub errors: u64,
    /// Duration of each workload write.
    pub latency: Histogram,
}

/// Everything the model keeps for its disk (boxed in [`ModelDomain`]).
#[derive(Debug)]
pub(super) struct ModelDisk {
    disk: Disk,
    layout: DiskLayout,
    wl: DiskWorkload,
    stats: ModelDiskStats,
    /// A write's content, built before it is written (allocated once).
    scratch: Vec<u8>,
}

mod block_device;
mod put_log;
pub(super) use put_log::parse_record;
pub use put_log::{put_log_bytes, put_log_records};

impl ModelDomain {
    /// Give the domain its disk (the guest's block device), with the disk workload `wl`. The
    /// memory must hold the disk's block CRC table ([`min_pages`]). A `fresh` guest (new, not
    /// one that ran before) formats its PUT log and reads its disk's block CRCs into its
    /// memory, as a guest booting with an existing disk would; its disk workload is seeded from
    /// its page workload's seed.
    pub fn attach_disk(&mut self, disk: Disk, wl: DiskWorkload, fresh: bool) -> Result<(), String> {
        let blocks = disk.size() / BLOCK;
        if self.pages < min_pages(disk.size()) {
            return Err(format!(
                "a model domain of {} pages cannot keep the block table of a {} byte disk: it needs {} pages",
                self.pages,
                disk.size(),
                min_pages(disk.size())
            ));
        }
        self.disk = Some(Box::new(ModelDisk {
            disk,
            layout: DiskLayout {
                blocks,
                log_blocks: (blocks / 4).clamp(1, MAX_LOG_BLOCKS),
                table_pages: table_pages(blocks),
            },
            wl: DiskWorkload::default(),
            stats: ModelDiskStats::default(),
            scratch: Vec::new(),
        }));
        if fresh {
            self.format_disk()
                .map_err(|e| format!("formatting the model's disk: {e}"))?;
            self.write_u64(OFF_DRNG, self.cpu.rng ^ 0x5eed_d15c);
        }
        self.set_disk_workload(wl)
    }

    /// A fresh guest's view of its disk: an empty PUT log, and the CRC of every block.
    fn format_disk(&mut self) -> Result<(), DiskError> {
        let Some(mut md) = self.disk.take() else {
            return Ok(());
        };
        let res = self.format_with(&mut md);
        self.disk = Some(md);
        res
    }

    fn format_with(&mut self, md: &mut ModelDisk) -> Result<(), DiskError> {
        if md.disk.created() {
            // All zeros: an empty log, and every block's CRC is the zero block's (0 in the
            // table), as the memory of a fresh domain has it.
            return Ok(());
        }
        let l = md.layout;
        let zero = [0u8; BLOCK as usize];
        let mut buf = vec![0u8; 1 << 20];
        let per = buf.len() as u64 / BLOCK;
        let mut b = 0;
        while b < l.blocks {
            let n = per.min(l.blocks - b);
            md.disk.read(b * BLOCK, &mut buf[..(n * BLOCK) as usize])?;
            for i in 0..n {
                let blk = &buf[(i * BLOCK) as usize..((i + 1) * BLOCK) as usize];
                let block = b + i;
                let crc = if block < l.log_blocks {
                    if blk != zero {
                        md.disk.write(block * BLOCK, &zero, false)?;
                    }
                    crc32fast::hash(&zero)
                } else {
                    crc32fast::hash(blk)
                };
                self.set_table_crc(block, crc);
            }
            b += n;
        }
        Ok(())
    }

    /// Set the disk workload.
    pub fn set_disk_workload(&mut self, wl: DiskWorkload) -> Result<(), String> {
        if wl.rate > 0
            && (wl.write == 0 || !wl.write.is_multiple_of(BLOCK) || wl.write > MAX_DISK_WRITE)
        {
            return Err(format!(
                "disk writes of {} bytes: expected a multiple of 4KiB up to 1MiB",
                wl.write
            ));
        }
        let Some(md) = self.disk.as_mut() else {
            return Ok(());
        };
        let l = md.layout;
        if wl.rate > 0 && wl.write / BLOCK > l.blocks - l.log_blocks {
            return Err("disk writes larger than the disk's data area".into());
        }
        md.scratch = vec![0u8; wl.write.max(BLOCK) as usize];
        md.wl = wl;
        Ok(())
    }

    /// The disk, if the domain has one.
    pub fn disk_ref(&self) -> Option<&Disk> {
        self.disk.as_ref().map(|m| &m.disk)
    }

    /// The disk, if the domain has one.
    pub fn disk_mut(&mut self) -> Option<&mut Disk> {
        self.disk.as_mut().map(|m| &mut m.disk)
    }

    /// Take the disk out (a hand-over: the next process opens it again).
    pub fn take_disk(&mut self) -> Option<Disk> {
        self.disk.take().map(|m| m.disk)
    }

    /// A write to the guest's block device by its block driver outside the model (the NBD
    /// export hsb-primary serves, `disk.nbd_socket`): through [`Disk::write`] (journaled for
    /// the open epoch), then the CRCs of the blocks it touched noted in memory, so that memory
    /// and disk still agree at every checkpoint. A write that fails or waits changes nothing.
    pub fn block_write(&mut self, offset: u64, data: &[u8], fua: bool) -> Result<(), DiskError> {
        let Some(md) = self.disk.as_mut() else {
            return Err(DiskError::Invalid("the model domain has no disk".into()));
        };
        md.disk.write(offset, data, fua)?;
        if data.is_empty() {
            return Ok(());
        }
        let last = offset + data.len() as u64 - 1;
        let mut crcs = Vec::with_capacity((last / BLOCK - offset / BLOCK + 1) as usize);
        let mut blk = [0u8; BLOCK as usize];
        for b in offset / BLOCK..=last / BLOCK {
            let at = b * BLOCK;
            let crc = if at >= offset && at + BLOCK <= offset + data.len() as u64 {
                let i = (at - offset) as usize;
                crc32fast::hash(&data[i..i + BLOCK as usize])
            } else {
                // A block written in part: its CRC is of what the image holds now.
                md.disk.read(at, &mut blk)?;
                crc32fast::hash(&blk)
            };
            crcs.push((b, crc));
        }
        for (b, crc) in crcs {
            self.set_table_crc(b, crc);
        }
        Ok(())
    }

    /// The guest's disk figures.
    pub fn disk_stats(&self) -> Option<&ModelDiskStats> {
        self.disk.as_ref().map(|m| &m.stats)
    }

    /// PUT log records written so far (the guest's count, in its memory).
    pub fn log_seq(&self) -> u64 {
        self.read_u64(OFF_LOG_SEQ)
    }

    /// Disk workload writes so far (in the guest's memory).
    pub fn disk_writes(&self) -> u64 {
        self.read_u64(OFF_DWRITES)
    }

    /// Whether a request can be taken now: a PUT's log record must be writable (a full
    /// journal, a resynchronisation catching up, or the activity log's record being synced
    /// for the log's next block makes requests wait; that record is started here).
    pub fn can_take_request(&mut self) -> bool {
        let seq = self.read_u64(OFF_LOG_SEQ);
        let Some(md) = self.disk.as_mut() else {
            return true;
        };
        let block = (seq / RECORDS_PER_BLOCK) % md.layout.log_blocks;
        md.disk.ready_for(block * BLOCK, BLOCK)
    }

    /// The first page of the page workload's region.
    pub(super) fn workload_first(&self) -> u64 {
        match &self.disk {
            Some(m) => TABLE_FIRST_PAGE + m.layout.table_pages,
            None => KV_FIRST_PAGE + KV_PAGES,
        }
    }

    fn table_off(&self, block: u64) -> usize {
        TABLE_FIRST_PAGE as usize * PAGE_SIZE + block as usize * 4
    }

    /// The block CRC the guest keeps for `block` (0: it is all zeros).
    fn table_crc(&self, block: u64) -> u32 {
        let o = self.table_off(block);
        let mut a = [0u8; 4];
        a.copy_from_slice(&self.mem[o..o + 4]);
        match u32::from_le_bytes(a) {
            0 => crc32fast::hash(&[0u8; BLOCK as usize]),
            c => c,
        }
    }

    fn set_table_crc(&mut self, block: u64, crc: u32) {
        let o = self.table_off(block);
        self.mem[o..o + 4].copy_from_slice(&crc.to_le_bytes());
        self.mark((o / PAGE_SIZE) as u64);
    }

    /// The disk's digest as the guest's memory has it (the CRCs of the blocks it wrote): equal
    /// to [`Disk::digest`] of the image when memory and disk agree.
    pub fn disk_digest(&self) -> Option<u32> {
        let blocks = self.disk.as_ref()?.layout.blocks;
        let crcs: Vec<u32> = (0..blocks).map(|b| self.table_crc(b)).collect();
        Some(digest_of(&crcs))
    }

    /// Check every block of the image against the CRC the guest's memory keeps for it (reads
    /// the whole image): memory and disk agree.
    pub fn verify_disk(&self) -> Result<(), String> {
        let Some(md) = self.disk.as_ref() else {
            return Ok(());
        };
        let mut crcs = Vec::with_capacity(md.layout.blocks as usize);
        md.disk
            .image_block_crcs(&mut crcs)
            .map_err(|e| e.to_string())?;
        self.verify_disk_crcs(&crcs)
    }

    /// [`ModelDomain::verify_disk`] from the image's block CRCs, read once by the caller.
    pub fn verify_disk_crcs(&self, crcs: &[u32]) -> Result<(), String> {
        for (b, &c) in crcs.iter().enumerate() {
            if c != self.table_crc(b as u64) {
                return Err(format!(
                    "disk block {b} does not hold what the guest's memory says it wrote"
                ));
            }
        }
        Ok(())
    }

    /// Check the PUT log on the disk against memory: every PUT the memory counts (within the
    /// log's ring) is on the disk, in its place; none beyond it (a PUT of a later checkpoint);
    /// and each key's last logged value is the value memory holds. Returns the records checked.
    pub fn verify_disk_log(&self) -> Result<u64, String> {
        let Some(md) = self.disk.as_ref() else {
            return Ok(0);
        };
        let l = md.layout;
        let mut log = vec![0u8; (l.log_blocks * BLOCK) as usize];
        md.disk.read(0, &mut log).map_err(|e| e.to_string())?;
        let end = self.log_seq();
        // The ring holds the tail block's records and those of the blocks before it (the tail
        // block's older records were overwritten when it was begun again).
        let first = (end / RECORDS_PER_BLOCK * RECORDS_PER_BLOCK)
            .saturating_sub((l.log_blocks - 1) * RECORDS_PER_BLOCK);
        for rec in log.chunks(RECORD) {
            if let Some((seq, _, _)) = parse_record(rec) {
                if seq >= end {
                    return Err(format!(
                        "PUT record {seq} is on the disk, but the memory has only {end}: a write of a later checkpoint"
                    ));
                }
            }
        }
        let mut latest: std::collections::HashMap<&[u8], (u64, &[u8])> =
            std::collections::HashMap::new();
        for seq in first..end {
            let at = (((seq / RECORDS_PER_BLOCK) % l.log_blocks) * BLOCK) as usize
                + (seq % RECORDS_PER_BLOCK) as usize * RECORD;
            match parse_record(&log[at..at + RECORD]) {
                Some((s, k, v)) if s == seq => {
                    latest.insert(k, (seq, v));
                }
                _ => return Err(format!("PUT record {seq} is missing from the disk log")),
            }
        }
        for (k, (seq, v)) in &latest {
            let mem = self.kv_value(k).unwrap_or_default();
            if mem != *v {
                return Err(format!(
                    "key {:?}: the disk log's last PUT ({seq}) says {:?}, memory says {:?}",
                    String::from_utf8_lossy(k),
                    String::from_utf8_lossy(v),
                    String::from_utf8_lossy(&mem)
                ));
            }
        }
        Ok(end - first)
    }

    /// Append a PUT record to the log: the tail block, written whole, then memory (the tail
    /// page, the block's CRC, the sequence number). Nothing changes if the write fails.
    pub(super) fn log_append(&mut self, key: &[u8], value: &[u8]) -> Result<(), DiskError> {
        let Some(md) = self.disk.as_mut() else {
            return Ok(());
        };
        let l = md.layout;
        let seq = u64::from_le_bytes(
            self.mem[OFF_LOG_SEQ..OFF_LOG_SEQ + 8]
                .try_into()
                .unwrap_or_default(),
        );
        let block = (seq / RECORDS_PER_BLOCK) % l.log_blocks;
        let slot = (seq % RECORDS_PER_BLOCK) as usize;
        let page = LOG_PAGE as usize * PAGE_SIZE;
        let mut tail = [0u8; BLOCK as usize];
        if slot != 0 {
            tail.copy_from_slice(&self.mem[page..page + PAGE_SIZE]);
        }
        let r = &mut tail[slot * RECORD..(slot + 1) * RECORD];
        r[..2].copy_from_slice(RECORD_MAGIC);
        r[2] = key.len() as u8;
        r[3] = value.len() as u8;
        r[8..16].copy_from_slice(&seq.to_le_bytes());
        r[16..16 + key.len()].copy_from_slice(key);
        r[16 + MAX_KEY..16 + MAX_KEY + value.len()].copy_from_slice(value);
        let crc = crc32fast::hash(&r[8..]);
        r[4..8].copy_from_slice(&crc.to_le_bytes());
        md.disk.write(block * BLOCK, &tail, false)?;
        md.stats.log_records += 1;
        self.mem[page..page + PAGE_SIZE].copy_from_slice(&tail);
        self.mark(LOG_PAGE);
        self.set_table_crc(block, crc32fast::hash(&tail));
        self.write_u64(OFF_LOG_SEQ, seq + 1);
        Ok(())
    }

    /// The disk workload for `elapsed` more time: writes of the configured size at the
    /// configured rate, each block's CRC noted in memory. Writes that must wait stay owed (at
    /// most a second's worth).
    pub(super) fn run_disk(&mut self, elapsed: std::time::Duration) {
        let Some(mut md) = self.disk.take() else {
            return;
        };
        if md.wl.rate > 0 {
            self.run_disk_with(&mut md, elapsed);
        }
        self.disk = Some(md);
    }

    fn run_disk_with(&mut self, md: &mut ModelDisk, elapsed: std::time::Duration) {
        let (l, wsize, rate) = (md.layout, md.wl.write, md.wl.rate);
        let owed = (rate as u128 * elapsed.as_nanos() / 1_000 + self.read_u64(OFF_DCARRY) as u128)
            .min((rate as u128 + wsize as u128) * 1_000_000);
        let mut owed = owed as u64;
        let wblocks = wsize / BLOCK;
        let slots = (l.blocks - l.log_blocks) / wblocks;
        let mut n = 0;
        while owed >= wsize * 1_000_000 && n < MAX_WRITES_PER_RUN {
            n += 1;
            let mut rng = SplitMix64::new(self.read_u64(OFF_DRNG));
            let cursor = self.read_u64(OFF_DCURSOR);
            let slot = if md.wl.random {
                rng.below(slots)
            } else {
                cursor % slots
            };
            let first = l.log_blocks + slot * wblocks;
            let data = &mut md.scratch[..wsize as usize];
            rng.fill(data);
            let t0 = std::time::Instant::now();
            match md.disk.write(first * BLOCK, data, false) {
                Ok(()) => {}
                Err(e) if e.is_wait() => {
                    md.stats.waits += 1;
                    break;
                }
                Err(e) => {
                    md.stats.errors += 1;
                    if md.stats.errors.is_power_of_two() {
                        log::error!("model disk workload: {e}");
                    }
                    owed = 0;
                    break;
                }
            }
            md.stats.latency.record(t0.elapsed());
            for i in 0..wblocks {
                let b = (i * BLOCK) as usize;
                self.set_table_crc(first + i, crc32fast::hash(&data[b..b + BLOCK as usize]));
            }
            self.write_u64(OFF_DRNG, rng.state());
            self.write_u64(OFF_DCURSOR, cursor.wrapping_add(1));
            self.write_u64(OFF_DWRITES, self.read_u64(OFF_DWRITES) + 1);
            md.stats.writes += 1;
            md.stats.bytes += wsize;
            owed -= wsize * 1_000_000;
        }
        self.write_u64(OFF_DCARRY, owed);
    }
}

#[cfg(test)]
#[path = "disk_tests.rs"]
mod tests;
