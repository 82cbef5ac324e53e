//! Heartbeat failure detector with hysteresis.
//!
//! Suspicion only starts a witness query (rule 1), so the timeout can be aggressive. To keep a lossy
//! link from flapping: after a false suspicion (heartbeats came back) the timeout doubles, up to
//! `max_backoff` times the base, and it halves again after each `calm` period without suspicion in
//! which the link also looked healthy (no gap of half the base timeout); trust returns only after
//! `trust_after` heartbeats. With several links, any link's heartbeat
//! counts, and a link silent while another is alive is reported on its own.

use core::time::Duration;

use super::{elapsed, Nanos, MAX_LINKS};

/// Detector parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DetectorConfig {
    /// Heartbeat period of the sender.
    pub interval: Duration,
    /// Suspect after this long without a heartbeat on any link (before backoff).
    pub timeout: Duration,
    /// Number of links (1 to [`MAX_LINKS`]).
    pub links: u8,
    /// Largest timeout multiplier after false suspicions.
    pub max_backoff: u32,
    /// Halve the multiplier after this long without suspicion.
    pub calm: Duration,
    /// Heartbeats needed to trust again after a suspicion.
    pub trust_after: u32,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            interval: Duration::from_millis(10),
            timeout: Duration::from_millis(50),
            links: 1,
            max_backoff: 4,
            calm: Duration::from_secs(10),
            trust_after: 2,
        }
    }
}

/// A change of the detector's opinion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetectorEvent {
    /// No heartbeat on any link for the current timeout.
    Suspect,
    /// Heartbeats are back (the suspicion was false, or the peer recovered).
    Trust,
    /// This link is silent while another one is alive.
    LinkDown(u8),
    /// This link is alive again.
    LinkUp(u8),
}

/// The detector's state.
#[derive(Debug, Clone)]
pub struct Detector {
    cfg: DetectorConfig,
    start: Nanos,
    last: [Option<Nanos>; MAX_LINKS],
    link_down: [bool; MAX_LINKS],
    suspected: bool,
    backoff: u32,
    trust_count: u32,
    calm_since: Nanos,
    max_gap: Duration,
    suspicions: u64,
}

impl Detector {
    /// A detector that counts silence from `now`.
    pub fn new(cfg: DetectorConfig, now: Nanos) -> Detector {
        Detector {
            cfg,
            start: now,
            last: [None; MAX_LINKS],
            link_down: [false; MAX_LINKS],
            suspected: false,
            backoff: 1,
            trust_count: 0,
            calm_since: now,
            max_gap: Duration::ZERO,
            suspicions: 0,
        }
    }

    fn links(&self) -> usize {
        usize::from(self.cfg.links).clamp(1, MAX_LINKS)
    }

    /// A heartbeat arrived on `link` at `at`. Links beyond the configured number count as the last.
    pub fn heartbeat(&mut self, link: u8, at: Nanos) -> Option<DetectorEvent> {
        let l = usize::from(link).min(self.links() - 1);
        let newest = self
            .last
            .iter()
            .flatten()
            .max()
            .copied()
            .unwrap_or(self.start);
        self.max_gap = self.max_gap.max(elapsed(at, newest));
        let prev = self.last[l];
        self.last[l] = Some(prev.map_or(at, |p| p.max(at)));
        if self.suspected {
            // Consecutive heartbeats: a gap of two periods restarts the count.
            let recent = prev.is_some_and(|p| elapsed(at, p) <= self.cfg.interval * 2);
            self.trust_count = if recent || self.trust_count == 0 {
                self.trust_count + 1
            } else {
                1
            };
            if self.trust_count >= self.cfg.trust_after.max(1) {
                self.suspected = false;
                self.trust_count = 0;
                self.backoff = (self.backoff * 2).min(self.cfg.max_backoff.max(1));
                self.calm_since = at;
                self.max_gap = Duration::ZERO;
                return Some(DetectorEvent::Trust);
            }
        }
        if self.link_down[l] {
            self.link_down[l] = false;
            return Some(DetectorEvent::LinkUp(l as u8));
        }
        None
    }

    /// Re-evaluate at `now`; pushes transitions into `out` (at most one per link plus one).
    pub fn poll(&mut self, now: Nanos, out: &mut heapless::Vec<DetectorEvent, { MAX_LINKS + 1 }>) {
        let timeout = self.timeout();
        if !self.suspected {
            if self.backoff > 1 && elapsed(now, self.calm_since) >= self.cfg.calm {
                if self.max_gap < self.cfg.timeout / 2 {
                    self.backoff /= 2;
                }
                self.calm_since = now;
                self.max_gap = Duration::ZERO;
            }
            if self.silent_for(now) >= timeout {
                self.suspected = true;
                self.trust_count = 0;
                self.suspicions += 1;
                let _ = out.push(DetectorEvent::Suspect);
            }
        }
        if self.links() > 1 {
            let alive =
                |d: &Detector, l: usize| elapsed(now, d.last[l].unwrap_or(d.start)) < timeout;
            let any_alive = (0..self.links()).any(|l| alive(self, l));
            for l in 0..self.links() {
                if !self.link_down[l] && any_alive && !alive(self, l) {
                    self.link_down[l] = true;
                    let _ = out.push(DetectorEvent::LinkDown(l as u8));
                }
            }
        }
    }

    /// The current timeout (base times backoff).
    pub fn timeout(&self) -> Duration {
        self.cfg.timeout.saturating_mul(self.backoff)
    }

    /// Time since the last heartbeat on any link (or since the start).
    pub fn silent_for(&self, now: Nanos) -> Duration {
        let last = self
            .last
            .iter()
            .flatten()
            .max()
            .copied()
            .unwrap_or(self.start);
        elapsed(now, last)
    }

    /// Whether the peer is currently suspected.
    pub fn suspected(&self) -> bool {
        self.suspected
    }

    /// Number of suspicions so far.
    pub fn suspicions(&self) -> u64 {
        self.suspicions
    }

    /// When [`Detector::poll`] next needs to run to notice a suspicion.
    pub fn next_deadline(&self) -> Nanos {
        let last = self
            .last
            .iter()
            .flatten()
            .max()
            .copied()
            .unwrap_or(self.start);
        super::later(last, self.timeout())
    }

    /// The earliest time after `now` at which [`Detector::poll`] changes anything: a suspicion,
    /// a calm period that halves the timeout, a link reported silent. `None`: only a heartbeat
    /// can. (A poll at `now` may have halved the timeout, so a suspicion may be due at once:
    /// then `now` plus one nanosecond.)
    pub fn next_change(&self, now: Nanos) -> Option<Nanos> {
        let soon = Nanos(now.0.saturating_add(1));
        let timeout = self.timeout();
        let mut next: Option<Nanos> = None;
        let mut at = |t: Nanos| next = Some(next.map_or(t, |n| n.min(t)));
        if !self.suspected {
            at(self.next_deadline().max(soon));
            if self.backoff > 1 {
                at(super::later(self.calm_since, self.cfg.calm).max(soon));
            }
        }
        if self.links() > 1 {
            // A link is reported once it is silent while another one is not.
            let dies = |l: usize| super::later(self.last[l].unwrap_or(self.start), timeout);
            let last_alive = (0..self.links()).map(dies).max().unwrap_or(now);
            for l in (0..self.links()).filter(|&l| !self.link_down[l]) {
                let t = dies(l).max(soon);
                if t < last_alive {
                    at(t);
                }
            }
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    fn ms(n: u64) -> Nanos {
        Nanos::from_millis(n)
    }

    fn poll(d: &mut Detector, now: Nanos) -> Vec<DetectorEvent> {
        let mut v = heapless::Vec::new();
        d.poll(now, &mut v);
        v.to_vec()
    }

    #[test]
    fn suspects_after_timeout_and_backs_off() {
        let mut d = Detector::new(DetectorConfig::default(), ms(0));
        assert_eq!(d.heartbeat(0, ms(10)), None);
        assert!(poll(&mut d, ms(59)).is_empty());
        assert_eq!(poll(&mut d, ms(60)), vec![DetectorEvent::Suspect]);
        assert!(poll(&mut d, ms(70)).is_empty(), "one event per suspicion");
        assert_eq!(d.heartbeat(0, ms(80)), None);
        assert_eq!(d.heartbeat(0, ms(90)), Some(DetectorEvent::Trust));
        assert_eq!(d.timeout(), Duration::from_millis(100));
        assert!(poll(&mut d, ms(189)).is_empty());
        assert_eq!(poll(&mut d, ms(190)), vec![DetectorEvent::Suspect]);
        d.heartbeat(0, ms(200));
        d.heartbeat(0, ms(210));
        assert_eq!(d.timeout(), Duration::from_millis(200));
        d.heartbeat(0, ms(220));
        d.heartbeat(0, ms(230));
        assert_eq!(d.timeout(), Duration::from_millis(200), "capped at 4x");
        // Calm periods halve the backoff again.
        for t in (240..30_000).step_by(10) {
            d.heartbeat(0, ms(t));
            assert!(poll(&mut d, ms(t)).is_empty());
        }
        assert_eq!(d.timeout(), Duration::from_millis(50));
    }

    #[test]
    fn trust_needs_consecutive_heartbeats() {
        let mut d = Detector::new(DetectorConfig::default(), ms(0));
        assert_eq!(poll(&mut d, ms(50)), vec![DetectorEvent::Suspect]);
        assert_eq!(d.heartbeat(0, ms(60)), None);
        assert_eq!(d.heartbeat(0, ms(200)), None, "gap restarts the count");
        assert_eq!(d.heartbeat(0, ms(210)), Some(DetectorEvent::Trust));
    }

    #[test]
    fn any_link_keeps_trust_and_silent_link_is_reported() {
        let cfg = DetectorConfig {
            links: 2,
            ..DetectorConfig::default()
        };
        let mut d = Detector::new(cfg, ms(0));
        for t in (0..200).step_by(10) {
            d.heartbeat(0, ms(t));
            let ev = poll(&mut d, ms(t));
            if t == 50 {
                assert_eq!(ev, vec![DetectorEvent::LinkDown(1)]);
            } else {
                assert!(ev.is_empty(), "{t}: {ev:?}");
            }
        }
        assert_eq!(d.heartbeat(1, ms(200)), Some(DetectorEvent::LinkUp(1)));
        assert_eq!(
            d.heartbeat(9, ms(200)),
            None,
            "unknown link counts as the last"
        );
    }

    /// F10: 30 % independent loss with jitter must not make the detector flap.
    #[test]
    fn thirty_percent_loss_does_not_flap() {
        let mut d = Detector::new(DetectorConfig::default(), ms(0));
        let mut rng = SplitMix64::new(42);
        let mut suspects = 0;
        // Ten minutes of 10 ms heartbeats, 30 % lost, 0-3 ms jitter; poll every millisecond.
        let mut next_hb = 0u64;
        for t_ms in 0..600_000u64 {
            let now = ms(t_ms);
            if t_ms == next_hb {
                next_hb += 10;
                if rng.below(100) >= 30 {
                    let at = Nanos(now.0 + rng.below(3_000_000));
                    d.heartbeat(0, at);
                }
            }
            suspects += poll(&mut d, now)
                .iter()
                .filter(|e| **e == DetectorEvent::Suspect)
                .count();
        }
        // 0.3^5 per slot would be ~1400 in ten minutes without hysteresis.
        assert!(suspects <= 3, "{suspects} suspicions in 10 minutes");
    }

    #[test]
    fn large_monotonic_gap_is_sane() {
        let mut d = Detector::new(DetectorConfig::default(), ms(0));
        d.heartbeat(0, ms(10));
        assert_eq!(poll(&mut d, Nanos(u64::MAX)), vec![DetectorEvent::Suspect]);
        assert_eq!(
            d.silent_for(Nanos(u64::MAX)),
            Duration::from_nanos(u64::MAX - 10_000_000)
        );
        assert_eq!(
            d.heartbeat(0, ms(5)),
            None,
            "an old heartbeat does not move time back"
        );
    }

    /// The detector's own deadlines: a suspicion, a calm period, a link silent alone.
    #[test]
    fn detector_next_change() {
        let cfg = DetectorConfig {
            links: 2,
            calm: Duration::from_millis(500),
            ..DetectorConfig::default()
        };
        let mut d = Detector::new(cfg, ms(0));
        // Link 1 silent from the start while link 0 beats: reported at 50 ms.
        d.heartbeat(0, ms(20));
        assert_eq!(d.next_change(ms(20)), Some(ms(50)));
        let mut ev = heapless::Vec::new();
        d.poll(ms(50), &mut ev);
        assert_eq!(ev.as_slice(), [DetectorEvent::LinkDown(1)]);
        // Then only the suspicion (link 0 silent too: no other link alive to report it against).
        assert_eq!(d.next_change(ms(50)), Some(ms(70)));
        ev.clear();
        d.poll(ms(70), &mut ev);
        assert_eq!(ev.as_slice(), [DetectorEvent::Suspect]);
        assert_eq!(
            d.next_change(ms(70)),
            None,
            "suspected: only heartbeats change it"
        );
        for t in [80, 90] {
            d.heartbeat(0, ms(t));
        }
        assert!(!d.suspected());
        // Trusted again with the timeout doubled: the calm period halves it at 590 ms.
        assert_eq!(d.next_change(ms(90)), Some(ms(190)));
        for t in (100..=580).step_by(10) {
            d.heartbeat(0, ms(t));
        }
        assert_eq!(d.next_change(ms(580)), Some(ms(590)));
    }
}
