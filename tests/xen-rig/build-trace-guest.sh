#!/usr/bin/env bash
# Builds the page-trace guest of the Xen rig (`just xen-trace`): the rig's guest initramfs
# (build-images.sh's guest-root) plus redis-server from Debian's redis-tools, started by the
# guest's /init when the kernel command line says hsb.workload=redis, so that a trace records a
# real key-value store's memory under load (redis-benchmark from the rig's namespace).
#
# Outputs (in ${HSB_RIG_DIR:-<repo>/target/xen-rig}):
#   guest-redis-initrd.cpio  the guest's initramfs with redis-server and its libraries
#   guest-redis.cfg          the rig guest's xl config with that initramfs and hsb.workload=redis
# Needs root, apt-get (redis-tools is installed on this machine when missing: its
# redis-benchmark is the client, its redis-server binary and libraries go into the guest).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
RIG="${HSB_RIG_DIR:-$repo/target/xen-rig}"
log() { printf '[build-trace-guest] %s\n' "$*"; }
die() { printf '[build-trace-guest] ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root"
[ -d "$RIG/guest-root" ] && [ -f "$RIG/guest.cfg" ] || die "no $RIG/guest-root: run just xen-rig-images first"
if ! command -v redis-benchmark >/dev/null || [ ! -x /usr/bin/redis-check-rdb ]; then
    log "installing redis-tools (apt-get)"
    timeout 600 apt-get install -y -qq redis-tools >/dev/null || die "apt-get install redis-tools failed"
fi

G="$RIG/guest-redis-root"
rm -rf "$G"
cp -a "$RIG/guest-root" "$G"
# redis-server is redis-check-rdb under another name (the binary picks its role from argv[0]).
cp /usr/bin/redis-check-rdb "$G/bin/redis-server"
for lib in $(ldd /usr/bin/redis-check-rdb | grep -o '/[^ ]*'); do
    mkdir -p "$G$(dirname "$lib")"
    cp -L "$lib" "$G$lib"
    # The initramfs stays in the guest's RAM: no symbols.
    strip --strip-unneeded "$G$lib" 2>/dev/null || true
done
strip --strip-unneeded "$G/bin/redis-server"
# The lib64 loader path the binary names.
[ -e "$G/lib64/ld-linux-x86-64.so.2" ] || die "the dynamic loader was not copied"
# Start redis before the counter when asked: no persistence (RAM only, like the counter).
grep -q '^(while true; do /bin/hsb-guest-counter' "$G/init" || die "the guest's /init has changed: no counter line to start redis before"
sed -i '/^(while true; do \/bin\/hsb-guest-counter/i\
if grep -q "hsb.workload=redis" /proc/cmdline; then\
    redis-server --bind 0.0.0.0 --port 6379 --protected-mode no --save "" --appendonly no --maxmemory 24mb --maxmemory-policy allkeys-lru --daemonize yes --logfile /tmp/redis.log \&\& echo "HSB-GUEST-WORKLOAD redis on port 6379"\
fi' "$G/init"
(cd "$G" && find . -print0 | cpio --null -o -H newc --quiet -R 0:0) >"$RIG/guest-redis-initrd.cpio"
sed -e 's|guest-initrd.cpio|guest-redis-initrd.cpio|' \
    -e 's|^extra = "\(.*\)"|extra = "\1 hsb.workload=redis"|' \
    -e '1s|.*|# hsb rig guest with redis (page traces: just xen-trace)|' \
    "$RIG/guest.cfg" >"$RIG/guest-redis.cfg"
grep -q 'hsb.workload=redis' "$RIG/guest-redis.cfg" || die "guest-redis.cfg: no extra line to extend"
log "guest-redis-initrd.cpio: $(du -h "$RIG/guest-redis-initrd.cpio" | cut -f1); guest-redis.cfg written"
