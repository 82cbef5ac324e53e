//! Unit tests of the primary node, driven by a harness that answers its effects as the daemon
//! does (each answer stepped at once) with a domain that checks how it is used: never two
//! operations at once, never captured while running, no output released to clients while it
//! is suspended and not fenced.

use std::net::SocketAddr;
use std::time::Duration;

use hsb_common::datagram::{Envelope, Sender};
use hsb_common::decision::primary::Mode;
use hsb_common::decision::proto::{LeaseReply, Verdict};
use hsb_common::decision::{self, Epoch};
use hsb_common::frame::FrameError;
use hsb_common::kit::talk::Talk;
use hsb_common::msg::Role;
use hsb_common::time::Nanos;
use hsb_common::wire::Dgram;

use super::*;

#[path = "node_catch_up_tests.rs"]
mod catch_up;
#[path = "node_disk_tests.rs"]
mod disk;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn config(failover: bool) -> NodeConfig {
    NodeConfig {
        standby: addr(7100),
        period: Duration::from_millis(20),
        max_unacked: 2,
        precopy: true,
        reconnect_interval: Duration::from_millis(50),
        max_reconnect: Duration::from_secs(1),
        failover: failover.then(|| FailoverConfig {
            decision: decision::Config::default(),
            heartbeat_peers: vec![addr(7200), addr(7201)],
            witness_peers: vec![(1, addr(7301)), (2, addr(7302)), (3, addr(7303))],
            standby_witness: addr(7400),
        }),
        disk: false,
    }
}

fn start(reserved: u64) -> Start {
    Start {
        epoch: Epoch(1),
        first_checkpoint: 1,
        reserved,
        incarnation: 7,
        maintenance: false,
        promoted: false,
        forced: false,
        request_base: 100,
    }
}

/// The daemon's part, played by the test: answers every effect, keeps a domain's state.
struct Harness {
    node: PrimaryNode,
    now: Nanos,
    suspended: bool,
    /// Reservations succeed.
    reserve_ok: bool,
    /// Checkpoints captured and not yet acknowledged.
    inflight: Vec<u64>,
    /// Every effect, in order.
    effects: Vec<Effect>,
    released: u64,
    /// How a disk resynchronisation's step answers: (ready, copying).
    resync: (bool, bool),
    /// A slow link: a captured checkpoint is written only when the test says (`sent`).
    slow_link: bool,
}

impl Harness {
    fn new(cfg: NodeConfig, reserved: u64) -> Harness {
        Harness {
            node: PrimaryNode::new(cfg, start(reserved), Nanos(0)),
            now: Nanos(0),
            suspended: false,
            reserve_ok: true,
            inflight: Vec::new(),
            effects: Vec::new(),
            released: 0,
            resync: (true, false),
            slow_link: false,
        }
    }

    /// The standby acknowledges `ckpt`.
    fn ack(&mut self, ckpt: u64) {
        self.inflight.retain(|&c| c != ckpt);
        self.feed(Event::Ack {
            ckpt,
            epoch: Epoch(1),
        });
    }

    /// The checkpoint being written is all written now.
    fn sent(&mut self) {
        assert!(self.node.sending());
        self.feed(Event::Sent { bytes: 41_000 });
    }

    fn feed(&mut self, ev: Event) {
        for e in self.node.step(self.now, ev) {
            self.effects.push(e.clone());
            for answer in self.answer(e) {
                self.feed(answer);
            }
        }
    }

    fn answer(&mut self, e: Effect) -> Vec<Event> {
        match e {
            Effect::Connect => vec![Event::Connected],
            Effect::SendHello { .. } => vec![Event::SessionOpened {
                node: "standby".into(),
                id: 9,
                epoch: 1,
                last_ckpt: 0,
            }],
            Effect::Disconnect { .. } => {
                self.inflight.clear();
                vec![]
            }
            Effect::Reserve(st) => vec![Event::Reserved {
                ok: self.reserve_ok,
                upto: st.checkpoint,
            }],
            Effect::PrecopyStep { .. } => {
                assert!(!self.suspended, "pre-copy of a suspended domain");
                vec![Event::PrecopyStepped {
                    precopying: false,
                    done: true,
                }]
            }
            Effect::Suspend => {
                assert!(!self.suspended, "suspend of a suspended domain");
                self.suspended = true;
                vec![Event::Suspended { waited: None }]
            }
            Effect::Resume | Effect::Unfence => {
                self.suspended = false;
                vec![]
            }
            Effect::Fence => {
                self.suspended = true;
                vec![Event::FenceDone {
                    suspended: true,
                    hard_paused: false,
                }]
            }
            Effect::Capture { ckpt, resume, .. } => {
                assert!(
                    self.suspended,
                    "checkpoint {ckpt} captured from a running domain"
                );
                if resume {
                    self.suspended = false;
                }
                self.inflight.push(ckpt);
                let captured = Event::Captured {
                    ckpt,
                    pages: 10,
                    bytes: 41_000,
                    pause: Duration::from_micros(300),
                    recopied: None,
                    precopying: false,
                };
                if self.slow_link {
                    vec![captured]
                } else {
                    vec![captured, Event::Sent { bytes: 41_000 }]
                }
            }
            Effect::Release { upto } => {
                assert!(
                    !self.suspended || self.node.is_fenced(),
                    "output released to clients while the domain is suspended for a checkpoint"
                );
                self.released = self.released.max(upto);
                vec![]
            }
            Effect::PauseOutright => vec![Event::PausedOutright { ok: false }],
            Effect::ResyncStep { .. } => vec![Event::ResyncStepped {
                ready: self.resync.0,
                copying: self.resync.1,
                error: None,
            }],
            _ => vec![],
        }
    }

    /// Advance to `ms` milliseconds, ticking at every deadline on the way.
    fn run_to(&mut self, ms: u64) {
        let end = Nanos::from_millis(ms);
        loop {
            let next = self.node.next_deadline(self.now).max(self.now);
            if next > end {
                break;
            }
            self.now = if next == self.now {
                self.now.plus(Duration::from_micros(100))
            } else {
                next
            };
            self.feed(Event::Tick);
        }
        self.now = end;
        self.feed(Event::Tick);
    }

    fn ack_all(&mut self) {
        for ckpt in std::mem::take(&mut self.inflight) {
            self.feed(Event::Ack {
                ckpt,
                epoch: Epoch(1),
            });
        }
    }

    fn count(&self, f: impl Fn(&Effect) -> bool) -> usize {
        self.effects.iter().filter(|e| f(e)).count()
    }
}

#[test]
fn a_silent_standby_is_dropped_after_a_lease_but_never_during_a_full_sync() {
    let lease = Duration::from_secs(6);
    let t = |s: u64| Nanos::from_millis(s * 1000);
    // Nothing outstanding: nothing to wait for.
    assert!(!silent_too_long(None, None, t(100), lease));
    // An incremental checkpoint unacknowledged for longer than a lease: drop the session.
    assert!(!silent_too_long(Some((7, t(10))), None, t(16), lease));
    assert!(silent_too_long(Some((7, t(10))), None, t(17), lease));
    // The full synchronisation (checkpoint 1) still outstanding: keep waiting, however
    // long it takes to copy and apply (the rig's 128 MiB took longer than its lease).
    assert!(!silent_too_long(Some((1, t(10))), Some(1), t(60), lease));
    // Once it is acknowledged, the incremental ones after it are held to the lease again.
    assert!(silent_too_long(Some((2, t(10))), None, t(17), lease));
}

#[test]
fn checkpoints_flow_and_output_follows_the_acks() {
    let mut h = Harness::new(config(false), 1_000);
    h.run_to(25);
    assert_eq!(h.node.link(), Link::Streaming);
    assert_eq!(h.inflight, vec![1], "the full synchronisation");
    h.ack_all();
    assert_eq!(h.released, 1, "released with its ack, not before");
    for t in (45..=205).step_by(20) {
        h.run_to(t);
        h.ack_all();
    }
    assert_eq!(h.node.acked(), h.node.next_checkpoint() - 1);
    assert!(h.node.acked() >= 9, "{}", h.node.acked());
    assert_eq!(h.released, h.node.acked());
    assert_eq!(h.node.stats().full_syncs, 1);
    assert!(!h.suspended);
}

#[test]
fn without_acks_checkpoints_stop_at_max_unacked_and_periods_stretch() {
    let mut h = Harness::new(config(false), 1_000);
    h.run_to(200);
    assert_eq!(h.node.unacked(), 2);
    assert!(h.node.stats().stretched >= 7);
    assert_eq!(h.released, 0);
}

/// The bug this shape fixed: a reservation that cannot be written used to leave the domain
/// suspended (it was tried between suspend and capture). Now it is written first, and a
/// failure takes no checkpoint and leaves the domain running.
#[test]
fn a_failed_reservation_takes_no_checkpoint_and_leaves_the_domain_running() {
    let mut h = Harness::new(config(false), 0);
    h.reserve_ok = false;
    h.run_to(100);
    assert_eq!(h.count(|e| matches!(e, Effect::Suspend)), 0);
    assert_eq!(h.count(|e| matches!(e, Effect::Capture { .. })), 0);
    assert!(h.count(|e| matches!(e, Effect::Reserve(_))) >= 3, "retried");
    assert!(!h.suspended);
    h.reserve_ok = true;
    h.run_to(130);
    assert_eq!(h.inflight, vec![1]);
    let reserved = h.effects.iter().rev().find_map(|e| match e {
        Effect::Reserve(st) => Some(st.checkpoint),
        _ => None,
    });
    assert_eq!(reserved, Some(1 + hsb_common::node_state::CHECKPOINT_BLOCK));
}

#[test]
fn an_ack_for_a_checkpoint_not_awaiting_one_ends_the_session() {
    let mut h = Harness::new(config(false), 1_000);
    h.run_to(25);
    h.feed(Event::Ack {
        ckpt: 5,
        epoch: Epoch(1),
    });
    let last = h.effects.iter().rev().find_map(|e| match e {
        Effect::Disconnect { frame_error, .. } => Some(frame_error.clone()),
        _ => None,
    });
    assert!(matches!(last, Some(Some(FrameError::Body { .. }))));
    assert!(matches!(h.node.link(), Link::Down(Some(_))));
    // Reconnected later, with a fresh full synchronisation.
    h.inflight.clear();
    h.run_to(200);
    assert_eq!(h.node.stats().full_syncs, 2);
    assert_eq!(h.node.stats().sessions, 2);
}

fn lease_reply(w: u8, req: u32, verdict: Verdict) -> Event {
    Event::Datagram {
        from: addr(7300 + u16::from(w)),
        env: Envelope {
            from: Sender {
                role: Role::Witness,
                id: u32::from(w),
            },
            incarnation: 1,
            epoch: 1,
            to: None,
        },
        msg: Dgram::LeaseReply(LeaseReply {
            witness: w,
            req,
            epoch: Epoch(1),
            verdict,
            duration: Duration::from_secs(2),
        }),
    }
}

/// With failover on: protected by acks, then the standby goes quiet: output held, the lease
/// requests go to every witness, the domain is fenced without authority, and an ack brings
/// it back; the domain is never used twice at once and never left suspended unfenced.
#[test]
fn failover_fences_without_authority_and_acks_unfence() {
    let mut h = Harness::new(config(true), 1_000);
    for t in (25..=205).step_by(20) {
        h.run_to(t);
        h.ack_all();
    }
    assert_eq!(
        h.node.failover_view(h.now).map(|v| v.mode),
        Some(Mode::Protected)
    );
    assert!(
        h.count(|e| matches!(
            e,
            Effect::Talk(Talk::Send {
                msg: Dgram::Heartbeat { .. },
                ..
            })
        )) >= 2
    );
    // The standby stops acknowledging: no authority after the ack lease, fence soon after.
    h.run_to(600);
    assert!(h.node.is_fenced());
    assert!(h.suspended, "a fenced domain is stopped");
    let requests = h.count(|e| {
        matches!(
            e,
            Effect::Talk(Talk::Send {
                msg: Dgram::LeaseRequest(_),
                ..
            })
        )
    });
    assert!(requests >= 3 && requests.is_multiple_of(3), "{requests}");
    let released = h.released;
    // The standby comes back: its acks give authority again, and the domain runs.
    h.ack_all();
    h.run_to(650);
    h.ack_all();
    assert!(!h.node.is_fenced());
    assert!(!h.suspended);
    assert!(h.released > released);
}

/// Witnesses grant: output leaves unprotected under their lease; a silent standby's session
/// is ended after a lease, so it gets a fresh full synchronisation when it is back.
#[test]
fn under_a_witness_lease_output_leaves_and_a_silent_standby_is_dropped() {
    let mut h = Harness::new(config(true), 1_000);
    for t in (25..=105).step_by(20) {
        h.run_to(t);
        h.ack_all();
    }
    h.run_to(200);
    let req = h
        .effects
        .iter()
        .rev()
        .find_map(|e| match e {
            Effect::Talk(Talk::Send {
                msg: Dgram::LeaseRequest(r),
                ..
            }) => Some(r.req),
            _ => None,
        })
        .expect("a lease request");
    h.feed(lease_reply(1, req, Verdict::Grant));
    h.feed(lease_reply(2, req, Verdict::Grant));
    assert_eq!(
        h.node.failover_view(h.now).map(|v| v.mode),
        Some(Mode::Unprotected)
    );
    h.run_to(201);
    assert_eq!(h.released, u64::MAX);
    // Keep granting each request; the standby never acks: its session ends after a lease.
    let sessions = h.node.stats().sessions;
    for t in (250..=9000).step_by(50) {
        h.run_to(t);
        let reqs: Vec<u32> = h
            .effects
            .drain(..)
            .filter_map(|e| match e {
                Effect::Talk(Talk::Send {
                    msg: Dgram::LeaseRequest(r),
                    ..
                }) => Some(r.req),
                _ => None,
            })
            .collect();
        for r in reqs {
            h.feed(lease_reply(1, r, Verdict::Grant));
            h.feed(lease_reply(2, r, Verdict::Grant));
        }
    }
    assert!(!h.node.is_fenced());
    assert!(h.node.stats().sessions > sessions, "dropped and reopened");
}

fn standby_alive(role: Role, heard: u64) -> Event {
    Event::Datagram {
        from: addr(7200),
        env: Envelope {
            from: Sender { role, id: 9 },
            incarnation: 1,
            epoch: 1,
            to: None,
        },
        msg: Dgram::StandbyAlive {
            epoch: Epoch(1),
            applied: Some(1),
            heard,
            stream: heard,
        },
    }
}

/// Issue 12: a standby that replies to every heartbeat but acknowledges slowly (a slow link)
/// is waited for: protected, degraded; output leaves only as the acks come, however late; no
/// lease is asked and the domain is not fenced. The replies are counted for status.
#[test]
fn a_slow_standby_that_replies_is_waited_for() {
    let mut h = Harness::new(config(true), 1_000);
    let mut modes = Vec::new();
    let mut requests_after_slow = 0;
    for t in (10..=3_000u64).step_by(10) {
        h.run_to(t);
        h.feed(standby_alive(Role::Standby, t));
        // Fast acks first, then one every 300 ms.
        if (t < 300 && t % 20 == 0) || t % 300 == 0 {
            h.ack_all();
        }
        let v = h.node.failover_view(h.now).expect("failover on");
        if modes.last() != Some(&v.mode) {
            modes.push(v.mode);
        }
        // Holding until the full synchronisation is acknowledged; then protected or degraded.
        if t >= 60 {
            assert!(
                matches!(v.mode, Mode::Protected | Mode::Degraded),
                "{t} ms: {:?}",
                v.mode
            );
        }
        assert!(v.standby_present, "{t} ms");
        assert!(h.released <= h.node.acked(), "{t} ms: beyond the acks");
        if t >= 300 {
            requests_after_slow += h.count(|e| {
                matches!(
                    e,
                    Effect::Talk(Talk::Send {
                        msg: Dgram::LeaseRequest(_),
                        ..
                    })
                )
            });
        }
        h.effects.clear();
    }
    assert!(modes.contains(&Mode::Degraded), "{modes:?}");
    assert_eq!(requests_after_slow, 0, "no lease asked for a slow standby");
    assert!(!h.node.is_fenced());
    assert_eq!(h.released, h.node.acked(), "acknowledged output left");
    assert!(h.node.acked() >= 10, "{}", h.node.acked());
    let v = h.node.failover_view(h.now).expect("failover on");
    assert_eq!(v.standby_replies, 300);
    // A reply that does not come from a standby counts for nothing.
    h.feed(standby_alive(Role::Witness, 1));
    let v = h.node.failover_view(h.now).expect("failover on");
    assert_eq!(v.standby_replies, 300);
}

/// A seeded random life: ticks, acks, losses, grants and refusals in any order. The node's
/// invariants (checked in every step) and the harness's domain checks hold throughout.
#[test]
fn random_lives_keep_every_invariant() {
    for seed in 1..=40u64 {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut rnd = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let mut h = Harness::new(config(seed % 2 == 0), 5 + seed % 7);
        h.reserve_ok = seed % 5 != 0;
        let mut t = 0;
        for _ in 0..400 {
            t += 1 + rnd(30);
            h.run_to(t);
            match rnd(10) {
                0..=4 => h.ack_all(),
                5 => h.feed(Event::Lost {
                    why: "test".into(),
                    frame_error: None,
                }),
                6 => h.reserve_ok = !h.reserve_ok,
                _ => {
                    let req = h.effects.iter().rev().find_map(|e| match e {
                        Effect::Talk(Talk::Send {
                            msg: Dgram::LeaseRequest(r),
                            ..
                        }) => Some(r.req),
                        _ => None,
                    });
                    if let Some(r) = req {
                        let v = if rnd(2) == 0 {
                            Verdict::Grant
                        } else {
                            Verdict::Refuse(decision::proto::RefuseReason::NotYet(
                                Duration::from_millis(50),
                            ))
                        };
                        h.feed(lease_reply(1 + rnd(3) as u8, r, v));
                    }
                }
            }
            h.effects.truncate(h.effects.len().min(10_000));
            if h.node.is_fenced() {
                assert!(h.suspended, "seed {seed}: fenced but running");
            }
        }
    }
}
