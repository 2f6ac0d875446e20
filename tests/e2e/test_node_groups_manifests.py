"""Node-group manifests: the eksctl ClusterConfig (eksctl cannot be installed here, so a schema of
the fields we use, with unknown keys rejected, plus the rules the design asks for), the IAM policy
embedded in it, and the kustomize component (rendered with kubectl kustomize, validated with
kubernetes-validate --strict, its configuration accepted by `milvus-scaler check-config`), and the
RBAC of its leader election checked to be exactly what crates/leader-lease's elector calls (its requests are
pinned against a fake API server, which says so, in crates/headroom-holder/tests/fake_apiserver.rs).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from harness.procs import REPO
from harness.services import cargo_bin, run_dir, tool

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_headroom_manifests import assert_lease_role  # noqa: E402
from test_manifests_combinations import build, config_files, one, validate_strict  # noqa: E402

EKSCTL = REPO / "manifests" / "node-groups" / "eksctl-cluster.yaml"
POLICY = REPO / "manifests" / "iam" / "milvus-scaler-node-groups-policy.json"
COMPONENT = REPO / "manifests" / "components" / "node-groups"
BASE = REPO / "manifests" / "base"

STR = {"type": "string", "minLength": 1}
STRMAP = {"type": "object", "additionalProperties": {"type": "string"}}
AZS = {"type": "array", "items": {"type": "string", "pattern": "^[a-z]{2}-[a-z]+-[0-9][a-z]$"}, "minItems": 1}
INT = {"type": "integer", "minimum": 0}
BOOL = {"type": "boolean"}
TAINTS = {"type": "array", "items": {
    "type": "object", "additionalProperties": False, "required": ["key", "effect"],
    "properties": {"key": STR, "value": {"type": "string"},
                   "effect": {"enum": ["NoSchedule", "PreferNoSchedule", "NoExecute"]}}}}
SERVICE_ACCOUNT = {
    "type": "object", "additionalProperties": False, "required": ["metadata"],
    "properties": {
        "metadata": {"type": "object", "additionalProperties": False, "required": ["name", "namespace"],
                     "properties": {"name": STR, "namespace": STR}},
        "roleName": STR, "roleOnly": BOOL, "attachPolicy": {"type": "object"},
        "attachPolicyARNs": {"type": "array", "items": STR}}}
# Fields shared by NodeGroup and ManagedNodeGroup (both definitions list them).
_GROUP_COMMON = {
    "name": STR, "instanceType": STR, "availabilityZones": AZS,
    "minSize": INT, "maxSize": INT, "desiredCapacity": INT, "volumeSize": INT,
    "privateNetworking": BOOL, "propagateASGTags": BOOL, "labels": STRMAP, "tags": STRMAP, "taints": TAINTS,
    "preBootstrapCommands": {"type": "array", "items": {"type": "string"}},
}

# eksctl.io/v1alpha5 ClusterConfig: the subset of eksctl's own JSON schema this file uses, names, types and enums
# copied from eksctl-io/eksctl pkg/apis/eksctl.io/v1alpha5/assets/schema.json at commit
# 009491b21c67635c70cc8bf3ecd266d39c63feda (definitions ClusterConfig, ClusterMeta, ClusterVPC, ClusterNAT,
# ClusterIAM, ClusterIAMServiceAccount, ClusterIAMMeta, Addon, WellKnownPolicies, NodeGroup, ManagedNodeGroup,
# NodeGroupInstancesDistribution, NodeGroupTaint; every one of them has additionalProperties: false there too).
# eksctl itself cannot be installed here (a Go binary from GitHub releases; no registry ships it) and its schema
# cannot be vendored, so a key outside this list fails the test: add it here only after reading it in that file.
EKSCTL_SCHEMA_COMMIT = "009491b21c67635c70cc8bf3ecd266d39c63feda"
SCHEMA = {
    "type": "object", "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "nodeGroups", "managedNodeGroups", "iam", "addons", "vpc"],
    "properties": {
        "apiVersion": {"const": "eksctl.io/v1alpha5"},
        "kind": {"const": "ClusterConfig"},
        "metadata": {"type": "object", "additionalProperties": False, "required": ["name", "region"],
                     "properties": {"name": STR, "region": STR, "version": {"type": "string", "pattern": r"^1\.[0-9]+$"}}},
        "availabilityZones": AZS,
        "vpc": {"type": "object", "additionalProperties": False, "properties": {
            "nat": {"type": "object", "additionalProperties": False, "properties": {
                "gateway": {"enum": ["HighlyAvailable", "Single", "Disable"]}}}}},
        "iam": {"type": "object", "additionalProperties": False, "properties": {
            "withOIDC": BOOL, "serviceAccounts": {"type": "array", "items": SERVICE_ACCOUNT}}},
        "addons": {"type": "array", "items": {
            "type": "object", "additionalProperties": False, "required": ["name"],
            "properties": {
                "name": STR, "version": STR, "attachPolicyARNs": {"type": "array", "items": STR},
                "wellKnownPolicies": {"type": "object", "additionalProperties": False, "properties": {
                    k: BOOL for k in ("imageBuilder", "autoScaler", "awsLoadBalancerController", "externalDNS",
                                      "certManager", "ebsCSIController", "efsCSIController")}}}}},
        "managedNodeGroups": {"type": "array", "minItems": 1, "items": {
            "type": "object", "additionalProperties": False, "required": ["name", "minSize", "maxSize"],
            "properties": {**_GROUP_COMMON, "instanceTypes": {"type": "array", "items": STR}, "spot": BOOL}}},
        "nodeGroups": {"type": "array", "minItems": 1, "items": {
            "type": "object", "additionalProperties": False,
            "required": ["name", "minSize", "maxSize", "labels", "taints", "tags"],
            "properties": {
                **_GROUP_COMMON,
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
                        "capacityRebalance": BOOL}}}}},
    },
}

GIB_PER_VCPU = {"r": 8, "m": 4, "c": 2}
ROLES = {"querynodes": "querynode", "indexnodes": "indexnode", "datanodes": "datanode"}
CA_POLICY = REPO / "manifests" / "iam" / "cluster-autoscaler-policy.json"
NVME_SCRIPT = REPO / "manifests" / "node-groups" / "nvme-instance-store.sh"
CA_VALUES = REPO / "manifests" / "eks" / "cluster-autoscaler" / "values.yaml"


def shape(instance_type: str) -> tuple[int, int]:
    """(vCPU, GiB) of the c/m/r 5th-7th generation types used here."""
    family, size = instance_type.split(".")
    vcpu = {"large": 2, "xlarge": 4}.get(size) or int(size.removesuffix("xlarge")) * 4
    return vcpu, vcpu * GIB_PER_VCPU[family[0]]


@pytest.fixture(scope="module")
def cluster():
    return yaml.safe_load(EKSCTL.read_text())


def by_role(cluster) -> dict[str, list[dict]]:
    """Role ("querynodes", ..., "system") -> its per-zone groups."""
    out: dict[str, list[dict]] = {}
    for g in cluster["nodeGroups"] + cluster["managedNodeGroups"]:
        out.setdefault(g["name"].rsplit("-", 1)[0], []).append(g)
    return out


def test_eksctl_config_matches_schema(cluster):
    jsonschema.validate(cluster, SCHEMA)
    for mutate in (lambda c: c["nodeGroups"][0].__setitem__("instanceTypes", ["r6i.large"]),  # plausible typos
                   lambda c: c["vpc"]["nat"].__setitem__("gateway", "HighlyAvailible"),
                   lambda c: c["addons"][0]["wellKnownPolicies"].__setitem__("ebsCsiController", True),
                   lambda c: c["managedNodeGroups"][0].__setitem__("instancesDistribution", {})):
        bad = json.loads(json.dumps(cluster))
        mutate(bad)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, SCHEMA)


def test_kubernetes_version_is_supported_and_matches_what_the_repo_validates(cluster):
    """L9: EKS 1.33 (standard support), the version the manifests are validated against and k8s-openapi's."""
    assert cluster["metadata"]["version"] == "1.33"
    cargo = (REPO / "Cargo.toml").read_text()
    assert 'features = ["v1_33"]' in cargo
    import re
    for test in ("test_manifests_eks.py", "test_segment_cache_manifests.py"):
        pinned = re.findall(r'^K8S(?:_VERSION)? = "([0-9.]+)"', (REPO / "tests" / "e2e" / test).read_text(), re.M)
        assert pinned and all(v.startswith(cluster["metadata"]["version"] + ".") for v in pinned), (test, pinned)
    ca_tag = yaml.safe_load(CA_VALUES.read_text())["image"]["tag"]
    assert ca_tag.startswith(f"v{cluster['metadata']['version']}."), "Cluster Autoscaler minor = Kubernetes minor"


def test_every_group_exists_once_per_zone(cluster):
    """C1, M2: one ASG per role and zone (zone-aware CA scaling, --balance-similar-node-groups)."""
    zones = cluster["availabilityZones"]
    assert len(zones) == 3
    roles = by_role(cluster)
    assert set(roles) == {*ROLES, "system"}
    for role, groups in roles.items():
        got = sorted(z for g in groups for z in g["availabilityZones"])
        assert got == sorted(zones), f"{role}: zones {got}"
        assert all(len(g["availabilityZones"]) == 1 for g in groups), f"{role}: a multi-zone group"
        assert all(g["name"] == f"{role}-{g['availabilityZones'][0][-1]}" for g in groups), role
        # Groups of one role are "similar" for CA only if they are equal but for the zone.
        strip = [{k: v for k, v in g.items() if k not in ("name", "availabilityZones")} for g in groups]
        assert all(s == strip[0] for s in strip), f"{role}: per-zone groups differ"


def test_system_groups_are_untainted_and_can_hold_etcd_in_every_zone(cluster):
    """C1: CoreDNS, proxy, coordinators, etcd (one member per zone, required), milvus-scaler, cert-manager, KEDA,
    Prometheus and CA need untainted nodes, at least one in each of the three zones."""
    system = by_role(cluster)["system"]
    assert len(system) == 3
    for g in system:
        assert not g.get("taints"), g["name"]
        assert g["minSize"] >= 1, f"{g['name']}: etcd's zone needs a node even when idle"
        assert g["labels"] == {"milvus.io/node-group": "system"}
        assert "spot" not in g
    ca = yaml.safe_load(CA_VALUES.read_text())
    assert ca["nodeSelector"] == {"milvus.io/node-group": "system"}


def test_node_groups_follow_the_design(cluster):
    cname = cluster["metadata"]["name"]
    roles = by_role(cluster)
    for name, role in ROLES.items():
        for g in roles[name]:
            assert g["labels"] == {"milvus.io/node-group": role}
            assert g["taints"] == [{"key": "milvus.io/node-group", "value": role, "effect": "NoSchedule"}]
            assert g["tags"]["k8s.io/cluster-autoscaler/enabled"] == "true"
            assert g["tags"][f"k8s.io/cluster-autoscaler/{cname}"] == "owned"
            assert g["tags"]["k8s.io/cluster-autoscaler/node-template/label/milvus.io/node-group"] == role
            assert g["minSize"] <= g.get("desiredCapacity", g["minSize"]) <= g["maxSize"]
    for q in roles["querynodes"]:
        assert "instancesDistribution" not in q, "query nodes must be on-demand"
        assert q["instanceType"].startswith("r"), "query nodes must be memory-optimised"
    for name in ("indexnodes", "datanodes"):
        for g in roles[name]:
            assert "instanceType" not in g
            d = g["instancesDistribution"]
            assert d["onDemandPercentageAboveBaseCapacity"] == 0, f"{name}: above the base, all spot"
            assert all(t.startswith("c") for t in d["instanceTypes"]), f"{name}: not compute-optimised"
            shapes = {shape(t) for t in d["instanceTypes"]}
            assert len(shapes) == 1, f"{name}: instance types of different shapes {shapes}"
            # M8: a spot-pool shortage must not empty the group: at least 6 pools per zone.
            assert len(set(d["instanceTypes"])) >= 6, f"{name}: {d['instanceTypes']}"
    for g in roles["indexnodes"]:
        assert g["instancesDistribution"]["onDemandBaseCapacity"] == 0, "index builds restart: all spot"
    for g in roles["datanodes"]:
        # M8: the first data node of every zone is on-demand (flushes never stop on a spot shortage).
        assert g["instancesDistribution"]["onDemandBaseCapacity"] >= 1


def ca_taints(tags: dict) -> list[dict]:
    """Cluster Autoscaler's extractTaintsFromAsg (cloudprovider/aws/aws_manager.go): a node-template taint tag is
    used only if its value is `<value>:<NoSchedule|NoExecute|PreferNoSchedule>`."""
    import re
    prefix = "k8s.io/cluster-autoscaler/node-template/taint/"
    out = []
    for k, v in tags.items():
        m = re.fullmatch(r"(.*):(NoSchedule|NoExecute|PreferNoSchedule)", v)
        if k.startswith(prefix) and m:
            out.append({"key": k[len(prefix):], "value": m[1], "effect": m[2]})
    return out


def test_one_tag_mechanism_gives_cluster_autoscaler_the_taints(cluster):
    """M3: the hand-written node-template tags only; eksctl's propagateASGTags would write the same taint key with
    value `<value>` (no effect, which CA ignores), so it must be off."""
    for g in cluster["nodeGroups"]:
        assert "propagateASGTags" not in g, f"{g['name']}: two sources for the node-template tags"
        assert ca_taints(g["tags"]) == g["taints"], g["name"]
    # Non-vacuous: the effect-less value eksctl's propagation writes is ignored by CA's parser.
    assert ca_taints({"k8s.io/cluster-autoscaler/node-template/taint/milvus.io/node-group": "querynode"}) == []
    guide = (REPO / "docs" / "eks.md").read_text()
    assert "aws autoscaling describe-tags" in guide


def test_querynodes_mount_the_nvme_with_the_script_in_the_repo(cluster):
    """H2: every query-node group runs manifests/node-groups/nvme-instance-store.sh verbatim before bootstrap."""
    script = NVME_SCRIPT.read_text()
    for g in by_role(cluster)["querynodes"]:
        assert g["preBootstrapCommands"] == [script], f"{g['name']}: embedded copy differs from {NVME_SCRIPT.name}"
    for g in cluster["nodeGroups"] + cluster["managedNodeGroups"]:
        if not g["name"].startswith("querynodes-"):
            assert "preBootstrapCommands" not in g


def test_nvme_script_passes_bash_n_and_shellcheck():
    assert subprocess.run(["bash", "-n", str(NVME_SCRIPT)], capture_output=True).returncode == 0
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck not found: run `make setup` (tests/setup.sh installs Debian's shellcheck)"
    r = subprocess.run([shellcheck, "--severity=style", str(NVME_SCRIPT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout


STUB = """#!/usr/bin/env bash
# Stand-in for {name} (a fake: block devices, mkfs and systemd cannot be used in a test): logs its arguments.
echo "{name} $*" >> "$STUB_LOG"
{body}
"""


def run_nvme_script(tmp, fs_present: bool, devices: int = 1) -> list[str]:
    """Runs the real script with fake lsblk/blkid/mkfs.xfs/mdadm/systemctl/chown on PATH and a fake root."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp / "calls.log"
    log.write_text("")
    lsblk = "\n".join(f'echo "/dev/nvme{i + 1}n1 Amazon EC2 NVMe Instance Storage"' for i in range(devices))
    stubs = {
        "lsblk": 'echo "/dev/nvme0n1 Amazon Elastic Block Store"\n' + lsblk,
        "blkid": ('case "$*" in *TYPE*) echo xfs;; *UUID*) echo 0b5c-test-uuid;; esac' if fs_present else
                  'case "$*" in *TYPE*) exit 2;; *UUID*) echo 0b5c-test-uuid;; esac'),
        "mkfs.xfs": "", "mdadm": 'case "$1" in --assemble) exit 1;; esac', "systemctl": "", "chown": "",
    }
    for name, body in stubs.items():
        f = bin_dir / name
        f.write_text(STUB.format(name=name, body=body))
        f.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", STUB_LOG=str(log),
               NVME_TEST_ROOT=str(tmp / "root"))
    r = subprocess.run(["bash", str(NVME_SCRIPT)], capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 0, r.stderr
    return log.read_text().splitlines()


def test_nvme_script_formats_once_and_writes_a_nofail_mount_unit(tmp_path):
    """H2, with fakes for the tools (labelled above): first boot formats the instance-store device (never the
    EBS root), writes mnt-nvme.mount (nofail, by UUID, before kubelet, enabled) and the 65532-owned cache dir;
    a second run on a device that already has a filesystem never formats again."""
    first = run_nvme_script(tmp_path, fs_present=False)
    assert "mkfs.xfs -q -L segment-cache /dev/nvme1n1" in first
    assert not any("nvme0n1" in c for c in first), "touched the EBS volume"
    assert "systemctl enable --now mnt-nvme.mount" in first
    assert f"chown 65532:65532 {tmp_path}/root/mnt/nvme/segment-cache" in first
    unit = (tmp_path / "root" / "etc" / "systemd" / "system" / "mnt-nvme.mount").read_text()
    assert "What=/dev/disk/by-uuid/0b5c-test-uuid" in unit and "Where=/mnt/nvme" in unit
    assert "nofail" in unit and "Before=kubelet.service" in unit and "WantedBy=local-fs.target" in unit
    assert (tmp_path / "root" / "mnt" / "nvme" / "segment-cache").is_dir()
    again = run_nvme_script(tmp_path, fs_present=True)
    assert not any(c.startswith("mkfs") for c in again), again
    # Several instance-store disks: one RAID 0 array, formatted once.
    raid = run_nvme_script(tmp_path, fs_present=False, devices=2)
    assert any(c.startswith("mdadm --create /dev/md/nvme") and c.endswith("/dev/nvme1n1 /dev/nvme2n1")
               for c in raid), raid
    assert "mkfs.xfs -q -L segment-cache /dev/md/nvme" in raid


def test_nat_is_highly_available_and_the_guide_adds_the_s3_gateway_endpoint(cluster):
    """M9: one NAT gateway per zone; the S3 gateway endpoint (eksctl cannot create it) comes from the guide."""
    assert cluster["vpc"]["nat"]["gateway"] == "HighlyAvailable"
    assert all(g["privateNetworking"] for g in cluster["nodeGroups"] + cluster["managedNodeGroups"])
    guide = (REPO / "docs" / "eks.md").read_text()
    assert "aws ec2 create-vpc-endpoint" in guide and "--vpc-endpoint-type Gateway" in guide
    assert "com.amazonaws.$REGION.s3" in guide
    assert "aws ec2 describe-vpc-endpoints" in guide, "no check after the endpoint step"


def test_ebs_csi_addon_and_default_gp3_storage_class(cluster):
    """H1: the EBS CSI add-on with its IRSA role, a default gp3 class binding in the pod's zone, used by etcd."""
    [addon] = [a for a in cluster["addons"] if a["name"] == "aws-ebs-csi-driver"]
    assert addon["wellKnownPolicies"] == {"ebsCSIController": True}
    assert cluster["iam"]["withOIDC"] is True
    sc = yaml.safe_load((REPO / "manifests" / "cluster" / "storageclass-gp3.yaml").read_text())
    assert sc["kind"] == "StorageClass" and sc["provisioner"] == "ebs.csi.aws.com"
    assert sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
    assert sc["volumeBindingMode"] == "WaitForFirstConsumer"
    assert sc["parameters"]["type"] == "gp3"
    values = yaml.safe_load((REPO / "manifests" / "eks" / "milvus-values.yaml").read_text())
    assert values["etcd"]["persistence"]["storageClass"] == sc["metadata"]["name"]


def test_irsa_roles_carry_the_policy_files(cluster):
    """M13: eksctl creates the cluster-level roles, each from its policy file; no file names a role twice."""
    assert cluster["iam"]["withOIDC"] is True
    sas = {(s["metadata"]["namespace"], s["metadata"]["name"]): s for s in cluster["iam"]["serviceAccounts"]}
    assert set(sas) == {("milvus-scaler", "milvus-scaler"), ("kube-system", "cluster-autoscaler")}
    cname = cluster["metadata"]["name"]
    for (ns, name), policy_file in ((("milvus-scaler", "milvus-scaler"), POLICY),
                                    (("kube-system", "cluster-autoscaler"), CA_POLICY)):
        sa = sas[(ns, name)]
        assert sa["roleOnly"] is True and sa["roleName"].startswith(f"{cname}-")
        assert sa["attachPolicy"] == json.loads(policy_file.read_text()), policy_file.name
        writes = [st for st in sa["attachPolicy"]["Statement"] if "Condition" in st]
        assert writes and all(
            st["Condition"]["StringEquals"][f"aws:ResourceTag/k8s.io/cluster-autoscaler/{cname}"] == "owned"
            for st in writes), f"{name}: write actions not scoped by the cluster tag"
    # The trust policies of these roles are eksctl's: none is kept by hand, and the guide creates them nowhere.
    assert not (REPO / "manifests" / "iam" / "milvus-scaler-node-groups-trust.json").exists()
    guide = (REPO / "docs" / "eks.md").read_text()
    for sa in sas.values():
        assert f"--role-name {sa['roleName']} --assume-role-policy-document" not in guide
    ca = yaml.safe_load(CA_VALUES.read_text())
    assert ca["rbac"]["serviceAccount"]["name"] == "cluster-autoscaler"
    assert ca["rbac"]["serviceAccount"]["annotations"]["eks.amazonaws.com/role-arn"].endswith(
        f":role/{sas[('kube-system', 'cluster-autoscaler')]['roleName']}")


def test_cluster_autoscaler_values_carry_the_flags_the_deployment_needs(cluster):
    """H6: auto-discovery by this cluster's tags and the flags docs/eks.md relies on."""
    ca = yaml.safe_load(CA_VALUES.read_text())
    assert ca["cloudProvider"] == "aws" and ca["awsRegion"] == cluster["metadata"]["region"]
    assert ca["autoDiscovery"]["clusterName"] == cluster["metadata"]["name"]
    args = ca["extraArgs"]
    post = yaml.safe_load((REPO / "manifests" / "eks" / "querynode-post-render" / "querynode-segment-cache.yaml")
                          .read_text())
    grace = post["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert args["max-graceful-termination-sec"] >= grace == 660
    assert args["balance-similar-node-groups"] is True
    assert args["skip-nodes-with-local-storage"] is False
    assert args["expander"] in ("least-waste", "random", "most-pods", "priority", "price")


def test_cluster_name_is_the_same_everywhere(cluster):
    """M13: one cluster name (the guide's CLUSTER variable), in the CA tags, policies and role names."""
    import re
    cname = cluster["metadata"]["name"]
    assert cname == "milvus-eks"
    guide = (REPO / "docs" / "eks.md").read_text()
    assert re.search(rf"\bCLUSTER={cname}\b", guide)
    assert not re.search(r"\bCLUSTER=(?!milvus-eks\b)", guide)
    for path in [*(REPO / "manifests").rglob("*.json"), *(REPO / "manifests").rglob("*.yaml")]:
        for tag in re.findall(r"k8s\.io/cluster-autoscaler/([a-z0-9-]+)", path.read_text()):
            assert tag in ("enabled", "node-template", cname), f"{path.relative_to(REPO)}: cluster tag {tag}"


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


def test_sizing_has_one_entry_per_zone_group_and_the_docs_warn_about_scale_in(cluster):
    """M2: milvus-scaler sizes one ASG per entry, so the per-zone groups are one entry each, equal but for the
    zone (each a third of the workload); docs/node-groups.md warns that `scale_in: true` terminates undrained."""
    patch = yaml.safe_load((COMPONENT / "configmap-patch.yaml").read_text())
    groups = yaml.safe_load(patch["data"]["node-groups.yaml"])["node_groups"]["groups"]
    names = {g["name"] for g in groups}
    eks = {g["name"] for g in cluster["nodeGroups"] if g["name"].startswith(("querynodes-", "indexnodes-"))}
    assert names == eks, (names, eks)
    for role in ("querynodes", "indexnodes"):
        mine = [g for g in groups if g["name"].startswith(role + "-")]
        strip = [{k: v for k, v in g.items() if k not in ("name", "asg")} for g in mine]
        assert len(mine) == 3 and all(s == strip[0] for s in strip), role
        assert all(g["asg"] == f"eksctl-milvus-eks-nodegroup-{g['name']}-NodeGroup" for g in mine)
        assert not any(g.get("scale_in") for g in mine)
    doc = (REPO / "docs" / "node-groups.md").read_text()
    assert "`scale_in: true` terminates nodes without draining them" in doc


def _quantity(text) -> float:
    """An HPA averageValue ("60", "500m") as a number."""
    text = str(text)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def test_planner_plans_what_the_autoscalers_ask_for():
    """M7: the planner's signal and per-pod target are the HPA's and the ScaledObject's, split over the three
    zone groups (target x3, min/max a third rounded up). A looser planner target plans machines no pod will use,
    which Cluster Autoscaler removes after its unneeded time and the planner raises again."""
    patch = yaml.safe_load((COMPONENT / "configmap-patch.yaml").read_text())
    groups = yaml.safe_load(patch["data"]["node-groups.yaml"])["node_groups"]["groups"]
    examples = REPO / "manifests" / "examples"
    for role, hpa_file, keda_file in (("querynodes", "hpa-querynode.yaml", "scaledobject-querynode.yaml"),
                                      ("indexnodes", "hpa-indexnode.yaml", "scaledobject-indexnode.yaml")):
        hpa = yaml.safe_load((examples / hpa_file).read_text())["spec"]
        (external,) = [m["external"] for m in hpa["metrics"] if m["type"] == "External"]
        so = yaml.safe_load((examples / "keda" / keda_file).read_text())["spec"]
        (trigger,) = [t for t in so["triggers"] if t["type"] in ("external", "external-push")]
        signal = external["metric"]["name"].removeprefix("milvus_")
        target = _quantity(external["target"]["averageValue"])
        # Both autoscalers ask for the same thing.
        assert (trigger["metadata"]["signal"], float(trigger["metadata"]["target"])) == (signal, target), role
        assert so["maxReplicaCount"] == hpa["maxReplicas"], role
        zones = [g for g in groups if g["name"].startswith(role + "-")]
        for g in zones:
            r = g["replicas"]
            assert r["signal"] == signal, (g["name"], r)
            assert r["target_per_pod"] == pytest.approx(len(zones) * target), (g["name"], r)
            assert r["max"] == -(-hpa["maxReplicas"] // len(zones)), (g["name"], r)
            assert r["min"] == -(-min(hpa["minReplicas"], so["minReplicaCount"]) // len(zones)), (g["name"], r)


LEASE_ROLE = "milvus-scaler-node-groups-lease"


def rust_const(path: str, pattern: str) -> str:
    (value,) = re.findall(pattern, (REPO / path).read_text())
    return value


@pytest.mark.parametrize("resource", ["overlays/keda", "overlays/external-metrics"])
def test_the_leader_election_is_granted_exactly_what_the_elector_calls(resource):
    """Two replicas in a mode overlay: only the holder of the node groups' Lease writes the groups. The elector
    (crates/leader-lease/src/elector.rs) GETs the Lease, creates it when absent and replaces it; the Role grants
    exactly that, `get`/`update` by name and `create` on leases (which resourceNames cannot restrict), in the pod's
    own namespace, for the Lease the configuration names, which is not the headroom's."""
    docs = build(resource, ["node-groups"])
    validate_strict(docs, f"{resource}+node-groups")
    (text,) = [t for p, t in config_files(docs).items() if p.endswith("/node-groups.yaml")]
    le = yaml.safe_load(text)["node_groups"]["leader_election"]
    default = rust_const("crates/node-groups/src/lib.rs", r'pub const DEFAULT_LEASE_NAME: &str = "([^"]+)"')
    headroom = rust_const("crates/headroom-holder/src/config.rs", r'pub const DEFAULT_LEASE_NAME: &str = "([^"]+)"')
    name = le.get("lease_name") or default
    assert name == default != headroom, (name, default, headroom)
    src = (REPO / "crates" / "leader-lease" / "src" / "elector.rs").read_text()
    verbs = set(re.findall(r'"(get|list|watch|create|update|patch|delete)"', src))
    assert verbs == {"get", "create", "update"}, f"the elector's verbs changed: {verbs}"
    dep = one(docs, "Deployment", "milvus-scaler", "milvus-scaler")
    lease_ns = le.get("namespace") or dep["metadata"]["namespace"]
    assert_lease_role(docs, LEASE_ROLE, name, lease_ns, dep)
    # Nothing else on leases, nothing cluster-wide.
    assert not [x for x in docs if x["kind"] in ("ClusterRole", "ClusterRoleBinding")
                and "node-groups" in x["metadata"]["name"]]
    # A 403 names the file that grants it (crates/node-groups/src/lib.rs, ELECTION).
    hint_file = rust_const("crates/node-groups/src/lib.rs", r'rbac_manifest: "([^"]+)"')
    assert (REPO / hint_file).is_file() and LEASE_ROLE in (REPO / hint_file).read_text(), hint_file
    # The identity: POD_NAME from the downward API; the token mounted; the API server reachable.
    pod = dep["spec"]["template"]["spec"]
    (c,) = [c for c in pod["containers"] if c["name"] == "milvus-scaler"]
    env = {e["name"]: e for e in c.get("env", [])}
    assert env["POD_NAME"] == {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    assert pod["automountServiceAccountToken"] is True
    egress = {p["port"] for x in docs if x["kind"] == "NetworkPolicy" and x["metadata"]["namespace"] == lease_ns
              for rule in x["spec"].get("egress", []) for p in rule.get("ports", [])}
    assert {443, 6443} <= egress, egress
    assert dep["spec"]["replicas"] >= 2, "two replicas: the election is what keeps them from both writing"
    assert le.get("enabled") is None, "on by default in a pod in apply: the shipped file must not turn it off"
    assert re.fullmatch(r"\d+s", le["lease_duration"]) and re.fullmatch(r"\d+s", le["renew_deadline"])


def test_the_comments_and_docs_say_one_replica_writes():
    """The old caveat ("safe only with scale_in: false", run one replica for scale_in) is gone; what is true now is
    written where users read it."""
    patch = (COMPONENT / "configmap-patch.yaml").read_text()
    doc = (REPO / "docs" / "node-groups.md").read_text()
    for text in (patch, doc):
        assert "safe only while" not in text and "replicas: 1" not in text
    assert "milvus-scaler/milvus-scaler-node-groups" in patch and "only the leader calls SetDesiredCapacity" in patch
    assert "node_groups.leader_election" in doc or "`leader_election`" in doc
    assert "milvus_scaler_nodegroup_leader" in doc
