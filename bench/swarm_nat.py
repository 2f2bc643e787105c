"""Driver for bench/swarm-nat.sh: two swarm members behind NATs meet through a public member."""
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
import time

import two_nats

BIN = os.path.abspath("target/release/pairs")
LAB = ["lab/lab.sh", "-p", "swnb"]
DELAY_MS = 50
# a1 -> pub and a1 -> b1 cross two delayed links each way.
RTT_MS = 4 * DELAY_MS
ROUNDS = int(os.environ.get("ROUNDS", "5"))
HOMES = tempfile.mkdtemp(prefix="pairs-swarm-nat-bench-")
TOPIC = "bench-through-nats"


def lab(*args):
    subprocess.run(LAB + list(args), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


class Member:
    """A `pairs swarm` in the lab; records when each peer joined (seconds after start)."""

    def __init__(self, node, args):
        home = tempfile.mkdtemp(dir=HOMES)
        env = dict(os.environ, PAIRS_HOME=home, PAIRS_NO_DHT="1")
        env.pop("RUST_LOG", None)
        self.started = time.monotonic()
        self.proc = subprocess.Popen(LAB + ["exec", node, BIN, "swarm", TOPIC] + args, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.short = None
        self.joined = {}
        self.ready = threading.Event()
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self):
        for line in self.proc.stderr:
            m = re.search(r"joined '.*' as (\S+)", line)
            if m:
                self.short = m.group(1)
                self.ready.set()
            m = re.match(r"pairs: \+ (\S+) joined", line)
            if m:
                self.joined.setdefault(m.group(1), time.monotonic() - self.started)

    def stop(self):
        # SIGTERM: the member closes its connections, so the public member forgets it at once.
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def meet_once(nat1, nat2):
    """a1 and b1 start together, each knowing only the public member; seconds until both met."""
    lab("nat", "r1", nat1)
    lab("nat", "r2", nat2)
    a1 = Member("a1", ["--peer", "203.0.113.10:4000"])
    b1 = Member("b1", ["--peer", "203.0.113.10:4000"])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if a1.short and b1.short and b1.short in a1.joined and a1.short in b1.joined:
                return max(a1.joined[b1.short], b1.joined[a1.short])
            time.sleep(0.01)  # polling the watcher threads' results
        raise SystemExit("%s <-> %s: the members never met" % (nat1, nat2))
    finally:
        a1.stop()
        b1.stop()


def main():
    subprocess.run(LAB + ["down"], check=False, capture_output=True)
    two_nats.build(lab)
    public = Member("pub", ["--port", "4000"])
    try:
        public.ready.wait(30)
        for host in ["a1", "b1", "pub"]:
            lab("delay", host, str(DELAY_MS))
        print("lab: a1 behind r1, b1 behind r2, a swarm member on the public host;")
        print("     %d ms on each WAN link each way: RTT a1-pub = a1-b1 = %d ms\n" % (DELAY_MS, RTT_MS))
        print("| NATs (a1, b1) | path | trials | start to both met, median | max |")
        print("|---|---|---:|---:|---:|")
        for nat1, nat2, path in [("portrestricted", "portrestricted", "hole punched"),
                                 ("fullcone", "symmetric", "hole punched"),
                                 ("symmetric", "symmetric", "relayed by the public member")]:
            times = [meet_once(nat1, nat2) * 1000 for _ in range(ROUNDS)]
            med = statistics.median(times)
            print("| %s, %s | %s | %d | %.0f ms (%.1f RTT) | %.0f ms |"
                  % (nat1, nat2, path, len(times), med, med / RTT_MS, max(times)), flush=True)
    finally:
        public.stop()
        subprocess.run(LAB + ["down"], check=False, capture_output=True)
        shutil.rmtree(HOMES, ignore_errors=True)


if __name__ == "__main__":
    main()
