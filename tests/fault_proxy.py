"""A small HTTP proxy in front of a real MLflow server that injects faults on chosen endpoints."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FaultProxy:
    """Forward everything to ``upstream``; for each path in ``commit_then_fail``, the first
    ``times`` requests are forwarded (the server commits them) and then answered with 503, as a
    proxy that loses the server's answer would."""

    def __init__(self, upstream: str, commit_then_fail: dict[str, int]):
        self.upstream = upstream.rstrip("/")
        self.commit_then_fail = dict(commit_then_fail)
        self.requests: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _forward(self):
                path = self.path.split("?")[0]
                proxy.requests[f"{self.command} {path}"] += 1
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                request = urllib.request.Request(
                    proxy.upstream + self.path, data=body, method=self.command
                )
                for name, value in self.headers.items():
                    if name.lower() not in ("host", "content-length", "connection"):
                        request.add_header(name, value)
                try:
                    with urllib.request.urlopen(request, timeout=60) as response:
                        status, payload = response.status, response.read()
                        headers = response.headers
                except urllib.error.HTTPError as error:
                    status, payload, headers = error.code, error.read(), error.headers
                if proxy.failed[path] < proxy.commit_then_fail.get(path, 0):
                    proxy.failed[path] += 1
                    status, payload = 503, b"upstream answer lost"
                    headers = {"Content-Type": "text/plain"}
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
