//! The standby's side of a checkpoint: [`Receiver`] stages checkpoint N whole (pages, state and
//! disk writes), checks it against its `End` record, and only then lets [`Receiver::apply`]
//! write it into the replica (see the module documentation of [`super`]).

use super::*;

/// A checkpoint the receiver has staged completely and verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Complete {
    /// Checkpoint number.
    pub ckpt: u64,
    /// Whether it was a full synchronisation.
    pub full: bool,
    /// Pages in it.
    pub pages: u64,
    /// Bytes of its records.
    pub bytes: u64,
}

/// The standby's checkpoint receiver: stage whole, verify, then apply.
#[derive(Debug)]
pub struct Receiver {
    domain_pages: u64,
    /// Page frame numbers are below this.
    pfn_limit: u64,
    /// A full synchronisation must carry exactly `domain_pages` pages (the model domain); a
    /// Xen guest's full sync carries its RAM, whose count only the primary knows.
    exact_full: bool,
    pub(super) begin: Option<Begin>,
    pfns: Vec<u64>,
    data: Vec<u8>,
    state: Vec<u8>,
    state_seen: bool,
    crc: crc32fast::Hasher,
    total: u64,
    /// LZ4-compressed records of one frame, decompressed.
    unpacked: Vec<u8>,
    pub(super) complete: Option<Complete>,
    /// Last checkpoint applied in the current session; `None` until a full sync is applied.
    session_base: Option<u64>,
    pub(super) applied: Option<u64>,
    /// The replica's disk part, if it has a disk.
    pub(super) disk: Option<DiskRx>,
}

impl Receiver {
    /// A receiver for a replica of `domain_pages` pages; allocates staging for a full sync.
    pub fn new(domain_pages: u64) -> Receiver {
        Receiver::for_layout(domain_pages, domain_pages, true)
    }

    /// Stage for a replica whose frame numbers are below `pfn_limit`, with at most
    /// `max_pages` pages per checkpoint; `exact_full`: a full sync must carry exactly
    /// `max_pages` pages.
    pub fn for_layout(pfn_limit: u64, max_pages: u64, exact_full: bool) -> Receiver {
        let domain_pages = max_pages;
        Receiver {
            domain_pages,
            pfn_limit,
            exact_full,
            begin: None,
            pfns: Vec::with_capacity(domain_pages as usize),
            data: Vec::with_capacity(domain_pages as usize * PAGE_SIZE),
            state: Vec::with_capacity(MAX_STATE_LEN),
            state_seen: false,
            crc: crc32fast::Hasher::new(),
            total: 0,
            unpacked: vec![0u8; PAGES_PER_FRAME * MAX_RECORD],
            complete: None,
            session_base: None,
            applied: None,
            disk: None,
        }
    }

    /// Last checkpoint applied to the replica, if any.
    pub fn applied(&self) -> Option<u64> {
        self.applied
    }

    /// Whether a checkpoint is being staged.
    pub fn staging(&self) -> bool {
        self.begin.is_some()
    }

    /// Bytes allocated for staging.
    pub fn capacity(&self) -> usize {
        self.data.capacity()
            + self.pfns.capacity() * 8
            + self.state.capacity()
            + self.unpacked.len()
            + self.disk.as_ref().map_or(0, |d| {
                d.data.capacity() + d.pieces.capacity() * std::mem::size_of::<(u64, usize, usize)>()
            })
    }

    /// A new session (new connection): discard anything staged, and require a full
    /// synchronisation before any incremental checkpoint (never patch across a gap). The
    /// caller aborts a disk resynchronisation left by the old session
    /// ([`Disk::abort_resync`]).
    pub fn new_session(&mut self) {
        self.discard();
        self.session_base = None;
        if let Some(d) = self.disk.as_mut() {
            d.plan = None;
            d.synced = 0;
        }
    }

    /// Drop the checkpoint being staged (after an error); the replica is untouched.
    pub fn discard(&mut self) {
        self.begin = None;
        self.complete = None;
        self.pfns.clear();
        self.data.clear();
        self.state.clear();
        self.state_seen = false;
        self.crc = crc32fast::Hasher::new();
        self.total = 0;
        if let Some(d) = self.disk.as_mut() {
            d.clear();
        }
    }

    pub(super) fn fail(&mut self, kind: Kind, why: &'static str) -> FrameError {
        self.discard();
        FrameError::Body { kind, why }
    }

    /// Feed one verified frame (already authenticated by the session). `replica` is read, never
    /// written: its pages are the reference of delta records (it is at the previous checkpoint,
    /// which is what the primary encoded against); a disk resynchronisation's copies are
    /// written to its disk as they come. Returns the completed checkpoint when its `End` arrives
    /// and checks out. On error (a disk that failed: [`FrameError::Body`]; see
    /// [`Receiver::on_frame_to`] to tell it apart), the staged checkpoint is discarded and the
    /// caller drops the session.
    pub fn on_frame(
        &mut self,
        kind: Kind,
        body: &[u8],
        body_hash: &crc32fast::Hasher,
        replica: &mut dyn Replica,
    ) -> Result<Option<Complete>, FrameError> {
        match self.on_frame_to(kind, body, body_hash, replica) {
            Ok(c) => Ok(c),
            Err(CheckpointError::Frame(e)) => Err(e),
            Err(_) => Err(FrameError::Body {
                kind,
                why: "the replica's disk failed",
            }),
        }
    }

    /// [`Receiver::on_frame`], telling a bad frame ([`CheckpointError::Frame`]) from a disk
    /// that failed ([`CheckpointError::Disk`]): either way the staged checkpoint is discarded
    /// and the caller drops the session (refusing it, for a disk).
    pub fn on_frame_to(
        &mut self,
        kind: Kind,
        body: &[u8],
        body_hash: &crc32fast::Hasher,
        replica: &mut dyn Replica,
    ) -> Result<Option<Complete>, CheckpointError> {
        match kind {
            Kind::DiskPlan | Kind::DiskSync => self
                .on_disk_frame(kind, body, replica.disk())
                .map(|()| None),
            _ => Ok(self.on_checkpoint_frame(kind, body, body_hash, replica)?),
        }
    }

    fn on_checkpoint_frame(
        &mut self,
        kind: Kind,
        body: &[u8],
        body_hash: &crc32fast::Hasher,
        replica: &mut dyn Replica,
    ) -> Result<Option<Complete>, FrameError> {
        if self.complete.is_some() {
            self.discard();
            return Err(FrameError::Unexpected {
                kind,
                state: "a checkpoint awaits apply",
            });
        }
        match kind {
            Kind::Begin => {
                let b: Begin = msg::decode(kind, body).inspect_err(|_| self.discard())?;
                if self.begin.is_some() {
                    self.discard();
                    return Err(FrameError::Unexpected {
                        kind,
                        state: "staging a checkpoint",
                    });
                }
                match (b.full, self.session_base) {
                    (false, None) => {
                        return Err(self.fail(kind, "incremental checkpoint before a full sync"))
                    }
                    (false, Some(base)) if b.ckpt != base + 1 => {
                        return Err(self.fail(kind, "checkpoint number gap"))
                    }
                    (true, _) if self.exact_full && b.pages != self.domain_pages => {
                        return Err(self.fail(kind, "full sync does not cover the domain"))
                    }
                    _ => {}
                }
                if b.pages > self.domain_pages {
                    return Err(self.fail(kind, "more pages than the domain has"));
                }
                if let Some(d) = self.disk.as_ref() {
                    match (&d.plan, b.full) {
                        (Some(p), true) if p.ckpt == b.ckpt => {}
                        (_, true) => {
                            return Err(
                                self.fail(kind, "a full synchronisation without its disk plan")
                            )
                        }
                        (Some(_), false) => {
                            return Err(self.fail(
                                kind,
                                "an incremental checkpoint during a disk resynchronisation",
                            ))
                        }
                        (None, false) => {}
                    }
                }
                if let Some(a) = self.applied {
                    if b.ckpt <= a && !b.full {
                        return Err(self.fail(kind, "checkpoint number went backwards"));
                    }
                }
                self.begin = Some(b);
                self.account(body.len() as u64, body_hash);
                Ok(None)
            }
            Kind::Pages => {
                let Some(begin) = self.begin else {
                    return Err(self.fail(kind, "pages outside a checkpoint"));
                };
                let p: Pages = msg::decode(kind, body).inspect_err(|_| self.discard())?;
                if p.ckpt != begin.ckpt {
                    return Err(self.fail(kind, "pages of another checkpoint"));
                }
                if self.pfns.len() as u64 + p.pfns.len() as u64 > begin.pages {
                    return Err(self.fail(kind, "more pages than announced"));
                }
                if p.pfns.iter().any(|&pfn| pfn >= self.pfn_limit) {
                    return Err(self.fail(kind, "page number beyond the domain"));
                }
                // Capacity was reserved for a full domain and pages <= domain_pages: no growth.
                let start = self.data.len();
                match p.codec {
                    PAGES_PLAIN => {
                        if p.data.len() != p.pfns.len() * PAGE_SIZE {
                            return Err(
                                self.fail(kind, "page data length does not match page count")
                            );
                        }
                        self.data.extend_from_slice(p.data);
                        self.pfns.extend_from_slice(&p.pfns);
                        self.account(body.len() as u64, body_hash);
                        return Ok(None);
                    }
                    PAGES_RECORDS | PAGES_LZ4 => {}
                    _ => return Err(self.fail(kind, "unknown page codec")),
                }
                let max = p.pfns.len() * MAX_RECORD;
                let records = if p.codec == PAGES_LZ4 {
                    match page_codec::decompress(p.data, &mut self.unpacked, max) {
                        Ok(r) => r,
                        Err(e) => return Err(self.fail(kind, e.why())),
                    }
                } else {
                    p.data
                };
                if let Err(why) =
                    page_codec::decode_pages(records, &p.pfns, begin.full, &mut self.data, replica)
                {
                    return Err(self.fail(kind, why));
                }
                self.pfns.extend_from_slice(&p.pfns);
                // The checkpoint's CRC covers the body in its plain form: the pages as decoded.
                let mut head = [0u8; PAGES_HEAD_MAX];
                let plain = PagesHead {
                    ckpt: p.ckpt,
                    pfns: &p.pfns,
                    codec: PAGES_PLAIN,
                };
                let Ok(mut n) = msg::encode(&plain, &mut head) else {
                    return Err(self.fail(kind, "page head does not fit"));
                };
                n += msg::write_varint((p.pfns.len() * PAGE_SIZE) as u64, &mut head[n..]);
                let mut h = frame::body_crc(&head[..n]);
                h.update(&self.data[start..]);
                self.account((n + p.pfns.len() * PAGE_SIZE) as u64, &h);
                Ok(None)
            }
            Kind::State => {
                let Some(begin) = self.begin else {
                    return Err(self.fail(kind, "state outside a checkpoint"));
                };
                let s: State = msg::decode(kind, body).inspect_err(|_| self.discard())?;
                if s.ckpt != begin.ckpt || self.state_seen {
                    return Err(self.fail(kind, "state of another checkpoint, or twice"));
                }
                if s.data.len() > MAX_STATE_LEN {
                    return Err(self.fail(kind, "state record too large"));
                }
                self.state.extend_from_slice(s.data);
                self.state_seen = true;
                self.account(body.len() as u64, body_hash);
                Ok(None)
            }
            Kind::Disk => {
                let Some(begin) = self.begin else {
                    return Err(self.fail(kind, "disk write outside a checkpoint"));
                };
                let w: DiskWrite = msg::decode(kind, body).inspect_err(|_| self.discard())?;
                let Some(d) = self.disk.as_mut() else {
                    return Err(self.fail(kind, "a disk write, but this replica has no disk"));
                };
                let cost = w.data.len() + PIECE_OVERHEAD;
                if w.ckpt != begin.ckpt || w.data.len() > DISK_PIECE {
                    return Err(self.fail(kind, "disk write of another checkpoint, or too large"));
                }
                if w.offset
                    .checked_add(w.data.len() as u64)
                    .is_none_or(|e| e > d.size)
                {
                    return Err(self.fail(kind, "disk write beyond the image"));
                }
                if d.cost + cost > d.limit {
                    return Err(self.fail(
                        kind,
                        "the checkpoint's disk writes exceed this standby's disk.journal_max",
                    ));
                }
                d.pieces.push((w.offset, d.data.len(), w.data.len()));
                d.data.extend_from_slice(w.data);
                d.cost += cost;
                self.account(body.len() as u64, body_hash);
                Ok(None)
            }
            Kind::End => {
                let Some(begin) = self.begin else {
                    return Err(self.fail(kind, "end outside a checkpoint"));
                };
                let e: End = msg::decode(kind, body).inspect_err(|_| self.discard())?;
                if e.ckpt != begin.ckpt {
                    return Err(self.fail(kind, "end of another checkpoint"));
                }
                if e.pages != begin.pages || self.pfns.len() as u64 != begin.pages {
                    return Err(self.fail(kind, "page count does not match"));
                }
                if !self.state_seen {
                    return Err(self.fail(kind, "checkpoint without state record"));
                }
                if e.total_len != self.total {
                    return Err(self.fail(kind, "checkpoint length does not match"));
                }
                if e.crc != self.crc.clone().finalize() {
                    return Err(self.fail(kind, "checkpoint CRC does not match"));
                }
                let (writes, bytes, synced) = match self.disk.as_ref() {
                    Some(d) => (
                        d.pieces.len() as u64,
                        d.data.len() as u64,
                        if begin.full { d.synced } else { 0 },
                    ),
                    None => (0, 0, 0),
                };
                if (e.disk_writes, e.disk_bytes, e.disk_synced) != (writes, bytes, synced) {
                    return Err(self.fail(kind, "disk writes do not match the end record"));
                }
                let c = Complete {
                    ckpt: begin.ckpt,
                    full: begin.full,
                    pages: begin.pages,
                    bytes: self.total,
                };
                self.complete = Some(c);
                Ok(Some(c))
            }
            _ => {
                self.discard();
                Err(FrameError::Unexpected {
                    kind,
                    state: "receiving checkpoints",
                })
            }
        }
    }

    fn account(&mut self, len: u64, body_hash: &crc32fast::Hasher) {
        self.crc.combine(body_hash);
        self.total += len;
    }

    /// Apply the completed checkpoint to the replica. After this returns `Ok(n)`, the replica
    /// is at checkpoint n and the caller sends ack(n).
    pub fn apply(&mut self, replica: &mut dyn Replica) -> Result<u64, CheckpointError> {
        let Some(c) = self.complete else {
            return Err(CheckpointError::Frame(FrameError::Unexpected {
                kind: Kind::End,
                state: "nothing complete to apply",
            }));
        };
        // The disk first: if it fails, memory stays at N-1 and the replica is not usable
        // (its disk is neither), never half of each.
        if let Some(d) = self.disk.as_mut() {
            let res = match replica.disk() {
                Some(disk) => disk.apply(
                    c.ckpt,
                    d.pieces.iter().map(|&(o, s, l)| (o, &d.data[s..s + l])),
                ),
                None => Err(DiskError::Invalid(
                    "a checkpoint with a disk part, but the replica has no disk".into(),
                )),
            };
            if c.full {
                d.plan = None;
            }
            if let Err(e) = res {
                self.discard();
                self.applied = None;
                self.session_base = None;
                return Err(CheckpointError::Disk(e));
            }
        }
        let res = replica
            .write_pages(&self.pfns, &self.data)
            .and_then(|_| replica.load_state(&self.state));
        self.discard();
        res?;
        self.applied = Some(c.ckpt);
        self.session_base = Some(c.ckpt);
        Ok(c.ckpt)
    }
}
