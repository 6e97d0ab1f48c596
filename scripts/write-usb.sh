#!/usr/bin/env bash
# Writes a Phase Boot disk image to a USB stick (issue 8, `make write-usb DEV=/dev/sdX`).
# Refuses anything that is not a whole block device, and any disk with a mounted partition
# (or used as swap); asks for confirmation by typing the device name (no stdin: refused).
#
# usage: write-usb.sh DEV IMAGE
set -euo pipefail

dev=${1:-} img=${2:-}
fail() { echo "write-usb: $*" >&2; exit 1; }
[[ -n $dev && -n $img ]] || fail "usage: make write-usb DEV=/dev/sdX [MODE=local|internet|private]"
[[ -f $img ]] || fail "image $img not found: run make image first"
[[ -b $dev ]] || fail "$dev is not a block device"
type=$(lsblk -dno TYPE "$dev" 2>/dev/null || true)
[[ $type == disk ]] || fail "$dev is not a whole disk (lsblk TYPE=${type:-unknown})"
mounted=$(lsblk -nro NAME,MOUNTPOINTS "$dev" 2>/dev/null | awk 'NF > 1 { print "/dev/" $1 " on " $2 }' || true)
[[ -z $mounted ]] || fail "$dev has mounted filesystems, refusing:"$'\n'"$mounted"
if grep -q "^$(readlink -f "$dev")" /proc/swaps; then fail "$dev is in use as swap"; fi
img_size=$(stat -c %s "$img")
dev_size=$(lsblk -bdno SIZE "$dev")
(( dev_size >= img_size )) || fail "$dev ($dev_size bytes) is smaller than $img ($img_size bytes)"

lsblk -o NAME,SIZE,MODEL,TRAN "$dev" >&2 || true
echo "write-usb: this ERASES everything on $dev. Type the device name ($dev) to continue:" >&2
if ! read -r answer || [[ $answer != "$dev" ]]; then
    fail "not confirmed, nothing written"
fi
dd if="$img" of="$dev" bs=4M conv=fsync,sparse status=progress
sync
echo "write-usb: wrote $img to $dev"
