//! A daemon whose Xen domain does not exist yet serves the domain's disk until it does: the
//! guest's `phy:/dev/nbdN` (attached in dom0 to the daemon's NBD export) must exist before
//! `xl create` (primary) or `xl restore -p` (standby), so the daemon starts first.

use std::io;
use std::time::Duration;

use hsb_common::signals::{Request, SignalHandler};
use hsb_common::time::Clock;

use super::settings::{resolve, DomainRef};
use crate::disk::export::{BlockDevice, NbdExport};

/// How often the domain is looked for.
const LOOK_EVERY: Duration = Duration::from_millis(200);
/// How often the wait is logged again.
const LOG_EVERY: Duration = Duration::from_secs(30);

/// Serve `export` from `dev` until `domain` exists. Returns false when a signal asked the
/// daemon to stop meanwhile (a reload is logged and otherwise waits for the daemon's loop).
pub fn serve_until_domain(
    poll: &mut mio::Poll,
    export: &mut NbdExport,
    dev: &mut dyn BlockDevice,
    domain: &DomainRef,
    clock: &Clock,
    signals: &mut SignalHandler,
) -> io::Result<bool> {
    let t0 = clock.now();
    let mut next_log = t0;
    let mut stop = None;
    let mut last_err = String::new();
    export.serve_while(poll, dev, LOOK_EVERY, || {
        let now = clock.now();
        for r in signals.take(now) {
            match r {
                Request::Stop(name) => stop = Some(name),
                Request::Reload => {
                    log::info!("SIGHUP while waiting for {domain}: nothing to reload yet")
                }
                Request::Ignore(_) => {}
            }
        }
        if stop.is_some() {
            return false;
        }
        match resolve(domain) {
            Ok(id) => {
                log::info!(
                    "{domain} exists (domain id {id}) after {:.1} s: attaching to it",
                    now.since(t0).as_secs_f64()
                );
                false
            }
            Err(e) => {
                last_err = e.to_string();
                if now >= next_log {
                    log::info!(
                        "waiting for {domain} ({last_err}); its disk is served meanwhile, for the domain's phy:/dev/nbdN"
                    );
                    next_log = now.plus(LOG_EVERY);
                }
                true
            }
        }
    })?;
    if let Some(name) = stop {
        log::info!("{name}: stopping while waiting for {domain} ({last_err})");
        return Ok(false);
    }
    Ok(true)
}
