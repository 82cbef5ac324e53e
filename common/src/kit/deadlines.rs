//! The deadlines of a daemon's loop: the poll timeout is the time to the earliest one, so the
//! loop wakes when there is something to do, not on a polling tick.

use std::time::Duration;

use crate::time::Nanos;

/// At most `N` named deadlines, each identified by an index (a daemon names them with an enum
/// cast to `usize`).
#[derive(Debug, Clone)]
pub struct Deadlines<const N: usize> {
    at: [Option<Nanos>; N],
}

impl<const N: usize> Default for Deadlines<N> {
    fn default() -> Self {
        Deadlines { at: [None; N] }
    }
}

impl<const N: usize> Deadlines<N> {
    /// No deadline set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Set deadline `i` to `at` (replacing it). Out-of-range indices are a bug: ignored.
    pub fn set(&mut self, i: usize, at: Nanos) {
        if let Some(d) = self.at.get_mut(i) {
            *d = Some(at);
        }
    }

    /// Set deadline `i` to `at` unless it is already earlier.
    pub fn set_earliest(&mut self, i: usize, at: Nanos) {
        if let Some(d) = self.at.get_mut(i) {
            *d = Some(d.map_or(at, |x| x.min(at)));
        }
    }

    /// Clear deadline `i`.
    pub fn clear(&mut self, i: usize) {
        if let Some(d) = self.at.get_mut(i) {
            *d = None;
        }
    }

    /// Deadline `i`, if set.
    pub fn get(&self, i: usize) -> Option<Nanos> {
        self.at.get(i).copied().flatten()
    }

    /// Whether deadline `i` has come at `now`; if so it is cleared (set it again to repeat).
    pub fn take_due(&mut self, i: usize, now: Nanos) -> bool {
        match self.at.get_mut(i) {
            Some(d) if d.is_some_and(|t| now >= t) => {
                *d = None;
                true
            }
            _ => false,
        }
    }

    /// The earliest deadline, if any.
    pub fn next(&self) -> Option<Nanos> {
        self.at.iter().flatten().min().copied()
    }

    /// How long the loop may sleep at `now`: until the earliest deadline, at most `max`.
    pub fn timeout(&self, now: Nanos, max: Duration) -> Duration {
        self.next().map_or(max, |t| t.since(now).min(max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Nanos {
        Nanos::from_millis(n)
    }

    #[test]
    fn the_loop_sleeps_until_the_earliest_deadline() {
        let mut d: Deadlines<3> = Deadlines::new();
        assert_eq!(
            d.timeout(ms(0), Duration::from_secs(1)),
            Duration::from_secs(1)
        );
        d.set(0, ms(50));
        d.set(2, ms(20));
        assert_eq!(d.next(), Some(ms(20)));
        assert_eq!(
            d.timeout(ms(5), Duration::from_secs(1)),
            Duration::from_millis(15)
        );
        assert_eq!(d.timeout(ms(30), Duration::from_secs(1)), Duration::ZERO);
        d.set_earliest(0, ms(70));
        assert_eq!(d.get(0), Some(ms(50)));
        d.set_earliest(0, ms(10));
        assert_eq!(d.get(0), Some(ms(10)));
        assert!(!d.take_due(2, ms(19)));
        assert!(d.take_due(2, ms(20)));
        assert!(!d.take_due(2, ms(21)), "cleared once taken");
        d.clear(0);
        assert_eq!(d.next(), None);
        d.set(7, ms(1)); // out of range: ignored
        assert_eq!(d.next(), None);
    }
}
