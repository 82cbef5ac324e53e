//! Hypercall buffers: memory Xen may read and write during a hypercall without faulting.
//!
//! This module owns [`HypercallBuf`]. Xen copies hypercall arguments straight from and to dom0
//! user memory, so every such buffer must stay resident and must not be copy-on-write. Like
//! libxencall (`tools/libs/call/linux.c` @RELEASE-4.17.0), buffers come from the Linux
//! `privcmd-buf` device `/dev/xen/hypercall` (`MAP_SHARED`) when it exists, and otherwise from an
//! anonymous `MAP_PRIVATE | MAP_ANONYMOUS | MAP_LOCKED` mapping with `MADV_DONTFORK`, every page
//! touched. The fallback also calls `mlock` as a check that the pages really are locked; when
//! `RLIMIT_MEMLOCK` forbids that (not root), allocation fails with a typed error rather than
//! handing out memory that could fault mid-hypercall.

use crate::abi::{Pod, XEN_PAGE_SIZE};
use crate::error::{Error, XenError};
use crate::sys;
use core::ptr::NonNull;
use std::ffi::c_void;
use std::fs::File;
use std::os::fd::AsRawFd;

/// Where a [`HypercallBuf`]'s pages come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufSource {
    /// The `/dev/xen/hypercall` device: kernel pages that never fault.
    Device,
    /// Anonymous, `MAP_LOCKED`, `MADV_DONTFORK` memory.
    Anonymous,
}

/// A page-aligned, page-granular buffer that is safe to hand to Xen.
///
/// Its address ([`HypercallBuf::addr`]) is what goes into guest handles. The buffer is unmapped
/// on drop.
#[derive(Debug)]
pub struct HypercallBuf {
    ptr: NonNull<u8>,
    len: usize,
    source: BufSource,
}

// SAFETY: the buffer exclusively owns its mapping; nothing else in this process aliases it, so
// moving it to another thread is sound.
unsafe impl Send for HypercallBuf {}
// SAFETY: `&HypercallBuf` only allows reads. Xen writes to it only during a hypercall, and every
// hypercall wrapper in this crate that lets Xen write takes `&mut HypercallBuf`.
unsafe impl Sync for HypercallBuf {}

/// `len` rounded up to whole pages, or `None` on zero or overflow.
fn page_round(len: usize) -> Option<usize> {
    if len == 0 {
        return None;
    }
    len.checked_add(XEN_PAGE_SIZE - 1)
        .map(|l| l & !(XEN_PAGE_SIZE - 1))
}

impl HypercallBuf {
    /// A buffer of at least `len` bytes from the `/dev/xen/hypercall` device `dev`.
    pub(crate) fn from_device(dev: &File, len: usize) -> Result<Self, Error> {
        const OP: &str = "mmap /dev/xen/hypercall";
        let len = page_round(len).ok_or(Error::InvalidArgument {
            op: OP,
            what: "zero or overflowing length",
        })?;
        // SAFETY: a fresh mapping (addr NULL) of `len` bytes of the device; it does not touch
        // existing memory. The result is checked against MAP_FAILED below.
        let p = unsafe {
            sys::mmap(
                core::ptr::null_mut(),
                len,
                sys::PROT_READ | sys::PROT_WRITE,
                sys::MAP_SHARED,
                dev.as_raw_fd(),
                0,
            )
        };
        if p == sys::MAP_FAILED {
            return Err(XenError::last(OP).into());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or(XenError::new(OP, sys::errno::ENOMEM))?;
        Ok(Self {
            ptr,
            len,
            source: BufSource::Device,
        })
    }

    /// A buffer of at least `len` bytes of locked anonymous memory (the fallback when
    /// `/dev/xen/hypercall` is absent). Fails with `EAGAIN`/`ENOMEM`/`EPERM` when the
    /// `RLIMIT_MEMLOCK` of an unprivileged process does not allow `len` more locked bytes.
    pub fn anonymous(len: usize) -> Result<Self, Error> {
        const OP: &str = "mmap MAP_LOCKED hypercall buffer";
        let len = page_round(len).ok_or(Error::InvalidArgument {
            op: OP,
            what: "zero or overflowing length",
        })?;
        // SAFETY: a fresh anonymous mapping (addr NULL, fd -1); it does not touch existing
        // memory. The result is checked against MAP_FAILED below.
        let p = unsafe {
            sys::mmap(
                core::ptr::null_mut(),
                len,
                sys::PROT_READ | sys::PROT_WRITE,
                sys::MAP_PRIVATE | sys::MAP_ANONYMOUS | sys::MAP_LOCKED,
                -1,
                0,
            )
        };
        if p == sys::MAP_FAILED {
            return Err(XenError::last(OP).into());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or(XenError::new(OP, sys::errno::ENOMEM))?;
        // From here on, Drop unmaps on every error path.
        let mut buf = Self {
            ptr,
            len,
            source: BufSource::Anonymous,
        };
        // SAFETY: [p, p+len) is the mapping created above, owned by `buf`.
        if unsafe { sys::madvise(p, len, sys::MADV_DONTFORK) } != 0 {
            return Err(XenError::last("madvise MADV_DONTFORK hypercall buffer").into());
        }
        // Touch every page so none is still shared with a parent after a racing fork (the
        // madvise above stops later forks from sharing it again).
        for page in buf.as_mut_slice().chunks_mut(XEN_PAGE_SIZE) {
            page[0] = 0;
        }
        // SAFETY: [p, p+len) is our mapping; mlock only changes its residency.
        if unsafe { sys::mlock(p.cast_const(), len) } != 0 {
            return Err(XenError::last("mlock hypercall buffer").into());
        }
        Ok(buf)
    }

    /// Length in bytes (a whole number of pages, never 0).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always `false`: a buffer has at least one page. Present for API symmetry.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where the pages come from.
    pub fn source(&self) -> BufSource {
        self.source
    }

    /// The user virtual address, as Xen expects it in a guest handle.
    pub fn addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    /// The contents.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` is a live mapping of `len` readable bytes owned by `self`, initialised
        // (zero-filled by the kernel, then only written through this type); the shared borrow
        // of `self` rules out writes through `as_mut_slice` and hypercalls that write it.
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The contents, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and the exclusive borrow of `self` makes this the only
        // reference into the mapping.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Fill the buffer with zeros.
    pub fn clear(&mut self) {
        self.as_mut_slice().fill(0);
    }

    /// Copy `value` into the buffer at byte `offset`.
    pub fn write_pod<T: Pod>(&mut self, offset: usize, value: &T) -> Result<(), Error> {
        let end = offset.checked_add(core::mem::size_of::<T>());
        let dst = match end {
            Some(end) if end <= self.len => &mut self.as_mut_slice()[offset..end],
            _ => {
                return Err(Error::BufferTooSmall {
                    op: "hypercall buffer write",
                    needed: end.unwrap_or(usize::MAX),
                    have: self.len,
                })
            }
        };
        // SAFETY: `T: Pod` has no padding, so all its bytes are initialised; `dst` has exactly
        // size_of::<T>() bytes and is a different object from `value`.
        unsafe {
            core::ptr::copy_nonoverlapping(
                (value as *const T).cast::<u8>(),
                dst.as_mut_ptr(),
                dst.len(),
            );
        }
        Ok(())
    }

    /// Read a `T` from byte `offset` of the buffer.
    pub fn read_pod<T: Pod>(&self, offset: usize) -> Result<T, Error> {
        let end = offset.checked_add(core::mem::size_of::<T>());
        let src = match end {
            Some(end) if end <= self.len => &self.as_slice()[offset..end],
            _ => {
                return Err(Error::BufferTooSmall {
                    op: "hypercall buffer read",
                    needed: end.unwrap_or(usize::MAX),
                    have: self.len,
                })
            }
        };
        // SAFETY: `src` holds size_of::<T>() initialised bytes; `read_unaligned` needs no
        // alignment; every bit pattern is a valid `T` because `T: Pod`.
        Ok(unsafe { core::ptr::read_unaligned(src.as_ptr().cast::<T>()) })
    }
}

impl Drop for HypercallBuf {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe exactly the mapping this value created and owns; no
        // reference into it can outlive `self`.
        let rc = unsafe { sys::munmap(self.ptr.as_ptr().cast::<c_void>(), self.len) };
        if rc != 0 {
            log::warn!(
                "munmap of hypercall buffer failed: {}",
                XenError::last("munmap")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::DomctlTscInfo;
    use crate::sys::errno;

    /// Locked-memory allocations may be refused by RLIMIT_MEMLOCK in a sandbox.
    fn is_memlock_refusal(e: &Error) -> bool {
        matches!(
            e.errno(),
            Some(errno::EAGAIN | errno::ENOMEM | errno::EPERM)
        )
    }

    #[test]
    fn page_rounding() {
        assert_eq!(page_round(0), None);
        assert_eq!(page_round(1), Some(4096));
        assert_eq!(page_round(4096), Some(4096));
        assert_eq!(page_round(4097), Some(8192));
        assert_eq!(page_round(usize::MAX), None);
    }

    #[test]
    fn anonymous_buffer_allocates_locks_and_frees() {
        let mut buf = match HypercallBuf::anonymous(3 * XEN_PAGE_SIZE + 1) {
            Ok(b) => b,
            Err(e) if is_memlock_refusal(&e) => {
                eprintln!("skipping: locked memory refused here: {e}");
                return;
            }
            Err(e) => panic!("unexpected error: {e}"),
        };
        assert_eq!(buf.len(), 4 * XEN_PAGE_SIZE);
        assert!(!buf.is_empty());
        assert_eq!(buf.source(), BufSource::Anonymous);
        assert_eq!(buf.addr() % XEN_PAGE_SIZE as u64, 0);
        assert!(buf.as_slice().iter().all(|&b| b == 0));
        assert!(vm_locked_kib() >= 16, "the 4 pages are counted in VmLck");

        let tsc = DomctlTscInfo {
            tsc_mode: 2,
            gtsc_khz: 2_000_000,
            incarnation: 7,
            elapsed_nsec: 123,
            ..Default::default()
        };
        buf.write_pod(100, &tsc).expect("in bounds");
        assert_eq!(buf.read_pod::<DomctlTscInfo>(100).expect("in bounds"), tsc);
        assert_eq!(&buf.as_slice()[100..104], &2u32.to_le_bytes());
        // Out of bounds is an error, not a panic.
        assert!(matches!(
            buf.write_pod(buf.len() - 4, &tsc),
            Err(Error::BufferTooSmall { .. })
        ));
        assert!(buf.read_pod::<u64>(usize::MAX).is_err());
        buf.clear();
        assert!(buf.as_slice().iter().all(|&b| b == 0));
        drop(buf);
    }

    #[test]
    fn zero_length_is_rejected() {
        assert!(matches!(
            HypercallBuf::anonymous(0),
            Err(Error::InvalidArgument { .. })
        ));
    }

    #[test]
    fn over_memlock_limit_is_a_typed_error() {
        // Ask for more than the soft RLIMIT_MEMLOCK; an unprivileged process must get a typed
        // error (root has CAP_IPC_LOCK and may legitimately succeed).
        let Some(limit) = memlock_soft_limit() else {
            eprintln!("skipping: RLIMIT_MEMLOCK is unlimited");
            return;
        };
        if limit > 256 << 20 {
            eprintln!("skipping: RLIMIT_MEMLOCK too large to exceed cheaply");
            return;
        }
        match HypercallBuf::anonymous(limit as usize + XEN_PAGE_SIZE) {
            Ok(_) => eprintln!("note: allocation above RLIMIT_MEMLOCK succeeded (privileged)"),
            Err(e) => assert!(is_memlock_refusal(&e), "unexpected error: {e}"),
        }
    }

    /// `VmLck` of this process in KiB (0 if unreadable).
    fn vm_locked_kib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmLck:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|n| n.parse().ok())
            })
            .unwrap_or(0)
    }

    /// The soft RLIMIT_MEMLOCK in bytes, `None` if unlimited or unreadable.
    fn memlock_soft_limit() -> Option<u64> {
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max locked memory"))?;
        line.split_whitespace().nth(3)?.parse().ok()
    }
}
