//! The `node_groups:` section of the milvus-scaler configuration file, as written: the types serde
//! reads it into. Checks that span keys, and what the section resolves to, are in [`crate::group`].

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use milvus_signals::Signal;
use serde::{Deserialize, Deserializer};

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
    /// Which replica writes the groups when several run (a Lease, [`crate::DEFAULT_LEASE_NAME`]
    /// unless named; on by default in a pod in `mode: apply`). Used by the standalone loop of
    /// `serve`; with the headroom `asg` holder, `headroom.leader_election` decides instead.
    #[serde(default)]
    pub leader_election: leader_lease::LeaderElectionConfig,
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
    /// Signal from the catalogue, written by name (e.g. `search_queue_depth`), with or without
    /// `milvus_`; an unknown name is an error at load, naming the key and the known names.
    #[serde(deserialize_with = "signal_by_name")]
    pub signal: Signal,
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
    /// The state of the pool's instances.
    #[serde(default)]
    pub pool_state: PoolState,
}

/// The state warm-pool instances wait in, spelt as the Auto Scaling API spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum PoolState {
    /// Stopped instances (the API's default): EBS only, no compute charge.
    #[default]
    Stopped,
    /// Running instances: ready soonest, charged as running.
    Running,
    /// Hibernated instances: memory kept on EBS.
    Hibernated,
}

impl PoolState {
    /// Every state, in the order the API documents them.
    pub const ALL: [PoolState; 3] = [
        PoolState::Stopped,
        PoolState::Running,
        PoolState::Hibernated,
    ];

    /// The API's name of the state (`Stopped`, `Running`, `Hibernated`).
    pub fn as_str(self) -> &'static str {
        match self {
            PoolState::Stopped => "Stopped",
            PoolState::Running => "Running",
            PoolState::Hibernated => "Hibernated",
        }
    }

    /// The state the API names `name`, or `None` for one this code does not know.
    pub fn from_api(name: &str) -> Option<PoolState> {
        PoolState::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for PoolState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Reads a signal name (`search_queue_depth` or `milvus_search_queue_depth`) into a [`Signal`].
fn signal_by_name<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Signal, D::Error> {
    let name = String::deserialize(deserializer)?;
    name.parse().map_err(serde::de::Error::custom)
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One valid group, the base the config and group tests vary.
    pub(crate) const GROUP: &str = r#"
groups:
  - name: q
    asg: a
    milvus: prod
    instance_type: r6i.2xlarge
    pod: { cpu: "2", memory: 8Gi }
    replicas: { signal: search_queue_depth, target_per_pod: 8, max: 40 }
"#;

    /// Parses a `node_groups` section as the loader does.
    pub(crate) fn parse(text: &str) -> Result<NodeGroupsConfig, yaml_config::ConfigError> {
        yaml_config::parse(text, "ng.yaml")
    }

    #[test]
    fn signal_and_pool_state_are_parsed_at_load() {
        let cfg = parse(&format!("{GROUP}    warm_pool: {{ min_size: 1 }}\n")).unwrap();
        let g = &cfg.groups[0];
        assert_eq!(g.replicas.signal, Signal::SearchQueueDepth);
        assert_eq!(g.warm_pool.as_ref().unwrap().pool_state, PoolState::Stopped);
        // The `milvus_` prefix is accepted, as in external metric names.
        let cfg = parse(&GROUP.replace("search_queue_depth", "milvus_search_rate")).unwrap();
        assert_eq!(cfg.groups[0].replicas.signal, Signal::SearchRate);
        let cfg = parse(&format!(
            "{GROUP}    warm_pool: {{ min_size: 1, pool_state: Hibernated }}\n"
        ))
        .unwrap();
        assert_eq!(
            cfg.groups[0].warm_pool.as_ref().unwrap().pool_state,
            PoolState::Hibernated
        );
    }

    #[test]
    fn unknown_names_are_errors_naming_the_key_and_the_choices() {
        let e = parse(&GROUP.replace("search_queue_depth", "cpu"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("ng.yaml: groups[0].replicas.signal: unknown signal \"cpu\""),
            "{e}"
        );
        assert!(
            e.contains("search_queue_depth, "),
            "lists the known names: {e}"
        );
        let e = parse(&format!(
            "{GROUP}    warm_pool: {{ min_size: 1, pool_state: Paused }}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("ng.yaml: groups[0].warm_pool.pool_state: "),
            "{e}"
        );
        assert!(e.contains("`Stopped`, `Running`, `Hibernated`"), "{e}");
    }
}
