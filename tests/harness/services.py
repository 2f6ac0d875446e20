"""The real services the end-to-end tests run against, each started on loopback and stopped by PID."""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import yaml

from . import promtext
from .procs import REPO, RUN_DIR, Service, free_port, http_ok, port_open, wait_until

VENV_BIN = REPO / ".venv" / "bin"


def tool(name: str) -> str:
    """Path of a tool from .venv/bin or PATH, or a clear error naming how to install it."""
    candidate = VENV_BIN / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    raise RuntimeError(f"{name} not found: run `make setup` (tests/setup.sh) to install the test tools")


def cargo_bin(name: str) -> str:
    """Our own binary, built by `cargo build` (CARGO_TARGET_DIR respected)."""
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    path = target / "debug" / name
    if not path.exists():
        raise RuntimeError(f"{path} not built: run `cargo build --workspace` first (make test does)")
    return str(path)


def run_dir(name: str) -> Path:
    d = RUN_DIR / f"{name}-{os.getpid()}-{int(time.time() * 1000)}"
    d.mkdir(parents=True, exist_ok=True)
    return d


class Milvus:
    """Real Milvus 2.3.5 standalone (PyPI `milvus`), local storage or an S3 endpoint.

    The PyPI wrapper moves a port that is busy (even in TIME_WAIT after a previous Milvus) to the
    next free one without saying so; the harness reads where the ports really went: the metrics
    port from the server process's METRICS_PORT, the gRPC port from the rendered milvus.yaml.
    """

    LOCK_PATH = Path(os.environ.get("MILVUS_E2E_LOCK", "/tmp/milvus-scaler-e2e-milvus.lock"))

    def __init__(self, data_dir: Path | None = None, s3: dict | None = None, extra: dict | None = None,
                 lock_timeout: float = 1800):
        # One Milvus per machine at a time (it binds many fixed ports and two of them starve a
        # 2-core machine): a file lock, held while this instance lives, queues other test runs.
        self._lock = open(self.LOCK_PATH, "a+")
        wait_until(lambda: _try_lock(self._lock), lock_timeout, f"the Milvus lock {self.LOCK_PATH}", interval=1.0)
        self.dir = data_dir or run_dir("milvus")
        config = dict(extra or {})
        if s3:
            config.update({
                "common.storageType": "minio",
                "minio.address": "127.0.0.1",
                "minio.port": str(s3["port"]),
                "minio.bucketName": s3["bucket"],
                "minio.rootPath": s3.get("root_path", "files"),
                "minio.accessKeyID": s3.get("access_key", "testing"),
                "minio.secretAccessKey": s3.get("secret_key", "testing"),
                "minio.useSSL": "false",
                "minio.region": "us-east-1",
            })
        cmd = [tool("milvus-server"), "--data", str(self.dir)]
        for k, v in config.items():
            cmd += ["--extra-config", f"{k}={v}"]
        self.service = Service("milvus", cmd, self.dir / "milvus.log")
        try:
            self.metrics_port = wait_until(self._metrics_port, 60, "the Milvus server process", proc=self.service)
            self.grpc_port = self._grpc_port()
            self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
            self.uri = f"http://127.0.0.1:{self.grpc_port}"
            wait_until(lambda: http_ok(f"http://127.0.0.1:{self.metrics_port}/healthz") and port_open(self.grpc_port),
                       180, f"Milvus healthz on :{self.metrics_port} and gRPC on :{self.grpc_port}", proc=self.service)
        except BaseException:
            self.service.stop(timeout=5)
            self._lock.close()
            raise

    def _server_pid(self) -> int | None:
        try:
            children = Path(f"/proc/{self.service.pid}/task/{self.service.pid}/children").read_text().split()
        except OSError:
            return None
        return int(children[0]) if children else None

    def _metrics_port(self) -> int | None:
        pid = self._server_pid()
        if pid is None:
            return None
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            return None
        for entry in env:
            if entry.startswith(b"METRICS_PORT="):
                return int(entry.split(b"=", 1)[1])
        return None

    def _grpc_port(self) -> int:
        text = (self.dir / "configs" / "milvus.yaml").read_text()
        section = text[text.index("\nproxy:"):]
        for line in section.splitlines()[1:]:
            if line.startswith("  port:"):
                return int(line.split(":")[1].split("#")[0])
        raise RuntimeError("no proxy.port in the rendered milvus.yaml")

    def stop(self) -> None:
        self.service.stop(timeout=10)
        self._lock.close()

    def kill(self) -> None:
        """SIGKILL, as a crash would; the lock stays held until stop()."""
        self.service.kill()


def _try_lock(f) -> bool:
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


class Moto:
    """moto server (S3, EC2 Auto Scaling, EC2 describe calls) on a free loopback port."""

    def __init__(self):
        self.port = free_port()
        self.dir = run_dir("moto")
        self.url = f"http://127.0.0.1:{self.port}"
        self.service = Service("moto", [tool("moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
                               self.dir / "moto.log")
        wait_until(lambda: http_ok(f"{self.url}/moto-api/"), 60, "moto server", proc=self.service)

    def env(self) -> dict:
        """Environment for AWS clients pointed at this server."""
        return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": self.url}

    def client(self, service: str):
        import boto3
        from botocore.config import Config
        return boto3.client(service, endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing",
                            config=Config(s3={"addressing_style": "path"}))

    def stop(self) -> None:
        self.service.stop()


S3S_FS_ROOT = REPO / ".cache" / "s3s-fs-0.14.1"


def s3s_fs_binary() -> str:
    """s3s-fs 0.14.1, installed once into the ignored `.cache/` (a cold `cargo install` takes minutes)."""
    path = S3S_FS_ROOT / "bin" / "s3s-fs"
    if not path.exists():
        subprocess.run(["cargo", "install", "s3s-fs@0.14.1", "--features", "binary", "--locked", "--root",
                        str(S3S_FS_ROOT)], check=True)
    return str(path)


class S3sFs:
    """s3s-fs 0.14.1 on a free loopback port, serving a directory of its own (each bucket a
    subdirectory): the S3 upstream where its speed matters, with Moto's interface for S3 (port, url,
    env, client, stop). moto answers from Python: on the 2-core development machine it served one
    200 MiB object at 176 MiB/s to one reader and at 81 MiB/s in all to 16 ranged readers, less than
    one shaped S3 connection each; s3s-fs streams files from disk."""

    ACCESS_KEY, SECRET_KEY = "testing", "testing"

    def __init__(self):
        self.port = free_port()
        self.dir = run_dir("s3s-fs")
        (self.dir / "fs").mkdir()
        self.url = f"http://127.0.0.1:{self.port}"
        self.service = Service("s3s-fs", [s3s_fs_binary(), "--host", "127.0.0.1", "--port", str(self.port),
                                          "--access-key", self.ACCESS_KEY, "--secret-key", self.SECRET_KEY,
                                          str(self.dir / "fs")], self.dir / "s3s-fs.log")
        wait_until(lambda: port_open(self.port), 30, "s3s-fs", proc=self.service)

    def env(self) -> dict:
        """Environment for AWS clients pointed at this server."""
        return {"AWS_ACCESS_KEY_ID": self.ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": self.SECRET_KEY,
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": self.url}

    def client(self, service: str):
        if service != "s3":
            raise ValueError(f"s3s-fs serves S3 only, not {service!r}")
        import boto3
        from botocore.config import Config
        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id=self.ACCESS_KEY, aws_secret_access_key=self.SECRET_KEY,
                            config=Config(s3={"addressing_style": "path"}))

    def stop(self) -> None:
        self.service.stop()
        shutil.rmtree(self.dir / "fs", ignore_errors=True)  # the data can be GBs


class Prometheus:
    """Debian's Prometheus with a generated config, on a free loopback port."""

    def __init__(self, scrape_configs: list[dict], scrape_interval: str = "15s",
                 rule_files: list[str] | None = None):
        binary = shutil.which("prometheus")
        if not binary:
            raise RuntimeError("prometheus not found: run `make setup` (apt-get install prometheus)")
        self.port = free_port()
        self.dir = run_dir("prometheus")
        self.url = f"http://127.0.0.1:{self.port}"
        config = {"global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
                  "scrape_configs": scrape_configs}
        if rule_files:
            config["rule_files"] = [str(f) for f in rule_files]
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.service = Service("prometheus", [
            binary, f"--config.file={self.dir / 'prometheus.yml'}", f"--storage.tsdb.path={self.dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-lifecycle",
        ], self.dir / "prometheus.log")
        wait_until(lambda: http_ok(f"{self.url}/-/ready"), 60, "Prometheus ready", proc=self.service)

    def query(self, expr: str) -> list:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=5) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def stop(self) -> None:
        self.service.stop()


class Scaler:
    """`milvus-scaler serve` with a config written from `config` (a dict)."""

    def __init__(self, config: dict, extra_args: list[str] | None = None, env: dict | None = None):
        self.dir = run_dir("scaler")
        config = dict(config)
        self.telemetry_port = free_port()
        config.setdefault("telemetry", {"listen": f"127.0.0.1:{self.telemetry_port}"})
        self.telemetry_port = int(str(config["telemetry"]["listen"]).rsplit(":", 1)[1])
        self.config_path = self.dir / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.service = Service("milvus-scaler",
                               [cargo_bin("milvus-scaler"), "serve", "--config", str(self.config_path)] + (extra_args or []),
                               self.dir / "scaler.log", env={"RUST_LOG": "info", **(env or {})})
        self.telemetry = f"http://127.0.0.1:{self.telemetry_port}"
        wait_until(lambda: http_ok(f"{self.telemetry}/healthz"), 30, "milvus-scaler /healthz", proc=self.service)

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"{self.telemetry}/metrics", timeout=5) as r:
            return r.read().decode()

    def stop(self) -> int | None:
        return self.service.stop()


def signals_table(config_path: Path) -> str:
    """Runs `milvus-scaler signals` once and returns its table."""
    out = subprocess.run([cargo_bin("milvus-scaler"), "signals", "--config", str(config_path)],
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"milvus-scaler signals failed ({out.returncode}): {out.stderr}")
    return out.stdout


import urllib.parse  # noqa: E402  (used by Prometheus.query)


def scaler_reading(scaler: Scaler, instance: str, signal: str) -> tuple[bool | None, float | None, float | None]:
    """What `milvus-scaler`'s telemetry says of `signal`: (known, value, age in seconds), None where absent."""
    text = scaler.metrics_text()
    known, value, age = (promtext.first_value(text, f"milvus_scaler_signal_{part}", milvus=instance, signal=signal)
                         for part in ("known", "value", "age_seconds"))
    return (None if known is None else known == 1.0), value, age


def scaler_signal(scaler: Scaler, instance: str, signal: str) -> float | None:
    """The value `milvus-scaler` reports on its telemetry for `signal`, or None while unknown."""
    known, value, _ = scaler_reading(scaler, instance, signal)
    return value if known else None
