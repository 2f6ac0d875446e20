"""Node headroom's manifests (components/headroom, components/headroom-capacity-buffer), with real tools: `kubectl
kustomize`, kubernetes-validate (strict, offline OpenAPI), jsonschema against the CapacityBuffer API's fields (as
tests/fixtures/capacitybuffer-v1beta1.yaml writes them down from kubernetes/autoscaler's CRD), and the real `milvus-scaler check-config`. No API server runs here: what milvus-scaler sends
to one is checked in crates/headroom-holder/tests/fake_apiserver.rs (a fake API server, which says so); here the
RBAC granted is checked to be exactly what those calls need, and the bodies against the real schemas.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from test_manifests_combinations import build, check_config, config_files, one, validate_strict  # noqa: E402
from test_manifests_eks import (CAPACITY_BUFFER_API, MANIFESTS, REPO, capacity_buffer_errors,  # noqa: E402
                                post_rendered_querynode)

PLACEHOLDER = ["headroom"]
BUFFER = ["headroom", "headroom-capacity-buffer"]


def headroom_section(docs) -> dict:
    files = config_files(docs)
    (text,) = [t for p, t in files.items() if p.endswith("/headroom.yaml")]
    return yaml.safe_load(text)["headroom"]


def role_rules(docs, name: str = "milvus-scaler-headroom", namespace: str = "milvus") -> set[tuple]:
    """(apiGroup, resource, resourceName or "*", verb) of every grant of the Role."""
    role = one(docs, "Role", name, namespace)
    out = set()
    for r in role["rules"]:
        for g in r["apiGroups"]:
            for res in r["resources"]:
                for name in r.get("resourceNames") or ["*"]:
                    for verb in r["verbs"]:
                        out.add((g, res, name, verb))
    return out


def calls(h: dict) -> set[tuple]:
    """(apiGroup, resource, name, verb) of every call the configured holder and the workload read make
    (crates/headroom-holder/src/k8s.rs: get_scale/patch_scale, get/patch of the CapacityBuffer; the requests
    are pinned by method and path in fake_apiserver.rs)."""
    w = h["workload"]
    out = {("apps", "deployments/scale", w["deployment"], "get")}
    holder = h["holder"]
    if "placeholder" in holder:
        name = holder["placeholder"]["deployment"]
        out |= {("apps", "deployments/scale", name, v) for v in ("get", "patch")}
    elif "capacity_buffer" in holder:
        name = holder["capacity_buffer"]["name"]
        out |= {("autoscaling.x-k8s.io", "capacitybuffers", name, v) for v in ("get", "patch")}
    return out


@pytest.mark.parametrize("components", [PLACEHOLDER, BUFFER], ids=["placeholder", "capacity-buffer"])
def test_rbac_is_exactly_what_the_holder_calls(components):
    docs = build("overlays/keda", components)
    validate_strict(docs, "+".join(components))
    h = headroom_section(docs)
    assert role_rules(docs) == calls(h)
    binding = one(docs, "RoleBinding", "milvus-scaler-headroom", "milvus")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": "milvus-scaler-headroom"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "milvus-scaler", "namespace": "milvus-scaler"}]
    # Nothing cluster-wide for headroom, and the objects the holder names are the ones shipped.
    assert not [x for x in docs if x["kind"] in ("ClusterRole", "ClusterRoleBinding") and "headroom" in
                x["metadata"]["name"]]
    holder = h["holder"]
    if "placeholder" in holder:
        ref = holder["placeholder"]
        one(docs, "Deployment", ref["deployment"], ref["namespace"])
    else:
        ref = holder["capacity_buffer"]
        one(docs, "CapacityBuffer", ref["name"], ref["namespace"])
        assert not [x for x in docs if x["kind"] == "Deployment" and x["metadata"]["name"] ==
                    "milvus-querynode-headroom"], "the placeholder Deployment is removed in CapacityBuffer mode"


LEASE_ROLE = "milvus-scaler-headroom-lease"


def lease_name(h: dict) -> str:
    """The Lease the configured election uses: headroom.leader_election.lease_name, else the code's default."""
    configured = (h.get("leader_election") or {}).get("lease_name")
    if configured:
        return configured
    src = (REPO / "crates" / "headroom-holder" / "src" / "config.rs").read_text()
    (default,) = re.findall(r'pub const DEFAULT_LEASE_NAME: &str = "([^"]+)"', src)
    return default


def assert_lease_role(docs, role: str, lease: str, lease_ns: str, dep: dict) -> None:
    """The Role `role` grants exactly what crates/leader-lease's elector does to the Lease `lease`: `get`/`update`
    by name, `create` on leases (which resourceNames cannot restrict), in `lease_ns`; bound to the ServiceAccount
    of the milvus-scaler Deployment `dep`."""
    assert role_rules(docs, role, lease_ns) == (
        {("coordination.k8s.io", "leases", lease, v) for v in ("get", "update")}
        | {("coordination.k8s.io", "leases", "*", "create")})
    binding = one(docs, "RoleBinding", role, lease_ns)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": dep["spec"]["template"]["spec"][
        "serviceAccountName"], "namespace": dep["metadata"]["namespace"]}]


@pytest.mark.parametrize("components", [PLACEHOLDER, BUFFER], ids=["placeholder", "capacity-buffer"])
def test_the_leader_election_is_granted_exactly_what_the_elector_calls(components):
    """crates/leader-lease/src/elector.rs GETs the Lease, creates it when absent and replaces it (renew,
    take over, release); the requests are pinned by method and path in fake_apiserver.rs. The Role grants exactly
    that, `get`/`update` by name and `create` on leases (which resourceNames cannot restrict), in the pod's own
    namespace, which is where the elector puts the Lease unless leader_election.namespace says otherwise."""
    docs = build("overlays/keda", components)
    validate_strict(docs, "+".join(components))
    h = headroom_section(docs)
    name = lease_name(h)
    src = (REPO / "crates" / "leader-lease" / "src" / "elector.rs").read_text()
    verbs = set(re.findall(r'"(get|list|watch|create|update|patch|delete)"', src))
    assert verbs == {"get", "create", "update"}, f"the elector's verbs changed: {verbs}"
    dep = one(docs, "Deployment", "milvus-scaler", "milvus-scaler")
    lease_ns = (h.get("leader_election") or {}).get("namespace") or dep["metadata"]["namespace"]
    assert_lease_role(docs, LEASE_ROLE, name, lease_ns, dep)
    # The 403 hint of the elector points at the file that grants it (crates/headroom-holder/src/lib.rs, ELECTION).
    lib = (REPO / "crates" / "headroom-holder" / "src" / "lib.rs").read_text()
    (hint_file,) = set(re.findall(r'rbac_manifest: "([^"]+)"', lib))
    assert (REPO / hint_file).is_file(), hint_file
    assert LEASE_ROLE in (REPO / hint_file).read_text()

    # The identity: POD_NAME from the downward API (unique per replica); the token mounted to call the API.
    pod = dep["spec"]["template"]["spec"]
    (c,) = [c for c in pod["containers"] if c["name"] == "milvus-scaler"]
    env = {e["name"]: e for e in c.get("env", [])}
    assert env["POD_NAME"] == {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    assert pod["automountServiceAccountToken"] is True
    # Two replicas in this mode: the election is what keeps them from both writing.
    assert dep["spec"]["replicas"] >= 2
    le = h["leader_election"]
    assert le.get("enabled") is None, "on by default in a pod in apply: the shipped file must not turn it off"
    assert re.fullmatch(r"\d+s", le["lease_duration"]) and re.fullmatch(r"\d+s", le["renew_deadline"])


def requests_of(spec: dict) -> dict:
    from kubernetes.utils import parse_quantity
    running = spec["containers"] + [c for c in spec.get("initContainers", []) if c.get("restartPolicy") == "Always"]
    return {res: sum(parse_quantity(c["resources"]["requests"][res]) for c in running) for res in ("cpu", "memory")}


def pod_labels(deployment: dict) -> dict:
    return deployment["spec"]["template"]["metadata"]["labels"]


def test_placeholders_are_shaped_like_a_query_node_pod():
    querynode = post_rendered_querynode()["spec"]["template"]["spec"]
    docs = build("overlays/keda", PLACEHOLDER)
    dep = one(docs, "Deployment", "milvus-querynode-headroom", "milvus")
    assert "replicas" not in dep["spec"], "milvus-scaler owns spec.replicas; re-applying must not reset it"
    pod = dep["spec"]["template"]["spec"]
    assert requests_of(pod) == requests_of(querynode)
    assert pod["nodeSelector"] == querynode["nodeSelector"]
    assert pod["tolerations"] == querynode["tolerations"]
    (c,) = pod["containers"]
    assert re.fullmatch(r"registry\.k8s\.io/pause:\d+\.\d+(\.\d+)?", c["image"]), c["image"]
    pc = one(docs, "PriorityClass", pod["priorityClassName"])
    assert pc["value"] < 0 and pc["globalDefault"] is False and pc["preemptionPolicy"] == "Never"
    # Cluster Autoscaler ignores pods below --expendable-pods-priority-cutoff (-10 by default): it would not
    # provision for the placeholders at all.
    assert pc["value"] > -10
    pdb = one(docs, "PodDisruptionBudget", "milvus-querynode-headroom", "milvus")
    assert pdb["spec"] == {"maxUnavailable": "100%",
                           "selector": {"matchLabels": dep["spec"]["selector"]["matchLabels"]}}

    # Placeholders need no network: a deny-all policy selects them (in both modes).
    pol = one(docs, "NetworkPolicy", "milvus-querynode-headroom", "milvus")
    assert pol["spec"]["podSelector"]["matchLabels"].items() <= pod_labels(dep).items()
    assert set(pol["spec"]["policyTypes"]) == {"Ingress", "Egress"} and "ingress" not in pol["spec"] \
        and "egress" not in pol["spec"]

    buf = build("overlays/keda", BUFFER)
    tmpl = one(buf, "PodTemplate", "milvus-querynode-headroom", "milvus")["template"]["spec"]
    assert requests_of(tmpl) == requests_of(querynode)
    assert tmpl["nodeSelector"] == querynode["nodeSelector"] and tmpl["tolerations"] == querynode["tolerations"]
    pol = one(buf, "NetworkPolicy", "milvus-querynode-headroom", "milvus")
    assert pol["spec"]["podSelector"]["matchLabels"].items() <= one(
        buf, "PodTemplate", "milvus-querynode-headroom", "milvus")["template"]["metadata"]["labels"].items()
    cb = one(buf, "CapacityBuffer", "milvus-querynode-headroom", "milvus")
    assert cb["spec"]["podTemplateRef"]["name"] == "milvus-querynode-headroom"
    assert "replicas" not in cb["spec"], "milvus-scaler owns spec.replicas"


def test_planner_pod_capacity_is_the_hpas_and_scaledobjects_target():
    """One size of a query-node pod in nq/s for the HPA, the ScaledObject and the headroom planner."""
    hpa = yaml.safe_load((MANIFESTS / "examples" / "hpa-querynode.yaml").read_text())
    (metric,) = [m for m in hpa["spec"]["metrics"] if m["type"] == "External"]
    assert metric["external"]["metric"]["name"] == "milvus_search_demand"
    target = float(metric["external"]["target"]["averageValue"])
    so = yaml.safe_load((MANIFESTS / "examples" / "keda" / "scaledobject-querynode.yaml").read_text())
    (trigger,) = [t for t in so["spec"]["triggers"] if "search_demand" in str(t.get("metadata"))]
    assert trigger["metricType"] == "AverageValue"
    assert float(trigger["metadata"]["target"]) == target
    for components in (PLACEHOLDER, BUFFER):
        h = headroom_section(build("overlays/keda", components))
        assert h["planner"]["pod_capacity"] == target, components
        assert h["workload"] == {"namespace": hpa["metadata"]["namespace"],
                                 "deployment": hpa["spec"]["scaleTargetRef"]["name"]}
        assert h["mode"] == "dry-run", "shipped in dry-run"


def test_the_holder_speaks_the_capacity_buffer_api_the_schema_describes():
    api = yaml.safe_load(CAPACITY_BUFFER_API.read_text())
    assert re.search(r"at commit [0-9a-f]{40}", CAPACITY_BUFFER_API.read_text()), "say which upstream commit"
    # What the holder speaks (headroom_holder::k8s::CAPACITY_BUFFER_API_VERSION) is the version written down.
    src = (REPO / "crates" / "headroom-holder" / "src" / "k8s.rs").read_text()
    (api_version,) = re.findall(r'CAPACITY_BUFFER_API_VERSION: &str = "([^"]+)"', src)
    assert api_version == f"{api['group']}/{api['version']}"
    assert api["scope"] == "Namespaced" and api["plural"] == "capacitybuffers"
    assert f'"{api["plural"]}"' in src, "the holder's resource plural"


def test_the_capacity_buffer_patch_validates_against_the_crd_schema():
    """The body the holder sends (k8s.rs `buffer_patch`: {"spec": {"replicas": N}}), merged into the shipped
    buffer as the API server merges it, must validate; broken values must not (the check can fail)."""
    cb = one(build("overlays/keda", BUFFER), "CapacityBuffer", "milvus-querynode-headroom", "milvus")
    assert capacity_buffer_errors(cb) == []
    src = (REPO / "crates" / "headroom-holder" / "src" / "k8s.rs").read_text()
    assert re.search(r'pub fn buffer_patch\(replicas: u32\) -> Value \{\s*json!\(\{ "spec": \{ "replicas": to_i32',
                     src), "buffer_patch changed: update this test's body"
    for n in (0, 1, 6, 2**31 - 1):
        patched = {**cb, "spec": {**cb["spec"], "replicas": n}}
        assert capacity_buffer_errors(patched) == [], n
    for bad in (-1, "3", 2.5):
        patched = {**cb, "spec": {**cb["spec"], "replicas": bad}}
        assert capacity_buffer_errors(patched), f"replicas {bad!r} accepted"
    typo = {**cb, "spec": {**cb["spec"], "replica": 3}}
    assert capacity_buffer_errors(typo), "an unknown field is accepted"
    no_size = {**cb, "spec": {"podTemplateRef": cb["spec"]["podTemplateRef"]}}
    assert capacity_buffer_errors(no_size), "the CRD's CEL rule (replicas or limits) is not checked"


def test_rendered_headroom_configuration_is_accepted_by_milvus_scaler():
    for components, holder in ((PLACEHOLDER, "placeholder"), (BUFFER, "capacity_buffer")):
        out = check_config(config_files(build("overlays/keda", components)), "+".join(components))
        assert f"headroom: {holder}" in out, out


def test_every_simulated_headroom_file_is_a_planner_section_milvus_scaler_accepts():
    """docs/headroom.md: `planner:` takes the keys of `simulate --headroom` files, so a setting tried in the
    simulation is pasted as is."""
    files = sorted((REPO / "bench" / "policies").glob("headroom-*.yaml"))
    assert files, "bench/policies/headroom-*.yaml are gone: update docs/headroom.md"
    base = yaml.safe_load(build_config_text())
    for f in files:
        cfg = {**base, "headroom": {**base["headroom"], "planner": yaml.safe_load(f.read_text())}}
        out = check_config({"headroom.yaml": yaml.safe_dump(cfg)}, f.name)
        assert "headroom: placeholder" in out, out


def build_config_text() -> str:
    """The shipped placeholder mode's configuration, merged into one document."""
    merged: dict = {}
    for text in config_files(build("overlays/keda", PLACEHOLDER)).values():
        merged.update(yaml.safe_load(text))
    return yaml.safe_dump(merged)
