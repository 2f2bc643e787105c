#!/usr/bin/env bash
# Appending through the node: the CLI's `--lines` rate with and without a running node, and one-entry
# appends (each a durable commit) through the control socket and in-process.
#
#   sudo bench/node-bench.sh            200,000 lines; 10,000 single appends
#   N_LINES=20000 N_ONE=2000 sudo bench/node-bench.sh    a quick run
#
# Needs root: everything runs in a loopback-only network namespace with --isolated.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "node-bench: needs root for a private network namespace (unshare --net)" >&2
    exit 1
fi
cargo build --release --quiet -p pairs --bin pairs --example append_bench
export N_LINES="${N_LINES:-200000}" N_ONE="${N_ONE:-10000}"
exec unshare --net -- bash -c 'ip link set lo up && exec python3 bench/node_bench.py'
