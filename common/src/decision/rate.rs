//! Success rates over a sliding window: how a witness tells a lossy path from a hung application
//! (rule 6). One probe's result says little on a path that loses half its packets; the share of
//! probes answered over a window says a lot.
//!
//! Bounded whatever the probe rate: the window is [`BUCKETS`] buckets of counts, time passed in.

use core::time::Duration;

use super::{nanos_of, Nanos};

/// Buckets per window (the window slides one bucket at a time).
pub const BUCKETS: usize = 16;
/// Fewer probes than this in a window give no rate (a handful of probes over a lossy path says
/// little: 32 keep one standard deviation of a 64 % rate under 9 points).
pub const MIN_SAMPLES: u32 = 32;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Bucket {
    /// Bucket number (time / width, plus one: zero is an empty bucket).
    idx: u64,
    ok: u32,
    all: u32,
}

/// Answered and total probes of one target over the last `window`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateWindow {
    width_ns: u64,
    buckets: [Bucket; BUCKETS],
}

impl RateWindow {
    /// A window of `window` (at least one nanosecond per bucket).
    pub fn new(window: Duration) -> RateWindow {
        RateWindow {
            width_ns: (nanos_of(window) / BUCKETS as u64).max(1),
            buckets: [Bucket::default(); BUCKETS],
        }
    }

    fn index(&self, now: Nanos) -> u64 {
        (now.0 / self.width_ns).saturating_add(1)
    }

    /// One probe finished at `now`: answered in time (`ok`) or not.
    pub fn record(&mut self, now: Nanos, ok: bool) {
        let idx = self.index(now);
        let b = &mut self.buckets[(idx % BUCKETS as u64) as usize];
        if b.idx != idx {
            *b = Bucket { idx, ok: 0, all: 0 };
        }
        b.all = b.all.saturating_add(1);
        if ok {
            b.ok = b.ok.saturating_add(1);
        }
    }

    /// (answered, all) over the window ending at `now`.
    pub fn counts(&self, now: Nanos) -> (u32, u32) {
        let cur = self.index(now);
        self.buckets
            .iter()
            .filter(|b| b.idx != 0 && b.idx <= cur && cur - b.idx < BUCKETS as u64)
            .fold((0u32, 0u32), |(o, a), b| {
                (o.saturating_add(b.ok), a.saturating_add(b.all))
            })
    }

    /// The share answered, percent (rounded down), or `None` with fewer than [`MIN_SAMPLES`].
    pub fn rate(&self, now: Nanos) -> Option<u8> {
        let (ok, all) = self.counts(now);
        (all >= MIN_SAMPLES).then(|| (u64::from(ok) * 100 / u64::from(all)) as u8)
    }

    /// Forget everything (the evidence starts again).
    pub fn clear(&mut self) {
        self.buckets = [Bucket::default(); BUCKETS];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Nanos {
        Nanos::from_millis(n)
    }

    #[test]
    fn rates_over_a_sliding_window() {
        let mut w = RateWindow::new(Duration::from_millis(1600));
        assert_eq!(w.rate(ms(0)), None);
        // One probe every 20 ms, every other one answered.
        for i in 0..80u64 {
            w.record(ms(i * 20), i % 2 == 0);
        }
        assert_eq!(w.counts(ms(1580)), (40, 80));
        assert_eq!(w.rate(ms(1580)), Some(50));
        // 100 ms buckets: at 1650 ms the first bucket (0-99 ms, 5 probes, 3 answered) is out.
        assert_eq!(w.counts(ms(1650)), (37, 75));
        // Nothing for a whole window: no rate.
        assert_eq!(w.rate(ms(3300)), None);
        // Too few samples.
        for _ in 0..MIN_SAMPLES - 1 {
            w.record(ms(4000), true);
        }
        assert_eq!(w.counts(ms(4000)), (MIN_SAMPLES - 1, MIN_SAMPLES - 1));
        assert_eq!(w.rate(ms(4000)), None);
        w.record(ms(4000), false);
        assert_eq!(w.rate(ms(4000)), Some(96));
        w.clear();
        assert_eq!(w.counts(ms(4000)), (0, 0));
    }

    #[test]
    fn bounded_and_saturating() {
        let mut w = RateWindow::new(Duration::ZERO);
        for i in 0..1000u64 {
            w.record(Nanos(i), i % 4 == 0);
        }
        let (ok, all) = w.counts(Nanos(999));
        assert!(all <= BUCKETS as u32 && ok <= all);
        let mut w = RateWindow::new(Duration::from_secs(1));
        for _ in 0..MIN_SAMPLES {
            w.record(Nanos(u64::MAX), true);
        }
        assert_eq!(w.rate(Nanos(u64::MAX)), Some(100));
        let mut w = RateWindow::new(Duration::from_nanos(1));
        w.record(Nanos(u64::MAX), false);
        assert_eq!(w.counts(Nanos(u64::MAX)), (0, 1));
    }
}
