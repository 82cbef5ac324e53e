//! The primary node: everything hsb-primary decides, as a state machine without I/O (STYLE.md,
//! "the daemon shape"). It owns the replication session's phase, the checkpoint schedule and
//! numbering (with the reservation of numbers in the host state, rule 10), what is acknowledged
//! and what waits for an ack, full-synchronisation tracking, the pre-copy's pacing, the state of
//! the domain as far as the decisions need it, output release, and the failover side: the
//! authority (DESIGN.md rules 3-5), heartbeats, the switchover's final checkpoint, maintenance
//! notices.
//!
//! `step(now, event)` returns the effects to carry out, in order; the daemon (`daemon.rs`)
//! turns bytes into events and effects into I/O, and answers some effects with an event of
//! their outcome ([`Effect::Reserve`], [`Effect::Suspend`], [`Effect::Capture`], ...). Until
//! that answer comes the node starts no other domain operation. Nothing here reads a clock or
//! touches a socket, a file or a process; invariants are checked after every step.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use hsb_common::datagram::{Dest, Envelope};
use hsb_common::decision::primary::{Input as PInput, Mode};
use hsb_common::decision::record::AnyInput;
use hsb_common::decision::{Epoch, Evidence};
use hsb_common::frame::{FrameError, Kind};
use hsb_common::node_state::{NodeRole, NodeState, CHECKPOINT_BLOCK};
use hsb_common::stats::{ms, Histogram};
use hsb_common::time::Nanos;
use hsb_common::wire::Dgram;

#[path = "node_failover.rs"]
mod failover;
pub use failover::FailoverConfig;
use failover::FailoverState;

/// Most effects one step returns: heartbeats on every link, a lease request or notice to every
/// witness, a switchover's confirmation, the step-down's duties, a checkpoint.
pub const MAX_EFFECTS: usize = 64;

/// Heartbeat links at most (each is one datagram per heartbeat interval).
pub const MAX_HEARTBEAT_LINKS: usize = 8;

/// What the node needs of the configuration.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The standby's replication address (for the log).
    pub standby: SocketAddr,
    /// The checkpoint period.
    pub period: Duration,
    /// Checkpoints sent and not yet acknowledged, at most.
    pub max_unacked: usize,
    /// Copy a full synchronisation while the guest runs.
    pub precopy: bool,
    /// First reconnect delay (doubled up to `max_reconnect`).
    pub reconnect_interval: Duration,
    /// Longest reconnect delay.
    pub max_reconnect: Duration,
    /// Automatic failover, if on.
    pub failover: Option<FailoverConfig>,
}

/// What the node starts from (the host state's restart rule decided it, see `start.rs`).
#[derive(Debug, Clone, Copy)]
pub struct Start {
    /// The activation epoch this primary serves.
    pub epoch: Epoch,
    /// The first checkpoint number it uses.
    pub first_checkpoint: u64,
    /// Checkpoint numbers up to this are reserved in the host state.
    pub reserved: u64,
    /// The datagram incarnation of this process.
    pub incarnation: u64,
    /// The host's maintenance mode (carried on in the state it writes).
    pub maintenance: bool,
    /// Promoted by a standby's hand-over.
    pub promoted: bool,
    /// Activated by the operator's force (rule 9).
    pub forced: bool,
    /// The first lease request number (random per process).
    pub request_base: u32,
}

/// The replication session, as the node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// No connection; the next attempt at this time (never after a step-down).
    Down(Option<Nanos>),
    /// Connecting.
    Connecting,
    /// Connected; our Hello sent, the standby's awaited.
    AwaitHello,
    /// The session is open: checkpoints flow.
    Streaming,
}

/// The domain, as far as the decisions need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dom {
    /// Running.
    Running,
    /// Asked to suspend (a checkpoint's or a fence's); the answer is awaited.
    Suspending,
    /// Suspended at a consistent point (fenced, or between suspend and capture).
    Suspended,
    /// Paused without its cooperation: nothing restorable to capture.
    HardPaused,
}

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
}

/// What the daemon must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Connect to the standby ([`Event::Connected`] or [`Event::ConnectFailed`]).
    Connect,
    /// Open the session: send our Hello.
    SendHello {
        /// This primary's epoch.
        epoch: Epoch,
        /// Its last acknowledged checkpoint.
        last_ckpt: u64,
    },
    /// End the session (idempotent): close the connection and say why.
    Disconnect {
        /// Why.
        why: String,
        /// A bad frame it was, to be counted.
        frame_error: Option<FrameError>,
        /// The session was streaming: (last acked, unacked voided), for the log.
        streaming: Option<(u64, usize)>,
    },
    /// Reserve checkpoint numbers durably ([`Event::Reserved`]).
    Reserve(NodeState),
    /// Write the host state (errors logged, nothing waits for it).
    SaveState(NodeState),
    /// Take the next pre-copy step of checkpoint `ckpt`'s full sync ([`Event::PrecopyStepped`]).
    PrecopyStep {
        /// The full synchronisation's number.
        ckpt: u64,
        /// This primary's epoch.
        epoch: Epoch,
    },
    /// Suspend the domain for a checkpoint ([`Event::Suspended`], [`Event::SuspendFailed`]).
    Suspend,
    /// Resume the domain (a suspend that has no checkpoint to take).
    Resume,
    /// Capture the suspended domain as checkpoint `ckpt`, resume it if `resume`, seal and send
    /// ([`Event::Captured`] or [`Event::CaptureFailed`], then [`Event::Sent`]).
    Capture {
        /// Number.
        ckpt: u64,
        /// A full synchronisation.
        full: bool,
        /// Resume after the capture (not when fenced).
        resume: bool,
        /// This primary's epoch.
        epoch: Epoch,
    },
    /// Fence the domain (rule 4): [`Event::FenceDone`], or a suspend's answer later.
    Fence,
    /// Pause it without its cooperation ([`Event::PausedOutright`]).
    PauseOutright,
    /// Undo the fence.
    Unfence,
    /// Release output of checkpoints up to `upto` to its clients.
    Release {
        /// Up to.
        upto: u64,
    },
    /// Unacknowledged checkpoints are void: output held waits for checkpoint `next`'s ack.
    Rebase {
        /// The next checkpoint.
        next: u64,
    },
    /// Send a datagram.
    Send {
        /// Where.
        to: SocketAddr,
        /// For whom.
        dest: Dest,
        /// What.
        msg: Dgram,
    },
    /// A decision: log it at `level`, record it, keep it for status.
    Evidence {
        /// How loud.
        level: log::Level,
        /// What and why.
        evidence: Box<Evidence>,
    },
    /// Record an input of the authority in the decision log.
    Record(AnyInput),
    /// Datagrams carry this epoch from now on.
    SetEpoch(Epoch),
    /// Run the `on_fence` command (this primary stepped down for `epoch`).
    OnFence(Epoch),
    /// Become this host's standby, once `on_fence` is done.
    Rejoin,
}

/// The effects of one step (bounded).
pub type Effects = heapless::Vec<Effect, MAX_EFFECTS>;

/// An input of the node.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Time passed (the daemon steps one after every batch of I/O, and at
    /// [`PrimaryNode::next_deadline`]).
    Tick,
    /// The connection could not be made.
    ConnectFailed,
    /// The connection is up.
    Connected,
    /// The standby answered our Hello and the session is confirmed.
    SessionOpened {
        /// Its node name.
        node: String,
        /// Its datagram sender id.
        id: u32,
        /// Its epoch.
        epoch: u64,
        /// Its last applied checkpoint.
        last_ckpt: u64,
    },
    /// The standby acknowledged `ckpt` in `epoch`.
    Ack {
        /// Number.
        ckpt: u64,
        /// Its epoch.
        epoch: Epoch,
    },
    /// The standby refused replication.
    Refused {
        /// Its reason.
        reason: String,
    },
    /// The session broke.
    Lost {
        /// Why.
        why: String,
        /// A bad frame it was.
        frame_error: Option<FrameError>,
    },
    /// The staged checkpoint is written to the connection.
    Sent,
    /// The reservation was written (or not).
    Reserved {
        /// Written durably.
        ok: bool,
        /// Numbers reserved up to this.
        upto: u64,
    },
    /// A pre-copy step was taken.
    PrecopyStepped {
        /// A pre-copy is under way in staging.
        precopying: bool,
        /// It is complete (or cannot be made): suspend for the rest.
        done: bool,
    },
    /// The domain reached its suspend point.
    Suspended {
        /// How long it took (a Xen guest's cooperative suspend).
        waited: Option<Duration>,
    },
    /// The suspend failed.
    SuspendFailed {
        /// Why.
        why: String,
    },
    /// A fence stopped the domain at once.
    FenceDone {
        /// Suspended at a consistent point.
        suspended: bool,
        /// Paused without its cooperation.
        hard_paused: bool,
    },
    /// [`Effect::PauseOutright`]'s outcome.
    PausedOutright {
        /// Paused.
        ok: bool,
    },
    /// The checkpoint was captured and sealed; its sending started.
    Captured {
        /// Number.
        ckpt: u64,
        /// Pages in it.
        pages: u64,
        /// Bytes on the wire.
        bytes: u64,
        /// How long the domain was paused for it.
        pause: Duration,
        /// A pre-copy's pages written meanwhile and copied again.
        recopied: Option<u64>,
        /// A pre-copy is still under way in staging.
        precopying: bool,
    },
    /// The capture or seal failed.
    CaptureFailed {
        /// Why.
        why: String,
        /// A pre-copy is still under way in staging.
        precopying: bool,
    },
    /// An authenticated datagram.
    Datagram {
        /// From where.
        from: SocketAddr,
        /// Its envelope.
        env: Envelope,
        /// The message.
        msg: Dgram,
    },
}

/// Counters and histograms, for status and the periodic log line.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Checkpoint pauses.
    pub pause: Histogram,
    /// Xen: from the suspend request to the guest's suspend point (part of the pause).
    pub suspend_wait: Histogram,
    /// From a checkpoint's capture to its ack.
    pub ack_rtt: Histogram,
    /// Checkpoints taken.
    pub checkpoints: u64,
    /// Full synchronisations taken.
    pub full_syncs: u64,
    /// Checkpoint periods that passed with no checkpoint (backpressure).
    pub stretched: u64,
    /// `stretched` at the last periodic report.
    pub stretched_reported: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Pages sent.
    pub pages_sent: u64,
    /// Pages in the last checkpoint.
    pub last_dirty: u64,
    /// Sessions opened.
    pub sessions: u64,
    /// Since the last report: checkpoints, bytes, pages.
    pub window: (u64, u64, u64),
}

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
    /// Output released up to this while protected (checked against `acked`; releases under a
    /// lease are unprotected by definition).
    released: u64,
    stats: Stats,
    failover: Option<FailoverState>,
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
            }
            Event::Ack { ckpt, epoch } => self.on_ack(now, ckpt, epoch, &mut fx),
            Event::Refused { reason } => {
                log::error!("standby {} refused replication: {reason}", self.cfg.standby);
                self.lose_standby(now, "it refused replication".into(), None, &mut fx);
            }
            Event::Lost { why, frame_error } => self.lose_standby(now, why, frame_error, &mut fx),
            Event::Sent => self.sending = false,
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
        }
        self.check_invariants(now);
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
                    self.checkpoint(now, fx);
                } else {
                    // Backpressure: the period stretches; the guest runs, output waits.
                    self.stats.stretched += 1;
                }
            }
        } else if self.precopy_pending() {
            // A pre-copy goes on between periods, one step per turn of the loop.
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
        if self.precopy_pending() {
            return now;
        }
        let mut d = self.next_period;
        if let Link::Down(Some(t)) = self.link {
            d = d.min(t);
        }
        if let Some(f) = &self.failover {
            if let Some(t) = f.next_deadline(now, self.cfg.failover.as_ref()) {
                d = d.min(t);
            }
            // A silent standby is dropped a lease after its oldest unacked checkpoint.
            if let (Link::Streaming, Some(&(_, sent)), Some(c)) =
                (self.link, self.unacked.front(), self.cfg.failover.as_ref())
            {
                d = d.min(
                    sent.plus(c.decision.lease.duration)
                        .plus(Duration::from_nanos(1)),
                );
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
        self.unacked.clear();
        self.full_unacked = None;
        push(
            fx,
            Effect::Rebase {
                next: self.next_ckpt,
            },
        );
        self.need_full = true;
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

    /// A pre-copy that can take its next step now.
    fn precopy_pending(&self) -> bool {
        self.precopying && self.dom != Dom::HardPaused && self.may_checkpoint()
    }

    /// Whether a checkpoint (or a pre-copy step) may start now: a session streams, this
    /// primary has not stepped down, nothing is being sent, there is room under `max_unacked`,
    /// and no domain operation is under way.
    fn may_checkpoint(&self) -> bool {
        self.link == Link::Streaming
            && !self.stepped_down()
            && !self.sending
            && self.unacked.len() < self.cfg.max_unacked
            && self.dom != Dom::Suspending
            && self.busy.is_none()
    }

    /// The next checkpoint's number is reserved in the host state; if not, ask for it (a
    /// restart must never number checkpoints again: rule 10).
    fn reserved_for_next(&mut self, fx: &mut Effects) -> bool {
        if self.next_ckpt <= self.reserved {
            return true;
        }
        if self.busy.is_none() {
            self.busy = Some(Busy::Reserve);
            push(
                fx,
                Effect::Reserve(
                    self.host_state(NodeRole::Primary, self.next_ckpt + CHECKPOINT_BLOCK),
                ),
            );
        }
        false
    }

    fn checkpoint(&mut self, _now: Nanos, fx: &mut Effects) {
        // Paused without a consistent suspend point (a fence the guest did not cooperate
        // with): nothing restorable to capture.
        if self.dom == Dom::HardPaused || !self.reserved_for_next(fx) {
            return;
        }
        // Fenced: the domain is already suspended, and stays so after the capture.
        if self.dom == Dom::Suspended {
            return self.capture(false, fx);
        }
        if self.need_full && self.cfg.precopy {
            self.busy = Some(Busy::Precopy);
            push(
                fx,
                Effect::PrecopyStep {
                    ckpt: self.next_ckpt,
                    epoch: self.start.epoch,
                },
            );
            return;
        }
        self.suspend(fx);
    }

    fn suspend(&mut self, fx: &mut Effects) {
        if self.dom == Dom::Running {
            self.dom = Dom::Suspending;
            push(fx, Effect::Suspend);
        }
    }

    /// The domain reached a suspend point (a checkpoint's or a fence's): capture it when a
    /// checkpoint may be taken, and resume it unless fenced.
    fn on_suspended(&mut self, waited: Option<Duration>, fx: &mut Effects) {
        self.dom = Dom::Suspended;
        if let Some(w) = waited {
            self.stats.suspend_wait.record(w);
        }
        // A fence that came meanwhile keeps the guest suspended after the capture.
        let resume = !self.fenced();
        if !self.may_checkpoint() || !self.reserved_for_next(fx) {
            // No checkpoint to take now (no session, or the last one unacknowledged or being
            // sent): a fenced guest stays suspended (a period's tick captures it when it
            // may); one unfenced meanwhile runs on.
            if resume {
                self.dom = Dom::Running;
                push(fx, Effect::Resume);
            }
            return;
        }
        self.capture(resume, fx);
    }

    fn capture(&mut self, resume: bool, fx: &mut Effects) {
        let ckpt = self.next_ckpt;
        self.busy = Some(Busy::Capture { ckpt, resume });
        push(
            fx,
            Effect::Capture {
                ckpt,
                full: self.need_full,
                resume,
                epoch: self.start.epoch,
            },
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn on_captured(
        &mut self,
        now: Nanos,
        ckpt: u64,
        pages: u64,
        bytes: u64,
        pause: Duration,
        recopied: Option<u64>,
        precopying: bool,
        fx: &mut Effects,
    ) {
        let Some(Busy::Capture { ckpt: want, resume }) = self.busy.take() else {
            panic!("checkpoint {ckpt} captured, none asked for");
        };
        assert_eq!(want, ckpt, "captured another checkpoint than asked for");
        self.dom = if resume { Dom::Running } else { Dom::Suspended };
        self.precopying = precopying;
        let full = self.need_full;
        let st = &mut self.stats;
        st.pause.record(pause);
        st.checkpoints += 1;
        st.last_dirty = pages;
        st.pages_sent += pages;
        st.bytes_sent += bytes;
        st.window.0 += 1;
        st.window.1 += bytes;
        st.window.2 += pages;
        if full {
            st.full_syncs += 1;
            log::info!(
                "checkpoint {ckpt}: full synchronisation, {pages} pages{}, {} KiB, pause {} ms",
                recopied.map_or(String::new(), |r| format!(
                    " (pre-copied; {r} written meanwhile, copied again while suspended)"
                )),
                bytes >> 10,
                ms(pause)
            );
        } else {
            log::debug!(
                "checkpoint {ckpt}: {pages} pages, {bytes} bytes, pause {} ms",
                ms(pause)
            );
        }
        self.need_full = false;
        self.next_ckpt = ckpt + 1;
        self.unacked.push_back((ckpt, now));
        if full {
            self.full_unacked = Some(ckpt);
        }
        self.sending = true;
        if let Some(f) = self.failover.as_mut() {
            if f.final_asked == Some(ckpt) {
                f.final_ckpt = Some(ckpt);
                log::warn!("switchover: final checkpoint {ckpt} captured");
            }
            self.authority_step(now, PInput::CheckpointSent { ckpt }, fx);
        }
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

    /// Invariants (checked after every step; a failure is a bug: the process stops).
    fn check_invariants(&self, now: Nanos) {
        assert!(
            self.acked < self.next_ckpt,
            "acked beyond the next checkpoint"
        );
        assert!(
            self.next_ckpt - 1 <= self.reserved,
            "checkpoint {} used without a reservation (up to {})",
            self.next_ckpt - 1,
            self.reserved
        );
        let mut prev = self.acked;
        for &(n, _) in &self.unacked {
            assert!(n > prev && n < self.next_ckpt, "unacked {n} out of order");
            prev = n;
        }
        // A switchover's final checkpoint may go beyond the window by one.
        assert!(self.unacked.len() <= self.cfg.max_unacked + 1);
        if let Some(f) = self.full_unacked {
            assert!(self.unacked.iter().any(|&(n, _)| n == f));
        }
        assert!(
            !self.sending || self.link == Link::Streaming,
            "sending without a session"
        );
        if let Some(f) = &self.failover {
            assert!(!f.stepped_down || f.fenced, "stepped down but not fenced");
            if f.authority.mode(now) == Mode::Protected {
                assert!(
                    self.released <= self.acked,
                    "released {} beyond acked {} while protected",
                    self.released,
                    self.acked
                );
            }
        }
    }
}

/// Push an effect; more than [`MAX_EFFECTS`] in one step is a bug.
fn push(fx: &mut Effects, e: Effect) {
    assert!(
        fx.push(e).is_ok(),
        "more than {MAX_EFFECTS} effects in one step"
    );
}

/// A read-only view for status and the periodic log line.
impl PrimaryNode {
    /// The session's phase.
    pub fn link(&self) -> Link {
        self.link
    }
    /// The domain's state as the node sees it.
    pub fn dom(&self) -> Dom {
        self.dom
    }
    /// This primary's epoch.
    pub fn epoch(&self) -> Epoch {
        self.start.epoch
    }
    /// The next checkpoint's number.
    pub fn next_checkpoint(&self) -> u64 {
        self.next_ckpt
    }
    /// The last acknowledged checkpoint.
    pub fn acked(&self) -> u64 {
        self.acked
    }
    /// Checkpoints waiting for their ack.
    pub fn unacked(&self) -> usize {
        self.unacked.len()
    }
    /// A checkpoint is being written.
    pub fn sending(&self) -> bool {
        self.sending
    }
    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
    /// Counters, to reset the report window.
    pub fn stats_mut(&mut self) -> &mut Stats {
        &mut self.stats
    }
    /// Fenced (rule 4): the domain takes no requests.
    pub fn is_fenced(&self) -> bool {
        self.fenced()
    }
    /// Replica lag: checkpoints taken and not acknowledged, and how long the oldest waits.
    pub fn replica_lag(&self, now: Nanos) -> (u64, Duration) {
        let taken = self.next_ckpt.saturating_sub(1);
        let age = self
            .unacked
            .front()
            .map_or(Duration::ZERO, |&(_, sent)| now.since(sent));
        (taken.saturating_sub(self.acked), age)
    }
    /// The failover side, if on: (authority mode, fenced, stepped down, maintenance,
    /// heartbeats sent).
    pub fn failover_view(&self, now: Nanos) -> Option<FailoverView> {
        self.failover.as_ref().map(|f| FailoverView {
            mode: f.authority.mode(now),
            fenced: f.fenced,
            stepped_down: f.stepped_down,
            maintenance: f.maintenance_until.is_some_and(|u| now < u),
            heartbeats: f.heartbeats,
        })
    }
}

/// The failover side in status.
#[derive(Debug, Clone, Copy)]
pub struct FailoverView {
    /// The authority's mode.
    pub mode: Mode,
    /// Fenced.
    pub fenced: bool,
    /// Stepped down.
    pub stepped_down: bool,
    /// The standby's operator paused automatic takeovers.
    pub maintenance: bool,
    /// Heartbeats sent.
    pub heartbeats: u64,
}

/// Whether the standby has been silent too long for its session to be kept (DESIGN §2: a
/// link that broke and healed must not resume the old session, the standby gets a fresh full
/// synchronisation): the oldest unacknowledged checkpoint has waited longer than a lease. A
/// full synchronisation is exempt: ending its session would only start the same full sync
/// again, and a large one may take longer than a lease to copy and apply (on the Xen rig,
/// 128 MiB were ended four times in a row before one got through).
pub fn silent_too_long(
    oldest: Option<(u64, Nanos)>,
    full_unacked: Option<u64>,
    now: Nanos,
    lease: Duration,
) -> bool {
    match oldest {
        Some((ckpt, _)) if full_unacked == Some(ckpt) => false,
        Some((_, sent)) => now.since(sent) > lease,
        None => false,
    }
}
