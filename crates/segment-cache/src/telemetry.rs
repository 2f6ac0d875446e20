//! The telemetry endpoint: `/metrics`, `/healthz`, `/readyz`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{BuildError, PrometheusBuilder, PrometheusHandle};

/// Histogram buckets (seconds) of upstream request durations.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Installs the process-wide Prometheus recorder with real histogram buckets, and gives it the
/// help text of every metric in [`crate::metric_names::ALL`] (the `# HELP` lines of `/metrics`).
pub fn install_recorder() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets(&LATENCY_BUCKETS)?
        .install_recorder()?;
    metric_names::describe(crate::metric_names::ALL);
    Ok(handle)
}

/// What `/readyz` reads.
#[derive(Debug, Default)]
pub struct Readiness {
    /// The S3 endpoint is listening and the store is open.
    pub serving: AtomicBool,
    /// `/readyz` must also wait for the warm.
    pub wait_for_warm: AtomicBool,
    /// The background warm finished (or failed and gave up).
    pub warm_done: AtomicBool,
}

#[derive(Clone)]
struct St {
    metrics: PrometheusHandle,
    ready: Arc<Readiness>,
}

/// The router serving `/metrics`, `/healthz` and `/readyz`.
pub fn router(metrics: PrometheusHandle, ready: Arc<Readiness>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(s): State<St>| async move { s.metrics.render() }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(St { metrics, ready })
}

async fn readyz(State(s): State<St>) -> (StatusCode, &'static str) {
    let r = &s.ready;
    if !r.serving.load(Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, "not serving yet\n");
    }
    if r.wait_for_warm.load(Ordering::Acquire) && !r.warm_done.load(Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, "warming\n");
    }
    (StatusCode::OK, "ready\n")
}
