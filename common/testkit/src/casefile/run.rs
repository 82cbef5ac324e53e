//! Running a decision case: the core its role names, fed the case's inputs, streams and ticks,
//! its actions checked against the case's `>` blocks and its state against `check` lines.

use hsb_common::decision::record::{AnyInput, Defaults, Fields};
use hsb_common::decision::replay::AnyAction;
use hsb_common::decision::{
    elapsed, later, Epoch, Evidence, Nanos, PrimaryAuthority, Role, StandbyCore, WitnessCore,
};

use super::drive::{self, list, Next, Stream};
use super::{Case, CaseFailure, Step, MAX_CASE_TIME};

enum Core {
    Standby(Box<StandbyCore>),
    Primary(Box<PrimaryAuthority>),
    Witness(Box<WitnessCore>),
}

struct Runner<'c> {
    case: &'c Case,
    core: Core,
    now: Nanos,
    last_tick: Nanos,
    streams: Vec<Stream>,
    got: Vec<(Nanos, String)>,
}

/// What a case run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RunSummary {
    /// Inputs fed.
    pub inputs: u64,
    /// Actions checked.
    pub actions: u64,
}

/// Run one case.
pub fn run_case(case: &Case) -> Result<RunSummary, CaseFailure> {
    let cfg = case.config.clone();
    let core = match case.role {
        Role::Standby => Core::Standby(Box::new(StandbyCore::new(
            cfg,
            case.epoch,
            Nanos::ZERO,
            case.replica,
        ))),
        Role::Primary => Core::Primary(Box::new(PrimaryAuthority::new(
            cfg,
            case.epoch,
            Nanos::ZERO,
        ))),
        Role::Witness => Core::Witness(Box::new(if case.restarted {
            WitnessCore::new(cfg, case.witness, Nanos::ZERO, None)
        } else {
            WitnessCore::first_boot(cfg, case.witness, Nanos::ZERO)
        })),
    };
    let mut r = Runner {
        case,
        core,
        now: Nanos::ZERO,
        last_tick: Nanos::ZERO,
        streams: Vec::new(),
        got: Vec::new(),
    };
    let mut summary = RunSummary::default();
    for step in &case.steps {
        match step {
            Step::Input {
                line,
                at,
                name,
                tokens,
            } => {
                let t = at.resolve(r.now);
                r.check_time(*line, t)?;
                r.advance(t, false, &mut summary)?;
                r.now = t;
                r.feed(*line, name, tokens, &mut summary)?;
            }
            Step::Every { .. } => {
                if let Some(st) = Stream::start(step, r.now) {
                    r.check_time(st.line(), st.until())?;
                    r.streams.push(st);
                }
            }
            Step::Run { line, to } => {
                let t = to.resolve(r.now);
                r.check_time(*line, t)?;
                r.advance(t, true, &mut summary)?;
                r.now = r.now.max(t);
            }
            Step::Expect { items, line } => {
                summary.actions += r.got.len() as u64;
                r.expect(*line, items)?;
            }
            Step::Check { line, key, value } => r.check(*line, key, value)?,
        }
    }
    if !r.got.is_empty() {
        return Err(r.fail(
            case.steps.len().max(case.line),
            format!("unexpected actions at the end: {}", list(&r.got)),
        ));
    }
    Ok(summary)
}

impl Runner<'_> {
    fn fail(&self, line: usize, message: String) -> CaseFailure {
        CaseFailure {
            case: self.case.name.clone(),
            line,
            message,
        }
    }

    fn check_time(&self, line: usize, t: Nanos) -> Result<(), CaseFailure> {
        drive::not_before(t, self.now).map_err(|m| self.fail(line, m))?;
        if self.case.autotick.is_some() && elapsed(t, Nanos::ZERO) > MAX_CASE_TIME {
            return Err(self.fail(line, "time beyond one hour with autotick on".into()));
        }
        Ok(())
    }

    /// Run streams and ticks up to `to` (inclusive or not).
    fn advance(
        &mut self,
        to: Nanos,
        inclusive: bool,
        s: &mut RunSummary,
    ) -> Result<(), CaseFailure> {
        loop {
            let tick = self.case.autotick.map(|p| later(self.last_tick, p));
            match drive::next(&self.streams, tick, to, inclusive) {
                Next::Stream(i, _) => {
                    let o = self.streams[i].fire(|t, n| t.replace("{n}", &n.to_string()));
                    if !o.dropped {
                        self.now = self.now.max(o.at);
                        self.feed(o.line, &o.name, &o.tokens, s)?;
                    }
                }
                Next::Tick(tk) => {
                    self.last_tick = tk;
                    self.now = self.now.max(tk);
                    self.feed(0, "tick", &[], s)?;
                }
                Next::Done => return Ok(()),
            }
        }
    }

    fn epoch(&self) -> Epoch {
        match &self.core {
            Core::Standby(c) => c.epoch(),
            Core::Primary(c) => c.epoch(),
            Core::Witness(c) => c.epoch_seen(),
        }
    }

    fn feed(
        &mut self,
        line: usize,
        name: &str,
        tokens: &[String],
        s: &mut RunSummary,
    ) -> Result<(), CaseFailure> {
        let mut f = Fields::from_tokens(tokens.iter().map(String::as_str))
            .map_err(|e| self.fail(line, e.to_string()))?;
        let d = Defaults {
            epoch: self.epoch(),
            lease: self.case.config.lease.duration,
        };
        let input = AnyInput::parse(self.case.role, name, &mut f, d)
            .map_err(|e| self.fail(line, e.to_string()))?;
        s.inputs += 1;
        let now = self.now;
        let actions: Vec<AnyAction> = match (&mut self.core, input) {
            (Core::Standby(c), AnyInput::Standby(i)) => {
                c.step(now, i).into_iter().map(AnyAction::Standby).collect()
            }
            (Core::Primary(c), AnyInput::Primary(i)) => {
                c.step(now, i).into_iter().map(AnyAction::Primary).collect()
            }
            (Core::Witness(c), AnyInput::Witness(i)) => {
                c.step(now, i).into_iter().map(AnyAction::Witness).collect()
            }
            _ => return Err(self.fail(line, "input for another role".into())),
        };
        for a in actions {
            if let Some(e) = a.evidence() {
                let back = Evidence::from_json_line(&e.to_json_line());
                if back.as_ref() != Ok(e) {
                    return Err(self.fail(
                        line,
                        format!("evidence does not round-trip: {e:?} -> {back:?}"),
                    ));
                }
            }
            let text = a.to_string();
            let first = text.split_whitespace().next().unwrap_or_default();
            if !self.case.ignore.iter().any(|i| i == first) {
                self.got.push((now, text));
            }
        }
        Ok(())
    }

    fn expect(&mut self, line: usize, items: &[(usize, String)]) -> Result<(), CaseFailure> {
        let got = std::mem::take(&mut self.got);
        drive::check_block(&got, line, items, "action").map_err(|(n, m)| self.fail(n, m))
    }

    fn check(&self, line: usize, key: &str, want: &str) -> Result<(), CaseFailure> {
        let now = self.now;
        let rate = |r: Option<u8>| r.map_or("none".into(), |r| r.to_string());
        let got: Option<String> = match &self.core {
            Core::Standby(c) => match key {
                "state" => Some(c.state().name().into()),
                "epoch" => Some(c.epoch().to_string()),
                "replica" => Some(c.replica().map_or("none".into(), |r| r.to_string())),
                "suspected" => Some(c.detector().suspected().to_string()),
                "may-ack" => Some(c.may_ack().to_string()),
                "may-send-alive" => Some(c.may_send_alive(now).to_string()),
                _ => None,
            },
            Core::Primary(c) => match key {
                "mode" => Some(c.mode(now).name().into()),
                "may-release" => Some(c.may_release_output(now).to_string()),
                "epoch" => Some(c.epoch().to_string()),
                "last-acked" => Some(c.last_acked().to_string()),
                "standby-present" => Some(c.standby_present(now).to_string()),
                "standby-lost" => Some(c.standby_lost(now).to_string()),
                _ => None,
            },
            Core::Witness(c) => match key {
                "epoch-seen" => Some(c.epoch_seen().to_string()),
                "app" => Some(c.view(now).app.name().into()),
                "primary-host" => Some(c.view(now).primary_host.to_string()),
                "standby-host" => Some(c.view(now).standby_host.to_string()),
                "busy" => Some((!c.busy_for(now).is_zero()).to_string()),
                "app-rate" => Some(rate(c.rates(now).app)),
                "primary-rate" => Some(rate(c.rates(now).primary)),
                "standby-rate" => Some(rate(c.rates(now).standby)),
                _ => None,
            },
        };
        let unknown = format!("role {}", self.case.role.name());
        drive::check_value(key, want, got, now, &unknown).map_err(|m| self.fail(line, m))
    }
}
