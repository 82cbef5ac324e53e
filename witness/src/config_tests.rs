//! hsb-witness configuration tests.

use super::*;

fn sectioned(text: &str) -> Result<Sectioned, String> {
    Config::from_text_sectioned(schema(), "test.conf", text, &[], &sections())
        .map_err(|e| e.to_string())
}

fn all(text: &str) -> Result<Settings, String> {
    Settings::from_sections(&sectioned(text)?).map_err(|e| e.to_string())
}

/// The settings of a file without sections: the whole, and its one guest.
fn settings(text: &str) -> (Settings, Guest) {
    let all = all(text).expect("settings");
    assert_eq!(all.guests.len(), 1);
    assert_eq!(all.guests[0].name, DEFAULT_GUEST);
    let g = all.guests[0].clone();
    (all, g)
}

const BASE: &str = "cluster_key = /k\nlisten = 127.0.0.1:1\nprimary = 127.0.0.1:2\nstandby = 127.0.0.1:3\nprobe = tcp 127.0.0.1:4\nfailover.witnesses = 1,2,3\n";

#[test]
fn default_paths_are_named_after_the_id() {
    let (a, ag) = settings(&format!("{BASE}id = 1\n"));
    let (b, bg) = settings(&format!("{BASE}id = 2\n"));
    assert_eq!(ag.state_file, Path::new("/var/lib/hsb/witness-1.state"));
    assert_eq!(a.control, Path::new("/run/hsb/witness-1.sock"));
    assert_eq!(bg.state_file, Path::new("/var/lib/hsb/witness-2.state"));
    assert_eq!(b.control, Path::new("/run/hsb/witness-2.sock"));
    assert_eq!(a.metrics_listen, None, "metrics are off by default");
    // The status client finds the same socket from the same file.
    let c = sectioned(&format!("{BASE}id = 2\n")).unwrap();
    assert_eq!(control_path_of(&c).unwrap(), b.control);
    // Explicit paths are kept, with `{id}` filled in if they use it.
    let (e, eg) = settings(&format!(
        "{BASE}id = 3\ncontrol = /tmp/w.sock\nstate_file = /srv/w{{id}}/state\n"
    ));
    assert_eq!(e.control, Path::new("/tmp/w.sock"));
    assert_eq!(eg.state_file, Path::new("/srv/w3/state"));
    assert_eq!(with_id(Path::new("/a/{id}-{id}"), 7), Path::new("/a/7-7"));
}

#[test]
fn without_a_configuration_the_one_socket_is_found() {
    let d = std::env::temp_dir().join(format!("hsb-witness-run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    assert!(find_control(&d)
        .unwrap_err()
        .contains("no witness control socket"));
    std::fs::write(d.join("witness-12.sock"), "").unwrap();
    std::fs::write(d.join("primary.sock"), "").unwrap();
    std::fs::write(d.join("witness-x.sock"), "").unwrap();
    assert_eq!(find_control(&d).unwrap(), d.join("witness-12.sock"));
    std::fs::write(d.join("witness-3.sock"), "").unwrap();
    let e = find_control(&d).unwrap_err();
    assert!(
        e.contains("2 witness control sockets") && e.contains("-c FILE"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&d);
}

fn try_settings(extra: &str) -> Result<Guest, String> {
    let text = format!("id = 1\ncluster_key = k\nlisten = 127.0.0.1:1\nprimary = 127.0.0.1:2\nstandby = 127.0.0.1:3\nprobe = tcp 127.0.0.1:4\n{extra}");
    let s = Config::from_text_sectioned(schema(), "w.conf", &text, &[], &sections())
        .map_err(|e| e.to_string())?;
    let mut all = Settings::from_sections(&s).map_err(|e| e.to_string())?;
    Ok(all.guests.remove(0))
}

#[test]
fn probe_report_and_freshness_periods_fit_together() {
    try_settings("").expect("defaults");
    // A probe in flight delays the next one: a timeout beyond the interval is fine.
    let s = try_settings("probe_interval = 20ms\nprobe_timeout = 1s\n").expect("long timeout");
    assert_eq!(s.probe.timeout, Duration::from_secs(1));
    for (extra, want) in [
        // `check` accepted these, `run` refused them (ProbeSet::new).
        ("probe_interval = 0s\n", "w.conf:7: key 'probe_interval': expected from 1ms to 3600s, got '0'"),
        ("probe_timeout = 0s\n", "w.conf:7: key 'probe_timeout': expected from 1ms to 3600s"),
        ("probe_timeout = 2h\n", "w.conf:7: key 'probe_timeout': expected a duration"),
        ("probe_timeout = 61m\n", "w.conf:7: key 'probe_timeout': expected from 1ms to 3600s, got '3660s'"),
        ("report_interval = 0s\n", "w.conf:7: key 'report_interval': expected from 1ms"),
        (
            "report_interval = 200ms\n",
            "w.conf:7: key 'report_interval': expected at most half of failover.report-fresh (300ms)",
        ),
        (
            "probe_interval = 60ms\n",
            "w.conf (default): key 'failover.host-fresh': expected at least twice probe_interval (60ms)",
        ),
        ("failover.witnesses = 1,2\n", "w.conf:7: key 'failover.witnesses': expected an odd number"),
        ("failover.witnesses = 2,3,4\n", "w.conf:1: key 'id': 1 is not among failover.witnesses"),
    ] {
        let e = try_settings(extra).expect_err(extra);
        assert!(e.starts_with(want), "{extra:?}: {e}");
    }
    try_settings("probe_interval = 60ms\nfailover.host-fresh = 120ms\n").expect("fresh enough");
}

const GUESTS: &str = "node = client-1\nid = 1\nfailover.witnesses = 1,2,3\nmetrics_listen = 127.0.0.1:9400\n\n[guest web]\ncluster_key = /etc/hsb/web/cluster.key\nlisten = 10.0.0.11:7401\nprimary = 10.0.0.1:7301\nstandby = 10.0.0.2:7301\nprobe = http 10.0.0.101:80 /health 200\n\n[guest db]\ncluster_key = /etc/hsb/db/cluster.key\nlisten = 10.0.0.11:7402\nprimary = 10.0.0.2:7302\nstandby = 10.0.0.1:7302\nprobe = tcp 10.0.0.102:5432\nprobe_interval = 40ms\nfailover.host-fresh = 200ms\n";

#[test]
fn one_witness_serves_several_guests_each_in_its_section() {
    let s = all(GUESTS).expect("settings");
    assert_eq!(s.node, "client-1");
    assert_eq!(s.metrics_listen, Some("127.0.0.1:9400".parse().unwrap()));
    assert_eq!(s.control, Path::new("/run/hsb/witness-1.sock"));
    let names: Vec<_> = s.guests.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["web", "db"]);
    let (web, db) = (&s.guests[0], &s.guests[1]);
    assert_eq!((web.id, db.id), (1, 1));
    assert_eq!(web.listen, "10.0.0.11:7401".parse().unwrap());
    assert_eq!(db.primary, "10.0.0.2:7302".parse().unwrap());
    assert_eq!(web.probe.interval, Duration::from_millis(20));
    assert_eq!(db.probe.interval, Duration::from_millis(40));
    // Each guest's rollback guard in its own file by default.
    assert_eq!(
        web.state_file,
        Path::new("/var/lib/hsb/witness-1-web.state")
    );
    assert_eq!(db.state_file, Path::new("/var/lib/hsb/witness-1-db.state"));
    assert_eq!(
        web.config.path("cluster_key").unwrap(),
        Path::new("/etc/hsb/web/cluster.key")
    );
    // A process-wide state_file with {guest} serves every section.
    let s = all(&GUESTS.replace(
        "metrics_listen",
        "state_file = /srv/{guest}/w{id}.state\nmetrics_listen",
    ))
    .expect("settings");
    assert_eq!(s.guests[1].state_file, Path::new("/srv/db/w1.state"));
    // Without a process-wide id, the control socket takes the first guest's.
    let s = all(&GUESTS
        .replace("id = 1\n", "")
        .replace("[guest web]\n", "[guest web]\nid = 3\n")
        .replace("[guest db]\n", "[guest db]\nid = 2\n"))
    .expect("settings");
    assert_eq!(s.control, Path::new("/run/hsb/witness-3.sock"));
    assert_eq!((s.guests[0].id, s.guests[1].id), (3, 2));
}

#[test]
fn guests_do_not_share_an_address_or_a_rollback_guard() {
    for (text, want) in [
        (
            GUESTS.replace("10.0.0.11:7402", "10.0.0.11:7401"),
            "test.conf:15: key 'listen': 10.0.0.11:7401 is guest web's already",
        ),
        (
            GUESTS.replace(
                "metrics_listen",
                "state_file = /srv/w{id}.state\nmetrics_listen",
            ),
            "test.conf:4: key 'state_file': /srv/w1.state is guest web's already",
        ),
        (
            GUESTS.replace("probe_interval = 40ms\n", "node = x\n"),
            "test.conf:19: key 'node': is for the whole process, not one guest",
        ),
        (
            GUESTS.replace("metrics_listen = 127.0.0.1:9400", "metrics_listen = 9400"),
            "test.conf:4: key 'metrics_listen': expected an address ip:port",
        ),
        (
            GUESTS.replace("probe = tcp 10.0.0.102:5432\n", ""),
            "test.conf:13: key 'probe': required",
        ),
    ] {
        let e = all(&text).expect_err(want);
        assert!(e.starts_with(want), "{want}: {e}");
    }
}
