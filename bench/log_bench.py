"""Runs the log scenarios for pairs, hyperlog and hypercore and prints them side by side with ratios.

Called by log-bench.sh inside a loopback-only network namespace. Each pairs scenario is its own process
(`logbench` example), so peak memory is the scenario's own; the npm baselines do the same.
"""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOGBENCH = os.path.join(ROOT, "target", "release", "examples", "logbench")
JS = os.path.join(ROOT, "bench", "log", "js", "bench.js")


def pairs(scenario, n):
    out = subprocess.run([LOGBENCH, scenario, str(n)], capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        return {"impl": "pairs", "scenario": scenario, "error": out.stderr.strip()[-300:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def npm(lib):
    out = subprocess.run(["node", JS, lib], capture_output=True, text=True, timeout=7200)
    results = {}
    for line in out.stdout.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        results[row.get("scenario")] = row
    return results


def fmt(value, digits=2):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


def main():
    env = os.environ
    runs = {
        "pairs": {
            "append_one_by_one": pairs("append_one_by_one", env["PAIRS_ONE"]),
            "append_batched": pairs("append_batched", env["PAIRS_BATCH"]),
            "replicate_full": pairs("replicate_full", env["PAIRS_FULL"]),
            "one_new_entry": pairs("one_new_entry", env["PAIRS_BASE"]),
            "one_new_entry_large": pairs("one_new_entry", env["PAIRS_BASE_LARGE"]),
        },
        "hyperlog": npm("hyperlog"),
        "hypercore": npm("hypercore"),
    }
    print(json.dumps(runs), file=sys.stderr)
    rows = [
        ("append one by one, durable (entries/s)", "append_one_by_one", "per_second", 0),
        ("append one by one, in memory (entries/s)", "append_one_by_one", "per_second_in_memory", 0),
        ("append batched (entries/s)", "append_batched", "per_second", 0),
        ("replicate full: seconds", "replicate_full", "seconds", 2),
        ("replicate full: wire bytes / payload", "replicate_full", "payload_ratio", 2),
        ("replicate full: peak RSS MiB", "replicate_full", "peak_rss_mb", 0),
        ("one new entry: round trips", "one_new_entry", "round_trips", 1),
        ("one new entry: bytes", "one_new_entry", "bytes_total", 0),
    ]
    impls = ["pairs", "hyperlog", "hypercore"]
    print(f"\n{'measure':<40}" + "".join(f"{i:>14}" for i in impls) + "   pairs vs hyperlog")
    for label, scenario, field, digits in rows:
        values = []
        for impl in impls:
            row = runs[impl].get(scenario, {})
            # The npm baselines append in memory (memdb, random-access-memory).
            key = "per_second" if impl != "pairs" and field == "per_second_in_memory" else field
            durable_only = impl != "pairs" and scenario == "append_one_by_one" and field == "per_second"
            values.append(None if "error" in row or durable_only else row.get(key))
        ratio = ""
        if values[0] and values[1]:
            r = values[0] / values[1]
            ratio = f"{r:,.2f}x" if r >= 0.01 else f"1/{1 / r:,.0f}"
        cells = "".join(f"{fmt(v, digits):>14}" for v in values)
        print(f"{label:<40}{cells}   {ratio}")
    sizes = {impl: {s: runs[impl].get(s, {}).get("n") for s in runs[impl]} for impl in impls}
    print("\nsizes:", json.dumps(sizes))
    large = runs["pairs"]["one_new_entry_large"]
    print(f"pairs, one new entry in {fmt(large.get('n'))}: {large.get('round_trips')} round trips, "
          f"{fmt(large.get('bytes_total'))} bytes")
    for impl in impls[1:]:
        for scenario, row in runs[impl].items():
            if "error" in row or "note" in row:
                print(f"{impl} {scenario}: {row.get('error') or row.get('note')}")


if __name__ == "__main__":
    main()
