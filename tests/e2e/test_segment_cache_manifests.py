"""segment-cache manifests: the Helm post-renderer patch, the milvus-operator overlay and the
values snippet render with kubectl kustomize and validate (kubernetes-validate --strict; the
Milvus custom resource's containers are validated as core/v1 Containers), and the shipped config
passes `segment-cache check-config`."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.procs import REPO  # noqa: E402
from harness.services import cargo_bin, run_dir, tool  # noqa: E402

M = REPO / "manifests" / "segment-cache"
IMAGE = "ghcr.io/milvus-scaler/segment-cache:0.1.0"
K8S = "1.33.0"


def validate(docs: list[dict]) -> None:
    d = run_dir("sc-validate")
    f = d / "docs.yaml"
    f.write_text(yaml.safe_dump_all(docs))
    r = subprocess.run([tool("kubernetes-validate"), "--strict", "-k", K8S, str(f)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def as_pod(containers: list[dict], init: list[dict], volumes: list[dict]) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check", "namespace": "milvus"},
            "spec": {"containers": containers, "initContainers": init, "volumes": volumes}}


def check_config(config_text: str) -> subprocess.CompletedProcess:
    d = run_dir("sc-check")
    (d / "config.yaml").write_text(config_text)
    return subprocess.run([cargo_bin("segment-cache"), "check-config", "--config", str(d / "config.yaml")],
                          capture_output=True, text=True, env={**os.environ, "SEGMENT_CACHE_SECRET_KEY": "x" * 24})


def test_helm_post_renderer_adds_sidecar_and_warm():
    rendered = (REPO / "tests" / "fixtures" / "segment-cache" / "milvus-querynode-rendered.yaml").read_text()
    r = subprocess.run([str(M / "helm" / "post-render" / "kustomize.sh")], input=rendered, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    assert not (M / "helm" / "post-render" / "all.yaml").exists(), "the post-renderer left its temp file"
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    validate(docs)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ConfigMap", "Deployment", "Service"], kinds
    dep = next(d for d in docs if d["kind"] == "Deployment")
    spec = dep["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "milvus-querynode"
    inits = {c["name"]: c for c in spec["initContainers"]}
    order = list(inits)
    assert sorted(order) == ["config", "segment-cache", "segment-cache-warm"], order
    # The one-shot warm must finish before the sidecar opens the same cache directory.
    assert order.index("segment-cache-warm") < order.index("segment-cache"), order
    warm, side = inits["segment-cache-warm"], inits["segment-cache"]
    assert warm["image"] == side["image"] == IMAGE
    assert warm["args"] == ["warm", "--config", "/etc/segment-cache/config.yaml"]
    assert side["args"] == ["serve", "--config", "/etc/segment-cache/config.yaml"]
    assert side["restartPolicy"] == "Always", "the sidecar must start before Milvus and keep running"
    assert [c["name"] for c in spec["containers"]] == ["querynode"]
    vols = {v["name"]: v for v in spec["volumes"]}
    assert vols["nvme"]["hostPath"]["path"] == "/mnt/nvme"
    assert {"milvus-config", "tools", "segment-cache-config"} <= set(vols)
    for c in (warm, side):
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        assert mounts == {"segment-cache-config": "/etc/segment-cache", "nvme": "/mnt/nvme"}
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    cfg = yaml.safe_load(cm["data"]["config.yaml"])
    assert cfg["listen"] == "127.0.0.1:9000" and cfg["telemetry"]["listen"] == "0.0.0.0:9101"
    assert cfg["cache"]["dir"] == "/mnt/nvme/segment-cache"
    r = check_config(cm["data"]["config.yaml"])
    assert r.returncode == 0, r.stderr


def test_helm_values_redirect_only_query_nodes():
    values = yaml.safe_load((M / "helm" / "values-querynode.yaml").read_text())
    assert set(values) == {"serviceAccount", "queryNode"}, "only query nodes may be redirected to the sidecar"
    env = {e["name"]: e for e in values["queryNode"]["extraEnv"]}
    assert env["MINIO_ADDRESS"]["value"] == "127.0.0.1" and env["MINIO_PORT"]["value"] == "9000"
    assert env["MINIO_SECRETACCESSKEY"]["valueFrom"]["secretKeyRef"]["name"] == "segment-cache-auth"
    validate([as_pod([{"name": "querynode", "image": "milvusdb/milvus:v2.3.5",
                       "env": values["queryNode"]["extraEnv"]}], [], [])])


def test_operator_overlay():
    r = subprocess.run(["kubectl", "kustomize", str(M / "operator")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    milvus = next(d for d in docs if d["kind"] == "Milvus")
    validate([d for d in docs if d["kind"] != "Milvus"])
    qn = milvus["spec"]["components"]["queryNode"]
    assert qn["replicas"] == 2, "the patch must keep the user's fields"
    assert milvus["spec"]["components"]["image"] == "milvusdb/milvus:v2.3.5"
    assert [c["name"] for c in qn["sidecars"]] == ["segment-cache"]
    assert [c["name"] for c in qn["initContainers"]] == ["segment-cache-warm"]
    assert {e["name"]: e.get("value") for e in qn["env"]}["MINIO_ADDRESS"] == "127.0.0.1"
    # The CR's containers, env and volumes are core/v1 types: validate them as a Pod.
    validate([as_pod(qn["sidecars"] + [{"name": "querynode", "image": "milvusdb/milvus:v2.3.5", "env": qn["env"]}],
                     qn["initContainers"], qn["volumes"])])


def test_check_config_rejects_bad_keys_with_exit_2():
    good = (M / "base" / "config.yaml").read_text()
    assert check_config(good).returncode == 0
    r = check_config(good.replace("capacity: 800GiB", "capacity: lots"))
    assert r.returncode == 2 and "cache.capacity" in r.stderr, r.stderr
    r = check_config(good.replace("concurrency: 32", "concurrency: 0"))
    assert r.returncode == 2 and "warm.concurrency" in r.stderr, r.stderr
    r = check_config(good + "surprise: 1\n")
    assert r.returncode == 2 and "surprise" in r.stderr, r.stderr
