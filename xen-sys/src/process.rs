//! What a daemon that serves a block device to its own kernel needs of it (DESIGN.md §2): a
//! dom0 whose guest's disk is served by hsb over the kernel's `nbd` driver must never wait for
//! memory that only that disk's writeback can free. So the daemon locks its memory (no page of
//! it is paged out, nothing it touches needs reclaim through its own device) and tells the
//! kernel it is an I/O flusher (its allocations do not recurse into filesystem or block I/O).

use std::ffi::c_ulong;

use crate::error::{Error, XenError};
use crate::sys;

/// Lock this process's pages in memory as they are touched, present and future (`mlockall`
/// with `MCL_ONFAULT`): what it uses is never paged out, and what it only reserved (staging
/// sized for a whole guest, mostly never touched) is not made resident: locking all of it at
/// once would take more than a small dom0 has (the rig's 512 MiB dom0 killed hsb-primary).
pub fn lock_memory() -> Result<(), Error> {
    // SAFETY: mlockall takes flags only and touches no memory of ours; the flags are valid.
    let r = unsafe { sys::mlockall(sys::MCL_CURRENT | sys::MCL_FUTURE | sys::MCL_ONFAULT) };
    if r != 0 {
        return Err(Error::Xen(XenError::new("mlockall", sys::last_errno())));
    }
    Ok(())
}

/// Mark this process an I/O flusher (`prctl(PR_SET_IO_FLUSHER, 1)`, Linux 5.6, needs
/// `CAP_SYS_RESOURCE`): its memory allocations do not wait on filesystem or block I/O.
pub fn set_io_flusher() -> Result<(), Error> {
    let (on, unused): (c_ulong, c_ulong) = (1, 0);
    // SAFETY: PR_SET_IO_FLUSHER reads its first argument as a flag; the other three must be
    // zero. No memory is passed.
    let r = unsafe { sys::prctl(sys::PR_SET_IO_FLUSHER, on, unused, unused, unused) };
    if r != 0 {
        return Err(Error::Xen(XenError::new(
            "prctl PR_SET_IO_FLUSHER",
            sys::last_errno(),
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Setting the flag works as root (CAP_SYS_RESOURCE) and fails cleanly with EPERM
    /// otherwise; an old kernel says EINVAL. Either way: an error value, never a crash.
    #[test]
    fn io_flusher_answers() {
        match set_io_flusher() {
            Ok(()) => {}
            Err(e) => assert!(
                matches!(
                    e.errno(),
                    Some(sys::errno::EPERM) | Some(sys::errno::EINVAL)
                ),
                "{e}"
            ),
        }
    }
}
