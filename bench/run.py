"""`make bench`: runs every bench/bench_*.py, collects the JSON line each prints last, and writes
bench/results/latest.md and latest.json (figures side by side with their baseline, and the ratio)."""
from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.node()}: {os.cpu_count()} cores, {cpu}, {platform.system()} {platform.release()}"


def fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def main() -> int:
    only = sys.argv[1:]
    scripts = sorted(HERE.glob("bench_*.py"))
    if only:
        scripts = [s for s in scripts if any(o in s.name for o in only)]
    results, failures = [], []
    for script in scripts:
        print(f"== {script.name}", flush=True)
        proc = subprocess.run([sys.executable, str(script)], cwd=REPO, stdout=subprocess.PIPE, text=True)
        lines = [l for l in proc.stdout.splitlines() if l.strip()]
        try:
            result = json.loads(lines[-1])
            result["script"] = script.name
            results.append(result)
        except (IndexError, json.JSONDecodeError):
            failures.append(f"{script.name}: exit {proc.returncode}, no JSON result line")
        if proc.returncode != 0:
            failures.append(f"{script.name}: exit {proc.returncode}")
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    report = {"measured_at": when, "machine": machine(), "results": results, "failures": failures}
    (out_dir / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
    md = [f"# Benchmark results\n", f"Measured {when} on {machine()}.",
          "Shared, noisy machine: figures are medians of repeated runs within one invocation; compare ratios, not absolutes.\n"]
    for r in results:
        md.append(f"## {r.get('name', r['script'])}\n")
        md.append("| metric | ours | baseline | baseline is | ratio (ours/baseline) | better |")
        md.append("|---|---|---|---|---|---|")
        for row in r.get("rows", []):
            md.append(f"| {row['metric']} ({row.get('unit', '')}) | {fmt(row.get('ours'))} | {fmt(row.get('baseline'))} | "
                      f"{row.get('baseline_name', '-')} | {fmt(row.get('ratio'))} | {row.get('better', '-')} |")
        for note in r.get("notes", []):
            md.append(f"\n- {note}")
        md.append("")
    if failures:
        md.append("## Failures\n")
        md += [f"- {f}" for f in failures]
    (out_dir / "latest.md").write_text("\n".join(md) + "\n")
    print((out_dir / "latest.md").read_text())
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
