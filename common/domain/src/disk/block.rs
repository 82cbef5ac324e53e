//! What the NBD export ([`super::export`]) serves: a guest's block device. A disk is one; a
//! replica's disk before its activation is one that refuses writes ([`ReadOnly`]).

use super::{Disk, DiskError};

/// What the export needs of a guest's disk.
pub trait BlockDevice {
    /// Bytes.
    fn size(&self) -> u64;
    /// Read `buf.len()` bytes at `offset`.
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError>;
    /// A guest write (durable before it returns if `fua`: the export passes `false` and
    /// flushes after it without waiting).
    fn write(&mut self, offset: u64, data: &[u8], fua: bool) -> Result<(), DiskError>;
    /// Begin making every write so far durable: a ticket for [`BlockDevice::flush_done`].
    fn start_flush(&mut self) -> Result<u64, DiskError>;
    /// The flush of `ticket`: `None` while it is under way.
    fn flush_done(&self, ticket: u64) -> Option<Result<(), DiskError>>;
    /// Whether a write of `len` bytes can be taken now (the journal has room).
    fn can_write(&self, len: usize) -> bool;
    /// The checkpoint the open epoch's writes belong to.
    fn open_checkpoint(&self) -> u64;
}

impl BlockDevice for Disk {
    fn size(&self) -> u64 {
        Disk::size(self)
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        Disk::read(self, offset, buf)
    }
    fn write(&mut self, offset: u64, data: &[u8], fua: bool) -> Result<(), DiskError> {
        Disk::write(self, offset, data, fua)
    }
    fn start_flush(&mut self) -> Result<u64, DiskError> {
        Disk::start_flush(self)
    }
    fn flush_done(&self, ticket: u64) -> Option<Result<(), DiskError>> {
        Disk::flush_done(self, ticket)
    }
    fn can_write(&self, len: usize) -> bool {
        Disk::can_write(self, len)
    }
    fn open_checkpoint(&self) -> u64 {
        Disk::open_checkpoint(self)
    }
}

/// A replica's disk before its activation: reads are served (the kernel reads a device's
/// partition table when it is attached), writes and flushes refused with `EPERM`. Only
/// checkpoints change a replica's disk.
pub struct ReadOnly<'a>(pub &'a mut Disk);

impl BlockDevice for ReadOnly<'_> {
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        self.0.read(offset, buf)
    }
    fn write(&mut self, _: u64, _: &[u8], _: bool) -> Result<(), DiskError> {
        Err(DiskError::ReadOnly)
    }
    fn start_flush(&mut self) -> Result<u64, DiskError> {
        Ok(0)
    }
    fn flush_done(&self, _: u64) -> Option<Result<(), DiskError>> {
        Some(Ok(()))
    }
    fn can_write(&self, _: usize) -> bool {
        true
    }
    fn open_checkpoint(&self) -> u64 {
        self.0.open_checkpoint()
    }
}
