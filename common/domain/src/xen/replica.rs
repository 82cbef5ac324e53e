//! The standby's half: [`XenReplica`], the paused replica patched with every verified
//! checkpoint through the writable mapping, and unpaused at activation.

use xen_sys::abi::DomctlTscInfo;
use xen_sys::{DomId, HypercallBuf, Privcmd, Prot};

use super::memory::GuestMemory;
use super::{err, open_domain, runs, XenState, MAX_HVM_CONTEXT, MAX_POPULATED};
use crate::disk::Disk;
use crate::domain::{DomainError, Replica};
use crate::PAGE_SIZE;

/// The paused replica on the standby.
#[derive(Debug)]
pub struct XenReplica {
    xc: Privcmd,
    domid: DomId,
    mem: Option<GuestMemory>,
    hvm: HypercallBuf,
    ram: u64,
    p2m: u64,
    /// The guest's replicated disk (`xen.disk`), reached through the NBD export.
    disk: Option<Disk>,
}

impl XenReplica {
    /// Attach to the paused replica `domid` (created by `xl restore -p`) and map its RAM.
    pub fn open(domid: DomId) -> Result<XenReplica, DomainError> {
        let (mut xc, info) = open_domain(domid)?;
        if !info.is_paused() {
            return Err(err(
                "open",
                format!("domain {domid} is running: the replica must be paused (xl restore -p)"),
            ));
        }
        // (Paused: its disk's reads can wait for the mapping.)
        let mem = GuestMemory::map(&mut xc, domid, Prot::ReadWrite, &mut || {})?;
        let hvm = xc
            .alloc_buf(MAX_HVM_CONTEXT)
            .map_err(|e| err("hvm context buffer", e))?;
        // A checkpoint carries the primary's RAM, which may hold a few frames more than the
        // replica had at start-up (see GuestMemory::write): room for those too.
        let ram = (mem.populated.len() as u64).max(info.max_pages) + MAX_POPULATED as u64;
        Ok(XenReplica {
            xc,
            domid,
            ram,
            p2m: mem.p2m,
            mem: Some(mem),
            hvm,
            disk: None,
        })
    }

    /// The replica's domain id.
    pub fn domid(&self) -> DomId {
        self.domid
    }

    /// Guest RAM frames.
    pub fn ram_pages(&self) -> u64 {
        self.ram
    }

    /// Pause the activated replica (a fence).
    pub fn pause(&mut self) -> Result<(), DomainError> {
        self.xc.pause(self.domid).map_err(|e| err("pause", e))
    }

    /// Undo [`XenReplica::pause`].
    pub fn unpause(&mut self) -> Result<(), DomainError> {
        self.xc.unpause(self.domid).map_err(|e| err("unpause", e))
    }

    /// Let the replica run from the last applied checkpoint: drop the mapping and unpause.
    /// The guest returns from its suspend with 0 and resumes as after a migration.
    pub fn activate(&mut self) -> Result<(), DomainError> {
        self.mem = None;
        self.xc.unpause(self.domid).map_err(|e| err("activate", e))
    }
}

impl XenReplica {
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

impl Replica for XenReplica {
    fn disk(&mut self) -> Option<&mut Disk> {
        self.disk.as_mut()
    }

    fn pages(&self) -> u64 {
        self.p2m
    }

    fn max_pages(&self) -> u64 {
        self.ram
    }

    fn write_pages(&mut self, pfns: &[u64], data: &[u8]) -> Result<(), DomainError> {
        let mem = self
            .mem
            .as_mut()
            .ok_or_else(|| err("write_pages", "the replica is active"))?;
        if data.len() != pfns.len() * PAGE_SIZE {
            return Err(err("write_pages", "data size does not match page count"));
        }
        for (i, first, n) in runs(pfns) {
            let d = &data[i * PAGE_SIZE..(i + n) * PAGE_SIZE];
            if !(n > 1 && mem.write_run(first, d)) {
                for (k, page) in d.chunks_exact(PAGE_SIZE).enumerate() {
                    mem.write(&mut self.xc, self.domid, first + k as u64, page)?;
                }
            }
        }
        Ok(())
    }

    fn read_back(&mut self, pfns: &[u64], dst: &mut [u8]) -> Result<(), DomainError> {
        let mem = self
            .mem
            .as_ref()
            .ok_or_else(|| err("read_back", "the replica is active"))?;
        if dst.len() != pfns.len() * PAGE_SIZE {
            return Err(err("read_back", "buffer size does not match page count"));
        }
        for (&pfn, page) in pfns.iter().zip(dst.chunks_exact_mut(PAGE_SIZE)) {
            mem.read_back(pfn, page)?;
        }
        Ok(())
    }

    fn load_state(&mut self, state: &[u8]) -> Result<(), DomainError> {
        let s = XenState::decode(state)?;
        let info = DomctlTscInfo {
            tsc_mode: s.tsc.0,
            gtsc_khz: s.tsc.1,
            incarnation: s.tsc.2,
            elapsed_nsec: s.tsc_elapsed_nsec,
            ..Default::default()
        };
        self.xc
            .set_tsc_info(self.domid, &info)
            .map_err(|e| err("load_state tsc", e))?;
        for &(p, v) in s.params.iter() {
            self.xc
                .hvm_set_param(self.domid, p, v)
                .map_err(|e| err("load_state param", format!("param {p}: {e}")))?;
        }
        self.hvm.as_mut_slice()[..s.hvm.len()].copy_from_slice(s.hvm);
        self.xc
            .set_hvm_context(self.domid, &self.hvm, s.hvm.len())
            .map_err(|e| err("load_state hvm context", e))
    }
}
