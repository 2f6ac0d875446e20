"""The external-metrics manifests: `kubectl kustomize` renders the overlay and the HPA examples,
and every built-in kind passes `kubernetes-validate --strict` (offline schemas of Kubernetes 1.33).

CRD kinds: kubernetes-validate ships schemas for built-in kinds only and merely *warns* on
cert-manager's `Certificate`/`Issuer`. So the test splits the rendered stream explicitly: built-in
kinds go to kubernetes-validate (which must print no "Couldn't find schema" warning for them), and
the cert-manager documents are checked here against the fields cert-manager v1 requires, naming
every one that is skipped by the schema validator. Nothing is silently ignored.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from harness.services import tool
from harness.services import run_dir

REPO = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.33.0"
CERT_MANAGER = "cert-manager.io/v1"


def kustomize(path: str) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if not kubectl:
        raise RuntimeError("kubectl not found: install kubectl (it embeds kustomize)")
    out = subprocess.run([kubectl, "kustomize", str(REPO / path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def validate(docs: list[dict], name: str) -> None:
    builtin = [d for d in docs if d["apiVersion"] != CERT_MANAGER]
    path = run_dir("manifests") / f"{name}.yaml"
    path.write_text(yaml.safe_dump_all(builtin))
    out = subprocess.run([tool("kubernetes-validate"), "--strict", "-k", K8S_VERSION, str(path)],
                         capture_output=True, text=True, timeout=120)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert "Couldn't find schema" not in text, text
    assert text.count("passed for resource") == len(builtin), text


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def test_overlay_renders_and_validates():
    docs = kustomize("manifests/overlays/external-metrics")
    validate(docs, "external-metrics")

    [api] = by_kind(docs, "APIService")
    assert api["metadata"]["name"] == "v1beta1.external.metrics.k8s.io"
    assert api["spec"]["group"] == "external.metrics.k8s.io" and api["spec"]["version"] == "v1beta1"
    assert not api["spec"].get("insecureSkipTLSVerify"), "the APIService must verify TLS with caBundle"
    inject = api["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
    services = {s["metadata"]["name"]: s for s in by_kind(docs, "Service")}
    svc = services[api["spec"]["service"]["name"]]
    assert svc["metadata"]["namespace"] == api["spec"]["service"]["namespace"] == "milvus-scaler"
    [port] = svc["spec"]["ports"]
    assert port["port"] == api["spec"]["service"]["port"] == 443

    [deploy] = by_kind(docs, "Deployment")
    [container] = deploy["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports[port["targetPort"]] == 6443
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in deploy["spec"]["template"]["spec"]["volumes"]}

    # The configuration the pod gets names files that the mounts provide.
    [cm] = by_kind(docs, "ConfigMap")
    config = yaml.safe_load(cm["data"]["external-metrics.yaml"])
    assert list(config) == ["external_metrics"], "the component adds its own section only"
    assert container["args"][-2:] == ["--config", "/etc/milvus-scaler/external-metrics.yaml"], container["args"]
    em = config["external_metrics"]
    assert em["listen"].endswith(":6443")
    for file in (em["tls"]["cert_file"], em["tls"]["key_file"]):
        assert str(Path(file).parent) in mounts, (file, mounts)
    # M5: the front-proxy CA is read live from the cluster, not from a hand-copied ConfigMap.
    assert em["client_auth"] == {"client_ca": {"from_cluster": True, "refresh_interval": "60s"}}, em
    assert not any((v.get("configMap") or {}).get("name") == "milvus-scaler-front-proxy-ca" for v in volumes.values())
    tls_volume = volumes[mounts["/tls"]]

    # cert-manager documents (skipped by the schema validator, checked here).
    certs = {c["metadata"]["name"]: c for c in by_kind(docs, "Certificate")}
    issuers = {i["metadata"]["name"]: i for i in by_kind(docs, "Issuer")}
    assert set(certs) and set(issuers)
    for cert in certs.values():
        spec = cert["spec"]
        assert spec["secretName"] and spec["issuerRef"]["name"] in issuers, cert
        assert cert["metadata"]["namespace"] == "milvus-scaler"
    ns, name = inject.split("/")
    serving = certs[name]
    assert ns == serving["metadata"]["namespace"]
    assert serving["spec"]["secretName"] == tls_volume["secret"]["secretName"]
    assert f"{svc['metadata']['name']}.milvus-scaler.svc" in serving["spec"]["dnsNames"]
    for issuer in issuers.values():
        assert set(issuer["spec"]) & {"selfSigned", "ca"}, issuer
        if "ca" in issuer["spec"]:
            assert any(c["spec"].get("isCA") and c["spec"]["secretName"] == issuer["spec"]["ca"]["secretName"]
                       for c in certs.values())

    # RBAC: only what is used. milvus-scaler makes no TokenReview/SubjectAccessReview (no auth-delegator); it
    # reads one ConfigMap, kube-system/extension-apiserver-authentication (the front-proxy CA, M5), with `get` on
    # that name only, so this mode mounts the API token; the HPA controller may read the served metrics.
    bindings = by_kind(docs, "ClusterRoleBinding") + by_kind(docs, "RoleBinding")
    refs = {(b["roleRef"]["kind"], b["roleRef"]["name"], b["metadata"].get("namespace")) for b in bindings}
    assert ("ClusterRole", "system:auth-delegator", None) not in refs
    assert ("Role", "extension-apiserver-authentication-reader", "kube-system") not in refs, "grants list/watch too"
    assert ("ClusterRole", "milvus-scaler-external-metrics-reader", None) in refs
    [role] = [r for r in by_kind(docs, "Role") if r["metadata"]["namespace"] == "kube-system"]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["configmaps"],
                              "resourceNames": ["extension-apiserver-authentication"], "verbs": ["get"]}], role
    [binding] = [b for b in by_kind(docs, "RoleBinding") if b["roleRef"]["name"] == role["metadata"]["name"]]
    assert binding["metadata"]["namespace"] == "kube-system"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": deploy["spec"]["template"]["spec"]["serviceAccountName"],
                                    "namespace": "milvus-scaler"}]
    assert not by_kind(docs, "ClusterRole") or all(
        "configmaps" not in (rule.get("resources") or []) for c in by_kind(docs, "ClusterRole") for rule in c["rules"])
    assert deploy["spec"]["template"]["spec"]["automountServiceAccountToken"] is True
    # NetworkPolicy: the aggregator's port is admitted (by TLS client certificate, any source).
    policies = by_kind(docs, "NetworkPolicy")
    ports = {p["port"] for pol in policies for rule in pol["spec"].get("ingress", []) for p in rule.get("ports", [])}
    assert {"external-metrics", "telemetry"} <= ports, ports


def test_configuration_in_the_overlay_is_accepted_by_check_config(tmp_path):
    """The ConfigMap's config.yaml passes `milvus-scaler check-config` (the real parser)."""
    from harness.services import cargo_bin
    [cm] = by_kind(kustomize("manifests/overlays/external-metrics"), "ConfigMap")
    argv = [cargo_bin("milvus-scaler"), "check-config"]
    for key in ("config.yaml", "external-metrics.yaml"):
        (tmp_path / key).write_text(cm["data"][key])
        argv += ["--config", str(tmp_path / key)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr


def test_hpa_example_renders_and_validates():
    docs = kustomize("manifests/examples")
    validate(docs, "examples")
    [hpa] = [d for d in by_kind(docs, "HorizontalPodAutoscaler") if d["metadata"]["name"] == "milvus-querynode"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    metrics = {m["external"]["metric"]["name"]: m["external"] for m in hpa["spec"]["metrics"]}
    # The load-proportional demand signal, per pod; no `Value` target, which multiplies the current
    # replicas by value/target and runs away on any backlog (docs/scaling-policy.md).
    assert list(metrics) == ["milvus_search_demand"]
    assert metrics["milvus_search_demand"]["target"]["type"] == "AverageValue"
    for m in metrics.values():
        assert m["metric"]["selector"]["matchLabels"]["milvus"]
    up, down = hpa["spec"]["behavior"]["scaleUp"], hpa["spec"]["behavior"]["scaleDown"]
    assert up["stabilizationWindowSeconds"] < down["stabilizationWindowSeconds"]
    fastest_up = max(p["value"] for p in up["policies"] if p["type"] == "Pods")
    slowest_down = max(p["value"] for p in down["policies"] if p["type"] == "Pods")
    assert fastest_up > slowest_down


def test_hpa_reader_role_names_exactly_the_served_metrics():
    """The HPA's read grant lists the metric names (no wildcard): they must be the catalogue's."""
    import re
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[2]
    catalogue = (root / "crates/milvus-signals/src/catalogue.rs").read_text()
    names = {f"milvus_{n}" for n in re.findall(r'Signal::\w+ => "([a-z0-9_]+)"', catalogue)}
    assert len(names) == 12, names
    docs = list(yaml.safe_load_all((root / "manifests/components/external-metrics/rbac.yaml").read_text()))
    role = next(d for d in docs if d["kind"] == "ClusterRole")
    granted = {r for rule in role["rules"] for r in rule["resources"]}
    assert granted == names
