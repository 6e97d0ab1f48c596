#!/usr/bin/env bash
# Builds the Phase Boot GPT disk image (issue 8, `make image`) without loop mounts:
#   sfdisk on a sparse file; each vfat filesystem made with mkfs.vfat -C, filled with mtools
#   (mmd/mcopy) and dd'd into place.
# Partitions: 1 = EFI System Partition (systemd-boot, kernel, phase initramfs, loader entries
# internet/local/private with MODE as default), 2 = `phase-cache` (vfat, GPT PARTLABEL
# phase-cache) for the cache the init writes in internet mode.
#
# usage: mkimage.sh OUT MODE KERNEL INITRAMFS [CMDLINE]
# env:   ESP_MB (default 128), CACHE_MB (default 512), SYSTEMD_BOOT (systemd-bootx64.efi path),
#        EFI_BOOT_NAME (the removable-media loader name: BOOTX64.EFI, or BOOTAA64.EFI on arm64)
set -euo pipefail

if [[ $# -lt 4 ]]; then
    echo "usage: $0 OUT MODE KERNEL INITRAMFS [CMDLINE]" >&2
    exit 2
fi
out=$1 mode=$2 kernel=$3 initramfs=$4
cmdline=${5:-console=tty0 console=ttyS0,115200}
esp_mb=${ESP_MB:-128}
cache_mb=${CACHE_MB:-512}
sdboot=${SYSTEMD_BOOT:-/usr/lib/systemd/boot/efi/systemd-bootx64.efi}
efi_boot=${EFI_BOOT_NAME:-BOOTX64.EFI}

case $mode in
    internet | local | private) ;;
    *) echo "mkimage: MODE must be internet, local or private (got '$mode')" >&2; exit 2 ;;
esac
for f in "$kernel" "$initramfs" "$sdboot"; do
    [[ -f $f ]] || { echo "mkimage: $f not found" >&2; exit 1; }
done
for tool in sfdisk mkfs.vfat mmd mcopy; do
    command -v "$tool" >/dev/null || { echo "mkimage: $tool not found (run make deps)" >&2; exit 1; }
done

# Sector math: 512-byte sectors, partitions aligned to 1 MiB, 1 MiB + 33 sectors left at the end
# for the backup GPT.
mib=2048
esp_start=$mib
esp_sectors=$((esp_mb * mib))
cache_start=$((esp_start + esp_sectors))
cache_sectors=$((cache_mb * mib))
total_sectors=$((cache_start + cache_sectors + mib))

tmp="$out.tmp"
rm -f "$tmp"
truncate -s $((total_sectors * 512)) "$tmp"

# Fixed GUIDs so two builds of the same inputs give the same partition table.
sfdisk --quiet --no-reread --no-tell-kernel "$tmp" <<SFDISK
label: gpt
label-id: 5048A5E0-B007-4C0D-9E5B-000000000001
unit: sectors
first-lba: $mib
start=$esp_start, size=$esp_sectors, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=5048A5E0-B007-4C0D-9E5B-0000000000E5, name="ESP"
start=$cache_start, size=$cache_sectors, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, uuid=5048A5E0-B007-4C0D-9E5B-00000000CAC4, name="phase-cache"
SFDISK

work=$(mktemp -d)
trap 'rm -rf "$work" "$tmp"' EXIT
export MTOOLS_SKIP_CHECK=1

# ESP: a vfat filesystem built in its own file with mkfs.vfat -C and filled with mtools, then
# copied into place with dd (sparse, no loop device).
esp="$work/esp.img"
mkfs.vfat --invariant -n PHASE-ESP -i 50480001 -C "$esp" $((esp_sectors / 2)) >/dev/null
mmd -i "$esp" ::/EFI ::/EFI/BOOT ::/loader ::/loader/entries ::/phase
mcopy -i "$esp" "$sdboot" "::/EFI/BOOT/$efi_boot"
mcopy -i "$esp" "$kernel" ::/phase/kernel
mcopy -i "$esp" "$initramfs" ::/phase/initramfs
printf 'default %s.conf\ntimeout 3\nconsole-mode keep\n' "$mode" >"$work/loader.conf"
mcopy -i "$esp" "$work/loader.conf" ::/loader/loader.conf
for m in internet local private; do
    cat >"$work/$m.conf" <<ENTRY
title   Phase Boot ($m)
linux   /phase/kernel
initrd  /phase/initramfs
options $cmdline phase.mode=$m
ENTRY
    mcopy -i "$esp" "$work/$m.conf" "::/loader/entries/$m.conf"
done
dd if="$esp" of="$tmp" bs=1M seek=$((esp_start / mib)) conv=notrunc,sparse status=none

# Cache partition: empty vfat with the phase/ directory the init writes into.
cache="$work/cache.img"
mkfs.vfat --invariant -n PHASECACHE -i 50480002 -C "$cache" $((cache_sectors / 2)) >/dev/null
mmd -i "$cache" ::/phase
dd if="$cache" of="$tmp" bs=1M seek=$((cache_start / mib)) conv=notrunc,sparse status=none

mv -f "$tmp" "$out"
echo "mkimage: wrote $out (${esp_mb} MiB ESP, ${cache_mb} MiB phase-cache, default entry $mode)"
