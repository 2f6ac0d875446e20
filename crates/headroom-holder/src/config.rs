//! The `headroom:` section of the milvus-scaler configuration: which Milvus instance's demand
//! drives the planner, where the workload's pods are read, the planner's settings, and how the
//! headroom is held ([`HolderConfig`], one of three, chosen by its key).

use std::collections::BTreeSet;
use std::time::Duration;

pub use leader_lease::LeaderElectionConfig;
use leader_lease::config::check_name;
use serde::Deserialize;
use yaml_config::Invalid;

/// The Lease name of the headroom election when `leader_election.lease_name` is unset (the shipped
/// RBAC, `manifests/components/headroom/lease-rbac.yaml`, grants it).
pub const DEFAULT_LEASE_NAME: &str = "milvus-scaler-headroom";

/// The section as written (docs/headroom.md). Checks that span sections are in
/// [`HeadroomSection::validate`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadroomSection {
    /// The Milvus instance (a `milvus[].name`) whose `search_demand` sizes the headroom.
    pub milvus: String,
    /// Time between rounds in `serve`.
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// `dry-run` (default: plan, read, log and export; no write) or `apply`.
    #[serde(default)]
    pub mode: node_groups::Mode,
    /// The query-node Deployment whose `spec.replicas` are the workload's pods now.
    pub workload: DeploymentRef,
    /// The planner's settings (crates/headroom): pod capacity, time to ready, hold, floor, cap, peaks.
    pub planner: headroom::HeadroomConfig,
    /// How the headroom is held.
    pub holder: HolderConfig,
    /// Which replica holds the headroom when several run (a Lease; on by default in a pod in
    /// `mode: apply`).
    #[serde(default)]
    pub leader_election: LeaderElectionConfig,
}

fn default_interval() -> Duration {
    Duration::from_secs(15)
}

/// A Deployment, by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentRef {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub deployment: String,
}

/// How the headroom is held: one key of three, written as a map with that one key
/// (`placeholder:`, `capacity_buffer:` or `asg:`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "HolderFile")]
pub enum HolderConfig {
    /// The replicas of a placeholder Deployment of negative priority (shipped in
    /// `manifests/components/headroom/`; never created by milvus-scaler), set through its scale
    /// subresource. Works with Cluster Autoscaler, Karpenter and EKS Auto Mode.
    Placeholder(DeploymentRef),
    /// The `spec.replicas` of an `autoscaling.x-k8s.io/v1beta1` CapacityBuffer (Cluster
    /// Autoscaler; Karpenter behind a feature gate).
    CapacityBuffer(CapacityBufferRef),
    /// EC2 Auto Scaling desired capacity, through the `node_groups:` applier: the headroom pods
    /// become the named groups' `headroom_pods`, split evenly (rounded up) over them.
    Asg(AsgRef),
}

/// The holder as written: three optional keys, of which [`HolderConfig`] accepts exactly one.
/// (serde_yaml_ng reads an externally tagged enum only from a YAML tag, `!placeholder`, which
/// nobody writes by hand.)
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HolderFile {
    #[serde(default)]
    placeholder: Option<DeploymentRef>,
    #[serde(default)]
    capacity_buffer: Option<CapacityBufferRef>,
    #[serde(default)]
    asg: Option<AsgRef>,
}

impl TryFrom<HolderFile> for HolderConfig {
    type Error = &'static str;
    fn try_from(h: HolderFile) -> Result<Self, Self::Error> {
        match (h.placeholder, h.capacity_buffer, h.asg) {
            (Some(p), None, None) => Ok(HolderConfig::Placeholder(p)),
            (None, Some(b), None) => Ok(HolderConfig::CapacityBuffer(b)),
            (None, None, Some(a)) => Ok(HolderConfig::Asg(a)),
            (None, None, None) => Err(
                "expected exactly one of `placeholder`, `capacity_buffer` and `asg`, found none",
            ),
            _ => Err(
                "expected exactly one of `placeholder`, `capacity_buffer` and `asg`, found several",
            ),
        }
    }
}

/// A CapacityBuffer, by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacityBufferRef {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// The `node_groups.groups[]` entries that hold the headroom (the query nodes' groups, one
/// per zone).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AsgRef {
    /// Names of `node_groups.groups[]` entries.
    pub groups: Vec<String>,
}

impl HolderConfig {
    /// The key it is written under: `placeholder`, `capacity_buffer` or `asg`.
    pub fn key(&self) -> &'static str {
        match self {
            HolderConfig::Placeholder(_) => "placeholder",
            HolderConfig::CapacityBuffer(_) => "capacity_buffer",
            HolderConfig::Asg(_) => "asg",
        }
    }
}

impl HeadroomSection {
    /// Checks what spans keys and sections: the Milvus instance exists, names are Kubernetes
    /// names, and `holder.asg.groups` are configured node groups whose workload is sized on
    /// the same signal and target as the planner (`node_groups`: the resolved section, if any).
    /// Errors name the key below `headroom`.
    pub fn validate(
        &self,
        milvus_names: &[&str],
        node_groups: Option<&node_groups::NodeGroups>,
    ) -> Result<(), Invalid> {
        if !milvus_names.contains(&self.milvus.as_str()) {
            return Err(Invalid::new(
                "milvus",
                format!(
                    "no Milvus instance named {:?} is configured (have: {})",
                    self.milvus,
                    milvus_names.join(", ")
                ),
            ));
        }
        if self.interval < Duration::from_secs(1) {
            return Err(Invalid::new(
                "interval",
                format!("must be at least 1s, found {:?}", self.interval),
            ));
        }
        self.leader_election
            .validate()
            .map_err(|e| e.under("leader_election"))?;
        check_name("workload.namespace", &self.workload.namespace)?;
        check_name("workload.deployment", &self.workload.deployment)?;
        match &self.holder {
            HolderConfig::Placeholder(d) => {
                check_name("holder.placeholder.namespace", &d.namespace)?;
                check_name("holder.placeholder.deployment", &d.deployment)?;
                if *d == self.workload {
                    return Err(Invalid::new(
                        "holder.placeholder.deployment",
                        format!(
                            "is the workload itself ({}/{}): the placeholder is its own Deployment (manifests/components/headroom)",
                            d.namespace, d.deployment
                        ),
                    ));
                }
            }
            HolderConfig::CapacityBuffer(b) => {
                check_name("holder.capacity_buffer.namespace", &b.namespace)?;
                check_name("holder.capacity_buffer.name", &b.name)?;
            }
            HolderConfig::Asg(a) => {
                if a.groups.is_empty() {
                    return Err(Invalid::new(
                        "holder.asg.groups",
                        "expected at least one node_groups.groups[].name",
                    ));
                }
                let mut seen = BTreeSet::new();
                for (i, g) in a.groups.iter().enumerate() {
                    if !seen.insert(g.as_str()) {
                        return Err(Invalid::new(
                            format!("holder.asg.groups[{i}]"),
                            format!("group {g:?} is listed twice"),
                        ));
                    }
                }
                let n = a.groups.len() as f64;
                for (i, g) in a.groups.iter().enumerate() {
                    let key = format!("holder.asg.groups[{i}]");
                    let Some(ng) = node_groups else {
                        return Err(Invalid::new(
                            key,
                            format!(
                                "group {g:?}: the asg holder needs a node_groups section with that group (docs/node-groups.md)"
                            ),
                        ));
                    };
                    let Some(group) = ng.groups().iter().find(|r| r.config.name == *g) else {
                        let names: Vec<&str> =
                            ng.groups().iter().map(|r| r.config.name.as_str()).collect();
                        return Err(Invalid::new(
                            key,
                            format!(
                                "no node_groups.groups[] entry is named {g:?} (have: {})",
                                names.join(", ")
                            ),
                        ));
                    };
                    // One target for planner, node groups and HPA: the groups split the workload
                    // evenly, so each plans `n` times the per-pod target on the same signal.
                    let r = &group.config.replicas;
                    let want = self.planner.pod_capacity() * n;
                    if r.signal != milvus_signals::Signal::SearchDemand
                        || (r.target_per_pod - want).abs() > 1e-9 * want
                        || group.config.milvus != self.milvus
                    {
                        return Err(Invalid::new(
                            key,
                            format!(
                                "group {g:?} plans {} {} per pod of Milvus {:?}; holding headroom for {} needs search_demand {want} per pod ({} groups x planner.pod_capacity {}) of Milvus {:?}, the same target as the HPA",
                                r.signal,
                                r.target_per_pod,
                                group.config.milvus,
                                self.milvus,
                                a.groups.len(),
                                self.planner.pod_capacity(),
                                self.milvus
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLANNER: &str = "planner:
  pod_capacity: 60
  time_to_ready: {node_launch: 100s, load: 20s}
  growth_window: 5m
  hold: 10m
  step_down_interval: 1m
  floor: 1
  cap: 8
";

    /// Three per-zone query-node groups planning `target` search_demand per pod.
    fn node_groups(target: f64) -> node_groups::NodeGroups {
        let groups: String = ["a", "b", "c"]
            .iter()
            .map(|z| {
                format!(
                    "  - {{name: querynodes-{z}, asg: asg-{z}, milvus: prod, instance_type: r6id.2xlarge, pod: {{cpu: '5', memory: 29Gi}}, replicas: {{signal: search_demand, target_per_pod: {target}, min: 1, max: 7}}}}\n"
                )
            })
            .collect();
        let cfg: node_groups::NodeGroupsConfig =
            yaml_config::from_str(&format!("groups:\n{groups}")).unwrap();
        node_groups::NodeGroups::resolve(cfg, &["prod"]).unwrap()
    }

    fn parse(holder: &str) -> Result<HeadroomSection, Invalid> {
        let text = format!(
            "milvus: prod\nmode: apply\nworkload: {{namespace: milvus, deployment: milvus-querynode}}\n{PLANNER}holder:\n{holder}"
        );
        yaml_config::from_str(&text)
    }

    #[test]
    fn each_holder_parses_into_its_variant() {
        let p = parse("  placeholder: {namespace: milvus, deployment: milvus-querynode-headroom}")
            .unwrap();
        assert_eq!(
            p.holder,
            HolderConfig::Placeholder(DeploymentRef {
                namespace: "milvus".into(),
                deployment: "milvus-querynode-headroom".into()
            })
        );
        assert_eq!(p.interval, Duration::from_secs(15), "the default interval");
        assert_eq!(p.mode, node_groups::Mode::Apply);
        assert_eq!(p.planner.cap(), 8);
        let b = parse("  capacity_buffer: {namespace: milvus, name: querynodes}").unwrap();
        assert_eq!(b.holder.key(), "capacity_buffer");
        let a = parse("  asg: {groups: [querynodes-a, querynodes-b]}").unwrap();
        assert_eq!(
            a.holder,
            HolderConfig::Asg(AsgRef {
                groups: vec!["querynodes-a".into(), "querynodes-b".into()]
            })
        );
    }

    #[test]
    fn unknown_holders_and_keys_are_refused_naming_them() {
        let err = parse("  balloon: {namespace: milvus}").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("balloon"), "{text}");
        assert!(
            text.contains("placeholder")
                && text.contains("capacity_buffer")
                && text.contains("asg"),
            "the known holders are listed: {text}"
        );
        let two = "  placeholder: {namespace: milvus, deployment: h}\n  asg: {groups: [a]}";
        let err = parse(two).unwrap_err();
        assert!(err.to_string().contains("found several"), "{err}");
        let err = parse("  placeholder: {namespace: milvus, name: x}").unwrap_err();
        assert!(err.to_string().contains("name"), "{err}");
        let err =
            parse("  capacity_buffer: {namespace: milvus, name: q, replicas: 2}").unwrap_err();
        assert!(err.to_string().contains("replicas"), "{err}");
    }

    #[test]
    fn validation_names_the_key() {
        let p = parse("  placeholder: {namespace: milvus, deployment: Bad_Name}").unwrap();
        let err = p.validate(&["prod"], None).unwrap_err();
        assert_eq!(err.path, "holder.placeholder.deployment", "{err:?}");

        let p = parse("  placeholder: {namespace: milvus, deployment: milvus-querynode}").unwrap();
        let err = p.validate(&["prod"], None).unwrap_err();
        assert!(err.message.contains("workload itself"), "{err:?}");

        let p = parse("  capacity_buffer: {namespace: milvus, name: q}").unwrap();
        let err = p.validate(&["other"], None).unwrap_err();
        assert_eq!(err.path, "milvus");
        p.validate(&["prod"], None).unwrap();

        let ng = node_groups(180.0);
        let a = parse("  asg: {groups: [querynodes-a, querynodes-b, querynodes-z]}").unwrap();
        let err = a.validate(&["prod"], Some(&ng)).unwrap_err();
        assert_eq!(err.path, "holder.asg.groups[2]");
        assert!(err.message.contains("querynodes-z"), "{err:?}");
        let err = a.validate(&["prod"], None).unwrap_err();
        assert!(
            err.message.contains("needs a node_groups section"),
            "{err:?}"
        );
        let dup = parse("  asg: {groups: [querynodes-a, querynodes-a]}").unwrap();
        assert!(
            dup.validate(&["prod"], Some(&ng))
                .unwrap_err()
                .message
                .contains("twice")
        );
        let three = parse("  asg: {groups: [querynodes-a, querynodes-b, querynodes-c]}").unwrap();
        three.validate(&["prod"], Some(&ng)).unwrap();
        // A target that is not 3 x the planner's 60 per pod: the two would size different pods.
        let err = three
            .validate(&["prod"], Some(&node_groups(120.0)))
            .unwrap_err();
        assert!(
            err.message.contains("needs search_demand 180 per pod"),
            "{err:?}"
        );
    }

    #[test]
    fn leader_election_defaults_and_errors_are_named_under_the_section() {
        // The settings themselves are tested in crates/leader-lease; here: the section's default
        // Lease name and that its errors are named below `leader_election`.
        let p = parse("  placeholder: {namespace: milvus, deployment: h}").unwrap();
        let le = &p.leader_election;
        assert_eq!(le, &LeaderElectionConfig::default());
        assert_eq!(
            le.lease_name_or(DEFAULT_LEASE_NAME),
            "milvus-scaler-headroom"
        );
        p.validate(&["prod"], None).unwrap();

        let with = |le: &str| {
            parse(&format!(
                "  placeholder: {{namespace: milvus, deployment: h}}\nleader_election: {le}"
            ))
        };
        let p = with("{enabled: true, lease_name: headroom, namespace: ops, lease_duration: 30s, renew_deadline: 20s, retry_period: 5s}").unwrap();
        assert_eq!(p.leader_election.enabled, Some(true));
        assert_eq!(
            p.leader_election.lease_name_or(DEFAULT_LEASE_NAME),
            "headroom"
        );
        p.validate(&["prod"], None).unwrap();

        for (le, key) in [
            ("{renew_deadline: 15s}", "leader_election.renew_deadline"),
            ("{lease_name: Headroom_Lease}", "leader_election.lease_name"),
        ] {
            let err = with(le).unwrap().validate(&["prod"], None).unwrap_err();
            assert_eq!(err.path, key, "{le}: {err:?}");
        }
        let err = with("{lease: x}").unwrap_err();
        assert!(err.to_string().contains("lease"), "{err}");
    }
}
