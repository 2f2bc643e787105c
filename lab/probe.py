#!/usr/bin/env python3
"""Tiny UDP / multicast probes for lab tests (run inside a lab namespace).

  probe.py mrecv GROUP[,GROUP..] PORT SECONDS   join groups, print "ready", then "got GROUP FROM" per datagram
  probe.py msend GROUP PORT COUNT [TTL]         send COUNT datagrams (payload = GROUP) to GROUP:PORT
  probe.py echo PORT SECONDS                    UDP server: answer each datagram with "seen IP:PORT"
  probe.py natprobe LPORT SERVER:PORT SECONDS   from LPORT ask SERVER what it sees ("mapped IP:PORT"),
                                                then for SECONDS print "from IP:PORT" per other datagram
  probe.py send LPORT DST:PORT                  one datagram from LPORT (0 = any) to DST:PORT
"""
import socket
import struct
import sys
import time


def out(*a):
    print(*a, flush=True)


def hostport(s):
    h, p = s.rsplit(":", 1)
    return h, int(p)


def udp(lport=0):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", lport))
    return s


def recv_until(s, deadline):
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        s.settimeout(left)
        try:
            return s.recvfrom(2048)
        except socket.timeout:
            return None


def mrecv(groups, port, secs):
    s = udp(int(port))
    for g in groups.split(","):
        mreq = struct.pack("4s4s", socket.inet_aton(g), socket.inet_aton("0.0.0.0"))
        s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    out("ready")
    end = time.monotonic() + float(secs)
    while (r := recv_until(s, end)) is not None:
        out("got", r[0].decode(errors="replace"), r[1][0])


def msend(group, port, count, ttl="1"):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, int(ttl))
    for _ in range(int(count)):
        s.sendto(group.encode(), (group, int(port)))
        time.sleep(0.05)


def echo(port, secs):
    s = udp(int(port))
    out("ready")
    end = time.monotonic() + float(secs)
    while (r := recv_until(s, end)) is not None:
        s.sendto(("seen %s:%d" % r[1]).encode(), r[1])


def natprobe(lport, server, secs):
    s = udp(int(lport))
    srv = hostport(server)
    mapped = None
    for _ in range(4):  # up to 4 x 0.2 s
        s.sendto(b"probe", srv)
        r = recv_until(s, time.monotonic() + 0.2)
        if r and r[1] == srv:
            mapped = r[0].decode().split()[1]
            break
    out("mapped", mapped or "none")
    end = time.monotonic() + float(secs)
    while (r := recv_until(s, end)) is not None:
        if r[1] != srv:
            out("from %s:%d" % r[1])


def send(lport, dst):
    udp(int(lport)).sendto(b"hello", hostport(dst))


if __name__ == "__main__":
    cmds = {"mrecv": mrecv, "msend": msend, "echo": echo, "natprobe": natprobe, "send": send}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        sys.exit(__doc__)
    cmds[sys.argv[1]](*sys.argv[2:])
