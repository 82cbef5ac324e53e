//! The replication connection to the standby: connecting, the session handshake (our Hello,
//! the standby's, our confirmation under the session key), and reading its frames (acks,
//! refusals, the disk's report) into node events. Bytes and keys only: what they mean is the
//! node's business.

use std::io;
use std::net::SocketAddr;

use mio::net::TcpStream;
use mio::{Interest, Registry};

use hsb_common::conn::{Fill, FrameReader, OutQueue};
use hsb_common::decision::Epoch;
use hsb_common::frame::{FrameError, Kind, HEADER_LEN};
use hsb_common::msg::{self, Ack, DiskHello, Hello, Refuse, Role};
use hsb_common::session::{self, Session, Side};
use hsb_common::time::Nanos;
use hsb_primary::node::Event;

use crate::daemon::{Daemon, REPL};

/// Largest frame the standby sends us (Hello, Ack, Refuse).
const REPL_RX_MAX_BODY: usize = 4096;

/// The connection to the standby.
pub struct Conn {
    pub stream: TcpStream,
    /// The TCP connection is established.
    connected: bool,
    pub nonce: [u8; 16],
    /// The Hello sent (confirmed under the session key once the standby answers).
    pub hello: Option<Hello>,
    /// Open once the standby's Hello checked out.
    pub session: Option<Session>,
    reader: FrameReader,
    pub out: OutQueue,
    /// The disk part of the standby's Hello, until the daemon checks it (`disk.rs`).
    pub standby_disk: Option<DiskHello>,
}

impl Conn {
    /// Start connecting to `to` (a fresh session nonce each time).
    pub fn open(to: SocketAddr, registry: &Registry) -> Result<Conn, String> {
        let mut nonce = [0u8; 16];
        hsb_common::rng::os_random(&mut nonce)
            .map_err(|e| format!("cannot read /dev/urandom for a session nonce: {e}"))?;
        let mut stream = TcpStream::connect(to).map_err(|e| format!("connect failed: {e}"))?;
        registry
            .register(&mut stream, REPL, Interest::READABLE | Interest::WRITABLE)
            .map_err(|e| format!("cannot register the standby connection: {e}"))?;
        Ok(Conn {
            stream,
            connected: false,
            nonce,
            hello: None,
            session: None,
            reader: FrameReader::new(REPL_RX_MAX_BODY),
            out: OutQueue::new(4096),
            standby_disk: None,
        })
    }

    /// What one frame from the standby means.
    fn on_frame(
        &mut self,
        key: &hsb_common::key::ClusterKey,
        kind: Kind,
        frame: &[u8],
    ) -> Result<Option<Event>, FrameError> {
        let body = &frame[HEADER_LEN..];
        match (self.session.as_mut(), kind) {
            (None, Kind::Hello) => {
                let h: Hello = msg::decode(kind, body)?;
                let mut sess = Session::new(key, &self.nonce, &h.nonce, Side::Initiator);
                sess.open(frame)?;
                if h.role != Role::Standby {
                    return Err(FrameError::Body {
                        kind,
                        why: "peer is not a standby",
                    });
                }
                // Confirm our Hello under the session key: the standby counts the session only
                // from this frame (a recorded Hello cannot produce it). It goes out before any
                // checkpoint (the staged checkpoint is written after `out`).
                let mut buf = [0u8; 256];
                let hello = self.hello.as_ref().ok_or(FrameError::Unexpected {
                    kind,
                    state: "no Hello sent",
                })?;
                let n = session::write_confirm(&mut sess, hello, &mut buf).map_err(|_| {
                    FrameError::Body {
                        kind,
                        why: "cannot encode the confirmation",
                    }
                })?;
                self.out.push(&buf[..n]);
                if let Err(e) = self.out.flush(&mut self.stream) {
                    return Ok(Some(Event::Lost {
                        why: format!("write failed: {e}"),
                        frame_error: None,
                    }));
                }
                self.session = Some(sess);
                self.standby_disk = Some(h.disk);
                Ok(Some(Event::SessionOpened {
                    id: hsb_common::datagram::node_sender_id(&h.node),
                    node: h.node.to_string(),
                    epoch: h.epoch.0,
                    last_ckpt: h.last_ckpt,
                }))
            }
            (Some(sess), Kind::Ack) => {
                sess.open(frame)?;
                let a: Ack = msg::decode(kind, body)?;
                Ok(Some(Event::Ack {
                    ckpt: a.ckpt,
                    epoch: a.epoch,
                }))
            }
            (Some(sess), Kind::Refuse) => {
                sess.open(frame)?;
                let rf: Refuse = msg::decode(kind, body)?;
                // A well-formed refusal is not a bad frame: the session ends for what it is.
                Ok(Some(Event::Refused {
                    reason: rf.reason.to_string(),
                }))
            }
            (s, kind) => Err(FrameError::Unexpected {
                kind,
                state: if s.is_some() {
                    "streaming checkpoints"
                } else {
                    "waiting for the standby's Hello"
                },
            }),
        }
    }
}

fn lost(why: String) -> Event {
    Event::Lost {
        why,
        frame_error: None,
    }
}

impl Daemon {
    /// The replication connection is ready: finish connecting, write, read frames.
    pub(crate) fn on_repl(&mut self, now: Nanos) {
        let Some(r) = self.repl.as_mut() else { return };
        if !r.connected {
            match r.stream.take_error() {
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => {
                    return self.feed(now, lost(format!("connect failed: {e}")))
                }
            }
            match r.stream.peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => return self.feed(now, lost(format!("connect failed: {e}"))),
            }
            let _ = r.stream.set_nodelay(true);
            r.connected = true;
            self.feed(now, Event::Connected);
        }
        let Some(r) = self.repl.as_mut() else { return };
        if let Err(e) = r.out.flush(&mut r.stream) {
            return self.feed(now, lost(format!("write failed: {e}")));
        }
        // Read acks and control frames, each stepped before the next is read.
        loop {
            let Some(r) = self.repl.as_mut() else { return };
            match r.reader.fill(&mut r.stream) {
                Ok(Fill::Data(_)) => {}
                Ok(Fill::WouldBlock) => break,
                Ok(Fill::Eof) => {
                    return self.feed(now, lost("connection closed by the standby".into()))
                }
                Err(e) => return self.feed(now, lost(format!("read failed: {e}"))),
            }
            loop {
                let Some(r) = self.repl.as_mut() else { return };
                let (kind, frame) = match r.reader.next_frame() {
                    Ok(Some((h, f))) => (h.kind, f.to_vec()),
                    Ok(None) => break,
                    Err(e) => return self.bad_frame(now, e),
                };
                let ev = match kind {
                    Kind::DiskDirty => self.disk_dirty(&frame),
                    _ => r.on_frame(&self.key, kind, &frame),
                };
                match ev {
                    // The standby's disk is checked before the session counts.
                    Ok(Some(ev @ Event::SessionOpened { .. })) => self.session_opened(now, ev),
                    Ok(Some(ev)) => {
                        if let Event::Ack { ckpt, .. } = ev {
                            self.staging.acked(ckpt, now);
                        }
                        self.feed(now, ev)
                    }
                    Ok(None) => {}
                    Err(e) => return self.bad_frame(now, e),
                }
            }
        }
        self.send_staged(now);
        self.send_resync(now);
    }

    fn bad_frame(&mut self, now: Nanos, e: FrameError) {
        self.feed(
            now,
            Event::Lost {
                why: format!("bad frame from the standby: {e}"),
                frame_error: Some(e),
            },
        );
    }
}

/// The node's connection effects.
impl Daemon {
    pub(crate) fn connect(&mut self) -> Option<Event> {
        match Conn::open(self.s.standby, self.poll.registry()) {
            Ok(c) => {
                self.repl = Some(c);
                None
            }
            Err(e) => {
                log::warn!("standby {}: {e}", self.s.standby);
                Some(Event::ConnectFailed)
            }
        }
    }

    pub(crate) fn send_hello(&mut self, epoch: Epoch, last_ckpt: u64) -> Option<Event> {
        let pages = self.dom.source().pages();
        let disk = self.disk_hello();
        let node = msg::node_name(&self.s.node);
        let (key, incarnation) = (&self.key, self.incarnation);
        let r = self.repl.as_mut()?;
        let hello = Hello {
            role: Role::Primary,
            node,
            epoch,
            nonce: r.nonce,
            domain_pages: pages,
            last_ckpt,
            incarnation,
            disk,
        };
        let mut buf = [0u8; 256];
        match session::write_hello(key, &hello, &mut buf) {
            Ok(n) => {
                r.out.push(&buf[..n]);
            }
            Err(e) => {
                return Some(Event::Lost {
                    why: format!("cannot encode hello: {e}"),
                    frame_error: None,
                })
            }
        }
        r.hello = Some(hello);
        log::info!("standby {}: connected, opening session", self.s.standby);
        None
    }

    pub(crate) fn disconnect(
        &mut self,
        why: &str,
        frame_error: Option<FrameError>,
        streaming: Option<(u64, usize)>,
    ) {
        self.send_pos = None;
        if let Some(e) = frame_error {
            if let Some(i) = FrameError::COUNTERS.iter().position(|c| *c == e.counter()) {
                self.frame_errors[i] += 1;
            }
        }
        let Some(mut r) = self.repl.take() else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut r.stream);
        match streaming {
            Some((acked, voided)) => log::warn!(
                "standby {} lost: {why}; last acked checkpoint {acked}; {voided} unacked voided; holding output ({} bytes) until a fresh full sync is acked",
                self.s.standby,
                self.output.held_bytes()
            ),
            None => log::warn!("standby {}: {why}", self.s.standby),
        }
    }
}
