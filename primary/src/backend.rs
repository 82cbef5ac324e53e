//! The domain side of hsb-primary's shell: pre-copy steps, suspending (a Xen guest's suspend
//! is polled from the loop), capturing, sealing and sending a checkpoint, releasing output to
//! the model service's clients, and the model service itself. Each answers the node's effect
//! with the event of its outcome. (The disk's part of a checkpoint is in `disk.rs`.)

use mio::Token;

use hsb_common::conn::write_some;
use hsb_common::decision::Epoch;
use hsb_common::time::Nanos;
use hsb_domain::checkpoint::Staging;
use hsb_domain::model::ModelDomain;
use hsb_domain::output::OutputCommit;
use hsb_domain::service::{ClientId, Handler, Service};
use hsb_primary::node::Event;

use crate::daemon::{Daemon, PRECOPY_STEP_PAGES, SERVICE_BASE, SERVICE_RETRY};

/// Bytes of a checkpoint sealed between two writes to the socket: a fraction of a millisecond
/// of sealing, while the socket's buffer holds milliseconds of the link.
const SEAL_STEP: usize = 256 << 10;
/// Bytes of a checkpoint sealed at most per turn of the event loop (a few milliseconds): the
/// loop serves its other sockets between turns.
const SEAL_TURN: usize = 4 << 20;
use crate::guest::Guest;

/// Requests of the model service, answered by the domain and held under output commit.
struct Requests<'a> {
    dom: &'a mut ModelDomain,
    output: &'a mut OutputCommit<ClientId>,
    requests: &'a mut u64,
    /// Fenced (rule 4): the domain is paused and takes no requests.
    fenced: bool,
}

impl Handler for Requests<'_> {
    fn can_take(&mut self) -> bool {
        // (A PUT's log record must fit the disk's journal: requests wait like output does.)
        !self.output.full() && !self.fenced && self.dom.can_take_request()
    }
    fn handle(&mut self, id: ClientId, line: &str) -> Option<String> {
        *self.requests += 1;
        let mut reply = self.dom.handle(line);
        reply.push('\n');
        self.output.hold(id, reply.as_bytes());
        None
    }
    fn holds(&self, id: ClientId) -> bool {
        self.output.holds(id)
    }
    fn closed(&mut self, id: ClientId) {
        self.output.forget(id);
    }
}

impl Daemon {
    pub(crate) fn precopy_step(&mut self, ckpt: u64, epoch: Epoch) -> Event {
        let done = |staging: &Staging| Event::PrecopyStepped {
            precopying: staging.precopying(),
            done: true,
        };
        if !self.staging.precopying() {
            match self.staging.start_precopy(self.dom.source(), ckpt, epoch.0) {
                Ok(()) => log::info!(
                    "checkpoint {ckpt}: full synchronisation, copying the guest's memory while it runs"
                ),
                Err(e) => {
                    log::warn!("checkpoint {ckpt}: no pre-copy ({e}); the full synchronisation is copied while the guest is suspended");
                    return done(&self.staging);
                }
            }
        }
        match self
            .staging
            .precopy_step(self.dom.source(), PRECOPY_STEP_PAGES)
        {
            Ok(d) => Event::PrecopyStepped {
                precopying: self.staging.precopying(),
                done: d,
            },
            Err(e) => {
                log::warn!("checkpoint {ckpt}: pre-copy failed ({e}); the full synchronisation is copied while the guest is suspended");
                done(&self.staging)
            }
        }
    }

    pub(crate) fn suspend(&mut self) -> Option<Event> {
        let t0 = self.clock.now();
        if let Guest::Xen(x) = &mut self.dom {
            // A Xen guest takes a while to reach its suspend point: the loop polls for it (see
            // poll_suspend) and keeps serving heartbeats and witnesses meanwhile.
            return match x.src.request_suspend() {
                Ok(()) => {
                    self.suspend_wait = Some(t0);
                    self.capture_t0 = Some(t0);
                    None
                }
                Err(e) => Some(Event::SuspendFailed {
                    why: format!("cannot suspend the domain: {e}"),
                }),
            };
        }
        match self.dom.source().suspend() {
            Ok(()) => {
                self.capture_t0 = Some(t0);
                Some(Event::Suspended { waited: None })
            }
            Err(e) => Some(Event::SuspendFailed {
                why: format!("cannot suspend the domain: {e}"),
            }),
        }
    }

    /// A Xen guest's suspend, asked for by a checkpoint or a fence, is polled from the loop.
    pub(crate) fn poll_suspend(&mut self, now: Nanos) {
        let Some(t0) = self.suspend_wait else { return };
        let Guest::Xen(x) = &mut self.dom else {
            self.suspend_wait = None;
            return;
        };
        match x.src.poll_suspend() {
            Ok(false) => {}
            Ok(true) => {
                self.suspend_wait = None;
                let waited = self.clock.now().since(t0);
                self.feed(
                    now,
                    Event::Suspended {
                        waited: Some(waited),
                    },
                );
            }
            Err(e) => {
                self.suspend_wait = None;
                self.capture_t0 = None;
                self.feed(now, Event::SuspendFailed { why: e.to_string() });
            }
        }
    }

    /// Capture the suspended domain into staging, resume it (unless fenced), and start sealing
    /// and sending it ([`Daemon::send_staged`] goes on frame by frame).
    pub(crate) fn capture(&mut self, ckpt: u64, full: bool, resume: bool, epoch: Epoch) -> Event {
        let t0 = self.capture_t0.take().unwrap_or_else(|| self.clock.now());
        self.output.close(ckpt);
        if let Some(p) = self.plug.as_mut() {
            p.close(ckpt);
        }
        let mut recopied = None;
        let cap = if full && self.staging.precopying() {
            match self
                .staging
                .finish_precopy(self.dom.source(), ckpt, epoch.0)
            {
                Ok(p) => {
                    log::info!(
                        "checkpoint {ckpt}: pre-copy: {} rounds after the first pass copied {} pages written meanwhile again; {} written during the last",
                        p.rounds,
                        p.recopied_running,
                        p.recopied
                    );
                    recopied = Some(p.recopied);
                    Ok(p.capture)
                }
                Err(e) => {
                    log::warn!(
                        "checkpoint {ckpt}: pre-copy not usable ({e}); copying all of it now"
                    );
                    self.staging.capture(self.dom.source(), ckpt, epoch.0, full)
                }
            }
        } else {
            self.staging.capture(self.dom.source(), ckpt, epoch.0, full)
        };
        if resume {
            if let Err(e) = self.dom.source().resume() {
                log::error!("cannot resume the domain: {e}");
            }
        }
        let pause = self.clock.now().since(t0);
        // The epoch's disk writes (the guest does not run again before this returns).
        let cap = cap.and_then(|st| self.capture_disk().map(|()| st));
        let failed = |why: String, staging: &Staging| Event::CaptureFailed {
            why,
            precopying: staging.precopying(),
        };
        let st = match cap {
            Ok(st) => st,
            Err(e) => return failed(format!("capture failed: {e}"), &self.staging),
        };
        if self
            .repl
            .as_ref()
            .and_then(|r| r.session.as_ref())
            .is_none()
        {
            return failed("no session to send it on".into(), &self.staging);
        }
        if let Err(e) = self.staging.begin_seal() {
            return failed(format!("seal failed: {e}"), &self.staging);
        }
        // The encoding rule learns what each checkpoint cost, from here to its ack.
        self.staging.sealing_began(self.clock.now());
        self.disk_sealed(ckpt);
        // Sealed and written a part at a time from here on (`send_staged`).
        self.send_pos = Some(0);
        Event::Captured {
            ckpt,
            pages: st.pages,
            bytes: st.bytes as u64,
            pause,
            recopied,
            precopying: self.staging.precopying(),
        }
    }

    /// Write what is sealed of the staged checkpoint and seal more of it, in turns, until the
    /// socket is full or the turn's share of sealing is done (the loop comes back at once while
    /// a seal is under way: `Shell::deadline`); the node hears when all of it is written. The
    /// socket is written again after every [`SEAL_STEP`] sealed, so it never runs dry while the
    /// rest is sealed, and sealing goes on while the socket is full (its buffer feeds the link
    /// meanwhile).
    pub(crate) fn send_staged(&mut self, now: Nanos) {
        let (Some(mut pos), Some(r)) = (self.send_pos, self.repl.as_mut()) else {
            return;
        };
        let lost = |why: String| {
            Some(Event::Lost {
                why,
                frame_error: None,
            })
        };
        let mut sealed = 0;
        let ev = loop {
            // The session's confirmation, if still queued, goes first.
            let written = match r.out.flush(&mut r.stream) {
                Ok(true) => write_some(&mut r.stream, self.staging.bytes(), &mut pos),
                Ok(false) => Ok(false),
                Err(e) => Err(e),
            };
            let all = match written {
                Ok(all) => all,
                Err(e) => break lost(format!("write failed: {e}")),
            };
            if !self.staging.is_sealing() {
                break all.then_some(Event::Sent { bytes: pos as u64 });
            }
            if sealed >= SEAL_TURN {
                break None;
            }
            let Some(sess) = r.session.as_mut() else {
                break lost("no session to send it on".into());
            };
            if let Err(e) = self.staging.seal_some(sess, SEAL_STEP) {
                break lost(format!("seal failed: {e}"));
            }
            sealed += SEAL_STEP;
        };
        self.send_pos = ev.is_none().then_some(pos);
        if let Some(ev) = ev {
            self.feed(now, ev);
        }
    }

    /// A checkpoint is being sealed and sent, and has more to seal: the loop must not sleep.
    pub(crate) fn sealing_due(&self) -> bool {
        self.send_pos.is_some() && self.staging.is_sealing()
    }

    /// Release output acked by ack(`upto`) to its clients.
    pub(crate) fn release(&mut self, upto: u64) {
        if let Some(p) = self.plug.as_mut() {
            p.release(upto);
        }
        let mut out = Vec::new();
        self.output.release(upto, |h| out.push(h));
        self.with_service(|svc, registry, h| {
            for held in out {
                svc.send(registry, held.client, &held.data, h);
            }
            // Room freed: take requests that were waiting.
            svc.pump(registry, h);
        });
    }

    /// Take requests that were waiting for something other than output room (the disk's
    /// activity-log record, whose sync just completed).
    pub(crate) fn pump_service(&mut self) {
        self.with_service(|svc, registry, h| svc.pump(registry, h));
    }

    pub(crate) fn on_service(&mut self, t: Token) {
        self.with_service(|svc, registry, h| svc.on_event(registry, t, h));
    }

    /// The model service and its requests' handler, when the guest is the model's and its
    /// service is bound.
    fn with_service(&mut self, f: impl FnOnce(&mut Service, &mio::Registry, &mut Requests<'_>)) {
        let fenced = self.node.is_fenced();
        if let (Some(svc), Some(dom)) = (self.service.as_mut(), self.dom.model()) {
            let mut h = Requests {
                dom,
                output: &mut self.output,
                requests: &mut self.requests,
                fenced,
            };
            f(svc, self.poll.registry(), &mut h);
        }
    }

    /// The model service's address was busy at start (the copy that served before still held
    /// it): try again.
    pub(crate) fn bind_service(&mut self, now: Nanos) {
        if self.service.is_some()
            || !matches!(self.dom, Guest::Model(_))
            || now < self.service_retry_at
        {
            return;
        }
        self.service_retry_at = now.plus(SERVICE_RETRY);
        self.service = Service::try_bind_logged(
            self.s.service,
            self.poll.registry(),
            SERVICE_BASE,
            self.s.max_clients,
        );
    }
}
