//! hsb-witness configuration schema and typed settings.

use std::net::SocketAddr;
use std::path::PathBuf;
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
    KeySpec { key: "state_file", kind: ValueKind::Path, default: Some("/var/lib/hsb/witness.state"), help: "where the rollback guard (highest epoch, outstanding promise) survives restarts" },
    KeySpec { key: "control", kind: ValueKind::Path, default: Some("/run/hsb/witness.sock"), help: "control socket for `hsb-witness status`" },
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
            state_file: c.path("state_file")?,
            control: c.path("control")?,
            decision,
        })
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

    fn settings(extra: &str) -> Result<Settings, String> {
        let text = format!("id = 1\ncluster_key = k\nlisten = 127.0.0.1:1\nprimary = 127.0.0.1:2\nstandby = 127.0.0.1:3\nprobe = tcp 127.0.0.1:4\n{extra}");
        let c = Config::from_text(schema(), "w.conf", &text, &[]).map_err(|e| e.to_string())?;
        Settings::from_config(&c).map_err(|e| e.to_string())
    }

    #[test]
    fn probe_report_and_freshness_periods_fit_together() {
        settings("").expect("defaults");
        // A probe in flight delays the next one: a timeout beyond the interval is fine.
        let s = settings("probe_interval = 20ms\nprobe_timeout = 1s\n").expect("long timeout");
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
            let e = settings(extra).expect_err(extra);
            assert!(e.starts_with(want), "{extra:?}: {e}");
        }
        settings("probe_interval = 60ms\nfailover.host-fresh = 120ms\n").expect("fresh enough");
    }
}
