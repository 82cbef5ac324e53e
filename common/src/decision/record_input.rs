//! Each input's fields, both ways: written by [`AnyInput::fields`] (text and JSON records) and
//! read back by the `parse_*` functions behind [`AnyInput::parse`], filling what a record leaves
//! out from [`Defaults`]. Side by side, so that the two spellings stay in step.

use super::*;

impl AnyInput {
    /// Name and every field as text.
    pub fn fields(&self) -> (&'static str, Vec<(&'static str, String)>) {
        let e = |e: Epoch| e.0.to_string();
        let opt = |o: Option<u64>| o.map_or_else(|| "none".to_string(), |n| n.to_string());
        let view = |v: &mut Vec<(&'static str, String)>, w: &WitnessView| {
            v.push(("app", w.app.name().into()));
            v.push(("primary-host", w.primary_host.to_string()));
            v.push(("standby-host", w.standby_host.to_string()));
            // Rates only when known (records from before them have none).
            for (k, r) in [
                ("app-rate", w.rates.app),
                ("primary-rate", w.rates.primary),
                ("standby-rate", w.rates.standby),
            ] {
                if let Some(r) = r {
                    v.push((k, r.to_string()));
                }
            }
        };
        match self {
            AnyInput::Standby(i) => match i {
                standby::Input::Heartbeat { link, epoch } => (
                    "heartbeat",
                    vec![("link", link.to_string()), ("epoch", e(*epoch))],
                ),
                standby::Input::Report(r) => {
                    let mut v = vec![("w", r.witness.to_string()), ("epoch", e(r.epoch))];
                    view(&mut v, &r.view);
                    v.push(("unprotected-after", opt(r.unprotected_after)));
                    ("report", v)
                }
                standby::Input::Vote(x) => {
                    let mut v = vec![
                        ("w", x.witness.to_string()),
                        ("query", x.query.to_string()),
                        ("epoch", e(x.epoch)),
                        ("verdict", x.verdict.to_string()),
                        ("duration", format_duration(x.duration)),
                    ];
                    view(&mut v, &x.view);
                    v.push(("unprotected-after", opt(x.unprotected_after)));
                    ("vote", v)
                }
                standby::Input::ReplicaApplied { ckpt, epoch } => (
                    "replica",
                    vec![("ckpt", ckpt.to_string()), ("epoch", e(*epoch))],
                ),
                standby::Input::Ping { ok } => ("ping", vec![("ok", ok.to_string())]),
                standby::Input::OperatorForce => ("force", vec![]),
                standby::Input::Operator { ask, force } => (
                    "operator",
                    vec![("ask", ask.name().into()), ("force", force.to_string())],
                ),
                standby::Input::Maintenance { on } => ("maintenance", vec![("on", on.to_string())]),
                standby::Input::HigherEpoch { epoch } => {
                    ("higher-epoch", vec![("epoch", e(*epoch))])
                }
                standby::Input::PrimaryFenced { epoch, ckpt } => (
                    "primary-fenced",
                    vec![("epoch", e(*epoch)), ("ckpt", ckpt.to_string())],
                ),
                standby::Input::Resynced { epoch, ckpt } => (
                    "resynced",
                    vec![("epoch", e(*epoch)), ("ckpt", ckpt.to_string())],
                ),
                standby::Input::StreamProgress => ("stream", vec![]),
                standby::Input::Tick => ("tick", vec![]),
            },
            AnyInput::Primary(i) => match i {
                primary::Input::CheckpointSent { ckpt } => {
                    ("ckpt-sent", vec![("ckpt", ckpt.to_string())])
                }
                primary::Input::Ack { ckpt, epoch } => (
                    "ack",
                    vec![("ckpt", ckpt.to_string()), ("epoch", e(*epoch))],
                ),
                primary::Input::LeaseReply(r) => (
                    "lease",
                    vec![
                        ("w", r.witness.to_string()),
                        ("req", r.req.to_string()),
                        ("epoch", e(r.epoch)),
                        ("verdict", r.verdict.to_string()),
                        ("duration", format_duration(r.duration)),
                    ],
                ),
                primary::Input::HigherEpoch { epoch } => {
                    ("higher-epoch", vec![("epoch", e(*epoch))])
                }
                primary::Input::FenceRequest { epoch } => {
                    ("fence-request", vec![("epoch", e(*epoch))])
                }
                primary::Input::StandbyAlive {
                    epoch,
                    applied,
                    heard,
                    stream,
                } => (
                    "standby-alive",
                    vec![
                        ("epoch", e(*epoch)),
                        ("applied", opt(*applied)),
                        ("heard", heard.to_string()),
                        ("stream", stream.to_string()),
                    ],
                ),
                primary::Input::Tick => ("tick", vec![]),
            },
            AnyInput::Witness(i) => match i {
                witness::Input::Probe {
                    target,
                    class,
                    took,
                } => {
                    let mut v = vec![
                        ("target", target.name().into()),
                        ("class", class.name().into()),
                    ];
                    if !took.is_zero() {
                        v.push(("took", format_duration(*took)));
                    }
                    ("probe", v)
                }
                witness::Input::Delivered {
                    target,
                    timed_out_at,
                } => (
                    "delivered",
                    vec![
                        ("target", target.name().into()),
                        ("timed-out-at", format_duration(timed_out_at.as_duration())),
                    ],
                ),
                witness::Input::Stalled { since } => (
                    "stalled",
                    vec![("since", format_duration(since.as_duration()))],
                ),
                witness::Input::VoteRequest(r) => (
                    "vote-request",
                    vec![
                        ("epoch", e(r.epoch)),
                        ("query", r.query.to_string()),
                        ("kind", r.kind.name().into()),
                    ],
                ),
                witness::Input::LeaseRequest(r) => (
                    "lease-request",
                    vec![
                        ("epoch", e(r.epoch)),
                        ("req", r.req.to_string()),
                        ("last-acked", r.last_acked.to_string()),
                        ("last-sent", r.last_sent.to_string()),
                    ],
                ),
                witness::Input::Withdraw(w) => (
                    "withdraw",
                    vec![("epoch", e(w.epoch)), ("query", w.query.to_string())],
                ),
                witness::Input::Protected(n) => (
                    "protected",
                    vec![("epoch", e(n.epoch)), ("acked", n.acked.to_string())],
                ),
                witness::Input::Tick => ("tick", vec![]),
            },
        }
    }
}

fn view(f: &mut Fields, app_default: Option<AppVerdict>) -> Result<WitnessView, FieldError> {
    let app = match app_default {
        Some(d) => f.word_or("app", "an application verdict", AppVerdict::parse, d)?,
        None => f.word("app", "an application verdict", AppVerdict::parse)?,
    };
    let mut rate = |key: &'static str| -> Result<Option<u8>, FieldError> {
        f.opt_u64(key)?
            .map(|n| {
                u8::try_from(n)
                    .ok()
                    .filter(|p| *p <= 100)
                    .ok_or_else(|| FieldError::Bad {
                        key: key.into(),
                        value: n.to_string(),
                        expected: "a percentage 0-100",
                    })
            })
            .transpose()
    };
    let rates = Rates {
        app: rate("app-rate")?,
        primary: rate("primary-rate")?,
        standby: rate("standby-rate")?,
    };
    Ok(WitnessView {
        app,
        primary_host: f.bool_or("primary-host", false)?,
        standby_host: f.bool_or("standby-host", true)?,
        rates,
    })
}

pub(super) fn parse_standby(
    name: &str,
    f: &mut Fields,
    d: Defaults,
) -> Result<standby::Input, FieldError> {
    use standby::Input as I;
    Ok(match name {
        "heartbeat" => I::Heartbeat {
            link: f.u64_or("link", 0).and_then(|l| {
                u8::try_from(l).map_err(|_| FieldError::Bad {
                    key: "link".into(),
                    value: l.to_string(),
                    expected: "a link index",
                })
            })?,
            epoch: f.epoch_or("epoch", d.epoch)?,
        },
        "report" => I::Report(WitnessReport {
            witness: f.u8("w")?,
            epoch: f.epoch_or("epoch", d.epoch)?,
            view: view(f, None)?,
            unprotected_after: f.opt_u64("unprotected-after")?,
        }),
        "vote" => {
            let verdict = f.word("verdict", "grant or refuse:<reason>", Verdict::parse)?;
            let dflt = if verdict.granted() {
                d.lease
            } else {
                Duration::ZERO
            };
            I::Vote(Vote {
                witness: f.u8("w")?,
                query: f.u64("query").and_then(|q| {
                    u32::try_from(q).map_err(|_| FieldError::Bad {
                        key: "query".into(),
                        value: q.to_string(),
                        expected: "a 32-bit query id",
                    })
                })?,
                epoch: f.epoch_or("epoch", d.epoch)?,
                verdict,
                duration: f.dur_or("duration", dflt)?,
                view: view(
                    f,
                    Some(if verdict.granted() {
                        AppVerdict::Down
                    } else {
                        AppVerdict::Up
                    }),
                )?,
                unprotected_after: f.opt_u64("unprotected-after")?,
            })
        }
        "replica" => I::ReplicaApplied {
            ckpt: f.u64("ckpt")?,
            epoch: f.epoch_or("epoch", d.epoch)?,
        },
        "ping" => I::Ping {
            ok: f.bool_or("ok", true)?,
        },
        "force" => I::OperatorForce,
        "operator" => I::Operator {
            ask: f.word_or(
                "ask",
                "activate or switchover",
                standby::OperatorAsk::parse,
                standby::OperatorAsk::Activate,
            )?,
            force: f.bool_or("force", false)?,
        },
        "maintenance" => I::Maintenance {
            on: f.bool_or("on", true)?,
        },
        "higher-epoch" => I::HigherEpoch {
            epoch: Epoch(f.u64("epoch")?),
        },
        "primary-fenced" => I::PrimaryFenced {
            epoch: f.epoch_or("epoch", d.epoch.next())?,
            ckpt: f.u64_or("ckpt", 0)?,
        },
        "resynced" => I::Resynced {
            epoch: f.epoch_or("epoch", d.epoch)?,
            ckpt: f.u64("ckpt")?,
        },
        "stream" => I::StreamProgress,
        "tick" => I::Tick,
        other => return Err(FieldError::UnknownInput(other.to_string())),
    })
}

pub(super) fn parse_primary(
    name: &str,
    f: &mut Fields,
    d: Defaults,
) -> Result<primary::Input, FieldError> {
    use primary::Input as I;
    Ok(match name {
        "ckpt-sent" => I::CheckpointSent {
            ckpt: f.u64("ckpt")?,
        },
        "ack" => I::Ack {
            ckpt: f.u64("ckpt")?,
            epoch: f.epoch_or("epoch", d.epoch)?,
        },
        "lease" => {
            let verdict = f.word("verdict", "grant or refuse:<reason>", Verdict::parse)?;
            let dflt = if verdict.granted() {
                d.lease
            } else {
                Duration::ZERO
            };
            I::LeaseReply(LeaseReply {
                witness: f.u8("w")?,
                req: u32::try_from(f.u64("req")?).map_err(|_| FieldError::Bad {
                    key: "req".into(),
                    value: String::new(),
                    expected: "a 32-bit request id",
                })?,
                epoch: f.epoch_or("epoch", d.epoch)?,
                verdict,
                duration: f.dur_or("duration", dflt)?,
            })
        }
        "higher-epoch" => I::HigherEpoch {
            epoch: Epoch(f.u64("epoch")?),
        },
        "fence-request" => I::FenceRequest {
            epoch: f.epoch_or("epoch", d.epoch.next())?,
        },
        "standby-alive" => I::StandbyAlive {
            epoch: f.epoch_or("epoch", d.epoch)?,
            applied: f.opt_u64("applied")?,
            heard: f.u64("heard")?,
            stream: f.u64_or("stream", 0)?,
        },
        "tick" => I::Tick,
        other => return Err(FieldError::UnknownInput(other.to_string())),
    })
}

pub(super) fn parse_witness(
    name: &str,
    f: &mut Fields,
    d: Defaults,
) -> Result<witness::Input, FieldError> {
    use witness::Input as I;
    Ok(match name {
        "probe" => I::Probe {
            target: f.word(
                "target",
                "primary-app, primary-host or standby-host",
                ProbeTarget::parse,
            )?,
            class: f.word(
                "class",
                "ok, refused, timeout or app-error",
                ProbeClass::parse,
            )?,
            took: f.dur_or("took", Duration::ZERO)?,
        },
        "delivered" => I::Delivered {
            target: f.word("target", "primary-host or standby-host", ProbeTarget::parse)?,
            timed_out_at: Nanos::from_duration(
                f.parsed("timed-out-at", "a time like 1250ms", parse_duration)?
                    .ok_or(FieldError::Missing("timed-out-at"))?,
            ),
        },
        "stalled" => I::Stalled {
            since: Nanos::from_duration(
                f.parsed("since", "a time like 1250ms", parse_duration)?
                    .ok_or(FieldError::Missing("since"))?,
            ),
        },
        "vote-request" => I::VoteRequest(VoteRequest {
            epoch: f.epoch_or("epoch", d.epoch)?,
            query: u32::try_from(f.u64("query")?).map_err(|_| FieldError::Bad {
                key: "query".into(),
                value: String::new(),
                expected: "a 32-bit query id",
            })?,
            kind: f.word_or(
                "kind",
                "takeover or switchover",
                VoteKind::parse,
                VoteKind::Takeover,
            )?,
        }),
        "lease-request" => I::LeaseRequest(LeaseRequest {
            epoch: f.epoch_or("epoch", d.epoch)?,
            req: u32::try_from(f.u64("req")?).map_err(|_| FieldError::Bad {
                key: "req".into(),
                value: String::new(),
                expected: "a 32-bit request id",
            })?,
            last_acked: f.u64_or("last-acked", 0)?,
            last_sent: f.u64_or("last-sent", 0)?,
        }),
        "withdraw" => I::Withdraw(Withdraw {
            epoch: f.epoch_or("epoch", d.epoch.next())?,
            query: u32::try_from(f.u64("query")?).unwrap_or(u32::MAX),
        }),
        "protected" => I::Protected(ProtectedNotice {
            epoch: f.epoch_or("epoch", d.epoch)?,
            acked: f.u64("acked")?,
        }),
        "tick" => I::Tick,
        other => return Err(FieldError::UnknownInput(other.to_string())),
    })
}
