//! The telemetry endpoint: `/metrics` (our own metrics), `/healthz`, `/readyz`.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use milvus_signals::{Signal, SignalKey, SnapshotStore};

use crate::metric_names::{SIGNAL_AGE, SIGNAL_KNOWN, SIGNAL_VALUE};

/// What the telemetry handlers read.
#[derive(Clone)]
pub struct TelemetryState {
    /// Renders the process's metrics registry.
    pub metrics: PrometheusHandle,
    /// The signal snapshot (for readiness and signal gauges).
    pub store: Arc<SnapshotStore>,
}

/// The router serving `/metrics`, `/healthz` and `/readyz`.
pub fn router(state: TelemetryState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(state)
}

async fn metrics(State(state): State<TelemetryState>) -> String {
    export_signals(&state.store);
    state.metrics.render()
}

async fn ready(State(state): State<TelemetryState>) -> (StatusCode, &'static str) {
    if state.store.all_polled() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the first scrape round of every instance\n",
        )
    }
}

/// Sets the signal gauges from the current snapshot: value, age and whether each is known.
/// An unknown signal keeps no value gauge update but reports `known 0`.
pub fn export_signals(store: &SnapshotStore) {
    let now = SystemTime::now();
    let snapshot = store.load();
    for instance in snapshot.instances.values() {
        for signal in Signal::ALL {
            let key = SignalKey::instance(signal);
            let labels = [
                ("milvus", instance.name.clone()),
                ("signal", signal.name().to_string()),
            ];
            match instance.reading(&key, now) {
                Ok(reading) => {
                    metrics::gauge!(SIGNAL_VALUE, &labels).set(reading.value);
                    metrics::gauge!(SIGNAL_AGE, &labels).set(reading.age(now).as_secs_f64());
                    metrics::gauge!(SIGNAL_KNOWN, &labels).set(1.0);
                }
                Err(_) => {
                    metrics::gauge!(SIGNAL_KNOWN, &labels).set(0.0);
                    if let Some(Ok(r)) = instance.values.get(&key) {
                        metrics::gauge!(SIGNAL_AGE, &labels).set(r.age(now).as_secs_f64());
                    }
                }
            }
        }
    }
}
