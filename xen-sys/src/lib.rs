//! Pure-Rust interface to the Xen hypervisor from dom0, for hsb.
//!
//! hsb's daemons talk to Xen through the Linux `privcmd` driver (`/dev/xen/privcmd`,
//! `/dev/xen/hypercall`) and the event-channel device (`/dev/xen/evtchn`) without libxenctrl,
//! so they stay static binaries. This is the only crate of the project allowed to contain
//! `unsafe`; every `unsafe` block says why it holds in a `// SAFETY:` comment, and everything
//! it exports is safe except the raw [`Privcmd::hypercall`] and [`Privcmd::domctl`] escape
//! hatches.
//!
//! - [`abi`]: `#[repr(C)]` mirrors of the Xen and privcmd structs, with compile-time size and
//!   offset assertions, and the hypercall / domctl / HVM constants.
//! - [`ioctl`]: `_IOC` request numbers, asserted against the Linux headers' values.
//! - [`buffer`]: [`HypercallBuf`], memory Xen may access without faulting.
//! - [`privcmd`]: [`Privcmd`], hypercalls, domctl version detection, typed wrappers.
//! - [`foreign`]: [`ForeignMap`], mapping guest frames with per-page errors.
//! - [`hvm_context`]: a bounded parser of HVM context blobs.
//! - [`evtchn`]: [`Evtchn`], binding and notifying event channels.
//! - [`netlink`]: [`PlugQdisc`], output commit through the `plug` qdisc over rtnetlink.
//! - [`uring`]: [`uring::SyncRing`], `fdatasync` through io_uring, for loops that must not block.
//! - [`error`]: [`XenError`] and [`Error`].
//!
//! Target: x86_64 Linux dom0, Xen 4.17 to 4.22 (domctl interface versions 0x15 to 0x18).

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
compile_error!("xen-sys mirrors the x86_64 Linux dom0 ABI only");

pub mod abi;
pub mod buffer;
pub mod error;
pub mod evtchn;
pub mod foreign;
pub mod hvm_context;
pub mod ioctl;
pub mod netlink;
pub mod privcmd;
pub mod process;
mod sys;
pub mod uring;

pub use abi::DomId;
pub use buffer::{BufSource, HypercallBuf};
pub use error::{Error, XenError};
pub use evtchn::Evtchn;
pub use foreign::{ForeignMap, Prot};
pub use hvm_context::{parse_hvm_context, HvmContextError, HvmRecord};
pub use netlink::{PlugAction, PlugQdisc};
pub use privcmd::{Privcmd, ShadowOp, ShadowStats, XenVersion};
/// Linux errno values used in this crate's errors.
pub use sys::errno;
