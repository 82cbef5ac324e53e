//! The `/dev/xen/privcmd` handle and the typed hypercall wrappers hsb needs.
//!
//! This module owns [`Privcmd`]: opening the device (and `/dev/xen/hypercall` for buffers),
//! issuing hypercalls through `IOCTL_PRIVCMD_HYPERCALL`, detecting the domctl interface version
//! at run time, and one safe method per operation (pause, log-dirty, HVM context, TSC info,
//! p2m size, populate, HVM params, cooperative-resume helpers). Every argument Xen reads or
//! writes lives in a [`HypercallBuf`]: small fixed structs in a one-page scratch buffer owned by
//! the handle, bulk data (bitmaps, contexts) in buffers the caller allocates once and reuses.

use crate::abi::{
    domctl, hvmop, hypercall, schedop, shadow, vcpu_context, xenmem, xenver, DomId,
    DomctlGetDomainInfo, DomctlHvmContext, DomctlPayload, DomctlShadowOp, DomctlTscInfo,
    DomctlVcpuContext, PrivcmdHypercall, SchedRemoteShutdown, XenDomctl, XenHvmParam,
    XenMemoryDomain, XenMemoryReservation, XEN_PAGE_SIZE,
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

/// A log-dirty (`XEN_DOMCTL_shadow_op`) operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShadowOp {
    /// `SHADOW_OP_OFF`: stop log-dirty tracking.
    Off,
    /// `SHADOW_OP_ENABLE_LOGDIRTY`: start log-dirty tracking.
    EnableLogDirty,
    /// `SHADOW_OP_CLEAN`: copy the dirty bitmap out and clear it.
    Clean {
        /// Set `LOGDIRTY_FINAL`: also report pages Xen has mapped writable (last round).
        final_round: bool,
    },
    /// `SHADOW_OP_PEEK`: copy the dirty bitmap out without clearing it.
    Peek {
        /// Set `LOGDIRTY_FINAL`.
        final_round: bool,
    },
}

/// What a shadow operation reports back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShadowStats {
    /// Number of pages (bits) the bitmap covers after the call: the smaller of the request and
    /// the domain's p2m size.
    pub pages: u64,
    /// Log-dirty faults since the last clean.
    pub fault_count: u32,
    /// Pages dirtied since the last clean.
    pub dirty_count: u32,
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

    /// Pause `domid` (`XEN_DOMCTL_pausedomain`; nests, like Xen's pause count).
    pub fn pause(&mut self, domid: DomId) -> Result<(), Error> {
        self.domctl_plain(domctl::PAUSEDOMAIN, domid, DomctlPayload::default())
            .map(drop)
    }

    /// Unpause `domid` (`XEN_DOMCTL_unpausedomain`).
    pub fn unpause(&mut self, domid: DomId) -> Result<(), Error> {
        self.domctl_plain(domctl::UNPAUSEDOMAIN, domid, DomctlPayload::default())
            .map(drop)
    }

    /// Resume a domain that shut down with `SHUTDOWN_suspend` (`XEN_DOMCTL_resumedomain`)
    /// without touching its registers; see [`Privcmd::resume_cooperative`].
    pub fn resume(&mut self, domid: DomId) -> Result<(), Error> {
        self.domctl_plain(domctl::RESUMEDOMAIN, domid, DomctlPayload::default())
            .map(drop)
    }

    /// Resume a guest that suspended cooperatively, telling it the suspend was cancelled
    /// (its `SCHEDOP_shutdown(suspend)` returns 1, so it keeps its event channels, grants and
    /// PV devices). Mirrors `xc_domain_resume_cooperative` (`tools/libs/guest/xg_resume.c`
    /// @RELEASE-4.17.0) for HVM/PVH guests, whose registers have the host's 64-bit width:
    ///
    /// 1. the domain must have shut down with `SHUTDOWN_suspend` (else `EINVAL`);
    /// 2. if it has PV drivers (`HVM_PARAM_CALLBACK_IRQ` non-zero), vCPU0's `rax` is set to 1;
    /// 3. `XEN_DOMCTL_resumedomain`.
    ///
    /// PV guests are not supported (their register width must be probed); `EOPNOTSUPP`.
    pub fn resume_cooperative(&mut self, domid: DomId) -> Result<(), Error> {
        const OP: &str = "resume_cooperative";
        let info = self.getdomaininfo(domid)?;
        if !info.is_suspended() {
            return Err(XenError::new(OP, errno::EINVAL).into());
        }
        if !info.is_hvm() {
            return Err(XenError::new(OP, errno::EOPNOTSUPP).into());
        }
        if self.hvm_get_param(domid, crate::abi::hvm_param::CALLBACK_IRQ)? != 0 {
            let mut ctxt = match self.vcpu_buf.take() {
                Some(buf) => buf,
                None => self.alloc_buf(vcpu_context::SIZE)?,
            };
            let result = self
                .get_vcpu_context(domid, 0, &mut ctxt)
                .and_then(|()| ctxt.write_pod(vcpu_context::RAX_OFFSET, &1u64))
                .and_then(|()| self.set_vcpu_context(domid, 0, &ctxt));
            self.vcpu_buf = Some(ctxt);
            result?;
        }
        self.resume(domid)
    }

    /// Information about `domid` (`XEN_DOMCTL_getdomaininfo`).
    ///
    /// Xen 4.17 answers with the next existing domain when `domid` does not exist; that case
    /// is reported as `ESRCH` here, as newer Xen does.
    pub fn getdomaininfo(&mut self, domid: DomId) -> Result<DomctlGetDomainInfo, Error> {
        let out = self.domctl_plain(domctl::GETDOMAININFO, domid, DomctlPayload::default())?;
        let info: DomctlGetDomainInfo = out.u.get();
        if out.domain != domid || info.domain != domid {
            return Err(XenError::new(domctl::name(domctl::GETDOMAININFO), errno::ESRCH).into());
        }
        Ok(info)
    }

    /// Run a log-dirty operation. For `Clean` and `Peek`, `bitmap` receives one bit per page
    /// for the first `pages` pages (it must hold `pages.div_ceil(8)` bytes); with `None`, Xen
    /// only updates (or, for `Clean`, clears) its state and returns the statistics.
    pub fn shadow_op(
        &mut self,
        domid: DomId,
        op: ShadowOp,
        bitmap: Option<&mut HypercallBuf>,
        pages: u64,
    ) -> Result<ShadowStats, Error> {
        const OP: &str = "domctl shadow_op";
        let (op_code, mode) = match op {
            ShadowOp::Off => (shadow::OP_OFF, 0),
            ShadowOp::EnableLogDirty => (shadow::OP_ENABLE_LOGDIRTY, 0),
            ShadowOp::Clean { final_round } => (
                shadow::OP_CLEAN,
                if final_round {
                    shadow::LOGDIRTY_FINAL
                } else {
                    0
                },
            ),
            ShadowOp::Peek { final_round } => (
                shadow::OP_PEEK,
                if final_round {
                    shadow::LOGDIRTY_FINAL
                } else {
                    0
                },
            ),
        };
        let takes_bitmap = matches!(op, ShadowOp::Clean { .. } | ShadowOp::Peek { .. });
        let (dirty_bitmap, pages) = match bitmap {
            Some(_) if !takes_bitmap => {
                return Err(Error::InvalidArgument {
                    op: OP,
                    what: "only CLEAN and PEEK take a bitmap",
                })
            }
            Some(buf) => {
                let needed =
                    usize::try_from(pages.div_ceil(8)).map_err(|_| Error::InvalidArgument {
                        op: OP,
                        what: "page count too large",
                    })?;
                if needed > buf.len() {
                    return Err(Error::BufferTooSmall {
                        op: OP,
                        needed,
                        have: buf.len(),
                    });
                }
                (buf.addr(), pages)
            }
            None => (0, 0),
        };
        let arg = DomctlShadowOp {
            op: op_code,
            mode,
            dirty_bitmap,
            pages,
            ..Default::default()
        };
        // SAFETY: the only guest handle is `dirty_bitmap`: 0, or the address of `bitmap`, a
        // HypercallBuf exclusively borrowed for this call and checked above to hold the
        // ceil(pages / 8) bytes Xen writes at most.
        let out = unsafe { self.domctl(domctl::SHADOW_OP, domid, DomctlPayload::new(&arg)) }?;
        let res: DomctlShadowOp = out.u.get();
        Ok(ShadowStats {
            pages: res.pages,
            fault_count: res.stats.fault_count,
            dirty_count: res.stats.dirty_count,
        })
    }

    /// Start log-dirty tracking. If Xen refuses (for example because a previous run left it
    /// enabled), turn it off and try once more, as libxc's `enable_logdirty` does.
    pub fn logdirty_enable(&mut self, domid: DomId) -> Result<(), Error> {
        match self.shadow_op(domid, ShadowOp::EnableLogDirty, None, 0) {
            Ok(_) => Ok(()),
            Err(Error::Xen(first)) => {
                log::info!("{first}; turning log-dirty off and retrying");
                self.shadow_op(domid, ShadowOp::Off, None, 0)?;
                self.shadow_op(domid, ShadowOp::EnableLogDirty, None, 0)
                    .map(drop)
            }
            Err(e) => Err(e),
        }
    }

    /// Stop log-dirty tracking.
    pub fn logdirty_off(&mut self, domid: DomId) -> Result<(), Error> {
        self.shadow_op(domid, ShadowOp::Off, None, 0).map(drop)
    }

    /// Read and clear the dirty bitmap of the first `pages` pages into `bitmap`.
    pub fn logdirty_clean(
        &mut self,
        domid: DomId,
        bitmap: &mut HypercallBuf,
        pages: u64,
        final_round: bool,
    ) -> Result<ShadowStats, Error> {
        self.shadow_op(domid, ShadowOp::Clean { final_round }, Some(bitmap), pages)
    }

    /// Read the dirty bitmap of the first `pages` pages into `bitmap` without clearing it.
    pub fn logdirty_peek(
        &mut self,
        domid: DomId,
        bitmap: &mut HypercallBuf,
        pages: u64,
        final_round: bool,
    ) -> Result<ShadowStats, Error> {
        self.shadow_op(domid, ShadowOp::Peek { final_round }, Some(bitmap), pages)
    }

    /// The buffer size `get_hvm_context` needs for `domid` (gethvmcontext with a null buffer).
    pub fn hvm_context_size(&mut self, domid: DomId) -> Result<usize, Error> {
        let arg = DomctlHvmContext::default();
        // SAFETY: the buffer handle is 0 (size query); Xen writes only the scratch domctl.
        let out = unsafe { self.domctl(domctl::GETHVMCONTEXT, domid, DomctlPayload::new(&arg)) }?;
        Ok(out.u.get::<DomctlHvmContext>().size as usize)
    }

    /// Fetch the HVM context of `domid` into `buf`; returns the number of bytes filled.
    /// `buf` must be at least [`Privcmd::hvm_context_size`] bytes (Xen answers `ENOSPC`
    /// otherwise). Parse the result with [`crate::hvm_context::parse_hvm_context`].
    pub fn get_hvm_context(
        &mut self,
        domid: DomId,
        buf: &mut HypercallBuf,
    ) -> Result<usize, Error> {
        let size = u32::try_from(buf.len()).unwrap_or(u32::MAX);
        let arg = DomctlHvmContext {
            size,
            buffer: buf.addr(),
            ..Default::default()
        };
        // SAFETY: the only guest handle is `buf`, exclusively borrowed for the call; Xen
        // writes at most `size` <= buf.len() bytes to it.
        let out = unsafe { self.domctl(domctl::GETHVMCONTEXT, domid, DomctlPayload::new(&arg)) }?;
        let filled = out.u.get::<DomctlHvmContext>().size as usize;
        if filled > buf.len() {
            return Err(Error::BufferTooSmall {
                op: domctl::name(domctl::GETHVMCONTEXT),
                needed: filled,
                have: buf.len(),
            });
        }
        Ok(filled)
    }

    /// Fetch the HVM context of `domid` into a new vector (allocates; prefer
    /// [`Privcmd::get_hvm_context`] with a reused buffer in the pause window).
    pub fn hvm_context(&mut self, domid: DomId) -> Result<Vec<u8>, Error> {
        let size = self.hvm_context_size(domid)?;
        let mut buf = self.alloc_buf(size.max(1))?;
        let filled = self.get_hvm_context(domid, &mut buf)?;
        Ok(buf.as_slice()[..filled].to_vec())
    }

    /// Load the first `len` bytes of `buf` as the HVM context of `domid`
    /// (`XEN_DOMCTL_sethvmcontext`; Xen pauses the domain around the load).
    pub fn set_hvm_context(
        &mut self,
        domid: DomId,
        buf: &HypercallBuf,
        len: usize,
    ) -> Result<(), Error> {
        const OP: &str = "domctl sethvmcontext";
        if len > buf.len() {
            return Err(Error::BufferTooSmall {
                op: OP,
                needed: len,
                have: buf.len(),
            });
        }
        let size = u32::try_from(len).map_err(|_| Error::InvalidArgument {
            op: OP,
            what: "context larger than 4 GiB",
        })?;
        let arg = DomctlHvmContext {
            size,
            buffer: buf.addr(),
            ..Default::default()
        };
        // SAFETY: the only guest handle is `buf`, borrowed for the call and holding at least
        // `size` bytes, which Xen only reads.
        unsafe { self.domctl(domctl::SETHVMCONTEXT, domid, DomctlPayload::new(&arg)) }.map(drop)
    }

    /// Load `context` as the HVM context of `domid`, copying it into a temporary buffer.
    pub fn set_hvm_context_bytes(&mut self, domid: DomId, context: &[u8]) -> Result<(), Error> {
        let mut buf = self.alloc_buf(context.len().max(1))?;
        buf.as_mut_slice()[..context.len()].copy_from_slice(context);
        self.set_hvm_context(domid, &buf, context.len())
    }

    /// Read vCPU `vcpu`'s `vcpu_guest_context` into `buf` (at least
    /// [`vcpu_context::SIZE`] bytes). Xen answers `ENODATA` for a vCPU never brought up.
    pub fn get_vcpu_context(
        &mut self,
        domid: DomId,
        vcpu: u32,
        buf: &mut HypercallBuf,
    ) -> Result<(), Error> {
        check_vcpu_buf("domctl getvcpucontext", buf)?;
        let arg = DomctlVcpuContext {
            vcpu,
            ctxt: buf.addr(),
            ..Default::default()
        };
        // SAFETY: the only guest handle is `buf`, exclusively borrowed and checked to hold a
        // whole vcpu_guest_context, which is all Xen writes.
        unsafe { self.domctl(domctl::GETVCPUCONTEXT, domid, DomctlPayload::new(&arg)) }.map(drop)
    }

    /// Write vCPU `vcpu`'s `vcpu_guest_context` from `buf`.
    pub fn set_vcpu_context(
        &mut self,
        domid: DomId,
        vcpu: u32,
        buf: &HypercallBuf,
    ) -> Result<(), Error> {
        check_vcpu_buf("domctl setvcpucontext", buf)?;
        let arg = DomctlVcpuContext {
            vcpu,
            ctxt: buf.addr(),
            ..Default::default()
        };
        // SAFETY: the only guest handle is `buf`, borrowed and checked to hold a whole
        // vcpu_guest_context, which Xen only reads.
        unsafe { self.domctl(domctl::SETVCPUCONTEXT, domid, DomctlPayload::new(&arg)) }.map(drop)
    }

    /// The TSC configuration of `domid` (`XEN_DOMCTL_gettscinfo`).
    pub fn get_tsc_info(&mut self, domid: DomId) -> Result<DomctlTscInfo, Error> {
        let out = self.domctl_plain(domctl::GETTSCINFO, domid, DomctlPayload::default())?;
        Ok(out.u.get())
    }

    /// Set the TSC configuration of `domid` (`XEN_DOMCTL_settscinfo`).
    pub fn set_tsc_info(&mut self, domid: DomId, info: &DomctlTscInfo) -> Result<(), Error> {
        self.domctl_plain(domctl::SETTSCINFO, domid, DomctlPayload::new(info))
            .map(drop)
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

    /// The highest guest frame number of `domid` (`XENMEM_maximum_gpfn`); the p2m size is
    /// this plus one.
    pub fn maximum_gpfn(&mut self, domid: DomId) -> Result<u64, Error> {
        let arg = XenMemoryDomain { domid };
        let (rc, _) = self.op_with_arg(
            "memory_op maximum_gpfn",
            hypercall::MEMORY_OP,
            xenmem::MAXIMUM_GPFN,
            &arg,
        )?;
        Ok(rc as u64)
    }

    /// Allocate memory for each of `gfns` in `domid` (`XENMEM_populate_physmap`, order 0).
    /// Returns [`Error::Partial`] if Xen populated only some of them.
    pub fn populate_physmap(&mut self, domid: DomId, gfns: &[u64]) -> Result<(), Error> {
        const OP: &str = "memory_op populate_physmap";
        if gfns.is_empty() {
            return Ok(());
        }
        let bytes = gfns.len().checked_mul(8).ok_or(Error::InvalidArgument {
            op: OP,
            what: "too many gfns",
        })?;
        let mut list = self.alloc_buf(bytes)?;
        for (dst, gfn) in list.as_mut_slice().chunks_exact_mut(8).zip(gfns) {
            dst.copy_from_slice(&gfn.to_ne_bytes());
        }
        let arg = XenMemoryReservation {
            extent_start: list.addr(),
            nr_extents: gfns.len() as u64,
            extent_order: 0,
            mem_flags: 0,
            domid,
            _pad: [0; 3],
        };
        // `list` (the extent_start handle target) stays alive until after the call.
        let (rc, _) = self.op_with_arg(OP, hypercall::MEMORY_OP, xenmem::POPULATE_PHYSMAP, &arg)?;
        drop(list);
        let done = rc as u64;
        if done < gfns.len() as u64 {
            return Err(Error::Partial {
                op: OP,
                done,
                requested: gfns.len() as u64,
            });
        }
        Ok(())
    }

    /// Read HVM parameter `index` (`HVMOP_get_param`; see [`crate::abi::hvm_param`]).
    pub fn hvm_get_param(&mut self, domid: DomId, index: u32) -> Result<u64, Error> {
        let arg = XenHvmParam {
            domid,
            index,
            ..Default::default()
        };
        let (_, out) = self.op_with_arg(
            "hvm_op get_param",
            hypercall::HVM_OP,
            hvmop::GET_PARAM,
            &arg,
        )?;
        Ok(out.value)
    }

    /// Write HVM parameter `index` (`HVMOP_set_param`).
    pub fn hvm_set_param(&mut self, domid: DomId, index: u32, value: u64) -> Result<(), Error> {
        let arg = XenHvmParam {
            domid,
            index,
            value,
            ..Default::default()
        };
        self.op_with_arg(
            "hvm_op set_param",
            hypercall::HVM_OP,
            hvmop::SET_PARAM,
            &arg,
        )
        .map(drop)
    }

    /// Ask Xen to shut `domid` down with `reason` (`SCHEDOP_remote_shutdown`); with
    /// `SHUTDOWN_suspend` this is how libxl suspends an HVM guest without PV drivers.
    pub fn remote_shutdown(&mut self, domid: DomId, reason: u8) -> Result<(), Error> {
        let arg = SchedRemoteShutdown {
            domain_id: domid,
            _pad: 0,
            reason: u32::from(reason),
        };
        self.op_with_arg(
            "sched_op remote_shutdown",
            hypercall::SCHED_OP,
            schedop::REMOTE_SHUTDOWN,
            &arg,
        )
        .map(drop)
    }
}

fn check_vcpu_buf(op: &'static str, buf: &HypercallBuf) -> Result<(), Error> {
    if buf.len() < vcpu_context::SIZE {
        return Err(Error::BufferTooSmall {
            op,
            needed: vcpu_context::SIZE,
            have: buf.len(),
        });
    }
    Ok(())
}

#[cfg(test)]
#[path = "privcmd_tests.rs"]
mod tests;
