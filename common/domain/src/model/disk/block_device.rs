//! The model domain's disk as the NBD export sees it.

use super::super::ModelDomain;
use crate::disk::DiskError;

/// The model domain's disk as the NBD export serves it: a write also keeps the block CRC table
/// in the domain's memory up to date ([`ModelDomain::block_write`]).
impl crate::disk::export::BlockDevice for ModelDomain {
    fn size(&self) -> u64 {
        self.disk_ref().map_or(0, |d| d.size())
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        match self.disk_ref() {
            Some(d) => d.read(offset, buf),
            None => Err(DiskError::Invalid("the guest has no disk".into())),
        }
    }
    fn write(&mut self, offset: u64, data: &[u8], fua: bool) -> Result<(), DiskError> {
        self.block_write(offset, data, fua)
    }
    fn start_flush(&mut self) -> Result<u64, DiskError> {
        match self.disk_mut() {
            Some(d) => d.start_flush(),
            None => Err(DiskError::Invalid("the guest has no disk".into())),
        }
    }
    fn flush_done(&self, ticket: u64) -> Option<Result<(), DiskError>> {
        match self.disk_ref() {
            Some(d) => d.flush_done(ticket),
            None => Some(Err(DiskError::Invalid("the guest has no disk".into()))),
        }
    }
    fn can_write(&self, len: usize) -> bool {
        self.disk_ref().is_some_and(|d| d.can_write(len))
    }
    fn open_checkpoint(&self) -> u64 {
        self.disk_ref().map_or(0, |d| d.open_checkpoint())
    }
}
