"""Driver for bench/nat.sh: builds the lab, runs the trials, prints the figures."""
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time

import two_nats

BIN = os.path.abspath("target/release/pairs")
LAB = ["lab/lab.sh", "-p", "natb"]
DELAY_MS = 50
# a1 -> pub and a1 -> b1 cross two delayed links each way.
RTT_MS = 4 * DELAY_MS
ROUNDS = int(os.environ.get("ROUNDS", "2"))
MODES = ["fullcone", "restricted", "portrestricted", "symmetric"]
TURN = "test:test123@203.0.113.10:3478"
HOMES = tempfile.mkdtemp(prefix="pairs-nat-bench-")


def lab(*args):
    subprocess.run(LAB + list(args), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def home(name):
    path = os.path.join(HOMES, name)
    os.makedirs(path, exist_ok=True)
    return path


def pairs(node, name, args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE):
    env = dict(os.environ, PAIRS_HOME=home(name), PAIRS_NO_DHT="1")
    env.pop("RUST_LOG", None)
    return subprocess.Popen(LAB + ["exec", node, BIN] + args, env=env, stdin=stdin,
                            stdout=stdout, stderr=subprocess.PIPE, text=False)


def wait_stderr(proc, needle, limit=30):
    deadline = time.time() + limit
    seen = []
    while time.time() < deadline:
        line = proc.stderr.readline().decode(errors="replace")
        if not line:
            break
        seen.append(line)
        if needle in line:
            return line, seen
    raise SystemExit("never saw %r:\n%s" % (needle, "".join(seen)))


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def setup():
    subprocess.run(LAB + ["down"], check=False, capture_output=True)
    two_nats.build(lab)
    lab("turn", "pub", "start")
    helper = pairs("pub", "helper", ["serve", "--port", "4000", "--relay-rate", "1G",
                                     "--relay-bytes", "4G"])
    ticket = helper.stdout.readline().decode().strip()
    return helper, ticket


def delays(ms):
    for host in ["a1", "b1", "pub"]:
        lab("delay", host, str(ms) if ms else "off")


def connect_once(nat1, nat2, how, payload=None):
    """One connection a1 -> b1; returns (stderr line of connect, seconds for the payload or None)."""
    lab("nat", "r1", nat1)
    lab("nat", "r2", nat2)
    if how == "turn":
        listen_args, connect_extra, ready = ["--turn", TURN], ["--turn", TURN], "TURN relay at"
    else:
        listen_args, connect_extra, ready = ["--via", TICKET], ["--via", TICKET], "reachable through helper"
    source = open(payload, "rb") if payload else subprocess.DEVNULL
    listener = pairs("b1", "b", ["listen", "--port-mapping", "off"] + listen_args, stdin=source)
    line, seen = wait_stderr(listener, ready)
    if how == "turn":
        target = wait_stderr(listener, "pairs connect ")[0].split()[2]
    else:
        target = open(os.path.join(HOMES, "b-id")).read().strip()
    started = time.time()
    dialer = pairs("a1", "a", ["connect", target] + connect_extra, stdout=subprocess.PIPE)
    received = 0
    first_byte = None
    while True:
        chunk = dialer.stdout.read1(1 << 16)
        if not chunk:
            break
        if first_byte is None:
            first_byte = time.time()
        received += len(chunk)
    dialer.wait(120)
    # Throughput counts from the first byte received: process start-up and set-up are left out.
    took = time.time() - (first_byte or started)
    err = dialer.stderr.read().decode(errors="replace")
    listener.wait(30)
    line = next((l for l in err.splitlines() if "connected to" in l), None)
    if dialer.returncode != 0 or line is None:
        raise SystemExit("connect failed (%s -> %s, %s):\n%s" % (nat1, nat2, how, err))
    if payload:
        assert received == os.path.getsize(payload), (received, os.path.getsize(payload))
    return line, took


def parse(line):
    total = int(re.search(r"in (\d+) ms", line).group(1))
    after = re.search(r"(\d+) ms after the helper", line)
    attempt = re.search(r"attempt (\d+)", line)
    return total, int(after.group(1)) if after else None, int(attempt.group(1)) if attempt else None


def punchable(a, b):
    hard = lambda x, y: x == "symmetric" and y in ("symmetric", "portrestricted")
    return not (hard(a, b) or hard(b, a))


def main():
    global TICKET
    helper, TICKET = setup()
    b_id = subprocess.run([BIN, "id"], env=dict(os.environ, PAIRS_HOME=home("b")),
                          capture_output=True, check=True).stdout.decode().strip()
    with open(os.path.join(HOMES, "b-id"), "w") as f:
        f.write(b_id)
    try:
        delays(DELAY_MS)
        print("lab: a1 behind r1, b1 behind r2, helper and coturn on the public host;")
        print("     %d ms on each WAN link each way: RTT a1-helper = a1-b1 = %d ms\n" % (DELAY_MS, RTT_MS))
        direct, first_attempt, punches = [], 0, 0
        for _ in range(ROUNDS):
            for nat1 in MODES:
                for nat2 in MODES:
                    if not punchable(nat1, nat2):
                        continue
                    line, _ = connect_once(nat1, nat2, "via")
                    total, after, attempt = parse(line)
                    if attempt is None:
                        raise SystemExit("punchable pair relayed: %s -> %s: %s" % (nat1, nat2, line))
                    punches += 1
                    first_attempt += attempt == 1
                    if attempt == 1:
                        direct.append((total, after))
        relayed = []
        for _ in range(ROUNDS * 2):
            line, _ = connect_once("symmetric", "symmetric", "via")
            total, after, _ = parse(line)
            relayed.append((total, after))
        turn = []
        for _ in range(ROUNDS * 2):
            line, _ = connect_once("symmetric", "symmetric", "turn")
            total, _, _ = parse(line)
            turn.append((total, None))

        def row(name, samples):
            totals = [t for t, _ in samples]
            afters = [a for _, a in samples if a is not None]
            after = statistics.median(afters) if afters else None
            print("| %s | %d | %.0f ms (%.1f RTT) | %s |" % (
                name, len(samples), statistics.median(totals), statistics.median(totals) / RTT_MS,
                "%.0f ms (%.1f RTT)" % (after, after / RTT_MS) if after is not None else "-"))

        print("| path | trials | dial to connected, median | after the helper answered, median |")
        print("|---|---:|---:|---:|")
        row("hole punched (first attempt)", direct)
        row("peer relay (symmetric <-> symmetric)", relayed)
        row("TURN, coturn (symmetric <-> symmetric)", turn)
        print("\nfirst-attempt punch success on punchable pairs: %d/%d (%.0f%%)\n"
              % (first_attempt, punches, 100.0 * first_attempt / punches))

        # Throughput and CPU, without the delay (what the relay itself costs).
        delays(0)
        size = 64 << 20
        payload = os.path.join(HOMES, "payload")
        with open(payload, "wb") as f:
            f.write(os.urandom(size))
        coturn_pid = int(open("/tmp/pairs-lab/natb/turn-pub/pid").read())
        print("| path (64 MiB, no delay) | Mbit/s | relay CPU s per GiB |")
        print("|---|---:|---:|")
        results = {}
        for name, nats, how, relay_pid in [
            ("direct (full cone <-> full cone, punched)", ("fullcone", "fullcone"), "via", None),
            ("peer relay (pairs serve)", ("symmetric", "symmetric"), "via", helper.pid),
            ("TURN (coturn)", ("symmetric", "symmetric"), "turn", coturn_pid),
        ]:
            before = cpu_seconds(relay_pid) if relay_pid else 0.0
            _, took = connect_once(nats[0], nats[1], how, payload)
            cpu = (cpu_seconds(relay_pid) - before) if relay_pid else None
            mbit = size * 8 / took / 1e6
            results[name] = mbit
            print("| %s | %.0f | %s |" % (name, mbit, "%.2f" % (cpu * (1 << 30) / size) if cpu is not None else "-"))
        direct_mbit = results["direct (full cone <-> full cone, punched)"]
        print("\npeer relay / direct: %.2fx; TURN / direct: %.2fx; peer relay / TURN: %.2fx"
              % (results["peer relay (pairs serve)"] / direct_mbit,
                 results["TURN (coturn)"] / direct_mbit,
                 results["peer relay (pairs serve)"] / results["TURN (coturn)"]))
        print("(throughput from the first byte received to the last)")
    finally:
        helper.kill()
        subprocess.run(LAB + ["down"], check=False, capture_output=True)
        shutil.rmtree(HOMES, ignore_errors=True)


if __name__ == "__main__":
    main()
