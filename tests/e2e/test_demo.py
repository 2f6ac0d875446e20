"""`make run` (tests/demo.py) comes up, reports ready and stops everything it started.
Its own module: the stack test's module-scoped fixture holds the machine's Milvus lock."""
from __future__ import annotations


def test_make_run_comes_up_reports_ready_and_stops_everything():
    """`make run`'s program, non-interactive: comes up, prints where everything is and one view, stops."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, str(repo / "tests" / "demo.py"), "--once"], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "ready:" in out.stdout and "get --raw" in out.stdout and "GetMetrics" in out.stdout, out.stdout
    assert "search_queue_depth" in out.stdout and "would ask for" in out.stdout, out.stdout
    assert "stopped." in out.stdout
