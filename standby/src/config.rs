//! hsb-standby configuration schema and typed settings.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use hsb_common::config::{Config, ConfigError, KeySpec, ValueKind};
use hsb_common::decision::{self, Policy, WitnessId};
use hsb_common::kit::shell::{reload_hook, reload_key, Reload};
use hsb_common::PAGE_SIZE;

static OWN: &[KeySpec] = &[
    KeySpec { key: "node", kind: ValueKind::Str, default: Some("standby"), help: "this node's name, for logs and peers" },
    KeySpec { key: "backend", kind: ValueKind::Choice(&["model", "xen"]), default: Some("model"), help: "domain backend: `model` (the hypervisor test double) or `xen`" },
    KeySpec { key: "state_file", kind: ValueKind::Path, default: Some("/var/lib/hsb/hsb.state"), help: "this host's persistent state (newest epoch, its role in it, checkpoint numbers used, datagram incarnation), written durably before the daemon acts on it; the primary and standby configurations of one host must name the same file (a hand-over passes it on)" },
    KeySpec { key: "cluster_key", kind: ValueKind::Path, default: None, help: "pre-shared cluster key file (mode 0600)" },
    KeySpec { key: "listen", kind: ValueKind::Addr, default: None, help: "replication address the primary connects to" },
    KeySpec { key: "primary_allow", kind: ValueKind::Str, default: Some(""), help: "IP addresses the primary may connect from, comma-separated (IP[,IP...]); other connections to `listen` are closed at once, before they cost a handshake slot; empty: any address (the cluster key still decides)" },
    KeySpec { key: "control", kind: ValueKind::Path, default: Some("/run/hsb/standby.sock"), help: "control socket for `hsb-standby status` and `activate`" },
    hsb_common::ctl::CONTROL_GROUP_KEY,
    hsb_common::kit::http::METRICS_LISTEN_KEY,
    KeySpec { key: "frame_max", kind: ValueKind::Size, default: Some("1MiB"), help: "largest frame body accepted (at least 264KiB, at most 1MiB)" },
    KeySpec { key: "stats_interval", kind: ValueKind::Duration, default: Some("5s"), help: "how often a summary line is logged (0s: never)" },
    KeySpec { key: "max_clients", kind: ValueKind::Int { min: 1, max: MAX_CLIENTS as u64 }, default: Some("256"), help: "model service after activation: most client connections" },
    KeySpec { key: "model.memory", kind: ValueKind::Size, default: Some("64MiB"), help: "model domain memory (must match the primary)" },
    KeySpec { key: "model.service", kind: ValueKind::Addr, default: Some("127.0.0.1:7001"), help: "where the activated replica serves the model service" },
    KeySpec { key: "model.dirty_rate", kind: ValueKind::Int { min: 0, max: 100_000_000 }, default: Some("2000"), help: "model workload after activation: pages written per second" },
    KeySpec { key: "failover", kind: ValueKind::Bool, default: Some("false"), help: "decide failovers automatically (heartbeats, witnesses); off: only `hsb-standby activate`" },
    KeySpec { key: "heartbeat_listen", kind: ValueKind::AddrList, default: Some(""), help: "UDP addresses receiving the primary's heartbeats, one per link (failover.hb-links)" },
    KeySpec { key: "witness_listen", kind: ValueKind::Addr, default: Some("127.0.0.1:7300"), help: "UDP address for witness traffic (witnesses' `standby`)" },
    KeySpec { key: "witness_peers", kind: ValueKind::Str, default: Some(""), help: "witness addresses: ID=IP:PORT, comma-separated, one per failover.witnesses id" },
    KeySpec { key: "primary_witness", kind: ValueKind::Addr, default: Some("127.0.0.1:7301"), help: "the primary's witness_listen address (switchover fencing requests)" },
    KeySpec { key: "ping_node", kind: ValueKind::Str, default: Some(""), help: "ping-node baseline only: IP:PORT whose TCP answer counts as 'the network is fine'" },
    KeySpec { key: "promote_config", kind: ValueKind::Path, default: Some(""), help: "after activation, hand the domain over to hsb-primary with this configuration (exec), so this node replicates to a new standby; the guest's disk goes with it (this configuration's image, and its NBD export with the client's connection: disk.nbd_inherit); checked first with `hsb-primary check` (a file it refuses is logged and this process serves on, unprotected); empty: keep serving from hsb-standby, unprotected" },
    KeySpec { key: "promote_image", kind: ValueKind::Path, default: Some("/var/lib/hsb/promote.img"), help: "model backend: where the domain image is written for the hand-over to hsb-primary" },
    KeySpec { key: "on_activate", kind: ValueKind::Str, default: Some(""), help: "command run (no shell) when the replica is activated, e.g. to claim the service address and announce it; HSB_EPOCH, HSB_CHECKPOINT and HSB_NODE are set; empty: none" },
    KeySpec { key: "decision_log", kind: ValueKind::Path, default: Some(""), help: "file for the decision log (inputs and evidence, JSON lines) that `hsb-standby replay` reads; empty: none" },
    hsb_common::recorder::MAX_KEY,
    hsb_common::recorder::KEEP_KEY,
];

static SCHEMA: OnceLock<Vec<KeySpec>> = OnceLock::new();

/// Most client connections of the model service (key `max_clients`).
pub const MAX_CLIENTS: usize = 4096;

/// Every key hsb-standby accepts.
pub fn schema() -> &'static [KeySpec] {
    hsb_common::failover::schema_with(OWN, hsb_domain::backend_keys(), &SCHEMA)
}

/// Typed settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The model domain's disk (`model.disk_size` not 0, `backend = model`).
    pub disk: Option<hsb_domain::model::DiskSettings>,
    /// The NBD export of the replica's disk (`disk.nbd_socket`), if served.
    pub nbd_socket: Option<PathBuf>,
    pub node: String,
    pub state_file: PathBuf,
    pub listen: SocketAddr,
    /// `primary_allow`: empty lets any address connect.
    pub primary_allow: Vec<IpAddr>,
    pub control: PathBuf,
    pub control_group: Option<hsb_common::ctl::ControlGroup>,
    /// Where Prometheus metrics are served (`metrics_listen`), if anywhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    pub frame_max: usize,
    pub stats_interval: Duration,
    pub max_clients: usize,
    pub model_pages: u64,
    pub service: SocketAddr,
    pub dirty_rate: u64,
    pub failover: bool,
    pub heartbeat_listen: Vec<SocketAddr>,
    pub witness_listen: SocketAddr,
    pub witness_peers: Vec<(WitnessId, SocketAddr)>,
    pub primary_witness: SocketAddr,
    pub ping_node: Option<SocketAddr>,
    pub decision_log: PathBuf,
    /// When the decision log is rotated and how many rotated files are kept.
    pub decision_log_rotation: hsb_common::recorder::Rotation,
    pub on_activate: Vec<String>,
    pub promote_config: PathBuf,
    pub promote_image: PathBuf,
    pub decision: decision::Config,
    /// `backend = xen`: the guest and how to hold its output.
    pub xen: Option<hsb_domain::xen::XenSettings>,
}

/// SIGHUP applies `stats_interval` (it only paces a log line) and `on_activate` (read when the replica activates);
/// any other key that changed waits for a restart.
impl Reload for Settings {
    const RELOADED: &'static [&'static str] = &["stats_interval", "on_activate"];

    fn apply(&mut self, new: Settings) {
        reload_key(
            "stats_interval",
            &mut self.stats_interval,
            new.stats_interval,
        );
        reload_hook("on_activate", &mut self.on_activate, new.on_activate);
    }

    fn stats_interval(&self) -> Duration {
        self.stats_interval
    }
}

impl Settings {
    /// The replica's disk, the model domain's or the Xen replica's.
    pub fn disk_config(&self) -> Option<&hsb_domain::disk::DiskConfig> {
        match &self.xen {
            Some(x) => x.disk.as_ref(),
            None => self.disk.as_ref().map(|d| &d.disk),
        }
    }

    pub fn from_config(c: &Config) -> Result<Settings, ConfigError> {
        let model_pages = hsb_domain::model::pages_from_config(c)?;
        let frame_max = c.size("frame_max")? as usize;
        let min =
            hsb_common::frame::HEADER_LEN + 700 + hsb_common::msg::PAGES_PER_FRAME * PAGE_SIZE;
        if frame_max < min || frame_max > hsb_common::frame::MAX_BODY_LEN {
            return Err(c.error_at(
                "frame_max",
                &format!(
                    "expected between {min} and {} bytes",
                    hsb_common::frame::MAX_BODY_LEN
                ),
            ));
        }
        let hsb_common::failover::Peers {
            enabled: failover,
            decision,
            heartbeat: heartbeat_listen,
            witnesses: witness_peers,
        } = hsb_common::failover::peers(c, "heartbeat_listen")?;
        let ping = c.str("ping_node")?;
        let ping_node = if ping.is_empty() {
            None
        } else {
            Some(
                hsb_common::config::parse_addr(&ping)
                    .map_err(|_| c.error_at("ping_node", "expected IP:PORT"))?,
            )
        };
        if failover && decision.policy == Policy::PingNode && ping_node.is_none() {
            return Err(c.error_at(
                "ping_node",
                "the ping-node policy needs a ping_node IP:PORT",
            ));
        }
        let xen = hsb_domain::xen::XenSettings::from_config(c)?;
        let primary_allow =
            parse_allow(&c.str("primary_allow")?).map_err(|e| c.error_at("primary_allow", &e))?;
        // The model domain's disk, or the Xen replica's (xen.disk).
        let disk = match xen {
            Some(_) => None,
            None => hsb_domain::model::DiskSettings::from_config(c)?,
        };
        let nbd_socket = hsb_domain::xen::nbd_socket(c, xen.as_ref(), disk.is_some())?;
        Ok(Settings {
            disk,
            nbd_socket,
            primary_allow,
            xen,
            node: hsb_common::failover::node_name(c)?,
            state_file: c.path("state_file")?,
            listen: c.addr("listen")?,
            control: c.path("control")?,
            control_group: hsb_common::ctl::control_group(c)?,
            metrics_listen: hsb_common::kit::http::metrics_listen(c)?,
            frame_max,
            stats_interval: c.duration("stats_interval")?,
            max_clients: c.int("max_clients")? as usize,
            model_pages,
            service: c.addr("model.service")?,
            dirty_rate: c.int("model.dirty_rate")?,
            failover,
            heartbeat_listen,
            witness_listen: c.addr("witness_listen")?,
            witness_peers,
            primary_witness: c.addr("primary_witness")?,
            ping_node,
            decision_log: c.path("decision_log")?,
            decision_log_rotation: hsb_common::recorder::Rotation::from_config(c)?,
            promote_config: c.path("promote_config")?,
            promote_image: c.path("promote_image")?,
            on_activate: c
                .str("on_activate")?
                .split_whitespace()
                .map(String::from)
                .collect(),
            decision,
        })
    }
}

/// Longest `primary_allow` list.
const MAX_ALLOW: usize = 64;

/// `IP[,IP...]`, spaces allowed around each; empty is an empty list.
fn parse_allow(text: &str) -> Result<Vec<IpAddr>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim) {
        if part.is_empty() && text.trim().is_empty() {
            break;
        }
        let ip = part.parse::<IpAddr>().map_err(|_| {
            format!("expected IP addresses separated by commas (IP[,IP...]), got '{part}'")
        })?;
        if out.len() == MAX_ALLOW {
            return Err(format!("expected at most {MAX_ALLOW} addresses"));
        }
        out.push(ip);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(extra: &str) -> Result<Settings, String> {
        let text = format!("cluster_key = k\nlisten = 127.0.0.1:1\nfailover = true\nheartbeat_listen = 127.0.0.1:9\n{extra}");
        let c = Config::from_text(schema(), "s.conf", &text, &[]).map_err(|e| e.to_string())?;
        Settings::from_config(&c).map_err(|e| e.to_string())
    }

    #[test]
    fn a_xen_replicas_disk_is_served_and_handed_over_with_the_export() {
        let peers = "witness_peers = 1=127.0.0.1:1,2=127.0.0.1:2,3=127.0.0.1:3\n";
        let xen = &format!(
            "{peers}backend = xen\nxen.domain = g\nxen.disk = /g.img\nxen.disk_size = 64MiB\n"
        );
        let s = settings(&format!("{xen}disk.nbd_socket = /g.nbd\n")).expect("a xen disk");
        assert_eq!(s.disk_config().map(|d| d.size), Some(64 << 20));
        assert_eq!(
            s.nbd_socket.as_deref(),
            Some(std::path::Path::new("/g.nbd"))
        );
        let e = settings(xen).expect_err("no export");
        assert!(
            e.contains("key 'xen.disk'") && e.contains("xl restore -p"),
            "{e}"
        );
        // The hand-over keeps the device (the export's sockets go on in hsb-primary).
        let s = settings(&format!(
            "{xen}disk.nbd_socket = /g.nbd\npromote_config = /p.conf\n"
        ))
        .expect("a hand-over with the guest's disk");
        assert_eq!(s.promote_config, std::path::Path::new("/p.conf"));
        let e = settings(&format!(
            "{peers}disk.nbd_socket = /g.nbd\nmodel.disk_size = 0\n"
        ))
        .expect_err("no disk");
        assert!(e.contains("model.disk_size is 0"), "{e}");
    }

    #[test]
    fn primary_allow_is_a_list_of_ip_addresses() {
        let peers = "witness_peers = 1=127.0.0.1:1,2=127.0.0.1:2,3=127.0.0.1:3\n";
        assert!(settings(peers).unwrap().primary_allow.is_empty());
        let s = settings(&format!("{peers}primary_allow = 10.0.0.1, ::1\n")).unwrap();
        assert_eq!(
            s.primary_allow,
            [
                "10.0.0.1".parse::<IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
        for bad in ["10.0.0.1:7100", "10.0.0.1,", "host-a", ",10.0.0.1"] {
            let e = settings(&format!("{peers}primary_allow = {bad}\n")).unwrap_err();
            assert!(
                e.starts_with("s.conf:6: key 'primary_allow': expected IP addresses"),
                "{bad}: {e}"
            );
        }
        let many = vec!["10.0.0.1"; MAX_ALLOW + 1].join(",");
        let e = settings(&format!("{peers}primary_allow = {many}\n")).unwrap_err();
        assert!(e.contains("at most 64"), "{e}");
    }

    #[test]
    fn failover_settings_are_checked_here_too() {
        let peers = "witness_peers = 1=127.0.0.1:1,2=127.0.0.1:2,3=127.0.0.1:3\n";
        settings(peers).expect("defaults");
        for (extra, want) in [
            (
                "",
                "s.conf (default): key 'witness_peers': no address for witness 1, 2, 3",
            ),
            (
                "witness_peers = 1=127.0.0.1:1,1=127.0.0.1:2\n",
                "s.conf:5: key 'witness_peers': witness 1 is given twice",
            ),
            (
                &format!("{peers}failover.witnesses = 1,2,3,4\n"),
                "s.conf:6: key 'failover.witnesses': expected an odd number",
            ),
            (
                &format!("{peers}failover.hb-interval = 0s\n"),
                "s.conf:6: key 'failover.hb-interval': expected at least 1ms",
            ),
        ] {
            let e = settings(extra).expect_err(extra);
            assert!(e.starts_with(want), "{extra:?}: {e}");
        }
    }
}
