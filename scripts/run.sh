#!/usr/bin/env bash
# `make run`: boot one VM in local mode on a private test LAN and show its console live.
# The work is done by the Rust harness (qemu-tests/src/bin/phase-run.rs); this script only
# builds it and passes the environment through (KEEP=1, PHASE_MODE, PHASE_APPEND, PHASE_TIMEOUT).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet -p phase-qemu-tests --bin phase-run
exec target/debug/phase-run
