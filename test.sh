#!/usr/bin/env bash
# Runs the whole test suite. Every node in the tests binds loopback or lives in a network namespace the
# tests create, so nothing is sent beyond this machine.
set -euo pipefail
cd "$(dirname "$0")"
exec cargo test --workspace --locked "$@"
