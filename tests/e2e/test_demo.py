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
