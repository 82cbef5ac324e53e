//! The Xen and Linux-privcmd binary interface: `#[repr(C)]` structs and constants.
//!
//! This module owns every layout and number that must match the hypervisor or the dom0 kernel
//! bit for bit. Nothing here performs I/O. Each struct mirrors one C struct, names its source,
//! and carries compile-time assertions of its size and of the offsets of its fields.
//!
//! Sources (x86_64): `xen/include/public/{xen,domctl,memory,sched,version}.h`,
//! `hvm/{hvm_op,params,save}.h` and `arch-x86/{xen,hvm/save}.h` in `xen-project/xen` at tag
//! `RELEASE-4.17.0`; the structs used here are unchanged up to `RELEASE-4.21.0` and `master`
//! (interface version 0x18). Linux `include/uapi/xen/{privcmd,evtchn}.h`.
//!
//! Every struct has explicit padding fields, so no byte of it is ever uninitialised; this is what
//! makes the [`Pod`] byte copies in this crate sound.

/// Size of a Xen page (and of a Linux x86_64 page), in bytes.
pub const XEN_PAGE_SIZE: usize = 4096;
/// log2 of [`XEN_PAGE_SIZE`].
pub const XEN_PAGE_SHIFT: u32 = 12;

/// A Xen domain id (`domid_t`, 16 bits).
pub type DomId = u16;

/// Domain ids at or above this value are reserved (`DOMID_FIRST_RESERVED`).
pub const DOMID_FIRST_RESERVED: DomId = 0x7FF0;
/// "The calling domain" (`DOMID_SELF`).
pub const DOMID_SELF: DomId = 0x7FF0;
/// Owner of pages with unknown owner (`DOMID_INVALID`).
pub const DOMID_INVALID: DomId = 0x7FF4;

mod sealed {
    pub trait Sealed {}
}

/// Plain old data: a `#[repr(C)]` struct of integers (or arrays of them) with no implicit
/// padding, for which every bit pattern is a valid value.
///
/// # Safety
///
/// Implementors must have no implicit padding bytes and no field with invalid bit patterns
/// (no `bool`, enum, reference or pointer). The crate copies these values to and from raw
/// bytes. The trait is sealed: only this module implements it.
pub unsafe trait Pod: Copy + sealed::Sealed {}

macro_rules! pod {
    ($($t:ty),* $(,)?) => {$(
        impl sealed::Sealed for $t {}
        // SAFETY: every type listed is a `#[repr(C)]` struct or primitive of integer fields with
        // explicit padding, checked by the size and offset assertions next to its definition.
        unsafe impl Pod for $t {}
    )*};
}

/// Hypercall numbers (`__HYPERVISOR_*`, `xen.h`).
pub mod hypercall {
    /// `__HYPERVISOR_memory_op`.
    pub const MEMORY_OP: u64 = 12;
    /// `__HYPERVISOR_xen_version`.
    pub const XEN_VERSION: u64 = 17;
    /// `__HYPERVISOR_sched_op`.
    pub const SCHED_OP: u64 = 29;
    /// `__HYPERVISOR_event_channel_op`.
    pub const EVENT_CHANNEL_OP: u64 = 32;
    /// `__HYPERVISOR_hvm_op`.
    pub const HVM_OP: u64 = 34;
    /// `__HYPERVISOR_sysctl`.
    pub const SYSCTL: u64 = 35;
    /// `__HYPERVISOR_domctl`.
    pub const DOMCTL: u64 = 36;

    /// The name of a hypercall, for error messages.
    pub const fn name(op: u64) -> &'static str {
        match op {
            MEMORY_OP => "memory_op",
            XEN_VERSION => "xen_version",
            SCHED_OP => "sched_op",
            EVENT_CHANNEL_OP => "event_channel_op",
            HVM_OP => "hvm_op",
            SYSCTL => "sysctl",
            DOMCTL => "domctl",
            _ => "hypercall",
        }
    }
}

/// `XENVER_*` sub-operations of the `xen_version` hypercall (`version.h`).
pub mod xenver {
    /// `XENVER_version`: no argument; returns `major << 16 | minor`.
    pub const VERSION: u64 = 0;
}

mod domain;
mod hvm;
mod linux;
mod memory;
mod sched;

pub use domain::{
    domctl, dominf, shadow, vcpu_context, DomctlGetDomainInfo, DomctlHvmContext, DomctlPayload,
    DomctlShadowOp, DomctlShadowOpStats, DomctlTscInfo, DomctlVcpuContext, XenArchDomainConfig,
    XenDomctl,
};
pub use hvm::{hvm_param, hvmop, HvmSaveDescriptor, XenHvmParam};
pub use linux::{
    EvtchnBindInterdomain, EvtchnBindUnbound, EvtchnPort, PrivcmdHypercall, PrivcmdMmapbatchV2,
};
pub use memory::{xenmem, XenMemoryDomain, XenMemoryReservation};
pub use sched::{schedop, shutdown, SchedRemoteShutdown};

pod!(
    u8,
    u16,
    u32,
    u64,
    PrivcmdHypercall,
    PrivcmdMmapbatchV2,
    EvtchnBindInterdomain,
    EvtchnPort,
    DomctlPayload,
    XenDomctl,
    XenArchDomainConfig,
    DomctlGetDomainInfo,
    DomctlShadowOpStats,
    DomctlShadowOp,
    DomctlHvmContext,
    DomctlVcpuContext,
    DomctlTscInfo,
    XenMemoryDomain,
    XenMemoryReservation,
    XenHvmParam,
    SchedRemoteShutdown,
    HvmSaveDescriptor,
);

#[cfg(test)]
#[path = "abi_tests.rs"]
mod tests;
