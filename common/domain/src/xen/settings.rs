//! The xen backend's configuration: its `xen.*` keys, the domain they name, and finding that
//! domain's id.

use std::time::Duration;

use xen_sys::DomId;
use xenstore_rs::unix::XsUnix;
use xenstore_rs::Xs;

use super::err;
use crate::disk::DiskConfig;
use crate::domain::DomainError;
use hsb_common::config::{Config, ConfigError, KeySpec, ValueKind};

/// Configuration keys of the xen backend, shared by hsb-primary and hsb-standby.
pub static KEYS: &[KeySpec] = &[
    KeySpec { key: "xen.domain", kind: ValueKind::Str, default: Some(""), help: "xen backend: the guest (primary) or the paused replica (standby), by name or domain id" },
    KeySpec { key: "xen.vif", kind: ValueKind::Str, default: Some(""), help: "xen backend, primary: the guest's network backend device whose output is held until ack (empty: vif<domid>.0)" },
    KeySpec { key: "xen.output", kind: ValueKind::Choice(&["plug", "none"]), default: Some("plug"), help: "xen backend, primary: hold the guest's network output until its checkpoint is acknowledged with the `plug` qdisc (needs sch_plug, ifb, act_mirred, cls_matchall), or `none` (no output commit: what a client saw may be lost on failover)" },
    KeySpec { key: "xen.disk", kind: ValueKind::Path, default: Some(""), help: "xen backend: the guest's (primary) or the replica's (standby) disk image, replicated with the checkpoints (created sparse, all zeros, if missing; IMAGE.meta beside it); the guest reaches it through the daemon's NBD export (disk.nbd_socket, attached in dom0 with `nbd-client -unix`, the guest's disk then `phy:/dev/nbdN`); empty: the guest's disks are not replicated" },
    KeySpec { key: "xen.disk_size", kind: ValueKind::Size, default: Some("0"), help: "xen backend: the size of xen.disk (a multiple of 4KiB up to 1TiB); the same on both hosts; an existing image must have it" },
    KeySpec { key: "xen.suspend_timeout", kind: ValueKind::Duration, default: Some("2s"), help: "xen backend, primary: how long a guest may take to suspend for a checkpoint or a fence (polled, never blocking the loop; at least 1ms); a fenced guest that does not suspend in time is paused outright" },
];

/// Which domain: by id or by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainRef {
    /// A domain id.
    Id(DomId),
    /// A domain name (xenstore `/local/domain/<id>/name`).
    Name(String),
}

impl std::fmt::Display for DomainRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DomainRef::Id(d) => write!(f, "domain {d}"),
            DomainRef::Name(n) => write!(f, "domain '{n}'"),
        }
    }
}

/// The xen backend's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XenSettings {
    /// The guest or replica.
    pub domain: DomainRef,
    /// The guest's vif (primary), if named.
    pub vif: Option<String>,
    /// Output commit through the plug qdisc.
    pub plug: bool,
    /// Longest suspend.
    pub suspend_timeout: Duration,
    /// The replicated disk (`xen.disk`), if any.
    pub disk: Option<DiskConfig>,
}

impl XenSettings {
    /// Read the `xen.*` keys; `None` unless `backend = xen`.
    pub fn from_config(c: &Config) -> Result<Option<XenSettings>, ConfigError> {
        if c.str("backend")? != "xen" {
            return Ok(None);
        }
        let d = c.str("xen.domain")?;
        let domain = if d.is_empty() {
            return Err(c.error_at(
                "xen.domain",
                "the xen backend needs the guest's name or domain id",
            ));
        } else if let Ok(id) = d.parse::<u16>() {
            if id == 0 || id >= xen_sys::abi::DOMID_FIRST_RESERVED {
                return Err(c.error_at("xen.domain", "expected a guest domain id (not dom0)"));
            }
            DomainRef::Id(id)
        } else if d.len() > 64 || d.contains('/') || d.chars().any(|ch| ch.is_whitespace()) {
            return Err(c.error_at("xen.domain", "expected a domain name or id"));
        } else {
            DomainRef::Name(d)
        };
        let vif = c.str("xen.vif")?;
        if vif.len() > 15 || vif.contains('/') {
            return Err(c.error_at("xen.vif", "expected a network device name"));
        }
        let suspend_timeout = c.duration("xen.suspend_timeout")?;
        if suspend_timeout < hsb_common::decision::MIN_PERIOD {
            return Err(c.error_at(
                "xen.suspend_timeout",
                &format!(
                    "expected at least 1ms (with 0 every suspend would time out), got {suspend_timeout:?}"
                ),
            ));
        }
        Ok(Some(XenSettings {
            domain,
            vif: (!vif.is_empty()).then_some(vif),
            plug: c.str("xen.output")? == "plug",
            suspend_timeout,
            disk: disk_config(c)?,
        }))
    }
}

/// `disk.nbd_socket`, checked against the disks there are: the model domain's (`model_disk`)
/// or the Xen guest's (`xen.disk`, which needs it: the guest reaches its disk only there).
pub fn nbd_socket(
    c: &Config,
    xen: Option<&XenSettings>,
    model_disk: bool,
) -> Result<Option<std::path::PathBuf>, ConfigError> {
    let path = Some(c.path("disk.nbd_socket")?).filter(|p| !p.as_os_str().is_empty());
    let xen_disk = xen.is_some_and(|x| x.disk.is_some());
    if path.is_some() && !model_disk && !xen_disk {
        return Err(c.error_at(
            "disk.nbd_socket",
            if xen.is_some() {
                "expected a disk to serve: set xen.disk and xen.disk_size"
            } else {
                "expected a disk to serve: model.disk_size is 0"
            },
        ));
    }
    if xen_disk && path.is_none() {
        return Err(c.error_at(
            "xen.disk",
            "a Xen guest reaches its replicated disk only through the NBD export: set disk.nbd_socket and attach it in dom0 with nbd-client -unix before the domain is created (xl create, or xl restore -p for the replica)",
        ));
    }
    Ok(path)
}

/// The `xen.disk` keys (with `disk.journal_max`).
fn disk_config(c: &Config) -> Result<Option<DiskConfig>, ConfigError> {
    let path = c.path("xen.disk")?;
    let size = c.size("xen.disk_size")?;
    if path.as_os_str().is_empty() {
        if size != 0 {
            return Err(c.error_at(
                "xen.disk_size",
                "a disk size without a disk: set xen.disk to its image, or leave xen.disk_size at 0",
            ));
        }
        return Ok(None);
    }
    if size == 0 || !size.is_multiple_of(4096) || size > crate::disk::tracks::MAX_DISK {
        return Err(c.error_at(
            "xen.disk_size",
            "expected the disk's size (xen.disk is set): a multiple of 4KiB up to 1TiB",
        ));
    }
    let journal_max = c.size("disk.journal_max")?;
    if journal_max < crate::disk::MIN_JOURNAL as u64 || journal_max > 1 << 30 {
        return Err(c.error_at("disk.journal_max", "expected from 2MiB to 1GiB"));
    }
    Ok(Some(DiskConfig {
        path,
        size,
        journal_max: journal_max as usize,
    }))
}

/// Find a domain's id: an id is checked to exist, a name is looked up in xenstore.
pub fn resolve(d: &DomainRef) -> Result<DomId, DomainError> {
    match d {
        DomainRef::Id(id) => Ok(*id),
        DomainRef::Name(name) => {
            let xs = XsUnix::new().map_err(|e| {
                err(
                    "find domain",
                    format!(
                        "cannot reach xenstore ({e}): is this a Xen dom0 with xenstored running?"
                    ),
                )
            })?;
            let ids = xs
                .directory("/local/domain")
                .map_err(|e| err("find domain", format!("xenstore /local/domain: {e}")))?;
            let mut found = Vec::new();
            for id in ids.iter().take(4096) {
                let Ok(n) = id.parse::<u16>() else { continue };
                if n == 0 {
                    continue;
                }
                if xs
                    .read(&format!("/local/domain/{n}/name"))
                    .is_ok_and(|v| &*v == name.as_str())
                {
                    found.push(n);
                }
            }
            match found.as_slice() {
                [one] => Ok(*one),
                [] => Err(err(
                    "find domain",
                    format!("no domain named '{name}' (xl list)"),
                )),
                many => Err(err(
                    "find domain",
                    format!(
                        "{} domains are named '{name}': {many:?}; give xen.domain as an id",
                        many.len()
                    ),
                )),
            }
        }
    }
}
