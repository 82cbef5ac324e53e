//! The witness node's verdicts counted and logged: every vote and lease it grants or refuses,
//! with its refusals' log lines rate-limited per reason.

use hsb_common::decision::proto::Verdict;
use hsb_common::decision::Nanos;
use hsb_common::logging::LogLimiter;

use super::{cause, WitnessNode, CAUSES};

impl WitnessNode {
    pub(super) fn count_vote(&mut self, now: Nanos, v: &hsb_common::decision::proto::Vote) {
        // A standby requeries while a refusal holds: the same refusal is logged a few times per
        // window, then with a count.
        let logged = match v.verdict {
            Verdict::Grant => {
                self.counters.votes_granted += 1;
                Some(0)
            }
            Verdict::Refuse(r) => {
                self.counters.votes_refused += 1;
                self.observed.votes_refused[cause::reason(&r)] += 1;
                self.limits.allow(cause::vote_refused(&r), now)
            }
        };
        if let Some(n) = logged {
            let suppressed = if n > 0 {
                format!(",\"similar_suppressed\":{n}")
            } else {
                String::new()
            };
            let guest = if self.set.guest.is_empty() {
                String::new()
            } else {
                format!("\"guest\":\"{}\",", self.set.guest)
            };
            let rate = |r: Option<u8>| r.map_or("null".to_string(), |r| r.to_string());
            log::info!(
                "{{{guest}\"witness\":{},\"decision\":\"vote\",\"query\":{},\"epoch\":{},\"verdict\":\"{}\",\"app\":\"{}\",\"primary_host\":{},\"standby_host\":{},\"app_rate\":{},\"primary_rate\":{},\"standby_rate\":{}{suppressed}}}",
                v.witness, v.query, v.epoch.0, v.verdict, v.view.app, v.view.primary_host, v.view.standby_host,
                rate(v.view.rates.app), rate(v.view.rates.primary), rate(v.view.rates.standby)
            );
        }
    }

    pub(super) fn count_lease(&mut self, now: Nanos, r: &hsb_common::decision::proto::LeaseReply) {
        match r.verdict {
            Verdict::Grant => {
                self.counters.leases_granted += 1;
                log::debug!(
                    "{}lease {} to the primary of epoch {} for {:?}",
                    self.tag,
                    r.req,
                    r.epoch.0,
                    r.duration
                );
            }
            Verdict::Refuse(why) => {
                self.counters.leases_refused += 1;
                self.observed.leases_refused[cause::reason(&why)] += 1;
                if let Some(n) = self.limits.allow(cause::lease_refused(&why), now) {
                    log::info!(
                        "{}lease {} refused to the primary of epoch {}: {}{}",
                        self.tag,
                        r.req,
                        r.epoch.0,
                        r.verdict,
                        LogLimiter::<CAUSES>::note(n)
                    );
                }
            }
        }
    }
}
