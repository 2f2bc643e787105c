#!/usr/bin/env bash
# Blob transfer benchmarks (issue 14): pairs send/get against sendme (iroh-blobs), pairs' raw stream,
# iperf3, libtorrent and aria2c, side by side in one run, in network namespaces on one bridge with no
# route out (needs root). Links are shaped with tbf.
#
#   bench/blobs-bench.sh [one-peer|small|seeders|flash|all]...      (default: all, about 25 minutes)
#
# Environment: SIZE_MIB (1024), ROUNDS (2), SMALL_FILES (2000), R_MBIT (100), CROWD (20), CROWD_MBIT (20),
# CROWD_MIB (64), LT_APP_LIMIT (0), PAIRS_BIN (a pairs binary to use instead of building one); see bench/blobs/blobs_bench.py. Files live in /dev/shm (WORK).
#
# Installs iperf3, aria2 and python3-libtorrent (apt) and sendme 0.37 (cargo install, into
# SENDME_ROOT, default ../bench-tools beside the repository, built in ../target-sendme) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "blobs-bench: needs root for network namespaces and tc" >&2
    exit 1
fi
missing=()
command -v iperf3 >/dev/null || missing+=(iperf3)
command -v aria2c >/dev/null || missing+=(aria2)
/usr/bin/python3 -c 'import libtorrent' 2>/dev/null || missing+=(python3-libtorrent)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
SENDME_ROOT=${SENDME_ROOT:-$PWD/../bench-tools}
if [ ! -x "$SENDME_ROOT/bin/sendme" ]; then
    echo "blobs-bench: installing sendme 0.37 (one-off, several minutes)" >&2
    CARGO_TARGET_DIR=${SENDME_TARGET:-$PWD/../target-sendme} \
        cargo install --quiet --locked sendme --version '~0.37' --root "$SENDME_ROOT"
fi
if [ -z "${PAIRS_BIN:-}" ]; then
    cargo build --release --quiet -p pairs
fi
export SENDME_BIN="$SENDME_ROOT/bin/sendme"
exec python3 bench/blobs/blobs_bench.py "$@"
