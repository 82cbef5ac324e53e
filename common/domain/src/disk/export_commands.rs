//! The export's commands carried out against the device: reads, writes piece by piece (and
//! their waits), replies.

use super::nbd;
use super::{errno, no_disk, rate_limited, BlockDevice, DiskError, Flushing, NbdExport, PIECE};

impl NbdExport {
    pub(super) fn drain(&mut self, used: usize) {
        if let Some(c) = self.conn.as_mut() {
            c.input.drain(..used);
        }
    }

    /// A command's simple reply.
    pub(super) fn answer(&mut self, cookie: u64, r: Result<(), DiskError>) {
        let Some(c) = self.conn.as_mut() else { return };
        let error = match r {
            Ok(()) => 0,
            Err(e) => {
                self.stats.errors += 1;
                if rate_limited(self.stats.errors) {
                    log::error!("disk: NBD export: a command failed: {e}");
                }
                errno(&e)
            }
        };
        nbd::simple_reply(&mut c.out, cookie, error);
    }

    pub(super) fn read<'d>(
        &mut self,
        dev: Option<&(dyn BlockDevice + 'd)>,
        cookie: u64,
        offset: u64,
        len: usize,
    ) {
        let Some(c) = self.conn.as_mut() else { return };
        self.stats.reads += 1;
        let at = c.out.len();
        nbd::simple_reply(&mut c.out, cookie, 0);
        c.out.resize(at + nbd::REPLY_LEN + len, 0);
        let r = match dev {
            Some(d) => d.read(offset, &mut c.out[at + nbd::REPLY_LEN..]),
            None => Err(no_disk()),
        };
        if let Err(e) = r {
            c.out.truncate(at);
            self.answer(cookie, Err(e));
        }
    }

    /// The pending write's next pieces; false when it must wait.
    pub(super) fn carry_on<'d>(&mut self, dev: Option<&mut (dyn BlockDevice + 'd)>) -> bool {
        let Some(c) = self.conn.as_mut() else {
            return false;
        };
        let Some(p) = c.pending.as_mut() else {
            return true;
        };
        let Some(dev) = dev else {
            let (cookie, used) = (p.cookie, p.used);
            c.pending = None;
            self.answer(cookie, Err(no_disk()));
            self.drain(used);
            return true;
        };
        let mut result = Ok(());
        while p.done < p.len || p.len == 0 {
            let n = (p.len - p.done).min(PIECE);
            let data = if p.zeroes {
                &self.zeroes[..n]
            } else {
                let at = nbd::REQUEST_LEN + p.done;
                &c.input[at..at + n]
            };
            match dev.write(p.offset + p.done as u64, data, false) {
                Ok(()) => p.done += n,
                // The activity log's record is being synced: its completion wakes the loop.
                Err(DiskError::Syncing) => return false,
                Err(e) if e.is_wait() => return self.wait(),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
            if p.len == 0 {
                break;
            }
        }
        if self.waiting {
            self.waiting = false;
            log::debug!("disk: NBD export: the waiting write goes on");
        }
        let (cookie, used, fua, len) = (p.cookie, p.used, p.fua, p.len);
        c.pending = None;
        if result.is_ok() {
            self.stats.writes += 1;
            self.stats.write_bytes += len as u64;
            self.last_write_ckpt = Some(dev.open_checkpoint());
            if fua {
                match dev.start_flush() {
                    Ok(ticket) => {
                        c.flushing = Some(Flushing {
                            cookie,
                            used,
                            ticket,
                        });
                        return true;
                    }
                    Err(e) => result = Err(e),
                }
            }
        }
        self.answer(cookie, result);
        self.drain(used);
        true
    }

    fn wait(&mut self) -> bool {
        if !self.waiting {
            self.waiting = true;
            self.stats.waits += 1;
            if rate_limited(self.stats.waits) {
                log::info!(
                    "disk: NBD export: a write waits for the next checkpoint to take the epoch's disk journal; no requests are read meanwhile ({} waits so far)",
                    self.stats.waits
                );
            }
        }
        false
    }
}
