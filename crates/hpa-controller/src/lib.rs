//! `milvus-scaler local-hpa`: a replica controller that does, for one HPA, what
//! kube-controller-manager's HPA controller does, against plain HTTP(S) endpoints instead of a
//! cluster: read a Kubernetes scale subresource (`autoscaling/v1` `Scale`), read every External
//! metric of the HPA from an external metrics API (`external.metrics.k8s.io/v1beta1`, exactly the
//! request kube-apiserver's aggregator forwards for the HPA), and for Resource and
//! ContainerResource metrics list the target's pods (core/v1 `PodList`) and their usage
//! (`metrics.k8s.io/v1beta1` `PodMetricsList`), both with the scale's `status.selector` as
//! `labelSelector`; run the [`hpa`] algorithm, and write the scale back when the decision changes
//! it. One structured log line per decision.
//!
//! Object and Pods metrics are not supported: they need the custom metrics API.

pub mod pods;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use hpa::{
    Autoscaler, Decision, HpaSpec, MetricObservation, MetricSource, Options, PodInfo, PodTiming,
    Pods, ReplicaState,
};
use k8s_openapi::List;
use k8s_openapi::api::autoscaling::v1::{Scale, ScaleSpec};
use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;
use thiserror::Error;
use tokio::time::Instant;

use crate::pods::PodMetricsList;

/// TLS options of the one HTTP client (metrics API, scale, pods and pod metrics URLs).
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// PEM CA bundle to trust (besides the built-in roots).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (front-proxy style client authentication).
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    pub client_key: Option<PathBuf>,
    /// Accept any server certificate (the metrics API's dev self-signed mode).
    pub insecure_skip_tls_verify: bool,
}

/// Everything `local-hpa` needs.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// The HPA (External, Resource and ContainerResource metrics).
    pub hpa: HpaSpec,
    /// Base URL of the external metrics API, e.g. `https://127.0.0.1:6443`; required when the
    /// HPA has External metrics.
    pub metrics_api: Option<String>,
    /// URL of the scale subresource (GET and PUT `autoscaling/v1` `Scale`).
    pub scale_url: String,
    /// URL of a core/v1 `PodList` of the target's pods, e.g.
    /// `https://apiserver/api/v1/namespaces/milvus/pods`; asked with the scale's
    /// `status.selector` as `labelSelector`. Required with Resource metrics; when given, External
    /// `Value` targets count ready pods from it too (as the controller does).
    pub pods_url: Option<String>,
    /// URL of a `metrics.k8s.io/v1beta1` `PodMetricsList`, e.g.
    /// `https://apiserver/apis/metrics.k8s.io/v1beta1/namespaces/milvus/pods`; asked with the
    /// same `labelSelector`. Required with Resource metrics.
    pub pod_metrics_url: Option<String>,
    /// How often to sync (`--horizontal-pod-autoscaler-sync-period`, 15 s).
    pub sync_period: Duration,
    /// `--horizontal-pod-autoscaler-tolerance` (0.1).
    pub tolerance: f64,
    /// The CPU readiness rules' timing
    /// (`--horizontal-pod-autoscaler-cpu-initialization-period` 5 min,
    /// `--horizontal-pod-autoscaler-initial-readiness-delay` 30 s; [`PodTiming::default`]).
    pub pod_timing: PodTiming,
    /// Per-request timeout; `None`: none.
    pub request_timeout: Option<Duration>,
    /// TLS options.
    pub tls: TlsOptions,
}

/// Why the controller cannot start.
#[derive(Debug, Error)]
pub enum StartError {
    /// A metric type `local-hpa` cannot serve.
    #[error(
        "spec.metrics[{index}]: {kind} metrics are not supported by local-hpa (only External, Resource and ContainerResource: it has no custom metrics API)"
    )]
    UnsupportedMetric {
        /// Index in `spec.metrics`.
        index: usize,
        /// The metric type.
        kind: &'static str,
    },
    /// A metric needs a URL that was not given.
    #[error("spec.metrics[{index}]: {kind} metrics need {flag}")]
    MissingUrl {
        /// Index in `spec.metrics` (`0` also for the defaulted CPU metric of an HPA without
        /// `spec.metrics`).
        index: usize,
        /// The metric type.
        kind: &'static str,
        /// The missing option (`--metrics-api`, `--pods-url`, `--pod-metrics-url`).
        flag: &'static str,
    },
    /// A TLS file could not be read or used.
    #[error("TLS option {option}: {message}")]
    Tls {
        /// The flag.
        option: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The HTTP client could not be built.
    #[error("building the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// Why one sync could not decide (the scale could not be read) or could not apply its decision.
#[derive(Debug, Error)]
pub enum SyncError {
    /// GET of the scale subresource failed.
    #[error("failed to get the scale of {url}: {message}")]
    GetScale {
        /// The scale URL.
        url: String,
        /// The error.
        message: String,
    },
    /// PUT of the scale subresource failed.
    #[error("failed to rescale {url} to {desired}: {message}")]
    UpdateScale {
        /// The scale URL.
        url: String,
        /// The replicas asked for.
        desired: i32,
        /// The error.
        message: String,
    },
}

/// What one sync did.
#[derive(Debug, Clone)]
pub struct SyncOutcome {
    /// The algorithm's decision.
    pub decision: Decision,
    /// Whether the scale was updated.
    pub rescaled: bool,
}

/// The controller for one HPA. Its clock is tokio's (so tests can pause it).
pub struct LocalHpa {
    autoscaler: Autoscaler,
    client: reqwest::Client,
    metrics_api: Option<String>,
    scale_url: String,
    pods_url: Option<String>,
    pod_metrics_url: Option<String>,
    /// Whether any metric is a Resource or ContainerResource metric.
    per_pod: bool,
    sync_period: Duration,
    started: Instant,
    /// Wall-clock time at `started`, since the Unix epoch: the autoscaler's clock is
    /// `epoch + (tokio now - started)`, so that pod start and readiness times and metric
    /// timestamps (wall clock) compare with it, also for pods older than the controller.
    epoch: Duration,
}

fn read(option: &'static str, path: &PathBuf) -> Result<Vec<u8>, StartError> {
    std::fs::read(path).map_err(|e| StartError::Tls {
        option,
        message: format!("{}: {e}", path.display()),
    })
}

fn build_client(
    tls: &TlsOptions,
    timeout: Option<Duration>,
) -> Result<reqwest::Client, StartError> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .pool_idle_timeout(None)
        .danger_accept_invalid_certs(tls.insecure_skip_tls_verify);
    if let Some(t) = timeout {
        builder = builder.timeout(t);
    }
    if let Some(ca) = &tls.ca_file {
        let pem = read("--ca-file", ca)?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| StartError::Tls {
            option: "--ca-file",
            message: e.to_string(),
        })? {
            builder = builder.add_root_certificate(cert);
        }
    }
    match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            let mut pem = read("--client-cert", cert)?;
            pem.push(b'\n');
            pem.extend(read("--client-key", key)?);
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| StartError::Tls {
                option: "--client-cert",
                message: e.to_string(),
            })?;
            builder = builder.identity(identity);
        }
        (None, None) => {}
        (Some(_), None) => {
            return Err(StartError::Tls {
                option: "--client-key",
                message: "required with --client-cert".into(),
            });
        }
        (None, Some(_)) => {
            return Err(StartError::Tls {
                option: "--client-cert",
                message: "required with --client-key".into(),
            });
        }
    }
    Ok(builder.build()?)
}

/// The pods and pod metrics read in one sync (`None`: not asked).
#[derive(Default)]
struct PodsRead {
    pods: Option<Result<Vec<PodInfo>, String>>,
    metrics: Option<Result<PodMetricsList, String>>,
}

/// The parts of an `ExternalMetricValueList` the HPA reads.
#[derive(Deserialize)]
struct ExternalMetricValueList {
    #[serde(default)]
    items: Vec<ExternalMetricValue>,
}

#[derive(Deserialize)]
struct ExternalMetricValue {
    value: String,
}

/// A Kubernetes `Status` error body's message, when there is one.
#[derive(Deserialize)]
struct StatusBody {
    message: Option<String>,
}

/// An error with its causes (`reqwest::Error` alone says only "error sending request").
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

async fn error_text(response: reqwest::Response) -> String {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<StatusBody>(&body)
        .ok()
        .and_then(|s| s.message)
        .unwrap_or_else(|| body.chars().take(200).collect());
    format!("{status}: {message}")
}

impl LocalHpa {
    /// Checks the HPA (External, Resource and ContainerResource metrics, each with the URLs it
    /// needs) and builds the HTTP client.
    pub fn new(config: ControllerConfig) -> Result<LocalHpa, StartError> {
        let mut per_pod = false;
        for (index, m) in config.hpa.metrics.iter().enumerate() {
            let kind = match m.source {
                MetricSource::External { .. } => {
                    if config.metrics_api.is_none() {
                        return Err(StartError::MissingUrl {
                            index,
                            kind: "External",
                            flag: "--metrics-api",
                        });
                    }
                    continue;
                }
                MetricSource::Resource { .. } => "Resource",
                MetricSource::ContainerResource { .. } => "ContainerResource",
                MetricSource::Object { .. } => {
                    return Err(StartError::UnsupportedMetric {
                        index,
                        kind: "Object",
                    });
                }
                MetricSource::Pods { .. } => {
                    return Err(StartError::UnsupportedMetric {
                        index,
                        kind: "Pods",
                    });
                }
            };
            for (given, flag) in [
                (&config.pods_url, "--pods-url"),
                (&config.pod_metrics_url, "--pod-metrics-url"),
            ] {
                if given.is_none() {
                    return Err(StartError::MissingUrl { index, kind, flag });
                }
            }
            per_pod = true;
        }
        let client = build_client(&config.tls, config.request_timeout)?;
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Ok(LocalHpa {
            autoscaler: Autoscaler::with_options(
                config.hpa,
                Options {
                    tolerance: config.tolerance,
                    pod_timing: config.pod_timing,
                    ..Options::default()
                },
            ),
            client,
            metrics_api: config
                .metrics_api
                .map(|m| m.trim_end_matches('/').to_string()),
            scale_url: config.scale_url,
            pods_url: config.pods_url,
            pod_metrics_url: config.pod_metrics_url,
            per_pod,
            sync_period: config.sync_period,
            started: Instant::now(),
            epoch,
        })
    }

    /// The request URL (without query) and `labelSelector` of spec.metrics[index], as
    /// kube-apiserver's HPA client builds them.
    pub fn metric_request(&self, index: usize) -> Option<(String, Option<String>)> {
        let spec = self.autoscaler.spec();
        let MetricSource::External { metric } = &spec.metrics.get(index)?.source else {
            return None;
        };
        let url = format!(
            "{}/apis/external.metrics.k8s.io/v1beta1/namespaces/{}/{}",
            self.metrics_api.as_deref()?,
            spec.namespace,
            metric.name
        );
        let selector = metric
            .selector
            .as_ref()
            .map(|s| s.render())
            .filter(|s| !s.is_empty());
        Some((url, selector))
    }

    async fn fetch_metric(&self, index: usize) -> MetricObservation {
        let Some((url, selector)) = self.metric_request(index) else {
            return MetricObservation::Error("not an External metric".into());
        };
        let mut request = self
            .client
            .get(&url)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(sel) = &selector {
            request = request.query(&[("labelSelector", sel)]);
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                return MetricObservation::Error(format!(
                    "unable to fetch metrics from external metrics API: {}",
                    chain(&e)
                ));
            }
        };
        if !response.status().is_success() {
            return MetricObservation::Error(format!(
                "unable to fetch metrics from external metrics API: {}",
                error_text(response).await
            ));
        }
        let list: ExternalMetricValueList = match response.json().await {
            Ok(l) => l,
            Err(e) => {
                return MetricObservation::Error(format!(
                    "unable to fetch metrics from external metrics API: {e}"
                ));
            }
        };
        if list.items.is_empty() {
            return MetricObservation::Error(
                "no metrics returned from external metrics API".into(),
            );
        }
        let mut values = Vec::with_capacity(list.items.len());
        for item in &list.items {
            match hpa::parse_milli(&item.value) {
                Ok(v) => values.push(v),
                Err(e) => return MetricObservation::Error(e.to_string()),
            }
        }
        MetricObservation::External(values)
    }

    async fn get_scale(&self) -> Result<Scale, String> {
        let response = self
            .client
            .get(&self.scale_url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| chain(&e))?;
        if !response.status().is_success() {
            return Err(error_text(response).await);
        }
        response.json::<Scale>().await.map_err(|e| e.to_string())
    }

    async fn put_scale(&self, mut scale: Scale, replicas: i32) -> Result<(), String> {
        scale.spec = Some(ScaleSpec {
            replicas: Some(replicas),
        });
        let response = self
            .client
            .put(&self.scale_url)
            .json(&scale)
            .send()
            .await
            .map_err(|e| chain(&e))?;
        if !response.status().is_success() {
            return Err(error_text(response).await);
        }
        Ok(())
    }

    /// Time since this controller started, on tokio's clock.
    fn elapsed(&self) -> Duration {
        Instant::now().saturating_duration_since(self.started)
    }

    /// The autoscaler's clock: wall-clock time since the Unix epoch at start, advanced by
    /// tokio's clock (so tests can pause it), comparable with pod and metric timestamps.
    fn now(&self) -> Duration {
        self.epoch + self.elapsed()
    }

    /// GET a list URL with `labelSelector` and decode it.
    async fn get_list<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        selector: &str,
    ) -> Result<T, String> {
        let response = self
            .client
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .query(&[("labelSelector", selector)])
            .send()
            .await
            .map_err(|e| chain(&e))?;
        if !response.status().is_success() {
            return Err(error_text(response).await);
        }
        let body = response.bytes().await.map_err(|e| chain(&e))?;
        serde_json::from_slice(&body).map_err(|e| format!("decoding the response of {url}: {e}"))
    }

    /// The target's pods, as the controller's pod lister would give them (`labelSelector`:
    /// the scale's `status.selector`).
    async fn list_pods(&self, url: &str, selector: &str) -> Result<Vec<PodInfo>, String> {
        let list: List<Pod> = self.get_list(url, selector).await?;
        pods::pod_infos(&list.items)
    }

    /// Everything the per-pod metrics need this sync: the pods and their usage.
    async fn read_pods(&self, selector: Option<&str>) -> PodsRead {
        let mut read = PodsRead::default();
        if self.pods_url.is_none() && !self.per_pod {
            return read;
        }
        let Some(selector) = selector else {
            let e =
                "the scale has no status.selector (selector is required to find the target's pods)"
                    .to_string();
            read.pods = Some(Err(e.clone()));
            read.metrics = self.per_pod.then_some(Err(e));
            return read;
        };
        if let Some(url) = &self.pods_url {
            read.pods = Some(self.list_pods(url, selector).await);
        }
        if let (true, Some(url)) = (self.per_pod, &self.pod_metrics_url) {
            read.metrics = Some(
                self.get_list::<PodMetricsList>(url, selector)
                    .await
                    .map_err(|e| format!("unable to fetch metrics from resource metrics API: {e}")),
            );
        }
        read
    }

    /// The observation of a Resource or ContainerResource metric (`GetResourceMetric`).
    fn resource_observation(
        read: &PodsRead,
        resource: &str,
        container: Option<&str>,
    ) -> MetricObservation {
        match (&read.pods, &read.metrics) {
            (Some(Err(e)), _) => MetricObservation::Error(format!(
                "unable to get pods while calculating replica count: {e}"
            )),
            (_, Some(Err(e))) => MetricObservation::Error(e.clone()),
            (_, Some(Ok(list))) if list.items.is_empty() => {
                MetricObservation::Error("no metrics returned from resource metrics API".into())
            }
            (_, Some(Ok(list))) => match pods::resource_samples(list, resource, container) {
                Ok(samples) => MetricObservation::PerPod(samples),
                Err(e) => MetricObservation::Error(e),
            },
            (_, None) => MetricObservation::Error("no pod metrics URL".into()),
        }
    }

    /// One sync: GET the scale, fetch every metric, decide, PUT the scale if it changes, log.
    pub async fn sync_once(&mut self) -> Result<SyncOutcome, SyncError> {
        let scale = self.get_scale().await.map_err(|message| {
            tracing::warn!(scale_url = %self.scale_url, error = %message, "FailedGetScale");
            SyncError::GetScale {
                url: self.scale_url.clone(),
                message,
            }
        })?;
        let spec_replicas = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        let status_replicas = scale.status.as_ref().map_or(0, |s| s.replicas);
        let selector = scale
            .status
            .as_ref()
            .and_then(|s| s.selector.as_deref())
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let read = self.read_pods(selector.as_deref()).await;
        let count = u32::try_from(status_replicas).unwrap_or(0);
        let pods = match &read.pods {
            Some(Ok(list)) => Pods::Listed(list.clone()),
            // Without pod objects a scale subresource says how many replicas run, not how many
            // are ready: all of them are taken as ready (External metrics only; the per-pod
            // metrics carry the listing error).
            _ => Pods::Counted {
                total: count,
                ready: count,
            },
        };
        let pods_listed = match &pods {
            Pods::Listed(list) => Some(list.len()),
            Pods::Counted { .. } => None,
        };
        let state = ReplicaState {
            spec_replicas,
            status_replicas,
            pods,
        };
        let mut observations = Vec::with_capacity(self.autoscaler.spec().metrics.len());
        for i in 0..self.autoscaler.spec().metrics.len() {
            let observation = match &self.autoscaler.spec().metrics[i].source {
                MetricSource::Resource { name } => Self::resource_observation(&read, name, None),
                MetricSource::ContainerResource { name, container } => {
                    Self::resource_observation(&read, name, Some(container))
                }
                _ => self.fetch_metric(i).await,
            };
            observations.push(observation);
        }
        let now = self.now();
        let decision = self.autoscaler.reconcile(now, &state, &observations);
        let mut rescaled = false;
        let mut update_error = None;
        if decision.rescale() {
            match self.put_scale(scale, decision.desired_replicas).await {
                Ok(()) => rescaled = true,
                Err(e) => {
                    self.autoscaler.rescale_failed(&e);
                    update_error = Some(e);
                }
            }
        }
        log_decision(
            self.elapsed(),
            pods_listed,
            &self.autoscaler,
            &decision,
            rescaled,
            update_error.as_deref(),
        );
        if let Some(message) = update_error {
            return Err(SyncError::UpdateScale {
                url: self.scale_url.clone(),
                desired: decision.desired_replicas,
                message,
            });
        }
        Ok(SyncOutcome { decision, rescaled })
    }

    /// Syncs every sync period until `shutdown` resolves (also in the middle of a sync); errors
    /// of a sync are logged and the next sync goes on, as the controller does.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = self.sync_once() => {}
                _ = &mut shutdown => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(self.sync_period) => {}
                _ = &mut shutdown => return,
            }
        }
    }
}

fn log_decision(
    elapsed: Duration,
    pods_listed: Option<usize>,
    autoscaler: &Autoscaler,
    d: &Decision,
    rescaled: bool,
    update_error: Option<&str>,
) {
    let spec = autoscaler.spec();
    let metrics: Vec<serde_json::Value> = d
        .per_metric
        .iter()
        .zip(&spec.metrics)
        .map(|(m, s)| match &m.result {
            Ok(p) => serde_json::json!({
                "metric": m.metric,
                "value": p.current.value.map(|v| v as f64 / 1000.0),
                "average_value": p.current.average_value.map(|v| v as f64 / 1000.0),
                "average_utilization": p.current.average_utilization,
                "target": match s.target {
                    hpa::MetricTarget::Value(v) | hpa::MetricTarget::AverageValue(v) => serde_json::json!(v as f64 / 1000.0),
                    hpa::MetricTarget::Utilization(u) => serde_json::json!(u),
                },
                "ratio": p.usage_ratio,
                "replicas": p.replicas,
            }),
            Err(f) => serde_json::json!({ "metric": m.metric, "error": f.message, "reason": f.reason }),
        })
        .collect();
    let conditions: Vec<serde_json::Value> = d
        .conditions
        .iter()
        .map(|c| {
            serde_json::json!({
                "type": c.kind.as_str(), "status": if c.status { "True" } else { "False" },
                "reason": c.reason, "message": c.message,
            })
        })
        .collect();
    tracing::info!(
        hpa = %format!("{}/{}", spec.namespace, spec.name),
        clock_s = elapsed.as_secs_f64(),
        pods = pods_listed,
        current = d.current_replicas,
        desired = d.desired_replicas,
        raw_recommendation = d.raw_recommendation,
        rescaled,
        metrics = %serde_json::Value::Array(metrics),
        conditions = %serde_json::Value::Array(conditions),
        reason = %d.reason,
        error = d.error.as_deref(),
        update_error,
        "hpa decision"
    );
}
