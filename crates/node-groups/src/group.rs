//! A node group resolved from its configuration: the section validated once, each group with
//! its node's capacity and where that came from, and the pods one node holds. The planner and the
//! runner work on these; [`crate::config`] only describes the YAML, so the dependency goes one way:
//! config <- group <- planner <- applier.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use yaml_config::Invalid;

use crate::config::{GroupConfig, NodeGroupsConfig, Resources};
use crate::instances::{self, InstanceCapacity};

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
        config
            .leader_election
            .validate()
            .map_err(|e| e.under("leader_election"))?;
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
            if pods_per_node(&group).0 == 0 {
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

/// Workload pods that fit on one node of `group` after the reservation, and why.
pub fn pods_per_node(group: &ResolvedGroup) -> (u32, String) {
    let pod = group.config.pod;
    let cpu = group.node.cpu.0.saturating_sub(group.reserved.cpu.0);
    let mem = group.node.memory.0.saturating_sub(group.reserved.memory.0);
    let by_cpu = cpu.checked_div(pod.cpu.0).unwrap_or(u64::MAX);
    let by_mem = mem.checked_div(pod.memory.0).unwrap_or(u64::MAX);
    let n = by_cpu.min(by_mem).min(u64::from(u32::MAX)) as u32;
    let limit = if by_cpu <= by_mem { "CPU" } else { "memory" };
    let reason = format!(
        "{n} pod(s) of {} CPU/{} per {} ({}: {} CPU/{} minus reserved {} CPU/{}), limited by {limit}",
        pod.cpu,
        pod.memory,
        group.config.instance_type,
        group.node_source,
        group.node.cpu,
        group.node.memory,
        group.reserved.cpu,
        group.reserved.memory,
    );
    (n, reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{GROUP, parse};
    use crate::quantity::Cpu;

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
    fn leader_election_defaults_to_its_own_lease() {
        let ng = NodeGroups::resolve(parse(GROUP).unwrap(), &["prod"]).unwrap();
        let le = &ng.config().leader_election;
        assert_eq!(le, &leader_lease::LeaderElectionConfig::default());
        assert_eq!(
            le.lease_name_or(crate::DEFAULT_LEASE_NAME),
            "milvus-scaler-node-groups"
        );
        let text = format!(
            "leader_election: {{ enabled: true, lease_name: ng, namespace: ops, lease_duration: 30s, renew_deadline: 20s, retry_period: 5s }}\n{GROUP}"
        );
        let ng = NodeGroups::resolve(parse(&text).unwrap(), &["prod"]).unwrap();
        let le = &ng.config().leader_election;
        assert_eq!((le.enabled, le.lease_name_or("x")), (Some(true), "ng"));
        assert_eq!(le.retry_period, Duration::from_secs(5));
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
            (
                format!("leader_election: {{ renew_deadline: 20s }}\n{GROUP}"),
                "leader_election.renew_deadline",
            ),
            (
                format!("leader_election: {{ lease_name: Node_Groups }}\n{GROUP}"),
                "leader_election.lease_name",
            ),
            (
                format!("leader_election: {{ lease: x }}\n{GROUP}"),
                "leader_election.lease",
            ),
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
