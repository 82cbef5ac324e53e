#!/usr/bin/env bash
# The two-host Xen test rig: two QEMU (TCG) machines running Xen 4.17 + a Debian dom0, inside a
# network namespace with a rig/client bridge and a replication bridge. See README.md.
#
#   rig.sh up                    boot both hosts, wait for their dom0 shells (tears down on failure)
#   rig.sh run [-t S] HOST CMD   run CMD in HOST's dom0 (1|2|host1|host2) in a subshell; prints its
#                                output, returns its status (124 after S s, default 300: Ctrl-C sent)
#   rig.sh push HOST SRC DST     copy a local file into HOST's dom0 (over the rig network)
#   rig.sh pull HOST SRC DST     copy a file of HOST's dom0 here (over the rig network)
#   rig.sh guest-up HOST [disk|CFG]  xl create the guest on HOST (`disk`: hsb-guest-disk.cfg, its
#                                data disk /dev/nbd0 as xvdb), wait until its counter answers
#   rig.sh disk-serve HOST [SIZE]  hsb-primary (model backend) in HOST's dom0 as the NBD server of a
#                                fresh, empty image (default 64MiB) on /run/hsb/guest.nbd
#   rig.sh disk-attach HOST [SOCK [DEV]]  nbd-client -unix SOCK DEV (/run/hsb/guest.nbd, /dev/nbd0)
#   rig.sh disk-detach HOST [DEV]  nbd-client -d DEV
#   rig.sh disk-check HOST [DEV] e2fsck -fy DEV (its journal replayed), then DEV's /records
#   rig.sh counter [REQ]         send REQ (default GET) to the guest's counter from the rig namespace
#   rig.sh kill HOST             kill HOST's QEMU at once (monitor `quit`): a host crash
#   rig.sh boot HOST             boot a killed host again (same disks: none; same addresses)
#   rig.sh remus FROM TO [MS]    protect the guest on FROM with xl remus to TO (the baseline)
#   rig.sh cut-repl | heal-repl  drop / restore all traffic between the hosts on the replication net
#   rig.sh cut-rig | heal-rig    the same between the two hosts on the rig network (machine<->host kept)
#   rig.sh isolate HOST [repl]   drop all of HOST's traffic on the rig network (or the replication
#   rig.sh unisolate HOST [repl] network), machine included; unisolate undoes it
#   rig.sh ns CMD...             run CMD in the rig's network namespace (where witnesses/clients live)
#   rig.sh status                which hosts run, addresses, files
#   rig.sh console HOST          interactive serial console (socat; Ctrl-C leaves)
#   rig.sh demo [keep]           up, guest on host 1, xl list on both, counter replies, then down
#   rig.sh down                  kill both hosts, remove taps, bridges, namespace (always safe)
#
# Environment: HSB_RIG_DIR (images, default <repo>/target/xen-rig), HSB_BIN_DIR (files appended to
# the dom0 initrd as /usr/local/sbin/*), HSB_RIG_ETC (files appended as /etc/hsb/*; an executable
# rig-boot.sh there runs at boot), HSB_RIG_NS (namespace, default hsb-rig), HSB_RIG_MEM (1536),
# HSB_RIG_SMP (1), HSB_RIG_RUN (sockets, logs, pid files; default $HSB_RIG_DIR/run), HSB_RIG_BOOT_TIMEOUT (400 s), HSB_RIG_RUN_TIMEOUT (default timeout of `run`, 300 s).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
RIG="${HSB_RIG_DIR:-$repo/target/xen-rig}"
RUN="${HSB_RIG_RUN:-$RIG/run}"
NS="${HSB_RIG_NS:-hsb-rig}"
MEM="${HSB_RIG_MEM:-1536}"
SMP="${HSB_RIG_SMP:-1}"
# No AVX and no XSAVE: under TCG, Xen does not keep a PV dom0's extended register state across
# switches to a running guest, so vector results in dom0 come out wrong (measured with AVX: 1521
# of 1521 keyed BLAKE3 hashes of one buffer wrong while a guest ran; without AVX but with XSAVE
# hsb's frames still failed their MAC every few checkpoints). Without XSAVE, Xen context-switches
# with FXSAVE and offers no AVX; dom0 and the guest then use SSE paths and the frames check out.
# HSB_RIG_CPU overrides.
CPU="${HSB_RIG_CPU:-max,-avx,-avx2,-xsave}"
BOOT_TIMEOUT="${HSB_RIG_BOOT_TIMEOUT:-400}"
RUN_TIMEOUT="${HSB_RIG_RUN_TIMEOUT:-300}"
GUEST_IP=10.99.0.21
GUEST_PORT=7000
# The guest's data disk in dom0 (hsb-guest-disk.cfg: phy:/dev/nbd0) and the NBD socket it is served on.
NBD_SOCK=/run/hsb/guest.nbd
NBD_DEV=/dev/nbd0
# disk-serve's files in dom0 (its own state file, key, image and sockets: a test's hsb-primary
# and hsb-standby with their usual paths are not disturbed).
NBD_DIR=/var/lib/hsb-rig/nbd
MACHINE_IP=10.99.0.254
CONSOLE="$here/console.py"
T0=$(date +%s)

log() { printf '[rig +%4ss] %s\n' "$(($(date +%s) - T0))" "$*" >&2; }
die() { printf '[rig] ERROR: %s\n' "$*" >&2; exit 1; }
nsx() { ip netns exec "$NS" "$@"; }
# Long waits run in the background so INT/TERM interrupt `wait` at once and the EXIT trap tears down
# (bash defers a trap while a foreground child runs, and drops SIGINT if the child survives it).
CHILD=""
bgwait() { "$@" & CHILD=$!; local rc=0; wait "$CHILD" || rc=$?; CHILD=""; return "$rc"; }

host_n() { # 1|2|host1|host2 -> 1|2
    case "${1:-}" in
        1 | host1) echo 1 ;;
        2 | host2) echo 2 ;;
        *) die "unknown host '${1:-}' (use 1, 2, host1 or host2)" ;;
    esac
}
qemu_pid() { # N -> pid of a running QEMU of ours, or nothing
    local f="$RUN/host$1.pid" p
    [ -s "$f" ] || return 0
    p=$(cat "$f")
    if [ -r "/proc/$p/cmdline" ] && tr '\0' ' ' <"/proc/$p/cmdline" | grep -q "hsb-rig-host$1"; then
        echo "$p"
    fi
}

# ---------------------------------------------------------------- teardown
cmd_down() {
    local n p i
    for n in 1 2; do
        p=$(qemu_pid "$n")
        if [ -n "$p" ]; then
            log "stopping host$n (pid $p)"
            { echo quit | timeout 5 socat - "UNIX-CONNECT:$RUN/host$n.mon" >/dev/null 2>&1; } || true
            for i in $(seq 1 20); do [ -d "/proc/$p" ] || break; sleep 0.25; done
            [ -d "/proc/$p" ] && kill -9 "$p" 2>/dev/null || true
        fi
        rm -f "$RUN/host$n.pid" "$RUN/host$n.ser" "$RUN/host$n.mon"
    done
    # Anything else still running in the namespace was started by the rig (socat helpers, clients).
    if ip netns list 2>/dev/null | grep -qw "^$NS"; then
        for p in $(ip netns pids "$NS" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
        ip netns del "$NS" 2>/dev/null || true # takes the taps and bridges with it
        log "namespace $NS removed"
    fi
    rm -f "$RUN/initrd.cpio" "$RUN/extra.cpio"
}

# ---------------------------------------------------------------- bring-up
make_net() {
    ip netns add "$NS"
    nsx ip link set lo up
    nsx ip link add rigbr0 type bridge stp_state 0 forward_delay 0
    nsx ip link add rigbr1 type bridge stp_state 0 forward_delay 0
    nsx ip addr add "$MACHINE_IP/24" dev rigbr0
    nsx ip addr add 10.98.0.254/24 dev rigbr1
    local n
    for n in 1 2; do
        nsx ip tuntap add dev "h$n-rig" mode tap
        nsx ip tuntap add dev "h$n-repl" mode tap
        nsx ip link set "h$n-rig" master rigbr0 up
        nsx ip link set "h$n-repl" master rigbr1 up
    done
    nsx ip link set rigbr0 up
    nsx ip link set rigbr1 up
    # Filters for cut-repl/cut-rig: bridge family, forwarding between the two hosts' taps only.
    nsx nft -f - <<'EOF'
table bridge hsbrig {
    set cuts { type ifname . ifname; }
    set iso { type ifname; }
    chain hsbfwd {
        type filter hook forward priority 0; policy accept;
        iifname . oifname @cuts drop
        iifname @iso drop
        oifname @iso drop
    }
    chain hsbin { type filter hook input priority 0; policy accept; iifname @iso drop; }
    chain hsbout { type filter hook output priority 0; policy accept; oifname @iso drop; }
}
EOF
    # Extra machine-side addresses for witnesses and clients that want one each.
    for n in 101 102 103; do nsx ip addr add "10.99.0.$n/24" dev rigbr0; done
}

make_initrd() { # -> path of the dom0 initrd to boot
    local extra="$RUN/extra-root"
    if [ -z "${HSB_BIN_DIR:-}" ] && [ -z "${HSB_RIG_ETC:-}" ]; then
        echo "$RIG/dom0.cpio"
        return
    fi
    rm -rf "$extra"
    mkdir -p "$extra/usr/local/sbin" "$extra/etc/hsb"
    if [ -n "${HSB_BIN_DIR:-}" ]; then
        [ -d "$HSB_BIN_DIR" ] || die "HSB_BIN_DIR=$HSB_BIN_DIR is not a directory"
        find "$HSB_BIN_DIR" -maxdepth 1 -type f -perm -u+x -exec cp {} "$extra/usr/local/sbin/" \;
    fi
    if [ -n "${HSB_RIG_ETC:-}" ]; then
        [ -d "$HSB_RIG_ETC" ] || die "HSB_RIG_ETC=$HSB_RIG_ETC is not a directory"
        cp -r "$HSB_RIG_ETC"/. "$extra/etc/hsb/"
    fi
    log "appending to the dom0 initrd: $(cd "$extra" && find . -type f | sed 's|^\./|/|' | tr '\n' ' ')"
    (cd "$extra" && find . -print0 | cpio --null -o -H newc --quiet -R 0:0) >"$RUN/extra.cpio"
    # Linux unpacks concatenated cpio archives in order: the extra files land on top of dom0's root.
    cat "$RIG/dom0.cpio" "$RUN/extra.cpio" >"$RUN/initrd.cpio"
    echo "$RUN/initrd.cpio"
}

boot_host() { # N INITRD
    local n=$1 initrd=$2
    : >"$RUN/host$n.log"
    local xen="console=com1 com1=115200,8n1 dom0_mem=640M,max:640M dom0_max_vcpus=1 smap=0 noreboot"
    local dom0="console=hvc0 earlyprintk=xen root=/dev/ram0 rdinit=/init hsb.name=host$n"
    dom0="$dom0 hsb.ip=10.99.0.$n/24 hsb.rip=10.98.0.$n/24 hsb.gw=$MACHINE_IP"
    nsx qemu-system-x86_64 -name "hsb-rig-host$n" \
        -accel tcg,thread=multi,tb-size=256 -cpu "$CPU" -m "$MEM" -smp "$SMP" \
        -display none -no-reboot -nodefaults \
        -kernel "$RIG/xen.bin" -append "$xen" -initrd "$RIG/vmlinuz $dom0,$initrd" \
        -chardev "socket,id=ser0,path=$RUN/host$n.ser,server=on,wait=off,logfile=$RUN/host$n.log" \
        -serial chardev:ser0 \
        -monitor "unix:$RUN/host$n.mon,server,nowait" \
        -netdev "tap,id=n0,ifname=h$n-rig,script=no,downscript=no" \
        -device "e1000,netdev=n0,mac=52:54:00:99:00:0$n" \
        -netdev "tap,id=n1,ifname=h$n-repl,script=no,downscript=no" \
        -device "e1000,netdev=n1,mac=52:54:00:98:00:0$n" \
        -pidfile "$RUN/host$n.pid" -daemonize 2>"$RUN/host$n.qemu.err" ||
        { cat "$RUN/host$n.qemu.err" >&2; die "QEMU for host$n did not start"; }
}

cmd_up() {
    [ "$(id -u)" = 0 ] || die "needs root (network namespace, taps)"
    for f in xen.bin vmlinuz dom0.cpio; do
        [ -s "$RIG/$f" ] || die "no $RIG/$f: run tests/xen-rig/build-images.sh (just xen-rig-images)"
    done
    for c in qemu-system-x86_64 socat nft python3 ip; do command -v "$c" >/dev/null || die "missing tool: $c"; done
    [ -e /dev/net/tun ] || die "no /dev/net/tun"
    mkdir -p "$RUN"
    cmd_down 2>/dev/null || true
    TEARDOWN=1 # until the rig is up, any exit (error, Ctrl-C) removes everything again
    make_net
    local initrd n
    initrd=$(make_initrd)
    [ -s "$initrd" ] || die "no dom0 initrd"
    log "booting host1 and host2 (Xen + dom0 under TCG; logs $RUN/host{1,2}.log)"
    for n in 1 2; do boot_host "$n" "$initrd"; done
    for n in 1 2; do
        if ! bgwait python3 "$CONSOLE" wait "$RUN/host$n.log" "$BOOT_TIMEOUT" "HSB-RIG-READY host$n"; then
            tail -30 "$RUN/host$n.log" >&2
            die "host$n: no dom0 shell after ${BOOT_TIMEOUT}s (log $RUN/host$n.log)"
        fi
        log "host$n: dom0 up"
    done
    for n in 1 2; do
        python3 "$CONSOLE" run "$RUN/host$n.ser" 60 true >/dev/null || die "host$n: dom0 shell does not answer"
    done
    TEARDOWN=${DEMO_TEARDOWN:-0}
    log "rig up: host1 10.99.0.1 (repl 10.98.0.1), host2 10.99.0.2 (repl 10.98.0.2), machine $MACHINE_IP in netns $NS"
}

# ---------------------------------------------------------------- using it
cmd_run() { # [-t SECS] HOST CMD...
    local n tmo=$RUN_TIMEOUT
    if [ "${1:-}" = -t ]; then tmo=${2:?run -t needs seconds}; shift 2; fi
    n=$(host_n "${1:-}"); shift
    [ $# -gt 0 ] || die "run: no command"
    [ -n "$(qemu_pid "$n")" ] || die "host$n is not running"
    # One console client at a time per host.
    exec 9>"$RUN/host$n.lock"
    flock -w "$tmo" 9 || die "host$n: console busy"
    local rc=0
    python3 "$CONSOLE" run "$RUN/host$n.ser" "$tmo" "$*" || rc=$?
    exec 9>&-
    return "$rc"
}

cmd_push() { # HOST SRC DST
    local n src=${2:-} dst=${3:-} port
    n=$(host_n "${1:-}")
    [ -f "$src" ] || die "push: no file $src"
    [ -n "$dst" ] || die "push: no destination"
    port=$((20000 + RANDOM % 20000))
    nsx timeout 300 socat -u "FILE:$src" "TCP-LISTEN:$port,bind=$MACHINE_IP,reuseaddr" &
    local lp=$!
    sleep 0.5
    local mode
    mode=$(stat -c %a "$src")
    if cmd_run "$n" "mkdir -p \$(dirname $dst) && socat -u TCP:$MACHINE_IP:$port,retry=10 CREATE:$dst.tmp && chmod $mode $dst.tmp && mv $dst.tmp $dst && ls -l $dst"; then
        wait "$lp" 2>/dev/null || true
    else
        kill "$lp" 2>/dev/null || true
        die "push to host$n failed"
    fi
}

cmd_pull() { # HOST SRC DST
    local n src=${2:-} dst=${3:-} port
    n=$(host_n "${1:-}")
    [ -n "$src" ] && [ -n "$dst" ] || die "pull: usage: pull HOST SRC DST"
    port=$((20000 + RANDOM % 20000))
    rm -f "$dst.tmp"
    nsx timeout 600 socat -u "TCP-LISTEN:$port,bind=$MACHINE_IP,reuseaddr" "CREATE:$dst.tmp" &
    local lp=$!
    sleep 0.5
    local want
    if want=$(cmd_run -t 600 "$n" "[ -f $src ] || { echo 'no file $src'; exit 1; }; socat -u FILE:$src TCP:$MACHINE_IP:$port,retry=10 && stat -c %s $src"); then
        wait "$lp" 2>/dev/null || true
        want=$(printf '%s' "$want" | tail -n1 | tr -d '\r')
        [ "$(stat -c %s "$dst.tmp" 2>/dev/null)" = "$want" ] || die "pull from host$n: got $(stat -c %s "$dst.tmp" 2>/dev/null || echo no) bytes of $want"
        mv "$dst.tmp" "$dst"
        ls -l "$dst"
    else
        kill "$lp" 2>/dev/null || true
        die "pull from host$n failed: $want"
    fi
}

counter() { # REQ -> reply line(s)
    nsx timeout 10 socat -t 2 -T 5 - "TCP:$GUEST_IP:$GUEST_PORT,connect-timeout=3" <<<"$1" 2>/dev/null
}
cmd_counter() { counter "${1:-GET}"; }

cmd_guest_up() { # HOST [disk|CFG]
    local n t cfg=/etc/xen/hsb-guest.cfg
    n=$(host_n "${1:-}")
    case "${2:-}" in
        "") ;;
        disk) cfg=/etc/xen/hsb-guest-disk.cfg ;;
        *) cfg=$2 ;;
    esac
    log "host$n: xl create $cfg"
    cmd_run "$n" "xl create $cfg" || die "host$n: xl create failed"
    t=$(date +%s)
    while [ "$(counter PING)" != PONG ]; do
        if [ $(($(date +%s) - t)) -ge 300 ]; then
            cmd_run "$n" "xl list; tail -20 /var/log/xen/console/guest-hsb-guest.log" || true
            die "host$n: the guest's counter does not answer on $GUEST_IP:$GUEST_PORT after 300s"
        fi
        sleep 2
    done
    log "host$n: guest counter answers on $GUEST_IP:$GUEST_PORT ($(($(date +%s) - t))s after xl create returned)"
}

# ---------------------------------------------------------------- the guest's data disk (NBD)
cmd_disk_serve() { # HOST [SIZE]: hsb-primary's NBD export of a fresh image, nothing else
    local n size=${2:-64MiB}
    n=$(host_n "${1:-}")
    # A fresh image each time: a model domain started on an existing image zeroes its first MiB
    # (the model's own PUT log), which is where ext4 keeps its superblock; and the state file of
    # an earlier run refuses a second fresh start. The standby address is the machine's, where
    # nothing listens: this primary replicates nowhere (its NBD writes are served all the same).
    # The model's own workloads are off (model.disk_rate = 0 keeps it off the guest's blocks);
    # its service (port 7090) must not be sent PUTs, which write into the disk's first MiB.
    log "host$n: hsb-primary serving a fresh $size image on $NBD_SOCK (model backend, no standby)"
    cmd_run -t 120 "$n" "command -v hsb-primary >/dev/null || { echo 'no hsb-primary in dom0: rig.sh up with HSB_BIN_DIR (just static)'; exit 1; }
d=$NBD_DIR; mkdir -p \$d /run/hsb
p=\$(cat \$d/pid 2>/dev/null); if [ -n \"\$p\" ] && grep -q hsb-primary /proc/\$p/cmdline 2>/dev/null; then
  kill \$p; for i in \$(seq 50); do [ -d /proc/\$p ] || break; sleep 0.2; done; fi
rm -f \$d/hsb.state \$d/disk.img \$d/disk.img.meta \$d/pid $NBD_SOCK
[ -s \$d/cluster.key ] || hsb-primary keygen \$d/cluster.key >/dev/null
printf '%s\n' 'node = nbd-host$n' 'backend = model' 'cluster_key = $NBD_DIR/cluster.key' 'standby = 10.98.0.254:7199' \
  'state_file = $NBD_DIR/hsb.state' 'control = $NBD_DIR/primary.sock' 'model.disk = $NBD_DIR/disk.img' \
  'model.disk_size = $size' 'model.disk_rate = 0' 'model.dirty_rate = 0' 'model.service = 127.0.0.1:7090' \
  'witness_listen = 127.0.0.1:7391' 'disk.nbd_socket = $NBD_SOCK' >\$d/primary.conf
setsid hsb-primary run -c \$d/primary.conf >\$d/primary.log 2>&1 </dev/null & echo \$! >\$d/pid
for i in \$(seq 150); do [ -S $NBD_SOCK ] && break; sleep 0.2; done
grep 'NBD export' \$d/primary.log || { tail -5 \$d/primary.log; exit 1; }" ||
        die "host$n: hsb-primary did not serve $NBD_SOCK (log $NBD_DIR/primary.log there)"
}

cmd_disk_attach() { # HOST [SOCKET [DEV]]; HSB_RIG_NBD_OPTS adds nbd-client options (e.g. -nonetlink)
    local n sock=${2:-$NBD_SOCK} dev=${3:-$NBD_DEV}
    n=$(host_n "${1:-}")
    cmd_run -t 90 "$n" "for i in \$(seq 150); do [ -S $sock ] && break; sleep 0.2; done
timeout 60 nbd-client -unix $sock -N hsb ${HSB_RIG_NBD_OPTS:-} $dev || exit 1
s=/sys/block/${dev#/dev/}/size
for i in \$(seq 50); do [ \$(cat \$s) -gt 0 ] && break; sleep 0.2; done
echo $dev: \$((\$(cat \$s) / 2048)) MiB; [ \$(cat \$s) -gt 0 ]" ||
        die "host$n: nbd-client -unix $sock $dev failed"
}

cmd_disk_detach() { # HOST [DEV]
    local n dev=${2:-$NBD_DEV}
    n=$(host_n "${1:-}")
    cmd_run -t 90 "$n" "timeout 60 nbd-client -d $dev" || die "host$n: nbd-client -d $dev failed"
}

cmd_disk_check() { # HOST [DEV]: e2fsck (exit 0 or 1: clean or corrected), then the records file
    local n dev=${2:-$NBD_DEV}
    n=$(host_n "${1:-}")
    # Never under a running guest: blkback does not hold the device exclusively.
    cmd_run -t 200 "$n" "xl list hsb-guest >/dev/null 2>&1 && { echo 'hsb-guest runs: xl destroy it first'; exit 2; }
blockdev --flushbufs $dev; timeout 150 e2fsck -fy $dev; r=\$?
echo e2fsck exit status \$r; [ \$r -le 1 ] || exit \$r
echo '--- /records'; timeout 30 debugfs -R 'cat /records' $dev 2>/dev/null"
}

cmd_boot() { # HOST: boot a host again (after `kill`), e.g. to rejoin as the new standby
    local n initrd
    n=$(host_n "${1:-}")
    [ -z "$(qemu_pid "$n")" ] || die "host$n is already running"
    ip netns list 2>/dev/null | grep -qw "^$NS" || die "the rig is not up (rig.sh up)"
    initrd="$RIG/dom0.cpio"
    [ -s "$RUN/initrd.cpio" ] && initrd="$RUN/initrd.cpio"
    log "booting host$n again"
    boot_host "$n" "$initrd"
    bgwait python3 "$CONSOLE" wait "$RUN/host$n.log" "$BOOT_TIMEOUT" "HSB-RIG-READY host$n" ||
        die "host$n: no dom0 shell after ${BOOT_TIMEOUT}s (log $RUN/host$n.log)"
    python3 "$CONSOLE" run "$RUN/host$n.ser" 60 true >/dev/null || die "host$n: dom0 shell does not answer"
    log "host$n: dom0 up"
}

cmd_remus() { # FROM TO [INTERVAL_MS]: the xl remus baseline over the replication network
    local a b i=${3:-200}
    a=$(host_n "${1:-}"); b=$(host_n "${2:-}")
    [ "$a" != "$b" ] || die "remus: two different hosts"
    cmd_run "$b" "setsid socat TCP-LISTEN:8002,reuseaddr,keepalive,keepidle=2,keepintvl=1,keepcnt=3 EXEC:'xl -v migrate-receive -r -e',nofork >/var/log/remus-recv.log 2>&1 </dev/null & sleep 1; ss -ltn | grep -q :8002" ||
        die "host$b: remus receiver did not start"
    # -n: Debian's libxl has no network buffering (libnl); -F allows that unsafe mode.
    cmd_run "$a" "setsid xl -v remus -F -n -e -i $i -s '' hsb-guest 'socat - TCP:10.98.0.$b:8002' >/var/log/remus.log 2>&1 </dev/null &" ||
        die "host$a: xl remus did not start"
    log "xl remus host$a -> host$b every ${i} ms; logs /var/log/remus.log (host$a), /var/log/remus-recv.log (host$b)"
}

cmd_kill() { # HOST
    local n p
    n=$(host_n "${1:-}")
    p=$(qemu_pid "$n")
    [ -n "$p" ] || die "host$n is not running"
    echo quit | timeout 5 socat - "UNIX-CONNECT:$RUN/host$n.mon" >/dev/null 2>&1 || kill -9 "$p"
    for _ in $(seq 1 40); do [ -d "/proc/$p" ] || break; sleep 0.25; done
    [ -d "/proc/$p" ] && kill -9 "$p"
    log "host$n killed"
}

cut() { # add|delete BRIDGE-SUFFIX
    local op=$1 s=$2
    nsx nft "$op" element bridge hsbrig cuts "{ h1-$s . h2-$s, h2-$s . h1-$s }"
}
cmd_cut_repl() { cut add repl && log "replication network cut between host1 and host2"; }
cmd_heal_repl() { cut delete repl && log "replication network healed"; }
cmd_cut_rig() { cut add rig && log "rig network cut between host1 and host2 (machine still reaches both)"; }
cmd_heal_rig() { cut delete rig && log "rig network healed"; }

cmd_isolate() { # HOST [repl]: drop every frame to or from HOST on the rig network (or replication)
    local n s=rig
    n=$(host_n "${1:-}")
    [ "${2:-}" = repl ] && s=repl
    nsx nft add element bridge hsbrig iso "{ h$n-$s }"
    log "host$n isolated on the ${s} network"
}
cmd_unisolate() {
    local n s=rig
    n=$(host_n "${1:-}")
    [ "${2:-}" = repl ] && s=repl
    nsx nft delete element bridge hsbrig iso "{ h$n-$s }"
    log "host$n back on the ${s} network"
}

cmd_status() {
    local n p
    for n in 1 2; do
        p=$(qemu_pid "$n")
        echo "host$n: $([ -n "$p" ] && echo "running (qemu pid $p)" || echo "not running")  dom0 10.99.0.$n  repl 10.98.0.$n  console $RUN/host$n.ser  log $RUN/host$n.log"
    done
    echo "machine: $MACHINE_IP (rigbr0), 10.98.0.254 (rigbr1) in netns $NS; guest $GUEST_IP:$GUEST_PORT"
    if ip netns list 2>/dev/null | grep -qw "^$NS"; then nsx nft list table bridge hsbrig 2>/dev/null | grep -A2 elements || echo "no cuts, no isolated hosts"; fi
}

cmd_console() {
    local n
    n=$(host_n "${1:-}")
    echo "host$n serial console (Ctrl-C leaves; Ctrl-A three times switches between Xen and dom0)" >&2
    socat -,raw,echo=0,escape=0x03 "UNIX-CONNECT:$RUN/host$n.ser"
}

cmd_demo() {
    local keep=${1:-} n
    [ "$keep" = keep ] || DEMO_TEARDOWN=1
    local t=$SECONDS
    cmd_up
    log "boot of both hosts: $((SECONDS - t))s"
    t=$SECONDS
    cmd_guest_up 1
    log "guest start: $((SECONDS - t))s"
    for n in 1 2; do
        echo "--- host$n: xl list"
        cmd_run "$n" "xl list"
    done
    echo "--- counter from the rig namespace ($GUEST_IP:$GUEST_PORT)"
    counter $'INCR\nINCR\nGET'
    echo "--- host2 reaches the guest and host1 over the rig network, host1 over the replication network"
    cmd_run 2 "printf 'GET\n' | socat -t3 - TCP:$GUEST_IP:$GUEST_PORT; ping -c1 -W5 10.99.0.1 | tail -1; ping -c1 -W5 10.98.0.1 | tail -1"
    TEARDOWN=${DEMO_TEARDOWN:-0}
    if [ "$keep" = keep ]; then
        log "rig kept up: tests/xen-rig/rig.sh down (just xen-rig-down) removes it"
    fi
}

TEARDOWN=0
on_exit() {
    local rc=$?
    [ -n "$CHILD" ] && kill "$CHILD" 2>/dev/null
    if [ "$TEARDOWN" = 1 ]; then
        [ "$rc" = 0 ] || log "failed (status $rc): tearing the rig down"
        cmd_down
    fi
}
trap on_exit EXIT
trap 'exit 130' INT TERM

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
    up) cmd_up ;;
    down) cmd_down ;;
    run) cmd_run "$@" ;;
    push) cmd_push "$@" ;;
    pull) cmd_pull "$@" ;;
    guest-up) cmd_guest_up "$@" ;;
    disk-serve) cmd_disk_serve "$@" ;;
    disk-attach) cmd_disk_attach "$@" ;;
    disk-detach) cmd_disk_detach "$@" ;;
    disk-check) cmd_disk_check "$@" ;;
    counter) cmd_counter "$@" ;;
    kill) cmd_kill "$@" ;;
    boot) cmd_boot "$@" ;;
    remus) cmd_remus "$@" ;;
    cut-repl) cmd_cut_repl ;;
    heal-repl) cmd_heal_repl ;;
    cut-rig) cmd_cut_rig ;;
    heal-rig) cmd_heal_rig ;;
    isolate) cmd_isolate "$@" ;;
    unisolate) cmd_unisolate "$@" ;;
    ns) nsx "$@" ;;
    status) cmd_status ;;
    console) cmd_console "$@" ;;
    demo) cmd_demo "$@" ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
