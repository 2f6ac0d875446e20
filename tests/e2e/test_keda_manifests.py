"""KEDA-mode manifests: the overlay and the examples render with `kubectl kustomize`; core kinds pass
`kubernetes-validate --strict`; the config the component ships passes `milvus-scaler check-config`.

kubernetes-validate has no schemas for CRDs, so the KEDA kinds (ScaledObject,
TriggerAuthentication) are checked by a small field schema of our own below, written from KEDA's
CRDs (keda.sh/v1alpha1, KEDA 2.17-2.20): unknown fields, missing required fields and wrong types
fail. It is a subset check, not KEDA's full OpenAPI schema."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from harness.procs import REPO
from harness.services import cargo_bin, tool

MANIFESTS = REPO / "manifests"


def kustomize(path: Path) -> list[dict]:
    out = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def validate_core(docs: list[dict], tmp_path: Path) -> None:
    core = [d for d in docs if not d["apiVersion"].startswith("keda.sh/")]
    assert core
    f = tmp_path / "core.yaml"
    f.write_text(yaml.safe_dump_all(core))
    out = subprocess.run([tool("kubernetes-validate"), "--strict", "--quiet", str(f)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


# --- a small schema of the KEDA CRD fields used here -------------------------------------------
# Each node: ("object", {field: (required, node)}) | ("map-str",) | ("list", node) | scalar type.
STR, INT, BOOL = ("str",), ("int",), ("bool",)
ANY = ("any",)
TRIGGER = ("object", {
    "type": (True, STR), "name": (False, STR), "metadata": (True, ("map-str",)),
    "metricType": (False, ("enum", "AverageValue", "Value", "Utilization")),
    "useCachedMetrics": (False, BOOL),
    "authenticationRef": (False, ("object", {"name": (True, STR),
                                             "kind": (False, ("enum", "TriggerAuthentication",
                                                              "ClusterTriggerAuthentication"))})),
})
SCALED_OBJECT_SPEC = ("object", {
    "scaleTargetRef": (True, ("object", {"apiVersion": (False, STR), "kind": (False, STR), "name": (True, STR),
                                         "envSourceContainerName": (False, STR)})),
    "pollingInterval": (False, INT), "cooldownPeriod": (False, INT), "initialCooldownPeriod": (False, INT),
    "idleReplicaCount": (False, INT), "minReplicaCount": (False, INT), "maxReplicaCount": (False, INT),
    "fallback": (False, ("object", {"failureThreshold": (True, INT), "replicas": (True, INT),
                                    "behavior": (False, ("enum", "static", "currentReplicas",
                                                         "currentReplicasIfHigher", "currentReplicasIfLower"))})),
    "advanced": (False, ("object", {
        "restoreToOriginalReplicaCount": (False, BOOL),
        "horizontalPodAutoscalerConfig": (False, ("object", {"name": (False, STR), "behavior": (False, ANY)})),
        "scalingModifiers": (False, ANY),
    })),
    "triggers": (True, ("list", TRIGGER)),
})
SECRET_REF = ("object", {"parameter": (True, STR), "name": (True, STR), "key": (True, STR)})
TRIGGER_AUTH_SPEC = ("object", {
    "secretTargetRef": (False, ("list", SECRET_REF)),
    "configMapTargetRef": (False, ("list", SECRET_REF)),
    "env": (False, ANY), "podIdentity": (False, ANY), "hashiCorpVault": (False, ANY),
    "boundServiceAccountToken": (False, ANY),
})
KEDA_KINDS = {"ScaledObject": SCALED_OBJECT_SPEC, "TriggerAuthentication": TRIGGER_AUTH_SPEC}


def check(node, value, path: str) -> list[str]:
    kind = node[0]
    if kind == "any":
        return []
    if kind == "str":
        return [] if isinstance(value, str) else [f"{path}: expected a string, got {value!r}"]
    if kind == "int":
        return [] if isinstance(value, int) and not isinstance(value, bool) else [f"{path}: expected an integer"]
    if kind == "bool":
        return [] if isinstance(value, bool) else [f"{path}: expected a boolean"]
    if kind == "enum":
        return [] if value in node[1:] else [f"{path}: {value!r} not one of {node[1:]}"]
    if kind == "map-str":
        if not isinstance(value, dict):
            return [f"{path}: expected a map"]
        return [f"{path}.{k}: trigger metadata values must be strings, got {v!r}"
                for k, v in value.items() if not isinstance(v, str)]
    if kind == "list":
        if not isinstance(value, list) or not value:
            return [f"{path}: expected a non-empty list"]
        return [e for i, item in enumerate(value) for e in check(node[1], item, f"{path}[{i}]")]
    assert kind == "object"
    if not isinstance(value, dict):
        return [f"{path}: expected an object"]
    errors = [f"{path}.{k}: unknown field" for k in value if k not in node[1]]
    for field, (required, sub) in node[1].items():
        if field in value:
            errors += check(sub, value[field], f"{path}.{field}")
        elif required:
            errors.append(f"{path}.{field}: required")
    return errors


def check_keda(doc: dict) -> list[str]:
    if doc.get("apiVersion") != "keda.sh/v1alpha1" or doc.get("kind") not in KEDA_KINDS:
        return [f"unexpected {doc.get('apiVersion')}/{doc.get('kind')}"]
    errors = [] if doc.get("metadata", {}).get("name") else ["metadata.name: required"]
    return errors + check(KEDA_KINDS[doc["kind"]], doc.get("spec"), "spec")


def test_the_field_schema_rejects_what_keda_would():
    good = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "x"},
            "spec": {"scaleTargetRef": {"name": "d"}, "triggers": [{"type": "external", "metadata": {"a": "1"}}]}}
    assert check_keda(good) == []
    bad_cases = [
        ({"minReplicas": 1}, "unknown field"),
        ({"triggers": [{"type": "external", "metadata": {"target": 8}}]}, "must be strings"),
        ({"fallback": {"replicas": 2}}, "failureThreshold: required"),
        ({"scaleTargetRef": {}}, "scaleTargetRef.name: required"),
    ]
    for change, needle in bad_cases:
        doc = yaml.safe_load(yaml.safe_dump(good))
        doc["spec"].update(change)
        errors = check_keda(doc)
        assert any(needle in e for e in errors), (change, errors)


def test_overlay_renders_and_validates(tmp_path):
    docs = kustomize(MANIFESTS / "overlays" / "keda")
    validate_core(docs, tmp_path)
    by_kind = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    svc = by_kind[("Service", "milvus-scaler")]
    assert svc["metadata"]["namespace"] == "milvus-scaler"
    assert [(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [(9090, "keda-grpc")]
    deploy = by_kind[("Deployment", "milvus-scaler")]
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "keda-grpc", "containerPort": 9090} in container["ports"]
    assert {"name": "telemetry", "containerPort": 9100} in container["ports"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/etc/milvus-scaler", "/etc/milvus-scaler/keda-tls"} <= mounts
    data = by_kind[("ConfigMap", "milvus-scaler-config")]["data"]
    config = yaml.safe_load(data["keda.yaml"])
    assert list(config) == ["keda"], "the component adds its own section only"
    assert container["args"][-2:] == ["--config", "/etc/milvus-scaler/keda.yaml"], container["args"]
    assert config["keda"]["listen"] == "0.0.0.0:9090"
    for key in ("cert_file", "key_file", "client_ca_file"):
        assert config["keda"]["tls"][key].startswith("/etc/milvus-scaler/keda-tls/")
    # The shipped configuration is accepted by the program itself.
    argv = [cargo_bin("milvus-scaler"), "check-config"]
    for key in ("config.yaml", "keda.yaml"):
        (tmp_path / key).write_text(data[key])
        argv += ["--config", str(tmp_path / key)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr


def test_examples_render_and_match_keda_fields(tmp_path):
    docs = kustomize(MANIFESTS / "examples" / "keda")
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in docs)
    assert kinds == [("ScaledObject", "milvus-datanode"), ("ScaledObject", "milvus-indexnode"),
                     ("ScaledObject", "milvus-proxy"), ("ScaledObject", "milvus-querynode"),
                     ("TriggerAuthentication", "milvus-scaler-mtls")]
    for d in docs:
        assert d["metadata"]["namespace"] == "milvus"
        assert check_keda(d) == [], (d["metadata"]["name"], check_keda(d))
    so = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "ScaledObject"}
    q, i = so["milvus-querynode"], so["milvus-indexnode"]
    assert q["minReplicaCount"] == 2 and i["minReplicaCount"] == 0
    for name in ("milvus-proxy", "milvus-datanode"):
        assert so[name]["minReplicaCount"] == 2, name
        assert [t["type"] for t in so[name]["triggers"]] == ["cpu"], name
    assert q["fallback"]["replicas"] >= 1 and i["fallback"]["replicas"] >= 1
    assert q["fallback"]["behavior"] == "currentReplicasIfHigher"  # blind must not shrink a busy tier
    assert [t["metadata"]["signal"] for t in q["triggers"]] == ["search_demand"]
    assert {t["type"] for t in q["triggers"]} == {"external"}
    assert [(t["type"], t["metadata"]["signal"]) for t in i["triggers"]] == [("external-push", "index_pending_builds")]
    for t in q["triggers"] + i["triggers"]:
        assert t["metadata"]["scalerAddress"] == "milvus-scaler.milvus-scaler.svc:9090"
        assert t["authenticationRef"]["name"] == "milvus-scaler-mtls"
        assert float(t["metadata"]["target"]) > 0
    auth = next(d for d in docs if d["kind"] == "TriggerAuthentication")
    assert {r["parameter"] for r in auth["spec"]["secretTargetRef"]} == {"caCert", "tlsClientCert", "tlsClientKey"}


@pytest.mark.parametrize("doc", ["scaledobject-querynode.yaml", "scaledobject-indexnode.yaml"])
def test_example_trigger_metadata_is_accepted_by_the_scaler(doc):
    """The example metadata passes the scaler's own parser (over gRPC, GetMetricSpec)."""
    import grpc

    from harness.keda import KedaScaler, StaticMetrics, stubs

    pb2, pb2_grpc = stubs()
    spec = yaml.safe_load((MANIFESTS / "examples" / "keda" / doc).read_text())["spec"]
    m = StaticMetrics()
    s = KedaScaler(m.url, name="prod")
    try:
        with grpc.insecure_channel(s.address) as ch:
            stub = pb2_grpc.ExternalScalerStub(ch)
            for t in spec["triggers"]:
                got = stub.GetMetricSpec(pb2.ScaledObjectRef(name="x", namespace="milvus",
                                                             scalerMetadata=t["metadata"]), timeout=10)
                assert got.metricSpecs[0].metricName == "milvus_" + t["metadata"]["signal"]
                assert got.metricSpecs[0].targetSizeFloat == float(t["metadata"]["target"])
    finally:
        s.stop()
        m.stop()
