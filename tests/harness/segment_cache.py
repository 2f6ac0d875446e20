"""segment-cache under test: the real binary on loopback, a fault-injecting TCP proxy (test-only:
these machines have no netem), and helpers for the aws CLI and moto's request log."""
from __future__ import annotations

import os
import re
import select
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import yaml

from . import promtext
from .procs import Service, free_port, http_ok, wait_until
from .services import cargo_bin, run_dir, tool

ACCESS_KEY = "milvus"
SECRET_KEY = "milvus-secret-key"


class SegmentCache:
    """`segment-cache serve` with a generated config; `.port`, `.url`, `.telemetry`, `.dir`."""

    def __init__(self, upstream_url: str, bucket: str, capacity: str = "2GiB", cache_dir: Path | None = None,
                 warm: dict | None = None, extra_cache: dict | None = None, upstream_extra: dict | None = None,
                 port: int | None = None, wait_ready: bool = True, binary: str | None = None,
                 telemetry_port: int | None = None, extra_sections: dict | None = None):
        self.port = port or free_port()
        self.telemetry_port = telemetry_port or free_port()
        self.run = run_dir("segment-cache")
        self.dir = Path(cache_dir) if cache_dir else self.run / "cache"
        self.url = f"http://127.0.0.1:{self.port}"
        self.telemetry = f"http://127.0.0.1:{self.telemetry_port}"
        self.bucket = bucket
        cfg = cache_config(upstream_url, bucket, capacity, self.dir, self.port, self.telemetry_port, warm,
                           extra_cache, upstream_extra)
        for section, values in (extra_sections or {}).items():  # e.g. {"read_ahead": {"enabled": False}}
            if isinstance(values, dict) and isinstance(cfg.get(section), dict):
                cfg[section] = {**cfg[section], **values}
            else:
                cfg[section] = values
        self.config_path = self.run / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(cfg))
        self.config = cfg
        # `binary`: another build of it (the benchmarks use the release one); default target/debug.
        self.service = Service("segment-cache", [binary or cargo_bin("segment-cache"), "serve", "--config", str(self.config_path)],
                               self.run / "segment-cache.log", env={"RUST_LOG": os.environ.get("SEGMENT_CACHE_LOG", "info,segment_cache=debug")})
        if wait_ready:
            wait_until(lambda: http_ok(f"{self.telemetry}/healthz"), 30, "segment-cache healthz", proc=self.service)

    def metrics_text(self) -> str:
        """The cache's telemetry page."""
        return promtext.fetch(f"{self.telemetry}/metrics")

    def metric(self, name: str, **labels) -> float:
        """Sum of the samples of `name` matching `labels`; 0 when there is none."""
        return promtext.value_sum(self.metrics_text(), name, **labels) or 0.0

    def stop(self) -> int | None:
        return self.service.stop(timeout=15)

    def kill(self) -> None:
        self.service.kill()


def cache_config(upstream_url: str, bucket: str, capacity: str, cache_dir: Path, port: int, telemetry_port: int,
                 warm: dict | None = None, extra_cache: dict | None = None, upstream_extra: dict | None = None) -> dict:
    """A segment-cache configuration for tests (upstream credentials: moto's)."""
    return {
        "listen": f"127.0.0.1:{port}",
        "auth": {"access_key": ACCESS_KEY, "secret_key": SECRET_KEY},
        "upstream": {"endpoint_url": upstream_url, "region": "us-east-1", "bucket": bucket,
                     "access_key": "testing", "secret_key": "testing", "timeout": "5s",
                     **(upstream_extra or {})},
        "cache": {"dir": str(cache_dir), "capacity": capacity, **(extra_cache or {})},
        "warm": warm if warm is not None else {"in_serve": False},
        "telemetry": {"listen": f"127.0.0.1:{telemetry_port}"},
    }


def s3_client(url: str, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY, attempts: int = 1):
    """boto3 S3 client for the cache (path-style, no retries unless asked)."""
    import boto3
    from botocore.config import Config
    return boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id=access_key,
                        aws_secret_access_key=secret_key,
                        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": attempts, "mode": "standard"},
                                      read_timeout=60, connect_timeout=5))


def aws(args: list[str], endpoint: str, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY,
        check: bool = True, binary: bool = False, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    """The aws CLI against `endpoint` (path-style)."""
    env = os.environ.copy()
    env.pop("AWS_CA_BUNDLE", None)
    env.pop("AWS_ENDPOINT_URL", None)
    env.pop("AWS_PROFILE", None)
    cfg = run_dir("awscfg") / "config"
    cfg.write_text("[default]\nregion = us-east-1\ns3 =\n    addressing_style = path\n")
    env.update({"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key,
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": str(cfg),
                "AWS_SHARED_CREDENTIALS_FILE": os.devnull, **(extra_env or {})})
    r = subprocess.run([tool("aws"), "--endpoint-url", endpoint, *args], env=env, capture_output=True,
                       text=not binary, timeout=300)
    if check and r.returncode != 0:
        raise AssertionError(f"aws {' '.join(args)} failed ({r.returncode}): {r.stderr}")
    return r


def moto_object_gets(log_path: Path, bucket: str) -> list[str]:
    """Keys of object GETs (not list calls) in moto's request log (werkzeug access lines)."""
    keys = []
    pat = re.compile(r'"GET /' + re.escape(bucket) + r'/([^ ?"]+)(\?[^ "]*)? HTTP/1\.1" (\d+)')
    for line in Path(log_path).read_text(errors="replace").splitlines():
        m = pat.search(line)
        if m and m.group(3) in ("200", "206"):
            keys.append(urllib.request.unquote(m.group(1)))
    return keys


class FaultProxy:
    """A TCP proxy between the cache and its upstream that can be told to misbehave:
    `mode` = "pass" | "down" (refuse: connections are closed at once) | "slow" (delay each chunk) |
    "cut" (close after `cut_after` bytes of the upstream's answer) | "flip" (invert one bit every
    `flip_every` bytes of the upstream's answers: corruption TCP would not notice).
    Test-only fault injection."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.mode = "pass"
        self.delay = 0.0
        self.cut_after = 0
        self.flip_every = 1_000_000
        self.flips = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self.cuts = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._handle, args=(c,), daemon=True).start()

    def _handle(self, c: socket.socket):
        if self.mode == "down":
            c.close()
            return
        try:
            u = socket.create_connection(("127.0.0.1", self.target_port))
        except OSError:
            c.close()
            return
        sent_back = 0
        try:
            while not self._stop.is_set():
                r, _, _ = select.select([c, u], [], [], 0.5)
                if self.mode == "down":
                    break
                if c in r:
                    d = c.recv(65536)
                    if not d:
                        break
                    u.sendall(d)
                if u in r:
                    d = u.recv(65536)
                    if not d:
                        break
                    if self.mode == "slow":
                        time.sleep(self.delay)
                    if self.mode == "flip":
                        buf = bytearray(d)
                        first = -(-sent_back // self.flip_every) * self.flip_every
                        for at in range(max(first, self.flip_every), sent_back + len(d), self.flip_every):
                            buf[at - sent_back] ^= 0x10
                            self.flips += 1
                        d = bytes(buf)
                    if self.mode == "cut" and sent_back + len(d) > self.cut_after:
                        c.sendall(d[: max(0, self.cut_after - sent_back)])
                        self.cuts += 1
                        break
                    c.sendall(d)
                    sent_back += len(d)
        except OSError:
            pass
        finally:
            for s in (c, u):
                try:
                    s.close()
                except OSError:
                    pass

    def stop(self):
        self._stop.set()
        self.sock.close()
