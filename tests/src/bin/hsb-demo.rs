//! `just demo`: a whole hsb cluster on loopback with the model domain (the hypervisor test
//! double): hsb-primary, hsb-standby and three hsb-witness processes, and a client.
//!
//! 1. Checkpoints flow; the client's replies leave only after the standby has their state.
//! 2. The replication/heartbeat link is cut: the standby suspects the primary and asks the
//!    witnesses, who still get answers from it, so nothing fails over; the primary keeps serving
//!    under a witness lease. The link heals and the primary is protected again.
//! 3. The primary is killed: the witnesses confirm the application is gone, the standby
//!    activates, and the counter continues from the last acknowledged value.
//!
//! Every decision is shown with its evidence.
//!
//! A failed demo keeps its directory (the daemons' logs and decision logs) and prints the lines
//! that explain the decisions. `HSB_DEMO_FREEZE_PRIMARY_MS=N` stops hsb-primary (SIGSTOP) for N
//! ms before the cut, as a CPU-starved or blocked daemon stops: the witnesses see the application
//! and its daemon silent, as after a crash, and the standby takes over (DESIGN.md F6), which the
//! demo reports as a takeover with no fault injected.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hsb_tests::cluster::{Cluster, ClusterOpts};
use hsb_tests::{json_u64, keep_test_dirs, num, Client};

fn main() -> ExitCode {
    match demo() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\ndemo failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn say(s: &str) {
    println!("\n\x1b[1m==> {s}\x1b[0m");
}

fn get(s: &HashMap<String, String>, k: &str) -> String {
    s.get(k).cloned().unwrap_or_else(|| "-".into())
}

/// A decision's evidence, shortened for the screen.
fn show(label: &str, evidence: &str) {
    if evidence == "none" || evidence.is_empty() {
        return;
    }
    let field = |k: &str| {
        let pat = format!("\"{k}\":");
        evidence.find(&pat).map(|i| {
            let rest = &evidence[i + pat.len()..];
            let end = rest.find([',', '}']).unwrap_or(rest.len());
            rest[..end].trim_matches('"').to_string()
        })
    };
    println!(
        "    {label}: action={} rule={} grants={}/{} quorum={}",
        field("action").unwrap_or_default(),
        field("rule").unwrap_or_default(),
        field("grants").unwrap_or_default(),
        field("configured").unwrap_or_default(),
        field("quorum").unwrap_or_default()
    );
    let mut witnesses = evidence.split("{\"id\":").skip(1);
    for w in witnesses.by_ref().take(5) {
        let id = w.split(',').next().unwrap_or("?");
        let pick = |k: &str| {
            let pat = format!("\"{k}\":");
            w.find(&pat).map(|i| {
                let rest = &w[i + pat.len()..];
                rest[..rest.find([',', '}']).unwrap_or(rest.len())]
                    .trim_matches('"')
                    .to_string()
            })
        };
        println!(
            "      witness {id}: said {}{}; sees application {}, primary daemon {}",
            pick("said").unwrap_or_default(),
            pick("reason")
                .filter(|r| r != "null")
                .map(|r| format!(" ({r})"))
                .unwrap_or_default(),
            pick("app").unwrap_or_default(),
            pick("primary_host").unwrap_or_default()
        );
    }
}

/// Until disarmed, keeps the cluster's directory when dropped (an error or a panic of the demo)
/// and prints the log lines that explain its decisions. Declared after the cluster, so dropped
/// before it.
struct Evidence {
    dir: std::path::PathBuf,
    ok: bool,
}

impl Drop for Evidence {
    fn drop(&mut self) {
        if self.ok {
            return;
        }
        keep_test_dirs();
        eprintln!("\nevidence kept in {}", self.dir.display());
        let picks: [(&str, &[&str]); 5] = [
            (
                "standby.log",
                &[
                    "heartbeat lost",
                    "vote from",
                    "ACTIVATED",
                    "stepped",
                    "epoch",
                ],
            ),
            ("primary.log", &["step", "epoch", "lease", "fence", "WARN"]),
            ("w1.log", &["did not run", "view changed", "grant"]),
            ("w2.log", &["did not run", "view changed", "grant"]),
            ("w3.log", &["did not run", "view changed", "grant"]),
        ];
        for (file, pats) in picks {
            let text = std::fs::read_to_string(self.dir.join(file)).unwrap_or_default();
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| pats.iter().any(|p| l.contains(p)))
                .collect();
            let last = &lines[lines.len().saturating_sub(15)..];
            eprintln!("--- {file}: the last {} of these lines ---", last.len());
            for l in last {
                eprintln!("{}", l.chars().take(300).collect::<String>());
            }
        }
    }
}

/// Fails if the standby has taken over (`when`: what had been done to the cluster), showing the
/// activation's evidence.
fn no_takeover(cl: &Cluster, when: &str) -> Result<(), String> {
    let s = cl.standby.status();
    if get(&s, "state") != "active" && get(&s, "activation") == "none" {
        return Ok(());
    }
    let evidence = get(&s, "activation");
    show("standby's activation", &evidence);
    let silent_ms = json_u64(&evidence, "silent_ns")
        .map_or("?".to_string(), |ns| format!("{}", ns / 1_000_000));
    Err(format!(
        "the standby took over {when}: a false failover (the witnesses saw the primary's \
         application and daemon silent, its heartbeat silent for {silent_ms} ms at the decision; \
         a primary stalled for about 100 ms or more, starved of CPU or blocked, reads as a crash: \
         was a heavy job running beside the demo?)"
    ))
}

fn demo() -> Result<(), String> {
    say("hsb demo: primary, standby and 3 witnesses on loopback; model domain (hypervisor test double) of 64 MiB; 25 ms epochs");
    let mut cl = Cluster::start(ClusterOpts {
        memory: "64MiB",
        ..ClusterOpts::default()
    });
    let freeze = std::env::var("HSB_DEMO_FREEZE_PRIMARY_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    let mut evidence = Evidence {
        dir: cl.dir.0.clone(),
        ok: false,
    };
    steps(&mut cl, freeze)?;
    evidence.ok = true;
    Ok(())
}

fn steps(cl: &mut Cluster, freeze: Option<u64>) -> Result<(), String> {
    println!(
        "    decision logs: {} and {}",
        cl.dir.path("standby.decisions").display(),
        cl.dir.path("primary.decisions").display()
    );
    println!(
        "    (kept in {}; set HSB_KEEP_TEST_DIRS=1 to keep them after the demo)",
        cl.dir.0.display()
    );
    cl.wait_witnesses_ready();

    say("a client sends INCR to the primary; replies leave only after the standby acknowledged their checkpoint");
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (a2, s2, psvc) = (acked.clone(), stop.clone(), cl.primary_service);
    let client = std::thread::spawn(move || {
        let Ok(mut c) = Client::connect(psvc, Duration::from_secs(5)) else {
            return;
        };
        c.set_timeout(Duration::from_secs(5));
        while !s2.load(Ordering::Relaxed) {
            match c.request("INCR") {
                Ok(v) => a2.store(v.parse().unwrap_or(0), Ordering::Relaxed),
                Err(_) => break,
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let row = |t: f64| {
        let p = cl.primary.status();
        let s = cl.standby.status();
        println!(
            "    {t:>5.1}s  counter {:>5}  primary: {:<11} ckpts {:>5} pause p99 {:>6}ms  standby: {:<12} applied {:>5}  hb {:>6}",
            acked.load(Ordering::Relaxed),
            get(&p, "authority"),
            num(&p, "checkpoints"),
            get(&p, "pause_ms_p99"),
            get(&s, "decision_state"),
            get(&s, "applied_checkpoint"),
            get(&s, "heartbeats"),
        );
    };
    let t0 = Instant::now();
    for i in 0..3 {
        std::thread::sleep(Duration::from_secs(1));
        row(t0.elapsed().as_secs_f64());
        if let (0, Some(ms)) = (i, freeze) {
            println!("    (HSB_DEMO_FREEZE_PRIMARY_MS: hsb-primary stopped for {ms} ms)");
            cl.primary.signal("STOP");
            std::thread::sleep(Duration::from_millis(ms));
            cl.primary.signal("CONT");
        }
    }
    no_takeover(cl, "with no fault injected")?;

    say("cut the replication and heartbeat link between the hosts (the clients still reach the primary)");
    cl.repl.cut();
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(750));
        row(t0.elapsed().as_secs_f64());
    }
    let s = cl.standby.status();
    let p = cl.primary.status();
    show("standby's decision", &get(&s, "last_decision"));
    show("primary's authority", &get(&p, "last_decision"));
    no_takeover(cl, "on a link cut")?;
    println!("    -> no failover: the witnesses still get answers from the primary (rule 1); the primary serves under their lease (rule 3)");

    say("heal the link");
    cl.repl.heal();
    cl.primary
        .wait_for("protected again", Duration::from_secs(20), |s| {
            s["authority"] == "protected"
        });
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(500));
        row(t0.elapsed().as_secs_f64());
    }

    say("kill -9 the primary (host A crashes)");
    cl.primary.kill9();
    let killed = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let last = acked.load(Ordering::Relaxed);
    let st = cl
        .standby
        .wait_for("automatic activation", Duration::from_secs(10), |s| {
            s["state"] == "active"
        });
    let decided = killed.elapsed();
    let _ = client.join();
    show("standby's decision", &get(&st, "activation"));
    let mut c = Client::connect(cl.standby_service, Duration::from_secs(5))
        .map_err(|e| format!("standby does not serve: {e}"))?;
    let g: u64 = c
        .request("GET")
        .map_err(|e| e.to_string())?
        .parse()
        .map_err(|_| "bad GET reply")?;
    println!(
        "    activated {:.0} ms after the crash; the client reconnects: GET -> {g} (last acknowledged before the crash: {last})",
        decided.as_secs_f64() * 1e3
    );
    let vals: Vec<String> = (0..5).filter_map(|_| c.request("INCR").ok()).collect();
    println!("    INCR x5 -> {}", vals.join(", "));
    if g < last {
        return Err(format!(
            "acknowledged increments lost: replica {g} < acknowledged {last}"
        ));
    }
    say(&format!(
        "counter continued from {g}: nothing acknowledged was lost"
    ));
    Ok(())
}
