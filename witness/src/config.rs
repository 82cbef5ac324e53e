//! hsb-witness configuration schema and typed settings.
//!
//! Several witnesses can run on one machine with the default paths: the state file and the
//! control socket are named after the witness's id (`{id}` in a path is replaced by it).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use hsb_common::config::{Config, ConfigError, KeySpec, ValueKind};
use hsb_common::decision;

use crate::probe::{ProbeKind, ProbeSpec, MAX_PERIOD};

static OWN: &[KeySpec] = &[
    KeySpec { key: "node", kind: ValueKind::Str, default: Some("witness"), help: "this witness's name" },
    KeySpec { key: "id", kind: ValueKind::Int { min: 0, max: 255 }, default: None, help: "this witness's id, one of failover.witnesses" },
    KeySpec { key: "cluster_key", kind: ValueKind::Path, default: None, help: "pre-shared cluster key file (mode 0600)" },
    KeySpec { key: "listen", kind: ValueKind::Addr, default: None, help: "UDP address for reports, queries, votes and leases" },
    KeySpec { key: "primary", kind: ValueKind::Addr, default: None, help: "hsb-primary's witness address (its `witness_listen`)" },
    KeySpec { key: "standby", kind: ValueKind::Addr, default: None, help: "hsb-standby's witness address (its `witness_listen`)" },
    KeySpec { key: "probe", kind: ValueKind::Str, default: None, help: "how clients use the application: `tcp IP:PORT`, `http IP:PORT PATH [STATUS]`, `line IP:PORT REQUEST PREFIX` or `cmd PROGRAM ARGS...`" },
    KeySpec { key: "probe_interval", kind: ValueKind::Duration, default: Some("20ms"), help: "how often the application and the daemons are probed (1ms to 1h)" },
    KeySpec { key: "probe_timeout", kind: ValueKind::Duration, default: Some("50ms"), help: "how long a probe may take before it counts as a timeout (1ms to 1h; may exceed probe_interval: a probe in flight delays the next)" },
    KeySpec { key: "report_interval", kind: ValueKind::Duration, default: Some("50ms"), help: "how often a report goes to the standby and the primary (at least 1ms, at most half of failover.report-fresh)" },
    KeySpec { key: "state_file", kind: ValueKind::Path, default: Some("/var/lib/hsb/witness-{id}.state"), help: "where the rollback guard (highest epoch, outstanding promise) survives restarts; `{id}` is replaced by this witness's id" },
    KeySpec { key: "control", kind: ValueKind::Path, default: Some("/run/hsb/witness-{id}.sock"), help: "control socket for `hsb-witness status`; `{id}` is replaced by this witness's id" },
    hsb_common::ctl::CONTROL_GROUP_KEY,
];

static SCHEMA: OnceLock<Vec<KeySpec>> = OnceLock::new();

/// Every key hsb-witness accepts.
pub fn schema() -> &'static [KeySpec] {
    hsb_common::failover::schema(OWN, &SCHEMA)
}

/// Typed settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node: String,
    pub id: u8,
    pub listen: SocketAddr,
    pub primary: SocketAddr,
    pub standby: SocketAddr,
    pub probe: ProbeSpec,
    pub report_interval: Duration,
    pub state_file: PathBuf,
    pub control: PathBuf,
    pub control_group: Option<hsb_common::ctl::ControlGroup>,
    pub decision: decision::Config,
}

impl Settings {
    pub fn from_config(c: &Config) -> Result<Settings, ConfigError> {
        let kind =
            ProbeKind::parse(&c.str("probe")?).map_err(|e| c.error_at("probe", &e.to_string()))?;
        let decision = hsb_common::failover::build(c)?;
        let id = c.int("id")? as u8;
        if !decision.witnesses.contains(id) {
            return Err(c.error_at("id", &format!("{id} is not among failover.witnesses")));
        }
        let d = decision::format_duration;
        // A run still in flight delays the next one, so a timeout longer than the interval is
        // fine: it only stretches the interval. Zero is not: the witness would probe in a busy
        // loop, or every probe would time out.
        let probe = ProbeSpec {
            kind,
            interval: period(c, "probe_interval", MAX_PERIOD)?,
            timeout: period(c, "probe_timeout", MAX_PERIOD)?,
        };
        probe
            .validate()
            .map_err(|e| c.error_at("probe", &e.to_string()))?;
        let report_interval = period(c, "report_interval", MAX_PERIOD)?;
        if report_interval.saturating_mul(2) > decision.report_fresh {
            return Err(c.error_at(
                "report_interval",
                &format!(
                    "expected at most half of failover.report-fresh ({}), so that one lost report does not leave the standby without a fresh one, got '{}'",
                    d(decision.report_fresh),
                    d(report_interval)
                ),
            ));
        }
        // The daemons are pinged every probe_interval.
        if decision.host_fresh < probe.interval.saturating_mul(2) {
            return Err(c.error_at(
                "failover.host-fresh",
                &format!(
                    "expected at least twice probe_interval ({}): the daemons are pinged once per probe_interval, and one lost ping must not make a live daemon look down, got '{}'",
                    d(probe.interval),
                    d(decision.host_fresh)
                ),
            ));
        }
        Ok(Settings {
            node: c.str("node")?,
            id,
            listen: c.addr("listen")?,
            primary: c.addr("primary")?,
            standby: c.addr("standby")?,
            probe,
            report_interval,
            state_file: with_id(&c.path("state_file")?, id),
            control: with_id(&c.path("control")?, id),
            control_group: hsb_common::ctl::control_group(c)?,
            decision,
        })
    }
}

/// Where the default control sockets live.
pub const RUN_DIR: &str = "/run/hsb";

/// `path` with every `{id}` replaced by the witness id.
pub fn with_id(path: &Path, id: u8) -> PathBuf {
    let text = path.to_string_lossy();
    if text.contains("{id}") {
        PathBuf::from(text.replace("{id}", &id.to_string()))
    } else {
        path.to_path_buf()
    }
}

/// The control socket a configuration names (what `hsb-witness run` binds).
pub fn control_path(c: &Config) -> Result<PathBuf, ConfigError> {
    let id = c.int("id")?;
    let id = u8::try_from(id).map_err(|_| c.error_at("id", "expected an id 0-255"))?;
    Ok(with_id(&c.path("control")?, id))
}

/// Most directory entries looked at when searching for a control socket.
const MAX_RUN_ENTRIES: usize = 1024;

/// Without a configuration: the one witness control socket (`witness-<id>.sock`) in `dir`.
pub fn find_control(dir: &Path) -> Result<PathBuf, String> {
    let hint = "say which with -c FILE or --control PATH";
    let entries = std::fs::read_dir(dir).map_err(|e| {
        format!(
            "no witness control socket in {}: {e}; {hint}",
            dir.display()
        )
    })?;
    let mut found: Vec<PathBuf> = entries
        .take(MAX_RUN_ENTRIES)
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("witness-"))
                .and_then(|n| n.strip_suffix(".sock"))
                .is_some_and(|id| id.parse::<u8>().is_ok())
        })
        .collect();
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(format!(
            "no witness control socket (witness-<id>.sock) in {}; {hint}",
            dir.display()
        )),
        _ => Err(format!(
            "{} witness control sockets in {} ({}); {hint}",
            found.len(),
            dir.display(),
            found
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// A period or timeout from 1ms to `max`.
fn period(c: &Config, key: &str, max: Duration) -> Result<Duration, ConfigError> {
    let v = c.duration(key)?;
    if v < decision::MIN_PERIOD || v > max {
        return Err(c.error_at(
            key,
            &format!(
                "expected from 1ms to {}, got '{}'",
                decision::format_duration(max),
                decision::format_duration(v)
            ),
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(text: &str) -> Settings {
        let c = Config::from_text(schema(), "test.conf", text, &[]).expect("config");
        Settings::from_config(&c).expect("settings")
    }

    const BASE: &str = "cluster_key = /k\nlisten = 127.0.0.1:1\nprimary = 127.0.0.1:2\nstandby = 127.0.0.1:3\nprobe = tcp 127.0.0.1:4\nfailover.witnesses = 1,2,3\n";

    #[test]
    fn default_paths_are_named_after_the_id() {
        let a = settings(&format!("{BASE}id = 1\n"));
        let b = settings(&format!("{BASE}id = 2\n"));
        assert_eq!(a.state_file, Path::new("/var/lib/hsb/witness-1.state"));
        assert_eq!(a.control, Path::new("/run/hsb/witness-1.sock"));
        assert_eq!(b.state_file, Path::new("/var/lib/hsb/witness-2.state"));
        assert_eq!(b.control, Path::new("/run/hsb/witness-2.sock"));
        // The status client finds the same socket from the same file.
        let c = Config::from_text(schema(), "test.conf", &format!("{BASE}id = 2\n"), &[]).unwrap();
        assert_eq!(control_path(&c).unwrap(), b.control);
        // Explicit paths are kept, with `{id}` filled in if they use it.
        let e = settings(&format!(
            "{BASE}id = 3\ncontrol = /tmp/w.sock\nstate_file = /srv/w{{id}}/state\n"
        ));
        assert_eq!(e.control, Path::new("/tmp/w.sock"));
        assert_eq!(e.state_file, Path::new("/srv/w3/state"));
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

    fn try_settings(extra: &str) -> Result<Settings, String> {
        let text = format!("id = 1\ncluster_key = k\nlisten = 127.0.0.1:1\nprimary = 127.0.0.1:2\nstandby = 127.0.0.1:3\nprobe = tcp 127.0.0.1:4\n{extra}");
        let c = Config::from_text(schema(), "w.conf", &text, &[]).map_err(|e| e.to_string())?;
        Settings::from_config(&c).map_err(|e| e.to_string())
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
}
