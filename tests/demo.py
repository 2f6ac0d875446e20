"""`make run`: the whole system on loopback with a live view.

Starts moto (S3 + EC2 Auto Scaling with a query-node group), segment-cache in front of it, a real
Milvus 2.3.5 storing through the cache, milvus-scaler (external metrics API, KEDA scaler, node-group
planner in apply mode against moto) and Prometheus; prints where everything is, then refreshes a view
of the signals, what an HPA with the example target would ask for, the planned vs actual group
capacity and the cache hit ratio. `make load` in another terminal drives a spike.
Ctrl-C stops everything this started, by PID (a Milvus that ignores SIGTERM is killed).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.stack import ASG, QUEUE_TARGET_PER_POD, Stack, telemetry_value  # noqa: E402

SIGNALS = ["search_queue_depth", "search_rate", "search_latency_p50_seconds", "search_latency_p99_seconds",
           "index_pending_builds", "loaded_entities", "loaded_bytes"]


def view(stack: Stack) -> str:
    telemetry = f"{stack.scaler.telemetry}/metrics"
    lines = [f"{time.strftime('%H:%M:%S')}  milvus=demo   (Ctrl-C stops everything)", ""]
    queue = None
    for s in SIGNALS:
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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--once", action="store_true", help="come up, print the view once, stop (used by the tests)")
    args = p.parse_args()
    print("starting moto, segment-cache, Milvus 2.3.5, milvus-scaler, Prometheus...", flush=True)
    stack = Stack(planner_interval="5s")
    try:
        print("\nready:\n" + stack.info() + "\n\nIn another terminal: `make load` drives a 10x search spike.\n",
              flush=True)
        time.sleep(3)
        terminal = sys.stdout.isatty() and not args.once
        while True:
            text = view(stack)
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
        print("stopping...", flush=True)
        stack.stop()
        print("stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
