"""`make run` (tests/demo.py) comes up on the real Milvus cluster with the closed loop, prints where
everything is and one live view, and stops every process it started; `--standalone` still works.
Its own module: other modules' fixtures hold the machine's Milvus lock while they run."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "tests" / "demo.py"

# The machine-wide Milvus lock may queue a run behind another test's cluster for a long time.
pytestmark = pytest.mark.timeout(3600)


def run_demo(*args: str) -> tuple[str, int]:
    """demo.py --once: (its stdout, its PID)."""
    env = {**os.environ, "COLUMNS": "140"}
    proc = subprocess.Popen([sys.executable, str(DEMO), "--once", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    try:
        stdout, stderr = proc.communicate(timeout=3300)
    except subprocess.TimeoutExpired:
        proc.terminate()  # demo.py stops what it started on SIGTERM
        stdout, stderr = proc.communicate(timeout=300)
        raise AssertionError(f"demo.py --once did not finish:\n{stdout[-4000:]}{stderr[-4000:]}")
    assert proc.returncode == 0, stdout[-4000:] + stderr[-4000:]
    return stdout, proc.pid


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status  # a zombie has exited


def test_make_run_comes_up_on_the_cluster_shows_the_loop_and_stops_everything():
    text, demo_pid = run_demo("--measure", "8")
    print(text)
    assert "ready:" in text and "get --raw" in text and "milvus_search_demand" in text, text
    # what was started, by PID
    m = re.search(r"^  processes \(PID\): (.+)$", text, re.M)
    assert m, text
    pids = {name: int(pid) for name, pid in re.findall(r"([\w/.-]+) (\d+)", m.group(1))}
    assert {"coordinators", "proxy", "datanode", "indexnode", "querynode-1", "querynode-1/segment-cache", "etcd",
            "broker", "moto", "milvus-scaler", "local-hpa"} <= set(pids), pids
    # measured capacity and the HPA target from it
    cap = re.search(r"one query node serves ([\d.]+) searches/s \(\d+ nq/s\); HPA target ([\d.]+) nq/s per node",
                    text)
    assert cap and float(cap.group(1)) > 0, text
    assert abs(float(cap.group(2)) - 0.6 * 10 * float(cap.group(1))) < 1, text  # 60 % of nq/s, nq 10
    # the view: every row, the scale events section, the cache line
    view = text[text.index("one column per second"):]
    for row in ("search rate /s", "search_demand nq/s", "desired replicas", "serving query nodes",
                "search_queue_depth", "p99 latency ms", "scale events", "last scale events:",
                "segment-cache byte hit ratio"):
        assert row in view, f"{row!r} missing from the view:\n{view}"
    rows = {line[:24].strip(): line[24:] for line in view.splitlines()}
    assert rows["desired replicas"].split()[-3] == "1" and rows["serving query nodes"].split()[-3] == "1", view
    assert max(len(line) for line in view.splitlines()) <= 140, "the view is wider than the terminal"
    assert "querynode-1:" in view and "sealed segments" in view, view
    # stopped, every process gone, .run/demo.json removed
    assert "stopped." in text
    left = {name: pid for name, pid in pids.items() if alive(pid)}
    assert not left, f"processes of the run still alive: {left}"
    groups = sorted(p.name for p in Path("/sys/fs/cgroup/cpu").glob(f"milvus-scaler-{demo_pid}-*"))
    assert not groups, f"query nodes' CPU groups left behind: {groups}"
    demo_file = REPO / ".run" / "demo.json"
    assert not demo_file.exists() or json.loads(demo_file.read_text()).get("pid") != demo_pid, \
        "make run left .run/demo.json behind"


def test_make_run_standalone_still_shows_the_stack_view():
    text, _ = run_demo("--standalone")
    assert "ready:" in text and "get --raw" in text and "GetMetrics" in text, text
    assert "search_queue_depth" in text and "would ask for" in text, text
    assert "stopped." in text


# -- the scale-out lines of the view (no Milvus: milvus-scaler's log lines as the binary writes them; the
# real binary writing them is tests/e2e/test_scale_out_phases.py) ---------------------------------------

def _phase_line(target: str, node_id: str, phase: str, seconds: float, stamp: str) -> str:
    return json.dumps({"timestamp": stamp, "level": "INFO", "target": "milvus_signals::source",
                       "fields": {"message": "scale-out phase completed", "milvus": "demo", "target": target,
                                  "node_id": node_id, "phase": phase, "seconds": seconds}})


def test_the_view_shows_each_added_query_node_phases_as_they_complete(tmp_path):
    sys.path.insert(0, str(REPO / "tests"))
    import types

    import demo

    url2, url3 = "http://127.0.0.1:4002/metrics", "http://127.0.0.1:4003/metrics"
    log = tmp_path / "scaler.log"
    log.write_text(_phase_line(url2, "7", "up", 2.1, "2026-12-03T10:00:02.100000Z") + "\n"
                   + '{"fields": {"message": "target failed"}}\nnot json at all\n'
                   + _phase_line(url2, "7", "registered", 2.5, "2026-12-03T10:00:02.500000Z") + "\n"
                   # half a line: the rest is not written yet
                   + _phase_line(url3, "8", "up", 1.0, "2026-12-03T10:00:09Z")[:40])
    # A stand-in for the harness's MilvusCluster: only what maps a metrics URL to a node's name.
    node = lambda name, url: types.SimpleNamespace(name=name, proc=types.SimpleNamespace(metrics_url=url))  # noqa: E731
    view = demo.ClusterDemo.__new__(demo.ClusterDemo)
    view.cluster = types.SimpleNamespace(nodes={"querynode-2": node("querynode-2", url2)}, gone=[])
    view.scale_out = demo.ScaleOutLog(log)

    lines = [text for _, text in view.scale_out_events()]
    assert len(lines) == 1, lines
    assert lines[0].endswith("querynode-2 (node 7) scale-out: up 2.1 s, registered 2.5 s, first segment …, "
                             "settled …, serving …"), lines
    # More phases arrive (and the half line is completed): each node's line fills in, in phase order.
    with open(log, "a") as f:
        f.write(_phase_line(url3, "8", "up", 1.0, "2026-12-03T10:00:09Z")[40:] + "\n")
        for phase, s in (("first_segment", 6.3), ("serving", 11.4), ("settled", 11.0)):
            f.write(_phase_line(url2, "7", phase, s, "2026-12-03T10:00:12Z") + "\n")
    lines = [text for _, text in view.scale_out_events()]
    assert lines[0].endswith("querynode-2 (node 7) scale-out: up 2.1 s, registered 2.5 s, first segment 6.3 s, "
                             "settled 11.0 s, serving 11.4 s"), lines
    # A target no node of the cluster has (any more) is shown by its URL.
    assert lines[1].endswith(f"{url3} (node 8) scale-out: up 1.0 s, registered …, first segment …, settled …, "
                             "serving …"), lines
    # The same address under a new node_id is a new node: the old one's line stays, a new line starts.
    with open(log, "a") as f:
        f.write(_phase_line(url2, "9", "up", 0.4, "2026-12-03T10:01:00Z") + "\n")
    lines = [text for _, text in view.scale_out_events()]
    assert sum("querynode-2 (node 7)" in x for x in lines) == 1 and any(
        x.endswith("querynode-2 (node 9) scale-out: up 0.4 s, registered …, first segment …, settled …, serving …")
        for x in lines), lines
    assert max(len(x) for x in lines) <= 140, lines
