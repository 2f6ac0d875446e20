"""The whole system on loopback, as `make run`, the stack end-to-end test and the benchmarks use it:

moto (S3 + EC2 Auto Scaling, with a query-node group) <- segment-cache <- real Milvus 2.3.5,
milvus-scaler (external metrics API, KEDA scaler, node-group planner in apply mode against moto),
and Debian's Prometheus scraping Milvus, milvus-scaler and segment-cache with the grafana rules.
Everything is stopped by PID, in reverse order, by `stop()`."""
from __future__ import annotations

from pathlib import Path

import yaml

from . import promtext
from .procs import REPO, free_port, port_open, wait_until
from .segment_cache import ACCESS_KEY, SECRET_KEY, SegmentCache
from .services import Milvus, Moto, Prometheus, Scaler, run_dir

BUCKET = "milvus-bucket"
ASG = "eks-milvus-querynode"
# What an HPA / the planner is told: one query node per queued read task (a single standalone Milvus
# queues only a few). A 4-CPU query-node pod fits once on an r6i.2xlarge, so every extra pod asks
# for one more node.
QUEUE_TARGET_PER_POD = 1


class Stack:
    def __init__(self, planner_interval: str = "5s", asg_max: int = 10, window: str = "30s",
                 cache_capacity: str = "4GiB", prometheus: bool = True):
        self.parts: list = []
        self.dir = run_dir("stack")
        try:
            self._start(planner_interval, asg_max, window, cache_capacity, prometheus)
        except BaseException:
            self.stop()
            raise

    def _start(self, planner_interval, asg_max, window, cache_capacity, prometheus):
        self.moto = self._keep(Moto())
        self.moto.client("s3").create_bucket(Bucket=BUCKET)
        ec2 = self.moto.client("ec2")
        lt = ec2.create_launch_template(LaunchTemplateName="milvus-querynode",
                                        LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "r6i.2xlarge"})
        self.moto.client("autoscaling").create_auto_scaling_group(
            AutoScalingGroupName=ASG,
            LaunchTemplate={"LaunchTemplateId": lt["LaunchTemplate"]["LaunchTemplateId"], "Version": "$Latest"},
            MinSize=1, MaxSize=asg_max, DesiredCapacity=1, AvailabilityZones=["us-east-1a", "us-east-1b"],
            Tags=[{"Key": "k8s.io/cluster-autoscaler/enabled", "Value": "true", "PropagateAtLaunch": False}])

        self.cache = self._keep(SegmentCache(self.moto.url, BUCKET, capacity=cache_capacity))
        self.milvus = self._keep(Milvus(s3={"port": self.cache.port, "bucket": BUCKET,
                                            "access_key": ACCESS_KEY, "secret_key": SECRET_KEY}))

        self.api_port = free_port()
        self.keda_port = free_port()
        config = {
            "milvus": [{"name": "demo", "namespace": "default",
                        "scrape": {"targets": [self.milvus.metrics_url], "interval": "1s"}}],
            "signals": {"window": window, "stale_after": "10s"},
            # Development mode: self-signed serving certificate, no front-proxy client certificates.
            "external_metrics": {"listen": f"127.0.0.1:{self.api_port}"},
            "keda": {"listen": f"127.0.0.1:{self.keda_port}"},
            "node_groups": {
                "region": "us-east-1", "endpoint_url": self.moto.url, "interval": planner_interval,
                "mode": "apply", "min_change_interval": "0s",
                "groups": [{
                    "name": "querynodes", "asg": ASG, "milvus": "demo", "instance_type": "r6i.2xlarge",
                    "pod": {"cpu": "4", "memory": "28Gi"},
                    "replicas": {"signal": "search_queue_depth", "target_per_pod": QUEUE_TARGET_PER_POD,
                                 "min": 1, "max": 30},
                }],
            },
        }
        self.scaler = self._keep(Scaler(config, env=self.moto.env()))
        wait_until(lambda: port_open(self.api_port) and port_open(self.keda_port), 30,
                   "the external metrics and KEDA ports", proc=self.scaler.service)
        self.kubeconfig = self._write_kubeconfig()

        self.prometheus = None
        if prometheus:
            rules = sorted(str(p) for p in (REPO / "grafana").glob("*/*.yaml")
                           if p.parent.name in ("recording", "alerts"))
            self.prometheus = self._keep(Prometheus([
                {"job_name": "milvus", "static_configs": [{"targets": [f"127.0.0.1:{self.milvus.metrics_port}"]}]},
                {"job_name": "milvus-scaler-telemetry",
                 "static_configs": [{"targets": [f"127.0.0.1:{self.scaler.telemetry_port}"]}]},
                {"job_name": "segment-cache",
                 "static_configs": [{"targets": [f"127.0.0.1:{self.cache.telemetry_port}"]}]},
            ], scrape_interval="5s", rule_files=rules))

    def _keep(self, part):
        self.parts.append(part)
        return part

    def _write_kubeconfig(self) -> Path:
        path = self.dir / "kubeconfig"
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "milvus-scaler",
            "clusters": [{"name": "local", "cluster": {"server": f"https://127.0.0.1:{self.api_port}",
                                                        "insecure-skip-tls-verify": True}}],
            "users": [{"name": "dev", "user": {"token": "unused-in-development-mode"}}],
            "contexts": [{"name": "milvus-scaler", "context": {"cluster": "local", "user": "dev"}}],
        }))
        return path

    def asg_desired(self) -> int:
        groups = self.moto.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[ASG])
        return groups["AutoScalingGroups"][0]["DesiredCapacity"]

    def info(self) -> str:
        prom = f"\n  Prometheus:              {self.prometheus.url}" if self.prometheus else ""
        return f"""  Milvus gRPC:             {self.milvus.uri}   (metrics {self.milvus.metrics_url})
  segment-cache (S3 API):  {self.cache.url}   (metrics {self.cache.telemetry}/metrics)
  moto (S3 + AutoScaling): {self.moto.url}   bucket {BUCKET}, group {ASG}
  milvus-scaler telemetry: {self.scaler.telemetry}/metrics
  external metrics API:    kubectl --kubeconfig {self.kubeconfig} get --raw \\
      '/apis/external.metrics.k8s.io/v1beta1/namespaces/default/milvus_search_queue_depth?labelSelector=milvus%3Ddemo'
  KEDA external scaler:    grpcurl -plaintext -d '{{"scaledObjectRef":{{"name":"q","namespace":"default","scalerMetadata":{{"milvus":"demo","signal":"search_queue_depth","target":"{QUEUE_TARGET_PER_POD}"}}}},"metricName":"milvus_search_queue_depth"}}' \\
      127.0.0.1:{self.keda_port} externalscaler.ExternalScaler/GetMetrics{prom}
  config:                  {self.scaler.config_path}"""

    def restart_milvus(self) -> None:
        """Stops Milvus and starts it again on the same data directory (the cache keeps its disk)."""
        data = self.milvus.dir
        self.milvus.stop()
        self.parts.remove(self.milvus)
        self.milvus = Milvus(data_dir=data, s3={"port": self.cache.port, "bucket": BUCKET,
                                                "access_key": ACCESS_KEY, "secret_key": SECRET_KEY})
        self.parts.insert(2, self.milvus)

    def stop(self) -> None:
        for part in reversed(self.parts):
            try:
                part.stop()
            except Exception as e:  # keep stopping the rest
                print(f"stopping {type(part).__name__}: {e}")
        self.parts.clear()


def telemetry_value(url: str, name: str, **labels) -> float | None:
    """Sum of the samples of `name` with `labels` on a /metrics page, None if there is none."""
    return promtext.value_sum(promtext.fetch(url), name, **labels)
