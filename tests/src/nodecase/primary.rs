//! Node cases of the primary ([`PrimaryNode`]).
//!
//! Events: `tick`, `connect-failed`, `connected`, `session-opened [node=N] [epoch=E]
//! [last-ckpt=C]`, `ack ckpt=C [epoch=E]`, `refused [reason=R]`, `lost [why=W]`, `sent`,
//! `reserved ok=B upto=C`, `suspended`, `suspend-failed`, `fence-done [suspended=B]
//! [hard-paused=B]`, `paused-outright ok=B`, `captured ckpt=C`, `capture-failed`; datagrams:
//! `lease w=W req=R verdict=V ...` (a witness's lease reply), `fence-request [epoch=E]` (the
//! standby's), `standby-alive [applied=C] heard=H stream=S` (its heartbeat reply), `maintenance [on=B]` (the standby's notice), `ping [w=W] [nonce=N]` (a
//! witness's).
//!
//! Answered (unless `answer off`): a reservation is written, a suspend reaches its point, a
//! capture is taken and then sent, a fence suspends the domain, a pause-outright pauses it.
//!
//! Checks: `link` (down, connecting, await-hello, streaming), `acked`, `next-checkpoint`,
//! `unacked`, `mode` (the authority's), `fenced`, `may-release`, `released` (the highest
//! `release upto` so far), `epoch`.

use std::net::SocketAddr;
use std::time::Duration;

use hsb_common::datagram::{Dest, Envelope, Sender};
use hsb_common::decision::primary::Input as PInput;
use hsb_common::decision::record::{AnyInput, Defaults, Fields};
use hsb_common::decision::{parse_duration, Role as CoreRole};
use hsb_common::msg::Role;
use hsb_common::node_state::CHECKPOINT_BLOCK;
use hsb_common::time::Nanos;
use hsb_common::wire::Dgram;
use hsb_primary::node::{Effect, Event, FailoverConfig, Link, NodeConfig, PrimaryNode, Start};

use super::{flat, Case, Driver};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)))
}

pub(super) struct PrimaryDriver {
    node: PrimaryNode,
    answer: bool,
    lease: Duration,
    /// A capture answered: `sent` follows the step.
    staged: bool,
    released: u64,
}

impl PrimaryDriver {
    pub(super) fn new(case: &Case) -> Result<PrimaryDriver, String> {
        let mut cfg = NodeConfig {
            standby: addr("10.0.0.2:7000"),
            period: Duration::from_millis(25),
            max_unacked: 4,
            precopy: false,
            reconnect_interval: Duration::from_millis(200),
            max_reconnect: hsb_primary::config::MAX_RECONNECT,
            failover: case.failover.then(|| FailoverConfig {
                decision: case.config.clone(),
                heartbeat_peers: vec![addr("10.0.0.2:7002")],
                witness_peers: (1..=3u8)
                    .map(|w| (w, addr(&format!("10.0.1.{w}:7400"))))
                    .collect(),
                standby_witness: addr("10.0.0.2:7001"),
            }),
            disk: false,
        };
        for (k, v) in &case.node_keys {
            let bad = || format!("node key {k}={v}: expected a duration or a number");
            match k.as_str() {
                "period" => cfg.period = parse_duration(v).ok_or_else(bad)?,
                "reconnect-interval" => {
                    cfg.reconnect_interval = parse_duration(v).ok_or_else(bad)?
                }
                "max-unacked" => cfg.max_unacked = v.parse().map_err(|_| bad())?,
                _ => return Err(format!("unknown key {k} for the primary")),
            }
        }
        let start = Start {
            epoch: case.epoch,
            first_checkpoint: 1,
            reserved: CHECKPOINT_BLOCK,
            incarnation: 7,
            maintenance: false,
            promoted: false,
            forced: false,
            request_base: 0,
        };
        Ok(PrimaryDriver {
            node: PrimaryNode::new(cfg, start, Nanos::ZERO),
            answer: case.answer,
            lease: case.config.lease.duration,
            staged: false,
            released: 0,
        })
    }

    /// A datagram from `from` (who says it is `who`), addressed to this primary.
    fn datagram(&self, from: &str, who: Sender, msg: Dgram) -> Event {
        Event::Datagram {
            from: addr(from),
            env: Envelope {
                from: who,
                incarnation: 1,
                epoch: self.node.epoch().0,
                to: Some(Dest::role(Role::Primary)),
            },
            msg,
        }
    }
}

impl Driver for PrimaryDriver {
    type Event = Event;
    type Effect = Effect;

    fn event(&self, name: &str, f: &mut Fields) -> Result<Event, String> {
        let s = |e: hsb_common::decision::record::FieldError| e.to_string();
        let word = |f: &mut Fields, k: &str, d: &str| f.take(k).unwrap_or_else(|| d.to_string());
        Ok(match name {
            "tick" => Event::Tick,
            "connect-failed" => Event::ConnectFailed,
            "connected" => Event::Connected,
            "session-opened" => {
                let node = word(f, "node", "host-b");
                Event::SessionOpened {
                    id: hsb_common::datagram::node_sender_id(&node),
                    node,
                    epoch: f.u64_or("epoch", self.node.epoch().0).map_err(s)?,
                    last_ckpt: f.u64_or("last-ckpt", 0).map_err(s)?,
                }
            }
            "ack" => Event::Ack {
                ckpt: f.u64("ckpt").map_err(s)?,
                epoch: f.epoch_or("epoch", self.node.epoch()).map_err(s)?,
            },
            "refused" => Event::Refused {
                reason: word(f, "reason", "refused"),
            },
            "lost" => Event::Lost {
                why: word(f, "why", "connection closed by the standby"),
                frame_error: None,
            },
            "sent" => Event::Sent {
                bytes: f.u64_or("bytes", 4096).map_err(s)?,
            },
            "reserved" => Event::Reserved {
                ok: f.bool_or("ok", true).map_err(s)?,
                upto: f.u64("upto").map_err(s)?,
            },
            "suspended" => Event::Suspended { waited: None },
            "suspend-failed" => Event::SuspendFailed {
                why: word(f, "why", "suspend failed"),
            },
            "fence-done" => Event::FenceDone {
                suspended: f.bool_or("suspended", true).map_err(s)?,
                hard_paused: f.bool_or("hard-paused", false).map_err(s)?,
            },
            "paused-outright" => Event::PausedOutright {
                ok: f.bool_or("ok", true).map_err(s)?,
            },
            "captured" => Event::Captured {
                ckpt: f.u64("ckpt").map_err(s)?,
                pages: 1,
                bytes: 4096,
                pause: Duration::ZERO,
                recopied: None,
                precopying: false,
            },
            "capture-failed" => Event::CaptureFailed {
                why: word(f, "why", "capture failed"),
                precopying: false,
            },
            "maintenance" => self.datagram(
                "10.0.0.2:7001",
                Sender {
                    role: Role::Standby,
                    id: 1,
                },
                Dgram::Maintenance {
                    on: f.bool_or("on", true).map_err(s)?,
                },
            ),
            "ping" => {
                let w = f.u64_or("w", 1).map_err(s)?;
                self.datagram(
                    &format!("10.0.1.{w}:7400"),
                    Sender {
                        role: Role::Witness,
                        id: w as u32,
                    },
                    Dgram::Ping {
                        nonce: f.u64_or("nonce", 1).map_err(s)?,
                    },
                )
            }
            core => {
                let d = Defaults {
                    epoch: self.node.epoch(),
                    lease: self.lease,
                };
                match AnyInput::parse(CoreRole::Primary, core, f, d).map_err(s)? {
                    AnyInput::Primary(PInput::LeaseReply(r)) => self.datagram(
                        &format!("10.0.1.{}:7400", r.witness),
                        Sender {
                            role: Role::Witness,
                            id: u32::from(r.witness),
                        },
                        Dgram::LeaseReply(r),
                    ),
                    AnyInput::Primary(PInput::StandbyAlive {
                        epoch,
                        applied,
                        heard,
                        stream,
                    }) => self.datagram(
                        "10.0.0.2:7002",
                        Sender {
                            role: Role::Standby,
                            id: 1,
                        },
                        Dgram::StandbyAlive {
                            epoch,
                            applied,
                            heard,
                            stream,
                        },
                    ),
                    AnyInput::Primary(PInput::FenceRequest { epoch }) => self.datagram(
                        "10.0.0.2:7001",
                        Sender {
                            role: Role::Standby,
                            id: 1,
                        },
                        Dgram::FenceRequest { epoch },
                    ),
                    _ => return Err(format!("not an event of the primary node: {core}")),
                }
            }
        })
    }

    fn step(&mut self, now: Nanos, ev: Event) -> Vec<Effect> {
        self.node.step(now, ev).into_iter().collect()
    }

    /// The model daemon's answer to `e`, if it has one.
    fn answer(&mut self, e: &Effect) -> Option<Event> {
        if let Effect::Release { upto } = e {
            self.released = self.released.max(*upto);
        }
        if !self.answer {
            return None;
        }
        Some(match e {
            Effect::Reserve(st) => Event::Reserved {
                ok: true,
                upto: st.checkpoint,
            },
            Effect::Suspend => Event::Suspended { waited: None },
            Effect::Capture { ckpt, full, .. } => {
                self.staged = true;
                Event::Captured {
                    ckpt: *ckpt,
                    pages: if *full { 256 } else { 1 },
                    bytes: 4096,
                    pause: Duration::ZERO,
                    recopied: None,
                    precopying: false,
                }
            }
            Effect::Fence => Event::FenceDone {
                suspended: true,
                hard_paused: false,
            },
            Effect::PauseOutright => Event::PausedOutright { ok: true },
            _ => return None,
        })
    }

    /// A capture answered: `sent` follows the step.
    fn then(&mut self) -> Option<Event> {
        std::mem::take(&mut self.staged).then_some(Event::Sent { bytes: 4096 })
    }

    fn text(e: &Effect) -> String {
        match e {
            Effect::Talk(t) => super::text::talk_text(t),
            e => flat(&format!("{e:?}")),
        }
    }

    fn next_deadline(&self, now: Nanos) -> Option<Nanos> {
        Some(self.node.next_deadline(now))
    }

    fn check(&self, now: Nanos, key: &str) -> Option<String> {
        let n = &self.node;
        let view = n.failover_view(now);
        Some(match key {
            "link" => match n.link() {
                Link::Down(_) => "down",
                Link::Connecting => "connecting",
                Link::AwaitHello => "await-hello",
                Link::Streaming => "streaming",
            }
            .to_string(),
            "acked" => n.acked().to_string(),
            "next-checkpoint" => n.next_checkpoint().to_string(),
            "unacked" => n.unacked().to_string(),
            "mode" => view.map_or("none".into(), |v| v.mode.name().to_string()),
            "fenced" => n.is_fenced().to_string(),
            "stepped-down" => view.is_some_and(|v| v.stepped_down).to_string(),
            "may-release" => n.may_release_output(now).to_string(),
            "released" => self.released.to_string(),
            "epoch" => n.epoch().to_string(),
            _ => return None,
        })
    }
}
