//! What a soak run showed, checked and written as markdown: failovers done (each with its
//! cause, rule, time to serve and the client's unavailability), failovers refused (each with
//! the state that justifies it, or marked unjustified), missed takeovers, the client history's
//! acknowledged writes lost or doubled, the split-brain time, and anything else that went wrong.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use hsb_common::decision::evidence::Evidence;
use hsb_common::decision::Role;

use crate::faults::Op;
use crate::soak::monitor::{Split, Watch};
use crate::soak::nemesis::{Missed, OperatorRefusal, StepRecord, Stuck, World};

mod analysis;
mod markdown;

pub use analysis::justify;

/// How long after a copy served unprotected the witnesses' leases may still hold: the longest
/// lease (`failover.lease-max`, 2 s) with its drift margin, and the time to ask again.
pub const LEASES_LAST: Duration = Duration::from_secs(3);

/// A decision a standby logged (`decision {json}` lines of the daemons' logs).
#[derive(Debug, Clone)]
pub struct Logged {
    pub host: usize,
    /// Wall clock, ms since the Unix epoch.
    pub wall: u64,
    pub evidence: Evidence,
}

/// Milliseconds since the Unix epoch of an RFC 3339 UTC stamp `2026-12-06T23:10:00.123Z`.
pub fn parse_stamp(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[10] != b'T' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (h, mi, sec) = (n(11..13)?, n(14..16)?, n(17..19)?);
    let ms = if b.get(19) == Some(&b'.') {
        let digits: String = s[20..].chars().take_while(char::is_ascii_digit).collect();
        let v: i64 = digits.get(..3.min(digits.len()))?.parse().ok()?;
        v * 10i64.pow(3 - digits.len().min(3) as u32)
    } else {
        0
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let t = ((days * 24 + h) * 60 + mi) * 60 + sec;
    u64::try_from(t * 1000 + ms).ok()
}

/// The standbys' decisions in host `h`'s log files.
pub fn decisions(h: usize, logs: &[std::path::PathBuf]) -> Vec<Logged> {
    let mut out = vec![];
    for p in logs {
        let text = std::fs::read_to_string(p).unwrap_or_default();
        for line in text.lines() {
            let Some(i) = line.find(" decision {") else {
                continue;
            };
            let (Some(wall), Ok(evidence)) = (
                line.split_whitespace().next().and_then(parse_stamp),
                Evidence::from_json_line(&line[i + " decision ".len()..]),
            ) else {
                continue;
            };
            if evidence.role == Role::Standby {
                out.push(Logged {
                    host: h,
                    wall,
                    evidence,
                });
            }
        }
    }
    out
}

/// One failover of the run.
#[derive(Debug, Clone)]
pub struct FailoverRow {
    pub epoch: u64,
    pub at_s: f64,
    pub from: usize,
    pub to: usize,
    /// The step that caused it, and its main fault.
    pub step: Option<usize>,
    pub cause: String,
    /// The cause's kind (fault without parameters).
    pub cause_kind: String,
    pub rule: String,
    /// From the step's start to the new copy serving.
    pub serve_ms: Option<u64>,
    /// The client's longest time without an acknowledged reply around it.
    pub unavailable_ms: u64,
    /// Whether a step's fault could move the active role (the step under way, or one whose
    /// takeover was still pending), and no other failover came of it.
    pub expected: bool,
    /// Otherwise: the old primary's daemon was stalled (running, nothing injected, but its
    /// status answers took this long, ms) in the 3 s before: the witnesses saw it silent.
    pub stall_ms: Option<u64>,
}

/// One refused failover: consecutive refusals of one standby.
#[derive(Debug, Clone)]
pub struct RefusalRow {
    pub at_s: f64,
    pub host: usize,
    pub step: Option<usize>,
    /// Rules and actions seen.
    pub what: String,
    pub records: usize,
    pub evidence: String,
    /// Why no takeover was right then; `None`: nothing in the state justifies it.
    pub justification: Option<String>,
}

/// The whole run.
#[derive(Debug, Clone)]
pub struct Report {
    pub seed: u64,
    pub policy: String,
    pub planned: Duration,
    pub ran: Duration,
    pub steps: Vec<String>,
    pub counts: BTreeMap<&'static str, u64>,
    pub failovers: Vec<FailoverRow>,
    pub refusals: Vec<RefusalRow>,
    pub missed: Vec<(f64, Missed)>,
    pub acked: u64,
    pub lost: u64,
    pub doubled: u64,
    pub longest_gap: Duration,
    pub split: Duration,
    pub splits: Vec<(f64, Split)>,
    pub stuck: Vec<(f64, Stuck)>,
    pub anomalies: Vec<String>,
    pub final_whole: bool,
    pub error: Option<String>,
    pub captured: (u64, usize),
    pub replayed: u64,
    pub dir: std::path::PathBuf,
}

/// Everything the analysis needs.
pub struct Inputs<'a> {
    pub seed: u64,
    pub policy: String,
    pub planned: Duration,
    pub start: Instant,
    pub start_wall: u64,
    pub ops: &'a [Op],
    pub watch: &'a Watch,
    pub steps: &'a [StepRecord],
    pub history: &'a [(u64, Instant, World)],
    pub missed: &'a [Missed],
    pub operator_refusals: &'a [OperatorRefusal],
    pub stuck: &'a [Stuck],
    pub anomalies: &'a [String],
    pub counts: &'a BTreeMap<&'static str, u64>,
    pub decisions: &'a [Logged],
    pub final_whole: bool,
    pub error: Option<String>,
    pub captured: (u64, usize),
    pub replayed: u64,
    pub dir: &'a Path,
}

fn secs(start: Instant, t: Instant) -> f64 {
    t.saturating_duration_since(start).as_secs_f64()
}

/// The client's longest time without an acknowledged reply from the last acknowledged reply
/// before `from` to the first one after `until`.
pub fn unavailability(acks: &[Instant], from: Instant, until: Instant) -> Duration {
    let i0 = acks.iter().rposition(|t| *t <= from).unwrap_or(0);
    let Some(i1) = acks.iter().position(|t| *t >= until) else {
        return acks.last().map_or(Duration::ZERO, |t| {
            Instant::now().saturating_duration_since(*t)
        });
    };
    (i0 + 1..=i1)
        .filter_map(|i| Some(acks.get(i)?.saturating_duration_since(*acks.get(i - 1)?)))
        .max()
        .unwrap_or(Duration::ZERO)
}

impl Report {
    /// Failovers that neither a fault in force nor a stall of the primary explains (a false
    /// failover).
    pub fn unexpected(&self) -> usize {
        self.failovers
            .iter()
            .filter(|f| !f.expected && f.stall_ms.is_none())
            .count()
    }

    /// Failovers after a stall of the primary's daemon, with nothing injected.
    pub fn after_stall(&self) -> usize {
        self.failovers
            .iter()
            .filter(|f| !f.expected && f.stall_ms.is_some())
            .count()
    }

    /// Refusals nothing in the state justifies.
    pub fn unjustified(&self) -> usize {
        self.refusals
            .iter()
            .filter(|r| r.justification.is_none())
            .count()
    }

    /// What makes the run fail (empty: it passed).
    pub fn failures(&self) -> Vec<String> {
        let mut f = vec![];
        if let Some(e) = &self.error {
            f.push(format!("the run stopped: {e}"));
        }
        if self.lost > 0 {
            f.push(format!("{} acknowledged write(s) lost", self.lost));
        }
        if self.doubled > 0 {
            f.push(format!(
                "{} acknowledged write(s) applied twice",
                self.doubled
            ));
        }
        if !self.split.is_zero() {
            f.push(format!("split brain for {} ms", self.split.as_millis()));
        }
        if !self.missed.is_empty() {
            f.push(format!("{} missed takeover(s)", self.missed.len()));
        }
        if self.unjustified() > 0 {
            f.push(format!(
                "{} refused failover(s) not justified by the state",
                self.unjustified()
            ));
        }
        if self.unexpected() > 0 {
            f.push(format!(
                "{} failover(s) during faults that should not move the active role",
                self.unexpected()
            ));
        }
        if !self.stuck.is_empty() {
            f.push(format!(
                "{} time(s) the cluster was not whole within 60 s of healing",
                self.stuck.len()
            ));
        }
        for a in &self.anomalies {
            f.push(a.clone());
        }
        if !self.final_whole && self.error.is_none() {
            f.push("the cluster was not whole at the end".into());
        }
        if self.acked == 0 {
            f.push("no acknowledged write at all".into());
        }
        f
    }

    pub fn passed(&self) -> bool {
        self.failures().is_empty()
    }

    /// Percentiles of the per-failover unavailability: (p50, p90, max) in ms.
    pub fn unavailability_summary(&self) -> (u64, u64, u64) {
        percentiles(self.failovers.iter().map(|f| f.unavailable_ms).collect())
    }
}

/// (p50, p90, max) of some values (nearest rank; zeros when there are none).
fn percentiles(mut v: Vec<u64>) -> (u64, u64, u64) {
    v.sort_unstable();
    let q = |p: f64| {
        v.get(((v.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    (q(0.5), q(0.9), v.last().copied().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_stamps_read_as_unix_milliseconds() {
        assert_eq!(parse_stamp("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(parse_stamp("1970-01-02T00:00:01.5Z"), Some(86_401_500));
        // date -u -d 2026-12-06T23:10:00Z +%s = 1796598600
        assert_eq!(
            parse_stamp("2026-12-06T23:10:00.123Z"),
            Some(1_796_598_600_123)
        );
        assert_eq!(parse_stamp("2024-02-29T12:00:00Z"), Some(1_709_208_000_000));
        assert_eq!(parse_stamp("garbage"), None);
    }

    #[test]
    fn unavailability_is_the_longest_gap_around_a_failover() {
        let t = Instant::now();
        let ms = |m| t + Duration::from_millis(m);
        let acks = [ms(0), ms(100), ms(200), ms(900), ms(950), ms(2000)];
        // Fault at 250, new copy serving at 850: gap 200 -> 900.
        assert_eq!(
            unavailability(&acks, ms(250), ms(850)),
            Duration::from_millis(700)
        );
        // Fault at 150: the gap from 100 counts from the last reply before it.
        assert_eq!(
            unavailability(&acks, ms(150), ms(920)),
            Duration::from_millis(700)
        );
    }
}
