#!/usr/bin/env bash
# LAN discovery, measured in the project's namespace lab: for 2..8 peers on one LAN,
#   - time from start to the first connected peer, and to a full mesh (all start together);
#   - time to the first peer for one more node joining a running mesh;
#   - mDNS packets per minute per peer in steady state (must stay flat as peers are added);
# for `pairs swarm` and, side by side, npm `airswarm` (when Node.js is available).
#
#   bench/lan-mesh.sh              full run (steady state measured over 192 s after 60 s)
#   QUICK=1 bench/lan-mesh.sh      short windows, for a smoke run
#
# Needs root (network namespaces). Everything runs inside lab namespaces; nothing leaves the machine.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "lan-mesh: needs root for network namespaces" >&2
    exit 1
fi
cargo build --release --quiet -p pairs
if command -v node >/dev/null 2>&1; then
    (cd bench/lan/js && [ -d node_modules ] || npm install --no-audit --no-fund --silent)
fi
exec python3 bench/lan_mesh.py
