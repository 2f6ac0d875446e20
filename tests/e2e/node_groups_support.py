"""Helpers of the node-group tests: a scripted Milvus /metrics endpoint, Auto Scaling groups on
moto, a fault-injecting proxy in front of moto, and `plan-nodes` runs.

The scripted endpoint serves a real Milvus 2.3.5 capture (query-node, proxy and datacoord families
all present, as the scaler requires) with the query-node read-task queue set to a value the test
chooses: it drives the planner without a search load. The fault proxy exists because moto cannot be
made to throttle or fail on demand (fault injection is the one place a stand-in is used).
"""
from __future__ import annotations

import re
import subprocess
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

from harness import promtext
from harness.exporter import StaticExporter
from harness.procs import REPO, free_port
from harness.services import cargo_bin, run_dir

FIXTURE = REPO / "tests" / "fixtures" / "milvus-2.3.5-metrics-under-load.prom"
QUEUE_LINE = re.compile(r'^milvus_querynode_read_task_unsolved_len\{node_id="3"\} .*$', re.M)


class ScriptedMilvusMetrics(StaticExporter):
    """A Milvus-format /metrics endpoint whose search queue depth the test sets
    (`.queue_depth = n` rewrites the capture's read_task_unsolved_len line)."""

    def __init__(self, queue_depth: float = 0.0):
        self.template = FIXTURE.read_text()
        assert QUEUE_LINE.search(self.template), "fixture lost its read_task_unsolved_len line"
        super().__init__(self.template)
        self.queue_depth = queue_depth

    @property
    def queue_depth(self) -> float:
        return self._queue_depth

    @queue_depth.setter
    def queue_depth(self, value: float) -> None:
        self._queue_depth = value
        self.set(QUEUE_LINE.sub(f'milvus_querynode_read_task_unsolved_len{{node_id="3"}} {value}', self.template))


class FaultProxy:
    """Forwards to moto; answers the next scripted requests of an action with an error instead.

    `script` maps an API action to a list of (HTTP status, error code) answers given to its next calls.
    """

    def __init__(self, upstream: str):
        self.upstream = upstream
        self.script: dict[str, list[tuple[int, str]]] = {}
        self.seen: list[tuple[str, int]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                target = self.headers.get("X-Amz-Target", "")
                m = re.search(rb"Action=([A-Za-z]+)", body)
                action = m.group(1).decode() if m else target.rsplit(".", 1)[-1]
                with outer.lock:
                    queue = outer.script.get(action) or []
                    fault = queue.pop(0) if queue else None
                if fault:
                    status, code = fault
                    outer.seen.append((action, status))
                    xml = (f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>"
                           f"<Message>injected by the test</Message></Error><RequestId>t</RequestId></ErrorResponse>").encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "text/xml")
                    self.send_header("Content-Length", str(len(xml)))
                    self.end_headers()
                    self.wfile.write(xml)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                req = urllib.request.Request(outer.upstream + self.path, data=body, headers=headers, method="POST")
                try:
                    with urllib.request.urlopen(req, timeout=10) as r:
                        status, data, ctype = r.status, r.read(), r.headers.get("Content-Type", "text/xml")
                except urllib.error.HTTPError as e:
                    status, data, ctype = e.code, e.read(), e.headers.get("Content-Type", "text/xml")
                outer.seen.append((action, status))
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def create_groups(moto, groups: dict[str, dict]) -> None:
    """Creates a launch template and one Auto Scaling group per entry (name -> min/max/desired)."""
    ec2 = moto.client("ec2")
    lt = ec2.create_launch_template(LaunchTemplateName=f"milvus-nodes-{len(groups)}-{free_port()}",
                                    LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "r6i.2xlarge"})
    lt_id = lt["LaunchTemplate"]["LaunchTemplateId"]
    asg = moto.client("autoscaling")
    for name, g in groups.items():
        asg.create_auto_scaling_group(
            AutoScalingGroupName=name, LaunchTemplate={"LaunchTemplateId": lt_id, "Version": "$Latest"},
            MinSize=g["min"], MaxSize=g["max"], DesiredCapacity=g["desired"],
            AvailabilityZones=["us-east-1a", "us-east-1b"],
            Tags=[{"Key": "k8s.io/cluster-autoscaler/enabled", "Value": "true", "PropagateAtLaunch": False},
                  {"Key": "k8s.io/cluster-autoscaler/milvus", "Value": "owned", "PropagateAtLaunch": False}])


def desired(moto, name: str) -> int:
    groups = moto.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"]
    assert groups, f"group {name} vanished"
    return groups[0]["DesiredCapacity"]


def config(metrics_url: str, endpoint: str, groups: list[dict], mode: str = "apply", interval: str = "1s") -> dict:
    return {
        "milvus": [{"name": "prod", "scrape": {"targets": [metrics_url], "interval": "500ms"}}],
        "signals": {"window": "10s", "stale_after": "5s"},
        "node_groups": {
            "region": "us-east-1", "endpoint_url": endpoint, "interval": interval, "mode": mode,
            "min_change_interval": "0s",
            "retry": {"max_attempts": 3, "initial_backoff": "50ms", "max_backoff": "200ms"},
            "groups": groups,
        },
    }


def querynode_group(asg: str, **extra) -> dict:
    """2 CPU / 8Gi pods on r6i.2xlarge: 3 per node after the default 500m / 2Gi reservation."""
    g = {"name": "querynodes", "asg": asg, "milvus": "prod", "instance_type": "r6i.2xlarge",
         "pod": {"cpu": "2", "memory": "8Gi"},
         "replicas": {"signal": "search_queue_depth", "target_per_pod": 8, "min": 1, "max": 200}}
    g.update(extra)
    return g


def plan_nodes(cfg: dict, env: dict, apply: bool = False) -> subprocess.CompletedProcess:
    d = run_dir("plan-nodes")
    path = Path(d) / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cmd = [cargo_bin("milvus-scaler"), "plan-nodes", "--config", str(path)] + (["--apply"] if apply else [])
    import os
    full_env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    full_env.update(env)
    full_env["RUST_LOG"] = "info"
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=full_env)


def metric(text: str, name: str, **labels) -> float | None:
    """Value of the first sample of `name` whose labels include `labels`."""
    return promtext.first_value(text, name, **labels)
