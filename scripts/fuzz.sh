#!/usr/bin/env bash
# Runs the cargo-fuzz targets of fuzz/ one after another (issue 15 §1; docs/testing.md
# "Fuzzing"). Usage: scripts/fuzz.sh [TARGET...]   (no argument: every target, `cargo fuzz list`)
#
#   FUZZ_SECONDS  time per target (default 60)
#   FUZZ_OUT      working directory (default build/fuzz): corpus/<t> (what libFuzzer finds; the
#                 committed seeds in fuzz/seeds/<t> are only read), artifacts/<t> (crashes),
#                 logs/<t>.log, target/ (the instrumented build)
#   FUZZ_LOG      also append each summary line to this file
#
# Built once without a sanitizer (works on stable) and with debug assertions, so an integer
# overflow is a crash too. Every target runs even after one crashed; the exit status is 1 if
# any crashed, and the summary names the target and the input that crashed it.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH=${FUZZ_SECONDS:-60}
OUT=${FUZZ_OUT:-build/fuzz}
mkdir -p "$OUT"
FLAGS=(-s none -a -O --target-dir "$OUT/target")

cargo fuzz --version >/dev/null 2>&1 || {
  echo "fuzz: cargo-fuzz is not installed: make fuzz-deps" >&2
  exit 2
}
if [ "$#" -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo fuzz list); fi

echo "fuzz: building ${targets[*]}"
cargo fuzz build "${FLAGS[@]}" >"$OUT/build.log" 2>&1 ||
  { tail -n 40 "$OUT/build.log" >&2; echo "fuzz: build failed (log: $OUT/build.log)" >&2; exit 2; }

failed=()
for t in "${targets[@]}"; do
  mkdir -p "$OUT/corpus/$t" "$OUT/artifacts/$t" "$OUT/logs"
  log="$OUT/logs/$t.log"
  before=$(ls "$OUT/artifacts/$t")
  start=$(date +%s)
  status=0
  # The first corpus directory is where libFuzzer writes new inputs: never fuzz/seeds.
  cargo fuzz run "${FLAGS[@]}" "$t" "$OUT/corpus/$t" "fuzz/seeds/$t" -- \
    -max_total_time="$SECONDS_EACH" -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$OUT/artifacts/$t/" >"$log" 2>&1 || status=$?
  # Fuzzing time from libFuzzer's "Done N runs in S second(s)"; wall time (which includes a
  # rebuild after a source change) when it stopped early.
  secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n 1)
  secs=${secs:-$(( $(date +%s) - start ))}
  # state_json's scratch directories of runs that have ended.
  for d in /dev/shm/phase-fuzz-state-* /tmp/phase-fuzz-state-*; do
    [ -d "$d" ] && ! kill -0 "${d##*-}" 2>/dev/null && rm -rf "$d"
  done
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  new=$(comm -13 <(echo "$before") <(ls "$OUT/artifacts/$t") | sed "s|^|$OUT/artifacts/$t/|" | tr '\n' ' ')
  if [ "$status" -ne 0 ] || [ -n "$new" ]; then
    line="$t seconds=$secs execs=${execs:-?} CRASHED artifact=${new:-none} status=$status log=$log"
    failed+=("$t")
  else
    line="$t seconds=$secs execs=${execs:-?} ok corpus=$(ls "$OUT/corpus/$t" | wc -l)"
  fi
  echo "fuzz: $line"
  if [ -n "${FUZZ_LOG:-}" ]; then echo "$(date -u +%FT%TZ) $line" >>"$FUZZ_LOG"; fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz: CRASHED: ${failed[*]} (inputs under $OUT/artifacts/<target>/; reproduce with" \
    "cargo fuzz run ${FLAGS[*]} <target> <input>)" >&2
  exit 1
fi
echo "fuzz: ok (${#targets[@]} targets, ${SECONDS_EACH}s each)"
