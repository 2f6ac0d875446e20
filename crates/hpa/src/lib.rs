//! The Kubernetes HorizontalPodAutoscaler algorithm, as kube-controller-manager runs it
//! (`pkg/controller/podautoscaler`: `horizontal.go`, `replica_calculator.go`), as a pure
//! library: no I/O, no clock of its own.
//!
//! - [`spec`]: an `autoscaling/v2` HorizontalPodAutoscaler (YAML/JSON through k8s-openapi),
//!   defaulted and validated into [`HpaSpec`].
//! - [`calc`]: one metric's replica proposal (`ReplicaCalculator`), including tolerance and the
//!   missing/unready pod rules.
//! - [`autoscaler`]: [`Autoscaler::reconcile`]: max over metrics, invalid-metric rules,
//!   stabilization windows, scaling policies and min/max, with the history kept inside.
//!
//! Usage:
//!
//! ```
//! use std::time::Duration;
//! use hpa::{Autoscaler, HpaSpec, MetricObservation, ReplicaState};
//!
//! let spec = HpaSpec::from_yaml(r#"
//! apiVersion: autoscaling/v2
//! kind: HorizontalPodAutoscaler
//! metadata: {name: web, namespace: prod}
//! spec:
//!   scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
//!   minReplicas: 1
//!   maxReplicas: 10
//!   metrics:
//!   - type: External
//!     external:
//!       metric: {name: queue_depth}
//!       target: {type: AverageValue, averageValue: "10"}
//! "#).unwrap();
//! let mut hpa = Autoscaler::new(spec);
//! // 2 replicas, 60 queued: ceil(60 / 10) = 6.
//! let d = hpa.reconcile(Duration::from_secs(0), &ReplicaState::settled(2),
//!                       &[MetricObservation::External(vec![60_000])]);
//! assert_eq!(d.desired_replicas, 4); // the legacy scale-up limit: max(2 × 2, 4)
//! ```

pub mod autoscaler;
pub mod calc;
pub mod quantity;
pub mod selector;
pub mod spec;

pub use autoscaler::{Autoscaler, Condition, ConditionType, Decision, MetricOutcome, Options};
pub use calc::{
    ContainerRequests, MetricCurrent, MetricFailure, MetricObservation, PodInfo, PodMetric,
    PodPhase, PodReadiness, PodTiming, Pods, Proposal, ReplicaState, Tolerances,
};
pub use quantity::{QuantityError, parse_milli};
pub use selector::{LabelSelector, SelectorExpression, SelectorOperator};
pub use spec::{
    Behavior, HpaSpec, MetricIdentifier, MetricSource, MetricSpec, MetricTarget, ObjectReference,
    PolicyKind, ScalingPolicy, ScalingRules, SelectPolicy, SpecError,
};
