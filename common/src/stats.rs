//! Small fixed-size statistics for status output and benchmarks.

use std::time::Duration;

const SUB: u32 = 8;
const BUCKETS: usize = 64 * SUB as usize;

/// A log-linear histogram of durations (about 12% resolution), fixed size, no allocation.
#[derive(Clone)]
pub struct Histogram {
    counts: Box<[u64; BUCKETS]>,
    n: u64,
    max: u64,
    sum: u128,
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Histogram(n={})", self.n)
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: Box::new([0; BUCKETS]),
            n: 0,
            max: 0,
            sum: 0,
        }
    }
}

fn bucket(ns: u64) -> usize {
    if ns < SUB as u64 {
        return ns as usize;
    }
    let log = 63 - ns.leading_zeros();
    let sub = (ns >> (log - 3)) & (SUB as u64 - 1);
    ((log - 2) * SUB) as usize + sub as usize
}

fn bucket_upper(i: usize) -> u64 {
    if i < SUB as usize {
        return i as u64;
    }
    let log = (i / SUB as usize) as u32 + 2;
    let sub = (i % SUB as usize) as u64;
    ((SUB as u64 + sub + 1) << (log - 3)).saturating_sub(1)
}

impl Histogram {
    /// Record one value.
    pub fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.counts[bucket(ns).min(BUCKETS - 1)] += 1;
        self.n += 1;
        self.max = self.max.max(ns);
        self.sum += ns as u128;
    }

    /// Number of values.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// Largest value.
    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.max)
    }

    /// Mean value.
    pub fn mean(&self) -> Duration {
        if self.n == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos((self.sum / self.n as u128) as u64)
    }

    /// The value below which a fraction `q` (0..=1) of the values fall (bucket upper bound).
    pub fn quantile(&self, q: f64) -> Duration {
        if self.n == 0 {
            return Duration::ZERO;
        }
        let target = ((q * self.n as f64).ceil() as u64).clamp(1, self.n);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= target {
                return Duration::from_nanos(bucket_upper(i).min(self.max));
            }
        }
        Duration::from_nanos(self.max)
    }

    /// Sum of all values (exact).
    pub fn sum(&self) -> Duration {
        Duration::from_nanos(u64::try_from(self.sum).unwrap_or(u64::MAX))
    }

    /// How many values are at most `bound`, counting whole buckets: a bucket is counted when its
    /// upper end is at most `bound`, so the answer may leave out values within one bucket
    /// (about 12%) below `bound`, never counts one above it, and never decreases as `bound`
    /// grows (a Prometheus histogram's `le` buckets).
    pub fn count_at_most(&self, bound: Duration) -> u64 {
        let ns = u64::try_from(bound.as_nanos()).unwrap_or(u64::MAX);
        if ns >= self.max {
            return self.n;
        }
        self.counts
            .iter()
            .enumerate()
            .take_while(|(i, _)| bucket_upper(*i) <= ns)
            .map(|(_, c)| c)
            .sum()
    }

    /// Forget everything.
    pub fn clear(&mut self) {
        *self = Histogram::default();
    }
}

/// Milliseconds with three decimals, for logs and status.
pub fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_close() {
        let mut h = Histogram::default();
        for i in 1..=1000u64 {
            h.record(Duration::from_micros(i));
        }
        let p50 = h.quantile(0.5).as_micros() as f64;
        let p99 = h.quantile(0.99).as_micros() as f64;
        assert!((p50 - 500.0).abs() / 500.0 < 0.13, "{p50}");
        assert!((p99 - 990.0).abs() / 990.0 < 0.13, "{p99}");
        assert_eq!(h.max(), Duration::from_micros(1000));
        for ns in [0u64, 1, 7, 8, 9, 1000, u64::MAX / 2] {
            assert!(bucket_upper(bucket(ns)) >= ns);
        }
    }

    #[test]
    fn cumulative_counts_never_overcount_and_never_decrease() {
        let mut h = Histogram::default();
        assert_eq!(h.count_at_most(Duration::from_secs(1)), 0);
        for i in 1..=1000u64 {
            h.record(Duration::from_micros(i));
        }
        assert_eq!(h.sum(), Duration::from_micros(500_500));
        let mut last = 0;
        for us in [0u64, 1, 10, 100, 250, 500, 999, 1000, 5000] {
            let c = h.count_at_most(Duration::from_micros(us));
            assert!(c >= last, "decreased at {us} us");
            assert!(c <= us, "{c} values counted at most {us} us");
            // Within one bucket (12.5%) of the truth.
            assert!(
                c as f64 >= us.min(1000) as f64 * 0.87 - 1.0,
                "{c} at {us} us"
            );
            last = c;
        }
        assert_eq!(h.count_at_most(Duration::from_micros(1000)), 1000);
        assert_eq!(h.count_at_most(Duration::MAX), 1000);
    }
}
