//! The analysis of a finished run: failovers and their causes, refusals and what justifies
//! them, missed takeovers, the client's history.

use std::time::{Duration, Instant};

use hsb_common::decision::evidence::{ActionKind, Evidence};
use hsb_common::decision::Rule;

use crate::faults::check_history;
use crate::soak::monitor::Watch;
use crate::soak::nemesis::{Proc, World, SWITCHOVER_BOUND, WITNESS_SETTLE};
use crate::soak::schedule::Fault;
use crate::soak::HOSTS;

use super::{secs, unavailability, FailoverRow, Inputs, RefusalRow, Report, LEASES_LAST};

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
}
