//! Application probes: the witness asks the protected application what its clients ask it (a TCP
//! connect, an HTTP request with an expected status, a request line with an expected reply
//! prefix, or a command with a timeout) and classifies what it sees the way a client would: ok,
//! refused, timeout, application error.
//!
//! The engine does no I/O of its own accord and reads no clock: the daemon's one mio loop drives
//! it with readiness events and ticks, passing the time in. Each probe has at most one run in
//! flight, its own interval and timeout, and its own mio token in the range given at
//! construction. Commands are child processes whose output pipe the loop watches; a command that
//! overruns its timeout is killed and reaped without blocking the loop.

mod run;
mod spec;

use std::collections::VecDeque;
use std::fmt;
use std::ops::Range;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::{Registry, Token};

use run::Probe;
pub use run::MAX_REPLY;
pub use spec::{
    ProbeKind, ProbeSpec, ProbeSpecError, DEFAULT_INTERVAL, DEFAULT_TIMEOUT, MAX_PERIOD,
};

/// Most probes one witness runs.
pub const MAX_PROBES: usize = 16;
/// Longest result detail, in bytes.
pub const MAX_DETAIL: usize = 120;
/// Most results waiting for [`ProbeSet::take_results`]; older ones are dropped (and counted).
const MAX_PENDING: usize = 4 * MAX_PROBES;

/// How a probe run ended, as a client would see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// The application answered as expected.
    Ok,
    /// The connection was refused (or the address is unreachable).
    Refused,
    /// No complete answer within the timeout (a command was killed).
    Timeout,
    /// The application answered wrongly: another status, a bad reply, a failed command.
    AppError,
}

impl Class {
    /// Every class, in the order of [`ProbeStats::by_class`].
    pub const ALL: [Class; 4] = [Class::Ok, Class::Refused, Class::Timeout, Class::AppError];

    fn index(self) -> usize {
        match self {
            Class::Ok => 0,
            Class::Refused => 1,
            Class::Timeout => 2,
            Class::AppError => 3,
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Class::Ok => "ok",
            Class::Refused => "refused",
            Class::Timeout => "timeout",
            Class::AppError => "app-error",
        })
    }
}

/// One finished probe run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    /// Index of the probe in the specs given to [`ProbeSet::new`].
    pub probe: usize,
    pub class: Class,
    /// From the start of the run to its end (zero if it could not start).
    pub latency: Duration,
    /// What was seen: a status line, a reply, a command's first output line, an error; at most
    /// [`MAX_DETAIL`] bytes, control characters replaced.
    pub detail: String,
    /// When the run ended.
    pub at: Instant,
}

/// One probe's counts, for the status command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeStats {
    /// Finished runs.
    pub runs: u64,
    /// Finished runs by class, in the order of [`Class::ALL`].
    pub by_class: [u64; 4],
    /// How many results in a row had the class of the last one.
    pub streak: u32,
    pub last: Option<ProbeResult>,
}

impl ProbeStats {
    fn record(&mut self, r: &ProbeResult) {
        self.runs += 1;
        self.by_class[r.class.index()] += 1;
        self.streak = match &self.last {
            Some(last) if last.class == r.class => self.streak.saturating_add(1),
            _ => 1,
        };
        self.last = Some(r.clone());
    }
}

/// Why a set of probes was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeSetError {
    /// More than [`MAX_PROBES`] probes.
    TooMany(usize),
    /// The token range would not fit in a `usize`.
    Tokens(usize),
    /// One spec is invalid.
    Spec { probe: usize, error: ProbeSpecError },
}

impl fmt::Display for ProbeSetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeSetError::TooMany(n) => {
                write!(f, "{n} probes configured; expected at most {MAX_PROBES}")
            }
            ProbeSetError::Tokens(base) => {
                write!(
                    f,
                    "token base {base} leaves no room for {MAX_PROBES} tokens"
                )
            }
            ProbeSetError::Spec { probe, error } => write!(f, "probe {probe}: {error}"),
        }
    }
}

impl std::error::Error for ProbeSetError {}

/// The witness's probes, driven by the daemon's mio loop.
///
/// Each loop iteration: poll with at most [`ProbeSet::poll_timeout`]; hand every event whose
/// token [`ProbeSet::owns`] to [`ProbeSet::on_event`]; call [`ProbeSet::on_tick`]; then drain
/// [`ProbeSet::take_results`].
pub struct ProbeSet {
    probes: Vec<Probe>,
    token_base: usize,
    results: VecDeque<ProbeResult>,
    dropped: u64,
}

impl ProbeSet {
    /// Probes `specs`, probe `i` using token `token_base + i`. Nothing runs before the first
    /// [`ProbeSet::on_tick`], which starts every probe.
    pub fn new(specs: Vec<ProbeSpec>, token_base: usize) -> Result<ProbeSet, ProbeSetError> {
        if specs.len() > MAX_PROBES {
            return Err(ProbeSetError::TooMany(specs.len()));
        }
        if token_base.checked_add(MAX_PROBES).is_none() {
            return Err(ProbeSetError::Tokens(token_base));
        }
        let probes = specs
            .into_iter()
            .enumerate()
            .map(|(i, spec)| {
                spec.validate()
                    .map_err(|error| ProbeSetError::Spec { probe: i, error })?;
                Ok(Probe::new(spec, i, Token(token_base + i)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ProbeSet {
            probes,
            token_base,
            results: VecDeque::with_capacity(MAX_PENDING),
            dropped: 0,
        })
    }

    /// Number of probes.
    pub fn len(&self) -> usize {
        self.probes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.probes.is_empty()
    }

    /// The tokens this set registers sources with.
    pub fn tokens(&self) -> Range<usize> {
        self.token_base..self.token_base + self.probes.len()
    }

    /// Whether an event's token belongs to this set.
    pub fn owns(&self, token: Token) -> bool {
        self.tokens().contains(&token.0)
    }

    /// When the set next needs [`ProbeSet::on_tick`]: a start, a timeout, a check on a
    /// command. `None` when there are no probes.
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        self.probes.iter().map(|p| p.next_deadline(now)).min()
    }

    /// How long the loop may sleep before the next [`ProbeSet::on_tick`] is due.
    pub fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        self.next_deadline(now)
            .map(|d| d.saturating_duration_since(now))
    }

    /// Handle a readiness event; events for tokens outside [`ProbeSet::tokens`] are ignored.
    pub fn on_event(&mut self, registry: &Registry, event: &Event, now: Instant) {
        let Some(i) = event.token().0.checked_sub(self.token_base) else {
            return;
        };
        if let Some(r) = self
            .probes
            .get_mut(i)
            .and_then(|p| p.on_ready(registry, now))
        {
            self.push(r);
        }
    }

    /// Start due probes, expire overdue runs (killing commands), check on commands, reap.
    pub fn on_tick(&mut self, registry: &Registry, now: Instant) {
        for i in 0..self.probes.len() {
            if let Some(r) = self.probes[i].tick(registry, now) {
                self.push(r);
            }
        }
    }

    /// Results finished since the last call, oldest first.
    pub fn take_results(&mut self) -> impl Iterator<Item = ProbeResult> + '_ {
        self.results.drain(..)
    }

    /// A probe's spec.
    pub fn spec(&self, probe: usize) -> Option<&ProbeSpec> {
        self.probes.get(probe).map(|p| &p.spec)
    }

    /// A probe's counts and last result.
    pub fn stats(&self, probe: usize) -> Option<&ProbeStats> {
        self.probes.get(probe).map(|p| &p.stats)
    }

    /// Runs in flight.
    pub fn in_flight(&self) -> usize {
        self.probes.iter().filter(|p| p.in_flight()).count()
    }

    /// Killed commands not reaped yet (normally none for more than a few milliseconds).
    pub fn unreaped(&self) -> usize {
        self.probes.iter().filter(|p| p.unreaped()).count()
    }

    /// One line per probe for the status command, and one for dropped results if any.
    pub fn status_lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .probes
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let s = &p.stats;
                let last = match &s.last {
                    Some(r) => format!(
                        "{} x{} (last in {:.1} ms: {})",
                        r.class,
                        s.streak,
                        r.latency.as_secs_f64() * 1e3,
                        r.detail
                    ),
                    None => "no result yet".into(),
                };
                let counts = Class::ALL
                    .iter()
                    .map(|c| format!("{} {c}", s.by_class[c.index()]))
                    .collect::<Vec<_>>()
                    .join(", ");
                let mut line = format!(
                    "probe {i} `{}` every {:?}, timeout {:?}: {last}; {} runs: {counts}",
                    p.spec.kind, p.spec.interval, p.spec.timeout, s.runs
                );
                if p.in_flight() {
                    line.push_str("; running");
                }
                if p.unreaped() {
                    line.push_str("; a killed command is not reaped yet");
                }
                line
            })
            .collect();
        if self.dropped > 0 {
            lines.push(format!("probe results dropped untaken: {}", self.dropped));
        }
        lines
    }

    fn push(&mut self, r: ProbeResult) {
        log::debug!(
            "probe {} {}: {} in {:?}: {}",
            r.probe,
            self.probes
                .get(r.probe)
                .map_or(String::new(), |p| p.spec.kind.to_string()),
            r.class,
            r.latency,
            r.detail
        );
        if self.results.len() >= MAX_PENDING {
            self.results.pop_front();
            self.dropped += 1;
        }
        self.results.push_back(r);
    }
}

/// Cut a string to at most `max` bytes on a character boundary.
fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let cut = (0..=max)
            .rev()
            .find(|&i| s.is_char_boundary(i))
            .unwrap_or(0);
        s.truncate(cut);
    }
}

/// A result detail: control characters replaced, at most [`MAX_DETAIL`] bytes.
fn bounded(detail: &str) -> String {
    let mut s: String = detail
        .chars()
        .take(MAX_DETAIL)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    truncate(&mut s, MAX_DETAIL);
    s
}

#[cfg(test)]
#[path = "probe_tests.rs"]
mod tests;
