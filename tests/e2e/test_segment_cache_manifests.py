"""segment-cache's one install path (manifests/eks: the Helm post-renderer in querynode-post-render/ and the
config in segment-cache-config.yaml): post-rendering the chart's query-node Deployment adds the sidecar and
validates (kubernetes-validate --strict), the post-renderer fails when its patch matches nothing, and the shipped
config passes `segment-cache check-config` (and bad keys fail it with exit 2)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.procs import REPO  # noqa: E402
from harness.services import cargo_bin, run_dir, tool  # noqa: E402

EKS = REPO / "manifests" / "eks"
POST_RENDER = EKS / "querynode-post-render"
IMAGE = "ghcr.io/milvus-scaler/segment-cache:0.1.0"
K8S = "1.33.0"
# r6id.2xlarge (the querynodes group): one 474 GB NVMe instance-store volume (AWS instance-types table).
NVME_BYTES = 474 * 10**9


def validate(docs: list[dict]) -> None:
    d = run_dir("sc-validate")
    f = d / "docs.yaml"
    f.write_text(yaml.safe_dump_all(docs))
    r = subprocess.run([tool("kubernetes-validate"), "--strict", "-k", K8S, str(f)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def shipped_config() -> str:
    return (EKS / "segment-cache-config.yaml").read_text().replace("${SEGMENT_CACHE_SECRET_KEY}", "x" * 24)


def check_config(config_text: str) -> subprocess.CompletedProcess:
    d = run_dir("sc-check")
    (d / "config.yaml").write_text(config_text)
    return subprocess.run([cargo_bin("segment-cache"), "check-config", "--config", str(d / "config.yaml")],
                          capture_output=True, text=True, env={**os.environ, "SEGMENT_CACHE_SECRET_KEY": "x" * 24})


def post_render(text: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(POST_RENDER / "post-render.sh")], input=text, capture_output=True, text=True)


def test_helm_post_renderer_adds_the_sidecar_and_no_blocking_warm():
    r = post_render((POST_RENDER / "helm-output.yaml").read_text())
    assert r.returncode == 0, r.stderr
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    validate(docs)
    dep = next(d for d in docs if d["kind"] == "Deployment")
    spec = dep["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "milvus-querynode"
    inits = {c["name"]: c for c in spec["initContainers"]}
    # No one-shot warm init container: it would block the query node on one failed object (exit 1).
    assert list(inits) == ["config", "segment-cache"], list(inits)
    side = inits["segment-cache"]
    assert side["image"] == IMAGE
    assert side["args"] == ["serve", "--config", "/etc/segment-cache/config.yaml"]
    assert side["restartPolicy"] == "Always", "the sidecar must start before Milvus and keep running"
    assert [c["name"] for c in spec["containers"]] == ["querynode"]
    vols = {v["name"]: v for v in spec["volumes"]}
    assert vols["nvme"]["hostPath"]["path"] == "/mnt/nvme"
    assert vols["disk"] == {"name": "disk", "emptyDir": {"sizeLimit": "50Gi"}}, vols["disk"]
    mounts = {m["name"]: m["mountPath"] for m in side["volumeMounts"]}
    assert mounts == {"segment-cache-config": "/etc/segment-cache", "nvme": "/mnt/nvme"}
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert annotations["eks.amazonaws.com/skip-containers"] == "querynode,config"


def test_post_renderer_fails_when_the_query_node_deployment_is_missing():
    """A release not named `milvus` renders no Deployment milvus-querynode: the patch matches nothing, which
    kustomize accepts silently; the post-renderer must fail instead of installing Milvus without its S3 path."""
    other = (POST_RENDER / "helm-output.yaml").read_text().replace("name: milvus-querynode", "name: other-querynode")
    r = post_render(other)
    assert r.returncode != 0 and "milvus-querynode" in r.stderr, (r.returncode, r.stderr)
    assert r.stdout == ""


def test_shipped_config_fits_the_nvme_and_warms_only_this_nodes_share():
    cfg = yaml.safe_load(shipped_config())
    r = check_config(shipped_config())
    assert r.returncode == 0, r.stderr
    units = {"%": NVME_BYTES / 100, "GiB": 2**30, "GB": 10**9, "TiB": 2**40}
    cap = cfg["cache"]["capacity"]
    unit = next(u for u in units if cap.endswith(u))
    capacity = int(cap[: -len(unit)]) * units[unit]
    assert capacity <= 0.92 * NVME_BYTES, f"capacity {cap} does not fit the 474 GB NVMe with ~8 % free"
    assert unit == "%", "a share of the filesystem follows the instance type's NVMe; a fixed size does not"
    warm = cfg["warm"]
    assert warm["prefixes"] == [], "a query node must not download the whole bucket before serving"
    assert warm["from_access_log"] is True and warm["in_serve"] is True and warm["ready_after_warm"] is False


def test_check_config_rejects_bad_keys_with_exit_2():
    good = shipped_config()
    r = check_config(good.replace("capacity: 90%", "capacity: lots"))
    assert r.returncode == 2 and "cache.capacity" in r.stderr, r.stderr
    r = check_config(good.replace("capacity: 90%", "capacity: 120%"))
    assert r.returncode == 2 and "cache.capacity" in r.stderr, r.stderr
    r = check_config(good.replace("concurrency: 8", "concurrency: 0"))
    assert r.returncode == 2 and "warm.concurrency" in r.stderr, r.stderr
    r = check_config(good + "surprise: 1\n")
    assert r.returncode == 2 and "surprise" in r.stderr, r.stderr
