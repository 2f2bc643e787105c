#!/usr/bin/env bash
# The log, side by side with npm hyperlog and hypercore, in one run:
#   append rate (one by one, batched), full replication of N entries (time, wire bytes, peak memory),
#   replication of N entries appended one by one, each signed (pairs; compared with hypercore's full
#   replication), one new entry in a large log (round trips over a 50 ms one-way delay, bytes).
#   Honours CARGO_TARGET_DIR.
#
#   bench/log-bench.sh            full size (100k entries; one new entry in 1M for pairs, 100k for the npm logs)
#   QUICK=1 bench/log-bench.sh    small sizes, for a smoke run
#
# Needs root: everything runs in a loopback-only network namespace. Installs the npm packages on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "log-bench: needs root for a private network namespace (unshare --net)" >&2
    exit 1
fi
(cd bench/log/js && [ -d node_modules ] || npm install --no-audit --no-fund --silent)
cargo build --release --quiet -p pairs-log --example logbench

if [ -n "${QUICK:-}" ]; then
    export N_ONE=1000 N_BATCH=10000 N_FULL=5000 N_BASE=5000
    PAIRS_ONE=1000 PAIRS_BATCH=10000 PAIRS_FULL=5000 PAIRS_BASE=5000 PAIRS_BASE_LARGE=5000
else
    PAIRS_ONE=10000 PAIRS_BATCH=100000 PAIRS_FULL=100000 PAIRS_BASE=100000 PAIRS_BASE_LARGE=1000000
fi
export PAIRS_ONE PAIRS_BATCH PAIRS_FULL PAIRS_BASE PAIRS_BASE_LARGE
exec unshare --net -- bash -c 'ip link set lo up && exec python3 bench/log_bench.py' 
