"""Measures one-way stream throughput and CPU per GiB for pairs, iperf3 and dumbpipe on loopback.

Each tool moves a SIZE file (sender reads it from tmpfs, receiver writes to /dev/null) and, separately, a
tiny one; throughput and CPU are taken from the difference, so start-up costs (key loading, dumbpipe's
relay probing) cancel out. CPU is the user+system time of both processes. The best of ROUNDS runs is kept.
Run through stream-throughput.sh, which provides a loopback-only network namespace.
"""

import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAIRS = os.path.join(ROOT, "target", "release", "pairs")
MIB = 1 << 20
SMALL = 1 << 10


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wait_for_line(proc, pattern, limit=60):
    """Reads the process's stderr until a line matches; returns the match."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        found = re.search(pattern, line.decode(errors="replace"))
        if found:
            return found
    raise RuntimeError(f"no line matching {pattern!r}")


def measure(run, path):
    """Wall seconds and CPU seconds of one transfer of the file at `path`."""
    cpu0 = children_cpu()
    wall = run(path)
    return wall, children_cpu() - cpu0


def run_pairs(path, home):
    env = dict(os.environ, PAIRS_HOME=home)
    listener = subprocess.Popen(
        [PAIRS, "listen", "--bind", "127.0.0.1:0"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    ticket = wait_for_line(listener, r"pairs connect (node\S+)").group(1)
    start = time.monotonic()
    with open(path, "rb") as data:
        subprocess.run([PAIRS, "connect", ticket], stdin=data, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, env=dict(env, PAIRS_HOME=home + "-c"), check=True)
    listener.wait(timeout=60)
    listener.stderr.close()
    return time.monotonic() - start


def run_dumbpipe(path, _home):
    listener = subprocess.Popen(
        ["dumbpipe", "listen", "--ipv4-addr", "127.0.0.1:0"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ticket = wait_for_line(listener, r"dumbpipe connect (\S+)").group(1)
    start = time.monotonic()
    with open(path, "rb") as data:
        subprocess.run(["dumbpipe", "connect", ticket], stdin=data, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=True, timeout=600)
    try:
        listener.wait(timeout=10)
    except subprocess.TimeoutExpired:
        listener.kill()
        listener.wait()
    listener.stderr.close()
    return time.monotonic() - start


def run_iperf3(path, _home):
    size = os.path.getsize(path)
    server = subprocess.Popen(["iperf3", "-s", "-1", "--forceflush", "-B", "127.0.0.1", "-p", "5201"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    wait_for_line_stdout(server, "Server listening")
    start = time.monotonic()
    subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", "5201", "-n", str(max(size, 1)), "-J"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=600)
    server.wait(timeout=60)
    server.stdout.close()
    return time.monotonic() - start


def wait_for_line_stdout(proc, needle):
    for line in proc.stdout:
        if needle in line.decode(errors="replace"):
            return
    raise RuntimeError(f"no {needle!r}")


def main():
    size_mib = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    work = tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    try:
        big, small = os.path.join(work, "big"), os.path.join(work, "small")
        with open(big, "wb") as f:
            for _ in range(size_mib):
                f.write(os.urandom(MIB))
        with open(small, "wb") as f:
            f.write(os.urandom(SMALL))
        tools = [("iperf3 (TCP)", run_iperf3), ("pairs", run_pairs)]
        if shutil.which("dumbpipe"):
            tools.append(("dumbpipe", run_dumbpipe))
        results = {}
        for name, run in tools:
            home = os.path.join(work, name.split()[0])
            best = None
            for _ in range(rounds):
                t_small, c_small = measure(lambda p: run(p, home), small)
                t_big, c_big = measure(lambda p: run(p, home), big)
                wall, cpu = max(t_big - t_small, 1e-9), max(c_big - c_small, 0.0)
                if best is None or wall < best[0]:
                    best = (wall, cpu)
            wall, cpu = best
            gib = size_mib / 1024
            results[name] = {
                "mbit_s": size_mib * MIB * 8 / wall / 1e6,
                "cpu_s_per_gib": cpu / gib,
                "seconds": wall,
            }
        print(f"\n{size_mib} MiB one way over loopback, best of {rounds} (start-up subtracted)\n")
        print(f"{'tool':<14}{'Mbit/s':>10}{'CPU s/GiB':>12}{'time s':>9}")
        for name, r in results.items():
            print(f"{name:<14}{r['mbit_s']:>10.0f}{r['cpu_s_per_gib']:>12.2f}{r['seconds']:>9.2f}")
        p = results["pairs"]
        print()
        for name, r in results.items():
            if name != "pairs":
                print(f"pairs / {name}: throughput {p['mbit_s'] / r['mbit_s']:.2f}x, "
                      f"CPU per GiB {p['cpu_s_per_gib'] / r['cpu_s_per_gib']:.2f}x")
        print(json.dumps(results), file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
