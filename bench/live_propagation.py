"""Driver for bench/live-propagation.sh: how long an entry appended on node A takes to be visible on
node B, pairs (`pairs node` + `pairs log`) side by side with npm hypercore over hyperswarm.

Every entry carries its send time (CLOCK_MONOTONIC, which every network namespace shares); this
driver writes it to the appender on A and takes the arrival time when B's follower prints it.
"""
import json
import os
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import two_nats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAB_SH = os.path.join(ROOT, "lab", "lab.sh")
BIN = os.path.abspath(os.environ.get("PAIRS_BIN", os.path.join(ROOT, "target", "release", "pairs")))
PEER_JS = os.path.join(ROOT, "bench", "live", "js", "peer.js")
NODE = shutil.which("node")
N = int(os.environ.get("N", "300"))            # appends per measurement
N_ONESHOT = int(os.environ.get("N_ONESHOT", "100"))
GAP = float(os.environ.get("GAP_MS", "20")) / 1000
WARM = float(os.environ.get("WARM_S", "5"))    # appends keep flowing this long before measuring
DELAYS = [int(d) for d in os.environ.get("DELAYS", "0,50").split(",") if d != ""]
CASES = os.environ.get("CASES", "lan,nat").split(",")
IMPLS = os.environ.get("IMPLS", "pairs,hypercore").split(",")
RAW = os.environ.get("RAW")                    # a file for every latency, as JSON
HOMES = tempfile.mkdtemp(prefix="pairs-live-bench-")
DHT_PORT = 49737
PAIRS_PORT = 4000

# Python's reader threads must get the GIL at once when a line arrives.
sys.setswitchinterval(0.0002)


def now_ns():
    return time.monotonic_ns()


class Lab:
    def __init__(self, prefix):
        self.prefix = prefix
        self.base = [LAB_SH, "-p", prefix]

    def __call__(self, *args):
        subprocess.run(self.base + list(args), check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)

    def down(self):
        subprocess.run(self.base + ["down"], check=False, capture_output=True)

    def spawn(self, host, argv, env=None, stdin=subprocess.PIPE):
        return subprocess.Popen(self.base + ["exec", host] + argv, env=env, stdin=stdin,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                bufsize=1)

    def run(self, host, argv, env=None):
        out = subprocess.run(self.base + ["exec", host] + argv, env=env, stdin=subprocess.DEVNULL,
                             capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise SystemExit("%s on %s failed: %s" % (" ".join(argv), host, out.stderr.strip()))
        return out.stdout


class Lines:
    """Every line of a stream, with the time it was read, in a queue."""

    def __init__(self, stream, keep=None):
        self.q = queue.Queue()
        self.tail = []
        threading.Thread(target=self._read, args=(stream, keep), daemon=True).start()

    def _read(self, stream, keep):
        for line in stream:
            t = now_ns()
            line = line.rstrip("\n")
            if keep is None or keep(line):
                self.q.put((t, line))
            self.tail = (self.tail + [line])[-20:]

    def wait_for(self, pred, timeout, what):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SystemExit("timed out waiting for %s; last lines: %s" % (what, self.tail))
            try:
                t, line = self.q.get(timeout=left)
            except queue.Empty:
                continue
            if pred(line):
                return t, line


def stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def stats(lat_ms):
    s = sorted(lat_ms)
    if not s:
        return None

    def pct(p):
        return s[min(len(s) - 1, max(0, int(round(p / 100 * len(s))) - 1))]
    return {"n": len(s), "p50": statistics.median(s), "p99": pct(99), "max": s[-1],
            "mean": statistics.fmean(s)}


def take(lines, tag, into, n, timeout):
    """Arrival latencies (ns) of entries "TAG i t_send" from `lines` into `into` until n are in."""
    deadline = time.monotonic() + timeout
    while len(into) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        try:
            t, line = lines.q.get(timeout=min(left, 0.5))
        except queue.Empty:
            continue
        parts = line.split()
        if len(parts) == 3 and parts[0] == tag:
            into.setdefault(int(parts[1]), t - int(parts[2]))


def timed(send, arrivals, tag, n):
    """n entries "TAG i t_send", one GAP apart (or back to back when `send` takes longer)."""
    while not arrivals.q.empty():
        arrivals.q.get()
    sent = {}
    slot = time.monotonic()
    for i in range(n):
        pause = slot - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        t = now_ns()
        sent[i] = t
        send("%s %d %d" % (tag, i, t))
        slot = max(slot + GAP, time.monotonic())
    got = {}
    take(arrivals, tag, got, n, 30)
    return sent, [got[i] / 1e6 for i in sorted(got)], n - len(got)


class Feed:
    """A long-lived appender fed one line at a time through its stdin; counts the lines."""

    def __init__(self, proc):
        self.proc, self.count = proc, 0

    def __call__(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        self.count += 1


def warm_up(send, arrivals):
    """Warm-up entries until one reaches B, then WARM seconds more (connections settle, paths punched)."""
    deadline = time.monotonic() + 90
    k = 0
    while True:
        send("warm %d %d" % (k, now_ns()))
        k += 1
        try:
            _, line = arrivals.q.get(timeout=0.25)
            if line.startswith("warm "):
                break
        except queue.Empty:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("no warm-up entry reached B in 90 s; B printed: %s" % arrivals.tail)
    first = time.monotonic()
    while time.monotonic() < first + WARM:
        send("warm %d %d" % (k, now_ns()))
        k += 1
        time.sleep(GAP)
    time.sleep(1)


# ------------------------------------------------------------------------------------------- pairs

def pairs_env(home):
    env = dict(os.environ, PAIRS_HOME=home, PAIRS_NO_DHT="1")
    env.pop("RUST_LOG", None)
    env.pop("PAIRS_ISOLATED", None)
    return env


class PairsNode:
    def __init__(self, lab, host, args):
        self.lab, self.host = lab, host
        self.home = tempfile.mkdtemp(dir=HOMES)
        self.env = pairs_env(self.home)
        self.proc = lab.spawn(host, [BIN, "node"] + args, env=self.env, stdin=subprocess.DEVNULL)
        self.err = Lines(self.proc.stderr)
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()
        self.err.wait_for(lambda l: l.startswith("pairs: control socket"), 30,
                          "pairs node on %s" % host)

    def run(self, *args):
        return self.lab.run(self.host, [BIN] + list(args), env=self.env)

    def spawn(self, *args):
        return self.lab.spawn(self.host, [BIN] + list(args), env=self.env)


def pairs_measure(lab, a_host, b_host, a_args, b_args, public=None):
    """`pairs node` on A and B (and on `public`, a (host, args) pair, if given); A owns a log that
    every node shares; B follows it. Returns results for `--lines` and for one process per append."""
    members = []
    procs = []
    try:
        if public:
            members.append(PairsNode(lab, public[0], public[1]))
        a = PairsNode(lab, a_host, a_args)
        b = PairsNode(lab, b_host, b_args)
        members += [a, b]
        ticket = a.run("log", "new").strip()
        for m in members:
            m.run("log", "sync", ticket)
        follower = b.spawn("log", "cat", ticket, "--follow")
        procs.append(follower)
        arrivals = Lines(follower.stdout)
        appender = a.spawn("log", "append", ticket, "-", "--lines")
        procs.append(appender)
        ids = Lines(appender.stdout)   # one id per line, printed once committed, in order
        feed = Feed(appender)
        warm_up(feed, arrivals)
        offset = feed.count
        sent, to_b, lost = timed(feed, arrivals, "e", N)
        time.sleep(0.5)
        committed = []
        j = 0
        while not ids.q.empty():
            t, _ = ids.q.get()
            if j >= offset and j - offset in sent:
                committed.append((t - sent[j - offset]) / 1e6)
            j += 1
        appender.stdin.close()
        appender.wait(30)

        # One `pairs log append TICKET DATA` process per entry, run with nsenter into A's network
        # namespace (lab.sh exec's own start-up is not part of it), each waited for.
        ns = "/run/netns/%s-%s" % (lab.prefix, a_host)

        returned = []

        def oneshot(line):
            subprocess.run(["nsenter", "--net=" + ns, BIN, "log", "append", ticket, line],
                           env=a.env, check=True, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            returned.append((now_ns() - int(line.split()[2])) / 1e6)
        _, o_to_b, o_lost = timed(oneshot, arrivals, "o", N_ONESHOT)
        return {"lines": (to_b, committed, lost), "oneshot": (o_to_b, returned, o_lost)}
    finally:
        for p in procs:
            stop(p)
        for m in members:
            stop(m.proc)


# ---------------------------------------------------------------------------- hypercore + hyperswarm

def hypercore_measure(lab, dht_host, dht_ip, a_host, b_host):
    """A hyperdht testnet on dht_host; a hypercore writer on A, a live reader on B, over hyperswarm."""
    procs = []
    try:
        dht = lab.spawn(dht_host, [NODE, PEER_JS, "dht", dht_ip, str(DHT_PORT), "8"],
                        stdin=subprocess.DEVNULL)
        procs.append(dht)
        Lines(dht.stdout).wait_for(lambda l: l == "ready", 60, "the hyperdht testnet")
        Lines(dht.stderr)
        boot = "%s:%d" % (dht_ip, DHT_PORT)
        writer = lab.spawn(a_host, [NODE, PEER_JS, "writer", boot, tempfile.mkdtemp(dir=HOMES)])
        procs.append(writer)
        out = Lines(writer.stdout)
        Lines(writer.stderr)
        _, keyline = out.wait_for(lambda l: l.startswith("key "), 60, "the writer's key")
        reader = lab.spawn(b_host, [NODE, PEER_JS, "reader", boot, tempfile.mkdtemp(dir=HOMES),
                                    keyline.split()[1]], stdin=subprocess.DEVNULL)
        procs.append(reader)
        arrivals = Lines(reader.stdout)
        Lines(reader.stderr)
        feed = Feed(writer)
        warm_up(feed, arrivals)
        sent, to_b, lost = timed(feed, arrivals, "e", N)
        time.sleep(0.5)
        committed = []
        while not out.q.empty():   # "ok e i t" once the append resolved
            t, line = out.q.get()
            parts = line.split()
            if len(parts) == 4 and parts[:2] == ["ok", "e"] and int(parts[2]) in sent:
                committed.append((t - sent[int(parts[2])]) / 1e6)
        return {"lines": (to_b, committed, lost)}
    finally:
        for p in reversed(procs):
            stop(p)


# -------------------------------------------------------------------------------------------- main

def fmt(lat):
    s = stats(lat)
    return ("%.1f" % s["p50"], "%.1f" % s["p99"], "%.1f" % s["max"]) if s else ("–", "–", "–")


ROWS = []


def record(case, impl, how, res):
    to_b, committed, lost = res
    ROWS.append((case, impl, how, to_b, committed, lost))
    if RAW:
        with open(RAW, "w") as f:
            json.dump([dict(zip(["case", "impl", "how", "to_b", "committed", "lost"], r))
                       for r in ROWS], f)
    b50, b99, bmax = fmt(to_b)
    c50 = fmt(committed)[0] if committed else "–"
    print("  %-24s %-36s A to B p50 %7s p99 %7s max %7s ms | returned on A p50 %6s ms | lost %d"
          % (impl, how, b50, b99, bmax, c50, lost), flush=True)


def run_lan():
    lab = Lab("lvlan")
    lab.down()
    try:
        lab("lan", "3")   # h1 10.0.1.11 (A), h2 .12 (B), h3 .13 (hyperswarm's DHT)
        case = "LAN"
        print("%s: A = h1, B = h2 on one switch; the hyperdht testnet on h3" % case, flush=True)
        if "pairs" in IMPLS:
            r = pairs_measure(lab, "h1", "h2", [], [])
            record(case, "pairs", "one process, a line each", r["lines"])
            record(case, "pairs", "one process per entry", r["oneshot"])
        if "hypercore" in IMPLS:
            r = hypercore_measure(lab, "h3", "10.0.1.13", "h1", "h2")
            record(case, "hypercore + hyperswarm", "one process, a line each", r["lines"])
    finally:
        lab.down()


def run_nat():
    lab = Lab("lvnat")
    lab.down()
    try:
        two_nats.build(lab)   # a1 behind r1, b1 behind r2 (port-restricted cone), pub 203.0.113.10
        pub = ("pub", ["--bind", "203.0.113.10:%d" % PAIRS_PORT])
        peer = ["--peer", "203.0.113.10:%d" % PAIRS_PORT]
        delayed = False
        for ms in DELAYS:
            if ms:
                for host in ["a1", "b1", "pub"]:
                    lab("delay", host, str(ms))
                delayed = True
            elif delayed:
                for host in ["a1", "b1", "pub"]:
                    lab("delay", host, "off")
            case = "NAT, %d ms per WAN link (A to B: %d ms one way)" % (ms, 2 * ms)
            print("%s: A = a1 behind r1, B = b1 behind r2 (port-restricted NATs); pairs member and "
                  "hyperdht testnet on pub" % case, flush=True)
            if "pairs" in IMPLS:
                r = pairs_measure(lab, "a1", "b1", peer, peer, public=pub)
                record(case, "pairs", "one process, a line each", r["lines"])
                record(case, "pairs", "one process per entry", r["oneshot"])
            if "hypercore" in IMPLS:
                r = hypercore_measure(lab, "pub", "203.0.113.10", "a1", "b1")
                record(case, "hypercore + hyperswarm", "one process, a line each",
                       r["lines"])
    finally:
        lab.down()


def table():
    print()
    print("| network | implementation | appender | n | A to B p50 (ms) | p99 (ms) | max (ms) | "
          "append returned on A, p50 (ms) |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for case, impl, how, to_b, committed, lost in ROWS:
        b50, b99, bmax = fmt(to_b)
        c50 = fmt(committed)[0] if committed else "–"
        n = "%d" % len(to_b) + (" (%d lost)" % lost if lost else "")
        print("| %s | %s | %s | %s | %s | %s | %s | %s |" % (case, impl, how, n, b50, b99, bmax, c50))
    print()
    print("| network | pairs appender | p50 pairs / hypercore | p99 pairs / hypercore |")
    print("|---|---|---:|---:|")
    cases = []
    for row in ROWS:
        if row[0] not in cases:
            cases.append(row[0])
    for case in cases:
        h = [r for r in ROWS if r[0] == case and r[1].startswith("hypercore") and r[3]]
        for p in [r for r in ROWS if r[0] == case and r[1] == "pairs" and r[3]]:
            if not h:
                continue
            sp, sh = stats(p[3]), stats(h[0][3])
            print("| %s | %s | %.2f× (%.1f / %.1f ms) | %.2f× (%.1f / %.1f ms) |"
                  % (case, p[2], sp["p50"] / sh["p50"], sp["p50"], sh["p50"],
                     sp["p99"] / sh["p99"], sp["p99"], sh["p99"]))


def main():
    print("%d appends %d ms apart per measurement (%d for one process per append); pairs %s"
          % (N, GAP * 1000, N_ONESHOT, BIN), flush=True)
    try:
        if "lan" in CASES:
            run_lan()
        if "nat" in CASES:
            run_nat()
    finally:
        table()
        shutil.rmtree(HOMES, ignore_errors=True)


if __name__ == "__main__":
    main()
