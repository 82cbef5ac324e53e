//! Logging setup shared by the daemons: `HSB_LOG` (or `RUST_LOG`) selects levels, default `info`.

use std::io::Write;

/// Initialise env_logger with a compact, timestamped format naming the daemon.
pub fn init(daemon: &'static str) {
    init_at(daemon, "info");
}

/// Like [`init`], with `level` where neither `HSB_LOG` nor `RUST_LOG` says (`check` logs
/// warnings only: a renamed key's, while its answer goes to stdout).
pub fn init_at(daemon: &'static str, level: &str) {
    let env = env_logger::Env::new()
        .filter_or(
            "HSB_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| level.into()),
        )
        .write_style("HSB_LOG_STYLE");
    let _ = env_logger::Builder::from_env(env)
        .format(move |buf, rec| {
            let ts = buf.timestamp_millis();
            writeln!(buf, "{ts} {daemon} {:<5} {}", rec.level(), rec.args())
        })
        .try_init();
}

/// Rate limits for log lines that can repeat every probe or loop interval, per cause: at most
/// `burst` lines of one cause per `window`; the first line after a quiet window says how many of
/// that cause were suppressed. Pure (time is passed in) and bounded (`N` causes, numbered by the
/// caller, e.g. an enum's `as usize`).
///
/// ```
/// use std::time::Duration;
/// use hsb_common::logging::LogLimiter;
/// use hsb_common::time::Nanos;
///
/// let mut limit: LogLimiter<2> = LogLimiter::new(2, Duration::from_secs(10));
/// for i in 0..5 {
///     if let Some(suppressed) = limit.allow(0, Nanos::from_millis(i)) {
///         println!("view changed{}", LogLimiter::<2>::note(suppressed));
///     }
/// }
/// ```
#[derive(Debug, Clone)]
pub struct LogLimiter<const N: usize> {
    burst: u32,
    window: std::time::Duration,
    causes: [Cause; N],
}

#[derive(Debug, Clone, Copy, Default)]
struct Cause {
    window_start: Option<crate::time::Nanos>,
    logged: u32,
    suppressed: u64,
}

impl<const N: usize> LogLimiter<N> {
    /// At most `burst` (at least 1) lines per cause every `window`.
    pub fn new(burst: u32, window: std::time::Duration) -> LogLimiter<N> {
        LogLimiter {
            burst: burst.max(1),
            window,
            causes: [Cause::default(); N],
        }
    }

    /// Whether a line of `cause` may be logged at `now`: `Some(n)` with the number of lines of
    /// this cause suppressed since the last one logged, or `None` to suppress it. A cause out of
    /// range (a caller's bug) is never suppressed.
    pub fn allow(&mut self, cause: usize, now: crate::time::Nanos) -> Option<u64> {
        let Some(c) = self.causes.get_mut(cause) else {
            debug_assert!(false, "log cause {cause} out of range (at most {N})");
            return Some(0);
        };
        let fresh = match c.window_start {
            None => true,
            Some(s) => now < s || now.since(s) >= self.window,
        };
        if fresh {
            c.window_start = Some(now);
            c.logged = 0;
        }
        if c.logged < self.burst {
            c.logged += 1;
            Some(std::mem::take(&mut c.suppressed))
        } else {
            c.suppressed = c.suppressed.saturating_add(1);
            None
        }
    }

    /// Lines of `cause` suppressed and not yet reported.
    pub fn suppressed(&self, cause: usize) -> u64 {
        self.causes.get(cause).map_or(0, |c| c.suppressed)
    }

    /// A suffix for the logged line: empty, or ` [N similar lines suppressed]`.
    pub fn note(suppressed: u64) -> String {
        match suppressed {
            0 => String::new(),
            1 => " [1 similar line suppressed]".into(),
            n => format!(" [{n} similar lines suppressed]"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Nanos;
    use std::time::Duration;

    #[test]
    fn limits_each_cause_and_counts_what_it_suppressed() {
        let ms = Nanos::from_millis;
        let mut l: LogLimiter<2> = LogLimiter::new(3, Duration::from_secs(1));
        // A cause flapping every 20 ms: 3 lines, then silence for the rest of the second.
        let allowed: Vec<u64> = (0..50)
            .filter(|i| l.allow(0, ms(i * 20)).is_some())
            .collect();
        assert_eq!(allowed, [0, 1, 2]);
        assert_eq!(l.suppressed(0), 47);
        // Another cause is not affected.
        assert_eq!(l.allow(1, ms(990)), Some(0));
        // The next window's first line reports the suppressed count, once.
        assert_eq!(l.allow(0, ms(1_000)), Some(47));
        assert_eq!(l.allow(0, ms(1_001)), Some(0));
        assert_eq!(l.suppressed(0), 0);
        assert_eq!(LogLimiter::<2>::note(47), " [47 similar lines suppressed]");
        assert_eq!(LogLimiter::<2>::note(0), "");
        // A rare cause is never suppressed.
        for s in 0..10 {
            assert_eq!(l.allow(1, ms(5_000 + s * 1_000)), Some(0));
        }
        // Time that goes back (it must not) starts a new window rather than suppressing for ever.
        assert_eq!(l.allow(0, ms(1_002)), Some(0));
        assert_eq!(l.allow(0, ms(10)), Some(0));
    }

    #[test]
    #[cfg(not(debug_assertions))]
    fn a_cause_out_of_range_is_never_suppressed() {
        let mut l: LogLimiter<1> = LogLimiter::new(1, Duration::from_secs(1));
        assert_eq!(l.allow(5, Nanos(0)), Some(0));
        assert_eq!(l.allow(5, Nanos(1)), Some(0));
    }
}
