//! A tiny JSON writer and a bounded JSON reader, enough for the one-line records of this module.
//!
//! The reader accepts objects, arrays, strings (with the standard escapes), unsigned integers,
//! `true`, `false` and `null`: exactly what the writer emits. Lines longer than [`MAX_LINE`], nesting
//! deeper than [`MAX_DEPTH`] and containers larger than [`MAX_ITEMS`] are errors, never allocations.

use core::fmt::{self, Write};

/// Longest line read.
pub const MAX_LINE: usize = 16 * 1024;
/// Deepest nesting read.
pub const MAX_DEPTH: usize = 4;
/// Most members of one object or elements of one array.
pub const MAX_ITEMS: usize = 64;

/// A JSON value as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An unsigned integer.
    Num(u64),
    /// A string.
    Str(String),
    /// An array.
    Arr(Vec<Value>),
    /// An object, members in order.
    Obj(Vec<(String, Value)>),
}

impl Value {
    /// Member `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Obj(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The value as text (numbers and booleans in their JSON spelling), `None` for null and
    /// containers. Records keep every field as text, so this is how they read values.
    pub fn as_text(&self) -> Option<String> {
        match self {
            Value::Str(s) => Some(s.clone()),
            Value::Num(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
}

/// Why a line is not the JSON expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    /// Byte offset in the line.
    pub at: usize,
    /// What was expected there.
    pub expected: &'static str,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {}: expected {}", self.at, self.expected)
    }
}

impl std::error::Error for JsonError {}

/// Parse one line holding one JSON value.
pub fn parse(line: &str) -> Result<Value, JsonError> {
    if line.len() > MAX_LINE {
        return Err(JsonError {
            at: MAX_LINE,
            expected: "a line of at most 16 KiB",
        });
    }
    let mut r = Reader {
        b: line.as_bytes(),
        i: 0,
    };
    let v = r.value(0)?;
    r.ws();
    if r.i != r.b.len() {
        return Err(r.err("end of line"));
    }
    Ok(v)
}

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl Reader<'_> {
    fn err(&self, expected: &'static str) -> JsonError {
        JsonError {
            at: self.i,
            expected,
        }
    }

    fn ws(&mut self) {
        while self.b.get(self.i).is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, JsonError> {
        self.ws();
        match self.b.get(self.i) {
            Some(b'{') => {
                if depth >= MAX_DEPTH {
                    return Err(self.err("nesting of at most 4 levels"));
                }
                self.i += 1;
                let mut m = Vec::new();
                if self.eat(b'}') {
                    return Ok(Value::Obj(m));
                }
                loop {
                    if m.len() >= MAX_ITEMS {
                        return Err(self.err("at most 64 members"));
                    }
                    self.ws();
                    let k = self.string()?;
                    if !self.eat(b':') {
                        return Err(self.err("':'"));
                    }
                    let v = self.value(depth + 1)?;
                    m.push((k, v));
                    if self.eat(b',') {
                        continue;
                    }
                    if self.eat(b'}') {
                        return Ok(Value::Obj(m));
                    }
                    return Err(self.err("',' or '}'"));
                }
            }
            Some(b'[') => {
                if depth >= MAX_DEPTH {
                    return Err(self.err("nesting of at most 4 levels"));
                }
                self.i += 1;
                let mut a = Vec::new();
                if self.eat(b']') {
                    return Ok(Value::Arr(a));
                }
                loop {
                    if a.len() >= MAX_ITEMS {
                        return Err(self.err("at most 64 elements"));
                    }
                    a.push(self.value(depth + 1)?);
                    if self.eat(b',') {
                        continue;
                    }
                    if self.eat(b']') {
                        return Ok(Value::Arr(a));
                    }
                    return Err(self.err("',' or ']'"));
                }
            }
            Some(b'"') => Ok(Value::Str(self.string()?)),
            Some(c) if c.is_ascii_digit() => {
                let start = self.i;
                while self.b.get(self.i).is_some_and(|c| c.is_ascii_digit()) {
                    self.i += 1;
                }
                let s =
                    core::str::from_utf8(&self.b[start..self.i]).map_err(|_| self.err("digits"))?;
                s.parse().map(Value::Num).map_err(|_| JsonError {
                    at: start,
                    expected: "an unsigned 64-bit integer",
                })
            }
            _ => {
                for (word, v) in [
                    ("true", Value::Bool(true)),
                    ("false", Value::Bool(false)),
                    ("null", Value::Null),
                ] {
                    if self.b[self.i..].starts_with(word.as_bytes()) {
                        self.i += word.len();
                        return Ok(v);
                    }
                }
                Err(self.err("a value"))
            }
        }
    }

    fn string(&mut self) -> Result<String, JsonError> {
        if self.b.get(self.i) != Some(&b'"') {
            return Err(self.err("'\"'"));
        }
        self.i += 1;
        let mut s = String::new();
        loop {
            let start = self.i;
            while self
                .b
                .get(self.i)
                .is_some_and(|c| *c != b'"' && *c != b'\\' && *c >= 0x20)
            {
                self.i += 1;
            }
            // Safe split: the stop bytes are ASCII, so this is a char boundary of valid UTF-8 input.
            let chunk =
                core::str::from_utf8(&self.b[start..self.i]).map_err(|_| self.err("UTF-8"))?;
            s.push_str(chunk);
            match self.b.get(self.i) {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(s);
                }
                Some(b'\\') => {
                    self.i += 1;
                    let c = self
                        .b
                        .get(self.i)
                        .copied()
                        .ok_or_else(|| self.err("an escape"))?;
                    self.i += 1;
                    s.push(match c {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'u' => {
                            let hex = self
                                .b
                                .get(self.i..self.i + 4)
                                .and_then(|h| core::str::from_utf8(h).ok())
                                .and_then(|h| u32::from_str_radix(h, 16).ok())
                                .ok_or_else(|| self.err("four hex digits"))?;
                            self.i += 4;
                            // Surrogates are not emitted by the writer; they are replaced here.
                            char::from_u32(hex).unwrap_or('\u{fffd}')
                        }
                        _ => return Err(self.err("a valid escape")),
                    });
                }
                _ => return Err(self.err("a closing '\"'")),
            }
        }
    }
}

/// Builds one JSON object on one line.
#[derive(Debug, Default)]
pub struct ObjWriter {
    s: String,
    first: bool,
}

impl ObjWriter {
    /// Start an object.
    pub fn new() -> ObjWriter {
        ObjWriter {
            s: String::from("{"),
            first: true,
        }
    }

    fn key(&mut self, k: &str) {
        if !self.first {
            self.s.push(',');
        }
        self.first = false;
        push_str(&mut self.s, k);
        self.s.push(':');
    }

    /// `"k":"v"`.
    pub fn str(&mut self, k: &str, v: &str) -> &mut Self {
        self.key(k);
        push_str(&mut self.s, v);
        self
    }

    /// `"k":n`.
    pub fn num(&mut self, k: &str, v: u64) -> &mut Self {
        self.key(k);
        let _ = write!(self.s, "{v}");
        self
    }

    /// `"k":true|false`.
    pub fn bool(&mut self, k: &str, v: bool) -> &mut Self {
        self.key(k);
        self.s.push_str(if v { "true" } else { "false" });
        self
    }

    /// `"k":n` or `"k":null`.
    pub fn opt_num(&mut self, k: &str, v: Option<u64>) -> &mut Self {
        match v {
            Some(n) => self.num(k, n),
            None => {
                self.key(k);
                self.s.push_str("null");
                self
            }
        }
    }

    /// `"k":<raw>` where raw is already JSON (a nested object or array).
    pub fn raw(&mut self, k: &str, raw: &str) -> &mut Self {
        self.key(k);
        self.s.push_str(raw);
        self
    }

    /// A field kept as text: digits become a number, `true`/`false` a boolean, anything else a string.
    pub fn text(&mut self, k: &str, v: &str) -> &mut Self {
        if !v.is_empty()
            && v.len() < 20
            && v.bytes().all(|c| c.is_ascii_digit())
            && !(v.len() > 1 && v.starts_with('0'))
        {
            self.key(k);
            self.s.push_str(v);
            self
        } else if v == "true" || v == "false" {
            self.bool(k, v == "true")
        } else {
            self.str(k, v)
        }
    }

    /// Close the object.
    pub fn finish(mut self) -> String {
        self.s.push('}');
        self.s
    }
}

/// Append `v` as a JSON string literal.
pub fn push_str(out: &mut String, v: &str) {
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut w = ObjWriter::new();
        w.str("s", "a\"b\\c\nd\u{1}é")
            .num("n", u64::MAX)
            .bool("b", false)
            .opt_num("o", None)
            .text("t1", "42")
            .text("t2", "042")
            .text("t3", "true")
            .text("t4", "50ms")
            .raw("a", "[{\"x\":1},[]]");
        let line = w.finish();
        let v = parse(&line).expect("parse");
        assert_eq!(v.get("s"), Some(&Value::Str("a\"b\\c\nd\u{1}é".into())));
        assert_eq!(v.get("n"), Some(&Value::Num(u64::MAX)));
        assert_eq!(v.get("b"), Some(&Value::Bool(false)));
        assert_eq!(v.get("o"), Some(&Value::Null));
        for k in ["t1", "t2", "t3", "t4"] {
            assert!(v.get(k).and_then(Value::as_text).is_some());
        }
        assert_eq!(v.get("t2").and_then(Value::as_text).as_deref(), Some("042"));
        assert_eq!(
            v.get("t4").and_then(Value::as_text).as_deref(),
            Some("50ms")
        );
    }

    #[test]
    fn errors_are_located_and_bounded() {
        for (bad, at) in [
            ("", 0),
            ("{", 1),
            ("{\"a\" 1}", 5),
            ("{\"a\":1,}", 7),
            ("[1 2]", 3),
            ("\"abc", 4),
            ("{\"a\":-1}", 5),
            ("{\"a\":99999999999999999999}", 5),
            ("{} x", 3),
            ("\"\\q\"", 3),
        ] {
            let e = parse(bad).expect_err(bad);
            assert_eq!(e.at, at, "{bad}: {e}");
        }
        assert!(parse("[[[[[1]]]]]").is_err());
        assert!(parse(&format!("[{}1]", "1,".repeat(64))).is_err());
        assert!(parse(&" ".repeat(MAX_LINE + 1)).is_err());
    }
}
