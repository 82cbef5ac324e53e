//! The replication connections' bytes: accepting (bounded per turn), the handshake's crypto
//! (the primary's Hello under the hello key, ours and the confirmation under the session's),
//! reading frames in place, staging and applying checkpoints (with their disk writes; a disk
//! that fails is the node's [`Event::DiskFailed`]), writing acks and refusals. Which
//! connection may do what is the node's business ([`StandbyNode`]'s slots).

use std::io;

use mio::net::TcpStream;
use mio::{Interest, Token};

use hsb_common::conn::{Fill, FrameReader, OutQueue};
use hsb_common::decision::Epoch;
use hsb_common::frame::{FrameError, Kind, HEADER_LEN};
use hsb_common::msg::{self, Ack, Hello, Refuse, Role};
use hsb_common::session::{self, Session, Side};
use hsb_common::time::Nanos;
use hsb_domain::checkpoint::CheckpointError;
use hsb_domain::disk::Bitmap;
use hsb_standby::node::Event;
use hsb_standby::slots::Stage;

use crate::daemon::{Daemon, CONN_BASE};

/// Connections accepted per turn of the loop at most, so that a flood of them cannot keep the
/// loop from the live session (the rest wait in the listen backlog for the next turn).
const ACCEPTS_PER_TURN: usize = 64;

/// One replication connection's socket and session.
pub struct Wire {
    stream: TcpStream,
    /// Sized for a `Hello` until the session is confirmed, then for `frame_max`.
    reader: FrameReader,
    session: Option<Session>,
    out: OutQueue,
    /// The primary's Hello (its confirmation repeats it under the session key).
    hello: Option<Hello>,
    /// The live session.
    live: bool,
    /// Tracks this disk wrote as a primary, announced in our Hello, sent as `DiskDirty` frames
    /// once the session is live.
    disk_dirty: Option<Bitmap>,
}

impl Wire {
    /// The session's keys and the output queue, to queue frames.
    pub fn session_out(&mut self) -> Option<(&mut Session, &mut OutQueue)> {
        Some((self.session.as_mut()?, &mut self.out))
    }

    /// Write what is queued, as far as the socket takes it.
    pub fn flush(&mut self) {
        let _ = self.out.flush(&mut self.stream);
    }

    /// The tracks our Hello announced, to be sent now.
    pub fn take_disk_dirty(&mut self) -> Option<Bitmap> {
        self.disk_dirty.take()
    }

    /// The live session: frames up to `frame_max`.
    pub fn go_live(&mut self, frame_max: usize) {
        self.live = true;
        if self.reader.max_body() < frame_max {
            self.reader.set_max_body(frame_max);
        }
    }
}

impl Daemon {
    /// Accept waiting connections (at most [`ACCEPTS_PER_TURN`]); the node gives each a slot
    /// or none.
    pub(crate) fn accept(&mut self, now: Nanos) {
        self.more_to_accept = false;
        for _ in 0..ACCEPTS_PER_TURN {
            let (stream, peer) = match self.listener.accept() {
                Ok(v) => v,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors, say: the listener stays readable and is tried again
                    // with the next connection.
                    log::warn!("replication: accept failed: {e}");
                    return;
                }
            };
            self.incoming = Some(stream);
            self.feed(now, Event::Incoming { peer });
            // No slot given: closed (dropped) here.
            self.incoming = None;
        }
        self.more_to_accept = true;
    }

    /// The node gave the connection just accepted `slot`.
    pub(crate) fn take(&mut self, now: Nanos, slot: usize) -> Option<Event> {
        let mut stream = self.incoming.take()?;
        let _ = stream.set_nodelay(true);
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(CONN_BASE + slot),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            return Some(Event::Closed {
                slot,
                why: format!("cannot register: {e}"),
                frame_error: None,
            });
        }
        self.wires[slot] = Some(Wire {
            stream,
            // Until it proves it holds the cluster key, a connection gets room for a Hello,
            // not for the largest frame.
            reader: FrameReader::new(msg::HELLO_MAX_BODY),
            session: None,
            out: OutQueue::new(64 * 1024 + crate::disk::dirty_bytes(self.replica.disk_ref())),
            hello: None,
            live: false,
            disk_dirty: None,
        });
        // A primary sends its Hello as soon as it is connected: take it now, before later
        // connections of a flood can push this one out of the pool.
        self.on_conn(now, slot);
        None
    }

    /// Close slot `i`'s socket (the node knows already).
    pub(crate) fn drop_wire(&mut self, i: usize, why: &str) {
        if let Some(mut w) = self.wires[i].take() {
            let _ = self.poll.registry().deregister(&mut w.stream);
            log::debug!("replication: slot {i} closed: {why}");
        }
    }

    /// Close slot `i` for a reason found here, and tell the node.
    fn close(&mut self, now: Nanos, i: usize, why: String, frame_error: Option<FrameError>) {
        self.drop_wire(i, &why);
        self.feed(
            now,
            Event::Closed {
                slot: i,
                why,
                frame_error,
            },
        );
    }

    /// Slot `i`'s socket is ready: write what waits, read and handle frames.
    pub(crate) fn on_conn(&mut self, now: Nanos, i: usize) {
        loop {
            let stage = self.node.slot(i).map(|s| s.stage);
            let Some(w) = self.wires[i].as_mut() else {
                return;
            };
            if let Err(e) = w.out.flush(&mut w.stream) {
                return self.close(now, i, format!("write failed: {e}"), None);
            }
            if stage == Some(Stage::Closing) {
                if w.out.pending() == 0 {
                    self.close(now, i, "refused".into(), None);
                }
                return;
            }
            match w.reader.fill(&mut w.stream) {
                Ok(Fill::Data(_)) => {}
                Ok(Fill::WouldBlock) => return,
                Ok(Fill::Eof) => return self.close(now, i, "closed by the primary".into(), None),
                Err(e) => return self.close(now, i, format!("read failed: {e}"), None),
            }
            if w.live {
                let bytes = w.reader.received();
                self.feed(now, Event::Heard { slot: i, bytes });
            }
            // Frames are handled in place in the reader's buffer (no copy): the reader is taken
            // out of the connection while they are, and put back if the connection survives.
            let Some(w) = self.wires[i].as_mut() else {
                return;
            };
            let mut reader = std::mem::replace(&mut w.reader, FrameReader::detached());
            let result = loop {
                if self.wires[i].is_none() {
                    break Ok(());
                }
                match reader.next_frame() {
                    Ok(Some((h, f))) => {
                        if let Err(e) = self.on_frame(now, i, h.kind, f) {
                            break Err(e);
                        }
                        // A confirmed session gets the full frame size (its checkpoint may
                        // follow the confirmation in the same read).
                        if reader.max_body() < self.s.frame_max
                            && self.wires[i].as_ref().is_some_and(|w| w.live)
                        {
                            reader.set_max_body(self.s.frame_max);
                        }
                    }
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e),
                }
            };
            match self.wires[i].as_mut() {
                Some(w) => w.reader = reader,
                None => return,
            }
            if let Err(e) = result {
                return self.close(now, i, format!("bad frame: {e}"), Some(e));
            }
        }
    }

    fn on_frame(
        &mut self,
        now: Nanos,
        i: usize,
        kind: Kind,
        frame: &[u8],
    ) -> Result<(), FrameError> {
        let stage = self.node.slot(i).map(|s| s.stage);
        match stage {
            // Refused: nothing it sends matters any more.
            None | Some(Stage::Closing) => Ok(()),
            Some(Stage::AwaitHello) => {
                let h = session::open_hello(&self.key, frame)?;
                if let Some(w) = self.wires[i].as_mut() {
                    w.hello = Some(h.clone());
                }
                self.feed(now, Event::Hello { slot: i, hello: h });
                Ok(())
            }
            Some(Stage::Admitted) => {
                let Some(w) = self.wires[i].as_mut() else {
                    return Ok(());
                };
                let (Some(sess), Some(h)) = (w.session.as_mut(), w.hello.as_ref()) else {
                    return Err(FrameError::Unexpected {
                        kind: Kind::Hello,
                        state: "a handshake without a session",
                    });
                };
                session::open_confirm(sess, frame, h)?;
                self.feed(now, Event::Confirmed { slot: i });
                Ok(())
            }
            Some(Stage::Live) => self.on_live_frame(now, i, kind, frame),
        }
    }

    fn on_live_frame(
        &mut self,
        now: Nanos,
        i: usize,
        kind: Kind,
        frame: &[u8],
    ) -> Result<(), FrameError> {
        let Some(sess) = self.wires[i].as_mut().and_then(|w| w.session.as_mut()) else {
            return Err(FrameError::Unexpected {
                kind,
                state: "a session without keys",
            });
        };
        let hash = sess.open(frame)?;
        if self.node.current() != Some(i) {
            return Err(FrameError::Unexpected {
                kind,
                state: "not the current session",
            });
        }
        let body = &frame[HEADER_LEN..];
        // The replica is read as the reference of delta-encoded pages (it is at the previous
        // checkpoint, which the primary encoded against); a disk resynchronisation's copies go
        // to its disk.
        let received = self
            .receiver
            .on_frame_to(kind, body, &hash, self.replica.replica());
        let done = match received {
            Ok(Some(done)) => done,
            Ok(None) => return Ok(()),
            Err(CheckpointError::Disk(e)) => {
                self.disk_failed(now, i, None, &e);
                return Ok(());
            }
            Err(CheckpointError::Frame(e)) => return Err(e),
            Err(e) => {
                log::error!("replication: {e}");
                return Err(FrameError::Body {
                    kind,
                    why: "cannot stage the checkpoint",
                });
            }
        };
        let t0 = self.clock.now();
        let ckpt = match self.receiver.apply(self.replica.replica()) {
            Ok(n) => n,
            Err(CheckpointError::Disk(e)) => {
                self.disk_failed(now, i, Some(done.ckpt), &e);
                return Ok(());
            }
            Err(e) => {
                log::error!("applying checkpoint {} failed: {e}", done.ckpt);
                return Err(FrameError::Body {
                    kind,
                    why: "apply failed",
                });
            }
        };
        // Stepped when applying ended (never before this event's time: the decision log's
        // times never go back), after the heartbeats that waited in their socket meanwhile: a
        // suspicion from before a long apply (a resync and a large full synchronisation can
        // take hundreds of milliseconds) is not acted on as the replica comes, before they are
        // heard.
        let end = self.clock.now().max(now);
        let took = end.since(t0);
        self.drain_heartbeats(end);
        self.feed(
            end,
            Event::Applied {
                slot: i,
                ckpt,
                full: done.full,
                pages: done.pages,
                bytes: done.bytes,
                took,
            },
        );
        Ok(())
    }

    /// Answer slot `i`'s Hello with ours (the session's keys follow from both nonces); refuse
    /// it under them if the node says so.
    pub(crate) fn answer_hello(
        &mut self,
        i: usize,
        epoch: Epoch,
        last_ckpt: u64,
        refuse: Option<String>,
    ) -> Option<Event> {
        let mut nonce = [0u8; 16];
        if let Err(e) = hsb_common::rng::os_random(&mut nonce) {
            self.drop_wire(i, "no randomness");
            return Some(Event::Closed {
                slot: i,
                why: format!("no randomness for a nonce: {e}"),
                frame_error: None,
            });
        }
        let (disk, disk_dirty) = self.disk_hello();
        let mine = Hello {
            role: Role::Standby,
            node: msg::node_name(&self.s.node),
            epoch,
            nonce,
            domain_pages: self.replica.layout().0,
            last_ckpt,
            incarnation: self.node.host().incarnation,
            disk,
        };
        let w = self.wires[i].as_mut()?;
        w.disk_dirty = disk_dirty;
        let their = w.hello.as_ref()?.nonce;
        let mut sess = Session::new(&self.key, &their, &nonce, Side::Responder);
        let mut buf = [0u8; 512];
        if let Ok(n) = sess.write(Kind::Hello, &mine, &mut buf) {
            w.out.push(&buf[..n]);
        }
        w.session = Some(sess);
        match refuse {
            Some(reason) => self.refuse(i, &reason),
            None => {
                let _ = w.out.flush(&mut w.stream);
                None
            }
        }
    }

    /// Refuse the session on slot `i` under its keys; it closes once the refusal is flushed.
    pub(crate) fn refuse(&mut self, i: usize, reason: &str) -> Option<Event> {
        let w = self.wires[i].as_mut()?;
        if let Some(sess) = w.session.as_mut() {
            let mut buf = [0u8; 512];
            let refusal = Refuse {
                reason: msg::reason(reason),
            };
            if let Ok(n) = sess.write(Kind::Refuse, &refusal, &mut buf) {
                w.out.push(&buf[..n]);
            }
        }
        let _ = w.out.flush(&mut w.stream);
        None
    }

    /// Send ack(`ckpt`) on the live session.
    pub(crate) fn send_ack(&mut self, ckpt: u64, epoch: Epoch) -> Option<Event> {
        let i = self.node.current()?;
        let w = self.wires[i].as_mut()?;
        let sess = w.session.as_mut()?;
        let mut buf = [0u8; 128];
        let why = match sess.write(Kind::Ack, &Ack { ckpt, epoch }, &mut buf) {
            Ok(n) if w.out.push(&buf[..n]) => {
                let _ = w.out.flush(&mut w.stream);
                return None;
            }
            Ok(_) => "ack queue full: the primary does not read",
            Err(_) => "cannot encode an ack",
        };
        log::warn!("ack {ckpt}: {why}");
        self.drop_wire(i, why);
        Some(Event::Closed {
            slot: i,
            why: why.into(),
            frame_error: None,
        })
    }
}
