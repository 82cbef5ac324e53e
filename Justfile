# hsb: client-oriented hot standby for Xen VMs. `just --list` shows every recipe.

set shell := ["bash", "-euo", "pipefail", "-c"]

target := "x86_64-unknown-linux-gnu"

# The whole test suite: format, lints, unit and integration tests.
test: fmt-check clippy
    cargo build --workspace --bins
    cargo test --workspace --exclude hsb-tests
    # Integration tests start whole clusters of real processes: two at a time on small machines.
    cargo test -p hsb-tests -- --test-threads=2

# Protection over a slow replication link (htb at 10 and 100 Mbit/s on network namespaces; root):
# reply latency, checkpoints per second and replica lag, as markdown for BENCHMARKS.md section 10.
bench-link seconds="20":
    cargo build --release --workspace --bins
    ./target/release/hsb-faults --bench-link {{seconds}}

# Primary, standby and a client on loopback with the model domain: checkpoints, a kill -9, activation.
demo:
    cargo build --release --workspace --bins
    ./target/release/hsb-demo

# Benchmarks (release build); results are printed as markdown for BENCHMARKS.md.
bench:
    cargo build --release --workspace --bins
    ./target/release/hsb-bench

# All three daemons as static binaries (glibc with crt-static; musl where that target is installed).
static:
    RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --target {{target}} -p hsb-primary -p hsb-standby -p hsb-witness
    @for b in hsb-primary hsb-standby hsb-witness; do \
        f=target/{{target}}/release/$b; \
        if readelf -l "$f" | grep -q INTERP || readelf -d "$f" | grep -q NEEDED; then echo "$f is NOT static"; exit 1; fi; \
        echo "$f: static ($(du -h $f | cut -f1))"; \
    done

# The release tarball target/dist/hsb-VERSION-x86_64-linux.tar.gz: the static daemons, systemd
# units, example configurations, man pages made from the daemons' own help and configuration
# reference, README and DEPLOY.md, SHA256SUMS inside and beside it (tests/dist.rs checks it).
dist: static
    cargo build -p hsb-tests --bin hsb-man
    contrib/dist.sh target/{{target}}/release target/dist

# Static binaries, then the integration tests run against them.
test-static: static
    HSB_BIN_DIR=$PWD/target/{{target}}/release cargo test -p hsb-tests

# The fault-injection suite on network namespaces (root, iproute2, nftables, arping): every fault
# under the client-oriented policy and the heartbeat-only baseline; report in target/faults/.
# Release builds: a debug primary's first full synchronisation pauses it longer than the
# baseline's 50 ms heartbeat timeout on a loaded machine.
faults *only:
    cargo build --release --workspace --bins
    ./target/release/hsb-faults {{only}}

# The soak on network namespaces (root, iproute2, nftables, arping): the cluster under a seeded
# random nemesis for `minutes` (kill -9 and restarts, crashes, partitions, loss, SIGSTOP, witness
# restarts, replayed datagrams, operator switchovers), roles swapping, the client history checked;
# report in target/soak/report.md, logs in target/soak/run/. `HSB_SOAK_SEED=N just soak` replays.
soak minutes="10":
    cargo build --release --workspace --bins
    ./target/release/hsb-soak {{minutes}}

# The seeded simulator of the three daemons' real nodes: F1-F12, the slow link (F13) and the gray
# client path (F14-20/50/80) under all three policies over many seeds (a table per fault).
sim seeds="1000":
    cargo build --release -p hsb-tests --bin hsb-sim
    ./target/release/hsb-sim --seeds {{seeds}}

# Fuzz one target for a while (needs nightly and cargo-fuzz): `decode` (frames, messages, the
# checkpoint receiver), `codec` (the page decoders and the encoder's round trip), `control` (the
# control protocol), `config` (the configuration loader with --set overrides) or `datagram`.
fuzz target="decode" seconds="60":
    cd common && cargo +nightly fuzz run {{target}} -- -max_total_time={{seconds}}

fmt-check:
    cargo fmt --all -- --check

clippy:
    cargo clippy --workspace --all-targets -- -D warnings

fmt:
    cargo fmt --all

# Regenerate README.md's configuration reference from the daemons (tests/docs.rs checks it).
readme-config:
    cargo build --workspace --bins
    tests/readme-config.py target/debug

# Images of the two-host Xen test rig (tests/xen-rig), from Debian packages; cached in target/xen-rig.
xen-rig-images:
    tests/xen-rig/build-images.sh

# The Xen rig (root, TCG, about 2 min): both hosts up, guest on host 1, xl list, counter replies, torn
# down again; `just xen-rig keep` leaves it up for tests/xen-rig/rig.sh run/push/kill/... (README).
xen-rig *keep: xen-rig-images
    tests/xen-rig/rig.sh demo {{keep}}

# Kill the Xen rig's hosts and remove its taps, bridges and network namespace.
xen-rig-down:
    tests/xen-rig/rig.sh down

# Replica via xl save -c / restore -p, witnesses, a client history, F2 (replication cut, heal,
# fresh full sync) and F1 (host 1 killed); `smoke`: F1 only; `isolate`: host 1 cut off while alive
# (fence, failover, step down at the heal); `disk`: the guest with an ext4 data disk replicated by
# hsb (PUTs fsynced by the guest, F2 with an incremental disk resync, F1, fsck); `disk-bench`:
# disk write throughput and latency through hsb's export, replicated and not; exit status 3
# when the rig itself does not boot.
# hsb on the two-host Xen rig (real Xen 4.17 under QEMU TCG); report in target/xen-rig/e2e-report.md.
xen-e2e *args: static xen-rig-images
    RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --target {{target}} -p hsb-tests --bin hsb-disk-bench
    cargo build --release -p hsb-tests --bin hsb-xen-e2e
    HSB_BIN_DIR=$PWD/target/{{target}}/release ./target/release/hsb-xen-e2e {{args}}

# A page trace of the rig's guest running redis under load (issue 16.2): `just xen-trace [N]
# [bench|values=B] [period=MS]` records N checkpoints (default 300), one every MS ms (default
# 200), with random values of up to B bytes (default 1024; `bench`: redis-benchmark instead)
# into target/xen-rig/trace/ and replays it;
# copy it to tests/data/ (xen-rig-*.hsbtrace) to keep it as test data (hsb-bench section 11).
xen-trace *args: static xen-rig-images
    RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --target {{target}} -p hsb-tests --bin hsb-page-trace
    cargo build --release -p hsb-tests --bin hsb-xen-e2e
    HSB_BIN_DIR=$PWD/target/{{target}}/release ./target/release/hsb-xen-e2e trace {{args}}

# The same guest under `xl remus` (the baseline) on the same rig: F1 and F2; `disk`: the guest
# with the same ext4 data disk, F1 (xl remus as Debian ships it, without DRBD).
xen-e2e-remus *args: static xen-rig-images
    cargo build --release -p hsb-tests --bin hsb-xen-e2e
    HSB_BIN_DIR=$PWD/target/{{target}}/release ./target/release/hsb-xen-e2e remus {{args}}
