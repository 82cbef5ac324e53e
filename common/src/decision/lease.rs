//! Lease arithmetic (DESIGN.md rule 3).
//!
//! Three things are leases here, with the same arithmetic:
//! - a witness's lease to the primary (unprotected mode),
//! - a witness's takeover vote (a lease to the epoch the standby would start),
//! - the standby's ack of a checkpoint (the standby promises not to activate for `ack_lease` after
//!   sending an ack; the primary counts it from when it sent the checkpoint).
//!
//! The holder counts from the moment it *asked* and subtracts a drift margin; the grantor counts from
//! the moment it *granted* and adds the margin before it grants to anyone else. With clock rates
//! within the margin, the holder's interval ends before the grantor's next grant can begin.

use core::time::Duration;

use super::{later, Nanos, WitnessId, MAX_WITNESSES};

/// Lease durations and the drift margin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseConfig {
    /// Lease (and vote) duration a witness grants.
    pub duration: Duration,
    /// Longest lease any witness may have granted: a restarted witness waits this out first.
    pub max_duration: Duration,
    /// Relative clock-rate margin, parts per million (10 000 = 1 %).
    pub drift_ppm: u32,
    /// Fixed margin added to every interval (scheduling and message-processing slack).
    pub drift_fixed: Duration,
    /// The standby's promise after each ack: no activation for this long after sending it.
    pub ack_lease: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            duration: Duration::from_secs(2),
            max_duration: Duration::from_secs(2),
            drift_ppm: 10_000,
            drift_fixed: Duration::from_millis(5),
            ack_lease: Duration::from_millis(80),
        }
    }
}

impl LeaseConfig {
    /// Drift margin for an interval of length `d`: `d * ppm / 1e6 + fixed`.
    pub fn margin(&self, d: Duration) -> Duration {
        let rel = d.as_nanos().saturating_mul(u128::from(self.drift_ppm)) / 1_000_000;
        Duration::from_nanos(u64::try_from(rel).unwrap_or(u64::MAX))
            .saturating_add(self.drift_fixed)
    }

    /// Holder side: a grant of `granted` asked for at `asked_at` is valid strictly before this.
    /// A grant shorter than its margin is worth nothing (`asked_at`).
    pub fn holder_until(&self, asked_at: Nanos, granted: Duration) -> Nanos {
        later(asked_at, granted.saturating_sub(self.margin(granted)))
    }

    /// Grantor side: after granting `granted` at `granted_at`, grant to nobody else before this.
    pub fn grantor_free_at(&self, granted_at: Nanos, granted: Duration) -> Nanos {
        later(later(granted_at, granted), self.margin(granted))
    }
}

/// One witness's grant as its holder sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// The witness.
    pub witness: WitnessId,
    /// Valid strictly before this (holder's clock).
    pub until: Nanos,
}

/// The grants a holder has, at most one per witness.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseSet {
    held: heapless::Vec<Held, MAX_WITNESSES>,
}

impl LeaseSet {
    /// No grants.
    pub fn new() -> LeaseSet {
        LeaseSet::default()
    }

    /// Record a grant from `witness` valid until `until` (keeps the later of two).
    pub fn insert(&mut self, witness: WitnessId, until: Nanos) {
        if let Some(h) = self.held.iter_mut().find(|h| h.witness == witness) {
            h.until = h.until.max(until);
        } else if self.held.push(Held { witness, until }).is_err() {
            // More distinct witnesses than configured: the caller filters unknown ids.
            debug_assert!(false, "lease set full");
        }
    }

    /// Drop a witness's grant.
    pub fn remove(&mut self, witness: WitnessId) {
        self.held.retain(|h| h.witness != witness);
    }

    /// Drop everything.
    pub fn clear(&mut self) {
        self.held.clear();
    }

    /// The grants.
    pub fn iter(&self) -> impl Iterator<Item = &Held> {
        self.held.iter()
    }

    /// Number of witnesses that granted (valid or not).
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether nobody granted.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Until when a quorum of `quorum` grants is valid: the `quorum`-th latest expiry.
    pub fn quorum_until(&self, quorum: usize) -> Option<Nanos> {
        quorum_until(self.held.iter().map(|h| h.until), quorum)
    }

    /// Whether a quorum of grants is valid at `now`.
    pub fn valid(&self, now: Nanos, quorum: usize) -> bool {
        self.quorum_until(quorum).is_some_and(|u| now < u)
    }

    /// Grants valid at `now`.
    pub fn valid_count(&self, now: Nanos) -> usize {
        self.held.iter().filter(|h| now < h.until).count()
    }
}

/// The `quorum`-th latest of `expiries`, or `None` with fewer than `quorum` (or `quorum == 0`).
pub fn quorum_until(expiries: impl Iterator<Item = Nanos>, quorum: usize) -> Option<Nanos> {
    if quorum == 0 || quorum > MAX_WITNESSES {
        return None;
    }
    let mut v: heapless::Vec<Nanos, MAX_WITNESSES> = heapless::Vec::new();
    for e in expiries {
        if v.push(e).is_err() {
            break;
        }
    }
    if v.len() < quorum {
        return None;
    }
    v.sort_unstable_by(|a, b| b.cmp(a));
    v.get(quorum - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    fn ms(n: u64) -> Nanos {
        Nanos::from_millis(n)
    }

    #[test]
    fn margins() {
        let c = LeaseConfig::default();
        assert_eq!(c.margin(Duration::from_secs(2)), Duration::from_millis(25));
        assert_eq!(c.holder_until(ms(100), Duration::from_secs(2)), ms(2075));
        assert_eq!(c.grantor_free_at(ms(100), Duration::from_secs(2)), ms(2125));
        // A grant shorter than its margin is worth nothing.
        assert_eq!(c.holder_until(ms(100), Duration::from_millis(3)), ms(100));
        // Saturation instead of overflow.
        assert_eq!(
            c.grantor_free_at(Nanos(u64::MAX - 1), Duration::from_secs(2)),
            Nanos(u64::MAX)
        );
    }

    #[test]
    fn quorum_expiry_is_kth_latest() {
        let mut s = LeaseSet::new();
        assert_eq!(s.quorum_until(2), None);
        s.insert(1, ms(10));
        s.insert(2, ms(30));
        assert_eq!(s.quorum_until(2), Some(ms(10)));
        s.insert(3, ms(20));
        assert_eq!(s.quorum_until(2), Some(ms(20)));
        s.insert(1, ms(5)); // an older grant does not shorten a newer one
        assert_eq!(s.quorum_until(3), Some(ms(10)));
        assert!(s.valid(ms(19), 2));
        assert!(!s.valid(ms(20), 2));
        s.remove(2);
        assert_eq!(s.quorum_until(2), Some(ms(10)));
        assert_eq!(quorum_until(core::iter::empty(), 0), None);
    }

    /// The heart of rule 3: with clock rates within the margin, a holder's validity ends before the
    /// grantor becomes free to grant to someone else, whatever the delays.
    #[test]
    fn holder_interval_ends_before_grantor_is_free() {
        let c = LeaseConfig::default();
        let mut rng = SplitMix64::new(1);
        for _ in 0..100_000 {
            // Real time in ns. Request sent at `ask`, granted after a delay, reply after a delay.
            let ask = rng.below(1 << 40);
            let grant = ask + rng.below(500_000_000);
            let d = Duration::from_millis(1 + rng.below(5_000));
            // Clock rates within +-0.4 % of real time (the margin allows 1 %).
            let rate_h = 1.0 + (rng.below(8001) as f64 - 4000.0) / 1e6;
            let rate_w = 1.0 + (rng.below(8001) as f64 - 4000.0) / 1e6;
            let off_h = rng.below(1 << 40);
            let off_w = rng.below(1 << 40);
            let local = |real: u64, rate: f64, off: u64| Nanos(off + (real as f64 * rate) as u64);
            let to_real = |t: Nanos, rate: f64, off: u64| (t.0 - off) as f64 / rate;
            let h_until = c.holder_until(local(ask, rate_h, off_h), d);
            let w_free = c.grantor_free_at(local(grant, rate_w, off_w), d);
            assert!(to_real(h_until, rate_h, off_h) < to_real(w_free, rate_w, off_w));
        }
    }
}
