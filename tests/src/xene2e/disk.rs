//! The `disk` mode (issue 14): a guest whose ext4 data disk hsb replicates. Its disk is served
//! by hsb-primary's NBD export and attached in host 1's dom0 as `/dev/nbd0` (the guest's
//! `xvdb`); host 2's hsb-standby serves the replica's disk the same way. The guest's service
//! logs each `PUT` on that file system and fsyncs it before it answers. F2 (replication cut,
//! healed): no failover, and the resynchronisation copies only the tracks that can differ. F1
//! (host 1 killed):
//! every acknowledged `PUT` must be on the activated replica, and its file system must check
//! clean.
//!
//! The order is the operator's (README, "Disks of a Xen guest"): both daemons first (they serve
//! their disks while their domains do not exist yet), `nbd-client` on both hosts, the guest
//! created under a setup name, the replica made from it (`xl save -c`, `xl restore -p`), and
//! only then the guest renamed to the name hsb-primary waits for: hsb-primary must not
//! checkpoint a guest the toolstack is saving.

use std::time::{Duration, Instant};

use hsb_tests::faults::Op;

use super::client::{after_kill, ClientRun};
use super::etc::{PRIMARY_NBD, PROMOTE_CONF, STANDBY_NBD};
use super::run::{boot, f1_aftermath, kill_host1, make_replica, start_witnesses, wait_protected};
use super::{
    log, ns_cmd_within, num, on, rig, status, status_of, wait, Fail, Report, GUEST, GUEST_SERVICE,
};

/// The guest's name while the replica is made.
const SETUP_NAME: &str = "hsb-setup";
const DISK_CFG: &str = "/etc/xen/hsb-guest-disk.cfg";

pub(super) fn run_disk(keep: bool) -> Result<Report, Fail> {
    let mut rep = Report::default();
    let (_rig, dir, bin) = boot(true, keep, &mut rep)?;

    // Both daemons, serving their disks until their domains exist.
    on(
        1,
        "mkdir -p /run/hsb /var/lib/hsb; for m in ifb sch_plug sch_ingress cls_matchall act_mirred nbd; do modprobe $m; done; HSB_LOG=info setsid hsb-primary run -c /etc/hsb/primary.conf >/var/log/hsb-primary.log 2>&1 </dev/null & sleep 2; tail -3 /var/log/hsb-primary.log",
    )?;
    on(
        2,
        "mkdir -p /run/hsb /var/lib/hsb; for m in ifb sch_plug sch_ingress cls_matchall act_mirred nbd; do modprobe $m; done; HSB_LOG=info setsid hsb-standby run -c /etc/hsb/standby.conf >/var/log/hsb-standby.log 2>&1 </dev/null & sleep 2; tail -3 /var/log/hsb-standby.log",
    )?;
    // The kernel's NBD client on each host; the guest's file system made through hsb-primary.
    let t = Instant::now();
    on(
        1,
        &format!("nbd-client -unix {PRIMARY_NBD} /dev/nbd0 && mkfs.ext4 -q -F -E nodiscard,lazy_itable_init=0,lazy_journal_init=0 /dev/nbd0 && blockdev --getsize64 /dev/nbd0"),
    )?;
    on(
        2,
        &format!("nbd-client -unix {STANDBY_NBD} /dev/nbd0 && blockdev --getsize64 /dev/nbd0"),
    )?;
    rep.add(format!(
        "disks: /dev/nbd0 attached to hsb-primary's export on host 1 (mkfs.ext4 through it) and to hsb-standby's on host 2 in {:.0} s",
        t.elapsed().as_secs_f64()
    ));
    let t = Instant::now();
    on(1, &format!("xl create {DISK_CFG} 'name=\"{SETUP_NAME}\"'")).map_err(Fail::Rig)?;
    wait(
        "the guest's service",
        Duration::from_secs(300),
        Duration::from_secs(2),
        || {
            rig(&["counter", "PING"])
                .ok()
                .filter(|r| r.trim() == "PONG")
        },
    )
    .map_err(|e| {
        let c = on(
            1,
            &format!("tail -20 /var/log/xen/console/guest-{SETUP_NAME}.log"),
        )
        .unwrap_or_default();
        Fail::Rig(format!("{e}\n--- guest console ---\n{c}"))
    })?;
    rep.add(format!(
        "guest (PVH, data disk xvdb = /dev/nbd0, ext4 on /data) answering on host 1 after {:.0} s",
        t.elapsed().as_secs_f64()
    ));
    make_replica(&mut rep, SETUP_NAME, DISK_CFG)?;
    on(1, &format!("xl rename {SETUP_NAME} {GUEST}"))?;
    let witnesses = start_witnesses(&dir, &bin)?;
    wait_protected(&mut rep)?;
    let st = wait(
        "the replica's disk at a checkpoint",
        Duration::from_secs(300),
        Duration::from_secs(3),
        || status(2, "hsb-standby").filter(|s| num(s, "disk_applied_checkpoint") > 0),
    )?;
    rep.add(format!(
        "the replica's disk: {} ({} disk writes applied)",
        st.get("disk").cloned().unwrap_or_default(),
        num(&st, "disk_applied_writes")
    ));

    // Clients: INCR (memory) and PUT (the disk, fsynced by the guest).
    let incr = ClientRun::start(3600)?;
    let puts = ClientRun::start_kind("putter", 3600)?;
    std::thread::sleep(Duration::from_secs(40));
    let p1 = status(1, "hsb-primary").unwrap_or_default();
    rep.add(format!(
        "steady state: {} PUTs acknowledged in 40 s; primary: {} NBD writes ({} KiB), {} flushes, last write in checkpoint {}, acked checkpoint {}",
        puts.snapshot().iter().filter(|o| o.value.is_some()).count(),
        num(&p1, "nbd_writes"),
        num(&p1, "nbd_write_bytes") >> 10,
        num(&p1, "nbd_flushes"),
        p1.get("nbd_last_write_checkpoint").cloned().unwrap_or_default(),
        p1.get("acked_checkpoint").cloned().unwrap_or_default(),
    ));
    let mut ok = true;

    // F2: the replication network cut for 30 s while the guest writes; then the heal, whose
    // resynchronisation must copy only the disk's tracks that can differ.
    let p0 = status(1, "hsb-primary").unwrap_or_default();
    let s0 = status(2, "hsb-standby").unwrap_or_default();
    rig(&["cut-repl"])?;
    let cut = Instant::now();
    std::thread::sleep(Duration::from_secs(30));
    let s_cut = status(2, "hsb-standby").unwrap_or_default();
    let served = puts
        .snapshot()
        .iter()
        .filter(|o| o.value.is_some() && o.end >= cut + Duration::from_secs(10))
        .count();
    rig(&["heal-repl"])?;
    let stayed = s_cut.get("state").map(String::as_str) != Some("active");
    let t = Instant::now();
    let healed = wait(
        "a fresh full synchronisation after the heal",
        Duration::from_secs(300),
        Duration::from_secs(3),
        || {
            status(2, "hsb-standby").filter(|s| {
                num(s, "full_syncs") > num(&s0, "full_syncs") && s["state"] == "replicating"
            })
        },
    );
    let p2 = status(1, "hsb-primary").unwrap_or_default();
    let d = |k: &str| num(&p2, k).saturating_sub(num(&p0, k));
    // (Cumulative: resynchronisations and full copies; of the last one: its tracks and bytes.)
    let size = num(&p2, "disk_size").max(1);
    let copied = num(&p2, "disk_resync_bytes");
    let incremental =
        d("disk_resyncs") >= 1 && d("disk_full_copies") == 0 && copied > 0 && copied < size / 2;
    let f2_ok = stayed && served > 0 && healed.is_ok() && incremental;
    ok &= f2_ok;
    rep.add(format!(
        "F2 replication cut 30 s: no failover: {stayed}; {served} PUTs acknowledged from host 1 in the last 20 s of the cut; heal: {} {:.0} s after it; the disk's resynchronisation copied {} KiB ({} tracks) of {} KiB ({:.1}%), {} full copies: {}",
        if healed.is_ok() { "resynchronised" } else { "NOT resynchronised" },
        t.elapsed().as_secs_f64(),
        copied >> 10,
        num(&p2, "disk_resync_tracks"),
        size >> 10,
        copied as f64 * 100.0 / size as f64,
        d("disk_full_copies"),
        if f2_ok { "correct" } else { "WRONG" }
    ));
    if let Err(e) = healed {
        rep.add(format!("heal: {e}"));
    }
    std::thread::sleep(Duration::from_secs(10));

    // F1: host 1 dies. The activated standby hands over to hsb-primary (promote_config),
    // which takes its NBD export over with the kernel's connection: the guest's disk never
    // closes, and the guest goes on writing through the promoted primary.
    let (killed, active, decided) = kill_host1(true)?;
    let promoted = wait(
        "the promoted hsb-primary on host 2",
        Duration::from_secs(120),
        Duration::from_secs(2),
        || status_of(2, "hsb-primary", PROMOTE_CONF),
    );
    let since = Instant::now();
    std::thread::sleep(Duration::from_secs(15));
    let incr_ops = incr.stop();
    let put_ops = puts.stop();
    let promoted_st = status_of(2, "hsb-primary", PROMOTE_CONF).unwrap_or_default();
    let after_handover = put_ops
        .iter()
        .filter(|o| o.value.is_some() && o.start >= since)
        .count();
    let writes = num(&promoted_st, "nbd_writes");
    let kept = promoted.is_ok()
        && num(&promoted_st, "nbd_connections") == 1
        && promoted_st
            .get("nbd_client")
            .is_some_and(|c| c.starts_with("connected"))
        && writes > 0
        && after_handover > 0;
    ok &= kept;
    rep.add(format!(
        "hand-over to hsb-primary (promote_config) with the disk: {}; its export: client {}, {} connections (1: taken over, not connected again), {} writes, {} flushes, {} errors; {after_handover} PUTs acknowledged in the 15 s after it answered (the guest's fsynced records go through it, its output leaves under the witnesses' leases): {}",
        match &promoted {
            Ok(s) => format!("hsb-primary answers on host 2 in state {}", s.get("state").map_or("?", String::as_str)),
            Err(e) => e.clone(),
        },
        promoted_st.get("nbd_client").map_or("?", String::as_str),
        num(&promoted_st, "nbd_connections"),
        writes,
        num(&promoted_st, "nbd_flushes"),
        num(&promoted_st, "nbd_errors"),
        if kept { "correct" } else { "WRONG" }
    ));
    if !kept {
        rep.add(format!(
            "host 2's log (hsb-standby, then hsb-primary):\n```\n{}```",
            on(2, "grep -v DEBUG /var/log/hsb-standby.log | tail -40").unwrap_or_default()
        ));
    }
    let (first_after, _) = after_kill(&put_ops, killed);
    let f1_ok = active.is_ok() && first_after.is_some();
    ok &= f1_ok;
    rep.add(format!(
        "F1 host 1 killed: standby {} after {:.1} s (seen when the promoted hsb-primary's status answers, once it has attached to the guest); first PUT acknowledged by the replica {:.1} s after the kill: {}",
        if active.is_ok() { "activated and handed over" } else { "did NOT activate" },
        decided.as_secs_f64(),
        first_after.map_or(f64::NAN, |d| d.as_secs_f64()),
        if f1_ok { "correct" } else { "WRONG" }
    ));
    ok &= f1_aftermath(
        &mut rep,
        active,
        "INCR client history",
        &incr_ops,
        &dir,
        killed,
    );

    // Every acknowledged PUT on the replica, read through its service.
    let PutCheck {
        acked,
        missing,
        errors,
        records,
    } = check_puts(&put_ops)?;
    let missing: Vec<u64> = missing.into_iter().chain(errors).collect();
    let puts_ok = !acked.is_empty() && missing.is_empty();
    ok &= puts_ok;
    rep.add(format!(
        "PUTs: {} requests, {} acknowledged, {} of them missing on the replica{}; the replica's records file holds {records} records: {}",
        put_ops.len(),
        acked.len(),
        missing.len(),
        if missing.is_empty() {
            String::new()
        } else {
            format!(" (first: {:?})", &missing[..missing.len().min(10)])
        },
        if puts_ok { "correct" } else { "WRONG" }
    ));

    // The replica's disk itself: the guest stopped, the journal replayed by a mount, every
    // acknowledged PUT in the records file there, then a full read-only check.
    let d = disk_after(2, "/dev/nbd0")?;
    let on_disk_missing: Vec<u64> = acked
        .iter()
        .copied()
        .filter(|n| !d.keys.contains(n))
        .collect();
    let clean = d.clean && on_disk_missing.is_empty();
    ok &= clean;
    rep.add(format!(
        "the replica's disk after F1 (the guest destroyed; mounted, which replays the journal; then e2fsck -fn): {} records in /data/records, {} acknowledged PUTs missing there; file system {}: {}\n```\n{}```",
        d.keys.len(),
        on_disk_missing.len(),
        if d.clean { "clean" } else { "NOT clean" },
        if clean { "correct" } else { "WRONG" },
        d.fsck
    ));
    let s2 = status_of(2, "hsb-primary", PROMOTE_CONF).unwrap_or_default();
    rep.add(format!(
        "host 2's hsb-primary (promoted, epoch {}, authority {}), its export: {} reads, {} writes ({} KiB), {} flushes, {} errors",
        s2.get("epoch").cloned().unwrap_or_default(),
        s2.get("authority").cloned().unwrap_or_default(),
        num(&s2, "nbd_reads"),
        num(&s2, "nbd_writes"),
        num(&s2, "nbd_write_bytes") >> 10,
        num(&s2, "nbd_flushes"),
        num(&s2, "nbd_errors"),
    ));
    log("disk run done");
    rep.ok = ok;
    drop(witnesses);
    Ok(rep)
}

/// What the serving copy says of the acknowledged PUTs of a client's history.
pub(super) struct PutCheck {
    /// The keys' numbers acknowledged.
    pub acked: Vec<u64>,
    /// Of them, the ones the service says it does not have.
    pub missing: Vec<u64>,
    /// Of them, the ones it answered with an error.
    pub errors: Vec<u64>,
    /// Its `RECORDS` answer.
    pub records: String,
}

/// Look every acknowledged PUT of `ops` up in the serving copy (`GETK`, from the namespace).
pub(super) fn check_puts(ops: &[Op]) -> Result<PutCheck, String> {
    let acked: Vec<u64> = ops.iter().filter_map(|o| o.value).collect();
    let last = ops.len() as u64 + 1;
    let out = ns_cmd_within(300, std::env::current_exe().map_err(|e| e.to_string())?)
        .args(["check-puts", GUEST_SERVICE, &last.to_string()])
        .output()
        .map_err(|e| format!("check-puts: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let said = |what: &str, n: u64| text.lines().any(|l| l == format!("{what} {n}"));
    let errors: Vec<u64> = acked
        .iter()
        .copied()
        .filter(|&n| !said("have", n) && !said("missing", n))
        .collect();
    let missing = acked
        .iter()
        .copied()
        .filter(|&n| said("missing", n))
        .collect();
    let records = text
        .lines()
        .find_map(|l| l.strip_prefix("records "))
        .unwrap_or("?")
        .to_string();
    Ok(PutCheck {
        acked,
        missing,
        errors,
        records,
    })
}

/// A guest's data disk read from dom0 once the guest is gone.
pub(super) struct DiskAfter {
    /// The PUT keys' numbers in its records file.
    pub keys: std::collections::HashSet<u64>,
    /// Whether `e2fsck -fn` found it clean (after the mount replayed the journal).
    pub clean: bool,
    /// The mount's listing and e2fsck's output.
    pub fsck: String,
}

/// On host `n`: destroy the guest, mount `dev` (replaying the journal), read its records file,
/// unmount, `e2fsck -fn`.
pub(super) fn disk_after(n: u8, dev: &str) -> Result<DiskAfter, String> {
    let out = on(
        n,
        &format!("xl destroy {GUEST} 2>/dev/null; mount {dev} /mnt && {{ ls -l /mnt; echo ---records; cat /mnt/records 2>&1; echo ---end; umount /mnt; }}; e2fsck -fn {dev} 2>&1 | tail -12; echo \"fsck-status ${{PIPESTATUS[0]}}\""),
    )?;
    // The listing, the records, e2fsck: the records apart from the rest.
    let (listing, rest) = out.split_once("---records\n").unwrap_or((&out, ""));
    let (records, fsck) = rest.split_once("---end").unwrap_or(("", rest));
    let keys = records
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.strip_prefix('k')?.parse().ok())
        .collect();
    let fsck = format!("{listing}{}", fsck.trim_start_matches('\n'));
    Ok(DiskAfter {
        keys,
        clean: out.lines().any(|l| l.trim() == "fsck-status 0"),
        fsck,
    })
}
