"""The closed loop benchmark: scaling policies judged by what they do to a real Milvus cluster.

1. Calibration on the real Milvus 2.3.5 cluster of the harness (tests/harness/cluster.py; query nodes
   at 15 % of a core each): one node's saturation throughput, latency at 30 % and 60 % of it, the time
   from "one more replica" to the new node serving, and a graceful stop. Written to
   bench/models/milvus-2.3.5-harness.yaml, the service model `milvus-scaler simulate` uses.
2. The same spike (quiet 0.3x → 2.5x one node's capacity → quiet) through the real loop (milvus-scaler →
   external metrics API → local-hpa → query-node processes) under our shipped policy, under the first
   shipped example (queue AverageValue + p99 Value) and under the Milvus Helm chart's CPU HPA
   (Resource cpu, averageUtilization 40, of the query nodes' 150m request). For the CPU HPA a fake
   of kube-apiserver's pod list and of metrics-server (tests/harness/kube_fakes.py) serves the query
   nodes as pods, ready once registered, and their real CPU (the processes of each node's CPU cgroup,
   from /proc) as a rate between two samples one metrics-server resolution apart. The time constants
   are compressed by the same factor for all three, COMPRESS = 3: the HPA sync 15 s → 5 s,
   milvus-scaler's window 30 s → 10 s, metrics-server's resolution 15 s → 5 s, and the CPU rules'
   `--horizontal-pod-autoscaler-cpu-initialization-period` 5 min → 100 s and
   `--horizontal-pod-autoscaler-initial-readiness-delay` 30 s → 10 s (local-hpa's
   --cpu-initialization-period, --initial-readiness-delay); the scale-down window is 40 s and the
   scale policies' periods one sync, for all three. 3 is the factor of the sync period: the CPU rules
   then last as many HPA syncs and metric windows as in Kubernetes (20 syncs, 20 windows), which is
   what decides how many decisions see a new pod as unready. What cannot be compressed is Milvus
   itself: a new query node takes its real time to register and to serve, so it spends a larger
   share of the (compressed) initialization period starting up than it would in Kubernetes. Measured:
   p99 during the spike after its first minute, time until the first added query node serves,
   query-node-seconds, scale changes per hour in the spike's last 2 minutes, failed searches; and
   the decisions (from local-hpa's log) for explaining them.
3. `milvus-scaler simulate` with the calibrated model, in real time constants: a 10x spike and a 24 h
   day with two 10x peaks, shipped policy vs the first example vs the Milvus Helm chart's CPU HPA vs the
   smallest static size meeting the SLO.

Env: BENCH_LOOP_QUICK=1 (a 120 s spike instead of 240 s), BENCH_LOOP_MODEL_OUT (where the calibrated
model is written and read by part 3; default bench/models/milvus-2.3.5-harness.yaml, the committed
model that docs/scaling-policy.md's figures come from: point it elsewhere to keep that one),
BENCH_LOOP_ROTATE=k (run the policies in part 2 rotated by k, so that a policy is not always the one run
first or last; the machine's load average is recorded around each run either way).

Prints one JSON object as its last line (bench/run.py collects it).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from harness import workload  # noqa: E402
from harness.cluster import MilvusCluster, QueryNodeScaleEndpoint  # noqa: E402
from harness.loop import ClosedLoop, hpa_manifest  # noqa: E402
from harness.procs import wait_until  # noqa: E402

import yaml  # noqa: E402

TARGET = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
SHIPPED = REPO / "manifests" / "examples" / "hpa-querynode.yaml"
FIRST = REPO / "bench" / "policies" / "hpa-first-example.yaml"
HELM_CPU = REPO / "bench" / "policies" / "hpa-helm-cpu.yaml"
MODEL = Path(os.environ.get("BENCH_LOOP_MODEL_OUT") or REPO / "bench" / "models" / "milvus-2.3.5-harness.yaml")
CPU_SHARE = 0.15
SYNC = 5
MAX_REPLICAS = 4
QUICK = os.environ.get("BENCH_LOOP_QUICK") == "1"
NQ, NPROBE = 10, 64  # heavy on the query node, light on the proxy and client (as test_closed_loop.py)
SPIKE_SECONDS = 120 if QUICK else 240
COMPRESS = 3  # Kubernetes' time constants / the bench's (see the module docstring)
METRICS_RESOLUTION = 15 / COMPRESS  # metrics-server's --metric-resolution (15 s in its release manifests)
CPU_INITIALIZATION_PERIOD = f"{300 // COMPRESS}s"  # kube-controller-manager's 5 min
INITIAL_READINESS_DELAY = f"{30 // COMPRESS}s"  # kube-controller-manager's 30 s
POLICIES = (("shipped (search_demand)", SHIPPED), ("first example (queue + p99 Value)", FIRST),
            ("Helm chart CPU (Utilization 40 %)", HELM_CPU))
ROTATE = int(os.environ.get("BENCH_LOOP_ROTATE", "0")) % len(POLICIES)


def binary() -> str:
    for profile in ("release", "debug"):
        path = TARGET / profile / "milvus-scaler"
        if path.exists():
            return str(path)
    raise SystemExit("milvus-scaler not built: run `cargo build --release` (make bench does)")


def latency_at(coll, rate: float, seconds: float = 30.0) -> tuple[float, float]:
    with workload.RateLoad(coll, rate=lambda t: rate, workers=64, nq=NQ, nprobe=NPROBE) as load:
        time.sleep(seconds)
    lat = [r[1] for r in load.records if r[2] is None and r[0] > 5]
    return workload.quantile(lat, 0.5), workload.quantile(lat, 0.99)


def calibrate(cluster: MilvusCluster, coll) -> dict:
    mu = workload.saturation_throughput(coll, NQ, NPROBE)
    p50_30, p99_30 = latency_at(coll, 0.3 * mu)
    p50_60, p99_60 = latency_at(coll, 0.6 * mu)
    # A new query node: PUT replicas 2 -> the node serves its share (searches executed for a leader).
    with QueryNodeScaleEndpoint(cluster) as scale, workload.SearchLoad(coll, threads=2, nq=NQ, nprobe=NPROBE):
        t0 = time.monotonic()
        scale.set_replicas(2)
        wait_until(lambda: len(cluster.query_nodes()) == 2, 300, "a second query node")
        new = cluster.query_nodes()[-1]
        wait_until(lambda: (cluster.searches_served(new) or 0) > 0, 300, f"{new} serving", interval=0.5)
        to_serve = time.monotonic() - t0
        t0 = time.monotonic()
        scale.set_replicas(1)
        wait_until(scale.converged, 300, "back to one query node", interval=0.5)
        stop = time.monotonic() - t0
    # M/M/1 per node: p50 of the sojourn time is ln 2 / (mu - lambda); the rest is overhead.
    overhead = max(0.0, p50_30 - math.log(2) / (mu * 0.7))
    return {"capacity": mu, "p50_30": p50_30, "p99_30": p99_30, "p50_60": p50_60, "p99_60": p99_60,
            "time_to_serve": to_serve, "graceful_stop": stop, "overhead": overhead}


def model_p99(cal: dict, utilisation: float) -> float:
    """p99 of an M/M/1 node at `utilisation` of its capacity plus the calibrated overhead, seconds."""
    return cal["overhead"] + math.log(100) / (cal["capacity"] * (1 - utilisation))


def write_model(cal: dict) -> None:
    # The SLO the simulations judge by: 1.5x the p99 the *model* (M/M/1 per node plus overhead) gives at
    # the shipped policy's 60 % target. It must come from the model, not from the measured p99: the
    # simulation can only judge against latencies its own queue produces, and a measured p99 below the
    # model's (real query nodes batch concurrent searches) would put every policy, static peak included,
    # at 0 % within the SLO. How far the model is from the measurements is reported beside it.
    slo = round(1.5 * model_p99(cal, 0.6), 3)
    text = f"""# Service model of one query node of the test harness's real Milvus 2.3.5 cluster (15 % of a core,
# 20k x 64-d IVF_FLAT, nq 10, nprobe 64), measured by bench/bench_loop.py on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.
# Measured: saturation {cal['capacity']:.1f} searches/s; p50/p99 at 30 % {cal['p50_30']*1000:.0f}/{cal['p99_30']*1000:.0f} ms,
# at 60 % {cal['p50_60']*1000:.0f}/{cal['p99_60']*1000:.0f} ms; PUT replicas -> new node serving {cal['time_to_serve']:.1f} s;
# graceful stop {cal['graceful_stop']:.1f} s. The model's p99 at 30 % / 60 %: {model_p99(cal, 0.3)*1000:.0f} / {model_p99(cal, 0.6)*1000:.0f} ms.
# slo_p99_seconds = 1.5 x the model's p99 at 60 % (the shipped policy's target).
service:
  node_capacity_qps: {cal['capacity']:.2f}
  overhead_seconds: {cal['overhead']:.4f}
  time_to_serve_seconds: {cal['time_to_serve']:.1f}
  graceful_stop_seconds: {cal['graceful_stop']:.1f}
  cpu_request_cores: {CPU_SHARE}
  cpu_idle_cores: 0.01
  cpu_busy_cores: {CPU_SHARE}
provisioning:
  pods_per_node: 2
  node_boot_seconds: 90
slo_p99_seconds: {slo}
"""
    MODEL.write_text(text)


def run_policy(cluster: MilvusCluster, coll, hpa_path: Path, capacity: float) -> dict:
    overrides = {"minReplicas": 1, "maxReplicas": MAX_REPLICAS,
                 "behavior": {"scaleDown": {"stabilizationWindowSeconds": 40, "selectPolicy": "Min",
                                            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 20}]},
                              "scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                                          "policies": [{"type": "Percent", "value": 100, "periodSeconds": SYNC},
                                                       {"type": "Pods", "value": 4, "periodSeconds": SYNC}]}}}
    hpa = hpa_manifest(hpa_path, instance="demo", namespace="milvus", overrides=overrides)
    for m in hpa["spec"]["metrics"]:
        if m["type"] == "External" and m["external"]["metric"]["name"] == "milvus_search_demand":
            m["external"]["target"] = {"type": "AverageValue", "averageValue": f"{int(0.6 * capacity * NQ * 1000)}m"}
    phase = {"rate": 0.3 * capacity}
    node_seconds = 0.0
    first_serving: list[float] = []
    initial = set(cluster.query_nodes())
    stop = threading.Event()

    def watch(t_spike: dict) -> None:
        nonlocal node_seconds
        while not stop.wait(1.0):
            names = cluster.query_nodes()
            node_seconds += len(names)
            if "t" in t_spike and not first_serving:
                for n in names:
                    if n not in initial and (cluster.searches_served(n) or 0) > 0:
                        first_serving.append(time.monotonic() - t_spike["t"])
                        break

    loop = ClosedLoop(cluster, hpa, window="10s", stale_after="5s", sync_period=f"{SYNC}s",
                      max_replicas=MAX_REPLICAS, demand_drain="20s", cpu_window=METRICS_RESOLUTION,
                      cpu_initialization_period=CPU_INITIALIZATION_PERIOD,
                      initial_readiness_delay=INITIAL_READINESS_DELAY)
    t_spike: dict = {}
    watcher = threading.Thread(target=watch, args=(t_spike,), daemon=True)
    try:
        with workload.RateLoad(coll, rate=lambda t: phase["rate"], workers=128, nq=NQ, nprobe=NPROBE) as load:
            watcher.start()
            time.sleep(30)
            t_spike["t"] = time.monotonic()
            t_spike["unix"] = time.time()
            s0 = load.now()
            phase["rate"] = 2.5 * capacity
            time.sleep(SPIKE_SECONDS)
            s1 = load.now()
            changes = [e for e in loop.endpoint.events if e["action"] == "spec"]
            late = [e for e in changes if e["t"] >= time.monotonic() - 120]
            phase["rate"] = 0.3 * capacity
            try:
                wait_until(lambda: loop.desired() == 1 and loop.endpoint.converged(), 300, "scale-in", interval=1)
            except Exception:
                pass  # a policy that never scales back in is a result, not a crash
            time.sleep(5)
            spike = load.window(s0 + 60, s1)
        stop.set()
        watcher.join(timeout=5)
        errors = sum(1 for r in load.records if r[2] is not None)
        decisions = decision_trace(loop.decisions(), t_spike["unix"])
        return {"p99_spike": workload.quantile([r[1] for r in spike if r[2] is None], 0.99),
                "first_added_serving": first_serving[0] if first_serving else None,
                "node_seconds": node_seconds, "changes": len(changes),
                "late_changes_per_hour": len(late) * 3600 / 120, "failed": errors,
                "max_replicas": max([int(e["reason"].split("-> ")[-1]) for e in changes] or [1]),
                "first_scale_up": next((d["t"] for d in decisions if d["t"] >= 0 and d["desired"] > d["current"]),
                                       None),
                "decisions": decisions}
    finally:
        stop.set()
        loop.stop()
        if len(cluster.query_nodes()) != 1:
            with QueryNodeScaleEndpoint(cluster) as scale:
                scale.set_replicas(1)
                wait_until(scale.converged, 300, "back to one query node", interval=0.5)


def decision_trace(decisions: list[dict], t0_unix: float) -> list[dict]:
    """local-hpa's decisions, compact: seconds after the spike began, current → desired, and per
    metric the value it saw (average_utilization for CPU), its ratio and its proposal (or error)."""
    out = []
    for d in decisions:
        try:
            t = datetime.fromisoformat(d["time"].replace("Z", "+00:00")).timestamp() - t0_unix
        except (AttributeError, KeyError, ValueError):
            continue
        try:
            metrics = json.loads(d.get("metrics") or "[]")
        except (TypeError, ValueError):
            metrics = []
        out.append({"t": round(t, 1), "current": d["current"], "desired": d["desired"], "pods": d.get("pods"),
                    "metrics": [{k: m.get(k) for k in ("average_utilization", "average_value", "value", "ratio",
                                                       "replicas", "error") if m.get(k) is not None}
                                for m in metrics]})
    return out


def simulate(trace: dict, hpas: list[Path], capacity: float) -> list[dict]:
    with tempfile.TemporaryDirectory() as d:
        tpath = Path(d) / "trace.yaml"
        tpath.write_text(yaml.safe_dump(trace))
        paths = []
        for h in hpas:
            doc = yaml.safe_load(h.read_text())
            doc["spec"]["maxReplicas"] = 40
            for m in doc["spec"]["metrics"]:
                if m["type"] == "External" and m["external"]["metric"]["name"] == "milvus_search_demand":
                    m["external"]["target"]["averageValue"] = f"{int(0.6 * capacity * 1000)}m"  # the model counts searches, nq 1
            p = Path(d) / h.name
            p.write_text(yaml.safe_dump(doc))
            paths.append(p)
        cmd = [binary(), "simulate", "--model", str(MODEL), "--trace", str(tpath), "--output", "json",
               "--sample-every", "60s", "--static-up-to", "64"]
        for p in paths:
            cmd += ["--hpa", str(p)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if out.returncode != 0:
            raise SystemExit(f"simulate failed: {out.stderr}")
        return [{"name": r["name"], **r["outcome"]["summary"]} for r in json.loads(out.stdout)]


def main() -> int:
    rows, notes = [], []
    extra = {"dataCoord.compaction.enableAutoCompaction": False}
    with MilvusCluster(query_nodes=1, query_node_cpu=CPU_SHARE, extra=extra, graceful_stop_timeout=30) as cluster:
        workload.connect(cluster.proxy_uri)
        coll = workload.create_collection("bench_loop", rows=20_000, batch=4_000, flush_every_batch=True, shards=2)
        cal = calibrate(cluster, coll)
        write_model(cal)
        print("calibration:", json.dumps(cal), flush=True)
        real = {}
        for name, path in POLICIES[ROTATE:] + POLICIES[:ROTATE]:
            # The load average says whether the machine was quiet: a run beside other work is not
            # the policy's figure (docs/scaling-policy.md).
            load_before = os.getloadavg()
            real[name] = run_policy(cluster, coll, path, cal["capacity"])
            real[name]["load_average_1m"] = {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)}
            print(name, json.dumps(real[name]), flush=True)
    ours = real[POLICIES[0][0]]

    def ratio(a, b):
        return None if a is None or b in (None, 0) else a / b

    for metric, unit, key, better in (("p99 during the spike (after its first minute)", "s", "p99_spike", "lower"),
                                      ("first added query node serving, after the spike began", "s",
                                       "first_added_serving", "lower"),
                                      ("query-node-seconds over the run", "node-s", "node_seconds", "lower"),
                                      ("scale changes per hour, last 2 min of the spike", "/h",
                                       "late_changes_per_hour", "lower"),
                                      ("failed searches", "count", "failed", "lower")):
        for name, _ in POLICIES[1:]:
            base = real[name]
            rows.append({"metric": f"real cluster: {metric}", "unit": unit, "ours": ours[key], "baseline": base[key],
                         "baseline_name": name, "ratio": ratio(ours[key], base[key]), "better": better})
    for u, measured in ((0.3, cal["p99_30"]), (0.6, cal["p99_60"])):
        rows.append({"metric": f"calibration: p99 at {u:.0%} of one node's capacity, service model vs measured",
                     "unit": "s", "ours": model_p99(cal, u), "baseline": measured,
                     "baseline_name": "measured on the real cluster", "ratio": ratio(model_p99(cal, u), measured),
                     "better": "closer to 1"})
    capacity = cal["capacity"]
    traces = {
        "10x spike": {"kind": "spike", "quiet_qps": capacity, "spike_qps": 10 * capacity, "quiet_seconds": 1200,
                      "ramp_seconds": 120, "spike_seconds": 1800, "cooldown_seconds": 2400},
        "24 h, two 10x peaks": {"kind": "diurnal", "floor_qps": capacity, "peak_qps": 10 * capacity,
                                "peaks_at_hours": [10, 20], "peak_width_hours": 1.0, "days": 1},
    }
    for tname, trace in traces.items():
        sims = simulate(trace, [SHIPPED, FIRST, HELM_CPU], capacity)
        static, shipped = sims[0], sims[1]
        for s in sims[2:]:
            rows.append({"metric": f"simulated {tname}: node-hours, shipped vs {s['name']}", "unit": "node-h",
                         "ours": shipped["node_hours"], "baseline": s["node_hours"], "baseline_name": s["name"],
                         "ratio": ratio(shipped["node_hours"], s["node_hours"]), "better": "lower"})
            rows.append({"metric": f"simulated {tname}: searches within the SLO, shipped vs {s['name']}",
                         "unit": "%", "ours": 100 * shipped["slo_fraction"], "baseline": 100 * s["slo_fraction"],
                         "baseline_name": s["name"], "ratio": ratio(shipped["slo_fraction"], s["slo_fraction"]),
                         "better": "higher"})
        if shipped.get("spike_slo_fraction") is not None:
            for s in sims[2:]:
                # The goal as the issue states it: p99 within the SLO for >= 95 % of the spike after 2 min.
                rows.append({"metric": f"simulated {tname}: share of the spike after its first 2 min with p99 "
                                       f"within the SLO, shipped vs {s['name']}", "unit": "%",
                             "ours": 100 * shipped["spike_slo_fraction"], "baseline": 100 * s["spike_slo_fraction"],
                             "baseline_name": s["name"],
                             "ratio": ratio(shipped["spike_slo_fraction"], s["spike_slo_fraction"]),
                             "better": "higher (goal >= 95 %)"})
        rows.append({"metric": f"simulated {tname}: node-hours vs static peak provisioning", "unit": "node-h",
                     "ours": shipped["node_hours"], "baseline": static["node_hours"], "baseline_name": static["name"],
                     "ratio": ratio(shipped["node_hours"], static["node_hours"]), "better": "lower"})
        for s in sims[2:]:
            # Reversals (up after down, down after up) are the flapping; a scale-in walking down one pod
            # a minute after the spike is many changes but one direction.
            rows.append({"metric": f"simulated {tname}: direction reversals (flapping), shipped vs {s['name']}",
                         "unit": "count", "ours": shipped["reversals"], "baseline": s["reversals"],
                         "baseline_name": s["name"], "ratio": ratio(shipped["reversals"], s["reversals"]),
                         "better": "lower"})
        rows.append({"metric": f"simulated {tname}: scale changes per hour at steady load (every step of a "
                               "scale-in walk counts)", "unit": "/h",
                     "ours": shipped["steady_changes_per_hour"], "baseline": None, "baseline_name": "-",
                     "ratio": None, "better": "lower"})
        notes.append(f"simulate {tname}: " + "; ".join(
            f"{s['name']}: {s['node_hours']:.1f} node-h, SLO {100 * s['slo_fraction']:.1f} %, "
            f"{s['scale_changes']} changes ({s['reversals']} reversals), max {s['max_pods']} pods" for s in sims))
    notes.append(f"calibration: {json.dumps({k: round(v, 4) for k, v in cal.items()})}")
    notes.append("real loop runs: " + json.dumps({n: {k: v for k, v in r.items() if k != "decisions"}
                                                  for n, r in real.items()}))
    notes.append(f"real loop time constants (Kubernetes' / {COMPRESS}): sync {SYNC} s, metrics-server resolution "
                 f"{METRICS_RESOLUTION:g} s, CPU initialization period {CPU_INITIALIZATION_PERIOD}, initial "
                 f"readiness delay {INITIAL_READINESS_DELAY}; milvus-scaler window 10 s; scale-down window 40 s")
    print(json.dumps({"name": "Closed loop: scaling policies on a real Milvus cluster and in simulation",
                      "rows": rows, "notes": notes, "real_loop": real}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
