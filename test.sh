#!/usr/bin/env bash
# Runs the whole test suite.
#
# Tests must never send to a real network. As root, the suite runs inside a fresh network namespace that
# has only loopback (so even a default that multicasts or contacts public bootstrap nodes goes nowhere);
# tests that need more build their own namespaces with lab/lab.sh. Without root, tests bind loopback only
# and the LAN tests (which need namespaces) fail with a message saying so.
set -euo pipefail
cd "$(dirname "$0")"

# Build (and fetch) with the network, run without it.
cargo test --workspace --locked --no-run "$@"

if [ "$(id -u)" -eq 0 ] && command -v unshare >/dev/null 2>&1 && unshare --net true 2>/dev/null; then
    # Multicast on loopback lets nodes in this namespace find each other with mDNS.
    exec unshare --net -- bash -c 'ip link set lo up && ip link set lo multicast on &&
        ip route add 224.0.0.0/4 dev lo && exec cargo test --workspace --locked --offline "$@"' \
        test.sh "$@"
fi
echo "test.sh: not root; running on the host network (tests bind loopback only)" >&2
exec cargo test --workspace --locked --offline "$@"
