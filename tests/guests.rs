//! Several guests per host pair, on loopback with real processes: three guests, each with its
//! own hsb-primary and hsb-standby side by side (own ports, paths and cluster key), and three
//! hsb-witness processes each serving all three guests. One guest's primary crashes: that guest
//! fails over through the shared witnesses, and the other two are untouched (no failover, no
//! lost or doubled write, no new session or full synchronisation, no vote granted for them).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hsb_tests::faults::{check_history, client};
use hsb_tests::guests::{Guests, Layout};
use hsb_tests::{num, Client};

#[test]
fn three_guests_share_three_witnesses_and_a_crash_of_one_leaves_the_others_untouched() {
    let mut g = Guests::start(Layout::loopback(3), "").unwrap_or_else(|e| panic!("{e}"));
    // Every witness process sees the three guests, healthy.
    for w in &g.witnesses {
        let s = w.ctl("status").expect("status");
        assert!(s.contains("\nguests g1,g2,g3\n"), "{s}");
        assert_eq!(s.matches("\napplication up\n").count(), 3, "{s}");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let others = [0usize, 2];
    let clients: Vec<_> = others
        .iter()
        .map(|&i| client(g.layout.guests[i].a_svc, stop.clone()))
        .collect();
    let before: Vec<(u64, u64)> = others
        .iter()
        .map(|&i| {
            let s = g.primaries[i].status();
            (num(&s, "sessions"), num(&s, "full_syncs"))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));

    // Guest g2's primary (and the model domain inside it) crashes.
    g.primaries[1].kill9();
    let t = Instant::now();
    while !g.b_serving(1) {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "g2 did not fail over\n{}",
            g.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let failover = t.elapsed();
    let mut c = Client::connect(g.layout.guests[1].b_svc, Duration::from_secs(2)).expect("g2");
    assert!(c.request("INCR").expect("INCR").parse::<u64>().is_ok());
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let histories: Vec<_> = clients
        .into_iter()
        .map(|c| c.join().unwrap_or_default())
        .collect();

    for (k, &i) in others.iter().enumerate() {
        let name = g.name(i).to_string();
        let (acked, lost, doubled, gap) = check_history(&histories[k]);
        assert!(acked > 20, "{name}: {acked} acknowledged");
        assert_eq!((lost, doubled), (0, 0), "{name}");
        assert!(
            gap < Duration::from_secs(1),
            "{name}: unavailable for {gap:?}"
        );
        assert!(!g.b_serving(i), "{name}'s standby activated\n{}", g.logs());
        let s = g.primaries[i].status();
        assert_eq!(
            s.get("authority").map(String::as_str),
            Some("protected"),
            "{name}: {s:?}"
        );
        assert_eq!(
            (num(&s, "sessions"), num(&s, "full_syncs")),
            before[k],
            "{name}: its replication was disturbed"
        );
        for w in 0..3 {
            let ws = g.witness_status(w, i);
            assert_eq!(ws.get("guest"), Some(&name));
            assert_eq!(
                ws.get("application").map(String::as_str),
                Some("up"),
                "{ws:?}"
            );
            assert_eq!(
                num(&ws, "votes_granted"),
                0,
                "witness {} voted for {name}",
                w + 1
            );
            assert_eq!(num(&ws, "epoch_seen"), 1);
        }
    }
    // g2's takeover went through the shared witnesses: a quorum of them voted, and they
    // follow g2's new epoch.
    let voted = (0..3)
        .filter(|&w| num(&g.witness_status(w, 1), "votes_granted") >= 1)
        .count();
    assert!(voted >= 2, "{voted} witnesses voted for g2\n{}", g.logs());
    eprintln!("g2 failed over in {failover:?}; g1 and g3 untouched");
    // Witness 1's metrics say the same, per guest.
    if let Some(m) = g.metrics {
        let text = hsb_tests::prom::scrape(m).expect("scrape");
        for name in ["g1", "g3"] {
            assert!(
                text.contains(&format!(
                    "\nhsb_witness_votes_total{{guest=\"{name}\",answer=\"granted\"}} 0\n"
                )),
                "{text}"
            );
        }
        assert!(text.contains("\nhsb_witness_guests 3\n"));
    }
}
