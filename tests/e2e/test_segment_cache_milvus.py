"""Real Milvus 2.3.5 through segment-cache in front of moto: same search results as Milvus on moto
directly, and after a Milvus restart the second load is served (>= 90% of object bytes) from the cache."""
from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.segment_cache import ACCESS_KEY, SECRET_KEY, SegmentCache, moto_object_gets  # noqa: E402
from harness.services import Milvus, Moto, run_dir  # noqa: E402
from harness import workload  # noqa: E402

pytestmark = pytest.mark.timeout(1200)

DIM = 32
ROWS = 6000
NLIST = 16
COLL = "sc_e2e"


def _workload(uri: str, create: bool) -> list[list[tuple[int, float]]]:
    from pymilvus import Collection, CollectionSchema, DataType, FieldSchema, connections, utility

    connections.connect(alias="default", uri=uri, timeout=120)
    try:
        if create:
            schema = CollectionSchema([
                FieldSchema("id", DataType.INT64, is_primary=True, auto_id=False),
                FieldSchema("vec", DataType.FLOAT_VECTOR, dim=DIM),
            ])
            coll = Collection(COLL, schema)
            rng = random.Random(7)
            for start in range(0, ROWS, 3000):
                coll.insert([list(range(start, start + 3000)),
                             [[rng.random() for _ in range(DIM)] for _ in range(3000)]])
            coll.flush()
            coll.create_index("vec", {"index_type": "IVF_FLAT", "metric_type": "L2", "params": {"nlist": NLIST}})
            utility.wait_for_index_building_complete(COLL)
        coll = Collection(COLL)
        # A restarted Milvus answers "node not found" until its query node has registered.
        workload.load_when_ready(coll, timeout=300)
        q = random.Random(99)
        vectors = [[q.random() for _ in range(DIM)] for _ in range(5)]
        # nprobe == nlist: exhaustive, so the answer does not depend on k-means training.
        res = coll.search(vectors, "vec", {"metric_type": "L2", "params": {"nprobe": NLIST}}, limit=10)
        out = [[(hit.id, round(hit.distance, 4)) for hit in hits] for hits in res]
        coll.release()
        return out
    finally:
        connections.disconnect("default")


def _bucket_bytes(s3, bucket: str) -> dict[str, int]:
    sizes = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            sizes[o["Key"]] = o["Size"]
    return sizes


def test_milvus_through_cache_matches_direct_and_second_load_hits():
    moto = Moto()
    cache = None
    try:
        s3 = moto.client("s3")
        s3.create_bucket(Bucket="direct-bucket")
        s3.create_bucket(Bucket="milvus-bucket")

        # 1. Milvus on moto directly.
        m = Milvus(s3={"port": moto.port, "bucket": "direct-bucket"})
        try:
            direct = _workload(m.uri, create=True)
        finally:
            m.stop()

        # 2. Milvus through the cache.
        cache = SegmentCache(moto.url, "milvus-bucket")
        data_dir = run_dir("milvus-cached")
        s3cfg = {"port": cache.port, "bucket": "milvus-bucket", "access_key": ACCESS_KEY, "secret_key": SECRET_KEY}
        m = Milvus(data_dir=data_dir, s3=s3cfg)
        try:
            cached = _workload(m.uri, create=True)
        finally:
            m.stop()
        assert cached == direct, "search results through the cache differ from Milvus on moto directly"
        sizes = _bucket_bytes(s3, "milvus-bucket")
        assert any("index_files" in k for k in sizes), sorted(sizes)[:5]
        assert any("insert_log" in k for k in sizes), sorted(sizes)[:5]

        # 3. Restart Milvus (same data dir, same cache) and load again.
        hit0 = cache.metric("segment_cache_served_bytes_total", result="hit")
        miss0 = cache.metric("segment_cache_served_bytes_total", result="miss")
        bypass0 = cache.metric("segment_cache_requests_total", op="get", result="bypass")
        moto_log = moto.service.log_path
        gets_before = len(moto_object_gets(moto_log, "milvus-bucket"))
        m = Milvus(data_dir=data_dir, s3=s3cfg)
        try:
            again = _workload(m.uri, create=False)
        finally:
            m.stop()
        assert again == direct
        hit = cache.metric("segment_cache_served_bytes_total", result="hit") - hit0
        miss = cache.metric("segment_cache_served_bytes_total", result="miss") - miss0
        bypass = cache.metric("segment_cache_requests_total", op="get", result="bypass") - bypass0
        assert hit > 0, "the second load read nothing through the cache"
        assert hit / (hit + miss) >= 0.9, f"hit bytes {hit}, miss bytes {miss}"
        assert bypass == 0
        # moto's own view: object bytes it served during the second load.
        upstream_keys = moto_object_gets(moto_log, "milvus-bucket")[gets_before:]
        upstream_bytes = sum(sizes.get(k, 0) for k in upstream_keys)
        assert upstream_bytes <= 0.1 * (hit + miss), (
            f"moto served {upstream_bytes} object bytes during the second load, cache served {hit + miss}: "
            f"{upstream_keys[:10]}")
    finally:
        if cache:
            cache.stop()
        moto.stop()
