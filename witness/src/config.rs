//! hsb-witness configuration schema and typed settings.
//!
//! Several witnesses can run on one machine with the default paths: the state file and the
//! control socket are named after the witness's id (`{id}` in a path is replaced by it).
//!
//! One witness can serve several protected guests (a client machine needs one witness, not one
//! per guest): after the process-wide keys, each `[guest NAME]` section configures one guest
//! ([`GUEST_KEYS`]: its key, its addresses, its probe, its state file, its `failover.*` keys),
//! inheriting the process-wide lines it does not set. A file without sections is one guest,
//! named `default`, exactly as before.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use hsb_common::config::{Config, ConfigError, KeySpec, SectionSpec, Sectioned, ValueKind};
use hsb_common::decision;

use crate::probe::{ProbeKind, ProbeSpec, MAX_PERIOD, MAX_PROBES};

static OWN: &[KeySpec] = &[
    KeySpec { key: "node", kind: ValueKind::Str, default: Some("witness"), help: "this witness's name" },
    KeySpec { key: "id", kind: ValueKind::Int { min: 0, max: 255 }, default: None, help: "this witness's id, one of failover.witnesses" },
    KeySpec { key: "cluster_key", kind: ValueKind::Path, default: None, help: "pre-shared cluster key file (mode 0600); with several guests each guest's cluster has its own" },
    KeySpec { key: "listen", kind: ValueKind::Addr, default: None, help: "UDP address for reports, queries, votes and leases (one per guest)" },
    KeySpec { key: "primary", kind: ValueKind::Addr, default: None, help: "hsb-primary's witness address (its `witness_listen`)" },
    KeySpec { key: "standby", kind: ValueKind::Addr, default: None, help: "hsb-standby's witness address (its `witness_listen`)" },
    KeySpec { key: "probe", kind: ValueKind::Str, default: None, help: "how clients use the application: `tcp IP:PORT`, `http IP:PORT PATH [STATUS]`, `line IP:PORT REQUEST PREFIX` or `cmd PROGRAM ARGS...`" },
    KeySpec { key: "probe_interval", kind: ValueKind::Duration, default: Some("20ms"), help: "how often the application and the daemons are probed (1ms to 1h)" },
    KeySpec { key: "probe_timeout", kind: ValueKind::Duration, default: Some("50ms"), help: "how long a probe may take before it counts as a timeout (1ms to 1h; may exceed probe_interval: a probe in flight delays the next)" },
    KeySpec { key: "report_interval", kind: ValueKind::Duration, default: Some("50ms"), help: "how often a report goes to the standby and the primary (at least 1ms, at most half of failover.report-fresh)" },
    KeySpec { key: "state_file", kind: ValueKind::Path, default: Some("/var/lib/hsb/witness-{id}.state"), help: "where the rollback guard (highest epoch, outstanding promise) survives restarts; `{id}` is replaced by this witness's id, `{guest}` by the guest's name; in a [guest NAME] section the default is /var/lib/hsb/witness-{id}-{guest}.state" },
    KeySpec { key: "control", kind: ValueKind::Path, default: Some("/run/hsb/witness-{id}.sock"), help: "control socket for `hsb-witness status`; `{id}` is replaced by this witness's id (with sections: the process-wide id, else the first guest's)" },
    hsb_common::kit::http::METRICS_LISTEN_KEY,
    hsb_common::ctl::CONTROL_GROUP_KEY,
];

/// The keys a `[guest NAME]` section may set (besides every `failover.*` key); the others
/// (`node`, `control`, `control_group`, `metrics_listen`) are for the whole process.
pub const GUEST_OWN_KEYS: &[&str] = &[
    "id",
    "cluster_key",
    "listen",
    "primary",
    "standby",
    "probe",
    "probe_interval",
    "probe_timeout",
    "report_interval",
    "state_file",
];

/// Most guests one witness serves (one probe each).
pub const MAX_GUESTS: usize = MAX_PROBES;

/// The name of the one guest of a file without sections.
pub const DEFAULT_GUEST: &str = "default";

/// The state file of a guest in a section, unless it names one.
const SECTION_STATE_FILE: &str = "/var/lib/hsb/witness-{id}-{guest}.state";

static SCHEMA: OnceLock<Vec<KeySpec>> = OnceLock::new();
static GUEST_KEYS: OnceLock<Vec<&'static str>> = OnceLock::new();

/// Every key hsb-witness accepts.
pub fn schema() -> &'static [KeySpec] {
    hsb_common::failover::schema(OWN, &SCHEMA)
}

/// Every key a `[guest NAME]` section may set.
pub fn guest_keys() -> &'static [&'static str] {
    GUEST_KEYS.get_or_init(|| {
        let mut k: Vec<&'static str> = GUEST_OWN_KEYS.to_vec();
        k.extend(
            schema()
                .iter()
                .map(|s| s.key)
                .filter(|k| k.starts_with("failover.")),
        );
        k
    })
}

/// The sections hsb-witness reads.
pub fn sections() -> SectionSpec {
    SectionSpec {
        word: "guest",
        keys: guest_keys(),
        max: MAX_GUESTS,
    }
}

/// Load a configuration file (with its sections) and `--set` overrides.
pub fn load(path: Option<&Path>, sets: &[String]) -> Result<Sectioned, ConfigError> {
    Config::load_sectioned(schema(), path, sets, &sections())
}

/// Typed settings of the whole process.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node: String,
    pub control: PathBuf,
    pub control_group: Option<hsb_common::ctl::ControlGroup>,
    pub metrics_listen: Option<SocketAddr>,
    /// The guests, in file order (one for a file without sections).
    pub guests: Vec<Guest>,
}

/// Typed settings of one protected guest.
#[derive(Debug, Clone)]
pub struct Guest {
    /// Its section's name (`default` without sections).
    pub name: String,
    /// Where its settings came from (for errors found later, e.g. about its key).
    pub config: Config,
    pub id: u8,
    pub listen: SocketAddr,
    pub primary: SocketAddr,
    pub standby: SocketAddr,
    pub probe: ProbeSpec,
    pub report_interval: Duration,
    pub state_file: PathBuf,
    pub decision: decision::Config,
}

impl Settings {
    /// The settings of a loaded file: each guest checked on its own, then together (addresses
    /// and state files are one guest's each).
    pub fn from_sections(s: &Sectioned) -> Result<Settings, ConfigError> {
        let c = &s.global;
        let guests = if s.sections.is_empty() {
            vec![Guest::from_config(c, DEFAULT_GUEST, false)?]
        } else {
            s.sections
                .iter()
                .map(|sec| Guest::from_config(&sec.config, &sec.name, true))
                .collect::<Result<Vec<_>, _>>()?
        };
        for (i, g) in guests.iter().enumerate() {
            for other in &guests[..i] {
                if g.listen == other.listen {
                    return Err(g.config.error_at(
                        "listen",
                        &format!(
                            "{} is guest {}'s already: each guest needs its own witness address (its cluster's witness_peers name it)",
                            g.listen, other.name
                        ),
                    ));
                }
                if g.state_file == other.state_file {
                    return Err(g.config.error_at(
                        "state_file",
                        &format!(
                            "{} is guest {}'s already: each guest keeps its own rollback guard (use {{guest}} in the path)",
                            g.state_file.display(),
                            other.name
                        ),
                    ));
                }
            }
        }
        let metrics_listen = hsb_common::kit::http::metrics_listen(c)?;
        Ok(Settings {
            node: c.str("node")?,
            control: control_path_of(s)?,
            control_group: hsb_common::ctl::control_group(c)?,
            metrics_listen,
            guests,
        })
    }
}

impl Guest {
    /// One guest's settings from its configuration (`in_section`: from a `[guest NAME]`
    /// section, whose default state file is named after the guest too).
    pub fn from_config(c: &Config, name: &str, in_section: bool) -> Result<Guest, ConfigError> {
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
        let state_file = if in_section && c.is_default("state_file") {
            PathBuf::from(SECTION_STATE_FILE)
        } else {
            c.path("state_file")?
        };
        Ok(Guest {
            name: name.to_string(),
            config: c.clone(),
            id,
            listen: c.addr("listen")?,
            primary: c.addr("primary")?,
            standby: c.addr("standby")?,
            probe,
            report_interval,
            state_file: with_guest(&with_id(&state_file, id), name),
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

/// `path` with every `{guest}` replaced by the guest's name.
pub fn with_guest(path: &Path, guest: &str) -> PathBuf {
    let text = path.to_string_lossy();
    if text.contains("{guest}") {
        PathBuf::from(text.replace("{guest}", guest))
    } else {
        path.to_path_buf()
    }
}

/// The control socket a loaded file names (what `hsb-witness run` binds): `{id}` is the
/// process-wide id, or without one the first guest's.
pub fn control_path_of(s: &Sectioned) -> Result<PathBuf, ConfigError> {
    let c = &s.global;
    let from = if c.is_default("id") && !s.sections.is_empty() {
        // `id` is required, so a file with sections and no process-wide id has one per section.
        &s.sections[0].config
    } else {
        c
    };
    let id = from.int("id")?;
    let id = u8::try_from(id).map_err(|_| from.error_at("id", "expected an id 0-255"))?;
    Ok(with_id(&c.path("control")?, id))
}

/// The control socket of the configuration `hsb-witness status -c FILE` names.
pub fn control_path(path: Option<&Path>, sets: &[String]) -> Result<PathBuf, ConfigError> {
    control_path_of(&load(path, sets)?)
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
#[path = "config_tests.rs"]
mod tests;
