#!/usr/bin/env python3
"""`make bench` / `make bench-smoke` driver (issue 10): runs each section, then writes
docs/benchmarks.md and bench/results.json.

    bench/bench.py [--smoke] [--only provider,client,hash,footprint,discovery,boot,swarm]
                   [--md docs/benchmarks.md] [--json bench/results.json]

Environment: BIN_DIR, BENCH_SIZE (bytes), BENCH_RUNS, BENCH_WRK_SECS, BENCH_DISCOVERY_RUNS,
BENCH_BOOT_RUNS, BENCH_BOOT_TIMEOUT (s), BENCH_WORK (scratch dir, default /dev/shm),
BENCH_SWARM_SIZE (bytes), BENCH_SWARM_CHUNK (bytes), BENCH_SWARM_N (e.g. 1,2,4).
A section that cannot run (missing tool, no root) records "not measured: <reason>"; a
section that fails records its error the same way and the run goes on. Exit status 1 when
any section failed with an error (so `make bench-smoke` catches rot), 0 otherwise.
"""

import argparse
import datetime
import os
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from phasebench import boot, client, common, discovery, fixture, footprint, hashrate, provider, report, swarm  # noqa: E402

SECTIONS = ["provider", "client", "hash", "footprint", "discovery", "boot", "swarm"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny input, one run (make test)")
    ap.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    ap.add_argument("--md", default=os.path.join(common.REPO, "docs/benchmarks.md"))
    ap.add_argument("--json", default=os.path.join(common.REPO, "bench/results.json"))
    a = ap.parse_args()
    only = [x for x in a.only.split(",") if x]
    bad = [x for x in only if x not in SECTIONS]
    if bad:
        ap.error(f"unknown sections {bad}; known: {SECTIONS}")
    s = common.Settings(a.smoke)
    res = common.Results()
    mach = report.machine()
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    common.log(f"settings: size={s.size} runs={s.runs} work={s.work} load={mach['loadavg_at_start']}")
    for b in ("phase", "plasmd"):
        if not os.path.exists(s.bin(b)):
            sys.exit(f"bench: {s.bin(b)} missing: run `make build` first")
    failed = []
    rel = None
    if any(x in only for x in ("provider", "client", "hash", "discovery")):
        rel = fixture.Release(s)

    def section(name, fn):
        if name not in only:
            return
        common.log(f"--- {name} ---")
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - record and go on with the next section
            traceback.print_exc()
            failed.append(name)
            res.skip(name, f"{name} section", f"error: {e}")

    section("provider", lambda: provider.run_section(s, rel, res))
    section("hash", lambda: hashrate.run_section(s, rel, res))
    section("client", lambda: client.run_section(s, rel, res))
    if "client" in only:
        client.floor_row(s, res)
    section("footprint", lambda: footprint.run_section(s, res))
    section("discovery", lambda: discovery.run_section(s, rel, res))
    section("boot", lambda: boot.run_section(s, res))
    section("swarm", lambda: swarm.run_section(s, res))
    report.write(s, res, a.md, a.json, mach, started)
    common.log(f"wrote {a.md} and {a.json}")
    if failed:
        common.log(f"sections with errors: {failed}")
        sys.exit(1)


if __name__ == "__main__":
    main()
