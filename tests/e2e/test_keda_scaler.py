"""KEDA external scaler over real sockets, from a client generated independently of the server code
(grpcio-tools stubs compiled from proto/externalscaler.proto at test time, and grpcurl through
server reflection). The Milvus metrics come from a static endpoint serving a real 2.3.5 capture with
the unissued index task count switchable (fault injection; the real-Milvus tests are in
test_keda_milvus.py)."""
from __future__ import annotations

import json
import subprocess
import threading
import time

import grpc
import pytest

from harness.keda import KedaScaler, StaticMetrics, make_certs, scaled_object, stubs
from harness.procs import wait_until
from harness.services import run_dir, tool

GOOD = {"milvus": "demo", "signal": "index_pending_builds", "target": "2",
        "scalerAddress": "milvus-scaler.milvus-scaler.svc:9090"}


@pytest.fixture(scope="module")
def pb():
    return stubs()


@pytest.fixture(scope="module")
def metrics():
    m = StaticMetrics(pending=0)
    yield m
    m.stop()


@pytest.fixture(scope="module")
def scaler(metrics):
    s = KedaScaler(metrics.url, keepalive="1s")
    yield s
    s.stop()


@pytest.fixture
def client(pb, scaler):
    pb2, pb2_grpc = pb
    channel = grpc.insecure_channel(scaler.address)
    yield pb2, pb2_grpc.ExternalScalerStub(channel)
    channel.close()


def wait_known(stub, pb2, timeout=15):
    def ok():
        try:
            stub.GetMetrics(pb2.GetMetricsRequest(scaledObjectRef=scaled_object(pb2, GOOD),
                                                  metricName="milvus_index_pending_builds"), timeout=2)
            return True
        except grpc.RpcError:
            return False
    wait_until(ok, timeout, "the signal to become known")


def test_every_rpc(client, metrics):
    pb2, stub = client
    metrics.set_pending(0)
    wait_known(stub, pb2)
    spec = stub.GetMetricSpec(scaled_object(pb2, GOOD), timeout=5)
    assert [(s.metricName, s.targetSize, s.targetSizeFloat) for s in spec.metricSpecs] == \
        [("milvus_index_pending_builds", 2, 2.0)]
    # Collection-scoped spec carries the collection in the name.
    spec = stub.GetMetricSpec(scaled_object(pb2, GOOD, collection="470691242109042850", target="0.5"), timeout=5)
    assert spec.metricSpecs[0].metricName == "milvus_index_pending_builds-470691242109042850"
    assert (spec.metricSpecs[0].targetSize, spec.metricSpecs[0].targetSizeFloat) == (1, 0.5)

    wait_until(lambda: stub.GetMetrics(pb2.GetMetricsRequest(
        scaledObjectRef=scaled_object(pb2, GOOD), metricName="milvus_index_pending_builds"),
        timeout=2).metricValues[0].metricValueFloat == 1.0, 10, "pending = 1 (in-progress in the capture)")
    assert stub.IsActive(scaled_object(pb2, GOOD), timeout=5).result is True
    assert stub.IsActive(scaled_object(pb2, GOOD, activationTarget="1"), timeout=5).result is False

    metrics.set_pending(5)
    for name in ("milvus_index_pending_builds", "s0-milvus_index_pending_builds", "s3-milvus_index_pending_builds"):
        v = wait_until(lambda: (r := stub.GetMetrics(pb2.GetMetricsRequest(
            scaledObjectRef=scaled_object(pb2, GOOD), metricName=name), timeout=2).metricValues[0])
            .metricValueFloat == 6.0 and r, 10, f"GetMetrics {name} = 6")
        assert (v.metricName, v.metricValue, v.metricValueFloat) == ("milvus_index_pending_builds", 6, 6.0)
    per_collection = stub.GetMetrics(pb2.GetMetricsRequest(
        scaledObjectRef=scaled_object(pb2, GOOD, collection="470691242109042850"),
        metricName="s1-milvus_index_pending_builds-470691242109042850"), timeout=5)
    assert per_collection.metricValues[0].metricValueFloat == 6.0

    stream = stub.StreamIsActive(scaled_object(pb2, GOOD, activationTarget="3"), timeout=30)
    first = next(stream)
    assert first.result is True
    metrics.set_pending(0)
    changed = next(stream)  # pushed on the change (1 in progress <= 3)
    assert changed.result is False
    repeat = next(stream)  # keep-alive repeat (1 s)
    assert repeat.result is False
    stream.cancel()
    metrics.set_pending(0)


BAD = [
    ({"milvus": None}, "milvus"),
    ({"milvus": ""}, "milvus"),
    ({"milvus": "nope"}, "milvus"),
    ({"signal": None}, "signal"),
    ({"signal": "queue_length"}, "signal"),
    ({"target": None}, "target"),
    ({"target": "eight"}, "target"),
    ({"target": "0"}, "target"),
    ({"target": "-1"}, "target"),
    ({"target": "NaN"}, "target"),
    ({"activationTarget": "high"}, "activationTarget"),
    ({"collection": "two words"}, "collection"),
]


def meta_with(change: dict) -> dict:
    m = dict(GOOD)
    for k, v in change.items():
        if v is None:
            m.pop(k, None)
        else:
            m[k] = v
    return m


@pytest.mark.parametrize("change,key", BAD, ids=[f"{k}-{list(c.values())[0]}" for c, k in BAD])
def test_bad_metadata_is_invalid_argument_naming_the_key(client, change, key):
    pb2, stub = client
    so = scaled_object(pb2, meta_with(change))
    calls = {
        "IsActive": lambda: stub.IsActive(so, timeout=5),
        "GetMetricSpec": lambda: stub.GetMetricSpec(so, timeout=5),
        "GetMetrics": lambda: stub.GetMetrics(pb2.GetMetricsRequest(scaledObjectRef=so,
                                                                   metricName="milvus_index_pending_builds"), timeout=5),
        "StreamIsActive": lambda: next(stub.StreamIsActive(so, timeout=5)),
    }
    for method, call in calls.items():
        with pytest.raises(grpc.RpcError) as e:
            call()
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, e.value)
        assert f'"{key}"' in e.value.details(), (method, e.value.details())


def test_wrong_metric_name_is_invalid_argument(client):
    pb2, stub = client
    with pytest.raises(grpc.RpcError) as e:
        stub.GetMetrics(pb2.GetMetricsRequest(scaledObjectRef=scaled_object(pb2, GOOD),
                                              metricName="milvus_search_rate"), timeout=5)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "metricName" in e.value.details()


def test_unknown_collection_is_unavailable_not_zero(client):
    pb2, stub = client
    with pytest.raises(grpc.RpcError) as e:
        stub.GetMetrics(pb2.GetMetricsRequest(scaledObjectRef=scaled_object(pb2, GOOD, collection="123"),
                                              metricName="milvus_index_pending_builds-123"), timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "123" in e.value.details()


def test_stream_metric_spec_is_unimplemented(pb, scaler):
    pb2, _ = pb
    channel = grpc.insecure_channel(scaler.address)
    call = channel.unary_stream("/externalscaler.ExternalScaler/StreamMetricSpec",
                                request_serializer=pb2.ScaledObjectRef.SerializeToString,
                                response_deserializer=pb2.GetMetricSpecResponse.FromString)
    with pytest.raises(grpc.RpcError) as e:
        next(call(scaled_object(pb2, GOOD), timeout=5))
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    channel.close()


def test_health_and_reflection_with_grpcurl(scaler):
    grpcurl = tool("grpcurl")
    listed = subprocess.run([grpcurl, "-plaintext", scaler.address, "list"], capture_output=True, text=True,
                            timeout=30)
    assert listed.returncode == 0, listed.stderr
    services = set(listed.stdout.split())
    assert {"externalscaler.ExternalScaler", "grpc.health.v1.Health"} <= services, services
    described = subprocess.run([grpcurl, "-plaintext", scaler.address, "describe", "externalscaler.MetricValue"],
                               capture_output=True, text=True, timeout=30)
    assert described.returncode == 0, described.stderr
    assert "double metricValueFloat = 3;" in described.stdout, described.stdout
    health = subprocess.run([grpcurl, "-plaintext", "-d", '{"service": "externalscaler.ExternalScaler"}',
                             scaler.address, "grpc.health.v1.Health/Check"], capture_output=True, text=True, timeout=30)
    assert health.returncode == 0, health.stderr
    assert json.loads(health.stdout)["status"] == "SERVING"
    # A call through reflection alone (no proto file on the client side).
    got = subprocess.run([grpcurl, "-plaintext", "-d", json.dumps({"scalerMetadata": GOOD}), scaler.address,
                          "externalscaler.ExternalScaler/GetMetricSpec"], capture_output=True, text=True, timeout=30)
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["metricSpecs"][0]["metricName"] == "milvus_index_pending_builds"


def test_reflection_v1_is_served(scaler):
    """grpcurl 1.8.6 speaks only v1alpha; ask the v1 service directly with a hand-encoded
    ServerReflectionRequest{list_services: ""} (field 7, empty string) and look for our service."""
    channel = grpc.insecure_channel(scaler.address)
    for version in ("v1", "v1alpha"):
        call = channel.stream_stream(f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
                                     request_serializer=lambda b: b, response_deserializer=lambda b: b)
        raw = next(call(iter([b"\x3a\x00"]), timeout=10))
        assert b"externalscaler.ExternalScaler" in raw, (version, raw)
        assert b"grpc.health.v1.Health" in raw, (version, raw)
    channel.close()


def test_per_rpc_metrics_on_telemetry(client, scaler):
    pb2, stub = client
    stub.GetMetricSpec(scaled_object(pb2, GOOD), timeout=5)
    text = scaler.metrics_text()
    assert 'milvus_scaler_grpc_requests_total{method="GetMetricSpec",code="OK"}' in text
    assert 'milvus_scaler_grpc_requests_total{method="IsActive",code="INVALID_ARGUMENT"}' in text
    assert "milvus_scaler_grpc_request_duration_seconds" in text
    assert 'milvus_scaler_keda_push_messages_total{active="false"}' in text


def test_hundred_streams_opened_and_dropped_leave_nothing_behind(pb, scaler):
    pb2, pb2_grpc = pb
    channel = grpc.insecure_channel(scaler.address)
    stub = pb2_grpc.ExternalScalerStub(channel)
    # Warm up allocator and connection, then measure.
    for _ in range(2):
        warm = [stub.StreamIsActive(scaled_object(pb2, GOOD), timeout=60) for _ in range(100)]
        for s in warm:
            next(s)
        for s in warm:
            s.cancel()
        wait_until(lambda: scaler.gauge("milvus_scaler_keda_active_streams") == 0, 30, "streams closed")
    rss_before, threads_before = scaler.rss_kib(), scaler.threads()
    for _round in range(3):
        streams = [stub.StreamIsActive(scaled_object(pb2, GOOD), timeout=60) for _ in range(100)]
        for s in streams:
            next(s)
        assert scaler.gauge("milvus_scaler_keda_active_streams") == 100
        for s in streams:
            s.cancel()
        wait_until(lambda: scaler.gauge("milvus_scaler_keda_active_streams") == 0, 10,
                   "active streams gauge back to 0 after the clients went away")
    channel.close()
    rss_after, threads_after = scaler.rss_kib(), scaler.threads()
    assert threads_after == threads_before, (threads_before, threads_after)
    assert rss_after - rss_before < 4096, f"RSS grew from {rss_before} KiB to {rss_after} KiB"


def test_source_down_gives_unavailable_and_ends_streams(pb):
    pb2, pb2_grpc = pb
    m = StaticMetrics(pending=2)
    s = KedaScaler(m.url, stale_after="2s")
    channel = grpc.insecure_channel(s.address)
    stub = pb2_grpc.ExternalScalerStub(channel)
    try:
        wait_known(stub, pb2)
        stream = stub.StreamIsActive(scaled_object(pb2, GOOD), timeout=60)
        assert next(stream).result is True
        m.set_down(True)

        def unavailable():
            try:
                stub.IsActive(scaled_object(pb2, GOOD), timeout=2)
                return False
            except grpc.RpcError as e:
                return e.code() == grpc.StatusCode.UNAVAILABLE and e
        err = wait_until(unavailable, 30, "IsActive UNAVAILABLE with the source down")
        assert "unknown" in err.details() or "stale" in err.details(), err.details()
        with pytest.raises(grpc.RpcError) as e:
            stub.GetMetrics(pb2.GetMetricsRequest(scaledObjectRef=scaled_object(pb2, GOOD),
                                                  metricName="milvus_index_pending_builds"), timeout=5)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.RpcError) as e:
            for msg in stream:
                assert msg.result is True, "no made-up inactivity while blind"
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        channel.close()
        s.stop()
        m.stop()


def test_tls_and_mtls(pb):
    pb2, pb2_grpc = pb
    certs = make_certs(run_dir("keda-certs"))
    m = StaticMetrics(pending=0)
    read = lambda p: p.read_bytes()  # noqa: E731
    try:
        # TLS only.
        s = KedaScaler(m.url, tls={"cert_file": certs["server"], "key_file": certs["server_key"]})
        try:
            creds = grpc.ssl_channel_credentials(root_certificates=read(certs["ca"]))
            with grpc.secure_channel(s.address, creds) as ch:
                stub = pb2_grpc.ExternalScalerStub(ch)
                spec = stub.GetMetricSpec(scaled_object(pb2, GOOD), timeout=10)
                assert spec.metricSpecs[0].metricName == "milvus_index_pending_builds"
            with grpc.insecure_channel(s.address) as ch:
                with pytest.raises(grpc.RpcError) as e:
                    pb2_grpc.ExternalScalerStub(ch).GetMetricSpec(scaled_object(pb2, GOOD), timeout=5)
                assert e.value.code() == grpc.StatusCode.UNAVAILABLE  # plaintext refused by a TLS server
        finally:
            s.stop()
        # mTLS.
        s = KedaScaler(m.url, tls={"cert_file": certs["server"], "key_file": certs["server_key"],
                                   "client_ca_file": certs["ca"]})
        try:
            good = grpc.ssl_channel_credentials(read(certs["ca"]), read(certs["client_key"]), read(certs["client"]))
            with grpc.secure_channel(s.address, good) as ch:
                stub = pb2_grpc.ExternalScalerStub(ch)
                assert stub.GetMetricSpec(scaled_object(pb2, GOOD), timeout=10).metricSpecs
                wait_known(stub, pb2)
                assert stub.IsActive(scaled_object(pb2, GOOD), timeout=5).result is True
                stream = stub.StreamIsActive(scaled_object(pb2, GOOD), timeout=10)
                assert next(stream).result is True
                stream.cancel()
            for label, creds in (
                ("no client certificate", grpc.ssl_channel_credentials(read(certs["ca"]))),
                ("client certificate from another CA",
                 grpc.ssl_channel_credentials(read(certs["ca"]), read(certs["rogue_key"]), read(certs["rogue"]))),
            ):
                with grpc.secure_channel(s.address, creds) as ch:
                    with pytest.raises(grpc.RpcError) as e:
                        pb2_grpc.ExternalScalerStub(ch).GetMetricSpec(scaled_object(pb2, GOOD), timeout=5)
                    assert e.value.code() == grpc.StatusCode.UNAVAILABLE, label
            # grpcurl with the client certificate, through reflection.
            out = subprocess.run([tool("grpcurl"), "-cacert", str(certs["ca"]), "-cert", str(certs["client"]),
                                  "-key", str(certs["client_key"]), "-d", json.dumps({"scalerMetadata": GOOD}),
                                  s.address, "externalscaler.ExternalScaler/IsActive"],
                                 capture_output=True, text=True, timeout=30)
            assert out.returncode == 0, out.stderr
            assert json.loads(out.stdout).get("result") is True
        finally:
            s.stop()
    finally:
        m.stop()


def test_bad_tls_file_fails_start_naming_the_key(tmp_path):
    from harness.services import Scaler, cargo_bin  # noqa: F401

    import yaml

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({
        "milvus": [{"name": "demo", "scrape": {"targets": ["http://127.0.0.1:1/metrics"]}}],
        "telemetry": {"listen": "127.0.0.1:0"},
        "keda": {"listen": "127.0.0.1:0", "tls": {"cert_file": str(tmp_path / "missing.pem"),
                                                   "key_file": str(tmp_path / "missing.key")}},
    }))
    out = subprocess.run([cargo_bin("milvus-scaler"), "serve", "--config", str(cfg)], capture_output=True,
                         text=True, timeout=30)
    # A configuration error, like every other (crates/milvus-scaler/tests/cli.rs has every way to break a file).
    assert out.returncode == 2, out.stderr
    assert f"keda.tls.cert_file: {tmp_path / 'missing.pem'}" in out.stderr, out.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(cfg.read_text().replace("listen: 127.0.0.1:0\n  tls", "lisen: 127.0.0.1:0\n  tls"))
    out = subprocess.run([cargo_bin("milvus-scaler"), "check-config", "--config", str(bad)], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 2, out.stderr
    assert "keda" in out.stderr and "lisen" in out.stderr, out.stderr


def test_crossing_is_pushed_on_the_open_stream(pb, metrics, scaler):
    """A crossing reaches an open StreamIsActive with no poll. How fast is a `make bench` figure
    (push latency), not a pass/fail here: this machine is shared and noisy."""
    pb2, pb2_grpc = pb
    with grpc.insecure_channel(scaler.address) as ch:
        stub = pb2_grpc.ExternalScalerStub(ch)
        metrics.set_pending(0)
        wait_until(lambda: stub.IsActive(scaled_object(pb2, GOOD, activationTarget="1"), timeout=2).result is False,
                   10, "inactive")
        stream = stub.StreamIsActive(scaled_object(pb2, GOOD, activationTarget="1"), timeout=30)
        assert next(stream).result is False
        got = {}

        def reader():
            for msg in stream:
                if msg.result:
                    got["at"] = time.monotonic()
                    return
        t = threading.Thread(target=reader, daemon=True)
        t.start()
        metrics.set_pending(3)
        t.join(timeout=10)
        stream.cancel()
        assert "at" in got, "no push after the crossing"
        assert got["at"] > metrics.changed_at, "a `true` before the crossing"
        print(f"pushed {got['at'] - metrics.changed_at:.3f}s after the crossing (1 s scrape interval)")
        metrics.set_pending(0)


def test_sigterm_with_open_streams_ends_them_and_exits_cleanly(pb):
    pb2, pb2_grpc = pb
    m = StaticMetrics(pending=0)
    s = KedaScaler(m.url)
    channel = grpc.insecure_channel(s.address)
    opened = [channel]
    try:
        stub = pb2_grpc.ExternalScalerStub(channel)
        wait_known(stub, pb2)
        # An idle connection (KEDA keeps its channel open between polls) must not hold up shutdown.
        idle = grpc.insecure_channel(s.address)
        opened.append(idle)
        pb2_grpc.ExternalScalerStub(idle).IsActive(scaled_object(pb2, GOOD), timeout=5)
        streams = [stub.StreamIsActive(scaled_object(pb2, GOOD), timeout=60) for _ in range(5)]
        for st in streams:
            next(st)
        # The streams would stay open for 60 s and the idle channel for ever: an exit at all (well
        # inside the stop's own deadline) shows shutdown did not wait on them.
        code = s.stop()
        assert code == 0, f"exit code {code}; log:\n{s.service.tail()}"
        for st in streams:
            rest = list(st)  # ends without an error once the server stops
            assert all(isinstance(x.result, bool) for x in rest), rest
            assert st.code() == grpc.StatusCode.OK, st.code()
    finally:
        for c in opened:
            c.close()
        s.stop()
        m.stop()


def test_idle_histogram_series_are_forgotten_gauges_stay(pb):
    """`telemetry.forget_idle_series_after`: a histogram series nothing records any more (an RPC
    called once; in production, the scrape durations of pods that are gone) leaves /metrics, while
    the scrape histogram still recorded every round and the gauges stay."""
    pb2, pb2_grpc = pb
    m = StaticMetrics(pending=0)
    s = KedaScaler(m.url, telemetry={"forget_idle_series_after": "4s"})
    try:
        with grpc.insecure_channel(s.address) as ch:
            stub = pb2_grpc.ExternalScalerStub(ch)
            wait_known(stub, pb2)
            stub.GetMetricSpec(scaled_object(pb2, GOOD), timeout=5)
            stream = stub.StreamIsActive(scaled_object(pb2, GOOD), timeout=30)
            next(stream)
            stream.cancel()
        spec = 'milvus_scaler_grpc_request_duration_seconds_count{method="GetMetricSpec"}'
        assert spec in s.metrics_text()
        wait_until(lambda: spec not in s.metrics_text(), 30, "the idle GetMetricSpec series to be forgotten")
        text = s.metrics_text()
        assert f'milvus_scaler_scrape_duration_seconds_count{{target="{m.url}"}}' in text, text[-2000:]
        assert s.gauge("milvus_scaler_keda_active_streams") == 0
        assert 'milvus_scaler_signal_known{' in text
    finally:
        s.stop()
        m.stop()
