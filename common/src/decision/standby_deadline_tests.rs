//! Unit tests of `StandbyCore::next_deadline`: seeded random scenarios (heartbeats lost and
//! regained on one or two links, witness reports and votes, pending activations, switchovers,
//! operator requests, maintenance, the baselines) stepped every millisecond, and stepped only at
//! their inputs and at `next_deadline`, decide the same at the same times; and no deadline wakes
//! the core for nothing.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::decision::proto::WitnessView;
use crate::decision::WitnessSet;
use crate::rng::SplitMix64;

/// Milliseconds to nanoseconds.
fn ms(t: u64) -> Nanos {
    Nanos::from_millis(t)
}

/// A scripted input; epochs and checkpoints are filled in when it is delivered (after a step
/// down or a resynchronisation the primary is the core's epoch).
#[derive(Debug, Clone, Copy)]
enum Ev {
    Heartbeat(u8),
    Applied,
    Report {
        w: u8,
        app: AppVerdict,
        standby_host: bool,
        unprotected_after: Option<u64>,
        newer: bool,
    },
    Stream,
    Operator(OperatorAsk, bool),
    Force,
    Maintenance(bool),
    Higher,
    Resynced,
    /// An answer to an action (a vote, a ping, a fence), already complete.
    Reply(Input),
}

struct Scenario {
    cfg: Config,
    replica: Option<u64>,
    script: Vec<(u64, Ev)>,
    end: u64,
}

fn pick<T: Copy>(rng: &mut SplitMix64, xs: &[T]) -> T {
    xs[rng.below(xs.len() as u64) as usize]
}

fn chance(rng: &mut SplitMix64, percent: u64) -> bool {
    rng.below(100) < percent
}

fn between(rng: &mut SplitMix64, lo: u64, hi: u64) -> u64 {
    lo + rng.below(hi - lo + 1)
}

fn scenario(seed: u64) -> Scenario {
    let mut rng = SplitMix64::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5DEE_CE66);
    let r = &mut rng;
    let mut cfg = Config {
        policy: match r.below(10) {
            0 => Policy::HeartbeatOnly,
            1 => Policy::PingNode,
            _ => Policy::ClientOriented,
        },
        ..Config::default()
    };
    if chance(r, 30) {
        cfg.witnesses = WitnessSet::new(&[1, 2, 3, 4, 5]).unwrap_or_default();
    }
    let hb = &mut cfg.heartbeat;
    hb.timeout = Duration::from_millis(between(r, 30, 80));
    hb.links = if chance(r, 30) { 2 } else { 1 };
    hb.calm = Duration::from_millis(between(r, 200, 2_000));
    hb.max_backoff = pick(r, &[1, 2, 4]);
    hb.trust_after = pick(r, &[1, 2, 3]);
    cfg.lease.duration = Duration::from_millis(between(r, 150, 2_000));
    cfg.lease.max_duration = cfg.lease.duration;
    cfg.lease.ack_lease = Duration::from_millis(between(r, 40, 150));
    cfg.query_timeout = Duration::from_millis(between(r, 40, 200));
    cfg.requery_min = Duration::from_millis(between(r, 5, 50));
    cfg.requery_max = Duration::from_millis(between(r, 100, 600));
    cfg.report_fresh = Duration::from_millis(between(r, 120, 400));
    cfg.switchover = chance(r, 80);
    cfg.switchover_hold = Duration::from_millis(between(r, 0, 600));
    cfg.switchover_min_interval = Duration::from_millis(pick(r, &[0, 300, 1_500]));
    cfg.ping_interval = Duration::from_millis(between(r, 20, 120));
    let end = between(r, 3_000, 7_000);
    let replica = (!chance(r, 15)).then_some(0);
    let links = cfg.heartbeat.links;
    let ids: Vec<u8> = cfg.witnesses.ids().to_vec();
    let mut script: Vec<(u64, Ev)> = Vec::new();

    // The primary's heartbeats: up and down spells, some loss, a link that fails alone.
    let (mut t, mut up) = (0, true);
    while t < end {
        let len = if up {
            between(r, 100, 1_800)
        } else {
            between(r, 20, 1_500)
        };
        let loss = pick(r, &[0, 0, 10, 35]);
        let dead_link = (links > 1 && chance(r, 30)).then(|| r.below(2) as u8);
        let stream = !up && chance(r, 40);
        let mut s = t;
        while s < (t + len).min(end) {
            if up {
                for l in 0..links {
                    if Some(l) != dead_link && !chance(r, loss) {
                        script.push((s + r.below(3), Ev::Heartbeat(l)));
                    }
                }
                if s % 20 == 0 {
                    script.push((s + 3, Ev::Applied));
                }
            } else if stream {
                script.push((s, Ev::Stream));
            }
            s += 10;
        }
        t += len;
        up = !up;
    }
    // The witnesses' reports: what they see changes now and then; they may disagree.
    let mut t = 0;
    while t < end {
        let len = between(r, 200, 2_000);
        let app = pick(
            r,
            &[
                AppVerdict::Up,
                AppVerdict::Up,
                AppVerdict::Down,
                AppVerdict::Down,
                AppVerdict::Lossy,
                AppVerdict::GuestFailure,
                AppVerdict::Failing,
                AppVerdict::Unknown,
            ],
        );
        let standby_host = chance(r, 85);
        let unprotected_after = chance(r, 15).then_some(t / 10);
        let period = between(r, 40, 120);
        for &w in &ids {
            if chance(r, 15) {
                continue; // this witness is silent for this spell
            }
            let mine = if chance(r, 80) { app } else { AppVerdict::Up };
            let mut s = t + r.below(period);
            while s < (t + len).min(end) {
                script.push((
                    s,
                    Ev::Report {
                        w,
                        app: mine,
                        standby_host,
                        unprotected_after,
                        newer: false,
                    },
                ));
                s += period;
            }
        }
        t += len;
    }
    // A witness nobody configured (ignored without a tick), a newer epoch now and then.
    for (w, newer, percent) in [(99, false, 20), (pick(r, &ids), true, 4)] {
        if chance(r, percent) {
            let (app, standby_host, unprotected_after) = (AppVerdict::Down, true, None);
            let ev = Ev::Report {
                w,
                app,
                standby_host,
                unprotected_after,
                newer,
            };
            script.push((r.below(end), ev));
        }
    }
    if chance(r, 4) {
        script.push((r.below(end), Ev::Higher));
    }
    // The operator: requests, forcing, maintenance.
    for _ in 0..r.below(3) {
        let ask = pick(r, &[OperatorAsk::Activate, OperatorAsk::Switchover]);
        script.push((r.below(end), Ev::Operator(ask, chance(r, 10))));
    }
    if chance(r, 10) {
        script.push((r.below(end), Ev::Force));
    }
    for _ in 0..pick(r, &[0, 0, 1, 2, 3]) {
        let on = r.below(end);
        script.push((on, Ev::Maintenance(true)));
        let off = on + between(r, 1, 1_500);
        script.push((off, Ev::Maintenance(false)));
        // The operator's own requests go on in maintenance mode.
        if chance(r, 50) {
            script.push((
                between(r, on, off),
                Ev::Operator(OperatorAsk::Activate, false),
            ));
        }
    }
    if replica.is_none() || chance(r, 10) {
        script.push((between(r, 50, 1_500), Ev::Resynced));
    }
    script.sort_by_key(|s| s.0);
    Scenario {
        cfg,
        replica,
        script,
        end,
    }
}

/// The random answers to an action at `t` (the same in both runs when the action is).
fn answers(seed: u64, t: u64, core: &StandbyCore, cfg: &Config, a: &Action) -> Vec<(u64, Input)> {
    let salt = match a {
        Action::QueryWitnesses(q) => u64::from(q.query),
        _ => 7,
    };
    let mut rng = SplitMix64::new(seed ^ t.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ (salt << 40));
    let r = &mut rng;
    let mut v = Vec::new();
    match a {
        Action::QueryWitnesses(q) => {
            let timeout = nanos_of(cfg.query_timeout) / 1_000_000;
            for &w in cfg.witnesses.ids() {
                if chance(r, 15) {
                    continue;
                }
                let verdict = match r.below(20) {
                    0..=10 => Verdict::Grant,
                    11 => Verdict::Refuse(RefuseReason::PrimaryAnswers),
                    12 => Verdict::Refuse(RefuseReason::GuestFailure),
                    13 => Verdict::Refuse(RefuseReason::NoData),
                    14 => Verdict::Refuse(RefuseReason::StandbyUnreachable),
                    15 => Verdict::Refuse(RefuseReason::NotYet(Duration::from_millis(between(
                        r, 5, 300,
                    )))),
                    16 => Verdict::Refuse(RefuseReason::LeaseActive(Duration::from_millis(
                        between(r, 5, 900),
                    ))),
                    17 => Verdict::Refuse(RefuseReason::Restarting(Duration::from_millis(
                        between(r, 5, 900),
                    ))),
                    18 if chance(r, 10) => {
                        Verdict::Refuse(RefuseReason::StaleEpoch(q.epoch.next()))
                    }
                    _ => Verdict::Refuse(RefuseReason::Promised(q.epoch.next())),
                };
                let vote = Vote {
                    witness: if chance(r, 3) { 99 } else { w },
                    query: if chance(r, 3) { q.query ^ 1 } else { q.query },
                    epoch: q.epoch,
                    verdict,
                    duration: Duration::from_millis(between(r, 30, 2_500)),
                    view: WitnessView {
                        app: pick(r, &[AppVerdict::Down, AppVerdict::Up, AppVerdict::Failing]),
                        primary_host: chance(r, 30),
                        standby_host: chance(r, 80),
                        rates: Default::default(),
                    },
                    unprotected_after: chance(r, 10).then_some(t / 20),
                };
                v.push((t + between(r, 1, timeout + 40), Input::Vote(vote)));
            }
        }
        Action::Switchover { epoch, .. } => match r.below(10) {
            0..=5 => {
                let ckpt = t / 10 + r.below(4);
                let at = t + between(r, 1, 300);
                v.push((
                    at,
                    Input::PrimaryFenced {
                        epoch: *epoch,
                        ckpt,
                    },
                ));
            }
            6 | 7 => {
                let hb = Input::Heartbeat {
                    link: 0,
                    epoch: *epoch,
                };
                v.push((t + between(r, 1, 300), hb));
            }
            _ => {}
        },
        Action::PingNode => v.push((t + between(r, 1, 40), Input::Ping { ok: chance(r, 60) })),
        Action::RequestFullSync if chance(r, 70) => v.push((
            t + between(r, 50, 500),
            Input::Resynced {
                epoch: core.epoch(),
                ckpt: t / 10,
            },
        )),
        _ => {}
    }
    v
}

fn deliver(core: &StandbyCore, t: u64, ev: Ev) -> Input {
    let epoch = core.epoch();
    match ev {
        Ev::Heartbeat(link) => Input::Heartbeat { link, epoch },
        Ev::Applied => Input::ReplicaApplied {
            ckpt: t / 10,
            epoch,
        },
        Ev::Report {
            w,
            app,
            standby_host,
            unprotected_after,
            newer,
        } => Input::Report(WitnessReport {
            witness: w,
            epoch: if newer { epoch.next() } else { epoch },
            view: WitnessView {
                app,
                primary_host: app == AppVerdict::Up || app == AppVerdict::GuestFailure,
                standby_host,
                rates: Default::default(),
            },
            unprotected_after,
        }),
        Ev::Stream => Input::StreamProgress,
        Ev::Operator(ask, force) => Input::Operator { ask, force },
        Ev::Force => Input::OperatorForce,
        Ev::Maintenance(on) => Input::Maintenance { on },
        Ev::Higher => Input::HigherEpoch {
            epoch: epoch.next(),
        },
        Ev::Resynced => Input::Resynced {
            epoch,
            ckpt: t / 10,
        },
        Ev::Reply(i) => i,
    }
}

/// The core's whole state but when it was last stepped, and (`alive`) the last moment replies
/// could go, which a step refreshes whenever they may go.
fn shape(c: &StandbyCore, alive: bool) -> String {
    let mut c = c.clone();
    c.last_step = Nanos::ZERO;
    if !alive {
        c.alive_ok_at = None;
    }
    format!("{c:?}")
}

/// Where two shapes first differ.
fn diff(a: &str, b: &str) -> String {
    let i = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    let from = i.saturating_sub(200);
    let cut = |s: &str| {
        s.get(from..(i + 200).min(s.len()))
            .unwrap_or_default()
            .to_string()
    };
    format!(
        "ticked:\n  ...{}...\nat the deadlines:\n  ...{}...",
        cut(a),
        cut(b)
    )
}

/// One run of a scenario: its core, its inputs to come, and what it decided (each action, and
/// each change of what the daemon reads of the core, with its time in milliseconds).
struct Driver<'a> {
    seed: u64,
    sc: &'a Scenario,
    core: StandbyCore,
    queue: BTreeMap<(u64, u64), Ev>,
    seq: u64,
    got: Vec<(u64, String)>,
    shown: Option<(State, bool, Option<OperatorAsk>, bool)>,
    steps: u64,
    seen: BTreeSet<String>,
}

impl Driver<'_> {
    fn new(seed: u64, sc: &Scenario) -> Driver<'_> {
        let mut queue = BTreeMap::new();
        for (i, &(t, ev)) in sc.script.iter().enumerate() {
            queue.insert((t, i as u64), ev);
        }
        Driver {
            seed,
            sc,
            core: StandbyCore::new(sc.cfg.clone(), Epoch(1), ms(0), sc.replica),
            queue,
            seq: 1 << 32,
            got: Vec::new(),
            shown: None,
            steps: 0,
            seen: BTreeSet::new(),
        }
    }

    /// The inputs due at `t`, then a tick (as the daemon's loop does). Whether there were
    /// inputs, and whether anything was decided.
    fn visit(&mut self, t: u64) -> (bool, bool) {
        let mut inputs = Vec::new();
        while let Some(e) = self.queue.first_entry() {
            if e.key().0 > t {
                break;
            }
            inputs.push(e.remove());
        }
        let had_inputs = !inputs.is_empty();
        let mut acted = false;
        for ev in inputs.into_iter().map(Some).chain([None]) {
            let input = ev.map_or(Input::Tick, |ev| deliver(&self.core, t, ev));
            let acts = self.core.step(ms(t), input);
            self.steps += 1;
            acted |= !acts.is_empty();
            for a in acts.iter() {
                for (at, i) in answers(self.seed, t, &self.core, &self.sc.cfg, a) {
                    self.queue.insert((at, self.seq), Ev::Reply(i));
                    self.seq += 1;
                }
                let text = format!("{a:?}");
                let kind = text.split([' ', '(', '{']).next().unwrap_or_default();
                self.seen.insert(kind.to_string());
                if let Some(e) = a.evidence() {
                    self.seen.insert(format!("{}/{}", e.rule, e.action));
                }
                self.got.push((t, text));
            }
            let c = &self.core;
            let now = (
                c.state(),
                c.may_send_alive(ms(t)),
                c.operator(),
                c.maintenance(),
            );
            if self.shown != Some(now) {
                self.shown = Some(now);
                self.got.push((t, format!("{now:?}")));
                self.seen.insert(c.state().name().to_string());
            }
        }
        (had_inputs, acted)
    }

    /// When to step next: the next input or the core's deadline, in milliseconds as the
    /// daemon's epoll sleeps (and as the other run ticks); whether it is for the deadline.
    fn next(&self, t: u64) -> Option<(u64, bool)> {
        let input = self.queue.first_key_value().map(|(k, _)| k.0);
        let deadline = self
            .core
            .next_deadline(ms(t))
            .map(|d| d.0.div_ceil(1_000_000).max(t + 1));
        match (deadline, input) {
            (Some(d), Some(i)) => Some((d.min(i), d < i)),
            (Some(d), None) => Some((d, true)),
            (None, Some(i)) => Some((i, false)),
            (None, None) => None,
        }
    }
}

/// Runs a scenario ticked every millisecond and, beside it, stepped only at its inputs and
/// its deadlines. At each step of the latter both cores are in the same state before and
/// after (ticks between the deadlines changed nothing); a step at a deadline changes
/// something. The two runs, for the decisions they took.
fn compare(seed: u64, sc: &Scenario) -> (Driver<'_>, Driver<'_>) {
    let mut ticked = Driver::new(seed, sc);
    let mut stepped = Driver::new(seed, sc);
    let mut next = Some((0, false));
    for t in 0..=sc.end {
        let Some((at, by_deadline)) = next.filter(|n| n.0 == t) else {
            ticked.visit(t);
            continue;
        };
        let (a, b) = (shape(&ticked.core, false), shape(&stepped.core, false));
        assert!(
            a == b,
            "seed {seed}: before {at} ms the core ticked every ms changed what the one \
             stepped at the deadlines did not\n{}",
            diff(&a, &b)
        );
        let alive_before = stepped.core.may_send_alive(ms(t.saturating_sub(1)));
        ticked.visit(t);
        let (had_inputs, acted) = stepped.visit(t);
        let (a2, b2) = (shape(&ticked.core, true), shape(&stepped.core, true));
        assert!(
            a2 == b2,
            "seed {seed}: at {t} ms the two runs differ\n{}",
            diff(&a2, &b2)
        );
        let idle = !acted
            && shape(&stepped.core, false) == b
            && alive_before == stepped.core.may_send_alive(ms(t));
        assert!(
            !(by_deadline && !had_inputs && idle),
            "seed {seed}: the deadline at {t} ms changed nothing"
        );
        next = stepped.next(t);
    }
    (ticked, stepped)
}

/// Seeded scenarios stepped every millisecond, and only at their inputs and at
/// `next_deadline`: the same decisions at the same times, the same state whenever the latter
/// is stepped, and no deadline that changes nothing. `HSB_DEADLINE_SEEDS` runs more seeds
/// (`HSB_DEADLINE_SEED` one).
#[test]
fn stepping_at_the_deadlines_misses_no_timer() {
    let seeds: Vec<u64> = match (
        std::env::var("HSB_DEADLINE_SEED")
            .ok()
            .and_then(|s| s.parse().ok()),
        std::env::var("HSB_DEADLINE_SEEDS")
            .ok()
            .and_then(|s| s.parse().ok()),
    ) {
        (Some(one), _) => vec![one],
        (None, Some(n)) => (0..n).collect(),
        (None, None) => (0..200).collect(),
    };
    let mut seen = BTreeSet::new();
    let (mut ticked_steps, mut deadline_steps) = (0, 0);
    for &seed in &seeds {
        let sc = scenario(seed);
        let (a, b) = compare(seed, &sc);
        if let Some(i) = (0..a.got.len().max(b.got.len())).find(|&i| a.got.get(i) != b.got.get(i)) {
            let show = |v: &[(u64, String)]| {
                v.iter()
                    .skip(i.saturating_sub(3))
                    .take(6)
                    .map(|(t, s)| format!("  {t} ms: {s:.300}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            panic!(
                "seed {seed} ({:?}): ticked every ms and stepped at the deadlines differ at \
                 entry {i}\nticked:\n{}\nat the deadlines:\n{}",
                sc.cfg.policy,
                show(&a.got),
                show(&b.got)
            );
        }
        ticked_steps += a.steps;
        deadline_steps += b.steps;
        seen.extend(a.seen);
    }
    eprintln!(
        "{} seeds: {ticked_steps} steps ticked every ms, {deadline_steps} at the deadlines; reached {seen:?}",
        seeds.len()
    );
    if seeds.len() < 100 {
        return;
    }
    // The scenarios reach every branch the deadline covers.
    let want = concat!(
        "Ack QueryWitnesses Withdraw PingNode Activate Switchover RefuseStale StepDown ",
        "RequestFullSync deciding waiting switching-over refused-stale stepped-down unsynced ",
        "activated rule1:quorum-no-answer/activate rule1:primary-answers/stay ",
        "rule2:no-quorum/cannot-decide rule5:stale-replica/refuse-stale ",
        "rule5:no-replica/cannot-decide rule6:switchover/switchover rule6:switchover/paused ",
        "rule6:guest-failure/stay rule8:higher-epoch/step-down baseline:heartbeat-loss/activate ",
        "baseline:ping-node/activate baseline:ping-failed/cannot-decide detector:link-down/stay ",
        "rule9:operator-activate/activate rule9:operator-activate/cannot-decide ",
        "rule9:operator-switchover/switchover rule9:operator-switchover/cannot-decide ",
        "rule9:operator-forced/activate maintenance:on/stay maintenance:off/stay ",
        "rule1:quorum-no-answer/paused ",
    );
    let missing: Vec<&str> = want
        .split_whitespace()
        .filter(|w| !seen.contains(*w))
        .collect();
    assert!(
        missing.is_empty(),
        "never reached: {missing:?}\nseen: {seen:?}"
    );
    // And it wakes far less often than a tick every millisecond would.
    assert!(
        deadline_steps * 3 < ticked_steps,
        "{deadline_steps} steps at the deadlines, {ticked_steps} ticked"
    );
}
