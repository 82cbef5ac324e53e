//! Mapping another domain's memory into dom0.
//!
//! This module owns [`ForeignMap`]: a privcmd mapping of a list of guest frames made with
//! `IOCTL_PRIVCMD_MMAPBATCH_V2`, its per-page errors, and copying pages in and out. It follows
//! the protocol of libxenforeignmemory (`tools/libs/foreignmemory/linux.c` @RELEASE-4.17.0):
//! `mmap` of the privcmd fd, one batch ioctl, then a bounded number of retries for frames that
//! reported `-ENOENT` (paged out). Accessing a frame that failed would raise `SIGBUS`, so the
//! copy methods refuse such pages with [`Error::PageNotMapped`].
//!
//! There are no slice accessors on purpose: the guest may write its memory at any time, so the
//! map only offers copies, which the caller should make while the domain is paused if it needs
//! a consistent image.

use crate::abi::{DomId, PrivcmdMmapbatchV2, XEN_PAGE_SHIFT, XEN_PAGE_SIZE};
use crate::error::{Error, XenError};
use crate::ioctl::IOCTL_PRIVCMD_MMAPBATCH_V2;
use crate::privcmd::Privcmd;
use crate::sys::{self, errno};
use core::ptr::NonNull;
use std::ffi::{c_ulong, c_void};
use std::time::Duration;

/// How many times frames reporting `ENOENT` (paged out) are retried before they are reported.
pub const PAGED_OUT_RETRIES: u32 = 16;
/// Pause between retries of paged-out frames.
pub const PAGED_OUT_RETRY_DELAY: Duration = Duration::from_micros(100);

const OP_MMAP: &str = "mmap privcmd foreign mapping";
const OP_BATCH: &str = "ioctl PRIVCMD_MMAPBATCH_V2";

/// Access requested for a foreign mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prot {
    /// Read only (the primary reads dirty pages).
    Read,
    /// Read and write (the standby writes pages into the replica).
    ReadWrite,
}

/// Guest frames of one domain mapped contiguously into this process, one page per gfn.
///
/// Unmapped on drop.
#[derive(Debug)]
pub struct ForeignMap {
    ptr: NonNull<u8>,
    gfns: Vec<u64>,
    /// Per page: 0, or the positive errno of the failure.
    errors: Vec<i32>,
    prot: Prot,
    domid: DomId,
}

// SAFETY: the map exclusively owns its mapping; the kernel mapping is valid from any thread.
unsafe impl Send for ForeignMap {}
// SAFETY: `&ForeignMap` only allows copying pages out; writes need `&mut ForeignMap`.
unsafe impl Sync for ForeignMap {}

impl ForeignMap {
    /// Map `gfns` of `domid` with `prot` through `privcmd`.
    ///
    /// The whole call fails only if the mapping cannot be created or the ioctl itself fails
    /// (for example `EINVAL` from a kernel without MMAPBATCH_V2, or `EPERM`). Individual frames
    /// that cannot be mapped are reported by [`ForeignMap::page_error`] and
    /// [`ForeignMap::failed`]; frames paged out (`ENOENT`) are retried up to
    /// [`PAGED_OUT_RETRIES`] times first.
    pub fn map(privcmd: &Privcmd, domid: DomId, gfns: &[u64], prot: Prot) -> Result<Self, Error> {
        let num = u32::try_from(gfns.len()).map_err(|_| Error::InvalidArgument {
            op: OP_BATCH,
            what: "more than 2^32 frames",
        })?;
        if num == 0 {
            return Err(Error::InvalidArgument {
                op: OP_BATCH,
                what: "no frames to map",
            });
        }
        let len = gfns
            .len()
            .checked_mul(XEN_PAGE_SIZE)
            .ok_or(Error::InvalidArgument {
                op: OP_MMAP,
                what: "mapping size overflows",
            })?;
        let prot_bits = match prot {
            Prot::Read => sys::PROT_READ,
            Prot::ReadWrite => sys::PROT_READ | sys::PROT_WRITE,
        };
        // SAFETY: a fresh shared mapping (addr NULL) of the privcmd fd; it does not touch
        // existing memory. The result is checked against MAP_FAILED below.
        let p = unsafe {
            sys::mmap(
                core::ptr::null_mut(),
                len,
                prot_bits,
                sys::MAP_SHARED,
                privcmd.raw_fd(),
                0,
            )
        };
        if p == sys::MAP_FAILED {
            return Err(XenError::last(OP_MMAP).into());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or(XenError::new(OP_MMAP, errno::ENOMEM))?;
        // From here on, Drop unmaps on every error path.
        let mut map = Self {
            ptr,
            gfns: gfns.to_vec(),
            errors: vec![0; gfns.len()],
            prot,
            domid,
        };
        let mut raw_err = vec![0i32; gfns.len()];
        let all = map.batch(privcmd, 0, gfns.len(), &mut raw_err)?;
        let mut paged = all;
        let mut attempt = 0;
        while paged && attempt < PAGED_OUT_RETRIES {
            attempt += 1;
            std::thread::sleep(PAGED_OUT_RETRY_DELAY);
            paged = map.retry_paged(privcmd, &mut raw_err)?;
        }
        for (dst, &e) in map.errors.iter_mut().zip(&raw_err) {
            *dst = e.saturating_neg();
        }
        if paged {
            log::warn!(
                "dom{domid}: {} frame(s) still paged out after {PAGED_OUT_RETRIES} retries",
                map.errors.iter().filter(|&&e| e == errno::ENOENT).count()
            );
        }
        Ok(map)
    }

    /// Issue MMAPBATCH_V2 for pages `[first, first + count)`. Returns whether any of them
    /// reported `ENOENT` (paged out); other per-page errors are left in `raw_err`.
    fn batch(
        &self,
        privcmd: &Privcmd,
        first: usize,
        count: usize,
        raw_err: &mut [i32],
    ) -> Result<bool, Error> {
        let range = first..first + count;
        let (gfns, errs) = (&self.gfns[range.clone()], &mut raw_err[range]);
        let mut arg = PrivcmdMmapbatchV2 {
            // `count` <= the u32 checked in `map`.
            num: count as u32,
            dom: self.domid,
            _pad: 0,
            addr: self.ptr.as_ptr() as u64 + ((first as u64) << XEN_PAGE_SHIFT),
            arr: gfns.as_ptr() as u64,
            err: errs.as_mut_ptr() as u64,
        };
        // SAFETY: the kernel reads `arg`, `count` u64 gfns from `gfns` and writes `count` i32s
        // to `errs` (both slices of exactly `count` elements, alive and exclusively borrowed
        // for the call), and installs frames into pages [first, first + count) of our own
        // privcmd mapping, which lies inside the `len` bytes created in `map`.
        let rc = unsafe {
            sys::ioctl(
                privcmd.raw_fd(),
                IOCTL_PRIVCMD_MMAPBATCH_V2 as c_ulong,
                &mut arg as *mut PrivcmdMmapbatchV2,
            )
        };
        if rc >= 0 {
            return Ok(false);
        }
        let e = XenError::last(OP_BATCH);
        if e.errno == errno::ENOENT {
            Ok(true)
        } else {
            Err(e.into())
        }
    }

    /// Retry every run of consecutive pages whose error is `-ENOENT`. Returns whether any page
    /// is still paged out.
    fn retry_paged(&self, privcmd: &Privcmd, raw_err: &mut [i32]) -> Result<bool, Error> {
        let mut still_paged = false;
        let mut i = 0;
        while i < raw_err.len() {
            if raw_err[i] != -errno::ENOENT {
                i += 1;
                continue;
            }
            let start = i;
            while i < raw_err.len() && raw_err[i] == -errno::ENOENT {
                i += 1;
            }
            still_paged |= self.batch(privcmd, start, i - start, raw_err)?;
        }
        Ok(still_paged)
    }

    /// Number of pages (gfns) in the map.
    pub fn len(&self) -> usize {
        self.gfns.len()
    }

    /// Always `false`: a map has at least one page.
    pub fn is_empty(&self) -> bool {
        self.gfns.is_empty()
    }

    /// The domain the frames belong to.
    pub fn domid(&self) -> DomId {
        self.domid
    }

    /// The gfns, in mapping order.
    pub fn gfns(&self) -> &[u64] {
        &self.gfns
    }

    /// The positive errno for page `index` if it could not be mapped (`None` if mapped or out
    /// of range).
    pub fn page_error(&self, index: usize) -> Option<i32> {
        self.errors.get(index).copied().filter(|&e| e != 0)
    }

    /// Every page that could not be mapped, as `(index, gfn, errno)`.
    pub fn failed(&self) -> impl Iterator<Item = (usize, u64, i32)> + '_ {
        self.errors
            .iter()
            .zip(&self.gfns)
            .enumerate()
            .filter(|(_, (&e, _))| e != 0)
            .map(|(i, (&e, &gfn))| (i, gfn, e))
    }

    /// Whether every page was mapped.
    pub fn all_mapped(&self) -> bool {
        self.errors.iter().all(|&e| e == 0)
    }

    /// Check that pages `[first, first + count)` exist and are mapped.
    fn check_pages(&self, op: &'static str, first: usize, count: usize) -> Result<(), Error> {
        let end = first.checked_add(count).filter(|&e| e <= self.len());
        let Some(end) = end else {
            return Err(Error::InvalidArgument {
                op,
                what: "page index out of range",
            });
        };
        if let Some(i) = (first..end).find(|&i| self.errors[i] != 0) {
            return Err(Error::PageNotMapped {
                index: i,
                gfn: self.gfns[i],
                errno: self.errors[i],
            });
        }
        Ok(())
    }

    /// Copy pages `[first, first + dst.len() / 4096)` into `dst`, whose length must be a
    /// whole number of pages.
    pub fn read_pages(&self, first: usize, dst: &mut [u8]) -> Result<(), Error> {
        const OP: &str = "foreign map read";
        if dst.len() & (XEN_PAGE_SIZE - 1) != 0 {
            return Err(Error::InvalidArgument {
                op: OP,
                what: "length is not a whole number of pages",
            });
        }
        self.check_pages(OP, first, dst.len() / XEN_PAGE_SIZE)?;
        // SAFETY: pages [first, first + n) lie inside our mapping and are all mapped (checked
        // above), so reading them cannot fault; `dst` is a distinct, exclusively borrowed
        // buffer of exactly that many bytes. The guest may write these frames concurrently,
        // which at worst yields a torn page, the documented contract of this type.
        unsafe {
            core::ptr::copy_nonoverlapping(
                self.ptr.as_ptr().add(first * XEN_PAGE_SIZE),
                dst.as_mut_ptr(),
                dst.len(),
            );
        }
        Ok(())
    }

    /// Copy `src` (a whole number of pages) into pages `[first, ...)`. Needs [`Prot::ReadWrite`].
    pub fn write_pages(&mut self, first: usize, src: &[u8]) -> Result<(), Error> {
        const OP: &str = "foreign map write";
        if self.prot != Prot::ReadWrite {
            return Err(Error::InvalidArgument {
                op: OP,
                what: "mapping is read-only",
            });
        }
        if src.len() & (XEN_PAGE_SIZE - 1) != 0 {
            return Err(Error::InvalidArgument {
                op: OP,
                what: "length is not a whole number of pages",
            });
        }
        self.check_pages(OP, first, src.len() / XEN_PAGE_SIZE)?;
        // SAFETY: pages [first, first + n) lie inside our writable mapping and are all mapped
        // (checked above), so writing them cannot fault; `src` is a distinct buffer of exactly
        // that many bytes; `&mut self` excludes concurrent copies through this map.
        unsafe {
            core::ptr::copy_nonoverlapping(
                src.as_ptr(),
                self.ptr.as_ptr().add(first * XEN_PAGE_SIZE),
                src.len(),
            );
        }
        Ok(())
    }
}

impl Drop for ForeignMap {
    fn drop(&mut self) {
        let len = self.gfns.len() * XEN_PAGE_SIZE;
        // SAFETY: `ptr`/`len` describe exactly the mapping created in `map` and owned by
        // `self`; no reference into it outlives `self` (only copies are handed out).
        let rc = unsafe { sys::munmap(self.ptr.as_ptr().cast::<c_void>(), len) };
        if rc != 0 {
            log::warn!(
                "munmap of foreign mapping failed: {}",
                XenError::last("munmap")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_on_a_non_privcmd_fd_fails_cleanly() {
        // /dev/null refuses mmap (ENODEV), which exercises the first error path.
        let p = match Privcmd::open_paths("/dev/null", None) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("skipping: {e}");
                return;
            }
        };
        let e = ForeignMap::map(&p, 1, &[0x1000], Prot::Read).expect_err("not privcmd");
        assert!(
            matches!(e, Error::Xen(XenError { op: OP_MMAP, .. })),
            "unexpected: {e}"
        );
        let e = ForeignMap::map(&p, 1, &[], Prot::Read).expect_err("empty");
        assert!(matches!(e, Error::InvalidArgument { .. }));
    }
}
