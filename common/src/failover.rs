//! The `failover.*` configuration keys shared by the three daemons: the decision core's
//! settings ([`crate::decision::Config`]) plus where the peers are.

use std::net::SocketAddr;
use std::sync::OnceLock;

use crate::config::{excerpt, Config, ConfigError, KeySpec, ValueKind};
use crate::decision::{self, WitnessId, CONFIG_KEYS, MAX_WITNESSES};

/// One line of help per decision key.
fn help(key: &str) -> &'static str {
    match key {
        "policy" => "who decides: client-oriented (witness quorum), heartbeat-only (the Remus baseline) or ping-node (the Linux-HA baseline); must agree on all nodes",
        "witnesses" => "ids of the configured witnesses, comma-separated: an odd number, at least 3 (quorum is a strict majority)",
        "hb-interval" => "heartbeat period, primary to standby, on every link (at least 1ms)",
        "hb-timeout" => "silence on all links before the standby suspects the primary (a suspicion only queries the witnesses); at least twice hb-interval",
        "hb-links" => "number of heartbeat links (addresses in heartbeat_peers), 1 to 4",
        "hb-max-backoff" => "most the timeout stretches after false suspicions (hysteresis), as a multiple from 1 to 64",
        "hb-calm" => "quiet time after which the stretched timeout shrinks back; at least hb-timeout",
        "hb-trust-after" => "heartbeats in a row before a suspected primary is trusted again, 1 to 100",
        "lease" => "lease and vote duration granted by witnesses; more than twice its drift margin (the primary renews at half the lease)",
        "lease-max" => "longest lease any witness grants (a restarted witness waits this out before voting); at least lease",
        "drift-ppm" => "clock drift allowance between hosts, parts per million (0 to 500000)",
        "drift-fixed" => "fixed allowance added to every lease margin (scheduling, delivery); at least 1ms",
        "ack-lease" => "how long an ack lets the primary release output; the standby waits this out before activating, so with its margin it is shorter than lease less its margin; primary: less its margin, longer than checkpoint_period",
        "query-timeout" => "how long the standby waits for votes (at least 1ms, shorter than lease less its margin); while votes come later than that (a starved host, a slow path) the next query waits half again as long as the latest vote took, up to half the lease less its margin (status: query_wait_ms); late votes are never counted",
        "requery-min" => "shortest pause between two witness queries (at least 1ms)",
        "requery-max" => "longest pause between two witness queries (at least requery-min)",
        "report-fresh" => "witness reports older than this are ignored (at least 1ms; witness: at least twice report_interval)",
        "switchover" => "rule 6: switch over when clients cannot reach the primary but reach the standby",
        "switchover-hold" => "rule 6: how long the condition must hold first (anti-flap; at least 1ms)",
        "switchover-min-interval" => "rule 6: least time between two switchovers (anti-flap; 0: none)",
        "app-down-after" => "witness: the application counts as down after this long without an answer (0: at once)...",
        "app-down-failures" => "witness: ...and this many failed probes in a row (1 to 1000)",
        "host-fresh" => "witness: a daemon counts as reachable if it answered this recently (at least twice probe_interval; plus how late its late answers came, over rate-window)",
        "fence-after" => "primary: pause the domain after this long without authority (output is held at once; 0: pause at once too)",
        "ping-interval" => "ping-node baseline: ping period while the heartbeat is lost (at least 1ms)",
        "standby-timeout" => "primary: the standby counts as lost after this long with no ack and no heartbeat reply showing it still hears the primary; only then may output leave under the witnesses' lease (at least 2 heartbeat periods)",
        "slow-standby" => "primary: wait (default: while the standby is there, output waits for its acks however slow: protected, degraded) or lease (availability over protection: a standby slower than ack-lease counts as lost and output leaves under the witnesses' lease, unprotected)",
        "rate-window" => "witness: success rates of probes (application, each daemon) are measured over this window (at least 1ms)",
        "gray-below" => "witness: the application answering fewer than this percentage of probes over a lossy path to its host, while the standby's host answers cleanly, is a switchover candidate (1 to 100)",
        "lossy-below" => "witness: the path to the primary's host counts as lossy when its daemon answers fewer than this percentage of pings (1 to 100, at most clean-above)",
        "clean-above" => "witness: a host answering at least this percentage of pings is reached cleanly (1 to 100, at least gray-below)",
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
/// Every rule of [`decision::Config::check`] applies, so `check` and `run` refuse alike.
pub fn build(c: &Config) -> Result<decision::Config, ConfigError> {
    let mut d = decision::Config::default();
    let mut pairs = Vec::new();
    for k in CONFIG_KEYS {
        let v = c.str(&format!("failover.{k}"))?;
        if !v.is_empty() {
            pairs.push((*k, v));
        } else if *k == "witnesses" {
            // Said explicitly (the default is 1,2,3): not quietly the default set.
            let policy = pairs.iter().find(|(k, _)| *k == "policy");
            if policy.is_none_or(|(_, p)| p == decision::Policy::ClientOriented.name()) {
                return Err(c.error_at(
                    "failover.witnesses",
                    "the client-oriented policy needs witnesses (e.g. 1,2,3)",
                ));
            }
        }
    }
    let refs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    d.set_many(&refs).map_err(|e| {
        let key = format!("failover.{}", e.key);
        // Quote the value as it was written (`0s`, not the core's `0`).
        let value = c.str(&key).unwrap_or(e.value);
        c.error_at(
            &key,
            &format!("expected {}, got '{}'", e.expected, excerpt(&value)),
        )
    })?;
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
/// `witness_peers`. `witness_peers`, when given, names each of `failover.witnesses` exactly
/// once; when failover is on there is one heartbeat address per link and (client-oriented
/// policy) `witness_peers` must be given.
pub fn peers(c: &Config, heartbeat_key: &str) -> Result<Peers, ConfigError> {
    let enabled = c.bool("failover")?;
    let decision = build(c)?;
    let heartbeat = c.addrs(heartbeat_key)?;
    let witnesses = parse_witness_peers(&c.str("witness_peers")?)
        .map_err(|e| c.error_at("witness_peers", &e))?;
    let needed = enabled && decision.policy == decision::Policy::ClientOriented;
    if needed || !witnesses.is_empty() {
        check_peers(&witnesses, &decision).map_err(|e| c.error_at("witness_peers", &e))?;
    }
    if enabled && heartbeat.len() != decision.heartbeat.links as usize {
        return Err(c.error_at(
            heartbeat_key,
            &format!(
                "expected {} address(es), one per heartbeat link (failover.hb-links), got {}",
                decision.heartbeat.links,
                heartbeat.len()
            ),
        ));
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

/// Parse `1=10.0.0.1:7300,2=10.0.0.2:7300` into (witness id, address) pairs: at most
/// [`MAX_WITNESSES`], each id and each address once (a witness is one daemon with one address).
pub fn parse_witness_peers(s: &str) -> Result<Vec<(WitnessId, SocketAddr)>, String> {
    let mut out: Vec<(WitnessId, SocketAddr)> = Vec::new();
    for p in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if out.len() == MAX_WITNESSES {
            return Err(format!(
                "more than {MAX_WITNESSES} witnesses (expected ID=IP:PORT for each of failover.witnesses)"
            ));
        }
        let (id, addr) = p
            .split_once('=')
            .ok_or_else(|| format!("'{}' is not ID=IP:PORT", excerpt(p)))?;
        let id: WitnessId = id
            .trim()
            .parse()
            .map_err(|_| format!("'{}' is not a witness id (0-255)", excerpt(id.trim())))?;
        let addr: SocketAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("'{}' is not an address IP:PORT", excerpt(addr.trim())))?;
        if out.iter().any(|(i, _)| *i == id) {
            return Err(format!(
                "witness {id} is given twice (expected one ID=IP:PORT per witness)"
            ));
        }
        if let Some((other, _)) = out.iter().find(|(_, a)| *a == addr) {
            return Err(format!(
                "witnesses {other} and {id} share the address {addr} (each witness is its own daemon)"
            ));
        }
        out.push((id, addr));
    }
    Ok(out)
}

/// Check that the peers cover exactly the configured witnesses.
pub fn check_peers(
    peers: &[(WitnessId, SocketAddr)],
    cfg: &decision::Config,
) -> Result<(), String> {
    if let Some((p, _)) = peers.iter().find(|(p, _)| !cfg.witnesses.contains(*p)) {
        return Err(format!(
            "witness {p} is not among failover.witnesses ({})",
            ids(cfg)
        ));
    }
    let missing: Vec<String> = cfg
        .witnesses
        .ids()
        .iter()
        .filter(|id| !peers.iter().any(|(p, _)| p == *id))
        .map(|id| id.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "no address for witness {} (expected ID=IP:PORT for each of failover.witnesses: {})",
            missing.join(", "),
            ids(cfg)
        ));
    }
    Ok(())
}

fn ids(cfg: &decision::Config) -> String {
    let v: Vec<String> = cfg.witnesses.ids().iter().map(|i| i.to_string()).collect();
    v.join(",")
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

    static PEERS_OWN: &[KeySpec] = &[
        KeySpec {
            key: "failover",
            kind: ValueKind::Bool,
            default: Some("true"),
            help: "",
        },
        KeySpec {
            key: "heartbeat",
            kind: ValueKind::AddrList,
            default: Some("127.0.0.1:9"),
            help: "",
        },
        KeySpec {
            key: "witness_peers",
            kind: ValueKind::Str,
            default: Some("1=127.0.0.1:1,2=127.0.0.1:2,3=127.0.0.1:3"),
            help: "",
        },
    ];
    static PEERS_CELL: OnceLock<Vec<KeySpec>> = OnceLock::new();

    fn peers_of(text: &str) -> Result<Peers, String> {
        let s = schema(PEERS_OWN, &PEERS_CELL);
        let c = Config::from_text(s, "p.conf", text, &[]).map_err(|e| e.to_string())?;
        peers(&c, "heartbeat").map_err(|e| e.to_string())
    }

    /// The rules are reported at the key and line, with the value as written.
    #[test]
    fn refusals_name_file_line_key_value_and_expectation() {
        for (text, want) in [
            (
                "failover.witnesses = 1,2\n",
                "p.conf:1: key 'failover.witnesses': expected an odd number of witnesses, at least 3 (got 2)",
            ),
            (
                "failover.witnesses = 1,2,3,4\n",
                "p.conf:1: key 'failover.witnesses': expected an odd number of witnesses, at least 3 (got 4)",
            ),
            (
                "\nfailover.hb-interval = 0s\n",
                "p.conf:2: key 'failover.hb-interval': expected at least 1ms (with 0, heartbeats would be sent in a busy loop), got '0s'",
            ),
            (
                "failover.hb-interval = 50ms\n",
                "p.conf (default): key 'failover.hb-timeout': expected at least twice hb-interval (50ms), so that one lost heartbeat is not a suspicion, got '50ms'",
            ),
            (
                "failover.hb-interval = 100ms\nfailover.hb-timeout = 100ms\n",
                "p.conf:2: key 'failover.hb-timeout': expected at least twice hb-interval (100ms)",
            ),
            ("failover.query-timeout = 0s\n", "p.conf:1: key 'failover.query-timeout': expected at least 1ms"),
            ("failover.lease = 0s\n", "p.conf:1: key 'failover.lease': expected at least 1ms"),
            ("failover.ack-lease = 0s\n", "p.conf:1: key 'failover.ack-lease': expected at least 1ms"),
            ("failover.witnesses =\n", "p.conf:1: key 'failover.witnesses': the client-oriented policy needs witnesses"),
        ] {
            let e = peers_of(text).expect_err(text);
            assert!(e.starts_with(want), "{text:?}:\n got  {e}\n want {want}");
        }
        // Without the witness quorum, no witness set is needed: an empty one is not refused.
        peers_of("failover.policy = heartbeat-only\nfailover.witnesses =\nwitness_peers =\n")
            .expect("heartbeat-only without witnesses");
    }

    #[test]
    fn witness_peers_name_each_configured_witness_once() {
        for (peers, want) in [
            (
                "1=127.0.0.1:1,1=127.0.0.1:2,2=127.0.0.1:3,3=127.0.0.1:4",
                "key 'witness_peers': witness 1 is given twice",
            ),
            (
                "1=127.0.0.1:1,2=127.0.0.1:1,3=127.0.0.1:4",
                "key 'witness_peers': witnesses 1 and 2 share the address 127.0.0.1:1",
            ),
            (
                "1=127.0.0.1:1,2=127.0.0.1:2,3=127.0.0.1:3,4=127.0.0.1:4",
                "key 'witness_peers': witness 4 is not among failover.witnesses (1,2,3)",
            ),
            (
                "1=127.0.0.1:1",
                "key 'witness_peers': no address for witness 2, 3 (expected ID=IP:PORT for each of failover.witnesses: 1,2,3)",
            ),
            ("", "key 'witness_peers': no address for witness 1, 2, 3"),
            ("1=127.0.0.1", "'127.0.0.1' is not an address IP:PORT"),
            ("x=127.0.0.1:1", "'x' is not a witness id (0-255)"),
            ("1:127.0.0.1:1", "'1:127.0.0.1:1' is not ID=IP:PORT"),
        ] {
            let text = format!("witness_peers = {peers}\n");
            let e = peers_of(&text).expect_err(peers);
            assert!(e.contains(want), "{peers:?}:\n got  {e}\n want {want}");
            // Even with failover off, a list that is given must be right...
            if !peers.is_empty() {
                let e = peers_of(&format!("failover = false\n{text}")).expect_err(peers);
                assert!(e.contains(want), "failover off, {peers:?}: {e}");
            }
        }
        // ...but it need not be given.
        peers_of("failover = false\nwitness_peers =\n").expect("failover off, no peers");
        let many: Vec<String> = (1..=16).map(|i| format!("{i}=127.0.0.1:{i}")).collect();
        let e = peers_of(&format!("witness_peers = {}\n", many.join(","))).expect_err("16");
        assert!(e.contains("more than 15 witnesses"), "{e}");
        let p = peers_of("").expect("defaults");
        assert_eq!(p.witnesses.len(), 3);
        let e = peers_of("heartbeat = 127.0.0.1:9,127.0.0.1:10\n").expect_err("two links");
        assert!(
            e.contains("key 'heartbeat': expected 1 address(es), one per heartbeat link (failover.hb-links), got 2"),
            "{e}"
        );
    }

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
