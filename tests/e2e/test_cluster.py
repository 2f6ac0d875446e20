"""A real Milvus 2.3.5 cluster (coordinators, proxy, data/index node, query nodes each behind its own
segment-cache and in its own CPU cgroup) scaled through the fake scale subresource: 2 -> 3 query nodes
(the new one gets segments from querycoord's balancer), then 3 -> 2 under a continuous search load with
the newest node stopped gracefully and not one search failing.

Deadlines below are liveness bounds, not performance targets; the observed phase timings are printed."""
from __future__ import annotations

import json
import random
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.cluster import MilvusCluster, QueryNodeScaleEndpoint, cache_reads  # noqa: E402
from harness.procs import wait_until  # noqa: E402

pytestmark = pytest.mark.timeout(3600)

DIM = 64
ROWS = 20_000
BATCHES = 5  # one flush per batch: one sealed segment each
NLIST = 64
COLL = "cluster_e2e"


def _collection(uri: str):
    from pymilvus import Collection, CollectionSchema, DataType, FieldSchema, connections, utility

    connections.connect(alias="default", uri=uri, timeout=120)
    schema = CollectionSchema([
        FieldSchema("id", DataType.INT64, is_primary=True, auto_id=False),
        FieldSchema("vec", DataType.FLOAT_VECTOR, dim=DIM),
    ])
    coll = Collection(COLL, schema, shards_num=2)
    rng = random.Random(11)
    per = ROWS // BATCHES
    for b in range(BATCHES):
        start = b * per
        coll.insert([list(range(start, start + per)), [[rng.random() for _ in range(DIM)] for _ in range(per)]])
        coll.flush()
    coll.create_index("vec", {"index_type": "IVF_FLAT", "metric_type": "L2", "params": {"nlist": NLIST}})
    utility.wait_for_index_building_complete(COLL, timeout=600)
    return coll


class Searcher:
    """`threads` threads searching back to back; every failure is kept (time, message)."""

    def __init__(self, coll, threads: int = 3):
        self.coll = coll
        self.stop_event = threading.Event()
        self.ok = 0
        self.failures: list[tuple[float, str]] = []
        self.latencies: list[float] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self.stop_event.is_set():
            vectors = [[rng.random() for _ in range(DIM)] for _ in range(5)]
            t0 = time.monotonic()
            try:
                res = self.coll.search(vectors, "vec", {"metric_type": "L2", "params": {"nprobe": 16}}, limit=10,
                                       timeout=60)
                assert len(res) == 5 and all(len(hits) == 10 for hits in res), "short result"
                with self._lock:
                    self.ok += 1
                    self.latencies.append(time.monotonic() - t0)
            except Exception as e:  # counted: the test requires none
                with self._lock:
                    self.failures.append((time.monotonic(), f"{type(e).__name__}: {e}"))
                time.sleep(0.2)

    def __enter__(self) -> "Searcher":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_event.set()
        for t in self._threads:
            t.join(timeout=90)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}s"


def _node_phases(cluster: MilvusCluster, name: str, segments_at: float | None, serving_at: float | None) -> dict:
    node = cluster.nodes.get(name) or next(n for n in cluster.gone if n.name == name)
    t0 = node.started_at
    rel = lambda t: None if t is None else t - t0  # noqa: E731
    return {"node": name, "node_id": node.node_id, "registered": rel(node.registered_at),
            "healthy": rel(node.healthy_at), "segments": rel(segments_at), "serving": rel(serving_at)}


def _print_phases(title: str, rows: list[dict]) -> None:
    print(f"\n{title}: seconds since the query node's process started")
    for r in rows:
        print(f"  {r['node']:<12} id={r['node_id']}  registered {_fmt(r['registered'])}  healthy {_fmt(r['healthy'])}"
              f"  segments assigned {_fmt(r['segments'])}  serving searches {_fmt(r['serving'])}")


def _resources(cluster: MilvusCluster, title: str) -> None:
    res = cluster.resources()
    total = sum(r["rss"] for r in res.values())
    print(f"\n{title}: RSS total {total / 2**20:.0f} MiB")
    for name, r in sorted(res.items()):
        print(f"  {name:<28} RSS {r['rss'] / 2**20:7.0f} MiB   CPU {r['cpu_s']:7.1f} s")


def _wait_serving(cluster: MilvusCluster, name: str, timeout: float) -> float:
    wait_until(lambda: (cluster.searches_served(name) or 0) > 0, timeout, f"{name} serving searches", interval=0.5)
    return time.monotonic()


def _wait_segments(cluster: MilvusCluster, name: str, timeout: float) -> float:
    wait_until(lambda: (cluster.sealed_segments(name) or 0) > 0, timeout, f"sealed segments on {name}", interval=0.5)
    return time.monotonic()


def test_scale_query_nodes_up_and_gracefully_down():
    extra = {"dataCoord.compaction.enableAutoCompaction": False}  # keep the flushed segments apart
    with MilvusCluster(query_nodes=2, query_node_cpu=0.25, extra=extra) as cluster:
        print("\ncluster start (cumulative s):", ", ".join(f"{k} {v:.1f}" for k, v in cluster.phase_log))
        print("metrics targets:", json.dumps(cluster.metrics_targets(), indent=1))
        _resources(cluster, "idle, empty cluster")

        t = time.monotonic()
        coll = _collection(cluster.proxy_uri)
        print(f"\ncollection {ROWS} x {DIM}-d, {BATCHES} flushes, IVF_FLAT built in {time.monotonic() - t:.1f}s")
        t_load = time.monotonic()
        coll.load()
        print(f"loaded on 2 query nodes in {time.monotonic() - t_load:.1f}s")
        res = coll.search([[0.5] * DIM], "vec", {"metric_type": "L2", "params": {"nprobe": 16}}, limit=10)
        assert len(res[0]) == 10

        first = cluster.query_nodes()
        assert len(first) == 2
        with Searcher(coll, threads=2) as warm:
            seg_at = {n: _wait_segments(cluster, n, 300) for n in first}
            serve_at = {n: _wait_serving(cluster, n, 300) for n in first}
        assert not warm.failures, warm.failures[:5]
        _print_phases("initial query nodes", [_node_phases(cluster, n, seg_at[n], serve_at[n]) for n in first])
        print("  (their segments came with the load: " + ", ".join(
            f"{n} load() -> segments {seg_at[n] - t_load:.1f}s, -> serving {serve_at[n] - t_load:.1f}s" for n in first)
            + ")")
        for n in first:
            print(f"  {n}: sealed segments {cluster.sealed_segments(n):.0f}, entities {cluster.entities(n):.0f}")
            assert cluster.entities(n) > 0, f"{n} holds no data"
        total_segments = sum(cluster.sealed_segments(n) for n in first)
        assert total_segments >= 4, f"expected >= 4 sealed segments across the nodes, saw {total_segments}"

        with QueryNodeScaleEndpoint(cluster) as scale:
            got = scale.get()
            assert got["kind"] == "Scale" and got["spec"]["replicas"] == 2 and got["status"]["replicas"] == 2, got
            # Bad input gets a Kubernetes Status.
            bad = urllib.request.Request(scale.url, data=b'{"spec":{"replicas":-1}}', method="PUT")
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(bad, timeout=10)
            assert err.value.code == 400 and json.load(err.value)["kind"] == "Status"

            # ---- scale up 2 -> 3 -------------------------------------------------------------------
            with Searcher(coll, threads=2) as up_load:
                t_put = time.monotonic()
                answer = scale.set_replicas(3)
                assert answer["spec"]["replicas"] == 3
                wait_until(lambda: len(cluster.query_nodes()) == 3 and scale.converged(), 300,
                           "a third query node", interval=0.5)
                new = cluster.query_nodes()[-1]
                seg_new = _wait_segments(cluster, new, 180)
                serve_new = _wait_serving(cluster, new, 180)
            up = _node_phases(cluster, new, seg_new, serve_new)
            _print_phases("scale-up 2 -> 3", [up])
            node = cluster.node(new)
            print(f"  PUT -> process started {node.started_at - t_put:.1f}s; PUT -> segments {seg_new - t_put:.1f}s;"
                  f" PUT -> serving {serve_new - t_put:.1f}s; searches during scale-up: {up_load.ok} ok,"
                  f" {len(up_load.failures)} failed")
            for n in cluster.query_nodes():
                print(f"  {n}: sealed segments {cluster.sealed_segments(n):.0f}, entities {cluster.entities(n):.0f}")
            assert cluster.sealed_segments(new) > 0
            assert scale.get()["status"]["replicas"] == 3
            _resources(cluster, "loaded, 3 query nodes")

            # ---- scale down 3 -> 2 under continuous search -----------------------------------------
            with Searcher(coll, threads=3) as load:
                time.sleep(5)
                before = load.ok
                t_put = time.monotonic()
                scale.set_replicas(2)
                wait_until(lambda: new not in cluster.nodes or cluster.node(new).stopping, 60, "the stop to begin")
                drained_at = None
                while new in cluster.nodes:
                    if drained_at is None and (cluster.sealed_segments(new) or 0) == 0:
                        drained_at = time.monotonic()
                    time.sleep(0.5)
                    assert time.monotonic() - t_put < cluster.graceful_stop_timeout + 120, "stop did not finish"
                wait_until(scale.converged, 120, "2 query nodes", interval=0.5)
                exited_at = time.monotonic()
                time.sleep(10)  # keep searching on the two remaining nodes
            removed = [e for e in scale.events if e["action"] == "removed"]
            print("\nscale events:")
            for e in scale.events:
                print(f"  +{e['t'] - scale.events[0]['t']:7.1f}s {e['action']:<8} {e['node'] or '':<12} {e['reason']}"
                      + (f" ({e['seconds']}s" + (f", {e['exit']}" if "exit" in e else "") + ")" if "seconds" in e else ""))
            print(f"scale-down: PUT -> segments gone from {new} {_fmt(drained_at and drained_at - t_put)}; "
                  f"PUT -> process exited {exited_at - t_put:.1f}s; exit: {removed[-1].get('exit')}")
            print(f"searches during scale-down: {load.ok} ok ({load.ok - before} after the PUT), "
                  f"{len(load.failures)} failed")
            for when, msg in load.failures[:20]:
                print(f"  failed at +{when - t_put:.1f}s: {msg[:300]}")
            if load.latencies:
                lat = sorted(load.latencies)
                print(f"search latency during scale-down: p50 {lat[len(lat) // 2] * 1000:.0f} ms, "
                      f"p99 {lat[int(len(lat) * 0.99)] * 1000:.0f} ms")
            assert removed and removed[-1]["node"] == new
            assert removed[-1]["exit"] == "exited", "the newest node had to be killed: not a graceful stop"
            assert load.ok - before > 0
            assert not load.failures, f"{len(load.failures)} searches failed during the graceful scale-down"
            assert scale.get()["status"]["replicas"] == 2 and cluster.query_nodes() == first

        # ---- every query node's segment-cache served its reads ----------------------------------------
        print("\nsegment-cache reads per query node (GET+HEAD requests, bytes):")
        reads = {n: cache_reads(cluster.node(n).cache) for n in cluster.query_nodes()}
        reads.update({g.name: g.cache_final for g in cluster.gone})
        for n, r in sorted(reads.items()):
            print(f"  {n}: {r}")
            assert r is not None and r["hit"] + r["miss"] > 0, f"{n}'s segment-cache served no reads"
        _resources(cluster, "after scale-down")
        for n in cluster.query_nodes():
            print(f"  {n} cgroup cpu.stat: {cluster.node(n).group.throttled()}")
