#!/usr/bin/env bash
# Issue 19 §1: `plasmd manifest verify --artifacts` and the independent check
# (scripts/check-chunks.sh: split + sha256sum) agree on a v2 release: both pass on the real
# files, both refuse a signed manifest whose chunk list does not match its artifact, naming the
# chunk. Also runs the independent check on a real release when given one.
#
# usage: test-check-chunks.sh PLASMD [RELEASE_DIR TRUST]
set -euo pipefail
plasmd=$1
check=$(dirname "$0")/check-chunks.sh
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
fail() { echo "test-check-chunks: $*" >&2; exit 1; }
if [ $# -ge 3 ]; then
    "$check" "$2/manifest.json" "$2"
    "$plasmd" manifest verify --trust "$3" --artifacts "$2" "$2/manifest.json" >/dev/null ||
        fail "plasmd manifest verify --artifacts refused $2"
fi
rel=$scratch/rel
mkdir -p "$rel"
head -c 300000 /dev/urandom >"$rel/rootfs"
head -c 70000 /dev/urandom >"$rel/kernel"
: >"$rel/initramfs"
PLASMD_LOG=warn "$plasmd" keygen --out "$scratch/k" >/dev/null
printf 'threshold = 1\nkeys = ["%s"]\n' "$(cat "$scratch/k.pub")" >"$scratch/trust.toml"
"$plasmd" manifest build --artifacts "$rel" --channel stable --arch x86_64 --version 1.0.0 \
    --expires-in 1d --chunk-size 64K --out "$scratch/unsigned.json"
"$plasmd" manifest sign --key "$scratch/k" --in "$scratch/unsigned.json" --out "$rel/manifest.json"
"$check" "$rel/manifest.json" "$rel" >/dev/null || fail "the independent check refused a good release"
"$plasmd" manifest verify --trust "$scratch/trust.toml" --artifacts "$rel" "$rel/manifest.json" \
    >"$scratch/out" || fail "plasmd refused a good release: $(cat "$scratch/out")"
# A release tool bug: chunk 2 of the rootfs listed wrong, the whole-file hash right, signed.
python3 - "$scratch/unsigned.json" <<'PY'
import json, sys
p = sys.argv[1]; m = json.load(open(p))
m["artifacts"]["rootfs"]["chunks"][2] = "sha256:" + "0" * 64
json.dump(m, open(p, "w"), indent=2)
PY
"$plasmd" manifest sign --key "$scratch/k" --in "$scratch/unsigned.json" --out "$rel/manifest.json"
if "$check" "$rel/manifest.json" "$rel" 2>"$scratch/err"; then
    fail "the independent check passed a wrong chunk list"
fi
grep -q 'rootfs: chunk 2 ' "$scratch/err" || fail "the independent check did not name chunk 2: $(cat "$scratch/err")"
if "$plasmd" manifest verify --trust "$scratch/trust.toml" --artifacts "$rel" "$rel/manifest.json" \
    >"$scratch/out"; then
    fail "plasmd manifest verify --artifacts passed a wrong chunk list"
fi
grep -q 'REFUSED: rootfs: chunk 2 ' "$scratch/out" || fail "plasmd did not name chunk 2: $(cat "$scratch/out")"
echo "test-check-chunks: ok (plasmd and split+sha256sum agree: good list passes, wrong chunk 2 refused by both)"
