"""Benchmark: time to useful capacity of a new query node, phase by phase, on a real Milvus 2.3.5
cluster (tests/harness/cluster.py) whose query nodes read S3 through a shaping proxy that behaves like
S3 from EC2 (first-byte delay per request, per-connection bandwidth cap: tests/harness/shaper.py).

A cluster with one query node holds a loaded collection under a steady search load; then a second
query node is added and timed from the scale decision (the harness's add call) through Milvus's own
signals (harness PhaseWatcher): registered, assigned work, first segment loaded, all its segments
loaded (balance settled), serving searches. Three modes, each repeated, in one run:

- direct: the new node's Milvus reads the shaped S3 itself (minio.address/port), no segment-cache;
- cold: through a new segment-cache with an empty cache directory (read-ahead on, the default);
- restart: through a segment-cache on the cold node's cache directory after that node was stopped
  (a restart on the same host: new process, new node id, same NVMe).

After each mode the new node is stopped gracefully and the cluster settles back to one node.
Env: BENCH_SO_ROWS (default 240000), BENCH_SO_DIM (128), BENCH_SO_SEGMENTS (12 flushes), BENCH_SO_REPEAT (3),
BENCH_SO_DELAY_MS (30), BENCH_SO_MIBPS (80, per connection), BENCH_SO_QN_CPU (1.0 core per query node),
BENCH_SO_BALANCE_S (queryCoord.balanceIntervalSeconds, 5), BENCH_SO_RATE (searches/s, 10),
BENCH_SO_S3 (the S3 server behind the shaper: s3s-fs, the default, or moto, which serves ~180 MiB/s to one
reader and less to parallel ranged readers, so that it and not the shaping decides at 100 MB segments),
BENCH_SO_READ_AHEAD=0 (the sidecars' read-ahead off), BENCH_SO_PART (their cache.miss_part_size, e.g. 1MiB), BENCH_SO_DEBUG_CACHE=1 (use target/debug/segment-cache instead of building the release one).
Prints one JSON line last: {"name": ..., "rows": [...], "notes": [...]}.
"""
from __future__ import annotations

import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from harness import promtext  # noqa: E402
from harness.cluster import BUCKET, PHASES, MilvusCluster, cache_reads, proc_resources  # noqa: E402
from harness.procs import wait_until  # noqa: E402

MiB = 1 << 20
ROWS = int(os.environ.get("BENCH_SO_ROWS", 240_000))
DIM = int(os.environ.get("BENCH_SO_DIM", 128))
SEGMENTS = int(os.environ.get("BENCH_SO_SEGMENTS", 12))
REPEAT = int(os.environ.get("BENCH_SO_REPEAT", 3))
DELAY = float(os.environ.get("BENCH_SO_DELAY_MS", 30)) / 1000
MIBPS = float(os.environ.get("BENCH_SO_MIBPS", 80))
QN_CPU = float(os.environ.get("BENCH_SO_QN_CPU", 1.0))
BALANCE_S = int(os.environ.get("BENCH_SO_BALANCE_S", 5))
RATE = float(os.environ.get("BENCH_SO_RATE", 10))
S3 = os.environ.get("BENCH_SO_S3", "s3s-fs")
READ_AHEAD = os.environ.get("BENCH_SO_READ_AHEAD", "1") != "0"
PART = os.environ.get("BENCH_SO_PART")  # the sidecars' cache.miss_part_size (default: theirs, 8MiB)
# Quiet time that marks the balance as settled: longer than two balance rounds, so that a second
# round moving more segments would be seen.
SETTLE = 2 * BALANCE_S + 2
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
COLL = "scaleout_bench"
MODES = ("direct", "cold", "restart")
LABEL = {"direct": "direct S3 (no cache)", "cold": "segment-cache, cold",
         "restart": "segment-cache, restart on its NVMe"}


def log(msg: str) -> None:
    print(f"[bench_scaleout] {msg}", file=sys.stderr, flush=True)


def cache_binary() -> str:
    if os.environ.get("BENCH_SO_DEBUG_CACHE") == "1":
        path = TARGET / "debug" / "segment-cache"
    else:
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "segment-cache"], cwd=REPO, check=True)
        path = TARGET / "release" / "segment-cache"
    if not path.exists():
        raise SystemExit(f"{path} not built")
    return str(path)


def make_collection(uri: str):
    """ROWS random DIM-d vectors in SEGMENTS flushes (one sealed segment each, one shard), IVF_FLAT."""
    import numpy as np
    from pymilvus import Collection, CollectionSchema, DataType, FieldSchema, connections, utility

    connections.connect(alias="default", uri=uri, timeout=120)
    schema = CollectionSchema([FieldSchema("id", DataType.INT64, is_primary=True, auto_id=False),
                               FieldSchema("vec", DataType.FLOAT_VECTOR, dim=DIM)])
    coll = Collection(COLL, schema, shards_num=1)
    rng = np.random.default_rng(2026)
    per_segment = ROWS // SEGMENTS
    batch = max(1, min(per_segment, (4 * MiB) // (DIM * 4)))  # ~4 MB per insert request
    for seg in range(SEGMENTS):
        start = seg * per_segment
        for b in range(start, start + per_segment, batch):
            n = min(batch, start + per_segment - b)
            coll.insert([list(range(b, b + n)), rng.random((n, DIM), dtype=np.float32)])
        coll.flush()
        log(f"segment {seg + 1}/{SEGMENTS} flushed")
    coll.create_index("vec", {"index_type": "IVF_FLAT", "metric_type": "L2", "params": {"nlist": 256}})
    utility.wait_for_index_building_complete(COLL, timeout=1800)
    return coll


def bucket_bytes(cluster: MilvusCluster) -> dict[str, int]:
    """Bytes per top-level kind (insert_log, stats_log, index_files, ...) in the Milvus bucket."""
    s3 = cluster.s3.client("s3")
    out: dict[str, int] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for o in page.get("Contents", []):
            parts = o["Key"].split("/")
            kind = parts[1] if len(parts) > 2 else parts[0]
            out[kind] = out.get(kind, 0) + o["Size"]
    return out


def cache_counters(text: str) -> dict:
    """The segment-cache's own counters that say where the reads came from."""
    v = lambda name, **l: promtext.value_sum(text, name, **l) or 0.0  # noqa: E731
    return {
        "get_hit": v("segment_cache_requests_total", op="get", result="hit"),
        "get_miss": v("segment_cache_requests_total", op="get", result="miss"),
        "head": v("segment_cache_requests_total", op="head"),
        "hit_bytes": v("segment_cache_served_bytes_total", result="hit"),
        "miss_bytes": v("segment_cache_served_bytes_total", result="miss"),
        "read_ahead_fetched": v("segment_cache_read_ahead_objects_total", result="fetched"),
        "read_ahead_cached": v("segment_cache_read_ahead_objects_total", result="cached"),
        "read_ahead_bytes": v("segment_cache_read_ahead_bytes_total"),
        "upstream_gets": v("segment_cache_upstream_requests_total", op=("get", "get_range")),
        "upstream_lists": v("segment_cache_upstream_requests_total", op="list"),
    }


def one_node_settled(cluster: MilvusCluster, first: str, segments: float) -> bool:
    return ((cluster.sealed_segments(first) or 0) == segments and cluster.querycoord_tasks() == 0
            and cluster.querycoord_nodes() == 1)


def scale_out(cluster: MilvusCluster, mode: str, cache_dir: Path | None) -> dict:
    """Adds one query node in `mode`, waits for every phase, returns its record with the decision
    offset, the shaper's and (if any) the cache's counters over the scale-out."""
    before = cluster.shaper.stats()
    load_before = os.getloadavg()[0]
    t_decision = time.monotonic()
    name = cluster.add_query_node(storage="direct" if mode == "direct" else "cache",
                                  cache_dir=cache_dir if mode == "restart" else None, watch=True,
                                  watch_options={"settle": SETTLE, "timeout": 900})
    node = cluster.node(name)
    samples = CpuSampler(node)
    rec = dict(node.watcher.wait())
    samples.stop()
    after = cluster.shaper.stats()
    offset = node.started_at - t_decision  # the sidecar's start, before Milvus's (0 for direct)
    rec["mode"] = mode
    rec["decision_to_process_s"] = round(offset, 3)
    for p in PHASES:
        rec[f"from_decision_{p}"] = round(rec[p] + offset, 3)
    # Useful capacity: all its share loaded and answering searches.
    rec["from_decision_useful"] = round(max(rec["loaded"], rec["serving"]) + offset, 3)
    rec["load_phase_s"] = round(rec["loaded"] - rec["assigned"], 3)
    rec["upstream_requests"] = after["requests"] - before["requests"]
    rec["upstream_bytes"] = after["response_bytes"] - before["response_bytes"]
    rec["cache"] = cache_counters(node.cache.metrics_text()) if node.cache is not None else None
    # Whether the load phase was CPU-bound: the query node's CPU time between assigned and loaded
    # over that time (its cgroup's quota is QN_CPU cores), and the share of its cgroup's CFS periods
    # in which the quota ran out.
    cpu_a, thr_a = samples.at(node.started_at + rec["assigned"])
    cpu_l, thr_l = samples.at(node.started_at + rec["loaded"])
    rec["load_phase_cores"] = round((cpu_l - cpu_a) / rec["load_phase_s"], 3) if rec["load_phase_s"] > 0 else None
    periods = thr_l[0] - thr_a[0]
    rec["load_phase_throttled_share"] = round((thr_l[1] - thr_a[1]) / periods, 3) if periods > 0 else None
    rec["node_dir"] = node.cache_dir
    # Whether the machine was quiet around this scale-out (a noisy one slows every phase).
    rec["load_average_1m"] = {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)}
    return rec


class CpuSampler:
    """Samples a query node's CPU seconds (/proc, all its threads) and its cgroup's CFS counters
    (periods, periods throttled) every 50 ms until stopped; `at(t)` gives the last sample before
    monotonic time t."""

    def __init__(self, node):
        import threading

        self.node, self.samples, self.done = node, [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            stat = self.node.group.throttled()
            self.samples.append((time.monotonic(), proc_resources(self.node.proc.pid)["cpu_s"],
                                 (int(stat.get("nr_periods", 0)), int(stat.get("nr_throttled", 0)))))
            if self.done.wait(0.05):
                return

    def stop(self) -> None:
        self.done.set()
        self.thread.join()

    def at(self, t: float) -> tuple[float, tuple[int, int]]:
        before = [x for x in self.samples if x[0] <= t] or self.samples[:1]
        return before[-1][1], before[-1][2]


def median(records: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in records)


def main() -> None:
    binary = cache_binary()
    extra = {"dataCoord.compaction.enableAutoCompaction": False,  # keep the flushed segments apart
             "queryCoord.balanceIntervalSeconds": BALANCE_S}
    shaper = {"first_byte_delay": DELAY, "bytes_per_second": MIBPS * MiB}
    results: dict[str, list[dict]] = {m: [] for m in MODES}
    sections = {"read_ahead": {"enabled": READ_AHEAD}, **({"cache": {"miss_part_size": PART}} if PART else {})}
    with MilvusCluster(query_nodes=1, query_node_cpu=QN_CPU, cache_capacity="8GiB", extra=extra, shaper=shaper,
                       cache_binary=binary, cache_sections=sections, s3=S3) as cluster:
        log("cluster up: " + ", ".join(f"{k} {v:.0f}s" for k, v in cluster.phase_log))
        t = time.monotonic()
        coll = make_collection(cluster.proxy_uri)
        sizes = bucket_bytes(cluster)
        log(f"collection built in {time.monotonic() - t:.0f}s; bucket: "
            + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in sorted(sizes.items())))
        t = time.monotonic()
        coll.load()
        first = cluster.query_nodes()[0]
        segments = cluster.sealed_segments(first)
        log(f"loaded on {first} in {time.monotonic() - t:.0f}s: {segments:.0f} sealed segments")
        from harness.workload import RateLoad

        with RateLoad(coll, rate=lambda _t: RATE, workers=4, dim=DIM, nprobe=16, retry_transient=True) as load:
            for rep in range(REPEAT):
                cold_dir = None
                for mode in MODES:
                    wait_until(lambda: one_node_settled(cluster, first, segments), 300,
                               f"{first} holding all {segments:.0f} segments, querycoord idle", interval=0.5)
                    rec = scale_out(cluster, mode, cold_dir)
                    if mode == "cold":
                        cold_dir = rec["node_dir"]
                    results[mode].append(rec)
                    log(f"rep {rep} {mode}: " + ", ".join(f"{p} {rec['from_decision_' + p]:.1f}s" for p in PHASES)
                        + f"; useful {rec['from_decision_useful']:.1f}s; {rec['segments']:.0f} segments; upstream "
                        f"{rec['upstream_requests']} requests {rec['upstream_bytes'] / 1e6:.1f} MB; cache {rec['cache']}")
                    stop = cluster.stop_query_node(rec["node"], graceful=True)
                    final = cluster.gone[-1]
                    rec["cache_final"] = cache_reads(final.cache, final.cache_metrics_final) if final.cache_metrics_final else None
                    rec["stop"] = stop
            searches, errors = len(load.records), len(load.errors())
        retried = len(load.retried)
        total_bytes = sum(sizes.values())
        resources = cluster.resources()

    rows = []
    for key, label in [("from_decision_useful", "scale decision -> useful (all its segments loaded, serving)")] + [
            (f"from_decision_{p}", f"scale decision -> {p}") for p in PHASES] + [
            ("load_phase_s", "load phase (assigned -> all its segments loaded)")]:
        base = median(results["direct"], key)
        for mode in ("cold", "restart"):
            ours = median(results[mode], key)
            rows.append({"metric": f"{label}, {LABEL[mode]}", "ours": round(ours, 2), "baseline": round(base, 2),
                         "baseline_name": LABEL["direct"], "unit": "s",
                         "ratio": round(ours / base, 3) if base else None, "better": "lower",
                         "speedup": round(base / ours, 2) if ours else None})
    for mode in MODES:
        rows.append({"metric": f"upstream bytes during the scale-out, {LABEL[mode]}",
                     "ours": round(median(results[mode], "upstream_bytes") / 1e6, 1), "baseline": None,
                     "baseline_name": "-", "unit": "MB", "ratio": None, "better": "lower"})
    useful = {m: median(results[m], "from_decision_useful") for m in MODES}
    load_phase = {m: median(results[m], "load_phase_s") for m in MODES}
    notes = [
        f"collection: {ROWS} x {DIM}-d float vectors, {SEGMENTS} flushes, 1 shard, IVF_FLAT nlist 256; bucket "
        f"{total_bytes / 1e6:.0f} MB (" + ", ".join(f"{k} {v / 1e6:.0f} MB" for k, v in sorted(sizes.items())) + ")",
        f"cluster: 1 query node + the one added, each in a {QN_CPU:g}-core CPU cgroup; queryCoord.balanceIntervalSeconds "
        f"{BALANCE_S} (default 60: the assigned phase would wait up to a minute in every mode alike); balance settled = "
        f"segment count unchanged and querycoord tasks 0 for {SETTLE}s",
        f"segment-cache read-ahead {'on' if READ_AHEAD else 'OFF (BENCH_SO_READ_AHEAD=0)'}, cache.miss_part_size "
        f"{PART or '8MiB (default)'}",
        f"upstream: {S3} behind the shaper, first byte {DELAY * 1000:.0f} ms per request, {MIBPS:g} MiB/s per connection "
        "(AWS S3 whitepaper: one request per 85-90 MB/s; first-byte 100-200 ms per AWS guidelines, so 30 ms is kind "
        "to the direct reader)",
        f"{REPEAT} scale-outs per mode, medians; steady load {RATE:g} searches/s (nq 1): {searches} done, {errors} failed, "
        f"{retried} transient errors retried",
        "useful speed-up (direct / mode): " + ", ".join(f"{m} {useful['direct'] / useful[m]:.2f}x" for m in ("cold", "restart"))
        + "; load phase speed-up: " + ", ".join(f"{m} {load_phase['direct'] / load_phase[m]:.2f}x" for m in ("cold", "restart"))
        + " (goals: cold >= 2x, restart >= 5x)",
    ]
    for mode in ("cold", "restart"):
        caches = [r["cache"] for r in results[mode]]
        notes.append(f"{LABEL[mode]} cache counters per scale-out (at useful; GET hits/misses, hit/miss MB, read-ahead "
                     "objects fetched, MB, upstream GETs): " + "; ".join(
                         f"{x['get_hit']:.0f}/{x['get_miss']:.0f}, {x['hit_bytes'] / 1e6:.1f}/{x['miss_bytes'] / 1e6:.1f} MB, "
                         f"{x['read_ahead_fetched']:.0f}, {x['read_ahead_bytes'] / 1e6:.1f} MB, {x['upstream_gets']:.0f}"
                         for x in caches))
    notes.append("per scale-out, seconds from decision (registered, assigned, first segment, loaded, serving): " + "; ".join(
        f"{m}: " + " | ".join(",".join(f"{r['from_decision_' + p]:.1f}" for p in PHASES) for r in results[m]) for m in MODES))
    notes.append(f"query node CPU in the load phase (cores used of its {QN_CPU:g}; share of CFS periods throttled): "
                 + "; ".join(f"{m}: " + " | ".join(f"{r['load_phase_cores']}, {r['load_phase_throttled_share']}"
                                                   for r in results[m]) for m in MODES))
    notes.append("segments on the new node: " + ", ".join(
        f"{m} " + "/".join(f"{r['segments']:.0f}" for r in results[m]) for m in MODES))
    loads = [r["load_average_1m"]["before"] for m in MODES for r in results[m]]
    notes.append(f"machine: {os.cpu_count()} cores; 1-minute load average before each scale-out: median "
                 f"{statistics.median(loads):.1f}, max {max(loads):.1f} (the cluster's own processes and search load included); "
                 f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M}Z")
    out = {"name": "scale-out: time to useful capacity of a new query node", "rows": rows, "notes": notes,
           "records": {m: [{k: v for k, v in r.items() if k != "node_dir"} for r in results[m]] for m in MODES},
           "resources": {k: v for k, v in resources.items()}}
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
