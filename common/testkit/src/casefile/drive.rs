//! The running both kinds of cases share: streams of periodic inputs (`every`), choosing what
//! comes next (a stream's input or a tick), checking a `>` block against what was produced, and
//! the texts of their failures.

use core::time::Duration;

use hsb_common::decision::{later, nanos_of, Nanos};
use hsb_common::rng::SplitMix64;

use super::syntax::Step;

/// A periodic input under way.
pub struct Stream {
    line: usize,
    next: Nanos,
    period: Duration,
    until: Nanos,
    drop_pct: u64,
    rng: SplitMix64,
    jitter: Duration,
    count: u64,
    name: String,
    tokens: Vec<String>,
}

/// One occurrence of a stream's input.
pub struct Occurrence {
    /// The `every` line.
    pub line: usize,
    /// Input name.
    pub name: String,
    /// Its tokens, the occurrence number put in.
    pub tokens: Vec<String>,
    /// When it arrives (jitter included).
    pub at: Nanos,
    /// Lost on the way (`drop`).
    pub dropped: bool,
}

impl Stream {
    /// The stream an `every` step starts when the current time is `now` (`None` for another
    /// step).
    pub fn start(step: &Step, now: Nanos) -> Option<Stream> {
        let Step::Every {
            line,
            period,
            from,
            until,
            drop_pct,
            seed,
            jitter,
            name,
            tokens,
        } = step
        else {
            return None;
        };
        Some(Stream {
            line: *line,
            next: from.map_or(now, |f| f.resolve(now)).max(now),
            period: *period,
            until: until.resolve(now),
            drop_pct: *drop_pct,
            rng: SplitMix64::new(*seed),
            jitter: *jitter,
            count: 0,
            name: name.clone(),
            tokens: tokens.clone(),
        })
    }

    /// Its line.
    pub fn line(&self) -> usize {
        self.line
    }

    /// Its last time (inclusive).
    pub fn until(&self) -> Nanos {
        self.until
    }

    /// Its next occurrence (due now): `subst` puts the occurrence number (1, 2, ...) into
    /// each token.
    pub fn fire(&mut self, subst: impl Fn(&str, u64) -> String) -> Occurrence {
        let t = self.next;
        self.next = later(self.next, self.period);
        self.count += 1;
        let n = self.count;
        let tokens: Vec<String> = self.tokens.iter().map(|t| subst(t, n)).collect();
        let dropped = self.drop_pct > 0 && self.rng.below(100) < self.drop_pct;
        let j = if self.jitter.is_zero() {
            0
        } else {
            self.rng.below(nanos_of(self.jitter))
        };
        Occurrence {
            line: self.line,
            name: self.name.clone(),
            tokens,
            at: Nanos(t.0.saturating_add(j)),
            dropped,
        }
    }
}

/// What comes next on the way to a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Stream `.0`'s input, due at `.1` (a stream goes before a tick at the same time).
    Stream(usize, Nanos),
    /// A tick at this time.
    Tick(Nanos),
    /// Nothing more up to the time.
    Done,
}

/// What comes next up to `to` (inclusive or not), given the streams and the next tick.
pub fn next(streams: &[Stream], tick: Option<Nanos>, to: Nanos, inclusive: bool) -> Next {
    let within = |t: Nanos| if inclusive { t <= to } else { t < to };
    let stream = streams
        .iter()
        .enumerate()
        .filter(|(_, st)| st.next <= st.until)
        .min_by_key(|(_, st)| st.next)
        .map(|(i, st)| (i, st.next));
    match (stream, tick) {
        (Some((i, t)), tk) if within(t) && tk.is_none_or(|tk| t <= tk) => Next::Stream(i, t),
        (_, Some(tk)) if within(tk) => Next::Tick(tk),
        _ => Next::Done,
    }
}

/// A time as the failures print it.
pub fn ms(t: Nanos) -> String {
    format!("{:.3}ms", t.0 as f64 / 1e6)
}

/// What was produced, one a line (`none`).
pub fn list(got: &[(Nanos, String)]) -> String {
    if got.is_empty() {
        return "none".into();
    }
    got.iter()
        .map(|(t, a)| format!("\n    {} {a}", ms(*t)))
        .collect()
}

/// Why time `t` may not come next when it is `now`.
pub fn not_before(t: Nanos, now: Nanos) -> Result<(), String> {
    if t < now {
        return Err(format!(
            "time {} is before the current time {}",
            ms(t),
            ms(now)
        ));
    }
    Ok(())
}

/// Whether `text`, produced at `at`, is what `want` expects: the same first word, and each
/// further token in it (`at=T`, `at<=T`, `at>=T` check the time).
pub fn matches(want: &str, at: Nanos, text: &str) -> bool {
    let mut w = want.split_whitespace();
    let mut ok = w.next() == text.split_whitespace().next();
    for tok in w {
        let time = |v: &str| super::TimeSpec::parse(v).map(|t| t.resolve(Nanos::ZERO));
        ok &= if let Some(v) = tok.strip_prefix("at<=") {
            time(v).is_some_and(|t| at <= t)
        } else if let Some(v) = tok.strip_prefix("at>=") {
            time(v).is_some_and(|t| at >= t)
        } else if let Some(v) = tok.strip_prefix("at=") {
            time(v).is_some_and(|t| at == t)
        } else {
            text.split_whitespace().any(|a| a == tok)
        };
    }
    ok
}

/// Check what was produced against a `>` block (at `line`) of `items`: the line that failed,
/// and why. `noun` names what is produced (`action`, `effect`).
pub fn check_block(
    got: &[(Nanos, String)],
    line: usize,
    items: &[(usize, String)],
    noun: &str,
) -> Result<(), (usize, String)> {
    if got.len() != items.len() {
        let want: Vec<&str> = items.iter().map(|(_, s)| s.as_str()).collect();
        return Err((
            line,
            format!(
                "expected {} {noun}(s) {want:?}, got {}:{}",
                items.len(),
                got.len(),
                list(got)
            ),
        ));
    }
    for ((n, want), (at, text)) in items.iter().zip(got) {
        if !matches(want, *at, text) {
            return Err((
                *n,
                format!(
                    "expected `{want}`, got `{text}` at {} (all:{})",
                    ms(*at),
                    list(got)
                ),
            ));
        }
    }
    Ok(())
}

/// Check a query's answer: `got` is `None` for an unknown key; `unknown` says for what.
pub fn check_value(
    key: &str,
    want: &str,
    got: Option<String>,
    now: Nanos,
    unknown: &str,
) -> Result<(), String> {
    match got {
        None => Err(format!("unknown check {key:?} for {unknown}")),
        Some(g) if g == want => Ok(()),
        Some(g) => Err(format!(
            "check {key}: expected {want}, got {g} at {}",
            ms(now)
        )),
    }
}
