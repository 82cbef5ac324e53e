//! Probe specifications: what to probe and how often, parsed from one configuration value such as
//! `http 10.0.0.5:80 /health 200`. Addresses are `IP:PORT` only: the witness is a static binary
//! and resolves no host names.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use super::truncate;

/// Interval between the starts of two runs of a probe, unless the caller says otherwise.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(100);
/// How long a run may take before it counts as a timeout, unless the caller says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(250);
/// Longest interval or timeout accepted (keeps deadline arithmetic far from overflow).
pub const MAX_PERIOD: Duration = Duration::from_secs(3600);

/// Longest word (path, request, prefix, argument) in a spec.
const MAX_WORD: usize = 1024;
/// Most words in a command line.
const MAX_ARGS: usize = 64;

const USAGE: &str = "`tcp IP:PORT`, `http IP:PORT [METHOD] PATH [STATUS]`, \
                     `line IP:PORT REQUEST PREFIX` or `cmd PROGRAM [ARG]...`";
const TCP_USAGE: &str = "tcp IP:PORT";
const HTTP_USAGE: &str = "http IP:PORT [METHOD] PATH [STATUS]";
const LINE_USAGE: &str = "line IP:PORT REQUEST PREFIX";
const CMD_USAGE: &str = "cmd PROGRAM [ARG]...";

/// What to probe, the way a client uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeKind {
    /// Ok when a TCP connection is established.
    Tcp(SocketAddr),
    /// Send `METHOD PATH HTTP/1.1` with `Connection: close`; ok when the status line carries
    /// `status`.
    Http {
        addr: SocketAddr,
        method: String,
        path: String,
        status: u16,
    },
    /// Send `request` and a newline; ok when the first reply line starts with `expect`.
    Line {
        addr: SocketAddr,
        request: String,
        expect: String,
    },
    /// Run a program (argv, no shell); ok when it exits 0.
    Cmd(Vec<String>),
}

/// A probe with its own period and timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    pub kind: ProbeKind,
    /// Time between the starts of two runs (a run still in flight delays the next one).
    pub interval: Duration,
    /// Time a run may take before it is abandoned (a command is killed) as a timeout.
    pub timeout: Duration,
}

/// Why a probe specification was refused; each says what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeSpecError {
    /// Nothing but blanks.
    Empty,
    /// The first word is not a probe kind.
    UnknownKind(String),
    /// Too few or too many words for the kind; carries the kind's usage.
    Arity(&'static str),
    /// Not an `IP:PORT` address.
    Address(String),
    /// Not an HTTP method.
    Method(String),
    /// Not an absolute request path.
    Path(String),
    /// Not an HTTP status.
    Status(String),
    /// A word with control characters or longer than the limit.
    Word(String),
    /// A quote was opened and never closed.
    Quote,
    /// Interval or timeout zero or longer than [`MAX_PERIOD`]; names which.
    Period(&'static str),
}

impl fmt::Display for ProbeSpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeSpecError::Empty => write!(f, "empty probe; expected {USAGE}"),
            ProbeSpecError::UnknownKind(k) => {
                write!(f, "unknown probe kind '{k}'; expected {USAGE}")
            }
            ProbeSpecError::Arity(usage) => {
                write!(f, "wrong number of words; expected `{usage}`")
            }
            ProbeSpecError::Address(w) => write!(
                f,
                "'{w}' is not an address IP:PORT (host names are not resolved: the binary is static)"
            ),
            ProbeSpecError::Method(w) => write!(
                f,
                "'{w}' is not an HTTP method; expected 1 to 16 upper-case letters such as GET or HEAD"
            ),
            ProbeSpecError::Path(w) => {
                write!(f, "'{w}' is not a request path; expected one starting with '/'")
            }
            ProbeSpecError::Status(w) => {
                write!(f, "'{w}' is not an HTTP status; expected 100 to 599")
            }
            ProbeSpecError::Word(w) => write!(
                f,
                "'{}' has control characters or is longer than {MAX_WORD} bytes",
                w.escape_debug()
            ),
            ProbeSpecError::Quote => {
                write!(f, "unterminated quote; expected a closing ' or \"")
            }
            ProbeSpecError::Period(what) => write!(
                f,
                "probe {what} must be longer than zero and at most {}s",
                MAX_PERIOD.as_secs()
            ),
        }
    }
}

impl std::error::Error for ProbeSpecError {}

impl ProbeSpec {
    /// A spec with the default interval and timeout.
    pub fn new(kind: ProbeKind) -> ProbeSpec {
        ProbeSpec {
            kind,
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Parse the kind (see [`ProbeKind::parse`]); interval and timeout take their defaults and
    /// are the caller's to set from their own configuration keys.
    pub fn parse(s: &str) -> Result<ProbeSpec, ProbeSpecError> {
        Ok(ProbeSpec::new(ProbeKind::parse(s)?))
    }

    /// Check a spec built by hand as the parser would, plus its interval and timeout.
    pub fn validate(&self) -> Result<(), ProbeSpecError> {
        for (what, d) in [("interval", self.interval), ("timeout", self.timeout)] {
            if d.is_zero() || d > MAX_PERIOD {
                return Err(ProbeSpecError::Period(what));
            }
        }
        self.kind.validate()
    }
}

impl ProbeKind {
    /// Parse `tcp IP:PORT`, `http IP:PORT [METHOD] PATH [STATUS]` (GET and 200 by default),
    /// `line IP:PORT REQUEST PREFIX` or `cmd PROGRAM [ARG]...`. Words are separated by blanks;
    /// `'...'` quotes literally and `"..."` quotes with `\"` and `\\` escapes, so a request line
    /// or a command argument may hold blanks.
    pub fn parse(s: &str) -> Result<ProbeKind, ProbeSpecError> {
        let w = words(s)?;
        let Some((kind, rest)) = w.split_first() else {
            return Err(ProbeSpecError::Empty);
        };
        let kind = match kind.as_str() {
            "tcp" => match rest {
                [a] => ProbeKind::Tcp(addr(a)?),
                _ => return Err(ProbeSpecError::Arity(TCP_USAGE)),
            },
            "http" => {
                let (a, rest) = rest
                    .split_first()
                    .ok_or(ProbeSpecError::Arity(HTTP_USAGE))?;
                let (method, path, status) = match rest {
                    [p] if p.starts_with('/') => ("GET", p, None),
                    [p, s] if p.starts_with('/') => ("GET", p, Some(s)),
                    [m, p] => (m.as_str(), p, None),
                    [m, p, s] => (m.as_str(), p, Some(s)),
                    _ => return Err(ProbeSpecError::Arity(HTTP_USAGE)),
                };
                let status = match status {
                    Some(s) => s
                        .parse::<u16>()
                        .map_err(|_| ProbeSpecError::Status(s.clone()))?,
                    None => 200,
                };
                ProbeKind::Http {
                    addr: addr(a)?,
                    method: method.to_string(),
                    path: path.clone(),
                    status,
                }
            }
            "line" => match rest {
                [a, request, expect] => ProbeKind::Line {
                    addr: addr(a)?,
                    request: request.clone(),
                    expect: expect.clone(),
                },
                _ => return Err(ProbeSpecError::Arity(LINE_USAGE)),
            },
            "cmd" if rest.is_empty() => return Err(ProbeSpecError::Arity(CMD_USAGE)),
            "cmd" => ProbeKind::Cmd(rest.to_vec()),
            other => return Err(ProbeSpecError::UnknownKind(other.to_string())),
        };
        kind.validate()?;
        Ok(kind)
    }

    /// Check what the type cannot: methods, paths, statuses, words, argument counts.
    pub fn validate(&self) -> Result<(), ProbeSpecError> {
        match self {
            ProbeKind::Tcp(_) => Ok(()),
            ProbeKind::Http {
                method,
                path,
                status,
                ..
            } => {
                word(method)?;
                word(path)?;
                if method.is_empty()
                    || method.len() > 16
                    || !method.bytes().all(|b| b.is_ascii_uppercase())
                {
                    return Err(ProbeSpecError::Method(method.clone()));
                }
                if !path.starts_with('/') || path.contains(char::is_whitespace) {
                    return Err(ProbeSpecError::Path(path.clone()));
                }
                if !(100..=599).contains(status) {
                    return Err(ProbeSpecError::Status(status.to_string()));
                }
                Ok(())
            }
            ProbeKind::Line {
                request, expect, ..
            } => {
                word(request)?;
                word(expect)
            }
            ProbeKind::Cmd(argv) => {
                if argv.is_empty() || argv.len() > MAX_ARGS || argv[0].is_empty() {
                    return Err(ProbeSpecError::Arity(CMD_USAGE));
                }
                argv.iter().try_for_each(|a| word(a))
            }
        }
    }

    /// The address probed, if the probe talks to one.
    pub fn addr(&self) -> Option<SocketAddr> {
        match self {
            ProbeKind::Tcp(a)
            | ProbeKind::Http { addr: a, .. }
            | ProbeKind::Line { addr: a, .. } => Some(*a),
            ProbeKind::Cmd(_) => None,
        }
    }
}

/// The canonical spec text, which [`ProbeKind::parse`] reads back to the same kind.
impl fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeKind::Tcp(a) => write!(f, "tcp {a}"),
            ProbeKind::Http {
                addr,
                method,
                path,
                status,
            } => write!(f, "http {addr} {} {} {status}", quote(method), quote(path)),
            ProbeKind::Line {
                addr,
                request,
                expect,
            } => write!(f, "line {addr} {} {}", quote(request), quote(expect)),
            ProbeKind::Cmd(argv) => {
                f.write_str("cmd")?;
                argv.iter().try_for_each(|a| write!(f, " {}", quote(a)))
            }
        }
    }
}

fn addr(w: &str) -> Result<SocketAddr, ProbeSpecError> {
    w.parse()
        .map_err(|_| ProbeSpecError::Address(w.to_string()))
}

fn word(w: &str) -> Result<(), ProbeSpecError> {
    if w.len() > MAX_WORD || w.contains(char::is_control) {
        let mut shown = w.to_string();
        truncate(&mut shown, 40);
        return Err(ProbeSpecError::Word(shown));
    }
    Ok(())
}

/// Split a spec into words: blanks separate, `'...'` quotes literally, `"..."` quotes with `\"`
/// and `\\` escapes; adjacent pieces join (`a"b c"` is `ab c`).
fn words(s: &str) -> Result<Vec<String>, ProbeSpecError> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err(ProbeSpecError::Quote),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err(ProbeSpecError::Quote),
                        },
                        Some(c) => cur.push(c),
                        None => return Err(ProbeSpecError::Quote),
                    }
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// Quote a word only when [`words`] would otherwise split or unquote it.
fn quote(w: &str) -> String {
    if !w.is_empty() && !w.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'') {
        return w.to_string();
    }
    let mut q = String::with_capacity(w.len() + 2);
    q.push('"');
    for c in w.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_each_kind() {
        assert_eq!(
            ProbeKind::parse("tcp 10.0.0.5:80"),
            Ok(ProbeKind::Tcp(sa("10.0.0.5:80")))
        );
        assert_eq!(
            ProbeKind::parse("  http   10.0.0.5:80 /health "),
            Ok(ProbeKind::Http {
                addr: sa("10.0.0.5:80"),
                method: "GET".into(),
                path: "/health".into(),
                status: 200
            })
        );
        assert_eq!(
            ProbeKind::parse("http [::1]:8080 HEAD /x?y=1 204"),
            Ok(ProbeKind::Http {
                addr: sa("[::1]:8080"),
                method: "HEAD".into(),
                path: "/x?y=1".into(),
                status: 204
            })
        );
        assert_eq!(
            ProbeKind::parse("http 10.0.0.5:80 /health 503").map(|k| match k {
                ProbeKind::Http { status, .. } => status,
                _ => 0,
            }),
            Ok(503)
        );
        assert_eq!(
            ProbeKind::parse("line 127.0.0.1:7000 PING PONG"),
            Ok(ProbeKind::Line {
                addr: sa("127.0.0.1:7000"),
                request: "PING".into(),
                expect: "PONG".into()
            })
        );
        assert_eq!(
            ProbeKind::parse("line 127.0.0.1:7000 \"GET key\" 'VALUE '"),
            Ok(ProbeKind::Line {
                addr: sa("127.0.0.1:7000"),
                request: "GET key".into(),
                expect: "VALUE ".into()
            })
        );
        assert_eq!(
            ProbeKind::parse("cmd /usr/lib/nagios/check_foo --arg -w 'a b' \"say \\\"hi\\\"\""),
            Ok(ProbeKind::Cmd(vec![
                "/usr/lib/nagios/check_foo".into(),
                "--arg".into(),
                "-w".into(),
                "a b".into(),
                "say \"hi\"".into()
            ]))
        );
        let s = ProbeSpec::parse("tcp 127.0.0.1:1").unwrap();
        assert_eq!((s.interval, s.timeout), (DEFAULT_INTERVAL, DEFAULT_TIMEOUT));
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn errors_say_what_was_expected() {
        let err = |s: &str| ProbeKind::parse(s).unwrap_err();
        assert_eq!(err(""), ProbeSpecError::Empty);
        assert_eq!(
            err("udp 1.2.3.4:5"),
            ProbeSpecError::UnknownKind("udp".into())
        );
        assert_eq!(err("tcp"), ProbeSpecError::Arity(TCP_USAGE));
        assert_eq!(err("tcp 1.2.3.4:5 x"), ProbeSpecError::Arity(TCP_USAGE));
        assert_eq!(
            err("tcp example.com:80"),
            ProbeSpecError::Address("example.com:80".into())
        );
        assert_eq!(
            err("tcp 10.0.0.5"),
            ProbeSpecError::Address("10.0.0.5".into())
        );
        assert_eq!(err("http 1.2.3.4:5"), ProbeSpecError::Arity(HTTP_USAGE));
        assert_eq!(
            err("http 1.2.3.4:5 / abc"),
            ProbeSpecError::Status("abc".into())
        );
        assert_eq!(
            err("http 1.2.3.4:5 / 99"),
            ProbeSpecError::Status("99".into())
        );
        assert_eq!(
            err("http 1.2.3.4:5 get /"),
            ProbeSpecError::Method("get".into())
        );
        assert_eq!(
            err("http 1.2.3.4:5 GET health"),
            ProbeSpecError::Path("health".into())
        );
        assert_eq!(
            err("http 1.2.3.4:5 GET / 200 extra"),
            ProbeSpecError::Arity(HTTP_USAGE)
        );
        assert_eq!(
            err("line 1.2.3.4:5 PING"),
            ProbeSpecError::Arity(LINE_USAGE)
        );
        assert_eq!(err("line 1.2.3.4:5 \"PING"), ProbeSpecError::Quote);
        assert_eq!(
            err("line 1.2.3.4:5 \"A\r\nB\" C"),
            ProbeSpecError::Word("A\r\nB".into())
        );
        assert_eq!(err("cmd"), ProbeSpecError::Arity(CMD_USAGE));
        assert_eq!(err("cmd ''"), ProbeSpecError::Arity(CMD_USAGE));
        let msg = err("tcp example.com:80").to_string();
        assert!(
            msg.contains("IP:PORT") && msg.contains("not resolved"),
            "{msg}"
        );
        assert!(err("udp x").to_string().contains("`tcp IP:PORT`"));
        let mut s = ProbeSpec::parse("tcp 127.0.0.1:1").unwrap();
        s.timeout = Duration::ZERO;
        assert_eq!(s.validate(), Err(ProbeSpecError::Period("timeout")));
        s.timeout = DEFAULT_TIMEOUT;
        s.interval = MAX_PERIOD * 2;
        assert_eq!(s.validate(), Err(ProbeSpecError::Period("interval")));
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "tcp 10.0.0.5:80",
            "http [::1]:80 GET /health 200",
            "http 10.0.0.5:80 /",
            "line 127.0.0.1:7000 PING PONG",
            "line 127.0.0.1:7000 \"GET key\" ''",
            "cmd /bin/sh -c 'echo \"x\" \\ y; exit 3'",
        ] {
            let k = ProbeKind::parse(s).unwrap();
            assert_eq!(
                ProbeKind::parse(&k.to_string()),
                Ok(k.clone()),
                "{s} -> {k}"
            );
        }
    }
}
