//! `memory_op`: its sub-operations and their arguments (the p2m size, populating frames).

use core::mem::{offset_of, size_of};

use super::DomId;

/// `XENMEM_*` sub-operations of `memory_op` (`memory.h`).
pub mod xenmem {
    /// `XENMEM_increase_reservation`.
    pub const INCREASE_RESERVATION: u64 = 0;
    /// `XENMEM_decrease_reservation`.
    pub const DECREASE_RESERVATION: u64 = 1;
    /// `XENMEM_populate_physmap`; argument `xen_memory_reservation`.
    pub const POPULATE_PHYSMAP: u64 = 6;
    /// `XENMEM_maximum_gpfn`; argument `xen_memory_domain`, returns the highest gpfn.
    pub const MAXIMUM_GPFN: u64 = 14;
}

/// `struct xen_memory_domain` (`XENMEM_maximum_gpfn` and friends).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenMemoryDomain {
    /// Domain queried.
    pub domid: DomId,
}
const _: () = assert!(size_of::<XenMemoryDomain>() == 2);

/// `struct xen_memory_reservation` (x86_64: handle and `xen_ulong_t` are 8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenMemoryReservation {
    /// Guest handle (user address) of `nr_extents` gfns (`xen_pfn_t`).
    pub extent_start: u64,
    /// Number of extents.
    pub nr_extents: u64,
    /// Each extent is `2^extent_order` pages.
    pub extent_order: u32,
    /// `XENMEMF_*` flags.
    pub mem_flags: u32,
    /// Target domain.
    pub domid: DomId,
    /// Explicit tail padding.
    pub _pad: [u16; 3],
}
const _: () = assert!(size_of::<XenMemoryReservation>() == 32);
const _: () = assert!(offset_of!(XenMemoryReservation, nr_extents) == 8);
const _: () = assert!(offset_of!(XenMemoryReservation, extent_order) == 16);
const _: () = assert!(offset_of!(XenMemoryReservation, mem_flags) == 20);
const _: () = assert!(offset_of!(XenMemoryReservation, domid) == 24);
