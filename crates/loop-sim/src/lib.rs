//! Closed-loop simulation of Milvus query nodes under an autoscaler.
//!
//! A load trace (searches per second over time) meets a service model calibrated on real Milvus
//! (per-node capacity, latency, time for a new query node to serve, machine boot time), and a
//! [`Controller`] (the HPA with a policy, in `milvus-scaler simulate`) decides the replicas from
//! the same signals milvus-scaler serves. The loop is closed: what the controller decides changes
//! the queues and latencies it reads next. Pure: no clock, no I/O.

pub mod cli;
pub mod headroom_source;
pub mod hpa_controller;
pub mod model;
pub mod report;
pub mod sim;
pub mod trace;

pub use headroom_source::{
    FixedHeadroom, HeadroomKind, HeadroomSource, HeadroomView, PlannedHeadroom, SpareMachines,
};
pub use hpa_controller::HpaController;
pub use model::SimConfig;
pub use sim::{
    ClusterView, Controller, Outcome, PodView, Sample, Signals, Summary, run, run_with_headroom,
};
pub use trace::LoadTrace;

/// What can be wrong with a simulation's inputs.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A key of the model or the trace is out of range.
    #[error("{key}: {message}")]
    Invalid {
        /// Dotted path of the key, e.g. `service.node_capacity_qps`.
        key: String,
        /// What was expected, and what was found.
        message: String,
    },
    /// The controller cannot be simulated as given.
    #[error("controller: {0}")]
    Controller(String),
    /// A policy names a signal the simulation does not produce.
    #[error(
        "unknown signal {0:?}: the simulation serves search_demand, search_rate, search_inflight, search_inflight_node_max, search_queue_depth, search_latency_p99_seconds, query_balancing"
    )]
    UnknownSignal(String),
}

impl SimError {
    /// An [`SimError::Invalid`] for `key`.
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        SimError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}
