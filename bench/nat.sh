#!/usr/bin/env bash
# NAT traversal, measured in the project's namespace lab with 50 ms of delay on each WAN link:
#   - time from dial to a connection over a punched direct path, over a peer relay and over TURN
#     (coturn), and from the helper's first answer to the connection, in RTTs;
#   - share of punches that succeed at the first attempt over the 14 punchable NAT pairs;
#   - relay throughput and CPU (pairs helper and coturn), next to a direct path.
#
#   bench/nat.sh             full run (2 rounds of the punchable matrix)
#   ROUNDS=1 bench/nat.sh    shorter
#
# Needs root (network namespaces) and coturn. Everything runs inside lab namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "nat bench: needs root for network namespaces" >&2
    exit 1
fi
command -v turnserver >/dev/null || { echo "nat bench: needs coturn (apt install coturn)" >&2; exit 1; }
cargo build --release --quiet -p pairs
exec python3 bench/nat_bench.py
