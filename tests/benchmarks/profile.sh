#!/usr/bin/env bash
# Profile the gateway under the benchmark load: py-spy samples `event-gateway serve` while
# wrk runs, writes bench-results/gateway.svg (flame graph) and gateway.folded (open it in
# speedscope), and prints the top frames. Extra arguments go to run.py (e.g. --duration 20).
# `profile.sh --only worker-postgres` (or worker-sqlite) samples the roaming worker while it
# drains instead: bench-results/worker-postgresql.svg and .folded.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec "${VENV:-.venv}/bin/python" tests/benchmarks/run.py --profile --only gateway "$@"
