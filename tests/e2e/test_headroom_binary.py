"""`milvus-scaler plan-nodes` and `serve` holding node headroom, end to end through the real binary: signals scraped from a
scripted Milvus /metrics endpoint (a real 2.3.5 capture, tests/e2e/node_groups_support.py), the headroom planner,
and the placeholder holder writing a Deployment's scale through kube-rs.

kube-apiserver cannot run here, so the API server is a FAKE (`FakeScales` below): two Deployment scale
subresources (the query nodes' and the placeholder's) on 127.0.0.1, GET and merge-PATCH as the real one answers
them, and Leases (GET, POST, PUT at the stored resourceVersion, else 409) for the leader election, recording
every request. milvus-scaler finds it through a kubeconfig (KUBECONFIG), as it would from a
workstation; in a pod it uses its ServiceAccount instead.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from harness.kube_fakes import _status
from harness.procs import send_json
from harness.procs import wait_until
from harness.services import Scaler, cargo_bin, run_dir
from node_groups_support import ScriptedMilvusMetrics, metric

WORKLOAD = "/apis/apps/v1/namespaces/milvus/deployments/milvus-querynode/scale"
PLACEHOLDER = "/apis/apps/v1/namespaces/milvus/deployments/milvus-querynode-headroom/scale"
TOKEN = "fake-token"
LEASES = "/apis/coordination.k8s.io/v1/namespaces/milvus-scaler/leases"
LEASE_NAME = "milvus-scaler-headroom"


class FakeScales:
    """The FAKE API server (see the module docstring): not Kubernetes, two objects, no watch."""

    def __init__(self, workload: int, placeholder: int):
        self.replicas = {WORKLOAD: workload, PLACEHOLDER: placeholder}
        self.leases: dict[str, dict] = {}
        self.last_rv = 0
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _scale(self, path: str) -> dict:
                name = path.split("/")[-2]
                n = fake.replicas[path]
                return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                        "metadata": {"name": name, "namespace": "milvus"},
                        "spec": {"replicas": n}, "status": {"replicas": n}}

            def _record(self, body=None) -> str:
                path = self.path.split("?")[0]
                with fake.lock:
                    fake.requests.append({"method": self.command, "path": path, "query": self.path.partition("?")[2],
                                          "content_type": self.headers.get("Content-Type"),
                                          "auth": self.headers.get("Authorization"), "body": body})
                return path

            def _body(self):
                return json.loads(self.rfile.read(int(self.headers["Content-Length"])))

            def _store_lease(self, name: str, lease: dict, code: int):
                with fake.lock:
                    fake.last_rv += 1
                    lease = {**lease, "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                             "metadata": {**lease["metadata"], "namespace": "milvus-scaler",
                                          "resourceVersion": str(fake.last_rv)}}
                    fake.leases[name] = lease
                send_json(self, code, lease)

            def do_POST(self):
                body = self._body()
                path = self._record(body)
                if path != LEASES:
                    return send_json(self, 405, _status(405, "MethodNotAllowed", f"POST {path}"))
                name = body["metadata"]["name"]
                if name in fake.leases:
                    return send_json(self, 409, _status(409, "AlreadyExists", f"leases {name!r} already exists"))
                self._store_lease(name, body, 201)

            def do_PUT(self):
                body = self._body()
                path = self._record(body)
                name = path.removeprefix(LEASES + "/")
                if not path.startswith(LEASES + "/") or name not in fake.leases:
                    return send_json(self, 404, _status(404, "NotFound", f"{path} not found"))
                rv = body["metadata"].get("resourceVersion")
                if rv != fake.leases[name]["metadata"]["resourceVersion"]:
                    return send_json(self, 409, _status(409, "Conflict", "the object has been modified"))
                self._store_lease(name, body, 200)

            def do_GET(self):
                path = self._record()
                if path.startswith(LEASES + "/"):
                    lease = fake.leases.get(path.removeprefix(LEASES + "/"))
                    if lease is None:
                        return send_json(self, 404, _status(404, "NotFound", f"{path} not found"))
                    return send_json(self, 200, lease)
                if path not in fake.replicas:
                    return send_json(self, 404, _status(404, "NotFound", f"{path} not found"))
                send_json(self, 200, self._scale(path))

            def do_PATCH(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                path = self._record(body)
                if path not in fake.replicas:
                    return send_json(self, 404, _status(404, "NotFound", f"{path} not found"))
                if self.headers.get("Content-Type") != "application/merge-patch+json":
                    return send_json(self, 415, _status(415, "UnsupportedMediaType", "merge patch expected"))
                with fake.lock:
                    fake.replicas[path] = body["spec"]["replicas"]
                send_json(self, 200, self._scale(path))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def holder(self) -> str | None:
        with self.lock:
            lease = self.leases.get(LEASE_NAME)
        return None if lease is None else lease["spec"].get("holderIdentity")

    def take(self) -> list[dict]:
        with self.lock:
            out, self.requests = self.requests, []
        return out

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scales():
    f = FakeScales(workload=4, placeholder=0)
    yield f
    f.stop()


@pytest.fixture
def milvus_metrics():
    s = ScriptedMilvusMetrics(queue_depth=0)
    yield s
    s.stop()


def kubeconfig(api: FakeScales, token: str = TOKEN) -> Path:
    path = Path(run_dir("headroom-kubeconfig")) / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": api.url}}],
        "users": [{"name": "fake", "user": {"token": token}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}]}))
    return path


def config(metrics_url: str, mode: str = "dry-run") -> dict:
    return {
        "milvus": [{"name": "prod", "namespace": "milvus", "scrape": {"targets": [metrics_url], "interval": "500ms"}}],
        "signals": {"window": "10s", "stale_after": "5s"},
        "headroom": {
            "milvus": "prod", "mode": mode, "interval": "1s",
            "workload": {"namespace": "milvus", "deployment": "milvus-querynode"},
            "planner": {"pod_capacity": 60, "time_to_ready": {"node_launch": "100s", "load": "20s"},
                        "growth_window": "5m", "hold": "10m", "step_down_interval": "1m", "floor": 2, "cap": 8},
            "holder": {"placeholder": {"namespace": "milvus", "deployment": "milvus-querynode-headroom"}},
        },
    }


def plan_nodes(api: FakeScales, metrics_url: str, *extra: str) -> subprocess.CompletedProcess:
    path = Path(run_dir("headroom-plan-nodes")) / "config.yaml"
    path.write_text(yaml.safe_dump(config(metrics_url)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_SERVICE")}
    env.update(KUBECONFIG=str(kubeconfig(api)), RUST_LOG="warn")
    return subprocess.run([cargo_bin("milvus-scaler"), "plan-nodes", "--config", str(path), *extra],
                          capture_output=True, text=True, timeout=120, env=env)


def planned(out: str) -> int:
    m = re.search(r"^headroom:\s+(\d+) pods$", out, re.M)
    assert m, out
    return int(m.group(1))


def test_dry_run_reads_and_prints_the_plan_then_apply_writes_it_once(scales, milvus_metrics):
    r = plan_nodes(scales, milvus_metrics.url)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "workload:  4 pods (Deployment milvus/milvus-querynode)" in r.stdout, r.stdout
    assert "demand:    search_demand" in r.stdout, r.stdout
    n = planned(r.stdout)
    assert 2 <= n <= 8, "within [floor, cap]"
    assert f"dry-run: would set 0 -> {n}" in r.stdout, r.stdout
    seen = scales.take()
    assert {(x["method"], x["path"]) for x in seen} == {("GET", WORKLOAD), ("GET", PLACEHOLDER)}, seen
    assert all(x["auth"] == f"Bearer {TOKEN}" for x in seen), seen
    assert scales.replicas[PLACEHOLDER] == 0, "dry-run wrote"

    r = plan_nodes(scales, milvus_metrics.url, "--apply")
    assert r.returncode == 0, r.stderr + r.stdout
    assert f"set 0 -> {planned(r.stdout)}" in r.stdout, r.stdout
    patches = [x for x in scales.take() if x["method"] == "PATCH"]
    assert len(patches) == 1, patches
    (p,) = patches
    assert p["path"] == PLACEHOLDER and p["content_type"] == "application/merge-patch+json"
    assert p["body"] == {"spec": {"replicas": planned(r.stdout)}}
    assert "fieldManager=milvus-scaler" in p["query"], p
    assert scales.replicas[PLACEHOLDER] == planned(r.stdout)

    # Holding what is already held: read, no write.
    r = plan_nodes(scales, milvus_metrics.url, "--apply")
    assert r.returncode == 0, r.stderr + r.stdout
    assert "unchanged at" in r.stdout, r.stdout
    assert not [x for x in scales.take() if x["method"] == "PATCH"]


def test_unknown_demand_writes_nothing(scales, milvus_metrics):
    milvus_metrics.set_down(True)
    r = plan_nodes(scales, milvus_metrics.url, "--apply")
    assert r.returncode == 0, r.stderr + r.stdout
    assert "demand:    unknown" in r.stdout and "nothing written" in r.stdout, r.stdout
    seen = scales.take()
    assert [(x["method"], x["path"]) for x in seen] == [("GET", WORKLOAD)], "only the workload is read"
    assert scales.replicas[PLACEHOLDER] == 0


def test_a_missing_placeholder_fails_saying_to_apply_the_component(scales, milvus_metrics):
    del scales.replicas[PLACEHOLDER]
    r = plan_nodes(scales, milvus_metrics.url, "--apply")
    assert r.returncode == 1, r.stderr + r.stdout
    assert "not found (HTTP 404" in r.stdout and "manifests/components/headroom" in r.stdout, r.stdout
    assert "the headroom could not be read or held" in r.stderr, r.stderr


def test_serve_holds_the_headroom_every_interval_and_exports_it(scales, milvus_metrics):
    assert "KUBERNETES_SERVICE_HOST" not in os.environ, "this test runs outside a pod"
    scaler = Scaler(config(milvus_metrics.url, mode="apply"), env={"KUBECONFIG": str(kubeconfig(scales))})
    try:
        wait_until(lambda: scales.replicas[PLACEHOLDER] >= 2, 30, "the placeholder's replicas set",
                   proc=scaler.service)
        n = scales.replicas[PLACEHOLDER]
        holder = "Deployment milvus/milvus-querynode-headroom"
        wait_until(lambda: metric(scaler.metrics_text(), "milvus_scaler_headroom_applied", holder=holder,
                                  unit="pods") == n, 10, "applied exported")
        text = scaler.metrics_text()
        assert metric(text, "milvus_scaler_headroom_planned_pods", holder=holder) == n, text
        assert metric(text, "milvus_scaler_headroom_workload_pods", holder=holder) == 4, text
        assert metric(text, "milvus_scaler_headroom_changes_total", holder=holder, direction="up") == 1, text
        # Rounds go on (reads every interval) and write nothing more while the plan holds.
        scales.take()
        wait_until(lambda: sum(x["path"] == PLACEHOLDER for x in scales.requests) >= 2, 10, "two more rounds")
        assert not [x for x in scales.take() if x["method"] == "PATCH"]
        # Blind: Milvus down -> the rounds count as blind and nothing is written.
        milvus_metrics.set_down(True)
        wait_until(lambda: (metric(scaler.metrics_text(), "milvus_scaler_headroom_blind_rounds_total",
                                   holder=holder) or 0) >= 1, 30, "a blind round", proc=scaler.service)
        assert not [x for x in scales.take() if x["method"] == "PATCH"]
        assert scales.replicas[PLACEHOLDER] == n
    finally:
        assert scaler.stop() == 0, "serve stops on SIGTERM (the CancellationToken ends the headroom loop)"


def test_two_serve_replicas_elect_one_writer_and_hand_over_at_once_on_sigterm(scales, milvus_metrics):
    """Two `serve` processes in apply, as the external-metrics/KEDA manifests run them: each with its own
    POD_NAME (the Lease identity) and its own token (so the fake's requests say who wrote). Only the Lease's holder
    writes the placeholder, the other plans and exports leader 0; SIGTERM on the leader releases the Lease and the
    other takes over well before the 30 s lease would have expired, then writes."""
    assert "KUBERNETES_SERVICE_HOST" not in os.environ, "outside a pod: the election is turned on by config"
    cfg = config(milvus_metrics.url, mode="apply")
    cfg["headroom"]["leader_election"] = {"enabled": True, "namespace": "milvus-scaler", "lease_duration": "30s",
                                          "renew_deadline": "20s", "retry_period": "200ms"}
    lease_label = f"milvus-scaler/{LEASE_NAME}"
    replicas: dict[str, Scaler] = {}
    try:
        for name in ("replica-a", "replica-b"):
            replicas[name] = Scaler(cfg, env={"KUBECONFIG": str(kubeconfig(scales, token=f"token-{name}")),
                                              "POD_NAME": name})
        wait_until(lambda: scales.replicas[PLACEHOLDER] >= 2, 30, "the placeholder's replicas set",
                   proc=replicas["replica-a"].service)
        leader = scales.holder()
        assert leader in replicas, scales.leases
        (follower,) = set(replicas) - {leader}
        # A few rounds of both (interval 1s): both read the workload, only the leader writes.
        scales.take()
        wait_until(lambda: sum(x["path"] == WORKLOAD for x in scales.requests) >= 6, 20, "rounds of both")
        seen = scales.take()
        assert {x["auth"] for x in seen if x["path"] == WORKLOAD} == {"Bearer token-replica-a",
                                                                       "Bearer token-replica-b"}, "both plan"
        assert not [x for x in seen if x["path"] == PLACEHOLDER and x["auth"] != f"Bearer token-{leader}"], \
            "the follower called the holder"
        assert {x["method"] for x in seen if x["path"].startswith(LEASES)} <= {"GET", "PUT"}, "renewals"
        wait_until(lambda: metric(replicas[leader].metrics_text(), "milvus_scaler_headroom_leader",
                                  lease=lease_label) == 1, 10, "leader 1 on the leader")
        assert metric(replicas[follower].metrics_text(), "milvus_scaler_headroom_leader", lease=lease_label) == 0
        assert metric(replicas[follower].metrics_text(), "milvus_scaler_headroom_planned_pods",
                      holder="Deployment milvus/milvus-querynode-headroom") == scales.replicas[PLACEHOLDER]

        stopped = time.monotonic()
        assert replicas.pop(leader).stop() == 0
        assert scales.holder() in ("", follower), "released on SIGTERM (or already taken)"
        wait_until(lambda: scales.holder() == follower, 10, "the follower takes over")
        assert time.monotonic() - stopped < 30, "taken over before the lease expired: it was released"
        # Someone resets the placeholder: the new leader restores it, with its own token.
        scales.take()
        with scales.lock:
            scales.replicas[PLACEHOLDER] = 0
        wait_until(lambda: scales.replicas[PLACEHOLDER] >= 2, 20, "the new leader writes",
                   proc=replicas[follower].service)
        patches = [x for x in scales.take() if x["method"] == "PATCH"]
        assert patches and {x["auth"] for x in patches} == {f"Bearer token-{follower}"}, patches
        wait_until(lambda: metric(replicas[follower].metrics_text(), "milvus_scaler_headroom_leader",
                                  lease=lease_label) == 1, 10, "leader 1 on the new leader")
    finally:
        for r in replicas.values():
            assert r.stop() == 0
