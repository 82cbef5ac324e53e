//! Sealing the staged checkpoint: its pages encoded where the rule says so, every frame's CRC
//! and MAC, then the `End` record. In one go ([`Staging::seal`]) or a part at a time
//! ([`Staging::begin_seal`], then [`Staging::seal_some`] until it says the seal is complete), so
//! that the daemon writes the frames sealed so far while it seals the rest: the link does not
//! wait for the whole checkpoint to be sealed.
//!
//! Both ways give the same bytes: frames are sealed in the order they were staged, with the
//! session's sequence numbers in that order, the page cache updated frame by frame, and the
//! `End` record (page count, disk counts, total length and the CRC of the bodies as captured)
//! appended after the last one. Each sealed frame is written where the previous one ended; an
//! encoded frame is shorter than the staged one, so a frame is never written past where it was
//! read, and the bytes before the seal's write position ([`Staging::bytes`]) never change
//! again: a caller may hand them out while the seal goes on.

use super::*;

/// A seal under way: staged frames before `read` are sealed into the bytes before `written`.
#[derive(Debug)]
pub(super) struct Sealing {
    /// The next staged frame to seal.
    read: usize,
    /// The end of the sealed bytes (never past `read`).
    written: usize,
    /// The checkpoint's CRC, over the bodies as captured (pages in their plain form).
    crc: crc32fast::Hasher,
    /// Body bytes as captured.
    total: u64,
    /// What the encoding rule chose for this checkpoint.
    choice: Choice,
    /// The figures so far.
    stats: SealStats,
    /// When sealing began ([`Staging::sealing_began`]).
    pub(super) began: Nanos,
}

impl Staging {
    /// Encode (when the rule says so), seal every staged frame for `session` and append the
    /// `End` record; returns the bytes to send ([`Staging::bytes`]). Done after the guest has
    /// resumed: this is the encoding, CRC and MAC pass over the checkpoint.
    pub fn seal(&mut self, session: &mut Session) -> Result<usize, CheckpointError> {
        self.begin_seal()?;
        while !self.seal_some(session, usize::MAX)? {}
        Ok(self.ready)
    }

    /// Start sealing the staged checkpoint (its disk part staged): the encoding rule chooses
    /// its codec now. Nothing is sealed yet: [`Staging::seal_some`] does it.
    pub fn begin_seal(&mut self) -> Result<(), CheckpointError> {
        if self.disk_due {
            return Err(disk_refusal(
                "sealing a checkpoint whose disk part is not staged (put_disk)",
            ));
        }
        if !self.unsealed {
            return Err(CheckpointError::Frame(FrameError::Unexpected {
                kind: Kind::End,
                state: "no staged checkpoint to seal",
            }));
        }
        self.unsealed = false;
        let page_bytes = (self.pfns.len() * PAGE_SIZE) as u64;
        let choice = self.policy.choose(page_bytes);
        self.ready = 0;
        self.sealing = Some(Sealing {
            read: 0,
            written: 0,
            crc: crc32fast::Hasher::new(),
            total: 0,
            choice,
            stats: SealStats {
                ckpt: self.ckpt,
                encoded: choice.codec == Codec::Encoded,
                page_bytes,
                ..SealStats::default()
            },
            began: Nanos(0),
        });
        Ok(())
    }

    /// A seal is under way: [`Staging::seal_some`] has more to do.
    pub fn is_sealing(&self) -> bool {
        self.sealing.is_some()
    }

    /// Seal staged frames in order, at least one and until at least `budget` bytes of them are
    /// sealed, for `session` (the one every frame of this checkpoint is sealed for); after the
    /// last, append the `End` record. True once the seal is complete (also when none is under
    /// way). The sealed bytes grow at the end of [`Staging::bytes`]. An error abandons the seal
    /// (the session cannot go on: its sequence numbers were spent).
    pub fn seal_some(
        &mut self,
        session: &mut Session,
        budget: usize,
    ) -> Result<bool, CheckpointError> {
        let Some(mut s) = self.sealing.take() else {
            return Ok(true);
        };
        let encode = s.choice.codec == Codec::Encoded;
        let mut done = 0usize;
        while s.read < self.len && done < budget {
            let r = s.read;
            let h = Header::parse(&self.buf[r..self.len], frame::MAX_BODY_LEN)?;
            let end = r + h.frame_len();
            if end > self.len {
                return Err(CheckpointError::Frame(FrameError::Truncated {
                    have: self.len - r,
                    need: h.frame_len(),
                }));
            }
            done = done.saturating_add(h.frame_len());
            let body = &self.buf[r + HEADER_LEN..end];
            // The checkpoint's CRC covers bodies as captured: pages in their plain form.
            let plain_hash = frame::body_crc(body);
            s.crc.combine(&plain_hash);
            s.total += h.body_len as u64;
            s.read = end;
            let w = s.written;
            if h.kind == Kind::Pages {
                if encode {
                    if let Some((n, lz4)) =
                        self.enc
                            .encode(body, &mut self.cache, &mut s.stats.records)?
                    {
                        s.stats.frames_encoded += 1;
                        s.stats.frames_lz4 += u64::from(lz4);
                        Header {
                            kind: Kind::Pages,
                            body_len: n as u32,
                            seq: 0,
                        }
                        .emit(&mut self.buf[w..]);
                        let b = self.enc.body(n);
                        self.buf[w + HEADER_LEN..w + HEADER_LEN + n].copy_from_slice(b);
                        session
                            .seal_with(&mut self.buf[w..w + HEADER_LEN + n], &frame::body_crc(b));
                        s.written = w + HEADER_LEN + n;
                        continue;
                    }
                } else {
                    let p: Pages = msg::decode(Kind::Pages, body)?;
                    s.stats.records[1] += p.pfns.len() as u64;
                    if !self.cache.is_empty() {
                        // Sent without the cache: what it holds of these pages is stale.
                        p.pfns.iter().for_each(|&pfn| self.cache.forget(pfn));
                    }
                }
            }
            if w != r {
                self.buf.copy_within(r..end, w);
            }
            session.seal_with(&mut self.buf[w..w + h.frame_len()], &plain_hash);
            s.written = w + h.frame_len();
        }
        if s.read < self.len {
            self.ready = s.written;
            self.sealing = Some(s);
            return Ok(false);
        }
        self.finish_seal(session, s)?;
        Ok(true)
    }

    /// Every staged frame is sealed: append the `End` record, and count the checkpoint.
    fn finish_seal(&mut self, session: &mut Session, s: Sealing) -> Result<(), CheckpointError> {
        let end = End {
            ckpt: self.ckpt,
            pages: self.pfns.len() as u64,
            total_len: s.total,
            crc: s.crc.finalize(),
            disk_writes: self.disk_writes,
            disk_bytes: self.disk_bytes,
            disk_synced: self.disk_synced,
        };
        let start = s.written;
        let n = session
            .write(Kind::End, &end, &mut self.buf[start..])
            .map_err(|_| CheckpointError::StagingFull {
                need: start + SMALL_FRAME,
                have: self.buf.len(),
            })?;
        self.len = start + n;
        self.ready = self.len;
        let mut st = s.stats;
        st.wire_bytes = self.len as u64;
        self.sealed = st;
        self.totals[0] += u64::from(st.encoded);
        self.totals[1] += st.page_bytes;
        self.totals[2] += st.wire_bytes;
        if self.pending.len() == PENDING_MAX {
            self.pending.pop_front();
        }
        self.pending
            .push_back((self.ckpt, s.choice, st.page_bytes, st.wire_bytes, s.began));
        Ok(())
    }
}
