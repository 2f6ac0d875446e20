//! Node headroom for Milvus query nodes, for any provisioner: how many query-node-shaped pods of
//! headroom (low-priority placeholders, a `CapacityBuffer`'s replicas, or spare Auto Scaling
//! capacity) to hold so that the pods the HPA adds next find a machine ready, instead of waiting
//! for Cluster Autoscaler or Karpenter to launch one.
//!
//! The [`Planner`] is pure: no I/O, and the clock is handed in with every call. It sizes the
//! headroom from the demand signal's level and growth over one time-to-ready (node launch plus
//! Milvus load), holds it for known daily peaks from a lead time before each, never gives it
//! back on a forecast (only after a hold, one pod per step), and keeps it within a floor and a
//! cap. Its configuration ([`HeadroomConfig`]) is parsed and validated in one step.

pub mod config;
pub mod planner;

pub use config::{ConfigError, HeadroomConfig, HeadroomSpec, Peak, PeakSpec, TimeToReadySpec};
pub use planner::{Plan, Planner};
