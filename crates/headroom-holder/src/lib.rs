//! Holding the node headroom that `crates/headroom` plans, in whatever the cluster's provisioner
//! understands, behind one small seam, [`HeadroomHolder`]:
//!
//! - [`k8s::PlaceholderDeployment`]: the replicas of a Deployment of low-priority placeholder
//!   pods, through its scale subresource (Cluster Autoscaler, Karpenter, EKS Auto Mode);
//! - [`k8s::CapacityBufferHolder`]: the `spec.replicas` of an `autoscaling.x-k8s.io`
//!   CapacityBuffer, by merge patch;
//! - [`asg::AsgHolder`]: EC2 Auto Scaling desired capacity, through node-groups' applier.
//!
//! [`round::HeadroomLoop`] ties the demand signal, the workload's pods ([`k8s::WorkloadScale`]),
//! the planner and a holder together; `milvus-scaler plan-nodes` runs one round, `serve` a loop.
//! Every holder reads before it writes, writes only a change, and writes nothing while the demand
//! is unknown ([`Demand::Unknown`]). Of several replicas only the holder of a Lease writes
//! (crates/leader-lease, [`ELECTION`]); the others plan and export, and write nothing.

use std::fmt;
use std::future::Future;

pub mod asg;
pub mod config;
pub mod error;
pub mod k8s;
pub mod metric_names;
pub mod round;

pub use config::{
    AsgRef, CapacityBufferRef, DeploymentRef, HeadroomSection, HolderConfig, LeaderElectionConfig,
};
pub use error::HoldError;

/// The headroom's leader election: its logs, metrics and RBAC manifest.
pub const ELECTION: leader_lease::Purpose = leader_lease::Purpose {
    what: "headroom",
    leader_metric: metric_names::LEADER,
    errors_metric: metric_names::LEASE_ERRORS,
    rbac_manifest: "manifests/components/headroom/lease-rbac.yaml",
};

/// What the holder is asked to hold this round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Demand {
    /// Hold this many query-node-shaped pods of headroom.
    Pods(u32),
    /// The demand (or the workload's pods) is unknown: hold what is there, write nothing.
    Unknown,
}

/// What a holder did in one round. Counts are in the holder's [`HeadroomHolder::unit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    /// Demand unknown: nothing written (the Kubernetes holders read nothing either).
    Blind,
    /// What is held equals the plan: no write.
    Unchanged {
        /// Held now.
        held: u32,
        /// What the object's status reports (placeholder pods created, buffer chunks provisioned).
        observed: Option<u32>,
    },
    /// Dry-run: the write that would be made.
    DryRun {
        /// Held now (`None`: the object sets none).
        from: Option<u32>,
        /// Planned.
        to: u32,
    },
    /// Written, and the API server's answer holds the new value.
    Changed {
        /// Held before (`None`: the object set none).
        from: Option<u32>,
        /// Held now.
        to: u32,
        /// What the answer's status reports.
        observed: Option<u32>,
    },
    /// Not the elected leader (another replica holds the headroom Lease): nothing read or written.
    NotLeader {
        /// The Lease, `namespace/name`.
        lease: String,
        /// Its holder as last observed.
        leader: Option<String>,
    },
}

impl fmt::Display for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opt = |v: &Option<u32>| v.map_or_else(|| "unset".to_string(), |v| v.to_string());
        match self {
            Held::Blind => f.write_str("held as is: demand unknown, nothing written"),
            Held::Unchanged { held, observed } => {
                write!(f, "unchanged at {held} (status: {})", opt(observed))
            }
            Held::DryRun { from, to } => write!(f, "dry-run: would set {} -> {to}", opt(from)),
            Held::Changed { from, to, observed } => {
                write!(f, "set {} -> {to} (status: {})", opt(from), opt(observed))
            }
            Held::NotLeader { lease, leader } => write!(
                f,
                "not the leader (Lease {lease} held by {}): nothing written",
                leader.as_deref().unwrap_or("nobody yet")
            ),
        }
    }
}

/// Holds headroom in one place. Implementations read what is held, write only when it differs
/// from the plan and `apply` is set, and never write on [`Demand::Unknown`].
pub trait HeadroomHolder: Send {
    /// What is held, for logs, tables and the `holder` metric label, e.g.
    /// `Deployment milvus/milvus-querynode-headroom`.
    fn target(&self) -> String;
    /// What the counts of [`Held`] are: `pods` (placeholders, buffer chunks) or `nodes`.
    fn unit(&self) -> &'static str;
    /// One round: hold `demand`, writing only when `apply`.
    fn hold(
        &mut self,
        demand: Demand,
        apply: bool,
    ) -> impl Future<Output = Result<Held, HoldError>> + Send;
}

/// Reads the pods the workload has now (the query-node Deployment's `spec.replicas`).
pub trait WorkloadPods: Send + Sync {
    /// What is read, for logs.
    fn target(&self) -> String;
    /// One read.
    fn pods(&self) -> impl Future<Output = Result<u32, HoldError>> + Send;
}
