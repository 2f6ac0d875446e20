//! The `node_groups:` section of the milvus-scaler configuration file.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use milvus_signals::Signal;
use serde::Deserialize;

use crate::instances::{self, InstanceCapacity};
use crate::quantity::{Cpu, Memory};

/// Node-group sizing settings: where the Auto Scaling API is and which groups to size.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeGroupsConfig {
    /// AWS region; defaults to the standard chain (`AWS_REGION`, profile), then `us-east-1`.
    #[serde(default)]
    pub region: Option<String>,
    /// Auto Scaling endpoint override, for tests and local emulators only (e.g. `http://127.0.0.1:5000`).
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// Time between planning rounds in `serve`.
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// `dry-run` (default: log and export the plan, no mutating call) or `apply`.
    #[serde(default)]
    pub mode: Mode,
    /// Minimum time between two changes of one group's capacity.
    #[serde(default = "default_min_change_interval", with = "humantime_serde")]
    pub min_change_interval: Duration,
    /// Retries of throttled, 5xx and unreachable-endpoint API calls.
    #[serde(default)]
    pub retry: RetryConfig,
    /// CPU and memory of each node kept for system pods and DaemonSets (kubelet, kube-proxy,
    /// CNI, log shipper...); a group's own `reserved` overrides it.
    #[serde(default)]
    pub reserved: Resources,
    /// Capacities of instance types missing from the built-in table (or overriding it).
    #[serde(default)]
    pub instance_types: BTreeMap<String, Resources>,
    /// The groups to size.
    pub groups: Vec<GroupConfig>,
}

/// Whether the applier may call mutating APIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Log and export the plan only.
    #[default]
    DryRun,
    /// Call `SetDesiredCapacity` / `PutWarmPool` when the plan differs.
    Apply,
}

/// Backoff settings of API retries.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts per call, including the first.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Wait before the first retry; doubles each retry.
    #[serde(default = "default_initial_backoff", with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Longest wait between two attempts.
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: default_attempts(),
            initial_backoff: default_initial_backoff(),
            max_backoff: default_max_backoff(),
        }
    }
}

/// CPU and memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPU, a Kubernetes quantity (`"4"`, `"500m"`).
    pub cpu: Cpu,
    /// Memory, a Kubernetes quantity (`"28Gi"`).
    pub memory: Memory,
}

impl Default for Resources {
    /// The default reservation: 500m CPU and 2Gi memory per node.
    fn default() -> Self {
        Self {
            cpu: Cpu(500),
            memory: Memory::gib(2),
        }
    }
}

/// One node group: the workload on it, its Auto Scaling group and how to size it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// Group name (label `group` of the metrics); unique.
    pub name: String,
    /// The EC2 Auto Scaling group's name.
    pub asg: String,
    /// The Milvus instance (from `milvus:`) whose signal drives the workload.
    pub milvus: String,
    /// Instance type of the group's nodes (for a mixed instances policy: the common shape).
    pub instance_type: String,
    /// Allocatable CPU/memory of one node before `reserved`; defaults to the instance type's.
    #[serde(default)]
    pub allocatable: Option<Resources>,
    /// Per-node reservation for system pods and DaemonSets; defaults to `node_groups.reserved`.
    #[serde(default)]
    pub reserved: Option<Resources>,
    /// Resource requests of one workload pod.
    pub pod: Resources,
    /// The HPA / ScaledObject target of the workload.
    pub replicas: ReplicasConfig,
    /// Extra pods' worth of capacity kept free above the demand.
    #[serde(default)]
    pub headroom_pods: u32,
    /// Whether the planner may lower desired capacity (default false: Cluster Autoscaler
    /// removes idle nodes).
    #[serde(default)]
    pub scale_in: bool,
    /// With `scale_in: true`, the highest plan of this window is kept (no flapping).
    #[serde(default = "default_stabilization", with = "humantime_serde")]
    pub scale_in_stabilization: Duration,
    /// Optional EC2 warm pool kept beside the group.
    #[serde(default)]
    pub warm_pool: Option<WarmPoolConfig>,
}

/// The workload's HPA arithmetic: `ceil(value / target_per_pod)` clamped to `[min, max]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicasConfig {
    /// Signal name from the catalogue (e.g. `search_queue_depth`), with or without `milvus_`.
    pub signal: String,
    /// The HPA's `AverageValue` target: signal units per pod.
    pub target_per_pod: f64,
    /// The workload's minimum replicas.
    #[serde(default)]
    pub min: u32,
    /// The workload's maximum replicas.
    pub max: u32,
}

/// Warm pool settings (`PutWarmPool`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmPoolConfig {
    /// Instances kept pre-initialised in the warm pool.
    pub min_size: u32,
    /// `Stopped` (default), `Running` or `Hibernated`.
    #[serde(default = "default_pool_state")]
    pub pool_state: String,
}

fn default_pool_state() -> String {
    "Stopped".to_string()
}
fn default_interval() -> Duration {
    Duration::from_secs(15)
}
fn default_min_change_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_attempts() -> u32 {
    4
}
fn default_initial_backoff() -> Duration {
    Duration::from_millis(200)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(5)
}
fn default_stabilization() -> Duration {
    Duration::from_secs(300)
}

/// A group with everything resolved: the signal parsed and the node's usable capacity known.
#[derive(Debug, Clone)]
pub struct ResolvedGroup {
    /// The configuration as written.
    pub config: GroupConfig,
    /// `replicas.signal`, parsed; `None` if it is not in the catalogue (the plan then holds).
    pub signal: Option<Signal>,
    /// The node's capacity before the reservation, and where it came from.
    pub node: InstanceCapacity,
    /// `"built-in table"`, `"node_groups.instance_types"` or `"allocatable"`.
    pub node_source: &'static str,
    /// The per-node reservation.
    pub reserved: Resources,
}

impl NodeGroupsConfig {
    /// Validates the section; errors are `(key path below node_groups, message)`.
    /// `milvus_names` are the configured Milvus instances.
    pub fn validate(&self, milvus_names: &[&str]) -> Result<Vec<ResolvedGroup>, (String, String)> {
        if self.interval < Duration::from_secs(1) {
            return Err(("interval".into(), "must be at least 1s".into()));
        }
        if self.retry.max_attempts == 0 {
            return Err(("retry.max_attempts".into(), "must be at least 1".into()));
        }
        if let Some(u) = &self.endpoint_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return Err((
                "endpoint_url".into(),
                format!("expected an http:// or https:// URL, found {u:?}"),
            ));
        }
        if self.groups.is_empty() {
            return Err(("groups".into(), "expected at least one group".into()));
        }
        let mut names = BTreeSet::new();
        let mut asgs = BTreeSet::new();
        let mut out = Vec::new();
        for (i, g) in self.groups.iter().enumerate() {
            let at = |k: &str| format!("groups[{i}].{k}");
            if g.name.is_empty() || !names.insert(g.name.as_str()) {
                return Err((
                    at("name"),
                    format!("expected a unique non-empty name, found {:?}", g.name),
                ));
            }
            if g.asg.is_empty() || !asgs.insert(g.asg.as_str()) {
                return Err((
                    at("asg"),
                    format!(
                        "expected a unique non-empty Auto Scaling group name, found {:?}",
                        g.asg
                    ),
                ));
            }
            if !milvus_names.contains(&g.milvus.as_str()) {
                return Err((
                    at("milvus"),
                    format!(
                        "no Milvus instance named {:?} is configured (have: {})",
                        g.milvus,
                        milvus_names.join(", ")
                    ),
                ));
            }
            // An unknown signal is rejected at start; the planner still copes (holds) if handed one.
            let signal = match Signal::from_name(&g.replicas.signal) {
                Some(s) => Some(s),
                None => {
                    return Err((
                        at("replicas.signal"),
                        milvus_signals::catalogue::UnknownSignal(g.replicas.signal.clone())
                            .to_string(),
                    ));
                }
            };
            if !(g.replicas.target_per_pod.is_finite() && g.replicas.target_per_pod > 0.0) {
                return Err((
                    at("replicas.target_per_pod"),
                    format!(
                        "must be a positive number, found {}",
                        g.replicas.target_per_pod
                    ),
                ));
            }
            if g.replicas.max == 0 || g.replicas.min > g.replicas.max {
                return Err((
                    at("replicas.max"),
                    format!(
                        "must be at least 1 and at least replicas.min ({})",
                        g.replicas.min
                    ),
                ));
            }
            if g.pod.cpu.0 == 0 && g.pod.memory.0 == 0 {
                return Err((
                    at("pod"),
                    "expected a non-zero cpu or memory request".into(),
                ));
            }
            let (node, node_source) = if let Some(a) = g.allocatable {
                (
                    InstanceCapacity {
                        cpu: a.cpu,
                        memory: a.memory,
                    },
                    "allocatable",
                )
            } else if let Some(r) = self.instance_types.get(&g.instance_type) {
                (
                    InstanceCapacity {
                        cpu: r.cpu,
                        memory: r.memory,
                    },
                    "node_groups.instance_types",
                )
            } else if let Some(c) = instances::builtin(&g.instance_type) {
                (c, "built-in table")
            } else {
                return Err((
                    at("instance_type"),
                    format!(
                        "{:?} is not in the built-in table ({}); give its capacity in node_groups.instance_types or the group's allocatable",
                        g.instance_type,
                        instances::builtin_families().join(", ")
                    ),
                ));
            };
            let reserved = g.reserved.unwrap_or(self.reserved);
            let group = ResolvedGroup {
                config: g.clone(),
                signal,
                node,
                node_source,
                reserved,
            };
            if crate::planner::pods_per_node(&group).0 == 0 {
                return Err((
                    at("pod"),
                    format!(
                        "a pod ({} CPU, {}) does not fit on a {} node ({} CPU, {}) after the reservation ({} CPU, {})",
                        g.pod.cpu,
                        g.pod.memory,
                        g.instance_type,
                        node.cpu,
                        node.memory,
                        reserved.cpu,
                        reserved.memory
                    ),
                ));
            }
            if let Some(w) = &g.warm_pool
                && !["Stopped", "Running", "Hibernated"].contains(&w.pool_state.as_str())
            {
                return Err((
                    at("warm_pool.pool_state"),
                    format!(
                        "expected Stopped, Running or Hibernated, found {:?}",
                        w.pool_state
                    ),
                ));
            }
            out.push(group);
        }
        Ok(out)
    }
}
