#!/usr/bin/env bash
# Negative test of scripts/check-size-budget.sh (issue 18 §2): a budget below what an initramfs
# holds must fail, naming the part that grew; a budget above it must pass.
#
# usage: test-size-budget.sh INITRAMFS.cpio INITRAMFS.cpio.zst
set -euo pipefail
cpio_file=$1 compressed=$2
check=$(dirname "$0")/check-size-budget.sh
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
printf 'init 1\ncompressed 999999999\n' >"$scratch/tight"
printf 'init 999999999\ncompressed 999999999\n' >"$scratch/loose"
if "$check" "$cpio_file" "$compressed" "$scratch/tight" >"$scratch/out" 2>&1; then
    echo "test-size-budget: a 1-byte budget for /init passed" >&2
    exit 1
fi
grep -q '^size-budget: init is [0-9]* bytes, over its budget of 1 ' "$scratch/out" || {
    echo "test-size-budget: the failure does not name /init:" >&2
    cat "$scratch/out" >&2
    exit 1
}
"$check" "$cpio_file" "$compressed" "$scratch/loose" >/dev/null ||
    { echo "test-size-budget: a budget above every part failed" >&2; exit 1; }
echo "test-size-budget: ok (over budget fails naming the part, under passes)"
