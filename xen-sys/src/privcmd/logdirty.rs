//! Log-dirty tracking through [`Privcmd`] (`XEN_DOMCTL_shadow_op`): enabling it, and reading
//! (and clearing) the dirty bitmap.

use super::Privcmd;
use crate::abi::{domctl, shadow, DomId, DomctlPayload, DomctlShadowOp};
use crate::buffer::HypercallBuf;
use crate::error::Error;

/// A log-dirty (`XEN_DOMCTL_shadow_op`) operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShadowOp {
    /// `SHADOW_OP_OFF`: stop log-dirty tracking.
    Off,
    /// `SHADOW_OP_ENABLE_LOGDIRTY`: start log-dirty tracking.
    EnableLogDirty,
    /// `SHADOW_OP_CLEAN`: copy the dirty bitmap out and clear it.
    Clean {
        /// Set `LOGDIRTY_FINAL`: also report pages Xen has mapped writable (last round).
        final_round: bool,
    },
    /// `SHADOW_OP_PEEK`: copy the dirty bitmap out without clearing it.
    Peek {
        /// Set `LOGDIRTY_FINAL`.
        final_round: bool,
    },
}

/// What a shadow operation reports back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShadowStats {
    /// Number of pages (bits) the bitmap covers after the call: the smaller of the request and
    /// the domain's p2m size.
    pub pages: u64,
    /// Log-dirty faults since the last clean.
    pub fault_count: u32,
    /// Pages dirtied since the last clean.
    pub dirty_count: u32,
}

impl Privcmd {
    /// Run a log-dirty operation. For `Clean` and `Peek`, `bitmap` receives one bit per page
    /// for the first `pages` pages (it must hold `pages.div_ceil(8)` bytes); with `None`, Xen
    /// only updates (or, for `Clean`, clears) its state and returns the statistics.
    pub fn shadow_op(
        &mut self,
        domid: DomId,
        op: ShadowOp,
        bitmap: Option<&mut HypercallBuf>,
        pages: u64,
    ) -> Result<ShadowStats, Error> {
        const OP: &str = "domctl shadow_op";
        let (op_code, mode) = match op {
            ShadowOp::Off => (shadow::OP_OFF, 0),
            ShadowOp::EnableLogDirty => (shadow::OP_ENABLE_LOGDIRTY, 0),
            ShadowOp::Clean { final_round } => (
                shadow::OP_CLEAN,
                if final_round {
                    shadow::LOGDIRTY_FINAL
                } else {
                    0
                },
            ),
            ShadowOp::Peek { final_round } => (
                shadow::OP_PEEK,
                if final_round {
                    shadow::LOGDIRTY_FINAL
                } else {
                    0
                },
            ),
        };
        let takes_bitmap = matches!(op, ShadowOp::Clean { .. } | ShadowOp::Peek { .. });
        let (dirty_bitmap, pages) = match bitmap {
            Some(_) if !takes_bitmap => {
                return Err(Error::InvalidArgument {
                    op: OP,
                    what: "only CLEAN and PEEK take a bitmap",
                })
            }
            Some(buf) => {
                let needed =
                    usize::try_from(pages.div_ceil(8)).map_err(|_| Error::InvalidArgument {
                        op: OP,
                        what: "page count too large",
                    })?;
                if needed > buf.len() {
                    return Err(Error::BufferTooSmall {
                        op: OP,
                        needed,
                        have: buf.len(),
                    });
                }
                (buf.addr(), pages)
            }
            None => (0, 0),
        };
        let arg = DomctlShadowOp {
            op: op_code,
            mode,
            dirty_bitmap,
            pages,
            ..Default::default()
        };
        // SAFETY: the only guest handle is `dirty_bitmap`: 0, or the address of `bitmap`, a
        // HypercallBuf exclusively borrowed for this call and checked above to hold the
        // ceil(pages / 8) bytes Xen writes at most.
        let out = unsafe { self.domctl(domctl::SHADOW_OP, domid, DomctlPayload::new(&arg)) }?;
        let res: DomctlShadowOp = out.u.get();
        Ok(ShadowStats {
            pages: res.pages,
            fault_count: res.stats.fault_count,
            dirty_count: res.stats.dirty_count,
        })
    }

    /// Start log-dirty tracking. If Xen refuses (for example because a previous run left it
    /// enabled), turn it off and try once more, as libxc's `enable_logdirty` does.
    pub fn logdirty_enable(&mut self, domid: DomId) -> Result<(), Error> {
        match self.shadow_op(domid, ShadowOp::EnableLogDirty, None, 0) {
            Ok(_) => Ok(()),
            Err(Error::Xen(first)) => {
                log::info!("{first}; turning log-dirty off and retrying");
                self.shadow_op(domid, ShadowOp::Off, None, 0)?;
                self.shadow_op(domid, ShadowOp::EnableLogDirty, None, 0)
                    .map(drop)
            }
            Err(e) => Err(e),
        }
    }

    /// Make sure log-dirty tracking is on, without disturbing it when it is: Xen refuses to
    /// enable it twice (`EINVAL`, nothing changed). Returns whether it had been off and is on
    /// now: another tool turned it off (libxc's save, as `xl save -c` or `xl migrate` runs it,
    /// turns it off when it ends), so pages written meanwhile were not logged.
    pub fn logdirty_ensure(&mut self, domid: DomId) -> Result<bool, Error> {
        match self.shadow_op(domid, ShadowOp::EnableLogDirty, None, 0) {
            Ok(_) => Ok(true),
            Err(e) if e.errno() == Some(crate::sys::errno::EINVAL) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Stop log-dirty tracking.
    pub fn logdirty_off(&mut self, domid: DomId) -> Result<(), Error> {
        self.shadow_op(domid, ShadowOp::Off, None, 0).map(drop)
    }

    /// Read and clear the dirty bitmap of the first `pages` pages into `bitmap`.
    pub fn logdirty_clean(
        &mut self,
        domid: DomId,
        bitmap: &mut HypercallBuf,
        pages: u64,
        final_round: bool,
    ) -> Result<ShadowStats, Error> {
        self.shadow_op(domid, ShadowOp::Clean { final_round }, Some(bitmap), pages)
    }

    /// Read the dirty bitmap of the first `pages` pages into `bitmap` without clearing it.
    pub fn logdirty_peek(
        &mut self,
        domid: DomId,
        bitmap: &mut HypercallBuf,
        pages: u64,
        final_round: bool,
    ) -> Result<ShadowStats, Error> {
        self.shadow_op(domid, ShadowOp::Peek { final_round }, Some(bitmap), pages)
    }
}
