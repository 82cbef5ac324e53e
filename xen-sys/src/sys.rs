//! The handful of C library calls this crate needs, declared by hand (no `libc` crate).
//!
//! This module owns the `extern "C"` declarations and the Linux x86_64 constants that go with
//! them. The symbols come from the C library that std already links (glibc or musl). Values were
//! checked against `<sys/mman.h>` and `<fcntl.h>` on x86_64 Linux by compiling a probe.

use std::ffi::{c_int, c_ulong, c_void};

extern "C" {
    /// `int ioctl(int fd, unsigned long request, ...)`. musl declares `request` as `int`; on
    /// x86_64 both are passed in the same register and every request used here is < 2^31.
    pub fn ioctl(fd: c_int, request: c_ulong, ...) -> c_int;
    /// `void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t offset)`.
    pub fn mmap(
        addr: *mut c_void,
        len: usize,
        prot: c_int,
        flags: c_int,
        fd: c_int,
        offset: i64,
    ) -> *mut c_void;
    /// `int munmap(void *addr, size_t len)`.
    pub fn munmap(addr: *mut c_void, len: usize) -> c_int;
    /// `int madvise(void *addr, size_t len, int advice)`.
    pub fn madvise(addr: *mut c_void, len: usize, advice: c_int) -> c_int;
    /// `int mlock(const void *addr, size_t len)`.
    pub fn mlock(addr: *const c_void, len: usize) -> c_int;
    /// `int mlockall(int flags)`.
    pub fn mlockall(flags: c_int) -> c_int;
    /// `int prctl(int option, ...)`: always called here with four further `unsigned long`s.
    pub fn prctl(option: c_int, ...) -> c_int;
    /// `int socket(int domain, int type, int protocol)`.
    pub fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int;
    /// `ssize_t send(int fd, const void *buf, size_t len, int flags)`.
    pub fn send(fd: c_int, buf: *const c_void, len: usize, flags: c_int) -> isize;
    /// `ssize_t recv(int fd, void *buf, size_t len, int flags)`.
    pub fn recv(fd: c_int, buf: *mut c_void, len: usize, flags: c_int) -> isize;
    /// `int fcntl(int fd, int cmd, ...)`: called here with `F_GETFD` (no further argument) or
    /// `F_SETFD` (one `int`).
    pub fn fcntl(fd: c_int, cmd: c_int, ...) -> c_int;
}

/// `PROT_READ`.
pub const PROT_READ: c_int = 0x1;
/// `PROT_WRITE`.
pub const PROT_WRITE: c_int = 0x2;
/// `MAP_SHARED`.
pub const MAP_SHARED: c_int = 0x01;
/// `MAP_PRIVATE`.
pub const MAP_PRIVATE: c_int = 0x02;
/// `MAP_ANONYMOUS`.
pub const MAP_ANONYMOUS: c_int = 0x20;
/// `MAP_LOCKED`.
pub const MAP_LOCKED: c_int = 0x2000;
/// `MAP_FAILED`, i.e. `(void *)-1`.
pub const MAP_FAILED: *mut c_void = usize::MAX as *mut c_void;
/// `MADV_DONTFORK`.
pub const MADV_DONTFORK: c_int = 10;
/// `MCL_CURRENT`.
pub const MCL_CURRENT: c_int = 1;
/// `MCL_FUTURE`.
pub const MCL_FUTURE: c_int = 2;
/// `MCL_ONFAULT` (Linux 4.4).
pub const MCL_ONFAULT: c_int = 4;
/// `PR_SET_IO_FLUSHER` (Linux 5.6).
pub const PR_SET_IO_FLUSHER: c_int = 57;
/// `F_GETFD`.
pub const F_GETFD: c_int = 1;
/// `F_SETFD`.
pub const F_SETFD: c_int = 2;
/// `FD_CLOEXEC`.
pub const FD_CLOEXEC: c_int = 1;
/// `O_NONBLOCK`.
pub const O_NONBLOCK: c_int = 0o4000;

/// Linux errno values (x86_64; Xen's public `errno.h` uses the same numbers for these).
pub mod errno {
    /// Operation not permitted.
    pub const EPERM: i32 = 1;
    /// No such file or directory / paged-out frame.
    pub const ENOENT: i32 = 2;
    /// No such process (domain).
    pub const ESRCH: i32 = 3;
    /// Interrupted system call.
    pub const EINTR: i32 = 4;
    /// I/O error.
    pub const EIO: i32 = 5;
    /// Argument list too long.
    pub const E2BIG: i32 = 7;
    /// Bad file descriptor.
    pub const EBADF: i32 = 9;
    /// Try again.
    pub const EAGAIN: i32 = 11;
    /// Out of memory.
    pub const ENOMEM: i32 = 12;
    /// Permission denied (domctl: interface version mismatch, or XSM denial).
    pub const EACCES: i32 = 13;
    /// Bad address.
    pub const EFAULT: i32 = 14;
    /// Device or resource busy.
    pub const EBUSY: i32 = 16;
    /// File exists.
    pub const EEXIST: i32 = 17;
    /// No such device.
    pub const ENODEV: i32 = 19;
    /// Invalid argument.
    pub const EINVAL: i32 = 22;
    /// Not a typewriter (ioctl on the wrong kind of file).
    pub const ENOTTY: i32 = 25;
    /// No space left (buffer too small).
    pub const ENOSPC: i32 = 28;
    /// Result out of range.
    pub const ERANGE: i32 = 34;
    /// Function not implemented.
    pub const ENOSYS: i32 = 38;
    /// No data available.
    pub const ENODATA: i32 = 61;
    /// Operation not supported.
    pub const EOPNOTSUPP: i32 = 95;
    /// Timed out.
    pub const ETIMEDOUT: i32 = 110;
}

/// The errno of the last failed C library call on this thread.
pub fn last_errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(errno::EIO)
}
