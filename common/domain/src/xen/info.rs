//! `xen-info`: a read-only look at a domain, printed for bring-up and troubleshooting.

use std::time::Duration;

use xen_sys::abi::hvm_param;
use xen_sys::Privcmd;
use xenstore_rs::unix::XsUnix;
use xenstore_rs::Xs;

use super::{err, resolve, DomainRef};
use crate::domain::DomainError;

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
