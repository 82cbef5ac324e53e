//! What can go wrong with a disk, and what merely has to wait.

use std::fmt;
use std::path::PathBuf;

/// A disk failure or refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskError {
    /// An I/O error on the image or a file beside it.
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The error's kind.
        kind: std::io::ErrorKind,
        /// The error.
        detail: String,
    },
    /// Outside the image.
    Bounds {
        /// Offset.
        offset: u64,
        /// Length.
        len: u64,
        /// Image size.
        size: u64,
    },
    /// The open epoch's journal cannot take this write now: end the epoch or wait.
    JournalFull {
        /// Journal bytes the write needs.
        need: usize,
        /// Journal bytes left.
        room: usize,
    },
    /// Larger than the journal can ever hold.
    TooLarge {
        /// Write length.
        len: usize,
        /// Journal limit.
        max: usize,
    },
    /// A resynchronisation is catching up with the guest: writes wait.
    Throttled,
    /// The activity log's record is being synced: a write to a new extent waits for it.
    Syncing,
    /// A replica's disk before its activation takes no guest writes.
    ReadOnly,
    /// A configuration, metadata or protocol problem.
    Invalid(String),
}

impl DiskError {
    /// Whether the write may succeed later without anything being fixed (it waits).
    pub fn is_wait(&self) -> bool {
        matches!(
            self,
            DiskError::JournalFull { .. } | DiskError::Throttled | DiskError::Syncing
        )
    }

    /// Whether the image (or its file system) is out of space.
    pub fn is_out_of_space(&self) -> bool {
        match self {
            DiskError::Io { kind, detail, .. } => {
                *kind == std::io::ErrorKind::StorageFull
                    || *kind == std::io::ErrorKind::FileTooLarge
                    || detail.contains("No space left")
                    || detail.contains("File too large")
            }
            _ => false,
        }
    }
}

impl fmt::Display for DiskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiskError::Io {
                op, path, detail, ..
            } => {
                write!(f, "disk image {}: {op}: {detail}", path.display())?;
                if self.is_out_of_space() {
                    write!(f, " (out of space)")?;
                }
                Ok(())
            }
            DiskError::Bounds { offset, len, size } => write!(
                f,
                "disk write of {len} bytes at {offset} is beyond the image's {size} bytes"
            ),
            DiskError::JournalFull { need, room } => write!(
                f,
                "the epoch's disk journal is full ({need} bytes needed, {room} left)"
            ),
            DiskError::TooLarge { len, max } => write!(
                f,
                "a disk write of {len} bytes cannot fit a checkpoint (disk.journal_max is {max})"
            ),
            DiskError::Throttled => {
                write!(f, "disk writes wait for the resynchronisation to converge")
            }
            DiskError::Syncing => {
                f.write_str("disk writes to a new extent wait for the activity log's sync")
            }
            DiskError::ReadOnly => {
                f.write_str("the replica is not activated: only checkpoints write its disk")
            }
            DiskError::Invalid(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for DiskError {}
