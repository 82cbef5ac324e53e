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
}
