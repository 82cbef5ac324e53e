//! How long the loop's turns take. Every daemon is one thread: while a turn runs, nothing else
//! does (no heartbeat goes out, no checkpoint is sent, no datagram is answered). A peer that
//! hears nothing for its timeout reads the silence as a crash, so a long turn is worth knowing
//! about before it becomes a failover: each turn is timed in its three parts, a turn longer than
//! [`LONG_TURN`] is counted and logged (rate-limited) with the part that took longest, and
//! status and metrics show the count and the longest turn. Pure bookkeeping: the loop passes the
//! times in.

use std::time::Duration;

use crate::time::Nanos;

/// A turn longer than this is logged and counted: a tenth of a second is where the default
/// heartbeat timeouts start to notice.
pub const LONG_TURN: Duration = Duration::from_millis(50);

/// The turns' figures.
#[derive(Debug, Default, Clone)]
pub struct Turns {
    /// Turns longer than [`LONG_TURN`].
    pub long: u64,
    /// The longest turn.
    pub max: Duration,
    /// The last long turn: when it ended, how long it took, and its longest part.
    pub last_long: Option<(Nanos, Duration, &'static str)>,
}

impl Turns {
    /// A turn of `parts` (each part's name and time) ended at `end`. A long one is counted and
    /// returns the line to log (the first ten, then every power of two).
    pub fn record(&mut self, end: Nanos, parts: &[(&'static str, Duration)]) -> Option<String> {
        let total: Duration = parts.iter().map(|(_, d)| *d).sum();
        self.max = self.max.max(total);
        if total <= LONG_TURN {
            return None;
        }
        self.long += 1;
        let (part, _) = parts
            .iter()
            .copied()
            .max_by_key(|(_, d)| *d)
            .unwrap_or(("the turn", total));
        self.last_long = Some((end, total, part));
        if self.long > 10 && !self.long.is_power_of_two() {
            return None;
        }
        let split: Vec<String> = parts
            .iter()
            .map(|(n, d)| format!("{n} {:.1} ms", ms(*d)))
            .collect();
        Some(format!(
            "loop: a turn took {:.1} ms ({}): nothing else ran meanwhile, heartbeats and checkpoints included ({} long turns so far)",
            ms(total),
            split.join(", "),
            self.long
        ))
    }

    /// Status lines: `loop_long_turns`, `loop_turn_max_ms`, `loop_last_long_turn`.
    pub fn status(&self, now: Nanos, kv: &mut dyn FnMut(&str, String)) {
        kv("loop_long_turns", self.long.to_string());
        kv("loop_turn_max_ms", format!("{:.1}", ms(self.max)));
        kv(
            "loop_last_long_turn",
            match self.last_long {
                None => "none".into(),
                Some((at, d, part)) => format!(
                    "{:.1} ms, mostly {part}, {:.1} s ago",
                    ms(d),
                    now.since(at).as_secs_f64()
                ),
            },
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn a_long_turn_is_counted_logged_and_named_by_its_longest_part() {
        let mut w = Turns::default();
        assert_eq!(
            w.record(Nanos::from_millis(5), &[("a", t(1)), ("b", t(2))]),
            None
        );
        assert_eq!(w.long, 0);
        let line = w
            .record(
                Nanos::from_millis(200),
                &[("events", t(10)), ("after events", t(120))],
            )
            .expect("logged");
        assert!(line.contains("130.0 ms"), "{line}");
        assert!(line.contains("after events 120.0 ms"), "{line}");
        assert_eq!(w.long, 1);
        assert_eq!(w.max, t(130));
        let mut lines = Vec::new();
        w.status(Nanos::from_millis(1200), &mut |k, v| {
            lines.push(format!("{k}={v}"))
        });
        assert_eq!(
            lines,
            [
                "loop_long_turns=1",
                "loop_turn_max_ms=130.0",
                "loop_last_long_turn=130.0 ms, mostly after events, 1.0 s ago"
            ]
        );
    }

    #[test]
    fn long_turns_are_logged_rate_limited_but_all_counted() {
        let mut w = Turns::default();
        let logged = (1..=100)
            .filter(|i| {
                w.record(Nanos::from_millis(i * 100), &[("events", t(60))])
                    .is_some()
            })
            .count();
        assert_eq!(w.long, 100);
        // 1..=10, then 16, 32, 64.
        assert_eq!(logged, 13);
    }
}
