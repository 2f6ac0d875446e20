"""pymilvus workloads: a collection with data and an index, and a concurrent search load."""
from __future__ import annotations

import random
import threading
import time
import warnings

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")

from pymilvus import Collection, CollectionSchema, DataType, FieldSchema, connections, utility  # noqa: E402

DIM = 64


def connect(uri: str = "http://127.0.0.1:19530", alias: str = "default") -> None:
    connections.disconnect(alias)
    connections.connect(alias=alias, uri=uri, timeout=60)


def create_collection(name: str, rows: int = 20_000, dim: int = DIM, index: bool = True, load: bool = True,
                      batch: int = 5_000, flush_every_batch: bool = False, shards: int = 1) -> Collection:
    """Creates `name` with `rows` random vectors, flushes (after every batch with `flush_every_batch`,
    which makes one sealed segment per batch and shard: something for a balancer to move), optionally
    builds an IVF_FLAT index and loads."""
    if utility.has_collection(name):
        utility.drop_collection(name)
    schema = CollectionSchema([
        FieldSchema("id", DataType.INT64, is_primary=True, auto_id=False),
        FieldSchema("vec", DataType.FLOAT_VECTOR, dim=dim),
    ])
    coll = Collection(name, schema, shards_num=shards)
    rng = random.Random(42)
    for start in range(0, rows, batch):
        n = min(batch, rows - start)
        coll.insert([list(range(start, start + n)), [[rng.random() for _ in range(dim)] for _ in range(n)]])
        if flush_every_batch:
            coll.flush()
    coll.flush()
    if index:
        build_index(coll)
    if load:
        coll.load()
    return coll


def build_index(coll: Collection, wait: bool = True) -> None:
    coll.create_index("vec", {"index_type": "IVF_FLAT", "metric_type": "L2", "params": {"nlist": 128}})
    if wait:
        utility.wait_for_index_building_complete(coll.name)


def load_when_ready(coll: Collection, timeout: float = 120) -> None:
    """`coll.load()`, retried while a restarted Milvus has not registered its query node yet
    (it answers "node not found" / "session not found" for a few seconds after start)."""
    from pymilvus.exceptions import MilvusException

    deadline = time.monotonic() + timeout
    while True:
        try:
            coll.load()
            return
        except MilvusException as e:
            transient = any(s in str(e) for s in ("node not found", "session not found", "unrecoverable error"))
            if not transient or time.monotonic() > deadline:
                raise
            time.sleep(2)


def saturation_throughput(coll: Collection, nq: int, nprobe: int, seconds: float = 20.0, threads: int = 8) -> float:
    """Searches per second Milvus completes when kept busy: `threads` callers back to back (closed
    loop), after a short warm-up. Raises if a search fails: a capacity measured on errors is wrong."""
    with SearchLoad(coll, threads=threads, nq=nq, nprobe=nprobe) as load:
        time.sleep(min(3.0, seconds / 4))
        start, t0 = load.completed, time.monotonic()
        time.sleep(seconds)
        done = load.completed - start
    if load.errors:
        raise RuntimeError(f"searches failed while measuring capacity: {load.errors[:3]}")
    return done / (time.monotonic() - t0)


class SearchLoad:
    """`threads` threads searching `coll` back to back until stopped; counts completed searches."""

    def __init__(self, coll: Collection, threads: int = 8, nq: int = 10, dim: int = DIM, nprobe: int = 64):
        self.coll = coll
        self.stop_event = threading.Event()
        self.completed = 0
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i, nq, dim, nprobe), daemon=True) for i in range(threads)]

    def _run(self, seed: int, nq: int, dim: int, nprobe: int) -> None:
        rng = random.Random(seed)
        while not self.stop_event.is_set():
            vectors = [[rng.random() for _ in range(dim)] for _ in range(nq)]
            try:
                self.coll.search(vectors, "vec", {"metric_type": "L2", "params": {"nprobe": nprobe}}, limit=10)
                with self._lock:
                    self.completed += 1
            except Exception as e:  # recorded; the test decides whether errors matter
                self.errors.append(str(e))
                time.sleep(0.1)

    def __enter__(self) -> "SearchLoad":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=60)


class RateLoad:
    """Open-loop search load: searches are *scheduled* at `rate(t)` per second (t = seconds since
    start) whatever Milvus's speed, and each one's latency is counted from its scheduled time, so a
    slow cluster shows as latency and backlog, not as a lower offered rate (no coordinated omission).

    `records` holds `(scheduled_t, latency_seconds, error_or_None)` for every finished search.
    With `retry_transient`, a search that fails with one of Milvus's transient routing errors
    (`TRANSIENT`) is retried after 0.5, 1, 2 and 4 s (7.5 s in all), as production clients do with
    backoff; every retried error is kept in `retried` (scheduled_t, error), so nothing is hidden.
    """

    TRANSIENT = ("channel not available", "node not found", "node offline", "segment lacks",
                 "leader not available", "connection refused", "session not found",
                 "failed to search/query delegator")

    def __init__(self, coll: Collection, rate, workers: int = 48, nq: int = 1, dim: int = DIM, nprobe: int = 16,
                 max_backlog: int = 5000, retry_transient: bool = False):
        import queue

        self.retry_transient = retry_transient
        self.retried: list[tuple[float, str]] = []

        self.coll = coll
        self.rate = rate
        self.nq, self.dim, self.nprobe = nq, dim, nprobe
        self.max_backlog = max_backlog
        self.records: list[tuple[float, float, str | None]] = []
        self.dropped = 0
        self._queue: "queue.Queue[float | None]" = queue.Queue()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._t0 = 0.0
        self._workers = [threading.Thread(target=self._work, args=(i,), daemon=True) for i in range(workers)]
        self._ticker = threading.Thread(target=self._tick, daemon=True)

    def now(self) -> float:
        """Seconds since the load started."""
        return time.monotonic() - self._t0

    def _tick(self) -> None:
        owed = 0.0
        last = self.now()
        while not self._stop.is_set():
            time.sleep(0.01)
            t = self.now()
            owed += max(0.0, float(self.rate(t))) * (t - last)
            last = t
            while owed >= 1.0:
                owed -= 1.0
                if self._queue.qsize() >= self.max_backlog:
                    self.dropped += 1  # the client gave up queueing: counted, never hidden
                else:
                    self._queue.put(t)

    def _work(self, seed: int) -> None:
        rng = random.Random(seed)
        while True:
            scheduled = self._queue.get()
            if scheduled is None:
                return
            vectors = [[rng.random() for _ in range(self.dim)] for _ in range(self.nq)]
            error = None
            for backoff in (0.5, 1.0, 2.0, 4.0, None):
                try:
                    self.coll.search(vectors, "vec", {"metric_type": "L2", "params": {"nprobe": self.nprobe}},
                                     limit=10, timeout=60)
                    error = None
                    break
                except Exception as e:  # recorded; the test decides whether errors matter
                    error = str(e)
                    if backoff is None or not self.retry_transient or not any(t in error for t in self.TRANSIENT):
                        break
                    with self._lock:
                        self.retried.append((scheduled, error))
                    time.sleep(backoff)
            with self._lock:
                self.records.append((scheduled, self.now() - scheduled, error))

    def window(self, start: float, end: float) -> list[tuple[float, float, str | None]]:
        """Finished searches scheduled in [start, end) seconds."""
        with self._lock:
            return [r for r in self.records if start <= r[0] < end]

    def errors(self) -> list[str]:
        with self._lock:
            return [r[2] for r in self.records if r[2] is not None]

    def __enter__(self) -> "RateLoad":
        self._t0 = time.monotonic()
        for w in self._workers:
            w.start()
        self._ticker.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._ticker.join(timeout=5)
        for _ in self._workers:
            self._queue.put(None)
        for w in self._workers:
            w.join(timeout=90)


def quantile(values: list[float], q: float) -> float | None:
    """The q-quantile (nearest rank) of `values`, or None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * len(ordered) + 0.5)) - 1))]
