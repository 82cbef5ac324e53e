//! The Prometheus text exposition format (version 0.0.4), written by hand: a daemon renders
//! its node's counters into an [`Exposition`] when a scrape arrives ([`super::http`] serves it).
//!
//! A family is announced once with its `# HELP` and `# TYPE` lines, and all its samples follow
//! it, one line per label set: that is what the format requires, and [`Exposition`] checks it
//! (a family announced twice, or a sample of a family that is not the current one, is a bug of
//! the caller: refused in debug builds, and in release builds the sample is still written, so a
//! scrape is never lost for it). Histograms come from [`Histogram`] with the fixed `le` bounds of
//! [`LATENCY_BOUNDS`]. The text is bounded by [`MAX_EXPOSITION`]; past it, samples are dropped and
//! counted ([`Exposition::dropped`]) rather than the daemon allocating without bound.

use std::fmt::Write as _;
use std::time::Duration;

use crate::stats::Histogram;

/// The `Content-Type` of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Largest exposition rendered (bytes); samples past it are dropped and counted.
pub const MAX_EXPOSITION: usize = 1 << 20;

/// The `le` bounds (seconds) of every latency histogram: 100 µs to 10 s, about three a decade.
pub const LATENCY_BOUNDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (restarts from 0 with the process).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Cumulative buckets, a sum and a count.
    Histogram,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Labels of one sample: `(name, value)` pairs; values are escaped when written.
pub type Labels<'a> = &'a [(&'a str, &'a str)];

/// One scrape's text.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
    /// Families announced so far (bounded by the daemon's code, not by input).
    families: Vec<String>,
    current: Option<(String, Kind)>,
    dropped: u64,
}

impl Exposition {
    /// An empty exposition.
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Announce family `name` of `kind` (its HELP and TYPE lines). Its samples follow.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        debug_assert!(valid_name(name), "metric name {name:?}");
        debug_assert!(
            !self.families.iter().any(|f| f == name),
            "family {name} announced twice"
        );
        self.families.push(name.to_string());
        self.current = Some((name.to_string(), kind));
        let mut line = String::with_capacity(help.len() + name.len() + 16);
        let _ = write!(line, "# HELP {name} ");
        escape_help(&mut line, help);
        line.push('\n');
        let _ = writeln!(line, "# TYPE {name} {}", kind.word());
        self.push(&line);
    }

    /// A sample of the current counter or gauge family.
    pub fn sample(&mut self, name: &str, labels: Labels, value: f64) {
        debug_assert!(
            self.current.as_ref().is_some_and(|(f, _)| f == name),
            "sample {name} outside its family"
        );
        self.line(name, "", labels, None, value);
    }

    /// A counter family with one sample and no labels.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, Kind::Counter, help);
        self.sample(name, &[], value as f64);
    }

    /// A gauge family with one sample and no labels.
    pub fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.family(name, Kind::Gauge, help);
        self.sample(name, &[], value);
    }

    /// The series of histogram family `name` (announced with [`Kind::Histogram`]) for `labels`:
    /// its cumulative buckets in seconds ([`LATENCY_BOUNDS`] and `+Inf`), sum and count.
    pub fn histogram(&mut self, name: &str, labels: Labels, h: &Histogram) {
        debug_assert!(
            self.current
                .as_ref()
                .is_some_and(|(f, k)| f == name && *k == Kind::Histogram),
            "histogram {name} outside its family"
        );
        let mut le = String::new();
        for b in LATENCY_BOUNDS {
            le.clear();
            let _ = write!(le, "{b}");
            let n = h.count_at_most(Duration::from_secs_f64(b));
            self.line(name, "_bucket", labels, Some(&le), n as f64);
        }
        self.line(name, "_bucket", labels, Some("+Inf"), h.count() as f64);
        self.line(name, "_sum", labels, None, h.sum().as_secs_f64());
        self.line(name, "_count", labels, None, h.count() as f64);
    }

    /// Samples dropped because the text reached [`MAX_EXPOSITION`].
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The text.
    pub fn finish(self) -> String {
        self.out
    }

    fn line(&mut self, name: &str, suffix: &str, labels: Labels, le: Option<&str>, value: f64) {
        let mut l = String::with_capacity(64);
        l.push_str(name);
        l.push_str(suffix);
        if !labels.is_empty() || le.is_some() {
            l.push('{');
            let mut first = true;
            for (k, v) in labels.iter().copied().chain(le.map(|v| ("le", v))) {
                debug_assert!(valid_label(k), "label name {k:?}");
                if !first {
                    l.push(',');
                }
                first = false;
                l.push_str(k);
                l.push_str("=\"");
                escape_label(&mut l, v);
                l.push('"');
            }
            l.push('}');
        }
        l.push(' ');
        write_value(&mut l, value);
        l.push('\n');
        self.push(&l);
    }

    fn push(&mut self, text: &str) {
        if self.out.len() + text.len() > MAX_EXPOSITION {
            self.dropped += 1;
            return;
        }
        self.out.push_str(text);
    }
}

/// A float as the format writes it: integers without a fraction, `NaN`, `+Inf`, `-Inf`.
fn write_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v}");
    }
}

/// HELP text: backslash and newline escaped.
fn escape_help(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A label value: backslash, double quote and newline escaped.
fn escape_label(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
fn valid_name(s: &str) -> bool {
    let mut b = s.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__` (reserved).
fn valid_label(s: &str) -> bool {
    let mut b = s.bytes();
    !s.starts_with("__")
        && b.next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// The build's identity as a gauge of 1, the usual `*_build_info` (version, commit, wire).
pub fn build_info(e: &mut Exposition, daemon: &str, version: &str, commit: &str, wire: u8) {
    let name = "hsb_build_info";
    e.family(
        name,
        Kind::Gauge,
        "the running build: 1, with its daemon, release, commit and wire version as labels",
    );
    let wire = wire.to_string();
    e.sample(
        name,
        &[
            ("daemon", daemon),
            ("version", version),
            ("commit", commit),
            ("wire", &wire),
        ],
        1.0,
    );
}

/// `NAME{kind}` counters of a daemon's frame errors (`counts` in the order of
/// [`crate::frame::FrameError::COUNTERS`]).
pub fn frame_errors(e: &mut Exposition, name: &str, help: &str, counts: &[u64]) {
    e.family(name, Kind::Counter, help);
    for (kind, n) in crate::frame::FrameError::COUNTERS.iter().zip(counts) {
        e.sample(name, &[("kind", kind)], *n as f64);
    }
}

/// `NAME{rule,action}` counters of the decisions a daemon took (those taken at least once).
pub fn decisions(e: &mut Exposition, name: &str, d: &super::decisions::Decisions) {
    e.family(
        name,
        Kind::Counter,
        "decisions taken, by the rule that fired and the action (rule 7: each with its evidence in the log)",
    );
    for (rule, action, n) in d.by_rule_and_action() {
        e.sample(
            name,
            &[("rule", rule.name()), ("action", action.name())],
            n as f64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_and_escapes_in_literal_text() {
        let mut e = Exposition::new();
        e.counter("hsb_checkpoints_total", "checkpoints\nacked \\ all", 42);
        e.family("hsb_votes_total", Kind::Counter, "votes by answer");
        e.sample(
            "hsb_votes_total",
            &[("guest", "we\"b\\1\n"), ("answer", "granted")],
            3.0,
        );
        e.gauge("hsb_lag_seconds", "lag", 0.025);
        e.gauge("hsb_nan", "nan", f64::NAN);
        e.gauge("hsb_inf", "inf", f64::INFINITY);
        assert_eq!(
            e.finish(),
            "# HELP hsb_checkpoints_total checkpoints\\nacked \\\\ all\n\
             # TYPE hsb_checkpoints_total counter\n\
             hsb_checkpoints_total 42\n\
             # HELP hsb_votes_total votes by answer\n\
             # TYPE hsb_votes_total counter\n\
             hsb_votes_total{guest=\"we\\\"b\\\\1\\n\",answer=\"granted\"} 3\n\
             # HELP hsb_lag_seconds lag\n\
             # TYPE hsb_lag_seconds gauge\n\
             hsb_lag_seconds 0.025\n\
             # HELP hsb_nan nan\n\
             # TYPE hsb_nan gauge\n\
             hsb_nan NaN\n\
             # HELP hsb_inf inf\n\
             # TYPE hsb_inf gauge\n\
             hsb_inf +Inf\n"
        );
    }

    #[test]
    fn a_histogram_has_cumulative_buckets_sum_and_count() {
        let mut h = Histogram::default();
        for ms in [1u64, 2, 3, 40, 700] {
            h.record(Duration::from_millis(ms));
        }
        let mut e = Exposition::new();
        e.family("hsb_pause_seconds", Kind::Histogram, "pause");
        e.histogram("hsb_pause_seconds", &[("guest", "a")], &h);
        let text = e.finish();
        let buckets: Vec<(String, u64)> = text
            .lines()
            .filter_map(|l| l.strip_prefix("hsb_pause_seconds_bucket{guest=\"a\",le=\""))
            .map(|l| {
                let (le, n) = l.split_once("\"} ").expect("bucket");
                (le.to_string(), n.parse().expect("count"))
            })
            .collect();
        assert_eq!(buckets.len(), LATENCY_BOUNDS.len() + 1);
        assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{text}");
        assert_eq!(buckets.last(), Some(&("+Inf".to_string(), 5)));
        let at = |le: &str| buckets.iter().find(|(b, _)| b == le).map(|b| b.1);
        assert_eq!(at("0.0005"), Some(0));
        assert_eq!(at("0.005"), Some(3));
        assert_eq!(at("0.05"), Some(4));
        assert_eq!(at("1"), Some(5));
        assert!(
            text.contains("\nhsb_pause_seconds_sum{guest=\"a\"} 0.746\n"),
            "{text}"
        );
        assert!(
            text.ends_with("\nhsb_pause_seconds_count{guest=\"a\"} 5\n"),
            "{text}"
        );
    }

    #[test]
    fn the_text_is_bounded() {
        let mut e = Exposition::new();
        e.family("hsb_x", Kind::Gauge, "x");
        let long = "v".repeat(1000);
        for _ in 0..2000 {
            e.sample("hsb_x", &[("l", &long)], 1.0);
        }
        assert!(e.dropped() > 0);
        assert!(e.finish().len() <= MAX_EXPOSITION);
    }

    #[test]
    fn names_and_labels_are_checked() {
        assert!(valid_name("hsb_a:b_1"));
        assert!(!valid_name("1hsb") && !valid_name("hsb-a") && !valid_name(""));
        assert!(valid_label("guest") && valid_label("_x"));
        assert!(!valid_label("__name") && !valid_label("a:b") && !valid_label(""));
    }
}
