"""A real multi-process Milvus 2.3.5 cluster on loopback, and a fake of the scale subresource that
scales its query nodes.

Processes (each stopped by PID): Debian's etcd, the Kafka-API broker tansu 0.6.0 (tests/broker.sh
builds it), moto (S3; or s3s-fs with `s3="s3s-fs"`, where its speed matters), one `milvus run mixture
-rootcoord -datacoord -querycoord`, a proxy, a data node, an index node and N query nodes. Every query node reads S3 through its own segment-cache (the project's
sidecar) with its own cache directory, and runs in its own cgroup-v1 `cpu` group with a fixed CPU quota,
so that adding a query node adds a fixed amount of capacity, as a pod with a CPU limit would.

Facts this relies on (DESIGN.md, "Facts learned in turn 2"): every role's `.ip` is 127.0.0.1; every port
is below 32768 (32768-60999 is the ephemeral range on these machines, and `free_port()` hands out ports
from it); Milvus in cluster mode accepts only Pulsar or Kafka; tansu 0.6.0 creates no topics by itself,
so the harness creates the ones Milvus uses before Milvus starts.

Options for measuring a scale-out (defaults keep all of it off): `shaper=` puts a latency/bandwidth
shaping proxy (harness/shaper.py) between the query nodes and S3, as S3 from EC2 would be (the
writers, data node and index node, keep writing to S3 directly); `add_query_node(storage="direct")`
starts a query node that reads S3 itself, without a segment-cache; `add_query_node(cache_dir=...)`
starts one on a stopped node's cache directory (a restart on the same host: a new process, so a new
node id, the same NVMe); `add_query_node(watch=True)` times the node's phases from Milvus's own
signals into `timings` (see `PhaseWatcher`).
"""
from __future__ import annotations

import base64
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

from . import promtext
from .procs import Service, http_ok, port_open, send_json, wait_until
from .segment_cache import ACCESS_KEY, SECRET_KEY, SegmentCache
from .services import Milvus, Moto, S3sFs, _try_lock, run_dir
from .shaper import Shaper

CACHE = Path(os.environ.get("MILVUS_SCALER_CACHE", Path.home() / ".cache" / "milvus-scaler"))
CGROUP_CPU = Path(os.environ.get("MILVUS_SCALER_CGROUP_CPU", "/sys/fs/cgroup/cpu"))
BUCKET = "milvus-cluster"
CLUSTER_PREFIX = "by-dev"  # common.chanNamePrefix.cluster and etcd.rootPath

# The roles of the single-instance processes and the milvus.yaml section each one owns.
ROLE_SECTIONS = {
    "rootcoord": "rootCoord", "datacoord": "dataCoord", "querycoord": "queryCoord", "proxy": "proxy",
    "datanode": "dataNode", "indexnode": "indexNode", "querynode": "queryNode",
}


# ---------------------------------------------------------------------------------------------------
# ports and binaries


class LowPorts:
    """Hands out TCP ports below 32768 that are free on every interface right now, never the same one
    twice (Milvus binds its ports on all interfaces; ports in 32768-60999 may be taken any moment by an
    outgoing connection's ephemeral port)."""

    def __init__(self, low: int = 20000, high: int = 32767):
        self.low, self.high = low, high
        self.given: set[int] = set()
        self._lock = threading.Lock()

    def take(self) -> int:
        with self._lock:
            for _ in range(2000):
                port = random.randint(self.low, self.high)
                if port in self.given or not _bindable(port):
                    continue
                self.given.add(port)
                return port
        raise RuntimeError(f"no free TCP port in {self.low}-{self.high}")


def _bindable(port: int) -> bool:
    for host in ("0.0.0.0", "127.0.0.1"):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def tansu_binary() -> str:
    """The broker built by tests/broker.sh (tansu 0.6.0 with its ApiVersions reply patched for librdkafka 1.9.1)."""
    path = Path(os.environ.get("TANSU_BIN", CACHE / "tansu-0.6.0-milvus" / "bin" / "tansu"))
    if not path.exists():
        raise RuntimeError(f"{path} not found: run tests/broker.sh (make setup does) to build tansu 0.6.0")
    return str(path)


def milvus_binary() -> Path:
    """The `milvus` binary and its libraries from the PyPI package (unpacked as its __init__.py does,
    once, into the cache directory)."""
    try:
        import milvus as milvus_pkg
    except ImportError as e:
        raise RuntimeError("the PyPI package `milvus` (2.3.5) is missing: run `make setup`") from e
    base = CACHE / f"milvus-{getattr(milvus_pkg, '__version__', '2.3.5')}"
    milvus_pkg._initialize_data_files(str(base))  # idempotent (md5 stamps)
    return base / "bin" / "milvus"


def milvus_template() -> tuple[str, Path]:
    import milvus as milvus_pkg
    data = Path(milvus_pkg.__file__).parent / "data"
    return (data / "config.yaml.template").read_text(), data / "glog.conf"


def render_milvus_yaml(template: str, variables: dict, overrides: dict) -> str:
    """The PyPI package's milvus.yaml template with its `{{ var(type): default }}` placeholders filled
    (from `variables`, else their defaults) and dotted-key `overrides` applied on the parsed YAML."""

    def fill(m: re.Match) -> str:
        text = m.group(1).strip()
        key, default = (text.split(":", 1) + [None])[:2] if ":" in text else (text, None)
        key = key.split("(")[0].strip()
        value = variables.get(key, default.strip() if default is not None else "")
        return str(value)

    doc = yaml.safe_load(re.sub(r"\{\{(.*?)}}", fill, template))
    for dotted, value in overrides.items():
        node = doc
        parts = dotted.split(".")
        # librdkafka property names contain dots: `kafka.consumer.fetch.wait.max.ms` keeps its tail.
        if parts[:2] in (["kafka", "consumer"], ["kafka", "producer"]):
            parts = parts[:2] + [".".join(parts[2:])]
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = value
    return yaml.safe_dump(doc, sort_keys=False)


def milvus_topics(dml_channels: int) -> list[str]:
    """Kafka topics Milvus 2.3.5 may produce to or consume from (common.chanNamePrefix.* with the
    cluster prefix; `rootcoord-dml_N` for N < rootCoord.dmlChannelNum). Extra ones cost nothing."""
    p = CLUSTER_PREFIX
    names = [f"{p}-rootcoord-dml_{i}" for i in range(dml_channels)]
    names += [f"{p}-rootcoord-delta_{i}" for i in range(dml_channels)]
    names += [f"{p}-{n}" for n in ("rootcoord-timetick", "rootcoord-statistics", "replicate-msg", "search",
                                   "searchResult", "queryTimeTick", "datacoord-statistics-channel",
                                   "datacoord-timetick-channel", "segment-info-channel")]
    return names


# ---------------------------------------------------------------------------------------------------
# process helpers


def proc_resources(pid: int) -> dict:
    """RSS (bytes) and CPU time (seconds, user + system) of one process, from /proc."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return {"rss": 0, "cpu_s": 0.0}
    rss = 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    fields = stat[stat.rindex(")") + 2:].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return {"rss": rss, "cpu_s": (int(fields[11]) + int(fields[12])) / ticks}


def metric_sum(url: str, name: str, timeout: float = 3.0, **labels) -> float | None:
    """Sum of the samples of `name` (matching `labels`, a value or a tuple of values each) at a
    /metrics URL: 0 when it has none (Milvus creates series lazily); None if unreachable."""
    try:
        text = promtext.fetch(url, timeout=timeout)
    except Exception:
        return None
    return promtext.value_sum(text, name, **labels) or 0.0


class CpuGroup:
    """A cgroup-v1 `cpu` group with a CFS quota: `share` of one core (0.25 = 25 %)."""

    def __init__(self, name: str, share: float, period_us: int = 100_000):
        self.path = CGROUP_CPU / name
        try:
            self.path.mkdir(exist_ok=False)
            (self.path / "cpu.cfs_period_us").write_text(str(period_us))
            (self.path / "cpu.cfs_quota_us").write_text(str(max(1000, int(share * period_us))))
        except OSError as e:
            self.remove()
            raise RuntimeError(
                f"cannot create the CPU cgroup {self.path} with a {share:.0%} quota ({e}); a query node "
                f"needs a fixed CPU share here (cgroup v1 `cpu` controller mounted and writable at {CGROUP_CPU}). "
                f"Refusing to run it unlimited.") from e
        self.share = share

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def throttled(self) -> dict:
        try:
            return dict(line.split() for line in (self.path / "cpu.stat").read_text().splitlines())
        except OSError:
            return {}

    def remove(self) -> None:
        """rmdir once the group is empty (the processes in it must be gone)."""
        for _ in range(50):
            if not self.path.exists():
                return
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)


class MilvusProcess:
    """One Milvus process: its own MILVUSCONF dir (milvus.yaml), METRICS_PORT and MILVUS_RUN_DIR."""

    def __init__(self, name: str, role: str, args: list[str], base: Path, binary: Path, yaml_text: str,
                 glog: Path, metrics_port: int, ports: dict, cgroup: "CpuGroup | None" = None):
        self.name, self.role, self.ports = name, role, ports
        self.dir = base / name
        self.conf_dir = self.dir / "configs"
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        (self.conf_dir / "milvus.yaml").write_text(yaml_text)
        shutil.copy(glog, self.conf_dir / "glog.conf")
        self.metrics_port = metrics_port
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        self.healthz_url = f"http://127.0.0.1:{metrics_port}/healthz"
        env = {
            "MILVUSCONF": str(self.conf_dir), "METRICS_PORT": str(metrics_port), "DEPLOY_MODE": "CLUSTER",
            "MILVUS_RUN_DIR": str(self.dir / "run"),
            "LD_LIBRARY_PATH": f"{binary.parent}:{os.environ.get('LD_LIBRARY_PATH', '')}".rstrip(":"),
        }
        cmd = [str(binary), "run", *args]
        if cgroup is not None:
            # Into the CPU group before exec, as a container starts inside its pod's cgroup: Milvus sizes
            # GOMAXPROCS (automaxprocs) and its pools from the quota it sees at start.
            cmd = ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(cgroup.path / "cgroup.procs"), *cmd]
        self.started_at = time.monotonic()
        self.service = Service(name, cmd, self.dir / f"{name}.log", env=env, cwd=self.dir)
        self.pid = self.service.pid

    def healthy(self) -> bool:
        return http_ok(self.healthz_url)

    def healthz(self) -> str:
        """What /healthz answers (for error messages)."""
        try:
            with urllib.request.urlopen(self.healthz_url, timeout=2) as r:
                return f"{r.status} {r.read()[:200]!r}"
        except urllib.error.HTTPError as e:
            return f"{e.code} {e.read()[:200]!r}"
        except Exception as e:
            return f"unreachable ({e})"

    def alive(self) -> bool:
        return self.service.alive()


class QueryNode:
    """A query node with its segment-cache sidecar (None when it reads S3 directly: `storage` is
    "direct") and CPU group; phase timestamps (monotonic)."""

    def __init__(self, name: str, proc: MilvusProcess, cache: SegmentCache | None, group: CpuGroup, grpc_port: int):
        self.name, self.proc, self.cache, self.group, self.grpc_port = name, proc, cache, group, grpc_port
        self.storage = "cache" if cache is not None else "direct"
        self.cache_dir: Path | None = cache.dir if cache is not None else None
        self.address = f"127.0.0.1:{grpc_port}"
        self.started_at = proc.started_at
        self.registered_at: float | None = None
        self.healthy_at: float | None = None
        self.node_id: int | None = None
        self.stopping = False
        self.cache_final: dict | None = None  # cache_reads() just before its sidecar stopped
        self.cache_metrics_final: str | None = None  # its sidecar's whole /metrics page then
        self.watcher: "PhaseWatcher | None" = None


PHASES = ("registered", "querycoord_sees", "assigned", "first_segment", "loaded", "serving")


class PhaseWatcher:
    """Times one query node's way to useful capacity from Milvus's own signals: a thread polling every
    `interval` seconds from its process start, until it has all phases or `timeout`. Phases, in
    seconds since the process started (`MilvusProcess.started_at`):

    - `registered`: its session is in etcd (`ServerName` querynode, its address);
    - `querycoord_sees`: `milvus_querycoord_querynode_num` counts it;
    - `assigned`: querycoord has segment/channel tasks (`milvus_querycoord_task_num`) after it registered:
      the balancer gave it work (in a quiet cluster, the only source of tasks);
    - `first_segment`: its `milvus_querynode_segment_num{segment_state="Sealed"}` is above 0;
    - `loaded`: when its sealed segment count last changed, once the count has then stayed the same for
      `settle` seconds with querycoord's task count at 0 throughout (the balance settled);
    - `serving`: its `milvus_querynode_sq_req_count` (search, FromLeader, success) is above 0: a shard
      leader sent it searches for its segments and it answered (needs a search load running).

    The record (`record`, also appended to `cluster.timings`) holds these, the node's name, id and
    storage, the final sealed segment count, and every change of that count (`segment_changes`)."""

    def __init__(self, cluster: "MilvusCluster", node: QueryNode, expected_nodes: int, interval: float = 0.25,
                 settle: float = 10.0, timeout: float = 900):
        self.cluster, self.node, self.expected_nodes = cluster, node, expected_nodes
        self.interval, self.settle, self.timeout = interval, settle, timeout
        self.at: dict[str, float] = {}  # phase -> monotonic time
        self.segment_changes: list[tuple[float, float]] = []  # (monotonic, sealed segment count)
        self.record: dict | None = None
        self.error: str | None = None
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"phases-{node.name}")
        self._thread.start()

    def _run(self) -> None:
        try:
            self._watch()
        except Exception as e:  # recorded: the caller's wait() raises it
            self.error = f"{type(e).__name__}: {e}"
        finally:
            self._finish()

    def _watch(self) -> None:
        c, node = self.cluster, self.node
        deadline = node.started_at + self.timeout
        quiet_since: float | None = None  # tasks 0 and count unchanged since then
        while not self._stop.is_set():
            now = time.monotonic()
            if now > deadline:
                missing = [p for p in PHASES if p not in self.at]
                self.error = f"{node.name}: no {', '.join(missing)} within {self.timeout:.0f}s of its start"
                return
            if "registered" not in self.at:
                if node.registered_at is None:
                    c._session_of(node)
                if node.registered_at is not None:
                    self.at["registered"] = node.registered_at
            if "querycoord_sees" not in self.at and (c.querycoord_nodes() or 0) >= self.expected_nodes:
                self.at["querycoord_sees"] = now
            tasks = c.querycoord_tasks()
            if "assigned" not in self.at and "registered" in self.at and (tasks or 0) > 0:
                self.at["assigned"] = now
            count = c.sealed_segments(node.name)
            if count is not None:
                if not self.segment_changes or self.segment_changes[-1][1] != count:
                    self.segment_changes.append((now, count))
                    quiet_since = None
                if count > 0 and "first_segment" not in self.at:
                    self.at["first_segment"] = now
                if "loaded" not in self.at and count > 0:
                    if tasks == 0:
                        quiet_since = quiet_since or now
                        if now - quiet_since >= self.settle:
                            self.at["loaded"] = self.segment_changes[-1][0]
                    else:
                        quiet_since = None
            if "serving" not in self.at and (c.searches_served(node.name) or 0) > 0:
                self.at["serving"] = now
            if all(p in self.at for p in PHASES):
                return
            self._stop.wait(self.interval)
        if not all(p in self.at for p in PHASES):
            self.error = f"{node.name} stopped before all phases: has {sorted(self.at)}"

    def _finish(self) -> None:
        t0 = self.node.started_at
        rel = lambda t: None if t is None else round(t - t0, 3)  # noqa: E731
        final = self.segment_changes[-1][1] if self.segment_changes else None
        self.record = {"node": self.node.name, "node_id": self.node.node_id, "storage": self.node.storage,
                       "cache_dir": str(self.node.cache_dir) if self.node.cache_dir else None,
                       **{p: rel(self.at.get(p)) for p in PHASES}, "segments": final,
                       "segment_changes": [(rel(t), n) for t, n in self.segment_changes], "error": self.error}
        with self.cluster._mutex:
            self.cluster.timings.append(self.record)
        self._done.set()

    def wait(self, timeout: float | None = None) -> dict:
        """The record once every phase is in; raises with what is missing otherwise."""
        if not self._done.wait(timeout if timeout is not None else self.timeout + 30):
            raise TimeoutError(f"{self.node.name}: phase watcher still running; has {sorted(self.at)}")
        if self.error:
            raise RuntimeError(self.error)
        return self.record

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


# ---------------------------------------------------------------------------------------------------
# the cluster


S3_SERVERS = {"moto": Moto, "s3s-fs": S3sFs}  # MilvusCluster(s3=...)


class MilvusCluster:
    """A real Milvus 2.3.5 cluster (see the module docstring). Use as a context manager, or
    `start()` ... `stop()` (idempotent, also run when `start()` fails).

    Holds the machine-wide Milvus lock (`Milvus.LOCK_PATH`) from `start()` to `stop()`, so that it and a
    standalone Milvus never run at once."""

    def __init__(self, query_nodes: int = 2, query_node_cpu: float = 0.25, cache_capacity: str = "2GiB",
                 dml_channels: int = 2, graceful_stop_timeout: int = 10, session_ttl: int = 10,
                 extra: dict | None = None, query_node_extra: dict | None = None, lock_timeout: float = 1800,
                 shaper: dict | bool | None = None, cache_binary: str | None = None,
                 cache_sections: dict | None = None, s3: str = "moto"):
        self.initial_query_nodes = query_nodes
        self.query_node_cpu = query_node_cpu
        self.cache_capacity = cache_capacity
        self.dml_channels = dml_channels
        self.graceful_stop_timeout = graceful_stop_timeout
        self.session_ttl = session_ttl
        self.extra = dict(extra or {})
        self.query_node_extra = dict(query_node_extra or {})
        self.lock_timeout = lock_timeout
        # True or Shaper keyword arguments (first_byte_delay, bytes_per_second): query nodes read
        # S3 through a shaping proxy; None: straight from the S3 server.
        self.shaper_options = ({} if shaper is True else dict(shaper)) if shaper else None
        self.shaper: Shaper | None = None
        self.cache_binary = cache_binary  # None: target/debug/segment-cache
        # Additions to the sidecars' config, per top-level section, e.g. {"read_ahead": {"enabled": False}}.
        self.cache_sections = dict(cache_sections or {})
        self.ports = LowPorts()
        self.dir: Path | None = None
        self.runid = f"{os.getpid()}-{int(time.time())}"
        self.etcd: Service | None = None
        self.broker: Service | None = None
        if s3 not in S3_SERVERS:
            raise ValueError(f"s3 must be one of {sorted(S3_SERVERS)}, got {s3!r}")
        self.s3_kind = s3
        self.s3: Moto | S3sFs | None = None  # the S3 server every process reads and writes
        self.procs: dict[str, MilvusProcess] = {}  # singletons: coordinators, proxy, datanode, indexnode
        self.nodes: dict[str, QueryNode] = {}  # running (or stopping) query nodes, oldest first
        self.gone: list[QueryNode] = []
        self.timings: list[dict] = []  # per query node: phases, seconds since its process started
        self._seq = 0
        self._lock_file = None
        self._mutex = threading.RLock()
        self._stopped = False
        self.started = False

    # -- lifecycle -----------------------------------------------------------------------------------

    def __enter__(self) -> "MilvusCluster":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "MilvusCluster":
        self._lock_file = open(Milvus.LOCK_PATH, "a+")
        wait_until(lambda: _try_lock(self._lock_file), self.lock_timeout, f"the Milvus lock {Milvus.LOCK_PATH}",
                   interval=1.0)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self.started = True
        return self

    def _start(self) -> None:
        self.dir = run_dir("cluster")
        self.binary = milvus_binary()
        self.template, self.glog = milvus_template()
        self.phase_log: list[tuple[str, float]] = []
        t0 = time.monotonic()

        # etcd
        self.etcd_port, peer = self.ports.take(), self.ports.take()
        etcd_url, peer_url = f"http://127.0.0.1:{self.etcd_port}", f"http://127.0.0.1:{peer}"
        etcd_bin = shutil.which("etcd")
        if not etcd_bin:
            raise RuntimeError("etcd not found: run `make setup` (apt-get install etcd-server)")
        self.etcd = Service("etcd", [
            etcd_bin, "--name", "milvus-e2e", "--data-dir", str(self.dir / "etcd"),
            "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
            "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"milvus-e2e={peer_url}", "--initial-cluster-state", "new",
            "--auto-compaction-mode", "revision", "--auto-compaction-retention", "1000",
            "--quota-backend-bytes", str(4 * 1024 ** 3),
        ], self.dir / "etcd.log")
        self._wait_component("etcd", lambda: _etcd_healthy(etcd_url), 60, self.etcd)
        self.etcd_url = etcd_url
        self.phase_log.append(("etcd", time.monotonic() - t0))

        # broker, with the topics Milvus uses (tansu 0.6.0 creates none by itself)
        self.kafka_port = self.ports.take()
        kafka_url = f"tcp://127.0.0.1:{self.kafka_port}"
        tansu = tansu_binary()
        (self.dir / "broker").mkdir(exist_ok=True)
        self.broker = Service("broker", [
            tansu, "broker", "--listener-url", kafka_url, "--advertised-listener-url", kafka_url,
            "--storage-engine", "memory://tansu/", "--cluster-id", "milvus-e2e",
        ], self.dir / "broker.log", env={"RUST_LOG": os.environ.get("TANSU_LOG", "warn")}, cwd=self.dir / "broker")
        self._wait_component("broker (tansu)", lambda: port_open(self.kafka_port), 60, self.broker)
        self.topics = milvus_topics(self.dml_channels)
        for topic in self.topics:
            r = subprocess.run([tansu, "topic", "create", "--broker", kafka_url, "--partitions", "1", topic],
                               capture_output=True, text=True, timeout=60, cwd=self.dir / "broker")
            if r.returncode != 0:
                raise RuntimeError(f"creating topic {topic} on tansu failed ({r.returncode}): {r.stderr[-2000:]}")
        self.phase_log.append(("broker+topics", time.monotonic() - t0))

        # S3
        self.s3 = S3_SERVERS[self.s3_kind]()
        self.s3.client("s3").create_bucket(Bucket=BUCKET)
        if self.shaper_options is not None:
            self.shaper = Shaper(self.s3.port, port=self.ports.take(), stats_port=self.ports.take(),
                                 log_dir=self.dir, **self.shaper_options)
        self.phase_log.append((self.s3_kind, time.monotonic() - t0))

        # Milvus: fixed ports for the singletons, shared by every process's milvus.yaml.
        self.role_ports = {
            "rootcoord": self.ports.take(), "datacoord": self.ports.take(), "querycoord": self.ports.take(),
            "proxy": self.ports.take(), "proxy_internal": self.ports.take(), "datanode": self.ports.take(),
            "indexnode": self.ports.take(),
        }
        self.proxy_port = self.role_ports["proxy"]
        self.proxy_uri = f"http://127.0.0.1:{self.proxy_port}"

        coord = self._spawn("coordinators", "mixture", ["mixture", "-rootcoord", "-datacoord", "-querycoord"])
        self._wait_milvus(coord, 180)
        self.phase_log.append(("coordinators", time.monotonic() - t0))
        datanode = self._spawn("datanode", "datanode", ["datanode"])
        indexnode = self._spawn("indexnode", "indexnode", ["indexnode"])
        self._wait_milvus(datanode, 180)
        self._wait_milvus(indexnode, 180)
        self.phase_log.append(("datanode+indexnode", time.monotonic() - t0))
        for _ in range(self.initial_query_nodes):
            self.add_query_node()
        self.phase_log.append(("query nodes", time.monotonic() - t0))
        proxy = self._spawn("proxy", "proxy", ["proxy"])
        self._wait_milvus(proxy, 180)
        self._wait_component("proxy gRPC", lambda: port_open(self.proxy_port), 60, proxy.service)
        self.phase_log.append(("proxy", time.monotonic() - t0))

    def stop(self) -> None:
        """Query nodes first (while the coordinators can still take their segments), then proxy, data
        node, index node, coordinators, broker, etcd, the S3 server. Every process by its PID. Idempotent."""
        with self._mutex:
            if self._stopped:
                return
            self._stopped = True
            # All query nodes at once: each waits at most its graceful-stop timeout.
            nodes = list(self.nodes.values())
            for node in nodes:
                node.proc.service.signal(signal.SIGTERM)
            for node in nodes:
                self._finish_query_node(node, self.graceful_stop_timeout + 20)
            for name in ("proxy", "datanode", "indexnode", "coordinators"):
                p = self.procs.get(name)
                if p is not None:
                    p.service.stop(timeout=15)
            if self.broker is not None:
                self.broker.stop(timeout=10)
            if self.etcd is not None:
                self.etcd.stop(timeout=10)
            if self.shaper is not None:
                self.shaper.stop()
            if self.s3 is not None:
                self.s3.stop()
            if self._lock_file is not None:
                self._lock_file.close()
                self._lock_file = None

    # -- query nodes ---------------------------------------------------------------------------------

    @property
    def upstream_port(self) -> int:
        """Where query nodes (or their sidecars) read S3: the shaper if there is one, else the S3 server."""
        return self.shaper.port if self.shaper is not None else self.s3.port

    def add_query_node(self, timeout: float = 180, storage: str = "cache", cache_dir: Path | None = None,
                       watch: bool = False, watch_options: dict | None = None) -> str:
        """Starts one query node (segment-cache sidecar, CPU group, process) and returns its name once
        it is healthy and registered in etcd.

        `storage`: "cache" (through its own segment-cache) or "direct" (Milvus's minio client straight
        to the upstream, no sidecar). `cache_dir`: the sidecar's directory, e.g. a stopped node's
        `cache_dir` (default: a new one). `watch`: time its phases (`PhaseWatcher`, into `timings`)."""
        if storage not in ("cache", "direct"):
            raise ValueError(f"storage must be 'cache' or 'direct', got {storage!r}")
        if storage == "direct" and cache_dir is not None:
            raise ValueError("cache_dir is for storage='cache'; a direct query node has no cache")
        with self._mutex:
            if self._stopped:
                raise RuntimeError("the cluster is stopped")
            if cache_dir is not None:
                users = [n.name for n in self.nodes.values() if n.cache_dir == Path(cache_dir)]
                if users:
                    raise RuntimeError(f"cache dir {cache_dir} is in use by running query node(s) {users}: stop them "
                                       f"first (two sidecars on one directory would corrupt it)")
            self._seq += 1
            name = f"querynode-{self._seq}"
            expected_nodes = len([n for n in self.nodes.values() if not n.stopping]) + 1
        cache = group = proc = None
        upstream = f"http://127.0.0.1:{self.upstream_port}"
        try:
            group = CpuGroup(f"milvus-scaler-{self.runid}-qn{self._seq}", self.query_node_cpu)
            if storage == "cache":
                cache = SegmentCache(upstream, BUCKET, capacity=self.cache_capacity,
                                     cache_dir=Path(cache_dir) if cache_dir else self.dir / name / "nvme",
                                     binary=self.cache_binary, extra_sections=self.cache_sections,
                                     port=self.ports.take(), telemetry_port=self.ports.take())
                s3 = {"address": "127.0.0.1", "port": cache.port, "access_key": ACCESS_KEY, "secret_key": SECRET_KEY}
            else:
                s3 = {"address": "127.0.0.1", "port": self.upstream_port, "access_key": "testing",
                      "secret_key": "testing"}
            grpc_port = self.ports.take()
            proc = self._spawn(name, "querynode", ["querynode", "-alias", name], s3=s3, qn_port=grpc_port,
                               extra=self.query_node_extra, cgroup=group)
            wait_until(lambda: proc.pid in group.pids() or not proc.alive(), 10, f"{name} in {group.path}")
            if proc.pid not in group.pids():
                raise RuntimeError(f"{name} (pid {proc.pid}) did not enter {group.path}: {proc.service.tail()}")
            node = QueryNode(name, proc, cache, group, grpc_port)
            with self._mutex:
                self.nodes[name] = node
            if watch:
                node.watcher = PhaseWatcher(self, node, expected_nodes, **(watch_options or {}))
        except BaseException:
            for thing in (proc and proc.service, cache):
                if thing is not None:
                    thing.stop()
            if group is not None:
                group.remove()
            raise
        try:
            wait = lambda: node.proc.healthy() and self._session_of(node) is not None  # noqa: E731
            self._wait_component(f"query node {name}", wait, timeout, proc.service)
        except BaseException as e:
            try:
                state = f"/healthz: {proc.healthz()}; etcd session: {self._session_of(node)}"
            except Exception as why:
                state = f"state unknown ({why})"
            self.stop_query_node(name, graceful=False)
            if isinstance(e, RuntimeError):
                raise RuntimeError(f"{e}\n{state}") from e
            raise
        node.healthy_at = time.monotonic()
        return name

    def stop_query_node(self, name: str, graceful: bool = True) -> dict:
        """SIGTERM (graceful: querycoord moves its segments away first) and wait up to
        queryNode.gracefulStopTimeout + a margin, then SIGKILL; or SIGKILL at once. Stops its
        segment-cache and removes its CPU group. Returns the stop's timings."""
        with self._mutex:
            node = self.nodes.get(name)
            if node is None:
                raise KeyError(f"no running query node {name!r} (running: {self.query_nodes()})")
            node.stopping = True
        t0 = time.monotonic()
        node.proc.service.signal(signal.SIGTERM if graceful else signal.SIGKILL)
        how = self._finish_query_node(node, self.graceful_stop_timeout + 20 if graceful else 30)
        return {"node": name, "graceful": graceful, "exit": how, "stop_s": time.monotonic() - t0}

    def _finish_query_node(self, node: QueryNode, timeout: float) -> str:
        svc = node.proc.service
        how = "exited"
        try:
            svc.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            how = "killed after timeout"
        svc.stop(timeout=1)  # SIGKILL to whatever is left in its process group, closes the log
        node.node_exit_code = svc.popen.returncode
        if node.watcher is not None:
            node.watcher.stop()
        if node.cache is not None:
            try:
                node.cache_metrics_final = node.cache.metrics_text()
                node.cache_final = cache_reads(node.cache, node.cache_metrics_final)
            except Exception:
                node.cache_final = None
            node.cache.stop()
        node.group.remove()
        with self._mutex:
            self.nodes.pop(node.name, None)
            self.gone.append(node)
        return how

    def query_nodes(self) -> list[str]:
        """Names of running query nodes (not being stopped), oldest first."""
        with self._mutex:
            return [n for n, node in self.nodes.items() if not node.stopping and node.proc.alive()]

    def node(self, name: str) -> QueryNode:
        return self.nodes[name]

    # -- observation ---------------------------------------------------------------------------------

    def metrics_targets(self) -> dict[str, list[str]]:
        """`http://127.0.0.1:PORT/metrics` of every Milvus process, per role, and under "all"."""
        out: dict[str, list[str]] = {"coordinators": [], "proxy": [], "datanode": [], "indexnode": [],
                                     "querynode": []}
        for name, p in self.procs.items():
            out[name].append(p.metrics_url)
        out["querynode"] = [n.proc.metrics_url for n in self.nodes.values() if not n.stopping]
        out["all"] = [u for role, urls in out.items() for u in urls]
        return out

    def cache_targets(self) -> dict[str, str]:
        """Each running query node's segment-cache /metrics."""
        return {n.name: f"{n.cache.telemetry}/metrics" for n in self.nodes.values() if n.cache is not None}

    def sessions(self) -> list[dict]:
        """Milvus's etcd sessions (ServerName, ServerID, Address, ...)."""
        prefix = f"{CLUSTER_PREFIX}/meta/session/"
        out = []
        for _, v in _etcd_range(self.etcd_url, prefix):  # also holds non-session keys (`id`: a counter)
            try:
                doc = json.loads(v)
            except ValueError:
                continue
            if isinstance(doc, dict):
                out.append(doc)
        return out

    def _session_of(self, node: QueryNode) -> dict | None:
        for s in self.sessions():
            if s.get("ServerName") == "querynode" and s.get("Address") == node.address:
                if node.registered_at is None:
                    node.registered_at = time.monotonic()
                    node.node_id = s.get("ServerID")
                return s
        return None

    def sealed_segments(self, name: str) -> float | None:
        node = self.nodes.get(name)
        if node is None:
            return None
        return metric_sum(node.proc.metrics_url, "milvus_querynode_segment_num", segment_state="Sealed")

    def entities(self, name: str) -> float | None:
        node = self.nodes.get(name)
        if node is None:
            return None
        return metric_sum(node.proc.metrics_url, "milvus_querynode_entity_num")

    def searches_served(self, name: str) -> float | None:
        """Search requests this node executed for a shard leader (its own segments)."""
        node = self.nodes.get(name)
        if node is None:
            return None
        return metric_sum(node.proc.metrics_url, "milvus_querynode_sq_req_count", query_type="search",
                          scope="FromLeader", status="success")

    def querycoord_nodes(self) -> float | None:
        coord = self.procs.get("coordinators")
        return metric_sum(coord.metrics_url, "milvus_querycoord_querynode_num") if coord else None

    def querycoord_tasks(self) -> float | None:
        """Segment and channel tasks in querycoord's scheduler (grow, move, reduce): 0 once it has
        nothing left to load, move or release."""
        coord = self.procs.get("coordinators")
        if coord is None:
            return None
        return metric_sum(coord.metrics_url, "milvus_querycoord_task_num", querycoord_task_type=tuple(
            f"{kind}_{action}" for kind in ("segment", "channel") for action in ("grow", "move", "reduce")))

    def resources(self) -> dict[str, dict]:
        """RSS and CPU seconds of every process of the cluster (Milvus, sidecars, etcd, broker, S3 server)."""
        out = {}
        for name, p in self.procs.items():
            out[name] = proc_resources(p.pid)
        for name, n in self.nodes.items():
            out[name] = proc_resources(n.proc.pid)
            if n.cache is not None:
                out[f"{name}/segment-cache"] = proc_resources(n.cache.service.pid)
        for name, svc in (("etcd", self.etcd), ("broker", self.broker), (self.s3_kind, self.s3 and self.s3.service),
                          ("shaper", self.shaper and self.shaper.service)):
            if svc is not None:
                out[name] = proc_resources(svc.pid)
        return out

    # -- internals -----------------------------------------------------------------------------------

    def _spawn(self, name: str, role: str, args: list[str], s3: dict | None = None, qn_port: int | None = None,
               extra: dict | None = None, cgroup: CpuGroup | None = None) -> MilvusProcess:
        base = self.dir
        proc_dir = base / name
        rp = self.role_ports
        s3 = s3 or {"address": "127.0.0.1", "port": self.s3.port, "access_key": "testing", "secret_key": "testing"}
        overrides = {
            "etcd.endpoints": f"127.0.0.1:{self.etcd_port}",
            "etcd.use.embed": False,
            "etcd.data.dir": str(proc_dir / "etcd-unused"),
            "etcd.log.path": "stdout",
            "localStorage.path": str(proc_dir / "local"),
            "common.storageType": "minio",
            "minio.address": s3["address"], "minio.port": s3["port"], "minio.bucketName": BUCKET,
            "minio.rootPath": "files", "minio.accessKeyID": s3["access_key"],
            "minio.secretAccessKey": s3["secret_key"], "minio.useSSL": False, "minio.region": "us-east-1",
            "mq.type": "kafka",
            "kafka.brokerList": f"127.0.0.1:{self.kafka_port}",
            "kafka.securityProtocol": "PLAINTEXT",
            # tansu answers a Fetch only after sleeping half its max wait: keep the wait short.
            "kafka.consumer.fetch.wait.max.ms": "100",
            "rootCoord.dmlChannelNum": self.dml_channels,
            "queryCoord.autoBalance": True,
            "queryNode.gracefulStopTimeout": self.graceful_stop_timeout,
            "common.session.ttl": self.session_ttl,
            "common.gracefulStopTimeout": max(30, self.graceful_stop_timeout + 10),
            "log.file.rootPath": "",
            "log.level": "info",
        }
        for role, section in ROLE_SECTIONS.items():
            overrides[f"{section}.ip"] = "127.0.0.1"
        for role in ("rootcoord", "datacoord", "querycoord", "proxy", "datanode", "indexnode"):
            overrides[f"{ROLE_SECTIONS[role]}.port"] = rp[role]
        overrides["proxy.internalPort"] = rp["proxy_internal"]
        overrides["queryNode.port"] = qn_port or self.ports.take()
        overrides.update(self.extra)
        overrides.update(extra or {})
        variables = {"etcd_data_dir": proc_dir / "etcd-unused", "local_storage_dir": proc_dir / "local",
                     "rocksmq_data_dir": proc_dir / "rocksmq", "system_log_path": ""}
        text = render_milvus_yaml(self.template, variables, overrides)
        proc = MilvusProcess(name, role, args, base, self.binary, text, self.glog, self.ports.take(), rp, cgroup)
        if name in ("coordinators", "proxy", "datanode", "indexnode"):
            self.procs[name] = proc
        return proc

    def _wait_milvus(self, proc: MilvusProcess, timeout: float) -> None:
        self._wait_component(proc.name, proc.healthy, timeout, proc.service)

    def _wait_component(self, what: str, predicate, timeout: float, service: Service) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if predicate():
                    return
            except Exception:
                pass
            if not service.alive():
                raise RuntimeError(f"{what} did not come up: its process exited with {service.popen.returncode}; "
                                   f"log {service.log_path}:\n{service.tail(40)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not come up within {timeout:.0f}s; log {service.log_path}:\n"
                                   f"{service.tail(40)}")
            time.sleep(0.3)


def cache_reads(cache: SegmentCache, text: str | None = None) -> dict:
    """What a segment-cache served: object reads (GET + HEAD) and GET bytes, by hit / miss (from
    `text`, a /metrics page of it, or its live one)."""
    text = text if text is not None else cache.metrics_text()
    out = {}
    for result in ("hit", "miss"):
        out[result] = promtext.value_sum(text, "segment_cache_requests_total", result=result,
                                         op=("get", "head")) or 0.0
        out[f"{result}_bytes"] = promtext.value_sum(text, "segment_cache_served_bytes_total", result=result) or 0.0
    return out


def _etcd_healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return json.load(r).get("health") == "true"
    except Exception:
        return False


def _etcd_range(url: str, prefix: str) -> list[tuple[str, str]]:
    """Keys and values under `prefix`, through etcd's v3 JSON gateway."""
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    body = json.dumps({"key": base64.b64encode(prefix.encode()).decode(),
                       "range_end": base64.b64encode(end.encode()).decode()}).encode()
    req = urllib.request.Request(f"{url}/v3/kv/range", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=3) as r:
        kvs = json.load(r).get("kvs", [])
    return [(base64.b64decode(kv["key"]).decode(), base64.b64decode(kv.get("value", "")).decode()) for kv in kvs]


# ---------------------------------------------------------------------------------------------------
# the scale subresource


SCALE_PATH = "/apis/apps/v1/namespaces/milvus/deployments/querynode/scale"


class QueryNodeScaleEndpoint:
    """A FAKE of kube-apiserver's scale subresource (`autoscaling/v1` Scale) for the query-node
    Deployment `milvus/querynode`, backed by a `MilvusCluster` — kube-apiserver cannot run on these
    machines. It is not Kubernetes: no authentication, one object, one path.

    `GET  /apis/apps/v1/namespaces/milvus/deployments/querynode/scale` returns the Scale (spec.replicas:
    desired; status.replicas: running query nodes). `PUT` to the same path with a Scale body sets the
    desired replicas and returns the updated Scale; bad input gets 400 with a Kubernetes `Status`, a
    stale `metadata.resourceVersion` 409, other paths 404.

    A reconciler thread moves the running query nodes toward spec.replicas ONE AT A TIME, like a
    Deployment controller: add one node and wait until it is registered, or gracefully stop the
    newest one and wait until its process exited; then look again. Every event is recorded in
    `events` (dicts: t (monotonic), time (wall clock), action, node, reason)."""

    def __init__(self, cluster: MilvusCluster, max_replicas: int = 16, interval: float = 0.5):
        self.cluster = cluster
        self.max_replicas = max_replicas
        self.interval = interval
        self.events: list[dict] = []
        self._cond = threading.Condition()
        self._desired = len(cluster.query_nodes())
        self._rv = 1
        self._stop = threading.Event()
        self.busy = False
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, code: int, body: dict) -> None:
                send_json(self, code, body)

            def do_GET(self):
                if self.path.split("?")[0] != SCALE_PATH:
                    return self._send(404, _status(404, "NotFound", f"the server could not find {self.path}"))
                self._send(200, endpoint.scale())

            def do_PUT(self):
                if self.path.split("?")[0] != SCALE_PATH:
                    return self._send(404, _status(404, "NotFound", f"the server could not find {self.path}"))
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                    body = json.loads(self.rfile.read(length) or b"null")
                except (ValueError, UnicodeDecodeError) as e:
                    return self._send(400, _status(400, "BadRequest", f"request body is not JSON: {e}"))
                code, answer = endpoint.put(body)
                self._send(code, answer)

            def do_POST(self):
                self._send(405, _status(405, "MethodNotAllowed", "only GET and PUT are served"))

            do_PATCH = do_DELETE = do_POST

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}{SCALE_PATH}"
        self._threads = [threading.Thread(target=self.server.serve_forever, daemon=True, name="scale-http"),
                         threading.Thread(target=self._reconcile, daemon=True, name="scale-reconciler")]
        for t in self._threads:
            t.start()

    # -- API -----------------------------------------------------------------------------------------

    def scale(self) -> dict:
        with self._cond:
            desired, rv = self._desired, self._rv
        return {
            "apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {"name": "querynode", "namespace": "milvus", "resourceVersion": str(rv)},
            "spec": {"replicas": desired},
            "status": {"replicas": len(self.cluster.query_nodes()),
                       "selector": "app.kubernetes.io/component=querynode"},
        }

    def put(self, body) -> tuple[int, dict]:
        """Validates a Scale body and sets spec.replicas: (HTTP code, Scale or Status)."""
        if not isinstance(body, dict):
            return 400, _status(400, "BadRequest", "the body must be a JSON object of kind Scale")
        if body.get("kind", "Scale") != "Scale":
            return 400, _status(400, "BadRequest", f"kind must be Scale, got {body.get('kind')!r}")
        if body.get("apiVersion", "autoscaling/v1") != "autoscaling/v1":
            return 400, _status(400, "BadRequest", f"apiVersion must be autoscaling/v1, got {body.get('apiVersion')!r}")
        meta = body.get("metadata") or {}
        if not isinstance(meta, dict):
            return 400, _status(400, "BadRequest", "metadata must be an object")
        if meta.get("name", "querynode") != "querynode" or meta.get("namespace", "milvus") != "milvus":
            return 400, _status(400, "BadRequest", "metadata.name/namespace must be querynode/milvus "
                                                   "(the name of the object in the URL)")
        spec = body.get("spec")
        replicas = spec.get("replicas") if isinstance(spec, dict) else None
        if not isinstance(replicas, int) or isinstance(replicas, bool):
            return 400, _status(400, "BadRequest", "spec.replicas: Required value: an integer")
        if replicas < 0:
            return 400, _status(400, "BadRequest", f"spec.replicas: Invalid value: {replicas}: must be greater "
                                                   f"than or equal to 0")
        if replicas > self.max_replicas:
            return 400, _status(400, "BadRequest", f"spec.replicas: Invalid value: {replicas}: this test cluster "
                                                   f"allows at most {self.max_replicas}")
        with self._cond:
            rv = meta.get("resourceVersion")
            if rv not in (None, "") and str(rv) != str(self._rv):
                return 409, _status(409, "Conflict", "Operation cannot be fulfilled on deployments.apps "
                                                     "\"querynode\": the object has been modified; please apply "
                                                     "your changes to the latest version and try again")
            if replicas != self._desired:
                self._record("spec", None, f"spec.replicas {self._desired} -> {replicas}")
                self._desired = replicas
                self._rv += 1
            self._cond.notify_all()
        return 200, self.scale()

    def set_replicas(self, replicas: int) -> dict:
        """PUT through HTTP, as a client would."""
        body = json.dumps({"apiVersion": "autoscaling/v1", "kind": "Scale",
                           "metadata": {"name": "querynode", "namespace": "milvus"},
                           "spec": {"replicas": replicas}}).encode()
        req = urllib.request.Request(self.url, data=body, method="PUT", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)

    def get(self) -> dict:
        with urllib.request.urlopen(self.url, timeout=10) as r:
            return json.load(r)

    def converged(self) -> bool:
        with self._cond:
            desired = self._desired
        return not self.busy and len(self.cluster.query_nodes()) == desired

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self.server.shutdown()
        self.server.server_close()
        self._threads[1].join(timeout=self.cluster.graceful_stop_timeout + 60)

    def __enter__(self) -> "QueryNodeScaleEndpoint":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- reconciler ----------------------------------------------------------------------------------

    def _record(self, action: str, node: str | None, reason: str, **more) -> None:
        self.events.append({"t": time.monotonic(), "time": time.time(), "action": action, "node": node,
                            "reason": reason, **more})

    def _reconcile(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            with self._cond:
                desired = self._desired
            running = self.cluster.query_nodes()
            try:
                if len(running) < desired:
                    self.busy = True
                    reason = f"running {len(running)} < spec.replicas {desired}"
                    self._record("add", None, reason)
                    t0 = time.monotonic()
                    name = self.cluster.add_query_node()
                    self._record("added", name, reason, seconds=round(time.monotonic() - t0, 2))
                    backoff = 1.0
                    continue
                if len(running) > desired:
                    self.busy = True
                    newest = running[-1]
                    reason = f"running {len(running)} > spec.replicas {desired}"
                    self._record("remove", newest, reason)
                    result = self.cluster.stop_query_node(newest, graceful=True)
                    self._record("removed", newest, reason, seconds=round(result["stop_s"], 2), exit=result["exit"])
                    backoff = 1.0
                    continue
            except Exception as e:  # recorded; a Deployment controller retries
                self._record("error", None, f"{type(e).__name__}: {str(e)[:2000]}")
                if self._stop.wait(backoff):
                    break
                backoff = min(backoff * 2, 30)
                continue
            finally:
                pass
            self.busy = False
            with self._cond:
                self._cond.wait(self.interval)


def _status(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}
