"""`make load`: a search load with a 10x spike against the local Milvus (`make run` must be up).

Phases: quiet (1 client), spike (10 clients), cool-down (1 client), then idle. Creates the
collection `demo_load` first if it is missing. Prints a line per phase with searches completed.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import workload  # noqa: E402
from pymilvus import Collection, utility  # noqa: E402


def phase(coll: Collection, name: str, clients: int, seconds: float) -> None:
    print(f"{time.strftime('%H:%M:%S')} {name}: {clients} client(s) for {seconds:.0f}s", flush=True)
    with workload.SearchLoad(coll, threads=clients, nq=20, nprobe=64) as load:
        time.sleep(seconds)
    print(f"{time.strftime('%H:%M:%S')} {name}: {load.completed} searches, {len(load.errors)} errors", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--uri", default="http://127.0.0.1:19530", help="Milvus gRPC address")
    p.add_argument("--quiet", type=float, default=30, help="seconds of quiet load before the spike")
    p.add_argument("--spike", type=float, default=60, help="seconds of 10x load")
    p.add_argument("--cooldown", type=float, default=30, help="seconds of quiet load after the spike")
    p.add_argument("--base-clients", type=int, default=1, help="clients in the quiet phases (the spike is 10x)")
    args = p.parse_args()
    workload.connect(args.uri)
    if utility.has_collection("demo_load"):
        coll = Collection("demo_load")
        coll.load()
    else:
        print("creating collection demo_load (20k vectors, IVF_FLAT)...", flush=True)
        coll = workload.create_collection("demo_load", rows=20_000)
    phase(coll, "quiet", args.base_clients, args.quiet)
    phase(coll, "spike", args.base_clients * 10, args.spike)
    phase(coll, "cool-down", args.base_clients, args.cooldown)
    print("done: the signals fall back over the next window", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
