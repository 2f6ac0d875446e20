//! EC2 Auto Scaling node-group sizing for Milvus.
//!
//! - [`planner`]: pure arithmetic from a scaling signal to a group's desired capacity (HPA maths,
//!   pods per node after a reservation, headroom, direction and bound rules), every number with
//!   its reason;
//! - [`applier`]: the Auto Scaling API behind a small trait ([`applier::AutoScaling`]), retries
//!   with backoff, dry-run, a minimum interval between changes, and the planning loop;
//! - [`config`]: the `node_groups:` configuration section as written; [`group`]: the section
//!   validated and each group resolved (node capacity, pods per node), which the planner and the
//!   applier work on; [`iam`]: the API actions the code calls (the IAM policy is tested against it).
//!
//! Of several milvus-scaler replicas only the holder of the Lease [`DEFAULT_LEASE_NAME`] writes
//! (crates/leader-lease, [`ELECTION`]): [`applier::Runner::with_leadership`].

pub mod applier;
pub mod config;
pub mod group;
pub mod iam;
pub mod instances;
pub mod metric_names;
pub mod planner;
pub mod quantity;
pub mod simulate;

pub use config::{Mode, NodeGroupsConfig, PoolState};
pub use group::{NodeGroups, NodeSource, ResolvedGroup};
pub use planner::{AsgState, GroupPlan, Stabilizer, plan_group};

/// The Lease name of the node groups' election when `node_groups.leader_election.lease_name` is
/// unset (the shipped RBAC, `manifests/components/node-groups/lease-rbac.yaml`, grants it). Its own
/// Lease, not the headroom's: the two loops run apart (either alone, or both with the placeholder
/// or CapacityBuffer holder), so each is led on its own and its settings may differ.
pub const DEFAULT_LEASE_NAME: &str = "milvus-scaler-node-groups";

/// The node groups' leader election: its logs, metrics and RBAC manifest.
pub const ELECTION: leader_lease::Purpose = leader_lease::Purpose {
    what: "node groups",
    leader_metric: metric_names::LEADER,
    errors_metric: metric_names::LEASE_ERRORS,
    rbac_manifest: "manifests/components/node-groups/lease-rbac.yaml",
};
