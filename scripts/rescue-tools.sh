#!/usr/bin/env bash
# The initramfs's rescue shell and tools (phase.onfail=rescue; issue 18 §1-§3): klibc-utils'
# `sh` (a dash) and a few of its tools, with the klibc shared object named in their ELF
# interpreter field, copied from ROOT into OUT as bin/ and lib/ for the layout's [[tree]].
# ROOT is / on x86_64 (Debian's klibc-utils, installed by `make deps`) and the unpacked Debian
# arm64 packages for arm64 (scripts/arm64-debs.sh). About 240 KB, where Debian's busybox-static
# was 2 MB (0.9 MB of the 4.1 MB zstd initramfs, which crosses kexec twice); the initramfs
# needs a shell only for a person at the console: the boot itself runs no shell.
#
# usage: rescue-tools.sh ROOT OUT
set -euo pipefail
if [[ $# -ne 2 ]]; then
    echo "usage: $0 ROOT OUT" >&2
    exit 2
fi
root=${1%/} out=$2
bin=$root/usr/lib/klibc/bin
# name in the initramfs = klibc-utils' file name
tools=(sh ls cat dmesg mount umount kill mkdir ln sleep sync uname reboot poweroff)
[[ -x $bin/sh ]] || {
    echo "rescue-tools: no $bin/sh (klibc-utils); run make deps" >&2
    exit 1
}
# libklibc ships it in /lib (the same directory as /usr/lib on a merged-/usr host).
so=$(find "$root/lib" "$root/usr/lib" -maxdepth 1 -name 'klibc-*.so' 2>/dev/null | sort | head -n1)
[[ -n $so ]] || {
    echo "rescue-tools: no klibc-*.so in $root/lib (libklibc); run make deps" >&2
    exit 1
}
rm -rf "$out.tmp"
mkdir -p "$out.tmp/bin" "$out.tmp/lib"
install -m 0755 "$so" "$out.tmp/lib/"
for t in "${tools[@]}"; do
    install -m 0755 "$bin/$t" "$out.tmp/bin/$t"
done
# ps: klibc's is called minips.
install -m 0755 "$bin/minips" "$out.tmp/bin/ps"
# Every tool must load the shared object copied above (its interpreter is /lib/klibc-<id>.so).
want=/lib/$(basename "$so")
for f in "$out.tmp"/bin/*; do
    interp=$(LC_ALL=C readelf -l "$f" | sed -n 's/.*Requesting program interpreter: \(.*\)]$/\1/p')
    [[ $interp == "$want" ]] || {
        echo "rescue-tools: $f asks for interpreter '$interp', not $want" >&2
        exit 1
    }
done
rm -rf "$out"
mv "$out.tmp" "$out"
echo "rescue-tools: $out: klibc $(basename "$so"), ${#tools[@]} tools and ps ($(du -sb "$out" | cut -f1) bytes)"
