"""libtorrent peer for the blob benchmarks (Debian python3-libtorrent, run with the system python3).

  lt_peer.py make FILE TORRENT              # a torrent (no tracker) for FILE
  lt_peer.py seed TORRENT DIR IP PORT [UPLOAD_BYTES_PER_S]
  lt_peer.py leech TORRENT DIR IP PORT [--seed-after] PEER_IP:PORT...

A seed prints "ready" on stdout once it serves; a leecher prints one JSON line when it has every piece
({"seconds": from adding the torrent, "bytes": payload received}) and exits, or keeps seeding with
--seed-after (flash crowd). DHT, LSD, UPnP and NAT-PMP are off: peers are added by address only; peer
exchange (ut_pex) is on, as in any client.
"""

import json
import os
import sys
import time

import libtorrent as lt

DEBUG = bool(os.environ.get("LT_DEBUG"))
UTP = os.environ.get("LT_UTP") == "1"


def session(ip, port, upload=0):
    s = lt.session({
        "listen_interfaces": f"{ip}:{port}",
        "outgoing_interfaces": ip,
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "upload_rate_limit": upload,
        "alert_mask": lt.alert.category_t.all_categories if DEBUG else 0,
        # Local peers are rate limited like others when a limit is set.
        "ignore_limits_on_local_network": False,
        "allow_multiple_connections_per_ip": True,
        # TCP only: libtorrent's default uTP (LEDBAT) backs off under the tbf queue and delivered 0-60
        # Mbit/s per seeder instead of 100 in this lab; LT_UTP=1 keeps the default.
        "enable_outgoing_utp": UTP,
        "enable_incoming_utp": UTP,
    })
    return s


def make(path, out):
    fs = lt.file_storage()
    lt.add_files(fs, path)
    t = lt.create_torrent(fs)
    lt.set_piece_hashes(t, os.path.dirname(os.path.abspath(path)))
    with open(out, "wb") as f:
        f.write(lt.bencode(t.generate()))


def main():
    cmd = sys.argv[1]
    if cmd == "make":
        make(sys.argv[2], sys.argv[3])
        return
    torrent, directory, ip, port = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
    info = lt.torrent_info(torrent)
    if cmd == "seed":
        upload = int(sys.argv[6]) if len(sys.argv) > 6 else 0
        s = session(ip, port, upload)
        s.add_torrent({"ti": info, "save_path": directory, "flags": lt.torrent_flags.seed_mode})
        print("ready", flush=True)
        while True:
            time.sleep(3600)
    rest = sys.argv[6:]
    seed_after = "--seed-after" in rest
    peers = [p for p in rest if p != "--seed-after"]
    s = session(ip, port)
    last = start = time.monotonic()
    h = s.add_torrent({"ti": info, "save_path": directory})
    for p in peers:
        host, pport = p.rsplit(":", 1)
        h.connect_peer((host, int(pport)))
    while True:
        st = h.status()
        if st.is_seeding:
            break
        if DEBUG and time.monotonic() - last > 1:
            last = time.monotonic()
            for a in s.pop_alerts():
                print("alert", a.message(), file=sys.stderr)
            for pi in h.get_peer_info():
                print(f"  {pi.ip} down {pi.down_speed * 8 / 1e6:.0f} Mbit/s flags {pi.flags:x} "
                      f"queue {pi.download_queue_length}", file=sys.stderr)
        time.sleep(0.02)
    secs = time.monotonic() - start
    print(json.dumps({"seconds": secs, "bytes": st.total_payload_download,
                      "uploaded": st.total_payload_upload}), flush=True)
    if seed_after:
        while True:
            time.sleep(3600)


if __name__ == "__main__":
    main()
