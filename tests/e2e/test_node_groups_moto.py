"""Node-group sizing against a real moto server (EC2 Auto Scaling), driven by scripted Milvus
metrics: plan-nodes dry-run and --apply, MaxSize capping, no scale-in without `scale_in`, the
`serve` loop and its metrics, failures (unknown group, throttling, 5xx, unreachable endpoint)
that are reported and retried without stopping `serve`, and two `serve` replicas of which only
the holder of the node groups' Lease writes. kube-apiserver cannot run here: the Leases are kept by
the FAKE API server of test_headroom_binary.py (GET, POST, PUT at the stored resourceVersion, else 409).
"""
from __future__ import annotations

import time

import pytest

from harness.procs import free_port, wait_until
from harness.services import Scaler
from node_groups_support import (FaultProxy, ScriptedMilvusMetrics, config, create_groups, desired, metric,
                                 plan_nodes, querynode_group)
from test_headroom_binary import FakeScales, kubeconfig

pytestmark = pytest.mark.timeout(300)


def creds(moto) -> dict:
    env = moto.env()
    env.pop("AWS_ENDPOINT_URL")  # the config's endpoint_url must be what is used
    return env


@pytest.fixture
def signals():
    s = ScriptedMilvusMetrics(queue_depth=0)
    yield s
    s.stop()


def test_plan_nodes_dry_run_apply_and_no_scale_in(moto, signals):
    create_groups(moto, {"eks-milvus-querynode": {"min": 1, "max": 10, "desired": 1}})
    asg = moto.client("autoscaling")
    cfg = config(signals.url, moto.url, [querynode_group("eks-milvus-querynode", headroom_pods=1,
                                                         warm_pool={"min_size": 2})])
    # 72 queued / 8 per pod = 9 replicas + 1 headroom = 10 pods, 3 per node -> 4 nodes.
    signals.queue_depth = 72

    out = plan_nodes(cfg, creds(moto))
    assert out.returncode == 0, out.stderr
    assert "dry-run: would set 1 -> 4" in out.stdout, out.stdout
    assert "ceil(search_queue_depth 72 / 8 per pod) = 9" in out.stdout, out.stdout
    assert "ceil((9 replicas + 1 headroom) / 3 pods per node) = 4" in out.stdout, out.stdout
    assert "limited by CPU" in out.stdout
    assert desired(moto, "eks-milvus-querynode") == 1, "dry-run changed the group"
    assert "WarmPoolConfiguration" not in asg.describe_warm_pool(AutoScalingGroupName="eks-milvus-querynode")

    out = plan_nodes(cfg, creds(moto), apply=True)
    assert out.returncode == 0, out.stderr
    assert "set 1 -> 4" in out.stdout, out.stdout
    assert desired(moto, "eks-milvus-querynode") == 4
    pool = asg.describe_warm_pool(AutoScalingGroupName="eks-milvus-querynode")["WarmPoolConfiguration"]
    assert (pool["MinSize"], pool["PoolState"]) == (2, "Stopped"), pool
    assert "warm pool of at least 2 Stopped instance(s)" in out.stdout, out.stdout
    assert "set desired capacity" in out.stderr and "demand needs 4 node(s), up from 1" in out.stderr, out.stderr

    # Demand falls to one pod: not lowered (scale_in defaults to false).
    signals.queue_depth = 3
    out = plan_nodes(cfg, creds(moto), apply=True)
    assert out.returncode == 0, out.stderr
    assert "scale_in: false" in out.stdout, out.stdout
    assert desired(moto, "eks-milvus-querynode") == 4

    # With scale_in and no stabilisation window, it is lowered to what demand needs.
    cfg["node_groups"]["groups"][0].update(scale_in=True, scale_in_stabilization="0s")
    out = plan_nodes(cfg, creds(moto), apply=True)
    assert out.returncode == 0, out.stderr
    assert desired(moto, "eks-milvus-querynode") == 1, out.stdout  # ceil((1 + 1) / 3)


def test_capped_at_max_size_and_says_so(moto, signals):
    # moto itself accepts desired capacity above MaxSize: the cap must come from us.
    create_groups(moto, {"eks-milvus-querynode": {"min": 1, "max": 5, "desired": 2}})
    cfg = config(signals.url, moto.url, [querynode_group("eks-milvus-querynode")])
    signals.queue_depth = 800  # 100 replicas -> 34 nodes
    out = plan_nodes(cfg, creds(moto), apply=True)
    assert out.returncode == 0, out.stderr
    assert "capped at the group's MaxSize 5 (demand exceeds it by 29 node(s))" in out.stdout, out.stdout
    row = next(line for line in out.stdout.splitlines() if line.startswith("querynodes"))
    assert " yes " in row, row
    assert desired(moto, "eks-milvus-querynode") == 5


def test_unknown_signal_holds(moto):
    create_groups(moto, {"eks-milvus-querynode": {"min": 1, "max": 5, "desired": 2}})
    cfg = config(f"http://127.0.0.1:{free_port()}/metrics", moto.url, [querynode_group("eks-milvus-querynode")])
    out = plan_nodes(cfg, creds(moto), apply=True)
    assert out.returncode == 0, out.stderr
    assert "no change: search_queue_depth is unknown" in out.stdout, out.stdout
    assert desired(moto, "eks-milvus-querynode") == 2


def test_serve_applies_caps_and_exports(moto, signals):
    create_groups(moto, {"eks-milvus-querynode": {"min": 1, "max": 6, "desired": 1}})
    signals.queue_depth = 72  # 9 replicas -> 3 nodes
    scaler = Scaler(config(signals.url, moto.url, [querynode_group("eks-milvus-querynode")]), env=creds(moto))
    try:
        wait_until(lambda: desired(moto, "eks-milvus-querynode") == 3, 30, "desired capacity 3", proc=scaler.service)
        labels = {"group": "querynodes", "asg": "eks-milvus-querynode"}
        text = scaler.metrics_text()
        assert metric(text, "milvus_scaler_nodegroup_changes_total", direction="up", **labels) == 1, text
        wait_until(lambda: metric(scaler.metrics_text(), "milvus_scaler_nodegroup_current_capacity", **labels) == 3,
                   10, "current capacity 3 exported")
        text = scaler.metrics_text()
        assert metric(text, "milvus_scaler_nodegroup_planned_capacity", **labels) == 3
        assert metric(text, "milvus_scaler_nodegroup_planned_replicas", group="querynodes") == 9
        assert metric(text, "milvus_scaler_nodegroup_max_size", **labels) == 6
        assert metric(text, "milvus_scaler_nodegroup_min_size", **labels) == 1
        assert metric(text, "milvus_scaler_nodegroup_capped", **labels) == 0

        signals.queue_depth = 800
        wait_until(lambda: metric(scaler.metrics_text(), "milvus_scaler_nodegroup_capped", **labels) == 1, 30,
                   "capped = 1", proc=scaler.service)
        wait_until(lambda: desired(moto, "eks-milvus-querynode") == 6, 30, "desired capacity 6 (MaxSize)")
        signals.queue_depth = 0
        wait_until(lambda: metric(scaler.metrics_text(), "milvus_scaler_nodegroup_planned_replicas",
                                  group="querynodes") == 1, 30, "demand to fall")
        assert desired(moto, "eks-milvus-querynode") == 6, "lowered without scale_in"
        assert metric(scaler.metrics_text(), "milvus_scaler_nodegroup_changes_total", direction="down", **labels) is None
        assert "capped at the group's MaxSize 6" in scaler.service.log_path.read_text()
    finally:
        assert scaler.stop() == 0


def test_serve_dry_run_leaves_groups_untouched(moto, signals):
    create_groups(moto, {"eks-milvus-querynode": {"min": 1, "max": 6, "desired": 1}})
    signals.queue_depth = 72
    scaler = Scaler(config(signals.url, moto.url, [querynode_group("eks-milvus-querynode")], mode="dry-run"),
                    env=creds(moto))
    try:
        labels = {"group": "querynodes", "asg": "eks-milvus-querynode"}
        wait_until(lambda: metric(scaler.metrics_text(), "milvus_scaler_nodegroup_planned_capacity", **labels) == 3,
                   30, "planned capacity 3", proc=scaler.service)
        wait_until(lambda: scaler.service.log_path.read_text().count("dry-run: would set desired capacity") >= 3,
                   30, "three dry-run rounds")
        assert desired(moto, "eks-milvus-querynode") == 1
        assert metric(scaler.metrics_text(), "milvus_scaler_nodegroup_changes_total", direction="up", **labels) is None
    finally:
        scaler.stop()


def test_serve_reports_unknown_group_and_keeps_sizing_the_others(moto, signals):
    create_groups(moto, {"eks-milvus-querynode": {"min": 1, "max": 6, "desired": 1}})
    signals.queue_depth = 72
    groups = [querynode_group("eks-milvus-querynode"),
              querynode_group("eks-missing", name="ghosts")]
    scaler = Scaler(config(signals.url, moto.url, groups), env=creds(moto))
    try:
        wait_until(lambda: (metric(scaler.metrics_text(), "milvus_scaler_nodegroup_errors_total",
                                   group="ghosts", asg="eks-missing") or 0) >= 2, 30,
                   "errors for the missing group", proc=scaler.service)
        wait_until(lambda: desired(moto, "eks-milvus-querynode") == 3, 30, "the real group sized")
        assert 'Auto Scaling group \\"eks-missing\\" not found' in scaler.service.log_path.read_text()
    finally:
        scaler.stop()


def test_serve_retries_throttling_and_5xx(moto, signals):
    create_groups(moto, {"eks-milvus-querynode": {"min": 1, "max": 6, "desired": 1}})
    proxy = FaultProxy(moto.url)
    # Describe throttled twice (3rd attempt passes); SetDesiredCapacity 500 twice, then
    # 3 times (a whole round fails), then passes.
    proxy.script = {"DescribeAutoScalingGroups": [(400, "Throttling")] * 2,
                    "SetDesiredCapacity": [(500, "InternalFailure")] * 5}
    signals.queue_depth = 72
    scaler = Scaler(config(signals.url, proxy.url, [querynode_group("eks-milvus-querynode")]), env=creds(moto))
    try:
        wait_until(lambda: desired(moto, "eks-milvus-querynode") == 3, 60, "desired capacity 3 through faults",
                   proc=scaler.service)
        log = scaler.service.log_path.read_text()
        assert "Throttling" in log and "retrying" in log, log[-3000:]
        assert "HTTP 500" in log, log[-3000:]
        assert [s for a, s in proxy.seen if a == "SetDesiredCapacity"][:6] == [500] * 5 + [200], proxy.seen
        labels = {"group": "querynodes", "asg": "eks-milvus-querynode"}
        assert metric(scaler.metrics_text(), "milvus_scaler_nodegroup_errors_total", **labels) == 1
        assert metric(scaler.metrics_text(), "milvus_scaler_nodegroup_changes_total", direction="up", **labels) == 1
    finally:
        scaler.stop()
        proxy.stop()


def test_serve_survives_unreachable_endpoint(moto, signals):
    signals.queue_depth = 72
    dead = f"http://127.0.0.1:{free_port()}"
    scaler = Scaler(config(signals.url, dead, [querynode_group("eks-milvus-querynode")]), env=creds(moto))
    try:
        labels = {"group": "querynodes", "asg": "eks-milvus-querynode"}
        wait_until(lambda: (metric(scaler.metrics_text(), "milvus_scaler_nodegroup_errors_total", **labels) or 0) >= 2,
                   60, "two failed rounds", proc=scaler.service)
        assert scaler.service.alive()
        log = scaler.service.log_path.read_text()
        assert "retrying" in log and "DescribeAutoScalingGroups failed" in log, log[-3000:]
        with __import__("urllib.request").request.urlopen(f"{scaler.telemetry}/healthz", timeout=5) as r:
            assert r.status == 200
    finally:
        assert scaler.stop() == 0


NG_LEASE = "milvus-scaler-node-groups"


def test_two_serve_replicas_elect_one_writer_of_the_groups(moto, signals):
    """Two `serve` processes in apply with `scale_in: true` (what a single writer used to be needed for), each with
    its own POD_NAME, token and Auto Scaling endpoint (a pass-through proxy in front of moto, so the calls say who
    made them). While the leader's SetDesiredCapacity fails (500s injected on its proxy only), the follower plans
    the change, exports it and writes nothing: the group stays where it was. Then the leader writes, up and down;
    SIGTERM on it releases the Lease and the other takes over before the 30 s lease could expire, then writes."""
    create_groups(moto, {"eks-milvus-querynode": {"min": 1, "max": 10, "desired": 1}})
    signals.queue_depth = 0  # 1 replica -> 1 node: nothing to change yet
    api = FakeScales(workload=0, placeholder=0)
    proxies = {name: FaultProxy(moto.url) for name in ("replica-a", "replica-b")}
    replicas: dict[str, Scaler] = {}
    labels = {"group": "querynodes", "asg": "eks-milvus-querynode"}
    lease_label = f"milvus-scaler/{NG_LEASE}"

    def holder() -> str | None:
        with api.lock:
            lease = api.leases.get(NG_LEASE)
        return None if lease is None else lease["spec"].get("holderIdentity")

    def calls(name: str, action: str) -> list[int]:
        return [status for a, status in list(proxies[name].seen) if a == action]

    try:
        for name, proxy in proxies.items():
            cfg = config(signals.url, proxy.url, [querynode_group(
                "eks-milvus-querynode", scale_in=True, scale_in_stabilization="0s", warm_pool={"min_size": 1})])
            cfg["node_groups"]["leader_election"] = {"enabled": True, "namespace": "milvus-scaler",
                                                     "lease_duration": "30s", "renew_deadline": "20s",
                                                     "retry_period": "200ms"}
            replicas[name] = Scaler(cfg, env={**creds(moto), "POD_NAME": name,
                                              "KUBECONFIG": str(kubeconfig(api, token=f"token-{name}"))})
        wait_until(lambda: holder() in replicas, 30, "a leader", proc=replicas["replica-a"].service)
        leader = holder()
        (follower,) = set(replicas) - {leader}
        assert "milvus-scaler-headroom" not in api.leases, "the node groups' own Lease, not the headroom's"
        wait_until(lambda: metric(replicas[leader].metrics_text(), "milvus_scaler_nodegroup_leader",
                                  lease=lease_label) == 1, 10, "leader 1 on the leader")
        assert metric(replicas[follower].metrics_text(), "milvus_scaler_nodegroup_leader", lease=lease_label) == 0
        wait_until(lambda: calls(leader, "PutWarmPool") == [200], 10, "the leader puts the warm pool")

        # Demand rises while the leader cannot write (3 rounds of 3 failed attempts): the follower plans 3 and
        # leaves it to the leader, so the group stays at 1 until the leader's write goes through.
        proxies[leader].script = {"SetDesiredCapacity": [(500, "InternalFailure")] * 9}
        signals.queue_depth = 72  # 9 replicas -> 3 nodes
        wait_until(lambda: metric(replicas[follower].metrics_text(), "milvus_scaler_nodegroup_planned_capacity",
                                  **labels) == 3, 10, "the follower plans 3")
        wait_until(lambda: calls(leader, "SetDesiredCapacity")[:9] == [500] * 9
                   or calls(follower, "SetDesiredCapacity"), 30, "the leader's failed writes")
        assert calls(follower, "SetDesiredCapacity") == [] and calls(follower, "PutWarmPool") == [], \
            "the follower called a mutating API"
        assert desired(moto, "eks-milvus-querynode") == 1
        assert len(calls(follower, "DescribeAutoScalingGroups")) >= 3, "the follower reads every round"
        assert "desired capacity left to the leader" in replicas[follower].service.log_path.read_text()
        wait_until(lambda: desired(moto, "eks-milvus-querynode") == 3, 30, "the leader sets 3")
        assert calls(leader, "SetDesiredCapacity")[9:10] == [200]

        # Demand falls: with scale_in the leader lowers the group; still nothing from the follower.
        signals.queue_depth = 3
        wait_until(lambda: desired(moto, "eks-milvus-querynode") == 1, 30, "lowered to 1 by the leader")
        assert metric(replicas[leader].metrics_text(), "milvus_scaler_nodegroup_changes_total", direction="down",
                      **labels) == 1
        assert calls(follower, "SetDesiredCapacity") == []

        stopped = time.monotonic()
        assert replicas.pop(leader).stop() == 0
        wait_until(lambda: holder() == follower, 10, "the follower takes over")
        assert time.monotonic() - stopped < 30, "taken over before the lease expired: it was released"
        signals.queue_depth = 72
        wait_until(lambda: desired(moto, "eks-milvus-querynode") == 3, 30, "the new leader writes",
                   proc=replicas[follower].service)
        assert calls(follower, "SetDesiredCapacity") == [200]
        wait_until(lambda: metric(replicas[follower].metrics_text(), "milvus_scaler_nodegroup_leader",
                                  lease=lease_label) == 1, 10, "leader 1 on the new leader")
    finally:
        for r in replicas.values():
            assert r.stop() == 0
        for p in proxies.values():
            p.stop()
        api.stop()
