//! `just demo`: hsb-primary, hsb-standby and a client on loopback with the model domain (the
//! hypervisor test double). Checkpoints flow with live figures; the primary is killed with
//! SIGKILL; the standby is activated; the client's counter continues from the last value it was
//! acknowledged.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hsb_tests::{num, Client, Daemon, TempDir};

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
    println!("\x1b[1m==> {s}\x1b[0m");
}

fn demo() -> Result<(), String> {
    let dir = TempDir::new("demo");
    let key = dir.path("cluster.key");
    hsb_common::key::ClusterKey::generate(&key).map_err(|e| e.to_string())?;
    let (repl, psvc, ssvc) = (
        hsb_tests::free_addr(),
        hsb_tests::free_addr(),
        hsb_tests::free_addr(),
    );
    let sconf = dir.path("standby.conf");
    let pconf = dir.path("primary.conf");
    std::fs::write(
        &sconf,
        format!(
            "node = host-b\ncluster_key = {}\nlisten = {repl}\ncontrol = {}\nmodel.service = {ssvc}\n",
            key.display(),
            dir.path("standby.sock").display()
        ),
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(
        &pconf,
        format!(
            "node = host-a\ncluster_key = {}\nstandby = {repl}\ncontrol = {}\nmodel.service = {psvc}\n",
            key.display(),
            dir.path("primary.sock").display()
        ),
    )
    .map_err(|e| e.to_string())?;
    say("hsb demo: model domain (the hypervisor test double), 64 MiB, 25 ms epochs, on loopback");
    println!(
        "    primary config:\n{}",
        indent(&std::fs::read_to_string(&pconf).unwrap_or_default())
    );
    let standby = Daemon::start(
        "hsb-standby",
        &sconf,
        &dir.path("standby.sock"),
        &dir.path("standby.log"),
        &[],
    );
    wait(&standby, "standby up", |_| true)?;
    let mut primary = Daemon::start(
        "hsb-primary",
        &pconf,
        &dir.path("primary.sock"),
        &dir.path("primary.log"),
        &[],
    );
    say("primary started: initial full synchronisation of 64 MiB");
    let st = wait(&primary, "first checkpoint acknowledged", |s| {
        num(s, "acked_checkpoint") >= 1
    })?;
    println!("    synchronised; primary state: {}", st["state"]);

    say("a client sends INCR to the primary; each reply leaves only after the standby acknowledged its checkpoint");
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (a2, s2) = (acked.clone(), stop.clone());
    let client = std::thread::spawn(move || -> Result<(), String> {
        let mut c = Client::connect(psvc, Duration::from_secs(5)).map_err(|e| e.to_string())?;
        c.set_timeout(Duration::from_secs(2));
        while !s2.load(Ordering::Relaxed) {
            match c.request("INCR") {
                Ok(v) => a2.store(
                    v.parse().map_err(|_| format!("bad reply {v}"))?,
                    Ordering::Relaxed,
                ),
                Err(_) => break, // the primary is gone
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    });
    println!(
        "    {:>5} {:>9} {:>8} {:>9} {:>9} {:>10} {:>9}",
        "t(s)", "counter", "ckpts", "pause p99", "ack p99", "dirty/ckpt", "standby@"
    );
    let t0 = Instant::now();
    for _ in 0..6 {
        std::thread::sleep(Duration::from_secs(1));
        let p = primary.status();
        let s = standby.status();
        println!(
            "    {:>5.1} {:>9} {:>8} {:>7}ms {:>7}ms {:>10} {:>9}",
            t0.elapsed().as_secs_f64(),
            acked.load(Ordering::Relaxed),
            num(&p, "checkpoints"),
            p.get("pause_ms_p99").cloned().unwrap_or_default(),
            p.get("ack_rtt_ms_p99").cloned().unwrap_or_default(),
            num(&p, "last_dirty_pages"),
            s.get("applied_checkpoint").cloned().unwrap_or_default(),
        );
    }

    say("kill -9 the primary (host A crashes)");
    primary.kill9();
    let killed = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let _ = client.join();
    let last = acked.load(Ordering::Relaxed);
    println!("    last value the client was acknowledged: {last}");
    let s = standby.status();
    println!(
        "    standby replica at checkpoint {} (counter {})",
        s["applied_checkpoint"], s["counter"]
    );

    say("operator: hsb-standby activate   (automatic, witness-based failover is the next milestone)");
    let out = standby.ctl("activate").map_err(|e| e.to_string())?;
    print!("    {out}");
    let mut c = Client::connect(ssvc, Duration::from_secs(5))
        .map_err(|e| format!("standby does not serve: {e}"))?;
    let g: u64 = c
        .request("GET")
        .map_err(|e| e.to_string())?
        .parse()
        .map_err(|_| "bad GET reply")?;
    println!(
        "    client reconnects to the standby after {:.0} ms: GET -> {g}",
        killed.elapsed().as_secs_f64() * 1e3
    );
    let mut vals = vec![];
    for _ in 0..5 {
        vals.push(c.request("INCR").map_err(|e| e.to_string())?);
    }
    println!("    INCR x5 -> {}", vals.join(", "));
    if g < last {
        return Err(format!(
            "acknowledged increments lost: replica {g} < acknowledged {last}"
        ));
    }
    say(&format!(
        "counter continued: acknowledged {last}, replica {g} ({} in-flight increment{} the client never saw acknowledged), nothing acknowledged lost",
        g - last,
        if g - last == 1 { "" } else { "s" }
    ));
    Ok(())
}

fn wait(
    d: &Daemon,
    what: &str,
    pred: impl Fn(&std::collections::HashMap<String, String>) -> bool,
) -> Result<std::collections::HashMap<String, String>, String> {
    let t = Instant::now();
    loop {
        let s = d.status();
        if !s.is_empty() && pred(&s) {
            return Ok(s);
        }
        if t.elapsed() > Duration::from_secs(30) {
            return Err(format!(
                "{}: timed out waiting for {what}\n{}",
                d.name,
                d.log_text()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("      {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
