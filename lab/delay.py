#!/usr/bin/env python3
"""Holds every packet of the given NFQUEUE queues for a fixed time, then lets it go.

The kernel here has no sch_netem, so lab.sh delays a link with iptables rules that send its packets to
NFQUEUE, and this program gives the verdicts. It speaks nfnetlink directly (no libnetfilter_queue),
asks the kernel for packet metadata only, and keeps one FIFO per queue, so packets are never
reordered. Usage: delay.py MILLISECONDS QUEUE [QUEUE...]; prints "ready" once every queue is bound.
"""
import select
import signal
import socket
import struct
import sys
import time
from collections import deque

NETLINK_NETFILTER = 12
SUBSYS_QUEUE = 3
MSG_PACKET, MSG_VERDICT, MSG_CONFIG = 0, 1, 2
CFG_CMD, CFG_PARAMS = 1, 2
CMD_BIND, CMD_UNBIND = 1, 2
COPY_META = 1
ATTR_PACKET_HDR, ATTR_VERDICT_HDR = 1, 2
F_REQUEST, F_ACK = 0x1, 0x4
NLMSG_ERROR = 2
ACCEPT = 1


def attr(kind, payload):
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + bytes((4 - length % 4) % 4)


def message(kind, queue, attrs, flags=F_REQUEST):
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(queue)) + b"".join(attrs)
    return struct.pack("=IHHII", 16 + len(body), (SUBSYS_QUEUE << 8) | kind, flags, 0, 0) + body


def expect_ack(sock):
    reply = sock.recv(65536)
    kind = struct.unpack_from("=H", reply, 4)[0]
    if kind == NLMSG_ERROR:
        err = struct.unpack_from("=i", reply, 16)[0]
        if err != 0:
            raise SystemExit("nfqueue config refused: errno %d" % -err)


def bind(sock, queue):
    sock.send(message(MSG_CONFIG, queue, [attr(CFG_CMD, struct.pack("=BxH", CMD_BIND, 0))], F_REQUEST | F_ACK))
    expect_ack(sock)
    params = struct.pack(">IB", 0, COPY_META) + b"\0\0\0"
    sock.send(message(MSG_CONFIG, queue, [attr(CFG_PARAMS, params[:5])], F_REQUEST | F_ACK))
    expect_ack(sock)


def verdict(sock, queue, packet_id):
    sock.send(message(MSG_VERDICT, queue, [attr(ATTR_VERDICT_HDR, struct.pack(">II", ACCEPT, packet_id))]))


def packets(data):
    """Yields (queue, packet id) for every queued-packet message in one netlink read."""
    offset = 0
    while offset + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, offset)
        if length < 16:
            return
        if kind == (SUBSYS_QUEUE << 8) | MSG_PACKET:
            queue = socket.ntohs(struct.unpack_from("=H", data, offset + 18)[0])
            at = offset + 20
            while at + 4 <= offset + length:
                alen, akind = struct.unpack_from("=HH", data, at)
                if alen < 4:
                    break
                if akind & 0x7FFF == ATTR_PACKET_HDR:
                    yield queue, struct.unpack_from(">I", data, at + 4)[0]
                at += (alen + 3) & ~3
        offset += (length + 3) & ~3


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    delay = float(sys.argv[1]) / 1000.0
    queues = [int(q) for q in sys.argv[2:]]
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind((0, 0))
    for queue in queues:
        bind(sock, queue)
    held = deque()  # (release time, queue, packet id), in arrival order
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    print("ready", flush=True)
    while not stop:
        now = time.monotonic()
        while held and held[0][0] <= now:
            _, queue, packet_id = held.popleft()
            verdict(sock, queue, packet_id)
        wait = max(0.0, held[0][0] - now) if held else 1.0
        readable, _, _ = select.select([sock], [], [], wait)
        if readable:
            data = sock.recv(1 << 20)
            arrived = time.monotonic()
            for queue, packet_id in packets(data):
                held.append((arrived + delay, queue, packet_id))
    # Let everything still held go before leaving.
    for _, queue, packet_id in held:
        verdict(sock, queue, packet_id)


if __name__ == "__main__":
    main()
