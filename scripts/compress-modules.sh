#!/usr/bin/env bash
# Test input for issue 16 §3: a copy of the kernel modules an initramfs carries, compressed as
# distributions ship them (.ko.xz with kbuild's `xz --check=crc32 --lzma2=dict=1MiB`, or
# .ko.zst), with modules.dep/modules.order rewritten to the new names, so that the layout tool
# can build an initramfs whose /init must load compressed modules.
#
# usage: compress-modules.sh INITRAMFS_CPIO MODULES_ROOT KVER OUT_ROOT xz|zst
set -euo pipefail
if [[ $# -ne 5 ]]; then
    echo "usage: $0 INITRAMFS_CPIO MODULES_ROOT KVER OUT_ROOT xz|zst" >&2
    exit 2
fi
cpio_in=$1 root=$2 kver=$3 out=$4 fmt=$5
case $fmt in
    xz) compress=(xz --check=crc32 --lzma2=dict=1MiB -c) ;;
    zst) compress=(zstd -q -19 -c) ;;
    *) echo "compress-modules: format must be xz or zst (got '$fmt')" >&2; exit 2 ;;
esac
src=$root/$kver
dst=$out/$kver
rm -rf "$dst"
mkdir -p "$dst"
n=0
# The modules the plain initramfs carries (paths relative to /lib/modules/<kver>/).
while IFS= read -r path; do
    rel=${path#lib/modules/$kver/}
    mkdir -p "$dst/$(dirname "$rel")"
    "${compress[@]}" "$src/$rel" >"$dst/$rel.$fmt"
    n=$((n + 1))
done < <(cpio --quiet -t <"$cpio_in" | grep -E "^lib/modules/$kver/.*\.ko$")
[[ $n -gt 0 ]] || { echo "compress-modules: $cpio_in carries no modules for $kver" >&2; exit 1; }
sed -E "s/\.ko(:| |\$)/.ko.$fmt\1/g" "$src/modules.dep" >"$dst/modules.dep"
[[ -f $src/modules.order ]] && sed -E "s/\.ko\$/.ko.$fmt/" "$src/modules.order" >"$dst/modules.order"
[[ -f $src/modules.builtin ]] && cp "$src/modules.builtin" "$dst/modules.builtin"
echo "compress-modules: $n modules as .ko.$fmt in $dst"
