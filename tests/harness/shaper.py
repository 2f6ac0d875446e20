"""A latency/bandwidth-shaping TCP proxy for S3 on loopback: an upstream that behaves like S3 seen
from EC2 in its region, in front of moto (which answers in microseconds at memory speed).

What it adds, per connection, on the upstream -> client direction:
- a first-byte delay per request: the first byte of an answer leaves the shaper no earlier than
  `first_byte_delay` after the request's first byte reached it (the upstream's own time overlaps the
  delay, as S3's first-byte latency includes S3's own work);
- a bandwidth cap: each connection's answer bytes leave at most at `bytes_per_second`.

Default figures (assumptions checked against AWS's own guidance):
- bandwidth 80 MiB/s per connection: AWS's "Best Practices Design Patterns: Optimizing Amazon S3
  Performance" (section "Horizontal Scaling and Request Parallelization for High Throughput") says to
  "make one concurrent request for each 85-90 MB/s of desired network throughput" within a Region;
  85 MB/s = 81 MiB/s.
- first byte 30 ms: AWS's "Performance guidelines for Amazon S3" gives first-byte-out latencies of
  roughly 100-200 ms; 30 ms ("tens of ms", what the issue asks for) is kinder to a reader that makes
  many small requests, so it understates what parallel fetching and a local cache save.

It works at the TCP level and knows HTTP/1.1 only in this: a client that does not pipeline (botocore,
minio-go, aws-sdk-rust do not) sends a request, then reads the whole answer before sending the next one;
so "client bytes arrive while no answer is pending" marks the start of a request. It does not parse
or change a byte.

Run as its own process (`python -m harness.shaper --listen-port P --target-port T ...`, from `tests/`),
so that it does not share a GIL with the test that drives Milvus; `Shaper` below starts it and stops it
by PID. A stats listener answers `GET /` with JSON counters (connections, requests, bytes each way).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

MiB = 1 << 20
DEFAULT_FIRST_BYTE_DELAY = 0.030
DEFAULT_BYTES_PER_SECOND = 80 * MiB
# Read size per forward step: at 80 MiB/s a 128 KiB step is ~1.6 ms of line time, small enough for
# the cap to be smooth, large enough that one core forwards several hundred MB/s.
CHUNK = 128 * 1024


@dataclass
class Stats:
    """What the shaper carried since it started."""

    connections: int = 0
    open_connections: int = 0
    requests: int = 0
    request_bytes: int = 0
    response_bytes: int = 0
    upstream_connect_errors: int = 0


class ShaperServer:
    """The proxy itself (asyncio). `first_byte_delay` seconds, `bytes_per_second` per connection
    (0 or None: no cap)."""

    def __init__(self, target_host: str, target_port: int, first_byte_delay: float, bytes_per_second: float | None):
        if first_byte_delay < 0:
            raise ValueError(f"first_byte_delay must be >= 0 seconds, got {first_byte_delay}")
        if bytes_per_second is not None and bytes_per_second < 0:
            raise ValueError(f"bytes_per_second must be > 0 (or 0 for no cap), got {bytes_per_second}")
        self.target = (target_host, target_port)
        self.delay = first_byte_delay
        self.rate = bytes_per_second or None
        self.stats = Stats()

    async def handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        self.stats.open_connections += 1
        try:
            up_r, up_w = await asyncio.open_connection(*self.target)
        except OSError:
            self.stats.upstream_connect_errors += 1
            self.stats.open_connections -= 1
            client_w.close()
            return
        loop = asyncio.get_running_loop()
        # The start of the request whose answer has not begun yet (None: no answer pending).
        pending: list[float | None] = [None]

        async def client_to_upstream() -> None:
            while data := await client_r.read(CHUNK):
                if pending[0] is None:
                    pending[0] = loop.time()
                    self.stats.requests += 1
                self.stats.request_bytes += len(data)
                up_w.write(data)
                await up_w.drain()
            if up_w.can_write_eof():
                up_w.write_eof()

        async def upstream_to_client() -> None:
            next_free = 0.0  # when the cap lets the next byte go
            while data := await up_r.read(CHUNK):
                started = pending[0]
                if started is not None:
                    wait = started + self.delay - loop.time()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    pending[0] = None
                if self.rate:
                    now = loop.time()
                    if next_free > now:
                        await asyncio.sleep(next_free - now)
                    # The slot of this chunk starts now (or when the last one's ended): no burst
                    # credit builds up across idle time.
                    next_free = max(next_free, now) + len(data) / self.rate
                client_w.write(data)
                await client_w.drain()
                self.stats.response_bytes += len(data)

        tasks = [asyncio.create_task(client_to_upstream()), asyncio.create_task(upstream_to_client())]
        try:
            # The answer direction ending (upstream closed, or an error) ends the connection; the
            # request direction ending cleanly (client half-closed) only ends that direction.
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if tasks[1] not in done and tasks[0].exception() is None:
                await asyncio.wait([tasks[1]])
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for w in (client_w, up_w):
                try:
                    w.close()
                except OSError:
                    pass
            self.stats.open_connections -= 1

    async def stats_handler(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        """`GET /` on the stats port: the counters as JSON."""
        try:
            await r.readuntil(b"\r\n\r\n")
            body = json.dumps({**asdict(self.stats), "first_byte_delay": self.delay,
                               "bytes_per_second": self.rate}).encode()
            w.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            await w.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            w.close()


async def serve(listen_port: int, stats_port: int, server: ShaperServer) -> None:
    proxy = await asyncio.start_server(server.handle, "127.0.0.1", listen_port, backlog=512)
    stats = await asyncio.start_server(server.stats_handler, "127.0.0.1", stats_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"shaper: 127.0.0.1:{listen_port} -> {server.target[0]}:{server.target[1]}, first byte "
          f"{server.delay * 1000:.0f} ms, cap {server.rate / MiB if server.rate else 0:.1f} MiB/s per connection "
          f"(0: none), stats on 127.0.0.1:{stats_port}", flush=True)
    async with proxy, stats:
        await stop.wait()
    print(f"shaper: stopped; {json.dumps(asdict(server.stats))}", flush=True)


def _loopback(host: str) -> str:
    if not (host.startswith("127.") or host in ("::1", "localhost")):
        raise SystemExit(f"shaper: target host must be loopback (127.0.0.0/8 or ::1), got {host!r}")
    return host


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--listen-port", type=int, required=True)
    p.add_argument("--stats-port", type=int, required=True)
    p.add_argument("--target-host", default="127.0.0.1", type=_loopback)
    p.add_argument("--target-port", type=int, required=True)
    p.add_argument("--first-byte-delay", type=float, default=DEFAULT_FIRST_BYTE_DELAY, help="seconds")
    p.add_argument("--bytes-per-second", type=float, default=DEFAULT_BYTES_PER_SECOND,
                   help="per connection, answer direction; 0: no cap")
    a = p.parse_args(argv)
    try:
        server = ShaperServer(a.target_host, a.target_port, a.first_byte_delay, a.bytes_per_second)
    except ValueError as e:
        raise SystemExit(f"shaper: {e}") from e
    asyncio.run(serve(a.listen_port, a.stats_port, server))


class Shaper:
    """The shaper as a child process in front of `target_port` on 127.0.0.1: `.port`, `.url`,
    `.stats()`, `.stop()` (by PID)."""

    def __init__(self, target_port: int, first_byte_delay: float = DEFAULT_FIRST_BYTE_DELAY,
                 bytes_per_second: float = DEFAULT_BYTES_PER_SECOND, port: int | None = None,
                 stats_port: int | None = None, log_dir: Path | None = None):
        from .procs import Service, free_port, port_open, wait_until
        from .services import run_dir

        self.port = port or free_port()
        self.stats_port = stats_port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.first_byte_delay, self.bytes_per_second = first_byte_delay, bytes_per_second
        log_dir = log_dir or run_dir("shaper")
        cmd = [sys.executable, "-m", "harness.shaper", "--listen-port", str(self.port), "--stats-port",
               str(self.stats_port), "--target-port", str(target_port), "--first-byte-delay", str(first_byte_delay),
               "--bytes-per-second", str(bytes_per_second)]
        self.service = Service("shaper", cmd, Path(log_dir) / "shaper.log", cwd=Path(__file__).resolve().parents[1])
        wait_until(lambda: port_open(self.port) and port_open(self.stats_port), 30, "the S3 shaper",
                   proc=self.service)

    def stats(self) -> dict:
        """The shaper's counters (see `Stats`)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.stats_port}/", timeout=5) as r:
            return json.load(r)

    def stop(self) -> int | None:
        return self.service.stop(timeout=10)


if __name__ == "__main__":
    main()
