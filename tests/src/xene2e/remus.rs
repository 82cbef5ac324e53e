//! The baseline: the same guest under `xl remus`, F1 and F2.

use std::time::{Duration, Instant};

use super::client::{after_kill, history_line, ClientRun, Probe};
use super::{on, on_quick, rig, wait, Report, Rig, GUEST};

/// Boot the rig with the guest on host 1 and `xl remus` protecting it to host 2, as Xen ships
/// it (research/xen-rig.md): the receiver under socat with TCP keepalive (without it a dead
/// primary is never noticed), 200 ms interval, no network buffering (`-n`, like
/// `xen.output = none`; the rig's dom0 could buffer, but libxl's netbuf script needs udev).
pub(super) fn remus_up(rep: &mut Report, keep: bool) -> Result<Rig, String> {
    let t = Instant::now();
    let r = Rig { keep };
    rig(&["up"])?;
    rig(&["guest-up", "1"])?;
    start_remus(rep, "", t)?;
    Ok(r)
}

/// The receiver on host 2, then `xl remus` on host 1 with `flags` besides the usual ones; waits
/// for the first checkpoint (`t`: when the run began).
fn start_remus(rep: &mut Report, flags: &str, t: Instant) -> Result<(), String> {
    on(
        2,
        // Debug logging on the receiver, each line stamped (bash's EPOCHREALTIME), so the
        // checkpoints can be counted on host 2 (one `Record: 4` per checkpoint end) without
        // slowing the sender, whose log stays at -v.
        "(socat TCP-LISTEN:8002,reuseaddr,keepalive,keepidle=2,keepintvl=1,keepcnt=3 EXEC:'xl -vvv migrate-receive -r -e',nofork 2>&1 | while IFS= read -r l; do printf '%s %s\\n' \"$EPOCHREALTIME\" \"$l\"; done >/var/log/remus-recv.log &); sleep 1",
    )?;
    on(
        1,
        &format!("(xl -v remus -F -n {flags} -e -i 200 -s '' {GUEST} 'socat - TCP:10.98.0.2:8002' >/var/log/remus.log 2>&1 &); sleep 1"),
    )?;
    // The receiving domain appears when the stream starts; the first checkpoint (a full copy
    // of 128 MiB) took about 28 s here in the research runs: wait for the domain, then 45 s.
    wait(
        "xl remus's incoming domain on host 2",
        Duration::from_secs(300),
        Duration::from_secs(3),
        || {
            on_quick(2, &format!("xl list | grep -c {GUEST} || true"), 45)
                .ok()
                .filter(|o| {
                    o.lines()
                        .any(|l| l.trim().parse::<u32>().is_ok_and(|n| n >= 1))
                })
        },
    )?;
    std::thread::sleep(Duration::from_secs(45));
    rep.add(format!(
        "xl remus: rig, guest and (assumed) first checkpoint in {:.0} s",
        t.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Checkpoints per second of `xl remus` over the last `window` seconds of host 2's clock,
/// from the receiver's stamped log.
pub(super) fn remus_checkpoint_rate(window: f64) -> Result<f64, String> {
    let out = on(
        2,
        "grep 'Record: 4,' /var/log/remus-recv.log | tail -400 | cut -d' ' -f1",
    )?;
    let stamps: Vec<f64> = out
        .lines()
        .filter_map(|l| l.trim().parse::<f64>().ok())
        .collect();
    let last = *stamps.last().ok_or("no checkpoint records on host 2")?;
    let recent: Vec<f64> = stamps.into_iter().filter(|&t| t >= last - window).collect();
    match (recent.first(), recent.len()) {
        (Some(&first), n) if n >= 2 && last > first => Ok((n - 1) as f64 / (last - first)),
        _ => Err("fewer than two checkpoints on host 2".into()),
    }
}

pub(super) fn remus(keep: bool) -> Result<Report, String> {
    let mut rep = Report {
        ok: true,
        ..Report::default()
    };
    std::env::remove_var("HSB_RIG_ETC");
    // F1: host 1 dies.
    {
        let _rig = remus_up(&mut rep, keep)?;
        let client = ClientRun::start(3600)?;
        let probe = Probe::run(20);
        let rate = remus_checkpoint_rate(20.0);
        rep.add(format!(
            "xl remus steady state (TCG): {} at a 200 ms interval (counted on host 2, checkpoint-end records in the last 20 s)",
            rate.map_or_else(|e| format!("checkpoints/s unknown ({e})"), |r| format!("{r:.1} checkpoints/s"))
        ));
        rep.add(match probe {
            Ok(p) => format!(
                "xl remus reply-time probe meanwhile (no output commit, so a slow reply is the guest stopped for a checkpoint): {}",
                p.describe()
            ),
            Err(e) => format!("xl remus reply-time probe failed: {e}"),
        });
        let last = client.snapshot().iter().rev().find_map(|o| o.value);
        rig(&["kill", "1"])?;
        let killed = Instant::now();
        std::thread::sleep(Duration::from_secs(40));
        let ops = client.stop();
        let (first_after, after) = after_kill(&ops, killed);
        rep.add(format!(
            "xl remus F1 host 1 killed: first client reply from host 2 {} after the kill; last acknowledged value before {last:?}, first after {after:?}",
            first_after.map_or("never (40 s)".into(), |d| format!("{:.1} s", d.as_secs_f64()))
        ));
        let (line, _) = history_line("xl remus F1 client history", &ops);
        rep.add(line);
        rep.add(format!(
            "xl remus receiver log (host 2):\n```\n{}```",
            on(2, "tail -6 /var/log/remus-recv.log").unwrap_or_default()
        ));
    }
    // F2: the replication link cut for 60 s while clients still reach the guest, then healed.
    {
        let _rig = remus_up(&mut rep, keep)?;
        let client = ClientRun::start(3600)?;
        std::thread::sleep(Duration::from_secs(10));
        rig(&["cut-repl"])?;
        std::thread::sleep(Duration::from_secs(60));
        let h2 = on(2, "xl list").unwrap_or_default();
        rig(&["heal-repl"])?;
        std::thread::sleep(Duration::from_secs(30));
        let h1 = on(1, "xl list").unwrap_or_default();
        let h2b = on(2, "xl list").unwrap_or_default();
        let ops = client.stop();
        let running = |l: &str| {
            l.lines()
                .any(|x| x.contains(GUEST) && (x.contains("r-") || x.contains("-b")))
        };
        let (line, hist_ok) = history_line("xl remus F2 client history", &ops);
        rep.add(format!(
            "xl remus F2 replication link cut 60 s, then healed 30 s: guest running on host 1 after the heal: {}, on host 2 during the cut: {}, after the heal: {} (two copies: {})",
            running(&h1),
            running(&h2),
            running(&h2b),
            running(&h1) && running(&h2b)
        ));
        rep.add(format!(
            "{line} (lost or doubled increments are xl remus's split brain)"
        ));
        let _ = hist_ok;
    }
    Ok(rep)
}

/// The same guest with the same ext4 data disk under `xl remus` as Debian ships it: each host's
/// disk a loop device over its own image, host 2's a copy of host 1's made before the guest
/// starts (what an operator without DRBD can do). Without `-d` xl remus needs a DRBD disk; with
/// `-d` it replicates memory only. F1: which acknowledged PUTs the replica has, and its file
/// system.
pub(super) fn remus_disk(keep: bool) -> Result<Report, String> {
    let mut rep = Report {
        ok: true,
        ..Report::default()
    };
    std::env::remove_var("HSB_RIG_ETC");
    let t = Instant::now();
    let _rig = Rig { keep };
    rig(&["up"])?;
    let cfg = "/etc/xen/remus-disk.cfg";
    // The image as a loop device (the first free one), named in the guest's disk line.
    let attach = format!(
        "modprobe loop; dev=$(losetup -f --show /var/tmp/disk.img) && sed \"s|phy:/dev/nbd0|phy:$dev|\" /etc/xen/hsb-guest-disk.cfg >{cfg} && grep disk {cfg}"
    );
    on(
        1,
        &format!("truncate -s 64M /var/tmp/disk.img && mkfs.ext4 -q -F -E nodiscard,lazy_itable_init=0,lazy_journal_init=0 /var/tmp/disk.img && {attach}"),
    )?;
    let recv = std::thread::spawn(move || {
        on(
            2,
            "rm -f /var/tmp/disk.img; timeout 120 socat -u TCP-LISTEN:9101,reuseaddr CREATE:/var/tmp/disk.img && ls -l /var/tmp/disk.img",
        )
    });
    std::thread::sleep(Duration::from_secs(5));
    on(
        1,
        "socat -u OPEN:/var/tmp/disk.img TCP:10.98.0.2:9101,retry=20",
    )?;
    recv.join()
        .map_err(|_| "the receiving thread panicked".to_string())??;
    on(2, &attach)?;
    rig(&["guest-up", "1", cfg])?;
    rep.add(format!(
        "the guest with its ext4 data disk (loop device over an image on each host, host 2's copied from host 1's before the guest started) answering after {:.0} s",
        t.elapsed().as_secs_f64()
    ));
    // Without -d: xl remus must replicate the disk, which it can only with DRBD. (A receiver
    // listens, so what fails is the disk; whatever it created on host 2 is destroyed after.)
    on(
        2,
        "(socat TCP-LISTEN:8003,reuseaddr EXEC:'xl migrate-receive -r -e',nofork >/var/log/remus-recv-nod.log 2>&1 &); sleep 1",
    )?;
    let out = on_quick(
        1,
        &format!("timeout 60 xl -v remus -F -n -e -i 200 -s '' {GUEST} 'socat - TCP:10.98.0.2:8003' 2>&1 | tail -5; echo \"exit ${{PIPESTATUS[0]}}\""),
        90,
    )
    .unwrap_or_else(|e| e);
    rep.add(format!(
        "xl remus without -d (disk replication on, as Debian ships it: no DRBD):\n```\n{}```",
        out.trim_end()
    ));
    let after = on(
        2,
        &format!("sleep 5; pkill -f 'TCP-LISTEN:8003'; xl list {GUEST} >/dev/null 2>&1 && xl destroy {GUEST}; tail -3 /var/log/remus-recv-nod.log"),
    )
    .unwrap_or_default();
    rep.add(format!(
        "the receiver on host 2 meanwhile:\n```\n{}\n```\nthe guest on host 1 after it: `{}`",
        after.trim_end(),
        on(1, &format!("xl list {GUEST} | tail -1"))
            .unwrap_or_default()
            .trim()
    ));
    start_remus(&mut rep, "-d", t)?;
    let puts = ClientRun::start_kind("putter", 3600)?;
    std::thread::sleep(Duration::from_secs(40));
    rig(&["kill", "1"])?;
    let killed = Instant::now();
    std::thread::sleep(Duration::from_secs(40));
    let ops = puts.stop();
    let (first_after, _) = after_kill(&ops, killed);
    rep.add(format!(
        "xl remus -d F1 host 1 killed: first PUT acknowledged from host 2 {}",
        first_after.map_or("never (40 s)".into(), |d| format!(
            "{:.1} s after the kill",
            d.as_secs_f64()
        )),
    ));
    let c = super::disk::check_puts(&ops)?;
    rep.add(format!(
        "xl remus -d: of the {} acknowledged PUTs the replica has {}, is missing {}, and cannot say for {} (its service answering with an error or not at all); its records file: {}",
        c.acked.len(),
        c.acked.len() - c.missing.len() - c.errors.len(),
        c.missing.len(),
        c.errors.len(),
        c.records
    ));
    let dev = on(2, "losetup -j /var/tmp/disk.img | cut -d: -f1")?;
    let d = super::disk::disk_after(2, dev.trim())?;
    let missing = c.acked.iter().filter(|n| !d.keys.contains(n)).count();
    rep.add(format!(
        "xl remus -d: host 2's disk after F1 (the guest destroyed; mounted, which replays the journal; then e2fsck -fn): {} records in the records file, {missing} of the {} acknowledged PUTs missing there; file system {}\n```\n{}```",
        d.keys.len(),
        c.acked.len(),
        if d.clean { "clean" } else { "NOT clean" },
        d.fsck
    ));
    Ok(rep)
}
