//! `fdatasync` without blocking a single-threaded loop: an io_uring ring that only syncs files
//! (`IORING_OP_FSYNC` with `IORING_FSYNC_DATASYNC`). The kernel carries each sync out in its own
//! worker; the ring's descriptor becomes readable when one completes, so a mio loop registers
//! it ([`SyncRing::fd`]) and reaps the results ([`SyncRing::reap`]) when it wakes.
//!
//! A sync refers to its file by descriptor number, which the kernel may resolve only when its
//! worker starts, after the call that submitted it returned. So the ring keeps its own
//! duplicate of each descriptor until the sync completes: the caller may close its file at any
//! time, and a number reused meanwhile is never synced by mistake. Dropping the ring waits for
//! the syncs in flight.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use io_uring::{opcode, types, IoUring};

/// Syncs in flight at most (a daemon has an image and its metadata file: a few suffice).
pub const MAX_IN_FLIGHT: usize = 8;

/// A ring of `fdatasync`s. See the module documentation.
pub struct SyncRing {
    ring: IoUring,
    /// Each sync in flight: its tag and the ring's duplicate of its descriptor.
    flight: Vec<(u64, OwnedFd)>,
    /// An entry is queued that the kernel has not taken yet.
    unsubmitted: bool,
}

impl std::fmt::Debug for SyncRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncRing")
            .field("fd", &self.ring.as_raw_fd())
            .field("in_flight", &self.flight.len())
            .finish()
    }
}

impl SyncRing {
    /// A ring (io_uring, Linux 5.1; refused where io_uring is disabled, e.g. by
    /// `kernel.io_uring_disabled` or a seccomp filter).
    pub fn new() -> io::Result<SyncRing> {
        let ring = IoUring::new(MAX_IN_FLIGHT as u32)?;
        Ok(SyncRing {
            ring,
            flight: Vec::with_capacity(MAX_IN_FLIGHT),
            unsubmitted: false,
        })
    }

    /// The descriptor to poll: readable when a sync has completed.
    pub fn fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }

    /// Syncs in flight.
    pub fn in_flight(&self) -> usize {
        self.flight.len()
    }

    /// Start an `fdatasync` of `file`; its result comes back from [`SyncRing::reap`] with `tag`.
    /// Refused (`WouldBlock`) when [`MAX_IN_FLIGHT`] are in flight.
    pub fn datasync(&mut self, file: &File, tag: u64) -> io::Result<()> {
        if self.flight.len() >= MAX_IN_FLIGHT {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "too many syncs in flight",
            ));
        }
        let dup = OwnedFd::from(file.try_clone()?);
        let entry = opcode::Fsync::new(types::Fd(dup.as_raw_fd()))
            .flags(types::FsyncFlags::DATASYNC)
            .build()
            .user_data(tag);
        // SAFETY: an entry must keep what it points to alive until it completes. An fsync
        // points to no memory; its only reference is the descriptor, and the ring keeps that
        // descriptor (`dup`) open in `flight` until the entry's completion is reaped (or, on
        // drop, waited for). The queue has room: at most MAX_IN_FLIGHT are in flight and the
        // ring has that many entries, each submitted at once below.
        let pushed = unsafe { self.ring.submission().push(&entry) };
        if pushed.is_err() {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "the submission queue is full",
            ));
        }
        self.flight.push((tag, dup));
        // Queued: if the kernel does not take it now (a transient EAGAIN or EBUSY), the next
        // reap or wait submits it again. Either way its result comes back with its tag.
        self.unsubmitted = self.ring.submit().is_err();
        Ok(())
    }

    /// Completed syncs, each with its tag and its result, to `done`. Returns how many.
    pub fn reap(&mut self, done: &mut dyn FnMut(u64, io::Result<()>)) -> usize {
        if self.unsubmitted {
            self.unsubmitted = self.ring.submit().is_err();
        }
        let mut n = 0;
        let mut results = Vec::with_capacity(MAX_IN_FLIGHT);
        for cqe in self.ring.completion() {
            results.push((cqe.user_data(), cqe.result()));
        }
        for (tag, res) in results {
            if let Some(i) = self.flight.iter().position(|(t, _)| *t == tag) {
                self.flight.swap_remove(i);
            }
            n += 1;
            done(
                tag,
                if res < 0 {
                    Err(io::Error::from_raw_os_error(-res))
                } else {
                    Ok(())
                },
            );
        }
        n
    }

    /// Block until at least one sync in flight completes (none in flight: returns at once).
    pub fn wait(&mut self) -> io::Result<()> {
        if self.flight.is_empty() {
            return Ok(());
        }
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {
                    self.unsubmitted = false;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for SyncRing {
    /// The syncs in flight are waited for, so no descriptor the ring kept closes under one.
    fn drop(&mut self) {
        while !self.flight.is_empty() {
            if self.wait().is_err() {
                break;
            }
            self.reap(&mut |_, _| {});
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn ring() -> Option<SyncRing> {
        match SyncRing::new() {
            Ok(r) => Some(r),
            Err(e) if std::env::var_os("CI").is_none() => {
                eprintln!("SKIPPED: io_uring unavailable here: {e}");
                None
            }
            Err(e) => panic!("io_uring unavailable under CI: {e}"),
        }
    }

    #[test]
    fn a_sync_completes_with_its_tag_and_the_file_may_close_first() {
        let Some(mut r) = ring() else { return };
        let dir = std::env::temp_dir().join(format!("hsb-uring-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        let mut f = File::create(&path).unwrap();
        f.write_all(&[7u8; 65536]).unwrap();
        r.datasync(&f, 41).unwrap();
        r.datasync(&f, 42).unwrap();
        drop(f);
        let mut got = Vec::new();
        while got.len() < 2 {
            r.wait().unwrap();
            r.reap(&mut |t, res| got.push((t, res.is_ok())));
        }
        got.sort();
        assert_eq!(got, vec![(41, true), (42, true)]);
        assert_eq!(r.in_flight(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_more_than_the_ring_holds_is_in_flight() {
        let Some(mut r) = ring() else { return };
        let f = File::open("/proc/self/exe").unwrap();
        let mut refused = 0;
        for t in 0..(MAX_IN_FLIGHT as u64 * 2) {
            if r.datasync(&f, t).is_err() {
                refused += 1;
            }
            r.reap(&mut |_, _| {});
        }
        assert!(r.in_flight() <= MAX_IN_FLIGHT);
        let _ = refused;
        drop(r);
    }
}

#[cfg(test)]
mod poll_tests {
    use super::*;
    use mio::unix::SourceFd;
    use mio::{Events, Interest, Poll, Token};
    use std::time::Duration;

    #[test]
    fn every_completion_wakes_a_mio_loop() {
        let Ok(mut r) = SyncRing::new() else { return };
        let mut poll = Poll::new().unwrap();
        let fd = r.fd();
        poll.registry()
            .register(&mut SourceFd(&fd), Token(4), Interest::READABLE)
            .unwrap();
        let f = File::open("/proc/self/exe").unwrap();
        let mut events = Events::with_capacity(8);
        for round in 0..5 {
            r.datasync(&f, round).unwrap();
            poll.poll(&mut events, Some(Duration::from_secs(2)))
                .unwrap();
            assert!(!events.is_empty(), "round {round}: no wake-up");
            let mut n = 0;
            while n == 0 {
                n = r.reap(&mut |_, _| {});
            }
        }
    }
}
