"""Live check of every dashboard query: Debian's Prometheus (2 s scrapes, our recording and alerting
rules loaded) scrapes a real Milvus 2.3.5 (storing in S3 on a moto server) under a real search and
query load, `milvus-scaler serve`, and the segment-cache sidecar when its binary is built.

Every panel query, template variable and rule is classified by the source of its metrics
(tests/harness/grafana.py). Queries on milvus and milvus-scaler (signals/telemetry) must return at
least one series; segment-cache queries too when the binary exists (S3 traffic of Milvus then goes
through it); the rest is listed as skipped with the reason: kube-state-metrics / cAdvisor (no
cluster here), milvus-scaler features not configured here, and Milvus 2.4+ names (each of those
panels must show its 2.3.5 sibling query).
"""
from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request

import pytest
import yaml

from harness import grafana as g
from harness import workload
from harness.procs import Service, free_port, http_ok, wait_until
from harness.services import Milvus, Moto, Prometheus, Scaler, cargo_bin, run_dir

SCRAPE = "2s"
# What Grafana's $__rate_interval becomes at a 2 s scrape interval, with margin for late scrapes.
RATE_INTERVAL = "20s"
INSTANCE = "demo"
BUCKET = "milvus-grafana"
COLLECTION = "grafana_live"


def segment_cache_binary() -> str | None:
    try:
        return cargo_bin("segment-cache")
    except RuntimeError:
        return None


try:  # the segment-cache branch's harness, once merged
    from harness.segment_cache import ACCESS_KEY as CACHE_ACCESS_KEY  # type: ignore
    from harness.segment_cache import SECRET_KEY as CACHE_SECRET_KEY  # type: ignore
    from harness.segment_cache import SegmentCache as HarnessSegmentCache  # type: ignore
except ImportError:
    HarnessSegmentCache = None
    CACHE_ACCESS_KEY = CACHE_SECRET_KEY = "testing"

# A small budget so that loading the collection evicts and the eviction panels have data; a warm
# pass over the bucket at start so the warm panels have data.
CACHE_CAPACITY = "8MiB"
CACHE_WARM = {"in_serve": True, "prefixes": ["files/"], "from_access_log": True}


def start_segment_cache(binary: str, moto: Moto):
    if HarnessSegmentCache is not None:
        return HarnessSegmentCache(moto.url, BUCKET, capacity=CACHE_CAPACITY, warm=CACHE_WARM)
    return SegmentCache(binary, moto)


class SegmentCache:
    """`segment-cache serve` in front of the moto bucket (config keys of crates/segment-cache);
    used until tests/harness/segment_cache.py is merged."""

    def __init__(self, binary: str, moto: Moto, capacity: str = CACHE_CAPACITY):
        self.dir = run_dir("segment-cache")
        self.port = free_port()
        self.telemetry_port = free_port()
        config = {
            "listen": f"127.0.0.1:{self.port}",
            "auth": {"access_key": CACHE_ACCESS_KEY, "secret_key": CACHE_SECRET_KEY},
            "upstream": {"endpoint_url": moto.url, "bucket": BUCKET, "access_key": "testing",
                         "secret_key": "testing", "region": "us-east-1"},
            "cache": {"dir": str(self.dir / "cache"), "capacity": capacity},
            "warm": CACHE_WARM,
            "telemetry": {"listen": f"127.0.0.1:{self.telemetry_port}"},
        }
        self.config_path = self.dir / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.service = Service("segment-cache", [binary, "serve", "--config", str(self.config_path)],
                               self.dir / "segment-cache.log", env={"RUST_LOG": "info", "AWS_CA_BUNDLE": ""})
        wait_until(lambda: http_ok(f"http://127.0.0.1:{self.telemetry_port}/healthz"), 30,
                   "segment-cache /healthz", proc=self.service)

    def stop(self) -> None:
        self.service.stop()


@pytest.fixture(scope="module")
def stack():
    started = []
    try:
        moto = Moto()
        started.append(moto)
        s3 = moto.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        # Objects already in the bucket, as after a query-node restart: the cache's warm pass at start
        # fetches them (the warm panels need a warm pass that moved bytes).
        for i in range(3):
            s3.put_object(Bucket=BUCKET, Key=f"files/warm-check/object-{i}", Body=bytes([i]) * (512 * 1024))
        binary = segment_cache_binary()
        cache = None
        if binary:
            cache = start_segment_cache(binary, moto)
            started.append(cache)
        if cache:
            s3 = {"port": cache.port, "bucket": BUCKET, "access_key": CACHE_ACCESS_KEY, "secret_key": CACHE_SECRET_KEY}
        else:
            s3 = {"port": moto.port, "bucket": BUCKET}
        milvus = Milvus(s3=s3)
        started.append(milvus)
        scaler = Scaler({
            "milvus": [{"name": INSTANCE, "namespace": "default",
                        "scrape": {"targets": [milvus.metrics_url], "interval": "1s"}}],
            "signals": {"window": "10s", "stale_after": "5s"},
        })
        started.append(scaler)
        target_labels = {"app_kubernetes_io_instance": INSTANCE, "namespace": "default"}
        scrape = [
            {"job_name": "milvus", "static_configs": [
                {"targets": [f"127.0.0.1:{milvus.metrics_port}"], "labels": target_labels}]},
            {"job_name": "milvus-scaler", "static_configs": [
                {"targets": [f"127.0.0.1:{scaler.telemetry_port}"]}]},
        ]
        if cache:
            scrape.append({"job_name": "segment-cache", "static_configs": [
                {"targets": [f"127.0.0.1:{cache.telemetry_port}"], "labels": target_labels}]})
        prom = Prometheus(scrape, scrape_interval=SCRAPE, rule_files=[str(f) for f in g.rule_files()])
        started.append(prom)
        yield {"milvus": milvus, "scaler": scaler, "prom": prom, "cache": cache}
    finally:
        for s in reversed(started):
            s.stop()


def query(prom: Prometheus, expr: str) -> list:
    return prom.query(expr)


def api(prom: Prometheus, path: str) -> dict:
    with urllib.request.urlopen(f"{prom.url}{path}", timeout=10) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return body["data"]


def classify(q: g.Query, cache_running: bool, scaler_metrics: str) -> str | None:
    """None when the query must return data here, else the reason it is skipped."""
    if q.panel.endswith("#annotation"):
        return "annotation: marks events (node-group changes); empty until one happens"
    if q.panel.endswith("#variable") and "kube_pod_info" in q.expr:
        return "kube-state-metrics: " + g.UNAVAILABLE["kube-state-metrics"]
    srcs = g.sources(q.expr)
    for src, reason in g.UNAVAILABLE.items():
        if src in srcs:
            return f"{src}: {reason}"
    if "segment-cache" in srcs and not cache_running:
        return ("segment-cache: binary not built in the cargo target dir "
                "(cargo build -p segment-cache; checked automatically once it exists)")
    feat = g.feature(q.expr)
    if feat:
        name, how = feat
        prefixes = [p for p, (n, _) in g.FEATURES.items() if n == name]
        if not any(f"\n{p}" in "\n" + scaler_metrics for p in prefixes):
            return f"milvus-scaler feature `{name}` not configured in this test; appears with {how}"
    event = g.on_event(q.expr)
    if event:
        return f"appears only after {event}"
    newer = g.newer_only(q.expr)
    if newer:
        return f"newer Milvus only ({newer}); this Milvus is 2.3.5"
    return None


@pytest.fixture(scope="module")
def collection(stack):
    """A collection inserted, flushed, indexed and loaded (through S3), with a few searches and queries."""
    workload.connect(stack["milvus"].uri)
    coll = workload.create_collection(COLLECTION, rows=20_000)
    for i in range(30):
        coll.query(expr=f"id in [{i}, {i + 100}]", output_fields=["id"])
        coll.search([[0.5] * workload.DIM], "vec", {"metric_type": "L2", "params": {"nprobe": 8}}, limit=3)
    return coll


def test_every_panel_query_returns_data(stack, collection):
    prom, scaler, cache = stack["prom"], stack["scaler"], stack["cache"]
    coll = collection
    with workload.SearchLoad(coll, threads=8, nq=20, nprobe=64) as load:
        # Enough scrapes during the load for every rate window (20 s) and recording rule to see it.
        wait_until(lambda: query(prom, 'sum(rate(milvus_proxy_req_count{function_name="Search",'
                                       f'status="total"}}[{RATE_INTERVAL}])) > 1'),
                   90, "Prometheus to see the search load")
        time.sleep(6)
        for i in range(10):
            coll.query(expr=f"id in [{i}]", output_fields=["id"])
        time.sleep(4)
        scaler_metrics = scaler.metrics_text()
        queries = g.panel_queries() + g.rule_queries()
        checked, skipped, empty = [], [], []
        for q in queries:
            reason = classify(q, cache is not None, scaler_metrics)
            if reason:
                skipped.append((q, reason))
                continue
            # One instance and one collection selected, as an operator would: proves the series carry
            # the labels the variables filter on (with "All" = .* a missing label would still match).
            result = query(prom, g.expand(q.expr, rate_interval=RATE_INTERVAL, range_="5m",
                                          milvus=INSTANCE, collection=COLLECTION))
            if q.where.startswith("alerts/"):
                continue  # alert expressions are *meant* to be empty on a healthy system; see rules test
            if q.panel.endswith("#variable"):
                var_label = _variable_label(q)
                values = {s["metric"].get(var_label) for s in result} - {None}
                (checked if values else empty).append((q, f"{len(values)} values of {var_label}"))
                continue
            (checked if result else empty).append((q, f"{len(result)} series"))
    assert load.completed > 20 and not load.errors, (load.completed, load.errors[:3])

    lines = [f"checked {len(checked)} queries with data, {len(empty)} without, skipped {len(skipped)}:"]
    lines += [f"  OK    {q.where} [{q.title}] {info}" for q, info in checked]
    lines += [f"  EMPTY {q.where} [{q.title}] {q.expr}" for q, _ in empty]
    lines += [f"  SKIP  {q.where} [{q.title}]: {reason}" for q, reason in skipped]
    report = "\n".join(lines)
    print(report)
    (prom.dir / "grafana-panels.txt").write_text(report + "\n")

    assert not empty, "panel queries without data on a live system:\n" + "\n".join(
        f"{q.where} [{q.title}]: {g.expand(q.expr, RATE_INTERVAL, milvus=INSTANCE, collection=COLLECTION)}"
        for q, _ in empty)
    # The required sources really were checked.
    checked_sources = set().union(*(g.sources(q.expr) for q, _ in checked))
    assert {"milvus", "milvus-scaler"} <= checked_sources
    if cache is not None:
        assert "segment-cache" in checked_sources
    assert len([q for q, _ in checked if not q.where.startswith(("recording/", "alerts/"))]) >= 60
    # Every skipped Milvus 2.4+ query sits in a panel whose 2.3.5 query was checked with data.
    checked_panels = {q.panel for q, _ in checked}
    for q, reason in skipped:
        if reason.startswith("newer Milvus"):
            assert q.panel in checked_panels, f"{q.where}: no 2.3.5 sibling query with data"
    # Skipped sources are only the ones that cannot run here.
    for q, reason in skipped:
        assert reason.split(":")[0] in g.UNAVAILABLE or reason.startswith(
            ("segment-cache", "milvus-scaler feature", "newer Milvus", "annotation", "appears only after")), reason


def _variable_label(q: g.Query) -> str:
    for name, d in g.dashboards().items():
        for v in d["templating"]["list"]:
            if v.get("type") == "query" and q.where == f"{name}#variable:{v['name']}":
                return v["definition"].rsplit(",", 1)[1].strip(" )")
    raise AssertionError(q.where)


def test_rules_load_and_evaluate_in_prometheus(stack, collection):
    """Prometheus loaded every group of grafana/ and evaluates each rule against live data without error."""
    prom = stack["prom"]
    want = {r.get("alert") or r.get("record") for r in g.rules()}

    def all_evaluated():
        groups = api(prom, "/api/v1/rules")["groups"]
        got = {r["name"]: r for grp in groups for r in grp["rules"]}
        return got if want <= set(got) and all(r.get("lastEvaluation", "").startswith("20") for r in got.values()) else None

    got = wait_until(all_evaluated, 30, "Prometheus to evaluate every rule")
    bad = {n: r.get("lastError") for n, r in got.items() if r["health"] != "ok"}
    assert not bad, bad
    # The shared recording rules produce series from the live Milvus.
    for rec in ("milvus:querynode_read_queue_len", "milvus:proxy_search_latency_seconds:p99_5m",
                "milvus:datacoord_index_pending_tasks", "milvus:proxy_search_requests:rate5m"):
        series = query(prom, rec)
        assert series and series[0]["metric"].get("app_kubernetes_io_instance") == INSTANCE, (rec, series)
    # milvus-scaler is up, so its absence alert is not even pending.
    assert not query(prom, 'ALERTS{alertname=~"MilvusScalerAbsent|MilvusScalerDown"}')
