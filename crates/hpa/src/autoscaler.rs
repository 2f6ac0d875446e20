//! The controller's reconcile step (`horizontal.go`): metrics → raw recommendation →
//! stabilization → rate limits → min/max, with the recommendation and scale-event history kept
//! per HPA exactly as kube-controller-manager keeps it.

use std::time::Duration;

use crate::calc::{
    self, MetricFailure, MetricObservation, PodTiming, Proposal, ReplicaState, Tolerances,
};
use crate::spec::{HpaSpec, PolicyKind, ScalingRules, SelectPolicy};

/// kube-controller-manager's HPA flags that change the algorithm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    /// `--horizontal-pod-autoscaler-tolerance` (0.1), unless `behavior.*.tolerance` is set.
    pub tolerance: f64,
    /// `--horizontal-pod-autoscaler-downscale-stabilization` (5 min).
    pub downscale_stabilization: Duration,
    /// CPU readiness timing (`--horizontal-pod-autoscaler-cpu-initialization-period` 5 min,
    /// `--horizontal-pod-autoscaler-initial-readiness-delay` 30 s).
    pub pod_timing: PodTiming,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tolerance: 0.1,
            downscale_stabilization: Duration::from_secs(300),
            pod_timing: PodTiming::default(),
        }
    }
}

/// An HPA condition type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConditionType {
    /// `AbleToScale`: whether the target can be scaled now (stabilized, rescaled...).
    AbleToScale,
    /// `ScalingActive`: whether metrics could be computed.
    ScalingActive,
    /// `ScalingLimited`: whether min/max or a rate limit clipped the recommendation.
    ScalingLimited,
}

impl ConditionType {
    /// The Kubernetes name.
    pub fn as_str(&self) -> &'static str {
        match self {
            ConditionType::AbleToScale => "AbleToScale",
            ConditionType::ScalingActive => "ScalingActive",
            ConditionType::ScalingLimited => "ScalingLimited",
        }
    }
}

/// An HPA status condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// The type.
    pub kind: ConditionType,
    /// `status == "True"`.
    pub status: bool,
    /// A CamelCase reason (`ScaleUpLimit`, `ScaleDownStabilized`, ...).
    pub reason: String,
    /// A human message.
    pub message: String,
}

/// One metric's outcome in a decision.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricOutcome {
    /// The controller's description of the metric (`external metric foo`).
    pub metric: String,
    /// The proposal, or why the metric could not be computed.
    pub result: Result<Proposal, MetricFailure>,
}

/// The result of one reconcile.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The replicas the target had (`scale.spec.replicas`).
    pub current_replicas: i32,
    /// The replicas to set; equal to `current_replicas` when holding.
    pub desired_replicas: i32,
    /// The maximum over the metrics before stabilization and limits (`None` when the metrics
    /// were not consulted or all failed).
    pub raw_recommendation: Option<i32>,
    /// Each metric's outcome, in `spec.metrics` order (empty when not consulted).
    pub per_metric: Vec<MetricOutcome>,
    /// The HPA's conditions after this reconcile.
    pub conditions: Vec<Condition>,
    /// Why: the controller's rescale reason, or why it holds.
    pub reason: String,
    /// Metric errors, when some (or all) metrics failed. With a non-hold decision the
    /// controller still scaled on the valid ones.
    pub error: Option<String>,
}

impl Decision {
    /// True when the target should be scaled (`desired_replicas != current_replicas`).
    pub fn rescale(&self) -> bool {
        self.desired_replicas != self.current_replicas
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Recommendation {
    replicas: i32,
    at: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct ScaleEvent {
    change: i32,
    at: Duration,
    outdated: bool,
}

/// `t` is strictly after `now - window` (`time.After(cutoff)`); a cutoff before the clock's
/// origin is before every timestamp.
fn after_cutoff(t: Duration, now: Duration, window: Duration) -> bool {
    now.checked_sub(window).is_none_or(|cutoff| t > cutoff)
}

/// `t` is strictly before `now - window` (`time.Before(cutoff)`).
fn before_cutoff(t: Duration, now: Duration, window: Duration) -> bool {
    now.checked_sub(window).is_some_and(|cutoff| t < cutoff)
}

fn secs(s: i32) -> Duration {
    Duration::from_secs(u64::try_from(s).unwrap_or(0))
}

/// One HorizontalPodAutoscaler's controller state: its spec, its conditions, its recent
/// recommendations and scale events. Pure: the clock is handed in.
#[derive(Debug, Clone)]
pub struct Autoscaler {
    spec: HpaSpec,
    options: Options,
    recommendations: Vec<Recommendation>,
    scale_up_events: Vec<ScaleEvent>,
    scale_down_events: Vec<ScaleEvent>,
    conditions: Vec<Condition>,
    undo: Option<(bool, Vec<ScaleEvent>)>,
}

impl Autoscaler {
    /// An autoscaler with kube-controller-manager's default flags.
    pub fn new(spec: HpaSpec) -> Autoscaler {
        Autoscaler::with_options(spec, Options::default())
    }

    /// An autoscaler with the given controller flags.
    pub fn with_options(spec: HpaSpec, options: Options) -> Autoscaler {
        Autoscaler {
            spec,
            options,
            recommendations: Vec::new(),
            scale_up_events: Vec::new(),
            scale_down_events: Vec::new(),
            conditions: Vec::new(),
            undo: None,
        }
    }

    /// The HPA this autoscaler runs.
    pub fn spec(&self) -> &HpaSpec {
        &self.spec
    }

    /// The controller flags in force.
    pub fn options(&self) -> &Options {
        &self.options
    }

    fn tolerances(&self) -> Tolerances {
        let b = self.spec.behavior.as_ref();
        Tolerances {
            down: b
                .and_then(|b| b.scale_down.tolerance)
                .unwrap_or(self.options.tolerance),
            up: b
                .and_then(|b| b.scale_up.tolerance)
                .unwrap_or(self.options.tolerance),
        }
    }

    fn set_condition(&mut self, kind: ConditionType, status: bool, reason: &str, message: String) {
        let c = Condition {
            kind,
            status,
            reason: reason.to_string(),
            message,
        };
        match self.conditions.iter_mut().find(|x| x.kind == kind) {
            Some(existing) => *existing = c,
            None => self.conditions.push(c),
        }
    }

    /// One sync of the HPA (`reconcileAutoscaler` after the scale was read): `now` is the time
    /// on any monotonic clock the caller keeps (the same clock for every call), `current` the
    /// scale target's state, `metrics` one observation per entry of `spec.metrics`, in order.
    ///
    /// When the decision rescales, the scale event is recorded as if the update succeeded (the
    /// controller records it after a successful update); call [`Autoscaler::rescale_failed`]
    /// if it did not.
    pub fn reconcile(
        &mut self,
        now: Duration,
        current: &ReplicaState,
        metrics: &[MetricObservation],
    ) -> Decision {
        self.undo = None;
        self.set_condition(
            ConditionType::AbleToScale,
            true,
            "SucceededGetScale",
            "the HPA controller was able to get the target's current scale".into(),
        );
        let current_replicas = current.spec_replicas;
        // recordInitialRecommendation
        if self.recommendations.is_empty() {
            self.recommendations.push(Recommendation {
                replicas: current_replicas,
                at: now,
            });
        }
        let min = self.spec.min_replicas;
        let max = self.spec.max_replicas;
        let mut decision = Decision {
            current_replicas,
            desired_replicas: current_replicas,
            raw_recommendation: None,
            per_metric: Vec::new(),
            conditions: Vec::new(),
            reason: String::new(),
            error: None,
        };
        let desired;
        if current_replicas == 0 && min != 0 {
            self.set_condition(
                ConditionType::ScalingActive,
                false,
                "ScalingDisabled",
                "scaling is disabled since the replica count of the target is zero".into(),
            );
            decision.reason =
                "scaling is disabled since the replica count of the target is zero".into();
            decision.conditions = self.conditions.clone();
            return decision;
        } else if current_replicas > max {
            decision.reason = "Current number of replicas above Spec.MaxReplicas".into();
            desired = max;
        } else if current_replicas < min {
            decision.reason = "Current number of replicas below Spec.MinReplicas".into();
            desired = min;
        } else {
            let ctx = calc::Context {
                now,
                state: current,
                tolerances: self.tolerances(),
                timing: self.options.pod_timing,
            };
            let mut replicas = 0i32;
            let mut metric_name = String::new();
            let mut invalid = 0usize;
            let mut first_failure: Option<(String, MetricFailure)> = None;
            for (i, m) in self.spec.metrics.iter().enumerate() {
                let result = calc::propose(&ctx, m, metrics.get(i));
                let name = m.source.describe();
                match &result {
                    Ok(p) => {
                        if replicas == 0 || p.replicas > replicas {
                            replicas = p.replicas;
                            metric_name = name.clone();
                        }
                    }
                    Err(f) => {
                        if invalid == 0 {
                            first_failure = Some((name.clone(), f.clone()));
                        }
                        invalid += 1;
                    }
                }
                decision.per_metric.push(MetricOutcome {
                    metric: name,
                    result,
                });
            }
            let total = self.spec.metrics.len();
            if let Some((name, f)) = &first_failure {
                decision.error = Some(format!(
                    "invalid metrics ({invalid} invalid out of {total}), first error is: failed to get {name}: {}",
                    f.message
                ));
            }
            if invalid >= total || (invalid > 0 && replicas < current_replicas) {
                if let Some((_, f)) = first_failure {
                    self.set_condition(
                        ConditionType::ScalingActive,
                        false,
                        f.reason,
                        format!(
                            "the HPA was unable to compute the replica count: {}",
                            f.message
                        ),
                    );
                }
                decision.reason = if invalid >= total {
                    "all metrics are invalid: holding".into()
                } else {
                    "some metrics are invalid and the valid ones would scale down: holding".into()
                };
                decision.conditions = self.conditions.clone();
                return decision;
            }
            self.set_condition(
                ConditionType::ScalingActive,
                true,
                "ValidMetricFound",
                format!(
                    "the HPA was able to successfully calculate a replica count from {metric_name}"
                ),
            );
            decision.raw_recommendation = Some(replicas);
            let mut wanted = replicas.max(0);
            let rescale_metric = if replicas > 0 {
                metric_name
            } else {
                String::new()
            };
            if wanted > current_replicas {
                decision.reason = format!("{rescale_metric} above target");
            }
            if wanted < current_replicas {
                decision.reason = "All metrics below target".into();
            }
            wanted = if self.spec.behavior.is_none() {
                self.normalize_legacy(now, current_replicas, wanted)
            } else {
                self.normalize_with_behaviors(now, current_replicas, wanted)
            };
            desired = wanted;
            if desired == current_replicas && decision.reason.is_empty() {
                decision.reason = "recommended size matches current size".into();
            }
        }
        if desired != current_replicas {
            self.set_condition(
                ConditionType::AbleToScale,
                true,
                "SucceededRescale",
                format!("the HPA controller was able to update the target scale to {desired}"),
            );
            self.store_scale_event(now, current_replicas, desired);
            decision.desired_replicas = desired;
        }
        decision.conditions = self.conditions.clone();
        decision
    }

    /// Undoes the scale event the last [`Autoscaler::reconcile`] recorded, for a caller whose
    /// update of the scale failed (the controller records events only after success), and sets
    /// `AbleToScale=False FailedUpdateScale`.
    pub fn rescale_failed(&mut self, error: &str) {
        if let Some((up, events)) = self.undo.take() {
            if up {
                self.scale_up_events = events;
            } else {
                self.scale_down_events = events;
            }
        }
        self.set_condition(
            ConditionType::AbleToScale,
            false,
            "FailedUpdateScale",
            format!("the HPA controller was unable to update the target scale: {error}"),
        );
    }

    /// The HPA's current conditions.
    pub fn conditions(&self) -> &[Condition] {
        &self.conditions
    }

    /// `normalizeDesiredReplicas`: without `behavior`.
    fn normalize_legacy(&mut self, now: Duration, current: i32, prenormalized: i32) -> i32 {
        // stabilizeRecommendation
        let window = self.options.downscale_stabilization;
        let mut max_recommendation = prenormalized;
        let mut old_index = None;
        for (i, rec) in self.recommendations.iter().enumerate() {
            if before_cutoff(rec.at, now, window) {
                old_index = Some(i);
            } else if rec.replicas > max_recommendation {
                max_recommendation = rec.replicas;
            }
        }
        let fresh = Recommendation {
            replicas: prenormalized,
            at: now,
        };
        match old_index {
            Some(i) => self.recommendations[i] = fresh,
            None => self.recommendations.push(fresh),
        }
        let stabilized = max_recommendation;
        if stabilized != prenormalized {
            self.set_condition(
                ConditionType::AbleToScale,
                true,
                "ScaleDownStabilized",
                "recent recommendations were higher than current one, applying the highest recent recommendation".into(),
            );
        } else {
            self.set_condition(
                ConditionType::AbleToScale,
                true,
                "ReadyForNewScale",
                "recommended size matches current size".into(),
            );
        }
        // convertDesiredReplicasWithRules
        let min = self.spec.min_replicas;
        let max = self.spec.max_replicas;
        let scale_up_limit = (2.0 * current as f64).max(4.0) as i32;
        let (maximum, limit_reason, limit_message) = if max > scale_up_limit {
            (
                scale_up_limit,
                "ScaleUpLimit",
                "the desired replica count is increasing faster than the maximum scale rate",
            )
        } else {
            (
                max,
                "TooManyReplicas",
                "the desired replica count is more than the maximum replica count",
            )
        };
        let (desired, reason, message) = if stabilized < min {
            (
                min,
                "TooFewReplicas",
                "the desired replica count is less than the minimum replica count",
            )
        } else if stabilized > maximum {
            (maximum, limit_reason, limit_message)
        } else {
            (
                stabilized,
                "DesiredWithinRange",
                "the desired count is within the acceptable range",
            )
        };
        self.set_condition(
            ConditionType::ScalingLimited,
            desired != stabilized,
            reason,
            message.into(),
        );
        desired
    }

    /// `normalizeDesiredReplicasWithBehaviors`.
    fn normalize_with_behaviors(&mut self, now: Duration, current: i32, prenormalized: i32) -> i32 {
        let Some(behavior) = self.spec.behavior.clone() else {
            return prenormalized;
        };
        let up_window = secs(behavior.scale_up.stabilization_window_seconds.unwrap_or(0));
        // maybeInitScaleDownStabilizationWindow
        let down_window = behavior
            .scale_down
            .stabilization_window_seconds
            .map(secs)
            .unwrap_or(Duration::from_secs(
                self.options.downscale_stabilization.as_secs(),
            ));

        // stabilizeRecommendationWithBehaviors
        let mut up_recommendation = prenormalized;
        let mut down_recommendation = prenormalized;
        let mut old_index = None;
        for (i, rec) in self.recommendations.iter().enumerate() {
            if after_cutoff(rec.at, now, up_window) {
                up_recommendation = up_recommendation.min(rec.replicas);
            }
            if after_cutoff(rec.at, now, down_window) {
                down_recommendation = down_recommendation.max(rec.replicas);
            }
            if before_cutoff(rec.at, now, up_window) && before_cutoff(rec.at, now, down_window) {
                old_index = Some(i);
            }
        }
        let mut stabilized = current;
        if stabilized < up_recommendation {
            stabilized = up_recommendation;
        }
        if stabilized > down_recommendation {
            stabilized = down_recommendation;
        }
        let fresh = Recommendation {
            replicas: prenormalized,
            at: now,
        };
        match old_index {
            Some(i) => self.recommendations[i] = fresh,
            None => self.recommendations.push(fresh),
        }
        if stabilized != prenormalized {
            if prenormalized >= current {
                self.set_condition(
                    ConditionType::AbleToScale,
                    true,
                    "ScaleUpStabilized",
                    "recent recommendations were lower than current one, applying the lowest recent recommendation".into(),
                );
            } else {
                self.set_condition(
                    ConditionType::AbleToScale,
                    true,
                    "ScaleDownStabilized",
                    "recent recommendations were higher than current one, applying the highest recent recommendation".into(),
                );
            }
        } else {
            self.set_condition(
                ConditionType::AbleToScale,
                true,
                "ReadyForNewScale",
                "recommended size matches current size".into(),
            );
        }

        // convertDesiredReplicasWithBehaviorRate
        let min = self.spec.min_replicas;
        let max = self.spec.max_replicas;
        let mut result = (
            stabilized,
            "DesiredWithinRange",
            "the desired count is within the acceptable range",
        );
        if stabilized > current {
            let limit = scale_up_limit(
                now,
                current,
                &self.scale_up_events,
                &self.scale_down_events,
                &behavior.scale_up,
            )
            .max(current);
            let (maximum, reason, message) = if max > limit {
                (
                    limit,
                    "ScaleUpLimit",
                    "the desired replica count is increasing faster than the maximum scale rate",
                )
            } else {
                (
                    max,
                    "TooManyReplicas",
                    "the desired replica count is more than the maximum replica count",
                )
            };
            if stabilized > maximum {
                result = (maximum, reason, message);
            }
        } else if stabilized < current {
            let limit = scale_down_limit(
                now,
                current,
                &self.scale_up_events,
                &self.scale_down_events,
                &behavior.scale_down,
            )
            .min(current);
            let (minimum, reason, message) = if min < limit {
                (
                    limit,
                    "ScaleDownLimit",
                    "the desired replica count is decreasing faster than the maximum scale rate",
                )
            } else {
                (
                    min,
                    "TooFewReplicas",
                    "the desired replica count is less than the minimum replica count",
                )
            };
            if stabilized < minimum {
                result = (minimum, reason, message);
            }
        }
        let (desired, reason, message) = result;
        self.set_condition(
            ConditionType::ScalingLimited,
            desired != stabilized,
            reason,
            message.into(),
        );
        desired
    }

    /// `storeScaleEvent`: only with `behavior`; reuses the last outdated slot.
    fn store_scale_event(&mut self, now: Duration, prev: i32, new: i32) {
        let Some(behavior) = &self.spec.behavior else {
            return;
        };
        let up = new > prev;
        let (rules, events) = if up {
            (&behavior.scale_up, &mut self.scale_up_events)
        } else {
            (&behavior.scale_down, &mut self.scale_down_events)
        };
        self.undo = Some((up, events.clone()));
        let longest = secs(rules.longest_period());
        let mut old_index = None;
        for (i, e) in events.iter_mut().enumerate() {
            if before_cutoff(e.at, now, longest) {
                e.outdated = true;
            }
            if e.outdated {
                old_index = Some(i);
            }
        }
        let fresh = ScaleEvent {
            change: (new - prev).abs(),
            at: now,
            outdated: false,
        };
        match old_index {
            Some(i) => events[i] = fresh,
            None => events.push(fresh),
        }
    }
}

/// `getReplicasChangePerPeriod`.
fn change_in_period(now: Duration, period_seconds: i32, events: &[ScaleEvent]) -> i32 {
    events
        .iter()
        .filter(|e| after_cutoff(e.at, now, secs(period_seconds)))
        .map(|e| e.change)
        .fold(0i32, i32::saturating_add)
}

/// `calculateScaleUpLimitWithScalingRules`.
fn scale_up_limit(
    now: Duration,
    current: i32,
    up_events: &[ScaleEvent],
    down_events: &[ScaleEvent],
    rules: &ScalingRules,
) -> i32 {
    let (mut result, pick): (i32, fn(i32, i32) -> i32) = match rules.select_policy {
        SelectPolicy::Disabled => return current,
        SelectPolicy::Min => (i32::MAX, std::cmp::min),
        SelectPolicy::Max => (i32::MIN, std::cmp::max),
    };
    for p in &rules.policies {
        let added = change_in_period(now, p.period_seconds, up_events);
        let deleted = change_in_period(now, p.period_seconds, down_events);
        let start = current.saturating_sub(added).saturating_add(deleted);
        let proposed = match p.kind {
            PolicyKind::Pods => start.saturating_add(p.value),
            PolicyKind::Percent => (start as f64 * (1.0 + p.value as f64 / 100.0)).ceil() as i32,
        };
        result = pick(result, proposed);
    }
    result
}

/// `calculateScaleDownLimitWithBehaviors`.
fn scale_down_limit(
    now: Duration,
    current: i32,
    up_events: &[ScaleEvent],
    down_events: &[ScaleEvent],
    rules: &ScalingRules,
) -> i32 {
    let (mut result, pick): (i32, fn(i32, i32) -> i32) = match rules.select_policy {
        SelectPolicy::Disabled => return current,
        SelectPolicy::Min => (i32::MIN, std::cmp::max),
        SelectPolicy::Max => (i32::MAX, std::cmp::min),
    };
    for p in &rules.policies {
        let added = change_in_period(now, p.period_seconds, up_events);
        let deleted = change_in_period(now, p.period_seconds, down_events);
        let start = current.saturating_sub(added).saturating_add(deleted);
        let proposed = match p.kind {
            PolicyKind::Pods => start.saturating_sub(p.value),
            PolicyKind::Percent => (start as f64 * (1.0 - p.value as f64 / 100.0)) as i32,
        };
        result = pick(result, proposed);
    }
    result
}
