//! The disk's part of a checkpoint (issue 14): the primary stages the epoch's journal (or the
//! end of a resynchronisation) as `Disk` frames and streams resynchronisation copies as
//! `DiskSync` frames; the receiver stages `Disk` frames with the checkpoint and writes `DiskSync`
//! copies to the replica's disk as they come. See [`crate::disk`] for the rules.

use super::*;

impl Staging {
    /// Stage the checkpoint's disk part after its capture, once the guest has resumed (before
    /// it runs again): the open epoch's journal as `Disk` frames, in the guest's order, then an
    /// empty journal; for a full synchronisation, the rest of the disk resynchronisation
    /// instead (which must be ready: [`Disk::resync_ready`]). Nothing if the domain has no disk.
    pub fn put_disk(&mut self, dom: &mut dyn CheckpointSource) -> Result<(), CheckpointError> {
        self.disk_writes = 0;
        self.disk_bytes = 0;
        self.disk_synced = 0;
        let Some(disk) = dom.disk() else {
            self.disk_due = false;
            return Ok(());
        };
        if !self.disk_due {
            return Err(disk_refusal(
                "the disk part of a checkpoint that was not captured",
            ));
        }
        if self.full {
            if disk.resync_ckpt() != Some(self.ckpt) || !disk.resync_ready() {
                return Err(disk_refusal(
                    "a full synchronisation whose disk resynchronisation is not planned or not ready",
                ));
            }
            self.disk_synced = disk.resync_frames();
            while let Some((off, len)) = disk.resync_final_next() {
                let d: &Disk = disk;
                self.put_disk_frame(off, len, |dst| d.read(off, dst))?;
            }
            disk.finish_resync();
        } else {
            if !disk.journaling() {
                return Err(disk_refusal(
                    "an incremental checkpoint while the disk's writes are not journaled",
                ));
            }
            for i in 0..disk.journal().pieces() {
                let (off, data) = disk.journal().piece(i);
                self.put_disk_frame(off, data.len(), |dst| {
                    dst.copy_from_slice(data);
                    Ok(())
                })?;
            }
            disk.clear_journal();
        }
        self.disk_due = false;
        Ok(())
    }

    fn put_disk_frame(
        &mut self,
        off: u64,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<(), DiskError>,
    ) -> Result<(), CheckpointError> {
        let start = self.len;
        let need = HEADER_LEN + DISK_HEAD_MAX + len;
        if self.buf.len() - start < need {
            return Err(CheckpointError::StagingFull {
                need: start + need,
                have: self.buf.len(),
            });
        }
        let body = &mut self.buf[start + HEADER_LEN..];
        let n = msg::disk_write_head(self.ckpt, off, len, body);
        fill(&mut body[n..n + len])?;
        Header {
            kind: Kind::Disk,
            body_len: (n + len) as u32,
            seq: 0,
        }
        .emit(&mut self.buf[start..]);
        self.len = start + HEADER_LEN + n + len;
        self.disk_writes += 1;
        self.disk_bytes += len as u64;
        Ok(())
    }

    /// Disk writes and bytes in the staged checkpoint.
    pub fn disk_staged(&self) -> (u64, u64) {
        (self.disk_writes, self.disk_bytes)
    }
}

pub(super) fn disk_refusal(why: &str) -> CheckpointError {
    CheckpointError::Disk(DiskError::Invalid(why.to_string()))
}

/// The primary's disk resynchronisation stream: `DiskSync` frames of the tracks copied while the
/// guest runs ([`Disk::resync_next`]), sealed a buffer at a time; the buffer is allocated once.
#[derive(Debug)]
pub struct ResyncSender {
    buf: Vec<u8>,
    len: usize,
}

impl ResyncSender {
    /// A sender whose buffer holds `bytes` (at least one full frame).
    pub fn new(bytes: usize) -> ResyncSender {
        ResyncSender {
            buf: vec![0u8; bytes.max(HEADER_LEN + DISK_HEAD_MAX + DISK_PIECE)],
            len: 0,
        }
    }

    /// Fill the buffer with sealed frames of the next copies; returns their bytes. 0: nothing
    /// to copy now (the round is over: the resynchronisation is ready for its full
    /// synchronisation, or its next round starts at the next call).
    pub fn fill(&mut self, disk: &mut Disk, sess: &mut Session) -> Result<usize, CheckpointError> {
        self.len = 0;
        let Some(ckpt) = disk.resync_ckpt() else {
            return Ok(0);
        };
        while self.buf.len() - self.len >= HEADER_LEN + DISK_HEAD_MAX + DISK_PIECE {
            let Some((off, len)) = disk.resync_next() else {
                break;
            };
            let start = self.len;
            let body = &mut self.buf[start + HEADER_LEN..];
            let n = msg::disk_write_head(ckpt, off, len, body);
            disk.read(off, &mut body[n..n + len])?;
            Header {
                kind: Kind::DiskSync,
                body_len: (n + len) as u32,
                seq: 0,
            }
            .emit(&mut self.buf[start..]);
            let end = start + HEADER_LEN + n + len;
            let h = frame::body_crc(&self.buf[start + HEADER_LEN..end]);
            sess.seal_with(&mut self.buf[start..end], &h);
            self.len = end;
        }
        Ok(self.len)
    }

    /// The frames of the last [`ResyncSender::fill`].
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// What the receiver stages of a replica's disk.
#[derive(Debug)]
pub(super) struct DiskRx {
    /// Image size.
    pub(super) size: u64,
    /// Most staged cost (data plus frame overhead) a checkpoint may carry: `disk.journal_max`.
    pub(super) limit: usize,
    /// The checkpoint's disk writes, in order: data, and (offset, start, length) per piece.
    pub(super) data: Vec<u8>,
    pub(super) pieces: Vec<(u64, usize, usize)>,
    pub(super) cost: usize,
    /// The session's disk resynchronisation, from its `DiskPlan` to its full synchronisation.
    pub(super) plan: Option<DiskPlan>,
    /// `DiskSync` frames received for it.
    pub(super) synced: u64,
}

impl DiskRx {
    pub(super) fn clear(&mut self) {
        self.data.clear();
        self.pieces.clear();
        self.cost = 0;
    }
}

impl Receiver {
    /// The replica has a disk of `size` bytes whose checkpoints carry at most `journal_max`
    /// bytes of disk frames (allocated now).
    pub fn with_disk(mut self, size: u64, journal_max: usize) -> Receiver {
        self.disk = Some(DiskRx {
            size,
            limit: journal_max,
            data: Vec::with_capacity(journal_max),
            pieces: Vec::with_capacity(journal_max / PIECE_OVERHEAD + 1),
            cost: 0,
            plan: None,
            synced: 0,
        });
        self
    }

    /// The disk resynchronisation under way in this session: its plan and the copies received.
    pub fn disk_plan(&self) -> Option<(&DiskPlan, u64)> {
        let d = self.disk.as_ref()?;
        d.plan.as_ref().map(|p| (p, d.synced))
    }

    /// `DiskPlan` and `DiskSync`: outside any checkpoint, before the full synchronisation.
    pub(super) fn on_disk_frame(
        &mut self,
        kind: Kind,
        body: &[u8],
        disk: Option<&mut Disk>,
    ) -> Result<(), CheckpointError> {
        if self.begin.is_some() || self.complete.is_some() {
            self.discard();
            return Err(FrameError::Unexpected {
                kind,
                state: "staging a checkpoint",
            }
            .into());
        }
        let (Some(rx), Some(disk)) = (self.disk.as_mut(), disk) else {
            return Err(self
                .fail(kind, "a disk frame, but this replica has no disk")
                .into());
        };
        if kind == Kind::DiskPlan {
            let plan: DiskPlan = msg::decode(kind, body)?;
            if rx.plan.is_some() {
                return Err(self.fail(kind, "a second disk plan in one session").into());
            }
            if plan.journal_max > rx.limit as u64 {
                return Err(self
                    .fail(
                        kind,
                        "the primary's disk.journal_max exceeds this standby's",
                    )
                    .into());
            }
            disk.begin_resync(&plan, self.applied.is_some())?;
            rx.plan = Some(plan);
            rx.synced = 0;
            return Ok(());
        }
        let w: DiskWrite = msg::decode(kind, body)?;
        let Some(plan) = rx.plan.as_ref() else {
            return Err(self.fail(kind, "a disk copy without a disk plan").into());
        };
        if w.ckpt != plan.ckpt || w.data.len() > DISK_PIECE {
            return Err(self
                .fail(kind, "a disk copy for another checkpoint, or too large")
                .into());
        }
        disk.resync_write(w.offset, w.data)?;
        rx.synced += 1;
        Ok(())
    }
}
