//! The evidence every standby decision carries (rule 7): heartbeat, replica, and what each
//! witness said (its vote in the query, else its last report).

use super::*;

impl StandbyCore {
    pub(super) fn evidence(&self, now: Nanos, rule: Rule, action: ActionKind) -> Evidence {
        self.evidence_q(now, rule, action, self.query.as_ref())
    }

    pub(super) fn evidence_q(
        &self,
        now: Nanos,
        rule: Rule,
        action: ActionKind,
        q: Option<&Query>,
    ) -> Evidence {
        let mut e = Evidence::new(
            now,
            Role::Standby,
            self.cfg.policy,
            rule,
            action,
            self.epoch,
        );
        e.heartbeat = Some(HeartbeatSummary {
            suspected: self.detector.suspected(),
            silent_ns: nanos_of(self.detector.silent_for(now)),
            timeout_ns: nanos_of(self.detector.timeout()),
        });
        e.checkpoint = self.replica;
        e.configured = self.cfg.witnesses.len() as u8;
        e.quorum = self.quorum() as u8;
        e.forced = self.force && rule == Rule::ForcedStale;
        if let Some(q) = q {
            e.answers = q.votes.len() as u8;
            e.grants = q
                .votes
                .iter()
                .filter(|(v, _)| self.vote_valid(q, v, now))
                .count() as u8;
        }
        for &id in self.cfg.witnesses.ids() {
            let vote = q.and_then(|q| q.votes.iter().find(|(v, _)| v.witness == id));
            let report = self.reports.iter().find(|(r, _)| r.witness == id);
            let entry = match (vote, report) {
                (Some((v, at)), _) => WitnessSaid {
                    id,
                    said: if v.verdict.granted() {
                        SaidKind::Grant
                    } else {
                        SaidKind::Refuse
                    },
                    reason: match v.verdict {
                        Verdict::Refuse(r) => Some(r),
                        Verdict::Grant => None,
                    },
                    app: v.view.app,
                    primary_host: v.view.primary_host,
                    standby_host: v.view.standby_host,
                    rates: v.view.rates,
                    unprotected_after: v.unprotected_after,
                    age_ns: nanos_of(elapsed(now, *at)),
                },
                (None, Some((r, at))) => WitnessSaid {
                    id,
                    said: SaidKind::NoAnswer,
                    reason: None,
                    app: r.view.app,
                    primary_host: r.view.primary_host,
                    standby_host: r.view.standby_host,
                    rates: r.view.rates,
                    unprotected_after: r.unprotected_after,
                    age_ns: nanos_of(elapsed(now, *at)),
                },
                (None, None) => WitnessSaid {
                    id,
                    said: SaidKind::NoAnswer,
                    reason: None,
                    app: AppVerdict::Unknown,
                    primary_host: false,
                    standby_host: false,
                    rates: Rates::default(),
                    unprotected_after: None,
                    age_ns: 0,
                },
            };
            e.push_witness(entry);
        }
        e
    }
}
