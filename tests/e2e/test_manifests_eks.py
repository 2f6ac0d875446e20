"""EKS reference deployment: manifests/eks, manifests/overlays/eks*, manifests/iam, manifests/s3.

Real tools throughout: `kubectl kustomize`, kubernetes-validate (offline OpenAPI schemas, strict), checkov
(Kubernetes checks; own virtualenv .venv-checkov, see tests/requirements-checkov.txt), parliament (IAM policy
lint), a moto server (IAM create-policy/create-role, S3 bucket configuration) and the captured Milvus 2.3.5
bucket layout (tests/fixtures/milvus-2.3.5-bucket-layout.txt).

What cannot run here: an EKS API server, and the Milvus Helm chart (no network to fetch it, no helm binary).
The chart's query-node render is therefore derived by hand from the chart's own template
(manifests/eks/querynode-post-render/helm-output.yaml, header names the template and commit);
`test_post_render_sample_matches_values` keeps it in step with the Helm values and
`test_values_keys_exist_in_the_pinned_chart` checks every values key against the chart's key list (CHART_KEYS).
"""
from __future__ import annotations

import copy
import fnmatch
import functools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.services import Moto  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
EKS = MANIFESTS / "eks"
VALUES_FILE = EKS / "milvus-values.yaml"
POST_RENDER = EKS / "querynode-post-render"
IAM = MANIFESTS / "iam"
S3 = MANIFESTS / "s3"
EKSCTL_CONFIG = MANIFESTS / "node-groups" / "eksctl-cluster.yaml"
BUCKET_LAYOUT = REPO / "tests" / "fixtures" / "milvus-2.3.5-bucket-layout.txt"
CHECKOV = REPO / ".venv-checkov" / "bin" / "checkov"

# Kubernetes version the manifests are validated against (EKS standard support; native sidecars are GA).
K8S_VERSION = "1.33.0"

# Deployment contract (metrics-contract.md "Deployment contract" and the node-groups issue). Used as-is when
# manifests/node-groups/eksctl-cluster.yaml is absent; when present, labels/taints are read from it.
NODE_GROUP_LABEL = "milvus.io/node-group"
CONTRACT_NODE_GROUPS = {
    group: {"labels": {NODE_GROUP_LABEL: group},
            "taints": [{"key": NODE_GROUP_LABEL, "value": group, "effect": "NoSchedule"}]}
    for group in ("querynode", "indexnode", "datanode")
}
COMPONENT_GROUPS = {"queryNode": "querynode", "indexNode": "indexnode", "dataNode": "datanode"}
SPOT_GROUPS = ("indexnode", "datanode")
SEGMENT_CACHE_IMAGE = "ghcr.io/milvus-scaler/segment-cache:0.1.0"
SEGMENT_CACHE_LISTEN = "127.0.0.1:9000"
SEGMENT_CACHE_TELEMETRY = "0.0.0.0:9101"
SEGMENT_CACHE_CONFIG_PATH = "/etc/segment-cache/config.yaml"
SEGMENT_CACHE_DIR = "/mnt/nvme/segment-cache"
QUERYNODE_SA = "milvus-querynode"
MILVUS_NAMESPACE = "milvus"
IRSA_ANNOTATION = "eks.amazonaws.com/role-arn"
ROLE_ARN = re.compile(r"^arn:aws:iam::\d{12}:role/(?P<name>[\w+=,.@-]{1,64})$")
ROLE_PREFIX = "milvus-eks-"

# Kinds that are CustomResources: kubernetes-validate has no schema for them (it ships the API server's
# built-in OpenAPI only). Each is checked structurally by the function named here instead.
CRD_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "Prometheus Operator CRD",
    ("monitoring.coreos.com/v1", "PodMonitor"): "Prometheus Operator CRD",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "Prometheus Operator CRD (components/grafana; promtool-checked "
                                                    "in test_grafana_static.py)",
    ("keda.sh/v1alpha1", "ScaledObject"): "KEDA CRD",
    ("keda.sh/v1alpha1", "ScaledJob"): "KEDA CRD",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "KEDA CRD",
    ("keda.sh/v1alpha1", "ClusterTriggerAuthentication"): "KEDA CRD",
    ("cert-manager.io/v1", "Certificate"): "cert-manager CRD (external-metrics serving certificate)",
    ("cert-manager.io/v1", "Issuer"): "cert-manager CRD (external-metrics CA)",
    ("cert-manager.io/v1", "ClusterIssuer"): "cert-manager CRD (KEDA-mode CA: signs in two namespaces)",
    ("milvus.io/v1beta1", "Milvus"): "milvus-operator CRD (segment-cache's operator patch)",
    ("autoscaling.x-k8s.io/v1beta1", "CapacityBuffer"): "Cluster Autoscaler CRD (components/headroom-capacity-"
                                                        "buffer; validated against tests/fixtures/capacitybuffer-v1beta1.yaml)",
}

# checkov: checks skipped everywhere, with the reason.
CHECKOV_GLOBAL_SKIPS = {
    "CKV_K8S_43": "images are pinned by immutable version tags (contract: ghcr.io/milvus-scaler/*:0.1.0, "
                  "milvusdb/milvus:v2.3.5); digests are a release-process concern, not the reference's",
    "CKV_K8S_15": "imagePullPolicy IfNotPresent with immutable version tags: a scale-out must not depend on "
                  "the registry answering (Always re-pulls on every pod start)",
    "CKV2_K8S_6": "milvus-scaler ships NetworkPolicies (base + one per mode, checked in "
                  "test_manifests_combinations.py); checkov also flags the Milvus-side pods and the post-rendered "
                  "query node, whose traffic policy is the Milvus release's (the chart ships none)",
}
# checkov: checks skipped on one resource only (check id, resource prefix) -> reason. Each must be used.
CHECKOV_RESOURCE_SKIPS = {
    ("CKV_K8S_23", "Deployment.milvus.milvus-querynode"):
        "the chart's Milvus container: the milvusdb/milvus 2.3 image runs only as root (its entrypoint writes "
        "/milvus/configs/milvus.yaml; milvus-io/milvus#25565); the segment-cache containers run as 65532 "
        "(checked strictly on the sidecar-only resource below)",
    ("CKV_K8S_40", "Deployment.milvus.milvus-querynode"): "same root-only Milvus image (UID 0)",
    ("CKV_K8S_22", "Deployment.milvus.milvus-querynode"):
        "the Milvus container writes its merged config into the image's /milvus/configs at start",
    ("CKV_K8S_35", "Deployment.milvus.milvus-querynode"):
        "Milvus 2.3 reads the S3 key pair it signs with only from milvus.yaml or MINIO_* environment "
        "variables; the env comes from the Secret segment-cache, never from values",
    ("CKV_K8S_38", "Deployment.milvus-scaler.milvus-scaler"):
        "external-metrics mode only (M5): the token reads the front-proxy CA from "
        "kube-system/extension-apiserver-authentication (a Role with get on that one ConfigMap); the base and "
        "keda renders keep automountServiceAccountToken: false, asserted in test_manifests_combinations.py",
}
# Checks the brief names; they must have run and passed on the resources we fully own.
REQUIRED_CHECKS = {
    "CKV_K8S_23": "run as non-root",
    "CKV_K8S_22": "read-only root filesystem",
    "CKV_K8S_20": "no privilege escalation",
    "CKV_K8S_10": "CPU requests", "CKV_K8S_11": "CPU limits",
    "CKV_K8S_12": "memory requests", "CKV_K8S_13": "memory limits",
    "CKV_K8S_14": "image tag fixed, not latest or blank",
    "CKV_K8S_37": "capabilities dropped", "CKV_K8S_28": "no NET_RAW",
}
SIDECAR_ONLY_NAME = "milvus-querynode-segment-cache-only"

# ------------------------------------------------------------------ the pinned Milvus chart's values keys
# Chart zilliztech/milvus-helm `milvus` 4.1.15 (appVersion 2.3.5), commit bf062dd (docs/eks.md pins it), and
# its subchart bitnami etcd 6.3.3. The key list is copied from the chart's values.yaml and the templates that
# read them: charts/milvus/templates/{querynode,proxy,datanode,indexnode,mixcoord}-deployment.yaml
# (`<component>.{enabled,replicas,resources,nodeSelector,affinity,tolerations,extraEnv,disk.enabled}`),
# _helpers.tpl (serviceAccount.*, annotations), config.tpl (externalS3.*, externalKafka.*, log.*, minio/pulsar/
# kafka .enabled), configmap.yaml (extraConfigFiles), servicemonitor.yaml (metrics.*), requirements.yaml
# (etcd.enabled), and bitnami etcd's templates/statefulset.yaml and pdb.yaml (etcd.*). The template text was
# read at CHART_TEMPLATE_COMMIT (the stored version of those files; the index has no copy at bf062dd):
# the keys used here are read the same way there. CHART_NO_OPS are keys that 4.1.15 has no template for
# (topologySpreadConstraints arrived in 2f452bc, 2024-12-24, chart 4.2.x; the `*.hpa` templates and
# `pulsarv3` later still): setting them does nothing.
CHART_VERSION = "4.1.15"
CHART_COMMIT = "bf062dd"
CHART_TEMPLATE_COMMIT = "0535fc8330fdcaac189a61a67a1dde7f5e789f8c"
CHART_COMPONENT = {"mixCoordinator": "mixcoord", "proxy": "proxy", "queryNode": "querynode",
                   "indexNode": "indexnode", "dataNode": "datanode"}
_COMPONENT_KEYS = ("enabled", "replicas", "resources", "nodeSelector", "affinity", "tolerations", "extraEnv")
CHART_KEYS = {
    "cluster.enabled",
    "image.all.repository", "image.all.tag", "image.all.pullPolicy",
    "serviceAccount.create", "serviceAccount.name",
    "metrics.enabled", "metrics.serviceMonitor.enabled", "metrics.serviceMonitor.interval",
    "metrics.serviceMonitor.scrapeTimeout", "metrics.serviceMonitor.additionalLabels",
    "annotations", "log.level", "log.format", "extraConfigFiles",
    "minio.enabled",
    *(f"externalS3.{k}" for k in ("enabled", "host", "port", "useSSL", "bucketName", "rootPath", "useIAM",
                                    "cloudProvider", "iamEndpoint", "region", "useVirtualHost", "accessKey",
                                    "secretKey")),
    "pulsar.enabled", "kafka.enabled",
    "externalKafka.enabled", "externalKafka.brokerList", "externalKafka.securityProtocol",
    "externalKafka.sasl.mechanisms", "externalKafka.sasl.username", "externalKafka.sasl.password",
    *(f"{c}.{k}" for c in CHART_COMPONENT for k in _COMPONENT_KEYS),
    "mixCoordinator.activeStandby.enabled", "queryNode.disk.enabled", "indexNode.disk.enabled",
    "attu.enabled",
    # bitnami etcd 6.3.3
    "etcd.enabled", "etcd.replicaCount", "etcd.pdb.create", "etcd.pdb.minAvailable", "etcd.affinity",
    "etcd.persistence.enabled", "etcd.persistence.storageClass", "etcd.persistence.size", "etcd.resources",
    "etcd.autoCompactionMode", "etcd.autoCompactionRetention", "etcd.extraEnvVars",
}
# Keys whose value the chart passes through whole (toYaml): not descended into.
CHART_OPAQUE = {"annotations", "extraConfigFiles", "metrics.serviceMonitor.additionalLabels"}
CHART_OPAQUE_LEAVES = {"resources", "nodeSelector", "affinity", "tolerations", "extraEnv", "extraEnvVars"}
CHART_NO_OPS = {"topologySpreadConstraints", *(f"{c}.topologySpreadConstraints" for c in CHART_COMPONENT),
                "etcd.topologySpreadConstraints", *(f"{c}.hpa" for c in CHART_COMPONENT), "pulsarv3"}


# ------------------------------------------------------------------------------------------------ helpers

def load_yaml(path: Path):
    return yaml.safe_load(path.read_text())


def kubectl() -> str:
    path = shutil.which("kubectl")
    if not path:
        pytest.fail("kubectl not found: install kubectl (it provides `kubectl kustomize`)")
    return path


def kustomization_file(d: Path) -> Path | None:
    for name in ("kustomization.yaml", "kustomization.yml", "Kustomization"):
        if (d / name).is_file():
            return d / name
    return None


# Kustomizations that are Helm post-renderers: their input (the chart's rendered output) is piped in
# at `helm install` time, so they cannot be built on their own; each is rendered by its own test.
POST_RENDERERS = {
    "segment-cache/helm/post-render": "segment-cache's Helm post-renderer (all.yaml is the chart output at "
                                      "install time); rendered with a sample in test_segment_cache_manifests.py",
}


def buildable_kustomizations() -> list[Path]:
    """Every kustomization under manifests/ that can be built on its own (Components and Helm
    post-renderers, listed in POST_RENDERERS with their reason, cannot)."""
    out = []
    for f in sorted(MANIFESTS.rglob("kustomization.y*ml")):
        doc = load_yaml(f) or {}
        if doc.get("kind") == "Component" or str(f.parent.relative_to(MANIFESTS)) in POST_RENDERERS:
            continue
        out.append(f.parent)
    return out


def missing_components(d: Path, seen: set | None = None) -> list[str]:
    """Component directories referenced (directly or through referenced kustomizations) that do not exist."""
    seen = seen if seen is not None else set()
    if d in seen:
        return []
    seen.add(d)
    doc = load_yaml(kustomization_file(d)) or {}
    missing = []
    for entry in (doc.get("resources") or []) + (doc.get("components") or []):
        target = (d / entry).resolve()
        if "://" in entry:
            continue
        if not target.exists():
            if "components" in Path(entry).parts:
                missing.append(str(target.relative_to(REPO)))
            continue
        if target.is_dir() and kustomization_file(target):
            missing += missing_components(target, seen)
    return missing


@functools.lru_cache(maxsize=None)
def render(d: Path) -> tuple:
    proc = subprocess.run([kubectl(), "kustomize", str(d)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"kubectl kustomize {d.relative_to(REPO)} failed:\n{proc.stderr}"
    docs = tuple(doc for doc in yaml.safe_load_all(proc.stdout) if doc)
    assert docs, f"kubectl kustomize {d.relative_to(REPO)} rendered nothing"
    return docs


def find(docs, kind: str, name: str, namespace: str | None = None) -> dict:
    hits = [x for x in docs if x["kind"] == kind and x["metadata"]["name"] == name
            and (namespace is None or x["metadata"].get("namespace") == namespace)]
    assert len(hits) == 1, f"expected one {kind} {namespace}/{name}, found {len(hits)}"
    return hits[0]


def env_map(container: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def node_groups() -> dict:
    """Node-group name (label value) -> {labels, taints}; from the eksctl config when present."""
    if not EKSCTL_CONFIG.exists():
        return CONTRACT_NODE_GROUPS
    cfg = load_yaml(EKSCTL_CONFIG)
    groups = {}
    for ng in (cfg.get("nodeGroups") or []) + (cfg.get("managedNodeGroups") or []):
        labels = ng.get("labels") or {}
        taints = ng.get("taints") or []
        if isinstance(taints, dict):  # eksctl's older map form: key: "value:effect"
            taints = [{"key": k, "value": v.split(":")[0], "effect": v.split(":")[1]} for k, v in taints.items()]
        if NODE_GROUP_LABEL in labels:
            groups[labels[NODE_GROUP_LABEL]] = {"labels": labels, "taints": taints}
    assert groups, f"{EKSCTL_CONFIG.relative_to(REPO)} has no node group labelled {NODE_GROUP_LABEL}"
    return groups


def eksctl_roles() -> dict[str, tuple[str, str]]:
    """IAM role name -> (namespace, service account) for the IRSA roles eksctl creates (iam.serviceAccounts)."""
    cfg = load_yaml(EKSCTL_CONFIG)
    return {sa["roleName"]: (sa["metadata"]["namespace"], sa["metadata"]["name"])
            for sa in cfg["iam"]["serviceAccounts"]}


def tolerates(tolerations: list[dict], taint: dict) -> bool:
    """Kubernetes toleration matching (core/v1 Toleration.ToleratesTaint)."""
    for t in tolerations or []:
        if t.get("effect") and t["effect"] != taint["effect"]:
            continue
        op = t.get("operator", "Equal")
        if op == "Exists" and (not t.get("key") or t["key"] == taint["key"]):
            return True
        if op == "Equal" and t.get("key") == taint["key"] and t.get("value", "") == taint.get("value", ""):
            return True
    return False


def values() -> dict:
    return load_yaml(VALUES_FILE)


def post_rendered_querynode() -> dict:
    return find(render(POST_RENDER), "Deployment", "milvus-querynode")


def containers_by_name(pod_spec: dict) -> dict:
    return {c["name"]: c for c in pod_spec.get("initContainers", []) + pod_spec.get("containers", [])}


def segment_cache_config() -> dict:
    return load_yaml(EKS / "segment-cache-config.yaml")


# ---------------------------------------------------------------------------- render and schema validation

def check_crd(doc: dict, where: str) -> None:
    """Structural checks for CustomResources that kubernetes-validate has no schema for."""
    kind = doc["kind"]
    assert doc.get("metadata", {}).get("name"), f"{where}: {kind} without metadata.name"
    spec = doc.get("spec")
    assert isinstance(spec, dict), f"{where}: {kind} {doc['metadata']['name']} has no spec object"
    if kind == "ServiceMonitor":
        assert spec.get("selector", {}).get("matchLabels"), f"{where}: ServiceMonitor without selector"
        assert spec.get("endpoints") and all(e.get("port") for e in spec["endpoints"]), where
    elif kind == "PodMonitor":
        assert spec.get("selector", {}).get("matchLabels"), f"{where}: PodMonitor without selector"
        assert spec.get("podMetricsEndpoints") and all(e.get("port") for e in spec["podMetricsEndpoints"]), where
    elif kind == "PrometheusRule":
        assert spec.get("groups") and all(g.get("name") and g.get("rules") for g in spec["groups"]), where
    elif kind in ("ScaledObject", "ScaledJob"):
        target = spec.get("scaleTargetRef") if kind == "ScaledObject" else spec.get("jobTargetRef")
        assert target, f"{where}: {kind} without its target ref"
        assert spec.get("triggers") and all(t.get("type") for t in spec["triggers"]), f"{where}: triggers"
    elif kind == "Certificate":
        assert spec.get("secretName") and spec.get("issuerRef", {}).get("name"), f"{where}: Certificate"
    elif kind in ("Issuer", "ClusterIssuer"):
        assert spec.get("ca") or "selfSigned" in spec, f"{where}: {kind} must be ca or selfSigned"
    elif kind == "CapacityBuffer":
        errors = capacity_buffer_errors(doc)
        assert not errors, f"{where}: " + "; ".join(errors)


# The CapacityBuffer API's fields as this project wrote them down from the upstream CRD (the file says where from).
CAPACITY_BUFFER_API = REPO / "tests" / "fixtures" / "capacitybuffer-v1beta1.yaml"


def strict(schema: dict) -> dict:
    """The CRD schema as `kubectl --validate=strict` applies it: an unknown field is an error (the API server
    would prune it silently), except under metadata and free-form maps."""
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {k: (v if k == "metadata" else strict(v)) for k, v in out["properties"].items()}
        out.setdefault("additionalProperties", False)
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = strict(out[key])
    return out


def capacity_buffer_errors(doc: dict) -> list[str]:
    """A CapacityBuffer against the API's schema (tests/fixtures/capacitybuffer-v1beta1.yaml, jsonschema), plus the
    CRD's two CEL rules (x-kubernetes-validations upstream, which jsonschema cannot evaluate) written out."""
    import jsonschema
    api = load_yaml(CAPACITY_BUFFER_API)
    assert doc["apiVersion"] == f"{api['group']}/{api['version']}", doc["apiVersion"]
    assert doc["kind"] == api["kind"], doc["kind"]
    schema = strict(api["schema"])
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}"
              for e in jsonschema.Draft7Validator(schema).iter_errors(doc)]
    spec = doc.get("spec") or {}
    if "podTemplateRef" in spec and not ("replicas" in spec or "limits" in spec):
        errors.append("spec: a podTemplateRef needs replicas or limits (CRD rule)")
    if "podTemplateRef" in spec and "scalableRef" in spec:
        errors.append("spec: podTemplateRef and scalableRef together (CRD rule)")
    return errors


@pytest.mark.parametrize("kdir", buildable_kustomizations(), ids=lambda p: str(p.relative_to(MANIFESTS)))
def test_kustomization_renders_and_validates_strict(kdir: Path):
    missing = missing_components(kdir)
    if missing:
        pytest.skip(f"component(s) not on this branch yet (built by other engineers): {', '.join(missing)}")
    import kubernetes_validate
    docs = render(kdir)
    errors = []
    for doc in docs:
        where = f"{kdir.relative_to(REPO)}: {doc.get('kind')} {doc.get('metadata', {}).get('name')}"
        if (doc.get("apiVersion"), doc.get("kind")) in CRD_KINDS:
            check_crd(doc, where)
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError as e:
            errors.append(f"{where}: no schema ({e}); a CustomResource must be listed in CRD_KINDS with a reason")
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{where}: {e.message} at {'/'.join(map(str, e.path))}")
    assert not errors, "\n".join(errors)


def test_eks_overlay_has_the_two_scaling_modes_as_components():
    examples = {"external-metrics": "../../examples", "keda": "../../examples/keda"}
    for mode in ("external-metrics", "keda"):
        doc = load_yaml(MANIFESTS / "overlays" / f"eks-{mode}" / "kustomization.yaml")
        assert doc["resources"] == ["../eks", examples[mode]]
        assert doc["components"] == [f"../../components/{mode}"]
    eks = load_yaml(MANIFESTS / "overlays" / "eks" / "kustomization.yaml")
    assert eks["resources"] == ["../../base"], "milvus-scaler's overlay must not include manifests/eks (C3)"
    assert eks["components"] == ["../../components/node-groups", "../../components/grafana"]


# Kinds a milvus-scaler overlay may create in namespace milvus: the autoscaling objects of the Milvus
# components and KEDA's client credentials. Nothing the Milvus pods themselves need (service accounts,
# PDBs, Services), and never a Namespace: `kubectl delete -k <overlay>` must leave Milvus running.
SCALER_KINDS_IN_MILVUS = {"HorizontalPodAutoscaler", "ScaledObject", "TriggerAuthentication", "Certificate"}


@pytest.mark.parametrize("overlay", ["eks", "eks-external-metrics", "eks-keda", "external-metrics", "keda"])
def test_uninstalling_an_overlay_never_touches_namespace_milvus(overlay: str):
    docs = render(MANIFESTS / "overlays" / overlay)
    namespaces = sorted(d["metadata"]["name"] for d in docs if d["kind"] == "Namespace")
    assert namespaces == ["milvus-scaler"], f"{overlay} would delete namespaces {namespaces} on uninstall"
    in_milvus = sorted({d["kind"] for d in docs if d["metadata"].get("namespace") == MILVUS_NAMESPACE})
    assert set(in_milvus) <= SCALER_KINDS_IN_MILVUS, f"{overlay} owns {in_milvus} in namespace milvus"
    for d in render(EKS):
        assert d["kind"] != "Namespace", "manifests/eks must not own namespace milvus (kubectl delete -k eks)"
    ns = load_yaml(EKS / "namespace.yaml")
    assert ns["kind"] == "Namespace" and ns["metadata"]["name"] == MILVUS_NAMESPACE


@pytest.mark.parametrize("mode,kind", [("external-metrics", "HorizontalPodAutoscaler"), ("keda", "ScaledObject")])
def test_eks_modes_autoscale_every_component_the_values_leave_to_an_autoscaler(mode: str, kind: str):
    v = values()
    chart_names = {"proxy": "proxy", "queryNode": "querynode", "indexNode": "indexnode", "dataNode": "datanode"}
    left = {chart_names[c] for c in chart_names if v[c]["replicas"] == -1}
    assert left == set(chart_names.values())
    docs = render(MANIFESTS / "overlays" / f"eks-{mode}")
    scalers = [d for d in docs if d["kind"] == kind]
    targets = {d["spec"]["scaleTargetRef"]["name"]: d for d in scalers}
    assert set(targets) == {f"milvus-{c}" for c in left}, sorted(targets)
    for d in scalers:
        assert d["metadata"]["namespace"] == MILVUS_NAMESPACE
    minimum = (lambda d: d["spec"]["minReplicas"]) if kind == "HorizontalPodAutoscaler" else \
        (lambda d: d["spec"]["minReplicaCount"])
    for name in ("milvus-proxy", "milvus-datanode", "milvus-querynode"):
        assert minimum(targets[name]) >= 2, f"{name}: at least 2 replicas (no single point of failure)"


@pytest.mark.parametrize("mode", ["external-metrics", "keda"])
def test_serving_modes_run_two_replicas_with_a_pdb(mode: str):
    docs = render(MANIFESTS / "overlays" / f"eks-{mode}")
    dep = find(docs, "Deployment", "milvus-scaler", "milvus-scaler")
    assert dep["spec"]["replicas"] == 2
    pdb = find(docs, "PodDisruptionBudget", "milvus-scaler", "milvus-scaler")
    assert pdb["spec"]["minAvailable"] == 1
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    # node-groups ships in dry-run in the eks overlay: two replicas only plan, nothing writes the ASGs.
    cm = find(docs, "ConfigMap", "milvus-scaler-config", "milvus-scaler")
    assert yaml.safe_load(cm["data"]["node-groups.yaml"])["node_groups"]["mode"] == "dry-run"


def test_keda_mode_certificates_cover_the_service_and_the_client_secret():
    docs = render(MANIFESTS / "overlays" / "eks-keda")
    server = find(docs, "Certificate", "milvus-scaler-keda-tls", "milvus-scaler")
    svc = find(docs, "Service", "milvus-scaler", "milvus-scaler")
    assert f"{svc['metadata']['name']}.milvus-scaler.svc" in server["spec"]["dnsNames"]
    assert "server auth" in server["spec"]["usages"]
    dep = find(docs, "Deployment", "milvus-scaler", "milvus-scaler")
    secrets = {v["secret"]["secretName"] for v in dep["spec"]["template"]["spec"]["volumes"] if "secret" in v}
    assert server["spec"]["secretName"] in secrets
    client = find(docs, "Certificate", "milvus-scaler-keda-client", MILVUS_NAMESPACE)
    assert "client auth" in client["spec"]["usages"]
    auth = find(docs, "TriggerAuthentication", "milvus-scaler-mtls", MILVUS_NAMESPACE)
    assert {r["name"] for r in auth["spec"]["secretTargetRef"]} == {client["spec"]["secretName"]}
    # One CA signs both (ca.crt in each Secret is the other side's trust anchor).
    assert server["spec"]["issuerRef"] == client["spec"]["issuerRef"]
    assert client["spec"]["issuerRef"]["kind"] == "ClusterIssuer", "the two Secrets are in two namespaces"
    issuer = find(docs, "ClusterIssuer", client["spec"]["issuerRef"]["name"])
    ca = [d for d in docs if d["kind"] == "Certificate" and d["spec"].get("isCA")]
    assert [c["spec"]["secretName"] for c in ca] == [issuer["spec"]["ca"]["secretName"]]


def test_post_renderer_script_equals_kustomize_build():
    sample = (POST_RENDER / "helm-output.yaml").read_text()
    proc = subprocess.run(["bash", str(POST_RENDER / "post-render.sh")], input=sample, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert [d for d in yaml.safe_load_all(proc.stdout) if d] == list(render(POST_RENDER))


def test_monitors_point_at_named_ports_that_exist():
    pod_monitor = find(render(EKS), "PodMonitor", "milvus-segment-cache")
    qn = post_rendered_querynode()
    labels = qn["spec"]["template"]["metadata"]["labels"]
    assert pod_monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ports = {p["name"]: p["containerPort"] for c in containers_by_name(qn["spec"]["template"]["spec"]).values()
             for p in c.get("ports", [])}
    for ep in pod_monitor["spec"]["podMetricsEndpoints"]:
        assert ep["port"] in ports, f"PodMonitor port {ep['port']} not on the query-node pod: {ports}"
    assert ports["cache-metrics"] == int(SEGMENT_CACHE_TELEMETRY.rsplit(":", 1)[1])

    docs = render(MANIFESTS / "overlays" / "eks")
    sm = find(docs, "ServiceMonitor", "milvus-scaler", "milvus-scaler")
    services = [d for d in docs if d["kind"] == "Service" and d["metadata"].get("namespace") == "milvus-scaler"
                and sm["spec"]["selector"]["matchLabels"].items() <= d["metadata"].get("labels", {}).items()]
    assert services, "ServiceMonitor milvus-scaler selects no Service"
    assert {e["port"] for e in sm["spec"]["endpoints"]} <= {p["name"] for s in services for p in s["spec"]["ports"]}


def test_scaler_scrape_targets_resolve_to_headless_services_of_milvus_components():
    """Every dns+http scrape target in milvus-scaler's config names a headless Service in the eks overlay that
    selects the pods of one Milvus component on its metrics port."""
    from urllib.parse import urlsplit
    docs = render(MANIFESTS / "overlays" / "eks") + render(EKS)
    cm = find(docs, "ConfigMap", "milvus-scaler-config", "milvus-scaler")
    config = yaml.safe_load(cm["data"]["config.yaml"])
    chart_components = {"proxy", "querynode", "mixcoord", "indexnode", "datanode"}
    targets = [t for m in config["milvus"] for t in (m.get("scrape") or {}).get("targets", [])]
    dns_targets = [t for t in targets if t.startswith("dns+")]
    assert dns_targets, targets
    for target in dns_targets:
        url = urlsplit(target[len("dns+"):])
        name, ns = url.hostname.split(".")[:2]
        assert url.hostname == f"{name}.{ns}.svc.cluster.local", target
        svc = find(docs, "Service", name, ns)
        assert svc["spec"].get("clusterIP") == "None", f"{name}: not headless, DNS would give one VIP"
        assert url.port in {p["port"] for p in svc["spec"]["ports"]}, target
        assert svc["spec"]["selector"]["app.kubernetes.io/instance"] == "milvus"
        assert svc["spec"]["selector"]["component"] in chart_components, svc["spec"]["selector"]
    assert {m["namespace"] for m in config["milvus"]} == {MILVUS_NAMESPACE}


# --------------------------------------------------------------------------------------------- checkov

def in_release_namespace(docs) -> list:
    """Helm's output carries no namespace (the chart's templates set none); `helm install -n milvus` puts the
    objects there. Set it as the install would, for tools that read the files."""
    out = []
    for d in docs:
        d = copy.deepcopy(d)
        if d["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding", "ClusterIssuer", "APIService"):
            d["metadata"].setdefault("namespace", MILVUS_NAMESPACE)
        out.append(d)
    return out


def sidecar_only_deployment() -> dict:
    """The post-rendered query-node Deployment reduced to the containers this project owns."""
    d = in_release_namespace([post_rendered_querynode()])[0]
    d["metadata"]["name"] = SIDECAR_ONLY_NAME
    spec = d["spec"]["template"]["spec"]
    owned = [c for c in spec["initContainers"] if c["name"].startswith("segment-cache")]
    sidecar = [c for c in owned if c.get("restartPolicy") == "Always"]
    assert len(owned) == 1 and len(sidecar) == 1, [c["name"] for c in owned]
    spec["initContainers"] = [c for c in owned if c not in sidecar]
    main = copy.deepcopy(sidecar[0])
    del main["restartPolicy"]
    spec["containers"] = [main]
    return d


@pytest.fixture(scope="module")
def checkov_results(tmp_path_factory) -> list[dict]:
    """One checkov run over every rendered kustomization, the post-rendered query nodes and the sidecar-only view."""
    if not CHECKOV.exists():
        pytest.fail("checkov not found in .venv-checkov: run `make setup` (tests/requirements-checkov.txt)")
    out = tmp_path_factory.mktemp("checkov-input")
    rendered = 0
    for kdir in buildable_kustomizations():
        if missing_components(kdir):
            continue
        name = str(kdir.relative_to(MANIFESTS)).replace("/", "__")
        (out / f"{name}.yaml").write_text(yaml.safe_dump_all(in_release_namespace(render(kdir)), sort_keys=False))
        rendered += 1
    assert rendered >= 4
    (out / "sidecar-only.yaml").write_text(yaml.safe_dump(sidecar_only_deployment(), sort_keys=False))
    # --skip-download keeps checkov offline; the proxy variables make any other attempt fail on loopback.
    env = dict(os.environ, BC_SKIP_MAPPING="TRUE", HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9",
               https_proxy="http://127.0.0.1:9", http_proxy="http://127.0.0.1:9", NO_PROXY="", no_proxy="")
    proc = subprocess.run([str(CHECKOV), "-d", str(out), "--framework", "kubernetes", "-o", "json",
                           "--skip-download"], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode in (0, 1), f"checkov failed to run:\n{proc.stderr[-3000:]}"
    report = json.loads(proc.stdout)
    reports = report if isinstance(report, list) else [report]
    assert reports and reports[0]["summary"]["parsing_errors"] == 0, reports
    return reports


def checkov_rows(reports, key):
    return [row for r in reports for row in r["results"][key]]


def test_checkov_required_checks_pass_on_owned_containers(checkov_results):
    resource = f"Deployment.{MILVUS_NAMESPACE}.{SIDECAR_ONLY_NAME}"
    passed = {r["check_id"] for r in checkov_rows(checkov_results, "passed_checks") if r["resource"] == resource}
    failed = {r["check_id"]: r["check_name"] for r in checkov_rows(checkov_results, "failed_checks")
              if r["resource"] == resource and r["check_id"] not in CHECKOV_GLOBAL_SKIPS}
    assert not failed, f"segment-cache containers fail: {failed}"
    missing = {c: what for c, what in REQUIRED_CHECKS.items() if c not in passed}
    assert not missing, f"required checks did not run/pass on {resource}: {missing}"
    # The milvus-scaler Deployment (base) is fully ours too.
    scaler = "Deployment.milvus-scaler.milvus-scaler"
    passed = {r["check_id"] for r in checkov_rows(checkov_results, "passed_checks") if r["resource"] == scaler}
    assert set(REQUIRED_CHECKS) <= passed, set(REQUIRED_CHECKS) - passed


def test_checkov_no_unexplained_failures(checkov_results):
    unexplained, used = [], set()
    for row in checkov_rows(checkov_results, "failed_checks"):
        if row["check_id"] in CHECKOV_GLOBAL_SKIPS:
            continue
        key = next((k for k in CHECKOV_RESOURCE_SKIPS
                    if k[0] == row["check_id"] and row["resource"].startswith(k[1])), None)
        if key:
            used.add(key)
        else:
            unexplained.append(f"{row['check_id']} {row['check_name']} on {row['resource']} ({row['file_path']})")
    assert not unexplained, "checkov failures without a listed reason:\n" + "\n".join(unexplained)
    assert used == set(CHECKOV_RESOURCE_SKIPS), f"stale skips (remove them): {set(CHECKOV_RESOURCE_SKIPS) - used}"


# ------------------------------------------------------------------------- Helm values and cross-references

def test_values_distributed_on_s3_through_irsa():
    v = values()
    assert v["cluster"]["enabled"] is True
    assert v["image"]["all"]["tag"] == "v2.3.5"
    assert v["minio"]["enabled"] is False
    s3 = v["externalS3"]
    assert s3["enabled"] and s3["useIAM"] and s3["useSSL"] and s3["cloudProvider"] == "aws"
    assert not s3.get("accessKey") and not s3.get("secretKey"), "no static keys: IRSA only"
    assert s3["host"] == f"s3.{s3['region']}.amazonaws.com"
    queues = [k for k in ("pulsar", "pulsarv3", "kafka", "externalKafka", "externalPulsar")
              if (v.get(k) or {}).get("enabled")]
    assert queues == ["externalKafka"], f"exactly one message queue expected, got {queues}"
    assert not v["externalKafka"]["sasl"].get("password"), "the MSK password never goes through Helm values"


def test_msk_password_only_from_a_secret_on_every_component():
    """M1: the chart renders externalKafka.sasl.password into ConfigMap `milvus`; it stays empty and every
    component reads KAFKA_SASLPASSWORD (Milvus's env source: `kafka.saslPassword`) from Secret milvus-kafka."""
    v = values()
    for comp in ("mixCoordinator", "proxy", "queryNode", "indexNode", "dataNode"):
        env = env_map({"env": v[comp]["extraEnv"]})
        assert env.get("KAFKA_SASLPASSWORD") == {"secretKeyRef": {"name": "milvus-kafka", "key": "password"}}, comp
    assert "--set externalKafka.sasl.password" not in VALUES_FILE.read_text(), "the install command must not --set it"


def zone_anti_affinity(affinity: dict, component_labels: dict, required: bool) -> bool:
    """True if `affinity` keeps pods with `component_labels` apart per zone (required or preferred)."""
    anti = (affinity or {}).get("podAntiAffinity") or {}
    if required:
        terms = anti.get("requiredDuringSchedulingIgnoredDuringExecution") or []
    else:
        terms = [t["podAffinityTerm"] for t in anti.get("preferredDuringSchedulingIgnoredDuringExecution") or []]
    return any(t["topologyKey"] == "topology.kubernetes.io/zone"
               and t["labelSelector"]["matchLabels"] == component_labels for t in terms)


def test_values_etcd_three_members_zone_spread():
    etcd = values()["etcd"]
    assert etcd["replicaCount"] == 3
    assert etcd["pdb"]["create"] and etcd["pdb"]["minAvailable"] == 2
    # bitnami etcd 6.3.3: `affinity` replaces the presets; required per zone, so one zone holds one member.
    assert zone_anti_affinity(etcd["affinity"], {"app.kubernetes.io/name": "etcd",
                                                 "app.kubernetes.io/instance": "milvus"}, required=True)
    assert "podAntiAffinityPreset" not in etcd, "ignored when affinity is set: do not pretend it applies"


def test_values_components_resources_replicas_and_spread():
    v = values()
    for comp in ("proxy", "queryNode", "indexNode", "dataNode", "mixCoordinator"):
        c = v[comp]
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{comp}.resources.{kind}"
        labels = {"app.kubernetes.io/instance": "milvus", "component": CHART_COMPONENT[comp]}
        assert zone_anti_affinity(c["affinity"], labels, required=False), comp
    for comp in ("proxy", "queryNode", "indexNode", "dataNode"):
        assert v[comp]["replicas"] == -1, f"{comp}.replicas must be left to the HPA/KEDA"

    def image_tags(node, path=""):
        if isinstance(node, dict):
            if "repository" in node and path.endswith("image") or path.endswith("image.all"):
                yield path, node.get("tag")
            for k, child in node.items():
                yield from image_tags(child, f"{path}.{k}" if path else k)

    tags = dict(image_tags(v))
    assert "image.all" in tags, tags
    bad = {p: t for p, t in tags.items() if not t or str(t) == "latest"}
    assert not bad, f"images without a fixed tag: {bad}"


def test_values_node_selectors_and_tolerations_match_node_groups():
    v, groups = values(), node_groups()
    for comp, group in COMPONENT_GROUPS.items():
        assert group in groups, f"node group {group} missing from {EKSCTL_CONFIG.name}: {sorted(groups)}"
        selector = v[comp]["nodeSelector"]
        assert selector == {NODE_GROUP_LABEL: group}
        assert selector.items() <= groups[group]["labels"].items(), f"{comp}: selector not on the group's labels"
        assert groups[group]["taints"], f"node group {group} has no taint: other pods would land on it"
        for taint in groups[group]["taints"]:
            assert tolerates(v[comp]["tolerations"], taint), f"{comp} does not tolerate {taint}"
        for other, spec in groups.items():  # and does not tolerate the other groups' taints
            if other != group:
                assert not any(tolerates(v[comp]["tolerations"], t) for t in spec["taints"]), (comp, other)


def test_node_termination_handler_runs_on_spot_groups_only():
    nth, groups = load_yaml(EKS / "node-termination-handler" / "values.yaml"), node_groups()
    assert nth["enableSpotInterruptionDraining"] is True and nth["enableSqsTerminationDraining"] is False
    term = nth["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    expr = term[0]["matchExpressions"][0]
    assert expr["key"] == NODE_GROUP_LABEL and expr["operator"] == "In" and sorted(expr["values"]) == sorted(SPOT_GROUPS)
    for group in SPOT_GROUPS:
        for taint in groups[group]["taints"]:
            assert tolerates(nth["tolerations"], taint)
    assert nth["podTerminationGracePeriod"] < nth["nodeTerminationGracePeriod"] <= 120


def test_service_accounts_exist_with_irsa_bound_to_trust_policies():
    v = values()
    qn = post_rendered_querynode()
    named = {(MILVUS_NAMESPACE, v["serviceAccount"]["name"]),
             (MILVUS_NAMESPACE, qn["spec"]["template"]["spec"]["serviceAccountName"]),
             (MILVUS_NAMESPACE, QUERYNODE_SA),
             ("milvus-scaler", "milvus-scaler")}
    assert v["serviceAccount"]["create"] is False, "service accounts come from manifests/eks, not the chart"
    assert qn["spec"]["template"]["spec"]["serviceAccountName"] == QUERYNODE_SA
    docs = render(MANIFESTS / "overlays" / "eks") + render(EKS)
    for ns, name in sorted(named):
        sa = find(docs, "ServiceAccount", name, ns)
        arn = (sa["metadata"].get("annotations") or {}).get(IRSA_ANNOTATION)
        m = ROLE_ARN.match(arn or "")
        assert m, f"ServiceAccount {ns}/{name}: IRSA annotation missing or malformed: {arn!r}"
        role = m["name"]
        assert role.startswith(ROLE_PREFIX), role
        if role in eksctl_roles():
            # eksctl creates the role and writes its trust policy for exactly this namespace/name.
            assert eksctl_roles()[role] == (ns, name), (role, eksctl_roles()[role])
            assert not (IAM / f"{role[len(ROLE_PREFIX):]}-trust.json").exists(), f"{role}: created twice"
            continue
        trust_file = IAM / f"{role[len(ROLE_PREFIX):]}-trust.json"
        assert trust_file.exists(), f"{name}: no trust policy {trust_file.relative_to(REPO)} for role {role}"
        trust = json.loads(trust_file.read_text())
        conditions = trust["Statement"][0]["Condition"]["StringEquals"]
        subs = [val for key, val in conditions.items() if key.endswith(":sub")]
        assert subs == [f"system:serviceaccount:{ns}:{name}"], (trust_file.name, subs)
        assert trust["Statement"][0]["Action"] == "sts:AssumeRoleWithWebIdentity"


def test_sidecar_listen_matches_milvus_minio_address():
    v, cfg = values(), segment_cache_config()
    env = env_map({"env": v["queryNode"]["extraEnv"]})
    assert f"{env['MINIO_ADDRESS']}:{env['MINIO_PORT']}" == cfg["listen"] == SEGMENT_CACHE_LISTEN
    assert env["MINIO_USESSL"] == "false" and env["MINIO_USEIAM"] == "false"
    assert cfg["telemetry"]["listen"] == SEGMENT_CACHE_TELEMETRY
    assert cfg["upstream"]["bucket"] == v["externalS3"]["bucketName"]
    assert cfg["upstream"]["region"] == v["externalS3"]["region"]
    assert cfg["cache"]["dir"] == SEGMENT_CACHE_DIR
    root = v["externalS3"]["rootPath"].strip("/") + "/"
    assert all(p.startswith(root) for p in cfg["warm"]["prefixes"])
    # Milvus signs with the key pair the sidecar checks: both come from the Secret segment-cache.
    assert env["MINIO_ACCESSKEYID"] == {"secretKeyRef": {"name": "segment-cache", "key": "access-key"}}
    assert env["MINIO_SECRETACCESSKEY"] == {"secretKeyRef": {"name": "segment-cache", "key": "secret-key"}}


def test_querynode_pod_has_sidecar_warm_nvme_and_graceful_stop():
    v = values()
    spec = post_rendered_querynode()["spec"]["template"]["spec"]
    c = containers_by_name(spec)
    init_names = [x["name"] for x in spec["initContainers"]]
    assert "segment-cache-warm" not in init_names, "a blocking warm init container (H4): warm runs in serve"
    sidecar = c["segment-cache"]
    assert sidecar["image"] == SEGMENT_CACHE_IMAGE
    assert sidecar["args"] == ["serve", "--config", SEGMENT_CACHE_CONFIG_PATH]
    assert sidecar["restartPolicy"] == "Always", "native sidecar: serving before Milvus starts"
    assert segment_cache_config()["warm"]["in_serve"] is True
    volumes = {vol["name"]: vol for vol in spec["volumes"]}
    for cont in (sidecar,):
        mounts = {m["mountPath"]: m["name"] for m in cont["volumeMounts"]}
        assert SEGMENT_CACHE_CONFIG_PATH.rsplit("/", 1)[0] in mounts
        nvme = next(p for p in mounts if SEGMENT_CACHE_DIR.startswith(p + "/"))
        assert volumes[mounts[nvme]]["hostPath"]["path"] == nvme == "/mnt/nvme"
    config_vol = volumes["segment-cache-config"]["secret"]
    assert config_vol["secretName"] == "segment-cache" and config_vol["items"][0]["path"] == "config.yaml"
    user = yaml.safe_load(v["extraConfigFiles"]["user.yaml"])
    assert spec["terminationGracePeriodSeconds"] > user["queryNode"]["gracefulStopTimeout"] > 0
    assert spec["automountServiceAccountToken"] is False


def test_post_render_sample_matches_values():
    """The committed chart sample must render what milvus-values.yaml asks of the chart."""
    v = values()["queryNode"]
    sample = find([d for d in yaml.safe_load_all((POST_RENDER / "helm-output.yaml").read_text()) if d],
                  "Deployment", "milvus-querynode")
    spec = sample["spec"]["template"]["spec"]
    qn = containers_by_name(spec)["querynode"]
    assert qn["env"] == v["extraEnv"]
    assert qn["resources"] == v["resources"]
    assert qn["image"] == f"{values()['image']['all']['repository']}:{values()['image']['all']['tag']}"
    assert spec["nodeSelector"] == v["nodeSelector"]
    assert spec["tolerations"] == v["tolerations"]
    assert spec["affinity"] == v["affinity"]
    assert "topologySpreadConstraints" not in spec, "chart 4.1.x has no template for it"
    assert "securityContext" not in spec, "chart 4.1.x renders no pod securityContext"
    assert spec["serviceAccountName"] == values()["serviceAccount"]["name"]
    header = (POST_RENDER / "helm-output.yaml").read_text().split("apiVersion:")[0]
    assert "DERIVED BY HAND" in header and CHART_TEMPLATE_COMMIT in header and "querynode-deployment.yaml" in header
    # Exactly the pod-spec keys the template can render for our values (templates/querynode-deployment.yaml).
    assert set(spec) == {"serviceAccountName", "initContainers", "containers", "nodeSelector", "affinity",
                         "tolerations", "volumes"}, sorted(spec)


def values_paths(node, prefix=""):
    """Dotted paths of the values file, stopping at the keys the chart passes through whole (OPAQUE)."""
    for k, child in node.items():
        path = f"{prefix}.{k}" if prefix else k
        if isinstance(child, dict) and child and path not in CHART_OPAQUE and k not in CHART_OPAQUE_LEAVES:
            yield from values_paths(child, path)
        else:
            yield path


def test_values_keys_exist_in_the_pinned_chart():
    """Every key milvus-values.yaml sets is a key chart 4.1.15 reads (CHART_KEYS) and none is a known
    silent no-op of that version (CHART_NO_OPS)."""
    paths = sorted(values_paths(values()))
    unknown = [p for p in paths if p not in CHART_KEYS]
    assert not unknown, f"keys chart {CHART_VERSION} does not read (silent no-ops): {unknown}"
    no_ops = [p for p in paths if any(p == n or p.startswith(n + ".") for n in CHART_NO_OPS)]
    assert not no_ops, no_ops


def test_pdbs_cover_the_milvus_components():
    docs = render(EKS)
    pdbs = {d["spec"]["selector"]["matchLabels"]["component"]: d for d in docs if d["kind"] == "PodDisruptionBudget"}
    assert set(pdbs) == {"querynode", "indexnode", "datanode", "proxy", "mixcoord"}
    for comp, pdb in pdbs.items():
        assert pdb["metadata"]["namespace"] == MILVUS_NAMESPACE
        assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"] == "milvus"
        assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    assert pdbs["querynode"]["spec"]["maxUnavailable"] == 1
    sample_labels = post_rendered_querynode()["spec"]["template"]["metadata"]["labels"]
    assert pdbs["querynode"]["spec"]["selector"]["matchLabels"].items() <= sample_labels.items()


# ---------------------------------------------------------------------------------------------- IAM

@pytest.fixture(scope="module")
def moto_server():
    server = Moto()
    yield server
    server.stop()


def policy_files() -> list[Path]:
    return sorted(IAM.glob("*-policy.json"))


def test_iam_policies_accepted_by_moto_and_bound_to_roles(moto_server):
    iam = moto_server.client("iam")
    files = policy_files()
    assert {"milvus-s3-policy.json", "segment-cache-s3-policy.json"} <= {f.name for f in files}
    embedded = {sa["roleName"]: sa["attachPolicy"] for sa in load_yaml(EKSCTL_CONFIG)["iam"]["serviceAccounts"]}
    for f in files:
        doc = json.loads(f.read_text())
        arn = iam.create_policy(PolicyName=f.stem, PolicyDocument=json.dumps(doc))["Policy"]["Arn"]
        trust = IAM / f.name.replace("-policy.json", "-trust.json")
        role = ROLE_PREFIX + f.name[: -len("-policy.json")]
        if role in embedded:
            # M13: eksctl creates this role (iam.serviceAccounts) with this document and its own trust policy.
            assert embedded[role] == doc, f"{f.name} differs from its copy in {EKSCTL_CONFIG.name}"
            assert not trust.exists(), f"{trust.name}: a second, hand-made trust for a role eksctl creates"
            continue
        assert trust.exists(), f"{f.name}: no IRSA trust policy {trust.name}"
        iam.create_role(RoleName=role, AssumeRolePolicyDocument=trust.read_text())
        iam.attach_role_policy(RoleName=role, PolicyArn=arn)
        attached = iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]
        assert [p["PolicyArn"] for p in attached] == [arn]
    # moto's validator is real: a malformed document is refused.
    with pytest.raises(Exception, match="MalformedPolicyDocument"):
        iam.create_policy(PolicyName="broken", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3GetObject", "Resource": "*"}]}))


def parliament_findings(text: str) -> list:
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from parliament import analyze_policy_string
    policy = analyze_policy_string(text, include_community_auditors=True)
    return [(f.issue, f.detail, f.location) for f in policy.findings]


def test_iam_policies_pass_parliament():
    for f in policy_files():
        findings = parliament_findings(f.read_text())
        assert not findings, f"parliament on {f.name}: {findings}"
    # The linter is live: a misspelled action and a resource mismatch are reported.
    bad = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:GetObjekt", "Resource": "arn:aws:s3:::milvus-bucket/files/*"},
        {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::milvus-bucket/files/*"}]}
    issues = {i[0] for i in parliament_findings(json.dumps(bad))}
    assert {"UNKNOWN_ACTION", "RESOURCE_MISMATCH"} <= issues, issues


def statements(path: Path) -> list[dict]:
    return json.loads(path.read_text())["Statement"]


def as_list(x):
    return x if isinstance(x, list) else [x]


def test_s3_policies_are_least_privilege_on_the_prefix():
    v = values()
    bucket, root = v["externalS3"]["bucketName"], v["externalS3"]["rootPath"].strip("/")
    for name, must, must_not in (
            ("milvus-s3-policy.json", {"s3:GetObject", "s3:PutObject", "s3:DeleteObject"}, set()),
            ("segment-cache-s3-policy.json", {"s3:GetObject", "s3:PutObject"}, {"s3:DeleteObject"})):
        actions = set()
        for st in statements(IAM / name):
            assert st["Effect"] == "Allow"
            acts = as_list(st["Action"])
            assert not any("*" in a for a in acts), f"{name}: wildcard action {acts}"
            actions |= set(acts)
            for res in as_list(st["Resource"]):
                if acts == ["s3:ListBucket"]:
                    assert res == f"arn:aws:s3:::{bucket}"
                    prefixes = st["Condition"]["StringLikeIfExists"]["s3:prefix"]
                    assert all(p.startswith(root) or p.startswith("justforconnectioncheck") for p in prefixes)
                else:
                    assert res == f"arn:aws:s3:::{bucket}/{root}/*", f"{name}: {res} is wider than the root path"
        assert must <= actions and not (must_not & actions), (name, actions)


def test_s3_policies_enforced_by_moto_allow_the_prefix_and_nothing_else():
    """moto with IAM enforcement on (it checks actions and resources): each role's policy, attached to a user."""
    import boto3
    import requests
    from botocore.config import Config

    bucket, root = values()["externalS3"]["bucketName"], values()["externalS3"]["rootPath"]
    moto = Moto()
    try:
        admin = moto.client("iam")
        admin_s3 = moto.client("s3")
        admin_s3.create_bucket(Bucket=bucket)
        admin_s3.put_object(Bucket=bucket, Key="elsewhere/secret", Body=b"x")
        clients = {}
        for name in ("milvus-s3", "segment-cache-s3"):
            admin.create_user(UserName=name)
            arn = admin.create_policy(PolicyName=name, PolicyDocument=(IAM / f"{name}-policy.json").read_text())
            admin.attach_user_policy(UserName=name, PolicyArn=arn["Policy"]["Arn"])
            key = admin.create_access_key(UserName=name)["AccessKey"]
            clients[name] = boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1",
                                         aws_access_key_id=key["AccessKeyId"],
                                         aws_secret_access_key=key["SecretAccessKey"],
                                         config=Config(s3={"addressing_style": "path"}))
        assert requests.post(f"{moto.url}/moto-api/reset-auth", data=b"0", timeout=10).status_code == 200
        for name, c in clients.items():
            key = f"{root}/index_files/1/2/3/4/{name}"
            c.put_object(Bucket=bucket, Key=key, Body=b"segment")          # write (write-through for the cache)
            assert c.get_object(Bucket=bucket, Key=key)["Body"].read() == b"segment"
            assert c.head_object(Bucket=bucket, Key=key)["ContentLength"] == 7
            up = c.create_multipart_upload(Bucket=bucket, Key=f"{key}.mpu")
            c.abort_multipart_upload(Bucket=bucket, Key=f"{key}.mpu", UploadId=up["UploadId"])
            for call in (lambda: c.get_object(Bucket=bucket, Key="elsewhere/secret"),
                         lambda: c.put_object(Bucket=bucket, Key="elsewhere/x", Body=b"x"),
                         lambda: c.delete_bucket(Bucket=bucket)):
                with pytest.raises(Exception, match="AccessDenied"):
                    call()
        clients["milvus-s3"].delete_object(Bucket=bucket, Key=f"{root}/index_files/1/2/3/4/milvus-s3")
        with pytest.raises(Exception, match="AccessDenied"):  # query nodes never delete
            clients["segment-cache-s3"].delete_object(Bucket=bucket, Key=f"{root}/index_files/1/2/3/4/segment-cache-s3")
    finally:
        moto.stop()


# ---------------------------------------------------------------------------------------------- S3

def s3_doc(name: str) -> dict:
    return json.loads((S3 / name).read_text())


def test_bucket_configuration_accepted_by_moto(moto_server):
    s3 = moto_server.client("s3")
    bucket = values()["externalS3"]["bucketName"]
    s3.create_bucket(Bucket=bucket)
    s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=s3_doc("public-access-block.json"))
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=s3_doc("encryption.json"))
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration=s3_doc("versioning.json"))
    s3.put_bucket_ownership_controls(Bucket=bucket, OwnershipControls=s3_doc("ownership-controls.json"))
    s3.put_bucket_policy(Bucket=bucket, Policy=(S3 / "bucket-policy.json").read_text())
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration=s3_doc("lifecycle.json"))

    assert s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"] == s3_doc("public-access-block.json")
    rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    assert s3.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"] == s3_doc("ownership-controls.json")
    policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    assert policy["Statement"][0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    got = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
    assert set(got) == {r["ID"] for r in s3_doc("lifecycle.json")["Rules"]}
    assert got["milvus-backup-to-cold-tiers"]["Transitions"] == s3_doc("lifecycle.json")["Rules"][2]["Transitions"]
    # moto's lifecycle validation is live: ExpiredObjectDeleteMarker together with Days is refused, as S3 does.
    with pytest.raises(Exception, match="MalformedXML"):
        s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [
            {"ID": "bad", "Status": "Enabled", "Filter": {"Prefix": "x/"},
             "Expiration": {"Days": 1, "ExpiredObjectDeleteMarker": True}}]})


# Actions that act on current object versions (what Milvus reads) vs only on noncurrent versions, incomplete
# multipart uploads or expired delete markers (which Milvus never reads).
CURRENT_ACTIONS = ("Transitions", "Transition", "Expiration")
HARMLESS_ACTIONS = ("NoncurrentVersionExpiration", "NoncurrentVersionTransitions", "AbortIncompleteMultipartUpload")


def acts_on_current_versions(rule: dict) -> bool:
    transitions, expiration = CURRENT_ACTIONS[:2], CURRENT_ACTIONS[2]
    if any(rule.get(t) for t in transitions):
        return True
    exp = rule.get(expiration) or {}
    return "Days" in exp or "Date" in exp


def rule_matches(rule: dict, key: str, size: int, tags: dict) -> bool:
    """S3 lifecycle filter semantics: prefix AND tags AND object-size bounds."""
    f = rule.get("Filter", {"Prefix": rule.get("Prefix", "")})
    cond = f.get("And", f)
    if not key.startswith(cond.get("Prefix", "")):
        return False
    wanted = cond.get("Tags", []) + ([cond["Tag"]] if "Tag" in cond else [])
    if any(tags.get(t["Key"]) != t["Value"] for t in wanted):
        return False
    if "ObjectSizeGreaterThan" in cond and not size > cond["ObjectSizeGreaterThan"]:
        return False
    if "ObjectSizeLessThan" in cond and not size < cond["ObjectSizeLessThan"]:
        return False
    return True


def milvus_load_keys() -> list[tuple[str, int]]:
    """Keys Milvus 2.3.5 reads when it loads a collection: every object of the captured layout (index files,
    insert logs, stats logs), plus a delta log (read on load too; the capture had no deletes)."""
    keys = []
    for line in BUCKET_LAYOUT.read_text().splitlines():
        m = re.match(r"^\s+(\d+)\s+(\S+)$", line)
        if m:
            keys.append((m[2], int(m[1])))
    assert len(keys) == 84 and {k.split("/")[1] for k, _ in keys} == {"index_files", "insert_log", "stats_log"}
    keys.append(("files/delta_log/470691242109042850/470691242109042851/470691242109242867/470691242109242999", 4096))
    return keys


def test_lifecycle_never_touches_what_milvus_reads_on_load():
    rules = s3_doc("lifecycle.json")["Rules"]
    keys = milvus_load_keys()
    current = [r for r in rules if acts_on_current_versions(r)]
    assert current, "no rule moves cold objects at all"
    for rule in rules:
        if rule in current:
            hits = [k for k, size in keys if rule_matches(rule, k, size, tags={})]
            assert not hits, f"rule {rule['ID']} acts on objects Milvus reads on load: {hits[:3]}"
        else:
            assert set(rule) - {"ID", "Status", "Filter", "Prefix", "Expiration"} <= set(HARMLESS_ACTIONS), rule
            assert rule.get("Expiration", {}).keys() <= {"ExpiredObjectDeleteMarker"}, rule
    # Non-vacuous: the matcher does match what the cold-tier rule is meant for.
    backup = next(r for r in rules if r["ID"] == "milvus-backup-to-cold-tiers")
    assert rule_matches(backup, "backup/nightly/meta/collection_meta.json", 1024, {})
    assert not rule_matches({"Filter": {"Prefix": "files/insert_log/"}}, "files/index_files/x", 1, {})
    assert not rule_matches({"Filter": {"Tag": {"Key": "cold", "Value": "1"}}}, keys[0][0], keys[0][1], {})
    assert rule_matches({"Filter": {"Prefix": "files/"}}, keys[0][0], keys[0][1], {})


# ---------------------------------------------------------------------------------------------- docs

def test_apply_guide_names_every_manifest():
    guide = (REPO / "docs" / "eks.md").read_text()
    # Names relative to manifests/ (the guide works in a copy of it), or the full repo path.
    files = [p for d in (EKS, S3) for p in d.rglob("*") if p.is_file() and not fnmatch.fnmatch(p.name, "*.md")]
    files += [p for p in IAM.glob("*.json") if p.name.startswith(("milvus-s3-", "segment-cache-s3-"))
              or p.name.endswith("-trust.json")]
    files += [MANIFESTS / "overlays" / name for name in ("eks", "eks-external-metrics", "eks-keda")]
    files += [p for d in (MANIFESTS / "cluster", MANIFESTS / "node-groups") for p in d.iterdir() if p.is_file()]
    files += [IAM / "cluster-autoscaler-policy.json", IAM / "milvus-scaler-node-groups-policy.json"]
    missing = []
    for p in files:
        rel = p.relative_to(MANIFESTS)
        names = {str(p.relative_to(REPO)), str(rel), str(rel.relative_to(rel.parts[0])) if len(rel.parts) > 2 else ""}
        if not any(n and n in guide for n in names):
            missing.append(str(p.relative_to(REPO)))
    assert not missing, f"docs/eks.md does not mention: {missing}"


# --------------------------------------------------------------- real Milvus on the IAM policy, via env overrides

def test_milvus_runs_on_its_policy_through_the_minio_env_overrides(monkeypatch):
    """Real Milvus 2.3.5 against a moto server that enforces IAM (moto checks actions and resources; it ignores
    `StringLikeIfExists`). Milvus's own config points at a closed port with wrong keys; only the MINIO_*
    environment variables the Helm values give the query nodes (address/port/keys/no TLS/no IAM) can make it
    work. It must then create, insert, flush, index, load and search using only milvus-s3-policy.json."""
    import requests
    from harness import workload
    from harness.procs import free_port
    from harness.services import Milvus

    v = values()
    bucket, root = v["externalS3"]["bucketName"], v["externalS3"]["rootPath"]
    moto = Moto()
    milvus = None
    try:
        admin = moto.client("iam")
        admin.create_user(UserName="milvus")
        arn = admin.create_policy(PolicyName="milvus-s3", PolicyDocument=(IAM / "milvus-s3-policy.json").read_text())
        admin.attach_user_policy(UserName="milvus", PolicyArn=arn["Policy"]["Arn"])
        # moto quirk, not AWS: moto authorises HeadBucket as a made-up action "s3:HeadBucket" (moto/s3/responses.py
        # ACTION_MAP); AWS authorises HeadBucket with s3:ListBucket, which the policy grants. Alias it for moto only.
        alias = admin.create_policy(PolicyName="moto-headbucket-alias", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:HeadBucket",
                                                    "Resource": f"arn:aws:s3:::{bucket}"}]}))
        admin.attach_user_policy(UserName="milvus", PolicyArn=alias["Policy"]["Arn"])
        key = admin.create_access_key(UserName="milvus")["AccessKey"]
        moto.client("s3").create_bucket(Bucket=bucket)
        # From here on moto authenticates every request and authorises it against IAM policies.
        r = requests.post(f"{moto.url}/moto-api/reset-auth", data=b"0", timeout=10)
        assert r.status_code == 200, r.text

        import boto3
        from botocore.config import Config
        user_s3 = boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1",
                               aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"],
                               config=Config(s3={"addressing_style": "path"}))
        with pytest.raises(Exception, match="AccessDenied"):  # enforcement is on: outside the root path
            user_s3.put_object(Bucket=bucket, Key="elsewhere/probe", Body=b"x")

        env = env_map({"env": v["queryNode"]["extraEnv"]})
        overrides = {"MINIO_ADDRESS": env["MINIO_ADDRESS"], "MINIO_PORT": str(moto.port),
                     "MINIO_USESSL": env["MINIO_USESSL"], "MINIO_USEIAM": env["MINIO_USEIAM"],
                     "MINIO_ACCESSKEYID": key["AccessKeyId"], "MINIO_SECRETACCESSKEY": key["SecretAccessKey"]}
        for name, value in overrides.items():
            monkeypatch.setenv(name, value)
        closed = free_port()
        milvus = Milvus(s3={"port": closed, "bucket": bucket, "root_path": root,
                            "access_key": "wrong", "secret_key": "wrong"})
        workload.connect(milvus.uri)
        coll = workload.create_collection("eks_policy_e2e", rows=5_000)
        hits = coll.search([[0.5] * workload.DIM], "vec", {"metric_type": "L2", "params": {"nprobe": 16}}, limit=5)
        assert len(hits[0]) == 5
        # Milvus is done; switch enforcement off to inspect the bucket as admin (moto authorises ListObjectsV2
        # as a made-up "s3:ListObjectsV2" action and rejects boto3's v1 listing signature with encoding-type).
        r = requests.post(f"{moto.url}/moto-api/reset-auth", data=b"1000000", timeout=10)
        assert r.status_code == 200, r.text
        listed = moto.client("s3").list_objects_v2(Bucket=bucket, Prefix=f"{root}/")
        kinds = {o["Key"].split("/")[1] for o in listed.get("Contents", [])}
        assert {"insert_log", "index_files"} <= kinds, kinds
    finally:
        if milvus:
            milvus.stop()
        moto.stop()


def test_planner_pod_size_equals_what_the_query_node_pod_requests():
    """L2: the node-group planner packs `pod` per node; it must be the scheduler's view of the post-rendered
    query-node pod: containers plus native sidecars (init containers with restartPolicy Always)."""
    from kubernetes.utils import parse_quantity
    spec = post_rendered_querynode()["spec"]["template"]["spec"]
    running = spec["containers"] + [c for c in spec["initContainers"] if c.get("restartPolicy") == "Always"]
    docs = render(MANIFESTS / "overlays" / "eks")
    cm = find(docs, "ConfigMap", "milvus-scaler-config", "milvus-scaler")
    groups = [g for g in yaml.safe_load(cm["data"]["node-groups.yaml"])["node_groups"]["groups"]
              if g["name"].startswith("querynodes-")]
    assert len(groups) == 3, "one entry per zone's query-node group"
    for group in groups:
        for res in ("cpu", "memory"):
            total = sum(parse_quantity(c["resources"]["requests"][res]) for c in running)
            assert parse_quantity(str(group["pod"][res])) == total, (res, group["pod"][res], total)


def test_no_latency_trigger_is_divided_per_replica():
    """L1: a latency (or any other non-additive) signal must be a `Value` target: `AverageValue` divides it by the
    replica count, so desired = ceil(p99 / target) whatever the current size. The query-node ScaledObject's
    old p99 trigger is gone (59a43b7: search_demand, nq/s, which does add up per replica); this keeps it so."""
    per_replica = {"search_demand", "search_queue_depth", "index_pending_builds", "flush_backlog"}
    checked = 0
    for kdir in (MANIFESTS / "examples", MANIFESTS / "examples" / "keda"):
        for doc in render(kdir):
            if doc["kind"] == "ScaledObject":
                for trig in doc["spec"]["triggers"]:
                    signal = (trig.get("metadata") or {}).get("signal")
                    if signal:
                        checked += 1
                        assert trig.get("metricType") == "Value" or signal in per_replica, (doc["metadata"], trig)
                        assert "latency" not in signal and "p99" not in signal or trig["metricType"] == "Value"
            elif doc["kind"] == "HorizontalPodAutoscaler":
                for m in doc["spec"]["metrics"]:
                    if m["type"] == "External":
                        checked += 1
                        name, target = m["external"]["metric"]["name"], m["external"]["target"]
                        if "latency" in name or "p99" in name:
                            assert target["type"] == "Value", (doc["metadata"]["name"], name)
    assert checked >= 3


# ------------------------------------------------------------------------------ docs/eks.md as a procedure

def guide_sections() -> dict[str, str]:
    """`## ` heading -> its text, for docs/eks.md."""
    text = (REPO / "docs" / "eks.md").read_text()
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def guide_commands(text: str) -> list[str]:
    """The lines of the ```bash blocks, continuation lines joined."""
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    out = []
    for block in blocks:
        lines = (re.sub(r"\s+#\s.*$", "", line).strip() for line in block.replace("\\\n", " ").splitlines())
        out += [line for line in lines if line and not line.startswith("#")]
    return out


def test_guide_steps_are_in_order_and_each_ends_with_a_check():
    sections = guide_sections()
    steps = [h for h in sections if re.match(r"^\d+\. ", h)]
    assert [int(h.split(".")[0]) for h in steps] == list(range(len(steps))) and len(steps) >= 8, steps
    for h in steps:
        assert "Check" in sections[h], f"step {h!r} has no check"
    for h in ("Compatibility", "Uninstall", "Tests"):
        assert h in sections, h


def test_guide_commands_name_files_that_exist_in_the_manifests_copy():
    """Every file or directory a command passes (`file://`, `-f`, `-k`, `--values`, `< ...`) exists under
    manifests/ (the guide works in a copy of it), so the commands run as written."""
    cmds = guide_commands((REPO / "docs" / "eks.md").read_text())
    refs = []
    for c in cmds:
        refs += re.findall(r"file://([\w./-]+)", c)
        refs += re.findall(r"(?:-k|-f|--values|--post-renderer|<)\s+([a-z][\w./-]+)", c)
    refs = [r for r in refs if not r.startswith(("/tmp", "-"))]
    assert len(refs) >= 20, refs
    missing = sorted({r for r in refs if not (MANIFESTS / r).exists()})
    assert not missing, f"docs/eks.md names files the manifests copy does not have: {missing}"


def test_guide_installs_milvus_as_the_manifests_expect():
    """Namespace before `-k eks`, the gp3 class and the MSK Secret before Helm; chart 4.1.15 pinned exactly;
    the password never on the command line; one cluster name."""
    cmds = guide_commands((REPO / "docs" / "eks.md").read_text())
    text = "\n".join(cmds)

    def first(pattern: str) -> int:
        hits = [i for i, c in enumerate(cmds) if re.search(pattern, c)]
        assert hits, pattern
        return hits[0]

    helm = first(r"helm upgrade --install milvus milvus/milvus")
    assert first(r"kubectl apply -f eks/namespace\.yaml") < first(r"kubectl apply -k eks$") < helm
    assert first(r"kubectl apply -k cluster$") < helm
    assert first(r"create secret generic milvus-kafka .*password=") < helm
    assert first(r"create secret generic segment-cache") < helm
    assert f"--version {CHART_VERSION}" in cmds[helm]
    assert "awk" not in text, "pick the chart version by number, not by matching appVersion"
    assert "externalKafka.sasl.password" not in text
    assert first(r"eksctl create cluster -f node-groups/eksctl-cluster\.yaml") < first(r"aws iam create-role")
    assert re.search(r"CLUSTER=milvus-eks\b", text)
    for c in cmds:
        assert not re.search(r"--name (?!\$CLUSTER)\S+", c) or "create-role" in c or "--role-name" in c, c
    # The overlays install HPAs on CPU (proxy, data nodes): metrics-server comes before them.
    assert first(r"metrics-server/metrics-server") < first(r"kubectl apply -k overlays/eks-")
    assert first(r"jetstack/cert-manager") < first(r"kubectl apply -k overlays/eks-keda")


def test_guide_uninstall_touches_namespace_milvus_only_when_milvus_is_deleted():
    section = guide_sections()["Uninstall"]
    marker = section.index("only if you decide to delete Milvus")
    before, after = section[:marker], section[marker:]
    milvus = re.compile(r"-n milvus\b|namespace milvus\b|-k eks\b|eks/namespace\.yaml|delete pvc")
    for c in guide_commands(before):
        assert not milvus.search(c), f"runs before the user chose to delete Milvus: {c}"
    assert any("kubectl delete -k overlays/eks-" in c for c in guide_commands(before))
    assert any(milvus.search(c) for c in guide_commands(after))
    # The milvus-scaler overlays the first command deletes own nothing Milvus needs (C3, checked on the render).
    for overlay in ("eks-external-metrics", "eks-keda"):
        assert not [d for d in render(MANIFESTS / "overlays" / overlay)
                    if d["kind"] == "Namespace" and d["metadata"]["name"] == MILVUS_NAMESPACE]


def test_guide_compatibility_table():
    table = guide_sections()["Compatibility"]
    for needle in ("**>= 1.29** required", "native sidecar", "**4.1.15** exactly", "**>= 2.17**",
                   "Prometheus Operator", "metrics-server", "cert-manager", "Cluster Autoscaler"):
        assert needle in table, needle
    assert CHART_VERSION == "4.1.15"


def test_guide_documents_what_nth_imds_mode_does_not_cover():
    """L7: NTH stays in IMDS mode (no SQS queue), and the guide says which terminations it cannot drain."""
    nth = load_yaml(EKS / "node-termination-handler" / "values.yaml")
    assert nth["enableSqsTerminationDraining"] is False
    step = next(text for h, text in guide_sections().items() if h.startswith("5."))
    assert "does **not** see terminations" in step and "queue mode" in step
