//! The algorithm against the documented examples and against cases derived from
//! kube-controller-manager's own unit tests (`pkg/controller/podautoscaler/horizontal_test.go`
//! and `replica_calculator_test.go`; each test names the upstream test it follows). The numbers
//! are recomputed here from the controller's formulas, not copied.

use std::collections::BTreeMap;
use std::time::Duration;

use hpa::{
    Autoscaler, ConditionType, ContainerRequests, Decision, HpaSpec, MetricObservation, Options,
    PodInfo, PodMetric, PodPhase, PodReadiness, Pods, ReplicaState,
};

fn t(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// An HPA with the given min/max, metrics (YAML list items) and optional behavior (YAML).
fn hpa(min: i32, max: i32, metrics: &str, behavior: Option<&str>) -> HpaSpec {
    let behavior = behavior
        .map(|b| format!("  behavior:\n{b}"))
        .unwrap_or_default();
    let text = format!(
        "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {{name: h, namespace: ns}}\nspec:\n  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: d}}\n  minReplicas: {min}\n  maxReplicas: {max}\n  metrics:\n{metrics}{behavior}"
    );
    HpaSpec::from_yaml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn external(name: &str, kind: &str, target: &str) -> String {
    let field = if kind == "Value" {
        "value"
    } else {
        "averageValue"
    };
    format!(
        "  - type: External\n    external:\n      metric: {{name: {name}}}\n      target: {{type: {kind}, {field}: \"{target}\"}}\n"
    )
}

fn cpu(utilization: i32) -> String {
    format!(
        "  - type: Resource\n    resource:\n      name: cpu\n      target: {{type: Utilization, averageUtilization: {utilization}}}\n"
    )
}

/// Behavior with immediate scale-down (window 0) and the default rate policies.
const NO_DOWN_WINDOW: &str = "    scaleDown:\n      stabilizationWindowSeconds: 0\n";

fn ext(values: &[i64]) -> MetricObservation {
    MetricObservation::External(values.to_vec())
}

fn condition(d: &Decision, kind: ConditionType) -> (bool, String) {
    let c = d
        .conditions
        .iter()
        .find(|c| c.kind == kind)
        .unwrap_or_else(|| panic!("no {kind:?} condition in {:?}", d.conditions));
    (c.status, c.reason.clone())
}

// ---------------------------------------------------------------------------------------------
// The documented algorithm (kubernetes.io, "Horizontal Pod Autoscaling", algorithm details).

#[test]
fn docs_200m_over_100m_doubles_and_50m_halves() {
    // "if the current metric value is 200m, and the desired value is 100m, the number of
    // replicas will be doubled, since 200.0 / 100.0 == 2.0 ... If the current value is instead
    // 50m, you'll halve the number of replicas".
    let spec = hpa(1, 20, &external("m", "Value", "100m"), Some(NO_DOWN_WINDOW));
    let mut a = Autoscaler::new(spec.clone());
    let d = a.reconcile(t(0), &ReplicaState::settled(3), &[ext(&[200])]);
    assert_eq!(d.desired_replicas, 6);
    assert_eq!(d.raw_recommendation, Some(6));
    assert_eq!(d.reason, "external metric m above target");

    let mut a = Autoscaler::new(spec);
    let d = a.reconcile(t(0), &ReplicaState::settled(4), &[ext(&[50])]);
    assert_eq!(d.desired_replicas, 2);
    assert_eq!(d.reason, "All metrics below target");
}

#[test]
fn docs_tolerance_skips_changes_within_ten_percent() {
    // "the control plane skips any scaling action if the ratio is sufficiently close to 1.0
    // (within a configurable tolerance, 0.1 by default)". Upstream: TestTolerance*,
    // TestReplicaCalcToleranceCMExternal (8600 against 8888: ratio 0.97, no change).
    let spec = hpa(1, 40, &external("m", "Value", "8888"), Some(NO_DOWN_WINDOW));
    let mut a = Autoscaler::new(spec.clone());
    let d = a.reconcile(t(0), &ReplicaState::settled(3), &[ext(&[8_600_000])]);
    assert_eq!(d.desired_replicas, 3);

    // 1.08: held at the default 0.1, scaled at --horizontal-pod-autoscaler-tolerance=0.05.
    let spec = hpa(1, 40, &external("m", "Value", "100"), None);
    for (tolerance, want) in [(0.1, 10), (0.05, 11)] {
        let mut a = Autoscaler::with_options(
            spec.clone(),
            Options {
                tolerance,
                ..Options::default()
            },
        );
        let d = a.reconcile(t(0), &ReplicaState::settled(10), &[ext(&[108_000])]);
        assert_eq!(d.desired_replicas, want, "tolerance {tolerance}");
    }
    // The same through the HPA's own behavior.scaleUp.tolerance (HPAConfigurableTolerance).
    let spec = hpa(
        1,
        40,
        &external("m", "Value", "100"),
        Some("    scaleUp:\n      tolerance: 50m\n"),
    );
    let d = Autoscaler::new(spec).reconcile(t(0), &ReplicaState::settled(10), &[ext(&[108_000])]);
    assert_eq!(d.desired_replicas, 11);
}

// ---------------------------------------------------------------------------------------------
// External and Object metrics (replica_calculator_test.go).

#[test]
fn external_value_scales_the_ready_pods() {
    // TestReplicaCalcScaleUpCMExternal: 1 replica, 8600 against a Value of 4400 → 2.
    let spec = hpa(1, 10, &external("m", "Value", "4400"), None);
    let d = Autoscaler::new(spec).reconcile(t(0), &ReplicaState::settled(1), &[ext(&[8_600_000])]);
    assert_eq!(d.desired_replicas, 2);

    // Value targets multiply the *ready* pods, not the spec replicas: 4 wanted, 2 ready,
    // ratio 2 → 4 (no change) rather than 8.
    let spec = hpa(1, 10, &external("m", "Value", "100"), None);
    let state = ReplicaState {
        spec_replicas: 4,
        status_replicas: 4,
        pods: Pods::Counted { total: 4, ready: 2 },
    };
    let d = Autoscaler::new(spec).reconcile(t(0), &state, &[ext(&[200_000])]);
    assert_eq!(d.raw_recommendation, Some(4));
}

#[test]
fn external_average_value_is_ceil_of_sum_over_target() {
    // TestReplicaCalcScaleUpPerPodCMExternal: 3 replicas, 8600 against 2150 per pod → 4.
    let spec = hpa(1, 10, &external("m", "AverageValue", "2150"), None);
    let d = Autoscaler::new(spec).reconcile(t(0), &ReplicaState::settled(3), &[ext(&[8_600_000])]);
    assert_eq!(d.desired_replicas, 4);
    let p = d.per_metric[0].result.as_ref().unwrap();
    assert_eq!(p.current.average_value, Some(2_866_667)); // ceil(8600 / 3), milli
    // The items are summed: 3 items of 3 against 1 per pod → 9 pods.
    let spec = hpa(
        1,
        20,
        &external("m", "AverageValue", "1"),
        Some(NO_DOWN_WINDOW),
    );
    let d = Autoscaler::new(spec).reconcile(
        t(0),
        &ReplicaState::settled(5),
        &[ext(&[3_000, 3_000, 3_000])],
    );
    assert_eq!(d.desired_replicas, 9);
}

#[test]
fn external_value_scale_down() {
    // TestReplicaCalcScaleDownCMExternal: 5 replicas, 8600 against 14334 (ratio 0.6) → 3.
    let spec = hpa(
        1,
        10,
        &external("m", "Value", "14334"),
        Some(NO_DOWN_WINDOW),
    );
    let d = Autoscaler::new(spec).reconcile(t(0), &ReplicaState::settled(5), &[ext(&[8_600_000])]);
    assert_eq!(d.desired_replicas, 3);
}

#[test]
fn object_metrics_follow_value_and_average_value() {
    // TestReplicaCalcScaleUpCMObject-style: Value 10 of 20 → double; AverageValue 5 per pod of a
    // total 30 → 6.
    let object = |kind: &str, field: &str, v: &str| {
        format!(
            "  - type: Object\n    object:\n      describedObject: {{apiVersion: v1, kind: Service, name: s}}\n      metric: {{name: qps}}\n      target: {{type: {kind}, {field}: \"{v}\"}}\n"
        )
    };
    let d = Autoscaler::new(hpa(1, 10, &object("Value", "value", "10"), None)).reconcile(
        t(0),
        &ReplicaState::settled(2),
        &[MetricObservation::Object(20_000)],
    );
    assert_eq!(d.desired_replicas, 4);
    assert_eq!(d.reason, "Service metric qps above target");
    let d = Autoscaler::new(hpa(
        1,
        10,
        &object("AverageValue", "averageValue", "5"),
        None,
    ))
    .reconcile(
        t(0),
        &ReplicaState::settled(3),
        &[MetricObservation::Object(30_000)],
    );
    assert_eq!(d.desired_replicas, 6);
}

// ---------------------------------------------------------------------------------------------
// Resource utilization with unready and missing pods.

fn pod(name: &str, ready: bool, cpu_request_milli: i64) -> PodInfo {
    // Started long ago; an unready pod has never been ready (its Ready condition changed at
    // start), which the controller ignores outside the CPU initialization period.
    PodInfo {
        name: name.to_string(),
        phase: PodPhase::Running,
        deleting: false,
        ready: Some(PodReadiness {
            ready,
            last_transition: t(0),
        }),
        start_time: Some(t(0)),
        containers: vec![ContainerRequests {
            name: "c".into(),
            requests: BTreeMap::from([("cpu".to_string(), cpu_request_milli)]),
        }],
    }
}

fn samples(values: &[(&str, i64)], at: Duration) -> MetricObservation {
    MetricObservation::PerPod(
        values
            .iter()
            .map(|(p, v)| PodMetric {
                pod: p.to_string(),
                value: *v,
                timestamp: at,
                window: t(30),
            })
            .collect(),
    )
}

fn listed(pods: Vec<PodInfo>) -> ReplicaState {
    let n = pods.len() as i32;
    ReplicaState {
        spec_replicas: n,
        status_replicas: n,
        pods: Pods::Listed(pods),
    }
}

const NOW: u64 = 3600;

#[test]
fn utilization_scale_up() {
    // TestReplicaCalcScaleUp: 3 pods at 300/500/700 of 1 CPU, target 30 % → 50 % → 5.
    let state = listed(vec![
        pod("p0", true, 1000),
        pod("p1", true, 1000),
        pod("p2", true, 1000),
    ]);
    let m = samples(&[("p0", 300), ("p1", 500), ("p2", 700)], t(NOW));
    let d = Autoscaler::new(hpa(1, 10, &cpu(30), None)).reconcile(t(NOW), &state, &[m]);
    assert_eq!(d.desired_replicas, 5);
    let p = d.per_metric[0].result.as_ref().unwrap();
    assert_eq!(p.current.average_utilization, Some(50));
}

#[test]
fn unready_pods_count_as_zero_on_scale_up() {
    // TestReplicaCalcScaleUpUnreadyLessScale: pod 0 unready → the ready two give 1200/2000 = 60 % over 30 %, then
    // redone with the unready pod at 0: 1200/3000 = 40 % → ceil(1.33 × 3) = 4 (not 5).
    let state = listed(vec![
        pod("p0", false, 1000),
        pod("p1", true, 1000),
        pod("p2", true, 1000),
    ]);
    let m = samples(&[("p0", 300), ("p1", 500), ("p2", 700)], t(NOW));
    let d = Autoscaler::new(hpa(1, 10, &cpu(30), None)).reconcile(t(NOW), &state, &[m]);
    assert_eq!(d.desired_replicas, 4);

    // TestReplicaCalcScaleUpUnreadyNoScale: two unready pods turn 40 % into 13 %, which would
    // reverse the direction → no change.
    let state = listed(vec![
        pod("p0", true, 1000),
        pod("p1", false, 1000),
        pod("p2", false, 1000),
    ]);
    let m = samples(&[("p0", 400), ("p1", 500), ("p2", 700)], t(NOW));
    let d = Autoscaler::new(hpa(1, 10, &cpu(30), None)).reconcile(t(NOW), &state, &[m]);
    assert_eq!(d.desired_replicas, 3);
}

#[test]
fn unready_pods_are_left_out_of_a_scale_down() {
    // TestScaleDownIncludeUnreadyPods: 5 pods, 2 unready; the ready ones average 30 % of a
    // 50 % target → ceil(0.6 × 3) = 2.
    let state = listed(vec![
        pod("p0", true, 1000),
        pod("p1", true, 1000),
        pod("p2", true, 1000),
        pod("p3", false, 1000),
        pod("p4", false, 1000),
    ]);
    let m = samples(
        &[
            ("p0", 100),
            ("p1", 300),
            ("p2", 500),
            ("p3", 250),
            ("p4", 250),
        ],
        t(NOW),
    );
    let d =
        Autoscaler::new(hpa(2, 6, &cpu(50), Some(NO_DOWN_WINDOW))).reconcile(t(NOW), &state, &[m]);
    assert_eq!(d.desired_replicas, 2);
    assert_eq!(
        d.per_metric[0]
            .result
            .as_ref()
            .unwrap()
            .current
            .average_utilization,
        Some(30)
    );
}

#[test]
fn missing_pods_count_as_full_on_scale_down() {
    // TestReplicaCalcMissingMetrics: 4 pods, metrics for two (400 + 95 of 2 CPU = 24 %), the
    // two missing taken at 100 % → 2495/4000 = 62 % → ceil(0.62 × 4) = 3 (not 1).
    let state = listed((0..4).map(|i| pod(&format!("p{i}"), true, 1000)).collect());
    let m = samples(&[("p0", 400), ("p1", 95)], t(NOW));
    let d = Autoscaler::new(hpa(1, 10, &cpu(100), Some(NO_DOWN_WINDOW))).reconcile(
        t(NOW),
        &state,
        &[m],
    );
    assert_eq!(d.desired_replicas, 3);
}

#[test]
fn missing_pods_count_as_zero_on_scale_up_and_never_flip_direction() {
    // Derived from the missing-pods branch of GetResourceReplicas: 2 of 4 pods report 600m of
    // 1 CPU against 50 % (ratio 1.2); the missing two at 0 make it 30 % (0.6), the other way:
    // no change. (Without the rule, ceil(1.2 × 2) = 3 would have scaled *down*.)
    let state = listed((0..4).map(|i| pod(&format!("p{i}"), true, 1000)).collect());
    let m = samples(&[("p0", 600), ("p1", 600)], t(NOW));
    let d =
        Autoscaler::new(hpa(1, 10, &cpu(50), Some(NO_DOWN_WINDOW))).reconcile(t(NOW), &state, &[m]);
    assert_eq!(d.desired_replicas, 4);
}

#[test]
fn superfluous_metrics_are_ignored() {
    // TestReplicaCalcSuperfluousMetrics: 6 samples, 4 pods: only the 4 pods' samples count,
    // 23500/4000 = 587 % of 100 % → ceil(5.87 × 4) = 24.
    let state = listed((0..4).map(|i| pod(&format!("p{i}"), true, 1000)).collect());
    let m = samples(
        &[
            ("p0", 4000),
            ("p1", 9500),
            ("p2", 3000),
            ("p3", 7000),
            ("p4", 3200),
            ("p5", 2000),
        ],
        t(NOW),
    );
    let spec = hpa(
        1,
        30,
        &cpu(100),
        Some(
            "    scaleUp:\n      policies:\n      - {type: Percent, value: 900, periodSeconds: 15}\n",
        ),
    );
    let d = Autoscaler::new(spec).reconcile(t(NOW), &state, &[m]);
    assert_eq!(d.raw_recommendation, Some(24));
    assert_eq!(d.desired_replicas, 24);
}

#[test]
fn missing_cpu_request_fails_the_metric() {
    // TestEmptyCPURequest: a pod without a CPU request → the metric fails, the HPA holds.
    let mut p = pod("p0", true, 1000);
    p.containers[0].requests.clear();
    let d = Autoscaler::new(hpa(1, 10, &cpu(50), None)).reconcile(
        t(NOW),
        &listed(vec![p]),
        &[samples(&[("p0", 900)], t(NOW))],
    );
    assert_eq!(d.desired_replicas, 1);
    assert_eq!(
        condition(&d, ConditionType::ScalingActive),
        (false, "FailedGetResourceMetric".into())
    );
}

// ---------------------------------------------------------------------------------------------
// Several metrics, invalid metrics.

#[test]
fn max_over_metrics() {
    // TestScaleUpCMObject-style with two metrics: the larger proposal wins.
    let metrics = format!(
        "{}{}",
        external("a", "AverageValue", "10"),
        external("b", "AverageValue", "10")
    );
    let d = Autoscaler::new(hpa(1, 20, &metrics, None)).reconcile(
        t(0),
        &ReplicaState::settled(3),
        &[ext(&[45_000]), ext(&[70_000])],
    );
    assert_eq!(d.raw_recommendation, Some(7));
    assert_eq!(d.desired_replicas, 6); // legacy scale-up limit max(2 × 3, 4)
    assert_eq!(
        condition(&d, ConditionType::ScalingLimited),
        (true, "ScaleUpLimit".into())
    );
    assert_eq!(d.reason, "external metric b above target");
}

#[test]
fn invalid_metrics_block_scale_down_but_not_scale_up() {
    let metrics = format!(
        "{}{}",
        external("a", "AverageValue", "10"),
        external("b", "AverageValue", "10")
    );
    let spec = hpa(1, 20, &metrics, Some(NO_DOWN_WINDOW));
    // TestScaleDownOneMetricInvalid (current controller): the valid metric says 3 of 5, one
    // failed → hold, ScalingActive=False with the failed metric's reason.
    let d = Autoscaler::new(spec.clone()).reconcile(
        t(0),
        &ReplicaState::settled(5),
        &[
            ext(&[30_000]),
            MetricObservation::Error("503 Service Unavailable".into()),
        ],
    );
    assert_eq!(d.desired_replicas, 5);
    assert_eq!(
        condition(&d, ConditionType::ScalingActive),
        (false, "FailedGetExternalMetric".into())
    );
    assert!(
        d.error.as_deref().unwrap().contains("1 invalid out of 2"),
        "{:?}",
        d.error
    );

    // TestScaleUpOneMetricInvalid: the valid metric says 4 of 3 → scale up, error still reported.
    let d = Autoscaler::new(spec.clone()).reconcile(
        t(0),
        &ReplicaState::settled(3),
        &[MetricObservation::Error("timeout".into()), ext(&[40_000])],
    );
    assert_eq!(d.desired_replicas, 4);
    assert_eq!(
        condition(&d, ConditionType::ScalingActive),
        (true, "ValidMetricFound".into())
    );
    assert!(d.error.is_some());

    // TestScaleUpBothMetricsEmpty-style: all fail → hold.
    let d = Autoscaler::new(spec).reconcile(
        t(0),
        &ReplicaState::settled(3),
        &[
            MetricObservation::Error("x".into()),
            MetricObservation::Error("y".into()),
        ],
    );
    assert_eq!(d.desired_replicas, 3);
    assert_eq!(d.raw_recommendation, None);
    assert!(!condition(&d, ConditionType::ScalingActive).0);
}

// ---------------------------------------------------------------------------------------------
// min/max, zero.

#[test]
fn replicas_outside_min_max_are_brought_back() {
    // TestMinReplicas / TestTooFewReplicas / TestTooManyReplicas.
    let spec = hpa(3, 5, &external("m", "AverageValue", "1"), None);
    let d = Autoscaler::new(spec.clone()).reconcile(t(0), &ReplicaState::settled(2), &[ext(&[])]);
    assert_eq!(d.desired_replicas, 3);
    assert_eq!(
        d.reason,
        "Current number of replicas below Spec.MinReplicas"
    );
    let d = Autoscaler::new(spec.clone()).reconcile(t(0), &ReplicaState::settled(8), &[ext(&[])]);
    assert_eq!(d.desired_replicas, 5);
    assert_eq!(
        d.reason,
        "Current number of replicas above Spec.MaxReplicas"
    );
    // Within range, a recommendation below min is clipped with TooFewReplicas.
    let spec = hpa(
        3,
        5,
        &external("m", "AverageValue", "1"),
        Some(NO_DOWN_WINDOW),
    );
    let d = Autoscaler::new(spec).reconcile(t(0), &ReplicaState::settled(5), &[ext(&[1_000])]);
    assert_eq!(d.desired_replicas, 3);
    assert_eq!(
        condition(&d, ConditionType::ScalingLimited),
        (true, "TooFewReplicas".into())
    );
}

#[test]
fn zero_replicas_disable_scaling_unless_min_is_zero() {
    // TestZeroReplicas: spec.replicas 0 with minReplicas 3 → no change, ScalingDisabled.
    let spec = hpa(3, 5, &external("m", "AverageValue", "1"), None);
    let d = Autoscaler::new(spec).reconcile(t(0), &ReplicaState::settled(0), &[ext(&[9_000])]);
    assert_eq!(d.desired_replicas, 0);
    assert_eq!(
        condition(&d, ConditionType::ScalingActive),
        (false, "ScalingDisabled".into())
    );
    // HPAScaleToZero: from 0 a Value target gives ceil(usage / target) (250m of 100m → 3), and
    // to 0 when the metric is 0.
    let spec = hpa(0, 5, &external("m", "Value", "100m"), Some(NO_DOWN_WINDOW));
    let d =
        Autoscaler::new(spec.clone()).reconcile(t(0), &ReplicaState::settled(0), &[ext(&[250])]);
    assert_eq!(d.desired_replicas, 3);
    let d = Autoscaler::new(spec).reconcile(t(0), &ReplicaState::settled(2), &[ext(&[0])]);
    assert_eq!(d.desired_replicas, 0);
}

// ---------------------------------------------------------------------------------------------
// Stabilization.

#[test]
fn legacy_downscale_stabilization_holds_for_five_minutes() {
    // TestScaleDownStabilizeInitialSize: without behavior, the first recommendation is the
    // current size; a lower one is held (ScaleDownStabilized) until 300 s have passed.
    let spec = hpa(1, 10, &external("m", "AverageValue", "1"), None);
    let mut a = Autoscaler::new(spec);
    let s = ReplicaState::settled(5);
    let d = a.reconcile(t(0), &s, &[ext(&[2_000])]);
    assert_eq!(d.desired_replicas, 5);
    assert_eq!(
        condition(&d, ConditionType::AbleToScale),
        (true, "ScaleDownStabilized".into())
    );
    assert_eq!(
        a.reconcile(t(299), &s, &[ext(&[2_000])]).desired_replicas,
        5
    );
    let d = a.reconcile(t(301), &s, &[ext(&[2_000])]);
    assert_eq!(d.desired_replicas, 2);
}

#[test]
fn behavior_scale_down_window_takes_the_highest_recent_recommendation() {
    let spec = hpa(
        1,
        10,
        &external("m", "AverageValue", "1"),
        Some("    scaleDown:\n      stabilizationWindowSeconds: 60\n"),
    );
    let mut a = Autoscaler::new(spec);
    let s = ReplicaState::settled(10);
    assert_eq!(
        a.reconcile(t(0), &s, &[ext(&[10_000])]).desired_replicas,
        10
    );
    assert_eq!(
        a.reconcile(t(15), &s, &[ext(&[7_000])]).desired_replicas,
        10
    );
    let d = a.reconcile(t(30), &s, &[ext(&[5_000])]);
    assert_eq!(d.desired_replicas, 10);
    assert_eq!(
        condition(&d, ConditionType::AbleToScale),
        (true, "ScaleDownStabilized".into())
    );
    // At 61 s the 10 s have left the window; the highest left is 7.
    assert_eq!(a.reconcile(t(61), &s, &[ext(&[5_000])]).desired_replicas, 7);
}

#[test]
fn behavior_scale_up_window_takes_the_lowest_recent_recommendation() {
    let spec = hpa(
        1,
        10,
        &external("m", "AverageValue", "1"),
        Some("    scaleUp:\n      stabilizationWindowSeconds: 30\n"),
    );
    let mut a = Autoscaler::new(spec);
    let s = ReplicaState::settled(2);
    assert_eq!(a.reconcile(t(0), &s, &[ext(&[2_000])]).desired_replicas, 2);
    let d = a.reconcile(t(10), &s, &[ext(&[6_000])]);
    assert_eq!(d.desired_replicas, 2);
    assert_eq!(
        condition(&d, ConditionType::AbleToScale),
        (true, "ScaleUpStabilized".into())
    );
    assert_eq!(a.reconcile(t(20), &s, &[ext(&[6_000])]).desired_replicas, 2);
    // At 41 s only the recommendation of 20 s (6) is left in the window.
    assert_eq!(a.reconcile(t(41), &s, &[ext(&[6_000])]).desired_replicas, 6);
}

// ---------------------------------------------------------------------------------------------
// Rate policies (calculateScaleUpLimitWithScalingRules / calculateScaleDownLimitWithBehaviors).

const UP_POLICIES: &str = "      policies:\n      - {type: Pods, value: 4, periodSeconds: 60}\n      - {type: Percent, value: 50, periodSeconds: 60}\n";

#[test]
fn scale_up_policies_max_and_min() {
    // TestCalculateScaleUpLimitWithScalingRules "No previous events": 5 + 4 = 9 for Pods 4/60;
    // with Percent 50 % next to it, Max picks 10 → for 10 current: max(14, 15) = 15, Min 14.
    for (select, want) in [("Max", 15), ("Min", 14)] {
        let spec = hpa(
            1,
            100,
            &external("m", "AverageValue", "1"),
            Some(&format!(
                "    scaleUp:\n      selectPolicy: {select}\n{UP_POLICIES}"
            )),
        );
        let d =
            Autoscaler::new(spec).reconcile(t(0), &ReplicaState::settled(10), &[ext(&[100_000])]);
        assert_eq!(d.desired_replicas, want, "{select}");
        assert_eq!(
            condition(&d, ConditionType::ScalingLimited),
            (true, "ScaleUpLimit".into())
        );
    }
}

#[test]
fn scale_events_count_against_the_period() {
    // TestCalculateScaleUpLimitWithScalingRules "With previous scale up event": replicas added
    // within the period are subtracted to find the period's start.
    let spec = hpa(
        1,
        100,
        &external("m", "AverageValue", "1"),
        Some(&format!("    scaleUp:\n{UP_POLICIES}")),
    );
    let mut a = Autoscaler::new(spec);
    let d = a.reconcile(t(0), &ReplicaState::settled(10), &[ext(&[100_000])]);
    assert_eq!(d.desired_replicas, 15);
    // 15 s later the period started at 10: max(10 + 4, 15) = 15 → no more room.
    let d = a.reconcile(t(15), &ReplicaState::settled(15), &[ext(&[100_000])]);
    assert_eq!(d.desired_replicas, 15);
    assert_eq!(
        condition(&d, ConditionType::ScalingLimited),
        (true, "ScaleUpLimit".into())
    );
    // After the period, from 15: max(19, 23) = 23.
    let d = a.reconcile(t(61), &ReplicaState::settled(15), &[ext(&[100_000])]);
    assert_eq!(d.desired_replicas, 23);
}

#[test]
fn failed_rescale_does_not_use_up_the_budget() {
    let spec = hpa(
        1,
        100,
        &external("m", "AverageValue", "1"),
        Some(&format!("    scaleUp:\n{UP_POLICIES}")),
    );
    let mut a = Autoscaler::new(spec);
    assert_eq!(
        a.reconcile(t(0), &ReplicaState::settled(10), &[ext(&[100_000])])
            .desired_replicas,
        15
    );
    a.rescale_failed("conflict");
    assert_eq!(
        a.conditions()
            .iter()
            .find(|c| c.kind == ConditionType::AbleToScale)
            .map(|c| c.reason.as_str()),
        Some("FailedUpdateScale")
    );
    // Still at 10: the failed 10 → 15 must not count, so 15 is allowed again.
    assert_eq!(
        a.reconcile(t(15), &ReplicaState::settled(10), &[ext(&[100_000])])
            .desired_replicas,
        15
    );
}

#[test]
fn scale_down_policies_max_min_and_disabled() {
    // TestCalculateScaleDownLimitWithBehaviors-style: 10 current, Pods 2/60 and Percent 50/60:
    // Max (the bigger change) → min(8, 5) = 5; Min → max(8, 5) = 8; Disabled → 10.
    let down = "      policies:\n      - {type: Pods, value: 2, periodSeconds: 60}\n      - {type: Percent, value: 50, periodSeconds: 60}\n";
    for (select, want, reason) in [
        ("Max", 5, "ScaleDownLimit"),
        ("Min", 8, "ScaleDownLimit"),
        ("Disabled", 10, "ScaleDownLimit"),
    ] {
        let spec = hpa(
            1,
            100,
            &external("m", "AverageValue", "1"),
            Some(&format!(
                "    scaleDown:\n      stabilizationWindowSeconds: 0\n      selectPolicy: {select}\n{down}"
            )),
        );
        let d = Autoscaler::new(spec).reconcile(t(0), &ReplicaState::settled(10), &[ext(&[1_000])]);
        assert_eq!(d.desired_replicas, want, "{select}");
        assert_eq!(
            condition(&d, ConditionType::ScalingLimited),
            (true, reason.into()),
            "{select}"
        );
    }
}

#[test]
fn default_behavior_rules_when_only_one_direction_is_set() {
    // GenerateHPAScaleUpRules: scaleUp unset → max(4 pods, 100 %) per 15 s: from 2 → 6, from
    // 10 → 20.
    for (from, want) in [(2, 6), (10, 20)] {
        let spec = hpa(
            1,
            100,
            &external("m", "AverageValue", "1"),
            Some(NO_DOWN_WINDOW),
        );
        let d =
            Autoscaler::new(spec).reconcile(t(0), &ReplicaState::settled(from), &[ext(&[100_000])]);
        assert_eq!(d.desired_replicas, want, "from {from}");
    }
}

#[test]
fn upscale_cap_without_behavior() {
    // TestUpscaleCap: no behavior → at most max(2 × current, 4) per sync: 3 → 6.
    let spec = hpa(1, 100, &external("m", "AverageValue", "1"), None);
    let d = Autoscaler::new(spec).reconcile(t(0), &ReplicaState::settled(3), &[ext(&[50_000])]);
    assert_eq!(d.desired_replicas, 6);
    assert_eq!(
        condition(&d, ConditionType::ScalingLimited),
        (true, "ScaleUpLimit".into())
    );
}

#[test]
fn cpu_samples_of_initializing_pods_are_unready() {
    // TestReplicaCalcScaleUpHotCpuLessScale: pod 0 started 60 s ago (inside the 5 min CPU
    // initialization period) and its sample does not cover a whole window since it became ready
    // → treated as unready → 4, as with an unready pod.
    let mut hot = pod("p0", true, 1000);
    hot.start_time = Some(t(NOW - 60));
    hot.ready = Some(PodReadiness {
        ready: true,
        last_transition: t(NOW - 50),
    });
    let state = listed(vec![hot, pod("p1", true, 1000), pod("p2", true, 1000)]);
    let m = MetricObservation::PerPod(vec![
        PodMetric {
            pod: "p0".into(),
            value: 300,
            timestamp: t(NOW - 40), // before last_transition + 30 s window
            window: t(30),
        },
        PodMetric {
            pod: "p1".into(),
            value: 500,
            timestamp: t(NOW),
            window: t(30),
        },
        PodMetric {
            pod: "p2".into(),
            value: 700,
            timestamp: t(NOW),
            window: t(30),
        },
    ]);
    let d = Autoscaler::new(hpa(1, 10, &cpu(30), None)).reconcile(t(NOW), &state, &[m]);
    assert_eq!(d.desired_replicas, 4);
}

#[test]
fn failed_and_deleting_pods_are_ignored() {
    // TestReplicaCalcScaleDownIgnoresFailedPods / ...IgnoresDeletionPods: 5 running pods at 28 %
    // of a 50 % target plus 2 ignored ones (failed, being deleted) with samples → ceil(0.56 × 5)
    // = 3.
    let mut failed = pod("p5", true, 1000);
    failed.phase = PodPhase::Failed;
    let mut deleting = pod("p6", true, 1000);
    deleting.deleting = true;
    let mut pods: Vec<PodInfo> = (0..5).map(|i| pod(&format!("p{i}"), true, 1000)).collect();
    pods.extend([failed, deleting]);
    let state = ReplicaState {
        spec_replicas: 5,
        status_replicas: 5,
        pods: Pods::Listed(pods),
    };
    let m = samples(
        &[
            ("p0", 100),
            ("p1", 300),
            ("p2", 500),
            ("p3", 250),
            ("p4", 250),
            ("p5", 1000),
            ("p6", 1000),
        ],
        t(NOW),
    );
    let d =
        Autoscaler::new(hpa(1, 10, &cpu(50), Some(NO_DOWN_WINDOW))).reconcile(t(NOW), &state, &[m]);
    assert_eq!(d.desired_replicas, 3);
}

#[test]
fn pods_metric_averages_over_pods() {
    // TestReplicaCalcScaleUpCM: 3 pods at 20, 10 and 30 against 15 per pod → mean 20 →
    // ceil(1.33 × 3) = 4.
    let state = listed((0..3).map(|i| pod(&format!("p{i}"), true, 1000)).collect());
    let m = samples(&[("p0", 20_000), ("p1", 10_000), ("p2", 30_000)], t(NOW));
    let metrics = "  - type: Pods\n    pods:\n      metric: {name: qps}\n      target: {type: AverageValue, averageValue: \"15\"}\n";
    let d = Autoscaler::new(hpa(1, 10, metrics, None)).reconcile(t(NOW), &state, &[m]);
    assert_eq!(d.desired_replicas, 4);
    assert_eq!(
        d.per_metric[0]
            .result
            .as_ref()
            .unwrap()
            .current
            .average_value,
        Some(20_000)
    );
}
