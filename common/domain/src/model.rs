//! The `model` domain: a **test double for the hypervisor** (DESIGN.md §3).
//!
//! N pages of memory with dirty tracking, a workload that writes pages at a set rate, and a small
//! line-protocol service (INCR, GET, PUT key value, PING) whose whole state lives in those pages.
//! It implements both sides of [`crate::domain`], so the replication engine exercises the same
//! paths as with Xen: suspend, dirty pages, state record, replica writes, activation.
//!
//! It may have a disk ([`disk`], attached with [`ModelDomain::attach_disk`]): `PUT` appends a
//! record to a log on the disk before it changes memory and before its reply is produced, the
//! workload writes disk blocks at a set rate, and the guest keeps the CRC of every block it
//! wrote in its memory, so memory and disk can be checked against each other.
//!
//! Memory layout: page 0 holds a header (magic, counter, request count, disk log sequence, disk
//! workload state); pages 1..=64 hold a hash table of 2048 slots of 128 bytes for PUT/GET; with a
//! disk, the disk's pages follow ([`disk`]); the remaining pages are the workload's.

mod disk;
mod pattern;

pub use disk::{
    min_pages, put_log_bytes, put_log_records, DiskSettings, DiskWorkload, ModelDiskStats,
    DISK_KEYS, MAX_DISK_WRITE,
};
pub use pattern::{pattern_from_config, WritePattern, WRITE_PATTERN_KEY};

use crate::disk::Disk;
use crate::domain::{CheckpointSource, DomainError, Replica};
use crate::PAGE_SIZE;
use hsb_common::rng::SplitMix64;
use hsb_common::time::Nanos;

const MAGIC: &[u8; 8] = b"HSBMODEL";
const IMAGE_MAGIC: &[u8; 8] = b"HSBIMG01";
const OFF_COUNTER: usize = 8;
const OFF_REQUESTS: usize = 16;
const KV_FIRST_PAGE: u64 = 1;
const KV_PAGES: u64 = 64;
const SLOT: usize = 128;
const SLOTS_PER_PAGE: usize = PAGE_SIZE / SLOT;
const KV_SLOTS: usize = KV_PAGES as usize * SLOTS_PER_PAGE;
/// Longest key accepted by PUT/GET.
pub const MAX_KEY: usize = 40;
/// Longest value accepted by PUT.
pub const MAX_VALUE: usize = 84;
/// Smallest model domain: header, table and one workload page.
pub const MIN_PAGES: u64 = KV_FIRST_PAGE + KV_PAGES + 1;
/// Length of the model's state record ("vCPU context").
pub const STATE_LEN: usize = 40;
/// Longest request line the service accepts.
pub const MAX_LINE: usize = 256;

/// The domain size in pages from a daemon's `backend` and `model.memory` keys (shared by
/// primary and standby, which must agree).
pub fn pages_from_config(
    c: &hsb_common::config::Config,
) -> Result<u64, hsb_common::config::ConfigError> {
    let mem = c.size("model.memory")?;
    let page = PAGE_SIZE as u64;
    if mem % page != 0 || mem < MIN_PAGES * page || mem > (64u64 << 30) {
        return Err(c.error_at(
            "model.memory",
            "expected a multiple of 4KiB between 264KiB and 64GiB",
        ));
    }
    let disk = c.size("model.disk_size")?;
    if disk > 0 && mem / page < min_pages(disk) {
        return Err(c.error_at(
            "model.memory",
            &format!(
                "expected at least {} KiB with a disk of {disk} bytes (model.disk_size): the guest keeps 4 bytes of memory per disk block",
                min_pages(disk) * 4
            ),
        ));
    }
    Ok(mem / page)
}

/// The model's "vCPU": what is not in memory but must be replicated with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ModelCpu {
    /// Workload PRNG state.
    pub rng: u64,
    /// Next workload page (offset into the workload region).
    pub cursor: u64,
    /// Pages written by the workload so far.
    pub writes: u64,
    /// Fractional pages owed to the workload, in millionths.
    pub carry_micro: u64,
    /// Checkpoints captured.
    pub checkpoints: u64,
}

impl ModelCpu {
    fn encode(&self, out: &mut [u8; STATE_LEN]) {
        for (i, v) in [
            self.rng,
            self.cursor,
            self.writes,
            self.carry_micro,
            self.checkpoints,
        ]
        .iter()
        .enumerate()
        {
            out[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
    }

    fn decode(b: &[u8]) -> Option<ModelCpu> {
        if b.len() != STATE_LEN {
            return None;
        }
        let w = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i * 8..i * 8 + 8]);
            u64::from_le_bytes(a)
        };
        Some(ModelCpu {
            rng: w(0),
            cursor: w(1),
            writes: w(2),
            carry_micro: w(3),
            checkpoints: w(4),
        })
    }
}

/// The model domain.
#[derive(Debug)]
pub struct ModelDomain {
    mem: Vec<u8>,
    dirty: Vec<u64>,
    pages: u64,
    cpu: ModelCpu,
    suspended: bool,
    /// Workload rate in pages per second.
    rate: u64,
    /// How the workload writes a page.
    pattern: WritePattern,
    last_run: Option<Nanos>,
    /// The guest's disk, if it has one (see [`disk`]).
    disk: Option<Box<disk::ModelDisk>>,
}

impl ModelDomain {
    /// A zeroed domain of `pages` pages (at least [`MIN_PAGES`]) with a formatted header,
    /// every page dirty (nothing has been replicated yet).
    pub fn new(pages: u64, rate: u64, seed: u64) -> ModelDomain {
        let mut d = ModelDomain::blank(pages.max(MIN_PAGES));
        d.rate = rate;
        d.cpu.rng = seed;
        d.mem[..8].copy_from_slice(MAGIC);
        for w in d.dirty.iter_mut() {
            *w = !0;
        }
        d
    }

    /// An all-zero replica of `pages` pages, to be filled by checkpoints.
    pub fn blank(pages: u64) -> ModelDomain {
        let pages = pages.max(MIN_PAGES);
        ModelDomain {
            mem: vec![0u8; pages as usize * PAGE_SIZE],
            dirty: vec![0u64; pages.div_ceil(64) as usize],
            pages,
            cpu: ModelCpu::default(),
            suspended: false,
            rate: 0,
            pattern: WritePattern::Counters,
            last_run: None,
            disk: None,
        }
    }

    /// Number of pages.
    pub fn page_count(&self) -> u64 {
        self.pages
    }

    /// Write the domain (memory and vCPU state) to `path`: the model's stand-in for a
    /// hypervisor keeping a domain while its daemon hands over to another (exec).
    pub fn save_image(&self, path: &std::path::Path) -> std::io::Result<()> {
        use std::io::Write;
        let tmp = path.with_extension("tmp");
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        f.write_all(IMAGE_MAGIC)?;
        f.write_all(&self.pages.to_le_bytes())?;
        let mut st = [0u8; STATE_LEN];
        self.cpu.encode(&mut st);
        f.write_all(&st)?;
        f.write_all(&self.mem)?;
        // Not synced: the image only carries the domain across an exec on this host (it stands
        // for a hypervisor keeping the domain), and the model domain does not outlive a power
        // loss anyway. The rename still keeps a torn image from being read.
        f.into_inner().map_err(|e| e.into_error())?;
        std::fs::rename(&tmp, path)
    }

    /// Read a domain written by [`ModelDomain::save_image`]; it must have `pages` pages. Every
    /// page is dirty (a new primary starts with a full synchronisation anyway).
    pub fn load_image(
        path: &std::path::Path,
        pages: u64,
        rate: u64,
    ) -> Result<ModelDomain, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let head = IMAGE_MAGIC.len() + 8 + STATE_LEN;
        let want = head as u64 + pages * PAGE_SIZE as u64;
        if bytes.len() as u64 != want || &bytes[..IMAGE_MAGIC.len()] != IMAGE_MAGIC {
            return Err(format!(
                "{}: not a model domain image of {pages} pages ({} bytes, expected {want})",
                path.display(),
                bytes.len()
            ));
        }
        let mut n = [0u8; 8];
        n.copy_from_slice(&bytes[IMAGE_MAGIC.len()..IMAGE_MAGIC.len() + 8]);
        if u64::from_le_bytes(n) != pages {
            return Err(format!("{}: image has another page count", path.display()));
        }
        let mut d = ModelDomain::blank(pages);
        d.cpu = ModelCpu::decode(&bytes[IMAGE_MAGIC.len() + 8..head]).ok_or("bad state record")?;
        d.mem.copy_from_slice(&bytes[head..]);
        d.rate = rate;
        for w in d.dirty.iter_mut() {
            *w = !0;
        }
        Ok(d)
    }

    /// Whether the memory holds a formatted model (false for a replica never synchronised).
    pub fn formatted(&self) -> bool {
        &self.mem[..8] == MAGIC
    }

    /// Set the workload rate (pages per second).
    pub fn set_rate(&mut self, rate: u64) {
        self.rate = rate;
    }

    /// Set how the workload writes a page.
    pub fn set_pattern(&mut self, pattern: WritePattern) {
        self.pattern = pattern;
    }

    /// The domain with its workload writing as `pattern` says.
    pub fn with_pattern(mut self, pattern: WritePattern) -> ModelDomain {
        self.pattern = pattern;
        self
    }

    /// The replicated "vCPU" state.
    pub fn cpu(&self) -> ModelCpu {
        self.cpu
    }

    /// Whether the guest is suspended.
    pub fn is_suspended(&self) -> bool {
        self.suspended
    }

    /// CRC32 of memory and state: equal digests mean identical domains.
    pub fn digest(&self) -> u32 {
        let mut h = crc32fast::Hasher::new();
        h.update(&self.mem);
        let mut s = [0u8; STATE_LEN];
        self.cpu.encode(&mut s);
        h.update(&s);
        h.finalize()
    }

    fn mark(&mut self, pfn: u64) {
        self.dirty[(pfn / 64) as usize] |= 1 << (pfn % 64);
    }

    fn read_u64(&self, off: usize) -> u64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(&self.mem[off..off + 8]);
        u64::from_le_bytes(a)
    }

    fn write_u64(&mut self, off: usize, v: u64) {
        self.mem[off..off + 8].copy_from_slice(&v.to_le_bytes());
        self.mark((off / PAGE_SIZE) as u64);
    }

    /// The counter.
    pub fn counter(&self) -> u64 {
        self.read_u64(OFF_COUNTER)
    }

    /// Run the workload up to `now`: writes `rate` pages per second, spread over the workload
    /// region in order. Bounded: at most one pass over the region per call.
    pub fn run(&mut self, now: Nanos) {
        if self.suspended {
            return;
        }
        let Some(last) = self.last_run.replace(now) else {
            return;
        };
        self.run_disk(now.since(last));
        let first = self.workload_first();
        let region = self.pages - first;
        let micro =
            self.rate as u128 * now.since(last).as_nanos() / 1_000 + self.cpu.carry_micro as u128;
        let due = (micro / 1_000_000) as u64;
        self.cpu.carry_micro = (micro % 1_000_000) as u64;
        for _ in 0..due.min(region) {
            let pfn = first + self.cpu.cursor;
            self.cpu.cursor = (self.cpu.cursor + 1) % region;
            let mut rng = SplitMix64::new(self.cpu.rng);
            let page = pfn as usize * PAGE_SIZE;
            let page = &mut self.mem[page..page + PAGE_SIZE];
            self.pattern.write(page, &mut rng);
            self.cpu.rng = rng.state();
            self.mark(pfn);
            self.cpu.writes += 1;
        }
    }

    /// Forget the workload's time base (after activation on another host).
    pub fn reset_clock(&mut self) {
        self.last_run = None;
    }

    /// Handle one request line of the service; returns the reply line (without newline).
    pub fn handle(&mut self, line: &str) -> String {
        debug_assert!(
            !self.suspended,
            "requests are never handled while suspended"
        );
        let reqs = self.read_u64(OFF_REQUESTS);
        self.write_u64(OFF_REQUESTS, reqs.wrapping_add(1));
        let mut it = line.split_ascii_whitespace();
        let cmd = it.next().unwrap_or("");
        match (
            cmd.to_ascii_uppercase().as_str(),
            it.next(),
            it.next(),
            it.next(),
        ) {
            ("PING", None, _, _) => "PONG".into(),
            ("INCR", None, _, _) => {
                let v = self.counter().wrapping_add(1);
                self.write_u64(OFF_COUNTER, v);
                v.to_string()
            }
            ("GET", None, _, _) => self.counter().to_string(),
            ("GET", Some(k), None, _) => match self.kv_find(k.as_bytes()) {
                Ok(Some(_)) => {
                    String::from_utf8_lossy(&self.kv_value(k.as_bytes()).unwrap_or_default())
                        .into_owned()
                }
                Ok(None) => "NIL".into(),
                Err(e) => format!("ERR {e}"),
            },
            ("PUT", Some(k), Some(v), None) => {
                let slot = match self.kv_slot_for(k.as_bytes(), v.as_bytes()) {
                    Ok(s) => s,
                    Err(e) => return format!("ERR {e}"),
                };
                // On the disk first: the reply (and memory) only once the record is written.
                match self.log_append(k.as_bytes(), v.as_bytes()) {
                    Ok(()) => {}
                    Err(e) if e.is_wait() => return "ERR disk busy, try again".into(),
                    Err(e) => return format!("ERR disk: {e}"),
                }
                self.kv_write(slot, k.as_bytes(), v.as_bytes());
                "OK".into()
            }
            ("", _, _, _) => "ERR empty request".into(),
            _ => "ERR unknown request; use PING, INCR, GET, GET key, PUT key value".into(),
        }
    }

    fn slot_off(&self, slot: usize) -> usize {
        (KV_FIRST_PAGE as usize + slot / SLOTS_PER_PAGE) * PAGE_SIZE
            + (slot % SLOTS_PER_PAGE) * SLOT
    }

    /// A key's value, if it has one.
    fn kv_value(&self, key: &[u8]) -> Option<Vec<u8>> {
        let slot = self.kv_find(key).ok()??;
        let off = self.slot_off(slot);
        let vlen = self.mem[off + 2] as usize;
        Some(self.mem[off + 4 + MAX_KEY..off + 4 + MAX_KEY + vlen].to_vec())
    }

    /// Find a key's slot (`Ok(None)` if absent).
    fn kv_find(&self, key: &[u8]) -> Result<Option<usize>, &'static str> {
        if key.len() > MAX_KEY {
            return Err("key longer than 40 bytes");
        }
        let start = fnv(key) as usize % KV_SLOTS;
        for i in 0..KV_SLOTS {
            let slot = (start + i) % KV_SLOTS;
            let off = self.slot_off(slot);
            if self.mem[off] == 0 {
                return Ok(None);
            }
            let klen = self.mem[off + 1] as usize;
            if &self.mem[off + 4..off + 4 + klen] == key {
                return Ok(Some(slot));
            }
        }
        Ok(None)
    }

    /// The slot a PUT of `key` goes to (checked before anything is written).
    fn kv_slot_for(&self, key: &[u8], value: &[u8]) -> Result<usize, &'static str> {
        if value.len() > MAX_VALUE {
            return Err("value longer than 84 bytes");
        }
        match self.kv_find(key)? {
            Some(s) => Ok(s),
            None => {
                let start = fnv(key) as usize % KV_SLOTS;
                (0..KV_SLOTS)
                    .map(|i| (start + i) % KV_SLOTS)
                    .find(|&s| self.mem[self.slot_off(s)] == 0)
                    .ok_or("table full")
            }
        }
    }

    fn kv_write(&mut self, slot: usize, key: &[u8], value: &[u8]) {
        let off = self.slot_off(slot);
        self.mem[off] = 1;
        self.mem[off + 1] = key.len() as u8;
        self.mem[off + 2] = value.len() as u8;
        self.mem[off + 4..off + 4 + key.len()].copy_from_slice(key);
        self.mem[off + 4 + MAX_KEY..off + 4 + MAX_KEY + value.len()].copy_from_slice(value);
        self.mark((off / PAGE_SIZE) as u64);
    }

    fn check_range(
        &self,
        op: &'static str,
        pfns: &[u64],
        data_len: usize,
    ) -> Result<(), DomainError> {
        if data_len != pfns.len() * PAGE_SIZE {
            return Err(DomainError {
                op,
                detail: format!("{} bytes for {} pages", data_len, pfns.len()),
            });
        }
        if let Some(bad) = pfns.iter().find(|&&p| p >= self.pages) {
            return Err(DomainError {
                op,
                detail: format!("page {bad} beyond the domain's {} pages", self.pages),
            });
        }
        Ok(())
    }
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
        (h ^ x as u64).wrapping_mul(0x100_0000_01b3)
    })
}

impl CheckpointSource for ModelDomain {
    fn pages(&self) -> u64 {
        self.pages
    }

    fn suspend(&mut self) -> Result<(), DomainError> {
        if self.suspended {
            return Err(DomainError {
                op: "suspend",
                detail: "already suspended".into(),
            });
        }
        self.suspended = true;
        Ok(())
    }

    fn resume(&mut self) -> Result<(), DomainError> {
        if !self.suspended {
            return Err(DomainError {
                op: "resume",
                detail: "not suspended".into(),
            });
        }
        self.suspended = false;
        Ok(())
    }

    fn take_dirty(&mut self, full: bool, out: &mut Vec<u64>) -> Result<(), DomainError> {
        if out.capacity() - out.len() < self.pages as usize {
            return Err(DomainError {
                op: "take_dirty",
                detail: "output list too small".into(),
            });
        }
        for (i, w) in self.dirty.iter_mut().enumerate() {
            let mut bits = if full { !0 } else { *w };
            *w = 0;
            while bits != 0 {
                let b = bits.trailing_zeros() as u64;
                bits &= bits - 1;
                let pfn = i as u64 * 64 + b;
                if pfn < self.pages {
                    out.push(pfn);
                }
            }
        }
        Ok(())
    }

    fn read_pages(&mut self, pfns: &[u64], dst: &mut [u8]) -> Result<(), DomainError> {
        self.check_range("read_pages", pfns, dst.len())?;
        for (i, &pfn) in pfns.iter().enumerate() {
            let src = pfn as usize * PAGE_SIZE;
            dst[i * PAGE_SIZE..(i + 1) * PAGE_SIZE]
                .copy_from_slice(&self.mem[src..src + PAGE_SIZE]);
        }
        Ok(())
    }

    fn disk(&mut self) -> Option<&mut Disk> {
        self.disk_mut()
    }

    fn save_state(&mut self, dst: &mut [u8]) -> Result<usize, DomainError> {
        let d = dst.get_mut(..STATE_LEN).ok_or(DomainError {
            op: "save_state",
            detail: "buffer too small".into(),
        })?;
        // Counted here, in the state it is part of, so the replica's copy matches exactly.
        self.cpu.checkpoints += 1;
        let mut s = [0u8; STATE_LEN];
        self.cpu.encode(&mut s);
        d.copy_from_slice(&s);
        Ok(STATE_LEN)
    }
}

impl Replica for ModelDomain {
    fn pages(&self) -> u64 {
        self.pages
    }

    fn disk(&mut self) -> Option<&mut Disk> {
        self.disk_mut()
    }

    fn write_pages(&mut self, pfns: &[u64], data: &[u8]) -> Result<(), DomainError> {
        self.check_range("write_pages", pfns, data.len())?;
        for (i, &pfn) in pfns.iter().enumerate() {
            let dst = pfn as usize * PAGE_SIZE;
            self.mem[dst..dst + PAGE_SIZE]
                .copy_from_slice(&data[i * PAGE_SIZE..(i + 1) * PAGE_SIZE]);
        }
        Ok(())
    }

    fn read_back(&mut self, pfns: &[u64], dst: &mut [u8]) -> Result<(), DomainError> {
        CheckpointSource::read_pages(self, pfns, dst)
    }

    fn load_state(&mut self, state: &[u8]) -> Result<(), DomainError> {
        self.cpu = ModelCpu::decode(state).ok_or(DomainError {
            op: "load_state",
            detail: format!(
                "state record of {} bytes, expected {STATE_LEN}",
                state.len()
            ),
        })?;
        Ok(())
    }
}

#[cfg(test)]
#[path = "model_tests.rs"]
mod tests;
