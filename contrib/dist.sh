#!/usr/bin/env bash
# contrib/dist.sh BIN_DIR [DIST_DIR]: the release tarball DIST_DIR/hsb-VERSION-x86_64-linux.tar.gz
# (DIST_DIR defaults to target/dist) from the three daemons in BIN_DIR (`just dist` passes the
# static ones), with the systemd units, example configurations, man pages generated from the
# daemons (hsb-man: $HSB_MAN, default target/debug/hsb-man), the docs, and SHA256SUMS inside
# (every file) and beside it (the tarball). Its tree is laid out for /usr/local:
#   tar -C /usr/local --strip-components=1 -xzf hsb-VERSION-x86_64-linux.tar.gz
# The archive is reproducible: sorted names, owner root, mtime of the last commit, gzip -n.
set -euo pipefail
cd "$(dirname "$0")/.."
bins=${1:?usage: contrib/dist.sh BIN_DIR [DIST_DIR]}
dist=${2:-target/dist}
man=${HSB_MAN:-target/debug/hsb-man}

version=$("$bins/hsb-primary" --version | awk '{print $2}')
name=hsb-$version-x86_64-linux
stage=$dist/$name
rm -rf "$stage" "$dist/$name.tar.gz"
mkdir -p "$stage"/{sbin,share/man/man8,share/doc/hsb,lib/systemd/system,lib/sysusers.d,lib/modules-load.d}

for b in hsb-primary hsb-standby hsb-witness; do
    install -m 0755 "$bins/$b" "$stage/sbin/$b"
done
"$man" "$stage/sbin" "$stage/share/man/man8" >/dev/null
install -m 0644 contrib/systemd/*.service "$stage/lib/systemd/system/"
install -m 0644 contrib/systemd/hsb.sysusers "$stage/lib/sysusers.d/hsb.conf"
install -m 0644 contrib/systemd/hsb-modules.conf "$stage/lib/modules-load.d/hsb.conf"
install -m 0644 README.md DEPLOY.md "$stage/share/doc/hsb/"
cp -r contrib/examples "$stage/share/doc/hsb/examples"
chmod -R u+rwX,go+rX,go-w "$stage/share/doc/hsb/examples"
# Monitoring: Prometheus alert rules (with their promtool unit tests) and a Grafana dashboard.
mkdir -p "$stage/share/doc/hsb/prometheus" "$stage/share/doc/hsb/grafana"
install -m 0644 contrib/prometheus/hsb-alerts.yml contrib/prometheus/hsb-alerts.test.yml "$stage/share/doc/hsb/prometheus/"
install -m 0644 contrib/grafana/hsb.json "$stage/share/doc/hsb/grafana/"

(cd "$stage" && find . -type f ! -name SHA256SUMS -printf '%P\n' | LC_ALL=C sort | xargs sha256sum > SHA256SUMS)

mtime=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
tar -C "$dist" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$mtime" -cf - "$name" \
    | gzip -n > "$dist/$name.tar.gz"
(cd "$dist" && sha256sum "$name.tar.gz" > SHA256SUMS)
rm -rf "$stage"
echo "$dist/$name.tar.gz"
