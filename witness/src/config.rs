//! hsb-witness configuration schema and typed settings.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use hsb_common::config::{Config, ConfigError, KeySpec, ValueKind};
use hsb_common::decision;

use crate::probe::{ProbeKind, ProbeSpec};

static OWN: &[KeySpec] = &[
    KeySpec { key: "node", kind: ValueKind::Str, default: Some("witness"), help: "this witness's name" },
    KeySpec { key: "id", kind: ValueKind::Int { min: 0, max: 255 }, default: None, help: "this witness's id, one of failover.witnesses" },
    KeySpec { key: "cluster_key", kind: ValueKind::Path, default: None, help: "pre-shared cluster key file (mode 0600)" },
    KeySpec { key: "listen", kind: ValueKind::Addr, default: None, help: "UDP address for reports, queries, votes and leases" },
    KeySpec { key: "primary", kind: ValueKind::Addr, default: None, help: "hsb-primary's witness address (its `witness_listen`)" },
    KeySpec { key: "standby", kind: ValueKind::Addr, default: None, help: "hsb-standby's witness address (its `witness_listen`)" },
    KeySpec { key: "probe", kind: ValueKind::Str, default: None, help: "how clients use the application: `tcp IP:PORT`, `http IP:PORT PATH [STATUS]`, `line IP:PORT REQUEST PREFIX` or `cmd PROGRAM ARGS...`" },
    KeySpec { key: "probe_interval", kind: ValueKind::Duration, default: Some("20ms"), help: "how often the application and the daemons are probed" },
    KeySpec { key: "probe_timeout", kind: ValueKind::Duration, default: Some("50ms"), help: "how long a probe may take before it counts as a timeout" },
    KeySpec { key: "report_interval", kind: ValueKind::Duration, default: Some("50ms"), help: "how often a report goes to the standby and the primary" },
    KeySpec { key: "state_file", kind: ValueKind::Path, default: Some("/var/lib/hsb/witness.state"), help: "where the rollback guard (highest epoch, outstanding promise) survives restarts" },
    KeySpec { key: "control", kind: ValueKind::Path, default: Some("/run/hsb/witness.sock"), help: "control socket for `hsb-witness status`" },
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
    pub cluster_key: PathBuf,
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
        Ok(Settings {
            node: c.str("node")?,
            id,
            cluster_key: c.path("cluster_key")?,
            listen: c.addr("listen")?,
            primary: c.addr("primary")?,
            standby: c.addr("standby")?,
            probe: ProbeSpec {
                kind,
                interval: c.duration("probe_interval")?,
                timeout: c.duration("probe_timeout")?,
            },
            report_interval: c.duration("report_interval")?,
            state_file: c.path("state_file")?,
            control: c.path("control")?,
            control_group: hsb_common::ctl::control_group(c)?,
            decision,
        })
    }
}
