//! hsb end to end on the two-host Xen rig (`tests/xen-rig`, real Xen 4.17 under QEMU).
//!
//! Boots both hosts with the static hsb binaries and their configuration in each dom0, starts
//! the rig's PVH guest on host 1, makes the paused replica on host 2 the way an operator would
//! (`xl save -c` on host 1, copied over the replication network, `xl restore -p` on host 2),
//! starts hsb-primary (host 1), hsb-standby (host 2) and three hsb-witness processes in the
//! rig's namespace, and a client that increments the guest's counter and records its history.
//! Then the cases, each checked from the client's history (no acknowledged increment lost,
//! none applied twice):
//!
//! - F2: the replication network is cut while the witnesses still reach the guest: no
//!   failover; the guest keeps answering from host 1 (unprotected under the witnesses' lease).
//!   Healed: the standby is synchronised from scratch.
//! - F1: host 1's QEMU is killed: the standby activates the replica; the counter continues.
//! - Isolation (`isolate`, instead of F1): host 1 is cut off from both networks but keeps
//!   running: its primary fences its guest, the standby activates the replica, and after the
//!   heal the old primary steps down with its guest still stopped.
//!
//! ```text
//! hsb-xen-e2e [smoke|all] [--keep]     smoke: protect + F1; all: protect + F2 + heal + F1
//! hsb-xen-e2e isolate [--keep]         protect + host 1 isolated alive (fence, failover) + heal
//! hsb-xen-e2e remus                    the same guest under `xl remus` (the baseline): F1, F2
//! hsb-xen-e2e trace [N] [--keep]       record N (300) checkpoints' dirty pages of the guest
//!                                      running redis, and replay them (tests/data)
//! hsb-xen-e2e client ADDR SECONDS      (internal) the client, run inside the rig namespace
//! hsb-xen-e2e probe ADDR SECONDS       (internal) the reply-time probe, likewise
//! ```
//!
//! Needs root, the rig's images (`just xen-rig-images`) and `HSB_BIN_DIR` with static
//! hsb-primary, hsb-standby and hsb-witness (`just static`). Every wait is bounded; the rig is
//! torn down on every exit path unless `--keep`. The report goes to
//! `target/xen-rig/e2e-report.md`. Exit status: 0 all correct, 1 a wrong outcome or a failed
//! step, 3 the rig's hosts or guest did not come up (nothing of hsb was tried).

#[path = "../xene2e/mod.rs"]
mod xene2e;

fn main() -> std::process::ExitCode {
    xene2e::main()
}
