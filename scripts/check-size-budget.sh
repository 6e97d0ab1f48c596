#!/usr/bin/env bash
# Checks the initramfs against initramfs-layout/size-budget.txt (issue 18 §2), so it cannot grow
# back unnoticed. Fails naming each part over its budget, with its size and the budget.
#
# usage: check-size-budget.sh INITRAMFS.cpio INITRAMFS.cpio.zst [BUDGET_FILE]
set -euo pipefail
cpio_file=$1 compressed=$2
budget=${3:-$(dirname "$0")/../initramfs-layout/size-budget.txt}
[[ -f $cpio_file && -f $compressed ]] || { echo "size-budget: $cpio_file or $compressed missing (make initramfs)" >&2; exit 2; }

declare -A size=([compressed]=$(stat -c %s "$compressed"))
# Unpacked into a scratch directory (cpio -tv's columns shift for device nodes); device nodes
# that cannot be created without root do not count anyway.
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
cpio_abs=$(realpath "$cpio_file")
(cd "$tree" && cpio --quiet -id --no-absolute-filenames 2>/dev/null <"$cpio_abs") || true
while read -r bytes name; do
    case $name in
        init) key=$name ;;
        # the rescue tools (scripts/rescue-tools.sh) and the phase links beside them
        bin/* | lib/klibc-*) key=rescue ;;
        lib/modules/*) key=lib/modules/ ;;
        *) key=other ;;
    esac
    size[$key]=$((${size[$key]:-0} + bytes))
done < <(find "$tree" -mindepth 1 \( -type f -o -type l \) -printf '%s %P\n')
[[ ${size[init]:-0} -gt 0 ]] || { echo "size-budget: no /init in $cpio_file" >&2; exit 2; }

status=0
while read -r what max _; do
    [[ -z $what || $what == \#* ]] && continue
    got=${size[$what]:-0}
    if ((got > max)); then
        echo "size-budget: $what is $got bytes, over its budget of $max ($(((got - max) * 100 / max + 1))% more); see $budget" >&2
        status=1
    else
        echo "size-budget: $what $got bytes (budget $max)"
    fi
done <"$budget"
exit $status
