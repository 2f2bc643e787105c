#!/usr/bin/env bash
# Stream throughput and CPU per GiB on loopback: pairs vs iperf3 (TCP, the physical reference) and
# dumbpipe (iroh), in one run. Runs inside a loopback-only network namespace (needs root), so no tool can
# reach a relay or any other host.
#
#   bench/stream-throughput.sh [SIZE_MIB] [ROUNDS]     (defaults: 1024 MiB, 3 rounds)
#
# Installs iperf3 (apt) and dumbpipe (cargo install) when missing; dumbpipe is skipped if it cannot be built.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "stream-throughput: needs root for a private network namespace (unshare --net)" >&2
    exit 1
fi
command -v iperf3 >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iperf3
DUMBPIPE_ROOT=${DUMBPIPE_ROOT:-target/bench-tools}
if [ ! -x "$DUMBPIPE_ROOT/bin/dumbpipe" ] && ! command -v dumbpipe >/dev/null; then
    echo "stream-throughput: installing dumbpipe (one-off, several minutes)" >&2
    cargo install --quiet dumbpipe --root "$DUMBPIPE_ROOT" || echo "dumbpipe unavailable; skipped" >&2
fi
cargo build --release --quiet -p pairs
export PATH="$PWD/$DUMBPIPE_ROOT/bin:$PATH"
exec unshare --net -- bash -c 'ip link set lo up && exec python3 bench/stream_throughput.py "$@"' \
    stream-throughput "$@"
