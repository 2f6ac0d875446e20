#!/usr/bin/env python3
"""Generates grafana/dashboards/*.json (Grafana 10+ JSON model) from the panel lists below.

Run `python3 grafana/build_dashboards.py` after editing, and commit the JSON; `--check` exits 1 when
the committed JSON differs from what this script generates (the tests run it).

Label conventions (see docs/grafana.md):
  - Milvus and segment-cache series carry `app_kubernetes_io_instance` (the Milvus Helm release;
    the PodMonitor in manifests/components/grafana copies the pod label) and `namespace`.
  - milvus-scaler series carry `milvus` (the instance name in its config: name it like the release).
  - kube-state-metrics / cAdvisor series are matched by namespace and pod/deployment name.
Every panel's description starts with `Source: ...`; the tests read sources from the metric names.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards"

M = 'app_kubernetes_io_instance=~"$milvus"'  # Milvus-side selector
S = 'milvus=~"$milvus"'  # milvus-scaler selector
RI = "$__rate_interval"
SLO_SECONDS = 0.5  # keep equal to the MilvusSearchLatencyP99AboveSLO threshold


def ds():
    return {"type": "prometheus", "uid": "${datasource}"}


def thresholds(steps):
    """steps: [(value or None, color)]"""
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for v, c in steps]}


GREEN = [(None, "green")]


class Dash:
    def __init__(self, uid, title, description, tags, variables):
        self.uid, self.title, self.description, self.tags = uid, title, description, tags
        self.variables = variables
        self.panels = []
        self.next_id = 1
        self.y = 0
        self.x = 0
        self.row_h = 0

    def row(self, title):
        self._newline()
        self.panels.append({"id": self._id(), "type": "row", "title": title, "collapsed": False,
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "panels": []})
        self.y += 1

    def _newline(self):
        if self.x:
            self.y += self.row_h
            self.x = 0
            self.row_h = 0

    def _id(self):
        i = self.next_id
        self.next_id += 1
        return i

    def _place(self, w, h):
        if self.x + w > 24:
            self._newline()
        pos = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.row_h = max(self.row_h, h)
        return pos

    def panel(self, kind, title, source, description, targets, unit="short", w=12, h=8,
              steps=None, min_=None, max_=None, decimals=None, stack=False, options=None, instant=False):
        refs = "ABCDEFGHIJ"
        tgs = []
        for i, t in enumerate(targets):
            expr, legend = t[0], t[1]
            tg = {"datasource": ds(), "refId": refs[i], "expr": expr, "legendFormat": legend,
                  "range": not instant, "instant": instant}
            tgs.append(tg)
        defaults = {"unit": unit, "thresholds": thresholds(steps or GREEN),
                    "color": {"mode": "palette-classic" if kind == "timeseries" else "thresholds"}}
        if min_ is not None:
            defaults["min"] = min_
        if max_ is not None:
            defaults["max"] = max_
        if decimals is not None:
            defaults["decimals"] = decimals
        if kind == "timeseries":
            defaults["custom"] = {
                "drawStyle": "line", "lineWidth": 1, "fillOpacity": 10 if not stack else 30,
                "showPoints": "never", "spanNulls": False,
                "stacking": {"mode": "normal" if stack else "none", "group": "A"},
                "thresholdsStyle": {"mode": "line" if steps else "off"},
            }
            opts = {"legend": {"displayMode": "table", "placement": "bottom", "showLegend": True,
                               "calcs": ["lastNotNull", "max"]},
                    "tooltip": {"mode": "multi", "sort": "desc"}}
        elif kind == "stat":
            opts = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "colorMode": "value", "graphMode": "area", "justifyMode": "auto",
                    "orientation": "auto", "textMode": "auto"}
        elif kind == "gauge":
            opts = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "showThresholdLabels": False, "showThresholdMarkers": True}
        elif kind == "table":
            opts = {"showHeader": True, "cellHeight": "sm"}
        else:
            raise ValueError(kind)
        if options:
            opts.update(options)
        p = {"id": self._id(), "type": kind, "title": title, "datasource": ds(),
             "description": f"Source: {source}. {description}",
             "gridPos": self._place(w, h), "targets": tgs,
             "fieldConfig": {"defaults": defaults, "overrides": []}, "options": opts}
        if kind == "table":
            p["transformations"] = [{"id": "merge", "options": {}},
                                    {"id": "organize", "options": {"excludeByName": {"Time": True}}}]
        self.panels.append(p)
        return p

    def ts(self, *a, **k):
        return self.panel("timeseries", *a, **k)

    def stat(self, *a, **k):
        return self.panel("stat", *a, **k)

    def to_json(self):
        return {
            "uid": self.uid, "title": self.title, "description": self.description,
            "tags": ["milvus", "milvus-scaler"] + self.tags,
            "editable": True, "graphTooltip": 1, "schemaVersion": 39, "version": 1,
            "time": {"from": "now-1h", "to": "now"}, "timezone": "browser", "refresh": "30s",
            "fiscalYearStartMonth": 0, "liveNow": False, "weekStart": "",
            "timepicker": {}, "links": [
                {"title": t, "type": "link", "url": f"/d/{u}", "keepTime": True, "includeVars": True,
                 "asDropdown": False, "icon": "dashboard", "tags": [], "targetBlank": False, "tooltip": ""}
                for u, t in DASHBOARD_LINKS if u != self.uid],
            "annotations": {"list": [{
                "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
                "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts",
                "type": "dashboard"}] + self.annotations()},
            "templating": {"list": self.variables},
            "panels": self.panels,
        }

    def annotations(self):
        return getattr(self, "extra_annotations", [])


DASHBOARD_LINKS = [
    ("milvus-query-performance", "Query performance"),
    ("milvus-cluster-overview", "Cluster overview"),
    ("milvus-storage-health", "Storage health"),
    ("milvus-autoscaling-events", "Autoscaling events"),
]


def var_datasource():
    return {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
            "current": {}, "hide": 0, "includeAll": False, "multi": False, "options": [], "refresh": 1,
            "regex": "", "skipUrlSync": False}


def var_query(name, label, query, all_value=".*", multi=True):
    return {"name": name, "label": label, "type": "query", "datasource": ds(),
            "definition": query, "query": {"query": query, "refId": f"{name}-var"},
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "hide": 0, "includeAll": True, "allValue": all_value, "multi": multi, "options": [],
            "refresh": 2, "regex": "", "skipUrlSync": False, "sort": 1}


def var_milvus():
    # The union of the Milvus-side label and milvus-scaler's `milvus` label, so the variable lists
    # instances whichever source is present.
    return var_query("milvus", "Milvus", "label_values(milvus_num_node, app_kubernetes_io_instance)")


def var_milvus_scaler():
    return var_query("milvus", "Milvus", "label_values(milvus_scaler_signal_known, milvus)")


def var_namespace():
    return var_query("namespace", "Namespace", "label_values(kube_pod_info, namespace)")


def var_collection():
    return var_query("collection", "Collection",
                     f"label_values(milvus_proxy_collection_sq_latency_count{{{M}}}, collection_name)")


def q(quantile, bucket_expr, by="le", scale=""):
    return f"histogram_quantile({quantile}, sum by ({by}) (rate({bucket_expr}[{RI}]))){scale}"


# ---------------------------------------------------------------- query performance
def query_performance():
    d = Dash("milvus-query-performance", "Milvus / Query performance",
             "Search and query latency, throughput and queueing in Milvus, and the segment-cache hit ratio.",
             ["query-performance"], [var_datasource(), var_milvus(), var_collection()])
    lat_steps = [(None, "green"), (SLO_SECONDS * 0.8, "yellow"), (SLO_SECONDS, "red")]
    d.row("Latency")
    d.ts("Search latency (proxy)", "Milvus (milvus_proxy_sq_latency, milliseconds, divided to seconds)",
         "p50/p90/p99 of search requests as the proxy sees them, over every collection. The red line is the "
         "SLO used by the MilvusSearchLatencyP99AboveSLO alert.",
         [(q(x, f'milvus_proxy_sq_latency_bucket{{{M},query_type="search"}}', scale=" / 1000"), f"p{int(x*100)}")
          for x in (0.5, 0.9, 0.99)], unit="s", steps=lat_steps, w=12)
    d.ts("Query latency (proxy)", "Milvus (milvus_proxy_sq_latency, milliseconds)",
         "p50/p90/p99 of query (scalar filter / get) requests at the proxy.",
         [(q(x, f'milvus_proxy_sq_latency_bucket{{{M},query_type="query"}}', scale=" / 1000"), f"p{int(x*100)}")
          for x in (0.5, 0.9, 0.99)], unit="s", w=12)
    d.ts("Search p99 by collection", "Milvus (milvus_proxy_collection_sq_latency)",
         "p99 search latency per collection (the `collection` variable filters).",
         [(q(0.99, f'milvus_proxy_collection_sq_latency_bucket{{{M},query_type="search",'
                   f'collection_name=~"$collection"}}', by="le, collection_name", scale=" / 1000"),
           "{{collection_name}}")], unit="s", steps=lat_steps, w=12)
    d.ts("Search p99 per query node", "Milvus (milvus_querynode_sq_req_latency)",
         "p99 of search requests served by each query node (scope FromLeader is the shard leader's "
         "fan-out, OnLeader the local part).",
         [(q(0.99, f'milvus_querynode_sq_req_latency_bucket{{{M},query_type="search"}}',
             by="le, pod, node_id, scope", scale=" / 1000"), "{{pod}} node {{node_id}} {{scope}}")],
         unit="s", w=12)
    d.ts("Query-node queue wait p99", "Milvus (milvus_querynode_sq_queue_latency)",
         "Time requests wait in the query node's read queue before they run: rising wait with flat "
         "execution time means the node is queue-bound and needs replicas, not bigger pods.",
         [(q(0.99, f'milvus_querynode_sq_queue_latency_bucket{{{M}}}', by="le, pod, node_id, query_type",
             scale=" / 1000"), "{{pod}} node {{node_id}} {{query_type}}")], unit="s", w=12)
    d.ts("Search latency heatmap buckets (rate)", "Milvus (milvus_proxy_sq_latency)",
         "Requests per second per latency bucket (upper bound in ms), the whole distribution at a glance.",
         [(f'sum by (le) (rate(milvus_proxy_sq_latency_bucket{{{M},query_type="search"}}[{RI}]))', "≤ {{le}} ms")],
         unit="reqps", w=12)
    d.row("Throughput")
    d.stat("Search QPS", "Milvus (milvus_proxy_req_count)",
           "Search requests per second over all proxies.",
           [(f'sum(rate(milvus_proxy_req_count{{{M},function_name="Search",status="total"}}[{RI}]))', "search/s")],
           unit="reqps", w=6, h=6, decimals=1)
    d.stat("Search vectors per second (nq)", "Milvus (milvus_proxy_search_vectors_count)",
           "Query vectors per second: a search with nq=50 costs about 50 times one with nq=1.",
           [(f'sum(rate(milvus_proxy_search_vectors_count{{{M}}}[{RI}]))', "vectors/s")],
           unit="short", w=6, h=6, decimals=0)
    d.stat("Proxy in-flight nq", "Milvus (milvus_proxy_executing_total_nq)",
           "Query vectors (nq) the proxies have sent to query nodes and not yet had answered. Averaged over the "
           "signal window and divided by signals.demand_drain, this is the backlog term of milvus-scaler's "
           "search_demand (the other term: the rate of milvus_proxy_received_nq).",
           [(f'sum(milvus_proxy_executing_total_nq{{{M}}})', "nq")], unit="short", w=6, h=6,
           steps=[(None, "green"), (500, "yellow"), (2000, "red")])
    d.stat("Segment-cache hit ratio", "segment-cache (segment_cache_requests_total)",
           "Share of object reads (GET/HEAD) the query-node sidecars served from NVMe. Low while warming; "
           "a collapse after warm-up means the cache is too small or the working set moved.",
           [(f'(sum(rate(segment_cache_requests_total{{{M},op=~"get|head",result="hit"}}[{RI}])) or '
             f'sum(rate(segment_cache_requests_total{{{M},op=~"get|head",result="miss"}}[{RI}])) * 0) / '
             f'sum(rate(segment_cache_requests_total{{{M},op=~"get|head",result=~"hit|miss"}}[{RI}]))', "hit ratio")],
           unit="percentunit", w=6, h=6, min_=0, max_=1,
           steps=[(None, "red"), (0.5, "yellow"), (0.8, "green")])
    d.ts("Requests per second by status", "Milvus (milvus_proxy_req_count)",
         "Search and Query requests per second at the proxies, by outcome (fail is errors returned).",
         [(f'sum by (function_name, status) (rate(milvus_proxy_req_count{{{M},function_name=~"Search|Query",'
           f'status=~"success|fail"}}[{RI}]))', "{{function_name}} {{status}}")], unit="reqps", w=12)
    d.ts("Search QPS by collection", "Milvus (milvus_proxy_collection_sq_latency_count)",
         "Searches per second per collection.",
         [(f'sum by (collection_name) (rate(milvus_proxy_collection_sq_latency_count{{{M},query_type="search",'
           f'collection_name=~"$collection"}}[{RI}]))', "{{collection_name}}")], unit="reqps", w=12)
    d.row("Queueing")
    d.ts("Read queue depth per query node", "Milvus (recording rule milvus:querynode_read_queue_len, "
         "from milvus_querynode_read_task_unsolved_len + milvus_querynode_read_task_ready_len)",
         "Read tasks waiting in each query node (unsolved + ready; newer Milvus exports only ready_len). "
         "This is what milvus-scaler's search_queue_depth signal adds up.",
         [(f'milvus:querynode_read_queue_len{{{M}}}', "{{pod}} node {{node_id}}")], unit="short", w=12,
         steps=[(None, "green"), (8, "yellow"), (32, "red")])
    d.ts("Read task concurrency per query node", "Milvus (milvus_querynode_read_task_concurrency)",
         "Read tasks executing at once on each query node. Added to the waiting read tasks and averaged over "
         "the signal window per node, this is milvus-scaler's search_inflight (sum over nodes) and "
         "search_inflight_node_max (largest node).",
         [(f'sum by (pod, node_id) (milvus_querynode_read_task_concurrency{{{M}}})', "{{pod}} node {{node_id}}")],
         unit="short", w=12)
    d.row("Segment cache")
    d.ts("Segment-cache hit ratio per pod", "segment-cache (recording rule segment_cache:hit_ratio:rate5m)",
         "5-minute hit ratio of each query-node sidecar; the SegmentCacheHitRatioCollapse alert fires below 0.5.",
         [(f'segment_cache:hit_ratio:rate5m{{{M}}}', "{{pod}} {{instance}}")], unit="percentunit", min_=0, max_=1,
         steps=[(None, "red"), (0.5, "yellow"), (0.8, "green")], w=12)
    d.ts("Segment-cache requests by result", "segment-cache (segment_cache_requests_total)",
         "Object requests per second by operation and result (bypass: passed to S3 unchanged).",
         [(f'sum by (op, result) (rate(segment_cache_requests_total{{{M}}}[{RI}]))', "{{op}} {{result}}")],
         unit="reqps", w=12)
    return d


# ---------------------------------------------------------------- cluster overview
def cluster_overview():
    d = Dash("milvus-cluster-overview", "Milvus / Cluster overview",
             "Milvus nodes by role, query-node replicas desired vs current, resource use and pod status.",
             ["cluster-overview"], [var_datasource(), var_milvus(), var_namespace()])
    pods = 'namespace=~"$namespace",pod=~"$milvus-milvus-.*"'
    d.row("Milvus nodes")
    d.ts("Milvus nodes by role", "Milvus (milvus_num_node)",
         "Processes of each role that report themselves (each Milvus process exports 1 for its role).",
         [(f'sum by (role_name) (milvus_num_node{{{M}}})', "{{role_name}}")], unit="short", w=12, stack=True)
    d.ts("Nodes seen by the coordinators", "Milvus (milvus_querycoord_querynode_num, milvus_datacoord_datanode_num, "
         "milvus_datacoord_index_node_num, milvus_rootcoord_proxy_num)",
         "Query, data and index nodes and proxies registered with their coordinator: a node that runs "
         "but is missing here is not serving.",
         [(f'sum(milvus_querycoord_querynode_num{{{M}}})', "query nodes"),
          (f'sum(milvus_datacoord_datanode_num{{{M}}})', "data nodes"),
          (f'sum(milvus_datacoord_index_node_num{{{M}}})', "index nodes"),
          (f'sum(milvus_rootcoord_proxy_num{{{M}}})', "proxies")], unit="short", w=12)
    d.ts("Query-node replicas: desired vs current", "kube-state-metrics (kube_horizontalpodautoscaler_status_*, "
         "kube_deployment_status_replicas_available)",
         "What the HPA (plain or KEDA-made) wants, what it has, its max, and the query-node pods that are "
         "available. Needs kube-state-metrics.",
         [(f'sum by (horizontalpodautoscaler) (kube_horizontalpodautoscaler_status_desired_replicas{{namespace=~"$namespace",'
           f'horizontalpodautoscaler=~".*querynode.*"}})', "desired {{horizontalpodautoscaler}}"),
          (f'sum by (horizontalpodautoscaler) (kube_horizontalpodautoscaler_status_current_replicas{{namespace=~"$namespace",'
           f'horizontalpodautoscaler=~".*querynode.*"}})', "current {{horizontalpodautoscaler}}"),
          (f'sum by (horizontalpodautoscaler) (kube_horizontalpodautoscaler_spec_max_replicas{{namespace=~"$namespace",'
           f'horizontalpodautoscaler=~".*querynode.*"}})', "max {{horizontalpodautoscaler}}"),
          (f'sum by (deployment) (kube_deployment_status_replicas_available{{namespace=~"$namespace",'
           f'deployment=~"$milvus-milvus-querynode"}})', "available {{deployment}}")], unit="short", w=12)
    d.ts("Pods by phase", "kube-state-metrics (kube_pod_status_phase)",
         "Milvus pods per phase; Pending pods mean the cluster has no room (see node groups). Needs kube-state-metrics.",
         [(f'sum by (phase) (kube_pod_status_phase{{{pods}}} == 1)', "{{phase}}")], unit="short", w=12, stack=True)
    d.row("Resources")
    d.ts("CPU by container", "cAdvisor (container_cpu_usage_seconds_total via the kubelet)",
         "CPU cores used by each Milvus container, summed over pods. Needs the kubelet/cAdvisor scrape.",
         [(f'sum by (container) (rate(container_cpu_usage_seconds_total{{{pods},container!="",container!="POD"}}[{RI}]))',
           "{{container}}")], unit="short", w=12)
    d.ts("Query-node memory vs limit", "cAdvisor (container_memory_working_set_bytes) and kube-state-metrics "
         "(kube_pod_container_resource_limits)",
         "Working set of each query-node container as a share of its memory limit; the "
         "MilvusQueryNodeMemoryNearLimit alert fires above 90% (the kernel OOM-kills at 100%).",
         [('milvus:querynode_memory_limit_ratio{namespace=~"$namespace",pod=~"$milvus-milvus-querynode.*"}', "{{pod}}")],
         unit="percentunit", min_=0, max_=1, steps=[(None, "green"), (0.8, "yellow"), (0.9, "red")], w=12)
    d.ts("Memory working set by container", "cAdvisor (container_memory_working_set_bytes)",
         "Memory working set per Milvus container. Needs the kubelet/cAdvisor scrape.",
         [(f'sum by (container) (container_memory_working_set_bytes{{{pods},container!="",container!="POD"}})',
           "{{container}}")], unit="bytes", w=12)
    d.ts("Container restarts and OOM kills", "kube-state-metrics (kube_pod_container_status_restarts_total, "
         "kube_pod_container_status_last_terminated_reason)",
         "Restarts in the last hour and containers whose last termination was OOMKilled. Needs kube-state-metrics.",
         [(f'sum by (pod, container) (increase(kube_pod_container_status_restarts_total{{{pods}}}[1h]))', "restarts {{pod}}/{{container}}"),
          (f'sum by (pod, container) (kube_pod_container_status_last_terminated_reason{{{pods},reason="OOMKilled"}})',
           "OOMKilled {{pod}}/{{container}}")], unit="short", w=12)
    d.row("Loaded data")
    d.ts("Loaded entities per query node", "Milvus (milvus_querynode_entity_num)",
         "Entities held in memory per query node (sealed and growing segments).",
         [(f'sum by (pod, node_id) (milvus_querynode_entity_num{{{M}}})', "{{pod}} node {{node_id}}")],
         unit="short", w=8)
    d.ts("Loaded bytes per query node", "Milvus (milvus_querynode_entity_size)",
         "Bytes of loaded segments per query node (Milvus updates it on a timer, minutes after a load).",
         [(f'sum by (pod, node_id) (milvus_querynode_entity_size{{{M}}})', "{{pod}} node {{node_id}}")],
         unit="bytes", w=8)
    d.ts("Loaded segments per query node", "Milvus (milvus_querynode_segment_num)",
         "Segments loaded per query node by state.",
         [(f'sum by (pod, node_id, segment_state) (milvus_querynode_segment_num{{{M}}})',
           "{{pod}} node {{node_id}} {{segment_state}}")], unit="short", w=8)
    d.ts("Query-node local disk used", "Milvus (milvus_querynode_disk_used_size, MiB)",
         "Local disk used by query nodes for mmap / DiskANN data (Milvus reports MiB).",
         [(f'sum by (pod, node_id) (milvus_querynode_disk_used_size{{{M}}})', "{{pod}} node {{node_id}}")],
         unit="mbytes", w=12)
    d.ts("Collections loaded", "Milvus (milvus_querynode_collection_num, milvus_rootcoord_collection_num)",
         "Collections that exist (rootcoord) and that each query node has loaded.",
         [(f'sum(milvus_rootcoord_collection_num{{{M}}})', "collections"),
          (f'sum by (pod, node_id) (milvus_querynode_collection_num{{{M}}})', "loaded on {{pod}} node {{node_id}}")],
         unit="short", w=12)
    return d


# ---------------------------------------------------------------- storage health
def storage_health():
    d = Dash("milvus-storage-health", "Milvus / Storage health",
             "Object storage (S3) traffic, segments and binlogs, flushes and index builds, and the query-node "
             "segment cache.", ["storage-health"], [var_datasource(), var_milvus()])
    d.row("Object storage (S3)")
    d.ts("S3 operations by type (Go side)", "Milvus (milvus_storage_op_count)",
         "Object-storage calls per second made by Milvus's Go components (binlog writes, reads), by result.",
         [(f'sum by (persistent_data_op_type, status) (rate(milvus_storage_op_count{{{M},status!="total"}}[{RI}]))',
           "{{persistent_data_op_type}} {{status}}")], unit="ops", w=12)
    d.ts("S3 operations by type (segcore)", "Milvus (internal_storage_op_count)",
         "Object-storage calls per second made by segcore (C++: index files, loads), by result.",
         [(f'sum by (persistent_data_op_type, status) (rate(internal_storage_op_count{{{M},status=~"success|fail"}}[{RI}]))',
           "{{persistent_data_op_type}} {{status}}")], unit="ops", w=12)
    d.ts("S3 bytes per second", "Milvus (milvus_storage_kv_size, internal_storage_kv_size)",
         "Bytes read and written to object storage per second.",
         [(f'sum by (persistent_data_op_type) (rate(milvus_storage_kv_size_sum{{{M}}}[{RI}]))', "go {{persistent_data_op_type}}"),
          (f'sum by (persistent_data_op_type) (rate(internal_storage_kv_size_sum{{{M}}}[{RI}]))', "segcore {{persistent_data_op_type}}")],
         unit="Bps", w=12)
    d.ts("S3 request latency p99", "Milvus (milvus_storage_request_latency, internal_storage_request_latency, ms)",
         "p99 latency of object-storage calls by operation.",
         [(q(0.99, f'milvus_storage_request_latency_bucket{{{M}}}', by="le, persistent_data_op_type", scale=" / 1000"),
           "go {{persistent_data_op_type}}"),
          (q(0.99, f'internal_storage_request_latency_bucket{{{M}}}', by="le, persistent_data_op_type", scale=" / 1000"),
           "segcore {{persistent_data_op_type}}")], unit="s", w=12)
    d.stat("Stored binlog bytes", "Milvus (milvus_datacoord_stored_binlog_size)",
           "Bytes of binlogs datacoord tracks in object storage (insert data of all segments).",
           [(f'sum(milvus_datacoord_stored_binlog_size{{{M}}})', "bytes")], unit="bytes", w=6, h=6)
    d.stat("Binlog objects", "Milvus (milvus_datacoord_segment_binlog_file_count)",
           "Binlog files in object storage over all segments.",
           [(f'sum(milvus_datacoord_segment_binlog_file_count{{{M}}})', "objects")], unit="short", w=6, h=6)
    d.stat("Stored rows", "Milvus (milvus_datacoord_stored_rows_num)",
           "Rows in stored segments (all states).",
           [(f'sum(milvus_datacoord_stored_rows_num{{{M}}})', "rows")], unit="short", w=6, h=6)
    d.stat("Segments", "Milvus (milvus_datacoord_segment_num)",
           "Live segments (growing, sealed, flushing, flushed).",
           [(f'sum(milvus_datacoord_segment_num{{{M},segment_state=~"Growing|Sealed|Flushing|Flushed"}})', "segments")],
           unit="short", w=6, h=6)
    d.row("Segments and binlogs")
    d.ts("Segments by state", "Milvus (milvus_datacoord_segment_num)",
         "Segments per state as datacoord counts them. A growing Flushing count means flushes are stuck.",
         [(f'sum by (segment_state) (milvus_datacoord_segment_num{{{M}}})', "{{segment_state}}")], unit="short", w=12)
    d.ts("Binlog bytes by collection", "Milvus (milvus_datacoord_stored_binlog_size)",
         "Stored binlog bytes per collection id.",
         [(f'sum by (collection_id) (milvus_datacoord_stored_binlog_size{{{M}}})', "{{collection_id}}")],
         unit="bytes", w=12)
    d.ts("Binlog size per segment (largest 10)", "Milvus (milvus_datacoord_stored_binlog_size)",
         "The ten largest segments' binlog bytes: uneven sizes mean compaction is behind.",
         [(f'topk(10, milvus_datacoord_stored_binlog_size{{{M}}})', "{{segment_id}}")], unit="bytes", w=12)
    d.ts("Files written per second by type", "Milvus (milvus_flushed_segment_file_num)",
         "Insert, delta, stats and index files written per second.",
         [(f'sum by (segment_file_type) (rate(milvus_flushed_segment_file_num_count{{{M}}}[{RI}]))',
           "{{segment_file_type}}")], unit="ops", w=12)
    d.row("Flushes and index builds")
    d.ts("Flush operations by status", "Milvus (milvus_datanode_flush_buffer_op_count, "
         "milvus_datanode_autoflush_buffer_op_count)",
         "Buffer flushes per second by status, explicit (flush) and automatic (autoflush: appears after the "
         "first automatic flush); any `fail` fires MilvusFlushFailures.",
         [(f'label_replace(sum by (status) (rate(milvus_datanode_flush_buffer_op_count{{{M}}}[{RI}])), '
           f'"kind", "flush", "", "") or label_replace(sum by (status) '
           f'(rate(milvus_datanode_autoflush_buffer_op_count{{{M}}}[{RI}])), "kind", "autoflush", "", "")',
           "{{kind}} {{status}}")],
         unit="ops", w=12)
    d.ts("Flush requests and bytes", "Milvus (milvus_datanode_flush_req_count, milvus_datanode_flushed_data_size)",
         "Flush calls per second by status, and bytes flushed per second.",
         [(f'sum by (status) (rate(milvus_datanode_flush_req_count{{{M}}}[{RI}]))', "requests {{status}}"),
          (f'sum(rate(milvus_datanode_flushed_data_size{{{M}}}[{RI}]))', "bytes/s")], unit="short", w=12)
    d.ts("Index build backlog", "Milvus (recording rule milvus:datacoord_index_pending_tasks, from "
         "milvus_datacoord_index_task_count or milvus_datacoord_task_count)",
         "Index builds unissued or in progress (both metric generations); MilvusIndexBuildBacklogGrowing fires "
         "when it keeps growing for 15 minutes.",
         [(f'milvus:datacoord_index_pending_tasks{{{M}}}', "pending {{app_kubernetes_io_instance}}")], unit="short", w=12)
    d.ts("Index tasks by state", "Milvus (milvus_datacoord_index_task_count / milvus_datacoord_task_count)",
         "Index tasks per state (2.3: index_task_status; 2.4+: task_state).",
         [(f'sum by (index_task_status) (milvus_datacoord_index_task_count{{{M}}})', "{{index_task_status}}"),
          (f'sum by (task_state) (milvus_datacoord_task_count{{{M}}})', "{{task_state}}")], unit="short", w=12)
    d.row("Segment cache (query-node sidecar)")
    d.ts("Cache bytes used vs capacity", "segment-cache (segment_cache_used_bytes, segment_cache_capacity_bytes)",
         "Bytes on the NVMe cache and its budget per sidecar.",
         [(f'sum by (pod, instance) (segment_cache_used_bytes{{{M}}})', "used {{pod}} {{instance}}"),
          (f'sum by (pod, instance) (segment_cache_capacity_bytes{{{M}}})', "capacity {{pod}} {{instance}}")],
         unit="bytes", w=12)
    d.ts("Cached objects", "segment-cache (segment_cache_objects)", "Objects in each sidecar's cache.",
         [(f'sum by (pod, instance) (segment_cache_objects{{{M}}})', "{{pod}} {{instance}}")], unit="short", w=12)
    d.ts("Evictions", "segment-cache (segment_cache_evictions_total, segment_cache_evicted_bytes_total)",
         "Objects and bytes evicted per second (LRU, to stay inside the byte budget). Series appear after the "
         "first eviction.",
         [(f'sum by (pod, instance) (rate(segment_cache_evictions_total{{{M}}}[{RI}]))', "objects/s {{pod}} {{instance}}"),
          (f'sum by (pod, instance) (rate(segment_cache_evicted_bytes_total{{{M}}}[{RI}]))', "bytes/s {{pod}} {{instance}}")],
         unit="short", w=12)
    d.ts("Served bytes by result", "segment-cache (segment_cache_served_bytes_total)",
         "Bytes per second served from the cache (hit) or fetched from S3 (miss).",
         [(f'sum by (result) (rate(segment_cache_served_bytes_total{{{M}}}[{RI}]))', "{{result}}")], unit="Bps", w=12)
    d.ts("Upstream S3 latency p99", "segment-cache (segment_cache_upstream_request_duration_seconds)",
         "p99 latency of the sidecar's own S3 calls, by operation.",
         [(q(0.99, f'segment_cache_upstream_request_duration_seconds_bucket{{{M}}}', by="le, op"), "{{op}}")],
         unit="s", w=12)
    d.ts("Upstream S3 requests by outcome", "segment-cache (segment_cache_upstream_requests_total)",
         "The sidecar's S3 calls per second by operation and outcome; errors here surface as Milvus load errors.",
         [(f'sum by (op, outcome) (rate(segment_cache_upstream_requests_total{{{M}}}[{RI}]))', "{{op}} {{outcome}}")],
         unit="reqps", w=12)
    d.ts("Warm-up progress", "segment-cache (segment_cache_warm_bytes_total, segment_cache_warm_pending_bytes, "
         "segment_cache_warm_done)",
         "Bytes warmed, bytes still queued for warming, and whether the warm pass finished (1).",
         [(f'sum by (pod, instance) (segment_cache_warm_bytes_total{{{M}}})', "warmed {{pod}} {{instance}}"),
          (f'sum by (pod, instance) (segment_cache_warm_pending_bytes{{{M}}})', "pending {{pod}} {{instance}}")],
         unit="bytes", w=12)
    d.stat("Warm done", "segment-cache (segment_cache_warm_done)",
           "1 once each sidecar finished its warm pass.",
           [(f'min(segment_cache_warm_done{{{M}}})', "done")], unit="short", w=6, h=8,
           steps=[(None, "yellow"), (1, "green")])
    d.stat("Objects warmed", "segment-cache (segment_cache_warm_objects_total)",
           "Objects fetched by the warm pass.",
           [(f'sum(segment_cache_warm_objects_total{{{M}}})', "objects")], unit="short", w=6, h=8)
    d.ts("Objects verified by checksum", "segment-cache (segment_cache_verified_objects_total)",
         "Objects fetched into the cache per second, by the checksum that verified them (crc64nvme, crc32c, "
         "crc32, md5, multipart-md5). Objects that cannot be verified are passed through, not cached.",
         [(f'sum by (by) (rate(segment_cache_verified_objects_total{{{M}}}[{RI}]))', "{{by}}")], unit="ops", w=12)
    d.ts("Access-log lines dropped", "segment-cache (segment_cache_access_log_dropped_total)",
         "Reads per second not recorded in the access log (the warm's source) because its queue was full: the "
         "writer could not keep up with the disk. Should stay at 0; series appear after the first drop.",
         [(f'sum by (pod, instance) (rate(segment_cache_access_log_dropped_total{{{M}}}[{RI}]))',
           "{{pod}} {{instance}}")], unit="ops", w=12)
    d.ts("Read-ahead objects", "segment-cache (segment_cache_read_ahead_objects_total, "
         "segment_cache_read_ahead_groups_total)",
         "Objects per second the segment-aware read-ahead handled after a segment's first miss: fetched, already "
         "cached, skipped (too big or over the segment's byte cap) or error; and segment file groups listed.",
         [(f'sum by (result) (rate(segment_cache_read_ahead_objects_total{{{M}}}[{RI}]))', "objects {{result}}"),
          (f'sum by (result) (rate(segment_cache_read_ahead_groups_total{{{M}}}[{RI}]))', "groups {{result}}")],
         unit="ops", w=12)
    d.ts("Read-ahead bytes", "segment-cache (segment_cache_read_ahead_bytes_total)",
         "Bytes per second the read-ahead fetched from upstream ahead of Milvus's reads.",
         [(f'sum by (pod) (rate(segment_cache_read_ahead_bytes_total{{{M}}}[{RI}]))', "{{pod}}")],
         unit="Bps", w=12)
    return d


# ---------------------------------------------------------------- autoscaling events
def autoscaling_events():
    sig = S
    hpa = 'namespace=~"$namespace"'
    d = Dash("milvus-autoscaling-events", "Milvus / Autoscaling events",
             "The signals milvus-scaler serves to the HPA/KEDA against their targets, replicas desired vs current, "
             "node-group capacity and changes, staleness and scaler errors.",
             ["autoscaling"], [var_datasource(), var_milvus_scaler(), var_namespace()])
    d.extra_annotations = [{
        "datasource": ds(), "enable": True, "hide": False, "iconColor": "orange",
        "name": "Node-group changes", "step": "30s", "titleFormat": "node group {{group}} {{direction}}",
        "textFormat": "ASG {{asg}} scaled {{direction}} by milvus-scaler",
        "tagKeys": "group,asg,direction", "useValueForTime": False,
        "expr": "sum by (group, asg, direction) (increase(milvus_scaler_nodegroup_changes_total[1m])) > 0",
    }]
    d.row("Signals as the HPA / KEDA sees them")
    for title, signal, unit, metric_name in [
        ("Search demand (nq/s) vs target", "search_demand", "short", "milvus_search_demand"),
        ("In-flight searches vs target", "search_inflight", "short", "milvus_search_inflight"),
        ("Search queue depth vs target", "search_queue_depth", "short", "milvus_search_queue_depth"),
        ("Search p99 latency vs target", "search_latency_p99_seconds", "s", "milvus_search_latency_p99_seconds"),
        ("Search rate vs target", "search_rate", "reqps", "milvus_search_rate"),
        ("Pending index builds vs target", "index_pending_builds", "short", "milvus_index_pending_builds"),
    ]:
        d.ts(title, "milvus-scaler (milvus_scaler_signal_value) and kube-state-metrics "
             "(kube_horizontalpodautoscaler_spec_target_metric)",
             f"The `{signal}` signal exactly as milvus-scaler serves it (external metric `{metric_name}`, "
             "KEDA metric of the same name) and the target each HPA sets for it (needs kube-state-metrics; for "
             "`AverageValue` targets the HPA compares value / replicas). KEDA-created HPAs name the metric "
             "`s<N>-<name>` (plus `-<collection>` when a trigger names one); the matcher takes both forms.",
             [(f'milvus_scaler_signal_value{{{sig},signal="{signal}"}}', "{{milvus}} value"),
              (f'max by (horizontalpodautoscaler, metric_target_type) (kube_horizontalpodautoscaler_spec_target_metric{{{hpa},'
               f'metric_name=~"(s[0-9]+-)?{metric_name}(-.+)?"}})',
               "target {{horizontalpodautoscaler}} ({{metric_target_type}})")],
             unit=unit, w=12)
    d.ts("All signals", "milvus-scaler (milvus_scaler_signal_value)",
         "Every signal of every Milvus instance (only known values are updated).",
         [(f'milvus_scaler_signal_value{{{sig}}} and on (milvus, signal) (milvus_scaler_signal_known{{{sig}}} == 1)',
           "{{milvus}} {{signal}}")], unit="short", w=12)
    d.ts("HPA replicas: desired vs current vs max", "kube-state-metrics (kube_horizontalpodautoscaler_status_*)",
         "Every HPA in the namespace (plain HPAs and the ones KEDA creates). Needs kube-state-metrics.",
         [(f'kube_horizontalpodautoscaler_status_desired_replicas{{{hpa}}}', "desired {{horizontalpodautoscaler}}"),
          (f'kube_horizontalpodautoscaler_status_current_replicas{{{hpa}}}', "current {{horizontalpodautoscaler}}"),
          (f'kube_horizontalpodautoscaler_spec_max_replicas{{{hpa}}}', "max {{horizontalpodautoscaler}}")],
         unit="short", w=12)
    d.ts("HPA scaling limited", "kube-state-metrics (kube_horizontalpodautoscaler_status_condition)",
         "1 while an HPA's desired count is clamped by min/max (ScalingLimited) or it cannot scale (AbleToScale false). "
         "Needs kube-state-metrics.",
         [(f'kube_horizontalpodautoscaler_status_condition{{{hpa},condition="ScalingLimited",status="true"}} == 1',
           "limited {{horizontalpodautoscaler}}"),
          (f'kube_horizontalpodautoscaler_status_condition{{{hpa},condition="AbleToScale",status="false"}} == 1',
           "unable {{horizontalpodautoscaler}}")], unit="short", w=12)
    d.row("Scale-out: time to useful capacity")
    phase_s = "milvus_scaler_scale_out_phase_seconds"
    d.panel("table", "Scale-out phase times in range", f"milvus-scaler ({phase_s}; scrape source)",
            "For query nodes that appeared after milvus-scaler started: seconds from the node's scrape target "
            "being listed (its pod in DNS) to each phase: up (first successful scrape), registered (a node_id), "
            "first_segment (a sealed segment loaded), settled (segment count stable and no segment/channel moves), "
            "serving (its first search). Mean and p90 over the selected range, and how many nodes completed each "
            "phase. The per-node times are in milvus-scaler's log (\"scale-out phase completed\").",
            [(f'sum by (phase) (increase({phase_s}_sum{{{sig}}}[$__range])) / '
              f'sum by (phase) (increase({phase_s}_count{{{sig}}}[$__range]))', "mean"),
             (f'histogram_quantile(0.9, sum by (le, phase) (increase({phase_s}_bucket{{{sig}}}[$__range])))', "p90"),
             (f'sum by (phase) (increase({phase_s}_count{{{sig}}}[$__range]))', "nodes")],
            unit="s", w=12, instant=True)
    d.ts("New query nodes by phase reached", "milvus-scaler (milvus_scaler_scale_out_nodes; scrape source)",
         "Query nodes that appeared after milvus-scaler started and are still listed, counted in every phase they "
         "completed: a gap between `up` and `serving` is capacity added but not yet useful.",
         [(f'milvus_scaler_scale_out_nodes{{{sig}}}', "{{milvus}} {{phase}}")], unit="short", w=12, min_=0)
    d.row("Signal health")
    d.ts("Signal age", "milvus-scaler (milvus_scaler_signal_age_seconds)",
         "Seconds since each signal was last computed; past `signals.stale_after` a signal turns unknown and the "
         "APIs answer errors (the HPA then holds its replicas).",
         [(f'milvus_scaler_signal_age_seconds{{{sig}}}', "{{milvus}} {{signal}}")], unit="s", w=12,
         steps=[(None, "green"), (10, "yellow"), (30, "red")])
    d.ts("Unknown signals", "milvus-scaler (milvus_scaler_signal_known)",
         "Signals currently unknown (stale or unavailable) per instance; MilvusScalerSignalStale fires after 2 minutes.",
         [(f'count by (milvus) (milvus_scaler_signal_known{{{sig}}} == 0) or count by (milvus) '
           f'(milvus_scaler_signal_known{{{sig}}}) * 0', "{{milvus}}")], unit="short", w=12,
         steps=[(None, "green"), (1, "red")])
    d.ts("Scrape targets up", "milvus-scaler (milvus_scaler_target_up, milvus_scaler_round_failed_targets)",
         "Whether milvus-scaler reaches each Milvus /metrics target, and failed targets in the last round.",
         [('milvus_scaler_target_up', "up {{target}}"),
          (f'milvus_scaler_round_failed_targets{{{sig}}}', "failed targets {{milvus}}")], unit="short", w=12)
    d.ts("Signal round and scrape duration p99", "milvus-scaler (milvus_scaler_round_duration_seconds, "
         "milvus_scaler_scrape_duration_seconds)",
         "How long one poll round and one target scrape take (p99). From the histogram buckets; while the "
         "recorder exports these as summaries (no buckets configured), from the summary's 0.99 quantile.",
         [(q(0.99, f'milvus_scaler_round_duration_seconds_bucket{{{sig}}}', by="le, milvus")
           + f' or max by (milvus) (milvus_scaler_round_duration_seconds{{{sig},quantile="0.99"}})', "round {{milvus}}"),
          (q(0.99, 'milvus_scaler_scrape_duration_seconds_bucket', by="le, target")
           + ' or max by (target) (milvus_scaler_scrape_duration_seconds{quantile="0.99"})', "scrape {{target}}")],
         unit="s", w=12)
    d.ts("milvus-scaler up", "milvus-scaler (Prometheus `up` of the milvus-scaler job)",
         "1 while Prometheus can scrape milvus-scaler; MilvusScalerDown fires after 2 minutes at 0.",
         [('up{job=~"milvus-scaler.*"}', "{{instance}}")], unit="short", w=12, min_=0, max_=1,
         steps=[(None, "red"), (1, "green")])
    d.row("Serving APIs")
    d.ts("External metrics API requests", "milvus-scaler (milvus_scaler_http_requests_total; external-metrics mode)",
         "Requests per second to the Kubernetes external metrics API by route and status code. Appears when "
         "`external_metrics` is configured.",
         [('sum by (route, code) (rate(milvus_scaler_http_requests_total[$__rate_interval]))', "{{route}} {{code}}")],
         unit="reqps", w=12)
    d.ts("External metrics API latency p99", "milvus-scaler (milvus_scaler_http_request_duration_seconds; "
         "external-metrics mode)", "p99 per route.",
         [(q(0.99, 'milvus_scaler_http_request_duration_seconds_bucket', by="le, route"), "{{route}}")],
         unit="s", w=12)
    d.ts("Front-proxy client CA from the cluster", "milvus-scaler (milvus_scaler_external_metrics_client_ca_"
         "updates_total, ..._refresh_failures_total; external-metrics mode with client_ca.from_cluster)",
         "Changes of the front-proxy CA (kube-system/extension-apiserver-authentication) installed without a "
         "restart, and failed refreshes (the last good CA stays in use: a long run of failures means a rotated CA "
         "will not be picked up and the API server's requests will start failing).",
         [('sum by (instance) (increase(milvus_scaler_external_metrics_client_ca_updates_total[$__rate_interval]))',
           "updates {{instance}}"),
          ('sum by (instance) (increase(milvus_scaler_external_metrics_client_ca_refresh_failures_total'
           '[$__rate_interval]))', "refresh failures {{instance}}")], unit="short", w=12)
    d.ts("KEDA gRPC requests", "milvus-scaler (milvus_scaler_grpc_requests_total; KEDA mode)",
         "KEDA external-scaler calls per second by method and gRPC code. Appears when `keda` is configured.",
         [('sum by (method, code) (rate(milvus_scaler_grpc_requests_total[$__rate_interval]))', "{{method}} {{code}}")],
         unit="reqps", w=12)
    d.ts("KEDA gRPC latency p99", "milvus-scaler (milvus_scaler_grpc_request_duration_seconds; KEDA mode)",
         "p99 per external-scaler method (StreamIsActive is a long-lived stream and is left out).",
         [(q(0.99, 'milvus_scaler_grpc_request_duration_seconds_bucket{method!~".*StreamIsActive"}', by="le, method"),
           "{{method}}")], unit="s", w=12)
    d.ts("KEDA push streams", "milvus-scaler (milvus_scaler_keda_active_streams, milvus_scaler_keda_push_messages_total; "
         "KEDA mode)", "Open StreamIsActive streams and activity messages pushed per second.",
         [('sum(milvus_scaler_keda_active_streams)', "streams"),
          ('sum by (active) (rate(milvus_scaler_keda_push_messages_total[$__rate_interval]))', "pushed active={{active}}")],
         unit="short", w=12)
    d.row("Node groups")
    d.ts("Node-group capacity: planned vs current", "milvus-scaler (milvus_scaler_nodegroup_*; node-group sizing)",
         "EC2 Auto Scaling group desired capacity now and what milvus-scaler plans from signal demand, "
         "inside min/max. Appears when `node_groups` is configured.",
         [('milvus_scaler_nodegroup_current_capacity', "current {{group}} ({{asg}})"),
          ('milvus_scaler_nodegroup_planned_capacity', "planned {{group}} ({{asg}})"),
          ('milvus_scaler_nodegroup_max_size', "max {{group}} ({{asg}})"),
          ('milvus_scaler_nodegroup_min_size', "min {{group}} ({{asg}})")], unit="short", w=12)
    d.ts("Planned pod replicas per node group", "milvus-scaler (milvus_scaler_nodegroup_planned_replicas; "
         "node-group sizing)", "Pods the HPA targets will ask for, per group: the demand the capacity plan is built on.",
         [('milvus_scaler_nodegroup_planned_replicas', "{{group}}")], unit="short", w=12)
    d.panel("table", "Node-group changes in range", "milvus-scaler (milvus_scaler_nodegroup_changes_total; "
            "node-group sizing)",
            "Capacity changes milvus-scaler made in the selected range, by group, ASG and direction; the "
            "reason (signal demand, bounds) is in milvus-scaler's log line for the change. Also shown as annotations.",
            [('sum by (group, asg, direction) (increase(milvus_scaler_nodegroup_changes_total[$__range]))', "")],
            unit="short", w=12, instant=True)
    d.ts("Node group capped at MaxSize", "milvus-scaler (milvus_scaler_nodegroup_capped; node-group sizing)",
         "1 while demand exceeds the group's MaxSize (MilvusScalerNodeGroupAtMaxSize fires after 10 minutes).",
         [('milvus_scaler_nodegroup_capped', "{{group}} ({{asg}})")], unit="short", w=12,
         steps=[(None, "green"), (1, "red")])
    d.ts("Node-group errors", "milvus-scaler (milvus_scaler_nodegroup_errors_total; node-group sizing)",
         "Failed Auto Scaling API calls per second by group.",
         [('sum by (group, asg) (rate(milvus_scaler_nodegroup_errors_total[$__rate_interval]))', "{{group}} ({{asg}})")],
         unit="ops", w=12)
    d.ts("Node-group writer: leader election", "milvus-scaler (milvus_scaler_nodegroup_leader, "
         "milvus_scaler_nodegroup_lease_errors_total; node-group sizing)",
         "Replicas holding the node groups' Lease, the one that writes desired capacity (exactly 1 is right; 0 means "
         "nobody writes the groups, see the lease failures), and failed attempts to acquire or renew it by kind. "
         "Appears when the node groups' leader election runs (mode: apply in a pod).",
         [('sum by (lease) (milvus_scaler_nodegroup_leader)', "replicas leading {{lease}}"),
          ('sum by (lease, kind) (increase(milvus_scaler_nodegroup_lease_errors_total[$__rate_interval]))',
           "lease failed {{kind}} {{lease}}")], unit="short", w=12)
    d.row("Node headroom")
    d.ts("Headroom: planned vs applied", "milvus-scaler (milvus_scaler_headroom_*; node headroom)",
         "Headroom pods the planner wants (from search_demand, its growth over the time to ready and the scheduled "
         "peaks), what the holder holds after its round (placeholder Deployment or CapacityBuffer replicas, or the "
         "Auto Scaling groups' desired capacity in nodes), what the object's status reports, and the query-node "
         "pods the plan counts the headroom above; and how many milvus-scaler replicas hold the headroom Lease "
         "(leader election: exactly 1 is right; 0 means nobody writes the headroom, see the lease failures). "
         "Appears when `headroom` is configured.",
         [('milvus_scaler_headroom_planned_pods', "planned pods {{holder}}"),
          ('milvus_scaler_headroom_applied', "applied {{unit}} {{holder}}"),
          ('milvus_scaler_headroom_observed_pods', "status pods {{holder}}"),
          ('milvus_scaler_headroom_workload_pods', "query-node pods {{holder}}"),
          ('sum by (lease) (milvus_scaler_headroom_leader)', "replicas leading {{lease}}")], unit="short", w=12)
    d.ts("Headroom writes, failures and blind rounds", "milvus-scaler (milvus_scaler_headroom_*_total; node headroom)",
         "Writes of the headroom by direction, failed rounds by kind (not_found / forbidden name the object or the "
         "RBAC verb in milvus-scaler's log), and rounds that wrote nothing because search_demand or the query "
         "nodes' replicas were unknown; and failed attempts to acquire or renew the headroom Lease by kind "
         "(forbidden: the RBAC of lease-rbac.yaml).",
         [('sum by (holder, direction) (increase(milvus_scaler_headroom_changes_total[$__rate_interval]))',
           "set {{direction}} {{holder}}"),
          ('sum by (holder, kind) (increase(milvus_scaler_headroom_errors_total[$__rate_interval]))',
           "failed {{kind}} {{holder}}"),
          ('sum by (holder) (increase(milvus_scaler_headroom_blind_rounds_total[$__rate_interval]))',
           "blind {{holder}}"),
          ('sum by (lease, kind) (increase(milvus_scaler_headroom_lease_errors_total[$__rate_interval]))',
           "lease failed {{kind}} {{lease}}")], unit="short", w=12)
    return d


ALL = {
    "query-performance.json": query_performance,
    "cluster-overview.json": cluster_overview,
    "storage-health.json": storage_health,
    "autoscaling-events.json": autoscaling_events,
}


def render() -> dict[str, str]:
    return {name: json.dumps(fn().to_json(), indent=2, ensure_ascii=False) + "\n" for name, fn in ALL.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--check", action="store_true", help="exit 1 if the committed JSON is out of date")
    args = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    stale = []
    for name, text in render().items():
        path = OUT / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"out of date: {', '.join(stale)}: run python3 grafana/build_dashboards.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
