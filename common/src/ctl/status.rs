//! What a daemon's `status` answer says, for programs: the answer as JSON (`status --json`) and
//! as a health-check exit code (`hsb-X status` exits with [`Health::code`]).
//!
//! The daemons answer `status` with `key value` lines; both conversions happen on the client
//! side, from those lines, so the daemons' answers stay the single source.

use std::collections::HashSet;
use std::fmt::Write as _;

/// `hsb-X status` exit code when nothing was asked: an unknown option or an unreadable
/// configuration (other commands keep exit code 2 for usage errors; for `status`, 2 means down).
pub const USAGE_EXIT: u8 = 4;

/// A daemon's health as `hsb-X status` reports it in its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// 0: doing its job (a protected primary, a replicating standby, a witness that sees the
    /// application and both daemons).
    Healthy,
    /// 1: running but degraded or unprotected (no standby, synchronising, deciding, serving an
    /// activated replica without a standby of its own, a daemon out of a witness's reach).
    Degraded,
    /// 2: fenced, stepped down, or down (a stale replica refused, the application down).
    Down,
    /// 3: no status: the daemon's control socket cannot be reached, or refuses us.
    Unreachable,
}

impl Health {
    /// The exit code.
    pub fn code(self) -> u8 {
        match self {
            Health::Healthy => 0,
            Health::Degraded => 1,
            Health::Down => 2,
            Health::Unreachable => 3,
        }
    }

    /// The health of a `status` answer, by its `role` key (`fallback` when it has none).
    pub fn of(status: &Status<'_>, fallback: &str) -> Health {
        match status.get("role").unwrap_or(fallback) {
            "primary" => primary(status),
            "standby" => standby(status),
            "witness" => witness(status),
            _ => Health::Degraded,
        }
    }
}

/// hsb-primary: fenced or stepped down is down; streaming to the standby with (when failover is
/// on) the `protected` authority is healthy; anything else (connecting, protected-degraded,
/// holding, unprotected) is degraded.
pub fn primary(s: &Status<'_>) -> Health {
    let authority = s.get("authority");
    if s.get("fenced") == Some("true")
        || s.get("stepped_down") == Some("true")
        || matches!(authority, Some("fenced" | "stepped-down"))
    {
        return Health::Down;
    }
    match (s.get("state"), authority) {
        (Some("protected"), None | Some("protected")) => Health::Healthy,
        _ => Health::Degraded,
    }
}

/// hsb-standby: a decision core stepped down, or refusing to activate a stale replica, is down;
/// replicating while (when failover is on) following the primary is healthy; anything else
/// (waiting for the primary, synchronising, deciding, activated and serving unprotected) is
/// degraded.
pub fn standby(s: &Status<'_>) -> Health {
    let decision = s.get("decision_state");
    if matches!(decision, Some("stepped-down" | "refused-stale")) {
        return Health::Down;
    }
    match (s.get("state"), decision) {
        (Some("replicating"), None | Some("following")) => Health::Healthy,
        _ => Health::Degraded,
    }
}

/// hsb-witness: the application down (or failed in the guest) is down; the application up and
/// both daemons answering is healthy; anything else (no probe result yet, failing, a daemon out
/// of reach) is degraded. A witness serving several guests answers with a `guest NAME` line
/// before each guest's lines: its health is the worst of its guests'.
pub fn witness(s: &Status<'_>) -> Health {
    let starts: Vec<usize> = s
        .lines
        .iter()
        .enumerate()
        .filter(|(_, (k, _))| *k == "guest")
        .map(|(i, _)| i)
        .collect();
    if starts.is_empty() {
        return witness_guest(s);
    }
    let mut worst = Health::Healthy;
    for (n, &at) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(s.lines.len());
        let block = Status {
            lines: s.lines[at + 1..end].to_vec(),
        };
        let h = witness_guest(&block);
        if h.code() > worst.code() {
            worst = h;
        }
    }
    worst
}

/// One guest's lines of a witness's answer.
fn witness_guest(s: &Status<'_>) -> Health {
    match s.get("application") {
        Some("down" | "guest-failure") => Health::Down,
        Some("up")
            if s.get("primary_daemon") == Some("true")
                && s.get("standby_daemon") == Some("true") =>
        {
            Health::Healthy
        }
        _ => Health::Degraded,
    }
}

/// A `status` answer: its `key value` lines, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status<'a> {
    /// Keys and values; a line without a space is a key with an empty value.
    pub lines: Vec<(&'a str, &'a str)>,
}

impl<'a> Status<'a> {
    /// Split an answer into its lines (blank lines are skipped).
    pub fn parse(text: &'a str) -> Status<'a> {
        let lines = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.split_once(' ').unwrap_or((l, "")))
            .collect();
        Status { lines }
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.lines.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    /// One JSON object of strings, keys in the answer's order, followed by a newline. Values
    /// stay strings, numbers too (`"acked_checkpoint":"42"`), so every value has one type. A key
    /// that repeats becomes `key_2`, `key_3`... (the first such name not taken), so the object's
    /// names are unique.
    pub fn to_json(&self) -> String {
        let given: HashSet<&str> = self.lines.iter().map(|(k, _)| *k).collect();
        let mut used: HashSet<String> = HashSet::with_capacity(self.lines.len());
        let mut out = String::with_capacity(
            64 + self
                .lines
                .iter()
                .map(|(k, v)| k.len() + v.len() + 8)
                .sum::<usize>(),
        );
        out.push('{');
        for (i, (k, v)) in self.lines.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let name = if used.contains(*k) {
                // Not a name the answer itself uses (later) either.
                (2u64..)
                    .map(|n| format!("{k}_{n}"))
                    .find(|c| !used.contains(c) && !given.contains(c.as_str()))
                    .unwrap_or_default()
            } else {
                (*k).to_string()
            };
            json_string(&mut out, &name);
            used.insert(name);
            out.push(':');
            json_string(&mut out, v);
        }
        out.push_str("}\n");
        out
    }
}

/// Append `s` as a JSON string (RFC 8259: `"` and `\` escaped, control characters as `\uXXXX`
/// or their short forms).
pub fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(text: &str) -> Health {
        Health::of(&Status::parse(text), "")
    }

    #[test]
    fn primary_health() {
        // failover off: the stream's state alone.
        assert_eq!(
            health("role primary\nstate protected\nfailover off\n"),
            Health::Healthy
        );
        assert_eq!(health("role primary\nstate connecting\n"), Health::Degraded);
        assert_eq!(
            health("role primary\nstate standby-unreachable\n"),
            Health::Degraded
        );
        // failover on: the authority too.
        let on = |state: &str, authority: &str, fenced: &str, stepped: &str| {
            health(&format!("role primary\nstate {state}\nauthority {authority}\nfenced {fenced}\nstepped_down {stepped}\n"))
        };
        assert_eq!(
            on("protected", "protected", "false", "false"),
            Health::Healthy
        );
        assert_eq!(
            on("protected", "unprotected", "false", "false"),
            Health::Degraded
        );
        // Acks slower than the ack lease: protection kept, but degraded (issue 12).
        assert_eq!(
            on("protected", "protected-degraded", "false", "false"),
            Health::Degraded
        );
        assert_eq!(
            on("standby-unreachable", "unprotected", "false", "false"),
            Health::Degraded
        );
        assert_eq!(
            on("connecting", "holding", "false", "false"),
            Health::Degraded
        );
        assert_eq!(on("connecting", "fenced", "true", "false"), Health::Down);
        assert_eq!(on("protected", "protected", "true", "false"), Health::Down);
        assert_eq!(
            on("connecting", "stepped-down", "true", "true"),
            Health::Down
        );
        assert_eq!(on("connecting", "holding", "false", "true"), Health::Down);
        // No state at all (not a status answer): not healthy.
        assert_eq!(health("role primary\n"), Health::Degraded);
    }

    #[test]
    fn standby_health() {
        assert_eq!(
            health("role standby\nstate replicating\nfailover off (operator activation only)\n"),
            Health::Healthy
        );
        for state in ["waiting-for-primary", "synchronising", "active"] {
            assert_eq!(
                health(&format!("role standby\nstate {state}\n")),
                Health::Degraded,
                "{state}"
            );
        }
        let on = |state: &str, decision: &str| {
            health(&format!(
                "role standby\nstate {state}\ndecision_state {decision}\n"
            ))
        };
        assert_eq!(on("replicating", "following"), Health::Healthy);
        for d in ["unsynced", "deciding", "waiting", "switching-over"] {
            assert_eq!(on("replicating", d), Health::Degraded, "{d}");
        }
        assert_eq!(on("active", "activated"), Health::Degraded);
        assert_eq!(on("waiting-for-primary", "stepped-down"), Health::Down);
        assert_eq!(on("replicating", "refused-stale"), Health::Down);
    }

    #[test]
    fn witness_health_is_the_worst_of_its_guests() {
        let guest = |app: &str, p: bool| {
            format!("application {app}\nprimary_daemon {p}\nstandby_daemon true\n")
        };
        let text = |blocks: &[String]| {
            let mut t = String::from("role witness\nnode w\nguests a,b\n");
            for (i, b) in blocks.iter().enumerate() {
                t.push_str(&format!("guest g{i}\n{b}"));
            }
            t
        };
        for (blocks, want) in [
            (vec![guest("up", true), guest("up", true)], Health::Healthy),
            (
                vec![guest("up", true), guest("up", false)],
                Health::Degraded,
            ),
            (
                vec![guest("failing", true), guest("down", true)],
                Health::Down,
            ),
            (vec![guest("down", false), guest("up", true)], Health::Down),
        ] {
            let t = text(&blocks);
            assert_eq!(Health::of(&Status::parse(&t), "witness"), want, "{t}");
        }
    }

    #[test]
    fn witness_health() {
        let w = |app: &str, p: &str, s: &str| {
            health(&format!(
                "role witness\napplication {app}\nprimary_daemon {p}\nstandby_daemon {s}\n"
            ))
        };
        assert_eq!(w("up", "true", "true"), Health::Healthy);
        assert_eq!(w("up", "false", "true"), Health::Degraded);
        assert_eq!(w("up", "true", "false"), Health::Degraded);
        assert_eq!(w("unknown", "true", "true"), Health::Degraded);
        assert_eq!(w("failing", "true", "true"), Health::Degraded);
        assert_eq!(w("down", "false", "true"), Health::Down);
        assert_eq!(w("guest-failure", "true", "true"), Health::Down);
    }

    #[test]
    fn the_role_key_picks_the_rule_and_the_codes_are_fixed() {
        let s = Status::parse("state replicating\n");
        assert_eq!(Health::of(&s, "standby"), Health::Healthy);
        assert_eq!(Health::of(&s, "primary"), Health::Degraded);
        assert_eq!(Health::of(&s, "nonsense"), Health::Degraded);
        let codes: Vec<u8> = [
            Health::Healthy,
            Health::Degraded,
            Health::Down,
            Health::Unreachable,
        ]
        .iter()
        .map(|h| h.code())
        .collect();
        assert_eq!(codes, vec![0, 1, 2, 3]);
        assert_eq!(USAGE_EXIT, 4);
    }

    #[test]
    fn json_keeps_order_escapes_and_makes_names_unique() {
        let text = "role witness\nprobe_last Timeout in 50.0ms: \"GET /\" \\ odd\u{1}\tx\nprobe a\nprobe b\nbare\n\nlast_decision {\"k\":1}\nnode n\u{e9}\n";
        let j = Status::parse(text).to_json();
        assert_eq!(
            j,
            "{\"role\":\"witness\",\"probe_last\":\"Timeout in 50.0ms: \\\"GET /\\\" \\\\ odd\\u0001\\tx\",\"probe\":\"a\",\"probe_2\":\"b\",\"bare\":\"\",\"last_decision\":\"{\\\"k\\\":1}\",\"node\":\"n\u{e9}\"}\n"
        );
        assert_eq!(Status::parse("").to_json(), "{}\n");
        assert_eq!(
            Status::parse("a 1\na 2\na_2 3\na 4\n").to_json(),
            "{\"a\":\"1\",\"a_3\":\"2\",\"a_2\":\"3\",\"a_4\":\"4\"}\n"
        );
    }
}
