#!/usr/bin/env bash
# Runs a build in the background, at the lowest CPU priority, beside a foreground command that
# leaves a core idle (`make test`: the kernels and the arm64 cross build beside fuzz-smoke and
# the one-VM-at-a-time QEMU tests). The foreground keeps its core: a niced process gets about
# 1.5% of a core that a normal one wants. Only this script's own background job is stopped.
#
# usage: beside.sh LOG 'BACKGROUND' FOREGROUND [ARG...]
#   LOG          the background command's output (stdout and stderr); its tail is shown if it fails
#   BACKGROUND   a bash command line, run with `nice -n 19` in its own process group
#   FOREGROUND   the command to run meanwhile, with its arguments, output as usual
# Exit status: the foreground's if it failed (the background is then stopped), else the
# background's. Waiting for the background after the foreground is logged with its duration.
set -uo pipefail
[ "$#" -ge 3 ] || { echo "usage: beside.sh LOG 'BACKGROUND' FOREGROUND [ARG...]" >&2; exit 2; }
log=$1 background=$2
shift 2
mkdir -p "$(dirname "$log")"

# Job control: the background job gets a process group of its own, so that stopping it also
# stops the make and compilers under it, and nothing else.
set -m
echo "beside: in the background, niced (log $log): $background"
nice -n 19 bash -c "$background" >"$log" 2>&1 </dev/null &
bg_pid=$!
set +m

"$@"
fg_status=$?
if [ "$fg_status" -ne 0 ]; then
    echo "beside: the foreground failed (status $fg_status): stopping the background job" >&2
    kill -TERM -- "-$bg_pid" 2>/dev/null
    wait "$bg_pid" 2>/dev/null
    exit "$fg_status"
fi

start=$(date +%s)
wait "$bg_pid"
bg_status=$?
waited=$(($(date +%s) - start))
if [ "$bg_status" -ne 0 ]; then
    tail -n 40 "$log" >&2
    echo "beside: the background job failed (status $bg_status, log $log): $background" >&2
    exit "$bg_status"
fi
echo "beside: the background job finished ${waited} s after the foreground (log $log)"
