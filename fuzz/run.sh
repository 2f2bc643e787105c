#!/usr/bin/env bash
# Runs each fuzz target for at least N executions (default 10M) or until it crashes, one job at a
# time, and prints a table of executions, speed, corpus size and crashes per target.
#
#   fuzz/run.sh                       every target, 10M executions each
#   RUNS=1000000 fuzz/run.sh stun     one target, 1M executions
#   MAX_TIME=300 fuzz/run.sh          at most 300 s per target (whichever limit comes first)
#
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`). Targets are built
# without a sanitizer (the code under test is safe Rust; speed matters more) and with debug
# assertions, so integer overflow is a crash too. Inputs that crash land in fuzz/artifacts/TARGET/.
# Logs go to fuzz/logs/TARGET.log.
set -euo pipefail
cd "$(dirname "$0")"

RUNS=${RUNS:-10000000}
MAX_TIME=${MAX_TIME:-0}
TOOLCHAIN=${TOOLCHAIN:-+nightly}
FLAGS=(--sanitizer none --debug-assertions)

if (($#)); then
    targets=("$@")
else
    mapfile -t targets < <(cargo "$TOOLCHAIN" fuzz list)
fi

mkdir -p logs
cargo "$TOOLCHAIN" fuzz build "${FLAGS[@]}"

printf '| target | executions | exec/s | seconds | corpus files | corpus KiB | crashes |\n'
printf '|---|---:|---:|---:|---:|---:|---:|\n'
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "artifacts/$target"
    before=$(find "artifacts/$target" -type f -name 'crash-*' -o -type f -name 'oom-*' -o -type f -name 'timeout-*' | wc -l)
    options=(-runs="$RUNS" -print_final_stats=1 -rss_limit_mb=2048 -timeout=10)
    ((MAX_TIME > 0)) && options+=(-max_total_time="$MAX_TIME")
    start=$(date +%s)
    set +e
    cargo "$TOOLCHAIN" fuzz run "${FLAGS[@]}" "$target" "corpus/$target" -- "${options[@]}" \
        >"logs/$target.log" 2>&1
    set -e
    seconds=$(($(date +%s) - start))
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$target.log" | tail -1 | grep -o '[0-9]*$' || true)
    speed=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "logs/$target.log" | tail -1 | grep -o '[0-9]*$' || true)
    after=$(find "artifacts/$target" -type f -name 'crash-*' -o -type f -name 'oom-*' -o -type f -name 'timeout-*' | wc -l)
    files=$(find "corpus/$target" -type f | wc -l)
    kib=$(du -sk "corpus/$target" | cut -f1)
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$target" "${execs:-?}" "${speed:-?}" "$seconds" \
        "$files" "$kib" "$((after - before))"
done
