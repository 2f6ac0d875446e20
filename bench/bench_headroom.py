"""Node headroom in the closed loop (`milvus-scaler simulate --headroom`), no cluster needed.

The shipped HPA (manifests/examples/hpa-querynode.yaml) on the calibrated service model
(bench/models/milvus-2.3.5-harness.yaml: per-node capacity, time to serve, 2 pods per machine, 90 s
machine boot, Cluster-Autoscaler-like scan and 10 min unneeded time), at the model's scale: the HPA's
target and each headroom file's pod_capacity are 60 % of one node's capacity, peaks 10x one node.

1. A 24 h day with two 10x peaks (bench/traces/diurnal-24h.yaml's shape), side by side: the
   provisioner alone (Cluster Autoscaler with no headroom), today's ASG headroom (one spare machine
   asked for by raising desired capacity: empty, so the provisioner removes it after its unneeded time
   and it is asked again: `simulate --spare-machines 1`), a fixed spare machine held by two placeholder
   pods (hand-tuned overprovisioning, bench/policies/headroom-fixed-2.yaml), the demand-sized
   headroom planner (headroom-demand.yaml), and the planner with the two peaks scheduled
   (headroom-scheduled.yaml): node-hours against static peak provisioning, pods that waited for a
   machine and the longest wait, 15 s samples during the peaks with a pod waiting, machines churned
   (added then removed within 30 min).
2. The 10x spike (bench/traces/spike-10x.yaml's shape): the share of the spike after its first
   2 minutes with p99 within the SLO (goal 95 %), with machines booting in 90 s, 45 s and 0 s, and
   with 90 s boots and a floor of 6 placeholder pods (headroom-floor-6.yaml).

Prints one JSON object as its last line (bench/run.py collects it).
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from bench_loop import MODEL, SHIPPED, binary  # noqa: E402

POLICIES = REPO / "bench" / "policies"
HEADROOMS = {
    "fixed spare machine (2 placeholders)": POLICIES / "headroom-fixed-2.yaml",
    "demand headroom planner": POLICIES / "headroom-demand.yaml",
    "planner + 2 peaks scheduled": POLICIES / "headroom-scheduled.yaml",
    "floor of 6 placeholders": POLICIES / "headroom-floor-6.yaml",
}


def scaled_hpa(capacity: float, d: Path) -> Path:
    doc = yaml.safe_load(SHIPPED.read_text())
    doc["spec"]["maxReplicas"] = 40
    for m in doc["spec"]["metrics"]:
        if m["type"] == "External" and m["external"]["metric"]["name"] == "milvus_search_demand":
            m["external"]["target"]["averageValue"] = f"{int(0.6 * capacity * 1000)}m"
    p = d / SHIPPED.name
    p.write_text(yaml.safe_dump(doc))
    return p


def scaled_headroom(path: Path, model: dict, d: Path) -> Path:
    capacity = model["service"]["node_capacity_qps"]
    doc = yaml.safe_load(path.read_text())
    doc["pod_capacity"] = round(0.6 * capacity, 3)
    doc["time_to_ready"]["load"] = f"{int(round(model['service']['time_to_serve_seconds']))}s"
    for peak in doc.get("peaks") or []:
        peak["expected_demand"] = round(10 * capacity, 3)
    p = d / path.name
    p.write_text(yaml.safe_dump(doc))
    return p


def simulate(model: dict, trace: dict, headrooms: list[Path], d: Path, static: bool,
             spare_machines: int | None = None) -> list[dict]:
    mpath, tpath = d / f"model-{len(list(d.iterdir()))}.yaml", d / "trace.yaml"
    mpath.write_text(yaml.safe_dump(model))
    tpath.write_text(yaml.safe_dump(trace))
    capacity = model["service"]["node_capacity_qps"]
    cmd = [binary(), "simulate", "--model", str(mpath), "--trace", str(tpath), "--output", "json",
           "--sample-every", "15s", "--static-up-to", "64" if static else "0",
           "--hpa", str(scaled_hpa(capacity, d))]
    for h in headrooms:
        cmd += ["--headroom", str(scaled_headroom(h, model, d))]
    if spare_machines is not None:
        cmd += ["--spare-machines", str(spare_machines)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise SystemExit(f"simulate failed: {out.stderr}")
    return json.loads(out.stdout)


def main() -> int:
    rows, notes = [], []
    model = yaml.safe_load(MODEL.read_text())
    capacity = model["service"]["node_capacity_qps"]
    day = {"kind": "diurnal", "floor_qps": capacity, "peak_qps": 10 * capacity, "peaks_at_hours": [10, 20],
           "peak_width_hours": 1.0, "days": 1}
    spike = {"kind": "spike", "quiet_qps": capacity, "spike_qps": 10 * capacity, "quiet_seconds": 1200,
             "ramp_seconds": 120, "spike_seconds": 1800, "cooldown_seconds": 2400}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        names = ["fixed spare machine (2 placeholders)", "demand headroom planner", "planner + 2 peaks scheduled"]
        runs = simulate(model, day, [HEADROOMS[n] for n in names], d, static=True, spare_machines=1)
        # Order: static, the HPA alone, with each headroom file, with the spare machine last.
        names.append("today's ASG headroom (1 spare machine by desired capacity)")
        static, alone, with_headroom = runs[0], runs[1], runs[2:]
        static_nh = static["outcome"]["summary"]["node_hours"]
        half_way = 5.5 * capacity

        def peak_waits(run: dict) -> int:
            return sum(1 for s in run["outcome"]["samples"]
                       if s["offered_qps"] >= half_way and s["waiting_for_node"] > 0)

        a = alone["outcome"]["summary"]
        for name, run in zip(names, with_headroom):
            s = run["outcome"]["summary"]
            for metric, unit, ours, base, better in (
                    ("node-hours", "node-h", s["node_hours"], a["node_hours"], "lower"),
                    ("query-node pods that waited for a machine", "pods", s["pods_waited_for_node"],
                     a["pods_waited_for_node"], "lower"),
                    ("longest wait for a machine", "s", s["longest_node_wait_seconds"],
                     a["longest_node_wait_seconds"], "lower"),
                    ("15 s samples during the peaks with a pod waiting for a machine", "samples", peak_waits(run),
                     peak_waits(alone), "lower (goal 0)"),
                    ("machines added then removed within 30 min (churn)", "machines", s["machines_churned"],
                     a["machines_churned"], "lower (goal 0)")):
                rows.append({"metric": f"24 h, two 10x peaks: {metric}, {name} vs provisioner alone", "unit": unit,
                             "ours": ours, "baseline": base, "baseline_name": "Cluster Autoscaler alone (no headroom)",
                             "ratio": None if not base else ours / base, "better": better})
            rows.append({"metric": f"24 h, two 10x peaks: node-hours, {name} vs static peak provisioning",
                         "unit": "node-h", "ours": s["node_hours"], "baseline": static_nh,
                         "baseline_name": static["name"], "ratio": s["node_hours"] / static_nh,
                         "better": "lower (goal <= 0.40)"})
        rows.append({"metric": "24 h, two 10x peaks: node-hours, provisioner alone vs static peak provisioning",
                     "unit": "node-h", "ours": a["node_hours"], "baseline": static_nh, "baseline_name": static["name"],
                     "ratio": a["node_hours"] / static_nh, "better": "lower"})

        boots = {}
        for boot in (90, 45, 0):
            m = json.loads(json.dumps(model))
            m["provisioning"]["node_boot_seconds"] = boot
            extra = [HEADROOMS["floor of 6 placeholders"]] if boot == 90 else []
            runs = simulate(m, spike, extra, d, static=False)
            boots[boot] = runs[0]["outcome"]["summary"]
            if boot == 90:
                floor = runs[1]["outcome"]["summary"]
        base = boots[90]
        for name, s in (("machines boot in 45 s", boots[45]), ("machines ready at once", boots[0]),
                        ("90 s boots + floor of 6 placeholders", floor)):
            rows.append({"metric": f"10x spike: share of the spike (after its first 2 min) with p99 within the SLO, "
                                   f"{name} vs 90 s boots alone", "unit": "%", "ours": 100 * s["spike_slo_fraction"],
                         "baseline": 100 * base["spike_slo_fraction"], "baseline_name": "shipped HPA, 90 s boots, "
                         "no headroom", "ratio": s["spike_slo_fraction"] / base["spike_slo_fraction"],
                         "better": "higher (goal >= 95 %)"})
        rows.append({"metric": "10x spike: node-hours, 90 s boots + floor of 6 placeholders vs alone", "unit": "node-h",
                     "ours": floor["node_hours"], "baseline": base["node_hours"],
                     "baseline_name": "shipped HPA, 90 s boots, no headroom",
                     "ratio": floor["node_hours"] / base["node_hours"], "better": "lower"})
    notes.append(f"model: {MODEL.relative_to(REPO)} ({capacity} searches/s per node, "
                 f"{model['service']['time_to_serve_seconds']} s to serve, "
                 f"{model['provisioning']['node_boot_seconds']} s machine boot)")
    print(json.dumps({"name": "Node headroom in the closed loop (simulate --headroom)", "rows": rows,
                      "notes": notes}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
