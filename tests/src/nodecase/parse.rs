//! Reading node case files (the format is in [`super`]; the syntax it shares with the decision
//! cases is `hsb_testkit::casefile::syntax`).

use std::time::Duration;

use hsb_common::decision::record::Fields;
use hsb_common::decision::{Config, Epoch};
use hsb_testkit::casefile::syntax::{
    err, every_parts, input_time, parse_file, push_expect, CaseKind, TimeSpec,
};

use super::{Case, CaseError, NodeKind, Step};

/// Parse every case of a file.
pub fn parse_cases(text: &str) -> Result<Vec<Case>, CaseError> {
    parse_file(text)
}

impl CaseKind for Case {
    const HEADER: &'static [&'static str] =
        &["node", "set", "failover", "epoch", "answer", "ignore"];

    fn new(name: String, line: usize) -> Case {
        Case {
            name,
            line,
            node: NodeKind::Primary,
            config: Config::default(),
            node_keys: Vec::new(),
            failover: true,
            epoch: Epoch::FIRST,
            answer: true,
            ignore: vec!["record".into()],
            steps: Vec::new(),
        }
    }

    fn steps(&mut self) -> &mut Vec<Step> {
        &mut self.steps
    }

    fn line(&mut self, n: usize, first: &str, line: &str) -> Result<(), CaseError> {
        let case = self;
        let word = line.split_whitespace().nth(1);
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
            ">" => push_expect(&mut case.steps, n, line, "an effect")?,
            "every" => {
                let (period, mut h, event) = every_parts(n, line, "event")?;
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
                    drop_pct: 0,
                    seed: 1,
                    jitter: Duration::ZERO,
                    name,
                    tokens,
                });
            }
            t => {
                let at = input_time(n, t)?;
                let name = word
                    .ok_or_else(|| err(n, "expected an event after the time"))?
                    .to_string();
                let tokens: Vec<String> =
                    line.split_whitespace().skip(2).map(String::from).collect();
                Fields::from_tokens(tokens.iter().map(String::as_str))
                    .map_err(|e| err(n, e.to_string()))?;
                case.steps.push(Step::Input {
                    line: n,
                    at,
                    name,
                    tokens,
                });
            }
        }
        Ok(())
    }
}
