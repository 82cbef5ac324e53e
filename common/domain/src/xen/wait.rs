//! A daemon whose Xen domain does not exist yet serves the domain's disk until it does: the
//! guest's `phy:/dev/nbdN` (attached in dom0 to the daemon's NBD export) must exist before
//! `xl create` (primary) or `xl restore -p` (standby), so the daemon starts first.
//!
//! A domain exists in xenstore from the start of its creation, long before its memory is
//! built or restored. The toolstack adds its disks only after that (libxl's
//! `domcreate_rebuild_done`), so the daemon waits for the disk's backend too: `InitWait` or
//! later for a restored replica (its frontend connects when it runs), `Connected` for a
//! running guest (whose vif, which output commit needs, is attached before it runs).

use std::io;
use std::path::Path;
use std::time::Duration;

use hsb_common::signals::{Request, SignalHandler};
use hsb_common::time::Clock;
use xen_sys::DomId;
use xenstore_rs::unix::XsUnix;
use xenstore_rs::Xs;

use super::settings::{resolve, DomainRef, XenSettings};
use crate::disk::export::{BlockDevice, Inherit, NbdExport, ReadOnly, NBD_LISTEN};
use crate::disk::{Disk, DiskConfig};

/// Before a daemon serves its dom0 the guest's disk: lock its memory and mark it an I/O
/// flusher, so that it never waits for memory only its own device's writeback could free (a
/// deadlock of the whole dom0). Locking is required; the flusher mark (Linux 5.6) is logged
/// when refused.
fn harden_for_serving_disk() -> io::Result<()> {
    xen_sys::process::lock_memory().map_err(|e| {
        io::Error::other(format!(
            "xen.disk: cannot lock this daemon's memory ({e}): a daemon serving its own dom0 a block device must never be paged out (run it as root, or raise its memory lock limit: LimitMEMLOCK=infinity)"
        ))
    })?;
    match xen_sys::process::set_io_flusher() {
        Ok(()) => log::info!("xen.disk: memory locked as it is touched (mlockall, on fault), marked an I/O flusher"),
        Err(e) => log::warn!(
            "xen.disk: memory locked, but not marked an I/O flusher ({e}; Linux 5.6 and CAP_SYS_RESOURCE needed): under memory pressure its allocations may wait on I/O"
        ),
    }
    Ok(())
}

/// How often the domain is looked for.
const LOOK_EVERY: Duration = Duration::from_millis(200);
/// How often the wait is logged again.
const LOG_EVERY: Duration = Duration::from_secs(30);

/// What the daemon waits for of its domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// A replica restored paused (`xl restore -p`): a disk backend in `InitWait` or later.
    Restored,
    /// A running guest: a disk backend `Connected`.
    Running,
}

/// Xenbus states.
const INIT_WAIT: u32 = 2;
const CONNECTED: u32 = 4;

impl Ready {
    /// Whether a disk backend in xenbus state `state` is what the daemon waits for.
    fn met_by(self, state: u32) -> bool {
        match self {
            Ready::Restored => state >= INIT_WAIT,
            Ready::Running => state == CONNECTED,
        }
    }
}

/// The highest state of the domain's disk backends in this dom0 (`None`: no disk yet).
fn disk_backend_state(domid: DomId) -> Result<Option<u32>, String> {
    let xs = XsUnix::new().map_err(|e| format!("cannot reach xenstore: {e}"))?;
    let dir = format!("/local/domain/0/backend/vbd/{domid}");
    let Ok(devs) = xs.directory(&dir) else {
        return Ok(None);
    };
    Ok(devs
        .iter()
        .take(64)
        .filter_map(|d| xs.read(&format!("{dir}/{d}/state")).ok())
        .filter_map(|s| s.trim().parse::<u32>().ok())
        .max())
}

/// Whether the domain is ready for the daemon, and if not what it waits for.
fn ready(domain: &DomainRef, want: Ready) -> Result<DomId, String> {
    let id = resolve(domain).map_err(|e| e.to_string())?;
    match disk_backend_state(id)? {
        Some(s) if want.met_by(s) => Ok(id),
        state => Err(format!(
            "it exists (domain id {id}); its disk's backend is {}, waiting for {}",
            state.map_or("not there yet".into(), |s| format!("in xenbus state {s}")),
            match want {
                Ready::Restored => "InitWait (the restore is complete)",
                Ready::Running => "Connected (the guest runs)",
            }
        )),
    }
}

/// What [`serve_disk_first`] did.
pub enum Early {
    /// No Xen disk to serve first.
    NoDisk,
    /// A signal asked the daemon to stop while it waited.
    Stop,
    /// The domain is ready: its disk, and the export serving it.
    Served(Box<(Disk, NbdExport)>),
}

/// A Xen guest's replicated disk (`xen.disk`, served at `disk.nbd_socket`) is served before
/// the daemon opens its domain: the process hardened ([`harden_for_serving_disk`]), the disk
/// opened with `open`, the export bound (or taken over: `inherit`, after a standby's
/// hand-over) and served until the domain is ready (`want`); a replica's (`Ready::Restored`)
/// reads only.
pub fn serve_disk_first(
    poll: &mut mio::Poll,
    (xen, path, inherit): (Option<&XenSettings>, Option<&Path>, Option<Inherit>),
    want: Ready,
    clock: &Clock,
    signals: &mut SignalHandler,
    open: impl FnOnce(&DiskConfig) -> io::Result<Disk>,
) -> io::Result<Early> {
    let (Some(x), Some(path)) = (xen, path) else {
        return Ok(Early::NoDisk);
    };
    let Some(cfg) = &x.disk else {
        return Ok(Early::NoDisk);
    };
    harden_for_serving_disk()?;
    let mut disk = open(cfg)?;
    let mut export = NbdExport::open(path, disk.size(), inherit, poll.registry())?;
    let ready = if want == Ready::Restored {
        serve_until_domain(
            poll,
            &mut export,
            &mut ReadOnly(&mut disk),
            &x.domain,
            want,
            clock,
            signals,
        )?
    } else {
        serve_until_domain(
            poll,
            &mut export,
            &mut disk,
            &x.domain,
            want,
            clock,
            signals,
        )?
    };
    Ok(if ready {
        Early::Served(Box::new((disk, export)))
    } else {
        Early::Stop
    })
}

/// Serve `export` from `dev` until `domain` exists and is ready (`want`). Returns false when
/// a signal asked the daemon to stop meanwhile (a reload is logged and otherwise waits for the
/// daemon's loop).
fn serve_until_domain(
    poll: &mut mio::Poll,
    export: &mut NbdExport,
    dev: &mut dyn BlockDevice,
    domain: &DomainRef,
    want: Ready,
    clock: &Clock,
    signals: &mut SignalHandler,
) -> io::Result<bool> {
    let t0 = clock.now();
    let mut next_log = t0;
    let mut last_err = String::new();
    // A loop of its own on `poll`, which holds only the export's tokens yet.
    let mut events = mio::Events::with_capacity(16);
    loop {
        let now = clock.now();
        let mut stop = None;
        for r in signals.take(now) {
            match r {
                Request::Stop(name) => stop = Some(name),
                Request::Reload => {
                    log::info!("SIGHUP while waiting for {domain}: nothing to reload yet")
                }
                Request::Ignore(_) => {}
            }
        }
        if let Some(name) = stop {
            log::info!("{name}: stopping while waiting for {domain} ({last_err})");
            return Ok(false);
        }
        match ready(domain, want) {
            Ok(id) => {
                log::info!(
                    "{domain} exists (domain id {id}) after {:.1} s: attaching to it",
                    now.since(t0).as_secs_f64()
                );
                return Ok(true);
            }
            Err(e) => {
                if e != last_err {
                    next_log = now;
                }
                last_err = e;
                if now >= next_log {
                    log::info!(
                        "waiting for {domain} ({last_err}); its disk is served meanwhile, for the domain's phy:/dev/nbdN"
                    );
                    next_log = now.plus(LOG_EVERY);
                }
            }
        }
        let timeout = if export.has_more() {
            Duration::ZERO
        } else {
            LOOK_EVERY
        };
        match poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        if events.iter().any(|e| e.token() == NBD_LISTEN) {
            export.accept(poll.registry());
        }
        export.pump(poll.registry(), Some(&mut *dev), false);
    }
}
