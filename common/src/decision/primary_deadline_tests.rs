//! Unit tests of `PrimaryAuthority::next_deadline`: a run stepped only at its inputs and its
//! deadlines decides what a run ticked every millisecond decides, never later.

use super::*;

/// Steps `p` through `script` (input times in milliseconds) until `end_ms`: every millisecond
/// (`every_ms`), or only at the inputs and at `next_deadline`. Two witnesses grant the first
/// two lease requests made from `grant_from_ms` on. The actions, named, and each change of
/// mode, with their times in microseconds.
fn run_script(
    p: &mut PrimaryAuthority,
    script: &[(u64, Input)],
    every_ms: bool,
    end_ms: u64,
    grant_from_ms: u64,
) -> Vec<(u64, &'static str)> {
    let mut got = Vec::new();
    let mut next_input = 0;
    let mut granted = 0;
    let mut mode = None;
    let end = end_ms * 1000;
    let mut t = 0u64; // microseconds
    while t <= end {
        let mut inputs: Vec<Input> = Vec::new();
        while next_input < script.len() && script[next_input].0 * 1000 <= t {
            inputs.push(script[next_input].1);
            next_input += 1;
        }
        inputs.push(Input::Tick);
        for input in inputs {
            let acts = p.step(Nanos(t * 1000), input);
            for a in acts.iter() {
                // Replies answer whatever request is open.
                if let Action::RequestLeases(r) = a {
                    if granted < 2 && t >= grant_from_ms * 1000 {
                        granted += 1;
                        for w in [1, 2] {
                            let _ = p.step(
                                Nanos(t * 1000),
                                Input::LeaseReply(LeaseReply {
                                    witness: w,
                                    req: r.req,
                                    epoch: Epoch(1),
                                    verdict: Verdict::Grant,
                                    duration: Duration::from_secs(2),
                                }),
                            );
                        }
                    }
                }
            }
            for n in names(&acts) {
                got.push((t, n));
            }
            // The mode is a decision too (what output may leave).
            let m = p.mode(Nanos(t * 1000)).name();
            if mode != Some(m) {
                mode = Some(m);
                got.push((t, m));
            }
        }
        let next_script = script.get(next_input).map(|s| s.0 * 1000);
        t = if every_ms {
            t + 1000
        } else {
            let d = p.next_deadline(Nanos(t * 1000)).map(|d| d.0.div_ceil(1000));
            match (d, next_script) {
                (Some(d), Some(s)) => d.min(s),
                (Some(d), None) => d,
                (None, Some(s)) => s,
                (None, None) => break,
            }
            .max(t + 1)
        };
    }
    got
}

/// The same script ticked every millisecond and stepped at its deadlines: the same decisions,
/// never later. Returns the ticked run's.
fn same_decisions_at_the_deadlines(
    cfg: Config,
    script: &[(u64, Input)],
    end_ms: u64,
    grant_from_ms: u64,
) -> Vec<(u64, &'static str)> {
    let mut ticked = PrimaryAuthority::new(cfg, Epoch(1), ms(0));
    let mut by_deadline = ticked.clone();
    let a = run_script(&mut ticked, script, true, end_ms, grant_from_ms);
    let b = run_script(&mut by_deadline, script, false, end_ms, grant_from_ms);
    let kinds = |v: &[(u64, &'static str)]| v.iter().map(|x| x.1).collect::<Vec<_>>();
    assert_eq!(kinds(&a), kinds(&b), "same decisions");
    for (x, y) in a.iter().zip(b.iter()) {
        assert!(
            y.0 <= x.0,
            "{} at {} us by deadline, {} us ticked",
            y.1,
            y.0,
            x.0
        );
    }
    a
}

fn sent_and_acked(script: &mut Vec<(u64, Input)>, ckpt: u64, sent: u64, acked: Option<u64>) {
    script.push((sent, Input::CheckpointSent { ckpt }));
    if let Some(at) = acked {
        script.push((
            at,
            Input::Ack {
                ckpt,
                epoch: Epoch(1),
            },
        ));
    }
}

/// A run stepped only at its inputs and at `next_deadline` decides what a run ticked every
/// millisecond decides, never later: the deadline misses no timer of the authority, those of a
/// slow or silent standby (issue 12) included.
#[test]
fn stepping_at_the_deadlines_misses_no_timer() {
    // Inputs at fixed times: checkpoints and acks for a while, then the standby goes quiet,
    // two witnesses grant, then nothing (the leases run out: fence), then acks again.
    let mut script: Vec<(u64, Input)> = Vec::new();
    for i in 1..=20u64 {
        sent_and_acked(&mut script, i, i * 20, Some(i * 20 + 3));
    }
    script.push((430, Input::CheckpointSent { ckpt: 21 }));
    let a = same_decisions_at_the_deadlines(Config::default(), &script, 6_000, 500);
    let kinds = a.iter().map(|x| x.1).collect::<Vec<_>>();
    assert!(
        kinds.contains(&"fence"),
        "the scenario reaches a fence: {a:?}"
    );
    assert!(kinds.contains(&"request-leases"));

    // A standby that replies every heartbeat interval: fast acks, two slow spells (protected,
    // degraded: an alert each, the second once the first is re-armed by a protected while),
    // then a checkpoint that is never acknowledged while the replies say the standby hears
    // heartbeats but no byte of the stream: lost after STREAM_PATIENCE standby-timeouts,
    // lease, fence.
    let alive = |t: u64, stream: u64| Input::StandbyAlive {
        epoch: Epoch(1),
        applied: Some(1),
        heard: t,
        stream,
    };
    let mut script: Vec<(u64, Input)> = Vec::new();
    let mut ckpt = 0;
    let mut t = 0;
    let fast = |script: &mut Vec<(u64, Input)>, ckpt: &mut u64, t: &mut u64, until: u64| {
        while *t + 20 <= until {
            *ckpt += 1;
            sent_and_acked(script, *ckpt, *t, Some(*t + 3));
            *t += 20;
        }
    };
    fast(&mut script, &mut ckpt, &mut t, 1_000);
    for _ in 0..3 {
        ckpt += 1;
        sent_and_acked(&mut script, ckpt, t, Some(t + 300));
        t += 300;
    }
    let until = t + 900;
    fast(&mut script, &mut ckpt, &mut t, until);
    for _ in 0..2 {
        ckpt += 1;
        sent_and_acked(&mut script, ckpt, t, Some(t + 300));
        t += 300;
    }
    let stalled = t;
    sent_and_acked(&mut script, ckpt + 1, t, None);
    // In the second slow spell the replies pause for 100 ms (a slow link's stall): protected,
    // degraded, then holding (no reply within the alive window), then degraded again.
    for r in (5..16_000)
        .step_by(10)
        .filter(|r| !(2_900..3_000).contains(r))
    {
        script.push((r, alive(r, r.min(stalled))));
    }
    script.sort_by_key(|s| s.0);
    // The stream last moved with the first reply after the stall (its count then stopped).
    let moved = (5..).step_by(10).find(|r| *r >= stalled).unwrap_or(stalled);
    let lost = moved + 10 * 500;
    let a = same_decisions_at_the_deadlines(Config::default(), &script, 18_000, lost);
    let kinds = a.iter().map(|x| x.1).collect::<Vec<_>>();
    let modes = |from: u64, to: u64| {
        a.iter()
            .filter(|x| (from * 1000..to * 1000).contains(&x.0))
            .map(|x| x.1)
            .filter(|n| ["protected", "protected-degraded", "holding"].contains(n))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        modes(2_800, 3_400),
        ["protected-degraded", "holding", "protected-degraded"],
        "{a:?}"
    );
    let alerts_before = a
        .iter()
        .filter(|x| x.1 == "alert" && x.0 < stalled * 1000)
        .count();
    assert_eq!(alerts_before, 2, "one alert per slow spell: {a:?}");
    let first_request = a.iter().find(|x| x.1 == "request-leases").map(|x| x.0);
    assert_eq!(
        first_request,
        Some(lost * 1000),
        "lost when the stream moved no byte for STREAM_PATIENCE standby-timeouts: {a:?}"
    );
    assert!(kinds.contains(&"fence"), "{a:?}");

    // A standby that falls silent (no reply, no ack) after a checkpoint is sent: nothing but
    // time passes; lost after standby-timeout, a lease, then the fence once it runs out.
    let mut script: Vec<(u64, Input)> = Vec::new();
    for i in 1..=50u64 {
        sent_and_acked(&mut script, i, i * 20, Some(i * 20 + 3));
    }
    script.push((1_020, Input::CheckpointSent { ckpt: 51 }));
    for r in (5..1_020).step_by(10) {
        script.push((r, alive(r, r)));
    }
    script.sort_by_key(|s| s.0);
    let a = same_decisions_at_the_deadlines(Config::default(), &script, 6_000, 0);
    let first_request = a.iter().find(|x| x.1 == "request-leases").map(|x| x.0);
    // The last progress: the reply at 1015 ms (its count moved).
    assert_eq!(first_request, Some(1_515_000), "{a:?}");
    assert!(a.iter().any(|x| x.1 == "fence"), "{a:?}");

    // The same, then the standby comes back while the lease runs (a late ack: waited for,
    // holding, the lease notwithstanding; then its reply: degraded); its replies pause:
    // holding; lost again after standby-timeout: unprotected under the lease that still runs;
    // then the fence once no lease is left.
    let mut script: Vec<(u64, Input)> = Vec::new();
    for i in 1..=50u64 {
        sent_and_acked(&mut script, i, i * 20, Some(i * 20 + 3));
    }
    sent_and_acked(&mut script, 51, 1_020, Some(1_700));
    for r in (5..1_020).step_by(10).chain((1_700..1_800).step_by(10)) {
        script.push((r, alive(r, r)));
    }
    script.sort_by_key(|s| s.0);
    let a = same_decisions_at_the_deadlines(Config::default(), &script, 6_000, 0);
    let modes: Vec<&str> = a
        .iter()
        .filter(|x| x.0 >= 1_500_000)
        .map(|x| x.1)
        .filter(|n| ["protected-degraded", "holding", "unprotected", "fenced"].contains(n))
        .collect();
    assert_eq!(
        modes,
        [
            "unprotected",
            "holding",
            "protected-degraded",
            "holding",
            "unprotected",
            "holding",
            "fenced"
        ],
        "{a:?}"
    );
}
