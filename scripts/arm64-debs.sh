#!/usr/bin/env bash
# The arm64 pieces a x86_64 host cannot install as its own (issue 17 §1): Debian's arm64 kernel
# with its modules, a static arm64 busybox, klibc-utils with libklibc (the initramfs's rescue
# tools: scripts/rescue-tools.sh) and systemd-bootaa64.efi, downloaded with
# `apt-get download` and unpacked with `dpkg-deb -x` into OUT (never installed: they would
# replace the host's own busybox-static and systemd-boot-efi). Debian's kernel package ships
# no modules.dep, so `depmod -b` writes it. Prints the kernel version it unpacked.
#
# usage: arm64-debs.sh OUT        (needs `dpkg --add-architecture arm64`; make deps ARCH=arm64)
set -euo pipefail
if [[ $# -ne 1 ]]; then
    echo "usage: $0 OUT" >&2
    exit 2
fi
out=$1
dpkg --print-foreign-architectures | grep -qx arm64 || {
    echo "arm64-debs: dpkg does not know arm64; run make deps ARCH=arm64" >&2
    exit 1
}
# linux-image-arm64 is a metapackage; the kernel is the versioned package it depends on.
kpkg=$(apt-cache depends linux-image-arm64:arm64 | sed -n 's/^ *Depends: \(linux-image-[0-9][^:]*\).*/\1/p' | head -n1)
[[ -n $kpkg ]] || { echo "arm64-debs: no kernel package behind linux-image-arm64:arm64" >&2; exit 1; }
dl=$(mktemp -d)
trap 'rm -rf "$dl" "$out.tmp"' EXIT
chmod 755 "$dl" # apt's _apt user writes the download here
# (apt warns that root downloads unsandboxed: noise here, filtered; failures are caught below.)
(cd "$dl" && apt-get download -q "$kpkg:arm64" busybox-static:arm64 klibc-utils:arm64 libklibc:arm64 \
    systemd-boot-efi:arm64 2>&1 |
    grep -v 'unsandboxed' || true)
n=$(find "$dl" -name '*.deb' | wc -l)
[[ $n -eq 5 ]] || {
    echo "arm64-debs: apt-get download fetched $n of 5 packages ($kpkg, busybox-static, klibc-utils, libklibc, systemd-boot-efi)" >&2
    exit 1
}
rm -rf "$out.tmp"
mkdir -p "$out.tmp"
for deb in "$dl"/*.deb; do
    echo "arm64-debs: unpacking $(basename "$deb")"
    dpkg-deb -x "$deb" "$out.tmp"
done
kver=$(ls "$out.tmp/lib/modules")
[[ -f $out.tmp/boot/vmlinuz-$kver ]] || { echo "arm64-debs: no vmlinuz-$kver in $kpkg" >&2; exit 1; }
depmod -b "$out.tmp" "$kver"
rm -rf "$out"
mv "$out.tmp" "$out"
echo "arm64-debs: $out has kernel $kver, busybox, klibc-utils and systemd-bootaa64.efi"
