"""`make load`: quiet → 10x spike → cool-down against the Milvus of `make run`.

Reads `.run/demo.json` (written by `make run`: the proxy's address and the searches/s one query node
serves) and drives an open-loop load of searches of 10 vectors each (nprobe 64, heavy on the query
nodes): they are scheduled at a fixed rate whatever Milvus's speed (a slow cluster shows as latency,
not as a lower offered rate). Default phases, as multiples
of one query node's measured capacity C:

    quiet      0.15 x C  for  40 s   one node suffices: nothing scales
    spike      1.5 x C   for 150 s   10x the quiet rate: the HPA adds query nodes, p99 falls as they serve
    cool-down  0.15 x C  for 150 s   the HPA removes them again, one at a time

The spike stays well inside what maxReplicas nodes serve: past what the machine (2 shared cores: proxy,
coordinators and this client too) can carry, this client's workers all wait, the proxy sees fewer
searches than are offered, and the demand signal — rightly — sees only what reaches Milvus.

Prints a line as each phase starts and one as it ends (searches finished / failed / dropped, p99),
and keeps `.run/load-status.json` current (phase, offered rate) so `make run`'s view can draw the
offered rate beside what Milvus receives.

`--uri` points it at another Milvus (e.g. `make run --standalone`); without a measured capacity it
measures one first (or take `--capacity`). The collection `demo_load` is created if missing.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.procs import RUN_DIR  # noqa: E402

DEMO_FILE = RUN_DIR / "demo.json"
LOAD_STATUS = RUN_DIR / "load-status.json"
COLLECTION = "demo_load"


def demo_info() -> dict | None:
    """`make run`'s .run/demo.json, if that run is still alive."""
    try:
        info = json.loads(DEMO_FILE.read_text())
    except (OSError, ValueError):
        return None
    try:
        os.kill(int(info.get("pid", 0)), 0)
    except (OSError, ValueError):
        return None  # left behind by a run that is gone
    return info


def write_status(status: dict) -> None:
    tmp = LOAD_STATUS.with_suffix(".tmp")
    tmp.write_text(json.dumps({**status, "time": time.time()}))
    tmp.replace(LOAD_STATUS)


def summary(records) -> str:
    from harness import workload

    ok = [r[1] for r in records if r[2] is None]
    failed = len(records) - len(ok)
    p99 = workload.quantile(ok, 0.99)
    p50 = workload.quantile(ok, 0.50)
    lat = f"p50 {p50 * 1000:,.0f} ms, p99 {p99 * 1000:,.0f} ms" if ok else "no latency (nothing finished)"
    return f"{len(records):,} searches finished, {failed} failed; {lat}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--uri", help="Milvus gRPC address (default: the proxy of `make run`, from .run/demo.json)")
    p.add_argument("--capacity", type=float,
                   help="searches/s one query node serves (default: `make run`'s measurement, else measured here)")
    p.add_argument("--quiet-x", type=float, default=0.15, help="quiet rate, as a multiple of the capacity")
    p.add_argument("--spike-x", type=float, default=1.5, help="spike rate, as a multiple of the capacity")
    p.add_argument("--quiet", type=float, default=40, help="seconds of quiet load before the spike")
    p.add_argument("--spike", type=float, default=150, help="seconds of spike")
    p.add_argument("--cooldown", type=float, default=150, help="seconds of quiet load after the spike")
    p.add_argument("--workers", type=int, default=128, help="client threads carrying the searches")
    args = p.parse_args()

    from harness import workload
    from pymilvus import Collection, utility

    info = demo_info()
    uri = args.uri or (info or {}).get("proxy_uri")
    if uri is None:
        print("`make run` is not running (no live .run/demo.json): start it first, or give --uri", file=sys.stderr)
        return 2
    workload.connect(uri)
    if utility.has_collection(COLLECTION):
        coll = Collection(COLLECTION)
        coll.load()
    else:
        print(f"creating collection {COLLECTION} (20k vectors, IVF_FLAT)...", flush=True)
        coll = workload.create_collection(COLLECTION, rows=20_000)
    from demo import NPROBE, NQ

    nq, nprobe = (info or {}).get("nq", NQ), (info or {}).get("nprobe", NPROBE)
    capacity = args.capacity
    if capacity is None and info is not None and not args.uri:
        capacity = info.get("capacity_per_node")
    if capacity is None:
        from demo import saturation_throughput

        print("measuring what this Milvus serves (15 s of back-to-back searches)...", flush=True)
        capacity = saturation_throughput(coll, 15)
    print(f"{uri}: one query node serves {capacity:.1f} searches/s (nq {nq}, nprobe {nprobe})", flush=True)

    phases = [("quiet", args.quiet_x, args.quiet), ("spike", args.spike_x, args.spike),
              ("cool-down", args.quiet_x, args.cooldown)]
    current = {"rate": 0.0, "phase": "starting"}
    stop = threading.Event()

    def keep_status() -> None:
        while not stop.wait(1.0):
            try:
                write_status({"phase": current["phase"], "offered": current["rate"], "uri": uri})
            except OSError:
                pass

    RUN_DIR.mkdir(parents=True, exist_ok=True)
    writer = threading.Thread(target=keep_status, daemon=True)
    writer.start()
    # Clients retry Milvus 2.3.5's transient routing errors with backoff (seen for ~1 s after a shard
    # leader's graceful exit), as production clients do; counted and printed.
    load = workload.RateLoad(coll, rate=lambda t: current["rate"], workers=args.workers, nq=nq, nprobe=nprobe,
                             retry_transient=True)
    bounds = []
    try:
        with load:
            for name, multiple, seconds in phases:
                rate = multiple * capacity
                start = load.now()
                current.update(rate=rate, phase=f"{name} {rate:.1f}/s")
                print(f"{time.strftime('%H:%M:%S')} {name:<9} {rate:6.1f} searches/s ({multiple:g} x one node) "
                      f"for {seconds:.0f}s", flush=True)
                time.sleep(seconds)
                end = load.now()
                bounds.append((name, start, end))
                print(f"{time.strftime('%H:%M:%S')} {name:<9} done: {summary(load.window(start, end))}, "
                      f"{load.dropped} dropped so far", flush=True)
            current.update(rate=0.0, phase="draining")
            print(f"{time.strftime('%H:%M:%S')} waiting for the searches still in flight...", flush=True)
    except KeyboardInterrupt:
        print("interrupted: waiting for the searches in flight...", flush=True)
        current.update(rate=0.0, phase="stopping")
    finally:
        stop.set()
        writer.join(timeout=3)
        try:
            LOAD_STATUS.unlink()
        except OSError:
            pass
    for name, start, end in bounds:
        print(f"  {name:<9} {summary(load.window(start, end))}", flush=True)
    after = " The loop scales back in over the next minutes." if (info or {}).get("mode") == "cluster" else ""
    print(f"done: {len(load.records):,} searches, {len(load.errors())} failed, {load.dropped} dropped, "
          f"{len(load.retried)} transient routing errors retried.{after}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
