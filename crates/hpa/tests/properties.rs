//! Properties of the algorithm over random HPAs, behaviors and metric histories.

use std::time::Duration;

use hpa::{
    Autoscaler, Behavior, HpaSpec, MetricIdentifier, MetricObservation, MetricSource, MetricSpec,
    MetricTarget, ObjectReference, PolicyKind, ReplicaState, ScalingPolicy, ScalingRules,
    SelectPolicy,
};
use proptest::prelude::*;

fn rules(down: bool) -> impl Strategy<Value = ScalingRules> {
    let policy = (
        prop_oneof![Just(PolicyKind::Pods), Just(PolicyKind::Percent)],
        1..200i32,
        1..600i32,
    )
        .prop_map(|(kind, value, period_seconds)| ScalingPolicy {
            kind,
            value,
            period_seconds,
        });
    (
        prop_oneof![Just(None), (0..900i32).prop_map(Some)],
        prop_oneof![
            Just(SelectPolicy::Max),
            Just(SelectPolicy::Min),
            Just(SelectPolicy::Disabled)
        ],
        proptest::collection::vec(policy, 1..4),
    )
        .prop_map(move |(window, select_policy, policies)| ScalingRules {
            // Only scale-down may leave the window to the controller's flag.
            stabilization_window_seconds: if down {
                window
            } else {
                Some(window.unwrap_or(0))
            },
            select_policy,
            policies,
            tolerance: None,
        })
}

fn behavior() -> impl Strategy<Value = Option<Behavior>> {
    prop_oneof![
        Just(None),
        (rules(false), rules(true)).prop_map(|(scale_up, scale_down)| Some(Behavior {
            scale_up,
            scale_down
        })),
    ]
}

fn external(name: &str, target: MetricTarget) -> MetricSpec {
    MetricSpec {
        source: MetricSource::External {
            metric: MetricIdentifier {
                name: name.to_string(),
                selector: None,
            },
        },
        target,
    }
}

fn spec(min: i32, max: i32, behavior: Option<Behavior>) -> HpaSpec {
    HpaSpec {
        name: "h".into(),
        namespace: "ns".into(),
        scale_target: ObjectReference {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "d".into(),
        },
        min_replicas: min,
        max_replicas: max,
        metrics: vec![
            external("total", MetricTarget::Value(1_000)),
            external("per_pod", MetricTarget::AverageValue(1_000)),
        ],
        behavior,
    }
}

/// One sync: seconds since the previous one, and per metric a value (milli) or an error.
fn step() -> impl Strategy<Value = (u64, Option<i64>, Option<i64>)> {
    (
        0..120u64,
        prop_oneof![1 => Just(None), 6 => (0..50_000i64).prop_map(Some)],
        prop_oneof![1 => Just(None), 6 => (0..50_000i64).prop_map(Some)],
    )
}

fn observation(v: Option<i64>) -> MetricObservation {
    match v {
        Some(v) => MetricObservation::External(vec![v]),
        None => MetricObservation::Error("unavailable".into()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Applying every decision, the replicas never leave [min, max] once inside, whatever
    /// the metrics, errors, behaviors and timing (the controller's exception: at 0 replicas
    /// with minReplicas > 0 it does nothing, and this starts inside the range).
    #[test]
    fn desired_stays_within_min_max(
        min in 0..6i32,
        span in 0..30i32,
        start in 0..40i32,
        behavior in behavior(),
        steps in proptest::collection::vec(step(), 1..25),
    ) {
        let max = (min + span).max(1);
        let mut current = start.clamp(min, max);
        let mut autoscaler = Autoscaler::new(spec(min, max, behavior));
        let mut now = Duration::ZERO;
        for (dt, a, b) in steps {
            now += Duration::from_secs(dt);
            let d = autoscaler.reconcile(
                now,
                &ReplicaState::settled(current),
                &[observation(a), observation(b)],
            );
            prop_assert!(
                (min..=max).contains(&d.desired_replicas),
                "desired {} outside [{min}, {max}] from {current}: {d:?}",
                d.desired_replicas
            );
            current = d.desired_replicas;
        }
    }

    /// From outside the range, one sync brings the replicas to the nearest bound.
    #[test]
    fn outside_the_range_goes_to_the_bound(
        min in 1..6i32,
        span in 0..30i32,
        outside in 1..20i32,
        above in any::<bool>(),
        behavior in behavior(),
        a in 0..50_000i64,
    ) {
        let max = min + span;
        let current = if above { max + outside } else { (min - outside).max(1) };
        prop_assume!(current < min || current > max);
        let d = Autoscaler::new(spec(min, max, behavior)).reconcile(
            Duration::ZERO,
            &ReplicaState::settled(current),
            &[observation(Some(a)), observation(Some(a))],
        );
        prop_assert_eq!(d.desired_replicas, if above { max } else { min });
    }

    /// When every metric's usage ratio is within the tolerance, nothing changes, sync after
    /// sync, whatever the behavior (its windows only ever see the current size).
    #[test]
    fn within_tolerance_nothing_changes(
        min in 1..6i32,
        span in 0..30i32,
        at in 0..30i32,
        behavior in behavior(),
        ratios in proptest::collection::vec((0..120u64, 910..=1090i64, 910..=1090i64), 1..25),
    ) {
        let max = min + span;
        let current = (min + at).min(max);
        let mut autoscaler = Autoscaler::new(spec(min, max, behavior));
        let mut now = Duration::ZERO;
        for (dt, total_permille, per_pod_permille) in ratios {
            now += Duration::from_secs(dt);
            // Value target 1 (1000 milli): the total is the ratio. AverageValue 1 per pod: the
            // total is ratio × replicas.
            let total = total_permille;
            let per_pod = per_pod_permille * i64::from(current);
            let d = autoscaler.reconcile(
                now,
                &ReplicaState::settled(current),
                &[observation(Some(total)), observation(Some(per_pod))],
            );
            prop_assert_eq!(d.desired_replicas, current, "{:?}", d);
        }
    }

    /// A larger metric never asks for fewer replicas (the proposal is monotone in the value).
    #[test]
    fn proposals_are_monotone_in_the_metric(
        current in 1..40i32,
        a in 0..100_000i64,
        extra in 0..100_000i64,
    ) {
        let s = spec(1, 1000, None);
        let low = Autoscaler::new(s.clone()).reconcile(
            Duration::ZERO,
            &ReplicaState::settled(current),
            &[observation(Some(a)), observation(Some(0))],
        );
        let high = Autoscaler::new(s).reconcile(
            Duration::ZERO,
            &ReplicaState::settled(current),
            &[observation(Some(a + extra)), observation(Some(0))],
        );
        prop_assert!(high.raw_recommendation >= low.raw_recommendation, "{low:?} {high:?}");
    }
}
