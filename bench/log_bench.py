"""Runs the log scenarios for pairs, hyperlog and hypercore and prints them side by side with ratios.

Called by log-bench.sh inside a loopback-only network namespace. Each pairs scenario is its own process
(`logbench` example), so peak memory is the scenario's own; the npm baselines do the same.
"""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# log-bench.sh builds with cargo, which honours CARGO_TARGET_DIR.
TARGET = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
LOGBENCH = os.path.join(TARGET, "release", "examples", "logbench")
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
            "replicate_one_by_one": pairs("replicate_one_by_one", env["PAIRS_FULL"]),
            "one_new_entry": pairs("one_new_entry", env["PAIRS_BASE"]),
            "one_new_entry_large": pairs("one_new_entry", env["PAIRS_BASE_LARGE"]),
        },
        "hyperlog": npm("hyperlog"),
        "hypercore": npm("hypercore"),
    }
    print(json.dumps(runs), file=sys.stderr)
    # The npm logs have no separate one-by-one replication: hypercore signs each append call and
    # verifies a signed tree root per request however its blocks were appended, so its full
    # replication is the figure to compare with; hyperlog does not sign at all.
    npm_scenario = {"replicate_one_by_one": {"hypercore": "replicate_full"}}
    rows = [
        ("append one by one, durable (entries/s)", "append_one_by_one", "per_second", 0),
        ("append one by one, in memory (entries/s)", "append_one_by_one", "per_second_in_memory", 0),
        ("append batched (entries/s)", "append_batched", "per_second", 0),
        ("replicate full: seconds", "replicate_full", "seconds", 2),
        ("replicate one-by-one entries: seconds", "replicate_one_by_one", "seconds", 2),
        ("replicate full: wire bytes / payload", "replicate_full", "payload_ratio", 2),
        ("replicate full: peak RSS MiB", "replicate_full", "peak_rss_mb", 0),
        ("one new entry: round trips", "one_new_entry", "round_trips", 1),
        ("one new entry: bytes", "one_new_entry", "bytes_total", 0),
    ]
    impls = ["pairs", "hyperlog", "hypercore"]
    print(f"\n{'measure':<40}" + "".join(f"{i:>14}" for i in impls) + f"{'vs hyperlog':>12} {'vs hypercore':>12}")
    for label, scenario, field, digits in rows:
        values = []
        for impl in impls:
            if impl == "pairs":
                row = runs[impl].get(scenario, {})
            else:
                row = runs[impl].get(npm_scenario.get(scenario, {}).get(impl, scenario), {})
                if scenario in npm_scenario and impl not in npm_scenario[scenario]:
                    row = {}
            # The npm baselines append in memory (memdb, random-access-memory).
            key = "per_second" if impl != "pairs" and field == "per_second_in_memory" else field
            durable_only = impl != "pairs" and scenario == "append_one_by_one" and field == "per_second"
            values.append(None if "error" in row or durable_only else row.get(key))
        ratios = []
        for other in values[1:]:
            ratio = "-"
            if values[0] and other:
                r = values[0] / other
                ratio = f"{r:,.2f}x" if r >= 0.01 else f"1/{1 / r:,.0f}"
            ratios.append(f"{ratio:>12}")
        cells = "".join(f"{fmt(v, digits):>14}" for v in values)
        print(f"{label:<40}{cells}" + " ".join(ratios))
    print("(replicate one-by-one entries: hypercore's column is its full replication, see above)")
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
