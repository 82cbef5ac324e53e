//! Event channels through the Linux `/dev/xen/evtchn` device.
//!
//! This module owns [`Evtchn`]: binding to a guest's port (for example its suspend event
//! channel), notifying it, and collecting pending events without blocking so the daemons can
//! poll the fd in their event loop. Request numbers and structs are those of Linux
//! `include/uapi/xen/evtchn.h`; reads return native-endian `u32` ports, writes of `u32` ports
//! unmask them (`drivers/xen/evtchn.c`).

use crate::abi::{EvtchnBindInterdomain, EvtchnBindUnbound, EvtchnPort};
use crate::error::{Error, XenError};
use crate::ioctl::{
    IOCTL_EVTCHN_BIND_INTERDOMAIN, IOCTL_EVTCHN_BIND_UNBOUND_PORT, IOCTL_EVTCHN_NOTIFY,
    IOCTL_EVTCHN_UNBIND,
};
use crate::sys::{self, errno};
use std::ffi::c_ulong;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

/// The event-channel device.
pub const EVTCHN_PATH: &str = "/dev/xen/evtchn";

/// An open `/dev/xen/evtchn` in non-blocking mode. Ports bound through it are unbound by the
/// kernel when it is closed.
#[derive(Debug)]
pub struct Evtchn {
    file: File,
}

impl Evtchn {
    /// Open `/dev/xen/evtchn` (non-blocking). [`Error::NotXen`] if it does not exist.
    pub fn open() -> Result<Self, Error> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(sys::O_NONBLOCK)
            .open(EVTCHN_PATH)
            .map_err(|e| match e.kind() {
                ErrorKind::NotFound => Error::NotXen { path: EVTCHN_PATH },
                _ => XenError::new(
                    "open /dev/xen/evtchn",
                    e.raw_os_error().unwrap_or(errno::EIO),
                )
                .into(),
            })?;
        Ok(Self { file })
    }

    /// Issue an evtchn ioctl with argument `arg`; returns the (non-negative) result.
    ///
    /// # Safety
    ///
    /// `T` must be the argument struct that `request` expects, so the kernel reads and writes
    /// only within `arg`.
    unsafe fn ioctl<T>(&self, op: &'static str, request: u64, arg: &mut T) -> Result<u32, Error> {
        // SAFETY: `arg` is a live, exclusively borrowed `T` and, per this function's contract,
        // the struct `request` expects; the evtchn ioctls touch no other user memory.
        let rc = unsafe { sys::ioctl(self.file.as_raw_fd(), request as c_ulong, arg as *mut T) };
        if rc < 0 {
            return Err(XenError::last(op).into());
        }
        Ok(rc as u32)
    }

    /// Bind a new local port to `remote_port` of `remote_domid`; returns the local port.
    pub fn bind_interdomain(&self, remote_domid: u16, remote_port: u32) -> Result<u32, Error> {
        let mut arg = EvtchnBindInterdomain {
            remote_domain: u32::from(remote_domid),
            remote_port,
        };
        // SAFETY: `ioctl_evtchn_bind_interdomain` is BIND_INTERDOMAIN's argument struct.
        unsafe {
            self.ioctl(
                "ioctl EVTCHN_BIND_INTERDOMAIN",
                IOCTL_EVTCHN_BIND_INTERDOMAIN,
                &mut arg,
            )
        }
    }

    /// Allocate a new local port that domain `remote_domid` may bind to; returns it.
    pub fn bind_unbound(&self, remote_domid: u16) -> Result<u32, Error> {
        let mut arg = EvtchnBindUnbound {
            remote_domain: u32::from(remote_domid),
        };
        // SAFETY: `ioctl_evtchn_bind_unbound_port` is BIND_UNBOUND_PORT's argument struct.
        unsafe {
            self.ioctl(
                "ioctl EVTCHN_BIND_UNBOUND_PORT",
                IOCTL_EVTCHN_BIND_UNBOUND_PORT,
                &mut arg,
            )
        }
    }

    /// Exercise binding, notify, delivery, unmask and unbind on real Xen without a guest: a
    /// channel from this domain to itself (an unbound port, and an interdomain bind to it),
    /// one event sent on one end and awaited on the other for at most `wait`. Returns the two
    /// ports.
    pub fn loopback_check(&self, wait: std::time::Duration) -> Result<(u32, u32), Error> {
        let a = self.bind_unbound(0)?;
        let b = match self.bind_interdomain(0, a) {
            Ok(b) => b,
            Err(e) => {
                let _ = self.unbind(a);
                return Err(e);
            }
        };
        let result = (|| {
            self.notify(b)?;
            let t = std::time::Instant::now();
            loop {
                match self.pending()? {
                    Some(p) if p == a => return self.unmask(a),
                    Some(p) => self.unmask(p)?,
                    None if t.elapsed() > wait => {
                        return Err(XenError::new("evtchn loopback: no event", errno::EIO).into())
                    }
                    None => std::thread::sleep(std::time::Duration::from_millis(1)),
                }
            }
        })();
        let _ = self.unbind(b);
        let _ = self.unbind(a);
        result.map(|()| (a, b))
    }

    /// Send an event on local `port`.
    pub fn notify(&self, port: u32) -> Result<(), Error> {
        let mut arg = EvtchnPort { port };
        // SAFETY: `ioctl_evtchn_notify` (one u32 port) is NOTIFY's argument struct.
        unsafe { self.ioctl("ioctl EVTCHN_NOTIFY", IOCTL_EVTCHN_NOTIFY, &mut arg) }.map(drop)
    }

    /// Unbind local `port`.
    pub fn unbind(&self, port: u32) -> Result<(), Error> {
        let mut arg = EvtchnPort { port };
        // SAFETY: `ioctl_evtchn_unbind` (one u32 port) is UNBIND's argument struct.
        unsafe { self.ioctl("ioctl EVTCHN_UNBIND", IOCTL_EVTCHN_UNBIND, &mut arg) }.map(drop)
    }

    /// The next port with a pending event, or `None` if there is none right now. A port that
    /// fired stays masked until [`Evtchn::unmask`].
    pub fn pending(&self) -> Result<Option<u32>, Error> {
        let mut buf = [0u8; 4];
        match (&self.file).read(&mut buf) {
            Ok(4) => Ok(Some(u32::from_ne_bytes(buf))),
            Ok(_) => Err(XenError::new("read /dev/xen/evtchn", errno::EIO).into()),
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(XenError::new(
                "read /dev/xen/evtchn",
                e.raw_os_error().unwrap_or(errno::EIO),
            )
            .into()),
        }
    }

    /// Unmask `port` so it can fire again.
    pub fn unmask(&self, port: u32) -> Result<(), Error> {
        match (&self.file).write(&port.to_ne_bytes()) {
            Ok(4) => Ok(()),
            Ok(_) => Err(XenError::new("write /dev/xen/evtchn", errno::EIO).into()),
            Err(e) => Err(XenError::new(
                "write /dev/xen/evtchn",
                e.raw_os_error().unwrap_or(errno::EIO),
            )
            .into()),
        }
    }
}

impl AsRawFd for Evtchn {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_without_xen_is_not_xen() {
        if std::path::Path::new(EVTCHN_PATH).exists() {
            eprintln!("skipping: {EVTCHN_PATH} exists here");
            return;
        }
        let e = Evtchn::open().expect_err("no evtchn device here");
        assert_eq!(e.to_string(), "not a Xen dom0: /dev/xen/evtchn not found");
    }
}
