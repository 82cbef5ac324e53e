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

/// Notices when a daemon's own event loop did not run for a while (SIGSTOP, a paused VM, a
/// starved CPU): every timeout it decides afterwards may have expired only because nobody looked.
///
/// The loop tells it when it reads the clock ([`StallWatch::running`]) and how long it means to
/// sleep ([`StallWatch::sleeping`]); a gap longer than planned by more than `bound` is a stall,
/// reported as the last moment the loop is known to have run.
#[derive(Debug, Clone, Copy)]
pub struct StallWatch {
    bound: Duration,
    last: Option<Nanos>,
    wake_by: Option<Nanos>,
}

impl StallWatch {
    /// A watch that reports gaps longer than planned by more than `bound`.
    pub fn new(bound: Duration) -> StallWatch {
        StallWatch {
            bound,
            last: None,
            wake_by: None,
        }
    }

    /// The loop runs at `now`. If it did not run for more than `bound` past the moment it should
    /// have, the stall: the last moment it is known to have run (the stall ends at `now`).
    pub fn running(&mut self, now: Nanos) -> Option<Nanos> {
        let last = self.last.replace(now.max(self.last.unwrap_or(now)));
        let due = self.wake_by.take().max(last)?;
        (now > due.plus(self.bound)).then_some(last.unwrap_or(due))
    }

    /// The loop is about to sleep (poll) at `now` for at most `timeout`; checks `now` first, as
    /// [`StallWatch::running`] does.
    pub fn sleeping(&mut self, now: Nanos, timeout: Duration) -> Option<Nanos> {
        let stall = self.running(now);
        self.wake_by = Some(now.plus(timeout));
        stall
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stall_watch_reports_gaps_longer_than_planned() {
        let ms = Nanos::from_millis;
        let mut w = StallWatch::new(Duration::from_millis(25));
        assert_eq!(w.running(ms(0)), None, "the first reading is no gap");
        assert_eq!(w.running(ms(20)), None, "20 ms of work: within the bound");
        // A planned sleep of 100 ms that ends on time, or a little late: no stall.
        assert_eq!(w.sleeping(ms(20), Duration::from_millis(100)), None);
        assert_eq!(w.running(ms(140)), None);
        // Woken early by an event, then stopped while working: the gap since 150 ms counts.
        assert_eq!(w.sleeping(ms(140), Duration::from_millis(100)), None);
        assert_eq!(w.running(ms(150)), None);
        assert_eq!(w.running(ms(1_150)), Some(ms(150)));
        // Stopped while asleep: the stall starts when it last ran, not when it meant to wake.
        assert_eq!(w.sleeping(ms(1_160), Duration::from_millis(20)), None);
        assert_eq!(w.running(ms(1_206)), Some(ms(1_160)));
        assert_eq!(w.running(ms(1_210)), None, "reported once");
        // A clock that reads earlier than before (it must not, but) is no stall.
        assert_eq!(w.running(ms(1_000)), None);
        assert_eq!(w.running(ms(1_220)), None);
    }

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
