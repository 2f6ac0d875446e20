"""Dashboards, rules and their manifests, checked with Debian's promtool and kubectl's kustomize:
valid JSON with unique ids and no hard-coded data-source UIDs, every PromQL expression parses, every
alert has a promtool unit test that fires and one that stays quiet, metric names are the real ones,
and the shipped ConfigMaps/PrometheusRule equal the files under grafana/."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from harness import grafana as g
from harness.procs import REPO

FIXTURES = REPO / "tests" / "fixtures"
EXPECTED_DASHBOARDS = {"query-performance.json", "cluster-overview.json", "storage-health.json",
                       "autoscaling-events.json"}
EXPECTED_ALERTS = {"MilvusSearchLatencyP99AboveSLO", "MilvusQueryNodeMemoryNearLimit", "MilvusFlushFailures",
                   "MilvusIndexBuildBacklogGrowing", "MilvusWorkloadAtMaxReplicas", "MilvusScalerNodeGroupAtMaxSize",
                   "MilvusScalerSignalStale", "MilvusScalerDown", "MilvusScalerAbsent", "MilvusScalerTargetDown",
                   "SegmentCacheHitRatioCollapse"}


def promtool() -> str:
    path = shutil.which("promtool")
    if not path:
        pytest.fail("promtool not found: run `make setup` (apt-get install prometheus, which brings promtool)")
    return path


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)


# ------------------------------------------------------------------ dashboards
def test_the_four_dashboards_exist_and_are_generated_from_the_script():
    assert set(g.dashboards()) == EXPECTED_DASHBOARDS
    out = run([sys.executable, str(g.GRAFANA / "build_dashboards.py"), "--check"])
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("name", sorted(EXPECTED_DASHBOARDS))
def test_dashboard_is_valid_grafana_json(name):
    text = (g.DASHBOARDS / name).read_text()
    d = json.loads(text)
    assert d["schemaVersion"] >= 36, "Grafana 10+ JSON model"
    assert d["uid"] and len(d["uid"]) <= 40
    assert "__inputs" not in d and "id" not in d, "export for sharing, not with a database id / import inputs"
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    panels = list(g.all_panels(d))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {name}: {sorted(i for i in ids if ids.count(i) > 1)}"
    assert all(isinstance(i, int) and i > 0 for i in ids)
    # Panels do not overlap on the 24-column grid.
    cells = {}
    for p in panels:
        gp = p["gridPos"]
        assert 0 <= gp["x"] and gp["x"] + gp["w"] <= 24, (p["title"], gp)
        for x in range(gp["x"], gp["x"] + gp["w"]):
            for y in range(gp["y"], gp["y"] + gp["h"]):
                assert (x, y) not in cells, f"{p['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = p["title"]
    for p in panels:
        if p["type"] == "row":
            continue
        assert p["targets"], p["title"]
        assert p["fieldConfig"]["defaults"].get("unit"), f"{p['title']}: no unit"
        assert p["description"].startswith("Source: "), f"{p['title']}: description must name its source"
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
    # Every $variable used is defined (or is a Grafana built-in).
    used = set(re.findall(r"\$(\w+)", json.dumps([p.get("targets", []) for p in panels])))
    assert used - set(variables) <= {"__rate_interval", "__range", "__interval"}, used - set(variables)


def _datasource_refs(node, path="$"):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "datasource":
                yield path, v
            yield from _datasource_refs(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _datasource_refs(v, f"{path}[{i}]")


@pytest.mark.parametrize("name", sorted(EXPECTED_DASHBOARDS))
def test_no_hard_coded_datasource_uids(name):
    d = json.loads((g.DASHBOARDS / name).read_text())
    refs = list(_datasource_refs(d))
    assert len(refs) > 10
    for path, ref in refs:
        if path.startswith("$.annotations.list[0]"):  # Grafana's built-in annotations
            assert ref == {"type": "grafana", "uid": "-- Grafana --"}
            continue
        assert ref == {"type": "prometheus", "uid": "${datasource}"}, f"{name} {path}: {ref}"


def test_the_uid_check_catches_a_hard_coded_uid():
    d = json.loads((g.DASHBOARDS / "query-performance.json").read_text())
    d["panels"][1]["targets"][0]["datasource"] = {"type": "prometheus", "uid": "P1809F7CD0C75ACF3"}
    bad = [(p, r) for p, r in _datasource_refs(d) if not p.startswith("$.annotations")
           and r != {"type": "prometheus", "uid": "${datasource}"}]
    assert bad and bad[0][0] == "$.panels[1].targets[0]"


def test_unique_dashboard_uids():
    uids = [d["uid"] for d in g.dashboards().values()]
    assert len(uids) == len(set(uids))


def test_kube_state_metrics_and_cadvisor_panels_say_so():
    checked = 0
    for q in g.panel_queries():
        if "#variable" in q.panel or "#annotation" in q.panel:
            continue
        for source in g.sources(q.expr) & set(g.UNAVAILABLE):
            assert source in q.description, f"{q.where} ({q.title}) reads {source} but its description does not say so"
            checked += 1
    assert checked >= 8


# ------------------------------------------------------------------ metric names
def _fixture_names() -> set[str]:
    names = set()
    for f in FIXTURES.glob("milvus-2.3.5-metrics-*.prom"):
        for line in f.read_text().splitlines():
            if line and not line.startswith("#"):
                names.add(re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0))
    return names


def test_every_metric_name_is_real():
    """Milvus names appear in the real 2.3.5 captures (or are the documented newer-generation names);
    milvus-scaler / segment-cache names are the ones of the metrics contract."""
    captured = _fixture_names()
    assert "milvus_proxy_sq_latency_bucket" in captured
    contract = g.contract()
    used = set()
    for q in g.panel_queries() + g.rule_queries():
        for n in g.resolve(q.expr):
            used.add(n)
            src = g.source_of_metric(n)
            if src == "milvus":
                assert n in captured or n in g.NEWER_MILVUS, f"{q.where}: {n} is not a Milvus 2.3.5 metric"
            elif src in ("milvus-scaler", "segment-cache") and n != "up":
                assert n in contract or _histogram_series(n, contract), \
                    f"{q.where}: {n} is not a metric milvus-scaler or segment-cache exports (crates' metric_names.rs)"
    # Both generations of the renamed Milvus metrics are used.
    assert {"milvus_querynode_read_task_unsolved_len", "milvus_querynode_read_task_ready_len",
            "milvus_datacoord_index_task_count", "milvus_datacoord_task_count"} <= used
    # Every exported metric is on some panel or rule, or listed (with why) as deliberately not.
    unused = {c for c in contract if not any(g.base_metric(n) == c or n == c for n in used)}
    assert unused == set(g.NOT_ON_A_DASHBOARD), (
        f"exported metrics no panel or rule shows: {sorted(unused - set(g.NOT_ON_A_DASHBOARD))}; "
        f"listed as not on a dashboard but shown: {sorted(set(g.NOT_ON_A_DASHBOARD) - unused)}")


def _histogram_series(name: str, contract: dict[str, str]) -> bool:
    """`x_bucket`/`x_sum`/`x_count` of a histogram `x` (and only of a histogram)."""
    return contract.get(g.base_metric(name)) == "histogram" and name != g.base_metric(name)


def test_the_contract_is_read_from_the_binaries():
    """The names come from the code (both binaries' `metric-names`), with their kinds: the ones the
    hand copy once missed are there, and the kinds match the Prometheus naming rules."""
    contract = g.contract()
    assert contract["segment_cache_verified_objects_total"] == "counter"
    assert contract["segment_cache_access_log_dropped_total"] == "counter"
    assert contract["milvus_scaler_round_duration_seconds"] == "histogram"
    assert contract["milvus_scaler_signal_value"] == "gauge"
    prefixes = {n.split("_")[0] + "_" + n.split("_")[1] for n in contract}
    assert prefixes == {"milvus_scaler", "segment_cache"}
    for name, kind in contract.items():
        assert (kind == "counter") == name.endswith("_total"), (name, kind)
    assert len(contract) >= 36
    assert _histogram_series("milvus_scaler_round_duration_seconds_bucket", contract)
    assert not _histogram_series("segment_cache_requests_total_count", contract)


def test_metric_name_extraction():
    assert g.metric_names('histogram_quantile(0.99, sum by (le) (rate(a_bucket{x="y"}[5m]))) / 1000') == {"a_bucket"}
    assert g.metric_names('count by (m) (k{s="1"} == 0) or count by (m) (k) * 0') == {"k"}
    assert g.metric_names('{__name__=~"q_(a|b)_len"}') == {"q_a_len", "q_b_len"}
    assert g.metric_names('a >= on (n, h) b and on (n) (c{x="and"} == 1)') == {"a", "b", "c"}
    assert g.sources("milvus:querynode_read_queue_len") == {"milvus"}
    with pytest.raises(ValueError):
        g.source_of_metric("node_cpu_seconds_total")


# ------------------------------------------------------------------ rules
@pytest.mark.parametrize("path", [str(p.relative_to(REPO)) for p in g.rule_files()])
def test_promtool_check_rules(path):
    out = run([promtool(), "check", "rules", str(REPO / path)])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_promtool_unit_tests_pass():
    files = sorted(g.RULE_TESTS.glob("*.yaml"))
    assert len(files) >= 3
    out = run([promtool(), "test", "rules"] + [str(f) for f in files])
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("SUCCESS") == len(files), out.stdout


def test_promtool_unit_tests_can_fail(tmp_path):
    """A rule changed under the tests makes promtool fail: the unit tests really bind the rules."""
    broken = tmp_path / "alerts"
    broken.mkdir()
    (tmp_path / "recording").mkdir()
    for f in g.RECORDING.glob("*.yaml"):
        shutil.copy(f, tmp_path / "recording" / f.name)
    text = (g.ALERTS / "milvus.yaml").read_text().replace(
        "milvus:proxy_search_latency_seconds:p99_5m > 0.5", "milvus:proxy_search_latency_seconds:p99_5m > 5")
    (broken / "milvus.yaml").write_text(text)
    tests = tmp_path / "tests"
    tests.mkdir()
    shutil.copy(g.RULE_TESTS / "milvus-alerts.test.yaml", tests)
    out = run([promtool(), "test", "rules", str(tests / "milvus-alerts.test.yaml")])
    assert out.returncode != 0 and "MilvusSearchLatencyP99AboveSLO" in out.stdout + out.stderr


def test_every_alert_has_a_firing_and_a_quiet_unit_test():
    alerts = {r["alert"] for r in g.rules() if "alert" in r}
    assert alerts == EXPECTED_ALERTS
    fires, quiet = set(), set()
    for f in g.RULE_TESTS.glob("*.yaml"):
        for t in yaml.safe_load(f.read_text())["tests"]:
            for a in t.get("alert_rule_test", []):
                (fires if a.get("exp_alerts") else quiet).add(a["alertname"])
    assert alerts - fires == set(), f"alerts without a firing test: {alerts - fires}"
    assert alerts - quiet == set(), f"alerts without a quiet test: {alerts - quiet}"


def test_alerts_carry_severity_summary_and_runbook():
    doc = (REPO / "docs" / "grafana.md").read_text().lower()
    for r in g.rules():
        if "alert" not in r:
            continue
        assert r["labels"]["severity"] in ("warning", "critical"), r["alert"]
        assert r["annotations"]["summary"] and r["annotations"]["description"], r["alert"]
        anchor = r["annotations"]["runbook"].split("#", 1)[1]
        assert f"### {anchor}" in doc, f"{r['alert']}: docs/grafana.md has no runbook section for #{anchor}"


def test_every_expression_parses_with_promtool(tmp_path):
    """Every panel, variable, annotation and rule expression, variables expanded as Grafana would,
    goes through promtool as a recording rule. A broken control expression proves the check fails."""
    queries = g.panel_queries() + g.rule_queries()
    assert len(queries) > 100

    def check(exprs):
        f = tmp_path / "check.yaml"
        f.write_text(yaml.safe_dump({"groups": [{"name": "parse", "rules": [
            {"record": f"grafana_parse_check:q{i}", "expr": e} for i, e in enumerate(exprs)]}]}))
        return run([promtool(), "check", "rules", str(f)])

    exprs = [g.expand(q.expr) for q in queries]
    for q, e in zip(queries, exprs):
        assert "$" not in e, f"{q.where}: unexpanded variable in {e}"
    out = check(exprs)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in out.stdout
    bad = check(exprs + ['sum by (le (rate(milvus_proxy_sq_latency_bucket[1m]))'])
    assert bad.returncode != 0


# ------------------------------------------------------------------ provisioning and manifests
def test_provisioning_files():
    ds = yaml.safe_load((g.GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    assert ds["apiVersion"] == 1 and ds["datasources"][0]["type"] == "prometheus"
    assert "uid" not in ds["datasources"][0], "dashboards must not depend on a data-source UID"
    prov = yaml.safe_load((g.GRAFANA / "provisioning" / "dashboards" / "milvus-scaler.yaml").read_text())
    assert prov["apiVersion"] == 1
    provider = prov["providers"][0]
    assert provider["type"] == "file" and provider["options"]["path"]


def test_manifests_are_rendered_from_grafana_dir():
    out = run([sys.executable, str(g.GRAFANA / "render_manifests.py"), "--check"])
    assert out.returncode == 0, out.stderr


def _kustomize_with_component() -> list[dict]:
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.fail("kubectl not found: it renders the kustomize component (install kubectl)")
    with tempfile.TemporaryDirectory() as tmp:
        base = os.path.relpath(REPO / "manifests" / "base", tmp)
        comp = os.path.relpath(REPO / "manifests" / "components" / "grafana", tmp)
        Path(tmp, "kustomization.yaml").write_text(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
            f"resources: [{base}]\ncomponents: [{comp}]\n")
        out = run([kubectl, "kustomize", tmp])
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def test_component_ships_dashboards_as_sidecar_configmaps_and_the_same_rules():
    docs = _kustomize_with_component()
    cms = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    shipped = {}
    for cm in cms:
        assert len(cm["data"]) == 1
        (fname, text), = cm["data"].items()
        shipped[fname] = text
    assert set(shipped) == EXPECTED_DASHBOARDS
    for fname, text in shipped.items():
        assert json.loads(text) == json.loads((g.DASHBOARDS / fname).read_text()), fname
    rules = [d for d in docs if d["kind"] == "PrometheusRule"]
    assert len(rules) == 1 and rules[0]["apiVersion"] == "monitoring.coreos.com/v1"
    groups = []
    for f in g.rule_files():
        groups += yaml.safe_load(f.read_text())["groups"]
    assert rules[0]["spec"]["groups"] == groups
    sm = [d for d in docs if d["kind"] == "ServiceMonitor"]
    svc = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "milvus-scaler-telemetry"]
    assert sm and svc
    assert sm[0]["spec"]["endpoints"][0]["port"] in [p["name"] for p in svc[0]["spec"]["ports"]]
    assert re.fullmatch("milvus-scaler.*", svc[0]["metadata"]["name"]), "job label must match MilvusScalerDown"


def test_hpa_target_panels_match_keda_metric_names():
    """L8: KEDA-created HPAs name external metrics `s<N>-<name>` (and `-<collection>`); the panels' matcher
    (PromQL regex, fully anchored like RE2's full match) must take those and the plain HPA name, nothing else."""
    dash = json.loads((REPO / "grafana" / "dashboards" / "autoscaling-events.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])
             if "kube_horizontalpodautoscaler_spec_target_metric" in t.get("expr", "")]
    matchers = [m for e in exprs for m in re.findall(r'metric_name(=~?)"([^"]+)"', e)]
    assert matchers, exprs
    for op, pattern in matchers:
        assert op == "=~", f"exact metric_name match misses KEDA's s<N>- names: {pattern}"
        name = re.sub(r"^\(s\[0-9\]\+-\)\?|\(-\.\+\)\?$", "", pattern)
        for ok in (name, f"s0-{name}", f"s17-{name}", f"s1-{name}-mycollection"):
            assert re.fullmatch(pattern, ok), (pattern, ok)
        for bad in (f"{name}_node_max", f"x{name}", f"sx-{name}"):
            assert not re.fullmatch(pattern, bad), (pattern, bad)


def test_metrics_excused_until_an_event_are_counters_the_code_exports():
    """ON_EVENT lets the live test skip panels whose counters (or histograms) only exist after their event;
    each entry must be a counter or histogram the binaries really export, or the excuse would hide a renamed
    or removed metric (a gauge is set from the start: it is never excused)."""
    contract = g.contract()
    for name in g.ON_EVENT:
        assert contract.get(name) in ("counter", "histogram"), f"{name}: {contract.get(name, 'not exported')}"
