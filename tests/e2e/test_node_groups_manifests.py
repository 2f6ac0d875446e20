"""Node-group manifests: the eksctl ClusterConfig (eksctl cannot be installed here, so a schema of
the fields we use, with unknown keys rejected, plus the rules the design asks for), the IAM policy
embedded in it, and the kustomize component (rendered with kubectl kustomize, validated with
kubernetes-validate --strict, its configuration accepted by `milvus-scaler check-config`).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import jsonschema
import pytest
import yaml

from harness.procs import REPO
from harness.services import cargo_bin, run_dir, tool

EKSCTL = REPO / "manifests" / "node-groups" / "eksctl-cluster.yaml"
POLICY = REPO / "manifests" / "iam" / "milvus-scaler-node-groups-policy.json"
COMPONENT = REPO / "manifests" / "components" / "node-groups"
BASE = REPO / "manifests" / "base"

STR = {"type": "string", "minLength": 1}
STRMAP = {"type": "object", "additionalProperties": {"type": "string"}}
AZS = {"type": "array", "items": {"type": "string", "pattern": "^[a-z]{2}-[a-z]+-[0-9][a-z]$"}, "minItems": 1}
INT = {"type": "integer", "minimum": 0}

# The eksctl.io/v1alpha5 ClusterConfig fields this file uses (names and types from eksctl's schema);
# anything else is rejected, so a misspelt key cannot be silently ignored by eksctl.
SCHEMA = {
    "type": "object", "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "nodeGroups", "iam"],
    "properties": {
        "apiVersion": {"const": "eksctl.io/v1alpha5"},
        "kind": {"const": "ClusterConfig"},
        "metadata": {"type": "object", "additionalProperties": False, "required": ["name", "region"],
                     "properties": {"name": STR, "region": STR, "version": {"type": "string", "pattern": r"^1\.[0-9]+$"}}},
        "availabilityZones": AZS,
        "iam": {"type": "object", "additionalProperties": False, "properties": {
            "withOIDC": {"type": "boolean"},
            "serviceAccounts": {"type": "array", "items": {
                "type": "object", "additionalProperties": False, "required": ["metadata"],
                "properties": {
                    "metadata": {"type": "object", "additionalProperties": False, "required": ["name", "namespace"],
                                 "properties": {"name": STR, "namespace": STR}},
                    "roleName": STR, "roleOnly": {"type": "boolean"}, "attachPolicy": {"type": "object"},
                    "attachPolicyARNs": {"type": "array", "items": STR}}}}}},
        "nodeGroups": {"type": "array", "minItems": 1, "items": {
            "type": "object", "additionalProperties": False,
            "required": ["name", "minSize", "maxSize", "labels", "taints", "tags"],
            "properties": {
                "name": STR, "instanceType": STR, "availabilityZones": AZS,
                "minSize": INT, "maxSize": INT, "desiredCapacity": INT, "volumeSize": INT,
                "privateNetworking": {"type": "boolean"}, "propagateASGTags": {"type": "boolean"},
                "labels": STRMAP, "tags": STRMAP,
                "taints": {"type": "array", "items": {
                    "type": "object", "additionalProperties": False, "required": ["key", "effect"],
                    "properties": {"key": STR, "value": {"type": "string"},
                                   "effect": {"enum": ["NoSchedule", "PreferNoSchedule", "NoExecute"]}}}},
                "instancesDistribution": {
                    "type": "object", "additionalProperties": False, "required": ["instanceTypes"],
                    "properties": {
                        "instanceTypes": {"type": "array", "items": STR, "minItems": 2},
                        "maxPrice": {"type": "number"},
                        "onDemandBaseCapacity": INT,
                        "onDemandPercentageAboveBaseCapacity": {"type": "integer", "minimum": 0, "maximum": 100},
                        "spotInstancePools": INT,
                        "spotAllocationStrategy": {"enum": ["lowest-price", "capacity-optimized",
                                                            "capacity-optimized-prioritized", "price-capacity-optimized"]},
                        "capacityRebalance": {"type": "boolean"}}}}}},
    },
}

GIB_PER_VCPU = {"r": 8, "m": 4, "c": 2}


def shape(instance_type: str) -> tuple[int, int]:
    """(vCPU, GiB) of the c/m/r 6th-7th generation types used here."""
    family, size = instance_type.split(".")
    vcpu = {"large": 2, "xlarge": 4}.get(size) or int(size.removesuffix("xlarge")) * 4
    return vcpu, vcpu * GIB_PER_VCPU[family[0]]


@pytest.fixture(scope="module")
def cluster():
    return yaml.safe_load(EKSCTL.read_text())


def test_eksctl_config_matches_schema(cluster):
    jsonschema.validate(cluster, SCHEMA)
    bad = json.loads(json.dumps(cluster))
    bad["nodeGroups"][0]["instanceTypes"] = ["r6i.large"]  # a plausible typo: must be caught
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SCHEMA)


def test_node_groups_follow_the_design(cluster):
    groups = {g["name"]: g for g in cluster["nodeGroups"]}
    assert set(groups) == {"querynodes", "indexnodes", "datanodes"}
    cname = cluster["metadata"]["name"]
    for name, g in groups.items():
        role = name.removesuffix("s")
        assert g["labels"] == {"milvus.io/node-group": role}
        assert g["taints"] == [{"key": "milvus.io/node-group", "value": role, "effect": "NoSchedule"}]
        assert g["tags"]["k8s.io/cluster-autoscaler/enabled"] == "true"
        assert g["tags"][f"k8s.io/cluster-autoscaler/{cname}"] == "owned"
        assert g["tags"]["k8s.io/cluster-autoscaler/node-template/label/milvus.io/node-group"] == role
        assert g["tags"]["k8s.io/cluster-autoscaler/node-template/taint/milvus.io/node-group"] == f"{role}:NoSchedule"
        assert len(g["availabilityZones"]) >= 2, f"{name}: one AZ"
        assert g["minSize"] <= g.get("desiredCapacity", g["minSize"]) <= g["maxSize"]
    q = groups["querynodes"]
    assert "instancesDistribution" not in q, "query nodes must be on-demand"
    assert q["instanceType"].startswith("r"), "query nodes must be memory-optimised"
    assert len(q["availabilityZones"]) >= 3
    for name in ("indexnodes", "datanodes"):
        g = groups[name]
        assert "instanceType" not in g
        d = g["instancesDistribution"]
        assert d["onDemandBaseCapacity"] == 0 and d["onDemandPercentageAboveBaseCapacity"] == 0, f"{name}: not all spot"
        assert all(t.startswith("c") for t in d["instanceTypes"]), f"{name}: not compute-optimised"
        shapes = {shape(t) for t in d["instanceTypes"]}
        assert len(shapes) == 1, f"{name}: instance types of different shapes {shapes}"


def test_irsa_role_carries_the_policy_file(cluster):
    assert cluster["iam"]["withOIDC"] is True
    [sa] = cluster["iam"]["serviceAccounts"]
    assert sa["metadata"] == {"name": "milvus-scaler", "namespace": "milvus-scaler"}
    assert sa["attachPolicy"] == json.loads(POLICY.read_text())
    cond = sa["attachPolicy"]["Statement"][1]["Condition"]["StringEquals"]
    assert f"aws:ResourceTag/k8s.io/cluster-autoscaler/{cluster['metadata']['name']}" in cond


def test_component_renders_validates_and_configures(cluster):
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl not found: install kubectl (make setup)"
    d = run_dir("node-groups-kustomize")
    (d / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(BASE, d)], "components": [os.path.relpath(COMPONENT, d)]}))
    out = subprocess.run([kubectl, "kustomize", str(d)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rendered = d / "rendered.yaml"
    rendered.write_text(out.stdout)
    v = subprocess.run([tool("kubernetes-validate"), "--strict", str(rendered)], capture_output=True, text=True,
                       timeout=120)
    assert v.returncode == 0, v.stdout + v.stderr
    docs = {(x["kind"], x["metadata"]["name"]): x for x in yaml.safe_load_all(out.stdout)}
    sa = docs[("ServiceAccount", "milvus-scaler")]
    role = cluster["iam"]["serviceAccounts"][0]["roleName"]
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith(f":role/{role}")
    data = docs[("ConfigMap", "milvus-scaler-config")]["data"]
    config_text = data["node-groups.yaml"]
    cfg = yaml.safe_load(config_text)
    base_cfg = yaml.safe_load(yaml.safe_load((BASE / "configmap.yaml").read_text())["data"]["config.yaml"])
    # The component adds its own file (a section of its own) and leaves the base's config.yaml alone.
    assert yaml.safe_load(data["config.yaml"]) == base_cfg, "component changed the base config"
    assert list(cfg) == ["node_groups"], list(cfg)
    args = docs[("Deployment", "milvus-scaler")]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[-2:] == ["--config", "/etc/milvus-scaler/node-groups.yaml"], args
    assert cfg["node_groups"]["mode"] == "dry-run"
    eks_groups = {g["name"]: g for g in cluster["nodeGroups"]}
    for g in cfg["node_groups"]["groups"]:
        e = eks_groups[g["name"]]
        types = e["instancesDistribution"]["instanceTypes"] if "instancesDistribution" in e else [e["instanceType"]]
        assert g["instance_type"] in types, g
    (d / "config.yaml").write_text(data["config.yaml"])
    (d / "node-groups.yaml").write_text(config_text)
    check = subprocess.run([cargo_bin("milvus-scaler"), "check-config", "--config", str(d / "config.yaml"),
                            "--config", str(d / "node-groups.yaml")],
                           capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
