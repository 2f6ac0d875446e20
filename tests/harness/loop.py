"""The closed loop on a real Milvus cluster, as it runs on Kubernetes but with real processes:

    query nodes ──/metrics──▶ milvus-scaler serve ──external.metrics.k8s.io (mTLS)──▶ local-hpa
         ▲                    (file: targets)                                          │ the HPA
         └──────── QueryNodeScaleEndpoint (scale subresource) ◀── PUT spec.replicas ───┘ algorithm

`local-hpa` is our implementation of the Kubernetes HPA algorithm (crates/hpa) reading our external
metrics API with the same paths and selectors the HPA uses; the scale subresource is a fake of
kube-apiserver's (kube-apiserver cannot run here) that starts and gracefully stops real query-node
processes one at a time, like a Deployment. Everything else is real.
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import yaml

from .cluster import MilvusCluster, QueryNodeScaleEndpoint
from .kube import FrontProxyPki
from .kube_fakes import PodsAndMetricsFake
from .procs import Service, free_port, wait_until
from .services import Scaler, cargo_bin, run_dir


class TargetsFile:
    """Keeps a `file:` scrape-target list current with the cluster's running processes (what a
    headless Service's DNS does in Kubernetes)."""

    def __init__(self, cluster: MilvusCluster, path: Path, interval: float = 0.5):
        self.cluster = cluster
        self.path = path
        self.interval = interval
        self.blind = False  # when set, the file lists nothing: every signal turns unknown
        self._stop = threading.Event()
        self.write()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def write(self) -> None:
        urls = [] if self.blind else self.cluster.metrics_targets()["all"]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(f"{u}\n" for u in urls))
        tmp.replace(self.path)  # atomic: the scaler never reads half a list

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.write()
            except Exception:  # the cluster is stopping; the next round tries again
                pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def hpa_manifest(path: Path, *, instance: str, namespace: str, overrides: dict | None = None) -> dict:
    """A shipped HPA example with the instance's selector, the scale target of the harness, and
    optional `spec` overrides (e.g. min/max replicas for one machine)."""
    doc = yaml.safe_load(path.read_text())
    doc["metadata"]["namespace"] = namespace
    doc["spec"]["scaleTargetRef"] = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "querynode"}
    for metric in doc["spec"]["metrics"]:
        if metric["type"] == "External":
            metric["external"]["metric"]["selector"] = {"matchLabels": {"milvus": instance}}
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(doc["spec"].get(key), dict):
            doc["spec"][key].update(value)
        else:
            doc["spec"][key] = value
    return doc


class ClosedLoop:
    """milvus-scaler, the scale endpoint and local-hpa around a started `MilvusCluster`.

    With Resource (CPU) metrics in the HPA, a `PodsAndMetricsFake` stands for kube-apiserver's pod
    list and metrics-server: the query nodes as pods (ready once registered with the coordinator,
    requesting `query_node_cpu`), their CPU the real CPU time of their process's cgroup, as
    metrics-server reports it: the rate between two samples `cpu_window` seconds apart, refreshed
    every `cpu_window` seconds (metrics-server's `--metric-resolution`, 15 s in its release
    manifests). `cpu_initialization_period` and `initial_readiness_delay` (durations, e.g. "100s";
    None: local-hpa's defaults, kube-controller-manager's 5m and 30s) are passed to local-hpa.
    A loop compressing its time constants compresses these three with them."""

    def __init__(self, cluster: MilvusCluster, hpa: dict, *, instance: str = "demo", window: str = "30s",
                 stale_after: str = "10s", scrape_interval: str = "1s", sync_period: str = "15s",
                 max_replicas: int = 8, demand_drain: str = "120s", cpu_window: float = 15.0,
                 cpu_initialization_period: str | None = None, initial_readiness_delay: str | None = None):
        self.cluster = cluster
        self.instance = instance
        self.namespace = hpa["metadata"]["namespace"]
        self.dir = run_dir("loop")
        self.pki = FrontProxyPki()
        self.parts: list = []
        try:
            self.targets = TargetsFile(cluster, self.dir / "targets.txt")
            self.parts.append(self.targets)
            self.api_port = free_port()
            self.scaler = Scaler({
                "milvus": [{"name": instance, "namespace": self.namespace,
                            "scrape": {"targets": [f"file:{self.targets.path}"], "interval": scrape_interval,
                                       "timeout": scrape_interval}}],
                "signals": {"window": window, "stale_after": stale_after, "demand_drain": demand_drain},
                "external_metrics": self.pki.external_metrics_config(self.api_port),
            })
            self.parts.append(self.scaler)
            self.endpoint = QueryNodeScaleEndpoint(cluster, max_replicas=max_replicas)
            self.parts.append(self.endpoint)
            # Resource (CPU) metrics need pods and their usage, as metrics-server reports them.
            cpu = any(m["type"] in ("Resource", "ContainerResource") for m in hpa["spec"].get("metrics", []))
            pod_args: list[str] = []
            if cpu:
                self.pods = PodsAndMetricsFake(self._query_node_pods, namespace=self.namespace,
                                               labels={"app.kubernetes.io/component": "querynode"},
                                               window=cpu_window, sample_every=cpu_window)
                self.parts.append(self.pods)
                pod_args = ["--pods-url", self.pods.pods_url, "--pod-metrics-url", self.pods.pod_metrics_url]
            for flag, value in (("--cpu-initialization-period", cpu_initialization_period),
                                ("--initial-readiness-delay", initial_readiness_delay)):
                if value is not None:
                    pod_args += [flag, value]
            self.hpa_path = self.dir / "hpa.yaml"
            self.hpa_path.write_text(yaml.safe_dump(hpa))
            self.hpa_log = self.dir / "local-hpa.log"
            self.controller = Service("local-hpa", [
                cargo_bin("milvus-scaler"), "--log-format", "json", "local-hpa",
                "--hpa", str(self.hpa_path),
                "--metrics-api", f"https://127.0.0.1:{self.api_port}",
                "--ca-file", self.pki.path("serving-ca.crt"),
                "--client-cert", self.pki.path("client.crt"),
                "--client-key", self.pki.path("client.key"),
                "--scale-url", self.endpoint.url,
                "--sync-period", sync_period, *pod_args,
            ], self.hpa_log, env={"RUST_LOG": "info"})
            self.parts.append(self.controller)
            wait_until(lambda: bool(self.decisions()), 120, "local-hpa's first decision", proc=self.controller)
        except BaseException:
            self.stop()
            raise

    def _query_node_pods(self) -> list[dict]:
        """The query nodes as pods: ready once registered with the coordinator, until told to stop."""
        now_unix, now_mono = time.time(), time.monotonic()
        unix = lambda t: now_unix - (now_mono - t)  # noqa: E731  (harness times are monotonic)
        pods = []
        for node in list(self.cluster.nodes.values()):
            if node.stopping:
                continue
            ready = node.registered_at is not None
            pods.append({"name": node.name, "pid": node.proc.pid, "started_at": unix(node.started_at),
                         "ready": ready, "ready_since": unix(node.registered_at) if ready else None,
                         "cpu_request_cores": self.cluster.query_node_cpu, "cgroup": node.group.path})
        return pods

    def decisions(self) -> list[dict]:
        """local-hpa's decision log lines (one JSON object per sync)."""
        out = []
        try:
            text = self.hpa_log.read_text()
        except FileNotFoundError:
            return out
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            fields = entry.get("fields", {})
            if "desired" in fields and "current" in fields:
                out.append({"time": entry.get("timestamp"), **fields})
        return out

    def desired(self) -> int:
        """spec.replicas of the query-node scale subresource."""
        return self.endpoint.scale()["spec"]["replicas"]

    def serving(self) -> int:
        """Query-node processes running (not being stopped)."""
        return len(self.cluster.query_nodes())

    def stop(self) -> None:
        for part in reversed(self.parts):
            try:
                part.stop()
            except Exception:
                pass
        self.parts.clear()


