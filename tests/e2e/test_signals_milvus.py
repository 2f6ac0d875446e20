"""Signals from a real Milvus 2.3.5: they rise under a real search load and an index build, fall
after, and turn unknown (never zero) when Milvus dies, while `serve` keeps running."""
from __future__ import annotations

import time

import numpy as np
import pytest
from pymilvus import Collection, CollectionSchema, DataType, FieldSchema, utility

from harness import workload
from harness.procs import http_ok, wait_until
from harness.services import Scaler, scaler_reading, scaler_signal

STALE_AFTER = 5


@pytest.fixture(scope="module")
def scaler(milvus):
    s = Scaler({
        "milvus": [{"name": "demo", "namespace": "default",
                    "scrape": {"targets": [milvus.metrics_url], "interval": "1s"}}],
        "signals": {"window": "10s", "stale_after": f"{STALE_AFTER}s"},
    })
    yield s
    s.stop()


@pytest.fixture(scope="module")
def collection(milvus):
    workload.connect(milvus.uri)
    return workload.create_collection("signals_e2e", rows=20_000)


def watch(scaler, signal, seconds, every=0.25):
    """Samples a signal for `seconds`; returns the list of values (None = unknown)."""
    values = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        values.append(scaler_signal(scaler, "demo", signal))
        time.sleep(every)
    return values


def test_loaded_data_is_reported(scaler, collection):
    entities = wait_until(lambda: (scaler_signal(scaler, "demo", "loaded_entities") or 0) >= 20_000, 60,
                          "loaded_entities to reach 20000")
    assert entities
    assert scaler_signal(scaler, "demo", "loaded_entities") == 20_000
    # Milvus 2.3.5 updates entity_size on its own timer, a while after the load.
    wait_until(lambda: (scaler_signal(scaler, "demo", "loaded_bytes") or 0) > 20_000 * workload.DIM * 4 * 0.9, 120,
               "loaded_bytes to cover the loaded vectors")


def test_search_load_raises_queue_rate_and_latency_then_they_fall(scaler, collection):
    wait_until(lambda: scaler_signal(scaler, "demo", "search_rate") == 0.0, 30, "idle search rate of 0")
    with workload.SearchLoad(collection, threads=16, nq=50, nprobe=128) as load:
        time.sleep(3)
        rates = watch(scaler, "search_rate", 8)
        queue = watch(scaler, "search_queue_depth", 6, every=0.1)
        p50 = scaler_signal(scaler, "demo", "search_latency_p50_seconds")
        p99 = scaler_signal(scaler, "demo", "search_latency_p99_seconds")
    assert load.completed > 20, f"the load ran: {load.completed} searches, errors {load.errors[:3]}"
    assert not load.errors, load.errors[:3]
    assert max(r for r in rates if r is not None) > 1.0, rates
    assert max(q for q in queue if q is not None) > 0, f"queue depth never rose: {queue}"
    assert p50 is not None and p99 is not None and 0 < p50 <= p99, (p50, p99)
    # After the window has passed, nothing is queued and no searches complete.
    wait_until(lambda: scaler_signal(scaler, "demo", "search_rate") == 0.0, 30, "search rate back to 0")
    assert scaler_signal(scaler, "demo", "search_queue_depth") == 0
    wait_until(lambda: scaler_signal(scaler, "demo", "search_latency_p99_seconds") == 0.0, 30, "p99 back to 0")


def test_index_build_shows_pending_then_returns_to_zero(scaler, milvus, collection):
    assert scaler_signal(scaler, "demo", "index_pending_builds") == 0
    schema = CollectionSchema([FieldSchema("id", DataType.INT64, is_primary=True),
                               FieldSchema("vec", DataType.FLOAT_VECTOR, dim=128)])
    coll = Collection("index_e2e", schema)
    rng = np.random.default_rng(7)
    for start in range(0, 60_000, 20_000):
        coll.insert([list(range(start, start + 20_000)), rng.random((20_000, 128), dtype=np.float32)])
    coll.flush()
    coll.create_index("vec", {"index_type": "HNSW", "metric_type": "L2", "params": {"M": 16, "efConstruction": 200}})
    seen = wait_until(lambda: (scaler_signal(scaler, "demo", "index_pending_builds") or 0) > 0, 30,
                      "index_pending_builds > 0 while the build is queued")
    assert seen
    utility.wait_for_index_building_complete("index_e2e")
    wait_until(lambda: scaler_signal(scaler, "demo", "index_pending_builds") == 0, 30,
               "index_pending_builds back to 0 after the build")


def test_killed_milvus_makes_signals_unknown_and_serve_survives(scaler, milvus, collection):
    assert scaler_signal(scaler, "demo", "search_queue_depth") is not None
    milvus.kill()
    signals = ("search_queue_depth", "search_rate", "loaded_entities", "index_pending_builds")
    served_ages: list[float] = []

    def all_unknown() -> bool:
        # Until a signal turns unknown, what is still served must be younger than stale_after:
        # the scaler never hands out a value older than it was told to trust.
        readings = [scaler_reading(scaler, "demo", s) for s in signals]
        served_ages.extend(age for known, _, age in readings if known and age is not None)
        return all(known is False for known, _, _ in readings)

    # A liveness deadline (generous for a busy machine), not a speed target.
    wait_until(all_unknown, STALE_AFTER + 30, "every signal to turn unknown")
    assert all(age <= STALE_AFTER for age in served_ages), f"served a stale reading: ages {sorted(served_ages)[-3:]}"
    time.sleep(2)
    assert scaler.service.alive(), "serve must keep running when Milvus is down"
    assert http_ok(f"{scaler.telemetry}/healthz")
    assert f'milvus_scaler_target_up{{target="{milvus.metrics_url}"}} 0' in scaler.metrics_text()
    assert scaler.stop() == 0, "serve exits cleanly (0) on SIGTERM"
