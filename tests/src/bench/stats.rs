//! Formatting and statistics for the benchmark report: markdown tables, milliseconds, rates
//! and nearest-rank percentiles.

use std::fmt::Write as _;
use std::time::Duration;

use super::MIB;

pub fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = format!("| {} |\n|", head.join(" | "));
    for _ in head {
        s.push_str("---|");
    }
    s.push('\n');
    for r in rows {
        let _ = writeln!(s, "| {} |", r.join(" | "));
    }
    s.push('\n');
    s
}

pub fn met(ok: bool) -> String {
    if ok { "**met**" } else { "**not met**" }.to_string()
}

pub fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

pub fn ms2(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

pub fn mib_s(bytes: f64, secs: f64) -> f64 {
    bytes / MIB / secs.max(1e-9)
}

/// Nearest-rank percentiles of a sample.
#[derive(Debug, Clone, Copy)]
pub struct Pct {
    pub n: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

pub fn pct(mut v: Vec<Duration>) -> Pct {
    v.sort_unstable();
    let at = |q: f64| {
        if v.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[rank - 1]
    };
    Pct {
        n: v.len(),
        p50: at(0.5),
        p99: at(0.99),
        max: v.last().copied().unwrap_or_default(),
    }
}

/// A float from a status map (0 if absent).
pub fn fnum(s: &std::collections::HashMap<String, String>, k: &str) -> f64 {
    s.get(k).and_then(|v| v.parse().ok()).unwrap_or(0.0)
}
