//! A run of hsb on the rig: protect the guest, then F2 and its heal, F1, or host 1 isolated
//! while alive.

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use hsb_tests::faults::Op;

use super::client::{acked_between, after_kill, history_line, save_history, ClientRun, Probe};
use super::etc::write_etc;
use super::{
    log, ns_cmd, num, on, rig, status, status_of, wait, Fail, KillOnDrop, Mode, Report, Rig, GUEST,
};

/// The run's directory (`target/xen-rig/e2e`, emptied), its configuration written, and the rig
/// booted with the static binaries and that configuration on both hosts.
pub(super) fn boot(
    disk: bool,
    keep: bool,
    rep: &mut Report,
) -> Result<(Rig, PathBuf, PathBuf), Fail> {
    let bin =
        PathBuf::from(std::env::var("HSB_BIN_DIR").map_err(|_| {
            "HSB_BIN_DIR must name the static hsb binaries (just static)".to_string()
        })?);
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/xen-rig/e2e"
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    write_etc(&dir, &bin, disk)?;
    log("booting the rig (two Xen hosts under QEMU TCG)");
    let t = Instant::now();
    std::env::set_var("HSB_BIN_DIR", &bin);
    std::env::set_var("HSB_RIG_ETC", dir.join("etc"));
    let rig_guard = Rig { keep };
    rig(&["up"]).map_err(Fail::Rig)?;
    rep.add(format!(
        "rig up in {:.0} s (both hosts: Xen 4.17, Debian dom0)",
        t.elapsed().as_secs_f64()
    ));
    Ok((rig_guard, dir, bin))
}

pub(super) fn run(mode: Mode, keep: bool) -> Result<Report, Fail> {
    let mut rep = Report::default();
    let (_rig, dir, bin) = boot(false, keep, &mut rep)?;
    let t = Instant::now();
    rig(&["guest-up", "1"]).map_err(Fail::Rig)?;
    rep.add(format!(
        "guest {GUEST} (PVH, 128 MiB) answering on host 1 after {:.0} s",
        t.elapsed().as_secs_f64()
    ));
    let info = on(1, &format!("hsb-primary xen-info {GUEST}"))?;
    rep.add(format!(
        "xen-info on host 1 (what hsb's xen-sys reads from real Xen):\n```\n{info}```"
    ));
    // xen-sys's event-channel path (bind, notify, delivery, unmask, unbind), which the rig's
    // guest gives no suspend channel to exercise, checked on a dom0 loopback channel.
    let evtchn = info
        .lines()
        .find(|l| l.starts_with("evtchn_loopback"))
        .unwrap_or("evtchn_loopback missing");
    if !evtchn.starts_with("evtchn_loopback ok") {
        return Err(Fail::Run(format!("xen-info on host 1: {evtchn}")));
    }

    // The replica, made once by the toolstack.
    make_replica(&mut rep, GUEST, &format!("/etc/xen/{GUEST}.cfg"))?;

    // The daemons.
    on(
        2,
        "mkdir -p /run/hsb; HSB_LOG=info setsid hsb-standby run -c /etc/hsb/standby.conf >/var/log/hsb-standby.log 2>&1 </dev/null & sleep 2; tail -5 /var/log/hsb-standby.log",
    )?;
    on(
        1,
        "mkdir -p /run/hsb; for m in ifb sch_plug sch_ingress cls_matchall act_mirred; do modprobe $m; done; HSB_LOG=info setsid hsb-primary run -c /etc/hsb/primary.conf >/var/log/hsb-primary.log 2>&1 </dev/null & sleep 2; tail -5 /var/log/hsb-primary.log",
    )?;
    let witnesses = start_witnesses(&dir, &bin)?;
    wait_protected(&mut rep)?;

    // Steady state with a client.
    let client = ClientRun::start(3600)?;
    let p0 = status(1, "hsb-primary").unwrap_or_default();
    let t0 = Instant::now();
    let probe = Probe::run(20);
    let p1 = status(1, "hsb-primary").unwrap_or_default();
    let secs = t0.elapsed().as_secs_f64();
    let ckpts = num(&p1, "checkpoints").saturating_sub(num(&p0, "checkpoints"));
    rep.add(format!(
        "steady state (TCG): {:.1} checkpoints/s at a 200 ms epoch period; pause per epoch p50 {} ms, p99 {} ms, of which the guest's suspend p50 {} ms; ack round trip p50 {} ms; last dirty pages {}; {} client increments acknowledged in {:.0} s",
        ckpts as f64 / secs,
        p1.get("pause_ms_p50").cloned().unwrap_or_default(),
        p1.get("pause_ms_p99").cloned().unwrap_or_default(),
        p1.get("suspend_wait_ms_p50").cloned().unwrap_or_default(),
        p1.get("ack_rtt_ms_p50").cloned().unwrap_or_default(),
        p1.get("last_dirty_pages").cloned().unwrap_or_default(),
        acked_between(&client.snapshot(), t0, Instant::now()),
        secs
    ));
    let d = |k: &str| num(&p1, k).saturating_sub(num(&p0, k));
    rep.add(format!(
        "checkpoint encoding (encode = {}): {} of {ckpts} checkpoints encoded; {} KiB of pages sealed into {} KiB ({:.2}x fewer bytes); measured cost per KiB plain {} ns, encoded {} ns; encoded size ratio {}",
        p1.get("encode").cloned().unwrap_or_default(),
        d("checkpoints_encoded"),
        d("page_bytes_sealed") >> 10,
        d("bytes_sealed") >> 10,
        d("page_bytes_sealed") as f64 / d("bytes_sealed").max(1) as f64,
        p1.get("encode_cost_plain_ns_per_kib").cloned().unwrap_or_default(),
        p1.get("encode_cost_encoded_ns_per_kib").cloned().unwrap_or_default(),
        p1.get("encoded_size_ratio").cloned().unwrap_or_default(),
    ));
    rep.add(match probe {
        Ok(p) => format!(
            "reply-time probe meanwhile (every reply held until its checkpoint is acknowledged): {}",
            p.describe()
        ),
        Err(e) => format!("reply-time probe failed: {e}"),
    });
    let mut ok = true;

    if mode == Mode::All {
        // F2: the replication network cut; the witnesses still reach the guest.
        let syncs_before = status(2, "hsb-standby").map_or(0, |s| num(&s, "full_syncs"));
        rig(&["cut-repl"])?;
        let cut = Instant::now();
        std::thread::sleep(Duration::from_secs(30));
        let s2 = status(2, "hsb-standby").unwrap_or_default();
        let p2 = status(1, "hsb-primary").unwrap_or_default();
        let served = acked_between(
            &client.snapshot(),
            cut + Duration::from_secs(10),
            Instant::now(),
        );
        let stayed = s2.get("state").map(String::as_str) != Some("active");
        rig(&["heal-repl"])?;
        let f2_ok = stayed && served > 0;
        ok &= f2_ok;
        rep.add(format!(
            "F2 replication link cut 30 s: standby state {:?} (no failover: {}), primary authority {:?}, {served} increments acknowledged from host 1 during the last 20 s of the cut: {}",
            s2.get("state").cloned().unwrap_or_default(),
            stayed,
            p2.get("authority").cloned().unwrap_or_default(),
            if f2_ok { "correct" } else { "WRONG" }
        ));
        let t = Instant::now();
        let healed = wait(
            "a fresh full synchronisation after the heal",
            Duration::from_secs(300),
            Duration::from_secs(3),
            || {
                status(2, "hsb-standby")
                    .filter(|s| num(s, "full_syncs") > syncs_before && s["state"] == "replicating")
            },
        );
        match healed {
            Ok(s) => rep.add(format!(
                "heal: standby resynchronised from scratch ({} full syncs) {:.0} s after the heal",
                num(&s, "full_syncs"),
                t.elapsed().as_secs_f64()
            )),
            Err(e) => {
                ok = false;
                rep.add(format!("heal: WRONG: {e}"));
            }
        }
    }

    if mode == Mode::Isolate {
        let (iso_ok, ops, at) = isolate_host1(&mut rep, client)?;
        ok &= iso_ok;
        let (line, hist_ok) = history_line("client history", &ops);
        ok &= hist_ok;
        rep.add(line);
        save_history(&dir.join("history.txt"), &ops, at);
        rep.ok = ok;
        drop(witnesses);
        return Ok(rep);
    }

    // F1: host 1 dies.
    std::thread::sleep(Duration::from_secs(5));
    let before_kill = client.snapshot();
    let last_acked = before_kill.iter().rev().find_map(|o| o.value);
    let (killed, active, decided) = kill_host1(false)?;
    let ops = client.stop();
    let (first_after, after) = after_kill(&ops, killed);
    let f1_ok = active.is_ok() && first_after.is_some();
    ok &= f1_ok;
    rep.add(format!(
        "F1 host 1 killed: standby {} after {:.1} s (status polled every 1 s through the serial console); first client reply from the replica {:.1} s after the kill; last acknowledged value before {:?}, first after {:?}: {}",
        if active.is_ok() { "activated" } else { "did NOT activate" },
        decided.as_secs_f64(),
        first_after.map_or(f64::NAN, |d| d.as_secs_f64()),
        last_acked,
        after,
        if f1_ok { "correct" } else { "WRONG" }
    ));
    ok &= f1_aftermath(&mut rep, active, "client history", &ops, &dir, killed);
    rep.ok = ok;
    drop(witnesses);
    Ok(rep)
}

/// Host 1 isolated from everything while it keeps running (both of its networks dropped): its
/// primary loses the standby's acks and the witnesses' leases and must fence its own guest
/// (suspended, output held) before the standby, told by the witnesses that the guest cannot be
/// reached, activates the replica. Then the heal: the old primary hears of the newer epoch and
/// steps down, its guest still stopped, so there is one active copy. Returns whether all that
/// held, the client's history and when the isolation began.
pub(super) fn isolate_host1(
    rep: &mut Report,
    client: ClientRun,
) -> Result<(bool, Vec<Op>, Instant), String> {
    std::thread::sleep(Duration::from_secs(5));
    let last_acked = client.snapshot().iter().rev().find_map(|o| o.value);
    rig(&["isolate", "1"])?;
    rig(&["isolate", "1", "repl"])?;
    let cut = Instant::now();
    let active = wait(
        "the standby's activation",
        Duration::from_secs(120),
        Duration::from_secs(1),
        || status(2, "hsb-standby").filter(|s| s["state"] == "active"),
    );
    let decided = cut.elapsed();
    std::thread::sleep(Duration::from_secs(15));
    // The serial consoles still reach host 1: what its primary and Xen say while it is cut off.
    let p1 = status(1, "hsb-primary").unwrap_or_default();
    let xl1 = on(1, &format!("xl list {GUEST} | tail -1")).unwrap_or_default();
    rig(&["unisolate", "1"])?;
    rig(&["unisolate", "1", "repl"])?;
    let stepped = wait(
        "the old primary to step down after the heal",
        Duration::from_secs(90),
        Duration::from_secs(2),
        || {
            status(1, "hsb-primary")
                .filter(|s| s.get("stepped_down").map(String::as_str) == Some("true"))
        },
    );
    let xl1b = on(1, &format!("xl list {GUEST} | tail -1")).unwrap_or_default();
    let s2 = status(2, "hsb-standby").unwrap_or_default();
    std::thread::sleep(Duration::from_secs(10));
    let ops = client.stop();
    let (first_after, after) = after_kill(&ops, cut);
    let fenced = p1.get("fenced").map(String::as_str) == Some("true");
    // `xl list` state column: r running, b blocked, p paused, s shut down (suspended).
    let stopped = |l: &str| {
        l.split_whitespace()
            .nth(4)
            .is_some_and(|st| !st.contains('r') && !st.contains('b'))
    };
    let one_active = stopped(&xl1b) && s2.get("state").map(String::as_str) == Some("active");
    let ok = active.is_ok()
        && first_after.is_some()
        && fenced
        && stopped(&xl1)
        && stepped.is_ok()
        && one_active;
    rep.add(format!(
        "host 1 isolated (alive): its primary fenced: {fenced} (authority {:?}), its guest stopped: {} (`{}`); standby {} after {:.1} s; first client reply from the replica {:.1} s after the isolation; last acknowledged value before {last_acked:?}, first after {after:?}",
        p1.get("authority").cloned().unwrap_or_default(),
        stopped(&xl1),
        xl1.trim(),
        if active.is_ok() { "activated" } else { "did NOT activate" },
        decided.as_secs_f64(),
        first_after.map_or(f64::NAN, |d| d.as_secs_f64()),
    ));
    rep.add(format!(
        "heal: old primary {}; its guest `{}`; standby state {:?}; one active copy: {one_active}: {}",
        if stepped.is_ok() { "stepped down" } else { "did NOT step down" },
        xl1b.trim(),
        s2.get("state").cloned().unwrap_or_default(),
        if ok { "correct" } else { "WRONG" }
    ));
    if !ok {
        rep.add(format!(
            "primary log (host 1):\n```\n{}```",
            on(1, "tail -30 /var/log/hsb-primary.log").unwrap_or_default()
        ));
    }
    Ok((ok, ops, cut))
}

/// The replica, made once by the toolstack: `xl save -c` of domain `name` on host 1, the image
/// copied to host 2 over the replication network, `xl restore -p` there with config `cfg`.
pub(super) fn make_replica(rep: &mut Report, name: &str, cfg: &str) -> Result<(), String> {
    let t = Instant::now();
    on(1, &format!("xl save -c {name} /var/tmp/guest.img"))?;
    // Host 2 receives in the foreground of its console while host 1 sends from its own.
    let recv = std::thread::spawn(|| {
        on(
            2,
            "rm -f /var/tmp/guest.img; timeout 280 socat -u TCP-LISTEN:9100,reuseaddr CREATE:/var/tmp/guest.img && ls -l /var/tmp/guest.img",
        )
    });
    std::thread::sleep(Duration::from_secs(5));
    on(
        1,
        "socat -u OPEN:/var/tmp/guest.img TCP:10.98.0.2:9100,retry=20 && ls -l /var/tmp/guest.img && rm -f /var/tmp/guest.img",
    )?;
    let got = recv
        .join()
        .map_err(|_| "the receiving thread panicked".to_string())??;
    log(&format!("image on host 2: {}", got.trim()));
    on(
        2,
        &format!("xl restore -p {cfg} /var/tmp/guest.img && rm -f /var/tmp/guest.img && xl list"),
    )?;
    rep.add(format!(
        "replica: xl save -c on host 1, copied, xl restore -p on host 2 in {:.0} s",
        t.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// The three witnesses, in the rig's namespace (each on its own address).
pub(super) fn start_witnesses(dir: &Path, bin: &Path) -> Result<Vec<KillOnDrop>, String> {
    let mut witnesses = Vec::new();
    for i in 1..=3 {
        let logf =
            std::fs::File::create(dir.join(format!("w{i}.log"))).map_err(|e| e.to_string())?;
        let child = ns_cmd(bin.join("hsb-witness"))
            .args(["run", "-c"])
            .arg(dir.join(format!("w{i}.conf")))
            .env("HSB_LOG", "info")
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .map_err(|e| format!("witness {i}: {e}"))?;
        witnesses.push(KillOnDrop(child));
    }
    Ok(witnesses)
}

/// Wait (10 minutes at most) for the standby to have applied three checkpoints.
pub(super) fn wait_protected(rep: &mut Report) -> Result<(), String> {
    let t = Instant::now();
    let st = wait(
        "the first checkpoints applied on host 2",
        Duration::from_secs(600),
        Duration::from_secs(3),
        || status(2, "hsb-standby").filter(|s| num(s, "checkpoints_applied") >= 3),
    )
    .map_err(|e| {
        let p = on(1, "tail -20 /var/log/hsb-primary.log").unwrap_or_default();
        let s = on(2, "tail -20 /var/log/hsb-standby.log").unwrap_or_default();
        format!("{e}\n--- primary ---\n{p}\n--- standby ---\n{s}")
    })?;
    rep.add(format!(
        "protected: full synchronisation and {} checkpoints applied after {:.0} s",
        num(&st, "checkpoints_applied"),
        t.elapsed().as_secs_f64()
    ));
    // The guest's pause for it (issue 16.3), in the primary's own words: the full
    // synchronisation's line and, when pre-copied, the rounds before it.
    let lines = on(
        1,
        "grep -m2 -e ': pre-copy:' -e ': full synchronisation, .*pause' /var/log/hsb-primary.log",
    )
    .unwrap_or_default();
    for l in lines.lines().filter(|l| !l.trim().is_empty()) {
        // From "checkpoint N: ...", without the log line's stamp and level.
        let said = l.find("checkpoint ").map_or(l, |i| &l[i..]);
        rep.add(format!("full synchronisation (primary's log): {said}"));
    }
    Ok(())
}

/// When host 1 was killed, the standby's status once active (or why not), and how long that
/// took.
pub(super) type Killed = (Instant, Result<HashMap<String, String>, String>, Duration);

/// After F1: the standby's log when it did not activate; the INCR client's history (`name`),
/// reported and saved in `dir`. Whether that history is right.
pub(super) fn f1_aftermath(
    rep: &mut Report,
    active: Result<HashMap<String, String>, String>,
    name: &str,
    ops: &[Op],
    dir: &Path,
    killed: Instant,
) -> bool {
    if let Err(e) = active {
        rep.add(format!(
            "standby log:\n```\n{}```",
            on(2, "tail -30 /var/log/hsb-standby.log").unwrap_or(e)
        ));
    }
    let (line, hist_ok) = history_line(name, ops);
    rep.add(line);
    save_history(&dir.join("history.txt"), ops, killed);
    hist_ok
}

/// F1: host 1 killed (QEMU quits). When, whether and how soon the standby activated (status
/// polled every second through host 2's console, for at most 2 minutes), after 20 s more for
/// the clients to be served by the replica. `promoted`: the standby hands over to hsb-primary
/// once activated (`promote_config` = `PROMOTE_CONF`), whose status counts as the activation.
pub(super) fn kill_host1(promoted: bool) -> Result<Killed, String> {
    rig(&["kill", "1"])?;
    let killed = Instant::now();
    let active = wait(
        "the standby's activation",
        Duration::from_secs(120),
        Duration::from_secs(1),
        || {
            status(2, "hsb-standby")
                .filter(|s| s["state"] == "active")
                .or_else(|| {
                    promoted
                        .then(|| status_of(2, "hsb-primary", super::etc::PROMOTE_CONF))
                        .flatten()
                })
        },
    );
    let decided = killed.elapsed();
    std::thread::sleep(Duration::from_secs(20));
    Ok((killed, active, decided))
}
