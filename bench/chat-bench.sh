#!/usr/bin/env bash
# Chat: a new member's onboarding into a room of 100,000 messages by 20 authors on a LAN (time to
# the newest 50 messages and to the whole history, bytes moved), and message latency between two
# members (p50/p99).
#
#   sudo bench/chat-bench.sh                     100,000 messages, 20 authors, 40 latency samples
#   MESSAGES=10000 SAMPLES=10 sudo bench/chat-bench.sh    a quick run
#
# Needs root: everything runs in a loopback-only network namespace with --isolated.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "chat-bench: needs root for a private network namespace (unshare --net)" >&2
    exit 1
fi
cargo build --release --quiet -p pairs --bin pairs --example chat_bench
export MESSAGES="${MESSAGES:-100000}" AUTHORS="${AUTHORS:-20}" SAMPLES="${SAMPLES:-40}"
exec unshare --net -- bash -c 'ip link set lo up && exec python3 bench/chat_bench.py'
