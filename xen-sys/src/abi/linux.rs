//! The Linux dom0 devices' ioctl arguments: `privcmd` (hypercalls, foreign mappings) and
//! `evtchn` (event channels).

use core::mem::{offset_of, size_of};

use super::DomId;

// ---------------------------------------------------------------------------------------------
// Linux privcmd (include/uapi/xen/privcmd.h)
// ---------------------------------------------------------------------------------------------

/// `struct privcmd_hypercall`: argument of `IOCTL_PRIVCMD_HYPERCALL`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrivcmdHypercall {
    /// Hypercall number.
    pub op: u64,
    /// Up to five arguments, passed in registers.
    pub arg: [u64; 5],
}
const _: () = assert!(size_of::<PrivcmdHypercall>() == 48);
const _: () = assert!(offset_of!(PrivcmdHypercall, arg) == 8);

/// `struct privcmd_mmapbatch_v2`: argument of `IOCTL_PRIVCMD_MMAPBATCH_V2`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrivcmdMmapbatchV2 {
    /// Number of pages to map.
    pub num: u32,
    /// Domain that owns the frames.
    pub dom: DomId,
    /// Explicit padding.
    pub _pad: u16,
    /// Start of the privcmd mapping (user virtual address).
    pub addr: u64,
    /// User address of `num` gfns (`xen_pfn_t`, u64).
    pub arr: u64,
    /// User address of `num` `i32` per-page error codes (0 or `-errno`).
    pub err: u64,
}
const _: () = assert!(size_of::<PrivcmdMmapbatchV2>() == 32);
const _: () = assert!(offset_of!(PrivcmdMmapbatchV2, dom) == 4);
const _: () = assert!(offset_of!(PrivcmdMmapbatchV2, addr) == 8);
const _: () = assert!(offset_of!(PrivcmdMmapbatchV2, arr) == 16);
const _: () = assert!(offset_of!(PrivcmdMmapbatchV2, err) == 24);

// ---------------------------------------------------------------------------------------------
// Linux evtchn device (include/uapi/xen/evtchn.h)
// ---------------------------------------------------------------------------------------------

/// `struct ioctl_evtchn_bind_interdomain`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnBindInterdomain {
    /// Remote domain id.
    pub remote_domain: u32,
    /// Port in the remote domain.
    pub remote_port: u32,
}
const _: () = assert!(size_of::<EvtchnBindInterdomain>() == 8);

/// `struct ioctl_evtchn_bind_unbound_port`: a new port that `remote_domain` may bind to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnBindUnbound {
    /// The domain allowed to bind to the new port.
    pub remote_domain: u32,
}
const _: () = assert!(size_of::<EvtchnBindUnbound>() == 4);

/// `struct ioctl_evtchn_notify` and `struct ioctl_evtchn_unbind` (both a single port).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnPort {
    /// Local port.
    pub port: u32,
}
const _: () = assert!(size_of::<EvtchnPort>() == 4);
