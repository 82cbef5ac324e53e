//! Unit tests of `abi`.

use super::*;
use core::mem::{offset_of, size_of};

/// Sizes printed by a C probe compiled against the RELEASE-4.17.0 public headers and the
/// Linux uapi headers (also enforced at compile time next to each struct).
#[test]
fn sizes_match_c_probe() {
    assert_eq!(size_of::<PrivcmdHypercall>(), 48);
    assert_eq!(size_of::<PrivcmdMmapbatchV2>(), 32);
    assert_eq!(size_of::<XenDomctl>(), 144);
    assert_eq!(size_of::<DomctlGetDomainInfo>(), 112);
    assert_eq!(size_of::<DomctlShadowOp>(), 40);
    assert_eq!(size_of::<DomctlHvmContext>(), 16);
    assert_eq!(size_of::<DomctlVcpuContext>(), 16);
    assert_eq!(size_of::<DomctlTscInfo>(), 24);
    assert_eq!(size_of::<XenMemoryDomain>(), 2);
    assert_eq!(size_of::<XenMemoryReservation>(), 32);
    assert_eq!(size_of::<XenHvmParam>(), 16);
    assert_eq!(size_of::<SchedRemoteShutdown>(), 8);
    assert_eq!(size_of::<HvmSaveDescriptor>(), 8);
    assert_eq!(offset_of!(DomctlGetDomainInfo, handle), 76);
    assert_eq!(offset_of!(DomctlGetDomainInfo, arch_config), 104);
    assert_eq!(offset_of!(DomctlShadowOp, dirty_bitmap), 16);
    assert_eq!(offset_of!(XenDomctl, u), 16);
    assert_eq!(vcpu_context::SIZE, 5168);
    assert_eq!(vcpu_context::RAX_OFFSET, 600);
}

#[test]
fn payload_round_trips_and_zero_fills() {
    let op = DomctlShadowOp {
        op: shadow::OP_CLEAN,
        mode: shadow::LOGDIRTY_FINAL,
        dirty_bitmap: 0x1122_3344_5566_7788,
        pages: 4096,
        ..Default::default()
    };
    let p = DomctlPayload::new(&op);
    assert_eq!(p.get::<DomctlShadowOp>(), op);
    // Little-endian field placement, matching the C offsets.
    assert_eq!(p.as_bytes()[0], 11);
    assert_eq!(p.as_bytes()[4], 1);
    assert_eq!(p.as_bytes()[16], 0x88);
    assert_eq!(&p.as_bytes()[24..26], &[0x00, 0x10]);
    assert!(p.as_bytes()[40..].iter().all(|&b| b == 0));
}

#[test]
fn domaininfo_flags() {
    let mut info = DomctlGetDomainInfo {
        flags: dominf::HVM_GUEST | dominf::PAUSED,
        ..Default::default()
    };
    assert!(info.is_hvm() && info.is_paused() && !info.is_dying());
    assert_eq!(info.shutdown_reason(), None);
    info.flags |= dominf::SHUTDOWN | (u32::from(shutdown::SUSPEND) << dominf::SHUTDOWN_SHIFT);
    assert_eq!(info.shutdown_reason(), Some(shutdown::SUSPEND));
    assert!(info.is_suspended());
}

#[test]
fn interface_version_table() {
    assert_eq!(domctl::interface_version_for(4, 17), Some(0x15));
    assert_eq!(domctl::interface_version_for(4, 18), Some(0x16));
    assert_eq!(domctl::interface_version_for(4, 20), Some(0x17));
    assert_eq!(domctl::interface_version_for(4, 21), Some(0x17));
    assert_eq!(domctl::interface_version_for(4, 22), Some(0x18));
    assert_eq!(domctl::interface_version_for(4, 16), None);
    assert_eq!(domctl::name(domctl::PAUSEDOMAIN), "domctl pausedomain");
}

#[test]
fn checkpoint_params_exclude_event_channels() {
    assert!(!hvm_param::CHECKPOINT_PARAMS.contains(&hvm_param::STORE_EVTCHN));
    assert!(!hvm_param::CHECKPOINT_PARAMS.contains(&hvm_param::CONSOLE_EVTCHN));
}
