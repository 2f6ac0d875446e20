"""Real Milvus 2.3.5 cluster (harness/cluster.py), one query node behind its segment-cache.

1. Its first load, on an empty cache, shows read-ahead at work from the cache's own counters and
   access log: read-ahead fetched objects, and some of Milvus's *first* reads of a file were hits.
   On a cold cache a file gets in only by a GET miss of that same file or by read-ahead (the warm is
   off), so a hit on a file's first read is a file read ahead before Milvus asked for it.
2. The query node is then restarted on the same host: a new process (so a new node id in etcd) on
   the same cache directory. Querycoord gives it the collection's segments again and every read it
   makes is a hit: no GET misses, no upstream GET, no read-ahead listing.

Causal checks only (counters, ids, keys); the deadlines are liveness bounds."""
from __future__ import annotations

import collections
import sys
import urllib.parse
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import promtext, workload  # noqa: E402
from harness.cluster import MilvusCluster  # noqa: E402
from harness.procs import wait_until  # noqa: E402

pytestmark = pytest.mark.timeout(900)

DIM = 32
SEGMENTS = 4
ROWS = 3_000 * SEGMENTS
COLL = "restart_e2e"


def _counter(text: str, name: str, **labels) -> float:
    return promtext.value_sum(text, name, **labels) or 0.0


def _reads_per_key(cache_dir: Path) -> collections.Counter:
    """How many times Milvus read each key through the cache (its access log:
    `<unix secs> <size> <percent-encoded key>` per GET served)."""
    reads: collections.Counter = collections.Counter()
    for line in (cache_dir / "access.log").read_text().splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3:
            reads[urllib.parse.unquote(parts[2])] += 1
    return reads


def _search(coll) -> None:
    res = coll.search([[0.5] * DIM], "vec", {"metric_type": "L2", "params": {"nprobe": 16}}, limit=10, timeout=60)
    assert len(res[0]) == 10, f"a search on the loaded collection returned {len(res[0])} hits, expected 10"


def _search_when_ready(coll, timeout: float) -> None:
    """Searches until one succeeds: after a restart the shard's channel is served again only once
    querycoord has given it to the new node, which can come after its sealed segments."""
    last: list[str] = []

    def ok() -> bool:
        try:
            _search(coll)
            return True
        except Exception as e:  # the last one is in the timeout's message
            last[:] = [f"{type(e).__name__}: {e}"]
            return False

    try:
        wait_until(ok, timeout, "a search to succeed", interval=1.0)
    except TimeoutError as e:
        raise AssertionError(f"{e}; last error: {last}") from e


def _querynode_ids(cluster: MilvusCluster) -> set[int]:
    return {s["ServerID"] for s in cluster.sessions() if s.get("ServerName") == "querynode"}


def test_read_ahead_then_a_restarted_query_node_with_a_new_id_is_served_from_its_nvme():
    extra = {"dataCoord.compaction.enableAutoCompaction": False}  # keep the flushed segments apart
    with MilvusCluster(query_nodes=1, query_node_cpu=0.5, extra=extra) as cluster:
        workload.connect(cluster.proxy_uri)
        coll = workload.create_collection(COLL, rows=ROWS, dim=DIM, batch=ROWS // SEGMENTS, flush_every_batch=True,
                                          shards=1, load=False)
        coll.load()
        first = cluster.query_nodes()[0]
        wait_until(lambda: cluster.sealed_segments(first) == SEGMENTS, 180, f"{SEGMENTS} sealed segments on {first}",
                   interval=0.5)
        _search(coll)
        old = cluster.node(first)
        old_id, cache_dir = old.node_id, old.cache_dir
        assert old_id is not None and cache_dir is not None

        # ---- restart on the same host: stop (its sidecar stops cleanly, writing its access log) ----
        cluster.stop_query_node(first, graceful=False)
        cold = old.cache_metrics_final
        assert cold is not None, f"{first}'s segment-cache metrics were not captured before it stopped"
        fetched = _counter(cold, "segment_cache_read_ahead_objects_total", result="fetched")
        ra_bytes = _counter(cold, "segment_cache_read_ahead_bytes_total")
        get_hits = _counter(cold, "segment_cache_requests_total", op="get", result="hit")
        get_misses = _counter(cold, "segment_cache_requests_total", op="get", result="miss")
        reads = _reads_per_key(cache_dir)
        repeat_reads = sum(n - 1 for n in reads.values())
        print(f"\ncold load on {first} (node id {old_id}): {len(reads)} keys read {sum(reads.values())} times; GET hits "
              f"{get_hits:.0f}, misses {get_misses:.0f}; read-ahead fetched {fetched:.0f} objects, {ra_bytes / 1e6:.2f} MB")
        assert fetched > 0 and ra_bytes > 0, "read-ahead fetched nothing on the cold load"
        dropped = _counter(cold, "segment_cache_access_log_dropped_total")
        assert dropped == 0, f"the access log dropped {dropped:.0f} reads: it cannot count reads per key"
        assert sum(reads.values()) == get_hits + get_misses, (
            f"the access log holds {sum(reads.values())} reads, the counters {get_hits + get_misses:.0f} GETs")
        # Hits beyond Milvus's own repeat reads of a key are first reads served from the cache: files
        # read ahead before Milvus asked for them.
        first_read_hits = get_hits - repeat_reads
        assert first_read_hits > 0, (
            f"no first read of a file was a hit ({get_hits:.0f} GET hits, {repeat_reads} repeat reads of a key): "
            f"read-ahead did not fetch any file before Milvus asked for it")

        second = cluster.add_query_node(cache_dir=cache_dir)
        new = cluster.node(second)
        wait_until(lambda: cluster.sealed_segments(second) == SEGMENTS, 240,
                   f"{SEGMENTS} sealed segments on the restarted {second}", interval=0.5)
        _search_when_ready(coll, 120)
        # The old session expires (common.session.ttl); the new one has another id.
        wait_until(lambda: old_id not in _querynode_ids(cluster), 60, f"the old session {old_id} to expire")
        assert new.node_id is not None and new.node_id != old_id, (old_id, new.node_id)
        assert _querynode_ids(cluster) == {new.node_id}, cluster.sessions()

        text = new.cache.metrics_text()
        hits = _counter(text, "segment_cache_requests_total", op="get", result="hit")
        misses = _counter(text, "segment_cache_requests_total", op="get", result="miss")
        hit_bytes = _counter(text, "segment_cache_served_bytes_total", result="hit")
        upstream_gets = _counter(text, "segment_cache_upstream_requests_total", op=("get", "get_range"))
        listed = _counter(text, "segment_cache_read_ahead_groups_total")
        print(f"restarted as {second} (node id {new.node_id}) on {cache_dir}: GET hits {hits:.0f} "
              f"({hit_bytes / 1e6:.2f} MB), misses {misses:.0f}, upstream GETs {upstream_gets:.0f}, "
              f"read-ahead groups listed {listed:.0f}")
        assert hits > 0 and hit_bytes > 0, f"the restarted {second} read nothing through its cache"
        assert misses == 0, f"the restarted {second} missed {misses:.0f} GETs (hits {hits:.0f}): not all from NVMe"
        assert upstream_gets == 0, f"the restarted {second}'s cache fetched {upstream_gets:.0f} objects upstream"
        assert listed == 0, "read-ahead listed segments after the restart: something missed"
