//! hsb-primary configuration schema and typed settings.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use hsb_common::config::{Config, ConfigError, KeySpec, ValueKind};
use hsb_common::decision::{self, WitnessId, MIN_PERIOD};
use hsb_common::kit::shell::{reload_hook, reload_key, Reload};
use hsb_domain::disk::export::Inherit;

/// Longest reconnect delay: the backoff doubles up to this.
pub const MAX_RECONNECT: Duration = Duration::from_secs(5);

static CELL: OnceLock<Vec<KeySpec>> = OnceLock::new();

/// Most client connections of the model service (key `max_clients`).
pub const MAX_CLIENTS: usize = 4096;

/// Every key hsb-primary accepts.
pub fn schema() -> &'static [KeySpec] {
    hsb_common::failover::schema_with(OWN, hsb_domain::backend_keys(), &CELL)
}

static OWN: &[KeySpec] = &[
    KeySpec { key: "start_image", kind: ValueKind::Path, default: Some(""), help: "model domain image to start from, at start_epoch (written by a standby promoting itself); empty: a fresh domain" },
    KeySpec { key: "start_epoch", kind: ValueKind::Int { min: 1, max: u64::MAX }, default: Some("1"), help: "the activation epoch this primary starts in" },
    KeySpec { key: "start_forced", kind: ValueKind::Bool, default: Some("false"), help: "set by a standby promoting itself after an activation the operator forced (`activate --force`): output may leave on the operator's word until a witness-quorum lease or an ack gives the usual authority" },
    KeySpec { key: "disk.nbd_inherit", kind: ValueKind::Str, default: Some(""), help: "set by a standby handing over (promote_config) with its guest's disk: LISTEN or LISTEN,CONN, the NBD export's listening socket and its client's connection, open across the exec; the export at disk.nbd_socket is taken over with the client's session (SOCKET.handover) instead of bound, and the kernel's nbd connection never closes; empty: bind disk.nbd_socket" },
    KeySpec { key: "start_checkpoint", kind: ValueKind::Int { min: 0, max: u64::MAX / 2 }, default: Some("0"), help: "the checkpoint this primary continues from: its first checkpoint is the next one (set by a standby promoting itself: checkpoint numbers never go back)" },
    KeySpec { key: "state_file", kind: ValueKind::Path, default: Some("/var/lib/hsb/hsb.state"), help: "this host's persistent state (newest epoch, its role in it, checkpoint numbers used, datagram incarnation), written durably before the daemon acts on it; the primary and standby configurations of one host must name the same file (a hand-over passes it on)" },
    KeySpec { key: "rejoin_config", kind: ValueKind::Path, default: Some(""), help: "after stepping down (a newer epoch is active), exec hsb-standby with this configuration, so this node rejoins as the standby and receives a full synchronisation; empty: stay paused" },
    KeySpec { key: "on_fence", kind: ValueKind::Str, default: Some(""), help: "command run (no shell) once when this primary is fenced for good, i.e. it steps down because a newer epoch is active elsewhere (a switchover's fence request, or a failover it learns of), e.g. to give up the service address; waited for up to 2 s, before any rejoin; HSB_EPOCH and HSB_NODE are set; empty: none" },
    KeySpec { key: "failover", kind: ValueKind::Bool, default: Some("false"), help: "take part in automatic failover (heartbeats, witness leases, self-fencing); off: output needs acks, nothing else" },
    KeySpec { key: "heartbeat_peers", kind: ValueKind::AddrList, default: Some(""), help: "the standby's heartbeat_listen addresses, one per link" },
    KeySpec { key: "witness_listen", kind: ValueKind::Addr, default: Some("127.0.0.1:7301"), help: "UDP address for witness traffic (witnesses' `primary`)" },
    KeySpec { key: "witness_peers", kind: ValueKind::Str, default: Some(""), help: "witness addresses: ID=IP:PORT, comma-separated, one per failover.witnesses id" },
    KeySpec { key: "standby_witness", kind: ValueKind::Addr, default: Some("127.0.0.1:7300"), help: "the standby's witness_listen address (switchover confirmations)" },
    KeySpec { key: "decision_log", kind: ValueKind::Path, default: Some(""), help: "file for the decision log (inputs and evidence, JSON lines); empty: none" },
    hsb_common::recorder::MAX_KEY,
    hsb_common::recorder::KEEP_KEY,
    KeySpec {
        key: "node",
        kind: ValueKind::Str,
        default: Some("primary"),
        help: "this node's name, for logs and peers",
    },
    KeySpec {
        key: "backend",
        kind: ValueKind::Choice(&["model", "xen"]),
        default: Some("model"),
        help: "domain backend: `model` (the hypervisor test double) or `xen`",
    },
    KeySpec {
        key: "cluster_key",
        kind: ValueKind::Path,
        default: None,
        help: "pre-shared cluster key file (mode 0600, from `hsb-primary keygen`)",
    },
    KeySpec {
        key: "standby",
        kind: ValueKind::Addr,
        default: None,
        help: "the standby's replication address",
    },
    KeySpec {
        key: "control",
        kind: ValueKind::Path,
        default: Some("/run/hsb/primary.sock"),
        help: "control socket for `hsb-primary status`",
    },
    hsb_common::ctl::CONTROL_GROUP_KEY,
    hsb_common::kit::http::METRICS_LISTEN_KEY,
    KeySpec {
        key: "checkpoint_period",
        kind: ValueKind::Duration,
        default: Some("25ms"),
        help: "checkpoint period (a period, not a sleep after each commit)",
    },
    KeySpec {
        key: "max_unacked",
        kind: ValueKind::Int { min: 1, max: 16 },
        default: Some("4"),
        help: "checkpoints sent but not yet acknowledged before epochs stretch",
    },
    KeySpec {
        key: "precopy",
        kind: ValueKind::Bool,
        default: Some("true"),
        help: "copy a full synchronisation while the guest runs, then, suspended, only the pages it wrote meanwhile (the pause is then those pages, not all memory); false: copy it all while suspended",
    },
    hsb_domain::codec_policy::ENCODE_KEY,
    hsb_domain::codec_policy::ENCODE_CACHE_KEY,
    KeySpec {
        key: "output_limit",
        kind: ValueKind::Size,
        default: Some("8MiB"),
        help: "output held under commit before the service stops reading requests",
    },
    KeySpec {
        key: "reconnect_interval",
        kind: ValueKind::Duration,
        default: Some("200ms"),
        help: "first retry delay after the standby connection fails (doubles up to 5s); from 1ms to 5s",
    },
    KeySpec {
        key: "stats_interval",
        kind: ValueKind::Duration,
        default: Some("5s"),
        help: "how often a summary line is logged (0s: never)",
    },
    KeySpec {
        key: "max_clients",
        kind: ValueKind::Int { min: 1, max: MAX_CLIENTS as u64 },
        default: Some("256"),
        help: "model service: most client connections",
    },
    KeySpec {
        key: "model.memory",
        kind: ValueKind::Size,
        default: Some("64MiB"),
        help: "model domain memory",
    },
    KeySpec {
        key: "model.service",
        kind: ValueKind::Addr,
        default: Some("127.0.0.1:7000"),
        help: "model domain's TCP service address",
    },
    KeySpec {
        key: "model.dirty_rate",
        kind: ValueKind::Int {
            min: 0,
            max: 100_000_000,
        },
        default: Some("2000"),
        help: "model workload: pages written per second",
    },
    hsb_domain::model::WRITE_PATTERN_KEY,
    KeySpec {
        key: "model.seed",
        kind: ValueKind::Int {
            min: 0,
            max: u64::MAX,
        },
        default: Some("1"),
        help: "model workload seed",
    },
];

/// Typed settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node: String,
    pub standby: SocketAddr,
    pub control: PathBuf,
    pub control_group: Option<hsb_common::ctl::ControlGroup>,
    /// Where Prometheus metrics are served (`metrics_listen`), if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    pub checkpoint_period: Duration,
    pub max_unacked: usize,
    pub precopy: bool,
    pub output_limit: usize,
    pub reconnect_interval: Duration,
    pub stats_interval: Duration,
    pub max_clients: usize,
    pub model_pages: u64,
    pub service: SocketAddr,
    pub dirty_rate: u64,
    pub write_pattern: hsb_domain::model::WritePattern,
    pub seed: u64,
    /// Checkpoint encoding (`encode`) and the sent-page cache in bytes (`encode_cache`).
    pub encode: (hsb_domain::codec_policy::CodecMode, u64),
    pub failover: bool,
    pub heartbeat_peers: Vec<SocketAddr>,
    pub witness_listen: SocketAddr,
    pub witness_peers: Vec<(WitnessId, SocketAddr)>,
    pub standby_witness: SocketAddr,
    pub decision_log: PathBuf,
    /// When the decision log is rotated and how many rotated files are kept.
    pub decision_log_rotation: hsb_common::recorder::Rotation,
    pub decision: decision::Config,
    /// `backend = xen`: the guest and how to hold its output.
    pub xen: Option<hsb_domain::xen::XenSettings>,
    /// The model domain's disk (`model.disk_size` not 0, `backend = model`).
    pub disk: Option<hsb_domain::model::DiskSettings>,
    /// The NBD export of the guest's disk (`disk.nbd_socket`), if served.
    pub nbd_socket: Option<PathBuf>,
    /// The export's sockets, inherited from a standby handing over (`disk.nbd_inherit`).
    pub nbd_inherit: Option<Inherit>,
    pub start_image: PathBuf,
    pub state_file: PathBuf,
    pub start_epoch: u64,
    pub start_checkpoint: u64,
    pub start_forced: bool,
    pub rejoin_config: PathBuf,
    pub on_fence: Vec<String>,
}

/// SIGHUP applies `stats_interval` (it only paces a log line) and `on_fence` (read when this primary steps down);
/// any other key that changed waits for a restart.
impl Reload for Settings {
    const RELOADED: &'static [&'static str] = &["stats_interval", "on_fence"];

    fn apply(&mut self, new: Settings) {
        reload_key(
            "stats_interval",
            &mut self.stats_interval,
            new.stats_interval,
        );
        reload_hook("on_fence", &mut self.on_fence, new.on_fence);
    }

    fn stats_interval(&self) -> Duration {
        self.stats_interval
    }
}

impl Settings {
    /// The guest's replicated disk, the model domain's or the Xen guest's.
    pub fn disk_config(&self) -> Option<&hsb_domain::disk::DiskConfig> {
        match &self.xen {
            Some(x) => x.disk.as_ref(),
            None => self.disk.as_ref().map(|d| &d.disk),
        }
    }

    pub fn from_config(c: &Config) -> Result<Settings, ConfigError> {
        let model_pages = hsb_domain::model::pages_from_config(c)?;
        let checkpoint_period = c.duration("checkpoint_period")?;
        if checkpoint_period < MIN_PERIOD {
            return Err(c.error_at(
                "checkpoint_period",
                &format!("expected at least 1ms, got {checkpoint_period:?}"),
            ));
        }
        let reconnect_interval = c.duration("reconnect_interval")?;
        if reconnect_interval < MIN_PERIOD || reconnect_interval > MAX_RECONNECT {
            return Err(c.error_at(
                "reconnect_interval",
                &format!(
                    "expected from 1ms to 5s (it doubles up to 5s; 0 would reconnect in a busy loop), got {reconnect_interval:?}"
                ),
            ));
        }
        let hsb_common::failover::Peers {
            enabled: failover,
            decision,
            heartbeat: heartbeat_peers,
            witnesses: witness_peers,
        } = hsb_common::failover::peers(c, "heartbeat_peers")?;
        if failover {
            // An ack must let output out until the next checkpoint can be acknowledged, or the
            // primary is without authority between every two checkpoints.
            let l = &decision.lease;
            let usable = l.ack_lease.saturating_sub(l.margin(l.ack_lease));
            if usable <= checkpoint_period {
                return Err(c.error_at(
                    "failover.ack-lease",
                    &format!(
                        "expected an ack lease that, less its drift margin ({}), is longer than checkpoint_period ({}), got '{}'",
                        decision::format_duration(l.margin(l.ack_lease)),
                        decision::format_duration(checkpoint_period),
                        decision::format_duration(l.ack_lease)
                    ),
                ));
            }
        }
        let xen = hsb_domain::xen::XenSettings::from_config(c)?;
        // The model domain's disk, or the Xen guest's (xen.disk).
        let disk = match xen {
            Some(_) => None,
            None => hsb_domain::model::DiskSettings::from_config(c)?,
        };
        let nbd_socket = hsb_domain::xen::nbd_socket(c, xen.as_ref(), disk.is_some())?;
        let nbd_inherit = Inherit::parse(&c.str("disk.nbd_inherit")?)
            .map_err(|e| c.error_at("disk.nbd_inherit", &e))?;
        if nbd_inherit.is_some() && nbd_socket.is_none() {
            return Err(c.error_at(
                "disk.nbd_inherit",
                "an inherited NBD export needs disk.nbd_socket, the path it serves",
            ));
        }
        Ok(Settings {
            nbd_socket,
            nbd_inherit,
            disk,
            xen,
            start_image: c.path("start_image")?,
            state_file: c.path("state_file")?,
            start_epoch: c.int("start_epoch")?,
            start_checkpoint: c.int("start_checkpoint")?,
            start_forced: c.bool("start_forced")?,
            rejoin_config: c.path("rejoin_config")?,
            on_fence: c
                .str("on_fence")?
                .split_whitespace()
                .map(String::from)
                .collect(),
            failover,
            decision,
            heartbeat_peers,
            witness_peers,
            witness_listen: c.addr("witness_listen")?,
            standby_witness: c.addr("standby_witness")?,
            decision_log: c.path("decision_log")?,
            decision_log_rotation: hsb_common::recorder::Rotation::from_config(c)?,
            node: hsb_common::failover::node_name(c)?,
            standby: c.addr("standby")?,
            control: c.path("control")?,
            control_group: hsb_common::ctl::control_group(c)?,
            metrics_listen: hsb_common::kit::http::metrics_listen(c)?,
            checkpoint_period,
            max_unacked: c.int("max_unacked")? as usize,
            precopy: c.bool("precopy")?,
            output_limit: c.size("output_limit")? as usize,
            reconnect_interval,
            stats_interval: c.duration("stats_interval")?,
            max_clients: c.int("max_clients")? as usize,
            model_pages,
            service: c.addr("model.service")?,
            dirty_rate: c.int("model.dirty_rate")?,
            write_pattern: hsb_domain::model::pattern_from_config(c)?,
            seed: c.int("model.seed")?,
            encode: hsb_domain::codec_policy::from_config(c)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(extra: &str) -> Result<Settings, String> {
        let text = format!("cluster_key = k\nstandby = 127.0.0.1:1\n{extra}");
        let c = Config::from_text(schema(), "p.conf", &text, &[]).map_err(|e| e.to_string())?;
        Settings::from_config(&c).map_err(|e| e.to_string())
    }

    const FAILOVER: &str = "failover = true\nheartbeat_peers = 127.0.0.1:9\nwitness_peers = 1=127.0.0.1:1,2=127.0.0.1:2,3=127.0.0.1:3\n";

    #[test]
    fn periods_are_refused_where_they_cannot_work() {
        settings("").expect("defaults");
        settings(FAILOVER).expect("defaults with failover");
        for (extra, want) in [
            (
                "checkpoint_period = 0s\n",
                "p.conf:3: key 'checkpoint_period': expected at least 1ms",
            ),
            (
                "reconnect_interval = 0s\n",
                "p.conf:3: key 'reconnect_interval': expected from 1ms to 5s",
            ),
            (
                "reconnect_interval = 6s\n",
                "p.conf:3: key 'reconnect_interval': expected from 1ms to 5s",
            ),
            (
                "failover.hb-interval = 0s\n",
                "p.conf:3: key 'failover.hb-interval': expected at least 1ms",
            ),
        ] {
            let e = settings(extra).expect_err(extra);
            assert!(e.starts_with(want), "{extra:?}: {e}");
        }
        // With failover on, an ack must last until the next checkpoint can be acknowledged.
        let e = settings(&format!("{FAILOVER}checkpoint_period = 100ms\n")).expect_err("ack-lease");
        assert!(
            e.starts_with("p.conf (default): key 'failover.ack-lease': expected an ack lease that, less its drift margin (5800us), is longer than checkpoint_period (100ms), got '80ms'"),
            "{e}"
        );
        settings(&format!(
            "{FAILOVER}checkpoint_period = 100ms\nfailover.ack-lease = 200ms\n"
        ))
        .expect("longer ack lease");
        settings("checkpoint_period = 100ms\n").expect("no failover: acks are not leases");
    }

    #[test]
    fn a_xen_guests_disk_is_served_through_the_nbd_export() {
        let xen = "backend = xen\nxen.domain = g\n";
        let s = settings(&format!(
            "{xen}xen.disk = /var/lib/hsb/g.img\nxen.disk_size = 1GiB\ndisk.nbd_socket = /run/hsb/g.nbd\n"
        ))
        .expect("a xen disk");
        let d = s.disk_config().expect("the disk");
        assert_eq!(
            (d.path.to_str(), d.size),
            (Some("/var/lib/hsb/g.img"), 1 << 30)
        );
        assert!(s.disk.is_none(), "no model disk with the xen backend");
        let e = settings(&format!("{xen}xen.disk = /g.img\nxen.disk_size = 1GiB\n"))
            .expect_err("no export");
        assert!(
            e.contains("key 'xen.disk'") && e.contains("disk.nbd_socket"),
            "{e}"
        );
        let e = settings(&format!(
            "{xen}xen.disk = /g.img\ndisk.nbd_socket = /g.nbd\n"
        ))
        .expect_err("no size");
        assert!(
            e.contains("key 'xen.disk_size': expected the disk's size"),
            "{e}"
        );
        let e = settings(&format!(
            "{xen}xen.disk = /g.img\nxen.disk_size = 5000\ndisk.nbd_socket = /g.nbd\n"
        ))
        .expect_err("not 4 KiB");
        assert!(e.contains("a multiple of 4KiB"), "{e}");
        let e = settings(&format!("{xen}xen.disk_size = 1GiB\n")).expect_err("size, no disk");
        assert!(e.contains("a disk size without a disk"), "{e}");
        let e =
            settings(&format!("{xen}disk.nbd_socket = /g.nbd\n")).expect_err("nothing to serve");
        assert!(e.contains("set xen.disk and xen.disk_size"), "{e}");
        let s = settings(xen).expect("no disk");
        assert!(s.disk_config().is_none());
    }

    #[test]
    fn the_nbd_export_needs_a_disk_to_serve() {
        let s = settings("").expect("defaults");
        assert_eq!(s.nbd_socket, None);
        let s = settings("disk.nbd_socket = /run/hsb/guest.nbd\n").expect("a model disk");
        assert_eq!(s.nbd_socket, Some(PathBuf::from("/run/hsb/guest.nbd")));
        let e = settings("disk.nbd_socket = /x.nbd\nmodel.disk_size = 0\n").expect_err("no disk");
        assert!(
            e.contains("key 'disk.nbd_socket': expected a disk to serve: model.disk_size is 0"),
            "{e}"
        );
    }

    /// A standby's hand-over passes the export's sockets; they need the socket's path, and
    /// anything but descriptor numbers is refused.
    #[test]
    fn an_inherited_export_names_its_descriptors_and_its_path() {
        assert_eq!(settings("").expect("defaults").nbd_inherit, None);
        let s = settings("disk.nbd_socket = /g.nbd\ndisk.nbd_inherit = 5,6\n").expect("inherit");
        assert_eq!(
            s.nbd_inherit,
            Some(Inherit {
                listen: 5,
                conn: Some(6)
            })
        );
        let e = settings("disk.nbd_inherit = 5\n").expect_err("no path");
        assert!(
            e.contains("key 'disk.nbd_inherit'") && e.contains("needs disk.nbd_socket"),
            "{e}"
        );
        let e = settings("disk.nbd_socket = /g.nbd\ndisk.nbd_inherit = stdin\n").expect_err("bad");
        assert!(e.contains("LISTEN or LISTEN,CONN"), "{e}");
    }
}
