#!/usr/bin/env bash
# Runs the whole test suite.
#
# Tests must never send to a real network. As root, the suite runs inside a fresh network namespace that
# has only loopback (so even a default that multicasts or contacts public bootstrap nodes goes nowhere);
# tests that need more build their own namespaces inside it. Without root, tests bind loopback only.
set -euo pipefail
cd "$(dirname "$0")"

# Build (and fetch) with the network, run without it.
cargo test --workspace --locked --no-run "$@"

if [ "$(id -u)" -eq 0 ] && command -v unshare >/dev/null 2>&1 && unshare --net true 2>/dev/null; then
    exec unshare --net -- bash -c 'ip link set lo up && exec cargo test --workspace --locked --offline "$@"' \
        test.sh "$@"
fi
echo "test.sh: not root; running on the host network (tests bind loopback only)" >&2
exec cargo test --workspace --locked --offline "$@"
