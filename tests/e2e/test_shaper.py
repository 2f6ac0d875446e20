"""The harness's S3 shaper (tests/harness/shaper.py) in front of a local HTTP server: bytes pass
unchanged, every request on a keep-alive connection waits the first-byte delay, and a connection's
answer is never faster than the bandwidth cap allows. The bounds asserted are lower bounds (the
shaper may be slower on a loaded machine, never faster): correctness properties, not performance
targets."""
from __future__ import annotations

import hashlib
import http.client
import random
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.shaper import Shaper  # noqa: E402

MiB = 1 << 20
BIG = random.Random(3).randbytes(6 * MiB)
DELAY = 0.15
RATE = 3 * MiB


class _Origin:
    """A plain HTTP/1.1 keep-alive server: GET /big (6 MiB), GET /small (10 bytes), PUT echoes the body's SHA-256."""

    def __init__(self):
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, body: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                self._send(BIG if self.path == "/big" else b"0123456789")

            def do_PUT(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                self._send(hashlib.sha256(body).hexdigest().encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def shaped():
    origin = _Origin()
    shaper = Shaper(origin.port, first_byte_delay=DELAY, bytes_per_second=RATE)
    try:
        yield origin, shaper
    finally:
        shaper.stop()
        origin.stop()


def _timed_get(conn: http.client.HTTPConnection, path: str) -> tuple[float, float, bytes]:
    """(seconds to the first answer byte, seconds to the last, body) of one GET on `conn`."""
    t0 = time.monotonic()
    conn.request("GET", path)
    resp = conn.getresponse()
    first = resp.read(1)
    t_first = time.monotonic() - t0
    body = first + resp.read()
    return t_first, time.monotonic() - t0, body


def test_every_request_on_a_keep_alive_connection_waits_the_first_byte_delay(shaped):
    origin, shaper = shaped
    before = shaper.stats()  # the readiness probe's connection is counted too
    conn = http.client.HTTPConnection("127.0.0.1", shaper.port, timeout=30)
    firsts = []
    for _ in range(4):
        t_first, _, body = _timed_get(conn, "/small")
        assert body == b"0123456789"
        firsts.append(t_first)
    conn.close()
    # The origin alone answers in well under a millisecond; each of the 4 requests (one connection)
    # waited the delay, not only the first.
    assert min(firsts) >= DELAY * 0.95, f"first-byte times {firsts}, delay {DELAY}s"
    stats = shaper.stats()
    assert stats["requests"] - before["requests"] == 4, (before, stats)
    assert stats["connections"] - before["connections"] == 1, (before, stats)


def test_an_answer_is_not_faster_than_the_cap_and_arrives_intact(shaped):
    origin, shaper = shaped
    conn = http.client.HTTPConnection("127.0.0.1", shaper.port, timeout=60)
    _, total, body = _timed_get(conn, "/big")
    conn.close()
    assert body == BIG
    floor = DELAY + len(BIG) / RATE
    assert total >= floor * 0.95, f"{len(BIG)} bytes in {total:.2f}s: faster than {RATE / MiB} MiB/s after {DELAY}s"
    assert shaper.stats()["response_bytes"] >= len(BIG)


def test_each_of_two_parallel_connections_is_capped_and_request_bodies_pass_unchanged(shaped):
    origin, shaper = shaped
    before = shaper.stats()
    results: dict[int, tuple[float, bytes]] = {}

    def one(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", shaper.port, timeout=60)
        _, total, body = _timed_get(conn, "/big")
        results[i] = (total, body)
        conn.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert sorted(results) == [0, 1]
    for total, body in results.values():
        assert body == BIG
        assert total >= (DELAY + len(BIG) / RATE) * 0.95, results

    payload = random.Random(5).randbytes(2 * MiB)
    conn = http.client.HTTPConnection("127.0.0.1", shaper.port, timeout=60)
    conn.request("PUT", "/up", body=payload)
    assert conn.getresponse().read() == hashlib.sha256(payload).hexdigest().encode()
    conn.close()
    assert shaper.stats()["connections"] - before["connections"] == 3


def test_bad_options_are_refused_with_the_reason():
    tests_dir = Path(__file__).resolve().parents[1]
    for args, says in ((["--first-byte-delay", "-1"], "first_byte_delay must be >= 0"),
                       (["--target-host", "10.0.0.1"], "must be loopback")):
        r = subprocess.run([sys.executable, "-m", "harness.shaper", "--listen-port", "1", "--stats-port", "2",
                            "--target-port", "3", *args], cwd=tests_dir, capture_output=True, text=True, timeout=30)
        assert r.returncode != 0 and says in r.stderr, (r.returncode, r.stderr)
