"""Node-group sizing driven by a real Milvus 2.3.5 search load: `serve` in apply mode raises the
moto Auto Scaling group while the load runs (search_rate target per pod), stays inside MaxSize, and
does not lower it after the load stops (scale_in: false)."""
from __future__ import annotations

import time

import pytest

from harness import workload
from harness.procs import wait_until
from harness.services import Scaler, scaler_signal
from node_groups_support import create_groups, desired, metric

pytestmark = pytest.mark.timeout(600)


def test_search_load_raises_the_query_node_group(milvus, moto):
    workload.connect(milvus.uri)
    coll = workload.create_collection("node_groups_e2e", rows=5_000)
    create_groups(moto, {"eks-milvus-querynode": {"min": 1, "max": 12, "desired": 1}})
    env = moto.env()
    env.pop("AWS_ENDPOINT_URL")
    scaler = Scaler({
        "milvus": [{"name": "demo", "scrape": {"targets": [milvus.metrics_url], "interval": "1s"}}],
        "signals": {"window": "10s", "stale_after": "5s"},
        "node_groups": {
            "region": "us-east-1", "endpoint_url": moto.url, "interval": "1s", "mode": "apply",
            "min_change_interval": "0s",
            "groups": [{"name": "querynodes", "asg": "eks-milvus-querynode", "milvus": "demo",
                        "instance_type": "r6i.2xlarge", "pod": {"cpu": "2", "memory": "8Gi"},
                        "replicas": {"signal": "search_rate", "target_per_pod": 2, "min": 1, "max": 200}}],
        },
    }, env=env)
    labels = {"group": "querynodes", "asg": "eks-milvus-querynode"}
    try:
        wait_until(lambda: scaler_signal(scaler, "demo", "search_rate") == 0.0, 60, "idle search rate of 0",
                   proc=scaler.service)
        time.sleep(3)
        assert desired(moto, "eks-milvus-querynode") == 1, "raised while idle"
        with workload.SearchLoad(coll, threads=8, nq=10):
            wait_until(lambda: desired(moto, "eks-milvus-querynode") > 1, 90, "the group to rise under load",
                       proc=scaler.service)
            rate = scaler_signal(scaler, "demo", "search_rate")
            time.sleep(3)
        raised = desired(moto, "eks-milvus-querynode")
        assert 1 < raised <= 12, raised
        text = scaler.metrics_text()
        assert metric(text, "milvus_scaler_nodegroup_changes_total", direction="up", **labels) >= 1
        assert metric(text, "milvus_scaler_nodegroup_max_size", **labels) == 12
        wait_until(lambda: scaler_signal(scaler, "demo", "search_rate") == 0.0, 60, "the rate to fall after the load")
        time.sleep(3)
        assert metric(scaler.metrics_text(), "milvus_scaler_nodegroup_planned_replicas", group="querynodes") == 1
        assert desired(moto, "eks-milvus-querynode") == raised, "lowered without scale_in"
        assert "set desired capacity" in scaler.service.log_path.read_text(), f"rate was {rate}"
    finally:
        assert scaler.stop() == 0
