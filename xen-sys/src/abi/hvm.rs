//! `hvm_op` and HVM save records: the HVM parameters a checkpoint carries, their get/set
//! argument, and the descriptor heading each record of an HVM context blob.

use core::mem::{offset_of, size_of};

use super::DomId;

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
