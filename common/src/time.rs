//! Monotonic time as plain numbers, so pure cores never read a clock.
//!
//! The daemons own one [`Clock`] and pass [`Nanos`] values into every state machine; the simulator
//! and the replay tool pass their own. Only monotonic time is used anywhere (F11: wall-clock jumps
//! change nothing).

use std::time::{Duration, Instant};

/// Nanoseconds on a monotonic clock with an arbitrary origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Nanos(pub u64);

impl Nanos {
    /// Zero (the clock's origin).
    pub const ZERO: Nanos = Nanos(0);

    /// From a duration since the origin (saturating at `u64::MAX` ns, about 584 years).
    pub fn from_duration(d: Duration) -> Nanos {
        Nanos(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    /// From milliseconds.
    pub const fn from_millis(ms: u64) -> Nanos {
        Nanos(ms.saturating_mul(1_000_000))
    }

    /// As a [`Duration`] since the origin.
    pub fn as_duration(self) -> Duration {
        Duration::from_nanos(self.0)
    }

    /// `self + d`, saturating.
    pub fn plus(self, d: Duration) -> Nanos {
        Nanos(self.0.saturating_add(Nanos::from_duration(d).0))
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Nanos) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// Milliseconds as a float, for logs.
    pub fn as_millis_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }
}

/// The daemons' clock: monotonic nanoseconds since the process started.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
}

impl Clock {
    /// A clock whose origin is now.
    pub fn new() -> Clock {
        Clock {
            origin: Instant::now(),
        }
    }

    /// Now, as nanoseconds since the origin.
    pub fn now(&self) -> Nanos {
        Nanos::from_duration(self.origin.elapsed())
    }

    /// The [`Instant`] matching a [`Nanos`] value of this clock.
    pub fn instant(&self, t: Nanos) -> Instant {
        self.origin + t.as_duration()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(Nanos(5).since(Nanos(9)), Duration::ZERO);
        assert_eq!(
            Nanos(u64::MAX).plus(Duration::from_secs(1)),
            Nanos(u64::MAX)
        );
        assert_eq!(
            Nanos::from_millis(25).as_duration(),
            Duration::from_millis(25)
        );
    }
}
