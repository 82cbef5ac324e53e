//! The primary node's inputs and outputs: its configuration and start, the events the daemon
//! feeds it and the effects it asks for, and its counters.

use std::net::SocketAddr;
use std::time::Duration;

use hsb_common::datagram::Envelope;
use hsb_common::decision::Epoch;
use hsb_common::frame::FrameError;
use hsb_common::kit::talk::Talk;
use hsb_common::node_state::NodeState;
use hsb_common::stats::Histogram;
use hsb_common::time::Nanos;
use hsb_common::wire::Dgram;

use super::FailoverConfig;

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
    /// The guest has a disk: a session's full synchronisation completes the disk's
    /// resynchronisation, planned from the standby's report (`node_disk.rs`).
    pub disk: bool,
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
    /// it, frame by frame ([`Event::Captured`] or [`Event::CaptureFailed`], then
    /// [`Event::Sent`]).
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
    /// A datagram, a decision or an input for the decision log, the datagrams' epoch: what
    /// every node says, carried out the same way by every daemon (`kit::talk`).
    Talk(Talk),
    /// Run the `on_fence` command (this primary stepped down for `epoch`).
    OnFence(Epoch),
    /// Become this host's standby, once `on_fence` is done.
    Rejoin,
    /// The standby's disk report is complete: plan its disk's resynchronisation for the full
    /// synchronisation `ckpt` and send the plan (its copies start while the guest runs).
    PlanDisk {
        /// The full synchronisation that completes it.
        ckpt: u64,
    },
    /// Copy the next part of the disk resynchronisation planned for `ckpt`, or say it is
    /// ready for its full synchronisation ([`Event::ResyncStepped`]; [`Event::ResyncSent`]
    /// once written).
    ResyncStep {
        /// The full synchronisation it is planned for.
        ckpt: u64,
    },
    /// Checkpoint `ckpt` is acknowledged: the disk's writes up to it are the standby's too.
    DiskAcked {
        /// Number.
        ckpt: u64,
    },
    /// No standby session any more: stop journaling the disk's writes (the next standby is
    /// resynchronised from the track table) and forget the session's report and copies.
    DiskStop,
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
    /// The staged checkpoint is sealed and written to the connection.
    Sent {
        /// Bytes on the wire (its sealed frames).
        bytes: u64,
    },
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
    /// The checkpoint was captured (and its disk part staged); its sealing and sending
    /// started ([`Event::Sent`] when done).
    Captured {
        /// Number.
        ckpt: u64,
        /// Pages in it.
        pages: u64,
        /// Bytes staged (before encoding and sealing).
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
    /// The standby's disk report (its Hello's disk, and its `DiskDirty` frames) is complete.
    DiskReport,
    /// [`Effect::ResyncStep`]'s outcome.
    ResyncStepped {
        /// What is left of the copy fits the full synchronisation: it may be captured now.
        ready: bool,
        /// Copies are being written to the connection.
        copying: bool,
        /// The copy failed (reading the disk, sealing, writing).
        error: Option<String>,
    },
    /// The resynchronisation's copies are written.
    ResyncSent,
    /// The open epoch's disk journal is three quarters full.
    JournalHigh,
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
    /// Bytes sent (sealed checkpoints written to the connection).
    pub bytes_sent: u64,
    /// Checkpoints written to the connection (those of `bytes_sent`).
    pub checkpoints_sent: u64,
    /// Pages sent.
    pub pages_sent: u64,
    /// Pages in the last checkpoint.
    pub last_dirty: u64,
    /// Sessions opened.
    pub sessions: u64,
    /// Since the last report: checkpoints, bytes, pages.
    pub window: (u64, u64, u64),
}
