//! Running one fault case: a protected pair started (again if its standby activates before the
//! fault), a client and a monitor, the fault injected, held and healed, and the verdict.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::netns::Host;
use crate::num;

use super::disk::{verdict, Ending, Resyncs};
use super::history::{check_history, client_with};
use super::inject::{heal, inject};
use super::nodes::{b_serving, promoted_status, start, STARTUP_ACTIVATION};
use super::puts::put_client;
use super::{Fault, Outcome, GRAY_FOR};

/// How long after healing a case waits for one copy protected by the other (F12).
const HEAL_WAIT: Duration = Duration::from_secs(20);

/// Starts a case tries before it reports a startup activation as its outcome.
const STARTS: u32 = 6;

/// What the monitor saw, sampling every daemon's status every 20 ms.
#[derive(Debug, Default)]
struct Seen {
    /// Time during which A's copy and B's copy both had authority to release output.
    split: Duration,
    /// When B's copy first served (activated standby or promoted primary).
    b_active_at: Option<Instant>,
    /// B said the guest failed (F5's alert).
    guest_alert: bool,
    /// Times B's heartbeat detector went from trusting to suspecting the primary.
    suspicions: u32,
    /// Changes of A's authority (protected, unprotected, holding, fenced).
    authority_changes: u32,
}

fn has_authority(s: &std::collections::HashMap<String, String>) -> bool {
    // Protected, degraded counts too: it releases (acknowledged) output.
    matches!(
        s.get("authority").map(String::as_str),
        Some("protected" | "protected-degraded" | "unprotected")
    )
}

fn monitor(dir: &std::path::Path, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Seen> {
    let sock = |n: &str| dir.join(n);
    let (a, b, promoted, rejoined) = (
        sock("a.sock"),
        sock("b.sock"),
        sock("promoted.sock"),
        sock("rejoined.sock"),
    );
    std::thread::spawn(move || {
        let status = |p: &std::path::Path| {
            crate::parse_status(
                &hsb_common::ctl::request(p, "status", Duration::from_millis(200))
                    .unwrap_or_default(),
            )
        };
        let mut seen = Seen::default();
        let (mut last, mut suspected, mut authority) = (Instant::now(), false, None::<String>);
        while !stop.load(Ordering::Relaxed) {
            // B's side first: A counted as serving after B was seen serving is a real overlap.
            let (sb, sp) = (status(&b), status(&promoted));
            let (sa, sr) = (status(&a), status(&rejoined));
            let now = Instant::now();
            let a_serves = has_authority(&sa) || sr.get("state").is_some_and(|s| s == "active");
            let b_serves = sb.get("state").is_some_and(|s| s == "active") || has_authority(&sp);
            if b_serves && seen.b_active_at.is_none() {
                seen.b_active_at = Some(now);
            }
            if a_serves && b_serves {
                seen.split += now - last;
            }
            seen.guest_alert |= sb.get("last_decision").is_some_and(|d| d.contains("guest"));
            if let Some(s) = sb.get("primary_suspected") {
                let now_suspected = s == "true";
                seen.suspicions += u32::from(now_suspected && !suspected);
                suspected = now_suspected;
            }
            if let Some(auth) = sa.get("authority") {
                if authority.as_ref().is_some_and(|x| x != auth) {
                    seen.authority_changes += 1;
                }
                authority = Some(auth.clone());
            }
            last = now;
            std::thread::sleep(Duration::from_millis(20));
        }
        seen
    })
}

/// The rates each witness reported in B's switchover decision (its decision log).
fn switchover_rates(log: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let e = text
        .lines()
        .filter(|l| l.contains("\"k\":\"evidence\"") && l.contains("rule6:switchover"))
        .find_map(|l| hsb_common::decision::Evidence::from_json_line(l).ok())?;
    let pct = |r: Option<u8>| r.map_or("-".to_string(), |r| format!("{r}%"));
    let ws: Vec<String> = e
        .witnesses
        .iter()
        .map(|w| {
            format!(
                "w{} {} app {} primary {} standby {}",
                w.id,
                w.app,
                pct(w.rates.app),
                pct(w.rates.primary),
                pct(w.rates.standby)
            )
        })
        .collect();
    Some(ws.join(", "))
}

/// Run one fault case under `policy` ("client-oriented" or "heartbeat-only").
pub fn run_case(fault: Fault, policy: &str) -> Result<Outcome, String> {
    let setup = fault.setup();
    if setup.clocks {
        crate::netns::time_namespaces_available()?;
    }
    let mut discarded = 0;
    let (mut n, stop, client, putter, monitor) = loop {
        let started = start(policy, setup).and_then(|n| {
            // Traffic and sampling start before the fault; B must not be serving yet. Two
            // clients: INCRs (the counter in memory) and PUTs (keys logged on the disk).
            let stop = Arc::new(AtomicBool::new(false));
            let client = client_with(n.service, stop.clone(), setup.client_timeout);
            let putter = put_client(n.service, stop.clone(), setup.client_timeout);
            let monitor = monitor(&n.dir.0, stop.clone());
            std::thread::sleep(Duration::from_secs(1));
            if b_serving(&n) {
                stop.store(true, Ordering::Relaxed);
                let _ = client.join();
                let _ = putter.join();
                let _ = monitor.join();
                return Err(STARTUP_ACTIVATION.to_string());
            }
            Ok((n, stop, client, putter, monitor))
        });
        match started {
            Err(e) if e == STARTUP_ACTIVATION && discarded < STARTS - 1 => discarded += 1,
            Err(e) if e == STARTUP_ACTIVATION => {
                // A result too: this policy cannot even start a protected pair on this machine
                // now (the fault is never injected).
                return Ok(Outcome {
                    fault,
                    policy: policy.to_string(),
                    failed_over: true,
                    correct: false,
                    decide_ms: None,
                    unavailable_ms: 0,
                    split_ms: 0,
                    acked: 0,
                    lost: 0,
                    doubled: 0,
                    puts_acked: 0,
                    puts_bad: 0,
                    puts_off_disk: None,
                    healed_ms: None,
                    healable: false,
                    note: format!("the standby activated during startup in all {STARTS} starts; fault not injected"),
                });
            }
            other => break other?,
        }
    };
    // A's replication sessions and full synchronisations before the fault.
    let a_before = {
        let a = n.primary.status();
        (num(&a, "sessions"), num(&a, "full_syncs"))
    };
    // B's disk resynchronisations before the fault (its first synchronisation's).
    let b_before = Resyncs::of(&n.standby.status());
    let mut injected = Instant::now();
    let mut note = String::new();
    if discarded > 0 {
        note.push_str(&format!(
            "{discarded} start(s) discarded: the standby activated before the fault; "
        ));
    }
    let injection = inject(fault, &mut n, &mut note)?;
    if let Some(t) = injection.crashed_at {
        injected = t;
    }
    let hold = match fault {
        Fault::F6Short => Duration::from_millis(500),
        Fault::F6Long => Duration::from_secs(4),
        Fault::F14Gray20 | Fault::F14Gray50 | Fault::F14Gray80 => GRAY_FOR,
        _ => Duration::from_secs(5),
    };
    std::thread::sleep(hold);
    if matches!(
        fault,
        Fault::F14Gray20 | Fault::F14Gray50 | Fault::F14Gray80
    ) {
        // What the witnesses measured, at the end of the loss.
        let rates: Vec<String> = n
            ._witnesses
            .iter()
            .map(|w| {
                let st = w.status();
                let r = |k: &str| st.get(k).cloned().unwrap_or_else(|| "?".into());
                format!(
                    "{}/{}/{}",
                    r("application_rate"),
                    r("primary_daemon_rate"),
                    r("standby_daemon_rate")
                )
            })
            .collect();
        note.push_str(&format!(
            "witness rates at the end (application/primary/standby %): {}; ",
            rates.join(", ")
        ));
    }
    let healed = Instant::now();
    heal(fault, &mut n, &mut note)?;
    // F12: one copy must end up serving, protected by the other, synchronised from scratch after
    // the fault (bounded wait), before the last stretch of traffic. If B took over: B's promoted
    // primary protected by A rejoined as its standby. If not: A protected again, by a full
    // synchronisation if its session with B was lost.
    let healable =
        !(fault.base() == Fault::F1 && fault != Fault::F12AfterF1) && fault != Fault::F13SlowLink;
    let mut healed_in = None;
    let mut took_over = false;
    // The healed pair's synchronisation came after the fault (B's copy promoted and A rejoined,
    // or A's session with B lost and started again).
    let mut resynchronised = false;
    if healable {
        let promoted = n.handle("promoted primary (host B)", "promoted.sock", "b.log");
        let rejoined = n.handle("rejoined standby (host A)", "rejoined.sock", "a.log");
        let t = Instant::now();
        while t.elapsed() < HEAL_WAIT {
            let p = promoted.status();
            let b_took_over = !p.is_empty() || b_serving(&n);
            took_over = b_took_over;
            let ok = if b_took_over {
                let r = rejoined.status();
                p.get("authority").is_some_and(|a| a == "protected")
                    && num(&p, "full_syncs") >= 1
                    && r.get("role").is_some_and(|r| r == "standby")
                    && r.get("state").is_some_and(|s| s != "active")
            } else {
                let a = n.primary.status();
                resynchronised = num(&a, "full_syncs") > a_before.1;
                a.get("authority").is_some_and(|x| x == "protected")
                    && (num(&a, "sessions") == a_before.0 || resynchronised)
            };
            if ok {
                healed_in = Some(healed.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if matches!(fault, Fault::F12AfterF1 | Fault::F12AfterF4) {
            match (healed_in, took_over) {
                (Some(d), true) => note.push_str(&format!(
                    "B promoted, A resynchronised from scratch, B protected {} ms after healing; ",
                    d.as_millis()
                )),
                (Some(_), false) => note.push_str("no takeover, so no rejoin: A protected again; "),
                (None, _) => note.push_str("no rejoin: B not protected by a resynchronised A; "),
            }
        }
    }
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let ops = client.join().unwrap_or_default();
    let puts = putter.join().unwrap_or_default();
    let seen = monitor.join().unwrap_or_default();
    // Whichever copy serves now answers the read-back of the acknowledged PUTs.
    let end = Ending {
        took_over: took_over || seen.b_active_at.is_some(),
        healed: healed_in.is_some(),
        resynchronised: resynchronised || took_over,
        b_before,
    };
    let disk = verdict(&n, end, &puts, &mut note);
    let vip = n.topo.service_ip();
    // A host that crashed and stayed down holds nothing.
    let a_down = !healable;
    let holders: Vec<&str> = [(Host::A, "A"), (Host::B, "B")]
        .iter()
        .filter(|(h, _)| !(a_down && *h == Host::A) && n.topo.has_addr(*h, &vip))
        .map(|(_, name)| *name)
        .collect();
    let (acked, lost, doubled, gap) = check_history(&ops);
    if let Some(path) = std::env::var_os("HSB_FAULTS_HISTORY") {
        // For debugging a case: the client's history, one request a line.
        let t0 = ops.first().map(|o| o.start);
        let lines: Vec<String> = ops
            .iter()
            .map(|o| {
                let at = t0.map_or(0, |t| o.start.duration_since(t).as_millis());
                let took = o.end.duration_since(o.start).as_millis();
                format!(
                    "{at} {took} {}",
                    o.value.map_or("-".into(), |v| v.to_string())
                )
            })
            .collect();
        let mut path = std::path::PathBuf::from(path);
        path.set_extension(policy);
        let _ = std::fs::write(path, lines.join("\n"));
    }
    let failed_over = seen.b_active_at.is_some();
    let mut decision_ok = fault.failover_expected().is_none_or(|e| e == failed_over);
    if matches!(fault, Fault::F6Short | Fault::F6Long) && failed_over {
        note.push_str("failed over while the primary was frozen; ");
    }
    if fault == Fault::F5 {
        // DESIGN.md §5: no failover, and an alert naming the guest.
        decision_ok &= seen.guest_alert;
        note.push_str(if seen.guest_alert {
            "guest-failure alert; "
        } else {
            "no guest-failure alert; "
        });
    }
    if matches!(fault, Fault::F12AfterF1 | Fault::F12AfterF4) {
        decision_ok &= healed_in.is_some();
    }
    if fault == Fault::F13SlowLink && injection.slow_unprotected {
        // Issue 12: running unprotected is for a standby that is gone, not for a slow one.
        decision_ok = false;
        note.push_str("A ran unprotected during the slow link; ");
    }
    if fault == Fault::F13SlowLink && injection.slow_unworded {
        decision_ok = false;
    }
    if matches!(
        fault,
        Fault::F14Gray20 | Fault::F14Gray50 | Fault::F14Gray80
    ) {
        // At most one switchover per incident: the serving copy's epoch.
        let epoch = num(&promoted_status(&n.dir.0), "epoch");
        let switchovers = epoch.saturating_sub(1);
        note.push_str(&format!("{switchovers} switchover(s); "));
        decision_ok &= switchovers <= 1;
        if let Some(rates) = switchover_rates(&n.dir.path("b.decisions")) {
            note.push_str(&format!("switchover evidence: {rates}; "));
        }
    }
    if matches!(fault, Fault::F10 | Fault::F10Delay | Fault::F13SlowLink) {
        note.push_str(&format!(
            "{} suspicion(s), {} authority change(s) on A; ",
            seen.suspicions, seen.authority_changes
        ));
    }
    if holders.len() != 1 || holders == ["B"] {
        note.push_str(&format!(
            "service address at the end on {}; ",
            if holders.is_empty() {
                "no host".to_string()
            } else {
                holders.join(" and ")
            }
        ));
    }
    if setup.clocks {
        note.push_str("monotonic clocks A +10 h, B +3 d, W1 +1 h, W3 +30 d; ");
    }
    Ok(Outcome {
        fault,
        policy: policy.to_string(),
        failed_over,
        correct: decision_ok && seen.split.is_zero() && lost == 0 && doubled == 0 && disk.ok(),
        decide_ms: seen
            .b_active_at
            .map(|t| t.saturating_duration_since(injected).as_millis() as u64),
        unavailable_ms: gap.as_millis() as u64,
        split_ms: seen.split.as_millis() as u64,
        acked,
        lost,
        doubled,
        puts_acked: disk.puts.acked,
        puts_bad: disk.puts.bad(),
        puts_off_disk: disk.off_disk,
        healed_ms: healed_in.map(|d| d.as_millis() as u64),
        healable,
        note: note.trim_end_matches("; ").to_string(),
    })
}
