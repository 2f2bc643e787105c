#!/usr/bin/env python3
"""Sends malformed mDNS packets to the multicast group and random bytes to a unicast port.

Usage: udp_garbage.py COUNT [HOST:PORT]   (run inside a lab namespace only)
"""
import os
import random
import socket
import struct
import sys

count = int(sys.argv[1])
target = None
if len(sys.argv) > 2:
    host, port = sys.argv[2].rsplit(":", 1)
    target = (host, int(port))

rng = random.Random(7)


def header(qd, an, ns, ar, flags=0x8400):
    return struct.pack("!HHHHHH", 0, flags, qd, an, ns, ar)


def crafted(i):
    kind = i % 7
    if kind == 0:  # counts far beyond the packet
        return header(65535, 65535, 65535, 65535)
    if kind == 1:  # compression pointer to itself
        return header(0, 1, 0, 0) + b"\xc0\x0c" + struct.pack("!HHIH", 12, 1, 120, 2) + b"\xc0\x0c"
    if kind == 2:  # label longer than the packet
        return header(1, 0, 0, 0, 0) + b"\x3f" + b"a" * 10
    if kind == 3:  # truncated header
        return b"\x00\x00\x84"
    if kind == 4:  # an answer for our service type with a broken SRV rdata length
        name = b"\x06_pairs\x04_udp\x05local\x00"
        return header(0, 1, 0, 0) + name + struct.pack("!HHIH", 33, 1, 120, 60000) + b"\x00" * 4
    if kind == 5:  # TXT with lengths running past the end
        name = b"\x06_pairs\x04_udp\x05local\x00"
        return header(0, 1, 0, 0) + name + struct.pack("!HHIH", 16, 1, 120, 5) + b"\xff" * 5
    return bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 1400)))


mcast = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
mcast.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
uni = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(count):
    mcast.sendto(crafted(i), ("224.0.0.251", 5353))
    if target:
        uni.sendto(os.urandom(rng.randint(1, 1400)), target)
print("sent", count)
