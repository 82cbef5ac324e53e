//! Typed errors of this crate.
//!
//! This module owns [`XenError`] (one failed hypercall, ioctl or system call, with the errno it
//! returned) and [`Error`] (everything a caller of the safe API can see). Display names the
//! operation and the errno symbolically, because "domctl shadow_op failed: EACCES" is what an
//! operator needs to read in a log.

use crate::hvm_context::HvmContextError;
use crate::sys::errno;
use core::fmt;

/// A hypercall, ioctl or system call that returned an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XenError {
    /// What was attempted, for example `"domctl pausedomain"` or `"mmap /dev/xen/hypercall"`.
    pub op: &'static str,
    /// The positive errno.
    pub errno: i32,
}

impl XenError {
    /// A new error for `op` with a positive `errno`.
    pub const fn new(op: &'static str, errno: i32) -> Self {
        Self { op, errno }
    }

    /// The error for `op` from the calling thread's errno.
    pub fn last(op: &'static str) -> Self {
        Self::new(op, crate::sys::last_errno())
    }

    /// The symbolic name of the errno (`"EACCES"`), if it is a common one.
    pub fn errno_name(&self) -> Option<&'static str> {
        errno_name(self.errno)
    }
}

/// The symbolic name of a common Linux/Xen errno.
pub fn errno_name(e: i32) -> Option<&'static str> {
    Some(match e {
        errno::EPERM => "EPERM",
        errno::ENOENT => "ENOENT",
        errno::ESRCH => "ESRCH",
        errno::EINTR => "EINTR",
        errno::EIO => "EIO",
        errno::E2BIG => "E2BIG",
        errno::EBADF => "EBADF",
        errno::EAGAIN => "EAGAIN",
        errno::ENOMEM => "ENOMEM",
        errno::EACCES => "EACCES",
        errno::EFAULT => "EFAULT",
        errno::EBUSY => "EBUSY",
        errno::EEXIST => "EEXIST",
        errno::ENODEV => "ENODEV",
        errno::EINVAL => "EINVAL",
        errno::ENOTTY => "ENOTTY",
        errno::ENOSPC => "ENOSPC",
        errno::ERANGE => "ERANGE",
        errno::ENOSYS => "ENOSYS",
        errno::ENODATA => "ENODATA",
        errno::EOPNOTSUPP => "EOPNOTSUPP",
        errno::ETIMEDOUT => "ETIMEDOUT",
        _ => return None,
    })
}

impl fmt::Display for XenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = std::io::Error::from_raw_os_error(self.errno);
        match self.errno_name() {
            Some(name) => write!(f, "{} failed: {name} ({text})", self.op)?,
            None => write!(f, "{} failed: errno {} ({text})", self.op, self.errno)?,
        }
        if self.errno == errno::EACCES && self.op.starts_with("domctl") {
            f.write_str(" [domctl interface version mismatch, or denied by XSM]")?;
        }
        Ok(())
    }
}

impl std::error::Error for XenError {}

/// Everything the safe API of this crate can fail with.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A Xen device node is missing: this machine is not a Xen dom0 (or xenfs/privcmd is not
    /// loaded).
    NotXen {
        /// The missing device, for example `/dev/xen/privcmd`.
        path: &'static str,
    },
    /// A hypercall, ioctl or system call failed.
    Xen(XenError),
    /// No domctl interface version known to this crate was accepted (all returned `EACCES`).
    NoDomctlVersion {
        /// The hypervisor version, if `xen_version` answered.
        xen: Option<(u16, u16)>,
    },
    /// A caller-supplied buffer is smaller than the operation needs.
    BufferTooSmall {
        /// The operation.
        op: &'static str,
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        have: usize,
    },
    /// A caller-supplied argument is out of range.
    InvalidArgument {
        /// The operation.
        op: &'static str,
        /// What is wrong.
        what: &'static str,
    },
    /// Xen did only part of a batch operation.
    Partial {
        /// The operation.
        op: &'static str,
        /// Items done.
        done: u64,
        /// Items requested.
        requested: u64,
    },
    /// A foreign page could not be mapped; accessing it would fault.
    PageNotMapped {
        /// Index of the page in its [`crate::ForeignMap`].
        index: usize,
        /// The guest frame.
        gfn: u64,
        /// The positive errno the kernel reported for it.
        errno: i32,
    },
    /// An HVM context blob is malformed.
    HvmContext(HvmContextError),
}

impl From<XenError> for Error {
    fn from(e: XenError) -> Self {
        Error::Xen(e)
    }
}

impl From<HvmContextError> for Error {
    fn from(e: HvmContextError) -> Self {
        Error::HvmContext(e)
    }
}

impl Error {
    /// The errno, if this error carries one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Xen(e) => Some(e.errno),
            Error::PageNotMapped { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotXen { path } => write!(f, "not a Xen dom0: {path} not found"),
            Error::Xen(e) => e.fmt(f),
            Error::NoDomctlVersion { xen } => {
                f.write_str("no domctl interface version in 0x15..=0x18 was accepted")?;
                if let Some((major, minor)) = xen {
                    write!(f, " by Xen {major}.{minor}")?;
                }
                f.write_str(" (unsupported Xen release, or XSM denies getdomaininfo)")
            }
            Error::BufferTooSmall { op, needed, have } => {
                write!(
                    f,
                    "{op}: buffer too small: need {needed} bytes, have {have}"
                )
            }
            Error::InvalidArgument { op, what } => write!(f, "{op}: invalid argument: {what}"),
            Error::Partial {
                op,
                done,
                requested,
            } => write!(f, "{op}: only {done} of {requested} done"),
            Error::PageNotMapped { index, gfn, errno } => {
                let name = errno_name(*errno).unwrap_or("error");
                write!(
                    f,
                    "foreign page {index} (gfn {gfn:#x}) is not mapped: {name} ({errno})"
                )
            }
            Error::HvmContext(e) => write!(f, "bad HVM context: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Xen(e) => Some(e),
            Error::HvmContext(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xen_error_display_names_op_and_errno() {
        let e = XenError::new("domctl pausedomain", errno::ESRCH);
        let s = e.to_string();
        assert!(s.starts_with("domctl pausedomain failed: ESRCH ("), "{s}");
        assert!(s.contains("No such process"), "{s}");

        let e = XenError::new("domctl shadow_op", errno::EACCES);
        assert!(e.to_string().contains("interface version mismatch"));

        let e = XenError::new("ioctl PRIVCMD_HYPERCALL", 200);
        assert!(e.to_string().contains("errno 200"), "{e}");
        assert_eq!(e.errno_name(), None);
    }

    #[test]
    fn error_display() {
        assert_eq!(
            Error::NotXen {
                path: "/dev/xen/privcmd"
            }
            .to_string(),
            "not a Xen dom0: /dev/xen/privcmd not found"
        );
        let e = Error::NoDomctlVersion { xen: Some((4, 16)) };
        assert!(e.to_string().contains("by Xen 4.16"), "{e}");
        let e = Error::BufferTooSmall {
            op: "domctl shadow_op",
            needed: 16,
            have: 8,
        };
        assert_eq!(
            e.to_string(),
            "domctl shadow_op: buffer too small: need 16 bytes, have 8"
        );
        let e = Error::PageNotMapped {
            index: 3,
            gfn: 0x1000,
            errno: errno::EINVAL,
        };
        assert_eq!(
            e.to_string(),
            "foreign page 3 (gfn 0x1000) is not mapped: EINVAL (22)"
        );
        assert_eq!(e.errno(), Some(errno::EINVAL));
        let e: Error = XenError::new("memory_op maximum_gpfn", errno::EPERM).into();
        assert!(e
            .to_string()
            .starts_with("memory_op maximum_gpfn failed: EPERM"));
    }
}
