//! Configuration: one `key = value` file per daemon plus `--set key=value` overrides.
//!
//! Each daemon declares a schema (a table of [`KeySpec`]); the loader checks every key and
//! value against it before the daemon acts, so errors name the file, the line, the key and
//! what was expected. The same schema prints the configuration reference (`config-reference`).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod sections;

use sections::{finish, layer};
pub use sections::{valid_section_name, Section, SectionSpec, Sectioned, MAX_SECTION_NAME};

/// Largest configuration file accepted; also the most `--set` text taken together.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Most characters of a value or line quoted back in an error message.
const MAX_EXCERPT: usize = 80;

/// A value that does not parse as its type (the caller reports what was expected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadValue;

/// The type of a configuration value.
#[derive(Debug, Clone, Copy)]
pub enum ValueKind {
    /// Any text.
    Str,
    /// A file system path.
    Path,
    /// `ip:port`.
    Addr,
    /// Comma-separated `ip:port` list (may be empty).
    AddrList,
    /// A duration: `25ms`, `2s`, `1.5s`, `500us`.
    Duration,
    /// A byte size: `4096`, `64KiB`, `64MiB`, `1GiB`.
    Size,
    /// An unsigned integer within bounds.
    Int { min: u64, max: u64 },
    /// `true` / `false` (also yes/no, on/off).
    Bool,
    /// One of a fixed set of words.
    Choice(&'static [&'static str]),
}

impl ValueKind {
    fn expected(&self) -> String {
        match self {
            ValueKind::Str => "text".into(),
            ValueKind::Path => "a path".into(),
            ValueKind::Addr => "an address ip:port, e.g. 127.0.0.1:7100".into(),
            ValueKind::AddrList => "a comma-separated list of ip:port addresses".into(),
            ValueKind::Duration => "a duration like 25ms, 2s or 500us".into(),
            ValueKind::Size => "a size like 4096, 64KiB, 64MiB or 1GiB".into(),
            ValueKind::Int { min, max } => format!("an integer from {min} to {max}"),
            ValueKind::Bool => "true or false".into(),
            ValueKind::Choice(c) => format!("one of: {}", c.join(", ")),
        }
    }

    /// Whether two values of this kind mean the same (`5s` and `5000ms` do); values that do
    /// not parse are compared as text.
    fn same(&self, a: &str, b: &str) -> bool {
        fn eq<T: PartialEq>(x: Result<T, BadValue>, y: Result<T, BadValue>) -> Option<bool> {
            Some(x.ok()? == y.ok()?)
        }
        let parsed = match self {
            ValueKind::Str | ValueKind::Path | ValueKind::Choice(_) => None,
            ValueKind::Addr => eq(parse_addr(a), parse_addr(b)),
            ValueKind::AddrList => eq(parse_addr_list(a), parse_addr_list(b)),
            ValueKind::Duration => eq(parse_duration(a), parse_duration(b)),
            ValueKind::Size => eq(parse_size(a), parse_size(b)),
            ValueKind::Int { .. } => eq(
                a.trim().parse::<u64>().map_err(|_| BadValue),
                b.trim().parse::<u64>().map_err(|_| BadValue),
            ),
            ValueKind::Bool => eq(parse_bool(a), parse_bool(b)),
        };
        parsed.unwrap_or_else(|| a.trim() == b.trim())
    }

    fn check(&self, v: &str) -> Result<(), BadValue> {
        match self {
            ValueKind::Str | ValueKind::Path => Ok(()),
            ValueKind::Addr => parse_addr(v).map(|_| ()),
            ValueKind::AddrList => parse_addr_list(v).map(|_| ()),
            ValueKind::Duration => parse_duration(v).map(|_| ()),
            ValueKind::Size => parse_size(v).map(|_| ()),
            ValueKind::Int { min, max } => match v.parse::<u64>() {
                Ok(n) if n >= *min && n <= *max => Ok(()),
                _ => Err(BadValue),
            },
            ValueKind::Bool => parse_bool(v).map(|_| ()),
            ValueKind::Choice(c) => {
                if c.contains(&v) {
                    Ok(())
                } else {
                    Err(BadValue)
                }
            }
        }
    }
}

/// One key of a daemon's schema.
#[derive(Debug, Clone, Copy)]
pub struct KeySpec {
    /// The key, e.g. `checkpoint_period` or `model.memory`.
    pub key: &'static str,
    /// Its type.
    pub kind: ValueKind,
    /// Default value as text; `None` makes the key required.
    pub default: Option<&'static str>,
    /// One line of help.
    pub help: &'static str,
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A line of the configuration file.
    File(usize),
    /// A `--set` on the command line.
    CommandLine,
    /// The schema default.
    Default,
}

/// A configuration error: file, line, key and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, or `<command line>`.
    pub source: String,
    /// Line number in the file, if any.
    pub line: Option<usize>,
    /// The key concerned (empty for syntax errors without a key).
    pub key: String,
    /// What was wrong or expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.source)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": key '{}'", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// A loaded, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    source: String,
    schema: &'static [KeySpec],
    values: BTreeMap<&'static str, (String, Origin)>,
}

impl Config {
    /// Load `path` (optional) and apply `overrides` (`key=value`), validating all against
    /// `schema`.
    pub fn load(
        schema: &'static [KeySpec],
        path: Option<&Path>,
        overrides: &[String],
    ) -> Result<Config, ConfigError> {
        let (source, text) = match path {
            Some(p) => (p.display().to_string(), read_bounded(p)?),
            None => ("<defaults>".to_string(), String::new()),
        };
        Config::from_text(schema, &source, &text, overrides)
    }

    /// Like [`Config::load`] from text already read (tests, embedded defaults).
    pub fn from_text(
        schema: &'static [KeySpec],
        source: &str,
        text: &str,
        overrides: &[String],
    ) -> Result<Config, ConfigError> {
        let values = layer(
            schema,
            source,
            text.lines().enumerate().map(|(i, l)| (i + 1, l)),
        )?;
        finish(schema, source, values, overrides, true)
    }

    fn raw(&self, key: &str) -> Result<(&str, &Origin), ConfigError> {
        self.values
            .get(key)
            .map(|(v, o)| (v.as_str(), o))
            .ok_or_else(|| ConfigError {
                source: self.source.clone(),
                line: None,
                key: key.to_string(),
                message: "not in this daemon's schema (a bug: please report)".into(),
            })
    }

    fn typed<T>(
        &self,
        key: &str,
        parse: impl Fn(&str) -> Result<T, BadValue>,
    ) -> Result<T, ConfigError> {
        let (v, origin) = self.raw(key)?;
        parse(v).map_err(|_| self.error(key, origin, &format!("cannot use '{}'", excerpt(v))))
    }

    /// An error about `key`, located where its value came from.
    pub fn error_at(&self, key: &str, message: &str) -> ConfigError {
        let origin = self
            .values
            .get(key)
            .map(|(_, o)| o.clone())
            .unwrap_or(Origin::Default);
        self.error(key, &origin, message)
    }

    fn error(&self, key: &str, origin: &Origin, message: &str) -> ConfigError {
        let (source, line) = match origin {
            Origin::File(n) => (self.source.clone(), Some(*n)),
            Origin::CommandLine => ("<command line>".to_string(), None),
            Origin::Default => (format!("{} (default)", self.source), None),
        };
        ConfigError {
            source,
            line,
            key: key.to_string(),
            message: message.to_string(),
        }
    }

    /// Text value.
    pub fn str(&self, key: &str) -> Result<String, ConfigError> {
        Ok(self.raw(key)?.0.to_string())
    }
    /// Path value.
    pub fn path(&self, key: &str) -> Result<PathBuf, ConfigError> {
        Ok(PathBuf::from(self.raw(key)?.0))
    }
    /// Address value.
    pub fn addr(&self, key: &str) -> Result<SocketAddr, ConfigError> {
        self.typed(key, parse_addr)
    }
    /// Address list value.
    pub fn addrs(&self, key: &str) -> Result<Vec<SocketAddr>, ConfigError> {
        self.typed(key, parse_addr_list)
    }
    /// Duration value.
    pub fn duration(&self, key: &str) -> Result<Duration, ConfigError> {
        self.typed(key, parse_duration)
    }
    /// Size value in bytes.
    pub fn size(&self, key: &str) -> Result<u64, ConfigError> {
        self.typed(key, parse_size)
    }
    /// Integer value.
    pub fn int(&self, key: &str) -> Result<u64, ConfigError> {
        self.typed(key, |v| v.parse::<u64>().map_err(|_| BadValue))
    }
    /// Boolean value.
    pub fn bool(&self, key: &str) -> Result<bool, ConfigError> {
        self.typed(key, parse_bool)
    }

    /// The keys whose values mean something else in `other` (a configuration of the same
    /// schema, e.g. reloaded on SIGHUP), in schema order.
    pub fn changed_keys(&self, other: &Config) -> Vec<&'static str> {
        self.schema
            .iter()
            .filter(|spec| {
                let a = self.values.get(spec.key).map(|(v, _)| v.as_str());
                let b = other.values.get(spec.key).map(|(v, _)| v.as_str());
                match (a, b) {
                    (Some(a), Some(b)) => !spec.kind.same(a, b),
                    (a, b) => a != b,
                }
            })
            .map(|spec| spec.key)
            .collect()
    }

    /// Every key with its value and where it came from, for `show-config` and logs.
    pub fn dump(&self) -> String {
        let mut s = String::new();
        for spec in self.schema {
            if let Some((v, o)) = self.values.get(spec.key) {
                let from = match o {
                    Origin::File(n) => format!("{}:{n}", self.source),
                    Origin::CommandLine => "command line".into(),
                    Origin::Default => "default".into(),
                };
                s.push_str(&format!("{} = {}    # {}\n", spec.key, v, from));
            }
        }
        s
    }
}

/// The configuration reference of a schema, as a markdown table.
pub fn reference_markdown(schema: &[KeySpec]) -> String {
    let mut s = String::from("| key | type | default | meaning |\n|---|---|---|---|\n");
    for k in schema {
        s.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            k.key,
            k.kind.expected(),
            k.default
                .map(|d| format!("`{d}`"))
                .unwrap_or_else(|| "required".into()),
            k.help
        ));
    }
    s
}

/// Read at most [`MAX_CONFIG_BYTES`] of `p` as UTF-8 text. The size is checked on what is read,
/// not on what the file claims, so a growing file, a pipe or `/dev/zero` is refused too.
fn read_bounded(p: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    let e = |m: String| ConfigError {
        source: p.display().to_string(),
        line: None,
        key: String::new(),
        message: m,
    };
    let f = std::fs::File::open(p).map_err(|x| e(format!("cannot read: {x}")))?;
    if f.metadata().is_ok_and(|m| m.is_dir()) {
        return Err(e(
            "is a directory, expected a configuration file (key = value lines)".into(),
        ));
    }
    let mut bytes = Vec::new();
    f.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|x| e(format!("cannot read: {x}")))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(e(format!(
            "larger than {MAX_CONFIG_BYTES} bytes (1 MiB), the most a configuration file may be"
        )));
    }
    String::from_utf8(bytes).map_err(|x| {
        let at = x.utf8_error().valid_up_to();
        let line = x.as_bytes()[..at].iter().filter(|b| **b == b'\n').count() + 1;
        ConfigError {
            source: p.display().to_string(),
            line: Some(line),
            key: String::new(),
            message: format!("not UTF-8 text (invalid byte at offset {at})"),
        }
    })
}

/// `v` as quoted back in an error message: at most [`MAX_EXCERPT`] characters, control
/// characters escaped, so a hostile value cannot flood or garble the terminal or the log.
pub fn excerpt(v: &str) -> String {
    let mut out = String::new();
    for (i, c) in v.chars().enumerate() {
        if i == MAX_EXCERPT {
            out.push_str("...");
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn strip_comment(line: &str) -> &str {
    match line.find('#') {
        Some(i) => &line[..i],
        None => line,
    }
}

/// Keys that were renamed: the old name (`old`) is still read as the new one, with a warning.
/// `epoch_period` was the checkpoint period's name until "epoch" came to mean only the
/// activation epoch (issue 13).
pub const RENAMED: &[(&str, &str)] = &[("epoch_period", "checkpoint_period")];

fn find(schema: &'static [KeySpec], key: &str) -> Option<&'static KeySpec> {
    if let Some(spec) = schema.iter().find(|s| s.key == key) {
        return Some(spec);
    }
    let (old, new) = RENAMED.iter().find(|(old, _)| *old == key)?;
    let spec = schema.iter().find(|s| s.key == *new)?;
    log::warn!("configuration key '{old}' is now '{new}': read as '{new}' (rename it)");
    Some(spec)
}

fn unknown_key(schema: &[KeySpec], key: &str) -> String {
    // The distance is at least the difference in length: only near keys are compared, so a
    // hostile megabyte-long key costs nothing.
    let near: Vec<&str> = schema
        .iter()
        .map(|s| s.key)
        .filter(|k| {
            (k.len().abs_diff(key.len()) <= 2 && edit_distance(k, key) <= 2)
                || (key.len() >= 4 && k.contains(key))
        })
        .collect();
    if near.is_empty() {
        format!(
            "unknown key; known keys: {}",
            schema.iter().map(|s| s.key).collect::<Vec<_>>().join(", ")
        )
    } else {
        format!("unknown key; did you mean {}?", near.join(" or "))
    }
}

/// Levenshtein distance, for "did you mean" (keys are short; bounded by the schema).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Parse `ip:port` (no name resolution: the binaries are static).
pub fn parse_addr(v: &str) -> Result<SocketAddr, BadValue> {
    v.trim().parse::<SocketAddr>().map_err(|_| BadValue)
}

/// Parse a comma-separated address list.
pub fn parse_addr_list(v: &str) -> Result<Vec<SocketAddr>, BadValue> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(parse_addr)
        .collect()
}

/// Parse `25ms`, `2s`, `1.5s`, `500us`, `100ns`, `1m`.
pub fn parse_duration(v: &str) -> Result<Duration, BadValue> {
    let v = v.trim();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or(BadValue)?;
    let (num, unit) = v.split_at(split);
    let n: f64 = num.parse().map_err(|_| BadValue)?;
    let scale = match unit.trim() {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" | "min" => 60.0,
        _ => return Err(BadValue),
    };
    let secs = n * scale;
    if !secs.is_finite() || !(0.0..=86_400.0 * 365.0).contains(&secs) {
        return Err(BadValue);
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parse `4096`, `64KiB`, `64MiB`, `1GiB` (also K/M/G and KB/MB/GB as binary multiples).
pub fn parse_size(v: &str) -> Result<u64, BadValue> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: u64 = num.parse().map_err(|_| BadValue)?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KB" | "KiB" | "k" => 1 << 10,
        "M" | "MB" | "MiB" => 1 << 20,
        "G" | "GB" | "GiB" => 1 << 30,
        _ => return Err(BadValue),
    };
    n.checked_mul(mult).ok_or(BadValue)
}

/// Parse a boolean.
pub fn parse_bool(v: &str) -> Result<bool, BadValue> {
    match v.trim() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(BadValue),
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
