//! The standby node's inputs and outputs: its configuration, the events the daemon feeds it,
//! the effects it asks for, and its counters.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hsb_common::datagram::Envelope;
use hsb_common::decision::{self, Epoch, WitnessId};
use hsb_common::frame::FrameError;
use hsb_common::kit::talk::Talk;
use hsb_common::msg::{Hello, Role};
use hsb_common::node_state::NodeState;
use hsb_common::stats::Histogram;
use hsb_common::time::Nanos;
use hsb_common::wire::Dgram;

/// Most effects one step returns: closing every connection at an activation, a query or a
/// notice to every witness, an operator's answer.
pub const MAX_EFFECTS: usize = 64;

/// What the node needs of the configuration.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's name.
    pub node: String,
    /// The replica's size in pages (a primary of another size is refused).
    pub domain_pages: u64,
    /// Addresses a primary may connect from (empty: any).
    pub primary_allow: Vec<IpAddr>,
    /// The model service's address (named in the operator's answer).
    pub service: SocketAddr,
    /// Hand over to hsb-primary after an activation (`promote_config` is set).
    pub promote: bool,
    /// Automatic failover, if on.
    pub failover: Option<FailoverConfig>,
    /// The replica's disk size in bytes (0: no disk); a primary's disk must be the same size.
    pub disk_size: u64,
}

/// The failover configuration.
#[derive(Debug, Clone)]
pub struct FailoverConfig {
    /// The decision rules' parameters.
    pub decision: decision::Config,
    /// The witnesses.
    pub witness_peers: Vec<(WitnessId, SocketAddr)>,
    /// The primary's datagram address (fence requests, maintenance notices).
    pub primary_witness: SocketAddr,
    /// The ping-node baseline's node, if configured.
    pub ping_node: Option<SocketAddr>,
    /// The first query number (random per process).
    pub query_base: u32,
}

/// What a host-state write is for (its answer says so).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordFor {
    /// A newer epoch is active: remembered before acting on it.
    Epoch,
    /// This host becomes the primary: on disk before the replica serves.
    Activation,
    /// The operator turned maintenance mode on or off.
    Maintenance,
}

/// An operator's command that the node decides (status and digest are the daemon's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorCmd {
    /// `activate [--force]`.
    Activate {
        /// Without the witnesses.
        force: bool,
    },
    /// `switchover`.
    Switchover,
    /// `maintenance on|off`.
    Maintenance(bool),
    /// `force-stale`.
    ForceStale,
}

/// What the daemon must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Put the connection just accepted into `slot` (none follows: close it).
    Take {
        /// The slot.
        slot: usize,
    },
    /// Close the connection in `slot` ([`Event::Closed`] follows).
    Close {
        /// The slot.
        slot: usize,
        /// Why.
        why: String,
    },
    /// Answer the Hello on `slot` with ours (a new session's keys); with `refuse`, refuse it
    /// under those keys and close once the refusal is flushed.
    AnswerHello {
        /// The slot.
        slot: usize,
        /// Our epoch.
        epoch: Epoch,
        /// Our replica's last checkpoint.
        last_ckpt: u64,
        /// Why the session is refused, if it is.
        refuse: Option<String>,
    },
    /// Refuse the session on `slot` (after its confirmation) and close once flushed.
    Refuse {
        /// The slot.
        slot: usize,
        /// Why.
        reason: String,
    },
    /// The session on `slot` is the live one: a full synchronisation is expected, frames may
    /// be as large as `frame_max`.
    GoLive {
        /// The slot.
        slot: usize,
    },
    /// The live session ended: discard a partial checkpoint.
    Discard,
    /// Acknowledge `ckpt` on the live session.
    Ack {
        /// Checkpoint.
        ckpt: u64,
        /// Our epoch.
        epoch: Epoch,
    },
    /// Write the host state ([`Event::HostRecorded`]).
    RecordHost {
        /// The state.
        state: NodeState,
        /// What for.
        purpose: RecordFor,
    },
    /// Make the replica serve from checkpoint `ckpt` in `epoch` ([`Event::ReplicaActivated`]).
    Activate {
        /// Its checkpoint.
        ckpt: u64,
        /// The new epoch.
        epoch: Epoch,
        /// Who decided (for the log).
        by: String,
    },
    /// Run `on_activate`.
    OnActivate {
        /// The epoch.
        epoch: Epoch,
        /// The checkpoint it serves from.
        ckpt: u64,
    },
    /// Become hsb-primary (exec, at the end of this turn of the loop).
    HandOver {
        /// In this epoch.
        epoch: Epoch,
        /// From this checkpoint.
        ckpt: u64,
        /// On the operator's force.
        forced: bool,
    },
    /// Stop the activated replica (no authority).
    FenceReplica,
    /// Let it run again.
    UnfenceReplica,
    /// The heartbeat reply (issue 12): send `msg` back to the primary over every heartbeat
    /// link its heartbeats came in on (from that link's socket, to the address they came
    /// from).
    HeartbeatReply {
        /// A [`Dgram::StandbyAlive`].
        msg: Dgram,
    },
    /// A datagram, a decision or an input for the decision log, the datagrams' epoch: what
    /// every node says, carried out the same way by every daemon (`kit::talk`).
    Talk(Talk),
    /// Speak and listen as this role from now on.
    SetRole(Role),
    /// Ping the ping node ([`Event::PingDone`]).
    Ping,
    /// Stop waiting for the ping (it took too long: counted as failed).
    CancelPing,
    /// Answer the operator on control connection `conn`.
    Answer {
        /// The control connection.
        conn: usize,
        /// The answer.
        text: String,
    },
    /// Keep control connection `conn` open until `until` for a later answer.
    Defer {
        /// The control connection.
        conn: usize,
        /// At the latest.
        until: Nanos,
    },
    /// An activation's first step when the replica has a disk: fork the disk's lineage at
    /// `ckpt`, durably, and set its workload ([`Event::DiskForked`]); the host state is written
    /// only after it.
    ForkDisk {
        /// The checkpoint the replica activates from.
        ckpt: u64,
    },
}

/// The effects of one step (bounded).
pub type Effects = heapless::Vec<Effect, MAX_EFFECTS>;

/// An input of the node.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Time passed.
    Tick,
    /// A connection from `peer` was accepted.
    Incoming {
        /// From.
        peer: SocketAddr,
    },
    /// A Hello that checked out under the cluster key arrived on `slot`.
    Hello {
        /// The slot.
        slot: usize,
        /// The primary's Hello.
        hello: Hello,
    },
    /// The primary on `slot` confirmed its Hello under the session key.
    Confirmed {
        /// The slot.
        slot: usize,
    },
    /// Bytes of the session on `slot` were heard.
    Heard {
        /// The slot.
        slot: usize,
        /// Bytes read on its connection so far (wrapping): it moves while the primary's
        /// stream gets through, however slowly, even while no frame completes.
        bytes: u64,
    },
    /// A checkpoint of the live session on `slot` was applied; the event's time is when
    /// applying ended.
    Applied {
        /// The slot.
        slot: usize,
        /// Its number.
        ckpt: u64,
        /// A full synchronisation.
        full: bool,
        /// Pages.
        pages: u64,
        /// Bytes on the wire.
        bytes: u64,
        /// How long applying took.
        took: Duration,
    },
    /// The connection on `slot` is closed.
    Closed {
        /// The slot.
        slot: usize,
        /// Why.
        why: String,
        /// A bad frame it was.
        frame_error: Option<FrameError>,
    },
    /// The host state was written (or not).
    HostRecorded {
        /// What for.
        purpose: RecordFor,
        /// The state written.
        state: NodeState,
        /// Why it could not be.
        error: Option<String>,
    },
    /// The replica's activation finished.
    ReplicaActivated {
        /// Why it failed, if it did.
        error: Option<String>,
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
    /// The ping node answered (or not).
    PingDone {
        /// It answered.
        ok: bool,
    },
    /// An operator's command on control connection `conn`.
    Operator {
        /// The control connection.
        conn: usize,
        /// The command.
        cmd: OperatorCmd,
    },
    /// The replica's disk failed (or refused) while the live session on `slot` was staging or
    /// applying: checkpoint `ckpt` (whose apply left the disk neither at it nor at the one
    /// before), or a resynchronisation's plan or copy (`None`, the image as it was).
    DiskFailed {
        /// The slot.
        slot: usize,
        /// The checkpoint being applied, if it was one.
        ckpt: Option<u64>,
        /// What failed.
        error: String,
        /// The image (or its file system) is out of space.
        out_of_space: bool,
    },
    /// [`Effect::ForkDisk`]'s outcome.
    DiskForked {
        /// Why it failed, if it did.
        error: Option<String>,
    },
}

/// Counters and histograms, for status and the periodic log line.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Checkpoints applied.
    pub applied: u64,
    /// Full synchronisations applied.
    pub full_syncs: u64,
    /// Bytes applied.
    pub bytes: u64,
    /// Pages applied.
    pub pages: u64,
    /// Apply times.
    pub apply: Histogram,
    /// When the last checkpoint was applied.
    pub last_applied_at: Option<Nanos>,
    /// Bad frames by kind ([`FrameError::COUNTERS`]).
    pub frame_errors: [u64; FrameError::COUNTERS.len()],
    /// Sessions that went live.
    pub sessions: u64,
    /// Live sessions replaced by a newer primary's.
    pub sessions_replaced: u64,
    /// Sessions refused.
    pub connections_refused: u64,
    /// Connections from addresses outside `primary_allow`.
    pub connections_disallowed: u64,
    /// Pending handshakes that gave way to newer connections.
    pub handshakes_evicted: u64,
    /// Handshakes that did not make a session in time.
    pub handshakes_expired: u64,
    /// Since the last report: checkpoints applied, bytes.
    pub window: (u64, u64),
    /// Heartbeats received.
    pub heartbeats: u64,
}
