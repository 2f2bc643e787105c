#!/usr/bin/env bash
# Time to first byte through the gateway of content the serving node does not hold yet (two nodes on
# loopback, in a network namespace of their own):
# - a page of a share: node B's gateway catches up with node A's log and fetches the page from A;
#   curl's time_starttransfer for the first page and for a second file;
# - a 1 GiB file (GIB=0 skips it): the last MB by a Range request (node C), then the whole file (node
#   B) with the time its last byte came, the same again once B holds it (the gateway's own cost), and
#   the same download by Blobs::get without a gateway (node D). The file streams as it downloads, so
#   its first byte should not wait for the whole of it.
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
if [ "${GIB:-1}" != 0 ]; then
    for _ in $(seq "$runs"); do
        unshare -n bash -c 'ip link set lo up; ip link set lo multicast on; ip route add 224.0.0.0/4 dev lo;
            cargo test --release -q -p pairs --test gateway first_byte_of_a_gibibyte -- --ignored --nocapture 2>&1' |
            grep -E '^1 GiB'
    done
fi
