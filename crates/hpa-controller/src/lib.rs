//! `milvus-scaler local-hpa`: a replica controller that does, for one HPA, what
//! kube-controller-manager's HPA controller does, against plain HTTP(S) endpoints instead of a
//! cluster: read a Kubernetes scale subresource (`autoscaling/v1` `Scale`), read every External
//! metric of the HPA from an external metrics API (`external.metrics.k8s.io/v1beta1`, exactly the
//! request kube-apiserver's aggregator forwards for the HPA), run the [`hpa`] algorithm, and write
//! the scale back when the decision changes it. One structured log line per decision.
//!
//! Only External metrics are supported: Object and Pods metrics need the custom metrics API and
//! Resource metrics need pod metrics and pod objects, none of which a scale subresource offers.
#![forbid(unsafe_code)]

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use hpa::{
    Autoscaler, Decision, HpaSpec, MetricObservation, MetricSource, Options, Pods, ReplicaState,
};
use k8s_openapi::api::autoscaling::v1::{Scale, ScaleSpec};
use serde::Deserialize;
use thiserror::Error;
use tokio::time::Instant;

/// TLS options for the metrics API (and the scale URL when it is HTTPS).
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
    /// The HPA (only External metrics).
    pub hpa: HpaSpec,
    /// Base URL of the external metrics API, e.g. `https://127.0.0.1:6443`.
    pub metrics_api: String,
    /// URL of the scale subresource (GET and PUT `autoscaling/v1` `Scale`).
    pub scale_url: String,
    /// How often to sync (`--horizontal-pod-autoscaler-sync-period`, 15 s).
    pub sync_period: Duration,
    /// `--horizontal-pod-autoscaler-tolerance` (0.1).
    pub tolerance: f64,
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
        "spec.metrics[{index}]: {kind} metrics are not supported by local-hpa (only External: it has no custom or resource metrics API and no pods)"
    )]
    UnsupportedMetric {
        /// Index in `spec.metrics`.
        index: usize,
        /// The metric type.
        kind: &'static str,
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
    metrics_api: String,
    scale_url: String,
    sync_period: Duration,
    started: Instant,
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
    /// Checks the HPA (External metrics only) and builds the HTTP client.
    pub fn new(config: ControllerConfig) -> Result<LocalHpa, StartError> {
        for (index, m) in config.hpa.metrics.iter().enumerate() {
            let kind = match m.source {
                MetricSource::External { .. } => continue,
                MetricSource::Object { .. } => "Object",
                MetricSource::Pods { .. } => "Pods",
                MetricSource::Resource { .. } => "Resource",
                MetricSource::ContainerResource { .. } => "ContainerResource",
            };
            return Err(StartError::UnsupportedMetric { index, kind });
        }
        let client = build_client(&config.tls, config.request_timeout)?;
        Ok(LocalHpa {
            autoscaler: Autoscaler::with_options(
                config.hpa,
                Options {
                    tolerance: config.tolerance,
                    ..Options::default()
                },
            ),
            client,
            metrics_api: config.metrics_api.trim_end_matches('/').to_string(),
            scale_url: config.scale_url,
            sync_period: config.sync_period,
            started: Instant::now(),
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
            self.metrics_api, spec.namespace, metric.name
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

    /// The autoscaler's clock: time since this controller started, on tokio's clock.
    fn now(&self) -> Duration {
        Instant::now().saturating_duration_since(self.started)
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
        let count = u32::try_from(status_replicas).unwrap_or(0);
        let state = ReplicaState {
            spec_replicas,
            status_replicas,
            // A scale subresource says how many replicas run, not how many are ready: all of
            // them are taken as ready.
            pods: Pods::Counted {
                total: count,
                ready: count,
            },
        };
        let mut observations = Vec::with_capacity(self.autoscaler.spec().metrics.len());
        for i in 0..self.autoscaler.spec().metrics.len() {
            observations.push(self.fetch_metric(i).await);
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
            now,
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
    now: Duration,
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
        clock_s = now.as_secs_f64(),
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
