//! `domctl`, the domain-control hypercall: its commands and interface versions, the
//! `struct xen_domctl` envelope and its payloads (domain info, log-dirty shadow ops, HVM and
//! vCPU contexts, TSC info), and the flag bits and facts they carry.

use core::mem::{align_of, offset_of, size_of};

use super::{shutdown, DomId, Pod};

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

/// `struct vcpu_guest_context` (x86_64) facts used to patch a vCPU's return value.
pub mod vcpu_context {
    /// `sizeof(struct vcpu_guest_context)` on x86_64.
    pub const SIZE: usize = 5168;
    /// Offset of `user_regs.rax` (512 B FPU area + 8 B flags + 10 registers of 8 B).
    /// `xc_domain_resume_cooperative` sets it to 1 ("suspend cancelled").
    pub const RAX_OFFSET: usize = 600;
}

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
