//! The simulated cluster's addresses and the configurations its daemons run with: what a
//! deployment's configuration files would say (README, "Configuration"), built by hand.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hsb_common::decision::{Config, WitnessId};
use hsb_witness::node::NodeSettings;

use super::net::Ep;

/// The standby's replication listener.
pub const REPL_PORT: u16 = 7000;
/// Each daemon's datagram socket (witnesses, the peer daemon's fence requests and notices).
pub const DGRAM_PORT: u16 = 7001;
/// The standby's heartbeat socket.
pub const HB_PORT: u16 = 7002;
/// The witnesses' socket.
pub const WITNESS_PORT: u16 = 7400;
/// The guest's pages (both daemons must agree).
pub const PAGES: u64 = 256;
/// Checkpoint period (`checkpoint_period`), ms; the model guest writes one output per period.
pub const CKPT_MS: u64 = 25;
/// How often a witness pings the daemons and probes the application, ms.
pub const PROBE_MS: u64 = 10;
/// How long a daemon's ping may take.
pub const HOST_PROBE_TIMEOUT: Duration = Duration::from_millis(20);
/// How long an application probe may take (output commit adds up to a checkpoint period).
pub const APP_PROBE_TIMEOUT: Duration = Duration::from_millis(50);
/// How often a witness reports, ms.
pub const REPORT_MS: u64 = 50;

/// Host `h`'s address at `port`.
pub fn host_addr(h: u8, port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(10, 0, 0, h + 1), port))
}

/// Witness `w`'s address.
pub fn witness_addr(w: u8) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(10, 0, 1, w + 1), WITNESS_PORT))
}

/// The ping node's address.
pub fn ping_addr() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(10, 0, 2, 1), 22))
}

/// Which endpoint an address belongs to.
pub fn ep_of(a: SocketAddr) -> Option<Ep> {
    let SocketAddr::V4(v4) = a else {
        return None;
    };
    match v4.ip().octets() {
        [10, 0, 0, h @ 1..=2] => Some(Ep::Node(h - 1)),
        [10, 0, 1, w @ 1..=255] => Some(Ep::Witness(w - 1)),
        [10, 0, 2, 1] => Some(Ep::Ping),
        _ => None,
    }
}

/// Host `h`'s node name.
pub fn node_name(h: u8) -> &'static str {
    if h == 0 {
        "host-a"
    } else {
        "host-b"
    }
}

fn witness_peers(witnesses: u8) -> Vec<(WitnessId, SocketAddr)> {
    (0..witnesses).map(|w| (w + 1, witness_addr(w))).collect()
}

/// hsb-primary's configuration on host `h` (its standby on the other host).
pub fn primary_config(h: u8, cfg: &Config, witnesses: u8) -> hsb_primary::node::NodeConfig {
    let other = 1 - h;
    hsb_primary::node::NodeConfig {
        standby: host_addr(other, REPL_PORT),
        period: Duration::from_millis(CKPT_MS),
        max_unacked: 4,
        precopy: false,
        reconnect_interval: Duration::from_millis(200),
        max_reconnect: hsb_primary::config::MAX_RECONNECT,
        failover: Some(hsb_primary::node::FailoverConfig {
            decision: cfg.clone(),
            heartbeat_peers: vec![host_addr(other, HB_PORT)],
            witness_peers: witness_peers(witnesses),
            standby_witness: host_addr(other, DGRAM_PORT),
        }),
        disk: false,
    }
}

/// hsb-standby's configuration on host `h` (promoting itself on activation).
pub fn standby_config(
    h: u8,
    cfg: &Config,
    witnesses: u8,
    query_base: u32,
) -> hsb_standby::node::NodeConfig {
    hsb_standby::node::NodeConfig {
        node: node_name(h).to_string(),
        domain_pages: PAGES,
        primary_allow: Vec::new(),
        service: host_addr(h, 8000),
        promote: true,
        failover: Some(hsb_standby::node::FailoverConfig {
            decision: cfg.clone(),
            witness_peers: witness_peers(witnesses),
            primary_witness: host_addr(1 - h, DGRAM_PORT),
            ping_node: Some(ping_addr()),
            query_base,
        }),
        disk_size: 0,
    }
}

/// A witness's settings.
pub fn witness_settings() -> NodeSettings {
    NodeSettings {
        probe_interval: Duration::from_millis(PROBE_MS),
        probe_timeout: HOST_PROBE_TIMEOUT,
        report_interval: Duration::from_millis(REPORT_MS),
        guest: String::new(),
    }
}
