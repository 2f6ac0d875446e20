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
