//! Scraping a daemon's metrics and reading them with real parsers of the Prometheus text
//! format: the Python client library's parser (`prometheus_client`, installed by `.ci/run`)
//! and `promtool check metrics` (Debian's `prometheus` package, installed by `.ci/run`). A test
//! whose tool is missing is skipped here and fails under CI (see [`crate::skip`]).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

/// One sample as the parser read it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The sample's name (a histogram's `_bucket`, `_sum`, `_count` included).
    pub name: String,
    /// Its labels, sorted by name.
    pub labels: Vec<(String, String)>,
    pub value: f64,
    /// The family's type as announced (`counter`, `gauge`, `histogram`...).
    pub kind: String,
}

impl Sample {
    /// The value of label `k`.
    pub fn label(&self, k: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

/// A raw HTTP exchange with `addr`: the whole answer (status line, headers, body).
pub fn http(addr: SocketAddr, request: &[u8]) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(request)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// `GET /metrics` from `addr`: the body, after checking the status line and content type.
pub fn scrape(addr: SocketAddr) -> Result<String, String> {
    let answer = http(
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: hsb\r\nAccept: text/plain\r\n\r\n",
    )
    .map_err(|e| format!("scrape {addr}: {e}"))?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("scrape {addr}: no head in {answer:?}"))?;
    if !head.starts_with("HTTP/1.1 200 OK\r\n")
        || !head.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n")
    {
        return Err(format!("scrape {addr}: {head}"));
    }
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| format!("scrape {addr}: no Content-Length in {head}"))?;
    if len != body.len() {
        return Err(format!(
            "scrape {addr}: Content-Length {len}, body {}",
            body.len()
        ));
    }
    Ok(body.to_string())
}

/// Why a parser could not be run here (the caller skips, or fails under CI).
#[derive(Debug)]
pub struct Unavailable(pub String);

const PARSE: &str = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        labels = "\x1f".join(k + "=" + v for k, v in sorted(s.labels.items()))
        print(s.name + "\t" + labels + "\t" + repr(float(s.value)) + "\t" + fam.type)
"#;

/// Parse `text` with the Python client library's parser. `Err(Ok(..))`: the tool is missing;
/// `Err(Err(..))`: the text was refused.
pub fn parse_python(text: &str) -> Result<Vec<Sample>, Result<Unavailable, String>> {
    let have = Command::new("python3")
        .args(["-c", "import prometheus_client.parser"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        return Err(Ok(Unavailable(
            "python3 with prometheus_client (pip install prometheus_client)".into(),
        )));
    }
    let mut child = Command::new("python3")
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Err(format!("python3: {e}")))?;
    if let Some(mut i) = child.stdin.take() {
        i.write_all(text.as_bytes())
            .map_err(|e| Err(format!("python3 stdin: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Err(format!("python3: {e}")))?;
    if !out.status.success() {
        return Err(Err(format!(
            "prometheus_client refused the text: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let mut samples = vec![];
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let [name, labels, value, kind] = f[..] else {
            return Err(Err(format!("unexpected parser output {line:?}")));
        };
        let labels = labels
            .split('\x1f')
            .filter(|l| !l.is_empty())
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let value = match value {
            "nan" => f64::NAN,
            "inf" => f64::INFINITY,
            "-inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .map_err(|_| Err(format!("value {v:?} in {line:?}")))?,
        };
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
            kind: kind.to_string(),
        });
    }
    Ok(samples)
}

/// `promtool check metrics` on `text`: `Ok(())` when it has nothing to say.
pub fn promtool_check(text: &str) -> Result<(), Result<Unavailable, String>> {
    let have = Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        return Err(Ok(Unavailable(
            "promtool (apt-get install prometheus)".into(),
        )));
    }
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Err(format!("promtool: {e}")))?;
    if let Some(mut i) = child.stdin.take() {
        i.write_all(text.as_bytes())
            .map_err(|e| Err(format!("promtool stdin: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Err(format!("promtool: {e}")))?;
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(Err(format!(
            "promtool check metrics ({}): {said}",
            out.status
        )))
    }
}

/// The samples named `name` whose labels include every pair of `with`.
pub fn find<'a>(samples: &'a [Sample], name: &str, with: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| s.name == name && with.iter().all(|(k, v)| s.label(k) == Some(*v)))
        .collect()
}

/// The one value of `name` with labels `with` (panics, naming it, if there is not exactly one).
pub fn value(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> f64 {
    let found = find(samples, name, with);
    assert_eq!(found.len(), 1, "{name} {with:?}: {found:?}");
    found[0].value
}

/// A series: its name and labels.
type Series = (String, Vec<(String, String)>);

/// Check every histogram in `samples`: per series, buckets cumulative (non-decreasing with
/// `le`), the `+Inf` bucket equal to `_count`, and `_sum` non-negative.
pub fn check_histograms(samples: &[Sample]) -> Result<usize, String> {
    let mut series: std::collections::BTreeMap<Series, Vec<(f64, f64)>> = Default::default();
    for s in samples.iter().filter(|s| s.kind == "histogram") {
        if let Some(base) = s.name.strip_suffix("_bucket") {
            let le = s.label("le").ok_or("bucket without le")?;
            let le: f64 = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().map_err(|_| format!("le {le}"))?
            };
            let labels = s
                .labels
                .iter()
                .filter(|(k, _)| k != "le")
                .cloned()
                .collect();
            series
                .entry((base.to_string(), labels))
                .or_default()
                .push((le, s.value));
        }
    }
    for ((base, labels), mut b) in series.clone() {
        b.sort_by(|x, y| x.0.total_cmp(&y.0));
        if b.windows(2).any(|w| w[1].1 < w[0].1) {
            return Err(format!("{base} {labels:?}: buckets not cumulative: {b:?}"));
        }
        let count = samples
            .iter()
            .find(|s| s.name == format!("{base}_count") && s.labels == labels)
            .ok_or(format!("{base} {labels:?}: no _count"))?;
        if b.last().map(|x| x.1) != Some(count.value) {
            return Err(format!("{base} {labels:?}: +Inf bucket != _count"));
        }
        let sum = samples
            .iter()
            .find(|s| s.name == format!("{base}_sum") && s.labels == labels)
            .ok_or(format!("{base} {labels:?}: no _sum"))?;
        if sum.value < 0.0 {
            return Err(format!("{base} {labels:?}: negative _sum"));
        }
    }
    Ok(series.len())
}

/// `text` read by both parsers, its histograms checked (at least one): `None` (after saying so
/// through [`crate::skip`], which fails under CI) when a parser cannot run here; a text either
/// refuses fails the test.
pub fn parse_checked(test: &str, text: &str) -> Option<Vec<Sample>> {
    let samples = match parse_python(text) {
        Ok(s) => s,
        Err(Ok(why)) => {
            crate::skip(test, &format!("no Prometheus text parser: {}", why.0));
            return None;
        }
        Err(Err(e)) => panic!("{e}\n--- text ---\n{text}"),
    };
    match promtool_check(text) {
        Ok(()) => {}
        Err(Ok(why)) => {
            crate::skip(test, &format!("no promtool: {}", why.0));
            return None;
        }
        Err(Err(e)) => panic!("{e}\n--- text ---\n{text}"),
    }
    let n = check_histograms(&samples).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert!(n > 0, "no histogram series");
    Some(samples)
}

/// Scrape `addr` until the text satisfies `pred` (15 s at most, then fail with `d`'s log).
pub fn scrape_until(
    addr: SocketAddr,
    d: &crate::Daemon,
    what: &str,
    pred: impl Fn(&str) -> bool,
) -> String {
    let t = std::time::Instant::now();
    loop {
        if let Ok(text) = scrape(addr) {
            if pred(&text) {
                return text;
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "{what}: not within 15 s\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
