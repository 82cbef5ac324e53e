//! What the disk's unit tests share: a temporary directory, a primary's disk, the activity
//! log as the metadata file has it.

use super::*;

pub(super) struct Tmp(pub(super) PathBuf);

impl Tmp {
    pub(super) fn new(tag: &str) -> Tmp {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "hsb-disk-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }
    pub(super) fn cfg(&self, name: &str, size: u64) -> DiskConfig {
        DiskConfig {
            path: self.0.join(name),
            size,
            journal_max: 4 << 20,
        }
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(super) const MB16: u64 = 16 << 20;

pub(super) fn primary(c: &DiskConfig, first: u64) -> Disk {
    let mut d = Disk::open(c).unwrap();
    d.start_primary(first).unwrap();
    d
}

/// The activity log's extents and the base, as the metadata file holds them (16 MiB disks).
pub(super) fn on_disk(c: &DiskConfig) -> (Vec<u64>, u64) {
    let (_, f) = MetaFile::open(&meta_path(&c.path), MB16 / 4096).unwrap();
    let m = f.meta.unwrap();
    (
        Bitmap::from_words(m.al, 4).ones().collect::<Vec<_>>(),
        m.base,
    )
}
