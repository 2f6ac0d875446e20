"""The external metrics API through `kubectl get --raw`, over real TLS with client certificates from
a test front-proxy CA (made with the openssl CLI): accepted with the front-proxy certificate,
refused without one, with another CN, and with a certificate from another CA. Values decode as
Kubernetes quantities (the `kubernetes` package's parse_quantity) equal to what the telemetry
reports. The Milvus side is a real capture served by http.server; see
test_external_metrics_milvus.py for a live Milvus.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
from kubernetes.utils import parse_quantity

from harness.kube import FrontProxyPki, StaticMetrics, kubectl_raw, scale_counters
from harness.procs import free_port, wait_until
from harness.services import Scaler, scaler_signal

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
BASE = "/apis/external.metrics.k8s.io/v1beta1"
QUEUE = f"{BASE}/namespaces/default/milvus_search_queue_depth?labelSelector=milvus%3Ddemo"


@pytest.fixture(scope="module")
def pki():
    return FrontProxyPki()


@pytest.fixture(scope="module")
def static_milvus():
    s = StaticMetrics(FIXTURES / "milvus-2.3.5-metrics-under-load.prom")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def scaler(pki, static_milvus):
    port = free_port()
    s = Scaler({
        "milvus": [{"name": "demo", "namespace": "default",
                    "scrape": {"targets": [static_milvus.url], "interval": "1s"}}],
        "signals": {"window": "10s", "stale_after": "5s"},
        "external_metrics": pki.external_metrics_config(port),
    })
    s.api_port = port
    wait_until(lambda: scaler_signal(s, "demo", "loaded_entities") is not None, 30, "first scrape round", proc=s.service)
    yield s
    s.stop()


def raw(pki, scaler, path, identity="client"):
    return kubectl_raw(pki.kubeconfig(scaler.api_port, identity), path)


def test_kubectl_reads_queue_depth_with_front_proxy_certificate(pki, scaler):
    out = raw(pki, scaler, QUEUE)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["kind"] == "ExternalMetricValueList"
    assert doc["apiVersion"] == "external.metrics.k8s.io/v1beta1"
    [item] = doc["items"]
    assert item["metricName"] == "milvus_search_queue_depth"
    assert item["metricLabels"] == {"milvus": "demo"}
    assert item["timestamp"].endswith("Z")
    assert parse_quantity(item["value"]) == pytest.approx(scaler_signal(scaler, "demo", "search_queue_depth"))


def test_every_served_value_round_trips_through_kubernetes_parse_quantity(pki, scaler):
    checked = 0
    for signal in ("search_queue_depth", "loaded_entities", "loaded_bytes", "index_pending_builds",
                   "search_latency_p50_seconds", "search_latency_p99_seconds", "search_rate"):
        # Read the telemetry before and after the API call and use a read where both agree, so a
        # round published in between (e.g. the end of the rate warm-up) cannot race the check.
        for _ in range(10):
            before = scaler_signal(scaler, "demo", signal)
            out = raw(pki, scaler, f"{BASE}/namespaces/default/milvus_{signal}")
            expected = scaler_signal(scaler, "demo", signal)
            if before == expected:
                break
        else:
            raise AssertionError(f"{signal} never held still across one API call")
        if expected is None:
            # Unknown signals must be an error, never a value.
            assert out.returncode != 0 and "ServiceUnavailable" in out.stderr, out
            continue
        assert out.returncode == 0, (signal, out.stderr)
        [item] = json.loads(out.stdout)["items"]
        got = float(parse_quantity(item["value"]))
        assert got == pytest.approx(expected, rel=1e-9, abs=1e-9), (signal, item["value"], expected)
        checked += 1
    assert checked >= 3, "too few signals were known to check the round trip"


def test_discovery_through_kubectl(pki, scaler):
    out = raw(pki, scaler, BASE)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["kind"] == "APIResourceList"
    assert doc["resources"][0]["name"] == "externalmetrics"
    out = raw(pki, scaler, "/apis")
    assert json.loads(out.stdout)["groups"][0]["name"] == "external.metrics.k8s.io"


def test_refused_without_certificate_with_other_cn_and_with_wrong_ca(pki, scaler):
    anonymous = raw(pki, scaler, QUEUE, identity=None)
    assert anonymous.returncode != 0
    assert "You must be logged in" in anonymous.stderr and "client certificate" in anonymous.stderr, anonymous.stderr
    # Plain HTTPS without any credential: a 401 Status, not data.
    r = requests.get(f"https://127.0.0.1:{scaler.api_port}{QUEUE}", verify=pki.path("serving-ca.crt"), timeout=5)
    assert r.status_code == 401
    assert r.json()["reason"] == "Unauthorized" and r.json()["kind"] == "Status"
    other = raw(pki, scaler, QUEUE, identity="other-cn")
    assert other.returncode != 0
    assert "You must be logged in" in other.stderr and "someone-else" in other.stderr, other.stderr
    wrong = raw(pki, scaler, QUEUE, identity="wrong")
    assert wrong.returncode != 0
    assert wrong.stdout == ""
    # The handshake itself fails: no HTTP answer at all.
    # The server refuses the handshake: kubectl reports a transport failure (the TLS alert, or a
    # reset / broken pipe when the close overtakes the alert on the socket), never an HTTP answer.
    assert wrong.stdout == "", wrong.stdout
    assert "Unable to connect to the server" in wrong.stderr, wrong.stderr
    assert "You must be logged in" not in wrong.stderr, wrong.stderr


def test_errors_reach_kubectl_as_status(pki, scaler):
    bad = raw(pki, scaler, f"{BASE}/namespaces/default/milvus_search_queue_depth?labelSelector=milvus%20in%20(x")
    assert bad.returncode != 0 and "label selector" in bad.stderr, bad.stderr
    missing = raw(pki, scaler, f"{BASE}/namespaces/default/cpu")
    assert missing.returncode != 0 and "not served" in missing.stderr, missing.stderr
    empty = raw(pki, scaler, f"{BASE}/namespaces/elsewhere/milvus_search_queue_depth")
    assert empty.returncode == 0 and json.loads(empty.stdout)["items"] == []


def test_fractional_values_round_trip_through_parse_quantity(pki, static_milvus, scaler):
    """Makes the proxy's search counters and latency buckets advance (the capture's own traffic,
    once more), so rate and latency quantiles are fractional; each served quantity must parse back
    (kubernetes.utils.parse_quantity) to the telemetry's value within a nano."""
    base = (FIXTURES / "milvus-2.3.5-metrics-under-load.prom").read_text()
    static_milvus.set_body(scale_counters(base, "milvus_proxy_", 2.0))
    fractional = 0
    try:
        wait_until(lambda: (scaler_signal(scaler, "demo", "search_rate") or 0) > 0, 20, "search rate above 0")
        for signal in ("search_rate", "search_latency_p50_seconds", "search_latency_p90_seconds",
                       "search_latency_p99_seconds"):
            for _ in range(5):  # values move while the window slides; retry a racing pair of reads
                before = scaler_signal(scaler, "demo", signal)
                out = raw(pki, scaler, f"{BASE}/namespaces/default/milvus_{signal}")
                after = scaler_signal(scaler, "demo", signal)
                if before == after:
                    break
            assert out.returncode == 0, (signal, out.stderr)
            [item] = json.loads(out.stdout)["items"]
            got = parse_quantity(item["value"])
            assert float(got) == pytest.approx(after, abs=1e-9), (signal, item["value"], after)
            assert after > 0, (signal, after)
            if got != int(got):
                fractional += 1
                assert item["value"][-1] in "mun" or "e" in item["value"], item["value"]
    finally:
        static_milvus.set_body(base)
    assert fractional >= 1, "no fractional value was exercised"


def test_stale_source_is_503_never_zero(pki, static_milvus, scaler):
    """Stops the static endpoint: after stale_after the API answers 503, and recovers after."""
    assert raw(pki, scaler, QUEUE).returncode == 0
    static_milvus.stop()

    def unavailable():
        out = raw(pki, scaler, QUEUE)
        return out.returncode != 0 and "ServiceUnavailable" in out.stderr and out
    out = wait_until(unavailable, 30, "queue depth to turn unavailable")
    assert '"value"' not in out.stdout
    text = scaler.metrics_text()
    assert 'milvus_scaler_http_requests_total{route="/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}",code="503"}' in text
    assert 'milvus_scaler_http_requests_total{route="/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}",code="200"}' in text
    assert "milvus_scaler_http_request_duration_seconds" in text
