//! What the closed-loop tests share: the frozen calibration, the shipped HPA at the model's scale
//! and the 10x spike.
#![allow(dead_code)] // each test file uses its own subset

use loop_sim::{LoadTrace, SimConfig};

/// A frozen copy of bench/models/milvus-2.3.5-harness.yaml as calibrated on 2026-11-29: `make
/// bench` rewrites the bench copy from each new calibration, and a noisy one must not change what
/// `make test` asserts.
pub const MODEL: &str = include_str!("../fixtures/milvus-2.3.5-harness-2026-11-29.yaml");
/// The shipped query-node HPA.
pub const SHIPPED: &str = include_str!("../../../../manifests/examples/hpa-querynode.yaml");

/// The frozen service model.
pub fn model() -> SimConfig {
    yaml_config::from_str(MODEL).unwrap()
}

/// The HPA's target per pod, as the shipped example's comment says: 60 % of one node's capacity.
pub fn target_per_pod(m: &SimConfig) -> f64 {
    0.6 * m.service.node_capacity_qps
}

/// [`target_per_pod`] as [`shipped`] writes it into the HPA (to 0.1 nq/s): the number a headroom
/// planner's `pod_capacity` must be for the planner and the HPA to count the same pods.
pub fn hpa_target(m: &SimConfig) -> f64 {
    (target_per_pod(m) * 10.0).round() / 10.0
}

/// The shipped HPA with its target at [`hpa_target`], at the scale of the traces (max 40).
pub fn shipped(m: &SimConfig) -> String {
    let text = SHIPPED.replace(
        "averageValue: \"60\"",
        &format!("averageValue: \"{}\"", hpa_target(m)),
    );
    assert_ne!(
        text, SHIPPED,
        "the shipped example's target moved: update this test"
    );
    text.replace("maxReplicas: 20", "maxReplicas: 40")
}

/// bench/traces/spike-10x.yaml's shape at the model's scale: one node's capacity, then ten.
pub fn spike_10x(m: &SimConfig) -> LoadTrace {
    LoadTrace::Spike {
        quiet_qps: m.service.node_capacity_qps,
        spike_qps: 10.0 * m.service.node_capacity_qps,
        quiet_seconds: 1200.0,
        ramp_seconds: 120.0,
        spike_seconds: 1800.0,
        cooldown_seconds: 2400.0,
    }
}
