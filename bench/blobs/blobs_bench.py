"""Blob transfer benchmarks of issue 14 (see bench/blobs-bench.sh): one peer, four capped seeders, flash
crowd. Everything runs in network namespaces on one bridge with no route out; links are shaped with tbf.

  blobs_bench.py [one-peer|small|seeders|flash|all]...

Environment: SIZE_MIB (1024), ROUNDS (2), SMALL_FILES (2000), R_MBIT (100, the seeders' cap),
CROWD (20 leechers), CROWD_MBIT (20, every crowd link both ways), CROWD_MIB (64), LT_APP_LIMIT (0: libtorrent
seeds limited by tbf only; 1: also by their own upload_rate_limit = the cap).
"""

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from netlab import Lab  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PAIRS = os.environ.get("PAIRS_BIN", os.path.join(ROOT, "target", "release", "pairs"))
SENDME = os.environ.get("SENDME_BIN", shutil.which("sendme") or "sendme")
SYS_PY = "/usr/bin/python3"  # Debian's, which has python3-libtorrent
LT = os.path.join(HERE, "lt_peer.py")
HTTP = os.path.join(HERE, "range_http.py")
WORK = os.environ.get("WORK", "/dev/shm/pairs-blobs-bench")
MIB = 1 << 20
SIZE_MIB = int(os.environ.get("SIZE_MIB", "1024"))
ROUNDS = int(os.environ.get("ROUNDS", "2"))
SMALL_FILES = int(os.environ.get("SMALL_FILES", "2000"))
R_MBIT = int(os.environ.get("R_MBIT", "100"))
CROWD = int(os.environ.get("CROWD", "20"))
CROWD_MBIT = int(os.environ.get("CROWD_MBIT", "20"))
CROWD_MIB = int(os.environ.get("CROWD_MIB", "64"))
LT_APP_LIMIT = os.environ.get("LT_APP_LIMIT", "0") == "1"
TIMEOUT = float(os.environ.get("TIMEOUT", "600"))

DEVNULL = subprocess.DEVNULL
PIPE = subprocess.PIPE


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def fresh(path):
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


RUN_TIMEOUT = [TIMEOUT]  # a benchmark may lower it for its runs


def wait_cpu(p, timeout=None):
    """Waits for P; returns (exit code, user+system CPU seconds of it); kills it after the timeout
    (exit code None)."""
    timeout = RUN_TIMEOUT[0] if timeout is None else timeout
    deadline = time.monotonic() + timeout
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid == p.pid:
            p.returncode = os.waitstatus_to_exitcode(status)
            return p.returncode, ru.ru_utime + ru.ru_stime
        if time.monotonic() > deadline:
            os.killpg(p.pid, signal.SIGKILL)
            pid, status, ru = os.wait4(p.pid, 0)
            p.returncode = -9
            return None, ru.ru_utime + ru.ru_stime
        time.sleep(0.005)


def stop_cpu(lab, p, sig=signal.SIGTERM):
    if p.poll() is None:
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            pass
    return wait_cpu(p, timeout=15)[1]


def read_match(stream, pattern, limit=120):
    """Reads lines from STREAM until one matches PATTERN (in a thread, so a silent process times out)."""
    result = {}

    def reader():
        for line in stream:
            line = line.decode(errors="replace") if isinstance(line, bytes) else line
            m = re.search(pattern, line)
            if m:
                result["m"] = m
                return

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t.join(limit)
    if "m" not in result:
        raise RuntimeError(f"no line matching {pattern!r} within {limit}s")
    threading.Thread(target=lambda: [None for _ in stream], daemon=True).start()  # keep draining
    return result["m"]


def make_file(path, mib):
    if os.path.exists(path) and os.path.getsize(path) == mib * MIB:
        return
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(MIB))


def make_small_tree(path, n):
    if os.path.isdir(path) and len(os.listdir(path)) == n:
        return
    fresh(path)
    rnd = random.Random(14)
    for i in range(n):
        with open(os.path.join(path, f"f{i:05}.bin"), "wb") as f:
            f.write(os.urandom(rnd.randint(4, 64) * 1024))


def tree_count(path):
    return sum(len(fs) for _, _, fs in os.walk(path))


def tree_size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def pairs_cmd(home, *args):
    return [PAIRS, "--isolated", "--data-dir", home, *args]


# ---------------------------------------------------------------- one peer: a sends PATH, b receives

def run_pairs_get(lab, path):
    ha, hb, out = fresh(f"{WORK}/home-a"), fresh(f"{WORK}/home-b"), fresh(f"{WORK}/out")
    seed = lab.popen("a", pairs_cmd(ha, "send", path, "--bind", f"{lab.hosts['a']}:7000", "--json"),
                     stdout=PIPE, stderr=DEVNULL)
    ticket = json.loads(read_match(seed.stdout, r"^\{.*\}\s*$").group(0))["ticket"]
    t0 = time.monotonic()
    get = lab.popen("b", pairs_cmd(hb, "get", ticket, "-o", out, "--json"), stdout=PIPE, stderr=PIPE)
    rc, cpu_b = wait_cpu(get)
    wall = time.monotonic() - t0
    err = get.stderr.read().decode(errors="replace")
    cpu_a = stop_cpu(lab, seed)
    if rc != 0:
        why = "timed out" if rc is None else f"exit {rc}"
        raise RuntimeError(f"pairs get {why} after {wall:.0f} s with {tree_count(out)} files, "
                           f"{tree_size(out)} bytes written: {err[-300:]}")
    return wall, cpu_a, cpu_b, tree_size(out)


def run_sendme(lab, path):
    out = fresh(f"{WORK}/out")
    src_dir = os.path.dirname(path)
    seed = lab.popen("a", [SENDME, "send", os.path.basename(path), "--relay", "disabled", "--ticket-type",
                           "addresses", "--magic-ipv4-addr", f"{lab.hosts['a']}:7002", "--no-progress"], cwd=src_dir, stdout=PIPE, stderr=DEVNULL,
                     env=dict(os.environ, RUST_LOG="off"))
    ticket = read_match(seed.stdout, r"sendme receive (\S+)").group(1)
    t0 = time.monotonic()
    get = lab.popen("b", [SENDME, "receive", ticket, "--relay", "disabled", "--no-progress"], cwd=out, stdout=DEVNULL, stderr=PIPE)
    rc, cpu_b = wait_cpu(get)
    wall = time.monotonic() - t0
    err = get.stderr.read().decode(errors="replace")
    cpu_a = stop_cpu(lab, seed, signal.SIGINT)  # Ctrl-C: it removes its temporary store
    for d in (out, src_dir):  # its temporary stores, if left
        for leftover in os.listdir(d):
            if leftover.startswith(".sendme"):
                shutil.rmtree(os.path.join(d, leftover), ignore_errors=True)
    if rc != 0:
        why = "timed out" if rc is None else f"exit {rc}"
        raise RuntimeError(f"sendme receive {why} after {wall:.0f} s: {err[-300:]}")
    return wall, cpu_a, cpu_b, tree_size(out)


def run_raw(lab, path):
    ha, hb, out = fresh(f"{WORK}/home-a"), fresh(f"{WORK}/home-b"), fresh(f"{WORK}/out")
    with open(path, "rb") as data:
        listener = lab.popen("a", pairs_cmd(ha, "listen", "--bind", f"{lab.hosts['a']}:7001"),
                             stdin=data, stdout=DEVNULL, stderr=PIPE)
    ticket = read_match(listener.stderr, r"pairs connect (node\S+)").group(1)
    t0 = time.monotonic()
    with open(os.path.join(out, "raw"), "wb") as sink:
        conn = lab.popen("b", pairs_cmd(hb, "connect", ticket), stdin=DEVNULL, stdout=sink, stderr=DEVNULL)
        rc, cpu_b = wait_cpu(conn)
    wall = time.monotonic() - t0
    cpu_a = wait_cpu(listener, timeout=30)[1]
    if rc != 0:
        raise RuntimeError(f"pairs connect failed ({rc})")
    return wall, cpu_a, cpu_b, tree_size(out)


def run_iperf3(lab, path):
    size = tree_size(path)
    server = lab.popen("b", ["iperf3", "-s", "-1", "--forceflush", "-B", lab.hosts["b"], "-p", "5201"], stdout=PIPE,
                       stderr=DEVNULL)
    read_match(server.stdout, "Server listening")
    t0 = time.monotonic()
    client = lab.popen("a", ["iperf3", "-c", lab.hosts["b"], "-p", "5201", "-n", str(max(size, 1))],
                       stdout=DEVNULL, stderr=DEVNULL)
    rc, cpu_a = wait_cpu(client)
    wall = time.monotonic() - t0
    cpu_b = wait_cpu(server, timeout=30)[1]
    if rc != 0:
        raise RuntimeError("iperf3 failed")
    return wall, cpu_a, cpu_b, size


ONE_PEER_TOOLS = [("pairs get", run_pairs_get), ("sendme", run_sendme),
                  ("pairs raw stream", run_raw), ("iperf3 (TCP)", run_iperf3)]


def one_peer_lab():
    lab = Lab("pbl")
    lab.host("a", 1)
    lab.host("b", 2)
    return lab


FAILURES = []


def best_of(fn, lab, path, rounds):
    best = None
    for i in range(rounds):
        try:
            r = fn(lab, path)
        except Exception as e:  # recorded, not fatal: a failing tool is a result
            log(f"    round {i + 1}: FAILED: {e}")
            FAILURES.append(str(e).split(":")[0])
            continue
        log(f"    round {i + 1}: {r[0]:.2f} s, cpu send {r[1]:.2f} s recv {r[2]:.2f} s, {r[3]} bytes")
        if best is None or r[0] < best[0]:
            best = r
    return best


LINKS = [("veth, unshaped", None), ("1 Gbit/s tbf", 1000)]


def bench_one_peer():
    big, tiny = f"{WORK}/src/big.bin", f"{WORK}/src/tiny.bin"
    make_file(big, SIZE_MIB)
    with open(tiny, "wb") as f:
        f.write(os.urandom(1024))
    lab = one_peer_lab()
    rows = []
    try:
        for link, mbit in LINKS:
            lab.shape("a", mbit, mbit)
            lab.shape("b", mbit, mbit)
            for name, fn in ONE_PEER_TOOLS:
                log(f"one peer, {link}, {name}: {SIZE_MIB} MiB")
                r_big = best_of(fn, lab, big, ROUNDS)
                log(f"one peer, {link}, {name}: 1 KiB")
                r_tiny = best_of(fn, lab, tiny, ROUNDS)
                rows.append((link, name, r_big, r_tiny))
    finally:
        lab.down()
    size = SIZE_MIB * MIB
    print(f"\n## One peer: {SIZE_MIB} MiB file, best of {ROUNDS}\n")
    print("| link | tool | wall s | 1 KiB wall s | Mbit/s (wall) | Mbit/s (start-up subtracted) | "
          "CPU s send | CPU s recv |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    table = {}
    for link, name, rb, rt in rows:
        if rb is None or rb[3] != size and name != "iperf3 (TCP)":
            print(f"| {link} | {name} | failed | | | | | |")
            continue
        net = rb[0] - (rt[0] if rt else 0)
        mb_wall, mb_net = size * 8 / rb[0] / 1e6, size * 8 / max(net, 1e-6) / 1e6
        table[(link, name)] = (mb_wall, mb_net)
        print(f"| {link} | {name} | {rb[0]:.2f} | {rt[0] if rt else float('nan'):.2f} | {mb_wall:.0f} | "
              f"{mb_net:.0f} | {rb[1]:.2f} | {rb[2]:.2f} |")
    print()
    for link, _ in LINKS:
        p = table.get((link, "pairs get"))
        if not p:
            continue
        for other in ("sendme", "pairs raw stream", "iperf3 (TCP)"):
            o = table.get((link, other))
            if o:
                print(f"- {link}: pairs get / {other}: {p[0] / o[0]:.2f}x (wall), "
                      f"{p[1] / o[1]:.2f}x (start-up subtracted)")
    sys.stdout.flush()


def bench_small():
    rows = []
    lab = one_peer_lab()
    RUN_TIMEOUT[0] = float(os.environ.get("SMALL_TIMEOUT", "120"))
    counts = sorted({SMALL_FILES, 200})
    try:
        for n in counts:
            tree = f"{WORK}/src/small{n}"
            make_small_tree(tree, n)
            total = tree_size(tree)
            for link, mbit in LINKS:
                lab.shape("a", mbit, mbit)
                lab.shape("b", mbit, mbit)
                for name, fn in (("pairs get", run_pairs_get), ("sendme", run_sendme)):
                    log(f"small files, {n} files, {link}, {name}")
                    del FAILURES[:]
                    r = best_of(fn, lab, tree, ROUNDS)
                    rows.append((n, total, link, name, r, list(FAILURES)))
    finally:
        RUN_TIMEOUT[0] = TIMEOUT
        lab.down()
    print(f"\n## Many small files: N files of 4-64 KiB, best of {ROUNDS} "
          f"(a run is stopped after {os.environ.get('SMALL_TIMEOUT', '120')} s)\n")
    print("| files (MiB) | link | tool | wall s | files/s | Mbit/s | CPU s send | CPU s recv |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    walls = {}
    for n, total, link, name, r, fails in rows:
        label = f"{n} ({total / MIB:.1f})"
        if r is None or r[3] != total:
            print(f"| {label} | {link} | {name} | failed: {'; '.join(fails)} | | | | |")
            continue
        walls[(n, link, name)] = r[0]
        print(f"| {label} | {link} | {name} | {r[0]:.2f} | {n / r[0]:.0f} | {total * 8 / r[0] / 1e6:.0f} | "
              f"{r[1]:.2f} | {r[2]:.2f} |")
    print()
    for n in counts:
        for link, _ in LINKS:
            if (n, link, "pairs get") in walls and (n, link, "sendme") in walls:
                print(f"- {n} files, {link}: pairs get is "
                      f"{walls[(n, link, 'sendme')] / walls[(n, link, 'pairs get')]:.2f}x sendme's speed")
    sys.stdout.flush()


# ---------------------------------------------------------------- four seeders, one leecher

def seeders_lab():
    lab = Lab("pbs")
    lab.host("l", 2)
    for i in range(1, 5):
        lab.host(f"s{i}", 10 + i)
    return lab


def seeder_tx(lab):
    return [lab.tx_bytes(f"s{i}") for i in range(1, 5)]


def seeders_pairs(lab, path):
    homes = [fresh(f"{WORK}/home-s{i}") for i in range(1, 5)]
    hl, out = fresh(f"{WORK}/home-l"), fresh(f"{WORK}/out")
    seeds, tickets = [], []
    for i in range(1, 5):
        s = lab.popen(f"s{i}", pairs_cmd(homes[i - 1], "send", path, "--bind", f"{lab.hosts[f's{i}']}:7000",
                                          "--json"), stdout=PIPE, stderr=DEVNULL)
        seeds.append(s)
    for s in seeds:
        tickets.append(json.loads(read_match(s.stdout, r"^\{.*\}\s*$").group(0))["ticket"])
    peers = []
    for i in range(2, 5):
        peers += ["--peer", f"{lab.hosts[f's{i}']}:7000"]
    tx0 = seeder_tx(lab)
    t0 = time.monotonic()
    get = lab.popen("l", pairs_cmd(hl, "get", tickets[0], "-o", out, "--json", *peers), stdout=PIPE,
                    stderr=PIPE)
    rc, cpu = wait_cpu(get)
    wall = time.monotonic() - t0
    tx = [b - a for a, b in zip(tx0, seeder_tx(lab))]
    err = get.stderr.read().decode(errors="replace")
    for s in seeds:
        stop_cpu(lab, s)
    if rc != 0:
        raise RuntimeError(f"pairs get failed ({rc}): {err[-500:]}")
    return wall, tx, tree_size(out)


def seeders_lt(lab, path, caps):
    torrent = f"{WORK}/src/big.torrent"
    if not os.path.exists(torrent):
        subprocess.run([SYS_PY, LT, "make", path, torrent], check=True)
    out = fresh(f"{WORK}/out")
    seeds = []
    for i in range(1, 5):
        limit = [str(int(caps[i - 1] * 1e6 / 8))] if LT_APP_LIMIT else []
        seeds.append(lab.popen(f"s{i}", [SYS_PY, LT, "seed", torrent, os.path.dirname(path),
                                         lab.hosts[f"s{i}"], "6881", *limit], stdout=PIPE, stderr=DEVNULL))
    for s in seeds:
        read_match(s.stdout, "ready")
    tx0 = seeder_tx(lab)
    t0 = time.monotonic()
    leech = lab.popen("l", [SYS_PY, LT, "leech", torrent, out, lab.hosts["l"], "6881",
                            *[f"{lab.hosts[f's{i}']}:6881" for i in range(1, 5)]], stdout=PIPE, stderr=PIPE)
    rc, cpu = wait_cpu(leech)
    wall = time.monotonic() - t0
    tx = [b - a for a, b in zip(tx0, seeder_tx(lab))]
    for s in seeds:
        stop_cpu(lab, s)
    if rc != 0:
        raise RuntimeError(f"libtorrent leecher failed ({rc}): {leech.stderr.read()[-500:]}")
    return wall, tx, tree_size(out)


def seeders_aria2(lab, path):
    out = fresh(f"{WORK}/out")
    servers = [lab.popen(f"s{i}", [sys.executable, HTTP, os.path.dirname(path), lab.hosts[f"s{i}"], "8080"],
                         stdout=PIPE, stderr=DEVNULL) for i in range(1, 5)]
    for s in servers:
        read_match(s.stdout, "ready")
    name = os.path.basename(path)
    urls = [f"http://{lab.hosts[f's{i}']}:8080/{name}" for i in range(1, 5)]
    tx0 = seeder_tx(lab)
    t0 = time.monotonic()
    get = lab.popen("l", ["aria2c", "-s4", "-x4", "--file-allocation=none", "--allow-overwrite=true",
                          "--console-log-level=warn", "--summary-interval=0", "-d", out, *urls],
                    stdout=PIPE, stderr=PIPE)
    rc, cpu = wait_cpu(get)
    wall = time.monotonic() - t0
    tx = [b - a for a, b in zip(tx0, seeder_tx(lab))]
    for s in servers:
        stop_cpu(lab, s)
    if rc != 0:
        raise RuntimeError(f"aria2c failed ({rc}): {get.stdout.read()[-500:]}")
    return wall, tx, tree_size(out)


def bench_seeders():
    big = f"{WORK}/src/big.bin"
    make_file(big, SIZE_MIB)
    size = SIZE_MIB * MIB
    lab = seeders_lab()
    cases = [("4 x R", [R_MBIT] * 4), ("3 x R + R/10", [R_MBIT] * 3 + [R_MBIT / 10])]
    results = []
    try:
        for case, caps in cases:
            for i, cap in enumerate(caps, 1):
                lab.shape(f"s{i}", up_mbit=cap)
            tools = [("pairs get", lambda: seeders_pairs(lab, big)),
                     ("libtorrent 2.0", lambda: seeders_lt(lab, big, caps)),
                     ("aria2c -s4 -x4 (HTTP)", lambda: seeders_aria2(lab, big))]
            for name, fn in tools:
                best = None
                for r in range(ROUNDS):
                    log(f"seeders, {case}, {name}, round {r + 1}")
                    try:
                        res = fn()
                    except Exception as e:
                        log(f"    FAILED: {e}")
                        continue
                    log(f"    {res[0]:.2f} s, seeder tx MB {[round(t / 1e6) for t in res[1]]}, got {res[2]}")
                    if res[2] == size and (best is None or res[0] < best[0]):
                        best = res
                results.append((case, caps, name, best))
    finally:
        lab.down()
    print(f"\n## Four seeders, one leecher: {SIZE_MIB} MiB, seeders' upload capped by tbf "
          f"(R = {R_MBIT} Mbit/s), best of {ROUNDS}\n")
    print("| seeders | tool | wall s | goodput Mbit/s | % of summed caps | bytes sent per seeder (MB, on the wire) |")
    print("|---|---|---:|---:|---:|---|")
    by = {}
    for case, caps, name, best in results:
        if best is None:
            print(f"| {case} | {name} | failed | | | |")
            continue
        good = size * 8 / best[0] / 1e6
        by[(case, name)] = good
        print(f"| {case} ({sum(caps):.0f} Mbit/s) | {name} | {best[0]:.2f} | {good:.0f} | "
              f"{100 * good / sum(caps):.1f}% | {' / '.join(str(round(t / 1e6)) for t in best[1])} |")
    print()
    for case, _ in cases:
        p = by.get((case, "pairs get"))
        for other in ("libtorrent 2.0", "aria2c -s4 -x4 (HTTP)"):
            o = by.get((case, other))
            if p and o:
                print(f"- {case}: pairs / {other}: {p / o:.2f}x")
    sys.stdout.flush()


# ---------------------------------------------------------------- flash crowd

def crowd_lab():
    lab = Lab("pbc")
    lab.host("seed", 10)
    for i in range(1, CROWD + 1):
        lab.host(f"l{i}", 100 + i)
    for name in list(lab.hosts):
        lab.shape(name, CROWD_MBIT, CROWD_MBIT)
    return lab


def crowd_run(lab, path, start_seed, start_leecher, parse_done):
    """Starts the seed, then every leecher at once; returns (completion times, seed tx bytes,
    total leecher tx bytes)."""
    seed, ref = start_seed()
    tx0 = lab.tx_bytes("seed")
    ltx0 = sum(lab.tx_bytes(f"l{i}") for i in range(1, CROWD + 1))
    t0 = time.monotonic()
    procs = [start_leecher(i, ref) for i in range(1, CROWD + 1)]
    samples = []
    done = {}

    def waiter(i, p):
        rc, _ = wait_cpu(p)
        done[i] = (time.monotonic() - t0, rc, p.stdout.read())

    threads = [threading.Thread(target=waiter, args=(i, p)) for i, p in enumerate(procs, 1)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        samples.append((time.monotonic() - t0, lab.tx_bytes("seed") - tx0))
        time.sleep(0.5)
    seed_tx = lab.tx_bytes("seed") - tx0
    leech_tx = sum(lab.tx_bytes(f"l{i}") for i in range(1, CROWD + 1)) - ltx0
    stop_cpu(lab, seed)
    times = []
    for i in range(1, CROWD + 1):
        secs, rc, out = done[i]
        if rc != 0:
            log(f"    leecher {i} failed ({rc}) after {secs:.1f} s")
        else:
            times.append(secs)
    return times, seed_tx, leech_tx, samples


def crowd_pairs(lab, path):
    def start_seed():
        h = fresh(f"{WORK}/home-seed")
        s = lab.popen("seed", pairs_cmd(h, "send", path, "--bind", f"{lab.hosts['seed']}:7000", "--json"),
                      stdout=PIPE, stderr=DEVNULL)
        return s, json.loads(read_match(s.stdout, r"^\{.*\}\s*$").group(0))["ticket"]

    def start_leecher(i, ticket):
        h, out = fresh(f"{WORK}/home-l{i}"), fresh(f"{WORK}/out-l{i}")
        return lab.popen(f"l{i}", pairs_cmd(h, "get", ticket, "-o", out, "--json",
                                            "--bind", f"{lab.hosts[f'l{i}']}:7000"),
                         stdout=PIPE, stderr=DEVNULL)

    return crowd_run(lab, path, start_seed, start_leecher, None)


def crowd_lt(lab, path):
    torrent = f"{WORK}/src/crowd.torrent"
    subprocess.run([SYS_PY, LT, "make", path, torrent], check=True)

    def start_seed():
        s = lab.popen("seed", [SYS_PY, LT, "seed", torrent, os.path.dirname(path), lab.hosts["seed"], "6881"],
                      stdout=PIPE, stderr=DEVNULL)
        read_match(s.stdout, "ready")
        return s, None

    def start_leecher(i, _):
        out = fresh(f"{WORK}/out-l{i}")
        return lab.popen(f"l{i}", [SYS_PY, LT, "leech", torrent, out, lab.hosts[f"l{i}"], "6881",
                                   f"{lab.hosts['seed']}:6881"], stdout=PIPE, stderr=DEVNULL)

    return crowd_run(lab, path, start_seed, start_leecher, None)


def bench_flash():
    path = f"{WORK}/src/crowd.bin"
    make_file(path, CROWD_MIB)
    size = CROWD_MIB * MIB
    bound = size * 8 / (CROWD_MBIT * 1e6)
    lab = crowd_lab()
    rows = []
    try:
        for name, fn in (("pairs get", crowd_pairs), ("libtorrent 2.0", crowd_lt)):
            log(f"flash crowd, {name}")
            times, seed_tx, leech_tx, samples = fn(lab, path)
            log(f"    done {len(times)}/{CROWD}, last {max(times) if times else float('nan'):.1f} s, "
                f"seed tx {seed_tx / size:.2f}x")
            # When the seed had sent one file's worth (on the wire), and how much by the first completion
            first = min(times) if times else None
            at_first = max((b for t, b in samples if first and t <= first), default=0)
            rows.append((name, times, seed_tx, leech_tx, at_first))
            for i in range(1, CROWD + 1):
                shutil.rmtree(f"{WORK}/out-l{i}", ignore_errors=True)
                shutil.rmtree(f"{WORK}/home-l{i}", ignore_errors=True)
    finally:
        lab.down()
    print(f"\n## Flash crowd: one seed, {CROWD} leechers, {CROWD_MIB} MiB, every link {CROWD_MBIT} Mbit/s "
          f"each way (tbf); lower bound {bound:.1f} s\n")
    print("| tool | completed | first done s | median s | all done s | all done / bound | "
          "seed upload / file | seed upload by first completion / file | leechers' upload / file |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, times, seed_tx, leech_tx, at_first in rows:
        if not times:
            print(f"| {name} | 0/{CROWD} | | | | | {seed_tx / size:.2f} | | |")
            continue
        times.sort()
        print(f"| {name} | {len(times)}/{CROWD} | {times[0]:.1f} | {times[len(times) // 2]:.1f} | "
              f"{times[-1]:.1f} | {times[-1] / bound:.2f} | {seed_tx / size:.2f} | {at_first / size:.2f} | "
              f"{leech_tx / size:.2f} |")
    sys.stdout.flush()


def main():
    which = sys.argv[1:] or ["all"]
    if "all" in which:
        which = ["one-peer", "small", "seeders", "flash"]
    os.makedirs(f"{WORK}/src", exist_ok=True)
    cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], stdout=PIPE,
                         text=True).stdout.strip()
    print(f"machine: {os.cpu_count()} CPUs ({cpu}), kernel {os.uname().release}, "
          f"load average at start {os.getloadavg()[0]:.2f}")
    print(f"pairs: {subprocess.run([PAIRS, '--version'], stdout=PIPE, text=True).stdout.strip()}; "
          f"sendme: {subprocess.run([SENDME, '--version'], stdout=PIPE, text=True).stdout.strip()}")
    for w in which:
        {"one-peer": bench_one_peer, "small": bench_small, "seeders": bench_seeders, "flash": bench_flash}[w]()
    shutil.rmtree(f"{WORK}/out", ignore_errors=True)


if __name__ == "__main__":
    main()
