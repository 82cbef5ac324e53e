//! Reading node case files (the format is in [`super`]).

use hsb_common::decision::record::Fields;
use hsb_common::decision::{parse_duration, Config, Epoch};

use super::{Case, CaseError, NodeKind, Step, TimeSpec, MAX_FILE, MAX_STEPS};

pub(super) fn err(line: usize, message: impl Into<String>) -> CaseError {
    CaseError {
        line,
        message: message.into(),
    }
}

/// Parse every case of a file.
pub fn parse_cases(text: &str) -> Result<Vec<Case>, CaseError> {
    if text.len() > MAX_FILE {
        return Err(err(0, "case file larger than 1 MiB"));
    }
    let mut cases: Vec<Case> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix("case ") {
            cases.push(Case {
                name: name.trim().to_string(),
                line: n,
                node: NodeKind::Primary,
                config: Config::default(),
                node_keys: Vec::new(),
                failover: true,
                epoch: Epoch::FIRST,
                answer: true,
                ignore: vec!["record".into()],
                steps: Vec::new(),
            });
            continue;
        }
        let Some(case) = cases.last_mut() else {
            return Err(err(n, "expected `case <name>` first"));
        };
        if case.steps.len() >= MAX_STEPS {
            return Err(err(n, "more than 10000 steps in one case"));
        }
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or_default();
        let header = matches!(
            first,
            "node" | "set" | "failover" | "epoch" | "answer" | "ignore"
        );
        if header && !case.steps.is_empty() {
            return Err(err(n, format!("`{first}` must come before the first step")));
        }
        let word = words.next();
        match first {
            "node" => {
                case.node = match word {
                    Some("primary") => NodeKind::Primary,
                    Some("standby") => NodeKind::Standby,
                    _ => return Err(err(n, "node: expected primary or standby")),
                }
            }
            "set" => {
                let mut decision = Vec::new();
                for t in line.split_whitespace().skip(1) {
                    let (k, v) = t
                        .split_once('=')
                        .ok_or_else(|| err(n, format!("set: expected key=value, got {t:?}")))?;
                    if hsb_common::decision::CONFIG_KEYS.contains(&k) {
                        decision.push((k, v));
                    } else {
                        case.node_keys.push((k.to_string(), v.to_string()));
                    }
                }
                case.config
                    .set_many(&decision)
                    .map_err(|e| err(n, e.to_string()))?;
            }
            "failover" | "answer" => {
                let on = match word {
                    Some("on") => true,
                    Some("off") => false,
                    _ => return Err(err(n, format!("{first}: expected on or off"))),
                };
                if first == "failover" {
                    case.failover = on;
                } else {
                    case.answer = on;
                }
            }
            "epoch" => {
                case.epoch = Epoch(
                    word.and_then(|w| w.parse().ok())
                        .ok_or_else(|| err(n, "epoch: expected an integer"))?,
                )
            }
            "ignore" => case
                .ignore
                .extend(line.split_whitespace().skip(1).map(str::to_string)),
            ">" => {
                let rest = line[1..].trim().to_string();
                if rest.is_empty() {
                    return Err(err(n, "expected an effect (or `none`) after `>`"));
                }
                let none = rest == "none";
                match case.steps.last_mut() {
                    Some(Step::Expect { items, .. }) if !none && !items.is_empty() => {
                        items.push((n, rest))
                    }
                    _ => case.steps.push(Step::Expect {
                        line: n,
                        items: if none { vec![] } else { vec![(n, rest)] },
                    }),
                }
            }
            "check" => {
                let (k, v) = word
                    .and_then(|t| t.split_once('='))
                    .ok_or_else(|| err(n, "check: expected key=value"))?;
                case.steps.push(Step::Check {
                    line: n,
                    key: k.to_string(),
                    value: v.to_string(),
                });
            }
            "every" => {
                let (head, event) = line
                    .split_once(':')
                    .ok_or_else(|| err(n, "every: expected `every <period> ...: <event>`"))?;
                let mut h = head.split_whitespace().skip(1);
                let period = h
                    .next()
                    .and_then(parse_duration)
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| err(n, "every: expected a period"))?;
                let (mut from, mut until) = (None, None);
                while let Some(k) = h.next() {
                    let t = h.next().and_then(TimeSpec::parse);
                    match (k, t) {
                        ("from", Some(t)) => from = Some(t),
                        ("until", Some(t)) => until = Some(t),
                        _ => return Err(err(n, format!("every: bad {k:?}"))),
                    }
                }
                let until = until.ok_or_else(|| err(n, "every: `until <time>` is required"))?;
                let mut w = event.split_whitespace();
                let name = w
                    .next()
                    .ok_or_else(|| err(n, "every: expected an event"))?
                    .to_string();
                let tokens: Vec<String> = w.map(String::from).collect();
                case.steps.push(Step::Every {
                    line: n,
                    period,
                    from,
                    until,
                    name,
                    tokens,
                });
            }
            "run" => {
                let to = word
                    .and_then(TimeSpec::parse)
                    .ok_or_else(|| err(n, "run: expected a time"))?;
                case.steps.push(Step::Run { line: n, to });
            }
            t => {
                let at = TimeSpec::parse(t)
                    .ok_or_else(|| err(n, format!("expected a directive or a time, got {t:?}")))?;
                let name = word
                    .ok_or_else(|| err(n, "expected an event after the time"))?
                    .to_string();
                let tokens: Vec<String> =
                    line.split_whitespace().skip(2).map(String::from).collect();
                Fields::from_tokens(tokens.iter().map(String::as_str))
                    .map_err(|e| err(n, e.to_string()))?;
                case.steps.push(Step::Event {
                    line: n,
                    at,
                    name,
                    tokens,
                });
            }
        }
    }
    Ok(cases)
}
