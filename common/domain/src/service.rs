//! The model domain's TCP service shell: a listener and line-oriented clients on the daemon's
//! mio loop. The primary holds replies under output commit; an activated standby answers
//! directly. Tokens `base..base + 1 + max` belong to it.
//!
//! Clients are bounded (`max`), and a client that has gone away does not keep its slot from a
//! newcomer: when every slot is taken, the newcomer takes the slot of the client abandoned the
//! longest ago (it closed its side at least [`ABANDONED_AFTER`] ago and is kept only for a reply
//! held under output commit: a witness probe or a client that gave up waiting), else of the one
//! idle the longest (nothing sent or received for [`IDLE_AFTER`], nothing held); only when none
//! qualifies is the newcomer refused ([`victim`]).

use std::io::{self, Read};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use crate::model::MAX_LINE;
use hsb_common::conn::OutQueue;

/// Unsent reply bytes a client may have before it is dropped as too slow.
pub const CLIENT_OUT_LIMIT: usize = 1 << 20;

/// A client that closed its side this long ago, kept only for a held reply, gives its slot to a
/// newcomer when all are taken. Replies are held for a checkpoint period or two while the
/// standby acknowledges promptly; a probe that timed out and closed waits for nothing.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(1);

/// A client that has sent and been sent nothing for this long, with no reply held, gives its
/// slot to a newcomer when all are taken (and none was abandoned).
pub const IDLE_AFTER: Duration = Duration::from_secs(10);

/// What the daemon does with requests.
pub trait Handler {
    /// Whether another request may be taken now (false while output commit is full).
    fn can_take(&mut self) -> bool;
    /// Answer a request line now (`Some`) or take care of the reply itself (`None`, e.g. held
    /// under output commit and sent later with [`Service::send`]).
    fn handle(&mut self, id: ClientId, line: &str) -> Option<String>;
    /// Whether replies for this client are still held (keeps a half-closed client open).
    fn holds(&self, id: ClientId) -> bool;
    /// The client is gone.
    fn closed(&mut self, id: ClientId);
}

/// A client, with a generation so a reused slot is never confused with its predecessor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientId {
    slot: u32,
    gen: u32,
}

struct Client {
    stream: TcpStream,
    gen: u32,
    inbuf: Vec<u8>,
    out: OutQueue,
    stalled: bool,
    eof: bool,
    /// When its side was closed (the end of its requests was read).
    eof_at: Option<Instant>,
    /// When it was accepted, or last sent or was sent a byte.
    active_at: Instant,
}

/// What [`victim`] knows of a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientView {
    /// When it closed its side, if it did.
    pub eof_at: Option<Instant>,
    /// When it was accepted, or last sent or was sent a byte.
    pub active_at: Instant,
    /// A reply is held for it, or unsent.
    pub waiting: bool,
}

/// Which client gives its slot to a newcomer when all are taken, at `now`: the one abandoned
/// the longest ago ([`ABANDONED_AFTER`]), else the one idle the longest ([`IDLE_AFTER`]), else
/// none (the newcomer is refused). Never a client that still talks or waits for a reply with
/// its side open.
pub fn victim(clients: &[Option<ClientView>], now: Instant) -> Option<usize> {
    let since = |t: Instant| now.saturating_duration_since(t);
    let oldest = |key: &dyn Fn(&ClientView) -> Option<Instant>| {
        clients
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.as_ref().and_then(key).map(|t| (t, i)))
            .min()
            .map(|(_, i)| i)
    };
    oldest(&|c| c.eof_at.filter(|&t| since(t) >= ABANDONED_AFTER)).or_else(|| {
        oldest(&|c| (!c.waiting && since(c.active_at) >= IDLE_AFTER).then_some(c.active_at))
    })
}

/// The service listener and its clients.
pub struct Service {
    listener: TcpListener,
    clients: Vec<Option<Client>>,
    base: usize,
    gen: u32,
    addr: SocketAddr,
}

impl Service {
    /// Bind `addr` and register; at most `max` clients.
    pub fn bind(
        addr: SocketAddr,
        registry: &Registry,
        base: usize,
        max: usize,
    ) -> io::Result<Service> {
        let mut listener = TcpListener::bind(addr)?;
        registry.register(&mut listener, Token(base), Interest::READABLE)?;
        let addr = listener.local_addr()?;
        Ok(Service {
            listener,
            clients: (0..max).map(|_| None).collect(),
            base,
            gen: 0,
            addr,
        })
    }

    /// Like [`Service::bind`], but `None` while the address is busy or not (yet) local: the
    /// copy that served before may still hold it for a moment after a switchover, and a
    /// service address moved by a hook appears only once the hook ran. The caller tries again.
    pub fn try_bind(
        addr: SocketAddr,
        registry: &Registry,
        base: usize,
        max: usize,
    ) -> io::Result<Option<Service>> {
        match Service::bind(addr, registry, base, max) {
            Ok(s) => Ok(Some(s)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::AddrInUse | io::ErrorKind::AddrNotAvailable
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// [`Service::try_bind`] for a daemon's loop: the service once bound (logged), `None` while
    /// the address is busy (try again later) or on an error (logged).
    pub fn try_bind_logged(
        addr: SocketAddr,
        registry: &Registry,
        base: usize,
        max: usize,
    ) -> Option<Service> {
        match Service::try_bind(addr, registry, base, max) {
            Ok(Some(svc)) => {
                log::info!("model service on {}", svc.addr());
                Some(svc)
            }
            Ok(None) => None,
            Err(e) => {
                log::error!("model service {addr}: {e}");
                None
            }
        }
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether a token is this service's.
    pub fn owns(&self, t: Token) -> bool {
        t.0 >= self.base && t.0 <= self.base + self.clients.len()
    }

    /// Connected clients.
    pub fn clients(&self) -> usize {
        self.clients.iter().filter(|c| c.is_some()).count()
    }

    /// Handle an event. `can_take` says whether another request may be taken now (output commit
    /// has room); `handle` answers or holds a request line.
    pub fn on_event(&mut self, registry: &Registry, t: Token, h: &mut dyn Handler) {
        if t.0 == self.base {
            self.accept(registry, h);
            return;
        }
        let slot = t.0 - self.base - 1;
        self.serve(registry, slot, h);
    }

    /// Give stalled clients another chance after output was released.
    pub fn pump(&mut self, registry: &Registry, h: &mut dyn Handler) {
        for slot in 0..self.clients.len() {
            if self.clients[slot].as_ref().is_some_and(|c| c.stalled) && h.can_take() {
                self.serve(registry, slot, h);
            }
        }
    }

    /// The slot for a newcomer: a free one, or the one [`victim`] frees.
    fn free_slot(&mut self, registry: &Registry, h: &mut dyn Handler) -> Option<usize> {
        if let Some(slot) = self.clients.iter().position(Option::is_none) {
            return Some(slot);
        }
        let view: Vec<Option<ClientView>> = self
            .clients
            .iter()
            .enumerate()
            .map(|(slot, c)| {
                c.as_ref().map(|c| ClientView {
                    eof_at: c.eof_at,
                    active_at: c.active_at,
                    waiting: c.out.pending() > 0
                        || h.holds(ClientId {
                            slot: slot as u32,
                            gen: c.gen,
                        }),
                })
            })
            .collect();
        let slot = victim(&view, Instant::now())?;
        log::debug!(
            "service: a client {} gives its slot to a newcomer",
            if view[slot].is_some_and(|v| v.eof_at.is_some()) {
                "that went away"
            } else {
                "idle"
            }
        );
        self.close(registry, slot, h);
        Some(slot)
    }

    fn accept(&mut self, registry: &Registry, h: &mut dyn Handler) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, peer)) => {
                    let Some(slot) = self.free_slot(registry, h) else {
                        log::warn!(
                            "service: {peer} refused: all {} client slots in use",
                            self.clients.len()
                        );
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let tok = Token(self.base + 1 + slot);
                    if let Err(e) =
                        registry.register(&mut stream, tok, Interest::READABLE | Interest::WRITABLE)
                    {
                        log::warn!("service: cannot register {peer}: {e}");
                        continue;
                    }
                    self.gen = self.gen.wrapping_add(1);
                    self.clients[slot] = Some(Client {
                        stream,
                        gen: self.gen,
                        inbuf: Vec::with_capacity(MAX_LINE),
                        out: OutQueue::new(CLIENT_OUT_LIMIT),
                        stalled: false,
                        eof: false,
                        eof_at: None,
                        active_at: Instant::now(),
                    });
                    log::debug!("service: client {peer} connected");
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::warn!("service: accept failed: {e}");
                    return;
                }
            }
        }
    }

    fn serve(&mut self, registry: &Registry, slot: usize, h: &mut dyn Handler) {
        let Some(c) = self.clients.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let id = ClientId {
            slot: slot as u32,
            gen: c.gen,
        };
        let mut drop_it = false;
        c.stalled = false;
        'outer: loop {
            // Take complete lines already buffered.
            while let Some(nl) = c.inbuf.iter().position(|&b| b == b'\n') {
                if !h.can_take() {
                    c.stalled = true;
                    break 'outer;
                }
                let line: Vec<u8> = c.inbuf.drain(..=nl).collect();
                let text = String::from_utf8_lossy(&line[..nl]);
                if let Some(mut reply) = h.handle(id, text.trim_end_matches('\r')) {
                    reply.push('\n');
                    if !c.out.push(reply.as_bytes()) {
                        log::warn!("service: dropping a client that does not read its replies");
                        drop_it = true;
                        break 'outer;
                    }
                }
            }
            if c.inbuf.len() >= MAX_LINE {
                let _ = c.out.push(b"ERR request line too long\n");
                let _ = c.out.flush(&mut c.stream);
                drop_it = true;
                break;
            }
            if c.eof {
                break;
            }
            let mut buf = [0u8; MAX_LINE];
            let room = MAX_LINE - c.inbuf.len();
            match c.stream.read(&mut buf[..room]) {
                Ok(0) => {
                    c.eof = true;
                    c.eof_at = Some(Instant::now());
                }
                Ok(n) => {
                    c.inbuf.extend_from_slice(&buf[..n]);
                    c.active_at = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    drop_it = true;
                    break;
                }
            }
        }
        if c.out.flush(&mut c.stream).is_err() {
            drop_it = true;
        }
        if c.eof && c.out.pending() == 0 && !c.inbuf.contains(&b'\n') && !h.holds(id) {
            drop_it = true;
        }
        if drop_it {
            self.close(registry, slot, h);
        }
    }

    /// Queue bytes for a client (e.g. released output) and try to send them.
    pub fn send(&mut self, registry: &Registry, id: ClientId, data: &[u8], h: &mut dyn Handler) {
        let slot = id.slot as usize;
        let Some(c) = self.clients.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if c.gen != id.gen {
            return;
        }
        c.active_at = Instant::now();
        let ok = c.out.push(data) && c.out.flush(&mut c.stream).is_ok();
        let finished = c.eof && c.out.pending() == 0 && !c.inbuf.contains(&b'\n') && !h.holds(id);
        if !ok || finished {
            self.close(registry, slot, h);
        }
    }

    fn close(&mut self, registry: &Registry, slot: usize, h: &mut dyn Handler) {
        if let Some(mut c) = self.clients[slot].take() {
            let _ = registry.deregister(&mut c.stream);
            h.closed(ClientId {
                slot: slot as u32,
                gen: c.gen,
            });
        }
    }
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
