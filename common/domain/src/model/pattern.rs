//! How the model's workload writes a page (`model.write_pattern`).

/// How the model's workload writes a page (`model.write_pattern`): what a checkpoint's page
/// encoding can save depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WritePattern {
    /// One 8-byte word at a random place per page written (counters, pointers): the default.
    #[default]
    Counters,
    /// This many 64-byte cache lines at random places per page written, random bytes.
    Lines(u8),
    /// The whole page, random bytes: nothing for deltas or compression to save.
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
