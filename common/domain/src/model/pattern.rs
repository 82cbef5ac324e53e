//! How the model's workload writes a page (`model.write_pattern`).

use std::sync::OnceLock;

use hsb_common::rng::SplitMix64;

use crate::PAGE_SIZE;

/// How the model's workload writes a page (`model.write_pattern`): what a checkpoint's page
/// encoding can save depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WritePattern {
    /// One 8-byte word at a random place per page written (counters, pointers): the default.
    #[default]
    Counters,
    /// This many 64-byte cache lines at random places per page written, random bytes.
    Lines(u8),
    /// The whole page, random bytes: nothing for deltas or compression to save (see
    /// [`WritePattern::write`] for how they are made).
    Pages,
}

impl WritePattern {
    /// Most cache lines per page of [`WritePattern::Lines`].
    pub const MAX_LINES: u8 = 64;

    /// Read `counters`, `lines:N` (N from 1 to 64) or `pages`.
    pub fn parse(s: &str) -> Option<WritePattern> {
        match s {
            "counters" => Some(WritePattern::Counters),
            "pages" => Some(WritePattern::Pages),
            _ => {
                let n: u8 = s.strip_prefix("lines:")?.parse().ok()?;
                (1..=Self::MAX_LINES)
                    .contains(&n)
                    .then_some(WritePattern::Lines(n))
            }
        }
    }
}

impl WritePattern {
    /// Write one page the pattern's way, with `rng`'s words.
    ///
    /// A whole page ([`WritePattern::Pages`]) is a window of a fixed pool of random bytes, at a
    /// random 8-byte offset, with every word XORed with a fresh random word. Against the page's
    /// previous version and against any other page it is as random as fresh bytes (equal only
    /// if both the offset and the word repeat; equal bytes elsewhere match by chance, one in
    /// 256, so compressors find no runs), but it costs a copy, not a generator run per word:
    /// the model guest runs inside hsb-primary's loop, and a generator writing a 10 Gbit/s
    /// link's dirty rate took most of that loop's core (hsb-bench section 7), where a real
    /// guest writes on its own vCPUs.
    pub(super) fn write(self, page: &mut [u8], rng: &mut SplitMix64) {
        match self {
            WritePattern::Counters => {
                let v = rng.next_u64();
                let off = (v % (PAGE_SIZE as u64 / 8)) as usize * 8;
                page[off..off + 8].copy_from_slice(&v.to_le_bytes());
            }
            WritePattern::Lines(n) => {
                for _ in 0..n {
                    let off = rng.below((PAGE_SIZE / 64) as u64) as usize * 64;
                    rng.fill(&mut page[off..off + 64]);
                }
            }
            WritePattern::Pages => {
                let pool = pool();
                let words = ((pool.len() - PAGE_SIZE) / 8) as u64;
                let off = rng.below(words + 1) as usize * 8;
                let v = rng.next_u64();
                let src = &pool[off..off + PAGE_SIZE];
                for (d, s) in page.chunks_exact_mut(8).zip(src.chunks_exact(8)) {
                    let mut w = [0u8; 8];
                    w.copy_from_slice(s);
                    d.copy_from_slice(&(u64::from_le_bytes(w) ^ v).to_le_bytes());
                }
            }
        }
    }
}

/// Bytes of the pool [`WritePattern::Pages`] takes its pages from: 64 KiB of windows (8,192
/// offsets), small enough to stay in the core's cache.
const POOL_LEN: usize = 64 * 1024 + PAGE_SIZE;

/// The pool of random bytes, made once (the same bytes in every process).
fn pool() -> &'static [u8] {
    static POOL: OnceLock<Vec<u8>> = OnceLock::new();
    POOL.get_or_init(|| {
        let mut v = vec![0u8; POOL_LEN];
        SplitMix64::new(0x6873_625f_706f_6f6c).fill(&mut v);
        v
    })
}

impl std::fmt::Display for WritePattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WritePattern::Counters => f.write_str("counters"),
            WritePattern::Lines(n) => write!(f, "lines:{n}"),
            WritePattern::Pages => f.write_str("pages"),
        }
    }
}

/// The primary's `model.write_pattern` key.
pub const WRITE_PATTERN_KEY: hsb_common::config::KeySpec = hsb_common::config::KeySpec {
    key: "model.write_pattern",
    kind: hsb_common::config::ValueKind::Str,
    default: Some("counters"),
    help: "model workload: how a page is written: counters (one 8-byte word), lines:N (N 64-byte cache lines, 1-64), pages (all of it, random bytes)",
};

/// The model workload's write pattern from a primary's configuration.
pub fn pattern_from_config(
    c: &hsb_common::config::Config,
) -> Result<WritePattern, hsb_common::config::ConfigError> {
    WritePattern::parse(&c.str(WRITE_PATTERN_KEY.key)?).ok_or_else(|| {
        c.error_at(
            WRITE_PATTERN_KEY.key,
            "expected counters, lines:N with N from 1 to 64, or pages",
        )
    })
}
