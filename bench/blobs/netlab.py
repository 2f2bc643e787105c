"""A small namespace lab for the blob benchmarks: one switch (a bridge in its own namespace) and hosts on
it, each with eth0 on the bridge, an address in 10.77.0.0/16 and no default route (nothing can leave the
machine). Links are shaped with tbf: a host's upload is tbf on its eth0, its download tbf on the
switch's side of its veth."""

import json
import os
import signal
import subprocess
import time


def sh(*argv, check=True):
    return subprocess.run(argv, check=check, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def tbf_args(mbit):
    """tbf for MBIT Mbit/s: a burst of 4 ms at that rate (at least 32 KiB so GSO packets pass whole)."""
    rate_bytes = mbit * 1e6 / 8
    burst = max(int(rate_bytes * 0.004), 32 * 1024)
    return ["tbf", "rate", f"{mbit}mbit", "burst", str(burst), "latency", "50ms"]


class Lab:
    def __init__(self, prefix="pbl"):
        self.prefix = prefix
        self.hosts = {}
        self.procs = []
        self.down()
        self.sw = f"{prefix}-sw"
        sh("ip", "netns", "add", self.sw)
        sh("ip", "-n", self.sw, "link", "set", "lo", "up")
        sh("ip", "-n", self.sw, "link", "add", "br0", "type", "bridge", "stp_state", "0")
        sh("ip", "-n", self.sw, "link", "set", "br0", "up")

    def ns(self, name):
        return f"{self.prefix}-{name}"

    def host(self, name, index):
        """Host NAME at 10.77.0.INDEX (INDEX 1..250)."""
        ns, side = self.ns(name), f"v{name}"
        ip = f"10.77.0.{index}"
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", self.sw, "link", "add", side, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "-n", self.sw, "link", "set", side, "master", "br0", "up")
        sh("ip", "-n", ns, "addr", "add", f"{ip}/16", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        self.hosts[name] = ip
        return ip

    def shape(self, name, up_mbit=None, down_mbit=None):
        """Caps NAME's upload and/or download (None: leave unshaped); replaces earlier shaping."""
        for ns, dev, mbit in ((self.ns(name), "eth0", up_mbit), (self.sw, f"v{name}", down_mbit)):
            sh("tc", "-n", ns, "qdisc", "del", "dev", dev, "root", check=False)
            if mbit:
                sh("tc", "-n", ns, "qdisc", "add", "dev", dev, "root", *tbf_args(mbit))

    def unshape_all(self):
        for name in self.hosts:
            self.shape(name)

    def tx_bytes(self, name):
        """Bytes NAME has sent on eth0 (its upload, as the link saw it: headers included)."""
        out = sh("ip", "-n", self.ns(name), "-j", "-s", "link", "show", "dev", "eth0").stdout
        return json.loads(out)[0]["stats64"]["tx"]["bytes"]

    def rx_bytes(self, name):
        out = sh("ip", "-n", self.ns(name), "-j", "-s", "link", "show", "dev", "eth0").stdout
        return json.loads(out)[0]["stats64"]["rx"]["bytes"]

    def popen(self, name, argv, **kw):
        kw.setdefault("start_new_session", True)
        p = subprocess.Popen(["ip", "netns", "exec", self.ns(name), *argv], **kw)
        self.procs.append(p)
        return p

    def run(self, name, argv, **kw):
        return subprocess.run(["ip", "netns", "exec", self.ns(name), *argv], **kw)

    def stop(self, p, sig=signal.SIGTERM, wait=10):
        if p.poll() is None:
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()

    def stop_all(self):
        for p in self.procs:
            self.stop(p, wait=5)
        self.procs = []

    def down(self):
        for p in getattr(self, "procs", []):
            self.stop(p, sig=signal.SIGKILL, wait=5)
        out = sh("ip", "netns", "list", check=False).stdout
        for line in out.splitlines():
            ns = line.split()[0] if line.split() else ""
            if ns.startswith(self.prefix + "-"):
                pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
                for pid in pids:
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except (ProcessLookupError, ValueError):
                        pass
                time.sleep(0.05)
                sh("ip", "netns", "del", ns, check=False)
