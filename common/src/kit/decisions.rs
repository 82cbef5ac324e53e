//! Where a daemon's decisions go (DESIGN.md rule 7): every decision's evidence is one JSON line
//! in the log, in the decision log with the inputs that led to it, and the latest one in
//! `status`. One for the three daemons.

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
}

impl Decisions {
    /// Decisions recorded by `recorder`.
    pub fn new(recorder: Recorder) -> Decisions {
        Decisions {
            recorder,
            last: None,
            count: 0,
        }
    }

    /// Log a decision at `level` with its evidence, record it, keep it for status; the JSON
    /// line is returned for callers that keep it too (an activation's evidence, say).
    pub fn evidence(&mut self, level: log::Level, e: &Evidence) -> String {
        let line = e.to_json_line();
        log::log!(level, "decision {line}");
        self.recorder.evidence(e);
        self.last = Some(line.clone());
        self.count += 1;
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
