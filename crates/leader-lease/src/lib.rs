//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several milvus-scaler replicas
//! only one writes: the headroom loop's (crates/headroom-holder) and the node-groups loop's
//! (crates/node-groups), each on its own Lease.
//!
//! - [`lease`]: the pure part: [`lease::Candidate`] decides from the Lease it is shown and the
//!   time it is handed; [`lease::Leadership`] is what a loop asks before it writes;
//! - [`elector`]: the requests on kube-rs and the loop that makes them every `retry_period`;
//! - [`config`]: the `leader_election:` settings a section embeds.

pub mod config;
pub mod elector;
pub mod lease;

pub use config::LeaderElectionConfig;
pub use elector::{Elector, Purpose};
pub use lease::Leadership;

/// The field manager of the Lease writes (the one the headroom holder's writes use too).
pub const FIELD_MANAGER: &str = "milvus-scaler";
