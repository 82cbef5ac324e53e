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
    on(
        2,
        // Debug logging on the receiver, each line stamped (bash's EPOCHREALTIME), so the
        // checkpoints can be counted on host 2 (one `Record: 4` per checkpoint end) without
        // slowing the sender, whose log stays at -v.
        "(socat TCP-LISTEN:8002,reuseaddr,keepalive,keepidle=2,keepintvl=1,keepcnt=3 EXEC:'xl -vvv migrate-receive -r -e',nofork 2>&1 | while IFS= read -r l; do printf '%s %s\\n' \"$EPOCHREALTIME\" \"$l\"; done >/var/log/remus-recv.log &); sleep 1",
    )?;
    on(
        1,
        &format!("(xl -v remus -F -n -e -i 200 -s '' {GUEST} 'socat - TCP:10.98.0.2:8002' >/var/log/remus.log 2>&1 &); sleep 1"),
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
    Ok(r)
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
