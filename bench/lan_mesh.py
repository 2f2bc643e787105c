#!/usr/bin/env python3
"""LAN mesh benchmark driver; see bench/lan-mesh.sh. Prints one table per implementation."""
import json
import os
import queue
import shutil
import statistics
import subprocess
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAB = os.path.join(ROOT, "lab", "lab.sh")
PAIRS = os.path.join(ROOT, "target", "release", "pairs")
AIRSWARM = os.path.join(ROOT, "bench", "lan", "js", "airswarm_peer.js")
QUICK = bool(os.environ.get("QUICK"))
SIZES = [2, 3, 4, 5, 6, 7, 8]
WARMUP = 10 if QUICK else 60
# Two whole cache-refresh cycles (host records live 120 s and are refreshed at 80%: every 96 s), so
# the window never catches one cycle in one size and two in another.
WINDOW = 20 if QUICK else 192
MESH_TIMEOUT = 20.0


def lab(prefix, *args, check=True):
    return subprocess.run([LAB, "-p", prefix, *args], check=check,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


class Impl:
    """How to start one peer and recognise a connection in its output."""

    def __init__(self, name, argv, stream, is_connection, steady_sizes=SIZES):
        self.name, self.argv, self.stream, self.is_connection = name, argv, stream, is_connection
        self.steady_sizes = steady_sizes


def pairs_impl(topic):
    return Impl("pairs swarm", lambda home: [PAIRS, "swarm", topic], "stderr",
                lambda line: line.startswith("pairs: + ") and line.endswith(" joined"),
                # Larger LANs too: pairs' traffic can be measured there (airswarm's 2^N cannot).
                SIZES + [12, 16])


def airswarm_impl(topic):
    return Impl("npm airswarm", lambda home: ["node", AIRSWARM, topic], "stdout",
                lambda line: '"connection"' in line)


class Peer:
    def __init__(self, prefix, host, impl):
        self.home = tempfile.mkdtemp(prefix="pairs-bench-")
        env = dict(os.environ, PAIRS_HOME=self.home)
        env.pop("RUST_LOG", None)
        env.pop("PAIRS_ISOLATED", None)
        self.started = time.monotonic()
        self.proc = subprocess.Popen([LAB, "-p", prefix, "exec", host, *impl.argv(self.home)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)
        self.joins = queue.Queue()
        source = self.proc.stderr if impl.stream == "stderr" else self.proc.stdout
        other = self.proc.stdout if impl.stream == "stderr" else self.proc.stderr

        def watch():
            for line in source:
                if impl.is_connection(line.strip()):
                    self.joins.put(time.monotonic())

        threading.Thread(target=watch, daemon=True).start()
        threading.Thread(target=lambda: [None for _ in other], daemon=True).start()

    def wait_joins(self, n, deadline):
        times = []
        while len(times) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                times.append(self.joins.get(timeout=left))
            except queue.Empty:
                return None
        return times

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.home, ignore_errors=True)


def count_setup(prefix, host):
    script = ("add table inet mcount\n"
              "add chain inet mcount out { type filter hook output priority 0; }\n"
              "add rule inet mcount out udp dport 5353 counter\n")
    subprocess.run([LAB, "-p", prefix, "exec", host, "nft", "-f", "-"], input=script,
                   text=True, check=True)


def count_read(prefix, host):
    out = subprocess.run([LAB, "-p", prefix, "exec", host, "nft", "-j", "list", "table",
                          "inet", "mcount"], check=True, stdout=subprocess.PIPE, text=True).stdout
    for item in json.loads(out)["nftables"]:
        rule = item.get("rule")
        if rule:
            for expr in rule["expr"]:
                if "counter" in expr:
                    return expr["counter"]["packets"]
    return 0


def mesh_run(impl, n, tag):
    """All n peers start together; returns (first-peer times, full-mesh time, late joiner's first peer)."""
    prefix = f"bm{tag}{n}"
    lab(prefix, "down", check=False)
    lab(prefix, "lan", str(n + 1))
    peers = []
    try:
        t0 = time.monotonic()
        peers = [Peer(prefix, f"h{i + 1}", impl) for i in range(n)]
        deadline = t0 + MESH_TIMEOUT
        firsts, lasts = [], []
        for p in peers:
            times = p.wait_joins(n - 1, deadline)
            if times is None:
                return None
            firsts.append(times[0] - p.started)
            lasts.append(times[-1])
        mesh = max(lasts) - t0
        late = Peer(prefix, f"h{n + 1}", impl)
        peers.append(late)
        got = late.wait_joins(1, time.monotonic() + MESH_TIMEOUT)
        late_first = None if got is None else got[0] - late.started
        return firsts, mesh, late_first
    finally:
        for p in peers:
            p.stop()
        lab(prefix, "down", check=False)


def steady_state(impl, tag):
    """One lab per size, all at once; mDNS packets sent per peer per minute after warm-up."""
    labs, peers = [], []
    try:
        for n in impl.steady_sizes:
            prefix = f"ss{tag}{n}"
            lab(prefix, "down", check=False)
            lab(prefix, "lan", str(n))
            labs.append((prefix, n))
            for i in range(n):
                count_setup(prefix, f"h{i + 1}")
        for prefix, n in labs:
            peers += [Peer(prefix, f"h{i + 1}", impl) for i in range(n)]
        time.sleep(WARMUP)  # measuring a steady state: wall-clock windows are the measurement
        before = {(p, i): count_read(p, f"h{i + 1}") for p, n in labs for i in range(n)}
        time.sleep(WINDOW)
        result = {}
        for prefix, n in labs:
            sent = [count_read(prefix, f"h{i + 1}") - before[(prefix, i)] for i in range(n)]
            result[n] = statistics.mean(sent) * 60.0 / WINDOW
        return result
    finally:
        for p in peers:
            p.stop()
        for prefix, _ in labs:
            lab(prefix, "down", check=False)


def report(impl, tag):
    print(f"\n## {impl.name}")
    print("| peers | first peer, median (ms) | first peer, max (ms) | full mesh (ms) "
          "| one more joins: first peer (ms) |")
    print("|---|---|---|---|---|")
    for n in SIZES:
        r = mesh_run(impl, n, tag)
        if r is None:
            print(f"| {n} | no mesh within {MESH_TIMEOUT:.0f} s | | | |")
            continue
        firsts, mesh, late = r
        late_s = "-" if late is None else f"{late * 1000:.0f}"
        print(f"| {n} | {statistics.median(firsts) * 1000:.0f} | {max(firsts) * 1000:.0f} "
              f"| {mesh * 1000:.0f} | {late_s} |", flush=True)
    print(f"\nmDNS packets sent per peer per minute (after {WARMUP} s, over {WINDOW} s):")
    rates = steady_state(impl, tag)
    sizes = impl.steady_sizes
    print("| peers | " + " | ".join(str(n) for n in sizes) + " |")
    print("|---" * (len(sizes) + 1) + "|")
    print("| packets/min/peer | " + " | ".join(f"{rates[n]:.1f}" for n in sizes) + " |",
          flush=True)


def main():
    print(f"LAN mesh benchmark ({'quick' if QUICK else 'full'}), peers on one lab LAN")
    report(pairs_impl("bench-topic"), "p")
    if shutil.which("node") and os.path.isdir(os.path.join(ROOT, "bench", "lan", "js", "node_modules")):
        report(airswarm_impl("bench-topic"), "a")
    else:
        print("\n(npm airswarm skipped: Node.js or bench/lan/js/node_modules missing)")


if __name__ == "__main__":
    main()
