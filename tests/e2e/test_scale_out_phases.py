"""milvus-scaler times a new query node's scale-out phases (up, registered, first segment, settled,
serving) from its scrapes, exports them (`milvus_scaler_scale_out_phase_seconds`, `..._nodes`), logs one
line per phase, and `make run`'s view (tests/demo.py) renders those lines.

The real `milvus-scaler serve` binary scrapes scripted /metrics endpoints (harness/exporter.py
`StaticExporter`, a stand-in for Milvus pods: the test sets each round's numbers) listed in a `file:`
target list, which is how the harness adds a query node (no Milvus runs here)."""
from __future__ import annotations

import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import demo  # noqa: E402
from harness import promtext  # noqa: E402
from harness.exporter import StaticExporter, fixture  # noqa: E402
from harness.procs import wait_until  # noqa: E402
from harness.services import Scaler  # noqa: E402

INTERVAL = 0.25  # the scrape interval, seconds
PHASES = ["up", "registered", "first_segment", "settled", "serving"]

QUERYCOORD = ("milvus_querycoord_querynode_num 2\n"
              'milvus_querycoord_task_num{querycoord_task_type="segment_move"} %d\n')
REGISTERED = 'milvus_querynode_read_task_ready_len{node_id="12"} 0\n'
SEGMENTS = 'milvus_querynode_segment_num{collection_id="1",node_id="12",segment_state="Sealed"} %d\n'
SEARCHES = ('milvus_querynode_sq_req_count{node_id="12",query_type="search",scope="FromLeader",'
            'status="total"} %d\n')


def phase_counts(text: str) -> dict[str, float | None]:
    return {p: promtext.first_value(text, "milvus_scaler_scale_out_phase_seconds_count", milvus="demo", phase=p)
            for p in PHASES}


def nodes_gauge(text: str) -> dict[str, float | None]:
    return {p: promtext.first_value(text, "milvus_scaler_scale_out_nodes", milvus="demo", phase=p) for p in PHASES}


def test_a_query_node_added_to_the_target_list_is_timed_exported_logged_and_rendered(tmp_path):
    # Present from the start (the real 2.3.5 standalone capture: a query node, node 3): never reported.
    existing = StaticExporter(fixture("milvus-2.3.5-metrics-under-load.prom"))
    coord = StaticExporter(QUERYCOORD % 0)
    node = StaticExporter("")
    node.set_down(True)  # listed before its process serves /metrics: HTTP 500
    targets = tmp_path / "targets.txt"
    targets.write_text(f"{existing.url}\n{coord.url}\n")
    scaler = None
    try:
        scaler = Scaler({
            "milvus": [{"name": "demo", "scrape": {"interval": f"{int(INTERVAL * 1000)}ms",
                                                   "targets": [f"file:{targets}"]}}],
            "signals": {"window": "10s", "stale_after": "5s"},
        })
        wait_until(lambda: nodes_gauge(scaler.metrics_text())["up"] == 0, 30, "the scale-out gauges at 0")
        time.sleep(3 * INTERVAL)
        targets.write_text(f"{existing.url}\n{coord.url}\n{node.url}\n")
        listed = time.monotonic()
        time.sleep(1.5)
        node.set("go_goroutines 12\n")  # up, not registered yet
        node.set_down(False)
        up = time.monotonic()
        time.sleep(1.0)
        node.set(REGISTERED)
        wait_until(lambda: phase_counts(scaler.metrics_text())["registered"] == 1, 30, "registered")
        # Two segments move onto it; the coordinator's move task runs for a while.
        coord.set(QUERYCOORD % 2)
        node.set(REGISTERED + SEGMENTS % 2)
        wait_until(lambda: phase_counts(scaler.metrics_text())["first_segment"] == 1, 30, "first_segment")
        time.sleep(6 * INTERVAL)
        assert phase_counts(scaler.metrics_text())["settled"] is None, "settled while segments move"
        coord.set(QUERYCOORD % 0)
        node.set(REGISTERED + SEGMENTS % 2 + SEARCHES % 3)
        wait_until(lambda: None not in phase_counts(scaler.metrics_text()).values(), 30, "every phase")

        text = scaler.metrics_text()
        assert phase_counts(text) == {p: 1.0 for p in PHASES}, text
        assert nodes_gauge(text) == {p: 1.0 for p in PHASES}, text
        seconds = {p: promtext.first_value(text, "milvus_scaler_scale_out_phase_seconds_sum", milvus="demo",
                                           phase=p) for p in PHASES}
        # Up: its target was listed for 1.5 s before it answered; the scaler sees each change at its next
        # round, so each end is late by up to one interval (plus scheduling slack).
        slack = INTERVAL + 0.5
        assert abs(seconds["up"] - (up - listed)) < slack, (seconds, up - listed)
        assert seconds["registered"] >= seconds["up"] + 1.0 - slack, seconds
        assert seconds["registered"] <= seconds["first_segment"] <= seconds["settled"], seconds
        # Buckets are the scale-out ones (0.5 s to 20 min), not the request-latency ones.
        assert promtext.first_value(text, "milvus_scaler_scale_out_phase_seconds_bucket", milvus="demo",
                                    phase="up", le="1200") == 1.0, text

        # The log: one line per phase, for the new node only.
        log = demo.ScaleOutLog(scaler.service.log_path)
        nodes = log.poll()
        assert list(nodes) == [node.url], nodes
        entry = nodes[node.url]
        assert entry["node_id"] == "12" and set(entry["phases"]) == set(PHASES), entry
        for p in PHASES:
            assert abs(entry["phases"][p] - seconds[p]) < 1e-9, (p, entry, seconds)
        line = demo.scale_out_line("querynode-2", entry)
        assert re.fullmatch(r"querynode-2 \(node 12\) scale-out: up [\d.]+ s, registered [\d.]+ s, "
                            r"first segment [\d.]+ s, settled [\d.]+ s, serving [\d.]+ s", line), line

        # The node leaves the list: no longer counted; what it took stays in the histogram.
        targets.write_text(f"{existing.url}\n{coord.url}\n")
        wait_until(lambda: nodes_gauge(scaler.metrics_text())["serving"] == 0, 30, "the gauge back at 0")
        assert phase_counts(scaler.metrics_text()) == {p: 1.0 for p in PHASES}
        assert scaler.service.alive()
    finally:
        if scaler is not None:
            scaler.stop()
        for e in (existing, coord, node):
            e.stop()
