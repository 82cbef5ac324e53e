//! The case-file syntax both kinds of data-driven cases share: the decision cores' ([`super`])
//! and the daemons' nodes' (`hsb_tests::nodecase`). Lines, `#` comments, `case` lines, the
//! header rule, times (`300ms`, `+5ms`), the steps (`>`, `check`, `run`, `every`, an input at a
//! time) and the errors; each kind reads its own header directives, `every` options and inputs
//! through [`CaseKind`].

use core::fmt;
use core::time::Duration;
use std::str::SplitWhitespace;

use hsb_common::decision::{later, parse_duration, Nanos};

/// Longest case file read.
pub const MAX_FILE: usize = 1 << 20;
/// Most steps in one case.
pub const MAX_STEPS: usize = 10_000;

/// A time in a case: absolute, or relative to the current time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSpec {
    /// Since the start of the case.
    Abs(Duration),
    /// After the current time.
    Rel(Duration),
}

impl TimeSpec {
    /// `300ms` (absolute) or `+5ms` (after the current time).
    pub fn parse(s: &str) -> Option<TimeSpec> {
        match s.strip_prefix('+') {
            Some(r) => parse_duration(r).map(TimeSpec::Rel),
            None => parse_duration(s).map(TimeSpec::Abs),
        }
    }

    /// The time it names when the current time is `now`.
    pub fn resolve(self, now: Nanos) -> Nanos {
        match self {
            TimeSpec::Abs(d) => later(Nanos::ZERO, d),
            TimeSpec::Rel(d) => later(now, d),
        }
    }
}

/// One step of a case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// One input (a node case's event).
    Input {
        /// Source line.
        line: usize,
        /// When.
        at: TimeSpec,
        /// Input name.
        name: String,
        /// `key=value` tokens.
        tokens: Vec<String>,
    },
    /// A periodic input.
    Every {
        /// Source line.
        line: usize,
        /// Period.
        period: Duration,
        /// First time (default: now).
        from: Option<TimeSpec>,
        /// Last time (inclusive).
        until: TimeSpec,
        /// Percentage dropped.
        drop_pct: u64,
        /// Seed for drops and jitter.
        seed: u64,
        /// Uniform extra delay bound.
        jitter: Duration,
        /// Input name.
        name: String,
        /// `key=value` tokens.
        tokens: Vec<String>,
    },
    /// Advance time to (and including) this.
    Run {
        /// Source line.
        line: usize,
        /// Until.
        to: TimeSpec,
    },
    /// Expected actions since the previous block (empty: none).
    Expect {
        /// Source line of each expectation.
        items: Vec<(usize, String)>,
        /// Source line of the block.
        line: usize,
    },
    /// A query on the core.
    Check {
        /// Source line.
        line: usize,
        /// What.
        key: String,
        /// Expected value.
        value: String,
    },
}

/// A case file that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for CaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for CaseError {}

/// A case whose core (or node) did not do what the case says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseFailure {
    /// The case.
    pub case: String,
    /// The line that failed.
    pub line: usize,
    /// Expected versus got.
    pub message: String,
}

impl fmt::Display for CaseFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "case {:?}, line {}: {}",
            self.case, self.line, self.message
        )
    }
}

impl std::error::Error for CaseFailure {}

/// An error at line `line`.
pub fn err(line: usize, message: impl Into<String>) -> CaseError {
    CaseError {
        line,
        message: message.into(),
    }
}

/// A kind of case: its defaults, its header directives and the lines only it reads.
pub trait CaseKind: Sized {
    /// The header directives: allowed before the first step only.
    const HEADER: &'static [&'static str];

    /// A case named `name` whose `case` line is `line`, with this kind's defaults.
    fn new(name: String, line: usize) -> Self;

    /// Its steps so far.
    fn steps(&mut self) -> &mut Vec<Step>;

    /// A line that is not `case`, `check` or `run` (a header directive, `>`, `every`, an
    /// input at a time); `first` is its first word.
    fn line(&mut self, n: usize, first: &str, line: &str) -> Result<(), CaseError>;
}

/// Parse every case of a file.
pub fn parse_file<C: CaseKind>(text: &str) -> Result<Vec<C>, CaseError> {
    if text.len() > MAX_FILE {
        return Err(err(0, "case file larger than 1 MiB"));
    }
    let mut cases: Vec<C> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix("case ") {
            cases.push(C::new(name.trim().to_string(), n));
            continue;
        }
        let Some(case) = cases.last_mut() else {
            return Err(err(n, "expected `case <name>` first"));
        };
        if case.steps().len() >= MAX_STEPS {
            return Err(err(n, "more than 10000 steps in one case"));
        }
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or_default();
        if C::HEADER.contains(&first) && !case.steps().is_empty() {
            return Err(err(n, format!("`{first}` must come before the first step")));
        }
        match first {
            "check" => {
                let (k, v) = words
                    .next()
                    .and_then(|t| t.split_once('='))
                    .ok_or_else(|| err(n, "check: expected key=value"))?;
                case.steps().push(Step::Check {
                    line: n,
                    key: k.to_string(),
                    value: v.to_string(),
                });
            }
            "run" => {
                let to = words
                    .next()
                    .and_then(TimeSpec::parse)
                    .ok_or_else(|| err(n, "run: expected a time"))?;
                case.steps().push(Step::Run { line: n, to });
            }
            _ => case.line(n, first, line)?,
        }
    }
    Ok(cases)
}

/// A `> ...` line: one more expectation in the current block, or a new block (`> none` is an
/// empty one). `what` names what is expected (`an action`, `an effect`).
pub fn push_expect(
    steps: &mut Vec<Step>,
    n: usize,
    line: &str,
    what: &str,
) -> Result<(), CaseError> {
    let rest = line[1..].trim().to_string();
    if rest.is_empty() {
        return Err(err(n, format!("expected {what} (or `none`) after `>`")));
    }
    let none = rest == "none";
    match steps.last_mut() {
        Some(Step::Expect { items, .. }) if !none && !items.is_empty() => items.push((n, rest)),
        _ => steps.push(Step::Expect {
            items: if none { vec![] } else { vec![(n, rest)] },
            line: n,
        }),
    }
    Ok(())
}

/// An `every <period> <options>: <input>` line: its period, the words of its options and its
/// input. `what` names the input (`input`, `event`).
pub fn every_parts<'a>(
    n: usize,
    line: &'a str,
    what: &str,
) -> Result<(Duration, SplitWhitespace<'a>, &'a str), CaseError> {
    let (head, input) = line
        .split_once(':')
        .ok_or_else(|| err(n, format!("every: expected `every <period> ...: <{what}>`")))?;
    let mut h = head.split_whitespace();
    h.next();
    let period = h
        .next()
        .and_then(parse_duration)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| err(n, "every: expected a period"))?;
    Ok((period, h, input))
}

/// The time that starts an input's line (`305ms replica ckpt=12`).
pub fn input_time(n: usize, first: &str) -> Result<TimeSpec, CaseError> {
    TimeSpec::parse(first)
        .ok_or_else(|| err(n, format!("expected a directive or a time, got {first:?}")))
}
