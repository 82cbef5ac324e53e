//! hsb-domain: what the primary and the standby need of a hypervisor, and nothing the witness
//! needs (the witness links neither xen-sys nor xenstore-rs).
//!
//! - [`domain`]: the narrow interface between the replication engine and a hypervisor.
//! - [`checkpoint`]: checkpoint capture and sealing (primary), staging and verification
//!   (standby), no I/O.
//! - [`disk`]: the guest's disk, replicated with its checkpoints: the journal of each epoch's
//!   writes, lineages, the per-track table and activity log that say what can differ, and
//!   resynchronisation (issue 14).
//! - [`page_codec`]: how a dirty page travels (zero, raw, the words that changed), LZ4 frames;
//!   [`page_cache`]: the primary's bounded cache of what the standby holds; [`codec_policy`]:
//!   when encoding pays (only when the link is the bottleneck).
//! - [`output`]: output-commit bookkeeping: replies of checkpoint N leave only after ack(N).
//! - [`xen`]: the real backend (hypercalls through `xen-sys`, xenstore through `xenstore-rs`).
//! - [`model`]: the `model` domain, **a test double for the hypervisor** (DESIGN.md §3), and
//!   [`service`], its TCP service.

pub mod checkpoint;
pub mod codec_policy;
pub mod disk;
pub mod domain;
pub mod model;
pub mod output;
pub mod page_cache;
pub mod page_codec;
pub mod service;
pub mod xen;

pub use hsb_common::PAGE_SIZE;

/// The backend a primary's or standby's settings name, for `check`: `xen DOMAIN` or
/// `model N pages` (the hypervisor test double).
pub fn describe_backend(
    xen: Option<&xen::XenSettings>,
    model_pages: impl std::fmt::Display,
) -> String {
    match xen {
        Some(x) => format!("xen {}", x.domain),
        None => format!("model {model_pages} pages"),
    }
}

/// The configuration keys of the domain backends both daemons accept: `xen.*` and the model
/// domain's disk (`model.disk*`, `disk.journal_max`).
pub fn backend_keys() -> &'static [hsb_common::config::KeySpec] {
    static KEYS: std::sync::OnceLock<Vec<hsb_common::config::KeySpec>> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let mut v = xen::KEYS.to_vec();
        v.extend_from_slice(model::DISK_KEYS);
        v
    })
}
