//! Evidence (DESIGN.md rule 7): every decision says which inputs it saw, what each witness said,
//! which rule fired and what it did, as one JSON object per line, readable back for replay and tools.

use core::fmt;

use super::json::{self, ObjWriter, Value};
use super::proto::{AppVerdict, Rates, RefuseReason};
use super::{Epoch, Nanos, Policy, Role, WitnessId, MAX_WITNESSES};

words! {
    /// The rule that fired.
    Rule {
        /// Rule 1: a quorum of witnesses says the primary's application does not answer: activate.
        QuorumNoAnswer => "rule1:quorum-no-answer",
        /// Rule 1: heartbeat lost, but a quorum sees the primary serve: a link failed; stay.
        PrimaryAnswers => "rule1:primary-answers",
        /// Rule 2: no witness quorum answers: cannot decide.
        NoQuorum => "rule2:no-quorum",
        /// Rule 3: the primary lost its standby and serves under a witness-quorum lease.
        UnprotectedUnderLease => "rule3:unprotected-under-lease",
        /// Rule 3 (DESIGN.md §2): acks come slower than the ack lease while the standby is
        /// there: protected, degraded. Output waits for the acks, however slow.
        SlowStandby => "rule3:slow-standby",
        /// Rule 4: no ack and no lease quorum: output held, domain paused.
        NoAuthority => "rule4:no-authority",
        /// Rule 4: authority is back (ack or lease quorum): resume.
        AuthorityRegained => "rule4:authority-regained",
        /// Rule 5: the primary ran unprotected after the replica's checkpoint: refuse.
        StaleReplica => "rule5:stale-replica",
        /// Rule 5: stale replica activated because the operator forced it.
        ForcedStale => "rule5:forced",
        /// Rule 5: there is no complete replica to activate.
        NoReplica => "rule5:no-replica",
        /// Rule 6: clients reach the standby but not the primary: coordinated switchover.
        Switchover => "rule6:switchover",
        /// Rule 6 (F5): the guest itself fails; the replica is the same guest: no failover, alert.
        GuestFailure => "rule6:guest-failure",
        /// Rule 8: a higher epoch exists: step down, full resynchronisation.
        HigherEpoch => "rule8:higher-epoch",
        /// Switchover requested by the new primary: fenced and stepped down.
        FenceRequested => "rule6:fence-requested",
        /// Baseline (Remus): heartbeat lost: activate.
        HeartbeatLoss => "baseline:heartbeat-loss",
        /// Baseline (Linux-HA): heartbeat lost and the ping node answers: activate.
        PingNodeAnswers => "baseline:ping-node",
        /// Baseline (Linux-HA): heartbeat lost but the ping node is silent: this node is isolated.
        PingNodeSilent => "baseline:ping-failed",
        /// Baseline: the standby is lost and the primary continues unprotected without a lease.
        UnprotectedBaseline => "baseline:unprotected",
        /// One heartbeat link is silent while another works.
        LinkDown => "detector:link-down",
        /// Rule 9: the operator asked for an activation; it goes through the witnesses (a quorum
        /// learns the new epoch first) and waits out the old primary's authority.
        OperatorActivate => "rule9:operator-activate",
        /// Rule 9: the operator asked for a planned switchover: the primary fences after a final
        /// checkpoint, the standby applies it and activates.
        OperatorSwitchover => "rule9:operator-switchover",
        /// Rule 9: the operator forced the activation, saying the primary is stopped.
        OperatorForced => "rule9:operator-forced",
        /// Automatic takeovers paused by the operator (maintenance mode).
        MaintenanceOn => "maintenance:on",
        /// Automatic takeovers resumed by the operator.
        MaintenanceOff => "maintenance:off",
    }
}

words! {
    /// What the decision did.
    ActionKind {
        /// Nothing changes (an alert may say why).
        Stay => "stay",
        /// Activate the replica.
        Activate => "activate",
        /// Coordinated switchover: fence the primary, then activate.
        Switchover => "switchover",
        /// Not enough information to act: alert.
        CannotDecide => "cannot-decide",
        /// Refuse to activate a stale replica: alert.
        RefuseStale => "refuse-stale",
        /// Hold output and pause the domain.
        Fence => "fence",
        /// Resume the domain and release output again.
        Unfence => "unfence",
        /// Step down and resynchronise.
        StepDown => "step-down",
        /// The decision of the rule was not carried out: automatic takeovers are paused
        /// (maintenance mode); logged so the operator sees what would have happened.
        Paused => "paused",
    }
}

words! {
    /// How a witness's entry in the evidence was learnt.
    SaidKind {
        /// Granted the vote or lease.
        Grant => "grant",
        /// Refused it (see the reason).
        Refuse => "refuse",
        /// Did not answer; only its last report (if any) is known.
        NoAnswer => "no-answer",
    }
}

/// What one witness said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WitnessSaid {
    /// The witness.
    pub id: WitnessId,
    /// Grant, refuse or no answer.
    pub said: SaidKind,
    /// Why it refused.
    pub reason: Option<RefuseReason>,
    /// What it saw of the primary's application (from the answer, else its last report).
    pub app: AppVerdict,
    /// Whether it reached the primary daemon.
    pub primary_host: bool,
    /// Whether it reached the standby daemon.
    pub standby_host: bool,
    /// Its success rates over its rate window (application, primary and standby daemons).
    pub rates: Rates,
    /// If it leased to the primary: the primary's last acked checkpoint then.
    pub unprotected_after: Option<u64>,
    /// Age of the information, nanoseconds.
    pub age_ns: u64,
}

/// Heartbeat state at decision time: at the standby, the primary's heartbeats; at the primary,
/// the standby's (its acks and heartbeat replies, against `standby-timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatSummary {
    /// Whether the detector suspected the peer.
    pub suspected: bool,
    /// Time since the last heartbeat, nanoseconds.
    pub silent_ns: u64,
    /// The detector's current timeout, nanoseconds.
    pub timeout_ns: u64,
}

/// The evidence of one decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// When (deciding node's monotonic clock).
    pub at: Nanos,
    /// Which core decided.
    pub role: Role,
    /// Under which policy.
    pub policy: Policy,
    /// The rule that fired.
    pub rule: Rule,
    /// What it did.
    pub action: ActionKind,
    /// The decider's epoch.
    pub epoch: Epoch,
    /// The epoch started, for activations and switchovers.
    pub new_epoch: Option<Epoch>,
    /// Heartbeat state (standby: of the primary; primary: of the standby).
    pub heartbeat: Option<HeartbeatSummary>,
    /// The replica's applied checkpoint (standby), or the last acked checkpoint (primary).
    pub checkpoint: Option<u64>,
    /// Configured witnesses.
    pub configured: u8,
    /// Quorum size.
    pub quorum: u8,
    /// Witnesses that granted.
    pub grants: u8,
    /// Witnesses that answered at all.
    pub answers: u8,
    /// Whether an operator forced it.
    pub forced: bool,
    /// Every configured witness's part.
    pub witnesses: heapless::Vec<WitnessSaid, MAX_WITNESSES>,
}

impl Evidence {
    /// Evidence with no witness information yet.
    pub fn new(
        at: Nanos,
        role: Role,
        policy: Policy,
        rule: Rule,
        action: ActionKind,
        epoch: Epoch,
    ) -> Evidence {
        Evidence {
            at,
            role,
            policy,
            rule,
            action,
            epoch,
            new_epoch: None,
            heartbeat: None,
            checkpoint: None,
            configured: 0,
            quorum: 0,
            grants: 0,
            answers: 0,
            forced: false,
            witnesses: heapless::Vec::new(),
        }
    }

    /// Add one witness's part (bounded by [`MAX_WITNESSES`]; extra entries are dropped).
    pub fn push_witness(&mut self, w: WitnessSaid) {
        let _ = self.witnesses.push(w);
    }

    /// One line for people: the rule, the action and what each witness said, e.g.
    /// `rule9:operator-activate -> cannot-decide: 1 of 3 witnesses granted (quorum 2); witness
    /// 1 granted, witness 2 refused (lease-active:1s), witness 3 did not answer`.
    pub fn summary(&self) -> String {
        let mut s = format!("{} -> {}", self.rule, self.action);
        if let Some(e) = self.new_epoch {
            s.push_str(&format!(" (epoch {e})"));
        }
        if self.witnesses.is_empty() {
            return s;
        }
        s.push_str(&format!(
            ": {} of {} witnesses granted (quorum {})",
            self.grants, self.configured, self.quorum
        ));
        let said: Vec<String> = self
            .witnesses
            .iter()
            .map(|w| match (w.said, w.reason) {
                (SaidKind::Grant, _) => format!("witness {} granted", w.id),
                (SaidKind::Refuse, Some(r)) => format!("witness {} refused ({r})", w.id),
                (SaidKind::Refuse, None) => format!("witness {} refused", w.id),
                (SaidKind::NoAnswer, _) => format!("witness {} did not answer", w.id),
            })
            .collect();
        s.push_str("; ");
        s.push_str(&said.join(", "));
        s
    }

    /// One JSON object on one line (no newline), `"k":"evidence"`.
    pub fn to_json_line(&self) -> String {
        let mut o = ObjWriter::new();
        o.str("k", "evidence")
            .num("t", self.at.0)
            .str("role", self.role.name())
            .str("policy", self.policy.name())
            .str("rule", self.rule.name())
            .str("action", self.action.name())
            .num("epoch", self.epoch.0)
            .opt_num("new_epoch", self.new_epoch.map(|e| e.0));
        match &self.heartbeat {
            Some(h) => {
                let mut w = ObjWriter::new();
                w.bool("suspected", h.suspected)
                    .num("silent_ns", h.silent_ns)
                    .num("timeout_ns", h.timeout_ns);
                o.raw("hb", &w.finish());
            }
            None => {
                o.raw("hb", "null");
            }
        }
        o.opt_num("checkpoint", self.checkpoint)
            .num("configured", self.configured.into())
            .num("quorum", self.quorum.into())
            .num("grants", self.grants.into())
            .num("answers", self.answers.into())
            .bool("forced", self.forced);
        let mut arr = String::from("[");
        for (i, w) in self.witnesses.iter().enumerate() {
            if i > 0 {
                arr.push(',');
            }
            let mut x = ObjWriter::new();
            x.num("id", w.id.into()).str("said", w.said.name());
            match &w.reason {
                Some(r) => x.str("reason", &r.to_string()),
                None => x.raw("reason", "null"),
            };
            x.str("app", w.app.name())
                .bool("primary_host", w.primary_host)
                .bool("standby_host", w.standby_host)
                .opt_num("app_rate", w.rates.app.map(u64::from))
                .opt_num("primary_rate", w.rates.primary.map(u64::from))
                .opt_num("standby_rate", w.rates.standby.map(u64::from))
                .opt_num("unprotected_after", w.unprotected_after)
                .num("age_ns", w.age_ns);
            arr.push_str(&x.finish());
        }
        arr.push(']');
        o.raw("witnesses", &arr);
        o.finish()
    }

    /// Read back a line written by [`Evidence::to_json_line`].
    pub fn from_json_line(line: &str) -> Result<Evidence, EvidenceError> {
        let v = json::parse(line).map_err(EvidenceError::Json)?;
        Evidence::from_json(&v)
    }

    /// From an already parsed JSON object (see [`Evidence::from_json_line`]).
    pub fn from_json(v: &Value) -> Result<Evidence, EvidenceError> {
        if str_of(v, "k")? != "evidence" {
            return Err(EvidenceError::Field {
                key: "k",
                expected: "\"evidence\"",
            });
        }
        let hb = match v.get("hb") {
            None | Some(Value::Null) => None,
            Some(h) => Some(HeartbeatSummary {
                suspected: bool_of(h, "suspected")?,
                silent_ns: num_of(h, "silent_ns")?,
                timeout_ns: num_of(h, "timeout_ns")?,
            }),
        };
        let mut e = Evidence {
            at: Nanos(num_of(v, "t")?),
            role: Role::parse(&str_of(v, "role")?).ok_or(EvidenceError::Field {
                key: "role",
                expected: "standby, primary or witness",
            })?,
            policy: Policy::parse(&str_of(v, "policy")?).ok_or(EvidenceError::Field {
                key: "policy",
                expected: "a policy name",
            })?,
            rule: Rule::parse(&str_of(v, "rule")?).ok_or(EvidenceError::Field {
                key: "rule",
                expected: "a rule name",
            })?,
            action: ActionKind::parse(&str_of(v, "action")?).ok_or(EvidenceError::Field {
                key: "action",
                expected: "an action name",
            })?,
            epoch: Epoch(num_of(v, "epoch")?),
            new_epoch: opt_num_of(v, "new_epoch")?.map(Epoch),
            heartbeat: hb,
            checkpoint: opt_num_of(v, "checkpoint")?,
            configured: small(v, "configured")?,
            quorum: small(v, "quorum")?,
            grants: small(v, "grants")?,
            answers: small(v, "answers")?,
            forced: bool_of(v, "forced")?,
            witnesses: heapless::Vec::new(),
        };
        let Some(Value::Arr(ws)) = v.get("witnesses") else {
            return Err(EvidenceError::Field {
                key: "witnesses",
                expected: "an array",
            });
        };
        for w in ws {
            let said = SaidKind::parse(&str_of(w, "said")?).ok_or(EvidenceError::Field {
                key: "said",
                expected: "grant, refuse or no-answer",
            })?;
            let reason = match w.get("reason") {
                None | Some(Value::Null) => None,
                Some(Value::Str(s)) => {
                    Some(RefuseReason::parse(s).ok_or(EvidenceError::Field {
                        key: "reason",
                        expected: "a refusal reason",
                    })?)
                }
                Some(_) => {
                    return Err(EvidenceError::Field {
                        key: "reason",
                        expected: "a string or null",
                    })
                }
            };
            let entry = WitnessSaid {
                id: small(w, "id")?,
                said,
                reason,
                app: AppVerdict::parse(&str_of(w, "app")?).ok_or(EvidenceError::Field {
                    key: "app",
                    expected: "an application verdict",
                })?,
                primary_host: bool_of(w, "primary_host")?,
                standby_host: bool_of(w, "standby_host")?,
                // Logs written before the rates were recorded have none.
                rates: Rates {
                    app: opt_percent(w, "app_rate")?,
                    primary: opt_percent(w, "primary_rate")?,
                    standby: opt_percent(w, "standby_rate")?,
                },
                unprotected_after: opt_num_of(w, "unprotected_after")?,
                age_ns: num_of(w, "age_ns")?,
            };
            e.witnesses.push(entry).map_err(|_| EvidenceError::Field {
                key: "witnesses",
                expected: "at most 15 entries",
            })?;
        }
        Ok(e)
    }
}

impl fmt::Display for Evidence {
    /// A compact human summary: `rule1:quorum-no-answer -> activate epoch 2 (grants 2/3)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.rule, self.action)?;
        if let Some(e) = self.new_epoch {
            write!(f, " epoch {e}")?;
        }
        if self.configured > 0 {
            write!(
                f,
                " (grants {}/{}, answers {}, quorum {})",
                self.grants, self.configured, self.answers, self.quorum
            )?;
        }
        for w in &self.witnesses {
            write!(f, " w{}={}", w.id, w.said)?;
            if let Some(r) = w.reason {
                write!(f, ":{r}")?;
            }
        }
        Ok(())
    }
}

/// Why an evidence line does not read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvidenceError {
    /// Not the JSON expected.
    Json(json::JsonError),
    /// A field missing or of the wrong kind.
    Field {
        /// The key.
        key: &'static str,
        /// What was expected.
        expected: &'static str,
    },
}

impl fmt::Display for EvidenceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EvidenceError::Json(e) => write!(f, "evidence: {e}"),
            EvidenceError::Field { key, expected } => {
                write!(f, "evidence field {key}: expected {expected}")
            }
        }
    }
}

impl std::error::Error for EvidenceError {}

fn str_of(v: &Value, key: &'static str) -> Result<String, EvidenceError> {
    match v.get(key) {
        Some(Value::Str(s)) => Ok(s.clone()),
        _ => Err(EvidenceError::Field {
            key,
            expected: "a string",
        }),
    }
}

fn num_of(v: &Value, key: &'static str) -> Result<u64, EvidenceError> {
    match v.get(key) {
        Some(Value::Num(n)) => Ok(*n),
        _ => Err(EvidenceError::Field {
            key,
            expected: "an unsigned integer",
        }),
    }
}

fn opt_num_of(v: &Value, key: &'static str) -> Result<Option<u64>, EvidenceError> {
    match v.get(key) {
        Some(Value::Num(n)) => Ok(Some(*n)),
        None | Some(Value::Null) => Ok(None),
        _ => Err(EvidenceError::Field {
            key,
            expected: "an unsigned integer or null",
        }),
    }
}

fn opt_percent(v: &Value, key: &'static str) -> Result<Option<u8>, EvidenceError> {
    opt_num_of(v, key)?
        .map(|n| {
            u8::try_from(n)
                .ok()
                .filter(|p| *p <= 100)
                .ok_or(EvidenceError::Field {
                    key,
                    expected: "a percentage 0-100 or null",
                })
        })
        .transpose()
}

fn bool_of(v: &Value, key: &'static str) -> Result<bool, EvidenceError> {
    match v.get(key) {
        Some(Value::Bool(b)) => Ok(*b),
        _ => Err(EvidenceError::Field {
            key,
            expected: "true or false",
        }),
    }
}

fn small(v: &Value, key: &'static str) -> Result<u8, EvidenceError> {
    u8::try_from(num_of(v, key)?).map_err(|_| EvidenceError::Field {
        key,
        expected: "an integer 0-255",
    })
}

#[cfg(test)]
#[path = "evidence_tests.rs"]
mod tests;
