#!/usr/bin/env bash
# Live propagation: an entry appended on node A becomes visible on node B. p50 / p99 / max over N
# appends sent one at a time GAP_MS apart, each carrying its send time (all lab namespaces share
# CLOCK_MONOTONIC), for pairs (`pairs node` + `pairs log`) and, side by side, npm hypercore
# replicated over hyperswarm (with a hyperdht testnet on a lab host), in the project's namespace lab:
#   - LAN: A and B on one switch (pairs finds the other node by mDNS);
#   - NAT: A and B behind two port-restricted NAT routers, a public member both know
#     (a `pairs node` sharing the log; the hyperdht testnet), with DELAYS ms per WAN link each way.
#
#   bench/live-propagation.sh                           N=300 GAP_MS=20 DELAYS=0,50 CASES=lan,nat
#   N=100 DELAYS=0 CASES=lan bench/live-propagation.sh  shorter
#   GAP_MS=500 N=40 CASES=nat DELAYS=50 bench/live-propagation.sh   appends slower than 2 RTT
# Also: IMPLS=pairs|hypercore (one of them), N_ONESHOT (one `pairs log append` process per entry,
# default 100), WARM_S (seconds of appends before measuring, 5), RAW=FILE (every latency as JSON),
# PAIRS_BIN=PATH (a built pairs binary instead of building).
#
# Needs root (network namespaces). Everything runs inside lab namespaces; hyperswarm never sees a
# public bootstrap node. Installs the pinned npm packages (bench/live/js) on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "live-propagation: needs root for network namespaces" >&2
    exit 1
fi
(cd bench/live/js && [ -d node_modules ] || npm ci --no-audit --no-fund --silent)
if [ -z "${PAIRS_BIN:-}" ]; then
    cargo build --release --quiet -p pairs
fi
exec python3 bench/live_propagation.py
