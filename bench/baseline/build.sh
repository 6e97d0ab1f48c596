#!/usr/bin/env bash
# Builds the seed-003 shell baseline initramfs for `make bench` (issue 10):
#   bench/baseline/build.sh <phase initramfs.cpio (uncompressed)> <out dir>
# It takes the kernel modules and modules.list from the phase initramfs (same kernel, same
# modules), adds static busybox, Debian's kexec-tools with the libraries ldd lists, the
# baseline /init and the udhcpc hook, and writes <out dir>/initramfs.cpio.zst (zstd -19, like
# the phase initramfs). Env: BUSYBOX (/bin/busybox), KEXEC (/usr/sbin/kexec).
set -euo pipefail
src=$(realpath "${1:?usage: build.sh PHASE_INITRAMFS_CPIO OUT_DIR}")
out=${2:?usage: build.sh PHASE_INITRAMFS_CPIO OUT_DIR}
here=$(cd "$(dirname "$0")" && pwd)
busybox=${BUSYBOX:-/bin/busybox}
kexec=${KEXEC:-/usr/sbin/kexec}
[ -x "$kexec" ] || { echo "baseline: $kexec missing (apt-get install kexec-tools; make bench-deps)" >&2; exit 1; }
file -L "$busybox" | grep -q static || { echo "baseline: $busybox is not static (busybox-static)" >&2; exit 1; }
mkdir -p "$out"
tree=$(mktemp -d "$out/tree.XXXXXX")
trap 'rm -rf "$tree"' EXIT
(cd "$tree" && cpio -idm --quiet 'lib/modules/*' './lib/modules/*' 'etc/phase/modules.list' './etc/phase/modules.list' < "$src")
[ -f "$tree/etc/phase/modules.list" ] || { echo "baseline: no etc/phase/modules.list in $src" >&2; exit 1; }
mkdir -p "$tree"/{bin,sbin,dev,proc,sys,run,tmp,etc,usr/bin,usr/sbin}
install -m 0755 "$busybox" "$tree/bin/busybox"
ln -sf busybox "$tree/bin/sh"
mknod -m 600 "$tree/dev/console" c 5 1 2>/dev/null || true
install -m 0755 "$here/init" "$tree/init"
install -m 0755 "$here/manifest-hash.sh" "$tree/bin/manifest-hash.sh"
install -m 0755 "$here/udhcpc.script" "$tree/etc/udhcpc.script"
# kexec-tools is dynamic on Debian: copy it with every library (and the loader) ldd names.
install -D -m 0755 "$kexec" "$tree/usr/sbin/kexec"
ldd "$kexec" | grep -o '/[^ ]*' | while read -r lib; do
    install -D -m 0755 "$(realpath "$lib")" "$tree$lib"
done
find "$tree" -exec touch -h -d @0 {} +
(cd "$tree" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --reproducible --quiet) > "$out/initramfs.cpio"
zstd -19 -T1 -q -f --no-progress "$out/initramfs.cpio" -o "$out/initramfs.cpio.zst"
rm -f "$out/initramfs.cpio"
echo "baseline: $out/initramfs.cpio.zst ($(stat -c %s "$out/initramfs.cpio.zst") bytes)"
