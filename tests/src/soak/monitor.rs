//! The soak's monitor: a thread that asks both hosts' daemons for their status, alternately,
//! all run long, and keeps what the checks need: each host's latest view, the first time each
//! epoch's copy served, when the pair was last whole, and the split-brain time.
//!
//! A copy *serves* when it holds authority to release output: a primary whose `authority` is
//! `protected` or `unprotected`, or an activated standby (`state active`) that is not fenced.
//! Samples alternate between the hosts (A, B, A, B, ...), so two samples of different hosts are
//! never taken at the same instant; a copy that served at one sample may have stopped just
//! before the other host's next sample. The check is therefore on three consecutive samples:
//! host X serving, then host Y serving, then X serving again. X served before and after Y's
//! sample, and authority is not regained within a sampling period, so both held it at once.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a status request may take (a paused daemon does not answer).
const STATUS_TIMEOUT: Duration = Duration::from_millis(150);
/// Pause between two samples.
const PERIOD: Duration = Duration::from_millis(10);
/// A status answer this late is a stall of the daemon.
pub const SLOW: Duration = Duration::from_millis(100);
/// Slow samples kept at most.
const SLOW_KEPT: usize = 100_000;

/// Milliseconds since the Unix epoch (to match the daemons' log stamps).
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One host's status as last sampled.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// When it was sampled (None: never).
    pub at: Option<Instant>,
    /// Whether the daemon answered.
    pub answered: bool,
    /// `primary` or `standby` (empty when it did not answer).
    pub role: String,
    pub epoch: u64,
    pub authority: String,
    pub state: String,
    pub decision: String,
    pub suspected: bool,
    /// The standby's applied checkpoint.
    pub applied: Option<u64>,
    pub maintenance: bool,
    pub serving: bool,
}

impl View {
    fn from_status(at: Instant, s: &HashMap<String, String>) -> View {
        let get = |k: &str| s.get(k).cloned().unwrap_or_default();
        let role = get("role");
        let authority = get("authority");
        let state = get("state");
        let serving = match role.as_str() {
            "primary" => matches!(authority.as_str(), "protected" | "unprotected"),
            "standby" => {
                state == "active"
                    && !matches!(authority.as_str(), "fenced" | "stepped-down" | "holding")
            }
            _ => false,
        };
        View {
            at: Some(at),
            answered: !s.is_empty(),
            epoch: get("epoch").parse().unwrap_or(0),
            suspected: get("primary_suspected") == "true",
            applied: get("applied_checkpoint").parse().ok(),
            maintenance: get("maintenance").starts_with("on"),
            decision: get("decision_state"),
            role,
            authority,
            state,
            serving,
        }
    }

    /// One line for logs and reports.
    pub fn describe(&self) -> String {
        if !self.answered {
            return "no answer".into();
        }
        match self.role.as_str() {
            "primary" => format!("primary epoch {} authority {}", self.epoch, self.authority),
            _ => format!(
                "standby epoch {} state {} decision {}{}",
                self.epoch,
                self.state,
                self.decision,
                if self.suspected { " (suspects)" } else { "" }
            ),
        }
    }
}

/// When an epoch's copy first served, and where.
#[derive(Debug, Clone, Copy)]
pub struct Served {
    pub at: Instant,
    pub wall: u64,
    pub host: usize,
}

/// A time both copies served.
#[derive(Debug, Clone)]
pub struct Split {
    pub at: Instant,
    pub wall: u64,
    pub length: Duration,
    pub views: String,
}

/// What the monitor knows.
#[derive(Debug, Clone, Default)]
pub struct Watch {
    pub views: [View; 2],
    /// First serving time of each epoch.
    pub epochs: BTreeMap<u64, Served>,
    /// Last time the primary was protected by the other host's standby, which followed it in
    /// its epoch without suspecting it: (when, epoch, primary host).
    pub pair_whole: Option<(Instant, u64, usize)>,
    /// Time during which both copies served, and each such episode.
    pub split: Duration,
    pub splits: Vec<Split>,
    pub samples: u64,
    /// The last time a copy was seen serving without a standby (under the witnesses' leases):
    /// witnesses refuse takeover votes while the leases they granted then last.
    pub last_unprotected: Option<Instant>,
    /// Status requests that took [`SLOW`] or more (or timed out): (host, when, how long). A
    /// daemon that runs but answers this late was stalled (starved of CPU, blocked on I/O):
    /// its witnesses may have seen it silent too.
    pub slow: Vec<(usize, Instant, Duration)>,
    /// The last three samples: (when, host, serving).
    recent: VecDeque<(Instant, usize, bool)>,
}

impl Watch {
    /// The newest epoch that served.
    pub fn newest_epoch(&self) -> u64 {
        self.epochs.keys().next_back().copied().unwrap_or(0)
    }

    /// The host running the newest primary it has seen answer, with its epoch.
    pub fn primary(&self) -> Option<(usize, u64)> {
        (0..2)
            .filter(|h| self.views[*h].role == "primary")
            .map(|h| (h, self.views[h].epoch))
            .max_by_key(|(_, e)| *e)
    }

    /// Whether the pair was whole within `within` of now.
    pub fn whole_within(&self, within: Duration) -> Option<(u64, usize)> {
        self.pair_whole
            .filter(|(t, _, _)| t.elapsed() <= within)
            .map(|(_, e, h)| (e, h))
    }

    fn add(&mut self, h: usize, v: View, took: Duration) {
        let at = v.at.unwrap_or_else(Instant::now);
        self.samples += 1;
        if took >= SLOW && self.slow.len() < SLOW_KEPT {
            self.slow.push((h, at, took));
        }
        if v.serving && !self.epochs.contains_key(&v.epoch) {
            self.epochs.insert(
                v.epoch,
                Served {
                    at,
                    wall: wall_ms(),
                    host: h,
                },
            );
        }
        if v.serving && v.authority != "protected" {
            self.last_unprotected = Some(at);
        }
        self.recent.push_back((at, h, v.serving));
        if self.recent.len() > 3 {
            self.recent.pop_front();
        }
        self.views[h] = v;
        if self.recent.len() == 3 {
            let [(_, x1, s1), (t2, y, s2), (t3, x2, s3)] =
                [self.recent[0], self.recent[1], self.recent[2]];
            if x1 == x2 && x1 != y && s1 && s2 && s3 {
                let d = t3.duration_since(t2);
                self.split += d;
                let views = format!(
                    "host {}: {}; host {}: {}",
                    crate::soak::HOSTS[0],
                    self.views[0].describe(),
                    crate::soak::HOSTS[1],
                    self.views[1].describe()
                );
                match self.splits.last_mut() {
                    Some(s) if s.at + s.length + Duration::from_millis(200) >= t3 => {
                        s.length = t3.duration_since(s.at);
                    }
                    _ => self.splits.push(Split {
                        at: t2,
                        wall: wall_ms(),
                        length: d,
                        views,
                    }),
                }
            }
        }
        let (a, b) = (&self.views[0], &self.views[1]);
        for (p, s, ph) in [(a, b, 0), (b, a, 1)] {
            if p.role == "primary"
                && p.authority == "protected"
                && s.role == "standby"
                && s.state == "replicating"
                && s.decision == "following"
                && !s.suspected
                && s.epoch == p.epoch
            {
                self.pair_whole = Some((at, p.epoch, ph));
            }
        }
    }
}

/// The monitor thread and what it shares.
pub struct Monitor {
    pub watch: Arc<Mutex<Watch>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The status of a host: its primary's control socket, else its standby's (one process runs
/// on a host; the socket of the role it left may linger and refuses connections).
pub fn host_status(socks: &[PathBuf; 2]) -> HashMap<String, String> {
    for s in socks {
        let st = status(s);
        if !st.is_empty() {
            return st;
        }
    }
    HashMap::new()
}

fn status(p: &Path) -> HashMap<String, String> {
    crate::parse_status(&hsb_common::ctl::request(p, "status", STATUS_TIMEOUT).unwrap_or_default())
}

impl Monitor {
    /// Start sampling host `h`'s daemon at `socks[h]` (primary's socket, standby's socket).
    pub fn start(socks: [[PathBuf; 2]; 2]) -> Monitor {
        let watch = Arc::new(Mutex::new(Watch::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (w, s) = (watch.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut h = 0;
            while !s.load(Ordering::Relaxed) {
                let t = Instant::now();
                let st = host_status(&socks[h]);
                let v = View::from_status(t, &st);
                let took = t.elapsed();
                if let Ok(mut w) = w.lock() {
                    w.add(h, v, took);
                }
                h = 1 - h;
                std::thread::sleep(PERIOD);
            }
        });
        Monitor {
            watch,
            stop,
            thread: Some(thread),
        }
    }

    /// A copy of what it knows now, without the lists that only the report reads (`slow`,
    /// `splits`): the nemesis takes one every 50 ms.
    pub fn snapshot(&self) -> Watch {
        self.watch
            .lock()
            .map(|w| Watch {
                views: w.views.clone(),
                epochs: w.epochs.clone(),
                pair_whole: w.pair_whole,
                split: w.split,
                splits: vec![],
                samples: w.samples,
                last_unprotected: w.last_unprotected,
                slow: vec![],
                recent: w.recent.clone(),
            })
            .unwrap_or_default()
    }

    /// Stop sampling; what it knew.
    pub fn finish(&mut self) -> Watch {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.watch.lock().map(|w| w.clone()).unwrap_or_default()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Watch {
        fn add0(&mut self, h: usize, v: View) {
            self.add(h, v, Duration::ZERO);
        }
    }

    fn view(role: &str, epoch: u64, authority: &str, state: &str) -> View {
        let mut s = HashMap::new();
        for (k, v) in [
            ("role", role),
            ("authority", authority),
            ("state", state),
            ("decision_state", "following"),
            ("primary_suspected", "false"),
        ] {
            s.insert(k.to_string(), v.to_string());
        }
        s.insert("epoch".into(), epoch.to_string());
        View::from_status(Instant::now(), &s)
    }

    #[test]
    fn split_brain_needs_one_copy_serving_on_both_sides_of_the_other() {
        let mut w = Watch::default();
        // A primary serving, B's standby activated: a hand-over seen in the middle.
        w.add0(0, view("primary", 1, "protected", "protected"));
        w.add0(1, view("standby", 2, "unprotected", "active"));
        w.add0(0, view("primary", 1, "fenced", "protected"));
        w.add0(1, view("primary", 2, "unprotected", "protected"));
        assert_eq!(w.split, Duration::ZERO, "a hand-over is no split brain");
        assert_eq!(w.newest_epoch(), 2);
        assert_eq!(w.epochs[&2].host, 1);
        // A serves again while B serves: B, A, B all serving.
        std::thread::sleep(Duration::from_millis(2));
        w.add0(0, view("primary", 1, "unprotected", "protected"));
        assert_eq!(w.split, Duration::ZERO, "not yet seen on both sides");
        std::thread::sleep(Duration::from_millis(2));
        w.add0(1, view("primary", 2, "protected", "protected"));
        assert!(w.split > Duration::ZERO);
        assert_eq!(w.splits.len(), 1);
    }

    #[test]
    fn the_pair_is_whole_when_the_standby_follows_a_protected_primary() {
        let mut w = Watch::default();
        w.add0(0, view("primary", 3, "protected", "protected"));
        assert!(w.pair_whole.is_none());
        w.add0(1, view("standby", 3, "none", "replicating"));
        assert_eq!(w.whole_within(Duration::from_secs(1)), Some((3, 0)));
        assert_eq!(w.primary(), Some((0, 3)));
    }
}
