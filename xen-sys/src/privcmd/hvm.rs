//! HVM state through [`Privcmd`]: the HVM context (get and set, `XEN_DOMCTL_*hvmcontext`) and
//! HVM parameters (`HVMOP_get_param`, `HVMOP_set_param`).

use super::Privcmd;
use crate::abi::{domctl, hvmop, hypercall, DomId, DomctlHvmContext, DomctlPayload, XenHvmParam};
use crate::buffer::HypercallBuf;
use crate::error::Error;

impl Privcmd {
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
}
