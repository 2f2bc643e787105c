"""Runs the node append benchmarks (see node-bench.sh) and prints a table."""

import json
import os
import subprocess
import tempfile
import time

PAIRS = "target/release/pairs"
APPEND_BENCH = "target/release/examples/append_bench"
N_LINES = int(os.environ["N_LINES"])
N_ONE = int(os.environ["N_ONE"])


def env(home):
    e = dict(os.environ, PAIRS_HOME=home, PAIRS_ISOLATED="1")
    e.pop("RUST_LOG", None)
    return e


def lines_rate(home, label):
    ticket = subprocess.check_output([PAIRS, "log", "new"], env=env(home), text=True).strip()
    data = "".join(f"line {i:0>94}\n" for i in range(N_LINES)).encode()
    start = time.monotonic()
    out = subprocess.run([PAIRS, "log", "append", ticket, "-", "--lines"], input=data,
                         env=env(home), capture_output=True, check=True)
    secs = time.monotonic() - start
    ids = out.stdout.count(b"\n")
    assert ids == N_LINES, f"{ids} ids for {N_LINES} lines"
    return (f"`log append - --lines`, {label}", N_LINES, secs)


def start_node(home):
    node = subprocess.Popen([PAIRS, "node", "--bind", "127.0.0.1:0"], env=env(home),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    for line in node.stderr:
        if line.startswith("pairs: control socket"):
            return node
    raise RuntimeError("pairs node did not start")


def append_bench(home, *args):
    out = subprocess.check_output([APPEND_BENCH, *args], env=env(home), text=True)
    r = json.loads(out)
    label = {"embedded": "`LogHandle::append` in process",
             "control": f"control socket, {r['clients']} client(s)"}[r["mode"]]
    return (f"one entry per append, {label}", r["appends"], r["seconds"])


def main():
    rows = []
    with tempfile.TemporaryDirectory() as home:
        rows.append(lines_rate(home, "no node running"))
    with tempfile.TemporaryDirectory() as home:
        node = start_node(home)
        try:
            rows.append(lines_rate(home, "through a running node"))
            rows.append(append_bench(home, "control", str(N_ONE), "1"))
            rows.append(append_bench(home, "control", str(N_ONE), "4"))
        finally:
            node.terminate()
            node.wait()
    with tempfile.TemporaryDirectory() as home:
        rows.append(append_bench(home, "embedded", str(N_ONE)))
    print(f"{'workload':<58} {'entries':>9} {'seconds':>8} {'per second':>11}")
    for name, n, secs in rows:
        print(f"{name:<58} {n:>9} {secs:>8.2f} {n / secs:>11,.0f}")


if __name__ == "__main__":
    main()
