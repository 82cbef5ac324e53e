//! The primary node: everything hsb-primary decides, as a state machine without I/O (STYLE.md,
//! "the daemon shape"). It owns the replication session's phase, the checkpoint schedule and
//! numbering (with the reservation of numbers in the host state, rule 10), what is acknowledged
//! and what waits for an ack, full-synchronisation tracking, the pre-copy's pacing, the state of
//! the domain as far as the decisions need it, output release, the failover side: the
//! authority (DESIGN.md rules 3-5), heartbeats, the switchover's final checkpoint, maintenance
//! notices, and the disk's part (`node_disk.rs`: a full synchronisation completes the disk's
//! resynchronisation; epochs end early when the journal fills).
//!
//! `step(now, event)` returns the effects to carry out, in order; the daemon (`daemon.rs`)
//! turns bytes into events and effects into I/O, and answers some effects with an event of
//! their outcome ([`Effect::Reserve`], [`Effect::Suspend`], [`Effect::Capture`], ...). Until
//! that answer comes the node starts no other domain operation. Nothing here reads a clock or
//! touches a socket, a file or a process; invariants are checked after every step.

use std::collections::VecDeque;
use std::time::Duration;

use hsb_common::decision::primary::Input as PInput;
use hsb_common::decision::Epoch;
use hsb_common::frame::{FrameError, Kind};
use hsb_common::kit::push;
use hsb_common::node_state::{NodeRole, NodeState};
use hsb_common::time::Nanos;

#[path = "node_checkpoint.rs"]
mod checkpoint;
#[path = "node_disk.rs"]
mod disk;
#[path = "node_failover.rs"]
mod failover;
#[path = "node_types.rs"]
mod types;
#[path = "node_view.rs"]
mod view;
pub use disk::DiskPhase;
use disk::DiskState;
pub use failover::FailoverConfig;
use failover::FailoverState;
pub use types::{
    Dom, Effect, Effects, Event, Link, NodeConfig, Start, Stats, MAX_EFFECTS, MAX_HEARTBEAT_LINKS,
};
pub use view::{silent_from, silent_too_long, FailoverView};

/// A domain operation whose outcome the daemon will tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Busy {
    /// Writing a reservation of checkpoint numbers; a checkpoint follows if it succeeds.
    Reserve,
    /// One pre-copy step.
    Precopy,
    /// Capturing checkpoint `ckpt`; the domain resumes after it unless fenced.
    Capture { ckpt: u64, resume: bool },
    /// Pausing the domain outright.
    Pause,
    /// A step of the disk resynchronisation's copy.
    Resync,
}

/// What the daemon must do, in order.
/// The primary node.
pub struct PrimaryNode {
    cfg: NodeConfig,
    start: Start,
    link: Link,
    backoff: Duration,
    dom: Dom,
    busy: Option<Busy>,
    /// A pre-copy is under way in staging.
    precopying: bool,
    /// The staged checkpoint is being written.
    sending: bool,
    unacked: VecDeque<(u64, Nanos)>,
    full_unacked: Option<u64>,
    next_ckpt: u64,
    acked: u64,
    need_full: bool,
    reserved: u64,
    next_period: Nanos,
    /// A period passed without its checkpoint (backpressure): the next one is taken as soon as
    /// one may be (the link free, room under `max_unacked`), not at the next period's tick.
    owed: bool,
    /// Output released up to this while protected (checked against `acked`; releases under a
    /// lease are unprotected by definition).
    released: u64,
    stats: Stats,
    failover: Option<FailoverState>,
    /// The guest's disk, if it has one.
    disk: Option<DiskState>,
}

impl PrimaryNode {
    /// A primary starting at `now`.
    pub fn new(cfg: NodeConfig, start: Start, now: Nanos) -> PrimaryNode {
        let first = start.first_checkpoint.max(1);
        let failover = cfg
            .failover
            .as_ref()
            .map(|f| FailoverState::new(f, &start, now));
        PrimaryNode {
            backoff: cfg.reconnect_interval,
            next_period: now.plus(cfg.period),
            owed: false,
            link: Link::Down(Some(now)),
            dom: Dom::Running,
            busy: None,
            precopying: false,
            sending: false,
            unacked: VecDeque::new(),
            full_unacked: None,
            next_ckpt: first,
            acked: first - 1,
            need_full: true,
            reserved: start.reserved,
            released: first - 1,
            stats: Stats::default(),
            failover,
            disk: cfg.disk.then(DiskState::default),
            start,
            cfg,
        }
    }

    /// One input at `now`: the effects to carry out, in order.
    pub fn step(&mut self, now: Nanos, ev: Event) -> Effects {
        let mut fx = Effects::new();
        match ev {
            Event::Tick => self.tick(now, &mut fx),
            Event::ConnectFailed => self.retry_later(now),
            Event::Connected => {
                if self.link == Link::Connecting {
                    self.link = Link::AwaitHello;
                    push(
                        &mut fx,
                        Effect::SendHello {
                            epoch: self.start.epoch,
                            last_ckpt: self.acked,
                        },
                    );
                }
            }
            Event::SessionOpened {
                node,
                id,
                epoch,
                last_ckpt,
            } => {
                self.link = Link::Streaming;
                self.stats.sessions += 1;
                if let Some(f) = self.failover.as_mut() {
                    f.standby_id = Some(id);
                }
                log::info!(
                    "standby {} ({node}) session open: epoch {epoch}, its last applied checkpoint {last_ckpt}; starting full synchronisation",
                    self.cfg.standby
                );
                self.need_full = true;
                self.disk_session();
            }
            Event::Ack { ckpt, epoch } => self.on_ack(now, ckpt, epoch, &mut fx),
            Event::Refused { reason } => {
                log::error!("standby {} refused replication: {reason}", self.cfg.standby);
                self.lose_standby(now, "it refused replication".into(), None, &mut fx);
            }
            Event::Lost { why, frame_error } => self.lose_standby(now, why, frame_error, &mut fx),
            Event::Sent { bytes } => {
                self.sending = false;
                self.stats.bytes_sent += bytes;
                self.stats.checkpoints_sent += 1;
                self.stats.window.1 += bytes;
                // A switchover's final checkpoint is on its way: confirm now, not at the next
                // tick (a fenced primary's next deadline may be a period away).
                self.final_checkpoint(now, &mut fx);
                // The link is free: a checkpoint a stretched period owes is taken now.
                self.catch_up(now, &mut fx);
            }
            Event::Reserved { ok, upto } => {
                self.busy = None;
                if ok {
                    self.reserved = self.reserved.max(upto);
                    if self.may_checkpoint() {
                        self.checkpoint(now, &mut fx);
                    }
                }
            }
            Event::PrecopyStepped { precopying, done } => {
                self.busy = None;
                self.precopying = precopying;
                if done {
                    // Suspend for the rest now (or copy all of it while suspended).
                    self.suspend(&mut fx);
                }
            }
            Event::Suspended { waited } => {
                self.on_suspended(waited, &mut fx);
                self.reconcile(&mut fx);
            }
            Event::SuspendFailed { why } => {
                self.dom = Dom::Running;
                if self.fenced() {
                    log::error!("fence: {why}; pausing the guest without its cooperation");
                    self.pause_outright(&mut fx);
                } else {
                    log::error!("checkpoint {} skipped: {why}", self.next_ckpt);
                }
            }
            Event::FenceDone {
                suspended,
                hard_paused,
            } => {
                self.dom = if hard_paused {
                    Dom::HardPaused
                } else if suspended {
                    Dom::Suspended
                } else {
                    Dom::Running
                };
                // A fence that stopped nothing is tried again at the next tick, not at once.
                if self.dom != Dom::Running {
                    self.reconcile(&mut fx);
                }
            }
            Event::PausedOutright { ok } => {
                self.busy = None;
                if ok {
                    self.dom = Dom::HardPaused;
                    self.reconcile(&mut fx);
                }
            }
            Event::Captured {
                ckpt,
                pages,
                bytes,
                pause,
                recopied,
                precopying,
            } => self.on_captured(
                now, ckpt, pages, bytes, pause, recopied, precopying, &mut fx,
            ),
            Event::CaptureFailed { why, precopying } => {
                self.precopying = precopying;
                if let Some(Busy::Capture { ckpt, resume }) = self.busy.take() {
                    self.dom = if resume { Dom::Running } else { Dom::Suspended };
                    log::error!("checkpoint {ckpt}: {why}");
                }
                self.lose_standby(now, why, None, &mut fx);
                self.reconcile(&mut fx);
            }
            Event::Datagram { from, env, msg } => self.on_datagram(now, from, env, msg, &mut fx),
            ev @ (Event::DiskReport
            | Event::ResyncStepped { .. }
            | Event::ResyncSent
            | Event::JournalHigh) => self.on_disk_event(now, ev, &mut fx),
        }
        self.check_invariants(now);
        self.check_disk_invariants();
        fx
    }

    fn tick(&mut self, now: Nanos, fx: &mut Effects) {
        self.reconcile(fx);
        self.final_checkpoint(now, fx);
        if now >= self.next_period {
            // The next period on the fixed schedule; skip those we are too late for.
            self.next_period = self.next_period.plus(self.cfg.period);
            if self.next_period <= now {
                self.next_period = now.plus(self.cfg.period);
            }
            // A fenced primary keeps replicating its paused domain: the standby's ack is how
            // it regains authority. One that stepped down stops for good.
            if self.link == Link::Streaming && !self.stepped_down() {
                if self.may_checkpoint() {
                    self.owed = false;
                    self.checkpoint(now, fx);
                } else {
                    // Backpressure: the period stretches; the guest runs, output waits, and
                    // the checkpoint is taken as soon as one may be (`catch_up`).
                    self.stats.stretched += 1;
                    self.owed = true;
                }
            }
        } else if self.catch_up_due() {
            self.catch_up(now, fx);
        } else if self.precopy_pending() || self.resync_pending() {
            // A pre-copy (of memory or disk) goes on between periods, a step per turn of the
            // loop.
            self.checkpoint(now, fx);
        }
        if matches!(self.link, Link::Down(Some(t)) if now >= t) {
            self.link = Link::Connecting;
            push(fx, Effect::Connect);
        }
        if self.failover.is_some() {
            self.failover_tick(now, fx);
        }
    }

    /// The next time a `Tick` has something to do (`now`: at once, a pre-copy goes on).
    pub fn next_deadline(&self, now: Nanos) -> Nanos {
        if self.precopy_pending() || self.catch_up_due() {
            return now;
        }
        let mut d = self.next_period;
        if let Link::Down(Some(t)) = self.link {
            d = d.min(t);
        }
        if let Some(t) = self.resync_deadline(now) {
            d = d.min(t);
        }
        if let Some(f) = &self.failover {
            if let Some(t) = f.next_deadline(now, self.cfg.failover.as_ref()) {
                d = d.min(t);
            }
            if let Some(t) = self.silent_drop_deadline(now) {
                d = d.min(t);
            }
        }
        d.max(now)
    }

    fn on_ack(&mut self, now: Nanos, ckpt: u64, epoch: Epoch, fx: &mut Effects) {
        if self.link != Link::Streaming {
            return;
        }
        match self.unacked.front() {
            Some(&(n, sent)) if n == ckpt => {
                self.unacked.pop_front();
                // A session that acknowledges works: reconnect promptly next time. (Not at
                // session open: a standby that refuses every session, being active itself,
                // would otherwise be asked again every reconnect_interval.)
                self.backoff = self.cfg.reconnect_interval;
                if self.full_unacked == Some(n) {
                    self.full_unacked = None;
                }
                self.acked = n;
                if self.disk.is_some() {
                    push(fx, Effect::DiskAcked { ckpt: n });
                }
                self.stats.ack_rtt.record(now.since(sent));
                if self.failover.is_some() {
                    self.authority_step(now, PInput::Ack { ckpt: n, epoch }, fx);
                    self.release_under_authority(now, fx);
                } else {
                    self.release(n, fx);
                }
            }
            _ => {
                let e = FrameError::Body {
                    kind: Kind::Ack,
                    why: "ack for a checkpoint not awaiting one",
                };
                self.lose_standby(now, format!("bad frame from the standby: {e}"), Some(e), fx);
            }
        }
    }

    /// The session is gone: unacked checkpoints are void, held output waits for the next full
    /// synchronisation's ack.
    fn lose_standby(
        &mut self,
        now: Nanos,
        why: String,
        frame_error: Option<FrameError>,
        fx: &mut Effects,
    ) {
        let streaming = (self.link == Link::Streaming).then_some((self.acked, self.unacked.len()));
        push(
            fx,
            Effect::Disconnect {
                why,
                frame_error,
                streaming,
            },
        );
        self.sending = false;
        self.owed = false;
        self.unacked.clear();
        self.full_unacked = None;
        push(
            fx,
            Effect::Rebase {
                next: self.next_ckpt,
            },
        );
        self.need_full = true;
        self.disk_lost(fx);
        self.retry_later(now);
    }

    fn retry_later(&mut self, now: Nanos) {
        if self.stepped_down() {
            // A primary that stepped down replicates no more (a newer epoch is active).
            self.link = Link::Down(None);
            log::info!("stepped down: not reconnecting to the standby");
            return;
        }
        self.link = Link::Down(Some(now.plus(self.backoff)));
        self.backoff = (self.backoff * 2).min(self.cfg.max_reconnect);
    }

    /// A stretched period owes a checkpoint, and one may be taken now.
    fn catch_up_due(&self) -> bool {
        self.owed && self.may_checkpoint()
    }

    /// Take the checkpoint a stretched period owes, if one may be taken now: at saturation the
    /// next capture follows the last send at once (the socket's buffer still feeds the link),
    /// instead of leaving the link idle until the next period's tick. The fixed schedule of
    /// periods goes on as before.
    fn catch_up(&mut self, now: Nanos, fx: &mut Effects) {
        if self.catch_up_due() {
            self.owed = false;
            self.checkpoint(now, fx);
        }
    }

    /// A pre-copy that can take its next step now.
    fn precopy_pending(&self) -> bool {
        self.precopying && self.dom != Dom::HardPaused && self.may_checkpoint()
    }

    /// Whether a checkpoint (or a pre-copy step) may start now: a session streams, this
    /// primary has not stepped down, nothing is being sent (nor disk copies), there is room
    /// under `max_unacked`, and no domain operation is under way.
    fn may_checkpoint(&self) -> bool {
        self.link == Link::Streaming
            && !self.stepped_down()
            && !self.sending
            && !self.disk_copying()
            && self.unacked.len() < self.cfg.max_unacked
            && self.dom != Dom::Suspending
            && self.busy.is_none()
    }

    fn pause_outright(&mut self, fx: &mut Effects) {
        if self.busy.is_none() {
            self.busy = Some(Busy::Pause);
            push(fx, Effect::PauseOutright);
        }
    }

    /// Bring the domain where the authority wants it: stopped while fenced (rule 4), running
    /// otherwise. Never while a domain operation's answer is awaited (a suspend or capture
    /// under way decides by `fenced` when it ends, and this runs again after every answer), so
    /// no two domain operations overlap.
    pub(super) fn reconcile(&mut self, fx: &mut Effects) {
        if self.busy.is_some() || self.dom == Dom::Suspending {
            return;
        }
        match (self.dom, self.fenced()) {
            (Dom::Running, true) => {
                self.dom = Dom::Suspending;
                push(fx, Effect::Fence);
            }
            (Dom::Suspended | Dom::HardPaused, false) => {
                self.dom = Dom::Running;
                push(fx, Effect::Unfence);
            }
            _ => {}
        }
    }

    fn release(&mut self, upto: u64, fx: &mut Effects) {
        push(fx, Effect::Release { upto });
    }

    fn host_state(&self, role: NodeRole, checkpoint: u64) -> NodeState {
        NodeState {
            epoch: self.start.epoch,
            role,
            checkpoint,
            incarnation: self.start.incarnation,
            maintenance: self.start.maintenance,
        }
    }

    fn fenced(&self) -> bool {
        self.failover.as_ref().is_some_and(|f| f.fenced)
    }

    fn stepped_down(&self) -> bool {
        self.failover.as_ref().is_some_and(|f| f.stepped_down)
    }
}

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;
