//! Domain control through [`Privcmd`]: pause, unpause and resume (plain and cooperative),
//! domain info, vCPU contexts, TSC info, and remote shutdown.

use super::Privcmd;
use crate::abi::{
    domctl, hypercall, schedop, vcpu_context, DomId, DomctlGetDomainInfo, DomctlPayload,
    DomctlTscInfo, DomctlVcpuContext, SchedRemoteShutdown,
};
use crate::buffer::HypercallBuf;
use crate::error::{Error, XenError};
use crate::sys::errno;

impl Privcmd {
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
