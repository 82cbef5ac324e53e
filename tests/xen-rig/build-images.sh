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
#   guest-disk.cfg     the same guest with a data disk, phy:/dev/nbd0 as xvdb
#                      (inside dom0.cpio as /etc/xen/hsb-guest-disk.cfg)
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
# dom0's NBD client (the guest's data disk is served over NBD on a unix socket), unpacked into the
# dom0 root below whether or not that root was bootstrapped before it was added.
DOM0_EXTRA_DEBS="nbd-client libnl-3-200 libnl-genl-3-200"
for p in $DOM0_EXTRA_DEBS; do fetch_deb "$p"; done

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
# xen-blkfront and ext4 (modular in Debian's kernel, with jbd2, mbcache, crc16, crc32c) for the
# data disk of hsb-guest-disk.cfg.
copy_modules "$G" xen-netfront xen-blkfront crc32c_generic ext4
cat >"$G/init" <<'EOF'
#!/bin/sh
# hsb rig guest: network from hsb.ip= on the kernel command line, the counter on port 7000; with a
# data disk (a vbd in xenstore: hsb-guest-disk.cfg), /dev/xvdb (ext4) on /data and the counter's
# records in /data/records.
export PATH=/bin:/sbin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev 2>/dev/null
dmesg -n 1
# xenbus lists the guest's devices before /init runs: load the disk's drivers only if it has one.
vbd=$(ls /sys/bus/xen/devices 2>/dev/null | grep '^vbd-' | tr '\n' ' ')
# crc32c by name: ext4 asks the crypto API for it (a softdep, which busybox modprobe does not follow).
if [ -n "$vbd" ]; then modprobe -a xen-netfront xen-blkfront crc32c_generic ext4; else modprobe xen-netfront; fi 2>/dev/null
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
records=""
if [ -n "$vbd" ]; then
    mkdir -p /data
    i=0; while [ ! -b /dev/xvdb ] && [ $i -lt 100 ]; do sleep 0.2; i=$((i+1)); done
    if [ ! -b /dev/xvdb ]; then
        echo "HSB-GUEST-DISK ERROR: no /dev/xvdb after 20 s (xenbus devices: $vbd)"
    elif err=$(mount -t ext4 /dev/xvdb /data 2>&1); then
        records=/data/records
        echo "HSB-GUEST-DISK /dev/xvdb mounted on /data ($(grep ' /data ' /proc/mounts | cut -d' ' -f4))"
    else
        echo "HSB-GUEST-DISK ERROR: mount -t ext4 /dev/xvdb /data failed: $err"
    fi
    dmesg | grep -E 'blkfront|xvdb|EXT4' | sed 's/^/HSB-GUEST-DISK kernel: /'
fi
(while true; do /bin/hsb-guest-counter 0.0.0.0:7000 ${records:+--records $records}; sleep 1; done) &
echo "HSB-GUEST-READY ip=$ip records=${records:-none}"
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
# The same guest (same name, address and MAC) with a data disk: the block device the NBD client
# attaches in dom0 (`nbd-client -unix /run/hsb/guest.nbd /dev/nbd0`), ext4, mounted on /data.
{
    echo '# hsb rig guest (PVH) with a data disk: xvdb is dom0'"'"'s /dev/nbd0 (an NBD export, e.g. hsb-primary'"'"'s).'
    sed 1d "$RIG/guest.cfg"
    echo "disk = [ 'phy:/dev/nbd0,xvdb,w' ]"
} >"$RIG/guest-disk.cfg"

# ---- 4. dom0 root filesystem ----
R="$RIG/dom0-root"
if [ ! -e "$R/.debootstrap-done" ]; then
    rm -rf "$R"
    log "debootstrap $SUITE (minbase + xen-utils-4.17 ...), a few minutes"
    bounded 1800 debootstrap --variant=minbase \
        --include=xen-utils-4.17,xenstore-utils,iproute2,kmod,busybox-static,procps,iputils-ping,socat,e2fsprogs \
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
# nbd-client and its libnl, unpacked beside (not into the root: tar would replace the root's /sbin and
# /lib symlinks by directories) and copied in; no maintainer scripts (debconf, systemd units).
# e2fsprogs (mkfs.ext4, e2fsck, debugfs) comes with debootstrap.
for p in $DOM0_EXTRA_DEBS; do extract "$p" "$RIG/x/$p"; done
install -m 755 "$RIG/x/nbd-client/sbin/nbd-client" "$R/usr/sbin/nbd-client"
cp -a "$RIG"/x/libnl-3-200/lib/x86_64-linux-gnu/. "$RIG"/x/libnl-genl-3-200/lib/x86_64-linux-gnu/. \
    "$R/usr/lib/x86_64-linux-gnu/"
for f in sbin/nbd-client sbin/mkfs.ext4 sbin/e2fsck sbin/debugfs; do
    [ -e "$R/usr/$f" ] || [ -e "$R/$f" ] || die "dom0 root: no $f"
done
missing=$(chroot "$R" /bin/sh -c 'for b in /usr/sbin/nbd-client /sbin/mke2fs /sbin/e2fsck; do ldd $b; done' 2>&1 | grep 'not found' || true)
[ -z "$missing" ] || die "dom0 root: libraries missing: $missing"
log "dom0 root: $(du -sh --exclude=lib/modules "$R" | cut -f1) (trimmed)"

log "dom0: modules, /init, guest files"
rm -rf "$R/lib/modules"
copy_modules "$R" xenfs xen-evtchn xen-privcmd xen-gntdev xen-gntalloc xen-netback xen-blkback \
    bridge e1000 sch_plug ifb act_mirred cls_matchall cls_u32 sch_ingress sch_htb sch_netem tun loop \
    nbd ext4
# /dev/nbd0-3 only (the default 16 devices cost boot time for nothing).
mkdir -p "$R/etc/modprobe.d"
echo "options nbd nbds_max=4" >"$R/etc/modprobe.d/hsb-rig.conf"
mkdir -p "$R"/var/lib/hsb-rig "$R"/etc/xen "$R"/usr/local/sbin "$R"/etc/hsb
cp "$RIG/vmlinuz" "$RIG/guest-initrd.cpio" "$R/var/lib/hsb-rig/"
cp "$RIG/guest.cfg" "$R/etc/xen/hsb-guest.cfg"
cp "$RIG/guest-disk.cfg" "$R/etc/xen/hsb-guest-disk.cfg"
install -m 755 "$here/dom0-init" "$R/init"
# xl's lock directory, and no udev: libxl runs the hotplug scripts itself.
sed -i 's/^#\?run_hotplug_scripts=.*/run_hotplug_scripts=1/' "$R/etc/xen/xl.conf" 2>/dev/null || true
(cd "$R" && find . -path ./.debootstrap-done -prune -o -print0 | cpio --null -o -H newc --quiet -R 0:0) >"$RIG/dom0.cpio.tmp"
mv "$RIG/dom0.cpio.tmp" "$RIG/dom0.cpio"
log "dom0.cpio: $(du -h "$RIG/dom0.cpio" | cut -f1)"
log "done: $RIG/{xen.bin,vmlinuz,dom0.cpio,guest-initrd.cpio,guest.cfg,guest-disk.cfg}"
