//! The primary's half: [`XenSource`], the protected guest, suspended cooperatively for each
//! checkpoint, its dirty pages read through the read-only mapping, its state saved, and resumed.

use std::time::{Duration, Instant};

use xen_sys::abi::hvm_param;
use xen_sys::{DomId, HypercallBuf, Privcmd, Prot};
use xenstore_rs::unix::XsUnix;
use xenstore_rs::Xs;

use super::memory::GuestMemory;
use super::{err, open_domain, runs, XenState, MAX_HVM_CONTEXT, STATE_VERSION};
use crate::disk::Disk;
use crate::domain::{CheckpointSource, DomainError};
use crate::PAGE_SIZE;

fn hvm_buf(xc: &mut Privcmd, domid: DomId) -> Result<HypercallBuf, DomainError> {
    let size = xc
        .hvm_context_size(domid)
        .map_err(|e| err("hvm context size", e))?;
    // Room for growth (e.g. XSAVE areas), bounded.
    let len = (size * 2).clamp(4096, MAX_HVM_CONTEXT);
    xc.alloc_buf(len).map_err(|e| err("hvm context buffer", e))
}

/// The protected guest on the primary.
pub struct XenSource {
    xc: Privcmd,
    xs: XsUnix,
    domid: DomId,
    mem: GuestMemory,
    bitmap: HypercallBuf,
    hvm: HypercallBuf,
    suspended: bool,
    suspend_requested: Option<Instant>,
    suspend_timeout: Duration,
    skipped_holes: u64,
    /// Times log-dirty was found off and enabled again (see `take_dirty`).
    logdirty_restarts: u64,
    /// The guest's replicated disk (`xen.disk`), reached through the NBD export.
    disk: Option<Disk>,
}

impl std::fmt::Debug for XenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XenSource")
            .field("domid", &self.domid)
            .field("p2m", &self.mem.p2m)
            .field("ram", &self.mem.populated.len())
            .field("suspended", &self.suspended)
            .finish()
    }
}

impl XenSource {
    /// Attach to running guest `domid`: map its RAM (`between` runs after each chunk mapped:
    /// the guest runs, and its disk must be served meanwhile), enable log-dirty.
    pub fn open(
        domid: DomId,
        suspend_timeout: Duration,
        between: &mut dyn FnMut(),
    ) -> Result<XenSource, DomainError> {
        let (mut xc, _) = open_domain(domid)?;
        let xs = XsUnix::new().map_err(|e| err("open xenstore", e))?;
        let mem = GuestMemory::map(&mut xc, domid, Prot::Read, between)?;
        let bitmap = xc
            .alloc_buf(mem.p2m.div_ceil(8) as usize)
            .map_err(|e| err("dirty bitmap", e))?;
        let hvm = hvm_buf(&mut xc, domid)?;
        xc.logdirty_enable(domid)
            .map_err(|e| err("enable log-dirty", e))?;
        Ok(XenSource {
            xc,
            xs,
            domid,
            mem,
            bitmap,
            hvm,
            suspended: false,
            suspend_requested: None,
            suspend_timeout,
            skipped_holes: 0,
            logdirty_restarts: 0,
            disk: None,
        })
    }

    /// The guest's domain id.
    pub fn domid(&self) -> DomId {
        self.domid
    }

    /// Guest RAM frames (the most pages one checkpoint can carry).
    pub fn ram_pages(&self) -> u64 {
        self.mem.populated.len() as u64
    }

    /// Whether the guest is suspended (by a checkpoint or a fence).
    pub fn is_suspended(&self) -> bool {
        self.suspended
    }

    /// Pause the guest without its cooperation (a fence when it does not suspend).
    pub fn hard_pause(&mut self) -> Result<(), DomainError> {
        self.xc.pause(self.domid).map_err(|e| err("pause", e))
    }

    /// Ask the guest to suspend (xenstore `control/shutdown` = `suspend`) without waiting:
    /// the caller polls [`XenSource::poll_suspend`] from its event loop, so heartbeats and
    /// witness traffic go on while the guest reaches its suspend point.
    pub fn request_suspend(&mut self) -> Result<(), DomainError> {
        // One request at a time: the guest clears `control/shutdown` when it takes the request,
        // so writing it again while one is under way would make the guest suspend a second
        // time after its resume, with nobody waiting for it.
        if !request_needed(self.suspended, self.suspend_requested.is_some()) {
            return Ok(());
        }
        self.xs
            .write(&self.control_path(), "suspend")
            .map_err(|e| err("suspend", format!("xenstore write control/shutdown: {e}")))?;
        self.suspend_requested = Some(Instant::now());
        Ok(())
    }

    /// Whether the guest has suspended since [`XenSource::request_suspend`]. Errors when it
    /// shut down otherwise, or did not suspend within the timeout (the request is withdrawn).
    pub fn poll_suspend(&mut self) -> Result<bool, DomainError> {
        if self.suspended {
            return Ok(true);
        }
        let Some(t0) = self.suspend_requested else {
            return Err(err("suspend", "no suspend was requested"));
        };
        let info = self
            .xc
            .getdomaininfo(self.domid)
            .map_err(|e| err("suspend", e))?;
        if info.is_suspended() {
            self.suspend_requested = None;
            self.suspended = true;
            return Ok(true);
        }
        if info.is_dying() || info.shutdown_reason().is_some_and(|r| r != 2) {
            self.suspend_requested = None;
            return Err(err("suspend", "the guest shut down or crashed"));
        }
        if t0.elapsed() > self.suspend_timeout {
            self.suspend_requested = None;
            // Withdraw the request so a late guest does not suspend on its own.
            let _ = self.xs.write(&self.control_path(), "");
            return Err(err(
                "suspend",
                format!(
                    "the guest did not suspend within {:?} (does it have PV drivers / xenbus?)",
                    self.suspend_timeout
                ),
            ));
        }
        Ok(false)
    }

    /// Whether a suspend was requested and has not completed.
    pub fn suspending(&self) -> bool {
        self.suspend_requested.is_some()
    }

    /// Undo [`XenSource::hard_pause`].
    pub fn hard_unpause(&mut self) -> Result<(), DomainError> {
        self.xc.unpause(self.domid).map_err(|e| err("unpause", e))
    }

    fn control_path(&self) -> String {
        format!("/local/domain/{}/control/shutdown", self.domid)
    }
}

/// Whether a suspend request must be written to `control/shutdown`: not when the guest is
/// suspended already, nor while an earlier request is under way (see
/// [`XenSource::request_suspend`]).
pub(super) fn request_needed(suspended: bool, pending: bool) -> bool {
    !suspended && !pending
}

impl Drop for XenSource {
    fn drop(&mut self) {
        if let Err(e) = self.xc.logdirty_off(self.domid) {
            log::debug!("log-dirty off for domain {}: {e}", self.domid);
        }
    }
}

impl XenSource {
    /// Attach the guest's replicated disk: its writes travel with the checkpoints.
    pub fn attach_disk(&mut self, disk: Disk) {
        self.disk = Some(disk);
    }

    /// The guest's replicated disk, if it has one.
    pub fn disk_ref(&self) -> Option<&Disk> {
        self.disk.as_ref()
    }

    /// The guest's replicated disk, if it has one.
    pub fn disk_mut(&mut self) -> Option<&mut Disk> {
        self.disk.as_mut()
    }
}

impl CheckpointSource for XenSource {
    fn disk(&mut self) -> Option<&mut Disk> {
        self.disk.as_mut()
    }

    fn pages(&self) -> u64 {
        self.mem.p2m
    }

    fn max_pages(&self) -> u64 {
        self.ram_pages()
    }

    fn suspend(&mut self) -> Result<(), DomainError> {
        if self.suspended {
            return Err(err("suspend", "already suspended"));
        }
        self.request_suspend()?;
        loop {
            if self.poll_suspend()? {
                return Ok(());
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    fn resume(&mut self) -> Result<(), DomainError> {
        if !self.suspended {
            return Err(err("resume", "not suspended"));
        }
        self.xc
            .resume_cooperative(self.domid)
            .map_err(|e| err("resume", e))?;
        self.suspended = false;
        Ok(())
    }

    fn take_dirty(&mut self, full: bool, out: &mut Vec<u64>) -> Result<(), DomainError> {
        if out.capacity() - out.len() < self.mem.populated.len() {
            return Err(err("take_dirty", "output list too small"));
        }
        let p2m = self.mem.p2m;
        // Another tool may have turned log-dirty off (libxc's save does when it ends): then
        // nothing written since was logged, and every page goes again.
        let restarted = self
            .xc
            .logdirty_ensure(self.domid)
            .map_err(|e| err("take_dirty", e))?;
        if restarted {
            self.logdirty_restarts += 1;
            log::warn!(
                "log-dirty tracking of domain {} had been turned off by another tool (xl save, migrate or remus?): enabled again, and every page goes in this checkpoint ({} times so far)",
                self.domid,
                self.logdirty_restarts
            );
        }
        self.xc
            .logdirty_clean(self.domid, &mut self.bitmap, p2m, true)
            .map_err(|e| err("take_dirty", e))?;
        if full || restarted {
            out.extend_from_slice(&self.mem.populated);
            return Ok(());
        }
        let bytes = &self.bitmap.as_slice()[..p2m.div_ceil(8) as usize];
        for (i, w) in bytes.chunks(8).enumerate() {
            let mut word = [0u8; 8];
            word[..w.len()].copy_from_slice(w);
            let mut bits = u64::from_le_bytes(word);
            while bits != 0 {
                let b = bits.trailing_zeros() as u64;
                bits &= bits - 1;
                let pfn = i as u64 * 64 + b;
                if pfn >= p2m {
                    continue;
                }
                if self.mem.is_ram(pfn) {
                    out.push(pfn);
                } else {
                    self.skipped_holes += 1;
                    if self.skipped_holes.is_power_of_two() {
                        log::warn!(
                            "frame {pfn:#x} is dirty but was not RAM at start-up (ballooning is not supported); skipped ({} so far)",
                            self.skipped_holes
                        );
                    }
                }
            }
        }
        Ok(())
    }

    fn read_pages(&mut self, pfns: &[u64], dst: &mut [u8]) -> Result<(), DomainError> {
        if dst.len() != pfns.len() * PAGE_SIZE {
            return Err(err("read_pages", "buffer size does not match page count"));
        }
        // Runs of consecutive frames in one chunk are copied in one go (a full sync is one
        // long run per chunk); ForeignMap checks every page of a run is mapped.
        for (i, first, n) in runs(pfns) {
            let d = &mut dst[i * PAGE_SIZE..(i + n) * PAGE_SIZE];
            if n == 1 || self.mem.read(first, d).is_err() {
                // A run crossing a hole: page by page, naming the frame that fails.
                for (k, page) in d.chunks_exact_mut(PAGE_SIZE).enumerate() {
                    self.mem.read(first + k as u64, page)?;
                }
            }
        }
        Ok(())
    }

    fn save_state(&mut self, dst: &mut [u8]) -> Result<usize, DomainError> {
        let n = self
            .xc
            .get_hvm_context(self.domid, &mut self.hvm)
            .map_err(|e| err("save_state", e))?;
        let tsc = self
            .xc
            .get_tsc_info(self.domid)
            .map_err(|e| err("save_state", e))?;
        let mut params = heapless::Vec::new();
        for &p in hvm_param::CHECKPOINT_PARAMS.iter() {
            match self.xc.hvm_get_param(self.domid, p) {
                Ok(0) => {}
                Ok(v) => {
                    let _ = params.push((p, v));
                }
                // Some params are refused for some guest types; libxc skips those too.
                Err(e) => log::trace!("hvm param {p}: {e}"),
            }
        }
        let st = XenState {
            version: STATE_VERSION,
            tsc: (tsc.tsc_mode, tsc.gtsc_khz, tsc.incarnation),
            tsc_elapsed_nsec: tsc.elapsed_nsec,
            params,
            hvm: &self.hvm.as_slice()[..n],
        };
        let used = postcard::to_slice(&st, dst)
            .map_err(|e| err("save_state", format!("state record does not fit: {e}")))?;
        Ok(used.len())
    }
}
