"""Runs the chat benchmarks (see chat-bench.sh) and prints a table."""

import json
import os
import statistics
import subprocess
import tempfile
import threading
import time

PAIRS = "target/release/pairs"
CHAT_BENCH = "target/release/examples/chat_bench"
MESSAGES = int(os.environ["MESSAGES"])
AUTHORS = int(os.environ["AUTHORS"])
SAMPLES = int(os.environ["SAMPLES"])


def env(home):
    e = dict(os.environ, PAIRS_HOME=home, PAIRS_ISOLATED="1")
    e.pop("RUST_LOG", None)
    return e


def pairs(home, *args):
    return subprocess.check_output([PAIRS, *args], env=env(home), text=True,
                                   stderr=subprocess.DEVNULL)


def start_node(home, *extra):
    node = subprocess.Popen([PAIRS, "node", "--bind", "127.0.0.1:0", *extra], env=env(home),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    addr = None
    for line in node.stderr:
        if line.startswith("pairs: ticket "):
            addr = line.split()[-1]
        if line.startswith("pairs: control socket"):
            threading.Thread(target=lambda: node.stderr.read(), daemon=True).start()
            return node, addr
    raise RuntimeError("pairs node did not start")


def lo_bytes():
    # /proc/net/dev is this namespace's; /sys/class/net would be the host's.
    with open("/proc/net/dev") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name.strip() == "lo":
                return int(rest.split()[8])  # transmitted bytes
    raise RuntimeError("no lo")


def entries_held(home):
    status = json.loads(pairs(home, "node", "status", "--json"))
    return max((log.get("entries") or 0 for log in status.get("logs", [])), default=0)


def follower(home, room, history):
    return subprocess.Popen([PAIRS, "chat", room, "--lines", "--json", "--history", str(history)],
                            env=env(home), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, bufsize=1)


def onboarding():
    with tempfile.TemporaryDirectory(dir="/dev/shm") as a, \
            tempfile.TemporaryDirectory(dir="/dev/shm") as b:
        ticket = subprocess.check_output([CHAT_BENCH, "fill", a, str(MESSAGES), str(AUTHORS)],
                                         env=env(a), text=True).strip()
        node_a, addr = start_node(a)
        pairs(a, "chat", "join", ticket, "--as", "bench")  # the owner's node shares it
        total = entries_held(a)
        node_b, _ = start_node(b, "--peer", addr)
        try:
            before = lo_bytes()
            start = time.monotonic()
            pairs(b, "chat", "join", ticket, "--as", "bench")
            joined = time.monotonic() - start
            # The newest message is the fill's last: once it is printed, so are the 49 before it.
            f = follower(b, "bench", 50)
            newest = f"message {MESSAGES - 1} "
            for line in f.stdout:
                if json.loads(line).get("text", "").startswith(newest):
                    break
            newest_50 = time.monotonic() - start
            while entries_held(b) < total:
                time.sleep(0.05)
            whole = time.monotonic() - start
            moved = lo_bytes() - before
            f.kill()
            return total, joined, newest_50, whole, moved
        finally:
            node_a.terminate()
            node_b.terminate()
            node_a.wait()
            node_b.wait()


def latency():
    with tempfile.TemporaryDirectory(dir="/dev/shm") as a, \
            tempfile.TemporaryDirectory(dir="/dev/shm") as b:
        node_a, addr = start_node(a)
        node_b, _ = start_node(b, "--peer", addr)
        try:
            ticket = pairs(a, "chat", "new", "latency").strip()
            pairs(b, "chat", "join", ticket)
            reader = follower(a, "latency", 0)
            writer = follower(b, "latency", 0)
            sent = {}
            samples = []
            for i in range(SAMPLES):
                text = f"ping {i}"
                sent[text] = time.monotonic()
                writer.stdin.write(text + "\n")
                writer.stdin.flush()
                for line in reader.stdout:
                    message = json.loads(line)
                    if message.get("text") == text:
                        samples.append((time.monotonic() - sent[text]) * 1000)
                        break
                time.sleep(1.0)  # one message a second: a person typing, never a flood
            reader.kill()
            writer.kill()
            return samples
        finally:
            node_a.terminate()
            node_b.terminate()
            node_a.wait()
            node_b.wait()


def main():
    total, joined, newest_50, whole, moved = onboarding()
    print(f"onboarding: {MESSAGES} messages by {AUTHORS} authors ({total} entries), loopback")
    print("| measure | seconds | goal |")
    print("|---|---:|---:|")
    print(f"| `chat join` returns (first history in) | {joined:.2f} | |")
    print(f"| newest 50 messages printed (`--lines`) | {newest_50:.2f} | 1.0 |")
    print(f"| whole history held | {whole:.2f} | 5.0 |")
    print(f"bytes moved on loopback (both ways): {moved / 1e6:.1f} MB "
          f"({moved / max(total, 1):.0f} B per entry)")
    samples = sorted(latency())
    p50 = statistics.median(samples)
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    print(f"latency, post on B to line on A, {len(samples)} samples: "
          f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {samples[-1]:.1f} ms")


if __name__ == "__main__":
    main()
