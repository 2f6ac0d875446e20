"""Every overlay x component combination a user would pick, as kubectl would build it.

Each combination is a kustomization (one of manifests/overlays/*, or manifests/base, plus components) built
with `kubectl kustomize`; the render must validate strictly (kubernetes-validate, offline OpenAPI of the API
server; CustomResources structurally, as in test_manifests_eks.py), and milvus-scaler's configuration must keep
every section: the mode's (`external_metrics:` / `keda:`), `node_groups:` when combined, and the base's. The
configuration is taken from what the pod would see: each `--config` argument of the container is resolved
through the container's volume mounts to a ConfigMap key, the files are checked for sections that appear twice,
and the real `milvus-scaler check-config` runs on them. With components/grafana, the ServiceMonitor must select
milvus-scaler's telemetry Service and the dashboards and rules must be there (and appear once).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.services import cargo_bin, run_dir  # noqa: E402
from test_manifests_eks import CRD_KINDS, K8S_VERSION, MANIFESTS, REPO, check_crd, kubectl  # noqa: E402

BASE_SECTIONS = {"milvus", "signals", "telemetry"}
MODE_SECTION = {"external-metrics": "external_metrics", "keda": "keda", None: None}
GRAFANA_DASHBOARDS = 4

# (resource under manifests/, extra components, mode, with node-groups, with grafana)
COMBINATIONS = [
    ("overlays/external-metrics", [], "external-metrics", False, False),
    ("overlays/keda", [], "keda", False, False),
    ("overlays/external-metrics", ["node-groups"], "external-metrics", True, False),
    ("overlays/keda", ["node-groups"], "keda", True, False),
    ("overlays/external-metrics", ["grafana"], "external-metrics", False, True),
    ("overlays/keda", ["grafana"], "keda", False, True),
    ("overlays/external-metrics", ["node-groups", "grafana"], "external-metrics", True, True),
    ("overlays/keda", ["node-groups", "grafana"], "keda", True, True),
    ("base", ["node-groups", "grafana"], None, True, True),
    ("base", ["node-groups", "keda", "grafana"], "keda", True, True),
    ("base", ["grafana", "external-metrics", "node-groups"], "external-metrics", True, True),
    ("overlays/eks", [], None, True, True),
    ("overlays/eks-external-metrics", [], "external-metrics", True, True),
    ("overlays/eks-keda", [], "keda", True, True),
    # Node headroom (docs/headroom.md): placeholder Deployment, or CapacityBuffer (after components/headroom).
    ("overlays/external-metrics", ["headroom"], "external-metrics", False, False),
    ("overlays/keda", ["headroom"], "keda", False, False),
    ("overlays/keda", ["headroom", "headroom-capacity-buffer"], "keda", False, False),
    ("overlays/eks-keda", ["headroom"], "keda", True, True),
    ("overlays/eks-external-metrics", ["headroom", "headroom-capacity-buffer"], "external-metrics", True, True),
]


def combo_id(c) -> str:
    return "+".join([c[0]] + c[1])


def build(resource: str, components: list[str]) -> list[dict]:
    d = run_dir("combo")
    rel = lambda p: os.path.relpath(MANIFESTS / p, d)  # noqa: E731
    (d / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [rel(resource)], "components": [rel(f"components/{c}") for c in components]}))
    proc = subprocess.run([kubectl(), "kustomize", str(d)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"kubectl kustomize {resource} + {components} failed:\n{proc.stderr}"
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def one(docs, kind, name, namespace=None) -> dict:
    hits = [x for x in docs if x["kind"] == kind and x["metadata"]["name"] == name
            and (namespace is None or x["metadata"].get("namespace") == namespace)]
    assert len(hits) == 1, f"expected one {kind} {namespace}/{name}, found {len(hits)}"
    return hits[0]


def config_files(docs) -> dict[str, str]:
    """--config path -> file text, as the milvus-scaler container would read them."""
    dep = one(docs, "Deployment", "milvus-scaler", "milvus-scaler")
    spec = dep["spec"]["template"]["spec"]
    (container,) = [c for c in spec["containers"] if c["name"] == "milvus-scaler"]
    args = container["args"]
    paths = [args[i + 1] for i, a in enumerate(args) if a == "--config"]
    assert paths and len(paths) == len(set(paths)), args
    volumes = {v["name"]: v for v in spec["volumes"]}
    files = {}
    for path in paths:
        mounts = [m for m in container["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/")]
        mount = max(mounts, key=lambda m: len(m["mountPath"]))
        key = path[len(mount["mountPath"].rstrip("/")) + 1:]
        cm_name = volumes[mount["name"]]["configMap"]["name"]
        data = one(docs, "ConfigMap", cm_name, "milvus-scaler")["data"]
        assert key in data, f"--config {path}: ConfigMap {cm_name} has no key {key} (keys: {sorted(data)})"
        files[path] = data[key]
    return files


def check_config(files: dict[str, str], where: str) -> str:
    """`milvus-scaler check-config` on the files the pod would get; its stdout."""
    d = run_dir("combo-config")
    argv = [cargo_bin("milvus-scaler"), "check-config"]
    for i, (path, text) in enumerate(files.items()):
        f = d / f"{i}-{Path(path).name}"
        f.write_text(text)
        argv += ["--config", str(f)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"{where}: check-config failed:\n{r.stderr}"
    assert "valid" in r.stdout, r.stdout
    return r.stdout


def validate_strict(docs, where: str) -> None:
    import kubernetes_validate
    errors = []
    for doc in docs:
        what = f"{where}: {doc['kind']} {doc['metadata'].get('name')}"
        if (doc.get("apiVersion"), doc.get("kind")) in CRD_KINDS:
            check_crd(doc, what)
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError as e:
            errors.append(f"{what}: no schema ({e})")
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{what}: {e.message} at {'/'.join(map(str, e.path))}")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("combo", COMBINATIONS, ids=combo_id)
def test_combination_renders_validates_and_keeps_every_section(combo):
    resource, components, mode, node_groups, grafana = combo
    where = combo_id(combo)
    docs = build(resource, components)
    validate_strict(docs, where)

    files = config_files(docs)
    sections: dict[str, str] = {}
    for path, text in files.items():
        for section in yaml.safe_load(text) or {}:
            assert section not in sections, f"{where}: section {section} in {sections[section]} and {path}"
            sections[section] = path
    headroom = "headroom" in components
    expected = BASE_SECTIONS | ({MODE_SECTION[mode]} if mode else set()) | ({"node_groups"} if node_groups else set())
    expected |= {"headroom"} if headroom else set()
    assert set(sections) == expected, f"{where}: config sections {sorted(sections)}, expected {sorted(expected)}"

    # The real binary on the files the pod would get (merged by top-level section).
    check_config(files, where)

    kinds = [x["kind"] for x in docs]
    if grafana:
        sm = one(docs, "ServiceMonitor", "milvus-scaler", "milvus-scaler")
        svc = one(docs, "Service", "milvus-scaler-telemetry", "milvus-scaler")
        assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
        assert {e["port"] for e in sm["spec"]["endpoints"]} <= {p["name"] for p in svc["spec"]["ports"]}
        assert kinds.count("PrometheusRule") == 1
        dashboards = [x for x in docs if x["kind"] == "ConfigMap"
                      and (x["metadata"].get("labels") or {}).get("grafana_dashboard") == "1"]
        assert len(dashboards) == GRAFANA_DASHBOARDS
    else:
        assert "ServiceMonitor" not in kinds and "PrometheusRule" not in kinds
    # L5/L6: no API token except in external-metrics mode (M5: it reads the front-proxy CA from the API), with
    # headroom (it reads and sets scales or a CapacityBuffer through the API) and with node groups (their leader
    # election's Lease), PSA
    # "restricted" on the namespace, and every container port that serves is admitted by a NetworkPolicy
    # selecting the pod.
    dep = one(docs, "Deployment", "milvus-scaler", "milvus-scaler")
    pod = dep["spec"]["template"]
    assert pod["spec"]["automountServiceAccountToken"] is (mode == "external-metrics" or headroom or node_groups), \
        where
    if mode != "external-metrics":
        assert not [x for x in docs if x["kind"] in ("Role", "RoleBinding")
                    and x["metadata"].get("namespace") == "kube-system"], where
    ns_labels = one(docs, "Namespace", "milvus-scaler")["metadata"]["labels"]
    assert ns_labels["pod-security.kubernetes.io/enforce"] == "restricted"
    policies = [x for x in docs if x["kind"] == "NetworkPolicy" and x["metadata"]["namespace"] == "milvus-scaler"
                and x["spec"]["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()]
    admitted = {p["port"] for pol in policies for rule in pol["spec"].get("ingress", []) for p in rule.get("ports", [])}
    served = {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
    assert served <= admitted, f"{where}: ports {sorted(served - admitted)} served but no NetworkPolicy admits them"
    assert any("Egress" in pol["spec"]["policyTypes"] for pol in policies)
    if mode in ("external-metrics", "keda"):
        assert one(docs, "Deployment", "milvus-scaler", "milvus-scaler")["spec"]["replicas"] == 2
        if node_groups:
            # Two replicas, one writer: the node groups' election is on (not disabled) and its Lease granted.
            ng = yaml.safe_load(files[sections["node_groups"]])["node_groups"]
            assert (ng.get("leader_election") or {}).get("enabled") is not False, where
            one(docs, "RoleBinding", "milvus-scaler-node-groups-lease", "milvus-scaler")
        assert one(docs, "PodDisruptionBudget", "milvus-scaler", "milvus-scaler")["spec"]["minAvailable"] == 1


def test_a_section_in_two_components_is_refused_by_milvus_scaler():
    """The composition guard: had two components shipped the same section, check-config fails and names both."""
    docs = build("overlays/keda", ["node-groups"])
    files = list(config_files(docs).values())
    d = run_dir("combo-dup")
    (d / "a.yaml").write_text(files[0])
    (d / "b.yaml").write_text(files[0])
    r = subprocess.run([cargo_bin("milvus-scaler"), "check-config", "--config", str(d / "a.yaml"),
                        "--config", str(d / "b.yaml")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "already defined in" in r.stderr and "a.yaml" in r.stderr, r.stderr
