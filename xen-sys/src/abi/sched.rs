//! `sched_op`: shutting a domain down remotely, and the shutdown reasons Xen reports.

use core::mem::{offset_of, size_of};

use super::DomId;

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
