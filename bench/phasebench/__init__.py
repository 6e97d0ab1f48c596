"""Phase Boot benchmarks against peers (issue 10). Run through `make bench` / `make bench-smoke`.

Each section module (provider, client, hashrate, footprint, discovery, boot) adds rows to a
`common.Results`; `report` writes docs/benchmarks.md and bench/results.json from them.
"""
