#!/usr/bin/env bash
# Independent check of a manifest v2's piece digests (issue 19 §1): re-derives every chunk's
# SHA-256 from the artifact files with coreutils (split + sha256sum), not with Phase Boot's own
# code, and compares them, the whole-file hash and the size with the manifest. A v1 manifest
# is checked for size and whole-file hash only.
#
# usage: check-chunks.sh MANIFEST.json ARTIFACTS_DIR
# Exit 0 when everything matches; 1 naming the first artifact and chunk that differ.
set -euo pipefail
manifest=$1 dir=$2
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
# One line per artifact: name filename size hash chunk_size(0 for v1), then its chunk digests.
python3 - "$manifest" >"$scratch/plan" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
for name, a in sorted(m["artifacts"].items()):
    print(name, a["filename"], a["size_bytes"], a["hash"], a.get("chunk_size", 0))
    for c in a.get("chunks", []):
        print("chunk", c)
PY
fail=0 checked=0 name=""
while read -r first rest; do
    if [ "$first" = chunk ]; then continue; fi
    name=$first
    read -r filename size hash chunk_size <<<"$rest"
    file=$dir/$filename
    [ -f "$file" ] || { echo "check-chunks: $name: $file missing" >&2; fail=1; continue; }
    got_size=$(stat -c %s "$file")
    [ "$got_size" = "$size" ] || { echo "check-chunks: $name: $got_size bytes, manifest says $size" >&2; fail=1; continue; }
    got_hash=sha256:$(sha256sum <"$file" | cut -d' ' -f1)
    [ "$got_hash" = "$hash" ] || { echo "check-chunks: $name: whole-file hash $got_hash, manifest says $hash" >&2; fail=1; continue; }
    [ "$chunk_size" != 0 ] || { checked=$((checked + 1)); continue; }
    rm -f "$scratch"/part.*
    if [ "$size" -gt 0 ]; then split -b "$chunk_size" -a 6 -d "$file" "$scratch/part."; fi
    awk -v n="$name" '$1 == n { on = 1; next } on && $1 == "chunk" { print $2; next } on { exit }' \
        "$scratch/plan" >"$scratch/want"
    : >"$scratch/got"
    for part in "$scratch"/part.*; do
        [ -e "$part" ] || continue
        echo "sha256:$(sha256sum <"$part" | cut -d' ' -f1)" >>"$scratch/got"
    done
    if ! cmp -s "$scratch/want" "$scratch/got"; then
        line=$({ cmp "$scratch/want" "$scratch/got" 2>&1 || true; } | sed -n 's/.* line \([0-9]*\).*/\1/p')
        echo "check-chunks: $name: chunk $(( ${line:-1} - 1 )) (of $(wc -l <"$scratch/want") listed," \
            "$(wc -l <"$scratch/got") in the file) differs from the manifest" >&2
        fail=1
        continue
    fi
    checked=$((checked + 1))
done <"$scratch/plan"
[ "$fail" = 0 ] || exit 1
echo "check-chunks: ok ($checked artifacts of $manifest match, every chunk re-derived with sha256sum)"
