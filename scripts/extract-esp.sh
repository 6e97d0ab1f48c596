#!/usr/bin/env bash
# `make esp` (seed 003 "Build System Pattern"): copies the EFI System Partition out of a disk
# image that mkimage.sh built, as a FAT image of its own (for users who write an ESP into a
# disk layout of their own, or dd it onto an existing ESP partition of the same size).
#
# usage: extract-esp.sh DISK_IMAGE OUT
set -euo pipefail
if [[ $# -ne 2 ]]; then
    echo "usage: $0 DISK_IMAGE OUT" >&2
    exit 2
fi
disk=$1 out=$2
[[ -f $disk ]] || { echo "esp: $disk not found (make image first)" >&2; exit 1; }
# The ESP is the partition of type C12A7328-F81F-11D2-BA4B-00A0C93EC93B: "start=N, size=M".
line=$(sfdisk -d "$disk" | grep -i 'type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B' | head -n 1)
[[ -n $line ]] || { echo "esp: $disk has no EFI System Partition" >&2; exit 1; }
start=$(sed -E 's/.*start= *([0-9]+).*/\1/' <<<"$line")
size=$(sed -E 's/.*size= *([0-9]+).*/\1/' <<<"$line")
dd if="$disk" of="$out.tmp" bs=512 skip="$start" count="$size" conv=sparse status=none
# A FAT boot sector ends in 55 AA; anything else means the offsets were wrong.
[[ $(od -An -tx1 -j510 -N2 "$out.tmp" | tr -d ' ') == 55aa ]] ||
    { rm -f "$out.tmp"; echo "esp: partition at sector $start is not a FAT filesystem" >&2; exit 1; }
mv -f "$out.tmp" "$out"
echo "esp: $out ($((size / 2048)) MiB, from $disk sectors $start..$((start + size - 1)))"
