"""KEDA external scaler helpers: a gRPC client generated at test time from proto/externalscaler.proto
(grpcio-tools, independent of the server's Rust code), certificates made with the openssl CLI, a
controllable static Milvus metrics endpoint, and `milvus-scaler serve` with a `keda:` section."""
from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from . import promtext
from .exporter import StaticExporter
from .procs import REPO, free_port, port_open, wait_until
from .services import Scaler, run_dir

PROTO = REPO / "proto" / "externalscaler.proto"
FIXTURE = REPO / "tests" / "fixtures" / "milvus-2.3.5-metrics-under-load.prom"

_stubs = None


def stubs():
    """(externalscaler_pb2, externalscaler_pb2_grpc) compiled from the proto into a temp dir, once."""
    global _stubs
    if _stubs is None:
        from grpc_tools import protoc  # grpcio-tools

        out = Path(tempfile.mkdtemp(prefix="keda-stubs-"))
        include = str(Path(protoc.__file__).parent / "_proto")
        rc = protoc.main(["protoc", f"-I{PROTO.parent}", f"-I{include}", f"--python_out={out}",
                          f"--grpc_python_out={out}", str(PROTO)])
        if rc != 0:
            raise RuntimeError(f"grpc_tools.protoc failed on {PROTO} ({rc})")
        sys.path.insert(0, str(out))
        _stubs = (importlib.import_module("externalscaler_pb2"), importlib.import_module("externalscaler_pb2_grpc"))
    return _stubs


def openssl() -> str:
    found = shutil.which("openssl")
    if not found:
        raise RuntimeError("openssl not found: apt-get install openssl")
    return found


def make_certs(directory: Path) -> dict:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, as PEM files."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run([openssl(), *args], check=True, capture_output=True, cwd=d)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=milvus-scaler test CA")
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth"),
                      ("client", "extendedKeyUsage=clientAuth")):
        (d / f"{name}.ext").write_text(ext + "\n")
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN=keda-{name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
    # A second, unrelated CA and client: must be refused under mTLS.
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "rogue.key", "-out", "rogue.pem", "-days", "2",
        "-subj", "/CN=rogue")
    return {"ca": d / "ca.pem", "server": d / "server.pem", "server_key": d / "server.key",
            "client": d / "client.pem", "client_key": d / "client.key",
            "rogue": d / "rogue.pem", "rogue_key": d / "rogue.key"}


class StaticMetrics(StaticExporter):
    """A real Milvus 2.3.5 metrics capture served over HTTP on loopback, with the number of unissued
    index tasks switchable (`set_pending`), or an HTTP 500 (`set_down`). This is a fault-injection
    stand-in for Milvus where timing must be controlled; tests with the real Milvus exist beside it."""

    def __init__(self, pending: int = 0):
        self._template = FIXTURE.read_text()
        super().__init__(self._with_pending(pending))

    def _with_pending(self, pending: int) -> str:
        out = []
        for line in self._template.splitlines():
            if line.startswith("milvus_datacoord_index_task_count{") and 'index_task_status="unissued"' in line:
                line = line.rsplit(" ", 1)[0] + f" {pending}"
            out.append(line)
        return "\n".join(out) + "\n"

    def set_pending(self, n: int) -> None:
        self.set(self._with_pending(n))


class KedaScaler(Scaler):
    """`milvus-scaler serve` with a `keda:` section on a free loopback port."""

    def __init__(self, metrics_url: str, interval: str = "1s", stale_after: str = "5s", tls: dict | None = None,
                 keepalive: str = "10s", name: str = "demo", telemetry: dict | None = None):
        self.grpc_port = free_port()
        keda = {"listen": f"127.0.0.1:{self.grpc_port}", "stream_keepalive": keepalive}
        if tls:
            keda["tls"] = {k: str(v) for k, v in tls.items()}
        config = {
            "milvus": [{"name": name, "namespace": "default",
                        "scrape": {"targets": [metrics_url], "interval": interval}}],
            "signals": {"window": "10s", "stale_after": stale_after},
            "keda": keda,
        }
        if telemetry:
            config["telemetry"] = {"listen": f"127.0.0.1:{free_port()}", **telemetry}
        super().__init__(config)
        self.address = f"127.0.0.1:{self.grpc_port}"
        wait_until(lambda: port_open(self.grpc_port), 30, "KEDA gRPC port", proc=self.service)

    def gauge(self, name: str) -> float | None:
        """The first sample of `name` on the scaler's telemetry; None when there is none."""
        return promtext.first_value(self.metrics_text(), name)

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.service.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def threads(self) -> int:
        return len(list(Path(f"/proc/{self.service.pid}/task").iterdir()))


def scaled_object(pb2, metadata: dict, **overrides: str):
    """A ScaledObjectRef carrying `metadata` updated with `overrides`."""
    return pb2.ScaledObjectRef(name="so", namespace="default", scalerMetadata={**metadata, **overrides})


__all__ = ["stubs", "make_certs", "StaticMetrics", "KedaScaler", "scaled_object", "run_dir"]
