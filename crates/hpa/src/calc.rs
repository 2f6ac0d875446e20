//! The controller's `ReplicaCalculator` (`replica_calculator.go`): one metric's replica
//! proposal from its observation, the target and the pods.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::spec::{MetricSource, MetricSpec, MetricTarget};

/// The state of the scale target that the controller reads before computing.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaState {
    /// `scale.spec.replicas`: the controller's "current replicas".
    pub spec_replicas: i32,
    /// `scale.status.replicas`: used by `AverageValue` targets of External and Object metrics.
    pub status_replicas: i32,
    /// The pods the scale's selector matches.
    pub pods: Pods,
}

impl ReplicaState {
    /// A settled target: `n` replicas wanted, `n` running, all ready.
    pub fn settled(n: i32) -> ReplicaState {
        let count = u32::try_from(n).unwrap_or(0);
        ReplicaState {
            spec_replicas: n,
            status_replicas: n,
            pods: Pods::Counted {
                total: count,
                ready: count,
            },
        }
    }
}

/// What is known about the target's pods.
#[derive(Debug, Clone, PartialEq)]
pub enum Pods {
    /// Only counts (enough for External and Object metrics): pods matched by the selector, and
    /// how many of them are Running and Ready.
    Counted {
        /// Pods matched by the selector.
        total: u32,
        /// Of those, Running with condition Ready=True.
        ready: u32,
    },
    /// The pods themselves (needed for Pods, Resource and ContainerResource metrics).
    Listed(Vec<PodInfo>),
}

impl Pods {
    fn counts(&self) -> (usize, usize) {
        match self {
            Pods::Counted { total, ready } => (*total as usize, *ready as usize),
            Pods::Listed(list) => (
                list.len(),
                list.iter()
                    .filter(|p| p.phase == PodPhase::Running && p.ready.is_some_and(|r| r.ready))
                    .count(),
            ),
        }
    }
}

/// A pod's `status.phase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodPhase {
    /// `Pending`.
    Pending,
    /// `Running`.
    Running,
    /// `Succeeded`.
    Succeeded,
    /// `Failed`.
    Failed,
    /// `Unknown`.
    Unknown,
}

/// A pod's `Ready` condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodReadiness {
    /// `status == "True"`.
    pub ready: bool,
    /// `lastTransitionTime`, on the autoscaler's clock.
    pub last_transition: Duration,
}

/// Resource requests of one container, in milli-units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRequests {
    /// The container name.
    pub name: String,
    /// Requests by resource name (`cpu`, `memory`), milli-values.
    pub requests: BTreeMap<String, i64>,
}

/// One pod as the controller's pod lister sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodInfo {
    /// `metadata.name`.
    pub name: String,
    /// `status.phase`.
    pub phase: PodPhase,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// The `Ready` condition, if the pod has one.
    pub ready: Option<PodReadiness>,
    /// `status.startTime`, on the autoscaler's clock.
    pub start_time: Option<Duration>,
    /// Containers (and restartable init containers) with their requests.
    pub containers: Vec<ContainerRequests>,
}

/// One per-pod sample of a Pods, Resource or ContainerResource metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodMetric {
    /// The pod's name.
    pub pod: String,
    /// The value, milli-units.
    pub value: i64,
    /// When it was sampled, on the autoscaler's clock.
    pub timestamp: Duration,
    /// The sample's window (resource metrics).
    pub window: Duration,
}

/// What the metrics APIs returned for one entry of `spec.metrics` (same index).
#[derive(Debug, Clone, PartialEq)]
pub enum MetricObservation {
    /// An External metric: the values (milli-units) of the `ExternalMetricValueList` items,
    /// which the controller sums.
    External(Vec<i64>),
    /// An Object metric: the object's value, milli-units.
    Object(i64),
    /// A Pods, Resource or ContainerResource metric: one sample per pod.
    PerPod(Vec<PodMetric>),
    /// Fetching the metric failed (an error status, a timeout...): the message.
    Error(String),
}

/// The metric's current value as the controller reports it in `status.currentMetrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MetricCurrent {
    /// `current.value`, milli-units.
    pub value: Option<i64>,
    /// `current.averageValue`, milli-units.
    pub average_value: Option<i64>,
    /// `current.averageUtilization`, percent.
    pub average_utilization: Option<i32>,
}

/// One metric's proposal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Proposal {
    /// The replica count this metric asks for.
    pub replicas: i32,
    /// The observed value.
    pub current: MetricCurrent,
    /// The usage ratio the proposal was computed from (current / target, before any
    /// missing/unready pod adjustment).
    pub usage_ratio: f64,
}

/// A failed metric: the condition reason (`FailedGetExternalMetric`...) and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricFailure {
    /// The `ScalingActive=False` reason the controller would set.
    pub reason: &'static str,
    /// The error.
    pub message: String,
}

/// The tolerance band around a usage ratio of 1.0 (`Tolerances` in the controller).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerances {
    /// Below 1.0: no scale-down while `ratio >= 1 - down`.
    pub down: f64,
    /// Above 1.0: no scale-up while `ratio <= 1 + up`.
    pub up: f64,
}

impl Tolerances {
    /// `(1 - down) <= ratio <= (1 + up)`.
    pub fn is_within(&self, ratio: f64) -> bool {
        (1.0 - self.down) <= ratio && ratio <= (1.0 + self.up)
    }
}

/// Timing knobs of the CPU readiness rules (kube-controller-manager flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodTiming {
    /// `--horizontal-pod-autoscaler-cpu-initialization-period` (5 min).
    pub cpu_initialization_period: Duration,
    /// `--horizontal-pod-autoscaler-initial-readiness-delay` (30 s).
    pub initial_readiness_delay: Duration,
}

impl Default for PodTiming {
    /// kube-controller-manager's defaults: 5 min and 30 s.
    fn default() -> Self {
        PodTiming {
            cpu_initialization_period: Duration::from_secs(300),
            initial_readiness_delay: Duration::from_secs(30),
        }
    }
}

pub(crate) struct Context<'a> {
    pub now: Duration,
    pub state: &'a ReplicaState,
    pub tolerances: Tolerances,
    pub timing: PodTiming,
}

/// Rounds up like `int32(math.Ceil(x))` for the values the controller sees, saturating.
fn ceil_i32(x: f64) -> i32 {
    x.ceil() as i32
}

/// Computes one metric's proposal (`computeReplicasForMetric`).
pub(crate) fn propose(
    ctx: &Context<'_>,
    spec: &MetricSpec,
    observation: Option<&MetricObservation>,
) -> Result<Proposal, MetricFailure> {
    let reason = match &spec.source {
        MetricSource::External { .. } => "FailedGetExternalMetric",
        MetricSource::Object { .. } => "FailedGetObjectMetric",
        MetricSource::Pods { .. } => "FailedGetPodsMetric",
        MetricSource::Resource { .. } => "FailedGetResourceMetric",
        MetricSource::ContainerResource { .. } => "FailedGetContainerResourceMetric",
    };
    let fail = |message: String| MetricFailure { reason, message };
    let what = spec.source.describe();
    let observation = match observation {
        None => return Err(fail(format!("unable to get {what}: no observation given"))),
        Some(MetricObservation::Error(e)) => {
            return Err(fail(format!("unable to get {what}: {e}")));
        }
        Some(o) => o,
    };
    let spec_replicas = ctx.state.spec_replicas;
    let status_replicas = ctx.state.status_replicas;
    match (&spec.source, spec.target, observation) {
        (MetricSource::External { .. }, target, MetricObservation::External(items)) => {
            let usage = items.iter().fold(0i64, |acc, v| acc.saturating_add(*v));
            match target {
                MetricTarget::AverageValue(t) => Ok(per_pod_total(ctx, status_replicas, usage, t)),
                MetricTarget::Value(t) => total_value(ctx, spec_replicas, usage, t).map_err(fail),
                MetricTarget::Utilization(_) => {
                    Err(fail("utilization target on an external metric".into()))
                }
            }
        }
        (MetricSource::Object { .. }, target, MetricObservation::Object(usage)) => match target {
            MetricTarget::AverageValue(t) => Ok(per_pod_total(ctx, status_replicas, *usage, t)),
            MetricTarget::Value(t) => total_value(ctx, spec_replicas, *usage, t).map_err(fail),
            MetricTarget::Utilization(_) => {
                Err(fail("utilization target on an object metric".into()))
            }
        },
        (
            MetricSource::Pods { .. },
            MetricTarget::AverageValue(t),
            MetricObservation::PerPod(samples),
        ) => {
            if samples.is_empty() {
                return Err(fail(format!(
                    "unable to get {what}: no metrics returned from custom metrics API"
                )));
            }
            plain_per_pod(ctx, samples, t, None).map_err(fail)
        }
        (
            MetricSource::Resource { name } | MetricSource::ContainerResource { name, .. },
            target,
            MetricObservation::PerPod(samples),
        ) => {
            if samples.is_empty() {
                return Err(fail(format!(
                    "unable to get metrics for resource {name}: no metrics returned from resource metrics API"
                )));
            }
            let container = match &spec.source {
                MetricSource::ContainerResource { container, .. } => Some(container.as_str()),
                _ => None,
            };
            match target {
                MetricTarget::AverageValue(t) => plain_per_pod(ctx, samples, t, Some(name)),
                MetricTarget::Utilization(u) => utilization(ctx, samples, u, name, container),
                MetricTarget::Value(_) => Err("value target on a resource metric".into()),
            }
            .map_err(fail)
        }
        (_, _, other) => Err(fail(format!(
            "the observation ({}) does not fit {what}",
            match other {
                MetricObservation::External(_) => "external values",
                MetricObservation::Object(_) => "an object value",
                MetricObservation::PerPod(_) => "per-pod values",
                MetricObservation::Error(_) => "an error",
            }
        ))),
    }
}

/// `GetExternalPerPodMetricReplicas` / `GetObjectPerPodMetricReplicas`: `AverageValue`
/// targets divide the total by the target, against `status.replicas`.
fn per_pod_total(ctx: &Context<'_>, status_replicas: i32, usage: i64, target: i64) -> Proposal {
    let ratio = usage as f64 / (target as f64 * status_replicas as f64);
    let mut replicas = status_replicas;
    if !ctx.tolerances.is_within(ratio) {
        replicas = ceil_i32(usage as f64 / target as f64);
    }
    let average = if status_replicas == 0 {
        None
    } else {
        Some((usage as f64 / status_replicas as f64).ceil() as i64)
    };
    Proposal {
        replicas,
        current: MetricCurrent {
            average_value: average,
            ..MetricCurrent::default()
        },
        usage_ratio: ratio,
    }
}

/// `GetExternalMetricReplicas` / `GetObjectMetricReplicas` (`getUsageRatioReplicaCount`):
/// `Value` targets scale the ready pods by `usage / target`; from 0 replicas, `ceil(ratio)`.
fn total_value(
    ctx: &Context<'_>,
    spec_replicas: i32,
    usage: i64,
    target: i64,
) -> Result<Proposal, String> {
    let ratio = usage as f64 / target as f64;
    let replicas = if spec_replicas != 0 {
        if ctx.tolerances.is_within(ratio) {
            spec_replicas
        } else {
            let (total, ready) = ctx.state.pods.counts();
            if total == 0 {
                return Err("unable to calculate ready pods: no pods returned by selector while calculating replica count".into());
            }
            ceil_i32(ratio * ready as f64)
        }
    } else {
        ceil_i32(ratio)
    };
    Ok(Proposal {
        replicas,
        current: MetricCurrent {
            value: Some(usage),
            ..MetricCurrent::default()
        },
        usage_ratio: ratio,
    })
}

struct Groups {
    ready_count: usize,
    unready: BTreeSet<String>,
    missing: BTreeSet<String>,
    ignored: BTreeSet<String>,
}

/// `groupPods`.
fn group_pods(
    ctx: &Context<'_>,
    pods: &[PodInfo],
    metrics: &BTreeMap<String, PodMetric>,
    resource: Option<&str>,
) -> Groups {
    let mut g = Groups {
        ready_count: 0,
        unready: BTreeSet::new(),
        missing: BTreeSet::new(),
        ignored: BTreeSet::new(),
    };
    for pod in pods {
        if pod.deleting || pod.phase == PodPhase::Failed {
            g.ignored.insert(pod.name.clone());
            continue;
        }
        if pod.phase == PodPhase::Pending {
            g.unready.insert(pod.name.clone());
            continue;
        }
        let Some(metric) = metrics.get(&pod.name) else {
            g.missing.insert(pod.name.clone());
            continue;
        };
        if resource == Some("cpu") {
            let unready = match (pod.ready, pod.start_time) {
                (Some(cond), Some(start)) => {
                    if start + ctx.timing.cpu_initialization_period > ctx.now {
                        // Still initializing: ignore the sample if the pod is unready or no
                        // whole window was collected since its last readiness transition.
                        !cond.ready || metric.timestamp < cond.last_transition + metric.window
                    } else {
                        // Ignore it if the pod is unready and has never been ready.
                        !cond.ready
                            && start + ctx.timing.initial_readiness_delay > cond.last_transition
                    }
                }
                _ => true,
            };
            if unready {
                g.unready.insert(pod.name.clone());
                continue;
            }
        }
        g.ready_count += 1;
    }
    g
}

fn listed_pods<'a>(ctx: &'a Context<'_>) -> Result<&'a [PodInfo], String> {
    match &ctx.state.pods {
        Pods::Listed(list) if list.is_empty() => {
            Err("no pods returned by selector while calculating replica count".into())
        }
        Pods::Listed(list) => Ok(list),
        Pods::Counted { .. } => {
            Err("per-pod metrics need the pod list (ReplicaState.pods = Pods::Listed)".into())
        }
    }
}

fn sample_map(samples: &[PodMetric]) -> BTreeMap<String, PodMetric> {
    samples.iter().map(|s| (s.pod.clone(), s.clone())).collect()
}

/// `GetMetricUsageRatio`: the integer mean over the samples against the target.
fn usage_ratio(metrics: &BTreeMap<String, i64>, target: i64) -> (f64, i64) {
    let total: i128 = metrics.values().map(|v| *v as i128).sum();
    let current = (total / metrics.len().max(1) as i128) as i64;
    (current as f64 / target as f64, current)
}

/// Computes a usage ratio from per-pod values.
type RatioFn<'a> = dyn Fn(&BTreeMap<String, i64>) -> Result<f64, String> + 'a;

/// The shared shape of `calcPlainMetricReplicas` and `GetResourceReplicas`: compute a ratio,
/// and when pods are missing metrics or unready, redo it assuming the least helpful values for
/// them (missing pods 0 on scale-up and the target on scale-down, unready pods 0 on
/// scale-up), never letting those assumptions flip the direction.
fn adjusted(
    ctx: &Context<'_>,
    groups: &Groups,
    metrics: &mut BTreeMap<String, i64>,
    ratio_of: &RatioFn<'_>,
    missing_on_scale_down: &dyn Fn(&str) -> i64,
) -> Result<(i32, f64), String> {
    let current = ctx.state.spec_replicas;
    let ratio = ratio_of(metrics)?;
    let scale_up_with_unready = !groups.unready.is_empty() && ratio > 1.0;
    if !scale_up_with_unready && groups.missing.is_empty() {
        if ctx.tolerances.is_within(ratio) {
            return Ok((current, ratio));
        }
        return Ok((ceil_i32(ratio * groups.ready_count as f64), ratio));
    }
    if !groups.missing.is_empty() {
        if ratio < 1.0 {
            for pod in &groups.missing {
                metrics.insert(pod.clone(), missing_on_scale_down(pod));
            }
        } else if ratio > 1.0 {
            for pod in &groups.missing {
                metrics.insert(pod.clone(), 0);
            }
        }
    }
    if scale_up_with_unready {
        for pod in &groups.unready {
            metrics.insert(pod.clone(), 0);
        }
    }
    let new_ratio = ratio_of(metrics)?;
    if ctx.tolerances.is_within(new_ratio)
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
    {
        return Ok((current, ratio));
    }
    let new_replicas = ceil_i32(new_ratio * metrics.len() as f64);
    if (new_ratio < 1.0 && new_replicas > current) || (new_ratio > 1.0 && new_replicas < current) {
        return Ok((current, ratio));
    }
    Ok((new_replicas, ratio))
}

/// `calcPlainMetricReplicas` (Pods metrics, and Resource metrics with an `AverageValue`).
fn plain_per_pod(
    ctx: &Context<'_>,
    samples: &[PodMetric],
    target: i64,
    resource: Option<&str>,
) -> Result<Proposal, String> {
    let pods = listed_pods(ctx)?;
    let full = sample_map(samples);
    let groups = group_pods(ctx, pods, &full, resource);
    let mut metrics: BTreeMap<String, i64> = full
        .iter()
        .filter(|(pod, _)| !groups.ignored.contains(*pod) && !groups.unready.contains(*pod))
        .map(|(pod, m)| (pod.clone(), m.value))
        .collect();
    if metrics.is_empty() {
        return Err("did not receive metrics for targeted pods (pods might be unready)".into());
    }
    let (_, usage) = usage_ratio(&metrics, target);
    let (replicas, ratio) = adjusted(
        ctx,
        &groups,
        &mut metrics,
        &|m| Ok(usage_ratio(m, target).0),
        &|_| target,
    )?;
    Ok(Proposal {
        replicas,
        current: MetricCurrent {
            average_value: Some(usage),
            ..MetricCurrent::default()
        },
        usage_ratio: ratio,
    })
}

/// `calculateRequests` from containers: a named container's request, or the sum over all.
fn pod_request(pod: &PodInfo, resource: &str, container: Option<&str>) -> Result<i64, String> {
    let mut total = 0i64;
    for c in &pod.containers {
        if container.is_none_or(|want| want == c.name) {
            let Some(r) = c.requests.get(resource) else {
                return Err(format!(
                    "missing request for {resource} in container {} of Pod {}",
                    c.name, pod.name
                ));
            };
            total = total.saturating_add(*r);
            if container.is_some() {
                return Ok(total);
            }
        }
    }
    match container {
        Some(want) => Err(format!("container {want} not found in Pod {}", pod.name)),
        None => Ok(total),
    }
}

/// `GetResourceUtilizationRatio`: integer percent of the summed requests.
fn utilization_ratio(
    metrics: &BTreeMap<String, i64>,
    requests: &BTreeMap<String, i64>,
    target: i32,
) -> Result<(f64, i32, i64), String> {
    let (mut used, mut requested, mut entries) = (0i128, 0i128, 0i128);
    for (pod, value) in metrics {
        let Some(request) = requests.get(pod) else {
            continue; // extraneous metric
        };
        used += *value as i128;
        requested += *request as i128;
        entries += 1;
    }
    if requested == 0 {
        return Err("no metrics returned matched known pods".into());
    }
    let percent = (used * 100 / requested).clamp(i32::MIN as i128, i32::MAX as i128) as i32;
    let raw_average = (used / entries.max(1)) as i64;
    Ok((percent as f64 / target as f64, percent, raw_average))
}

/// `GetResourceReplicas` (Resource / ContainerResource metrics with a `Utilization` target).
fn utilization(
    ctx: &Context<'_>,
    samples: &[PodMetric],
    target: i32,
    resource: &str,
    container: Option<&str>,
) -> Result<Proposal, String> {
    let pods = listed_pods(ctx)?;
    let full = sample_map(samples);
    let groups = group_pods(ctx, pods, &full, Some(resource));
    let mut metrics: BTreeMap<String, i64> = full
        .iter()
        .filter(|(pod, _)| !groups.ignored.contains(*pod) && !groups.unready.contains(*pod))
        .map(|(pod, m)| (pod.clone(), m.value))
        .collect();
    if metrics.is_empty() {
        return Err("did not receive metrics for targeted pods (pods might be unready)".into());
    }
    let requests: BTreeMap<String, i64> = pods
        .iter()
        .map(|p| pod_request(p, resource, container).map(|r| (p.name.clone(), r)))
        .collect::<Result<_, _>>()?;
    let (_, percent, raw) = utilization_ratio(&metrics, &requests, target)?;
    let fallback = i64::from(target.max(100));
    let (replicas, ratio) = adjusted(
        ctx,
        &groups,
        &mut metrics,
        &|m| utilization_ratio(m, &requests, target).map(|r| r.0),
        &|pod| {
            requests
                .get(pod)
                .copied()
                .unwrap_or(0)
                .saturating_mul(fallback)
                / 100
        },
    )?;
    Ok(Proposal {
        replicas,
        current: MetricCurrent {
            average_value: Some(raw),
            average_utilization: Some(percent),
            ..MetricCurrent::default()
        },
        usage_ratio: ratio,
    })
}
