"""Kubernetes-client side of the external metrics tests: a test PKI made with the `openssl` CLI
(serving CA, front-proxy CA and its client certificate, and an unrelated CA), kubeconfigs pointing
`kubectl` at a server on loopback, `kubectl get --raw`, and a static `/metrics` endpoint.

kube-apiserver cannot run here, so `kubectl` with a client certificate signed by the test
front-proxy CA stands in for the aggregator's front-proxy connection (that is exactly what the
aggregator presents); everything else is real TLS between real processes.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from .exporter import StaticExporter
from .services import run_dir


def _openssl(*args: str, cwd: Path) -> None:
    binary = shutil.which("openssl")
    if not binary:
        raise RuntimeError("openssl not found: apt-get install openssl")
    out = subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {out.stderr}")


class FrontProxyPki:
    """Files in `dir`: serving-ca.crt, tls.crt/tls.key (SAN localhost, 127.0.0.1),
    front-proxy-ca.crt, client.crt/client.key (CN front-proxy-client), other-cn.crt/key
    (CN someone-else, same CA), wrong.crt/wrong.key (CN front-proxy-client, another CA)."""

    def __init__(self):
        self.dir = run_dir("pki")
        d = self.dir
        for ca in ("serving-ca", "front-proxy-ca", "other-ca"):
            _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                     "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-days", "2", "-subj", f"/CN=test {ca}",
                     "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
                     cwd=d)
        self._leaf("tls", "milvus-scaler", "serving-ca", "serverAuth", "subjectAltName=DNS:localhost,IP:127.0.0.1")
        self._leaf("client", "front-proxy-client", "front-proxy-ca", "clientAuth")
        self._leaf("other-cn", "someone-else", "front-proxy-ca", "clientAuth")
        self._leaf("wrong", "front-proxy-client", "other-ca", "clientAuth")

    def _leaf(self, name: str, cn: str, ca: str, usage: str, san: str | None = None) -> None:
        d = self.dir
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
        ext = [f"extendedKeyUsage={usage}", "basicConstraints=CA:FALSE"] + ([san] if san else [])
        (d / f"{name}.ext").write_text("\n".join(ext) + "\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
                 "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=d)

    def path(self, name: str) -> str:
        return str(self.dir / name)

    def external_metrics_config(self, port: int, allowed_names: list[str] | None = None) -> dict:
        return {
            "listen": f"127.0.0.1:{port}",
            "tls": {"cert_file": self.path("tls.crt"), "key_file": self.path("tls.key")},
            "client_auth": {"client_ca_file": self.path("front-proxy-ca.crt"),
                            "allowed_names": ["front-proxy-client"] if allowed_names is None else allowed_names},
        }

    def kubeconfig(self, port: int, identity: str | None) -> str:
        """A kubeconfig for https://127.0.0.1:PORT trusting the serving CA, authenticating with
        `identity` (`client`, `other-cn`, `wrong`) or with nothing."""
        # Without a certificate kubectl would prompt for a username on 401; a bearer token (which
        # this server ignores: only the front-proxy certificate authenticates) keeps it
        # non-interactive and is what a direct caller without the certificate would send.
        user: dict = {"token": "not-a-front-proxy-certificate"}
        if identity:
            user = {"client-certificate": self.path(f"{identity}.crt"), "client-key": self.path(f"{identity}.key")}
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": f"https://127.0.0.1:{port}",
                                                      "certificate-authority": self.path("serving-ca.crt")}}],
            "users": [{"name": "test", "user": user}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
        }
        path = self.dir / f"kubeconfig-{port}-{identity or 'anonymous'}"
        path.write_text(yaml.safe_dump(config))
        return str(path)


def kubectl_raw(kubeconfig: str, path: str, timeout: float = 20) -> subprocess.CompletedProcess:
    binary = shutil.which("kubectl")
    if not binary:
        raise RuntimeError("kubectl not found: install kubectl (https://kubernetes.io/docs/tasks/tools/)")
    return subprocess.run([binary, "--kubeconfig", kubeconfig, "get", "--raw", path],
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


class StaticMetrics(StaticExporter):
    """One Prometheus text file served at /metrics (a stand-in for a Milvus pod when the test is
    about serving, not about Milvus)."""

    def __init__(self, fixture: Path):
        super().__init__(Path(fixture).read_text())

    def set_body(self, text: str) -> None:
        """Atomically replaces what /metrics serves."""
        self.set(text)


def scale_counters(text: str, prefix: str, factor: float) -> str:
    """`text` with every sample of the series whose name starts with `prefix` multiplied by
    `factor`: makes counters and histogram buckets advance as if the same traffic happened again."""
    out = []
    for line in text.splitlines():
        if line.startswith(prefix):
            name, _, value = line.rpartition(" ")
            line = f"{name} {float(value) * factor!r}"
        out.append(line)
    return "\n".join(out) + "\n"
