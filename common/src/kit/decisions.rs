//! Where a daemon's decisions go (DESIGN.md rule 7): every decision's evidence is one JSON line
//! in the log, in the decision log with the inputs that led to it, and the latest one in
//! `status`. One for the three daemons.

use crate::decision::evidence::{ActionKind, Rule};
use crate::decision::record::AnyInput;
use crate::decision::{Evidence, Nanos};
use crate::recorder::Recorder;

/// A daemon's decision log and its latest decision.
pub struct Decisions {
    /// The decision log (inputs and evidence).
    pub recorder: Recorder,
    /// The latest decision's evidence, as one JSON line (for status).
    pub last: Option<String>,
    /// Decisions so far.
    pub count: u64,
    /// Decisions so far by rule and action (`Rule::ALL` by `ActionKind::ALL`), for metrics.
    by: Vec<u64>,
}

impl Decisions {
    /// Decisions recorded by `recorder`.
    pub fn new(recorder: Recorder) -> Decisions {
        Decisions {
            recorder,
            last: None,
            count: 0,
            by: vec![0; Rule::ALL.len() * ActionKind::ALL.len()],
        }
    }

    /// Decisions so far by rule and action, those that happened at least once.
    pub fn by_rule_and_action(&self) -> impl Iterator<Item = (Rule, ActionKind, u64)> + '_ {
        Rule::ALL.iter().enumerate().flat_map(move |(r, rule)| {
            ActionKind::ALL
                .iter()
                .enumerate()
                .map(move |(a, action)| (*rule, *action, self.by[r * ActionKind::ALL.len() + a]))
                .filter(|(_, _, n)| *n > 0)
        })
    }

    /// Open the decision log at `path` (see [`Recorder::open`]); its error names the path.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        path: &std::path::Path,
        rotation: crate::recorder::Rotation,
        now: Nanos,
        role: crate::decision::Role,
        epoch: crate::decision::Epoch,
        cfg: &crate::decision::Config,
        start: crate::decision::record::Start,
    ) -> std::io::Result<Decisions> {
        Recorder::open(path, rotation, now, role, epoch, cfg, start)
            .map(Decisions::new)
            .map_err(|e| {
                std::io::Error::new(e.kind(), format!("decision log {}: {e}", path.display()))
            })
    }

    /// Log a decision at `level` with its evidence, record it, keep it for status; the JSON
    /// line is returned for callers that keep it too (an activation's evidence, say).
    pub fn evidence(&mut self, level: log::Level, e: &Evidence) -> String {
        let line = e.to_json_line();
        log::log!(level, "decision {line}");
        self.recorder.evidence(e);
        self.last = Some(line.clone());
        self.count += 1;
        let r = Rule::ALL.iter().position(|x| *x == e.rule);
        let a = ActionKind::ALL.iter().position(|x| *x == e.action);
        if let (Some(r), Some(a)) = (r, a) {
            if let Some(n) = self.by.get_mut(r * ActionKind::ALL.len() + a) {
                *n += 1;
            }
        }
        line
    }

    /// Record an input of a core (ticks that changed nothing are left out by the caller).
    pub fn input(&mut self, now: Nanos, input: AnyInput) {
        self.recorder.input(now, input);
    }

    /// The latest decision for status (`none` before the first).
    pub fn last_or_none(&self) -> String {
        self.last.clone().unwrap_or_else(|| "none".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::{Epoch, Policy, Role};

    #[test]
    fn decisions_are_counted_by_rule_and_action_and_exported() {
        let mut d = Decisions::new(Recorder::off());
        let (r1, r2) = (Rule::ALL[0], Rule::ALL[1]);
        let (a1, a2) = (ActionKind::ALL[0], ActionKind::ALL[1]);
        for (r, a) in [(r1, a1), (r1, a1), (r2, a2)] {
            let e = Evidence::new(
                Nanos(1),
                Role::Standby,
                Policy::ClientOriented,
                r,
                a,
                Epoch(1),
            );
            d.evidence(log::Level::Info, &e);
        }
        assert_eq!(d.count, 3);
        let got: Vec<_> = d.by_rule_and_action().collect();
        assert_eq!(got, [(r1, a1, 2), (r2, a2, 1)]);
        let mut x = crate::kit::metrics::Exposition::new();
        crate::kit::metrics::decisions(&mut x, "hsb_standby_decisions_total", &d);
        let text = x.finish();
        assert!(
            text.contains(&format!(
                "\nhsb_standby_decisions_total{{rule=\"{}\",action=\"{}\"}} 2\n",
                r1.name(),
                a1.name()
            )),
            "{text}"
        );
        let mut x = crate::kit::metrics::Exposition::new();
        let counts = vec![1u64; crate::frame::FrameError::COUNTERS.len()];
        crate::kit::metrics::frame_errors(&mut x, "hsb_frame_errors_total", "errors", &counts);
        let text = x.finish();
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("hsb_frame_errors_total{kind="))
                .count(),
            counts.len()
        );
    }
}
