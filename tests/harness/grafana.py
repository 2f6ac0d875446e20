"""Reads the dashboards and rule files under grafana/ and classifies every PromQL expression by the
program that exports its metrics (its *source*), so the tests can hold each query to the data that
can exist here.

Sources, from metric names:
  milvus             milvus_*, internal_storage_*            (real Milvus 2.3.5 in the tests)
  milvus-scaler      milvus_scaler_*, up{job=~"milvus-scaler.*"}  (`milvus-scaler serve`)
  segment-cache      segment_cache_*                         (the sidecar binary, when built)
  kube-state-metrics kube_*                                  (needs a cluster: skipped here)
  cAdvisor           container_*                             (needs a kubelet: skipped here)
Recording rules (`a:b:c`) take the sources of their expression.
milvus-scaler metrics that only exist with a feature configured carry that feature (FEATURES).
"""
from __future__ import annotations

import functools
import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import services
from .procs import REPO

GRAFANA = REPO / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
ALERTS = GRAFANA / "alerts"
RECORDING = GRAFANA / "recording"
RULE_TESTS = GRAFANA / "tests"

# Sources that cannot run on this machine, with the reason the live test prints.
UNAVAILABLE = {
    "kube-state-metrics": "kube-state-metrics needs a Kubernetes API server with HPAs/Deployments/Pods; none runs here",
    "cAdvisor": "cAdvisor metrics come from a kubelet scraping containers; no kubelet runs here",
}

# milvus-scaler metric prefixes that appear only with a feature configured, and the config that
# makes them appear (docs/grafana.md repeats this table).
FEATURES = {
    "milvus_scaler_http_": ("external-metrics",
                            "the external metrics API server (`external_metrics:` in the milvus-scaler config) "
                            "after its first request"),
    "milvus_scaler_grpc_": ("keda", "the KEDA external scaler (`keda:` in the config) after its first call"),
    "milvus_scaler_keda_": ("keda", "the KEDA external scaler (`keda:` in the config) with a StreamIsActive client"),
    "milvus_scaler_nodegroup_": ("node-groups", "node-group sizing (`node_groups:` in the config)"),
    "milvus_scaler_headroom_": ("headroom", "node headroom (`headroom:` in the config; needs the Kubernetes API for "
                                "the query nodes' replicas)"),
}

# Counters and histograms that exist only once the event they count has happened (the Prometheus exporter
# creates a series on its first increment or observation): empty on a healthy system or one that has not
# scaled out, so no live test can expect data from them. docs/grafana.md repeats this table.
ON_EVENT = {
    "segment_cache_access_log_dropped_total":
        "the access-log queue overflowing (a disk that cannot keep up with the reads)",
    "milvus_scaler_external_metrics_client_ca_updates_total":
        "a front-proxy CA change read from the cluster (`client_ca: { from_cluster: true }`)",
    "milvus_scaler_external_metrics_client_ca_refresh_failures_total":
        "a failed refresh of the front-proxy CA from the cluster",
    "milvus_scaler_scale_out_phase_seconds":
        "a query node added after milvus-scaler started completing a scale-out phase",
}

# Names only newer Milvus releases export; a panel that uses one has a 2.3.5 sibling query.
NEWER_MILVUS = {
    "milvus_datacoord_task_count": "Milvus 2.4+ name of milvus_datacoord_index_task_count",
}

# The binaries whose metrics the dashboards may query; each prints its metrics, `name kind` a line,
# with a hidden `metric-names` subcommand, from the `metric_names.rs` lists in the crates (the
# names every `metrics::counter!/gauge!/histogram!` call uses). milvus-scaler's covers the
# milvus-signals, metrics-api, keda-scaler and node-groups crates it runs.
CONTRACT_BINARIES = ("milvus-scaler", "segment-cache")


@functools.cache
def contract() -> dict[str, str]:
    """Metric name -> kind (counter, gauge, histogram) of every metric milvus-scaler and
    segment-cache export, read from the debug binaries (`make build` first), not a copy."""
    out: dict[str, str] = {}
    for binary in CONTRACT_BINARIES:
        run = subprocess.run([services.cargo_bin(binary), "metric-names"], capture_output=True, text=True,
                             timeout=60)
        assert run.returncode == 0, f"{binary} metric-names: exit {run.returncode}: {run.stderr}"
        for line in run.stdout.splitlines():
            name, kind = line.split()
            assert kind in ("counter", "gauge", "histogram"), f"{binary} metric-names: {line!r}"
            assert name not in out, f"{name} is exported by two binaries"
            out[name] = kind
        assert out, f"{binary} metric-names printed nothing"
    return out


# Metrics the code exports that no dashboard panel or rule shows, each on purpose, with the reason.
# Empty today: every metric is on a panel. A new metric goes on a panel (grafana/build_dashboards.py)
# or here.
NOT_ON_A_DASHBOARD: dict[str, str] = {}

KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
            "offset", "bool", "inf", "nan", "atan2"}


@dataclass
class Query:
    """One PromQL expression of a dashboard panel or a rule."""
    where: str  # "query-performance.json#3/A" or "alerts/milvus.yaml:MilvusFlushFailures"
    expr: str
    title: str = ""
    description: str = ""
    panel: str = ""  # "dashboard#id" for panel queries
    metrics: set[str] = field(default_factory=set)


def dashboards() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def all_panels(dashboard: dict):
    for p in dashboard.get("panels", []):
        yield p
        yield from p.get("panels", [])  # collapsed rows


def panel_queries() -> list[Query]:
    out = []
    for name, d in dashboards().items():
        for p in all_panels(d):
            for t in p.get("targets", []):
                if "expr" in t:
                    out.append(Query(f"{name}#{p['id']}/{t['refId']}", t["expr"], p.get("title", ""),
                                     p.get("description", ""), panel=f"{name}#{p['id']}"))
        for a in d.get("annotations", {}).get("list", []):
            if "expr" in a:
                out.append(Query(f"{name}#annotation:{a['name']}", a["expr"], a["name"], panel=f"{name}#annotation"))
        for v in d.get("templating", {}).get("list", []):
            if v.get("type") == "query":
                m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", v["definition"])
                assert m, f"{name}: variable {v['name']} is not label_values(selector, label): {v['definition']}"
                out.append(Query(f"{name}#variable:{v['name']}", m.group(1), v["name"], panel=f"{name}#variable"))
    return out


def rule_files() -> list[Path]:
    return sorted(RECORDING.glob("*.yaml")) + sorted(ALERTS.glob("*.yaml"))


def rules() -> list[dict]:
    out = []
    for f in rule_files():
        for g in yaml.safe_load(f.read_text())["groups"]:
            for r in g["rules"]:
                out.append({**r, "_file": f"{f.parent.name}/{f.name}", "_group": g["name"]})
    return out


def rule_queries() -> list[Query]:
    return [Query(f"{r['_file']}:{r.get('alert') or r.get('record')}", r["expr"], r.get("alert") or r.get("record"))
            for r in rules()]


def recorded() -> dict[str, str]:
    return {r["record"]: r["expr"] for r in rules() if "record" in r}


def expand(expr: str, rate_interval: str = "1m", range_: str = "5m", milvus: str = ".*",
           collection: str = ".*", namespace: str = ".*") -> str:
    """Grafana's variables replaced the way Grafana would (default: every variable at "All")."""
    return (expr.replace("$__rate_interval", rate_interval).replace("$__range", range_)
            .replace("$milvus", milvus).replace("$collection", collection).replace("$namespace", namespace))


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (a small lexer: enough for the expressions in this repo)."""
    names = set()
    for m in re.finditer(r'__name__=~?"([^"]*)"', expr):
        names.update(_expand_name_regex(m.group(1)))
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    s = re.sub(r"\{[^}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)  # ranges / subqueries
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    for m in re.finditer(r"(?<![\w:.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", s):
        word, call = m.group(1), m.group(2)
        if call or word in KEYWORDS or re.fullmatch(r"\d+[smhdwy]", word):
            continue
        names.add(word)
    return names


def _expand_name_regex(rx: str) -> set[str]:
    m = re.fullmatch(r"(.*)\(([^()]*)\)(.*)", rx)
    if m:
        return {m.group(1) + alt + m.group(3) for alt in m.group(2).split("|")}
    return {rx}


def base_metric(name: str) -> str:
    return re.sub(r"_(bucket|sum|count)$", "", name)


def source_of_metric(name: str) -> str:
    if name.startswith("milvus_scaler_") or name == "up":
        return "milvus-scaler"
    if name.startswith("segment_cache_"):
        return "segment-cache"
    if name.startswith("kube_"):
        return "kube-state-metrics"
    if name.startswith("container_"):
        return "cAdvisor"
    if name.startswith("milvus_") or name.startswith("internal_storage_"):
        return "milvus"
    raise ValueError(f"metric {name!r} has no known source (add it to harness/grafana.py)")


def resolve(expr: str, seen: frozenset = frozenset()) -> set[str]:
    """Raw metric names behind an expression, following recording rules."""
    rec = recorded()
    out = set()
    for n in metric_names(expr):
        if n in rec:
            assert n not in seen, f"recording rule loop at {n}"
            out |= resolve(rec[n], seen | {n})
        else:
            out.add(n)
    return out


def sources(expr: str) -> set[str]:
    return {source_of_metric(n) for n in resolve(expr)}


def feature(expr: str) -> tuple[str, str] | None:
    """The milvus-scaler feature (name, what makes it appear) an expression needs, if any."""
    for n in resolve(expr):
        for prefix, feat in FEATURES.items():
            if n.startswith(prefix):
                return feat
    return None


def on_event(expr: str) -> str | None:
    """The events an expression's metrics wait for, when every metric it reads is in ON_EVENT (a
    histogram's `_bucket`, `_sum` and `_count` series by the histogram's name)."""
    def listed(name: str) -> str:
        histogram = re.sub(r"_(bucket|sum|count)$", "", name)
        return histogram if histogram in ON_EVENT else name

    names = {listed(n) for n in resolve(expr)}
    if names and all(n in ON_EVENT for n in names):
        return "; ".join(ON_EVENT[n] for n in sorted(names))
    return None


def newer_only(expr: str) -> str | None:
    names = resolve(expr)
    if names and all(n in NEWER_MILVUS for n in names):
        return "; ".join(NEWER_MILVUS[n] for n in sorted(names))
    return None
