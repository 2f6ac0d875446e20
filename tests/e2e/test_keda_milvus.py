"""StreamIsActive against a real Milvus 2.3.5: inactive while no index build is pending, `true`
pushed within two scrape intervals of index_pending_builds turning positive, `false` after the
build; a stopped Milvus gives UNAVAILABLE (never a made-up inactivity)."""
from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest
from pymilvus import Collection, CollectionSchema, DataType, FieldSchema, utility

from harness import workload
from harness.keda import KedaScaler, scaled_object, stubs
from harness.procs import wait_until
from harness.services import scaler_signal

SCRAPE_INTERVAL = 1.0
META = {"milvus": "demo", "signal": "index_pending_builds", "target": "1", "activationTarget": "0"}


@pytest.fixture(scope="module")
def pb():
    return stubs()


@pytest.fixture(scope="module")
def scaler(milvus):
    s = KedaScaler(milvus.metrics_url, interval=f"{SCRAPE_INTERVAL:g}s", stale_after="5s", keepalive="5s")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def stub(pb, scaler):
    _, pb2_grpc = pb
    channel = grpc.insecure_channel(scaler.address)
    yield pb2_grpc.ExternalScalerStub(channel)
    channel.close()


def test_stream_follows_a_real_index_build(pb, scaler, stub, milvus):
    pb2, _ = pb
    workload.connect(milvus.uri)
    wait_until(lambda: scaler_signal(scaler, "demo", "index_pending_builds") == 0, 30,
               "index_pending_builds known and 0 before any build")
    schema = CollectionSchema([FieldSchema("id", DataType.INT64, is_primary=True),
                               FieldSchema("vec", DataType.FLOAT_VECTOR, dim=128)])
    if utility.has_collection("keda_e2e"):
        utility.drop_collection("keda_e2e")
    coll = Collection("keda_e2e", schema)
    rng = np.random.default_rng(11)
    for start in range(0, 60_000, 20_000):
        coll.insert([list(range(start, start + 20_000)), rng.random((20_000, 128), dtype=np.float32)])
    coll.flush()

    stream = stub.StreamIsActive(scaled_object(pb2, META), timeout=600)
    messages: list[tuple[float, bool]] = []
    failure: list[grpc.RpcError] = []

    def reader():
        try:
            for msg in stream:
                messages.append((time.monotonic(), msg.result))
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                failure.append(e)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    wait_until(lambda: messages, 30, "the first StreamIsActive message")
    assert messages[0][1] is False, "inactive before any index build"

    coll.create_index("vec", {"index_type": "HNSW", "metric_type": "L2", "params": {"M": 16, "efConstruction": 200}})
    wait_until(lambda: (scaler_signal(scaler, "demo", "index_pending_builds") or 0) > 0, 30,
               "index_pending_builds > 0 while the build is queued", interval=0.05)
    # Deadlines here are liveness bounds for a busy machine; push latency is measured by `make bench`.
    true_at = wait_until(lambda: next((at for at, r in messages if r), None), 30, "a pushed `true`")

    utility.wait_for_index_building_complete("keda_e2e")
    done = time.monotonic()
    # Pushed while the build was still running: KEDA learns of it without polling, in time to act.
    assert true_at < done, "`true` was only pushed after the index build had finished"
    false_at = wait_until(lambda: next((at for at, r in messages if at > true_at and not r), None), 30,
                          "a pushed `false` after the build")
    assert false_at > true_at
    assert scaler_signal(scaler, "demo", "index_pending_builds") == 0
    stream.cancel()
    t.join(timeout=10)
    assert not failure, failure
    # Activity flipped exactly once each way (keep-alive repeats aside).
    flips = [r for i, (_, r) in enumerate(messages) if i == 0 or r != messages[i - 1][1]]
    assert flips == [False, True, False], flips


def test_stopped_milvus_gives_unavailable(pb, scaler, stub, milvus):
    pb2, _ = pb
    assert stub.IsActive(scaled_object(pb2, META), timeout=5).result is False
    stream = stub.StreamIsActive(scaled_object(pb2, META), timeout=120)
    assert next(stream).result is False
    milvus.kill()

    def unavailable():
        try:
            stub.GetMetrics(pb2.GetMetricsRequest(scaledObjectRef=scaled_object(pb2, META),
                                                  metricName="milvus_index_pending_builds"), timeout=2)
            return False
        except grpc.RpcError as e:
            return e if e.code() == grpc.StatusCode.UNAVAILABLE else False
    err = wait_until(unavailable, 30, "GetMetrics UNAVAILABLE with Milvus stopped")
    assert "index_pending_builds" in err.details(), err.details()
    with pytest.raises(grpc.RpcError) as e:
        stub.IsActive(scaled_object(pb2, META), timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.RpcError) as e:
        for msg in stream:
            assert msg.result is False, "no activity change invented while blind"
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert scaler.service.alive()
