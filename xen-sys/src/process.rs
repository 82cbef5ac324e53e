//! What a daemon that serves a block device to its own kernel needs of it (DESIGN.md §2): a
//! dom0 whose guest's disk is served by hsb over the kernel's `nbd` driver must never wait for
//! memory that only that disk's writeback can free. So the daemon locks its memory (no page of
//! it is paged out, nothing it touches needs reclaim through its own device) and tells the
//! kernel it is an I/O flusher (its allocations do not recurse into filesystem or block I/O).
//!
//! And what a daemon handing its guest's disk to the daemon it execs needs (the standby's
//! hand-over to hsb-primary): the export's sockets stay open across the `exec`
//! ([`keep_across_exec`]) and the new program takes them as its own ([`take_inherited`]), so
//! the kernel's `nbd` connection, and with it the guest's disk, never closes.

use std::ffi::c_ulong;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

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

/// Let `fd` stay open across this process's next `exec` (`keep`: `FD_CLOEXEC` cleared), or
/// close with it again (`keep` false, as every descriptor std opens).
pub fn keep_across_exec(fd: BorrowedFd<'_>, keep: bool) -> Result<(), Error> {
    let raw = fd.as_raw_fd();
    let flags = fd_flags(raw)?;
    let flags = if keep {
        flags & !sys::FD_CLOEXEC
    } else {
        flags | sys::FD_CLOEXEC
    };
    set_fd_flags(raw, flags)
}

fn set_fd_flags(fd: RawFd, flags: i32) -> Result<(), Error> {
    // SAFETY: F_SETFD takes one int of flags and touches no memory; on a descriptor that is
    // not open it fails with EBADF, which is returned. (The callers hold the descriptor open:
    // borrowed, or just answered by F_GETFD and owned by nothing else in this process.)
    let r = unsafe { sys::fcntl(fd, sys::F_SETFD, flags) };
    if r != 0 {
        return Err(Error::Xen(XenError::new(
            "fcntl F_SETFD",
            sys::last_errno(),
        )));
    }
    Ok(())
}

fn fd_flags(fd: RawFd) -> Result<i32, Error> {
    // SAFETY: F_GETFD takes no further argument and touches no memory; on a descriptor that
    // is not open it fails with EBADF, which is returned.
    let flags = unsafe { sys::fcntl(fd, sys::F_GETFD) };
    if flags < 0 {
        return Err(Error::Xen(XenError::new(
            "fcntl F_GETFD",
            sys::last_errno(),
        )));
    }
    Ok(flags)
}

/// Take descriptor `fd`, a socket inherited across the `exec` that started this program (the
/// program before it kept it open with [`keep_across_exec`]), as this process's own. It is
/// marked close-on-exec again as it is taken.
///
/// Refused: standard input, output and error; a descriptor that is not open (`EBADF`); one
/// marked close-on-exec (`EBUSY`: every descriptor this process opens through std is, so it
/// is owned here already, and so is one taken before: no descriptor is taken twice); one that
/// is not a socket.
pub fn take_inherited(fd: RawFd) -> Result<OwnedFd, Error> {
    const OP: &str = "take an inherited descriptor";
    if fd <= 2 {
        return Err(Error::InvalidArgument {
            op: OP,
            what: "standard input, output and error are not handed over",
        });
    }
    let flags = fd_flags(fd)?;
    if flags & sys::FD_CLOEXEC != 0 {
        return Err(Error::Xen(XenError::new(OP, sys::errno::EBUSY)));
    }
    let socket = std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .is_ok_and(|t| t.to_string_lossy().starts_with("socket:"));
    if !socket {
        return Err(Error::InvalidArgument {
            op: OP,
            what: "the descriptor is not a socket",
        });
    }
    set_fd_flags(fd, flags | sys::FD_CLOEXEC)?;
    // SAFETY: `fd` is open and no handle in this process owns it: it came open across the
    // exec without close-on-exec, which every descriptor opened here has, and it has that mark
    // from now on, so a second call for the same number is refused above. The returned
    // OwnedFd is its only owner and closes it once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::errno;
    use std::os::fd::AsFd;

    /// A descriptor kept across exec is taken once; after that (or for any descriptor std
    /// opened, close-on-exec) the answer is EBUSY; stdio, closed numbers and files are refused.
    #[test]
    fn inherited_descriptors_are_taken_once() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().expect("a socket pair");
        let raw = a.as_raw_fd();
        let busy = take_inherited(raw).expect_err("std's socket is close-on-exec: owned");
        assert_eq!(busy.errno(), Some(errno::EBUSY), "{busy}");
        keep_across_exec(a.as_fd(), true).expect("clear FD_CLOEXEC");
        // As a program started by exec would see it: open, not close-on-exec. Taking it moves
        // ownership, so `a` must not close it too.
        let a = std::os::fd::OwnedFd::from(a);
        let raw_owned = a.as_raw_fd();
        std::mem::forget(a);
        let taken = take_inherited(raw_owned).expect("an inherited socket");
        assert_eq!(taken.as_raw_fd(), raw);
        let again = take_inherited(raw).expect_err("taken already");
        assert_eq!(again.errno(), Some(errno::EBUSY), "{again}");
        drop(taken);
        // (A number no descriptor has: the one just closed may be reused by another test.)
        let closed = take_inherited(1 << 20).expect_err("not open");
        assert_eq!(closed.errno(), Some(errno::EBADF), "{closed}");
        assert!(take_inherited(1).is_err(), "stdout");
        let f = std::fs::File::open("/proc/self/status").expect("a file");
        keep_across_exec(f.as_fd(), true).expect("clear FD_CLOEXEC");
        let e = take_inherited(f.as_raw_fd()).expect_err("not a socket");
        assert!(e.to_string().contains("not a socket"), "{e}");
        keep_across_exec(f.as_fd(), false).expect("set FD_CLOEXEC");
    }

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
