//! What a soak run showed, checked and written as markdown: failovers done (each with its
//! cause, rule, time to serve and the client's unavailability), failovers refused (each with
//! the state that justifies it, or marked unjustified), missed takeovers, the client history's
//! acknowledged writes lost or doubled, the split-brain time, and anything else that went wrong.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use hsb_common::decision::evidence::{ActionKind, Evidence};
use hsb_common::decision::{Role, Rule};

use crate::faults::{check_history, Op};
use crate::soak::monitor::{Split, Watch};
use crate::soak::nemesis::{
    Missed, OperatorRefusal, Proc, StepRecord, Stuck, World, SWITCHOVER_BOUND, WITNESS_SETTLE,
};
use crate::soak::schedule::Fault;
use crate::soak::HOSTS;

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

/// Whether a standby's decision refused a takeover: it could not decide, refused a stale
/// replica, or was paused (maintenance) where its rule would have activated.
fn refused(e: &Evidence) -> bool {
    match e.action {
        ActionKind::CannotDecide | ActionKind::RefuseStale => true,
        ActionKind::Paused => matches!(
            e.rule,
            Rule::QuorumNoAnswer | Rule::Switchover | Rule::HeartbeatLoss | Rule::PingNodeAnswers
        ),
        _ => false,
    }
}

/// The world in force at wall time `wall`.
fn world_at(history: &[(u64, Instant, World)], wall: u64) -> Option<&World> {
    history
        .iter()
        .rev()
        .find(|(w, _, _)| *w <= wall)
        .or(history.first())
        .map(|(_, _, w)| w)
}

/// The world in force at `t`.
fn world_at_instant(history: &[(u64, Instant, World)], t: Instant) -> Option<&World> {
    history
        .iter()
        .rev()
        .find(|(_, at, _)| *at <= t)
        .or(history.first())
        .map(|(_, _, w)| w)
}

/// Why no takeover was right for standby host `r` at `at` (`None`: nothing justifies it).
pub fn justify(
    world: &World,
    at: Instant,
    watch: &Watch,
    r: usize,
    ev: &Evidence,
) -> Option<String> {
    if world.maintenance {
        return Some("maintenance mode was on".into());
    }
    if ev.rule == Rule::NoReplica || ev.checkpoint.is_none() {
        return Some("this standby had no complete replica yet (synchronising)".into());
    }
    if let Some(after) = ev
        .witnesses
        .iter()
        .filter_map(|w| w.unprotected_after)
        .min()
    {
        return Some(format!(
            "a witness marked the replica (checkpoint {}) stale: the primary served under its leases after checkpoint {after}, so the replica may lack output it released (rule 5)",
            ev.checkpoint.unwrap_or(0)
        ));
    }
    let (p, e) = watch
        .epochs
        .iter()
        .rev()
        .find(|(_, s)| s.at <= at)
        .map_or((0, 1), |(e, s)| (s.host, *e));
    let faults: Vec<&str> = world.active.iter().map(|(_, n)| n.as_str()).collect();
    let in_force = if faults.is_empty() {
        String::new()
    } else {
        format!(" ({})", faults.join(", "))
    };
    if p == r {
        return Some(format!(
            "this standby runs on the host of epoch {e}'s primary, restarted without that copy: its replica is not the synchronised one{in_force}"
        ));
    }
    let Some(g) = world.gone.as_ref().filter(|g| g.host == p) else {
        let paused = world.hosts[p].proc == Proc::Stopped;
        return Some(format!(
            "the primary (host {}, epoch {e}) was alive{}{in_force}",
            HOSTS[p],
            if paused { " but paused (SIGSTOP)" } else { "" }
        ));
    };
    let since = at.saturating_duration_since(g.at);
    if ev.rule == Rule::OperatorSwitchover && ev.action == ActionKind::CannotDecide {
        return Some(format!(
            "the primary went during the operator's switchover before it confirmed its fence: the switchover gave up after a lease ({} ms after the primary went) and the takeover is a failover's{in_force}",
            since.as_millis()
        ));
    }
    if since < Duration::from_secs(2) {
        return Some(format!(
            "detection under way: {} ms after the primary went{in_force}",
            since.as_millis()
        ));
    }
    if let Some(t) = world.hosts[r].trouble(at, Duration::ZERO) {
        return Some(format!("the deciding standby's host: {t}{in_force}"));
    }
    if !g.whole_before {
        return Some(format!(
            "the replica was not known synchronised when the primary went (the pair was not whole){in_force}"
        ));
    }
    let troubled: Vec<String> = world
        .witnesses
        .iter()
        .enumerate()
        .filter_map(|(i, w)| {
            w.trouble(at, WITNESS_SETTLE)
                .map(|t| format!("witness {} {t}", i + 1))
        })
        .collect();
    if troubled.len() >= 2 {
        return Some(format!("no witness quorum: {}", troubled.join(", ")));
    }
    if g.cut_off && since < SWITCHOVER_BOUND {
        return Some(format!(
            "rule 6 holds before a switchover: {} ms after the primary was cut off from its clients",
            since.as_millis()
        ));
    }
    None
}

impl Report {
    /// Analyse a finished run.
    pub fn new(i: Inputs<'_>) -> Report {
        let acks: Vec<Instant> = i
            .ops
            .iter()
            .filter(|o| o.value.is_some())
            .map(|o| o.end)
            .collect();
        let (acked, lost, doubled, longest_gap) = check_history(i.ops);
        let first_epoch = i.watch.epochs.keys().next().copied().unwrap_or(1);
        let mut failovers = vec![];
        let mut prev_host = i.watch.epochs.values().next().map_or(0, |s| s.host);
        let mut used: Vec<usize> = vec![];
        for (e, s) in &i.watch.epochs {
            if *e == first_epoch {
                continue;
            }
            // The step that caused it: the one under way, or, when that one cannot move the
            // role and started without waiting for a whole cluster, an earlier step whose
            // takeover was still pending; one failover per step.
            let cause = i
                .steps
                .iter()
                .rposition(|r| r.at <= s.at)
                .and_then(|mut k| {
                    while !i.steps[k].step.main.may_move_role() && !i.steps[k].from_whole && k > 0 {
                        k -= 1;
                    }
                    let r = &i.steps[k];
                    let fresh = !used.contains(&r.index);
                    (r.step.main.may_move_role() && fresh)
                        .then_some(r)
                        .or_else(|| i.steps.iter().rev().find(|r| r.at <= s.at))
                        .map(|r| (r, r.step.main.may_move_role() && fresh))
                });
            if let Some((r, true)) = cause {
                used.push(r.index);
            }
            let (cause, expected) = match cause {
                Some((r, e)) => (Some(r), e),
                None => (None, false),
            };
            let rule = i
                .decisions
                .iter()
                .find(|d| {
                    d.host == s.host
                        && d.evidence.new_epoch.map(|x| x.0) == Some(*e)
                        && matches!(
                            d.evidence.action,
                            ActionKind::Activate | ActionKind::Switchover
                        )
                })
                .map_or("?".to_string(), |d| d.evidence.rule.name().to_string());
            let from = cause.map_or(s.at, |c| c.at);
            let old = prev_host;
            let stall_ms = (!expected)
                .then(|| {
                    i.watch
                        .slow
                        .iter()
                        .filter(|(h, t, _)| {
                            *h == old
                                && *t <= s.at
                                && s.at.duration_since(*t) < Duration::from_secs(3)
                                && world_at_instant(i.history, *t)
                                    .is_some_and(|w| w.hosts[old].proc == Proc::Running)
                        })
                        .map(|(_, _, d)| d.as_millis() as u64)
                        .max()
                })
                .flatten();
            failovers.push(FailoverRow {
                epoch: *e,
                at_s: secs(i.start, s.at),
                from: prev_host,
                to: s.host,
                step: cause.map(|c| c.index),
                cause: cause.map_or("-".into(), |c| c.step.main.name()),
                cause_kind: cause.map_or("-".into(), |c| c.step.main.kind().to_string()),
                rule,
                serve_ms: cause.map(|c| s.at.duration_since(c.at).as_millis() as u64),
                unavailable_ms: unavailability(&acks, from, s.at).as_millis() as u64,
                expected,
                stall_ms,
            });
            prev_host = s.host;
        }
        let to_instant = |wall: u64| {
            if wall >= i.start_wall {
                i.start + Duration::from_millis(wall - i.start_wall)
            } else {
                i.start
            }
        };
        let step_at = |t: Instant| i.steps.iter().rev().find(|r| r.at <= t).map(|r| r.index);
        // Refusals: a standby's cannot-decide, refuse-stale and paused decisions, grouped
        // while they follow each other within 2 s.
        let mut refusals: Vec<RefusalRow> = vec![];
        let mut last: [Option<(u64, usize)>; 2] = [None, None];
        for d in i.decisions.iter().filter(|d| refused(&d.evidence)) {
            let what = format!("{} -> {}", d.evidence.rule, d.evidence.action);
            if let Some((w, idx)) = last[d.host] {
                if d.wall.saturating_sub(w) <= 2000 {
                    let row = &mut refusals[idx];
                    row.records += 1;
                    if !row.what.contains(&what) {
                        row.what.push_str(&format!(", {what}"));
                    }
                    last[d.host] = Some((d.wall, idx));
                    continue;
                }
            }
            let at = to_instant(d.wall);
            let justification = world_at(i.history, d.wall)
                .and_then(|w| justify(w, at, i.watch, d.host, &d.evidence));
            refusals.push(RefusalRow {
                at_s: secs(i.start, at),
                host: d.host,
                step: step_at(at),
                what,
                records: 1,
                evidence: d.evidence.summary(),
                justification,
            });
            last[d.host] = Some((d.wall, refusals.len() - 1));
        }
        for r in i.operator_refusals {
            let leased = i
                .watch
                .last_unprotected
                .filter(|t| *t <= r.at && r.at.duration_since(*t) < LEASES_LAST)
                .map(|t| r.at.duration_since(t));
            let killed_during = i
                .steps
                .iter()
                .any(|s| s.index == r.step && matches!(s.step.main, Fault::SwitchoverKill { .. }));
            let troubled: Vec<String> = world_at(i.history, r.wall)
                .map(|w| {
                    w.witnesses
                        .iter()
                        .enumerate()
                        .filter_map(|(k, x)| {
                            x.trouble(r.at, WITNESS_SETTLE)
                                .map(|t| format!("witness {} {t}", k + 1))
                        })
                        .collect()
                })
                .unwrap_or_default();
            refusals.push(RefusalRow {
                at_s: secs(i.start, r.at),
                host: i
                    .steps
                    .iter()
                    .find(|s| s.index == r.step)
                    .map_or(0, |s| 1 - s.primary),
                step: Some(r.step),
                what: format!("operator `{}`", r.command),
                records: 1,
                evidence: r.answer.lines().next().unwrap_or("").to_string(),
                justification: match leased {
                    _ if killed_during => Some(
                        "the primary was killed during the switchover (the takeover is then a failover's)"
                            .into(),
                    ),
                    Some(ago) if r.answer.contains("lease-active") => Some(format!(
                        "witnesses keep the leases they granted while the primary served unprotected, until {} ms before",
                        ago.as_millis()
                    )),
                    _ if r.answer.matches("lease-active").count() >= 2 => Some(format!(
                        "{} witnesses still held leases of the primary (rule 3), which asks for them again whenever its acks run late (ack-lease) or it serves unprotected",
                        r.answer.matches("lease-active").count()
                    )),
                    _ => (troubled.len() >= 2)
                        .then(|| format!("no witness quorum: {}", troubled.join(", "))),
                },
            });
        }
        refusals.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
        Report {
            seed: i.seed,
            policy: i.policy,
            planned: i.planned,
            ran: i.start.elapsed(),
            steps: i
                .steps
                .iter()
                .map(|r| {
                    let mut s = format!(
                        "{:8.1} s  step {:3}: {} (primary host {}, epoch {}{})",
                        secs(i.start, r.at),
                        r.index,
                        r.step.describe(),
                        HOSTS[r.primary],
                        r.epoch,
                        if r.from_whole { "" } else { ", not whole" }
                    );
                    for n in &r.notes {
                        s.push_str(&format!("; {n}"));
                    }
                    s
                })
                .collect(),
            counts: i.counts.clone(),
            failovers,
            refusals,
            missed: i
                .missed
                .iter()
                .map(|m| (secs(i.start, m.at), m.clone()))
                .collect(),
            acked,
            lost,
            doubled,
            longest_gap,
            split: i.watch.split,
            splits: i
                .watch
                .splits
                .iter()
                .map(|s| (secs(i.start, s.at), s.clone()))
                .collect(),
            stuck: i
                .stuck
                .iter()
                .map(|s| (secs(i.start, s.at), s.clone()))
                .collect(),
            anomalies: i.anomalies.to_vec(),
            final_whole: i.final_whole,
            error: i.error,
            captured: i.captured,
            replayed: i.replayed,
            dir: i.dir.to_path_buf(),
        }
    }

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

    /// The report as markdown.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let failures = self.failures();
        let minutes = self.planned.as_secs_f64() / 60.0;
        s.push_str(&format!(
            "# Soak run, seed {}\n\n{} ({minutes} min planned, {:.1} min run, policy {}), {} steps; replay with `HSB_SOAK_SEED={} just soak {minutes}`. Logs: `{}`.\n\n",
            self.seed,
            if failures.is_empty() { "**PASSED**".to_string() } else { format!("**FAILED**: {}", failures.join("; ")) },
            self.ran.as_secs_f64() / 60.0,
            self.policy,
            self.steps.len(),
            self.seed,
            self.dir.display()
        ));
        let by_rule = {
            let mut m: BTreeMap<&str, usize> = BTreeMap::new();
            for f in &self.failovers {
                *m.entry(f.rule.as_str()).or_default() += 1;
            }
            m.iter()
                .map(|(r, n)| format!("{n} {r}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (p50, p90, max) = self.unavailability_summary();
        let rows = [
            (
                "failovers done",
                format!(
                    "{}{}",
                    self.failovers.len(),
                    if by_rule.is_empty() {
                        String::new()
                    } else {
                        format!(" ({by_rule})")
                    }
                ),
            ),
            (
                "failovers refused",
                format!(
                    "{} ({} justified by the state, {} not)",
                    self.refusals.len(),
                    self.refusals.len() - self.unjustified(),
                    self.unjustified()
                ),
            ),
            (
                "missed takeovers (quorum and a synchronised standby, none within the bound)",
                self.missed.len().to_string(),
            ),
            (
                "failovers during faults that should not move the role",
                self.unexpected().to_string(),
            ),
            (
                "failovers after a stall of the primary's daemon (nothing injected; status answers slow)",
                self.after_stall().to_string(),
            ),
            ("acknowledged writes", self.acked.to_string()),
            ("acknowledged writes lost", self.lost.to_string()),
            (
                "acknowledged writes applied twice",
                self.doubled.to_string(),
            ),
            ("split-brain time", format!("{} ms", self.split.as_millis())),
            (
                "unavailability per failover (p50 / p90 / max)",
                format!("{p50} / {p90} / {max} ms"),
            ),
            (
                "longest unavailability of the run",
                format!("{} ms", self.longest_gap.as_millis()),
            ),
            (
                "not whole within 60 s of healing",
                self.stuck.len().to_string(),
            ),
            (
                "whole at the end",
                if self.final_whole { "yes" } else { "**no**" }.into(),
            ),
            (
                "datagrams captured (in flows) / replayed",
                format!(
                    "{} ({}) / {}",
                    self.captured.0, self.captured.1, self.replayed
                ),
            ),
        ];
        s.push_str("| metric | value |\n|---|---|\n");
        for (k, v) in rows {
            s.push_str(&format!("| {k} | {v} |\n"));
        }
        s.push_str("\n## Failovers by cause\n\n| cause | failovers | serving after p50 / max | client unavailable p50 / p90 / max |\n|---|---:|---:|---:|\n");
        let mut by_cause: BTreeMap<String, Vec<&FailoverRow>> = BTreeMap::new();
        for f in &self.failovers {
            let key = match (f.expected, f.stall_ms) {
                (true, _) => f.cause_kind.clone(),
                (false, Some(_)) => "stall of the primary (nothing injected)".into(),
                (false, None) => format!("**unexpected** ({})", f.cause_kind),
            };
            by_cause.entry(key).or_default().push(f);
        }
        for (cause, rows) in &by_cause {
            let serve: Vec<u64> = rows.iter().filter_map(|f| f.serve_ms).collect();
            let unavailable: Vec<u64> = rows.iter().map(|f| f.unavailable_ms).collect();
            let (s50, _, smax) = percentiles(serve);
            let (u50, u90, umax) = percentiles(unavailable);
            s.push_str(&format!(
                "| {cause} | {} | {s50} / {smax} ms | {u50} / {u90} / {umax} ms |\n",
                rows.len()
            ));
        }
        s.push_str("\n## Faults injected\n\n| fault | times |\n|---|---:|\n");
        for (k, n) in &self.counts {
            s.push_str(&format!("| {k} | {n} |\n"));
        }
        s.push_str("\n## Failovers\n\n| # | at | epoch | from → to | cause (step) | rule | serving after | client unavailable | expected |\n|---:|---:|---:|---|---|---|---:|---:|---|\n");
        for (n, f) in self.failovers.iter().enumerate() {
            s.push_str(&format!(
                "| {} | {:.1} s | {} | {} → {} | {} ({}) | {} | {} | {} ms | {} |\n",
                n + 1,
                f.at_s,
                f.epoch,
                HOSTS[f.from].to_uppercase(),
                HOSTS[f.to].to_uppercase(),
                f.cause,
                f.step.map_or("-".into(), |s| s.to_string()),
                f.rule,
                f.serve_ms.map_or("-".into(), |m| format!("{m} ms")),
                f.unavailable_ms,
                match (f.expected, f.stall_ms) {
                    (true, _) => "yes".to_string(),
                    (false, Some(ms)) => format!("stall: the old primary's status took {ms} ms"),
                    (false, None) => "**no**".to_string(),
                }
            ));
        }
        s.push_str("\n## Failovers refused\n\n| at | standby | step | decision (records) | evidence | justified by |\n|---:|---|---:|---|---|---|\n");
        for r in &self.refusals {
            s.push_str(&format!(
                "| {:.1} s | {} | {} | {} ({}) | {} | {} |\n",
                r.at_s,
                HOSTS[r.host].to_uppercase(),
                r.step.map_or("-".into(), |s| s.to_string()),
                r.what,
                r.records,
                r.evidence.replace('|', "/"),
                r.justification
                    .clone()
                    .unwrap_or_else(|| "**nothing: unjustified**".into())
            ));
        }
        if !self.missed.is_empty() || !self.splits.is_empty() || !self.stuck.is_empty() {
            s.push_str("\n## Problems\n\n");
            for (at, m) in &self.missed {
                s.push_str(&format!(
                    "- {at:.1} s, step {}: **missed takeover** after host {}'s primary of epoch {} went: {}\n",
                    m.step,
                    HOSTS[m.host].to_uppercase(),
                    m.epoch,
                    m.state
                ));
            }
            for (at, sp) in &self.splits {
                s.push_str(&format!(
                    "- {at:.1} s: **split brain** for {} ms: {}\n",
                    sp.length.as_millis(),
                    sp.views
                ));
            }
            for (at, st) in &self.stuck {
                s.push_str(&format!(
                    "- {at:.1} s, after step {}: **not whole** within 60 s: {}\n",
                    st.step, st.state
                ));
            }
        }
        s.push_str("\n## Schedule\n\n```\n");
        for l in &self.steps {
            s.push_str(l);
            s.push('\n');
        }
        s.push_str("```\n");
        s
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
