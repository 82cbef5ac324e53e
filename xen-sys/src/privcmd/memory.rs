//! Guest memory through [`Privcmd`] (`memory_op`): the p2m size and populating frames.

use super::Privcmd;
use crate::abi::{hypercall, xenmem, DomId, XenMemoryDomain, XenMemoryReservation};
use crate::error::Error;

impl Privcmd {
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
}
