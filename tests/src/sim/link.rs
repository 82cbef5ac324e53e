//! The replication connection's segments arriving at a host: a connect is accepted by a
//! listening standby (the kernel answers before the daemon accepts) or reset; anything for an
//! end that is gone (closed, or of an earlier process or boot) is answered with a reset; the rest
//! goes to the process that owns the end.

use hsb_common::node_state::NodeState;

use super::host::{Me, Proc};
use super::net::{Ep, Msg};
use super::tcp::{End, Seg};
use super::world::Shared;

fn reset(sh: &mut Shared, me: Me, to: Ep, conn: u64) {
    let now = sh.now();
    sh.net.send(now, Ep::Node(me.host), to, Msg::Rst { conn });
}

/// Whether side `side` of `conn` is an open end of this process.
fn mine(sh: &Shared, me: Me, conn: u64, side: usize) -> bool {
    sh.conns
        .get(conn)
        .and_then(|c| c.ends[side])
        .is_some_and(|e| e.open && e.boot == me.boot && e.proc == me.proc)
}

/// A segment of `conn` from `from` arrived at this (running) host.
pub(crate) fn on_segment(
    me: Me,
    sh: &mut Shared,
    proc: &mut Proc,
    disk: &mut Option<NodeState>,
    from: Ep,
    conn: u64,
    seg: Seg,
) {
    if let Seg::Syn = seg {
        let Proc::Standby(s) = proc else {
            // Nothing listens at the replication address.
            return reset(sh, me, from, conn);
        };
        let end = End {
            host: me.host,
            boot: me.boot,
            proc: me.proc,
            open: true,
        };
        sh.conns.accept(conn, end);
        let now = sh.now();
        sh.conns.send(&mut sh.net, now, conn, 1, Seg::SynAck);
        return s.on_incoming(me, sh, disk, conn);
    }
    let Some(side) = sh.conns.side_on(conn, me.host) else {
        return reset(sh, me, from, conn);
    };
    if !mine(sh, me, conn, side) {
        if !matches!(seg, Seg::Fin) {
            reset(sh, me, from, conn);
        }
        return;
    }
    let fin = matches!(seg, Seg::Fin);
    match proc {
        Proc::Primary(p) => p.on_segment(me, sh, disk, conn, seg),
        Proc::Standby(s) => s.on_segment(me, sh, disk, conn, seg),
        Proc::Down => {}
    }
    if fin {
        sh.conns.gone(&mut sh.net, conn, side);
    }
}

/// The peer's host reset `conn`: this process's end of it is gone.
pub(crate) fn on_reset(
    me: Me,
    sh: &mut Shared,
    proc: &mut Proc,
    disk: &mut Option<NodeState>,
    conn: u64,
) {
    let Some(side) = sh.conns.side_on(conn, me.host) else {
        return;
    };
    if !mine(sh, me, conn, side) {
        return;
    }
    sh.conns.gone(&mut sh.net, conn, side);
    match proc {
        Proc::Primary(p) => p.on_reset(me, sh, disk, conn),
        Proc::Standby(s) => s.on_reset(me, sh, disk, conn),
        Proc::Down => {}
    }
}
