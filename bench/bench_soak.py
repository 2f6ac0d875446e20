"""Soak benchmark (issue 14): both long-running processes under steady load for SOAK_SECONDS
(default 600), to show memory and file descriptors stay flat and nothing errors.

- milvus-scaler `serve` scraping 200 targets every 100 ms (each serves the real idle Milvus 2.3.5
  query-node capture; rclone's Go HTTP server serves them, as one Python process could not serve
  2,000 scrapes/s), while wrk asks its external metrics API (TLS) at about 1,000 requests/s.
- segment-cache serving a mix of hits and misses: GETs of random keys of a working set four times
  its capacity, through moto, so it evicts and refetches throughout.

Reported: RSS after warm-up (SOAK_WARMUP, default 60 s) and at the end, growth in %, open file
descriptors at both times, scrape rounds with a failed target, non-2xx API answers, failed GETs.
Goal: errors 0, RSS growth < 5 % after warm-up, fd count flat. There is no baseline process:
the comparison is each process with itself, early and late in the run.

SOAK_PROFILE picks the binaries (release by default, as `make bench` builds; debug for a quick check).
Prints one JSON object as its last line (bench/run.py collects it).
"""
from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import yaml  # noqa: E402

from harness import promtext  # noqa: E402
from harness.kube import FrontProxyPki  # noqa: E402
from harness.procs import Service, free_port, http_ok, wait_until  # noqa: E402
from harness.segment_cache import cache_config, s3_client  # noqa: E402
from harness.services import Moto, run_dir, tool  # noqa: E402

TARGET = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
PROFILE = os.environ.get("SOAK_PROFILE", "release")
SECONDS = int(os.environ.get("SOAK_SECONDS", "600"))
WARMUP = int(os.environ.get("SOAK_WARMUP", "60"))
TARGETS = int(os.environ.get("SOAK_TARGETS", "200"))
API_RATE = int(os.environ.get("SOAK_API_RATE", "1000"))
ROUTE = "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/milvus_search_queue_depth?labelSelector=milvus%3Ddemo"
OBJECT_BYTES = 256 * 1024
OBJECTS = 128  # 32 MiB of objects through a 8 MiB cache


def log(msg: str) -> None:
    print(f"[bench_soak] {msg}", file=sys.stderr, flush=True)


def binary(name: str) -> str:
    path = TARGET / PROFILE / name
    if not path.exists():
        raise SystemExit(f"{path} not built: run `cargo build --release` (make bench does) or set SOAK_PROFILE=debug")
    return str(path)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Sampler(threading.Thread):
    """RSS and fd count of each process every 2 s."""

    def __init__(self, pids: dict[str, int]):
        super().__init__(daemon=True)
        self.pids = pids
        self.samples: list[tuple[float, dict]] = []
        self.stop_event = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        while not self.stop_event.wait(2.0):
            row = {name: (rss_mib(pid), fds(pid)) for name, pid in self.pids.items()}
            self.samples.append((time.monotonic() - self.t0, row))

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=5)

    def summary(self, name: str) -> dict:
        early = [r[name] for t, r in self.samples if WARMUP <= t < WARMUP + 30]
        late = [r[name] for t, r in self.samples if t >= self.samples[-1][0] - 30]
        rss0 = statistics.median(s[0] for s in early)
        rss1 = statistics.median(s[0] for s in late)
        return {"rss_after_warmup_mib": rss0, "rss_end_mib": rss1, "rss_growth_pct": 100 * (rss1 - rss0) / rss0,
                "fds_after_warmup": max(s[1] for s in early), "fds_end": max(s[1] for s in late),
                "rss_max_mib": max(r[name][0] for _, r in self.samples)}


def start_targets(body: bytes) -> tuple[Service, list[str]]:
    d = run_dir("soak-targets")
    for i in range(TARGETS):
        (d / f"t{i}").mkdir()
        (d / f"t{i}" / "metrics").write_bytes(body)
    port = free_port()
    svc = Service("rclone-http", [tool("rclone"), "serve", "http", "--addr", f"127.0.0.1:{port}", "--read-only",
                                  str(d)], d.parent / f"{d.name}.log")
    urls = [f"http://127.0.0.1:{port}/t{i}/metrics" for i in range(TARGETS)]
    wait_until(lambda: http_ok(urls[0]), 30, "rclone serving the targets", proc=svc)
    return svc, urls


def start_scaler(urls: list[str], pki: FrontProxyPki) -> tuple[Service, str, str]:
    d = run_dir("soak-scaler")
    api_port, tel_port = free_port(), free_port()
    cfg = {"milvus": [{"name": "demo", "namespace": "default", "scrape": {"targets": urls, "interval": "100ms"}}],
           "signals": {"window": "30s", "stale_after": "10s"},
           "telemetry": {"listen": f"127.0.0.1:{tel_port}"},
           "external_metrics": {"listen": f"127.0.0.1:{api_port}",
                                "tls": {"cert_file": pki.path("tls.crt"), "key_file": pki.path("tls.key")}}}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    svc = Service("milvus-scaler", [binary("milvus-scaler"), "serve", "--config", str(d / "config.yaml")],
                  d / "log", env={"RUST_LOG": "warn"})
    tel = f"http://127.0.0.1:{tel_port}"
    wait_until(lambda: http_ok(f"{tel}/readyz"), 60, "milvus-scaler ready", proc=svc)
    return svc, f"https://127.0.0.1:{api_port}", tel


def start_cache(moto: Moto) -> tuple[Service, str]:
    bucket = "soak"
    s3 = moto.client("s3")
    s3.create_bucket(Bucket=bucket)
    payload = os.urandom(OBJECT_BYTES)
    for i in range(OBJECTS):
        s3.put_object(Bucket=bucket, Key=f"files/insert_log/1/2/{i}/0", Body=payload[i:] + payload[:i])
    d = run_dir("soak-cache")
    port, tel = free_port(), free_port()
    cfg = cache_config(moto.url, bucket, "8MiB", d / "cache", port, tel)
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    svc = Service("segment-cache", [binary("segment-cache"), "serve", "--config", str(d / "config.yaml")],
                  d / "log", env={"RUST_LOG": "warn"})
    wait_until(lambda: http_ok(f"http://127.0.0.1:{tel}/healthz"), 30, "segment-cache ready", proc=svc)
    return svc, f"http://127.0.0.1:{port}"


def cache_load(url: str, stop: threading.Event, counts: dict) -> None:
    client = s3_client(url)
    while not stop.is_set():
        key = f"files/insert_log/1/2/{random.randrange(OBJECTS)}/0"
        try:
            body = client.get_object(Bucket="soak", Key=key)["Body"].read()
            counts["ok" if len(body) == OBJECT_BYTES else "short"] += 1
        except Exception as e:  # noqa: BLE001 - every failure counts, whatever its kind
            counts["failed"] += 1
            counts.setdefault("first_error", repr(e))


def wrk_paced(url: str, pki: FrontProxyPki, seconds: int) -> dict:
    """wrk at about API_RATE requests/s: 10 connections, each pausing 10 ms between requests."""
    d = run_dir("soak-wrk")
    connections = 10
    script = d / "paced.lua"
    script.write_text(f"function delay() return {1000 * connections // API_RATE} end\n"
                      "done = function(summary, latency, requests)\n"
                      "  io.write(string.format('non2xx %d\\n', summary.errors.status))\nend\n")
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url],
                         capture_output=True, text=True, timeout=seconds + 120)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed: {out.stderr}")
    text = out.stdout
    requests = int(next(l for l in text.splitlines() if "requests in" in l).split()[0])
    non2xx = int(next(l for l in text.splitlines() if l.startswith("non2xx")).split()[1])
    socket_errors = next((l.strip() for l in text.splitlines() if "Socket errors" in l), "")
    return {"requests": requests, "rps": requests / seconds, "non2xx": non2xx, "socket_errors": socket_errors}


def main() -> int:
    body = (REPO / "tests" / "fixtures" / "milvus-2.3.5-metrics-idle.prom").read_bytes()
    pki = FrontProxyPki()
    moto = Moto()
    targets, urls = start_targets(body)
    scaler = cache = None
    stop = threading.Event()
    counts = {"ok": 0, "short": 0, "failed": 0}
    try:
        scaler, api, tel = start_scaler(urls, pki)
        cache, cache_url = start_cache(moto)
        sampler = Sampler({"milvus-scaler": scaler.pid, "segment-cache": cache.pid})
        sampler.start()
        loader = threading.Thread(target=cache_load, args=(cache_url, stop, counts), daemon=True)
        loader.start()
        # The CA the scaler's certificate is signed by is not in wrk's trust store; wrk does not verify.
        log(f"soaking {SECONDS} s: {TARGETS} targets at 100 ms, API at ~{API_RATE}/s, segment-cache GETs")
        api_result = wrk_paced(api + ROUTE, pki, SECONDS)
        stop.set()
        loader.join(timeout=30)
        sampler.stop()
        text = promtext.fetch(f"{tel}/metrics")
        failed_targets_now = promtext.value_sum(text, "milvus_scaler_round_failed_targets") or 0.0
        rounds = promtext.value_sum(text, "milvus_scaler_round_duration_seconds_count") or 0.0
        up = promtext.value_sum(text, "milvus_scaler_target_up") or 0.0
        s, c = sampler.summary("milvus-scaler"), sampler.summary("segment-cache")
    finally:
        stop.set()
        for svc in (cache, scaler, targets):
            if svc is not None:
                svc.stop()
        moto.stop()
    log(f"milvus-scaler {json.dumps(s)}; segment-cache {json.dumps(c)}; api {json.dumps(api_result)}; "
        f"cache GETs {json.dumps(counts)}; rounds {rounds:.0f}, targets up {up:.0f}/{TARGETS}")

    def row(metric, unit, ours, baseline=None, baseline_name="-", better="lower"):
        ratio = None if baseline in (None, 0) else ours / baseline
        return {"metric": metric, "unit": unit, "ours": ours, "baseline": baseline, "baseline_name": baseline_name,
                "ratio": ratio, "better": better}

    rows = [
        row("milvus-scaler RSS at the end vs after warm-up", "MiB", s["rss_end_mib"], s["rss_after_warmup_mib"],
            f"itself after {WARMUP} s"),
        row("milvus-scaler RSS growth after warm-up (goal < 5 %)", "%", s["rss_growth_pct"]),
        row("milvus-scaler open fds at the end vs after warm-up", "fds", s["fds_end"], s["fds_after_warmup"],
            f"itself after {WARMUP} s"),
        row("segment-cache RSS at the end vs after warm-up", "MiB", c["rss_end_mib"], c["rss_after_warmup_mib"],
            f"itself after {WARMUP} s"),
        row("segment-cache RSS growth after warm-up (goal < 5 %)", "%", c["rss_growth_pct"]),
        row("segment-cache open fds at the end vs after warm-up", "fds", c["fds_end"], c["fds_after_warmup"],
            f"itself after {WARMUP} s"),
        row("external metrics API requests/s during the soak", "req/s", api_result["rps"], better="higher"),
        row("external metrics API non-2xx answers", "count", api_result["non2xx"]),
        row("scrape rounds completed (100 ms interval)", "rounds", rounds, SECONDS * 10, "one every 100 ms",
            better="higher"),
        row("targets that failed in the last round", "count", failed_targets_now),
        row("segment-cache GETs (mixed hits and misses)", "count", counts["ok"], better="higher"),
        row("segment-cache failed or short GETs", "count", counts["failed"] + counts["short"]),
    ]
    notes = [f"{SECONDS} s soak, warm-up {WARMUP} s, {PROFILE} binaries, {TARGETS} targets x "
             f"{len(body)} bytes (idle capture) every 100 ms; wrk paced to ~{API_RATE}/s over TLS",
             f"segment-cache: {OBJECTS} objects x {OBJECT_BYTES // 1024} KiB through an 8 MiB cache; "
             f"first error: {counts.get('first_error', 'none')}",
             f"api: {json.dumps(api_result)}"]
    print(json.dumps({"name": "Soak: milvus-scaler and segment-cache under steady load", "rows": rows,
                      "notes": notes}))
    errors = api_result["non2xx"] + counts["failed"] + counts["short"]
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
