#!/usr/bin/env bash
# Checks the release /init without unwind tables (init/link/discard-unwind-tables.ld, issue 18
# §3): its .eh_frame holds at most the C runtime's few bytes, and RUST_BACKTRACE=1, which
# would make libgcc's unwinder abort the process on the first error anyhow records, is
# scrubbed by main(): `phase fetch` from a missing trust root must fail with its error
# (status 1), not SIGABRT (134).
#
# usage: check-init-unwind.sh PHASE-INIT
set -euo pipefail
bin=$1
[[ -x $bin ]] || { echo "check-init-unwind: no $bin (make build)" >&2; exit 2; }
# `[Nr] Name Type Address Off Size ...`: the Size column of .eh_frame, in hex.
hex=$(LC_ALL=C readelf -SW "$bin" | sed -n 's/.*\] \.eh_frame  *[A-Z]*  *[0-9a-f]*  *[0-9a-f]*  *\([0-9a-f]*\) .*/\1/p')
eh=$((16#${hex:-0}))
if ((eh > 1024)); then
    echo "check-init-unwind: $bin has a .eh_frame of $eh bytes: the unwind tables are back" >&2
    exit 1
fi
if ! LC_ALL=C readelf -h "$bin" | grep -q "$(uname -m | sed 's/x86_64/X86-64/; s/aarch64/AArch64/')"; then
    echo "check-init-unwind: .eh_frame $eh bytes; $bin is not for this machine, not run"
    exit 0
fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
ln -s "$(realpath "$bin")" "$scratch/phase"
status=0
RUST_BACKTRACE=1 RUST_LIB_BACKTRACE=1 "$scratch/phase" fetch --trust "$scratch/no-trust.toml" \
    --manifest-url http://127.0.0.1:9/manifest.json --out "$scratch/out" >"$scratch/log" 2>&1 || status=$?
if [[ $status -ne 1 ]] || ! grep -q "no-trust.toml" "$scratch/log"; then
    echo "check-init-unwind: RUST_BACKTRACE=1 phase fetch exited $status (want 1 and the error):" >&2
    cat "$scratch/log" >&2
    exit 1
fi
echo "check-init-unwind: ok (.eh_frame $eh bytes; RUST_BACKTRACE=1 gives the error, not an abort)"
