"""The lab both NAT benchmarks use: a1 behind r1, b1 behind r2, and a public host `pub`."""


def build(lab):
    """Builds the topology with `lab` (a function running `lab.sh -p PREFIX ARGS...`)."""
    lab("switch", "wan")
    lab("switch", "lan1")
    lab("switch", "lan2")
    lab("router", "r1", "lan1", "192.168.1.1/24", "wan", "203.0.113.1/24")
    lab("router", "r2", "lan2", "192.168.2.1/24", "wan", "203.0.113.2/24")
    lab("host", "a1", "lan1", "192.168.1.11/24", "192.168.1.1")
    lab("host", "b1", "lan2", "192.168.2.11/24", "192.168.2.1")
    lab("host", "pub", "wan", "203.0.113.10/24")
