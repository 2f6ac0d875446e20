//! Policies judged by their consequences in the closed loop: the real HPA algorithm (crates/hpa)
//! driving simulated query nodes whose service model is calibrated on the real Milvus cluster of
//! the test harness (a frozen copy of bench/models/milvus-2.3.5-harness.yaml as calibrated on
//! 2026-11-29, in tests/fixtures: `make bench` rewrites the bench copy from each new calibration,
//! and a noisy one must not change what `make test` asserts). The shipped example is run with its
//! per-node target set as its comment says: 60 % of one node's measured capacity.

use loop_sim::report::static_peak;
use loop_sim::{HpaController, LoadTrace, Outcome, run};

mod common;

use common::{model, shipped, spike_10x};

const FIRST: &str = include_str!("../../../bench/policies/hpa-first-example.yaml");
const HELM_CPU: &str = include_str!("../../../bench/policies/hpa-helm-cpu.yaml");

fn sim(hpa_yaml: &str, trace: &LoadTrace, initial: u32) -> Outcome {
    let spec = hpa::HpaSpec::from_yaml(hpa_yaml).unwrap();
    let mut controller = HpaController::new(spec, hpa::Options::default(), 15.0).unwrap();
    run(&model(), trace, &mut controller, initial, 15.0).unwrap()
}

fn steady(qps: f64, seconds: f64) -> LoadTrace {
    LoadTrace::Points {
        points: vec![[0.0, qps], [seconds, qps]],
    }
}

#[test]
fn shipped_policy_settles_at_constant_load_and_stays() {
    let m = model();
    let qps = 8.0 * m.service.node_capacity_qps;
    let out = sim(&shipped(&m), &steady(qps, 7200.0), 2);
    // From 2 replicas the first minutes overshoot (the backlog built while nodes started asks for
    // capacity to drain it) and scale-in walks back one node a minute; the second hour is settled.
    let after_first_half_hour: Vec<u32> = out
        .samples
        .iter()
        .filter(|s| s.t >= 3600.0)
        .map(|s| s.desired)
        .collect();
    let first = after_first_half_hour[0];
    assert!(
        after_first_half_hour.iter().all(|&d| d == first),
        "replicas changed at constant load: {after_first_half_hour:?}"
    );
    // Settled where 60 % utilisation puts it: ceil(8 / 0.6) = 14 (tolerance may keep 13-15).
    assert!((13..=15).contains(&first), "{first}");
    // One overshoot from the cold start, walked back: at most one change of direction.
    assert!(out.summary.reversals <= 1, "{:?}", out.summary);
    assert_eq!(out.summary.failed_searches, 0.0);
}

#[test]
fn shipped_policy_follows_a_spike_within_the_slo_and_gives_capacity_back() {
    let m = model();
    let out = sim(&shipped(&m), &spike_10x(&m), 2);
    let share = out.summary.spike_slo_fraction.unwrap();
    // Machines boot in 90 s: the spike's ramp outruns them for a minute or two.
    assert!(share >= 0.9, "{share}");
    let peak = out.samples.iter().map(|s| s.desired).max().unwrap();
    let last = out.samples.last().unwrap().desired;
    assert!(peak >= 10 && last <= 3, "peak {peak}, end {last}");
    assert_eq!(out.summary.failed_searches, 0.0);
}

#[test]
fn with_machines_ready_the_spike_stays_within_the_slo_95_percent_of_the_time() {
    // What node headroom buys (the node-headroom work): no machine boot on the critical path.
    let mut m = model();
    m.provisioning.node_boot_seconds = 0.0;
    m.provisioning.scan_seconds = 0.0;
    let spec = hpa::HpaSpec::from_yaml(&shipped(&m)).unwrap();
    let mut controller = HpaController::new(spec, hpa::Options::default(), 15.0).unwrap();
    let out = run(&m, &spike_10x(&m), &mut controller, 2, 15.0).unwrap();
    let share = out.summary.spike_slo_fraction.unwrap();
    eprintln!("within the SLO with ready machines: {share:.3}");
    assert!(share >= 0.95, "{share}");
}

#[test]
fn shipped_policy_uses_at_most_40_percent_of_static_peak_node_hours_over_a_day() {
    let m = model();
    let day = LoadTrace::Diurnal {
        floor_qps: m.service.node_capacity_qps,
        peak_qps: 10.0 * m.service.node_capacity_qps,
        peaks_at_hours: vec![10.0, 20.0],
        peak_width_hours: 1.0,
        days: 1.0,
    };
    let (n, peak) = static_peak(&m, &day, 64, 60.0).unwrap();
    let out = sim(&shipped(&m), &day, 2);
    let ratio = out.summary.node_hours / peak.summary.node_hours;
    eprintln!(
        "static {n}: {:.1} node-h; shipped: {:.1} node-h ({ratio:.2}x), SLO {:.1} %, {:.1} steady changes/h",
        peak.summary.node_hours,
        out.summary.node_hours,
        100.0 * out.summary.slo_fraction,
        out.summary.steady_changes_per_hour.unwrap_or(0.0)
    );
    assert!(ratio <= 0.4, "{ratio}");
    assert!(out.summary.slo_fraction >= 0.95, "{:?}", out.summary);
}

#[test]
fn baselines_parse_and_run_in_the_loop() {
    // The baselines make bench compares against must stay runnable by `simulate`.
    let m = model();
    let spike = spike_10x(&m);
    for yaml in [FIRST, HELM_CPU] {
        let out = sim(yaml, &spike, 2);
        assert!(out.summary.max_pods > 2, "{:?}", out.summary);
    }
    let _ = m;
}
