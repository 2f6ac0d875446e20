"""A /metrics endpoint whose body the test sets: scripted Milvus metrics, for exact comparisons.
It is a stand-in for a Milvus pod only where the test needs to control the numbers."""
from __future__ import annotations

import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .procs import REPO

FIXTURES = REPO / "tests" / "fixtures"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


class StaticExporter:
    """Serves `body` at http://127.0.0.1:PORT/metrics until stop(): the one scripted /metrics endpoint
    of the harness. `set()` swaps the body atomically (and records `changed_at`), `set_down(True)`
    answers HTTP 500 (a pod whose exporter fails) until `set_down(False)`."""

    def __init__(self, body: str):
        self._lock = threading.Lock()
        self._body = body.encode()
        self._down = False
        self.requests = 0
        self.changed_at: float | None = None
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                with exporter._lock:
                    exporter.requests += 1
                    down, body = exporter._down, exporter._body
                if down:
                    self.send_response(500)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/metrics"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def set(self, body: str) -> None:
        with self._lock:
            self._body = body.encode()
            self.changed_at = time.monotonic()

    def set_down(self, down: bool) -> None:
        with self._lock:
            self._down = down

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def with_metric(body: str, name: str, labels_contain: str, transform) -> str:
    """Rewrites the value of every sample of `name` whose label text contains `labels_contain`
    with `transform(old_value, line) -> new_value`."""
    out = []
    pattern = re.compile(rf"^({re.escape(name)}(\{{[^}}]*\}})?) (\S+)$")
    for line in body.splitlines():
        m = pattern.match(line)
        if m and labels_contain in (m.group(2) or ""):
            line = f"{m.group(1)} {transform(float(m.group(3)), line)!r}"
        out.append(line)
    return "\n".join(out) + "\n"
