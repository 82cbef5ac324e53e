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

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use xen_sys::abi::{hvm_param, DomctlGetDomainInfo, DomctlTscInfo};
use xen_sys::{DomId, ForeignMap, HypercallBuf, Privcmd, Prot};
use xenstore_rs::unix::XsUnix;
use xenstore_rs::Xs;

use crate::domain::{CheckpointSource, DomainError, Replica};
use crate::PAGE_SIZE;
use hsb_common::config::{Config, ConfigError, KeySpec, ValueKind};

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

/// Configuration keys of the xen backend, shared by hsb-primary and hsb-standby.
pub static KEYS: &[KeySpec] = &[
    KeySpec { key: "xen.domain", kind: ValueKind::Str, default: Some(""), help: "xen backend: the guest (primary) or the paused replica (standby), by name or domain id" },
    KeySpec { key: "xen.vif", kind: ValueKind::Str, default: Some(""), help: "xen backend, primary: the guest's network backend device whose output is held until ack (empty: vif<domid>.0)" },
    KeySpec { key: "xen.output", kind: ValueKind::Choice(&["plug", "none"]), default: Some("plug"), help: "xen backend, primary: hold the guest's network output until its checkpoint is acknowledged with the `plug` qdisc (needs sch_plug, ifb, act_mirred, cls_matchall), or `none` (no output commit: what a client saw may be lost on failover)" },
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
        }))
    }
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

/// `hsb-primary xen-info DOMAIN` / `hsb-standby xen-info DOMAIN`: print [`describe`] of the
/// domain named (by id or name) in `rest`; returns the exit code.
pub fn info_command(daemon: &str, rest: &[String]) -> u8 {
    let Some(d) = rest.first() else {
        eprintln!("{daemon}: xen-info needs a domain name or id: {daemon} xen-info guest");
        return 1;
    };
    let r = match d.parse::<u16>() {
        Ok(id) => DomainRef::Id(id),
        Err(_) => DomainRef::Name(d.clone()),
    };
    match describe(&r) {
        Ok(text) => {
            print!("{text}");
            0
        }
        Err(e) => {
            eprintln!("{daemon}: {e}");
            1
        }
    }
}

/// A read-only look at a domain, for `hsb-primary xen-info` and bring-up: what Xen and the
/// domain look like to this backend, without changing anything (no log-dirty, no mapping).
pub fn describe(d: &DomainRef) -> Result<String, DomainError> {
    let domid = resolve(d)?;
    let mut xc = Privcmd::open().map_err(|e| err("open", e))?;
    let v = xc.xen_version().map_err(|e| err("xen_version", e))?;
    let dv = xc
        .domctl_interface_version()
        .map_err(|e| err("domctl version", e))?;
    let info = xc
        .getdomaininfo(domid)
        .map_err(|e| err("getdomaininfo", e))?;
    let mut out = String::new();
    let mut kv = |k: &str, v: String| out.push_str(&format!("{k} {v}\n"));
    kv("xen_version", v.to_string());
    kv("domctl_interface", format!("{dv:#x}"));
    kv(
        "hypercall_buffers",
        if xc.has_hypercall_device() {
            "/dev/xen/hypercall"
        } else {
            "locked anonymous memory"
        }
        .into(),
    );
    // The event-channel path (the suspend channel of guests that offer one) checked on a
    // channel from dom0 to itself: bind, notify, delivery, unmask, unbind.
    kv(
        "evtchn_loopback",
        match xen_sys::Evtchn::open().and_then(|ev| ev.loopback_check(Duration::from_secs(1))) {
            Ok((a, b)) => format!("ok (ports {a} and {b})"),
            Err(e) => format!("failed: {e}"),
        },
    );
    kv("domain", domid.to_string());
    kv("hvm_or_pvh", info.is_hvm().to_string());
    kv("hap", info.has_hap().to_string());
    kv("paused", info.is_paused().to_string());
    kv(
        "shutdown_reason",
        info.shutdown_reason()
            .map_or("none".into(), |r| r.to_string()),
    );
    kv("vcpus", (info.max_vcpu_id + 1).to_string());
    kv("tot_pages", info.tot_pages.to_string());
    kv("max_pages", info.max_pages.to_string());
    let max = xc.maximum_gpfn(domid).map_err(|e| err("maximum_gpfn", e))?;
    kv("p2m_frames", (max + 1).to_string());
    if info.is_hvm() {
        let size = xc
            .hvm_context_size(domid)
            .map_err(|e| err("hvm context", e))?;
        kv("hvm_context_bytes", size.to_string());
        let blob = xc.hvm_context(domid).map_err(|e| err("hvm context", e))?;
        match xen_sys::parse_hvm_context(&blob, 4096) {
            Ok(recs) => {
                let mut names: Vec<String> = recs
                    .iter()
                    .map(|r| format!("{}/{}", r.typecode(), r.instance()))
                    .collect();
                names.dedup();
                kv("hvm_context_records", names.join(","));
            }
            Err(e) => kv("hvm_context_records", format!("unparsable: {e}")),
        }
        let tsc = xc.get_tsc_info(domid).map_err(|e| err("tsc info", e))?;
        kv(
            "tsc",
            format!(
                "mode {} khz {} incarnation {}",
                tsc.tsc_mode, tsc.gtsc_khz, tsc.incarnation
            ),
        );
        for &p in hvm_param::CHECKPOINT_PARAMS.iter() {
            if let Ok(v) = xc.hvm_get_param(domid, p) {
                if v != 0 {
                    kv(&format!("hvm_param_{p}"), format!("{v:#x}"));
                }
            }
        }
        let cb = xc
            .hvm_get_param(domid, hvm_param::CALLBACK_IRQ)
            .unwrap_or(0);
        kv("pv_drivers", (cb != 0).to_string());
    }
    if let Ok(xs) = XsUnix::new() {
        let name = xs
            .read(&format!("/local/domain/{domid}/name"))
            .map(|n| n.to_string())
            .unwrap_or_else(|e| format!("? ({e})"));
        kv("name", name);
        let feat = xs
            .read(&format!("/local/domain/{domid}/control/feature-suspend"))
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "absent".into());
        kv("xenstore_feature_suspend", feat);
    }
    Ok(out)
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

/// Frames the standby may populate in a replica (beyond what it had at start-up).
pub const MAX_POPULATED: usize = 4096;

/// All guest RAM of one domain, mapped once.
#[derive(Debug)]
struct GuestMemory {
    chunks: Vec<Option<ForeignMap>>,
    populated: Vec<u64>,
    p2m: u64,
    /// Replica frames populated after start-up (the primary has RAM there), one map each.
    extra: std::collections::BTreeMap<u64, ForeignMap>,
}

impl GuestMemory {
    fn map(xc: &mut Privcmd, domid: DomId, prot: Prot) -> Result<GuestMemory, DomainError> {
        let max = xc
            .maximum_gpfn(domid)
            .map_err(|e| err("map guest memory", e))?;
        let p2m = max + 1;
        if p2m > MAX_P2M {
            return Err(err(
                "map guest memory",
                format!("p2m of {p2m} frames is larger than the {MAX_P2M} supported"),
            ));
        }
        let t0 = Instant::now();
        let mut chunks = Vec::new();
        let mut populated = Vec::new();
        let mut gfns = Vec::with_capacity(CHUNK_PFNS as usize);
        let mut first = 0;
        while first < p2m {
            let end = (first + CHUNK_PFNS).min(p2m);
            gfns.clear();
            gfns.extend(first..end);
            let m =
                ForeignMap::map(xc, domid, &gfns, prot).map_err(|e| err("map guest memory", e))?;
            let before = populated.len();
            populated.extend(
                gfns.iter()
                    .enumerate()
                    .filter(|(i, _)| m.page_error(*i).is_none())
                    .map(|(_, &g)| g),
            );
            chunks.push((populated.len() > before).then_some(m));
            first = end;
        }
        log::info!(
            "domain {domid}: {} of {p2m} guest frames are RAM, mapped {} in {} ms",
            populated.len(),
            if prot == Prot::Read {
                "read-only"
            } else {
                "read-write"
            },
            t0.elapsed().as_millis()
        );
        if populated.is_empty() {
            return Err(err("map guest memory", "no guest frame could be mapped"));
        }
        Ok(GuestMemory {
            chunks,
            populated,
            p2m,
            extra: std::collections::BTreeMap::new(),
        })
    }

    fn locate(&self, pfn: u64) -> Option<(&ForeignMap, usize)> {
        let m = self.chunks.get((pfn / CHUNK_PFNS) as usize)?.as_ref()?;
        let i = (pfn % CHUNK_PFNS) as usize;
        m.page_error(i).is_none().then_some((m, i))
    }

    fn is_ram(&self, pfn: u64) -> bool {
        self.locate(pfn).is_some()
    }

    fn read(&self, pfn: u64, dst: &mut [u8]) -> Result<(), DomainError> {
        let (m, i) = self
            .locate(pfn)
            .ok_or_else(|| err("read_pages", format!("frame {pfn:#x} is not mapped RAM")))?;
        m.read_pages(i, dst).map_err(|e| err("read_pages", e))
    }

    /// Write a run of consecutive frames of one chunk in one copy; `false` (nothing written)
    /// if any of them is not mapped there.
    fn write_run(&mut self, first: u64, src: &[u8]) -> bool {
        let i = (first % CHUNK_PFNS) as usize;
        self.chunks
            .get_mut((first / CHUNK_PFNS) as usize)
            .and_then(|c| c.as_mut())
            .is_some_and(|m| m.write_pages(i, src).is_ok())
    }

    /// Write one frame of the replica. A frame the primary has as RAM but the replica does
    /// not (for example one the guest mapped its grant table or shared info into) is first
    /// populated, as libxc's restore does (`populate_pfns`), at most [`MAX_POPULATED`] of them.
    fn write(
        &mut self,
        xc: &mut Privcmd,
        domid: DomId,
        pfn: u64,
        src: &[u8],
    ) -> Result<(), DomainError> {
        if pfn >= self.p2m {
            return Err(err(
                "write_pages",
                format!(
                    "frame {pfn:#x} is beyond the replica's p2m ({} frames)",
                    self.p2m
                ),
            ));
        }
        let i = (pfn % CHUNK_PFNS) as usize;
        if let Some(m) = self
            .chunks
            .get_mut((pfn / CHUNK_PFNS) as usize)
            .and_then(|c| c.as_mut())
            .filter(|m| m.page_error(i).is_none())
        {
            return m.write_pages(i, src).map_err(|e| err("write_pages", e));
        }
        if !self.extra.contains_key(&pfn) {
            if self.extra.len() >= MAX_POPULATED {
                return Err(err(
                    "write_pages",
                    format!("frame {pfn:#x}: more than {MAX_POPULATED} frames missing from the replica (was it restored from the same guest?)"),
                ));
            }
            xc.populate_physmap(domid, &[pfn])
                .map_err(|e| err("write_pages", format!("populate frame {pfn:#x}: {e}")))?;
            let m = ForeignMap::map(xc, domid, &[pfn], Prot::ReadWrite)
                .map_err(|e| err("write_pages", format!("map frame {pfn:#x}: {e}")))?;
            if let Some(e) = m.page_error(0) {
                return Err(err(
                    "write_pages",
                    format!("frame {pfn:#x} does not map after populating it (errno {e})"),
                ));
            }
            log::info!(
                "replica frame {pfn:#x} was not RAM: populated it ({} so far)",
                self.extra.len() + 1
            );
            self.extra.insert(pfn, m);
        }
        match self.extra.get_mut(&pfn) {
            Some(m) => m.write_pages(0, src).map_err(|e| err("write_pages", e)),
            None => Err(err(
                "write_pages",
                format!("frame {pfn:#x} lost its mapping"),
            )),
        }
    }

    /// Read one frame of the replica as [`GuestMemory::write`] left it (mapped at start-up or
    /// populated since).
    fn read_back(&self, pfn: u64, dst: &mut [u8]) -> Result<(), DomainError> {
        if let Some((m, i)) = self.locate(pfn) {
            return m.read_pages(i, dst).map_err(|e| err("read_back", e));
        }
        match self.extra.get(&pfn) {
            Some(m) => m.read_pages(0, dst).map_err(|e| err("read_back", e)),
            None => Err(err(
                "read_back",
                format!("frame {pfn:#x} was never written"),
            )),
        }
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

fn hvm_buf(xc: &mut Privcmd, domid: DomId) -> Result<HypercallBuf, DomainError> {
    let size = xc
        .hvm_context_size(domid)
        .map_err(|e| err("hvm context size", e))?;
    // Room for growth (e.g. XSAVE areas), bounded.
    let len = (size * 2).clamp(4096, MAX_HVM_CONTEXT);
    xc.alloc_buf(len).map_err(|e| err("hvm context buffer", e))
}

/// The protected guest on the primary.
pub struct XenSource {
    xc: Privcmd,
    xs: XsUnix,
    domid: DomId,
    mem: GuestMemory,
    bitmap: HypercallBuf,
    hvm: HypercallBuf,
    suspended: bool,
    suspend_requested: Option<Instant>,
    suspend_timeout: Duration,
    skipped_holes: u64,
}

impl std::fmt::Debug for XenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XenSource")
            .field("domid", &self.domid)
            .field("p2m", &self.mem.p2m)
            .field("ram", &self.mem.populated.len())
            .field("suspended", &self.suspended)
            .finish()
    }
}

impl XenSource {
    /// Attach to running guest `domid`: map its RAM, enable log-dirty.
    pub fn open(domid: DomId, suspend_timeout: Duration) -> Result<XenSource, DomainError> {
        let (mut xc, _) = open_domain(domid)?;
        let xs = XsUnix::new().map_err(|e| err("open xenstore", e))?;
        let mem = GuestMemory::map(&mut xc, domid, Prot::Read)?;
        let bitmap = xc
            .alloc_buf(mem.p2m.div_ceil(8) as usize)
            .map_err(|e| err("dirty bitmap", e))?;
        let hvm = hvm_buf(&mut xc, domid)?;
        xc.logdirty_enable(domid)
            .map_err(|e| err("enable log-dirty", e))?;
        Ok(XenSource {
            xc,
            xs,
            domid,
            mem,
            bitmap,
            hvm,
            suspended: false,
            suspend_requested: None,
            suspend_timeout,
            skipped_holes: 0,
        })
    }

    /// The guest's domain id.
    pub fn domid(&self) -> DomId {
        self.domid
    }

    /// Guest RAM frames (the most pages one checkpoint can carry).
    pub fn ram_pages(&self) -> u64 {
        self.mem.populated.len() as u64
    }

    /// Whether the guest is suspended (by a checkpoint or a fence).
    pub fn is_suspended(&self) -> bool {
        self.suspended
    }

    /// Pause the guest without its cooperation (a fence when it does not suspend).
    pub fn hard_pause(&mut self) -> Result<(), DomainError> {
        self.xc.pause(self.domid).map_err(|e| err("pause", e))
    }

    /// Ask the guest to suspend (xenstore `control/shutdown` = `suspend`) without waiting:
    /// the caller polls [`XenSource::poll_suspend`] from its event loop, so heartbeats and
    /// witness traffic go on while the guest reaches its suspend point.
    pub fn request_suspend(&mut self) -> Result<(), DomainError> {
        // One request at a time: the guest clears `control/shutdown` when it takes the request,
        // so writing it again while one is under way would make the guest suspend a second
        // time after its resume, with nobody waiting for it.
        if !request_needed(self.suspended, self.suspend_requested.is_some()) {
            return Ok(());
        }
        self.xs
            .write(&self.control_path(), "suspend")
            .map_err(|e| err("suspend", format!("xenstore write control/shutdown: {e}")))?;
        self.suspend_requested = Some(Instant::now());
        Ok(())
    }

    /// Whether the guest has suspended since [`XenSource::request_suspend`]. Errors when it
    /// shut down otherwise, or did not suspend within the timeout (the request is withdrawn).
    pub fn poll_suspend(&mut self) -> Result<bool, DomainError> {
        if self.suspended {
            return Ok(true);
        }
        let Some(t0) = self.suspend_requested else {
            return Err(err("suspend", "no suspend was requested"));
        };
        let info = self
            .xc
            .getdomaininfo(self.domid)
            .map_err(|e| err("suspend", e))?;
        if info.is_suspended() {
            self.suspend_requested = None;
            self.suspended = true;
            return Ok(true);
        }
        if info.is_dying() || info.shutdown_reason().is_some_and(|r| r != 2) {
            self.suspend_requested = None;
            return Err(err("suspend", "the guest shut down or crashed"));
        }
        if t0.elapsed() > self.suspend_timeout {
            self.suspend_requested = None;
            // Withdraw the request so a late guest does not suspend on its own.
            let _ = self.xs.write(&self.control_path(), "");
            return Err(err(
                "suspend",
                format!(
                    "the guest did not suspend within {:?} (does it have PV drivers / xenbus?)",
                    self.suspend_timeout
                ),
            ));
        }
        Ok(false)
    }

    /// Whether a suspend was requested and has not completed.
    pub fn suspending(&self) -> bool {
        self.suspend_requested.is_some()
    }

    /// Undo [`XenSource::hard_pause`].
    pub fn hard_unpause(&mut self) -> Result<(), DomainError> {
        self.xc.unpause(self.domid).map_err(|e| err("unpause", e))
    }

    fn control_path(&self) -> String {
        format!("/local/domain/{}/control/shutdown", self.domid)
    }
}

/// Whether a suspend request must be written to `control/shutdown`: not when the guest is
/// suspended already, nor while an earlier request is under way (see
/// [`XenSource::request_suspend`]).
fn request_needed(suspended: bool, pending: bool) -> bool {
    !suspended && !pending
}

impl Drop for XenSource {
    fn drop(&mut self) {
        if let Err(e) = self.xc.logdirty_off(self.domid) {
            log::debug!("log-dirty off for domain {}: {e}", self.domid);
        }
    }
}

impl CheckpointSource for XenSource {
    fn pages(&self) -> u64 {
        self.mem.p2m
    }

    fn max_pages(&self) -> u64 {
        self.ram_pages()
    }

    fn suspend(&mut self) -> Result<(), DomainError> {
        if self.suspended {
            return Err(err("suspend", "already suspended"));
        }
        self.request_suspend()?;
        loop {
            if self.poll_suspend()? {
                return Ok(());
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    fn resume(&mut self) -> Result<(), DomainError> {
        if !self.suspended {
            return Err(err("resume", "not suspended"));
        }
        self.xc
            .resume_cooperative(self.domid)
            .map_err(|e| err("resume", e))?;
        self.suspended = false;
        Ok(())
    }

    fn take_dirty(&mut self, full: bool, out: &mut Vec<u64>) -> Result<(), DomainError> {
        if out.capacity() - out.len() < self.mem.populated.len() {
            return Err(err("take_dirty", "output list too small"));
        }
        let p2m = self.mem.p2m;
        self.xc
            .logdirty_clean(self.domid, &mut self.bitmap, p2m, true)
            .map_err(|e| err("take_dirty", e))?;
        if full {
            out.extend_from_slice(&self.mem.populated);
            return Ok(());
        }
        let bytes = &self.bitmap.as_slice()[..p2m.div_ceil(8) as usize];
        for (i, w) in bytes.chunks(8).enumerate() {
            let mut word = [0u8; 8];
            word[..w.len()].copy_from_slice(w);
            let mut bits = u64::from_le_bytes(word);
            while bits != 0 {
                let b = bits.trailing_zeros() as u64;
                bits &= bits - 1;
                let pfn = i as u64 * 64 + b;
                if pfn >= p2m {
                    continue;
                }
                if self.mem.is_ram(pfn) {
                    out.push(pfn);
                } else {
                    self.skipped_holes += 1;
                    if self.skipped_holes.is_power_of_two() {
                        log::warn!(
                            "frame {pfn:#x} is dirty but was not RAM at start-up (ballooning is not supported); skipped ({} so far)",
                            self.skipped_holes
                        );
                    }
                }
            }
        }
        Ok(())
    }

    fn read_pages(&mut self, pfns: &[u64], dst: &mut [u8]) -> Result<(), DomainError> {
        if dst.len() != pfns.len() * PAGE_SIZE {
            return Err(err("read_pages", "buffer size does not match page count"));
        }
        // Runs of consecutive frames in one chunk are copied in one go (a full sync is one
        // long run per chunk); ForeignMap checks every page of a run is mapped.
        for (i, first, n) in runs(pfns) {
            let d = &mut dst[i * PAGE_SIZE..(i + n) * PAGE_SIZE];
            if n == 1 || self.mem.read(first, d).is_err() {
                // A run crossing a hole: page by page, naming the frame that fails.
                for (k, page) in d.chunks_exact_mut(PAGE_SIZE).enumerate() {
                    self.mem.read(first + k as u64, page)?;
                }
            }
        }
        Ok(())
    }

    fn save_state(&mut self, dst: &mut [u8]) -> Result<usize, DomainError> {
        let n = self
            .xc
            .get_hvm_context(self.domid, &mut self.hvm)
            .map_err(|e| err("save_state", e))?;
        let tsc = self
            .xc
            .get_tsc_info(self.domid)
            .map_err(|e| err("save_state", e))?;
        let mut params = heapless::Vec::new();
        for &p in hvm_param::CHECKPOINT_PARAMS.iter() {
            match self.xc.hvm_get_param(self.domid, p) {
                Ok(0) => {}
                Ok(v) => {
                    let _ = params.push((p, v));
                }
                // Some params are refused for some guest types; libxc skips those too.
                Err(e) => log::trace!("hvm param {p}: {e}"),
            }
        }
        let st = XenState {
            version: STATE_VERSION,
            tsc: (tsc.tsc_mode, tsc.gtsc_khz, tsc.incarnation),
            tsc_elapsed_nsec: tsc.elapsed_nsec,
            params,
            hvm: &self.hvm.as_slice()[..n],
        };
        let used = postcard::to_slice(&st, dst)
            .map_err(|e| err("save_state", format!("state record does not fit: {e}")))?;
        Ok(used.len())
    }
}

/// The paused replica on the standby.
#[derive(Debug)]
pub struct XenReplica {
    xc: Privcmd,
    domid: DomId,
    mem: Option<GuestMemory>,
    hvm: HypercallBuf,
    ram: u64,
    p2m: u64,
}

impl XenReplica {
    /// Attach to the paused replica `domid` (created by `xl restore -p`) and map its RAM.
    pub fn open(domid: DomId) -> Result<XenReplica, DomainError> {
        let (mut xc, info) = open_domain(domid)?;
        if !info.is_paused() {
            return Err(err(
                "open",
                format!("domain {domid} is running: the replica must be paused (xl restore -p)"),
            ));
        }
        let mem = GuestMemory::map(&mut xc, domid, Prot::ReadWrite)?;
        let hvm = xc
            .alloc_buf(MAX_HVM_CONTEXT)
            .map_err(|e| err("hvm context buffer", e))?;
        // A checkpoint carries the primary's RAM, which may hold a few frames more than the
        // replica had at start-up (see GuestMemory::write): room for those too.
        let ram = (mem.populated.len() as u64).max(info.max_pages) + MAX_POPULATED as u64;
        Ok(XenReplica {
            xc,
            domid,
            ram,
            p2m: mem.p2m,
            mem: Some(mem),
            hvm,
        })
    }

    /// The replica's domain id.
    pub fn domid(&self) -> DomId {
        self.domid
    }

    /// Guest RAM frames.
    pub fn ram_pages(&self) -> u64 {
        self.ram
    }

    /// Pause the activated replica (a fence).
    pub fn pause(&mut self) -> Result<(), DomainError> {
        self.xc.pause(self.domid).map_err(|e| err("pause", e))
    }

    /// Undo [`XenReplica::pause`].
    pub fn unpause(&mut self) -> Result<(), DomainError> {
        self.xc.unpause(self.domid).map_err(|e| err("unpause", e))
    }

    /// Let the replica run from the last applied checkpoint: drop the mapping and unpause.
    /// The guest returns from its suspend with 0 and resumes as after a migration.
    pub fn activate(&mut self) -> Result<(), DomainError> {
        self.mem = None;
        self.xc.unpause(self.domid).map_err(|e| err("activate", e))
    }
}

impl Replica for XenReplica {
    fn pages(&self) -> u64 {
        self.p2m
    }

    fn max_pages(&self) -> u64 {
        self.ram
    }

    fn write_pages(&mut self, pfns: &[u64], data: &[u8]) -> Result<(), DomainError> {
        let mem = self
            .mem
            .as_mut()
            .ok_or_else(|| err("write_pages", "the replica is active"))?;
        if data.len() != pfns.len() * PAGE_SIZE {
            return Err(err("write_pages", "data size does not match page count"));
        }
        for (i, first, n) in runs(pfns) {
            let d = &data[i * PAGE_SIZE..(i + n) * PAGE_SIZE];
            if !(n > 1 && mem.write_run(first, d)) {
                for (k, page) in d.chunks_exact(PAGE_SIZE).enumerate() {
                    mem.write(&mut self.xc, self.domid, first + k as u64, page)?;
                }
            }
        }
        Ok(())
    }

    fn read_back(&mut self, pfns: &[u64], dst: &mut [u8]) -> Result<(), DomainError> {
        let mem = self
            .mem
            .as_ref()
            .ok_or_else(|| err("read_back", "the replica is active"))?;
        if dst.len() != pfns.len() * PAGE_SIZE {
            return Err(err("read_back", "buffer size does not match page count"));
        }
        for (&pfn, page) in pfns.iter().zip(dst.chunks_exact_mut(PAGE_SIZE)) {
            mem.read_back(pfn, page)?;
        }
        Ok(())
    }

    fn load_state(&mut self, state: &[u8]) -> Result<(), DomainError> {
        let s = XenState::decode(state)?;
        let info = DomctlTscInfo {
            tsc_mode: s.tsc.0,
            gtsc_khz: s.tsc.1,
            incarnation: s.tsc.2,
            elapsed_nsec: s.tsc_elapsed_nsec,
            ..Default::default()
        };
        self.xc
            .set_tsc_info(self.domid, &info)
            .map_err(|e| err("load_state tsc", e))?;
        for &(p, v) in s.params.iter() {
            self.xc
                .hvm_set_param(self.domid, p, v)
                .map_err(|e| err("load_state param", format!("param {p}: {e}")))?;
        }
        self.hvm.as_mut_slice()[..s.hvm.len()].copy_from_slice(s.hvm);
        self.xc
            .set_hvm_context(self.domid, &self.hvm, s.hvm.len())
            .map_err(|e| err("load_state hvm context", e))
    }
}

#[cfg(test)]
#[path = "xen_tests.rs"]
mod tests;
