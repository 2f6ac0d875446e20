"""FAKES of the Kubernetes read APIs that the HPA's Resource (CPU) metrics need, over real processes.

kube-apiserver and metrics-server cannot run on these machines. `PodsAndMetricsFake` serves, from a
callable that says which processes are the "pods" right now:

    GET /api/v1/namespaces/{ns}/pods                       core/v1 PodList (kube-apiserver)
    GET /apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods  PodMetricsList (metrics-server)

both honouring `labelSelector` (equality `k=v` `k==v` `k!=v`, set `k in (a,b)` `k notin (a,b)`,
existence `k` `!k`), which is how `milvus-scaler local-hpa --pods-url --pod-metrics-url` asks (the
scale's `status.selector`, as the HPA controller does). It is not Kubernetes: no authentication, no
watch, one namespace, one container per pod.

A pod's CPU usage is its container's CPU time, sampled every `sample_every` seconds (5) by a thread:
with a `cgroup` (the pod's cgroup-v1 directory), what the kubelet reads for a container, i.e.
`cpuacct.usage` there if that controller is mounted with it, else the sum of utime + stime
(`/proc/PID/stat`, threads included) of the processes in its `cgroup.procs` (on machines where
`cpuacct` is a separate hierarchy, as on the test machines; a process that exited takes its time with
it); without one, the `pid` process's utime + stime. The rate is taken between the newest sample
and the oldest one at most `window` seconds (30) before it; `timestamp` is the newest sample's time
and `window` the span actually covered. metrics-server (0.6 and later) reports the rate between its
last two scrapes of the kubelet, `--metric-resolution` apart (15 s in its release manifests, 60 s
its flag default), refreshed once per scrape: `window == sample_every == resolution` reproduces
that; the defaults (30 s refreshed every 5 s) are a smoother sliding average. A pod with fewer than
two samples (just started, or its process is gone) is left out of the PodMetricsList, as
metrics-server leaves out pods it has not scraped twice. Times are rendered as Kubernetes renders
`metav1.Time`: RFC 3339 in whole seconds (UTC).

The provider returns a list of dicts, one per pod, and is called from the sampling thread and from
HTTP handler threads (it must be thread-safe):

    name              pod name
    pid               the process standing for the pod's container
    started_at        unix time (time.time()) the pod started: status.startTime
    ready             bool: the Ready condition's status
    ready_since       unix time of the Ready condition's last transition (started_at if None)
    cpu_request_cores the container's requests.cpu in cores (e.g. 0.25 → "250m"); None: no request
  optional:
    cgroup            the pod's cgroup directory (str or Path): CPU time from it instead of `pid`'s
    phase             status.phase ("Running")
    deleting          bool: metadata.deletionTimestamp set (now)
    labels            dict merged over the fake's `labels`

With tests/harness/cluster.py's MilvusCluster, a provider is e.g.

    offset = time.time() - time.monotonic()          # QueryNode times are time.monotonic()
    lambda: [{"name": n.name, "pid": n.proc.pid, "started_at": n.started_at + offset,
              "ready": n.registered_at is not None,
              "ready_since": (n.registered_at or n.started_at) + offset,
              "cpu_request_cores": cluster.query_node_cpu}
             for n in list(cluster.nodes.values()) if not n.stopping]
"""
from __future__ import annotations

import os
import re
import threading
import time
from collections import deque
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qs, urlsplit

from .procs import send_json

PODS_RE = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/?$")
METRICS_RE = re.compile(r"^/apis/metrics\.k8s\.io/v1beta1/namespaces/([^/]+)/pods/?$")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def rfc3339(t: float) -> str:
    """A `metav1.Time` as Kubernetes serialises it: RFC 3339, whole seconds, UTC."""
    return datetime.fromtimestamp(int(t), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def go_duration(seconds: float) -> str:
    """A `metav1.Duration` as Go renders it: "30s", "29.5s", "1m0.5s", "0s"."""
    if seconds <= 0:
        return "0s"
    ns = round(seconds * 1e9)
    minutes, rest = divmod(ns, 60 * 10**9)
    hours, minutes = divmod(minutes, 60)
    secs = f"{rest / 1e9:.9f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def process_cpu_seconds(pid: int) -> float | None:
    """utime + stime of one process, in seconds (None if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        fields = stat[stat.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def cgroup_cpu_seconds(path: str | os.PathLike) -> float | None:
    """CPU time of a cgroup-v1 group: `cpuacct.usage` (ns) if that controller is in the same
    hierarchy, else utime + stime summed over the processes in `cgroup.procs` (None if the group
    is gone or empty)."""
    try:
        with open(os.path.join(path, "cpuacct.usage")) as f:
            return int(f.read()) / 1e9
    except (OSError, ValueError):
        pass
    try:
        with open(os.path.join(path, "cgroup.procs")) as f:
            pids = [int(p) for p in f.read().split()]
    except (OSError, ValueError):
        return None
    times = [t for t in (process_cpu_seconds(p) for p in pids) if t is not None]
    return sum(times) if times else None


def process_rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


class SelectorError(ValueError):
    pass


_REQ = re.compile(
    r"^\s*(?:(?P<not>!)\s*(?P<nkey>[^\s=!,()]+)"
    r"|(?P<key>[^\s=!,()]+)\s*(?:(?P<op>==|=|!=)\s*(?P<value>[^\s,()]*)"
    r"|\s+(?P<setop>in|notin)\s*\((?P<values>[^()]*)\))?)\s*$")


def parse_selector(text: str | None) -> list[tuple[str, str, object]]:
    """A label selector string as `labels.Parse` reads it: [(key, op, value(s))]."""
    if not text or not text.strip():
        return []
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    out = []
    for part in parts:
        m = _REQ.match(part)
        if not m:
            raise SelectorError(f"unable to parse requirement: {part.strip()!r}")
        if m["not"]:
            out.append((m["nkey"], "!", None))
        elif m["op"]:
            out.append((m["key"], "!=" if m["op"] == "!=" else "=", m["value"]))
        elif m["setop"]:
            values = {v.strip() for v in m["values"].split(",") if v.strip()}
            out.append((m["key"], m["setop"], values))
        else:
            out.append((m["key"], "exists", None))
    return out


def selector_matches(requirements: list, labels: dict) -> bool:
    for key, op, value in requirements:
        have = labels.get(key)
        if op == "=":
            ok = have == value
        elif op == "!=":
            ok = have != value
        elif op == "in":
            ok = have is not None and have in value
        elif op == "notin":
            ok = have is None or have not in value
        elif op == "exists":
            ok = key in labels
        else:  # "!"
            ok = key not in labels
        if not ok:
            return False
    return True


def _status(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


class PodsAndMetricsFake:
    """A FAKE of kube-apiserver's pod list and metrics-server's PodMetrics API over real processes
    (see the module docstring). Use as a context manager or call `stop()`.

    Attributes: `url` (base), `pods_url`, `pod_metrics_url` (for `--pods-url`/`--pod-metrics-url`),
    `requests` (every request: dicts with path and labelSelector)."""

    def __init__(self, provider: Callable[[], list[dict]], *, namespace: str = "milvus",
                 labels: dict | None = None, container: str = "main", window: float = 30.0,
                 sample_every: float = 5.0):
        self.provider = provider
        self.namespace = namespace
        self.labels = dict(labels if labels is not None else {"app": "querynode"})
        self.container = container
        self.window = window
        self.sample_every = sample_every
        self.requests: list[dict] = []
        self._samples: dict[tuple[str, int], deque] = {}  # (name, pid) -> (unix time, cpu seconds)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, code: int, body: dict) -> None:
                send_json(self, code, body)

            def do_GET(self):
                url = urlsplit(self.path)
                selector = (parse_qs(url.query).get("labelSelector") or [None])[0]
                with fake._lock:
                    fake.requests.append({"path": url.path, "labelSelector": selector})
                pods, metrics = PODS_RE.match(url.path), METRICS_RE.match(url.path)
                if not (pods or metrics):
                    return self._send(404, _status(404, "NotFound", f"the server could not find the requested "
                                                                   f"resource ({url.path})"))
                try:
                    namespace = (pods or metrics).group(1)
                    if pods:
                        body = fake.pod_list(selector, namespace)
                    else:
                        body = fake.pod_metrics_list(selector, namespace)
                except SelectorError as e:
                    return self._send(400, _status(400, "BadRequest", str(e)))
                except Exception as e:  # the provider failed: a 500, as an apiserver error would be
                    return self._send(500, _status(500, "InternalError", f"provider: {e!r}"))
                self._send(200, body)

            def do_POST(self):
                self._send(405, _status(405, "MethodNotAllowed", "this fake serves GET only"))

            do_PUT = do_PATCH = do_DELETE = do_POST

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.pods_url = f"{self.url}/api/v1/namespaces/{namespace}/pods"
        self.pod_metrics_url = f"{self.url}/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods"
        self.sample()
        self._threads = [threading.Thread(target=self.server.serve_forever, daemon=True, name="pods-fake-http"),
                         threading.Thread(target=self._sampler, daemon=True, name="pods-fake-sampler")]
        for t in self._threads:
            t.start()

    # -- sampling ------------------------------------------------------------------------------------

    def sample(self) -> None:
        """One sampling round now (the thread does one every `sample_every` seconds)."""
        pods = self.provider()
        now = time.time()
        seen = set()
        for pod in pods:
            key = (pod["name"], int(pod["pid"]))
            seen.add(key)
            cpu = cgroup_cpu_seconds(pod["cgroup"]) if pod.get("cgroup") else process_cpu_seconds(key[1])
            if cpu is None:
                continue
            with self._lock:
                series = self._samples.setdefault(key, deque())
                series.append((now, cpu))
                # Keep what the window can still use (one sample older than it at most).
                while len(series) > 2 and now - series[1][0] > self.window + self.sample_every:
                    series.popleft()
        with self._lock:
            for key in list(self._samples):
                if key not in seen and now - self._samples[key][-1][0] > self.window:
                    del self._samples[key]

    def _sampler(self) -> None:
        while not self._stop.wait(self.sample_every):
            try:
                self.sample()
            except Exception:  # a provider hiccup (e.g. a cluster stopping): next round
                pass

    def usage(self, name: str, pid: int) -> dict | None:
        """{cores, timestamp, window} of one pod as served, or None (fewer than two samples)."""
        with self._lock:
            series = list(self._samples.get((name, int(pid)), ()))
        if len(series) < 2:
            return None
        t1, c1 = series[-1]
        if time.time() - t1 > self.window + self.sample_every:
            # A round missed: the process stopped being sampled, and metrics-server drops it too.
            # (Not `window` alone: with window == sample_every every sample is that old just
            # before the next one, and metrics-server serves its last rate until it is replaced.)
            return None
        # The oldest sample at most `window` (plus half a sampling period of jitter) before t1.
        older = [(t, c) for t, c in series[:-1] if t1 - t <= self.window + self.sample_every / 2]
        if not older:
            return None
        t0, c0 = older[0]
        span = t1 - t0
        return {"cores": max(0.0, c1 - c0) / span, "timestamp": t1, "window": span}

    # -- the two lists -------------------------------------------------------------------------------

    def _pods(self, selector: str | None, namespace: str) -> list[dict]:
        requirements = parse_selector(selector)
        if namespace != self.namespace:
            return []
        out = []
        for pod in self.provider():
            labels = {**self.labels, **(pod.get("labels") or {})}
            if selector_matches(requirements, labels):
                out.append({**pod, "labels": labels})
        return out

    def pod_list(self, selector: str | None = None, namespace: str | None = None) -> dict:
        """The core/v1 PodList served for `labelSelector=selector`."""
        now = time.time()
        items = []
        for pod in self._pods(selector, namespace or self.namespace):
            started = float(pod["started_at"])
            ready_since = float(pod.get("ready_since") or started)
            ready = "True" if pod.get("ready") else "False"
            resources = {}
            if pod.get("cpu_request_cores") is not None:
                resources = {"requests": {"cpu": f"{round(float(pod['cpu_request_cores']) * 1000)}m"}}
            meta = {"name": pod["name"], "namespace": self.namespace, "labels": pod["labels"],
                    "uid": f"fake-{pod['name']}-{pod['pid']}", "creationTimestamp": rfc3339(started)}
            if pod.get("deleting"):
                meta["deletionTimestamp"] = rfc3339(now)
            items.append({
                "metadata": meta,
                "spec": {"containers": [{"name": self.container, "image": "fake", "resources": resources}]},
                "status": {
                    "phase": pod.get("phase", "Running"),
                    "startTime": rfc3339(started),
                    "podIP": "127.0.0.1",
                    "conditions": [
                        {"type": "PodScheduled", "status": "True", "lastTransitionTime": rfc3339(started)},
                        {"type": "Initialized", "status": "True", "lastTransitionTime": rfc3339(started)},
                        {"type": "ContainersReady", "status": ready, "lastTransitionTime": rfc3339(ready_since)},
                        {"type": "Ready", "status": ready, "lastTransitionTime": rfc3339(ready_since)},
                    ],
                },
            })
        return {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": str(int(now))},
                "items": items}

    def pod_metrics_list(self, selector: str | None = None, namespace: str | None = None) -> dict:
        """The metrics.k8s.io/v1beta1 PodMetricsList served for `labelSelector=selector`."""
        items = []
        for pod in self._pods(selector, namespace or self.namespace):
            u = self.usage(pod["name"], pod["pid"])
            if u is None:
                continue
            items.append({
                "metadata": {"name": pod["name"], "namespace": self.namespace, "labels": pod["labels"],
                             "creationTimestamp": rfc3339(time.time())},
                "timestamp": rfc3339(u["timestamp"]),
                "window": go_duration(u["window"]),
                "containers": [{"name": self.container, "usage": {
                    "cpu": f"{round(u['cores'] * 1e9)}n",
                    "memory": f"{process_rss_bytes(int(pod['pid'])) // 1024}Ki",
                }}],
            })
        return {"kind": "PodMetricsList", "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {}, "items": items}

    # -- lifecycle -----------------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()
        for t in self._threads:
            t.join(timeout=5)

    def __enter__(self) -> "PodsAndMetricsFake":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
