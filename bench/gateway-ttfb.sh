#!/usr/bin/env bash
# Time to first byte of a page of a share the serving node does not hold yet: node B's gateway
# catches up with node A's log and fetches the page from A (two nodes on loopback, in a network
# namespace of their own). Prints curl's time_starttransfer for the first page and for a second file.
#
#   bench/gateway-ttfb.sh [RUNS]      (needs unshare, curl; builds in release)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo test --release -p pairs --test gateway --no-run >/dev/null 2>&1
for _ in $(seq "$runs"); do
    unshare -n bash -c 'ip link set lo up; ip link set lo multicast on; ip route add 224.0.0.0/4 dev lo;
        cargo test --release -q -p pairs --test gateway a_share_not_on_the_node -- --nocapture 2>&1' |
        grep -E '^(first page|a file of a share)'
done
