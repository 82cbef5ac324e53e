#!/usr/bin/env bash
# Builds the images of the two-host Xen test rig from Debian packages only, cached in
# ${HSB_RIG_DIR:-<repo>/target/xen-rig}. Idempotent: each step is skipped when its output exists
# (delete a file or the directory to redo it). Needs root (debootstrap), apt, cpio, cargo.
#
# Outputs (in $HSB_RIG_DIR):
#   xen.bin            Xen 4.17 hypervisor (multiboot ELF, from xen-hypervisor-4.17-amd64)
#   vmlinuz            Debian bookworm kernel, used for dom0 and for the guest
#   dom0.cpio          dom0 root filesystem + modules + /init, uncompressed cpio (root=/dev/ram0)
#   guest-initrd.cpio  the guest's busybox initramfs with hsb-guest-counter (also inside dom0.cpio)
#   guest.cfg          the guest's xl config (also inside dom0.cpio as /etc/xen/hsb-guest.cfg)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
RIG="${HSB_RIG_DIR:-$repo/target/xen-rig}"
SUITE=bookworm
MIRROR="${HSB_RIG_MIRROR:-http://deb.debian.org/debian}"
TARGET=x86_64-unknown-linux-gnu
T0=$(date +%s)

log() { printf '[build-images +%4ss] %s\n' "$(($(date +%s) - T0))" "$*"; }
die() { printf '[build-images] ERROR: %s\n' "$*" >&2; exit 1; }
# Every external step is bounded in time.
bounded() { local secs=$1; shift; timeout --kill-after=10 "$secs" "$@"; }

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, device nodes in the cpio)"
for c in apt-get dpkg debootstrap cpio cargo strip depmod; do
    command -v "$c" >/dev/null || die "missing tool: $c"
done
mkdir -p "$RIG/debs"

# ---- kernel version: the one linux-image-amd64 depends on, unless HSB_RIG_KVER is set ----
KPKG="${HSB_RIG_KPKG:-}"
if [ -z "$KPKG" ]; then
    KPKG=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-6\.1\.0-[0-9]+-amd64$/ {print $2; exit}')
    [ -n "$KPKG" ] || KPKG=$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' | awk '{print $1}' | sort -V | tail -1)
fi
[ -n "$KPKG" ] || die "no linux-image-6.1.0-*-amd64 package known to apt (run apt-get update)"
KVER=${KPKG#linux-image-}
log "kernel package $KPKG (version $KVER), cache $RIG"

# ---- 1. download the .debs ----
fetch_deb() { # package
    local p=$1
    if ! ls "$RIG/debs/${p}_"*.deb >/dev/null 2>&1; then
        log "apt-get download $p"
        (cd "$RIG/debs" && bounded 600 apt-get download -q "$p" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
        ls "$RIG/debs/${p}_"*.deb >/dev/null 2>&1 || die "download of $p failed"
    fi
}
fetch_deb xen-hypervisor-4.17-amd64
fetch_deb "$KPKG"
fetch_deb busybox-static

extract() { # package dir
    if [ ! -e "$2/.done" ]; then
        rm -rf "$2"; mkdir -p "$2"
        dpkg -x "$RIG/debs/${1}_"*.deb "$2"
        touch "$2/.done"
    fi
}
extract xen-hypervisor-4.17-amd64 "$RIG/x/xen"
extract "$KPKG" "$RIG/x/kernel"
extract busybox-static "$RIG/x/busybox"

# ---- 2. hypervisor and kernel ----
if [ ! -s "$RIG/xen.bin" ]; then
    zcat "$RIG"/x/xen/boot/xen-4.17-amd64.gz >"$RIG/xen.bin.tmp" && mv "$RIG/xen.bin.tmp" "$RIG/xen.bin"
    log "xen.bin: $(du -h "$RIG/xen.bin" | cut -f1)"
fi
if [ ! -s "$RIG/vmlinuz" ] || ! cmp -s "$RIG/x/kernel/boot/vmlinuz-$KVER" "$RIG/vmlinuz"; then
    cp "$RIG/x/kernel/boot/vmlinuz-$KVER" "$RIG/vmlinuz"
    log "vmlinuz: $KVER"
fi
MODSRC="$RIG/x/kernel/lib/modules/$KVER"
[ -d "$MODSRC" ] || die "no modules in $KPKG"
[ -s "$MODSRC/modules.dep" ] || depmod -b "$RIG/x/kernel" "$KVER"

# copy_modules ROOT MOD... : the modules and everything they depend on, then depmod
copy_modules() {
    local root=$1; shift
    local m f rel
    mkdir -p "$root/lib/modules/$KVER"
    cp "$MODSRC"/modules.order "$MODSRC"/modules.builtin* "$root/lib/modules/$KVER/" 2>/dev/null || true
    for m in "$@"; do
        if grep -qE "/${m//-/[-_]}\.ko(\.[a-z]+)?$" "$MODSRC/modules.builtin" 2>/dev/null; then
            continue # built in
        fi
        modprobe -d "$RIG/x/kernel" -S "$KVER" --show-depends "$m" 2>/dev/null | awk '$1 == "insmod" {print $2}' |
            while read -r f; do
                rel=${f#"$RIG/x/kernel"}
                mkdir -p "$root$(dirname "$rel")"
                cp -u "$f" "$root$rel"
            done
        modprobe -d "$RIG/x/kernel" -S "$KVER" --show-depends "$m" >/dev/null 2>&1 ||
            log "warning: module $m not found in $KPKG"
    done
    depmod -b "$root" "$KVER"
}

# ---- 3. the guest: busybox initramfs with the counter ----
log "building hsb-guest-counter (static)"
(cd "$repo" && RUSTFLAGS="-C target-feature=+crt-static" bounded 900 cargo build -q --release --target "$TARGET" -p hsb-tests --bin hsb-guest-counter)
COUNTER="${CARGO_TARGET_DIR:-$repo/target}/$TARGET/release/hsb-guest-counter"
[ -x "$COUNTER" ] || die "no $COUNTER"

G="$RIG/guest-root"
rm -rf "$G"; mkdir -p "$G"/{bin,sbin,etc,proc,sys,dev,tmp,run,usr/bin,usr/sbin}
cp "$RIG/x/busybox/bin/busybox" "$G/bin/busybox"
for a in $("$G/bin/busybox" --list); do [ -e "$G/bin/$a" ] || ln -s busybox "$G/bin/$a"; done
strip -o "$G/bin/hsb-guest-counter" "$COUNTER"
copy_modules "$G" xen-netfront
cat >"$G/init" <<'EOF'
#!/bin/sh
# hsb rig guest: network from hsb.ip= on the kernel command line, the counter on port 7000.
export PATH=/bin:/sbin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev 2>/dev/null
dmesg -n 1
modprobe xen-netfront 2>/dev/null
ip=$(sed -n 's/.*hsb\.ip=\([^ ]*\).*/\1/p' /proc/cmdline)
gw=$(sed -n 's/.*hsb\.gw=\([^ ]*\).*/\1/p' /proc/cmdline)
hostname hsb-guest
ip link set lo up
i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.2; i=$((i+1)); done
# Announce the address when the vif reconnects after a migration or a failover (netfront calls
# netdev_notify_peers; IPv4 sends a gratuitous ARP only with arp_notify), as live migration needs.
echo 1 >/proc/sys/net/ipv4/conf/all/arp_notify
echo 1 >/proc/sys/net/ipv4/conf/default/arp_notify
ip link set eth0 up
[ -n "$ip" ] && ip addr add "$ip" dev eth0
[ -n "$gw" ] && ip route add default via "$gw"
(while true; do /bin/hsb-guest-counter 0.0.0.0:7000; sleep 1; done) &
echo "HSB-GUEST-READY ip=$ip"
while true; do setsid sh -c "exec sh </dev/hvc0 >/dev/hvc0 2>&1"; sleep 1; done
EOF
chmod 755 "$G/init"
(cd "$G" && find . -print0 | cpio --null -o -H newc --quiet -R 0:0) >"$RIG/guest-initrd.cpio"
log "guest-initrd.cpio: $(du -h "$RIG/guest-initrd.cpio" | cut -f1)"

cat >"$RIG/guest.cfg" <<'EOF'
# hsb rig guest (PVH, RAM-only state). Under TCG, tsc_mode="native" is required.
name = "hsb-guest"
type = "pvh"
kernel = "/var/lib/hsb-rig/vmlinuz"
ramdisk = "/var/lib/hsb-rig/guest-initrd.cpio"
extra = "console=hvc0 hsb.ip=10.99.0.21/24 hsb.gw=10.99.0.254"
memory = 128
vcpus = 1
tsc_mode = "native"
vif = [ 'bridge=xenbr0,mac=00:16:3e:00:00:21' ]
on_crash = "preserve"
on_poweroff = "destroy"
on_reboot = "destroy"
EOF

# ---- 4. dom0 root filesystem ----
R="$RIG/dom0-root"
if [ ! -e "$R/.debootstrap-done" ]; then
    rm -rf "$R"
    log "debootstrap $SUITE (minbase + xen-utils-4.17 ...), a few minutes"
    bounded 1800 debootstrap --variant=minbase \
        --include=xen-utils-4.17,xenstore-utils,iproute2,kmod,busybox-static,procps,iputils-ping,socat \
        "$SUITE" "$R" "$MIRROR" >"$RIG/debootstrap.log" 2>&1 || { tail -20 "$RIG/debootstrap.log"; die "debootstrap failed (log $RIG/debootstrap.log)"; }
    touch "$R/.debootstrap-done"
fi
# Trimmed every time (idempotent): the whole root is unpacked into RAM at each boot, under TCG,
# so every MB costs boot time. Nothing here is used without systemd/udev/apt; Xen's python tools
# (pygrub, ...) are not needed for PVH guests with a direct kernel.
rm -rf "$R"/usr/share/{doc,man,info,locale,i18n,zoneinfo,lintian,linda,bash-completion} \
    "$R"/var/cache/* "$R"/var/lib/apt/lists/* "$R"/var/lib/dpkg/info "$R"/var/log/*.log \
    "$R"/usr/lib/x86_64-linux-gnu/gconv "$R"/boot/* "$R"/usr/lib/udev/hwdb.d "$R"/usr/lib/udev/hwdb.bin \
    "$R"/usr/lib/python3* "$R"/usr/bin/python3* "$R"/usr/share/python3 "$R"/usr/lib/apt \
    "$R"/usr/lib/xen-4.17/boot "$R"/usr/share/qemu* 2>/dev/null || true
mkdir -p "$R/var/lib/dpkg/info" "$R/var/cache"
log "dom0 root: $(du -sh --exclude=lib/modules "$R" | cut -f1) (trimmed)"

log "dom0: modules, /init, guest files"
rm -rf "$R/lib/modules"
copy_modules "$R" xenfs xen-evtchn xen-privcmd xen-gntdev xen-gntalloc xen-netback xen-blkback \
    bridge e1000 sch_plug ifb act_mirred cls_matchall cls_u32 sch_ingress sch_htb sch_netem tun loop
mkdir -p "$R"/var/lib/hsb-rig "$R"/etc/xen "$R"/usr/local/sbin "$R"/etc/hsb
cp "$RIG/vmlinuz" "$RIG/guest-initrd.cpio" "$R/var/lib/hsb-rig/"
cp "$RIG/guest.cfg" "$R/etc/xen/hsb-guest.cfg"
install -m 755 "$here/dom0-init" "$R/init"
# xl's lock directory, and no udev: libxl runs the hotplug scripts itself.
sed -i 's/^#\?run_hotplug_scripts=.*/run_hotplug_scripts=1/' "$R/etc/xen/xl.conf" 2>/dev/null || true
(cd "$R" && find . -path ./.debootstrap-done -prune -o -print0 | cpio --null -o -H newc --quiet -R 0:0) >"$RIG/dom0.cpio.tmp"
mv "$RIG/dom0.cpio.tmp" "$RIG/dom0.cpio"
log "dom0.cpio: $(du -h "$RIG/dom0.cpio" | cut -f1)"
log "done: $RIG/{xen.bin,vmlinuz,dom0.cpio,guest-initrd.cpio,guest.cfg}"
