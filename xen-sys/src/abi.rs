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

use core::mem::{align_of, offset_of, size_of};

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

/// `XEN_DOMCTL_*` commands (`domctl.h`) and the interface versions hsb knows.
pub mod domctl {
    /// `XEN_DOMCTL_pausedomain`.
    pub const PAUSEDOMAIN: u32 = 3;
    /// `XEN_DOMCTL_unpausedomain`.
    pub const UNPAUSEDOMAIN: u32 = 4;
    /// `XEN_DOMCTL_getdomaininfo`.
    pub const GETDOMAININFO: u32 = 5;
    /// `XEN_DOMCTL_shadow_op`.
    pub const SHADOW_OP: u32 = 10;
    /// `XEN_DOMCTL_setvcpucontext`.
    pub const SETVCPUCONTEXT: u32 = 12;
    /// `XEN_DOMCTL_getvcpucontext`.
    pub const GETVCPUCONTEXT: u32 = 13;
    /// `XEN_DOMCTL_resumedomain`.
    pub const RESUMEDOMAIN: u32 = 27;
    /// `XEN_DOMCTL_gethvmcontext`.
    pub const GETHVMCONTEXT: u32 = 33;
    /// `XEN_DOMCTL_sethvmcontext`.
    pub const SETHVMCONTEXT: u32 = 34;
    /// `XEN_DOMCTL_gettscinfo`.
    pub const GETTSCINFO: u32 = 59;
    /// `XEN_DOMCTL_settscinfo`.
    pub const SETTSCINFO: u32 = 60;
    /// `XEN_DOMCTL_get_cpu_policy`.
    pub const GET_CPU_POLICY: u32 = 82;
    /// `XEN_DOMCTL_set_cpu_policy`.
    pub const SET_CPU_POLICY: u32 = 83;

    /// `XEN_DOMCTL_INTERFACE_VERSION` of Xen 4.17.
    pub const INTERFACE_VERSION_4_17: u32 = 0x15;
    /// `XEN_DOMCTL_INTERFACE_VERSION` of Xen 4.18.
    pub const INTERFACE_VERSION_4_18: u32 = 0x16;
    /// `XEN_DOMCTL_INTERFACE_VERSION` of Xen 4.19, 4.20 and 4.21.
    pub const INTERFACE_VERSION_4_19: u32 = 0x17;
    /// `XEN_DOMCTL_INTERFACE_VERSION` of Xen `master` after 4.21 (expected in 4.22).
    pub const INTERFACE_VERSION_4_22: u32 = 0x18;
    /// Every version whose layouts this crate mirrors, oldest first.
    pub const INTERFACE_VERSIONS: [u32; 4] = [
        INTERFACE_VERSION_4_17,
        INTERFACE_VERSION_4_18,
        INTERFACE_VERSION_4_19,
        INTERFACE_VERSION_4_22,
    ];

    /// The interface version a Xen release is expected to use, if hsb knows the release.
    pub const fn interface_version_for(major: u16, minor: u16) -> Option<u32> {
        match (major, minor) {
            (4, 17) => Some(INTERFACE_VERSION_4_17),
            (4, 18) => Some(INTERFACE_VERSION_4_18),
            (4, 19..=21) => Some(INTERFACE_VERSION_4_19),
            (4, 22) => Some(INTERFACE_VERSION_4_22),
            _ => None,
        }
    }

    /// The name of a domctl command, for error messages (`"domctl pausedomain"`).
    pub const fn name(cmd: u32) -> &'static str {
        match cmd {
            PAUSEDOMAIN => "domctl pausedomain",
            UNPAUSEDOMAIN => "domctl unpausedomain",
            GETDOMAININFO => "domctl getdomaininfo",
            SHADOW_OP => "domctl shadow_op",
            SETVCPUCONTEXT => "domctl setvcpucontext",
            GETVCPUCONTEXT => "domctl getvcpucontext",
            RESUMEDOMAIN => "domctl resumedomain",
            GETHVMCONTEXT => "domctl gethvmcontext",
            SETHVMCONTEXT => "domctl sethvmcontext",
            GETTSCINFO => "domctl gettscinfo",
            SETTSCINFO => "domctl settscinfo",
            GET_CPU_POLICY => "domctl get_cpu_policy",
            SET_CPU_POLICY => "domctl set_cpu_policy",
            _ => "domctl",
        }
    }
}

/// `XEN_DOMCTL_SHADOW_*` operations and mode flags (`domctl.h`).
pub mod shadow {
    /// `XEN_DOMCTL_SHADOW_OP_OFF`: disable shadow / log-dirty mode.
    pub const OP_OFF: u32 = 0;
    /// `XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY`: start log-dirty tracking.
    pub const OP_ENABLE_LOGDIRTY: u32 = 2;
    /// `XEN_DOMCTL_SHADOW_OP_CLEAN`: return the dirty bitmap and clear it.
    pub const OP_CLEAN: u32 = 11;
    /// `XEN_DOMCTL_SHADOW_OP_PEEK`: return the dirty bitmap without clearing it.
    pub const OP_PEEK: u32 = 12;
    /// `XEN_DOMCTL_SHADOW_OP_ENABLE` (mode holds `ENABLE_*` flags).
    pub const OP_ENABLE: u32 = 32;
    /// `XEN_DOMCTL_SHADOW_ENABLE_LOG_DIRTY` mode flag for [`OP_ENABLE`].
    pub const ENABLE_LOG_DIRTY: u32 = 1 << 2;
    /// `XEN_DOMCTL_SHADOW_LOGDIRTY_FINAL` mode flag for CLEAN/PEEK: also report pages the
    /// hypervisor currently has mapped writable (the last round of a checkpoint).
    pub const LOGDIRTY_FINAL: u32 = 1 << 0;
}

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

/// `HVMOP_*` sub-operations of `hvm_op` (`hvm/hvm_op.h`).
pub mod hvmop {
    /// `HVMOP_set_param`; argument `xen_hvm_param`.
    pub const SET_PARAM: u64 = 0;
    /// `HVMOP_get_param`; argument `xen_hvm_param`.
    pub const GET_PARAM: u64 = 1;
}

/// `HVM_PARAM_*` indices (`hvm/params.h`) that a checkpoint reads or writes.
pub mod hvm_param {
    /// `HVM_PARAM_CALLBACK_IRQ`: non-zero when the guest has PV drivers (event-channel upcall).
    pub const CALLBACK_IRQ: u32 = 0;
    /// `HVM_PARAM_STORE_PFN`.
    pub const STORE_PFN: u32 = 1;
    /// `HVM_PARAM_STORE_EVTCHN` (set by the restore side, never copied).
    pub const STORE_EVTCHN: u32 = 2;
    /// `HVM_PARAM_IOREQ_PFN`.
    pub const IOREQ_PFN: u32 = 5;
    /// `HVM_PARAM_BUFIOREQ_PFN`.
    pub const BUFIOREQ_PFN: u32 = 6;
    /// `HVM_PARAM_VIRIDIAN`.
    pub const VIRIDIAN: u32 = 9;
    /// `HVM_PARAM_TIMER_MODE`.
    pub const TIMER_MODE: u32 = 10;
    /// `HVM_PARAM_HPET_ENABLED`.
    pub const HPET_ENABLED: u32 = 11;
    /// `HVM_PARAM_IDENT_PT`.
    pub const IDENT_PT: u32 = 12;
    /// `HVM_PARAM_ACPI_S_STATE`.
    pub const ACPI_S_STATE: u32 = 14;
    /// `HVM_PARAM_VM86_TSS`.
    pub const VM86_TSS: u32 = 15;
    /// `HVM_PARAM_VPT_ALIGN`.
    pub const VPT_ALIGN: u32 = 16;
    /// `HVM_PARAM_CONSOLE_PFN`.
    pub const CONSOLE_PFN: u32 = 17;
    /// `HVM_PARAM_CONSOLE_EVTCHN` (set by the restore side, never copied).
    pub const CONSOLE_EVTCHN: u32 = 18;
    /// `HVM_PARAM_ACPI_IOPORTS_LOCATION`.
    pub const ACPI_IOPORTS_LOCATION: u32 = 19;
    /// `HVM_PARAM_PAGING_RING_PFN`.
    pub const PAGING_RING_PFN: u32 = 27;
    /// `HVM_PARAM_MONITOR_RING_PFN`.
    pub const MONITOR_RING_PFN: u32 = 28;
    /// `HVM_PARAM_SHARING_RING_PFN`.
    pub const SHARING_RING_PFN: u32 = 29;
    /// `HVM_PARAM_IOREQ_SERVER_PFN`.
    pub const IOREQ_SERVER_PFN: u32 = 32;
    /// `HVM_PARAM_NR_IOREQ_SERVER_PAGES`.
    pub const NR_IOREQ_SERVER_PAGES: u32 = 33;
    /// `HVM_PARAM_VM_GENERATION_ID_ADDR`.
    pub const VM_GENERATION_ID_ADDR: u32 = 34;
    /// `HVM_PARAM_X87_FIP_WIDTH`.
    pub const X87_FIP_WIDTH: u32 = 36;
    /// `HVM_PARAM_VM86_TSS_SIZED`.
    pub const VM86_TSS_SIZED: u32 = 37;
    /// `HVM_PARAM_MCA_CAP`.
    pub const MCA_CAP: u32 = 38;

    /// The parameters libxc sends with every HVM checkpoint (`write_hvm_params` in
    /// `tools/libs/guest/xg_sr_save_x86_hvm.c` @RELEASE-4.17.0), in the same order.
    /// The `*_EVTCHN` parameters are deliberately absent: the replica keeps its own.
    pub const CHECKPOINT_PARAMS: [u32; 16] = [
        STORE_PFN,
        IOREQ_PFN,
        BUFIOREQ_PFN,
        PAGING_RING_PFN,
        MONITOR_RING_PFN,
        SHARING_RING_PFN,
        VM86_TSS_SIZED,
        CONSOLE_PFN,
        ACPI_IOPORTS_LOCATION,
        VIRIDIAN,
        IDENT_PT,
        VM_GENERATION_ID_ADDR,
        IOREQ_SERVER_PFN,
        NR_IOREQ_SERVER_PAGES,
        X87_FIP_WIDTH,
        MCA_CAP,
    ];
}

/// `XEN_DOMINF_*` flag bits of [`DomctlGetDomainInfo::flags`] (`domctl.h`).
pub mod dominf {
    /// Domain is scheduled to die.
    pub const DYING: u32 = 1 << 0;
    /// Domain is an HVM (or PVH) guest.
    pub const HVM_GUEST: u32 = 1 << 1;
    /// The guest has shut down; the reason is in bits 16..24.
    pub const SHUTDOWN: u32 = 1 << 2;
    /// Paused by control software.
    pub const PAUSED: u32 = 1 << 3;
    /// Blocked waiting for an event.
    pub const BLOCKED: u32 = 1 << 4;
    /// Currently running.
    pub const RUNNING: u32 = 1 << 5;
    /// Being debugged.
    pub const DEBUGGED: u32 = 1 << 6;
    /// A xenstore domain.
    pub const XS_DOMAIN: u32 = 1 << 7;
    /// Uses hardware-assisted paging.
    pub const HAP: u32 = 1 << 8;
    /// `XEN_DOMINF_shutdownshift`.
    pub const SHUTDOWN_SHIFT: u32 = 16;
    /// `XEN_DOMINF_shutdownmask`.
    pub const SHUTDOWN_MASK: u32 = 0xff;
}

/// `SHUTDOWN_*` reasons (`sched.h`).
pub mod shutdown {
    /// `SHUTDOWN_poweroff`.
    pub const POWEROFF: u8 = 0;
    /// `SHUTDOWN_reboot`.
    pub const REBOOT: u8 = 1;
    /// `SHUTDOWN_suspend`: the guest reached its suspend point (cooperative checkpoint).
    pub const SUSPEND: u8 = 2;
    /// `SHUTDOWN_crash`.
    pub const CRASH: u8 = 3;
    /// `SHUTDOWN_watchdog`.
    pub const WATCHDOG: u8 = 4;
    /// `SHUTDOWN_soft_reset`.
    pub const SOFT_RESET: u8 = 5;
}

/// `SCHEDOP_*` sub-operations of `sched_op` (`sched.h`).
pub mod schedop {
    /// `SCHEDOP_remote_shutdown`; argument `sched_remote_shutdown`.
    pub const REMOTE_SHUTDOWN: u64 = 4;
}

/// `struct vcpu_guest_context` (x86_64) facts used to patch a vCPU's return value.
pub mod vcpu_context {
    /// `sizeof(struct vcpu_guest_context)` on x86_64.
    pub const SIZE: usize = 5168;
    /// Offset of `user_regs.rax` (512 B FPU area + 8 B flags + 10 registers of 8 B).
    /// `xc_domain_resume_cooperative` sets it to 1 ("suspend cancelled").
    pub const RAX_OFFSET: usize = 600;
}

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

// ---------------------------------------------------------------------------------------------
// domctl (xen/include/public/domctl.h)
// ---------------------------------------------------------------------------------------------

/// The 128-byte union `u` of `struct xen_domctl`, as bytes; see [`DomctlPayload::new`].
#[repr(C, align(8))]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DomctlPayload {
    bytes: [u8; 128],
}
const _: () = assert!(size_of::<DomctlPayload>() == 128);

impl Default for DomctlPayload {
    fn default() -> Self {
        Self { bytes: [0; 128] }
    }
}

impl core::fmt::Debug for DomctlPayload {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DomctlPayload").finish_non_exhaustive()
    }
}

impl DomctlPayload {
    /// A payload holding `arg` followed by zero bytes.
    pub fn new<T: Pod>(arg: &T) -> Self {
        const { assert!(size_of::<T>() <= 128 && align_of::<T>() <= 8) };
        let mut payload = Self::default();
        // SAFETY: `T: Pod` has no padding, so all `size_of::<T>()` source bytes are initialised;
        // the destination has 128 >= size_of::<T>() bytes (checked above); u8 needs no alignment
        // and the two regions are distinct objects.
        unsafe {
            core::ptr::copy_nonoverlapping(
                (arg as *const T).cast::<u8>(),
                payload.bytes.as_mut_ptr(),
                size_of::<T>(),
            );
        }
        payload
    }

    /// The payload read back as a `T`.
    pub fn get<T: Pod>(&self) -> T {
        const { assert!(size_of::<T>() <= 128 && align_of::<T>() <= 8) };
        // SAFETY: the source has 128 >= size_of::<T>() initialised bytes; `read_unaligned`
        // imposes no alignment; every bit pattern is a valid `T` because `T: Pod`.
        unsafe { core::ptr::read_unaligned(self.bytes.as_ptr().cast::<T>()) }
    }

    /// The raw 128 bytes.
    pub fn as_bytes(&self) -> &[u8; 128] {
        &self.bytes
    }
}

/// `struct xen_domctl`: the argument of `__HYPERVISOR_domctl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenDomctl {
    /// `XEN_DOMCTL_*` command.
    pub cmd: u32,
    /// Must equal the hypervisor's `XEN_DOMCTL_INTERFACE_VERSION` (else `-EACCES`).
    pub interface_version: u32,
    /// Target domain.
    pub domain: DomId,
    /// Explicit padding (`_pad[3]`).
    pub _pad: [u16; 3],
    /// Command-specific payload (the C union `u`).
    pub u: DomctlPayload,
}
const _: () = assert!(size_of::<XenDomctl>() == 144);
const _: () = assert!(offset_of!(XenDomctl, cmd) == 0);
const _: () = assert!(offset_of!(XenDomctl, interface_version) == 4);
const _: () = assert!(offset_of!(XenDomctl, domain) == 8);
const _: () = assert!(offset_of!(XenDomctl, u) == 16);

/// `struct xen_arch_domainconfig` (x86, `arch-x86/xen.h`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenArchDomainConfig {
    /// `XEN_X86_EMU_*` flags.
    pub emulation_flags: u32,
    /// `XEN_X86_MSR_RELAXED` etc.
    pub misc_flags: u32,
}
const _: () = assert!(size_of::<XenArchDomainConfig>() == 8);

/// `struct xen_domctl_getdomaininfo` (layout of 4.17.0, unchanged through 4.21 and `master`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DomctlGetDomainInfo {
    /// Domain id (echoed).
    pub domain: DomId,
    /// Explicit padding (`pad1`).
    pub _pad1: u16,
    /// `XEN_DOMINF_*` flags; see [`dominf`].
    pub flags: u32,
    /// Pages currently allocated.
    pub tot_pages: u64,
    /// Maximum pages.
    pub max_pages: u64,
    /// Outstanding claimed pages.
    pub outstanding_pages: u64,
    /// Shared pages.
    pub shr_pages: u64,
    /// Paged-out pages.
    pub paged_pages: u64,
    /// GMFN of the shared_info page.
    pub shared_info_frame: u64,
    /// CPU time used, in ns.
    pub cpu_time: u64,
    /// Number of online vCPUs.
    pub nr_online_vcpus: u32,
    /// Highest vCPU id (`u32::MAX` if none).
    pub max_vcpu_id: u32,
    /// XSM security label.
    pub ssidref: u32,
    /// Domain handle (UUID).
    pub handle: [u8; 16],
    /// CPU pool.
    pub cpupool: u32,
    /// Guest physical address width.
    pub gpaddr_bits: u8,
    /// Explicit padding (`pad2[7]`).
    pub _pad2: [u8; 7],
    /// Architecture configuration.
    pub arch_config: XenArchDomainConfig,
}
const _: () = assert!(size_of::<DomctlGetDomainInfo>() == 112);
const _: () = assert!(offset_of!(DomctlGetDomainInfo, flags) == 4);
const _: () = assert!(offset_of!(DomctlGetDomainInfo, tot_pages) == 8);
const _: () = assert!(offset_of!(DomctlGetDomainInfo, max_pages) == 16);
const _: () = assert!(offset_of!(DomctlGetDomainInfo, outstanding_pages) == 24);
const _: () = assert!(offset_of!(DomctlGetDomainInfo, shr_pages) == 32);
const _: () = assert!(offset_of!(DomctlGetDomainInfo, paged_pages) == 40);
const _: () = assert!(offset_of!(DomctlGetDomainInfo, shared_info_frame) == 48);
const _: () = assert!(offset_of!(DomctlGetDomainInfo, cpu_time) == 56);
const _: () = assert!(offset_of!(DomctlGetDomainInfo, nr_online_vcpus) == 64);
const _: () = assert!(offset_of!(DomctlGetDomainInfo, max_vcpu_id) == 68);
const _: () = assert!(offset_of!(DomctlGetDomainInfo, ssidref) == 72);
const _: () = assert!(offset_of!(DomctlGetDomainInfo, handle) == 76);
const _: () = assert!(offset_of!(DomctlGetDomainInfo, cpupool) == 92);
const _: () = assert!(offset_of!(DomctlGetDomainInfo, gpaddr_bits) == 96);
const _: () = assert!(offset_of!(DomctlGetDomainInfo, arch_config) == 104);

impl DomctlGetDomainInfo {
    /// An HVM or PVH guest.
    pub fn is_hvm(&self) -> bool {
        self.flags & dominf::HVM_GUEST != 0
    }
    /// Paused by control software.
    pub fn is_paused(&self) -> bool {
        self.flags & dominf::PAUSED != 0
    }
    /// Scheduled to die.
    pub fn is_dying(&self) -> bool {
        self.flags & dominf::DYING != 0
    }
    /// Uses hardware-assisted paging.
    pub fn has_hap(&self) -> bool {
        self.flags & dominf::HAP != 0
    }
    /// The shutdown reason (`SHUTDOWN_*`, see [`shutdown`]) if the guest has shut down.
    pub fn shutdown_reason(&self) -> Option<u8> {
        if self.flags & dominf::SHUTDOWN == 0 {
            return None;
        }
        // Masked to 8 bits, so the narrowing is exact.
        Some(((self.flags >> dominf::SHUTDOWN_SHIFT) & dominf::SHUTDOWN_MASK) as u8)
    }
    /// Shut down with `SHUTDOWN_suspend`: the guest reached its checkpoint suspend point.
    pub fn is_suspended(&self) -> bool {
        self.shutdown_reason() == Some(shutdown::SUSPEND)
    }
}

/// `struct xen_domctl_shadow_op_stats`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DomctlShadowOpStats {
    /// Log-dirty faults since the last CLEAN.
    pub fault_count: u32,
    /// Pages dirtied since the last CLEAN.
    pub dirty_count: u32,
}
const _: () = assert!(size_of::<DomctlShadowOpStats>() == 8);

/// `struct xen_domctl_shadow_op`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DomctlShadowOp {
    /// `XEN_DOMCTL_SHADOW_OP_*`; see [`shadow`].
    pub op: u32,
    /// Mode flags (`LOGDIRTY_FINAL` for CLEAN/PEEK).
    pub mode: u32,
    /// Shadow allocation in MiB (GET/SET_ALLOCATION only).
    pub mb: u32,
    /// Explicit padding before the 8-byte-aligned handle.
    pub _pad: u32,
    /// Guest handle (user address) of the dirty bitmap, or 0.
    pub dirty_bitmap: u64,
    /// IN: bitmap size in bits; OUT: number of pages reported.
    pub pages: u64,
    /// OUT: statistics.
    pub stats: DomctlShadowOpStats,
}
const _: () = assert!(size_of::<DomctlShadowOp>() == 40);
const _: () = assert!(offset_of!(DomctlShadowOp, op) == 0);
const _: () = assert!(offset_of!(DomctlShadowOp, mode) == 4);
const _: () = assert!(offset_of!(DomctlShadowOp, mb) == 8);
const _: () = assert!(offset_of!(DomctlShadowOp, dirty_bitmap) == 16);
const _: () = assert!(offset_of!(DomctlShadowOp, pages) == 24);
const _: () = assert!(offset_of!(DomctlShadowOp, stats) == 32);

/// `struct xen_domctl_hvmcontext` (get/sethvmcontext).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DomctlHvmContext {
    /// IN: buffer size; OUT: bytes filled (or bytes needed, for a null buffer).
    pub size: u32,
    /// Explicit padding before the 8-byte-aligned handle.
    pub _pad: u32,
    /// Guest handle (user address) of the buffer, or 0 to query the size.
    pub buffer: u64,
}
const _: () = assert!(size_of::<DomctlHvmContext>() == 16);
const _: () = assert!(offset_of!(DomctlHvmContext, size) == 0);
const _: () = assert!(offset_of!(DomctlHvmContext, buffer) == 8);

/// `struct xen_domctl_vcpucontext` (get/setvcpucontext).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DomctlVcpuContext {
    /// vCPU index.
    pub vcpu: u32,
    /// Explicit padding before the 8-byte-aligned handle.
    pub _pad: u32,
    /// Guest handle (user address) of a `vcpu_guest_context` ([`vcpu_context::SIZE`] bytes).
    pub ctxt: u64,
}
const _: () = assert!(size_of::<DomctlVcpuContext>() == 16);
const _: () = assert!(offset_of!(DomctlVcpuContext, ctxt) == 8);

/// `struct xen_domctl_tsc_info` (get/settscinfo).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DomctlTscInfo {
    /// `XEN_CPUID_TSC_MODE_*`.
    pub tsc_mode: u32,
    /// Guest TSC frequency in kHz.
    pub gtsc_khz: u32,
    /// Incarnation, bumped on each restore.
    pub incarnation: u32,
    /// Explicit padding (`pad`).
    pub _pad: u32,
    /// Elapsed ns used to compute the TSC offset.
    pub elapsed_nsec: u64,
}
const _: () = assert!(size_of::<DomctlTscInfo>() == 24);
const _: () = assert!(offset_of!(DomctlTscInfo, gtsc_khz) == 4);
const _: () = assert!(offset_of!(DomctlTscInfo, incarnation) == 8);
const _: () = assert!(offset_of!(DomctlTscInfo, elapsed_nsec) == 16);

// ---------------------------------------------------------------------------------------------
// memory_op, hvm_op, sched_op arguments
// ---------------------------------------------------------------------------------------------

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

/// `struct xen_hvm_param` (`HVMOP_get_param` / `HVMOP_set_param`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenHvmParam {
    /// Target domain.
    pub domid: DomId,
    /// Explicit padding (`pad`).
    pub _pad: u16,
    /// `HVM_PARAM_*` index.
    pub index: u32,
    /// Value (IN for set, OUT for get).
    pub value: u64,
}
const _: () = assert!(size_of::<XenHvmParam>() == 16);
const _: () = assert!(offset_of!(XenHvmParam, index) == 4);
const _: () = assert!(offset_of!(XenHvmParam, value) == 8);

/// `struct sched_remote_shutdown` (`SCHEDOP_remote_shutdown`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedRemoteShutdown {
    /// Domain to shut down.
    pub domain_id: DomId,
    /// Explicit padding.
    pub _pad: u16,
    /// `SHUTDOWN_*` reason.
    pub reason: u32,
}
const _: () = assert!(size_of::<SchedRemoteShutdown>() == 8);
const _: () = assert!(offset_of!(SchedRemoteShutdown, reason) == 4);

/// `struct hvm_save_descriptor` (`hvm/save.h`): the 8-byte header of each HVM context record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HvmSaveDescriptor {
    /// Record type (`HVM_SAVE_CODE(...)`).
    pub typecode: u16,
    /// Instance (for example the vCPU index).
    pub instance: u16,
    /// Length of the data after this descriptor, in bytes.
    pub length: u32,
}
const _: () = assert!(size_of::<HvmSaveDescriptor>() == 8);
const _: () = assert!(offset_of!(HvmSaveDescriptor, instance) == 2);
const _: () = assert!(offset_of!(HvmSaveDescriptor, length) == 4);

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
