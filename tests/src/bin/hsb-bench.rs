//! `just bench`: measures hsb on this machine with the model domain (the hypervisor test
//! double) on loopback, and prints the results as markdown (also written to
//! `target/bench-results.md`).
//!
//! 1. Checkpoint throughput: the library pipeline (capture, seal, TCP, open, stage, apply) and
//!    the real daemons, against a raw TCP copy of the same bytes in the same run.
//! 2. Pause per epoch (suspend, capture, resume) for about 1,000 and 10,000 dirty pages.
//! 3. Reply latency added by output commit at 10 ms and 25 ms epochs.
//! 4. Resident memory of the daemons.
//! 5. Failover time after kill -9 of the primary (a whole cluster with three witnesses), and
//!    false failovers under heartbeat loss (`tests/src/bench/failover.rs`).
//! 7. Checkpoints on links shaped with htb to 1 and 10 Gbit/s between network namespaces (raw
//!    TCP, plain and encoded checkpoints per write pattern), and 8. the pause of a pre-copied
//!    full synchronisation against the dirty rate (`tests/src/bench/links.rs`; root).
//!
//! Targets are reported (met / not met), never asserted. Child daemons are killed on every path:
//! on drop (the harness's `Daemon`), and by a panic hook and a watchdog that kill this process's
//! children by pid (the release profile aborts on panic, so drops would not run).

#[path = "../bench/mod.rs"]
mod bench;

fn main() -> std::process::ExitCode {
    bench::main()
}
