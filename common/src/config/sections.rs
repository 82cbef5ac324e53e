//! Layers of a configuration file, and files with sections: `[guest NAME]` headers after the
//! process-wide keys, each section a complete configuration of its own (the process-wide lines
//! with the section's lines over them). One hsb-witness serves several protected guests this
//! way, while a file without sections reads exactly as before.

use std::collections::BTreeMap;
use std::path::Path;

use super::{
    excerpt, find, read_bounded, strip_comment, unknown_key, Config, ConfigError, KeySpec,
};
use super::{Origin, MAX_CONFIG_BYTES};

/// Values of one layer of a file, by key.
pub(super) type Values = BTreeMap<&'static str, (String, Origin)>;

/// The `key = value` lines of one layer (numbered as in the file), each key at most once,
/// each value of its key's type.
pub(super) fn layer<'a>(
    schema: &'static [KeySpec],
    source: &str,
    lines: impl Iterator<Item = (usize, &'a str)>,
) -> Result<Values, ConfigError> {
    let mut values = Values::new();
    let err = |line: Option<usize>, key: &str, message: String| ConfigError {
        source: source.to_string(),
        line,
        key: key.to_string(),
        message,
    };
    for (n, raw) in lines {
        let line = strip_comment(raw).trim();
        if line.is_empty() {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(err(
                Some(n),
                "",
                format!("expected 'key = value', got '{}'", excerpt(line)),
            ));
        };
        let (k, v) = (k.trim(), v.trim());
        let spec =
            find(schema, k).ok_or_else(|| err(Some(n), &excerpt(k), unknown_key(schema, k)))?;
        if values.contains_key(spec.key) {
            return Err(err(Some(n), k, "set twice in this file".into()));
        }
        spec.kind.check(v).map_err(|_| {
            err(
                Some(n),
                k,
                format!("expected {}, got '{}'", spec.kind.expected(), excerpt(v)),
            )
        })?;
        values.insert(spec.key, (v.to_string(), Origin::File(n)));
    }
    Ok(values)
}

/// File values, then the `--set` overrides over them, then the defaults of the keys still
/// unset; a required key without a value is an error when `require` is set.
pub(super) fn finish(
    schema: &'static [KeySpec],
    source: &str,
    mut values: Values,
    overrides: &[String],
    require: bool,
) -> Result<Config, ConfigError> {
    let cl = |k: &str, m: String| ConfigError {
        source: "<command line>".into(),
        line: None,
        key: k.to_string(),
        message: m,
    };
    let set_bytes: usize = overrides.iter().map(String::len).sum();
    if set_bytes as u64 > MAX_CONFIG_BYTES {
        return Err(cl(
            "",
            format!("--set values of {set_bytes} bytes in all exceed 1 MiB"),
        ));
    }
    for o in overrides {
        let Some((k, v)) = o.split_once('=') else {
            return Err(cl(
                "",
                format!("--set expects key=value, got '{}'", excerpt(o)),
            ));
        };
        let (k, v) = (k.trim(), v.trim());
        let spec = find(schema, k).ok_or_else(|| cl(&excerpt(k), unknown_key(schema, k)))?;
        spec.kind.check(v).map_err(|_| {
            cl(
                k,
                format!("expected {}, got '{}'", spec.kind.expected(), excerpt(v)),
            )
        })?;
        values.insert(spec.key, (v.to_string(), Origin::CommandLine));
    }
    for spec in schema {
        if values.contains_key(spec.key) {
            continue;
        }
        match spec.default {
            Some(d) => {
                values.insert(spec.key, (d.to_string(), Origin::Default));
            }
            None if !require => {}
            None => {
                return Err(ConfigError {
                    source: source.to_string(),
                    line: None,
                    key: spec.key.to_string(),
                    message: format!(
                        "required ({}), expected {}",
                        spec.help,
                        spec.kind.expected()
                    ),
                })
            }
        }
    }
    Ok(Config {
        source: source.to_string(),
        schema,
        values,
    })
}

/// Numbered lines of a file.
type Lines<'a> = Vec<(usize, &'a str)>;

/// What sections a file may have.
#[derive(Debug, Clone, Copy)]
pub struct SectionSpec {
    /// The header's word: `[WORD NAME]`.
    pub word: &'static str,
    /// The keys a section may set (the others are for the whole process).
    pub keys: &'static [&'static str],
    /// Most sections in one file.
    pub max: usize,
}

/// One section: its name, the line of its header, and its configuration (the process-wide
/// lines, the section's over them, then `--set` and the defaults).
#[derive(Debug, Clone)]
pub struct Section {
    /// The name in its header.
    pub name: String,
    /// The header's line.
    pub line: usize,
    /// The complete configuration of this section.
    pub config: Config,
}

/// A file with sections.
#[derive(Debug, Clone)]
pub struct Sectioned {
    /// The process-wide lines (with `--set` and the defaults). When the file has sections,
    /// required keys may be missing here: each section must have them.
    pub global: Config,
    /// The sections, in file order (empty for a file without sections).
    pub sections: Vec<Section>,
}

/// Longest section name.
pub const MAX_SECTION_NAME: usize = 32;

/// Whether `name` may name a section: 1 to 32 of `A-Z a-z 0-9 _ . -`.
pub fn valid_section_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_SECTION_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Keys for a message: dotted keys shown as their group (`failover.*`).
fn key_list(keys: &[&str]) -> String {
    let mut out: Vec<String> = Vec::new();
    for k in keys {
        let k = match k.split_once('.') {
            Some((group, _)) => format!("{group}.*"),
            None => k.to_string(),
        };
        if !out.contains(&k) {
            out.push(k);
        }
    }
    out.join(", ")
}

impl Config {
    /// Load `path` with sections of `spec` (see [`Config::from_text_sectioned`]).
    pub fn load_sectioned(
        schema: &'static [KeySpec],
        path: Option<&Path>,
        overrides: &[String],
        spec: &SectionSpec,
    ) -> Result<Sectioned, ConfigError> {
        let (source, text) = match path {
            Some(p) => (p.display().to_string(), read_bounded(p)?),
            None => ("<defaults>".to_string(), String::new()),
        };
        Config::from_text_sectioned(schema, &source, &text, overrides, spec)
    }

    /// Read `text`: process-wide `key = value` lines, then optionally `[WORD NAME]` sections,
    /// each setting only `spec.keys`. A section's configuration is the process-wide lines with
    /// its own over them; `--set` overrides apply to the process-wide part and to every section
    /// (the command line wins over the file everywhere).
    pub fn from_text_sectioned(
        schema: &'static [KeySpec],
        source: &str,
        text: &str,
        overrides: &[String],
        spec: &SectionSpec,
    ) -> Result<Sectioned, ConfigError> {
        let err = |line: usize, key: &str, message: String| ConfigError {
            source: source.to_string(),
            line: Some(line),
            key: key.to_string(),
            message,
        };
        // (name, header line, its lines)
        let mut heads: Vec<(String, usize, Lines)> = Vec::new();
        let mut global_lines: Vec<(usize, &str)> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = strip_comment(raw).trim();
            if let Some(inner) = line.strip_prefix('[') {
                let words: Vec<&str> = inner
                    .strip_suffix(']')
                    .map(|w| w.split_whitespace().collect())
                    .unwrap_or_default();
                let expected = format!(
                    "expected a section header '[{} NAME]' (NAME: 1 to {MAX_SECTION_NAME} of A-Z a-z 0-9 _ . -), got '{}'",
                    spec.word,
                    excerpt(line)
                );
                let [word, name] = words[..] else {
                    return Err(err(n, "", expected));
                };
                if word != spec.word || !valid_section_name(name) {
                    return Err(err(n, "", expected));
                }
                if let Some((_, at, _)) = heads.iter().find(|(x, _, _)| x == name) {
                    return Err(err(
                        n,
                        "",
                        format!(
                            "section '[{} {name}]' already began on line {at}",
                            spec.word
                        ),
                    ));
                }
                if heads.len() == spec.max {
                    return Err(err(
                        n,
                        "",
                        format!("more than {} [{} ...] sections", spec.max, spec.word),
                    ));
                }
                heads.push((name.to_string(), n, Vec::new()));
            } else {
                match heads.last_mut() {
                    Some((_, _, lines)) => lines.push((n, raw)),
                    None => global_lines.push((n, raw)),
                }
            }
        }
        let global_values = layer(schema, source, global_lines.into_iter())?;
        let global = finish(
            schema,
            source,
            global_values.clone(),
            overrides,
            heads.is_empty(),
        )?;
        let mut sections = Vec::with_capacity(heads.len());
        for (name, line, lines) in heads {
            let own = layer(schema, source, lines.into_iter())?;
            for (k, (_, origin)) in &own {
                if !spec.keys.contains(k) {
                    let at = match origin {
                        Origin::File(n) => *n,
                        _ => line,
                    };
                    return Err(err(
                        at,
                        k,
                        format!(
                            "is for the whole process, not one {}: set it before the first [{} ...] section (a section may set: {})",
                            spec.word,
                            spec.word,
                            key_list(spec.keys)
                        ),
                    ));
                }
            }
            let mut values = global_values.clone();
            values.extend(own);
            let config = finish(schema, source, values, overrides, true).map_err(|mut e| {
                if e.line.is_none() && e.source == source {
                    e.message = format!("{} (section [{} {name}])", e.message, spec.word);
                    e.line = Some(line);
                }
                e
            })?;
            sections.push(Section { name, line, config });
        }
        Ok(Sectioned { global, sections })
    }

    /// Whether `key` has its schema default (neither the file nor `--set` gave it).
    pub fn is_default(&self, key: &str) -> bool {
        self.values
            .get(key)
            .is_none_or(|(_, o)| *o == Origin::Default)
    }

    /// The line of the file that set `key`, if the file set it.
    pub fn line_of(&self, key: &str) -> Option<usize> {
        match self.values.get(key) {
            Some((_, Origin::File(n))) => Some(*n),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ValueKind;

    static SCHEMA: &[KeySpec] = &[
        KeySpec {
            key: "node",
            kind: ValueKind::Str,
            default: Some("w"),
            help: "name",
        },
        KeySpec {
            key: "id",
            kind: ValueKind::Int { min: 0, max: 9 },
            default: None,
            help: "id",
        },
        KeySpec {
            key: "listen",
            kind: ValueKind::Addr,
            default: None,
            help: "where",
        },
        KeySpec {
            key: "period",
            kind: ValueKind::Duration,
            default: Some("20ms"),
            help: "how often",
        },
    ];
    const SPEC: SectionSpec = SectionSpec {
        word: "guest",
        keys: &["id", "listen", "period"],
        max: 3,
    };

    fn load(text: &str, sets: &[&str]) -> Result<Sectioned, String> {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        Config::from_text_sectioned(SCHEMA, "w.conf", text, &sets, &SPEC).map_err(|e| e.to_string())
    }

    #[test]
    fn a_file_without_sections_reads_as_before() {
        let s = load("id = 1\nlisten = 127.0.0.1:1\n", &[]).expect("ok");
        assert!(s.sections.is_empty());
        assert_eq!(s.global.int("id").expect("id"), 1);
        assert!(s.global.is_default("period") && !s.global.is_default("id"));
        assert_eq!(s.global.line_of("listen"), Some(2));
        // Required keys are required without sections.
        let e = load("id = 1\n", &[]).expect_err("listen");
        assert!(e.starts_with("w.conf: key 'listen': required"), "{e}");
    }

    #[test]
    fn sections_inherit_the_process_wide_lines_and_override_them() {
        let text = "node = client-1\nid = 1\nperiod = 10ms\n\n[guest web]\nlisten = 127.0.0.1:1\n\n[guest db]   # the database\nlisten = 127.0.0.1:2\nid = 4\nperiod = 30ms\n";
        let s = load(text, &[]).expect("ok");
        assert_eq!(s.global.str("node").expect("node"), "client-1");
        let names: Vec<_> = s
            .sections
            .iter()
            .map(|x| (x.name.as_str(), x.line))
            .collect();
        assert_eq!(names, [("web", 5), ("db", 8)]);
        let web = &s.sections[0].config;
        let db = &s.sections[1].config;
        assert_eq!(web.int("id").expect("id"), 1);
        assert_eq!(db.int("id").expect("id"), 4);
        assert_eq!(web.duration("period").expect("p").as_millis(), 10);
        assert_eq!(db.duration("period").expect("p").as_millis(), 30);
        assert_eq!(db.line_of("period"), Some(11));
        assert_eq!(web.line_of("period"), Some(3));
        assert_eq!(web.str("node").expect("node"), "client-1");
        // --set wins everywhere.
        let s = load(text, &["period=5ms"]).expect("ok");
        assert!(s
            .sections
            .iter()
            .all(|x| x.config.duration("period").expect("p").as_millis() == 5));
        // Without a global id, each section needs its own.
        let s = load("[guest a]\nid = 2\nlisten = 127.0.0.1:1\n", &[]).expect("ok");
        assert_eq!(s.sections[0].config.int("id").expect("id"), 2);
    }

    #[test]
    fn bad_sections_are_refused_at_their_line() {
        for (text, want) in [
            ("[guest]\n", "w.conf:1: expected a section header '[guest NAME]'"),
            ("[host a]\n", "w.conf:1: expected a section header '[guest NAME]'"),
            ("[guest a b]\n", "w.conf:1: expected a section header"),
            ("[guest a/b]\n", "w.conf:1: expected a section header"),
            ("[guest a\n", "w.conf:1: expected a section header"),
            (
                "id = 1\n[guest a]\nlisten = 127.0.0.1:1\n[guest a]\n",
                "w.conf:4: section '[guest a]' already began on line 2",
            ),
            (
                "id = 1\n[guest a]\nlisten = 127.0.0.1:1\nnode = x\n",
                "w.conf:4: key 'node': is for the whole process, not one guest",
            ),
            (
                "[guest a]\nlisten = 127.0.0.1:1\n",
                "w.conf:1: key 'id': required (id), expected an integer from 0 to 9 (section [guest a])",
            ),
            (
                "id = 1\n[guest a]\nlisten = nowhere\n",
                "w.conf:3: key 'listen': expected an address",
            ),
            (
                "id = 1\n[guest a]\nlisten = 127.0.0.1:1\nlisten = 127.0.0.1:2\n",
                "w.conf:4: key 'listen': set twice",
            ),
            (
                "id = 1\nlisten = 127.0.0.1:9\n[guest a]\n[guest b]\n[guest c]\n[guest d]\n",
                "w.conf:6: more than 3 [guest ...] sections",
            ),
        ] {
            let e = load(text, &[]).expect_err(text);
            assert!(e.starts_with(want), "{text:?}: {e}");
        }
        assert!(valid_section_name("web-1.a_b") && !valid_section_name(&"a".repeat(33)));
    }
}
