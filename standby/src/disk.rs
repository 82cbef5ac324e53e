//! The standby's part of disk replication (issue 14), apart from the loop in main.rs, which
//! calls it at a few points: the session's start (the `DiskDirty` frames of a disk that was a
//! primary's), a disk that fails while staging or applying (never acknowledged, the session
//! refused with the reason), activation (the disk's lineage forks, the PUT log is checked
//! against memory), and clean transitions (the track table persisted). The replica's disk is
//! the model domain's [`hsb_domain::disk::Disk`]; the checkpoint receiver stages and applies
//! its writes with the pages.

use std::io;

use hsb_common::frame::{FrameError, Kind, HEADER_LEN};
use hsb_common::msg::{DiskDirty, DIRTY_BYTES};
use hsb_common::time::Nanos;
use hsb_domain::disk::{Disk, DiskError};
use hsb_domain::model::{DiskSettings, ModelDomain};

use crate::{Noise, Standby};

/// Room a connection's output queue needs beyond its usual for this disk's `DiskDirty` frames.
pub fn dirty_bytes(disk: Option<&Disk>) -> usize {
    disk.map_or(0, |d| {
        let bytes = d.geometry().tracks.div_ceil(8) as usize;
        bytes + bytes.div_ceil(DIRTY_BYTES) * (HEADER_LEN + 16)
    })
}

/// Activate the model replica's disk at checkpoint `ckpt`: its lineage forks there (durably,
/// before the replica serves), its workload is the configured one, and its PUT log is checked
/// against its memory. Returns what the check found, for status.
pub fn activate(
    d: &mut ModelDomain,
    ckpt: u64,
    settings: Option<&DiskSettings>,
) -> io::Result<String> {
    let Some(disk) = d.disk_mut() else {
        return Ok("no disk".into());
    };
    disk.activate(ckpt)
        .map_err(|e| io::Error::other(format!("not activated: the replica's disk: {e}")))?;
    if let Some(s) = settings {
        d.set_disk_workload(s.workload).map_err(io::Error::other)?;
    }
    Ok(match d.verify_disk_log() {
        Ok(n) => {
            log::info!(
                "disk: the PUT log agrees with memory at checkpoint {ckpt} ({n} records checked, none of a later checkpoint)"
            );
            format!("PUT log agrees with memory at checkpoint {ckpt} ({n} records)")
        }
        Err(e) => {
            log::error!("disk: the replica's disk and memory disagree at checkpoint {ckpt}: {e}");
            format!("DISAGREE at checkpoint {ckpt}: {e}")
        }
    })
}

/// Persist the disk's track table at a clean transition, saying why.
pub fn persist(disk: &mut Disk, why: &str) {
    match disk.persist_table() {
        Ok(()) => log::info!("{why}: disk track table persisted ({})", disk.describe()),
        Err(e) => log::error!("{why}: cannot persist the disk's track table: {e}"),
    }
}

/// The `digest` command's disk lines: the image's digest (read whole), the digest the replica's
/// memory says its disk has, and whether every block agrees.
pub fn digest_lines(d: &mut ModelDomain) -> String {
    let Some(disk) = d.disk_ref() else {
        return String::new();
    };
    let mut crcs = Vec::new();
    if let Err(e) = disk.image_block_crcs(&mut crcs) {
        return format!("disk_digest error: {e}\n");
    }
    let memory = d
        .disk_digest()
        .map_or("none".into(), |g| format!("{g:08x}"));
    let agree = match d.verify_disk_crcs(&crcs) {
        Ok(()) => "yes".to_string(),
        Err(e) => format!("no: {e}"),
    };
    format!(
        "disk_digest {:08x}\ndisk_memory_digest {memory}\ndisk_agrees_with_memory {agree}\n",
        hsb_domain::disk::digest_of(&crcs)
    )
}

impl Standby {
    /// A session is confirmed on connection `i`: a resynchronisation the last one left is
    /// dropped (its staged copies; copies written into the image stay, marked), and the tracks
    /// this disk wrote as a primary follow as `DiskDirty` frames, as its Hello announced.
    pub(crate) fn disk_session(&mut self, i: usize) {
        if let Some(d) = self.replica.disk() {
            d.abort_resync();
        }
        let Some(c) = self.conns[i].as_mut() else {
            return;
        };
        let (Some(dirty), Some(sess)) = (c.disk_dirty.take(), c.session.as_mut()) else {
            return;
        };
        let total = dirty.len().div_ceil(8) as usize;
        let mut bits = [0u8; DIRTY_BYTES];
        let mut frame = vec![0u8; HEADER_LEN + DIRTY_BYTES + 32];
        let mut at = 0;
        while at < total {
            let n = dirty.bytes(at, &mut bits);
            let msg = DiskDirty {
                first: at as u64 * 8,
                bits: &bits[..n],
            };
            match sess.write(Kind::DiskDirty, &msg, &mut frame) {
                Ok(len) if c.out.push(&frame[..len]) => {}
                _ => {
                    log::error!("disk: cannot queue the dirty tracks for the primary");
                    break;
                }
            }
            at += n;
        }
        log::info!(
            "disk: told the primary of {} tracks this disk wrote as a primary beyond checkpoint {}",
            dirty.count(),
            self.replica.disk_ref().map_or(0, |d| d.meta().base)
        );
        if let Some(c) = self.conns[i].as_mut() {
            let _ = c.out.flush(&mut c.stream);
        }
    }

    /// The replica's disk failed (or refused) while staging or applying checkpoint `ckpt`:
    /// nothing is acknowledged, the replica cannot be activated until a resynchronisation
    /// (its disk is neither the last checkpoint nor this one), and the session is refused with
    /// the reason, so the primary logs it and keeps its output held.
    pub(crate) fn disk_failed(
        &mut self,
        now: Nanos,
        i: usize,
        ckpt: Option<u64>,
        e: &DiskError,
    ) -> Result<(), FrameError> {
        let what = ckpt.map_or("a disk resynchronisation".to_string(), |c| {
            format!("checkpoint {c}")
        });
        let space = if e.is_out_of_space() {
            " (the image is out of space)"
        } else {
            ""
        };
        self.noisy(Noise::DiskFailed, now, || {
            format!("disk: {what} not applied, not acknowledged{space}: {e}")
        });
        self.refuse(now, i, &format!("the standby's disk failed: {e}"))
    }
}
