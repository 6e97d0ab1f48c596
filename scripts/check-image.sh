#!/usr/bin/env bash
# Checks a disk image made by scripts/mkimage.sh (issue 8 tests): the GPT partition table
# (`sfdisk -d`) and the ESP and cache contents (`mdir`/`mtype -i IMG@@OFFSET`).
#
# usage: check-image.sh IMG MODE [KERNEL INITRAMFS]
#   With KERNEL and INITRAMFS, the copies on the ESP must be byte-identical to them.
# env: EFI_BOOT_NAME (BOOTX64.EFI, the default, or BOOTAA64.EFI for an arm64 image)
# Exit 0 when every check passes, 1 on the first failure (named on stderr).
set -euo pipefail

if [[ $# -ne 2 && $# -ne 4 ]]; then
    echo "usage: $0 IMG MODE [KERNEL INITRAMFS]" >&2
    exit 2
fi
img=$1 mode=$2
fail() { echo "check-image: FAIL: $*" >&2; exit 1; }
export MTOOLS_SKIP_CHECK=1
efi_boot=${EFI_BOOT_NAME:-BOOTX64.EFI}

[[ -f $img ]] || fail "$img not found"
dump=$(sfdisk -d "$img") || fail "sfdisk -d $img: no partition table"
grep -q '^label: gpt$' <<<"$dump" || fail "partition table is not GPT"
parts=$(grep -c ' : start=' <<<"$dump" || true)
[[ $parts -eq 2 ]] || fail "expected 2 partitions, found $parts"
esp_line=$(grep -i 'type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B' <<<"$dump") || fail "no EFI System Partition"
cache_line=$(grep 'name="phase-cache"' <<<"$dump") || fail "no partition with PARTLABEL phase-cache"
start_of() { sed -E 's/.*start= *([0-9]+),.*/\1/' <<<"$1"; }
esp="$img@@$(($(start_of "$esp_line") * 512))"
cache="$img@@$(($(start_of "$cache_line") * 512))"

listing=$(mdir -i "$esp" -/ -b ::) || fail "ESP is not a FAT filesystem"
for f in "::/EFI/BOOT/$efi_boot" ::/loader/loader.conf ::/phase/kernel ::/phase/initramfs \
    ::/loader/entries/internet.conf ::/loader/entries/local.conf ::/loader/entries/private.conf; do
    grep -qixF "$f" <<<"$listing" || fail "ESP lacks $f"
done
loader=$(mtype -i "$esp" ::/loader/loader.conf)
grep -qx "default $mode.conf" <<<"$loader" || fail "loader.conf default is not $mode.conf: $loader"
for m in internet local private; do
    entry=$(mtype -i "$esp" "::/loader/entries/$m.conf")
    grep -q "^linux  */phase/kernel$" <<<"$entry" || fail "$m.conf has no linux /phase/kernel"
    grep -q "^initrd  */phase/initramfs$" <<<"$entry" || fail "$m.conf has no initrd /phase/initramfs"
    grep -q "^options .*phase.mode=$m\b" <<<"$entry" || fail "$m.conf options lack phase.mode=$m"
done
# systemd-boot is a PE/COFF binary: "MZ" header.
[[ $(mtype -i "$esp" "::/EFI/BOOT/$efi_boot" | head -c 2) == MZ ]] || fail "$efi_boot is not a PE binary"
if [[ $# -eq 4 ]]; then
    cmp -s <(mtype -i "$esp" ::/phase/kernel) "$3" || fail "ESP kernel differs from $3"
    cmp -s <(mtype -i "$esp" ::/phase/initramfs) "$4" || fail "ESP initramfs differs from $4"
fi
mdir -i "$cache" -b :: | grep -qixE "::/phase/?" || fail "phase-cache has no phase/ directory"
echo "check-image: $img ok (GPT: ESP + phase-cache; default $mode.conf)"
