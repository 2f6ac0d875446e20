"""`make run`: the closed loop on a real Milvus 2.3.5 cluster, with a live view.

Starts a real multi-process Milvus 2.3.5 cluster on loopback (etcd, a Kafka-API broker, moto as S3,
coordinators, proxy, data and index node, and one query node with 15 % of a core and its own
segment-cache sidecar), creates and loads the collection `demo_load`, measures what one query node
serves, then closes the loop: milvus-scaler scrapes the cluster and serves its external metrics API
(mutual TLS); `milvus-scaler local-hpa` (the Kubernetes HPA algorithm) runs the shipped HPA example
(manifests/examples/hpa-querynode.yaml, target from the measured capacity) against a fake of
kube-apiserver's scale subresource, which starts and gracefully stops real query-node processes.

Then it refreshes a view every second: sparklines (one column per second) of the search rate, the
`search_demand` signal the HPA follows, desired and serving query nodes, queue depth and p99 latency,
the last scale events with local-hpa's reasons and, for each query node added, the seconds to each
scale-out phase as milvus-scaler times them from its scrapes (up, registered, first segment, settled,
serving; from its log), and the segment-caches' hit ratio. `make load` in
another terminal drives quiet → 10x spike → cool-down; capacity follows load.

`--standalone` keeps the earlier view: one Milvus standalone behind segment-cache, milvus-scaler with
both APIs and the node-group planner against moto, Prometheus. `--once` comes up, prints one view and
stops (the tests use it). Ctrl-C stops everything this started, by PID.
"""
from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from collections import deque
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.procs import REPO, RUN_DIR  # noqa: E402

DEMO_FILE = RUN_DIR / "demo.json"  # what `make load` reads
LOAD_STATUS = RUN_DIR / "load-status.json"  # what `make load` writes while it runs (offered rate)
SHIPPED_HPA = REPO / "manifests" / "examples" / "hpa-querynode.yaml"
COLLECTION = "demo_load"
INSTANCE, NAMESPACE = "demo", "milvus"
UTILISATION = 0.6  # the shipped example's target: 60 % of one node's measured capacity
# Searches heavy on the query node (10 vectors each, nprobe 64) and light on the proxy and the Python
# client, so that one more query node is more capacity on a 2-core machine (as test_closed_loop.py).
NQ, NPROBE = 10, 64
BARS = "▁▂▃▄▅▆▇█"
UNKNOWN = "·"
NO_SAMPLE = object()  # columns older than the first sample: drawn blank


# ---------------------------------------------------------------------------------------------------
# small helpers


def saturation_throughput(coll, seconds: float = 20.0) -> float:
    """Searches per second one query node completes when kept busy (nq 10, nprobe 64: what
    `make load`'s searches are), as tests/e2e/test_closed_loop.py measures it."""
    from harness import workload

    return workload.saturation_throughput(coll, NQ, NPROBE, seconds=seconds)


def parse_metrics(text: str) -> dict[str, list[tuple[str, float]]]:
    """Prometheus text → {name: [(labels, value)]}."""
    out: dict[str, list[tuple[str, float]]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        name, _, labels = series.partition("{")
        try:
            out.setdefault(name, []).append((labels, float(value)))
        except ValueError:
            continue
    return out


def fetch(url: str, timeout: float = 2.0) -> str | None:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.read().decode()
    except Exception:
        return None


def signal_values(text: str | None, instance: str) -> dict[str, float | None]:
    """milvus-scaler telemetry → {signal: value, or None while unknown}."""
    if text is None:
        return {}
    m = parse_metrics(text)
    known = {}
    for labels, v in m.get("milvus_scaler_signal_known", []):
        if f'milvus="{instance}"' in labels and "collection=" not in labels:
            known[_label(labels, "signal")] = v == 1.0
    out: dict[str, float | None] = {}
    for labels, v in m.get("milvus_scaler_signal_value", []):
        if f'milvus="{instance}"' in labels and "collection=" not in labels:
            s = _label(labels, "signal")
            out[s] = v if known.get(s) else None
    for s, k in known.items():
        out.setdefault(s, None)
    return out


def _label(labels: str, key: str) -> str:
    start = labels.find(f'{key}="')
    if start < 0:
        return ""
    start += len(key) + 2
    return labels[start:labels.index('"', start)]


def parse_time(stamp: str | None) -> float | None:
    """tracing's RFC 3339 timestamp → epoch seconds."""
    if not stamp:
        return None
    s = stamp.replace("Z", "+00:00")
    if "." in s:  # fromisoformat takes at most 6 fractional digits
        head, _, rest = s.partition(".")
        digits = "".join(c for c in rest if c.isdigit())
        s = f"{head}.{digits[:6]}{rest[len(digits):]}"
    try:
        return dt.datetime.fromisoformat(s).timestamp()
    except ValueError:
        return None


def sparkline(values: list[float | None], top: float) -> str:
    """One character per value: blank for 0, ▁..█ for (0, top], · for unknown."""
    out = []
    for v in values:
        if v is NO_SAMPLE:
            out.append(" ")
        elif v is None:
            out.append(UNKNOWN)
        elif v <= 0 or top <= 0:
            out.append(" ")
        else:
            out.append(BARS[max(0, min(len(BARS) - 1, math.ceil(v / top * len(BARS)) - 1))])
    return "".join(out)


def nice_top(values: list[float | None], floor: float) -> float:
    """A round upper bound (1, 2, 2.5, 5 x 10^k) for a row's scale, at least `floor`."""
    peak = max([v for v in values if v is not None] + [floor])
    exp = 10 ** math.floor(math.log10(peak)) if peak > 0 else 1
    for step in (1, 2, 2.5, 5, 10):
        if step * exp >= peak:
            return step * exp
    return 10 * exp


def fmt(v: float | None, unit: str = "", digits: int = 3) -> str:
    if v is None:
        return "unknown"
    if abs(v) >= 100:
        text = f"{v:,.0f}"
    else:
        text = f"{v:.{digits}g}"
    return text + unit


def hhmmss(epoch: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch))


def lock_busy(path: Path) -> bool:
    """Whether another Milvus on this machine holds the machine-wide lock right now (for a message)."""
    try:
        with open(path, "a+") as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    except OSError:
        pass
    return False


def write_demo_file(info: dict) -> None:
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    tmp = DEMO_FILE.with_suffix(".tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    tmp.replace(DEMO_FILE)


def remove_demo_file() -> None:
    try:
        if json.loads(DEMO_FILE.read_text()).get("pid") == os.getpid():
            DEMO_FILE.unlink()
    except (OSError, ValueError):
        pass


def read_load_status() -> dict | None:
    """`make load`'s current phase and offered rate, if it is running (written every second)."""
    try:
        status = json.loads(LOAD_STATUS.read_text())
    except (OSError, ValueError):
        return None
    if time.time() - status.get("time", 0) > 3:
        return None
    return status


# ---------------------------------------------------------------------------------------------------
# scale-out phases (milvus-scaler's log: one JSON line per phase a new query node completes)

SCALE_OUT_MESSAGE = "scale-out phase completed"
# The order a node usually completes them in, with the words the view uses.
PHASES = (("up", "up"), ("registered", "registered"), ("first_segment", "first segment"),
          ("settled", "settled"), ("serving", "serving"))


class ScaleOutLog:
    """Reads milvus-scaler's JSON log as it grows and keeps, per query-node target, the phases it has
    completed: {target: {"node_id", "time" (first phase's log time), "phases": {phase: seconds}}}. A target
    that restarts under a new node_id starts a new entry (the old one's phases belong to the old node)."""

    def __init__(self, path: Path):
        self.path = path
        self._offset = 0
        self._partial = b""
        self.nodes: dict[str, dict] = {}
        self.finished: list[dict] = []  # entries replaced by a restart of their target, oldest first

    def poll(self) -> dict[str, dict]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except OSError:
            return self.nodes
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            self.add_line(line.decode(errors="replace"))
        return self.nodes

    def add_line(self, line: str) -> None:
        try:
            entry = json.loads(line)
        except ValueError:
            return
        fields = entry.get("fields") if isinstance(entry, dict) else None
        if not isinstance(fields, dict) or fields.get("message") != SCALE_OUT_MESSAGE:
            return
        target, node_id, phase = fields.get("target"), str(fields.get("node_id", "")), fields.get("phase")
        try:
            seconds = float(fields.get("seconds"))
        except (TypeError, ValueError):
            return
        if not target or not phase:
            return
        node = self.nodes.get(target)
        if node is not None and node["node_id"] != node_id:
            self.finished.append(node)
            node = None
        if node is None:
            node = self.nodes[target] = {"target": target, "node_id": node_id,
                                         "time": parse_time(entry.get("timestamp")), "phases": {}}
        node["phases"].setdefault(phase, seconds)


def node_names(cluster) -> dict[str, str]:
    """A `MilvusCluster`'s query-node metrics URL → node name, running and stopped nodes (milvus-scaler's
    log names the URL)."""
    return {n.proc.metrics_url: n.name for n in list(cluster.gone) + list(cluster.nodes.values())}


def scale_out_line(name: str, node: dict) -> str:
    """`querynode-3 (node 7) scale-out: up 2.1 s, registered 2.5 s, first segment 6.3 s, settled 11.0 s,
    serving 11.4 s`: the phases completed in seconds from its target being listed, … for those still to come."""
    phases = node.get("phases", {})
    parts = [f"{word} {phases[key]:.1f} s" if key in phases else f"{word} …" for key, word in PHASES]
    who = f"{name} (node {node['node_id']})" if node.get("node_id") else name
    return f"{who} scale-out: " + ", ".join(parts)


# ---------------------------------------------------------------------------------------------------
# the cluster demo


class ClusterDemo:
    """The cluster, the collection, the measured capacity and the closed loop, plus the history the
    view draws (one sample per second)."""

    ROWS = 600  # seconds of history kept (wider than any terminal)

    def __init__(self, args):
        self.args = args
        self.cluster = self.loop = None
        self.history: deque[dict] = deque(maxlen=self.ROWS)
        self.nodes_detail: dict[str, dict] = {}
        self.scale_out: ScaleOutLog | None = None  # milvus-scaler's log, once the loop runs
        self._detail_at = 0.0
        self._load_seen = False

    def start(self) -> None:
        """Everything up; `stop()` stops whatever came up, also after a failure or Ctrl-C half-way."""
        from harness import workload
        from harness.cluster import MilvusCluster
        from harness.loop import ClosedLoop, hpa_manifest
        from harness.services import Milvus

        args = self.args
        if lock_busy(Milvus.LOCK_PATH):
            say(f"another Milvus is running on this machine (lock {Milvus.LOCK_PATH}); waiting for it to finish...")
        say(f"starting a Milvus 2.3.5 cluster: etcd, Kafka-API broker, moto (S3), coordinators, proxy, data and "
            f"index node, 1 query node ({args.node_cpu:.0%} of a core, own segment-cache)...")
        t0 = time.monotonic()
        extra = {"dataCoord.compaction.enableAutoCompaction": False}  # keep the sealed segments apart to balance
        self.cluster = MilvusCluster(query_nodes=1, query_node_cpu=args.node_cpu, extra=extra,
                                     graceful_stop_timeout=30)  # Milvus's default: a timed-out stop loses searches
        self.cluster.start()  # stops what it started if it fails
        phases = getattr(self.cluster, "phase_log", None)
        took = phases[-1][1] if phases else time.monotonic() - t0  # without the wait for the lock
        say(f"  cluster up in {took:.0f}s (proxy {self.cluster.proxy_uri})")

        say(f"creating and loading collection {COLLECTION} (20,000 x {workload.DIM}-d vectors, IVF_FLAT, "
            f"2 shards, one sealed segment per 4,000 rows)...")
        workload.connect(self.cluster.proxy_uri)
        self.coll = workload.create_collection(COLLECTION, rows=20_000, batch=4_000, flush_every_batch=True,
                                               shards=2)
        say(f"measuring one query node's capacity ({args.measure:.0f}s of back-to-back searches, 8 callers)...")
        self.capacity = saturation_throughput(self.coll, args.measure)
        if self.capacity <= 0.5:
            raise RuntimeError(f"one query node served {self.capacity:.2f} searches/s: nothing to scale")
        self.target = UTILISATION * self.capacity * NQ  # search_demand counts nq per second
        say(f"  one query node serves {self.capacity:.1f} searches/s ({self.capacity * NQ:.0f} nq/s); HPA target "
            f"{self.target:.1f} nq/s per node ({UTILISATION:.0%})")

        sync = args.sync
        self.hpa = hpa_manifest(SHIPPED_HPA, instance=INSTANCE, namespace=NAMESPACE, overrides={
            "minReplicas": 1, "maxReplicas": args.max_replicas,
            "behavior": {
                "scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                            "policies": [{"type": "Percent", "value": 100, "periodSeconds": sync},
                                         {"type": "Pods", "value": 4, "periodSeconds": sync}]},
                "scaleDown": {"stabilizationWindowSeconds": args.scale_down_window, "selectPolicy": "Min",
                              "policies": [{"type": "Pods", "value": 1, "periodSeconds": args.scale_down_period}]},
            }})
        demand = [m for m in self.hpa["spec"]["metrics"]
                  if m["type"] == "External" and m["external"]["metric"]["name"] == "milvus_search_demand"]
        if not demand:
            raise RuntimeError(f"{SHIPPED_HPA} does not scale on milvus_search_demand: the demo sets that "
                               f"metric's target from the measured capacity")
        for m in demand:
            m["external"]["target"] = {"type": "AverageValue", "averageValue": f"{int(self.target * 1000)}m"}
        self.metric_names = [m["external"]["metric"]["name"] for m in self.hpa["spec"]["metrics"]
                             if m["type"] == "External"]

        say(f"starting milvus-scaler (scrape every 1s, window {args.window}), its external metrics API (mTLS) "
            f"and local-hpa (sync {sync}s)...")
        self.loop = ClosedLoop(self.cluster, self.hpa, instance=INSTANCE, window=args.window, stale_after="5s",
                               sync_period=f"{sync}s", max_replicas=args.max_replicas,
                               demand_drain=args.demand_drain)
        self.scale_out = ScaleOutLog(self.loop.scaler.service.log_path)
        self.kubeconfig = self.loop.pki.kubeconfig(self.loop.api_port, "client")
        self.api_url = f"https://127.0.0.1:{self.loop.api_port}"
        path = (f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{NAMESPACE}/milvus_search_demand"
                f"?labelSelector=milvus%3D{INSTANCE}")
        self.kubectl = f"kubectl --kubeconfig {self.kubeconfig} get --raw '{path}'"
        self.info = {
            "mode": "cluster", "pid": os.getpid(), "started": time.time(),
            "proxy_uri": self.cluster.proxy_uri, "collection": COLLECTION,
            "capacity_per_node": round(self.capacity, 2), "target_per_node": round(self.target, 2),
            "nq": NQ, "nprobe": NPROBE,
            "min_replicas": 1, "max_replicas": args.max_replicas,
            "metrics_api": self.api_url, "kubeconfig": self.kubeconfig, "kubectl": self.kubectl,
            "scale_url": self.loop.endpoint.url,
            "scaler_telemetry": f"{self.loop.scaler.telemetry}/metrics",
            "scaler_config": str(self.loop.scaler.config_path),
            "hpa": str(self.loop.hpa_path), "local_hpa_log": str(self.loop.hpa_log),
            "cluster_dir": str(self.cluster.dir), "load_status": str(LOAD_STATUS),
        }
        write_demo_file(self.info)

    def pids(self) -> dict[str, int]:
        c = self.cluster
        out = {name: p.pid for name, p in c.procs.items()}
        for name, n in list(c.nodes.items()):
            out[name] = n.proc.pid
            out[f"{name}/segment-cache"] = n.cache.service.pid
        for name, svc in (("etcd", c.etcd), ("broker", c.broker), (c.s3_kind, c.s3 and c.s3.service)):
            if svc is not None:
                out[name] = svc.pid
        if self.loop is not None:
            out["milvus-scaler"] = self.loop.scaler.service.pid
            out["local-hpa"] = self.loop.controller.pid
        return out

    def where(self) -> str:
        c, i = self.cluster, self.info
        procs = ", ".join(f"{k} {v}" for k, v in self.pids().items())
        return f"""  Milvus proxy (gRPC):       {c.proxy_uri}   collection {COLLECTION}, {self.capacity:.1f} searches/s per query node
  milvus-scaler telemetry:   {i['scaler_telemetry']}   (config {i['scaler_config']})
  external metrics API:      {self.api_url}  (mutual TLS), asked as the HPA asks:
      {self.kubectl}
  scale subresource (fake):  curl -s {i['scale_url']}
  local-hpa:                 HPA {i['hpa']}, decisions in {i['local_hpa_log']}
  cluster processes' logs:   {c.dir}
  for `make load`:           {DEMO_FILE}
  processes (PID): {procs}"""

    # -- sampling -----------------------------------------------------------------------------------

    def sample(self) -> None:
        """One column of history."""
        text = fetch(self.info["scaler_telemetry"])
        sig = signal_values(text, INSTANCE)
        load = read_load_status()
        self._load_seen = self._load_seen or load is not None
        self.history.append({
            "t": time.time(),
            "rate": sig.get("search_rate"),
            "offered": load.get("offered") if load else (0.0 if self._load_seen else None),  # 0 once it ended
            "demand": sig.get("search_demand"),
            "desired": self.loop.desired(),
            "serving": self.loop.serving(),
            "queue": sig.get("search_queue_depth"),
            "p99": None if sig.get("search_latency_p99_seconds") is None else sig["search_latency_p99_seconds"] * 1000,
            "scaler_up": text is not None,
            "phase": load.get("phase") if load else None,
        })
        if time.monotonic() - self._detail_at >= 3:  # per-node details: a heavier scrape, every 3 s
            self._detail_at = time.monotonic()
            detail = {}
            for name in self.cluster.query_nodes():
                node = self.cluster.nodes.get(name)
                if node is None:
                    continue
                hit, miss, used = cache_numbers(f"{node.cache.telemetry}/metrics")
                detail[name] = {"segments": self.cluster.sealed_segments(name), "hit": hit, "miss": miss,
                                "used": used}
            self.nodes_detail = detail

    # -- the view -----------------------------------------------------------------------------------

    def view(self, width: int) -> str:
        label_w, value_w, scale_w = 24, 10, 10
        span = max(20, width - label_w - value_w - scale_w - 2)
        hist = list(self.history)[-span:]
        pad = span - len(hist)

        def col(key):
            seen = [h.get(key) for h in hist]
            return [NO_SAMPLE] * pad + seen, seen

        now = hist[-1] if hist else {}
        serving, desired = now.get("serving"), now.get("desired")
        phase = now.get("phase")
        lines = [f"{time.strftime('%H:%M:%S')}  Milvus cluster: {serving} query node(s) serving, spec.replicas "
                 f"{desired}   " + (f"make load: {phase}" if phase else "(`make load` in another terminal)")
                 + "   Ctrl-C stops everything",
                 f"HPA {SHIPPED_HPA.name}: {', '.join(self.metric_names)} AverageValue {self.target:.0f} nq/s/node "
                 f"= 60 % of one node ({self.capacity:.1f} searches/s x nq {NQ}), replicas 1-{self.args.max_replicas}, "
                 f"sync {self.args.sync}s", ""]

        def row(name: str, values, top: float, value: str) -> str:
            return f"{name:<{label_w}}{sparkline(values, top)} {value:>{value_w}} {'max ' + fmt(top):<{scale_w}}"

        lines.append(f"{'':<{label_w}}{'one column per second, newest at the right':<{span}} {'now':>{value_w}} "
                     f"{'scale':<{scale_w}}")
        # Searches/s share one scale (what the proxy receives, what `make load` offers); the demand signal
        # (nq/s) is drawn against maxReplicas x the per-node target, its value followed by the replicas
        # it asks for before tolerance and behavior (ceil(demand / target)).
        rates, rates_seen = col("rate")
        offered, offered_seen = col("offered")
        demand, demand_seen = col("demand")
        rate_top = nice_top(rates_seen + offered_seen + [self.capacity], 1)
        demand_top = nice_top(demand_seen + [self.target * self.args.max_replicas], 1)
        wants = now.get("demand")
        demand_now = fmt(wants) + (f" →{math.ceil(wants / self.target - 1e-9)}" if wants is not None else "")
        lines.append(row("search rate /s", rates, rate_top, fmt(now.get("rate"))))
        if any(v is not None for v in offered_seen):
            lines.append(row(" offered (make load) /s", offered, rate_top, fmt(now.get("offered"))))
        lines.append(row("search_demand nq/s", demand, demand_top, demand_now))
        rep_top = float(self.args.max_replicas)
        lines.append(row("desired replicas", col("desired")[0], rep_top, fmt(desired)))
        lines.append(row("serving query nodes", col("serving")[0], rep_top, fmt(serving)))
        queue, queue_seen = col("queue")
        lines.append(row("search_queue_depth", queue, nice_top(queue_seen, 1), fmt(now.get("queue"))))
        p99, p99_seen = col("p99")
        lines.append(row("p99 latency ms", p99, nice_top(p99_seen, 10), fmt(now.get("p99"))))
        lines.append(f"{'scale events':<{label_w}}{self.event_marks(hist, pad)}")
        lines.append(f"{'':<{label_w}}{axis(span)}")
        lines.append(f"{'':<{label_w}}· unknown (no fresh signal: the HPA holds)  ↑↓ spec.replicas changed  "
                     f"+ query node added  - removed")
        lines.append("")
        lines.append("last scale events:")
        events = self.events()
        if not events:
            lines.append("  none yet (at quiet load one query node suffices)")
        for e in events[-self.args.events:]:
            lines.append("  " + e)
        lines.append("")
        lines.extend(self.cache_line().splitlines())
        info = getattr(self, "info", {})
        if info:
            lines.append("")
            lines.append(f"proxy {info['proxy_uri']} · external metrics API {info['metrics_api']} · "
                         f"kubectl/curl hints and logs: {DEMO_FILE.relative_to(REPO)}")
        return "\n".join(line[:width].rstrip() for line in lines)

    def event_marks(self, hist: list[dict], pad: int) -> str:
        marks = [" "] * (pad + len(hist))
        if not hist:
            return "".join(marks)
        t0 = hist[0]["t"]
        for e in list(self.loop.endpoint.events):
            mark = None
            if e["action"] == "spec":  # reason: "spec.replicas 1 -> 2"
                words = e["reason"].split()
                try:
                    mark = "↑" if int(words[-1]) > int(words[1]) else "↓"
                except (ValueError, IndexError):
                    mark = "|"
            elif e["action"] == "added":
                mark = "+"
            elif e["action"] == "removed":
                mark = "-"
            elif e["action"] == "error":
                mark = "!"
            if mark is None:
                continue
            i = pad + int(round(e["time"] - t0))
            if pad <= i < len(marks):
                marks[i] = mark if marks[i] == " " else "*"
        return "".join(marks)

    def events(self) -> list[str]:
        """Scale events, oldest first: local-hpa's rescales with the reason and the metric, and the
        scale endpoint's added/removed query nodes with the seconds each took."""
        out: list[tuple[float, str]] = []
        for d in self.loop.decisions():
            if not d.get("rescaled"):
                continue
            t = parse_time(d.get("time")) or 0
            detail = ""
            try:
                metrics = json.loads(d.get("metrics") or "[]")
            except ValueError:
                metrics = []
            for m in metrics:
                name = short_metric(m.get("metric", ""))
                if "error" in m:
                    detail += f"; {name}: {m['error']}"
                    continue
                total, avg = m.get("value"), m.get("average_value")
                now = f"{fmt(avg)}/node" if avg is not None else fmt(total)
                detail += f"; {name} {now}, target {fmt(m.get('target'))}/node → {m.get('replicas')}"
            reason = d.get("reason", "").replace("external metric ", "")
            out.append((t, f"{hhmmss(t)}  local-hpa  spec.replicas {d['current']} → {d['desired']}: "
                           f"{reason}{detail}"))
        for e in list(self.loop.endpoint.events):
            if e["action"] == "added":
                out.append((e["time"], f"{hhmmss(e['time'])}  endpoint   {e['node']} added: registered and "
                                       f"healthy in {e.get('seconds', 0):.1f}s ({e['reason']})"))
            elif e["action"] == "removed":
                out.append((e["time"], f"{hhmmss(e['time'])}  endpoint   {e['node']} removed: graceful stop "
                                       f"{e.get('exit', '')} in {e.get('seconds', 0):.1f}s ({e['reason']})"))
            elif e["action"] == "error":
                out.append((e["time"], f"{hhmmss(e['time'])}  endpoint   error: {e['reason'][:300]}"))
        out.extend(self.scale_out_events())
        out.sort(key=lambda x: x[0])
        return [text for _, text in out]

    def scale_out_events(self) -> list[tuple[float, str]]:
        """One line per query node added since milvus-scaler started, with the phases it completed so far
        (as milvus-scaler timed them from its scrapes), at the time of its first phase."""
        if self.scale_out is None:
            return []
        self.scale_out.poll()
        names = node_names(self.cluster)
        out = []
        for node in self.scale_out.finished + list(self.scale_out.nodes.values()):
            t = node.get("time") or 0
            line = scale_out_line(names.get(node["target"], node["target"]), node)
            out.append((t, f"{hhmmss(t)}  scaler     {line}"))
        return out

    def cache_line(self) -> str:
        hit = miss = 0.0
        parts = []
        for name, d in self.nodes_detail.items():
            hit += d["hit"]
            miss += d["miss"]
            ratio = f"{d['hit'] / (d['hit'] + d['miss']):.0%}" if d["hit"] + d["miss"] else "-"
            seg = "?" if d["segments"] is None else f"{d['segments']:.0f}"
            parts.append(f"{name}: {seg} sealed segments; read {(d['hit'] + d['miss']) / 1e6:.1f} MB through its "
                         f"segment-cache, {ratio} from its disk")
        for node in list(self.cluster.gone):
            f = node.cache_final or {}
            hit += f.get("hit_bytes", 0)
            miss += f.get("miss_bytes", 0)
        ratio = f"{hit / (hit + miss):.0%}" if hit + miss else "-"
        head = (f"segment-cache byte hit ratio {ratio} (all query nodes so far: {hit / 1e6:.1f} MB hit, "
                f"{miss / 1e6:.1f} MB fetched from S3)")
        return head + ("\n  " + "\n  ".join(parts) if parts else "")

    def stop(self) -> None:
        if self.loop is not None:
            self.loop.stop()
        if self.cluster is not None:
            self.cluster.stop()
        remove_demo_file()


def cache_numbers(url: str) -> tuple[float, float, float]:
    """segment-cache's served bytes (hit, miss) and bytes cached."""
    text = fetch(url)
    if text is None:
        return 0.0, 0.0, 0.0
    m = parse_metrics(text)
    hit = sum(v for labels, v in m.get("segment_cache_served_bytes_total", []) if 'result="hit"' in labels)
    miss = sum(v for labels, v in m.get("segment_cache_served_bytes_total", []) if 'result="miss"' in labels)
    used = sum(v for _, v in m.get("segment_cache_used_bytes", []))
    return hit, miss, used


def short_metric(described: str) -> str:
    """`external metric milvus_search_demand(&LabelSelector{...})` → `milvus_search_demand`."""
    for word in described.replace("(", " ").split():
        if word.startswith("milvus_"):
            return word
    return described


def axis(span: int) -> str:
    """Time marks under the sparklines: -Ns every 30 columns, `now` at the right."""
    chars = [" "] * span
    for back in range(30, span, 30):
        text = f"-{back}s"
        i = span - 1 - back
        if i - len(text) // 2 >= 0:
            for j, c in enumerate(text):
                k = i - len(text) // 2 + j
                if 0 <= k < span:
                    chars[k] = c
    for j, c in enumerate("now"):
        chars[span - 3 + j] = c
    return "".join(chars)


def say(text: str) -> None:
    print(text, flush=True)


# ---------------------------------------------------------------------------------------------------
# the standalone stack (the earlier view)


STANDALONE_SIGNALS = ["search_queue_depth", "search_rate", "search_latency_p50_seconds",
                      "search_latency_p99_seconds", "index_pending_builds", "loaded_entities", "loaded_bytes"]


def standalone_view(stack) -> str:
    from harness.stack import ASG, QUEUE_TARGET_PER_POD, telemetry_value

    telemetry = f"{stack.scaler.telemetry}/metrics"
    lines = [f"{time.strftime('%H:%M:%S')}  milvus=demo   (Ctrl-C stops everything)", ""]
    queue = None
    for s in STANDALONE_SIGNALS:
        known = telemetry_value(telemetry, "milvus_scaler_signal_known", milvus="demo", signal=s)
        value = telemetry_value(telemetry, "milvus_scaler_signal_value", milvus="demo", signal=s)
        shown = f"{value:,.4g}" if known and value is not None else "unknown"
        if s == "search_queue_depth" and known:
            queue = value
        lines.append(f"  {s:<30} {shown:>14}")
    lines.append("")
    if queue is None:
        lines.append("  HPA (queue depth, AverageValue target "
                     f"{QUEUE_TARGET_PER_POD}/pod): holds replicas (signal unknown)")
    else:
        want = min(30, max(1, math.ceil(queue / QUEUE_TARGET_PER_POD)))
        lines.append(f"  HPA (queue depth, AverageValue target {QUEUE_TARGET_PER_POD}/pod): "
                     f"would ask for {want} query node(s)")
    planned = telemetry_value(telemetry, "milvus_scaler_nodegroup_planned_capacity", group="querynodes")
    lines.append(f"  node group {ASG}: planned {planned if planned is not None else '-'}, "
                 f"desired in EC2 Auto Scaling (moto) {stack.asg_desired()}")
    cache = f"{stack.cache.telemetry}/metrics"
    hit = telemetry_value(cache, "segment_cache_served_bytes_total", result="hit") or 0
    miss = telemetry_value(cache, "segment_cache_served_bytes_total", result="miss") or 0
    ratio = f"{hit / (hit + miss):.0%}" if hit + miss else "-"
    used = telemetry_value(cache, "segment_cache_used_bytes") or 0
    lines.append(f"  segment-cache: byte hit ratio {ratio}, {used / 1e6:,.1f} MB cached")
    return "\n".join(lines)


def run_standalone(args) -> int:
    from harness.stack import Stack

    say("starting moto, segment-cache, Milvus 2.3.5 standalone, milvus-scaler, Prometheus...")
    stack = None
    try:
        stack = Stack(planner_interval="5s")
        write_demo_file({"mode": "standalone", "pid": os.getpid(), "started": time.time(),
                         "proxy_uri": stack.milvus.uri, "collection": COLLECTION,
                         "scaler_telemetry": f"{stack.scaler.telemetry}/metrics",
                         "kubeconfig": str(stack.kubeconfig), "load_status": str(LOAD_STATUS)})
        say("\nready:\n" + stack.info() + "\n\nIn another terminal: `make load` drives a 10x search spike.\n")
        time.sleep(3)
        terminal = sys.stdout.isatty() and not args.once
        while True:
            text = standalone_view(stack)
            if terminal:
                print("\x1b[2J\x1b[H" + stack.info() + "\n\n" + text, flush=True)
            else:
                print(text + "\n", flush=True)
            if args.once:
                break
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        say("stopping...")
        if stack is not None:
            stack.stop()
        remove_demo_file()
        say("stopped.")
    return 0


# ---------------------------------------------------------------------------------------------------


def run_cluster(args) -> int:
    demo = None
    status = 0
    try:
        demo = ClusterDemo(args)
        demo.start()
        say("\nready:\n" + demo.where() + "\n\nIn another terminal: `make load` drives quiet → 10x spike → "
            "cool-down against this cluster; watch the rows below follow it.\n")
        terminal = sys.stdout.isatty() and not args.once
        samples = 0
        next_tick = time.monotonic()
        while True:
            demo.sample()
            samples += 1
            if args.once and samples < args.once_samples:
                next_tick += 1
                time.sleep(max(0.0, next_tick - time.monotonic()))
                continue
            width = shutil.get_terminal_size((120, 40)).columns
            text = demo.view(width)
            if terminal:
                print("\x1b[H\x1b[2J" + text, flush=True)
            else:
                print(text + "\n", flush=True)
            if args.once:
                break
            next_tick += 1
            time.sleep(max(0.0, next_tick - time.monotonic()))
    except KeyboardInterrupt:
        pass
    except Exception as e:  # a start-up failure: say what, stop what came up, exit 1
        print(f"\nmake run failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        status = 1
    finally:
        say("stopping (query nodes first, then proxy, data/index node, coordinators, broker, etcd, moto)...")
        if demo is not None:
            demo.stop()
        say("stopped.")
    return status


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--once", action="store_true", help="come up, print the view once, stop (used by the tests)")
    p.add_argument("--standalone", action="store_true",
                   help="the earlier demo: Milvus standalone, both APIs, node-group planner, Prometheus")
    p.add_argument("--measure", type=float, default=20, help="seconds of saturation load to measure one node")
    p.add_argument("--node-cpu", type=float, default=0.15, help="share of a core per query node")
    p.add_argument("--max-replicas", type=int, default=4, help="the HPA's maxReplicas")
    p.add_argument("--sync", type=int, default=5, help="local-hpa's sync period, seconds (15 in Kubernetes)")
    p.add_argument("--window", default="10s", help="milvus-scaler's signal window")
    p.add_argument("--demand-drain", default="20s", help="signals.demand_drain: time to drain searches in flight")
    p.add_argument("--scale-down-window", type=int, default=60, help="HPA scaleDown stabilizationWindowSeconds")
    p.add_argument("--scale-down-period", type=int, default=30, help="HPA scaleDown: 1 pod per this many seconds")
    p.add_argument("--events", type=int, default=8, help="scale events listed under the sparklines")
    p.add_argument("--once-samples", type=int, default=5, help=argparse.SUPPRESS)
    args = p.parse_args()
    # Ctrl-C, and SIGTERM (e.g. a test's timeout), stop everything (also when started in the background,
    # where a shell leaves SIGINT ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    return run_standalone(args) if args.standalone else run_cluster(args)


if __name__ == "__main__":
    sys.exit(main())
