//! Output commit through Linux's `plug` qdisc, driven over rtnetlink.
//!
//! This module owns [`PlugQdisc`]: a `NETLINK_ROUTE` socket and the `RTM_NEWQDISC` "change"
//! requests that tell a `plug` qdisc to close an epoch's output (`TCQ_PLUG_BUFFER`), release
//! the oldest closed epoch (`TCQ_PLUG_RELEASE_ONE`) or pass everything (`TCQ_PLUG_RELEASE_INDEFINITE`),
//! as libxl's `rtnl_qdisc_plug_buffer` / `rtnl_qdisc_plug_release_one` do through libnl. The
//! messages are built by [`plug_request`], a pure function with literal-byte tests; the socket
//! is the only part that needs the kernel.
//!
//! `sch_plug` keeps one outstanding epoch: a second `BUFFER` before the `RELEASE_ONE` of the
//! first overwrites its packet count (`net/sched/sch_plug.c`). Callers must release epoch N
//! before buffering N+1; [`PlugQdisc`] enforces this and refuses the second `BUFFER`.
//!
//! Creating the qdisc (and the ifb + ingress + mirred redirect that puts a vif's guest-to-world
//! traffic in front of it) is a one-time setup the daemon does with `ip` and `tc`.

use crate::error::{Error, XenError};
use crate::sys::{self, errno};
use std::ffi::c_void;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `RTM_NEWQDISC`.
const RTM_NEWQDISC: u16 = 36;
/// `NLMSG_ERROR` (an ack carries error 0).
const NLMSG_ERROR: u16 = 2;
/// `NLM_F_REQUEST`.
const NLM_F_REQUEST: u16 = 0x1;
/// `NLM_F_ACK`.
const NLM_F_ACK: u16 = 0x4;
/// `TCA_KIND`.
const TCA_KIND: u16 = 1;
/// `TCA_OPTIONS`.
const TCA_OPTIONS: u16 = 2;
/// `TC_H_ROOT`: the qdisc at the root of the device.
const TC_H_ROOT: u32 = 0xFFFF_FFFF;
/// `AF_NETLINK`.
const AF_NETLINK: i32 = 16;
/// `SOCK_RAW | SOCK_CLOEXEC`.
const SOCK_RAW_CLOEXEC: i32 = 3 | 0o2000000;
/// `NETLINK_ROUTE`.
const NETLINK_ROUTE: i32 = 0;
/// `MSG_DONTWAIT`.
const MSG_DONTWAIT: i32 = 0x40;

/// Length of a plug request: nlmsghdr (16) + tcmsg (20) + TCA_KIND "plug\0" (4 + 5, padded
/// to 12) + TCA_OPTIONS tc_plug_qopt (4 + 8).
pub const PLUG_REQUEST_LEN: usize = 16 + 20 + 12 + 12;

/// A command for the `plug` qdisc (`TCQ_PLUG_*` in `include/uapi/linux/pkt_sched.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlugAction {
    /// `TCQ_PLUG_BUFFER` (0): close the current epoch; later packets wait for the next release.
    Buffer,
    /// `TCQ_PLUG_RELEASE_ONE` (1): release the packets of the oldest closed epoch.
    ReleaseOne,
    /// `TCQ_PLUG_RELEASE_INDEFINITE` (2): let every packet through until the next `Buffer`.
    ReleaseIndefinite,
    /// `TCQ_PLUG_LIMIT` (3): set the queue limit in bytes.
    Limit(u32),
}

impl PlugAction {
    fn code(self) -> (i32, u32) {
        match self {
            PlugAction::Buffer => (0, 0),
            PlugAction::ReleaseOne => (1, 0),
            PlugAction::ReleaseIndefinite => (2, 0),
            PlugAction::Limit(l) => (3, l),
        }
    }

    /// A short name for logs and errors.
    pub fn name(self) -> &'static str {
        match self {
            PlugAction::Buffer => "plug buffer",
            PlugAction::ReleaseOne => "plug release_one",
            PlugAction::ReleaseIndefinite => "plug release_indefinite",
            PlugAction::Limit(_) => "plug limit",
        }
    }
}

/// The `RTM_NEWQDISC` request that changes the root `plug` qdisc of `ifindex`: no `NLM_F_CREATE`,
/// so the kernel only modifies an existing qdisc whose kind is `plug`.
pub fn plug_request(seq: u32, ifindex: u32, action: PlugAction) -> [u8; PLUG_REQUEST_LEN] {
    let mut m = [0u8; PLUG_REQUEST_LEN];
    // nlmsghdr
    m[0..4].copy_from_slice(&(PLUG_REQUEST_LEN as u32).to_ne_bytes());
    m[4..6].copy_from_slice(&RTM_NEWQDISC.to_ne_bytes());
    m[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    // nlmsg_pid 0: the kernel fills in our port.
    // tcmsg: family AF_UNSPEC, pads, ifindex, handle 0, parent TC_H_ROOT, info 0.
    m[20..24].copy_from_slice(&ifindex.to_ne_bytes());
    m[28..32].copy_from_slice(&TC_H_ROOT.to_ne_bytes());
    // TCA_KIND "plug\0" (len 9, padded to 12)
    m[36..38].copy_from_slice(&9u16.to_ne_bytes());
    m[38..40].copy_from_slice(&TCA_KIND.to_ne_bytes());
    m[40..44].copy_from_slice(b"plug");
    // TCA_OPTIONS struct tc_plug_qopt { int action; __u32 limit; }
    m[48..50].copy_from_slice(&12u16.to_ne_bytes());
    m[50..52].copy_from_slice(&TCA_OPTIONS.to_ne_bytes());
    let (code, limit) = action.code();
    m[52..56].copy_from_slice(&code.to_ne_bytes());
    m[56..60].copy_from_slice(&limit.to_ne_bytes());
    m
}

/// Parse the kernel's answer to request `seq`: `Ok(())` for an ack (error 0), the positive
/// errno for a refusal, `EPROTO`-like `EIO` for anything else.
pub fn parse_ack(seq: u32, reply: &[u8]) -> Result<(), i32> {
    if reply.len() < 16 + 4 {
        return Err(errno::EIO);
    }
    let ty = u16::from_ne_bytes([reply[4], reply[5]]);
    let rseq = u32::from_ne_bytes([reply[8], reply[9], reply[10], reply[11]]);
    if ty != NLMSG_ERROR || rseq != seq {
        return Err(errno::EIO);
    }
    let err = i32::from_ne_bytes([reply[16], reply[17], reply[18], reply[19]]);
    match err {
        0 => Ok(()),
        e if e < 0 => Err(-e),
        _ => Err(errno::EIO),
    }
}

/// The interface index of network device `name` (from sysfs; no ioctl needed).
pub fn ifindex(name: &str) -> Result<u32, Error> {
    const OP: &str = "read /sys/class/net/<dev>/ifindex";
    if name.is_empty() || name.contains('/') || name.len() > 15 {
        return Err(Error::InvalidArgument {
            op: OP,
            what: "not a network device name",
        });
    }
    let text = std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))
        .map_err(|e| XenError::new(OP, e.raw_os_error().unwrap_or(errno::ENODEV)))?;
    text.trim()
        .parse()
        .map_err(|_| Error::Xen(XenError::new(OP, errno::EINVAL)))
}

/// The root `plug` qdisc of one network device, with the one-outstanding-epoch rule enforced.
#[derive(Debug)]
pub struct PlugQdisc {
    sock: OwnedFd,
    ifindex: u32,
    seq: u32,
    /// A `Buffer` was sent and its `ReleaseOne` not yet.
    outstanding: bool,
}

impl PlugQdisc {
    /// Open a rtnetlink socket for the root `plug` qdisc of device `ifindex`.
    pub fn open(ifindex: u32) -> Result<Self, Error> {
        // SAFETY: socket(2) takes no pointers; the result is checked before use.
        let fd = unsafe { sys::socket(AF_NETLINK, SOCK_RAW_CLOEXEC, NETLINK_ROUTE) };
        if fd < 0 {
            return Err(XenError::last("socket(AF_NETLINK, NETLINK_ROUTE)").into());
        }
        // SAFETY: `fd` is a descriptor we just created and own exclusively.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(PlugQdisc {
            sock,
            ifindex,
            seq: 1,
            outstanding: false,
        })
    }

    /// The device's interface index.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Whether an epoch is closed and not yet released.
    pub fn outstanding(&self) -> bool {
        self.outstanding
    }

    /// Send `action` and wait for the kernel's ack.
    pub fn command(&mut self, action: PlugAction) -> Result<(), Error> {
        if action == PlugAction::Buffer && self.outstanding {
            return Err(Error::InvalidArgument {
                op: action.name(),
                what: "an epoch is still buffered: release it first (sch_plug keeps one)",
            });
        }
        self.seq = self.seq.wrapping_add(1);
        let req = plug_request(self.seq, self.ifindex, action);
        // SAFETY: `req` is a live buffer of `req.len()` bytes that the kernel only reads.
        let n = unsafe {
            sys::send(
                self.sock.as_raw_fd(),
                req.as_ptr().cast::<c_void>(),
                req.len(),
                0,
            )
        };
        if n < 0 {
            return Err(XenError::last(action.name()).into());
        }
        // rtnetlink handles the request in send(): the ack is queued before it returns.
        let mut reply = [0u8; 512];
        // SAFETY: `reply` is a live, exclusively borrowed buffer of `reply.len()` bytes.
        let n = unsafe {
            sys::recv(
                self.sock.as_raw_fd(),
                reply.as_mut_ptr().cast::<c_void>(),
                reply.len(),
                MSG_DONTWAIT,
            )
        };
        if n < 0 {
            return Err(XenError::last(action.name()).into());
        }
        parse_ack(self.seq, &reply[..n as usize])
            .map_err(|e| Error::Xen(XenError::new(action.name(), e)))?;
        match action {
            PlugAction::Buffer => self.outstanding = true,
            PlugAction::ReleaseOne | PlugAction::ReleaseIndefinite => self.outstanding = false,
            PlugAction::Limit(_) => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bytes() {
        let m = plug_request(7, 0x12, PlugAction::ReleaseOne);
        #[rustfmt::skip]
        let want: [u8; PLUG_REQUEST_LEN] = [
            60, 0, 0, 0,  36, 0,  5, 0,  7, 0, 0, 0,  0, 0, 0, 0,      // nlmsghdr
            0, 0, 0, 0,  0x12, 0, 0, 0,  0, 0, 0, 0,  0xff, 0xff, 0xff, 0xff,  0, 0, 0, 0, // tcmsg
            9, 0, 1, 0,  b'p', b'l', b'u', b'g',  0, 0, 0, 0,          // TCA_KIND
            12, 0, 2, 0,  1, 0, 0, 0,  0, 0, 0, 0,                     // TCA_OPTIONS
        ];
        assert_eq!(m, want);
        let l = plug_request(8, 3, PlugAction::Limit(10_000_000));
        assert_eq!(&l[52..60], &[3, 0, 0, 0, 0x80, 0x96, 0x98, 0]);
        assert_eq!(
            &plug_request(1, 3, PlugAction::Buffer)[52..56],
            &[0, 0, 0, 0]
        );
        assert_eq!(
            &plug_request(1, 3, PlugAction::ReleaseIndefinite)[52..56],
            &[2, 0, 0, 0]
        );
    }

    #[test]
    fn acks() {
        let mut r = [0u8; 36];
        r[4] = 2; // NLMSG_ERROR
        r[8] = 9; // seq
        assert_eq!(parse_ack(9, &r), Ok(()));
        assert_eq!(parse_ack(8, &r), Err(errno::EIO), "wrong sequence");
        r[16..20].copy_from_slice(&(-errno::EINVAL).to_ne_bytes());
        assert_eq!(parse_ack(9, &r), Err(errno::EINVAL));
        assert_eq!(parse_ack(9, &r[..10]), Err(errno::EIO), "truncated");
        r[4] = 3;
        assert_eq!(parse_ack(9, &r), Err(errno::EIO), "not an ack");
    }

    #[test]
    fn ifindex_of_loopback_and_bad_names() {
        assert_eq!(ifindex("lo").ok(), Some(1));
        assert!(ifindex("../x").is_err());
        assert!(ifindex("").is_err());
        assert!(ifindex("no-such-dev0").is_err());
    }

    /// On a kernel without `sch_plug` (this machine), changing a qdisc that is not a plug is
    /// refused by the kernel with a typed error, and the one-epoch rule is enforced locally.
    #[test]
    fn kernel_refuses_non_plug_and_buffer_twice_is_refused() {
        let mut q = match PlugQdisc::open(1) {
            Ok(q) => q,
            Err(e) => {
                eprintln!("skipping: no netlink socket here: {e}");
                return;
            }
        };
        // lo's root qdisc is not "plug": the kernel answers with an error, never success.
        let e = q
            .command(PlugAction::ReleaseOne)
            .expect_err("lo has no plug qdisc");
        assert!(e.errno().is_some(), "{e}");
        assert!(!q.outstanding());
        q.outstanding = true;
        let e = q
            .command(PlugAction::Buffer)
            .expect_err("one outstanding epoch");
        assert!(matches!(e, Error::InvalidArgument { .. }));
    }
}
