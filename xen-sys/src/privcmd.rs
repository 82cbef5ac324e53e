//! The `/dev/xen/privcmd` handle and the typed hypercall wrappers hsb needs.
//!
//! This module owns [`Privcmd`]: opening the device (and `/dev/xen/hypercall` for buffers),
//! issuing hypercalls through `IOCTL_PRIVCMD_HYPERCALL`, detecting the domctl interface version
//! at run time, and one safe method per operation (pause, log-dirty, HVM context, TSC info,
//! p2m size, populate, HVM params, cooperative-resume helpers). Every argument Xen reads or
//! writes lives in a [`HypercallBuf`]: small fixed structs in a one-page scratch buffer owned by
//! the handle, bulk data (bitmaps, contexts) in buffers the caller allocates once and reuses.

use crate::abi::{
    domctl, hypercall, xenver, DomId, DomctlPayload, PrivcmdHypercall, XenDomctl, XEN_PAGE_SIZE,
};
use crate::buffer::HypercallBuf;
use crate::error::{Error, XenError};
use crate::ioctl::IOCTL_PRIVCMD_HYPERCALL;
use crate::sys::{self, errno};
use core::fmt;
use std::ffi::c_ulong;
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::fd::{AsRawFd, RawFd};

mod domain;
mod hvm;
mod logdirty;
mod memory;

pub use logdirty::{ShadowOp, ShadowStats};

/// The privcmd device.
pub const PRIVCMD_PATH: &str = "/dev/xen/privcmd";
/// The Linux privcmd-buf device (hypercall buffers that never fault; Linux >= 4.18).
pub const HYPERCALL_DEV_PATH: &str = "/dev/xen/hypercall";

/// A hypervisor version as reported by `XENVER_version`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct XenVersion {
    /// Major version (4 for Xen 4.17).
    pub major: u16,
    /// Minor version (17 for Xen 4.17).
    pub minor: u16,
}

impl XenVersion {
    /// Decode the `major << 16 | minor` return value of `XENVER_version`.
    pub fn from_raw(raw: u32) -> Self {
        Self {
            major: (raw >> 16) as u16,
            minor: (raw & 0xffff) as u16,
        }
    }
}

impl fmt::Display for XenVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// An open `/dev/xen/privcmd`, with the hypercall-buffer source and the detected domctl
/// interface version.
#[derive(Debug)]
pub struct Privcmd {
    fd: File,
    bufdev: Option<File>,
    scratch: HypercallBuf,
    /// A `vcpu_guest_context` buffer for `resume_cooperative`, allocated on first use.
    vcpu_buf: Option<HypercallBuf>,
    domctl_version: Option<u32>,
}

impl Privcmd {
    /// Open `/dev/xen/privcmd` (and `/dev/xen/hypercall` if present).
    ///
    /// Returns [`Error::NotXen`] when the privcmd device does not exist.
    pub fn open() -> Result<Self, Error> {
        Self::open_paths(PRIVCMD_PATH, Some(HYPERCALL_DEV_PATH))
    }

    /// Open the given device paths instead of the standard ones (tests, unusual layouts).
    /// With `hypercall_dev` `None` or missing, buffers come from locked anonymous memory.
    pub fn open_paths(
        privcmd: &'static str,
        hypercall_dev: Option<&'static str>,
    ) -> Result<Self, Error> {
        let fd = match OpenOptions::new().read(true).write(true).open(privcmd) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(Error::NotXen { path: privcmd })
            }
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(errno::EIO);
                return Err(XenError::new("open privcmd device", errno).into());
            }
        };
        let bufdev = hypercall_dev.and_then(|path| {
            match OpenOptions::new().read(true).write(true).open(path) {
                Ok(f) => Some(f),
                Err(e) => {
                    log::info!("{path} unavailable ({e}); using locked anonymous buffers");
                    None
                }
            }
        });
        let scratch = match &bufdev {
            Some(dev) => HypercallBuf::from_device(dev, XEN_PAGE_SIZE)?,
            None => HypercallBuf::anonymous(XEN_PAGE_SIZE)?,
        };
        Ok(Self {
            fd,
            bufdev,
            scratch,
            vcpu_buf: None,
            domctl_version: None,
        })
    }

    /// A hypercall buffer of at least `len` bytes, from `/dev/xen/hypercall` when available.
    pub fn alloc_buf(&self, len: usize) -> Result<HypercallBuf, Error> {
        match &self.bufdev {
            Some(dev) => HypercallBuf::from_device(dev, len),
            None => HypercallBuf::anonymous(len),
        }
    }

    /// Whether buffers come from `/dev/xen/hypercall`.
    pub fn has_hypercall_device(&self) -> bool {
        self.bufdev.is_some()
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Issue a hypercall and name it `name` in errors.
    ///
    /// # Safety
    ///
    /// As for [`Privcmd::hypercall`].
    unsafe fn raw_hypercall(
        &self,
        name: &'static str,
        op: u64,
        args: [u64; 5],
    ) -> Result<i64, XenError> {
        let mut call = PrivcmdHypercall { op, arg: args };
        // SAFETY: the ioctl reads exactly one `privcmd_hypercall` (48 B) from `call`, a live
        // local. What Xen does with `args` is the caller's obligation (see `# Safety`).
        let rc = unsafe {
            sys::ioctl(
                self.fd.as_raw_fd(),
                IOCTL_PRIVCMD_HYPERCALL as c_ulong,
                &mut call as *mut PrivcmdHypercall,
            )
        };
        if rc < 0 {
            Err(XenError::last(name))
        } else {
            Ok(i64::from(rc))
        }
    }

    /// Issue hypercall `op` with `args` and return its (non-negative) result.
    ///
    /// The C library's `ioctl` returns an `int`, so results above `i32::MAX` are not
    /// representable; no hypercall used by hsb returns such values.
    ///
    /// # Safety
    ///
    /// Xen interprets `args` according to `op`. Every argument it treats as an address must
    /// point into a [`HypercallBuf`] that stays alive, is large enough for what Xen reads or
    /// writes there, and is not accessed by anything else for the duration of the call. The
    /// operation itself must not break this process's memory safety (for example by changing
    /// dom0's own page tables).
    pub unsafe fn hypercall(&self, op: u64, args: [u64; 5]) -> Result<i64, XenError> {
        // SAFETY: forwarded to the caller.
        unsafe { self.raw_hypercall(hypercall::name(op), op, args) }
    }

    /// The hypervisor version (`xen_version` hypercall, `XENVER_version`).
    pub fn xen_version(&self) -> Result<XenVersion, Error> {
        // SAFETY: XENVER_version takes no argument buffer (arg NULL).
        let rc = unsafe {
            self.raw_hypercall(
                "xen_version",
                hypercall::XEN_VERSION,
                [xenver::VERSION, 0, 0, 0, 0],
            )
        }?;
        Ok(XenVersion::from_raw(rc as u32))
    }

    /// Force the domctl interface version instead of detecting it.
    pub fn set_domctl_interface_version(&mut self, version: u32) {
        self.domctl_version = Some(version);
    }

    /// The domctl interface version this hypervisor accepts, detected once and cached.
    ///
    /// The version expected for the running Xen release is tried first, then every version in
    /// [`domctl::INTERFACE_VERSIONS`], each with a harmless `getdomaininfo` of domain 0. Xen
    /// checks the version before anything else and answers `EACCES` on a mismatch; the first
    /// version that succeeds is kept. Any other error is returned as is and nothing is cached.
    pub fn domctl_interface_version(&mut self) -> Result<u32, Error> {
        if let Some(v) = self.domctl_version {
            return Ok(v);
        }
        let xen = self.xen_version().ok();
        let hint = xen.and_then(|v| domctl::interface_version_for(v.major, v.minor));
        let candidates = hint.into_iter().chain(
            domctl::INTERFACE_VERSIONS
                .into_iter()
                .filter(move |&v| Some(v) != hint),
        );
        for version in candidates {
            // SAFETY: a getdomaininfo payload contains no guest handles.
            let r = unsafe {
                self.domctl_with(version, domctl::GETDOMAININFO, 0, DomctlPayload::default())
            };
            match r {
                Ok(_) => {
                    log::info!(
                        "domctl interface version {version:#x} (Xen {})",
                        xen.map_or_else(|| "?".to_string(), |v| v.to_string())
                    );
                    self.domctl_version = Some(version);
                    return Ok(version);
                }
                Err(Error::Xen(e)) if e.errno == errno::EACCES => {
                    log::debug!("domctl interface version {version:#x} refused");
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::NoDomctlVersion {
            xen: xen.map(|v| (v.major, v.minor)),
        })
    }

    /// One domctl with an explicit interface version; returns the struct Xen wrote back.
    ///
    /// # Safety
    ///
    /// Every guest handle inside `payload` must be 0 or point into a [`HypercallBuf`] that is
    /// alive, large enough for what command `cmd` reads or writes there, and not otherwise
    /// accessed during the call.
    unsafe fn domctl_with(
        &mut self,
        version: u32,
        cmd: u32,
        domid: DomId,
        payload: DomctlPayload,
    ) -> Result<XenDomctl, Error> {
        let request = XenDomctl {
            cmd,
            interface_version: version,
            domain: domid,
            _pad: [0; 3],
            u: payload,
        };
        self.scratch.write_pod(0, &request)?;
        // SAFETY: the only argument is the address of `scratch`, a HypercallBuf owned by
        // `self` (resident, at least one page) holding a complete 144-byte xen_domctl, which
        // Xen reads and writes back in place. Handles inside the payload are the caller's
        // obligation.
        unsafe {
            self.raw_hypercall(
                domctl::name(cmd),
                hypercall::DOMCTL,
                [self.scratch.addr(), 0, 0, 0, 0],
            )
        }?;
        self.scratch.read_pod(0)
    }

    /// Issue domctl `cmd` for `domid` with the detected interface version and return the
    /// `xen_domctl` Xen wrote back (for commands this crate does not wrap).
    ///
    /// # Safety
    ///
    /// As for the raw hypercall: every guest handle inside `payload` must be 0 or point into a
    /// [`HypercallBuf`] that is alive, large enough for what `cmd` reads or writes there, and
    /// not otherwise accessed during the call; `cmd` must not break this process's memory
    /// safety.
    pub unsafe fn domctl(
        &mut self,
        cmd: u32,
        domid: DomId,
        payload: DomctlPayload,
    ) -> Result<XenDomctl, Error> {
        let version = self.domctl_interface_version()?;
        // SAFETY: forwarded to the caller.
        unsafe { self.domctl_with(version, cmd, domid, payload) }
    }

    /// A domctl whose payload has no guest handles.
    fn domctl_plain(
        &mut self,
        cmd: u32,
        domid: DomId,
        payload: DomctlPayload,
    ) -> Result<XenDomctl, Error> {
        // SAFETY: callers pass only payloads without guest handles (none, getdomaininfo,
        // tsc_info), so Xen touches no memory but the scratch xen_domctl.
        unsafe { self.domctl(cmd, domid, payload) }
    }

    /// Issue `memory_op` / `hvm_op` / `sched_op` sub-command `cmd` with one small argument
    /// struct placed in the scratch buffer; returns the hypercall result and the struct as Xen
    /// left it.
    fn op_with_arg<T: crate::abi::Pod>(
        &mut self,
        name: &'static str,
        op: u64,
        cmd: u64,
        arg: &T,
    ) -> Result<(i64, T), Error> {
        self.scratch.write_pod(0, arg)?;
        // SAFETY: the argument is the address of `scratch`, a HypercallBuf owned by `self`
        // holding the whole `T`. Callers use this only for argument structs whose guest
        // handles (if any) point into HypercallBufs they keep alive for the call.
        let rc = unsafe { self.raw_hypercall(name, op, [cmd, self.scratch.addr(), 0, 0, 0]) }?;
        Ok((rc, self.scratch.read_pod(0)?))
    }
}

#[cfg(test)]
#[path = "privcmd_tests.rs"]
mod tests;
