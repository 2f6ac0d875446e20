"""Our latency quantiles equal real Prometheus's `histogram_quantile` on the same data, including
across a counter reset; and the PromQL source (`prometheus:` in the config) serves the same signals."""
from __future__ import annotations

import math
import time

import pytest

from harness.exporter import StaticExporter, fixture, with_metric
from harness.procs import wait_until
from harness.services import Prometheus, Scaler, scaler_signal

WINDOW = 10
QUANTILES = {"search_latency_p50_seconds": 0.5, "search_latency_p90_seconds": 0.9,
             "search_latency_p99_seconds": 0.99}
# Added observations per bucket (non-cumulative) for the step, by `le` in milliseconds.
STEP = {16: 3, 32: 40, 64: 220, 128: 90, 256: 31, 512: 12, 1024: 4, 2048: 2, 4096: 1}


def stepped(body: str, step: dict[int, int]) -> str:
    def add(value, line):
        le = line.split('le="', 1)[1].split('"', 1)[0]
        bound = math.inf if le == "+Inf" else float(le)
        return value + sum(n for b, n in step.items() if b <= bound)
    body = with_metric(body, "milvus_proxy_sq_latency_bucket", 'query_type="search"', add)
    total = sum(step.values())
    body = with_metric(body, "milvus_proxy_req_count", 'function_name="Search"', lambda v, _: v + total)
    return body


@pytest.fixture
def stack():
    base = fixture("milvus-2.3.5-metrics-under-load.prom")
    exporter = StaticExporter(base)
    prom = Prometheus([{"job_name": "milvus", "scrape_interval": "1s",
                        "static_configs": [{"targets": [f"127.0.0.1:{exporter.port}"]}]}], scrape_interval="1s")
    scaler = Scaler({
        "milvus": [
            {"name": "direct", "scrape": {"targets": [exporter.url], "interval": "1s"}},
            {"name": "viaprom", "prometheus": {"url": prom.url, "selector": 'job="milvus"', "interval": "1s"}},
        ],
        "signals": {"window": f"{WINDOW}s", "stale_after": "5s"},
    })
    yield exporter, prom, scaler, base
    scaler.stop()
    prom.stop()
    exporter.stop()


def prom_has_samples(prom: Prometheus, n: int) -> bool:
    result = prom.query('count_over_time(up{job="milvus"}[30s])')
    up = prom.query('up{job="milvus"}')
    return bool(result and up) and int(float(result[0]["value"][1])) >= n and up[0]["value"][1] == "1"


def prom_quantile(prom: Prometheus, q: float) -> float:
    result = prom.query(f'histogram_quantile({q}, sum by (le) (rate(milvus_proxy_sq_latency_bucket'
                        f'{{query_type="search"}}[{WINDOW}s]))) / 1000')
    assert result, "Prometheus returned no series"
    return float(result[0]["value"][1])


def ours(scaler, instance, signal):
    return scaler_signal(scaler, instance, signal)


def compare(prom, scaler):
    """Reads both sides twice and requires they agree on the same read (both windows stable)."""
    for _ in range(20):
        mine = {s: ours(scaler, "direct", s) for s in QUANTILES}
        theirs = {s: prom_quantile(prom, q) for s, q in QUANTILES.items()}
        again = {s: ours(scaler, "direct", s) for s in QUANTILES}
        if mine == again and all(v is not None for v in mine.values()) and \
                all(math.isclose(mine[s], theirs[s], rel_tol=1e-9) for s in QUANTILES):
            return mine, theirs
        time.sleep(0.5)
    raise AssertionError(f"quantiles disagree: ours {mine} vs Prometheus {theirs}")


def test_quantiles_match_prometheus_and_survive_a_reset(stack):
    exporter, prom, scaler, base = stack
    wait_until(lambda: ours(scaler, "direct", "search_rate") == 0.0, 30, "a steady baseline")
    wait_until(lambda: prom_has_samples(prom, 3), 30, "Prometheus to scrape the exporter 3 times")
    after_step = stepped(base, STEP)
    exporter.set(after_step)
    time.sleep(3)
    mine, theirs = compare(prom, scaler)
    # Sanity: the step's median is in the (32,64] ms bucket.
    assert 0.032 < mine["search_latency_p50_seconds"] <= 0.064, mine

    # A restart: counters fall back to a small fresh histogram. Both must count only the new data.
    restart = stepped(with_metric(with_metric(base, "milvus_proxy_sq_latency_bucket", "", lambda v, _: 0.0),
                                  "milvus_proxy_req_count", 'function_name="Search"', lambda v, _: 0.0),
                      {1024: 10, 2048: 10})
    time.sleep(WINDOW + 2)  # the first step leaves both windows
    exporter.set(restart)
    time.sleep(3)
    mine, theirs = compare(prom, scaler)
    assert mine["search_latency_p50_seconds"] > 0.5, f"only the post-restart slow searches count: {mine}"
    rate = ours(scaler, "direct", "search_rate")
    assert rate is not None and rate > 0, "no negative or unknown rate across a reset"


def test_promql_source_serves_the_same_signals(stack):
    exporter, prom, scaler, base = stack
    wait_until(lambda: ours(scaler, "viaprom", "loaded_entities") is not None, 30, "PromQL source values")
    for signal in ("loaded_entities", "loaded_bytes", "index_pending_builds", "search_queue_depth",
                   "search_inflight", "search_inflight_node_max"):
        assert ours(scaler, "viaprom", signal) == ours(scaler, "direct", signal), signal
    # The capture's query node (node_id 3) is idle: a known 0 through both sources, not unknown.
    assert ours(scaler, "viaprom", "search_inflight") == 0
    assert ours(scaler, "viaprom", "loaded_entities") == 250_000
    assert ours(scaler, "viaprom", "index_pending_builds") == 1
    # Prometheus down: the PromQL source reports unknown, never zero.
    prom.stop()
    wait_until(lambda: ours(scaler, "viaprom", "loaded_entities") is None, 30, "unknown once Prometheus is gone")
    assert ours(scaler, "direct", "loaded_entities") == 250_000
