//! The `node_groups:` section of the milvus-scaler configuration file.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use milvus_signals::Signal;
use serde::{Deserialize, Deserializer};
use yaml_config::Invalid;

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

/// Where a group's node capacity comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeSource {
    /// The built-in instance table ([`instances::builtin`]).
    BuiltIn,
    /// `node_groups.instance_types`.
    InstanceTypes,
    /// The group's own `allocatable`.
    Allocatable,
}

impl fmt::Display for NodeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeSource::BuiltIn => "built-in table",
            NodeSource::InstanceTypes => "node_groups.instance_types",
            NodeSource::Allocatable => "allocatable",
        })
    }
}

/// A group with everything resolved: the node's usable capacity known and where it came from.
#[derive(Debug, Clone)]
pub struct ResolvedGroup {
    /// The configuration as written.
    pub config: GroupConfig,
    /// The node's capacity before the reservation.
    pub node: InstanceCapacity,
    /// Where `node` comes from.
    pub node_source: NodeSource,
    /// The per-node reservation.
    pub reserved: Resources,
}

/// The `node_groups:` section, validated: the settings as written and every group resolved.
/// Only [`NodeGroups::resolve`] makes one, so holding one means the section is valid.
#[derive(Debug, Clone)]
pub struct NodeGroups {
    config: NodeGroupsConfig,
    groups: Vec<ResolvedGroup>,
}

impl NodeGroups {
    /// Validates `config` and resolves its groups; `milvus_names` are the configured Milvus
    /// instances. Errors name the key below `node_groups`.
    pub fn resolve(config: NodeGroupsConfig, milvus_names: &[&str]) -> Result<Self, Invalid> {
        let groups = config.resolve_groups(milvus_names)?;
        Ok(Self { config, groups })
    }

    /// The section as written.
    pub fn config(&self) -> &NodeGroupsConfig {
        &self.config
    }

    /// The groups, resolved, in configuration order.
    pub fn groups(&self) -> &[ResolvedGroup] {
        &self.groups
    }
}

impl NodeGroupsConfig {
    fn resolve_groups(&self, milvus_names: &[&str]) -> Result<Vec<ResolvedGroup>, Invalid> {
        if self.interval < Duration::from_secs(1) {
            return Err(Invalid::new(
                "interval",
                format!("must be at least 1s, found {:?}", self.interval),
            ));
        }
        if self.retry.max_attempts == 0 {
            return Err(Invalid::new("retry.max_attempts", "must be at least 1"));
        }
        if let Some(u) = &self.endpoint_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return Err(Invalid::new(
                "endpoint_url",
                format!("expected an http:// or https:// URL, found {u:?}"),
            ));
        }
        if self.groups.is_empty() {
            return Err(Invalid::new("groups", "expected at least one group"));
        }
        let mut names = BTreeSet::new();
        let mut asgs = BTreeSet::new();
        let mut out = Vec::new();
        for (i, g) in self.groups.iter().enumerate() {
            let at = |k: &str| format!("groups[{i}].{k}");
            if g.name.is_empty() || !names.insert(g.name.as_str()) {
                return Err(Invalid::new(
                    at("name"),
                    format!("expected a unique non-empty name, found {:?}", g.name),
                ));
            }
            if g.asg.is_empty() || !asgs.insert(g.asg.as_str()) {
                return Err(Invalid::new(
                    at("asg"),
                    format!(
                        "expected a unique non-empty Auto Scaling group name, found {:?}",
                        g.asg
                    ),
                ));
            }
            if !milvus_names.contains(&g.milvus.as_str()) {
                return Err(Invalid::new(
                    at("milvus"),
                    format!(
                        "no Milvus instance named {:?} is configured (have: {})",
                        g.milvus,
                        milvus_names.join(", ")
                    ),
                ));
            }
            if !(g.replicas.target_per_pod.is_finite() && g.replicas.target_per_pod > 0.0) {
                return Err(Invalid::new(
                    at("replicas.target_per_pod"),
                    format!(
                        "must be a positive number, found {}",
                        g.replicas.target_per_pod
                    ),
                ));
            }
            if g.replicas.max == 0 || g.replicas.min > g.replicas.max {
                return Err(Invalid::new(
                    at("replicas.max"),
                    format!(
                        "must be at least 1 and at least replicas.min ({}), found {}",
                        g.replicas.min, g.replicas.max
                    ),
                ));
            }
            if g.pod.cpu.0 == 0 && g.pod.memory.0 == 0 {
                return Err(Invalid::new(
                    at("pod"),
                    "expected a non-zero cpu or memory request",
                ));
            }
            let (node, node_source) = if let Some(a) = g.allocatable {
                (
                    InstanceCapacity {
                        cpu: a.cpu,
                        memory: a.memory,
                    },
                    NodeSource::Allocatable,
                )
            } else if let Some(r) = self.instance_types.get(&g.instance_type) {
                (
                    InstanceCapacity {
                        cpu: r.cpu,
                        memory: r.memory,
                    },
                    NodeSource::InstanceTypes,
                )
            } else if let Some(c) = instances::builtin(&g.instance_type) {
                (c, NodeSource::BuiltIn)
            } else {
                return Err(Invalid::new(
                    at("instance_type"),
                    format!(
                        "{:?} is not in the built-in table ({}); give its capacity in node_groups.instance_types or the group's allocatable",
                        g.instance_type,
                        instances::families().collect::<Vec<_>>().join(", ")
                    ),
                ));
            };
            let reserved = g.reserved.unwrap_or(self.reserved);
            let group = ResolvedGroup {
                config: g.clone(),
                node,
                node_source,
                reserved,
            };
            if crate::planner::pods_per_node(&group).0 == 0 {
                return Err(Invalid::new(
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
            out.push(group);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GROUP: &str = r#"
groups:
  - name: q
    asg: a
    milvus: prod
    instance_type: r6i.2xlarge
    pod: { cpu: "2", memory: 8Gi }
    replicas: { signal: search_queue_depth, target_per_pod: 8, max: 40 }
"#;

    fn parse(text: &str) -> Result<NodeGroupsConfig, yaml_config::ConfigError> {
        yaml_config::parse(text, "ng.yaml")
    }

    fn invalid_path(text: &str) -> String {
        match parse(text) {
            Err(yaml_config::ConfigError::Invalid { path, message, .. }) => {
                assert!(!message.is_empty());
                path
            }
            Err(e) => panic!("{e}"),
            Ok(cfg) => match NodeGroups::resolve(cfg, &["prod"]) {
                Err(e) => e.path,
                Ok(_) => panic!("expected an error for\n{text}"),
            },
        }
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

    #[test]
    fn node_capacity_says_where_it_comes_from() {
        let ng = NodeGroups::resolve(parse(GROUP).unwrap(), &["prod"]).unwrap();
        assert_eq!(ng.groups()[0].node_source, NodeSource::BuiltIn);
        let text = format!(
            "instance_types: {{ x9.huge: {{ cpu: \"16\", memory: 64Gi }} }}\n{}",
            GROUP.replace("r6i.2xlarge", "x9.huge")
        );
        let ng = NodeGroups::resolve(parse(&text).unwrap(), &["prod"]).unwrap();
        assert_eq!(ng.groups()[0].node_source, NodeSource::InstanceTypes);
        assert_eq!(ng.groups()[0].node.cpu, Cpu::cores(16));
        let text = GROUP.replace(
            "    pod:",
            "    allocatable: { cpu: \"6\", memory: 40Gi }\n    pod:",
        );
        let ng = NodeGroups::resolve(parse(&text).unwrap(), &["prod"]).unwrap();
        assert_eq!(ng.groups()[0].node_source, NodeSource::Allocatable);
        assert_eq!(ng.groups()[0].node_source.to_string(), "allocatable");
    }

    #[test]
    fn the_unknown_instance_type_message_lists_the_table_families() {
        let cfg = parse(&GROUP.replace("r6i.2xlarge", "x9.huge")).unwrap();
        let e = NodeGroups::resolve(cfg, &["prod"]).unwrap_err();
        assert_eq!(e.path, "groups[0].instance_type");
        let listed = instances::families().collect::<Vec<_>>().join(", ");
        assert!(e.message.contains(&listed), "{}", e.message);
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (format!("interval: 500ms\n{GROUP}"), "interval"),
            (
                format!("retry: {{ max_attempts: 0 }}\n{GROUP}"),
                "retry.max_attempts",
            ),
            (format!("endpoint_url: localhost\n{GROUP}"), "endpoint_url"),
            ("groups: []".to_string(), "groups"),
            (GROUP.replace("name: q", "name: \"\""), "groups[0].name"),
            (
                GROUP.replace("milvus: prod", "milvus: dev"),
                "groups[0].milvus",
            ),
            (
                GROUP.replace("target_per_pod: 8", "target_per_pod: 0"),
                "groups[0].replicas.target_per_pod",
            ),
            (
                GROUP.replace("max: 40", "min: 5, max: 4"),
                "groups[0].replicas.max",
            ),
            (
                GROUP.replace("cpu: \"2\", memory: 8Gi", "cpu: \"0\", memory: \"0\""),
                "groups[0].pod",
            ),
            (GROUP.replace("cpu: \"2\"", "cpu: \"9\""), "groups[0].pod"),
            (GROUP.replace("replicas:", "replica:"), "groups[0].replica"),
        ];
        for (text, path) in cases {
            assert_eq!(invalid_path(&text), path, "{text}");
        }
        // Two groups: names and ASGs are unique.
        let two = format!("{GROUP}{}", &GROUP["\ngroups:\n".len()..]);
        assert_eq!(invalid_path(&two), "groups[1].name");
        let two = format!(
            "{GROUP}{}",
            &GROUP["\ngroups:\n".len()..].replace("name: q", "name: q2")
        );
        assert_eq!(invalid_path(&two), "groups[1].asg");
    }
}
