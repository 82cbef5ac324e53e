//! [`PrimaryAuthority::next_deadline`]: when time alone next changes what the authority does,
//! so the daemon steps a `Tick` then instead of polling. `primary_deadline_tests.rs` checks it
//! against a run ticked every millisecond.

use super::*;

impl PrimaryAuthority {
    /// The next time after `now` at which time alone can change what this authority does (an
    /// ack's or a lease quorum's end, the next lease request or protected notice, the fence
    /// after `fence_after`, the start-up grace, the standby's presence or progress running out
    /// and the moment it counts as lost, the end of a stall's quarantine, the re-arming of the
    /// slow-standby alert): a daemon steps a `Tick` then, instead of on a polling tick. Early
    /// is harmless (a tick that changes nothing); never late.
    ///
    /// It is also never more than half `hb-timeout` after the last step: a gap longer than
    /// `hb-timeout` between two steps then means this primary's loop stalled (see the module
    /// documentation), never that it had nothing to do.
    pub fn next_deadline(&self, now: Nanos) -> Option<Nanos> {
        if self.stepped_down {
            return None;
        }
        let c = &self.cfg;
        let request = self
            .last_request_at
            .map(|t| [later(t, c.query_timeout), later(t, c.lease.duration / 2)]);
        let fence = (!self.paused && self.ever_authority)
            .then_some(self.no_authority_since)
            .flatten()
            .map(|t| later(t, c.fence_after));
        // Protected, degraded ends when the standby's presence or progress runs out; waiting
        // for it ends when it counts as lost (then a lease request, and the fence clock).
        let lost = (self.acking && c.slow_standby == SlowStandby::Wait)
            .then(|| self.lost_at())
            .flatten();
        let rearm = self
            .degraded_alerted
            .then_some(self.last_degraded)
            .flatten()
            .map(|t| later(t, c.standby_timeout));
        [
            self.protected_until,
            self.leases.quorum_until(self.quorum()),
            Some(self.next_notice_at),
            fence,
            Some(later(self.started, c.lease.ack_lease)),
            self.present_until(),
            lost,
            self.quarantine_until,
            rearm,
            Some(later(self.last_step, c.heartbeat.timeout / 2)),
        ]
        .into_iter()
        .chain(request.into_iter().flatten().map(Some))
        .flatten()
        .filter(|&t| t > now)
        .min()
    }
}
