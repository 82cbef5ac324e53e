//! The standby's disk I/O (issue 14), for the shell: the disk's part of our `Hello` and the
//! `DiskDirty` frames that follow a session's confirmation (the tracks this disk wrote as a
//! primary), a disk failure turned into the node's event, the activation's fork and the check
//! of the PUT log against memory, the track table persisted at clean transitions, and the
//! `digest` and `status` lines. What a failure means (no ack, the session refused, the replica
//! unusable) and when the disk forks are the node's decisions (`node_disk.rs`). The replica's
//! disk is the model domain's [`hsb_domain::disk::Disk`]; the checkpoint receiver stages and
//! applies its writes with the pages.

use hsb_common::frame::{Kind, HEADER_LEN};
use hsb_common::msg::{DiskDirty, DiskHello, DIRTY_BYTES};
use hsb_common::time::Nanos;
use hsb_domain::disk::export::ReadOnly;
use hsb_domain::disk::{Bitmap, Disk, DiskConfig, DiskError};
use hsb_domain::model::ModelDomain;
use hsb_standby::node::Event;

use crate::daemon::Daemon;

/// Room a connection's output queue needs beyond its usual for this disk's `DiskDirty` frames.
pub fn dirty_bytes(disk: Option<&Disk>) -> usize {
    disk.map_or(0, |d| {
        let bytes = d.geometry().tracks.div_ceil(8) as usize;
        bytes + bytes.div_ceil(DIRTY_BYTES) * (HEADER_LEN + 16)
    })
}

/// Open the replica's disk image (created sparse if missing): checkpoints' writes are applied
/// to it. `key` names the configuration key in errors.
pub fn open_replica_disk(cfg: &DiskConfig, key: &str) -> std::io::Result<Disk> {
    let disk = Disk::open(cfg).map_err(|e| std::io::Error::other(format!("{key}: {e}")))?;
    log::info!(
        "disk {} ({} MiB): {}",
        cfg.path.display(),
        cfg.size >> 20,
        disk.describe()
    );
    Ok(disk)
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

impl Daemon {
    /// Our `Hello`'s disk part, and the tracks this disk wrote as a primary (sent as
    /// `DiskDirty` frames once the session is confirmed, as the `Hello` announces).
    pub(crate) fn disk_hello(&self) -> (DiskHello, Option<Bitmap>) {
        match self.replica.disk_ref() {
            Some(d) => {
                let r = d.report();
                (r.hello(d.size()), r.dirty)
            }
            None => (DiskHello::default(), None),
        }
    }

    /// The session on slot `i` is the live one: a resynchronisation the last one left is
    /// dropped (its staged copies; copies written into the image stay, marked), and the tracks
    /// this disk wrote as a primary follow as `DiskDirty` frames.
    pub(crate) fn disk_session(&mut self, i: usize, dirty: Option<Bitmap>) {
        if let Some(d) = self.replica.disk() {
            d.abort_resync();
        }
        let Some(dirty) = dirty else {
            return;
        };
        let base = self.replica.disk_ref().map_or(0, |d| d.meta().base);
        let Some((sess, out)) = self.wires[i].as_mut().and_then(|w| w.session_out()) else {
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
                Ok(len) if out.push(&frame[..len]) => {}
                _ => {
                    log::error!("disk: cannot queue the dirty tracks for the primary");
                    break;
                }
            }
            at += n;
        }
        log::info!(
            "disk: told the primary of {} tracks this disk wrote as a primary beyond checkpoint {base}",
            dirty.count(),
        );
        if let Some(w) = self.wires[i].as_mut() {
            w.flush();
        }
    }

    /// The replica's disk failed while the live session on slot `i` staged or applied
    /// checkpoint `ckpt` (or a resynchronisation's frame): the node decides what that means.
    pub(crate) fn disk_failed(&mut self, now: Nanos, i: usize, ckpt: Option<u64>, e: &DiskError) {
        self.feed(
            now,
            Event::DiskFailed {
                slot: i,
                ckpt,
                error: e.to_string(),
                out_of_space: e.is_out_of_space(),
            },
        );
    }

    /// The activation's first step: the replica's disk forks at `ckpt` (durably, before the
    /// host state says primary) and gets the configured workload.
    pub(crate) fn fork_disk(&mut self, ckpt: u64) -> Event {
        let res = match self.replica.disk() {
            Some(disk) => disk
                .activate(ckpt)
                .map_err(|e| format!("the replica's disk: {e}")),
            None => Ok(()),
        };
        let workload = self.s.disk.as_ref().map(|s| s.workload);
        let res = res.and_then(|()| match (self.replica.model(), workload) {
            (Some(d), Some(w)) => d.set_disk_workload(w),
            _ => Ok(()),
        });
        Event::DiskForked { error: res.err() }
    }

    /// The activated replica: check its PUT log against its memory (for status).
    pub(crate) fn verify_disk(&mut self, ckpt: u64) {
        let Some(d) = self.replica.model() else {
            return;
        };
        if d.disk_ref().is_none() {
            return;
        }
        self.disk_verified = match d.verify_disk_log() {
            Ok(n) => {
                log::info!(
                    "disk: the PUT log agrees with memory at checkpoint {ckpt} ({n} records checked, none of a later checkpoint)"
                );
                format!("PUT log agrees with memory at checkpoint {ckpt} ({n} records)")
            }
            Err(e) => {
                log::error!(
                    "disk: the replica's disk and memory disagree at checkpoint {ckpt}: {e}"
                );
                format!("DISAGREE at checkpoint {ckpt}: {e}")
            }
        };
    }

    /// Persist the replica disk's track table (a stop, a hand-over).
    pub(crate) fn persist_disk(&mut self, why: &str) {
        if let Some(d) = self.replica.disk() {
            persist(d, why);
        }
    }

    /// The NBD export's turn (after the disk's completed syncs are taken in, which wakes the
    /// loop at `DISK_SYNC`): the replica's disk, reads only until the replica is activated
    /// (only checkpoints write it until then); nothing while the activated copy is fenced.
    pub(crate) fn nbd_turn(&mut self) {
        if let Some(d) = self.replica.disk() {
            let _ = d.poll_syncs();
        }
        let Some(n) = self.nbd.as_mut() else { return };
        let active = self.node.activated().is_some();
        let fenced = active && !self.node.may_serve(self.clock.now());
        let registry = self.poll.registry();
        match self.replica.disk() {
            Some(d) if active => n.pump(registry, Some(d), fenced),
            Some(d) => n.pump(registry, Some(&mut ReadOnly(d)), false),
            None => n.pump(registry, None, false),
        }
    }

    /// The disk's status lines.
    pub(crate) fn disk_status(&self, kv: &mut dyn FnMut(&str, String)) {
        let Some(d) = self.replica.disk_ref() else {
            return;
        };
        hsb_domain::disk::status(d, kv);
        kv(
            "disk_applied_checkpoint",
            d.applied().map_or("none".into(), |a| a.to_string()),
        );
        kv("disk_applied_writes", d.stats().applied_writes.to_string());
        kv("disk_applied_bytes", d.stats().applied_bytes.to_string());
        kv("disk_verified", self.disk_verified.clone());
        if let Some(n) = &self.nbd {
            n.status(kv);
        }
    }
}
