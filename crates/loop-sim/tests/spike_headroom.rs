//! The spike goal of the closed loop ("p99 within the SLO for >= 95 % of a 10x spike after its
//! first 2 minutes"), judged per second by `Summary::spike_slo_fraction`, and what it takes when
//! machines boot. The shipped HPA cannot make a machine boot faster: a pod the HPA adds at the
//! spike's start serves only after the provisioner's scan, the boot and Milvus's load. These tests
//! find where the goal is met on the frozen 2026-11-29 calibration (as tests/policies.rs): a
//! machine within 45 s, or placeholder pods held beforehand (bench/policies/headroom-floor-6.yaml).

use loop_sim::{
    HeadroomSource, HpaController, Outcome, PlannedHeadroom, SimConfig, run_with_headroom,
};

mod common;

use common::{hpa_target, model, shipped, spike_10x};

const FLOOR_6: &str = include_str!("../../../bench/policies/headroom-floor-6.yaml");
const DEMAND: &str = include_str!("../../../bench/policies/headroom-demand.yaml");

/// A bench headroom file at the model's scale: its pod capacity is the HPA's target per pod.
fn headroom_file(m: &SimConfig, text: &str) -> PlannedHeadroom {
    let scaled = text.replace(
        "pod_capacity: 60",
        &format!("pod_capacity: {}", hpa_target(m)),
    );
    assert_ne!(scaled, text, "the bench headroom file's pod_capacity moved");
    let config: headroom::HeadroomConfig = yaml_config::from_str(&scaled).unwrap();
    PlannedHeadroom::new(config, 15.0)
}

fn model_with_boot(boot_seconds: f64) -> SimConfig {
    let mut m = model();
    m.provisioning.node_boot_seconds = boot_seconds;
    m
}

fn sim(m: &SimConfig, headroom: Option<&mut dyn HeadroomSource>) -> Outcome {
    let spec = hpa::HpaSpec::from_yaml(&shipped(m)).unwrap();
    let mut controller = HpaController::new(spec, hpa::Options::default(), 15.0).unwrap();
    run_with_headroom(m, &spike_10x(m), &mut controller, headroom, 2, 15.0).unwrap()
}

fn in_spike(out: &Outcome) -> f64 {
    out.summary
        .spike_slo_fraction
        .expect("a spike trace has a judged part")
}

#[test]
fn the_spike_goal_is_met_when_a_new_pod_finds_a_machine_within_45_seconds() {
    let mut shares = Vec::new();
    for boot in [0.0, 15.0, 30.0, 45.0, 60.0, 90.0] {
        let m = model_with_boot(boot);
        let out = sim(&m, None);
        assert_eq!(out.summary.failed_searches, 0.0, "boot {boot}");
        shares.push((boot, in_spike(&out)));
    }
    eprintln!("machine boot s -> share of the spike within the SLO: {shares:?}");
    for (boot, share) in &shares {
        if *boot <= 45.0 {
            assert!(*share >= 0.95, "boot {boot} s: {share}");
        }
    }
    // A slower machine is never better: the pods wait longer for the same capacity.
    for pair in shares.windows(2) {
        assert!(pair[1].1 <= pair[0].1 + 0.01, "{shares:?}");
    }
    // With 90 s boots the shipped policy alone does not meet the goal; a standing headroom does
    // (next test). If a policy change makes this fail, the docs' table is out of date.
    let (_, at_90) = shares.last().copied().unwrap();
    assert!((0.85..0.95).contains(&at_90), "{at_90}");
}

#[test]
fn with_90_second_boots_a_floor_of_six_placeholders_meets_the_spike_goal() {
    let m = model_with_boot(90.0);
    let alone = sim(&m, None);
    let mut demand = headroom_file(&m, DEMAND);
    let with_demand = sim(&m, Some(&mut demand));
    let mut floor = headroom_file(&m, FLOOR_6);
    let with_floor = sim(&m, Some(&mut floor));
    for (name, out) in [
        ("provisioner alone", &alone),
        ("demand headroom", &with_demand),
        ("floor of 6", &with_floor),
    ] {
        let s = &out.summary;
        eprintln!(
            "{name}: spike within the SLO {:.3}, node-h {:.2}, placeholder pod-h {:.2}, waited {}, longest {:.0} s, max pods {}, churn {}",
            in_spike(out),
            s.node_hours,
            s.headroom_pod_hours,
            s.pods_waited_for_node,
            s.longest_node_wait_seconds,
            s.max_pods,
            s.machines_churned
        );
        assert_eq!(s.failed_searches, 0.0, "{name}");
    }
    assert!(in_spike(&with_floor) >= 0.95, "{}", in_spike(&with_floor));
    // A step spike has no growth to read ahead of it: demand-sized headroom reacts with the HPA,
    // so it buys little here (it is for ramps and scheduled peaks: tests/headroom.rs).
    assert!(in_spike(&with_demand) < 0.95, "{}", in_spike(&with_demand));
    // The floor's price: machines held when nothing needs them.
    assert!(with_floor.summary.node_hours > alone.summary.node_hours);
    assert!(with_floor.summary.longest_node_wait_seconds < alone.summary.longest_node_wait_seconds);
}
