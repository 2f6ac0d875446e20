//! The HPA as the simulation's controller: [`hpa::Autoscaler`] (the controller's algorithm)
//! reading the simulated signals by the names milvus-scaler serves them under, and pod CPU the
//! way metrics-server reports it.

use std::collections::BTreeMap;
use std::time::Duration;

use hpa::{
    Autoscaler, ContainerRequests, HpaSpec, MetricObservation, MetricSource, Options, PodInfo,
    PodMetric, PodPhase, PodReadiness, Pods, ReplicaState,
};

use crate::SimError;
use crate::sim::{ClusterView, Controller};

/// An HPA object driving the simulated query nodes.
pub struct HpaController {
    autoscaler: Autoscaler,
    sync_period_seconds: f64,
}

impl HpaController {
    /// The HPA of `spec`, synced every `sync_period_seconds` with the controller's `options`.
    /// Fails when a metric is one the simulation cannot produce.
    pub fn new(
        spec: HpaSpec,
        options: Options,
        sync_period_seconds: f64,
    ) -> Result<Self, SimError> {
        for metric in &spec.metrics {
            match &metric.source {
                MetricSource::External { metric } => {
                    crate::Signals::default().by_name(&metric.name)?;
                }
                MetricSource::Resource { name } if name == "cpu" => {}
                other => {
                    return Err(SimError::Controller(format!(
                        "{}: the simulation produces external milvus_* metrics and pod cpu only",
                        other.describe()
                    )));
                }
            }
        }
        Ok(Self {
            autoscaler: Autoscaler::with_options(spec, options),
            sync_period_seconds,
        })
    }
}

fn milli(v: f64) -> i64 {
    (v * 1000.0).round() as i64
}

impl Controller for HpaController {
    fn sync_period_seconds(&self) -> f64 {
        self.sync_period_seconds
    }

    fn sync(&mut self, now_seconds: f64, view: &ClusterView<'_>) -> u32 {
        let now = Duration::from_secs_f64(now_seconds.max(0.0));
        let ago = |s: f64| now.saturating_sub(Duration::from_secs_f64(s.max(0.0)));
        let pods: Vec<PodInfo> = view
            .pods
            .iter()
            .enumerate()
            .map(|(i, p)| PodInfo {
                name: format!("querynode-{i}"),
                phase: if p.running {
                    PodPhase::Running
                } else {
                    PodPhase::Pending
                },
                deleting: false,
                ready: p.running.then(|| PodReadiness {
                    ready: p.ready,
                    last_transition: ago(p.ready_seconds_ago.unwrap_or(p.started_seconds_ago)),
                }),
                start_time: p.running.then(|| ago(p.started_seconds_ago)),
                containers: vec![ContainerRequests {
                    name: "querynode".into(),
                    requests: BTreeMap::from([("cpu".to_string(), milli(p.cpu_request_cores))]),
                }],
            })
            .collect();
        let observations: Vec<MetricObservation> = self
            .autoscaler
            .spec()
            .metrics
            .iter()
            .map(|m| match &m.source {
                MetricSource::External { metric } => match view.signals.by_name(&metric.name) {
                    Ok(Some(v)) => MetricObservation::External(vec![milli(v)]),
                    Ok(None) => MetricObservation::Error(format!(
                        "{}: unknown (503 from the external metrics API)",
                        metric.name
                    )),
                    Err(e) => MetricObservation::Error(e.to_string()),
                },
                _ => MetricObservation::PerPod(
                    view.pods
                        .iter()
                        .enumerate()
                        .filter(|(_, p)| p.running)
                        .map(|(i, p)| PodMetric {
                            pod: format!("querynode-{i}"),
                            value: milli(p.cpu_cores),
                            timestamp: now,
                            window: Duration::from_secs(30),
                        })
                        .collect(),
                ),
            })
            .collect();
        let state = ReplicaState {
            spec_replicas: view.spec_replicas as i32,
            status_replicas: view.pods.len() as i32,
            pods: Pods::Listed(pods),
        };
        let decision = self.autoscaler.reconcile(now, &state, &observations);
        decision.desired_replicas.max(0) as u32
    }
}
