"""The external metrics API against a real Milvus 2.3.5 under a real search load: the queue depth
served through the API (mutual TLS with the test front-proxy certificate) rises under load and falls
back after it, and what kubectl reads agrees with the scaler's own telemetry. Kept short (~1 min):
the signal maths itself is covered by test_signals_milvus.py."""
from __future__ import annotations

import json
import time

import pytest
import requests
from kubernetes.utils import parse_quantity

from harness import workload
from harness.kube import FrontProxyPki, kubectl_raw
from harness.procs import free_port, wait_until
from harness.services import Scaler, scaler_signal

BASE = "/apis/external.metrics.k8s.io/v1beta1/namespaces/default"


@pytest.fixture(scope="module")
def pki():
    return FrontProxyPki()


@pytest.fixture(scope="module")
def scaler(milvus, pki):
    port = free_port()
    s = Scaler({
        "milvus": [{"name": "demo", "namespace": "default",
                    "scrape": {"targets": [milvus.metrics_url], "interval": "1s"}}],
        "signals": {"window": "10s", "stale_after": "5s"},
        "external_metrics": pki.external_metrics_config(port),
    })
    s.api_port = port
    yield s
    s.stop()


@pytest.fixture(scope="module")
def collection(milvus):
    workload.connect(milvus.uri)
    return workload.create_collection("external_metrics_e2e", rows=20_000)


def api_value(scaler, pki, metric: str) -> float | None:
    """The value served for milvus=demo, or None when the API answers 503 (unknown)."""
    r = requests.get(f"https://127.0.0.1:{scaler.api_port}{BASE}/{metric}", params={"labelSelector": "milvus=demo"},
                     verify=pki.path("serving-ca.crt"), cert=(pki.path("client.crt"), pki.path("client.key")),
                     timeout=5)
    if r.status_code == 503:
        assert r.json()["reason"] == "ServiceUnavailable"
        return None
    assert r.status_code == 200, r.text
    [item] = r.json()["items"]
    return float(parse_quantity(item["value"]))


def test_queue_depth_through_the_api_rises_under_search_load_and_falls_after(scaler, pki, collection):
    wait_until(lambda: api_value(scaler, pki, "milvus_search_queue_depth") == 0, 30, "idle queue depth of 0")
    seen = []
    with workload.SearchLoad(collection, threads=16, nq=50, nprobe=128) as load:
        time.sleep(2)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            seen.append(api_value(scaler, pki, "milvus_search_queue_depth"))
            time.sleep(0.1)
        during = kubectl_raw(pki.kubeconfig(scaler.api_port, "client"),
                             f"{BASE}/milvus_search_rate?labelSelector=milvus%3Ddemo")
    assert load.completed > 20 and not load.errors, (load.completed, load.errors[:3])
    assert max(v for v in seen if v is not None) > 0, f"queue depth never rose through the API: {seen}"
    assert during.returncode == 0, during.stderr
    [rate] = json.loads(during.stdout)["items"]
    assert float(parse_quantity(rate["value"])) > 0 and rate["window"] == 10, rate
    # After the load: back to zero through the API, and it agrees with the telemetry.
    wait_until(lambda: api_value(scaler, pki, "milvus_search_queue_depth") == 0, 30, "queue depth back to 0")
    assert scaler_signal(scaler, "demo", "search_queue_depth") == 0
    loaded = api_value(scaler, pki, "milvus_loaded_entities")
    assert loaded == scaler_signal(scaler, "demo", "loaded_entities") == 20_000
