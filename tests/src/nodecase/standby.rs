//! Node cases of the standby ([`StandbyNode`]).
//!
//! Events: `tick`, `incoming [host=H]` (a connection from 10.0.0.H), `hello slot=S [node=N]
//! [epoch=E] [incarnation=I] [nonce=K] [pages=P] [last-ckpt=C]` (a primary's Hello, 256 pages
//! unless said), `confirmed slot=S`, `heard slot=S`, `applied slot=S ckpt=C [full=B]`, `closed
//! slot=S [why=W]`, `ping-done [ok=B]`, `operator ask=activate|switchover|maintenance-on|
//! maintenance-off|force-stale [force=B] [conn=N]`; datagrams: `heartbeat [link=L] [epoch=E]`
//! (the primary's), `report w=W ...`, `vote w=W query=Q verdict=V ...` (a witness's),
//! `primary-fenced [epoch=E] [ckpt=C]` (the primary's confirmation), `lease w=W req=R
//! verdict=V ...` (a lease reply to the activated node).
//!
//! Answered (unless `answer off`): the host state is written, the replica activates, the disk
//! forks.
//!
//! Checks: `state` (status' word), `applied`, `current` (the live session's slot), `activated`,
//! `epoch`, `core` (the standby core's state), `may-serve`, `maintenance`, `host-role`,
//! `host-epoch` (the host state as last written).

use std::net::SocketAddr;
use std::time::Duration;

use hsb_common::datagram::{Dest, Envelope, Sender};
use hsb_common::decision::primary::Input as PInput;
use hsb_common::decision::record::{AnyInput, Defaults, FieldError, Fields};
use hsb_common::decision::standby::Input as SInput;
use hsb_common::decision::{Epoch, Role as CoreRole};
use hsb_common::msg::{self, DiskHello, Hello, Role};
use hsb_common::node_state::{NodeRole, NodeState};
use hsb_common::time::Nanos;
use hsb_common::wire::Dgram;
use hsb_standby::node::{Effect, Event, FailoverConfig, NodeConfig, OperatorCmd, StandbyNode};

use super::{flat, Case, Driver};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)))
}

pub(super) struct StandbyDriver {
    node: StandbyNode,
    answer: bool,
    lease: Duration,
}

impl StandbyDriver {
    pub(super) fn new(case: &Case) -> Result<StandbyDriver, String> {
        if let Some((k, _)) = case.node_keys.first() {
            return Err(format!("unknown key {k} for the standby"));
        }
        let cfg = NodeConfig {
            node: "host-b".into(),
            domain_pages: 256,
            primary_allow: Vec::new(),
            service: addr("10.0.0.2:8000"),
            promote: true,
            failover: case.failover.then(|| FailoverConfig {
                decision: case.config.clone(),
                witness_peers: (1..=3u8)
                    .map(|w| (w, addr(&format!("10.0.1.{w}:7400"))))
                    .collect(),
                primary_witness: addr("10.0.0.1:7001"),
                ping_node: Some(addr("10.0.2.1:22")),
                query_base: 0,
            }),
            disk_size: 0,
        };
        let host = NodeState {
            epoch: case.epoch,
            role: NodeRole::Standby,
            checkpoint: 0,
            incarnation: 9,
            maintenance: false,
        };
        Ok(StandbyDriver {
            node: StandbyNode::new(cfg, host, Nanos::ZERO),
            answer: case.answer,
            lease: case.config.lease.duration,
        })
    }

    fn primary(&self, from: &str, epoch: Epoch, msg: Dgram) -> Event {
        Event::Datagram {
            from: addr(from),
            env: Envelope {
                from: Sender {
                    role: Role::Primary,
                    id: 1,
                },
                incarnation: 1,
                epoch: epoch.0,
                to: Some(Dest::role(Role::Standby)),
            },
            msg,
        }
    }

    fn witness(&self, w: u8, epoch: Epoch, msg: Dgram) -> Event {
        Event::Datagram {
            from: addr(&format!("10.0.1.{w}:7400")),
            env: Envelope {
                from: Sender {
                    role: Role::Witness,
                    id: u32::from(w),
                },
                incarnation: 1,
                epoch: epoch.0,
                to: Some(Dest::role(Role::Standby)),
            },
            msg,
        }
    }
}

impl Driver for StandbyDriver {
    type Event = Event;
    type Effect = Effect;

    fn event(&self, name: &str, f: &mut Fields) -> Result<Event, String> {
        let s = |e: FieldError| e.to_string();
        let slot = |f: &mut Fields| f.u64("slot").map(|s| s as usize).map_err(s);
        let epoch = self.node.epoch();
        Ok(match name {
            "tick" => Event::Tick,
            "incoming" => Event::Incoming {
                peer: addr(&format!("10.0.0.{}:40000", f.u64_or("host", 1).map_err(s)?)),
            },
            "hello" => {
                let slot = slot(f)?;
                let node = f.take("node").unwrap_or_else(|| "host-a".into());
                let nonce = f.u64_or("nonce", 1).map_err(s)?;
                let mut n = [0u8; 16];
                n[..8].copy_from_slice(&nonce.to_le_bytes());
                Event::Hello {
                    slot,
                    hello: Hello {
                        role: Role::Primary,
                        node: msg::node_name(&node),
                        epoch: Epoch(f.u64_or("epoch", epoch.0).map_err(s)?),
                        nonce: n,
                        domain_pages: f.u64_or("pages", 256).map_err(s)?,
                        last_ckpt: f.u64_or("last-ckpt", 0).map_err(s)?,
                        incarnation: f.u64_or("incarnation", 1).map_err(s)?,
                        disk: DiskHello::default(),
                    },
                }
            }
            "confirmed" => Event::Confirmed { slot: slot(f)? },
            "heard" => Event::Heard {
                slot: slot(f)?,
                bytes: f.u64_or("bytes", 0).map_err(s)?,
            },
            "applied" => Event::Applied {
                slot: slot(f)?,
                ckpt: f.u64("ckpt").map_err(s)?,
                full: f.bool_or("full", false).map_err(s)?,
                pages: 1,
                bytes: 4096,
                took: Duration::ZERO,
            },
            "closed" => Event::Closed {
                slot: slot(f)?,
                why: f
                    .take("why")
                    .unwrap_or_else(|| "closed by the primary".into()),
                frame_error: None,
            },
            "ping-done" => Event::PingDone {
                ok: f.bool_or("ok", true).map_err(s)?,
            },
            "operator" => {
                let ask = f.take("ask").unwrap_or_default();
                let cmd = match ask.as_str() {
                    "activate" => OperatorCmd::Activate {
                        force: f.bool_or("force", false).map_err(s)?,
                    },
                    "switchover" => OperatorCmd::Switchover,
                    "maintenance-on" => OperatorCmd::Maintenance(true),
                    "maintenance-off" => OperatorCmd::Maintenance(false),
                    "force-stale" => OperatorCmd::ForceStale,
                    other => return Err(format!("operator: unknown ask {other:?}")),
                };
                Event::Operator {
                    conn: f.u64_or("conn", 0).map_err(s)? as usize,
                    cmd,
                }
            }
            "lease" => {
                let d = Defaults {
                    epoch,
                    lease: self.lease,
                };
                match AnyInput::parse(CoreRole::Primary, name, f, d).map_err(s)? {
                    AnyInput::Primary(PInput::LeaseReply(r)) => {
                        self.witness(r.witness, r.epoch, Dgram::LeaseReply(r))
                    }
                    _ => return Err("a lease reply".into()),
                }
            }
            core => {
                let d = Defaults {
                    epoch,
                    lease: self.lease,
                };
                match AnyInput::parse(CoreRole::Standby, core, f, d).map_err(s)? {
                    AnyInput::Standby(SInput::Heartbeat { link, epoch }) => {
                        self.primary("10.0.0.1:7002", epoch, Dgram::Heartbeat { link, acked: 0 })
                    }
                    AnyInput::Standby(SInput::PrimaryFenced { epoch, ckpt }) => {
                        self.primary("10.0.0.1:7001", epoch, Dgram::Fenced { epoch, ckpt })
                    }
                    AnyInput::Standby(SInput::Report(r)) => {
                        self.witness(r.witness, r.epoch, Dgram::Report(r))
                    }
                    AnyInput::Standby(SInput::Vote(v)) => {
                        self.witness(v.witness, v.epoch, Dgram::Vote(v))
                    }
                    _ => return Err(format!("not an event of the standby node: {core}")),
                }
            }
        })
    }

    fn step(&mut self, now: Nanos, ev: Event) -> Vec<Effect> {
        self.node.step(now, ev).into_iter().collect()
    }

    fn answer(&mut self, e: &Effect) -> Option<Event> {
        if !self.answer {
            return None;
        }
        Some(match e {
            Effect::RecordHost { state, purpose } => Event::HostRecorded {
                purpose: *purpose,
                state: *state,
                error: None,
            },
            Effect::Activate { .. } => Event::ReplicaActivated { error: None },
            Effect::ForkDisk { .. } => Event::DiskForked { error: None },
            _ => return None,
        })
    }

    fn text(e: &Effect) -> String {
        match e {
            Effect::Talk(t) => super::text::talk_text(t),
            e => flat(&format!("{e:?}")),
        }
    }

    fn next_deadline(&self, now: Nanos) -> Option<Nanos> {
        self.node.next_deadline(now)
    }

    fn check(&self, now: Nanos, key: &str) -> Option<String> {
        let n = &self.node;
        let view = n.failover_view(now);
        let opt = |v: Option<u64>| v.map_or("none".into(), |v| v.to_string());
        Some(match key {
            "state" => n.state_name().to_string(),
            "applied" => opt(n.applied()),
            "current" => opt(n.current().map(|c| c as u64)),
            "activated" => opt(n.activated()),
            "epoch" => n.epoch().to_string(),
            "core" => view.map_or("none".into(), |v| v.state.name().to_string()),
            "may-serve" => n.may_serve(now).to_string(),
            "maintenance" => n.maintenance().to_string(),
            "host-role" => n.host().role.name().to_string(),
            "host-epoch" => n.host().epoch.to_string(),
            _ => return None,
        })
    }
}
