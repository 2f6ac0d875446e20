"""`milvus-scaler local-hpa` with the Milvus Helm chart's kind of HPA — CPU utilization — over real
processes: the HPA a benchmark compares our demand policy with.

    python "pods" ──/proc──▶ PodsAndMetricsFake ──PodList, PodMetricsList──▶ local-hpa --once ──PUT──▶ scale fake

The "pods" are real processes: duty-cycled busy loops burning a fixed share of a core (a plain
`while True: pass` would take whatever a shared 2-core machine leaves it, which changes between any
two measurements) and idle `sleep`s. kube-apiserver and metrics-server cannot run here:
tests/harness/kube_fakes.py FAKES their pod list and PodMetrics API from the processes' CPU time; the
scale subresource is a small fake in this file. The test computes what the utilization implies from
its OWN reading of /proc over the same period, and checks local-hpa's decision against it.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from math import ceil
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.kube_fakes import (PodsAndMetricsFake, go_duration, parse_selector,  # noqa: E402
                                rfc3339, selector_matches)
from harness.procs import send_json, wait_until  # noqa: E402
from harness.services import cargo_bin, run_dir  # noqa: E402

SELECTOR = "app=querynode"
TARGET = 50  # averageUtilization, percent
REQUEST = 0.1  # cores requested per pod
SHARE = 0.25  # cores each hot process burns
TOLERANCE = 0.1  # relative: the test's /proc window and the fake's are not quite the same instants

# A duty-cycled busy loop: SHARE of a core in every 100 ms of wall time.
HOT = (
    "import sys, time\n"
    "share, period = float(sys.argv[1]), 0.1\n"
    "t = time.monotonic()\n"
    "while True:\n"
    "    c = time.process_time()\n"
    "    while time.process_time() - c < share * period:\n"
    "        pass\n"
    "    t += period\n"
    "    d = t - time.monotonic()\n"
    "    if d > 0:\n"
    "        time.sleep(d)\n"
    "    else:\n"
    "        t = time.monotonic()\n"
)


# --------------------------------------------------------------------------------------------------
# the scale subresource (a fake of kube-apiserver's, for one Deployment)


class ScaleFake:
    """GET/PUT an autoscaling/v1 Scale at `url`; `status.selector` is the pods' selector."""

    PATH = "/apis/apps/v1/namespaces/milvus/deployments/querynode/scale"

    def __init__(self, replicas: int, selector: str):
        self.replicas, self.selector, self.puts = replicas, selector, []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code, body):
                send_json(self, code, body)

            def do_GET(self):
                if self.path != ScaleFake.PATH:
                    return self._send(404, {"kind": "Status", "code": 404, "message": "not found"})
                self._send(200, fake.scale())

            def do_PUT(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.replicas = body["spec"]["replicas"]
                fake.puts.append(fake.replicas)
                self._send(200, fake.scale())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{self.PATH}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def scale(self) -> dict:
        return {"apiVersion": "autoscaling/v1", "kind": "Scale",
                "metadata": {"name": "querynode", "namespace": "milvus", "resourceVersion": "1"},
                "spec": {"replicas": self.replicas},
                "status": {"replicas": self.replicas, "selector": self.selector}}

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------------------------------
# the test's own /proc reading (independent of the fake's)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    rest = stat[stat.rindex(")") + 2:].split()
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


class Pods:
    """Real processes standing for pods; stopped by PID."""

    def __init__(self):
        self.procs: dict[str, subprocess.Popen] = {}
        self.meta: dict[str, dict] = {}

    def start(self, name: str, hot: bool, ready: bool = True, labels: dict | None = None) -> None:
        cmd = [sys.executable, "-c", HOT, str(SHARE)] if hot else ["sleep", "3600"]
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        started = time.time()
        self.procs[name] = p
        self.meta[name] = {"name": name, "pid": p.pid, "started_at": started, "ready": ready,
                           "ready_since": started, "cpu_request_cores": REQUEST, "labels": labels or {}}

    def alias(self, name: str, of: str, labels: dict) -> None:
        """Another pod backed by the same process (e.g. a pod the selector must leave out)."""
        self.meta[name] = {**self.meta[of], "name": name, "labels": labels}

    def provider(self, names: list[str]):
        return lambda: [dict(self.meta[n]) for n in names]

    def stop(self) -> None:
        for p in self.procs.values():
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(timeout=10)


def write_hpa(path: Path) -> Path:
    """The Milvus Helm chart's query-node HPA kind (Resource cpu Utilization), scaling at once both
    ways so that one sync shows the decision (no stabilization, no rate limit below maxReplicas)."""
    path.write_text(yaml.safe_dump({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "querynode", "namespace": "milvus"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "querynode"},
            "minReplicas": 1, "maxReplicas": 20,
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": TARGET}}}],
            "behavior": {
                "scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                            "policies": [{"type": "Percent", "value": 1000, "periodSeconds": 15}]},
                "scaleDown": {"stabilizationWindowSeconds": 0},
            },
        },
    }))
    return path


def local_hpa_once(hpa: Path, scale: ScaleFake, fake: PodsAndMetricsFake | None) -> tuple[int, dict | None, str]:
    cmd = [cargo_bin("milvus-scaler"), "--log-format", "json", "local-hpa", "--once",
           "--hpa", str(hpa), "--scale-url", scale.url]
    if fake is not None:
        cmd += ["--pods-url", fake.pods_url, "--pod-metrics-url", fake.pod_metrics_url]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "RUST_LOG": "info"})
    decision = None
    for line in r.stderr.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("fields", {}).get("message") == "hpa decision":
            decision = entry["fields"]
    return r.returncode, decision, r.stderr


def desired_for(used: dict[str, float], ready: list[str], unready: list[str], current: int) -> int:
    """What the HPA asks for, from per-pod usage (cores): integer utilization of the ready pods'
    requests; on a scale-up unready pods count as 0 of their request (replica_calculator.go)."""
    percent = int(sum(used[n] for n in ready) * 100 / (REQUEST * len(ready)))
    ratio = percent / TARGET
    if abs(ratio - 1) <= 0.1:
        return current
    if ratio > 1 and unready:
        new_percent = int(sum(used[n] for n in ready) * 100 / (REQUEST * (len(ready) + len(unready))))
        new_ratio = new_percent / TARGET
        if new_ratio <= 1.1:
            return current
        wanted = ceil(new_ratio * (len(ready) + len(unready)))
    else:
        wanted = ceil(ratio * len(ready))
    return min(20, max(1, wanted))


def window_ready(fake: PodsAndMetricsFake, names: list[str], at_least: float) -> bool:
    items = {i["metadata"]["name"]: i for i in fake.pod_metrics_list(SELECTOR)["items"]}
    return all(n in items and float(items[n]["window"].rstrip("s")) >= at_least for n in names)


# --------------------------------------------------------------------------------------------------


def test_fake_helpers():
    assert rfc3339(1767225600.9) == "2026-01-01T00:00:00Z"
    assert [go_duration(s) for s in (30, 29.5, 60.5, 0, 3725)] == ["30s", "29.5s", "1m0.5s", "0s", "1h2m5s"]
    req = parse_selector("app=querynode, tier in (a,b),!canary,zone!=x,env")
    assert selector_matches(req, {"app": "querynode", "tier": "b", "env": "p"})
    assert not selector_matches(req, {"app": "querynode", "tier": "c", "env": "p"})
    assert not selector_matches(req, {"app": "querynode", "tier": "a", "env": "p", "canary": "1"})
    with pytest.raises(ValueError):
        parse_selector("app in a,b")


def test_resource_metrics_need_the_pod_urls():
    d = run_dir("local-hpa-cpu")
    scale = ScaleFake(3, SELECTOR)
    try:
        code, decision, stderr = local_hpa_once(write_hpa(d / "hpa.yaml"), scale, None)
    finally:
        scale.stop()
    assert code != 0 and decision is None
    assert "spec.metrics[0]: Resource metrics need --pods-url" in stderr, stderr


def test_cpu_utilization_scales_up_counting_an_unready_pod_as_zero_and_an_idle_set_down():
    d = run_dir("local-hpa-cpu")
    hpa = write_hpa(d / "hpa.yaml")
    pods = Pods()
    parts: list = []
    try:
        # Set A: two hot pods and an idle one, ready; a hot pod not ready yet (counted as 0 of its
        # request on a scale-up); and a hot "proxy" pod of another app that the selector leaves out.
        pods.start("qn-hot-0", hot=True)
        pods.start("qn-hot-1", hot=True)
        pods.start("qn-idle-2", hot=False)
        pods.start("qn-starting-3", hot=True, ready=False)
        pods.alias("proxy-0", of="qn-hot-0", labels={"app": "proxy"})
        # Set B: three idle pods.
        for i in range(3):
            pods.start(f"qn-quiet-{i}", hot=False)
        set_a = ["qn-hot-0", "qn-hot-1", "qn-idle-2", "qn-starting-3"]
        set_b = [f"qn-quiet-{i}" for i in range(3)]
        # Readiness changed when the processes started; the first samples must come later than
        # that (whole seconds on the wire) for the CPU initialization rule to see a full window
        # of readiness, as on a real cluster where metrics-server scrapes after a pod is ready.
        time.sleep(1.5)
        t0 = time.monotonic()
        before = {n: cpu_seconds(pods.meta[n]["pid"]) for n in set_a + set_b}
        fake_a = PodsAndMetricsFake(pods.provider(set_a + ["proxy-0"]), sample_every=2.5)
        parts.append(fake_a)
        fake_b = PodsAndMetricsFake(pods.provider(set_b), sample_every=2.5)
        parts.append(fake_b)
        wait_until(lambda: window_ready(fake_a, set_a, 10) and window_ready(fake_b, set_b, 10), 90,
                   "10 s of pod metrics for every pod")

        # -- scale up --------------------------------------------------------------------------------
        scale_a = ScaleFake(4, SELECTOR)
        parts.append(scale_a)
        code, decision, stderr = local_hpa_once(hpa, scale_a, fake_a)
        elapsed = time.monotonic() - t0
        used = {n: (cpu_seconds(pods.meta[n]["pid"]) - before[n]) / elapsed for n in set_a}
        assert code == 0, stderr
        assert decision is not None, stderr
        ready, unready = ["qn-hot-0", "qn-hot-1", "qn-idle-2"], ["qn-starting-3"]
        lo = desired_for({n: u * (1 - TOLERANCE) for n, u in used.items()}, ready, unready, 4)
        hi = desired_for({n: u * (1 + TOLERANCE) for n, u in used.items()}, ready, unready, 4)
        # Had the unready pod's CPU been counted (or the proxy pod been selected), the HPA would
        # ask for about half as many again.
        naive = desired_for(used, set_a, [], 4)
        metric = json.loads(decision["metrics"])[0]
        measured_percent = sum(used[n] for n in ready) * 100 / (REQUEST * len(ready))
        note = (f"local-hpa: {decision}; /proc over {elapsed:.1f}s: {used}; expected {lo}..{hi}, "
                f"naive {naive}; fake: {fake_a.pod_metrics_list(SELECTOR)}")
        assert abs(metric["average_utilization"] - measured_percent) <= TOLERANCE * measured_percent, note
        assert lo <= decision["desired"] <= hi, note
        assert naive > hi, note
        assert decision["pods"] == 4, note  # the proxy pod was not selected
        assert scale_a.puts == [decision["desired"]], note
        # Both lists were asked with the scale's selector.
        asked = {(r["path"], r["labelSelector"]) for r in fake_a.requests}
        assert asked == {(urlsplit(fake_a.pods_url).path, SELECTOR),
                         (urlsplit(fake_a.pod_metrics_url).path, SELECTOR)}, asked

        # -- scale down ------------------------------------------------------------------------------
        scale_b = ScaleFake(3, SELECTOR)
        parts.append(scale_b)
        code, decision, stderr = local_hpa_once(hpa, scale_b, fake_b)
        elapsed = time.monotonic() - t0
        used_b = {n: (cpu_seconds(pods.meta[n]["pid"]) - before[n]) / elapsed for n in set_b}
        assert code == 0, stderr
        expected = desired_for(used_b, set_b, [], 3)
        assert expected == 1, used_b  # sleeping processes: 0 % of their requests → minReplicas
        assert decision["desired"] == expected, (decision, used_b)
        assert json.loads(decision["metrics"])[0]["average_utilization"] == 0, decision
        assert scale_b.puts == [1]
    finally:
        for part in reversed(parts):
            part.stop()
        pods.stop()
