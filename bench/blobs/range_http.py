"""A static HTTP mirror with Range support (python3 -m http.server has none, which would keep aria2c to
one connection): range_http.py DIR IP PORT. Threaded; bodies go out with sendfile."""

import http.server
import os
import re
import sys


class Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            self.send_error(404)
            return
        size = os.path.getsize(path)
        start, end = 0, size - 1
        m = re.match(r"bytes=(\d*)-(\d*)$", self.headers.get("Range", ""))
        if m and (m.group(1) or m.group(2)):
            if m.group(1):
                start = int(m.group(1))
                end = int(m.group(2)) if m.group(2) else size - 1
            else:
                start = size - int(m.group(2))
            end = min(end, size - 1)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            self.send_response(200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        with open(path, "rb") as f:
            try:
                self.wfile.flush()
                self.connection.sendfile(f, offset=start, count=end - start + 1)
            except (BrokenPipeError, ConnectionResetError):
                pass


def main():
    directory, ip, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    handler = lambda *a, **kw: Handler(*a, directory=directory, **kw)  # noqa: E731
    server = http.server.ThreadingHTTPServer((ip, port), handler)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
