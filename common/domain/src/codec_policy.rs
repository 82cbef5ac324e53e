//! When to encode a checkpoint's pages ([`crate::page_codec`]): only when that ships the
//! checkpoint sooner, that is, when the link, not the sender's CPU, is the bottleneck. A pure
//! rule, no I/O and no clock: the daemon passes what each checkpoint cost.
//!
//! Each checkpoint's cost is the time from the start of its sealing (where encoding happens) to
//! its ack, per byte of pages it carried. The rule keeps a moving average of that cost for plain
//! and for encoded checkpoints, uses the cheaper (encoded only when at least [`MARGIN_PCT`]%
//! cheaper, since encoding also takes CPU from the rest of the primary, and only while encoded
//! checkpoints are at most [`RATIO_MAX_PCT`]% of their pages' bytes: one that saves nothing
//! cannot ship sooner, whatever the timing noise says), and now and then tries the
//! other for a few checkpoints so that its average follows the link and the guest's writes;
//! the tries get rarer while they confirm the choice. Checkpoints smaller than [`SMALL_BYTES`]
//! are sent plain and not measured: their time is the round trip, not bytes, so the link is not
//! their bottleneck.

use hsb_common::config::{Config, ConfigError, KeySpec, ValueKind};

/// The primary's `encode` key.
pub const ENCODE_KEY: KeySpec = KeySpec {
    key: "encode",
    kind: ValueKind::Choice(&CodecMode::WORDS),
    default: Some("auto"),
    help: "send checkpoint pages as the words that changed, zero pages as a byte, LZ4 where it pays: auto (when the link, not the CPU, is the bottleneck, measured), always, never",
};

/// The primary's `encode_cache` key.
pub const ENCODE_CACHE_KEY: KeySpec = KeySpec {
    key: "encode_cache",
    kind: ValueKind::Size,
    default: Some("128MiB"),
    help: "most memory for the copies of sent pages that changed pages are encoded against (at most the guest's memory is used; 0: no deltas)",
};

/// The `encode` mode and the `encode_cache` size in bytes from a primary's configuration.
pub fn from_config(c: &Config) -> Result<(CodecMode, u64), ConfigError> {
    let word = c.str(ENCODE_KEY.key)?;
    let mode = CodecMode::from_word(&word)
        .ok_or_else(|| c.error_at(ENCODE_KEY.key, "expected auto, always or never"))?;
    Ok((mode, c.size(ENCODE_CACHE_KEY.key)?))
}

/// The `encode` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecMode {
    /// Encode when it pays (this module's rule).
    Auto,
    /// Encode every checkpoint.
    Always,
    /// Never encode.
    Never,
}

impl CodecMode {
    /// The setting's words, in [`CodecMode`] order.
    pub const WORDS: [&'static str; 3] = ["auto", "always", "never"];

    /// The mode for a setting's word.
    pub fn from_word(w: &str) -> Option<CodecMode> {
        match w {
            "auto" => Some(CodecMode::Auto),
            "always" => Some(CodecMode::Always),
            "never" => Some(CodecMode::Never),
            _ => None,
        }
    }
}

/// How one checkpoint's pages are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// The pages as they are.
    Plain,
    /// Page records (zero pages, deltas, sparse pages), LZ4 where it pays.
    Encoded,
}

/// A decision for one checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// The codec.
    pub codec: Codec,
    /// Whether its cost says something about the codec: not a small checkpoint, nor the first
    /// encoded one after plain ones (whose pages the cache has forgotten).
    pub measured: bool,
}

/// Checkpoints below this many bytes of pages are sent plain and not measured.
pub const SMALL_BYTES: u64 = 256 << 10;
/// Encoded must be this much cheaper (percent) than plain to be chosen.
pub const MARGIN_PCT: u64 = 10;
/// Encoded checkpoints must be at most this share (percent) of their pages' bytes.
pub const RATIO_MAX_PCT: u64 = 90;
/// Checkpoints of the chosen codec between tries of the other, at first and at most.
pub const PROBE_EVERY_MIN: u32 = 64;
/// See [`PROBE_EVERY_MIN`].
pub const PROBE_EVERY_MAX: u32 = 512;
/// A try of the other codec also comes once the checkpoints since the last try took this long,
/// summed from the start of each one's sealing to its ack (they overlap when several are in
/// flight, so it may come sooner): on a saturated slow link a plain checkpoint can take half a
/// second, so 512 of them would leave a guest that starts writing pages that encode well
/// waiting minutes for the rule to notice.
pub const PROBE_AFTER_NS: u64 = 30_000_000_000;
/// Checkpoints per try of encoding (one more: the first after plain ones starts with a cold
/// cache), and per try of plain pages (fewer: on a slow link each plain checkpoint is long, and
/// the next ones grow while it is sent).
pub const PROBE_LEN: u32 = 4;
/// See [`PROBE_LEN`].
pub const PROBE_LEN_PLAIN: u32 = 2;

/// Weight of a new cost in the moving average, in sixteenths.
const WEIGHT_16: u64 = 5;

/// The adaptive rule's state.
#[derive(Debug, Clone)]
pub struct CodecPolicy {
    mode: CodecMode,
    /// Moving average of cost per KiB of pages, in picoseconds, per codec (plain, encoded).
    cost: [Option<u64>; 2],
    /// The codec in use between tries.
    best: Codec,
    /// Checkpoints since the last try.
    since_probe: u32,
    /// Checkpoints between tries now.
    probe_every: u32,
    /// Nanoseconds the checkpoints since the last try took (see [`PROBE_AFTER_NS`]).
    since_probe_ns: u64,
    /// Checkpoints left in the current try.
    probe_left: u32,
    /// The codec of the last non-small checkpoint.
    last: Codec,
    /// A codec's average is old (a try of it started): its next cost replaces it.
    stale: [bool; 2],
    /// Moving average of encoded checkpoints' bytes per 1000 bytes of pages.
    ratio: Option<u64>,
}

fn idx(c: Codec) -> usize {
    match c {
        Codec::Plain => 0,
        Codec::Encoded => 1,
    }
}

fn other(c: Codec) -> Codec {
    match c {
        Codec::Plain => Codec::Encoded,
        Codec::Encoded => Codec::Plain,
    }
}

impl CodecPolicy {
    /// A rule for `mode`.
    pub fn new(mode: CodecMode) -> CodecPolicy {
        CodecPolicy {
            mode,
            cost: [None; 2],
            best: Codec::Plain,
            since_probe: 0,
            probe_every: PROBE_EVERY_MIN,
            since_probe_ns: 0,
            probe_left: 0,
            last: Codec::Plain,
            stale: [false; 2],
            ratio: None,
        }
    }

    /// The setting.
    pub fn mode(&self) -> CodecMode {
        self.mode
    }

    /// Moving average cost per KiB of pages, in nanoseconds, of (plain, encoded), if measured.
    pub fn costs_ns_per_kib(&self) -> (Option<f64>, Option<f64>) {
        let f = |c: Option<u64>| c.map(|v| v as f64 / 1000.0);
        (f(self.cost[0]), f(self.cost[1]))
    }

    /// The codec for the next checkpoint, which carries `page_bytes` bytes of pages.
    pub fn choose(&mut self, page_bytes: u64) -> Choice {
        let codec = match self.mode {
            CodecMode::Never => Codec::Plain,
            CodecMode::Always => Codec::Encoded,
            CodecMode::Auto if page_bytes < SMALL_BYTES => {
                return Choice {
                    codec: Codec::Plain,
                    measured: false,
                }
            }
            CodecMode::Auto => self.next_auto(),
        };
        let measured =
            page_bytes >= SMALL_BYTES && !(codec == Codec::Encoded && self.last == Codec::Plain);
        if page_bytes >= SMALL_BYTES {
            self.last = codec;
        }
        Choice { codec, measured }
    }

    fn next_auto(&mut self) -> Codec {
        // Measure each codec before choosing between them.
        if self.cost[0].is_none() {
            return Codec::Plain;
        }
        if self.cost[1].is_none() {
            return Codec::Encoded;
        }
        if self.probe_left > 0 {
            self.probe_left -= 1;
            return other(self.best);
        }
        let best = self.cheaper();
        if best != self.best {
            self.best = best;
            self.probe_every = PROBE_EVERY_MIN;
            self.since_probe = 0;
            self.since_probe_ns = 0;
        }
        self.since_probe += 1;
        if self.since_probe >= self.probe_every || self.since_probe_ns >= PROBE_AFTER_NS {
            self.since_probe = 0;
            self.since_probe_ns = 0;
            self.probe_every = (self.probe_every * 2).min(PROBE_EVERY_MAX);
            self.probe_left = match self.best {
                Codec::Plain => PROBE_LEN + 1,
                Codec::Encoded => PROBE_LEN_PLAIN,
            };
            self.stale[idx(other(self.best))] = true;
        }
        self.best
    }

    fn cheaper(&self) -> Codec {
        let saves = self.ratio.is_some_and(|r| r <= RATIO_MAX_PCT * 10);
        match (self.cost[0], self.cost[1]) {
            (Some(p), Some(e))
                if saves && e.saturating_mul(100) < p.saturating_mul(100 - MARGIN_PCT) =>
            {
                Codec::Encoded
            }
            _ => Codec::Plain,
        }
    }

    /// Moving average of encoded checkpoints' size against their pages, if measured.
    pub fn encoded_ratio(&self) -> Option<f64> {
        self.ratio.map(|r| r as f64 / 1000.0)
    }

    /// What a checkpoint decided by `choice` cost: `page_bytes` of pages sealed into
    /// `wire_bytes`, `ns` from the start of its sealing to its ack.
    pub fn observe(&mut self, choice: Choice, page_bytes: u64, wire_bytes: u64, ns: u64) {
        self.since_probe_ns = self.since_probe_ns.saturating_add(ns);
        if !choice.measured || page_bytes == 0 {
            return;
        }
        if choice.codec == Codec::Encoded {
            let r = (wire_bytes as u128 * 1000 / page_bytes as u128).min(10_000) as u64;
            self.ratio = Some(match self.ratio {
                None => r,
                Some(old) => (old * (16 - WEIGHT_16) + r * WEIGHT_16) / 16,
            });
        }
        let per_kib = (ns as u128 * 1000 * 1024 / page_bytes as u128).min(u64::MAX as u128) as u64;
        let i = idx(choice.codec);
        let slot = &mut self.cost[i];
        *slot = Some(match *slot {
            _ if std::mem::take(&mut self.stale[i]) => per_kib,
            None => per_kib,
            Some(old) => {
                ((old as u128 * (16 - WEIGHT_16) as u128 + per_kib as u128 * WEIGHT_16 as u128)
                    / 16) as u64
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BIG: u64 = 4 << 20;

    /// Run `n` checkpoints of `BIG` bytes whose cost per codec is `cost(codec)` ns, encoded to
    /// a quarter; returns how many were encoded.
    fn run(p: &mut CodecPolicy, n: usize, cost: impl Fn(Codec) -> u64) -> usize {
        run_sized(p, n, BIG / 4, cost)
    }

    fn run_sized(p: &mut CodecPolicy, n: usize, wire: u64, cost: impl Fn(Codec) -> u64) -> usize {
        let mut enc = 0;
        for _ in 0..n {
            let c = p.choose(BIG);
            enc += usize::from(c.codec == Codec::Encoded);
            let w = if c.codec == Codec::Encoded { wire } else { BIG };
            p.observe(c, BIG, w, cost(c.codec));
        }
        enc
    }

    #[test]
    fn a_slow_link_tries_again_within_the_time_bound() {
        // Random pages on a saturated slow link: plain, each checkpoint 600 ms, and tries of
        // encoding spaced out to 512 checkpoints (5 minutes) by the count alone.
        let mut p = CodecPolicy::new(CodecMode::Auto);
        let slow = |c| match c {
            Codec::Plain => 600_000_000,
            Codec::Encoded => 650_000_000,
        };
        run_sized(&mut p, 3000, BIG + 100, slow);
        assert_eq!(p.probe_every, PROBE_EVERY_MAX);
        // To the end of a try, so that the count between tries starts from nothing.
        let mut in_try = false;
        loop {
            let c = p.choose(BIG);
            let enc = c.codec == Codec::Encoded;
            p.observe(c, BIG, BIG + 100, slow(c.codec));
            if enc {
                in_try = true;
            } else if in_try {
                break;
            }
        }
        // The guest starts writing pages that encode to a quarter, which then ship in a quarter
        // of the time: the rule notices within about 30 s of checkpoints, not 512 of them.
        let mut n = 0;
        while p.choose(BIG).codec != Codec::Encoded {
            let c = Choice {
                codec: Codec::Plain,
                measured: true,
            };
            p.observe(c, BIG, BIG, 600_000_000);
            n += 1;
            assert!(
                n <= 60,
                "no try of encoding after {n} checkpoints of 600 ms"
            );
        }
        let enc = run(&mut p, 40, |c| match c {
            Codec::Plain => 600_000_000,
            Codec::Encoded => 150_000_000,
        });
        assert!(enc >= 35, "{enc} of 40 encoded after the try");
    }

    #[test]
    fn encoding_that_saves_no_bytes_is_not_chosen() {
        // Pages that do not compress (random content): timing noise makes encoded look
        // cheaper, but it cannot ship the checkpoint sooner.
        let mut p = CodecPolicy::new(CodecMode::Auto);
        let enc = run_sized(&mut p, 1000, BIG + 100, |c| match c {
            Codec::Plain => 34_000_000,
            Codec::Encoded => 20_000_000,
        });
        assert!(enc < 40, "{enc} of 1000 encoded");
        assert!(p.encoded_ratio().unwrap() >= 0.99);
    }

    #[test]
    fn fixed_modes_do_as_told() {
        let mut p = CodecPolicy::new(CodecMode::Never);
        assert_eq!(run(&mut p, 100, |_| 1), 0);
        let mut p = CodecPolicy::new(CodecMode::Always);
        assert_eq!(run(&mut p, 100, |_| 1), 100);
        assert_eq!(p.choose(10).codec, Codec::Encoded, "always means always");
    }

    #[test]
    fn a_slow_link_gets_encoding() {
        // 1 Gbit/s: 4 MiB plain takes 34 ms; encoded to a quarter plus 5 ms of CPU: 13 ms.
        let mut p = CodecPolicy::new(CodecMode::Auto);
        let enc = run(&mut p, 1000, |c| match c {
            Codec::Plain => 34_000_000,
            Codec::Encoded => 13_000_000,
        });
        assert!(enc > 950, "{enc} of 1000 encoded");
    }

    #[test]
    fn a_fast_link_skips_encoding() {
        // 10 Gbit/s: plain 3.4 ms; encoding costs more CPU than the bytes it saves.
        let mut p = CodecPolicy::new(CodecMode::Auto);
        let enc = run(&mut p, 1000, |c| match c {
            Codec::Plain => 3_400_000,
            Codec::Encoded => 5_500_000,
        });
        assert!(enc < 40, "{enc} of 1000 encoded");
    }

    #[test]
    fn within_the_margin_plain_wins() {
        let mut p = CodecPolicy::new(CodecMode::Auto);
        let enc = run(&mut p, 1000, |c| match c {
            Codec::Plain => 10_000_000,
            Codec::Encoded => 9_500_000,
        });
        assert!(enc < 40, "{enc} of 1000 encoded");
    }

    #[test]
    fn follows_a_change_of_link() {
        let mut p = CodecPolicy::new(CodecMode::Auto);
        run(&mut p, 500, |c| match c {
            Codec::Plain => 3_000_000,
            Codec::Encoded => 6_000_000,
        });
        // The link slows down (shared, or shaped): tries find encoding pays now.
        let enc = run(&mut p, 3000, |c| match c {
            Codec::Plain => 30_000_000,
            Codec::Encoded => 8_000_000,
        });
        assert!(enc > 2500, "{enc} of 3000 encoded after the change");
        // And back.
        let enc = run(&mut p, 3000, |c| match c {
            Codec::Plain => 3_000_000,
            Codec::Encoded => 6_000_000,
        });
        assert!(enc < 500, "{enc} of 3000 encoded after the change back");
    }

    #[test]
    fn small_checkpoints_go_plain_unmeasured() {
        let mut p = CodecPolicy::new(CodecMode::Auto);
        for _ in 0..100 {
            let c = p.choose(SMALL_BYTES - 1);
            assert_eq!(
                c,
                Choice {
                    codec: Codec::Plain,
                    measured: false
                }
            );
            p.observe(c, SMALL_BYTES - 1, 0, u64::MAX);
        }
        assert_eq!(p.costs_ns_per_kib(), (None, None));
    }

    #[test]
    fn the_first_encoded_after_plain_is_not_measured() {
        let mut p = CodecPolicy::new(CodecMode::Auto);
        let a = p.choose(BIG);
        assert_eq!(a.codec, Codec::Plain);
        assert!(a.measured);
        p.observe(a, BIG, BIG, 1000);
        let b = p.choose(BIG);
        assert_eq!(b.codec, Codec::Encoded);
        assert!(!b.measured, "cold cache");
        p.observe(b, BIG, 1, 1);
        assert_eq!(p.costs_ns_per_kib().1, None);
        let c = p.choose(BIG);
        assert!(c.measured);
    }

    #[test]
    fn extreme_costs_do_not_overflow() {
        let mut p = CodecPolicy::new(CodecMode::Auto);
        run(&mut p, 100, |_| u64::MAX);
        let c = p.choose(u64::MAX);
        p.observe(c, 1, u64::MAX, u64::MAX);
        p.observe(c, u64::MAX, u64::MAX, 0);
    }
}
