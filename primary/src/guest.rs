//! The protected domain behind hsb-primary: the `model` test double or a real Xen guest, and
//! how each holds its output until the standby acknowledges (DESIGN.md §2-3).
//!
//! The model domain answers its TCP service inside this process, so its output is held in
//! user space ([`hsb_domain::output::OutputCommit`], driven by main.rs). A Xen guest's output
//! is its network traffic: [`PlugOutput`] puts the guest's vif behind an ifb device whose root
//! qdisc is `plug`, closes an epoch at each checkpoint and releases it on the ack.
//!
//! Its block device, as the NBD export (`hsb_domain::disk::export`) serves it, is a
//! [`BlockDevice`]: the model domain's disk, or a Xen guest's replicated disk (`xen.disk`),
//! which the guest reaches through the export attached in dom0 (`phy:/dev/nbdN`).

use std::process::Command;

use hsb_common::time::Nanos;
use hsb_domain::disk::export::{BlockDevice, NbdExport};
use hsb_domain::disk::Disk;
use hsb_domain::domain::{CheckpointSource, DomainError};
use hsb_domain::model::ModelDomain;
use hsb_domain::service::Service;
use hsb_domain::xen::XenSource;
use xen_sys::{PlugAction, PlugQdisc};

/// What [`Guest::fence`] leaves to its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fence {
    /// The guest is stopped (suspended, paused, or the model's workload stopped).
    Done,
    /// A Xen guest was asked to suspend: poll for it, and pause it outright if it does not.
    Suspending,
}

/// The protected domain.
pub enum Guest {
    /// The hypervisor test double.
    Model(ModelDomain),
    /// A Xen PVH guest on this dom0.
    Xen(Box<XenGuest>),
}

/// A Xen guest and its fence state.
pub struct XenGuest {
    pub src: XenSource,
    /// Paused without its cooperation (a fence when it would not suspend): not checkpointable.
    pub hard_paused: bool,
}

impl Guest {
    /// The checkpoint interface.
    pub fn source(&mut self) -> &mut dyn CheckpointSource {
        match self {
            Guest::Model(d) => d,
            Guest::Xen(x) => &mut x.src,
        }
    }

    /// The model domain, if this is one.
    pub fn model(&mut self) -> Option<&mut ModelDomain> {
        match self {
            Guest::Model(d) => Some(d),
            Guest::Xen(_) => None,
        }
    }

    /// Whether the guest is suspended at a consistent point (by a checkpoint or a fence).
    pub fn is_suspended(&self) -> bool {
        match self {
            Guest::Model(d) => d.is_suspended(),
            Guest::Xen(x) => x.src.is_suspended(),
        }
    }

    /// Paused without a consistent suspend point: checkpoints must wait.
    pub fn hard_paused(&self) -> bool {
        matches!(self, Guest::Xen(x) if x.hard_paused)
    }

    /// Let the model's workload run up to `now` (a Xen guest runs by itself).
    pub fn run(&mut self, now: Nanos) {
        if let Guest::Model(d) = self {
            d.run(now);
        }
    }

    /// The model service's counter, for status.
    pub fn counter(&self) -> Option<u64> {
        match self {
            Guest::Model(d) => Some(d.counter()),
            Guest::Xen(_) => None,
        }
    }

    /// What the status output says the backend is.
    pub fn describe(&self) -> String {
        match self {
            Guest::Model(_) => "model (hypervisor test double)".into(),
            Guest::Xen(x) => format!("xen (domain {})", x.src.domid()),
        }
    }

    /// Fence (rule 4): stop the guest. The model's workload stops at once. A Xen guest is
    /// asked to suspend cooperatively, so it can still be checkpointed, without waiting: the
    /// caller polls it like a checkpoint's suspend ([`Fence::Suspending`]) and pauses it
    /// outright ([`Guest::pause_outright`]) if it does not get there. Its output is held by the
    /// plug meanwhile, as at any time before an ack.
    pub fn fence(&mut self) -> Fence {
        match self {
            Guest::Model(d) => {
                let _ = d.suspend();
                Fence::Done
            }
            Guest::Xen(x) => {
                if x.src.is_suspended() || x.hard_paused {
                    return Fence::Done;
                }
                match x.src.request_suspend() {
                    Ok(()) => Fence::Suspending,
                    Err(e) => {
                        log::error!("fence: {e}; pausing the guest without its cooperation");
                        self.pause_outright();
                        Fence::Done
                    }
                }
            }
        }
    }

    /// A fenced Xen guest that did not suspend: pause it without its cooperation.
    pub fn pause_outright(&mut self) {
        if let Guest::Xen(x) = self {
            if x.hard_paused || x.src.is_suspended() {
                return;
            }
            match x.src.hard_pause() {
                Ok(()) => x.hard_paused = true,
                Err(e) => log::error!("fence: cannot pause the guest: {e}"),
            }
        }
    }

    /// Undo [`Guest::fence`].
    pub fn unfence(&mut self) {
        match self {
            Guest::Model(d) => {
                let _ = d.resume();
            }
            Guest::Xen(x) => {
                if x.hard_paused {
                    match x.src.hard_unpause() {
                        Ok(()) => x.hard_paused = false,
                        Err(e) => log::error!("unfence: cannot unpause the guest: {e}"),
                    }
                } else if x.src.is_suspended() {
                    if let Err(e) = x.src.resume() {
                        log::error!("unfence: {e}");
                    }
                }
            }
        }
    }
}

/// Output commit for a Xen guest through the `plug` qdisc.
///
/// Guest transmit traffic arrives on the vif's ingress in dom0; an ingress `matchall` filter
/// redirects all of it (every protocol, so ARP and IPv6 are held too, unlike libxl's `proto ip`
/// filter) to an ifb device whose root qdisc is `plug`. At each checkpoint the epoch's packets
/// are closed with `BUFFER`; `RELEASE_ONE` lets them out on the ack. `sch_plug` keeps one
/// closed epoch, so a checkpoint taken while one is outstanding does not close another: its
/// packets join the next, and go out only after a later ack (never before one).
pub struct PlugOutput {
    qdisc: PlugQdisc,
    vif: String,
    ifb: String,
    /// The checkpoint whose ack releases the closed epoch.
    pending: Option<u64>,
    /// Passing everything (unprotected under a lease) until the next checkpoint.
    indefinite: bool,
    pub releases: u64,
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl PlugOutput {
    /// Put `vif`'s guest traffic behind a fresh ifb with a `plug` root qdisc (starts holding).
    pub fn setup(vif: &str, domid: u16, between: &mut dyn FnMut()) -> Result<PlugOutput, String> {
        let ifb = format!("hsbifb{domid}");
        xen_sys::netlink::ifindex(vif).map_err(|e| format!("guest vif {vif}: {e}"))?;
        // Leftovers of an earlier run.
        let _ = run(&["tc", "qdisc", "del", "dev", vif, "ingress"]);
        let _ = run(&["ip", "link", "del", &ifb]);
        run(&["ip", "link", "add", "name", &ifb, "type", "ifb"])
            .map_err(|e| format!("{e} (is the ifb module loaded?)"))?;
        between();
        let steps: [&[&str]; 4] = [
            &["ip", "link", "set", &ifb, "up"],
            &[
                "tc", "qdisc", "add", "dev", &ifb, "root", "plug", "limit", "10000000",
            ],
            &["tc", "qdisc", "add", "dev", vif, "ingress"],
            &[
                "tc", "filter", "add", "dev", vif, "parent", "ffff:", "protocol", "all",
                "matchall", "action", "mirred", "egress", "redirect", "dev", &ifb,
            ],
        ];
        for s in steps {
            between();
            if let Err(e) = run(s) {
                let _ = run(&["tc", "qdisc", "del", "dev", vif, "ingress"]);
                let _ = run(&["ip", "link", "del", &ifb]);
                return Err(format!(
                    "{e} (output commit needs sch_plug, sch_ingress, cls_matchall and act_mirred)"
                ));
            }
        }
        let idx = xen_sys::netlink::ifindex(&ifb).map_err(|e| format!("{ifb}: {e}"))?;
        let qdisc = PlugQdisc::open(idx).map_err(|e| e.to_string())?;
        log::info!("output commit: {vif} -> {ifb} (plug): guest output waits for acks");
        Ok(PlugOutput {
            qdisc,
            vif: vif.to_string(),
            ifb,
            pending: None,
            indefinite: false,
            releases: 0,
        })
    }

    /// A checkpoint `ckpt` is being captured: close the epoch's output.
    pub fn close(&mut self, ckpt: u64) {
        if self.pending.is_none() {
            if let Err(e) = self.qdisc.command(PlugAction::Buffer) {
                log::error!("output commit: {e}");
                return;
            }
            self.indefinite = false;
        }
        self.pending = Some(ckpt);
    }

    /// Release what checkpoint `upto`'s ack covers: the closed epoch if `upto` covers it, or,
    /// with `u64::MAX` (unprotected under a lease), everything until the next checkpoint.
    /// Nothing is sent to the kernel when there is nothing to release.
    pub fn release(&mut self, upto: u64) {
        if upto == u64::MAX {
            if self.indefinite {
                return;
            }
            match self.qdisc.command(PlugAction::ReleaseIndefinite) {
                Ok(()) => {
                    self.pending = None;
                    self.indefinite = true;
                }
                Err(e) => log::error!("output commit: {e}"),
            }
        } else if self.pending.is_some_and(|p| p <= upto) {
            match self.qdisc.command(PlugAction::ReleaseOne) {
                Ok(()) => {
                    self.pending = None;
                    self.releases += 1;
                }
                Err(e) => log::error!("output commit: {e}"),
            }
        }
    }

    /// At exit (SIGTERM): nothing more leaves. What the plug holds stays held: closing our
    /// netlink socket sends no command, and `sch_plug` releases only on `RELEASE_ONE` or
    /// `RELEASE_INDEFINITE`; the qdisc, the ifb and the redirect outlive this process, so the
    /// guest's later output is held too. The next start's [`PlugOutput::setup`] deletes the
    /// ifb, and what it held with it: dropped, never released. If the plug was passing
    /// everything (unprotected, under a witness lease that nobody renews once this process is
    /// gone), it is closed now with `BUFFER`. Whether the plug now holds everything: `false`
    /// if it passes output and could not be closed (the caller then pauses the guest).
    pub fn hold_on_exit(&mut self) -> bool {
        if self.indefinite {
            if let Err(e) = self.qdisc.command(PlugAction::Buffer) {
                log::error!("output commit: cannot close the plug at exit: {e}");
                return false;
            }
            self.indefinite = false;
        }
        log::info!(
            "output commit: {} stays plugged{}: held output is never released; the next start drops it with {}",
            self.ifb,
            self.pending
                .map_or(String::new(), |c| format!(" (holding the epoch of checkpoint {c})")),
            self.ifb
        );
        true
    }

    /// The checkpoint whose ack releases the closed epoch.
    pub fn pending(&self) -> Option<u64> {
        self.pending
    }
}

impl std::fmt::Debug for PlugOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PlugOutput({} -> {})", self.vif, self.ifb)
    }
}

/// Open the guest named in the settings, serving its disk (`disk`, through the export it is
/// served by already) while its memory is mapped and its plug set up.
pub fn open_xen(
    x: &hsb_domain::xen::XenSettings,
    mut disk: Option<Disk>,
    mut export: Option<(&mut NbdExport, &mio::Registry)>,
) -> Result<(Guest, Option<PlugOutput>), DomainError> {
    let domid = hsb_domain::xen::resolve(&x.domain)?;
    let mut serve = || {
        if let (Some((n, registry)), Some(d)) = (export.as_mut(), disk.as_mut()) {
            n.pump(registry, Some(d), false);
        }
    };
    let mut src = XenSource::open(domid, x.suspend_timeout, &mut serve)?;
    let plug = if x.plug {
        let vif = x.vif.clone().unwrap_or_else(|| format!("vif{domid}.0"));
        Some(
            PlugOutput::setup(&vif, domid, &mut serve).map_err(|detail| DomainError {
                op: "output commit",
                detail,
            })?,
        )
    } else {
        log::warn!("xen.output = none: guest output is NOT held until acks; a failover may lose what clients saw");
        None
    };
    if let Some(d) = disk {
        src.attach_disk(d);
    }
    Ok((
        Guest::Xen(Box::new(XenGuest {
            src,
            hard_paused: false,
        })),
        plug,
    ))
}

/// Open the protected domain of the settings: a Xen guest (with its replicated disk, opened
/// and served already by `export`, which goes on serving it while the guest is attached) and
/// its plug, or the model domain
/// (from the hand-over image when one is given, which is then set aside) and its service.
pub fn open(
    s: &hsb_primary::config::Settings,
    poll: &mio::Poll,
    service_base: usize,
    (xen_disk, export): (Option<Disk>, Option<&mut NbdExport>),
) -> std::io::Result<(Guest, Option<PlugOutput>, Option<Service>)> {
    use std::io;
    if let Some(x) = &s.xen {
        let export = export.map(|n| (n, poll.registry()));
        let (g, plug) = open_xen(x, xen_disk, export)
            .map_err(|e| io::Error::other(format!("xen backend: {e}")))?;
        return Ok((g, plug, None));
    }
    let dom = if s.start_image.as_os_str().is_empty() {
        ModelDomain::new(s.model_pages, s.dirty_rate, s.seed).with_pattern(s.write_pattern)
    } else {
        let d = ModelDomain::load_image(&s.start_image, s.model_pages, s.dirty_rate)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("start_image: {e}")))?
            .with_pattern(s.write_pattern);
        log::info!(
            "starting from the domain image {} in epoch {} (counter {})",
            s.start_image.display(),
            s.start_epoch,
            d.counter()
        );
        // Consumed: a restart must not start from it again (it would roll back what this
        // primary served since).
        let mut used = s.start_image.clone().into_os_string();
        used.push(".used");
        if let Err(e) = std::fs::rename(&s.start_image, &used) {
            log::warn!(
                "cannot set the domain image aside as {}: {e}",
                used.to_string_lossy()
            );
        }
        d
    };
    let mut dom = dom;
    crate::disk::attach(&mut dom, s)?;
    let service = Service::try_bind(s.service, poll.registry(), service_base, s.max_clients)
        .map_err(|e| io::Error::new(e.kind(), format!("model service {}: {e}", s.service)))?;
    log::info!(
        "node {} (model backend: the hypervisor test double): {} pages ({} MiB), workload {} pages/s, service on {}{}",
        s.node,
        s.model_pages,
        (s.model_pages * 4096) >> 20,
        s.dirty_rate,
        s.service,
        if service.is_none() { " (busy: retried until it is free)" } else { "" }
    );
    Ok((Guest::Model(dom), None, service))
}

impl Guest {
    /// The guest's block device, if it has one the export can serve.
    pub(crate) fn block_device(&mut self) -> Option<&mut dyn BlockDevice> {
        match self {
            Guest::Model(m) if m.disk_ref().is_some() => Some(m),
            Guest::Model(_) => None,
            Guest::Xen(x) => x.src.disk_mut().map(|d| d as &mut dyn BlockDevice),
        }
    }
}
