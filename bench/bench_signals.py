"""Signals benchmark (issue 2): freshness and cost of the direct-scrape path.

Freshness: a scripted /metrics body changes its query-node queue depth; we time how long until the
new value is in milvus-scaler's snapshot (read through its telemetry), interval 1 s, side by side in
the same run with the path users have today: Debian's Prometheus (scrape_interval 15 s) then PromQL.
Cost: CPU per round and RSS of milvus-scaler scraping 50 targets that each serve the real
under-load capture, every 1 s; Prometheus scraping the same 50 targets every 1 s is the reference.
"""
from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from harness.exporter import StaticExporter, fixture, with_metric  # noqa: E402
from harness.procs import Service, free_port, http_ok, wait_until  # noqa: E402
from harness.services import Prometheus, run_dir  # noqa: E402
import yaml  # noqa: E402

BIN = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "release" / "milvus-scaler"
CHANGES = int(os.environ.get("BENCH_FRESHNESS_CHANGES", "40"))
PROM_CHANGES = int(os.environ.get("BENCH_PROM_CHANGES", "10"))
COST_SECONDS = int(os.environ.get("BENCH_COST_SECONDS", "30"))


def log(msg: str) -> None:
    print(f"[bench_signals] {msg}", file=sys.stderr, flush=True)


def percentile(values, p):
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100 * (len(s) - 1)))))
    return s[k]


def start_scaler(targets, interval="1s"):
    d = run_dir("bench-scaler")
    port = free_port()
    cfg = {"milvus": [{"name": "bench", "scrape": {"targets": targets, "interval": interval}}],
           "signals": {"window": "30s", "stale_after": "10s"}, "telemetry": {"listen": f"127.0.0.1:{port}"}}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    svc = Service("milvus-scaler", [str(BIN), "serve", "--config", str(d / "config.yaml")], d / "log",
                  env={"RUST_LOG": "warn"})
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: http_ok(f"{url}/readyz"), 30, "scaler ready", proc=svc)
    return svc, url


def scaler_queue(url):
    with urllib.request.urlopen(f"{url}/metrics", timeout=2) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("milvus_scaler_signal_value{") and 'signal="search_queue_depth"' in line:
                return float(line.rsplit(" ", 1)[1])
    return None


def prom_queue(prom):
    res = prom.query('sum(milvus_querynode_read_task_unsolved_len) + sum(milvus_querynode_read_task_ready_len)')
    return float(res[0]["value"][1]) if res else None


def body_with_queue(base, n):
    return with_metric(base, "milvus_querynode_read_task_unsolved_len", "", lambda v, _: float(n))


def freshness():
    base = fixture("milvus-2.3.5-metrics-under-load.prom")
    exporter = StaticExporter(body_with_queue(base, 0))
    prom = Prometheus([{"job_name": "milvus", "static_configs": [{"targets": [f"127.0.0.1:{exporter.port}"]}]}],
                      scrape_interval="15s")
    svc, url = start_scaler([exporter.url])
    ours, theirs = [], []
    try:
        wait_until(lambda: prom_queue(prom) == 0.0, 40, "Prometheus first scrape")
        value = 0
        for i in range(max(CHANGES, PROM_CHANGES)):
            value += 1
            time.sleep(random.uniform(0.05, 1.0))  # random phase against both scrape clocks
            exporter.set(body_with_queue(base, value))
            t0 = time.monotonic()
            want_prom = i < PROM_CHANGES
            got_ours = got_prom = None
            while got_ours is None or (want_prom and got_prom is None):
                now = time.monotonic() - t0
                if got_ours is None and scaler_queue(url) == value:
                    got_ours = now
                if want_prom and got_prom is None and prom_queue(prom) == value:
                    got_prom = now
                if now > 60:
                    raise TimeoutError("value never arrived")
                time.sleep(0.01)
            ours.append(got_ours)
            if want_prom:
                theirs.append(got_prom)
    finally:
        svc.stop()
        prom.stop()
        exporter.stop()
    return ours, theirs


def proc_cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mib(pid, field="VmRSS"):
    """Resident memory in MiB: VmRSS (all), or RssAnon (heap and stacks) / RssFile (mapped binary)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure(pid, seconds):
    time.sleep(5)  # warm-up: window fills, allocations settle
    c0, t0 = proc_cpu_seconds(pid), time.monotonic()
    rss, anon, file = [], [], []
    while time.monotonic() - t0 < seconds:
        time.sleep(1)
        rss.append(proc_rss_mib(pid))
        anon.append(proc_rss_mib(pid, "RssAnon"))
        file.append(proc_rss_mib(pid, "RssFile"))
    cpu = proc_cpu_seconds(pid) - c0
    elapsed = time.monotonic() - t0
    log(f"RSS of pid {pid}: median {statistics.median(rss):.1f} MiB = anon {statistics.median(anon):.1f} "
        f"+ file {statistics.median(file):.1f} (+ shmem)")
    return cpu / elapsed * 100, statistics.median(rss), max(rss)


def cost():
    body = fixture("milvus-2.3.5-metrics-under-load.prom")
    exporters = [StaticExporter(body) for _ in range(50)]
    try:
        svc, _ = start_scaler([e.url for e in exporters])
        try:
            ours = measure(svc.pid, COST_SECONDS)
        finally:
            svc.stop()
        prom = Prometheus([{"job_name": "milvus", "static_configs": [
            {"targets": [f"127.0.0.1:{e.port}" for e in exporters]}]}], scrape_interval="1s")
        try:
            theirs = measure(prom.service.pid, COST_SECONDS)
        finally:
            prom.stop()
    finally:
        for e in exporters:
            e.stop()
    return ours, theirs


def main():
    if not BIN.exists():
        subprocess.run(["cargo", "build", "--release", "-p", "milvus-scaler"], cwd=REPO, check=True)
    ours, theirs = freshness()
    (our_cpu, our_rss, our_rss_max), (prom_cpu, prom_rss, prom_rss_max) = cost()
    rows = [
        {"metric": "freshness p50", "unit": "s", "ours": statistics.median(ours), "baseline": statistics.median(theirs),
         "baseline_name": "Prometheus 15s scrape + PromQL", "better": "lower"},
        {"metric": "freshness p99", "unit": "s", "ours": percentile(ours, 99), "baseline": percentile(theirs, 99),
         "baseline_name": "Prometheus 15s scrape + PromQL", "better": "lower"},
        {"metric": "CPU, 50 targets @1s", "unit": "% of one core", "ours": our_cpu, "baseline": prom_cpu,
         "baseline_name": "Prometheus scraping the same 50 targets @1s", "better": "lower"},
        {"metric": "RSS median, 50 targets @1s", "unit": "MiB", "ours": our_rss, "baseline": prom_rss,
         "baseline_name": "Prometheus scraping the same 50 targets @1s", "better": "lower"},
    ]
    for r in rows:
        r["ratio"] = r["ours"] / r["baseline"] if r["baseline"] else None
    notes = [f"freshness: {len(ours)} changes for milvus-scaler (interval 1s), {len(theirs)} for Prometheus; "
             "targets: p99 <= 1.2 s",
             f"cost: {COST_SECONDS}s measured after 5s warm-up; RSS max ours {our_rss_max:.1f} MiB, "
             f"Prometheus {prom_rss_max:.1f} MiB; targets: < 30 MiB RSS, < 5% of one core",
             "the 50 targets are in-process Python HTTP servers serving the real 183 KB under-load capture"]
    print(json.dumps({"name": "signals: freshness and scrape cost", "rows": rows, "notes": notes}))


if __name__ == "__main__":
    main()
