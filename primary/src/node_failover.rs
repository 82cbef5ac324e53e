//! The primary node's failover side (when `failover = true`): the authority that gates output
//! (DESIGN.md rules 3-5), heartbeats to the standby, the witnesses' datagrams, a switchover's
//! final checkpoint and confirmation (rule 6), the standby's maintenance notices.

use std::net::SocketAddr;
use std::time::Duration;

use hsb_common::datagram::{Dest, Envelope};
use hsb_common::decision::primary::{Input as PInput, Mode};
use hsb_common::decision::{self, Epoch, PrimaryAuthority, WitnessId};
use hsb_common::kit::authority::{plan, Duty, Step};
use hsb_common::kit::talk::Talk;
use hsb_common::msg::Role;
use hsb_common::node_state::NodeRole;
use hsb_common::time::Nanos;
use hsb_common::wire::Dgram;

use super::{push, silent_from, silent_too_long, Dom, Effect, Effects, Link, PrimaryNode, Start};

/// How long a maintenance notice of the standby holds (they come every second).
const MAINTENANCE_NOTICE: Duration = Duration::from_secs(3);

/// The failover configuration.
#[derive(Debug, Clone)]
pub struct FailoverConfig {
    /// The decision rules' parameters.
    pub decision: decision::Config,
    /// The standby's heartbeat addresses, one per link.
    pub heartbeat_peers: Vec<SocketAddr>,
    /// The witnesses.
    pub witness_peers: Vec<(WitnessId, SocketAddr)>,
    /// The standby's datagram address (a switchover's confirmation goes there).
    pub standby_witness: SocketAddr,
}

/// The failover side's state.
pub(super) struct FailoverState {
    pub(super) authority: PrimaryAuthority,
    pub(super) next_heartbeat: Nanos,
    pub(super) fenced: bool,
    pub(super) stepped_down: bool,
    pub(super) heartbeats: u64,
    /// The standby's node id, from its Hello (datagrams to it name it once known).
    pub(super) standby_id: Option<u32>,
    /// A fence confirmation owed to a switching standby (its epoch, since when): sent after a
    /// final checkpoint of the suspended domain is on its way.
    pub(super) confirm: Option<(Epoch, Nanos)>,
    /// The final checkpoint asked for, and once captured.
    pub(super) final_asked: Option<u64>,
    pub(super) final_ckpt: Option<u64>,
    /// Rejoin as the standby once the confirmation is sent.
    pub(super) rejoin_after_confirm: bool,
    /// The standby's operator paused automatic takeovers (its notices renew this).
    pub(super) maintenance_until: Option<Nanos>,
    /// Heartbeat replies received from the standby.
    pub(super) standby_replies: u64,
}

impl FailoverState {
    pub(super) fn new(cfg: &FailoverConfig, start: &Start, now: Nanos) -> FailoverState {
        let a = PrimaryAuthority::new(cfg.decision.clone(), start.epoch, now)
            .resume_at(start.first_checkpoint.saturating_sub(1))
            .with_request_base(start.request_base);
        let a = if start.promoted { a.promoted() } else { a };
        let authority = if start.forced {
            log::warn!("serving on the operator's word (a forced activation) until a witness-quorum lease or an ack takes over");
            a.with_operator_authority()
        } else {
            a
        };
        FailoverState {
            authority,
            next_heartbeat: now,
            fenced: false,
            stepped_down: false,
            heartbeats: 0,
            standby_id: None,
            confirm: None,
            final_asked: None,
            final_ckpt: None,
            rejoin_after_confirm: false,
            maintenance_until: None,
            standby_replies: 0,
        }
    }

    /// The standby, as a datagram destination.
    fn standby(&self) -> Dest {
        Dest {
            role: Role::Standby,
            id: self.standby_id,
        }
    }

    pub(super) fn next_deadline(&self, now: Nanos, cfg: Option<&FailoverConfig>) -> Option<Nanos> {
        let lease = cfg.map_or(Duration::ZERO, |c| c.decision.lease.duration);
        [
            (!self.stepped_down).then_some(self.next_heartbeat),
            self.authority.next_deadline(now),
            self.confirm
                .map(|(_, since)| since.plus(lease / 2).plus(Duration::from_nanos(1))),
            self.maintenance_until,
        ]
        .into_iter()
        .flatten()
        .filter(|&t| t > now)
        .min()
        .or((!self.stepped_down && self.next_heartbeat <= now).then_some(now))
    }
}

impl PrimaryNode {
    fn cfg_failover(&self) -> &FailoverConfig {
        match self.cfg.failover.as_ref() {
            Some(c) => c,
            None => unreachable!("failover state without failover configuration"),
        }
    }

    /// Heartbeats, the authority's timers, and output release.
    pub(super) fn failover_tick(&mut self, now: Nanos, fx: &mut Effects) {
        let acked = self.acked;
        let interval = self.cfg_failover().decision.heartbeat.interval;
        let peers = self.cfg_failover().heartbeat_peers.clone();
        let Some(f) = self.failover.as_mut() else {
            return;
        };
        if now >= f.next_heartbeat && !f.stepped_down {
            f.next_heartbeat = now.plus(interval);
            let dest = f.standby();
            for (link, to) in peers.into_iter().enumerate() {
                push(
                    fx,
                    Effect::Talk(Talk::Send {
                        to,
                        dest,
                        msg: Dgram::Heartbeat {
                            link: link as u8,
                            acked,
                        },
                    }),
                );
                f.heartbeats += 1;
            }
        }
        self.authority_step(now, PInput::Tick, fx);
        self.release_under_authority(now, fx);
        self.drop_silent_standby(now, fx);
    }

    /// Running unprotected under the witnesses' lease while a checkpoint has waited longer than
    /// a lease for its ack: the standby is gone for now (a cut link keeps the TCP connection
    /// open for many minutes). End the session, so that when the link heals the standby gets a
    /// fresh full synchronisation (DESIGN.md §2) rather than the stream resuming where it stopped.
    fn drop_silent_standby(&mut self, now: Nanos, fx: &mut Effects) {
        let Some(f) = self.failover.as_ref() else {
            return;
        };
        if self.link == Link::Streaming
            && f.authority.mode(now) == Mode::Unprotected
            && silent_too_long(
                self.unacked.front().copied(),
                self.full_unacked,
                now,
                self.cfg_failover().decision.lease.duration,
            )
        {
            self.lose_standby(
                now,
                "no acknowledgement for longer than a lease while running unprotected under the witnesses' lease; it gets a fresh full synchronisation when it is back".into(),
                None,
                fx,
            );
        }
    }

    /// When [`Self::drop_silent_standby`] next has something to do: a lease after the oldest
    /// unacknowledged checkpoint (never for a full synchronisation, which is exempt), and once
    /// that has passed, at once only if running unprotected (the tick drops the standby then).
    /// A protected (degraded) or holding primary waits for the ack however late, with nothing
    /// due meanwhile: what can make it unprotected later is an input (a lease reply: this then
    /// says now) or time at one of the authority's own deadlines (the standby counting as
    /// lost). The past instant it used to return made the loop poll with a zero timeout until
    /// the ack came: under F10's loss an ack can take longer than a lease, the daemon then
    /// took a whole core for seconds, and on a loaded machine it answered the witnesses' pings
    /// so late that they voted for a takeover (F10 failed over in 1 run of 10).
    pub(super) fn silent_drop_deadline(&self, now: Nanos) -> Option<Nanos> {
        let f = self.failover.as_ref()?;
        let lease = self.cfg.failover.as_ref()?.decision.lease.duration;
        if self.link != Link::Streaming {
            return None;
        }
        let at = silent_from(self.unacked.front().copied(), self.full_unacked, lease)?;
        if at > now {
            Some(at)
        } else if f.authority.mode(now) == Mode::Unprotected {
            Some(now)
        } else {
            None
        }
    }

    /// Release what the authority allows: acknowledged output while protected (degraded too:
    /// however late the ack), everything under a witness-quorum lease (or the baselines'
    /// unprotected mode), nothing otherwise.
    pub(super) fn release_under_authority(&mut self, now: Nanos, fx: &mut Effects) {
        let Some(f) = self.failover.as_ref() else {
            return;
        };
        let upto = match f.authority.mode(now) {
            Mode::Protected | Mode::Degraded => {
                self.released = self.released.max(self.acked);
                self.acked
            }
            Mode::Unprotected => u64::MAX,
            _ => return,
        };
        self.release(upto, fx);
    }

    pub(super) fn authority_step(&mut self, now: Nanos, input: PInput, fx: &mut Effects) {
        let Some(f) = self.failover.as_mut() else {
            return;
        };
        let actions = f.authority.step(now, input);
        let witnesses = self.cfg_failover().witness_peers.clone();
        for step in plan(input, actions, &witnesses) {
            match step {
                Step::Talk(t) => push(fx, Effect::Talk(t)),
                Step::Duty(d) => self.duty(now, d, fx),
            }
        }
    }

    fn duty(&mut self, now: Nanos, d: Duty, fx: &mut Effects) {
        let Some(f) = self.failover.as_mut() else {
            return;
        };
        match d {
            Duty::Fence => {
                if !f.fenced {
                    f.fenced = true;
                    log::error!("FENCED: no authority to release output; the domain is paused and output held");
                }
                self.reconcile(fx);
            }
            Duty::Unfence => {
                if f.fenced && !f.stepped_down {
                    f.fenced = false;
                    log::warn!("unfenced: authority regained; the domain runs again");
                }
                self.reconcile(fx);
            }
            Duty::StepDown(epoch) => {
                push(fx, Effect::Talk(Talk::SetEpoch(epoch)));
                // Written before anything else: a restart of this host must never make it
                // the primary again (README: the restart matrix).
                let mut st = self.host_state(NodeRole::SteppedDown, self.reserved);
                st.epoch = epoch;
                push(fx, Effect::SaveState(st));
                let Some(f) = self.failover.as_mut() else {
                    return;
                };
                let first = !f.stepped_down;
                f.stepped_down = true;
                f.fenced = true;
                self.reconcile(fx);
                log::error!(
                    "STEPPED DOWN: epoch {} is active elsewhere; this domain stays paused and its held output is never released",
                    epoch.0
                );
                if first {
                    push(fx, Effect::OnFence(epoch));
                }
                match self.failover.as_mut() {
                    // A switching standby waits for the final checkpoint: rejoin after it.
                    Some(f) if f.confirm.is_some() => f.rejoin_after_confirm = true,
                    _ => push(fx, Effect::Rejoin),
                }
            }
            Duty::RequestFullSync => {}
            Duty::ConfirmFenced { epoch, .. } => {
                // Confirmed once a final checkpoint of the suspended domain is on its way, so
                // the standby activates with everything this primary did.
                log::warn!(
                    "switchover to epoch {epoch}: a final checkpoint of the fenced domain, then the confirmation"
                );
                f.confirm = Some((epoch, now));
            }
        }
    }

    pub(super) fn on_datagram(
        &mut self,
        now: Nanos,
        from: SocketAddr,
        env: Envelope,
        msg: Dgram,
        fx: &mut Effects,
    ) {
        let Some(f) = self.failover.as_mut() else {
            return;
        };
        match msg {
            Dgram::Ping { nonce } => {
                if !f.stepped_down {
                    push(fx, Effect::Talk(Talk::pong(from, env.from, nonce)));
                }
            }
            Dgram::LeaseReply(r) => self.authority_step(now, PInput::LeaseReply(r), fx),
            Dgram::StandbyAlive {
                epoch,
                applied,
                heard,
                stream,
            } if env.from.role == Role::Standby => {
                f.standby_replies += 1;
                self.authority_step(
                    now,
                    PInput::StandbyAlive {
                        epoch,
                        applied,
                        heard,
                        stream,
                    },
                    fx,
                );
                // A reply can make the standby present again: release what is acked.
                self.release_under_authority(now, fx);
            }
            Dgram::FenceRequest { epoch } => {
                log::warn!(
                    "the standby asks this primary to fence for a switchover to epoch {}",
                    epoch.0
                );
                self.authority_step(now, PInput::FenceRequest { epoch }, fx);
            }
            Dgram::Report(_) => {}
            Dgram::Maintenance { on } => {
                if on && f.maintenance_until.is_none() {
                    log::warn!("the standby's operator paused automatic takeovers (maintenance)");
                }
                f.maintenance_until = on.then(|| now.plus(MAINTENANCE_NOTICE));
            }
            other => log::debug!("ignored {} from {from}", other.name()),
        }
    }

    /// A switchover's fence confirmation is owed: take a final checkpoint of the suspended
    /// domain, and once it is written to the standby's connection, confirm with its number and
    /// rejoin as the standby. Without a session, or if the checkpoint cannot be taken within
    /// half a lease (the domain did not suspend cooperatively, say), confirm with the last
    /// checkpoint sent: nothing acknowledged depends on the final one.
    pub(super) fn final_checkpoint(&mut self, now: Nanos, fx: &mut Effects) {
        let Some(f) = self.failover.as_ref() else {
            return;
        };
        let Some((epoch, since)) = f.confirm else {
            return;
        };
        let streaming = self.link == Link::Streaming;
        let late = now.since(since) > self.cfg_failover().decision.lease.duration / 2;
        let last_sent = self.next_ckpt.saturating_sub(1);
        let confirm = match f.final_ckpt {
            Some(n) if !self.sending => Some(n),
            Some(_) if !streaming || late => Some(last_sent),
            Some(_) => None,
            None if !streaming || late => Some(last_sent),
            None => {
                // (A full synchronisation first waits for its disk resynchronisation's copy.)
                if self.dom == Dom::Suspended
                    && !self.sending
                    && self.busy.is_none()
                    && self.disk_ready_for_full(fx)
                    && self.reserved_for_next(fx)
                {
                    let n = self.next_ckpt;
                    if let Some(f) = self.failover.as_mut() {
                        f.final_asked = Some(n);
                    }
                    self.capture(false, fx);
                }
                None
            }
        };
        let Some(ckpt) = confirm else {
            return;
        };
        let to = self.cfg_failover().standby_witness;
        let Some(f) = self.failover.as_mut() else {
            return;
        };
        let dest = f.standby();
        // Sent twice: the standby waits for it, and a datagram can be lost.
        for _ in 0..2 {
            push(
                fx,
                Effect::Talk(Talk::Send {
                    to,
                    dest,
                    msg: Dgram::Fenced { epoch, ckpt },
                }),
            );
        }
        f.confirm = None;
        log::warn!("switchover to epoch {epoch}: fenced, final checkpoint {ckpt}; confirmed");
        if std::mem::take(&mut f.rejoin_after_confirm) {
            push(fx, Effect::Rejoin);
        }
    }
}
