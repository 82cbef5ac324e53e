//! The image file: positioned reads and writes, durability, and its digest.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::tracks::BLOCK;
use super::DiskError;

/// A disk image: a regular file of a fixed size.
#[derive(Debug)]
pub struct Image {
    file: File,
    path: PathBuf,
    size: u64,
}

pub(crate) fn io_err(op: &'static str, path: &Path, e: io::Error) -> DiskError {
    DiskError::Io {
        op,
        path: path.to_path_buf(),
        kind: e.kind(),
        detail: e.to_string(),
    }
}

impl Image {
    /// Open the image at `path`, which must be `size` bytes, or create it (sparse, all
    /// zeros). Returns whether it was created.
    pub fn open(path: &Path, size: u64) -> Result<(Image, bool), DiskError> {
        match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => {
                let len = file.metadata().map_err(|e| io_err("stat", path, e))?.len();
                if len != size {
                    return Err(DiskError::Invalid(format!(
                        "{}: the image is {len} bytes, the configuration says {size} (model.disk_size must match the image)",
                        path.display()
                    )));
                }
                Ok((
                    Image {
                        file,
                        path: path.to_path_buf(),
                        size,
                    },
                    false,
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(path)
                    .map_err(|e| io_err("create", path, e))?;
                file.set_len(size).map_err(|e| io_err("size", path, e))?;
                file.sync_all().map_err(|e| io_err("sync", path, e))?;
                if let Some(dir) = path.parent() {
                    if let Ok(d) = File::open(if dir.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        dir
                    }) {
                        let _ = d.sync_all();
                    }
                }
                Ok((
                    Image {
                        file,
                        path: path.to_path_buf(),
                        size,
                    },
                    true,
                ))
            }
            Err(e) => Err(io_err("open", path, e)),
        }
    }

    /// Open an existing image read-only (its digest, or a test of a failing image).
    pub fn open_read_only(path: &Path) -> Result<Image, DiskError> {
        let file = File::open(path).map_err(|e| io_err("open", path, e))?;
        let size = file.metadata().map_err(|e| io_err("stat", path, e))?.len();
        Ok(Image {
            file,
            path: path.to_path_buf(),
            size,
        })
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Read `buf.len()` bytes at `offset`.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        self.bounds(offset, buf.len())?;
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| io_err("read", &self.path, e))
    }

    /// Write `data` at `offset` (not yet durable: see [`Image::sync`]).
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), DiskError> {
        self.bounds(offset, data.len())?;
        self.file
            .write_all_at(data, offset)
            .map_err(|e| io_err("write", &self.path, e))
    }

    /// The file, for a sync that does not block ([`super::Disk::start_flush`]).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Make every write so far durable (`fdatasync`).
    pub fn sync(&self) -> Result<(), DiskError> {
        self.file
            .sync_data()
            .map_err(|e| io_err("sync", &self.path, e))
    }

    fn bounds(&self, offset: u64, len: usize) -> Result<(), DiskError> {
        if offset
            .checked_add(len as u64)
            .is_some_and(|e| e <= self.size)
        {
            Ok(())
        } else {
            Err(DiskError::Bounds {
                offset,
                len: len as u64,
                size: self.size,
            })
        }
    }

    /// CRC32 of every 4 KiB block, in order, into `out` (cleared first).
    pub fn block_crcs(&self, out: &mut Vec<u32>) -> Result<(), DiskError> {
        out.clear();
        let mut buf = vec![0u8; 1 << 20];
        let mut off = 0;
        while off < self.size {
            let n = (self.size - off).min(buf.len() as u64) as usize;
            self.read_at(off, &mut buf[..n])?;
            out.extend(buf[..n].chunks(BLOCK as usize).map(crc32fast::hash));
            off += n as u64;
        }
        Ok(())
    }

    /// The image's digest: [`digest_of`] its block CRCs (reads the whole image).
    pub fn digest(&self) -> Result<u32, DiskError> {
        let mut crcs = Vec::with_capacity((self.size / BLOCK) as usize);
        self.block_crcs(&mut crcs)?;
        Ok(digest_of(&crcs))
    }
}

/// A disk digest: CRC32 of the blocks' CRC32s (little-endian), so a table of block CRCs kept
/// beside the disk (as the model domain keeps in its memory) gives the same value as the image.
pub fn digest_of(block_crcs: &[u32]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for c in block_crcs {
        h.update(&c.to_le_bytes());
    }
    h.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_write_read_digest_and_size_checks() {
        let dir = std::env::temp_dir().join(format!("hsb-image-t-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("img");
        let _ = std::fs::remove_file(&p);
        let (img, created) = Image::open(&p, 8 * BLOCK).unwrap();
        assert!(created);
        let zero = img.digest().unwrap();
        assert_eq!(zero, digest_of(&[crc32fast::hash(&[0u8; 4096]); 8]));
        img.write_at(4096 + 10, b"hello").unwrap();
        img.sync().unwrap();
        let mut b = [0u8; 5];
        img.read_at(4106, &mut b).unwrap();
        assert_eq!(&b, b"hello");
        assert_ne!(img.digest().unwrap(), zero);
        assert!(matches!(
            img.write_at(8 * BLOCK - 1, b"xy"),
            Err(DiskError::Bounds { .. })
        ));
        drop(img);
        let (_, created) = Image::open(&p, 8 * BLOCK).unwrap();
        assert!(!created);
        let e = Image::open(&p, 16 * BLOCK).unwrap_err();
        assert!(e.to_string().contains("must match"), "{e}");
        let ro = Image::open_read_only(&p).unwrap();
        let e = ro.write_at(0, b"x").unwrap_err();
        assert!(e.to_string().contains("write"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
