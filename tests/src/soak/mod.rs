//! The soak test (`just soak [minutes]`, and a short run in `just test`): the cluster on network
//! namespaces under a seeded random nemesis for the whole run, roles swapping again and again,
//! and a client history checked over the whole run.
//!
//! - [`cluster`]: hosts A and B with symmetric configurations (each can be primary or standby,
//!   hand-overs in both directions), three witnesses, the service address moving with the
//!   active copy.
//! - [`schedule`]: the seeded steps: kill -9 and restart of any daemon, host crashes,
//!   partitions of every kind (F2-F4, F7-F9), loss, SIGSTOP, witness restarts, replays of
//!   captured datagrams ([`capture`]), operator switchovers and activations, maintenance mode;
//!   one step in four overlaps a second fault, one in six starts before the cluster is whole.
//! - [`nemesis`]: runs the steps, heals every fault within its step, keeps a model of the
//!   faults in force, and detects missed takeovers.
//! - [`monitor`]: samples both hosts' status all run long: epochs served, split brain.
//! - [`report`]: the checks and the markdown report.

pub mod capture;
pub mod cluster;
pub mod monitor;
pub mod nemesis;
pub mod report;
pub mod schedule;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::netns::Host;
use cluster::SoakCluster;
use monitor::{wall_ms, Monitor};
use nemesis::Nemesis;
use report::{Inputs, Report};
use schedule::Schedule;

/// The two hosts' names, by index.
pub const HOSTS: [&str; 2] = ["a", "b"];

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long the nemesis runs (the last step, the final healing and the checks add to it).
    pub duration: Duration,
    pub seed: u64,
    /// Where configurations, logs and the report go (emptied first).
    pub dir: PathBuf,
    /// The `hsb-soak` binary (its `sniff` command captures datagrams in the namespaces).
    pub sniffer: PathBuf,
    /// `failover.policy` of every daemon: `client-oriented`; a baseline (`heartbeat-only`)
    /// shows what the checks catch.
    pub policy: String,
    /// Set (by SIGINT) to end the run early: the current step heals, the report is written,
    /// everything is torn down.
    pub interrupt: Arc<AtomicBool>,
}

/// A seed from the environment (`HSB_SOAK_SEED`, decimal or 0x-hex), else from the clock.
pub fn seed_from_env() -> u64 {
    if let Ok(s) = std::env::var("HSB_SOAK_SEED") {
        let s = s.trim();
        let parsed = match s.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16).ok(),
            None => s.parse().ok(),
        };
        if let Some(v) = parsed {
            return v;
        }
        eprintln!("HSB_SOAK_SEED={s:?} is not a number; using a fresh seed");
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    hsb_common::rng::SplitMix64::new(t ^ u64::from(std::process::id())).next_u64() % 1_000_000_000
}

/// The target directory of the running executable (for `target/soak`).
pub fn target_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.ancestors()
                .find(|p| p.file_name().is_some_and(|n| n == "target"))
                .map(|p| p.to_path_buf())
        })
        .unwrap_or_else(std::env::temp_dir)
}

/// Sets a flag when dropped (stops the client thread even when the run panics).
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Least time between two requests of the client. While a copy serves unprotected (under the
/// witnesses' leases, after a takeover until its standby is back) replies leave at once, and an
/// unpaced client would send tens of thousands of requests a second, starving the daemons of
/// the two CPUs this runs on; while protected a reply waits for its checkpoint's ack anyway.
pub const CLIENT_PACE: Duration = Duration::from_millis(10);

/// A sequential client of the service address, paced by [`CLIENT_PACE`], recording its history
/// until `stop` (the same requests and timeouts as the fault suite's client).
pub fn client(
    svc: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<crate::faults::Op>> {
    std::thread::spawn(move || {
        let mut history = vec![];
        let mut c: Option<crate::Client> = None;
        while !stop.load(Ordering::Relaxed) {
            let t0 = Instant::now();
            if c.is_none() {
                c = crate::Client::connect(svc, Duration::from_millis(300)).ok();
                if let Some(cl) = &c {
                    cl.set_timeout(Duration::from_millis(700));
                }
            }
            let value = c
                .as_mut()
                .and_then(|cl| cl.request("INCR").ok())
                .and_then(|v| v.parse().ok());
            if value.is_none() {
                c = None;
            }
            history.push(crate::faults::Op {
                start: t0,
                end: Instant::now(),
                value,
            });
            let pace = if value.is_none() {
                Duration::from_millis(20)
            } else {
                CLIENT_PACE
            };
            std::thread::sleep(pace.saturating_sub(t0.elapsed()));
        }
        history
    })
}

/// Run a soak: start the cluster, the sniffers, the monitor and the client, run the schedule
/// until `o.duration` has passed, heal, wait for a whole cluster, and check the whole history.
/// Everything is torn down on return (namespaces too, also on a panic); configurations and logs
/// stay in `o.dir`. Err only when the cluster cannot even start.
pub fn run(o: &Options) -> Result<Report, String> {
    let _ = std::fs::remove_dir_all(&o.dir);
    std::fs::create_dir_all(&o.dir).map_err(|e| format!("{}: {e}", o.dir.display()))?;
    eprintln!(
        "soak: seed {} for {:.1} min ({}); logs in {}",
        o.seed,
        o.duration.as_secs_f64() / 60.0,
        o.policy,
        o.dir.display()
    );
    let mut c = SoakCluster::start(&o.dir, &o.policy)?;
    c.capture = Some(capture::Capture::start(
        &c.topo,
        &[Host::A, Host::B, Host::W(1), Host::W(2), Host::W(3)],
        &o.sniffer,
    ));
    let mut mon = Monitor::start(c.sockets());
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_client = StopOnDrop(stop.clone());
    let client = client(c.service, stop.clone());
    let start = Instant::now();
    let start_wall = wall_ms();
    let mut nem = Nemesis::new(&mut c, &mon, o.seed, start, o.interrupt.clone());
    let mut error = None;
    if nem.wait_whole(Duration::from_secs(60)).is_none() {
        let w = nem.mon.snapshot();
        error = Some(format!(
            "the cluster was not whole 60 s after it started: {}",
            nem.describe_state(&w)
        ));
    }
    let mut schedule = Schedule::new(o.seed);
    let deadline = start + o.duration;
    let mut index = 0;
    while error.is_none() && Instant::now() < deadline {
        if o.interrupt.load(Ordering::Relaxed) {
            error = Some("interrupted".into());
            break;
        }
        index += 1;
        let step = schedule.next_step();
        if let Err(e) = nem.run_step(index, step) {
            nem.event(&format!("step {index} failed: {e}"));
            error = Some(e);
        }
    }
    let final_whole = error.is_none() && {
        nem.event("run over: waiting for a whole cluster");
        nem.wait_whole(Duration::from_secs(90)).is_some()
    };
    if !final_whole && error.is_none() {
        let w = nem.mon.snapshot();
        let state = nem.describe_state(&w);
        nem.event(&format!("not whole at the end: {state}"));
    }
    // A last stretch of traffic on the whole cluster.
    if final_whole {
        nem.wait(Duration::from_secs(2));
    }
    nem.event("stopping the client");
    let Nemesis {
        history,
        steps,
        missed,
        refusals,
        stuck,
        anomalies,
        counts,
        replayed,
        ..
    } = nem;
    stop.store(true, Ordering::Relaxed);
    let ops = client.join().unwrap_or_default();
    let watch = mon.finish();
    let captured = c.capture.as_ref().map(|c| c.counts()).unwrap_or_default();
    let mut decisions = vec![];
    for h in 0..2 {
        decisions.extend(report::decisions(h, &c.logs(h)));
    }
    decisions.sort_by_key(|d| d.wall);
    let report = Report::new(Inputs {
        seed: o.seed,
        policy: o.policy.clone(),
        planned: o.duration,
        start,
        start_wall,
        ops: &ops,
        watch: &watch,
        steps: &steps,
        history: &history,
        missed: &missed,
        operator_refusals: &refusals,
        stuck: &stuck,
        anomalies: &anomalies,
        counts: &counts,
        decisions: &decisions,
        final_whole,
        error,
        captured,
        replayed,
        dir: &o.dir,
    });
    let _ = std::fs::write(o.dir.join("report.md"), report.markdown());
    drop(c);
    Ok(report)
}
