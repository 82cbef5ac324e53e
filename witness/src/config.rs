//! hsb-witness configuration schema and typed settings.

use std::net::SocketAddr;
use std::path::PathBuf;

use hsb_common::config::{Config, ConfigError, KeySpec, ValueKind};

/// Every key hsb-witness accepts.
pub static SCHEMA: &[KeySpec] = &[
    KeySpec { key: "node", kind: ValueKind::Str, default: Some("witness"), help: "this witness's name" },
    KeySpec { key: "id", kind: ValueKind::Int { min: 1, max: 15 }, default: None, help: "this witness's id, unique among the cluster's witnesses" },
    KeySpec { key: "cluster_key", kind: ValueKind::Path, default: None, help: "pre-shared cluster key file (mode 0600)" },
    KeySpec { key: "listen", kind: ValueKind::Addr, default: None, help: "UDP address for reports, queries, votes and leases" },
    KeySpec { key: "primary", kind: ValueKind::Addr, default: None, help: "hsb-primary's witness address" },
    KeySpec { key: "standby", kind: ValueKind::Addr, default: None, help: "hsb-standby's witness address" },
    KeySpec { key: "probe", kind: ValueKind::Str, default: None, help: "how clients use the application: `tcp IP:PORT`, `http IP:PORT PATH [STATUS]`, `line IP:PORT REQUEST PREFIX` or `cmd PROGRAM ARGS...`" },
    KeySpec { key: "probe_standby", kind: ValueKind::Str, default: Some(""), help: "the same probe against the standby's copy, for switchovers (empty: none)" },
    KeySpec { key: "probe_interval", kind: ValueKind::Duration, default: Some("100ms"), help: "how often the probe runs" },
    KeySpec { key: "probe_timeout", kind: ValueKind::Duration, default: Some("250ms"), help: "how long a probe may take before it counts as a timeout" },
    KeySpec { key: "max_lease", kind: ValueKind::Duration, default: Some("2s"), help: "longest lease granted; after a restart the witness waits this long before it votes" },
];

/// Typed settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node: String,
    pub id: u64,
    pub cluster_key: PathBuf,
    pub listen: SocketAddr,
    pub primary: SocketAddr,
    pub standby: SocketAddr,
    pub probe: String,
}

impl Settings {
    pub fn from_config(c: &Config) -> Result<Settings, ConfigError> {
        let probe = c.str("probe")?;
        if probe.trim().is_empty() {
            return Err(c.error_at("probe", "expected a probe such as `tcp 10.0.0.5:80`"));
        }
        let kind = probe.split_whitespace().next().unwrap_or("");
        if !["tcp", "http", "line", "cmd"].contains(&kind) {
            return Err(c.error_at(
                "probe",
                &format!("unknown probe kind '{kind}'; expected tcp, http, line or cmd"),
            ));
        }
        Ok(Settings {
            node: c.str("node")?,
            id: c.int("id")?,
            cluster_key: c.path("cluster_key")?,
            listen: c.addr("listen")?,
            primary: c.addr("primary")?,
            standby: c.addr("standby")?,
            probe,
        })
    }
}
