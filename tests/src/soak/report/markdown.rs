//! The report as markdown (`target/soak/report.md`).

use std::collections::BTreeMap;

use crate::soak::HOSTS;

use super::{percentiles, FailoverRow, Report};

impl Report {
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
