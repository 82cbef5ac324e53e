//! The `failover.*` configuration keys shared by the three daemons: the decision core's
//! settings ([`crate::decision::Config`]) plus where the peers are.

use std::sync::OnceLock;

use crate::config::{Config, ConfigError, KeySpec, ValueKind};
use crate::decision::{self, CONFIG_KEYS};

/// One line of help per decision key.
fn help(key: &str) -> &'static str {
    match key {
        "policy" => "who decides: client-oriented (witness quorum), heartbeat-only (the Remus baseline) or ping-node (the Linux-HA baseline); must agree on all nodes",
        "witnesses" => "ids of the configured witnesses, comma-separated (quorum is a strict majority)",
        "hb-interval" => "heartbeat period, primary to standby, on every link",
        "hb-timeout" => "silence on all links before the standby suspects the primary (a suspicion only queries the witnesses)",
        "hb-links" => "number of heartbeat links (addresses in heartbeat_peers)",
        "hb-max-backoff" => "most the timeout stretches after false suspicions (hysteresis), as a multiple",
        "hb-calm" => "quiet time after which the stretched timeout shrinks back",
        "hb-trust-after" => "heartbeats in a row before a suspected primary is trusted again",
        "lease" => "lease and vote duration granted by witnesses",
        "lease-max" => "longest lease any witness grants (a restarted witness waits this out before voting)",
        "drift-ppm" => "clock drift allowance between hosts, parts per million",
        "drift-fixed" => "fixed allowance added to every lease margin (scheduling, delivery)",
        "ack-lease" => "how long an ack lets the primary release output; the standby waits this out before activating",
        "query-timeout" => "how long the standby waits for votes",
        "requery-min" => "shortest pause between two witness queries",
        "requery-max" => "longest pause between two witness queries",
        "report-fresh" => "witness reports older than this are ignored",
        "switchover" => "rule 6: switch over when clients cannot reach the primary but reach the standby",
        "switchover-hold" => "rule 6: how long the condition must hold first (anti-flap)",
        "switchover-min-interval" => "rule 6: least time between two switchovers (anti-flap)",
        "app-down-after" => "witness: the application counts as down after this long without an answer...",
        "app-down-failures" => "witness: ...and this many failed probes in a row",
        "host-fresh" => "witness: a daemon counts as reachable if it answered this recently",
        "fence-after" => "primary: pause the domain after this long without authority (output is held at once)",
        "ping-interval" => "ping-node baseline: ping period while the heartbeat is lost",
        _ => "decision setting",
    }
}

/// The `failover.*` keys with their defaults.
pub fn keys() -> Vec<KeySpec> {
    let defaults = decision::Config::default().fields();
    CONFIG_KEYS
        .iter()
        .map(|k| {
            let default = defaults
                .iter()
                .find(|(dk, _)| dk == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            let name: &'static str = Box::leak(format!("failover.{k}").into_boxed_str());
            let default: &'static str = Box::leak(default.into_boxed_str());
            KeySpec {
                key: name,
                kind: ValueKind::Str,
                default: Some(default),
                help: help(k),
            }
        })
        .collect()
}

/// A daemon's schema: its own keys followed by the failover keys (built once).
pub fn schema(
    own: &'static [KeySpec],
    cell: &'static OnceLock<Vec<KeySpec>>,
) -> &'static [KeySpec] {
    schema_with(own, &[], cell)
}

/// A daemon's schema: its own keys, then `more` (e.g. a backend's keys), then the failover keys.
pub fn schema_with(
    own: &'static [KeySpec],
    more: &'static [KeySpec],
    cell: &'static OnceLock<Vec<KeySpec>>,
) -> &'static [KeySpec] {
    cell.get_or_init(|| {
        let mut v = own.to_vec();
        v.extend_from_slice(more);
        v.extend(keys());
        v
    })
}

/// Build the decision configuration from the `failover.*` keys, reporting errors at the key.
pub fn build(c: &Config) -> Result<decision::Config, ConfigError> {
    let mut d = decision::Config::default();
    let mut pairs = Vec::new();
    for k in CONFIG_KEYS {
        let v = c.str(&format!("failover.{k}"))?;
        if !v.is_empty() {
            pairs.push((*k, v));
        }
    }
    let refs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    d.set_many(&refs).map_err(|e| {
        c.error_at(
            &format!("failover.{}", e.key),
            &format!("expected {}, got '{}'", e.expected, e.value),
        )
    })?;
    if d.policy == decision::Policy::ClientOriented && d.witnesses.is_empty() {
        return Err(c.error_at(
            "failover.witnesses",
            "the client-oriented policy needs witnesses (e.g. 1,2,3)",
        ));
    }
    Ok(d)
}

/// What a primary or standby needs for automatic failover, read and checked together.
#[derive(Debug, Clone)]
pub struct Peers {
    /// `failover = true`.
    pub enabled: bool,
    /// The decision configuration (`failover.*`).
    pub decision: decision::Config,
    /// One address per heartbeat link (`heartbeat_key`).
    pub heartbeat: Vec<std::net::SocketAddr>,
    /// The witnesses' addresses (`witness_peers`).
    pub witnesses: Vec<(decision::WitnessId, std::net::SocketAddr)>,
}

/// Read `failover`, the `failover.*` keys, the heartbeat addresses under `heartbeat_key` and
/// `witness_peers`; when failover is on, check there is one heartbeat address per link and
/// (client-oriented policy) one address per configured witness.
pub fn peers(c: &Config, heartbeat_key: &str) -> Result<Peers, ConfigError> {
    let enabled = c.bool("failover")?;
    let decision = build(c)?;
    let heartbeat = c.addrs(heartbeat_key)?;
    let witnesses = crate::recorder::parse_witness_peers(&c.str("witness_peers")?)
        .map_err(|e| c.error_at("witness_peers", &e))?;
    if enabled {
        if heartbeat.len() != decision.heartbeat.links as usize {
            return Err(c.error_at(
                heartbeat_key,
                &format!(
                    "expected {} address(es), one per heartbeat link (failover.hb-links)",
                    decision.heartbeat.links
                ),
            ));
        }
        if decision.policy == decision::Policy::ClientOriented {
            crate::recorder::check_peers(&witnesses, &decision)
                .map_err(|e| c.error_at("witness_peers", &e))?;
        }
    }
    Ok(Peers {
        enabled,
        decision,
        heartbeat,
        witnesses,
    })
}

/// The `node` key of a primary or standby: 1 to 32 bytes (it travels in the replication Hello,
/// and peers derive the node's datagram id from it, so it must arrive whole).
pub fn node_name(c: &Config) -> Result<String, ConfigError> {
    let node = c.str("node")?;
    if node.is_empty() || node.len() > crate::msg::NODE_NAME_LEN {
        return Err(c.error_at(
            "node",
            &format!(
                "expected a name of 1 to {} bytes",
                crate::msg::NODE_NAME_LEN
            ),
        ));
    }
    Ok(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    static OWN: &[KeySpec] = &[KeySpec {
        key: "x",
        kind: ValueKind::Str,
        default: Some(""),
        help: "x",
    }];
    static CELL: OnceLock<Vec<KeySpec>> = OnceLock::new();

    #[test]
    fn keys_parse_and_errors_are_located() {
        let s = schema(OWN, &CELL);
        let c = Config::from_text(
            s,
            "f.conf",
            "failover.witnesses = 1,2,3\nfailover.hb-timeout = 40ms\n",
            &[],
        )
        .unwrap();
        let d = build(&c).unwrap();
        assert_eq!(d.witnesses.quorum(), 2);
        assert_eq!(d.heartbeat.timeout, std::time::Duration::from_millis(40));
        let c = Config::from_text(
            s,
            "f.conf",
            "failover.witnesses = 1,2,3\nfailover.lease = soon\n",
            &[],
        )
        .unwrap();
        let e = build(&c).unwrap_err().to_string();
        assert!(
            e.starts_with("f.conf:2: key 'failover.lease': expected a duration"),
            "{e}"
        );
        let c = Config::from_text(s, "f.conf", "", &[]).unwrap();
        assert_eq!(
            build(&c).unwrap().witnesses.len(),
            3,
            "default: witnesses 1,2,3"
        );
        let c = Config::from_text(s, "f.conf", "failover.policy = heartbeat-only\n", &[]).unwrap();
        assert_eq!(build(&c).unwrap().policy, decision::Policy::HeartbeatOnly);
    }

    /// Regression: keys that must move together were checked one at a time in schema order, so
    /// a lease longer than the default lease-max was refused even with lease-max raised too.
    #[test]
    fn related_keys_are_checked_together_in_any_order() {
        let s = schema(OWN, &CELL);
        for text in [
            "failover.lease = 6s\nfailover.lease-max = 6s\n",
            "failover.lease-max = 6s\nfailover.lease = 6s\n",
        ] {
            let c = Config::from_text(s, "f.conf", text, &[]).unwrap();
            let d = build(&c).unwrap();
            assert_eq!(d.lease.duration, std::time::Duration::from_secs(6));
        }
        // A real conflict is still refused, at the key the rule names.
        let c = Config::from_text(s, "f.conf", "failover.lease = 6s\n", &[]).unwrap();
        let e = build(&c).unwrap_err().to_string();
        assert!(e.contains("key 'failover.lease-max'"), "{e}");
        assert!(e.contains("at least the lease duration"), "{e}");
    }
}
