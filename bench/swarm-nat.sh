#!/usr/bin/env bash
# Swarm members behind NATs meeting through a public member, in the project's namespace lab with
# 50 ms of delay on each WAN link: time from start to both members connected to each other, for a
# punchable pair of NATs and for two symmetric NATs (relayed by the public member).
#
#   bench/swarm-nat.sh            5 trials per pair
#   ROUNDS=2 bench/swarm-nat.sh   shorter
#
# Needs root (network namespaces). Everything runs inside lab namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "swarm-nat bench: needs root for network namespaces" >&2
    exit 1
fi
cargo build --release --quiet -p pairs
exec python3 bench/swarm_nat.py
