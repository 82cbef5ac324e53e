//! Making each fault and healing it again.

use std::time::{Duration, Instant};

use crate::netns::{Host, Net, Topology};
use crate::{bin, num, Daemon};

use super::nodes::{Nodes, DELAY, JITTER};
use super::{Fault, SLOW_FOR, SLOW_MBIT};

/// F14's loss, percent.
fn gray_loss(fault: Fault) -> u8 {
    match fault {
        Fault::F14Gray20 => 20,
        Fault::F14Gray50 => 50,
        _ => 80,
    }
}

/// Addresses of the witnesses, by number.
fn witness_ips(topo: &Topology, ws: &[u8]) -> Vec<String> {
    ws.iter()
        .map(|i| topo.ip(Host::W(*i), Net::Client))
        .collect()
}

/// What injecting a fault leaves for the verdict (F13 only).
#[derive(Debug, Default)]
pub(super) struct Injection {
    /// F13: when host A crashed after the slow stretch (the decision is timed from then).
    pub(super) crashed_at: Option<Instant>,
    /// F13: whether A was ever seen unprotected while its standby was slow but there.
    pub(super) slow_unprotected: bool,
    /// F13: whether A's status ever said protected-degraded without the words and the lag.
    pub(super) slow_unworded: bool,
}

/// Make `fault` on the case's cluster (what the case did worth saying goes into `note`).
pub(super) fn inject(fault: Fault, n: &mut Nodes, note: &mut String) -> Result<Injection, String> {
    let mut injection = Injection::default();
    let (a_c, b_c) = (
        n.topo.ip(Host::A, Net::Client),
        n.topo.ip(Host::B, Net::Client),
    );
    let f8_sides: Option<(&[u8], &[u8])> = match fault {
        Fault::F8MajorityB => Some((&[1], &[2, 3])),
        Fault::F8MajorityA => Some((&[1, 2], &[3])),
        _ => None,
    };
    let topo = &n.topo;
    match fault.base() {
        Fault::F1 => {
            n.primary.kill9();
            topo.link(Host::A, Net::Client, false)?;
            topo.link(Host::A, Net::Replication, false)?;
        }
        Fault::F2 => topo.link(Host::A, Net::Replication, false)?,
        Fault::F3 => topo.drop_arriving(Host::B, Net::Replication, 100)?,
        Fault::F4 => topo.link(Host::A, Net::Client, false)?,
        Fault::F5 => topo.set_rules(Host::A, &["in tcp dport 7000 drop".into()])?,
        Fault::F6Short | Fault::F6Long => n.primary.signal("STOP"),
        Fault::F7 => {
            topo.link(Host::B, Net::Client, false)?;
            topo.link(Host::B, Net::Replication, false)?;
        }
        Fault::F8MajorityA | Fault::F8MajorityB => {
            let (a_side, b_side) = f8_sides.unwrap_or_default();
            // The sides first, the replication link last: were the link cut first, A would
            // get a lease from a quorum that still includes B's side, run unprotected, and B
            // would rightly refuse its stale replica (rule 5) instead of taking over.
            let mut from_a = vec![b_c.clone()];
            from_a.extend(witness_ips(topo, b_side));
            topo.isolate_from(Host::A, &from_a)?;
            let mut from_b = vec![a_c.clone()];
            from_b.extend(witness_ips(topo, a_side));
            topo.isolate_from(Host::B, &from_b)?;
            topo.link(Host::A, Net::Replication, false)?;
        }
        Fault::F9 => {
            for i in 1..=3 {
                topo.link(Host::W(i), Net::Client, false)?;
            }
            topo.link(Host::A, Net::Replication, false)?;
        }
        Fault::F10 => topo.drop_arriving(Host::B, Net::Replication, 30)?,
        Fault::F10Delay => {
            n.shaper.set(DELAY, JITTER);
            topo.drop_arriving(Host::B, Net::Replication, 30)?;
        }
        Fault::OperatorActivate => {
            let out = std::process::Command::new(bin("hsb-standby"))
                .arg("activate")
                .arg("--control")
                .arg(n.dir.path("b.sock"))
                .output()
                .map_err(|e| format!("hsb-standby activate: {e}"))?;
            let answer = String::from_utf8_lossy(&out.stdout);
            note.push_str(&format!(
                "operator: `hsb-standby activate` said {:?}; ",
                answer.trim()
            ));
        }
        Fault::F13SlowLink => {
            topo.shape(Host::A, Net::Replication, SLOW_MBIT)?;
            // What protection looked like from A while the link was slow, sampled every 100 ms.
            let mut modes: std::collections::BTreeMap<String, u32> = Default::default();
            let (mut lag, mut lag_ms, mut ckpts) = (0u64, 0f64, (0u64, 0u64));
            // Samples protected-degraded whose `protection` did not say so with the lag.
            let mut unworded = 0u32;
            let t = Instant::now();
            ckpts.0 = num(&n.primary.status(), "checkpoints");
            while t.elapsed() < SLOW_FOR {
                let a = n.primary.status();
                if let Some(m) = a.get("authority") {
                    *modes.entry(m.clone()).or_default() += 1;
                    // Status says it in words too, with the lag (issue 12).
                    let said = a.get("protection").map_or("", String::as_str);
                    if m == "protected-degraded"
                        && !(said.starts_with("protected, degraded")
                            && said.contains("replica lag"))
                    {
                        unworded += 1;
                    }
                }
                lag = lag.max(num(&a, "replica_lag_checkpoints"));
                lag_ms = lag_ms.max(
                    a.get("replica_lag_ms")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0.0),
                );
                ckpts.1 = num(&a, "checkpoints");
                std::thread::sleep(Duration::from_millis(100));
            }
            let samples: Vec<String> = modes.iter().map(|(m, c)| format!("{m} {c}")).collect();
            let unprotected = modes.get("unprotected").copied().unwrap_or(0);
            if unprotected > 0 {
                injection.slow_unprotected = true;
            }
            if unworded > 0 {
                injection.slow_unworded = true;
                note.push_str(&format!(
                    "{unworded} protected-degraded sample(s) of A's status without \"protected, degraded\" and the lag in `protection`; "
                ));
            }
            note.push_str(&format!(
                "{} Mbit/s for {} s: A's authority samples {}; {:.2} ckpt/s; replica lag up to {lag} checkpoint(s), {:.0} ms; then A crashed; ",
                SLOW_MBIT,
                SLOW_FOR.as_secs(),
                samples.join(", "),
                ckpts.1.saturating_sub(ckpts.0) as f64 / SLOW_FOR.as_secs_f64(),
                lag_ms
            ));
            n.primary.kill9();
            topo.link(Host::A, Net::Client, false)?;
            topo.link(Host::A, Net::Replication, false)?;
            injection.crashed_at = Some(Instant::now());
        }
        Fault::F14Gray20 | Fault::F14Gray50 | Fault::F14Gray80 => {
            topo.drop_arriving(Host::A, Net::Client, gray_loss(fault))?
        }
        other => return Err(format!("{other:?} has no injection of its own")),
    }
    Ok(injection)
}

/// Heal `fault` after it was held (F1 and F13: host A stays down; F12 after F1: host A
/// restarts as the standby).
pub(super) fn heal(fault: Fault, n: &mut Nodes, note: &mut String) -> Result<(), String> {
    let topo = &n.topo;
    match fault.base() {
        Fault::F1 if fault == Fault::F12AfterF1 => {
            // Host A reboots: without the VM (so without its address), and starts hsb-standby
            // for the copy that now runs on B.
            let _ = topo.exec(
                Host::A,
                &[
                    "ip",
                    "addr",
                    "del",
                    &format!("{}/24", topo.service_ip()),
                    "dev",
                    "eth0",
                ],
            );
            topo.link(Host::A, Net::Client, true)?;
            topo.link(Host::A, Net::Replication, true)?;
            let mut cmd = topo.command(Host::A, &bin("hsb-standby"));
            cmd.args(["run", "-c"]).arg(n.dir.path("rejoin.conf"));
            n.extra.push(Daemon::start_command(
                "hsb-standby (host A, restarted)",
                cmd,
                &n.dir.path("rejoined.sock"),
                &n.dir.path("a-restarted.log"),
            ));
            note.push_str("host A restarted as the standby; ");
        }
        Fault::F1 => note.push_str("host A stays down; "),
        Fault::F2 => topo.link(Host::A, Net::Replication, true)?,
        Fault::F3 | Fault::F10 => topo.clear_rules(Host::B),
        Fault::F14Gray20 | Fault::F14Gray50 | Fault::F14Gray80 => topo.clear_rules(Host::A),
        Fault::F13SlowLink => note.push_str("host A stays down; "),
        Fault::F10Delay => {
            n.shaper.clear();
            topo.clear_rules(Host::B);
        }
        Fault::F5 => topo.clear_rules(Host::A),
        Fault::F6Short | Fault::F6Long => n.primary.signal("CONT"),
        Fault::F7 => {
            topo.link(Host::B, Net::Client, true)?;
            topo.link(Host::B, Net::Replication, true)?;
        }
        // A fenced old primary gives up the service address itself (`on_fence`).
        Fault::F4 => topo.link(Host::A, Net::Client, true)?,
        Fault::OperatorActivate => {}
        Fault::F8MajorityA | Fault::F8MajorityB => {
            topo.clear_rules(Host::A);
            topo.clear_rules(Host::B);
            topo.link(Host::A, Net::Replication, true)?;
        }
        Fault::F9 => {
            for i in 1..=3 {
                topo.link(Host::W(i), Net::Client, true)?;
            }
            topo.link(Host::A, Net::Replication, true)?;
        }
        _ => {}
    }
    Ok(())
}
