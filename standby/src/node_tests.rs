//! Unit tests of the standby node, driven by a harness that answers its effects as the daemon
//! does (each answer stepped at once).

use std::net::SocketAddr;
use std::time::Duration;

use hsb_common::decision::{self, Epoch};
use hsb_common::kit::talk::Talk;
use hsb_common::msg::{self, Hello, Role};
use hsb_common::node_state::{NodeRole, NodeState};
use hsb_common::time::Nanos;

use super::*;

#[path = "node_disk_tests.rs"]
mod disk;

fn addr(host: u8, port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, host], port))
}

fn config(failover: bool) -> NodeConfig {
    NodeConfig {
        node: "standby".into(),
        domain_pages: 2048,
        primary_allow: vec![],
        service: addr(100, 7000),
        promote: false,
        failover: failover.then(|| FailoverConfig {
            decision: decision::Config::default(),
            witness_peers: vec![
                (1, addr(11, 7400)),
                (2, addr(12, 7400)),
                (3, addr(13, 7400)),
            ],
            primary_witness: addr(1, 7300),
            ping_node: None,
            query_base: 5,
        }),
        disk_size: 0,
    }
}

fn host() -> NodeState {
    NodeState {
        epoch: Epoch(1),
        role: NodeRole::Standby,
        checkpoint: 0,
        incarnation: 9,
        maintenance: false,
    }
}

fn hello(node: &str, epoch: u64, incarnation: u64, nonce: u8, pages: u64) -> Hello {
    Hello {
        role: Role::Primary,
        node: msg::node_name(node),
        epoch: Epoch(epoch),
        nonce: [nonce; 16],
        domain_pages: pages,
        last_ckpt: 0,
        incarnation,
        disk: msg::DiskHello::default(),
    }
}

struct Harness {
    node: StandbyNode,
    now: Nanos,
    record_ok: bool,
    /// The replica's disk forks at an activation.
    fork_ok: bool,
    effects: Vec<Effect>,
}

impl Harness {
    fn new(failover: bool) -> Harness {
        Harness {
            node: StandbyNode::new(config(failover), host(), Nanos(0)),
            now: Nanos(0),
            record_ok: true,
            fork_ok: true,
            effects: Vec::new(),
        }
    }

    fn feed(&mut self, ev: Event) {
        for e in self.node.step(self.now, ev) {
            self.effects.push(e.clone());
            let answer = match e {
                Effect::RecordHost { state, purpose } => Some(Event::HostRecorded {
                    purpose,
                    state,
                    error: (!self.record_ok).then(|| "disk on fire".to_string()),
                }),
                Effect::Activate { .. } => Some(Event::ReplicaActivated { error: None }),
                Effect::ForkDisk { .. } => Some(Event::DiskForked {
                    error: (!self.fork_ok).then(|| "disk image: write: EIO".to_string()),
                }),
                _ => None,
            };
            if let Some(a) = answer {
                self.feed(a);
            }
        }
    }

    fn at(&mut self, ms: u64) -> &mut Harness {
        self.now = Nanos::from_millis(ms);
        self
    }

    /// Accept a connection: the slot it got.
    fn connect(&mut self, host: u8) -> Option<usize> {
        let before = self.effects.len();
        self.feed(Event::Incoming {
            peer: addr(host, 40000),
        });
        self.effects[before..].iter().find_map(|e| match e {
            Effect::Take { slot } => Some(*slot),
            _ => None,
        })
    }

    /// A whole session on a new connection: the slot.
    fn session(&mut self, h: Hello) -> usize {
        let slot = self.connect(1).expect("a slot");
        self.feed(Event::Hello { slot, hello: h });
        self.feed(Event::Confirmed { slot });
        slot
    }

    fn last(&self) -> Option<&Effect> {
        self.effects.last()
    }

    fn answers(&self) -> Vec<String> {
        self.effects
            .iter()
            .filter_map(|e| match e {
                Effect::Answer { text, .. } => Some(text.clone()),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn a_session_opens_and_applied_checkpoints_are_acknowledged() {
    let mut h = Harness::new(false);
    let slot = h.session(hello("primary", 1, 1, 7, 2048));
    assert_eq!(h.node.current(), Some(slot));
    assert_eq!(h.last(), Some(&Effect::GoLive { slot }));
    h.at(30).feed(Event::Applied {
        slot,
        ckpt: 1,
        full: true,
        pages: 2048,
        bytes: 8 << 20,
        took: Duration::from_millis(5),
    });
    assert_eq!(
        h.last(),
        Some(&Effect::Ack {
            ckpt: 1,
            epoch: Epoch(1)
        })
    );
    assert_eq!(h.node.applied(), Some(1));
    assert_eq!(h.node.state_name(), "replicating");
}

#[test]
fn a_primary_of_another_size_is_refused_under_the_session_keys() {
    let mut h = Harness::new(false);
    let slot = h.connect(1).expect("a slot");
    h.feed(Event::Hello {
        slot,
        hello: hello("primary", 1, 1, 7, 4096),
    });
    match h.last() {
        Some(Effect::AnswerHello {
            refuse: Some(why), ..
        }) => assert!(why.contains("domain size mismatch"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(h.node.slot(slot).map(|s| s.stage), Some(Stage::Closing));
    assert_eq!(h.node.stats().connections_refused, 1);
}

/// A flood of silent connections: the pool of pending handshakes stays bounded, the oldest
/// give way, the live session never does, and the silent ones expire.
#[test]
fn a_flood_never_pushes_out_the_live_session() {
    let mut h = Harness::new(false);
    let live = h.session(hello("primary", 1, 1, 7, 2048));
    for i in 0..40 {
        h.at(i);
        assert!(h.connect(50).is_some());
        assert!(h.node.pending_handshakes() <= slots::PENDING);
    }
    assert_eq!(h.node.current(), Some(live));
    assert_eq!(
        h.node.stats().handshakes_evicted,
        40 - slots::PENDING as u64
    );
    h.at(5000).feed(Event::Tick);
    assert_eq!(h.node.pending_handshakes(), 0);
    assert_eq!(h.node.stats().handshakes_expired, slots::PENDING as u64);
    assert_eq!(h.node.current(), Some(live));
}

#[test]
fn only_a_newer_primary_replaces_the_live_session() {
    let mut h = Harness::new(false);
    let first = h.session(hello("a", 2, 1, 1, 2048));
    // An older epoch is refused.
    let old = h.connect(2).expect("slot");
    h.feed(Event::Hello {
        slot: old,
        hello: hello("b", 1, 1, 2, 2048),
    });
    assert!(matches!(
        h.last(),
        Some(Effect::AnswerHello {
            refuse: Some(_),
            ..
        })
    ));
    assert_eq!(h.node.current(), Some(first));
    // The same node restarted (a higher incarnation) takes over.
    let restarted = h.session(hello("a", 2, 5, 3, 2048));
    assert_eq!(h.node.current(), Some(restarted));
    assert_eq!(h.node.stats().sessions_replaced, 1);
    assert!(h.effects.contains(&Effect::Discard));
}

#[test]
fn the_operator_activates_without_failover_after_the_host_state_is_written() {
    let mut h = Harness::new(false);
    // Nothing applied: nothing to activate.
    h.feed(Event::Operator {
        conn: 3,
        cmd: OperatorCmd::Activate { force: false },
    });
    assert!(h.answers()[0].starts_with("error: nothing to activate"));
    let slot = h.session(hello("primary", 1, 1, 7, 2048));
    h.feed(Event::Applied {
        slot,
        ckpt: 12,
        full: true,
        pages: 1,
        bytes: 1,
        took: Duration::ZERO,
    });
    h.feed(Event::Operator {
        conn: 4,
        cmd: OperatorCmd::Activate { force: false },
    });
    let kinds: Vec<&str> = h
        .effects
        .iter()
        .rev()
        .take(5)
        .map(|e| match e {
            Effect::RecordHost { .. } => "record",
            Effect::Close { .. } => "close",
            Effect::Discard => "discard",
            Effect::Activate { .. } => "activate",
            Effect::OnActivate { .. } => "hook",
            Effect::Answer { .. } => "answer",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["answer", "hook", "activate", "discard", "close"]);
    assert_eq!(h.node.activated(), Some(12));
    assert_eq!(h.node.host().role, NodeRole::Primary);
    assert_eq!(h.node.host().epoch, Epoch(2));
    assert!(h.answers()[1].starts_with("activated: the replica at checkpoint 12"));
    assert_eq!(h.node.current(), None);
}

#[test]
fn an_activation_whose_host_state_cannot_be_written_does_not_happen() {
    let mut h = Harness::new(false);
    let slot = h.session(hello("primary", 1, 1, 7, 2048));
    h.feed(Event::Applied {
        slot,
        ckpt: 3,
        full: true,
        pages: 1,
        bytes: 1,
        took: Duration::ZERO,
    });
    h.record_ok = false;
    h.feed(Event::Operator {
        conn: 1,
        cmd: OperatorCmd::Activate { force: false },
    });
    assert_eq!(h.node.activated(), None);
    assert_eq!(h.node.current(), Some(slot), "still replicating");
    assert!(h.answers()[0].starts_with("error: activation failed: not activated"));
    assert!(!h
        .effects
        .iter()
        .any(|e| matches!(e, Effect::Activate { .. })));
}

#[test]
fn maintenance_is_written_then_told_to_the_primary_and_the_witnesses() {
    let mut h = Harness::new(false);
    h.feed(Event::Operator {
        conn: 1,
        cmd: OperatorCmd::Maintenance(true),
    });
    assert!(h.answers()[0].starts_with("error: automatic failover is off"));
    let mut h = Harness::new(true);
    h.feed(Event::Operator {
        conn: 1,
        cmd: OperatorCmd::Maintenance(true),
    });
    assert!(h.node.maintenance());
    assert!(h.node.host().maintenance);
    assert!(h.answers()[0].starts_with("maintenance on"));
    let notices = h
        .effects
        .iter()
        .filter(|e| {
            matches!(
                e,
                Effect::Talk(Talk::Send {
                    msg: hsb_common::wire::Dgram::Maintenance { on: true },
                    ..
                })
            )
        })
        .count();
    assert_eq!(notices, 4, "the primary and three witnesses");
    // A failed write changes nothing.
    h.record_ok = false;
    h.feed(Event::Operator {
        conn: 2,
        cmd: OperatorCmd::Maintenance(false),
    });
    assert!(h.node.maintenance());
    assert!(h.answers()[1].starts_with("error: cannot record maintenance mode"));
}

fn heartbeat() -> Event {
    Event::Datagram {
        from: addr(1, 7200),
        env: hsb_common::datagram::Envelope {
            from: hsb_common::datagram::Sender {
                role: Role::Primary,
                id: 1,
            },
            incarnation: 1,
            epoch: 1,
            to: None,
        },
        msg: hsb_common::wire::Dgram::Heartbeat { link: 0, acked: 0 },
    }
}

/// The heartbeat replies asked for since the last look: (epoch, applied, heard, stream).
fn replies(h: &mut Harness) -> Vec<(Epoch, Option<u64>, u64, u64)> {
    h.effects
        .drain(..)
        .filter_map(|e| match e {
            Effect::HeartbeatReply {
                msg:
                    hsb_common::wire::Dgram::StandbyAlive {
                        epoch,
                        applied,
                        heard,
                        stream,
                    },
            } => Some((epoch, applied, heard, stream)),
            _ => None,
        })
        .collect()
}

/// Issue 12: heartbeat replies every heartbeat interval while acks may go, saying how much of
/// the primary is heard (heartbeats and replication bytes); once the primary is suspected,
/// only while its replication stream still gets through (a slow link queues its heartbeats
/// behind the stream).
#[test]
fn heartbeat_replies_say_how_much_of_the_primary_is_heard() {
    let mut h = Harness::new(true);
    let slot = h.session(hello("primary", 1, 1, 7, 2048));
    h.at(5).feed(Event::Applied {
        slot,
        ckpt: 1,
        full: true,
        pages: 2048,
        bytes: 8 << 20,
        took: Duration::ZERO,
    });
    h.effects.clear();
    let mut bytes = 0;
    let mut run = |h: &mut Harness, from: u64, to: u64, beats: bool, stream: bool| {
        for t in (from..=to).step_by(2) {
            h.at(t);
            if t % 10 == 0 {
                if beats {
                    h.feed(heartbeat());
                }
                if stream {
                    bytes += 1_000;
                    h.feed(Event::Heard { slot, bytes });
                }
            }
            h.feed(Event::Tick);
        }
        bytes
    };
    // Heartbeats and the stream: a reply every heartbeat interval, counting both.
    let sent = run(&mut h, 6, 300, true, true);
    let r = replies(&mut h);
    assert!((27..=31).contains(&r.len()), "{}", r.len());
    // The last reply went at 296 ms: 29 heartbeats and 29,000 bytes heard by then.
    let (epoch, applied, heard, stream) = *r.last().expect("replies");
    assert_eq!((epoch, applied), (Epoch(1), Some(1)));
    assert!(
        stream + 1_000 >= sent && stream <= sent,
        "{stream} of {sent}"
    );
    assert_eq!(heard, stream + stream / 1_000, "heartbeats and bytes");
    assert!(r.windows(2).all(|w| w[1].2 > w[0].2), "the count moves");
    // Neither: the replies stop with the suspicion (50 ms after the last heartbeat).
    run(&mut h, 302, 500, false, false);
    let r = replies(&mut h);
    assert!((4..=6).contains(&r.len()), "{}", r.len());
    assert!(h.node.failover_view(h.now).is_some_and(|v| v.suspected));
    // The stream alone gets through: the replies go again.
    run(&mut h, 502, 600, false, true);
    let r = replies(&mut h);
    assert!(r.len() >= 8, "{}", r.len());
}

/// A vote of witness `w` granting query `query`.
fn vote(w: u8, query: u32) -> Event {
    use hsb_common::decision::proto::{AppVerdict, Verdict, Vote, WitnessView};
    Event::Datagram {
        from: addr(10 + w, 7400),
        env: hsb_common::datagram::Envelope {
            from: hsb_common::datagram::Sender {
                role: Role::Witness,
                id: w.into(),
            },
            incarnation: 1,
            epoch: 1,
            to: None,
        },
        msg: hsb_common::wire::Dgram::Vote(Vote {
            witness: w,
            query,
            epoch: Epoch(1),
            verdict: Verdict::Grant,
            duration: Duration::from_secs(2),
            view: WitnessView {
                app: AppVerdict::Down,
                primary_host: false,
                standby_host: true,
                rates: Default::default(),
            },
            unprotected_after: None,
        }),
    }
}

/// What the node is driven through in [`stepped`].
#[derive(Clone, Copy, PartialEq)]
enum Drive {
    /// Heartbeats stop at 300 ms; two witnesses grant; then a second of the activated node's
    /// authority.
    Takeover,
    /// The same in maintenance mode from 53 ms to 1,253 ms (its notices every second).
    Maintenance,
    /// The ping-node baseline with a ping node that never answers (each ping runs out after
    /// the query timeout).
    SilentPingNode,
}

/// The node driven through `drive`: ticked every millisecond, or stepped only at its events
/// and at `next_deadline` (as the daemon's loop sleeps: whole milliseconds, 5 s at most). The
/// effects, each with its time; and how many times the node was stepped.
fn stepped(drive: Drive, every_ms: bool) -> (Vec<(u64, String)>, usize) {
    let mut h = Harness::new(true);
    if drive == Drive::SilentPingNode {
        let mut cfg = config(true);
        if let Some(f) = cfg.failover.as_mut() {
            f.decision.policy = decision::Policy::PingNode;
            f.ping_node = Some(addr(50, 80));
            // Off the heartbeat replies' 10 ms beat, so that the timer shows.
            f.decision.query_timeout = Duration::from_millis(97);
        }
        h.node = StandbyNode::new(cfg, host(), Nanos(0));
    }
    let slot = h.session(hello("primary", 1, 1, 7, 2048));
    let mut events: std::collections::BTreeMap<(u64, u64), Event> = Default::default();
    for t in (0..300).step_by(10) {
        events.insert((t, 0), heartbeat());
    }
    for t in (5..300).step_by(25) {
        let ev = Event::Applied {
            slot,
            ckpt: t / 25 + 1,
            full: t == 5,
            pages: 1,
            bytes: 1,
            took: Duration::ZERO,
        };
        events.insert((t, 1), ev);
    }
    if drive == Drive::Maintenance {
        for (t, on) in [(53, true), (1_253, false)] {
            let cmd = OperatorCmd::Maintenance(on);
            events.insert((t, 2), Event::Operator { conn: 1, cmd });
        }
    }
    let (mut got, mut steps, mut t) = (Vec::new(), 0, 0);
    while t <= 2_500 {
        let due: Vec<_> = events.range((t, 0)..(t + 1, 0)).map(|(k, _)| *k).collect();
        let evs: Vec<Event> = due.iter().filter_map(|k| events.remove(k)).collect();
        for ev in evs.into_iter().chain([Event::Tick]) {
            let before = h.effects.len();
            h.at(t).feed(ev);
            steps += 1;
            for e in &h.effects[before..] {
                if let Effect::Talk(Talk::Send {
                    msg: hsb_common::wire::Dgram::VoteRequest(q),
                    to,
                    ..
                }) = e
                {
                    // Witnesses 1 and 2 grant, a millisecond later.
                    for w in [1, 2] {
                        if *to == addr(10 + w, 7400) {
                            events.insert((t + 1, u64::from(w)), vote(w, q.query));
                        }
                    }
                }
                got.push((t, format!("{e:?}")));
            }
        }
        let next_event = events.keys().next().map(|k| k.0);
        t = if every_ms {
            t + 1
        } else {
            let d = h.node.next_deadline(h.now).map(|d| d.0.div_ceil(1_000_000));
            let d = d.unwrap_or(t + 5_000);
            next_event.map_or(d, |e| e.min(d)).max(t + 1)
        };
    }
    (got, steps)
}

/// Issue 13: the node needs no tick between its deadlines. Stepped only at its events and at
/// `next_deadline`, it decides the same at the same moments, with the same effects, as when
/// ticked every millisecond: a takeover and the activated authority after it, maintenance
/// mode and its notices, a ping node that never answers.
#[test]
fn the_node_is_stepped_at_its_deadlines() {
    for drive in [Drive::Takeover, Drive::Maintenance, Drive::SilentPingNode] {
        let (ticked, ticked_steps) = stepped(drive, true);
        let (at_deadlines, steps) = stepped(drive, false);
        let has = |what: &str| ticked.iter().any(|(_, e)| e.starts_with(what));
        match drive {
            Drive::SilentPingNode => assert!(has("CancelPing"), "pings run out"),
            _ => assert!(has("Activate"), "the scenario activates"),
        }
        for (i, (a, b)) in ticked.iter().zip(at_deadlines.iter()).enumerate() {
            assert_eq!(a, b, "effect {i}");
        }
        assert_eq!(ticked.len(), at_deadlines.len());
        assert!(
            steps * 3 < ticked_steps,
            "{steps} steps, {ticked_steps} ticked"
        );
    }
}
