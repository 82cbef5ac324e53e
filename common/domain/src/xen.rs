//! The `xen` domain backend: a real PVH guest through `xen-sys` (DESIGN.md §3).
//!
//! This module owns both sides of [`crate::domain`] for Xen:
//!
//! - [`XenSource`] (primary): suspends the guest cooperatively (xenstore `control/shutdown` =
//!   `suspend`, then waits for `SHUTDOWN_suspend`), reads and clears the log-dirty bitmap,
//!   copies dirty pages through a persistent read-only foreign mapping of all guest RAM, saves
//!   the HVM context, TSC info and HVM params, and resumes the guest with "suspend cancelled"
//!   (its `SCHEDOP_shutdown` returns 1, so it keeps its event channels and PV devices).
//! - [`XenReplica`] (standby): a paused domain created once by the Xen toolstack (`xl restore -p`
//!   of an image taken with `xl save -c`, so the memory layout, special pages and backends are
//!   the toolstack's), patched with every verified checkpoint through a persistent writable
//!   foreign mapping; activation unpauses it, and the guest resumes as after a migration (its
//!   suspend returns 0: it re-binds event channels and reconnects its frontends).
//!
//! Guest memory is mapped once at start-up in chunks of [`CHUNK_PFNS`] frames over the whole
//! p2m (`XENMEM_maximum_gpfn` + 1); frames that do not map (holes, MMIO) are not guest RAM and
//! are never sent. Ballooning after start-up is not supported (a dirty frame that was a hole at
//! start is reported and skipped).

mod info;
mod memory;
mod replica;
mod settings;
mod source;
mod wait;

use serde::{Deserialize, Serialize};
use xen_sys::abi::{hvm_param, DomctlGetDomainInfo};
use xen_sys::{DomId, Privcmd};

use crate::domain::DomainError;
pub use info::{describe, info_command};
pub use memory::MAX_POPULATED;
pub use replica::XenReplica;
pub use settings::{nbd_socket, resolve, DomainRef, XenSettings, KEYS};
pub use source::XenSource;
pub use wait::{serve_disk_first, Early, Ready};

/// Frames per foreign-mapping chunk (64 MiB of address space each).
pub const CHUNK_PFNS: u64 = 16384;
/// Largest p2m this backend maps (64 GiB of guest-physical space).
pub const MAX_P2M: u64 = 16 << 20;
/// Version of the state record layout.
const STATE_VERSION: u8 = 1;
/// Largest HVM context accepted in a state record.
pub const MAX_HVM_CONTEXT: usize = 128 * 1024;

fn err(op: &'static str, e: impl std::fmt::Display) -> DomainError {
    DomainError {
        op,
        detail: e.to_string(),
    }
}

/// The vCPU and platform state of one checkpoint, as carried in its `State` record.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct XenState<'a> {
    /// Layout version ([`STATE_VERSION`]).
    pub version: u8,
    /// `XEN_DOMCTL_gettscinfo`: tsc_mode, gtsc_khz, incarnation.
    pub tsc: (u32, u32, u32),
    /// `XEN_DOMCTL_gettscinfo`: elapsed_nsec.
    pub tsc_elapsed_nsec: u64,
    /// Non-zero HVM params of [`hvm_param::CHECKPOINT_PARAMS`] (never the `*_EVTCHN` ones).
    pub params: heapless::Vec<(u32, u64), 16>,
    /// The HVM context blob (`XEN_DOMCTL_gethvmcontext`).
    #[serde(borrow)]
    pub hvm: &'a [u8],
}

impl<'a> XenState<'a> {
    /// Decode a state record, checking its version and bounds.
    pub fn decode(b: &'a [u8]) -> Result<XenState<'a>, DomainError> {
        let s: XenState<'a> = postcard::from_bytes(b).map_err(|e| err("load_state", e))?;
        if s.version != STATE_VERSION {
            return Err(err(
                "load_state",
                format!(
                    "state record version {}, expected {STATE_VERSION}",
                    s.version
                ),
            ));
        }
        if s.hvm.is_empty() || s.hvm.len() > MAX_HVM_CONTEXT {
            return Err(err("load_state", "HVM context empty or too large"));
        }
        if let Some((p, _)) = s
            .params
            .iter()
            .find(|(p, _)| !hvm_param::CHECKPOINT_PARAMS.contains(p))
        {
            return Err(err("load_state", format!("HVM param {p} is not accepted")));
        }
        Ok(s)
    }
}

/// Length of the run of consecutive frames at the start of `pfns` that stays in one chunk.
fn run_len(pfns: &[u64]) -> usize {
    let Some(&first) = pfns.first() else { return 0 };
    let mut n = 1;
    while n < pfns.len()
        && pfns[n] == first + n as u64
        && !(first + n as u64).is_multiple_of(CHUNK_PFNS)
    {
        n += 1;
    }
    n
}

/// The runs of `pfns` as (index of the first, its frame, length), in order; see [`run_len`].
fn runs(pfns: &[u64]) -> impl Iterator<Item = (usize, u64, usize)> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        let n = run_len(pfns.get(i..)?);
        let run = (i, *pfns.get(i)?, n);
        i += n;
        Some(run)
    })
}

/// Open privcmd and check the domain exists, is HVM/PVH and has HAP (log-dirty needs it).
fn open_domain(domid: DomId) -> Result<(Privcmd, DomctlGetDomainInfo), DomainError> {
    let mut xc = Privcmd::open().map_err(|e| err("open", e))?;
    let v = xc.xen_version().map_err(|e| err("open", e))?;
    let dv = xc.domctl_interface_version().map_err(|e| err("open", e))?;
    let info = xc
        .getdomaininfo(domid)
        .map_err(|e| err("open", format!("domain {domid}: {e}")))?;
    if !info.is_hvm() {
        return Err(err(
            "open",
            format!("domain {domid} is a PV guest: only PVH (and HVM) guests can be checkpointed"),
        ));
    }
    log::info!(
        "Xen {v} (domctl interface {dv:#x}); domain {domid}: {} vCPU(s), {} pages, hap {}",
        info.max_vcpu_id + 1,
        info.tot_pages,
        info.has_hap()
    );
    Ok((xc, info))
}

#[cfg(test)]
#[path = "xen_tests.rs"]
mod tests;
