//! The standby node's replication connection slots (DESIGN.md §6): who may open a session,
//! which live session a newer primary replaces ([`session::admit`]), bounded pending
//! handshakes with deadlines and evictions, refusals, and the end of the live session.

use std::net::SocketAddr;

use hsb_common::decision::Epoch;
use hsb_common::msg::Hello;
use hsb_common::session::{self, Admit, Claim, Live};
use hsb_common::time::Nanos;

use super::{push, Effect, Effects, Noise, Slot, StandbyNode, SLOTS};
use crate::slots::{self, Stage};

impl StandbyNode {
    /// A connection was accepted: closed at once from outside `primary_allow`; when the
    /// pending handshakes are full, the oldest gives way ([`slots::victim`]), never the live
    /// session.
    pub(super) fn incoming(&mut self, now: Nanos, peer: SocketAddr, fx: &mut Effects) {
        if !slots::allowed(&self.cfg.primary_allow, peer.ip()) {
            self.stats.connections_disallowed += 1;
            self.noisy(Noise::Disallowed, now, || {
                format!("replication: closed a connection from {peer}: not in primary_allow")
            });
            return;
        }
        if self.pending_handshakes() >= slots::PENDING {
            let view: [Option<(Stage, Nanos)>; SLOTS] =
                std::array::from_fn(|i| self.slots[i].as_ref().map(|s| (s.stage, s.accepted)));
            if let Some(v) = slots::victim(&view) {
                self.stats.handshakes_evicted += 1;
                let old = self.slots[v].as_ref().map(|s| s.peer);
                self.noisy(Noise::Evicted, now, || {
                    format!(
                        "replication: {} handshakes pending; the oldest ({}) gives way to {peer}",
                        slots::PENDING,
                        old.map_or("?".into(), |p| p.to_string())
                    )
                });
                self.close(v, "gave way to a newer connection", fx);
            }
        }
        // Always one: one slot more than the pending handshakes, and the live session takes one.
        let Some(i) = self.slots.iter().position(Option::is_none) else {
            return;
        };
        log::debug!("replication: connection from {peer}");
        self.slots[i] = Some(Slot {
            stage: Stage::AwaitHello,
            peer,
            accepted: now,
            heard: now,
            received: 0,
            hello: None,
            node: String::new(),
            epoch: Epoch::FIRST,
        });
        push(fx, Effect::Take { slot: i });
    }

    /// Connections waiting for their handshake (or refused and flushing the refusal).
    pub fn pending_handshakes(&self) -> usize {
        self.slots
            .iter()
            .flatten()
            .filter(|s| s.stage != Stage::Live)
            .count()
    }

    /// Close the handshakes that have not made a session within the deadline.
    pub(super) fn expire_handshakes(&mut self, now: Nanos, fx: &mut Effects) {
        for i in 0..SLOTS {
            let Some(s) = self.slots[i].as_ref() else {
                continue;
            };
            if s.stage == Stage::Live || now.since(s.accepted) <= slots::HANDSHAKE_DEADLINE {
                continue;
            }
            if s.stage != Stage::Closing {
                self.stats.handshakes_expired += 1;
                let (peer, stage) = (s.peer, s.stage);
                self.noisy(Noise::Expired, now, || {
                    format!(
                        "replication: no session from {peer} within {:?} of connecting ({}); closed",
                        slots::HANDSHAKE_DEADLINE,
                        if stage == Stage::AwaitHello {
                            "no Hello"
                        } else {
                            "Hello not confirmed"
                        }
                    )
                });
            }
            self.close(i, "handshake deadline", fx);
        }
    }

    /// Close slot `i` now (the daemon closes its connection; its `Closed` is not awaited).
    pub(super) fn close(&mut self, i: usize, why: &str, fx: &mut Effects) {
        if self.slots[i].is_none() {
            return;
        }
        push(
            fx,
            Effect::Close {
                slot: i,
                why: why.to_string(),
            },
        );
        self.closed(i, why, fx);
    }

    /// Slot `i` is gone: if it was the live session, the replica stays where it is.
    pub(super) fn closed(&mut self, i: usize, why: &str, fx: &mut Effects) {
        let Some(s) = self.slots[i].take() else {
            return;
        };
        if self.current == Some(i) {
            self.current = None;
            push(fx, Effect::Discard);
            log::warn!(
                "replication from {} ({}) ended: {why}; replica stays at checkpoint {}",
                s.peer,
                s.node,
                self.applied.map_or("none".into(), |a| a.to_string()),
            );
        } else {
            // Handshakes come and go by the thousand under a flood: their notable ends are
            // counted and logged (rate-limited) where they happen.
            log::debug!("replication: connection from {} closed: {why}", s.peer);
        }
    }

    pub(super) fn on_closed(
        &mut self,
        now: Nanos,
        i: usize,
        why: &str,
        frame_error: Option<hsb_common::frame::FrameError>,
        fx: &mut Effects,
    ) {
        if let Some(e) = frame_error {
            if let Some(k) = hsb_common::frame::FrameError::COUNTERS
                .iter()
                .position(|c| *c == e.counter())
            {
                self.stats.frame_errors[k] += 1;
            }
            let peer = self.slots[i]
                .as_ref()
                .map(|s| s.peer.to_string())
                .unwrap_or_default();
            let line = || {
                format!(
                    "replication: bad frame from {peer} ({}): {e}; dropping the connection",
                    e.counter()
                )
            };
            if self.current == Some(i) {
                log::warn!("{}", line());
            } else {
                // Before a session, anyone can send garbage as often as they like.
                self.noisy(Noise::BadFrame, now, line);
            }
        }
        self.closed(i, why, fx);
    }

    /// Whether the primary of `h` (on slot `i`) may have the session, or why not: it must be a
    /// primary of this domain's size (and this disk's) while this node is not active, and the
    /// newer primary if a session is live ([`session::admit`]).
    pub(super) fn admission(&self, now: Nanos, i: usize, h: &Hello) -> Result<Admit, String> {
        if h.role != hsb_common::msg::Role::Primary {
            return Err(format!("peer role {:?} is not a primary", h.role));
        }
        if h.domain_pages != self.cfg.domain_pages {
            return Err(format!(
                "domain size mismatch: primary has {} pages, this replica {}; set model.memory alike on both (xen: the replica must be restored from the protected guest)",
                h.domain_pages, self.cfg.domain_pages
            ));
        }
        if h.disk.size != self.cfg.disk_size {
            return Err(format!(
                "disk size mismatch: primary has {} bytes, this replica {}; set model.disk_size alike on both",
                h.disk.size, self.cfg.disk_size
            ));
        }
        if let Some(n) = self.activated.or(self.activating.as_ref().map(|a| a.ckpt)) {
            return Err(format!(
                "standby {} is active since checkpoint {n}; it takes no checkpoints",
                self.cfg.node
            ));
        }
        let nonce_in_use = self.slots.iter().enumerate().any(|(j, s)| {
            j != i
                && s.as_ref().is_some_and(|s| {
                    matches!(s.stage, Stage::Admitted | Stage::Live)
                        && s.hello.as_ref().is_some_and(|o| o.nonce == h.nonce)
                })
        });
        // Accepted strictly earlier: two connections accepted in one turn of the loop (the
        // same `now`) are not ordered, and the newcomer then proves nothing by its connection.
        let accepted = self.slots[i].as_ref().map(|s| s.accepted);
        let live = self
            .current
            .filter(|&j| j != i)
            .and_then(|j| self.slots[j].as_ref())
            .and_then(|s| {
                s.hello.as_ref().map(|o| {
                    (
                        Claim::of(o),
                        slots::silent(s.heard, now),
                        accepted.is_some_and(|a| s.accepted < a),
                    )
                })
            });
        session::admit(
            live.as_ref().map(|(claim, silent, connected_first)| Live {
                claim,
                silent: *silent,
                connected_first: *connected_first,
            }),
            &Claim::of(h),
            nonce_in_use,
        )
        .map_err(|r| r.to_string())
    }

    pub(super) fn refused(&mut self, now: Nanos, i: usize, reason: &str) {
        self.stats.connections_refused += 1;
        let Some(s) = self.slots[i].as_mut() else {
            return;
        };
        s.stage = Stage::Closing;
        let (peer, node) = (s.peer, s.node.clone());
        self.noisy(Noise::Refused, now, || {
            format!("replication: refusing {peer} ({node}): {reason}")
        });
    }

    /// The first frame of a connection: the primary's Hello. Answered with ours, then either a
    /// refusal or a wait for the primary's confirmation.
    pub(super) fn on_hello(&mut self, now: Nanos, i: usize, h: Hello, fx: &mut Effects) {
        let verdict = self.admission(now, i, &h);
        let (epoch, last_ckpt) = (self.current_epoch(), self.applied.unwrap_or(0));
        let Some(s) = self.slots[i].as_mut() else {
            return;
        };
        s.node = h.node.to_string();
        s.epoch = h.epoch;
        s.heard = now;
        let (incarnation, hepoch) = (h.incarnation, h.epoch);
        s.hello = Some(h);
        match verdict {
            Ok(why) => {
                s.stage = Stage::Admitted;
                log::debug!(
                    "replication: Hello from {} ({}, epoch {hepoch}, incarnation {incarnation}) may take the session ({why}); waiting for its confirmation",
                    s.peer,
                    s.node
                );
                push(
                    fx,
                    Effect::AnswerHello {
                        slot: i,
                        epoch,
                        last_ckpt,
                        refuse: None,
                    },
                );
            }
            Err(reason) => {
                push(
                    fx,
                    Effect::AnswerHello {
                        slot: i,
                        epoch,
                        last_ckpt,
                        refuse: Some(reason.clone()),
                    },
                );
                self.refused(now, i, &reason);
            }
        }
    }

    /// The primary's confirmation: the session is proved fresh. If its primary is still the
    /// newer one, it becomes the live session, replacing any other.
    pub(super) fn on_confirm(&mut self, now: Nanos, i: usize, fx: &mut Effects) {
        let Some(h) = self.slots[i].as_mut().and_then(|s| {
            s.heard = now;
            s.hello.clone()
        }) else {
            return;
        };
        let why = match self.admission(now, i, &h) {
            Ok(why) => why,
            Err(reason) => {
                push(
                    fx,
                    Effect::Refuse {
                        slot: i,
                        reason: reason.clone(),
                    },
                );
                return self.refused(now, i, &reason);
            }
        };
        if let Some(j) = self.current.filter(|&j| j != i) {
            self.stats.sessions_replaced += 1;
            let by = self.slots[i]
                .as_ref()
                .map_or(String::new(), |s| format!("{} ({})", s.peer, s.node));
            self.close(j, &format!("replaced by the session of {by}: {why}"), fx);
        }
        let Some(s) = self.slots[i].as_mut() else {
            return;
        };
        s.stage = Stage::Live;
        self.current = Some(i);
        self.stats.sessions += 1;
        log::info!(
            "replication: session with {} ({}, epoch {}, incarnation {}) confirmed ({why}); expecting a full synchronisation",
            s.peer,
            s.node,
            h.epoch,
            h.incarnation
        );
        push(fx, Effect::GoLive { slot: i });
    }
}
