//! The controller's request/response cycle against in-process fakes: a fake of kube-apiserver's
//! scale subresource (`/apis/apps/v1/namespaces/milvus/deployments/milvus-querynode/scale`) and a
//! fake of our external metrics API (`/apis/external.metrics.k8s.io/v1beta1/...`), both served by
//! one axum router on loopback.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hpa::{ConditionType, HpaSpec, PodTiming};
use hpa_controller::{ControllerConfig, LocalHpa, StartError, TlsOptions};
use serde_json::{Value, json};

const EXAMPLE: &str = include_str!("hpa-queue-p99.yaml");
const SCALE_PATH: &str = "/apis/apps/v1/namespaces/milvus/deployments/milvus-querynode/scale";

/// What the fakes serve and what they saw.
#[derive(Default)]
struct Fake {
    replicas: i32,
    /// Metric name → item values, or an HTTP status to fail with.
    metrics: HashMap<String, Result<Vec<&'static str>, u16>>,
    puts: Vec<i32>,
    /// (namespace, metric, labelSelector) of every metric request.
    queries: Vec<(String, String, Option<String>)>,
    scale_gets: usize,
}

type Shared = Arc<Mutex<Fake>>;

fn scale_json(replicas: i32) -> Value {
    json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {"name": "milvus-querynode", "namespace": "milvus", "resourceVersion": "7"},
        "spec": {"replicas": replicas},
        "status": {"replicas": replicas, "selector": "app=querynode"}
    })
}

async fn get_scale(State(fake): State<Shared>) -> Json<Value> {
    let mut f = fake.lock().unwrap();
    f.scale_gets += 1;
    Json(scale_json(f.replicas))
}

async fn put_scale(State(fake): State<Shared>, Json(body): Json<Value>) -> Response {
    assert_eq!(body["kind"], "Scale", "{body}");
    assert_eq!(body["metadata"]["resourceVersion"], "7", "{body}");
    let Some(replicas) = body["spec"]["replicas"].as_i64() else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let mut f = fake.lock().unwrap();
    f.replicas = replicas as i32;
    f.puts.push(replicas as i32);
    Json(scale_json(f.replicas)).into_response()
}

async fn external_metric(
    State(fake): State<Shared>,
    Path((namespace, metric)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let mut f = fake.lock().unwrap();
    f.queries.push((
        namespace,
        metric.clone(),
        query.get("labelSelector").cloned(),
    ));
    match f.metrics.get(&metric).cloned() {
        Some(Ok(values)) => Json(json!({
            "kind": "ExternalMetricValueList",
            "apiVersion": "external.metrics.k8s.io/v1beta1",
            "metadata": {},
            "items": values.iter().map(|v| json!({
                "metricName": metric,
                "metricLabels": {"milvus": "prod"},
                "timestamp": "2026-01-01T00:00:00Z",
                "value": v,
            })).collect::<Vec<_>>(),
        }))
        .into_response(),
        Some(Err(code)) => (
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            Json(json!({
                "kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": format!("signal {metric} of milvus/prod is stale"),
                "reason": "ServiceUnavailable", "code": code,
            })),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Starts the fakes; returns their base URL.
async fn start(fake: Shared) -> String {
    let app = Router::new()
        .route(SCALE_PATH, get(get_scale).put(put_scale))
        .route(
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}",
            get(external_metric),
        )
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

fn fake(
    replicas: i32,
    queue: Result<Vec<&'static str>, u16>,
    p99: Result<Vec<&'static str>, u16>,
) -> Shared {
    Arc::new(Mutex::new(Fake {
        replicas,
        metrics: HashMap::from([
            ("milvus_search_queue_depth".to_string(), queue),
            ("milvus_search_latency_p99_seconds".to_string(), p99),
        ]),
        ..Fake::default()
    }))
}

fn controller(base: &str) -> LocalHpa {
    LocalHpa::new(ControllerConfig {
        hpa: HpaSpec::from_yaml(EXAMPLE).unwrap(),
        metrics_api: Some(base.to_string()),
        scale_url: format!("{base}{SCALE_PATH}"),
        pods_url: None,
        pod_metrics_url: None,
        sync_period: Duration::from_secs(15),
        tolerance: 0.1,
        pod_timing: PodTiming::default(),
        request_timeout: None,
        tls: TlsOptions::default(),
    })
    .unwrap()
}

#[tokio::test]
async fn scales_up_on_a_high_metric() {
    // 2 query nodes, 60 queued (two items, summed) against 10 per node → 6; p99 150 ms against
    // 200 ms → 2; max → 6, within the example's scale-up rate (max(100 %, 4 pods) per 15 s).
    let f = fake(2, Ok(vec!["30", "30"]), Ok(vec!["150m"]));
    let base = start(f.clone()).await;
    let mut c = controller(&base);
    let out = c.sync_once().await.unwrap();
    assert!(out.rescaled);
    assert_eq!(out.decision.desired_replicas, 6);
    let f = f.lock().unwrap();
    assert_eq!(f.puts, vec![6]);
    assert_eq!(f.replicas, 6);
    // Each External metric asked exactly as kube-apiserver's HPA client asks: the HPA's
    // namespace, the metric name, the rendered selector.
    let mut queries = f.queries.clone();
    queries.sort();
    assert_eq!(
        queries,
        vec![
            (
                "milvus".into(),
                "milvus_search_latency_p99_seconds".into(),
                Some("milvus=prod".into())
            ),
            (
                "milvus".into(),
                "milvus_search_queue_depth".into(),
                Some("milvus=prod".into())
            ),
        ]
    );
}

#[tokio::test]
async fn holds_on_a_503_from_the_metrics_api() {
    // The queue signal fails with 503; the latency alone would scale 4 → 2, but an invalid
    // metric blocks scale-down: hold, no PUT, ScalingActive=False.
    let f = fake(4, Err(503), Ok(vec!["100m"]));
    let base = start(f.clone()).await;
    let mut c = controller(&base);
    let out = c.sync_once().await.unwrap();
    assert!(!out.rescaled);
    assert_eq!(out.decision.desired_replicas, 4);
    let error = out.decision.error.clone().unwrap();
    assert!(error.contains("503"), "{error}");
    assert!(error.contains("stale"), "{error}");
    let active = out
        .decision
        .conditions
        .iter()
        .find(|c| c.kind == ConditionType::ScalingActive)
        .unwrap();
    assert_eq!(
        (active.status, active.reason.as_str()),
        (false, "FailedGetExternalMetric")
    );
    assert!(f.lock().unwrap().puts.is_empty());

    // Both failing: hold as well.
    let f = fake(4, Err(503), Err(503));
    let base = start(f.clone()).await;
    let out = controller(&base).sync_once().await.unwrap();
    assert_eq!(out.decision.desired_replicas, 4);
    assert!(f.lock().unwrap().puts.is_empty());
}

#[tokio::test(start_paused = true)]
async fn respects_the_stabilization_window() {
    // The example's scale-down: 600 s window, then at most 1 pod per 120 s. 6 nodes, demand for
    // 2: held until the window has passed, then one pod.
    let f = fake(6, Ok(vec!["20"]), Ok(vec!["50m"]));
    let base = start(f.clone()).await;
    let mut c = controller(&base);
    let d = c.sync_once().await.unwrap().decision;
    assert_eq!(d.raw_recommendation, Some(2));
    assert_eq!(d.desired_replicas, 6);
    let able = d
        .conditions
        .iter()
        .find(|c| c.kind == ConditionType::AbleToScale)
        .unwrap();
    assert_eq!(able.reason, "ScaleDownStabilized");

    tokio::time::advance(Duration::from_secs(300)).await;
    assert_eq!(c.sync_once().await.unwrap().decision.desired_replicas, 6);
    assert!(f.lock().unwrap().puts.is_empty());

    tokio::time::advance(Duration::from_secs(301)).await;
    let out = c.sync_once().await.unwrap();
    assert!(out.rescaled);
    assert_eq!(out.decision.desired_replicas, 5);
    assert_eq!(f.lock().unwrap().puts, vec![5]);

    // 15 s later the 1-pod-per-120-s policy still holds it at 5.
    tokio::time::advance(Duration::from_secs(15)).await;
    assert_eq!(c.sync_once().await.unwrap().decision.desired_replicas, 5);
    assert_eq!(f.lock().unwrap().puts, vec![5]);
}

#[tokio::test]
async fn failed_scale_get_is_an_error_and_run_stops_on_shutdown() {
    let f = fake(3, Ok(vec!["30"]), Ok(vec!["200m"]));
    let base = start(f.clone()).await;
    let mut wrong = LocalHpa::new(ControllerConfig {
        scale_url: format!("{base}/apis/apps/v1/namespaces/milvus/deployments/nope/scale"),
        ..config(&base)
    })
    .unwrap();
    let e = wrong.sync_once().await.unwrap_err().to_string();
    assert!(e.contains("404"), "{e}");

    // run: syncs until the shutdown future resolves, then returns.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(controller(&base).run(async {
        let _ = stopped.await;
    }));
    while f.lock().unwrap().scale_gets == 0 {
        tokio::task::yield_now().await;
    }
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("run returns on shutdown")
        .unwrap();
    assert_eq!(f.lock().unwrap().scale_gets, 1);
}

fn config(base: &str) -> ControllerConfig {
    ControllerConfig {
        hpa: HpaSpec::from_yaml(EXAMPLE).unwrap(),
        metrics_api: Some(base.to_string()),
        scale_url: format!("{base}{SCALE_PATH}"),
        pods_url: None,
        pod_metrics_url: None,
        sync_period: Duration::from_secs(15),
        tolerance: 0.1,
        pod_timing: PodTiming::default(),
        request_timeout: None,
        tls: TlsOptions::default(),
    }
}

#[test]
fn resource_metrics_need_the_pod_urls_and_pods_metrics_are_refused() {
    let text = EXAMPLE.replace(
        "    - type: External\n      external:\n        metric:\n          name: milvus_search_latency_p99_seconds",
        "    - type: Resource\n      resource:\n        name: cpu\n        target: {type: Utilization, averageUtilization: 50}\n    - type: External\n      external:\n        metric:\n          name: milvus_search_latency_p99_seconds",
    );
    let hpa = HpaSpec::from_yaml(&text).unwrap();
    assert_eq!(hpa.metrics.len(), 3);
    let e = LocalHpa::new(ControllerConfig {
        hpa: hpa.clone(),
        ..config("http://127.0.0.1:1")
    })
    .err()
    .unwrap();
    assert!(
        matches!(
            e,
            StartError::MissingUrl {
                index: 1,
                kind: "Resource",
                flag: "--pods-url"
            }
        ),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "spec.metrics[1]: Resource metrics need --pods-url"
    );
    let e = LocalHpa::new(ControllerConfig {
        hpa: hpa.clone(),
        pods_url: Some("http://127.0.0.1:1/api/v1/namespaces/milvus/pods".into()),
        ..config("http://127.0.0.1:1")
    })
    .err()
    .unwrap();
    assert!(e.to_string().contains("--pod-metrics-url"), "{e}");
    // External metrics need --metrics-api.
    let e = LocalHpa::new(ControllerConfig {
        hpa: HpaSpec::from_yaml(EXAMPLE).unwrap(),
        metrics_api: None,
        ..config("http://127.0.0.1:1")
    })
    .err()
    .unwrap();
    assert_eq!(
        e.to_string(),
        "spec.metrics[0]: External metrics need --metrics-api"
    );

    let pods = EXAMPLE.replace(
        "    - type: External\n      external:\n        metric:\n          name: milvus_search_latency_p99_seconds",
        "    - type: Pods\n      pods:\n        metric: {name: inflight}\n        target: {type: AverageValue, averageValue: \"4\"}\n    - type: External\n      external:\n        metric:\n          name: milvus_search_latency_p99_seconds",
    );
    let e = LocalHpa::new(ControllerConfig {
        hpa: HpaSpec::from_yaml(&pods).unwrap(),
        ..config("http://127.0.0.1:1")
    })
    .err()
    .unwrap();
    assert!(
        matches!(
            e,
            StartError::UnsupportedMetric {
                index: 1,
                kind: "Pods"
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("not supported by local-hpa"), "{e}");
}

#[test]
fn client_cert_needs_a_key() {
    let e = LocalHpa::new(ControllerConfig {
        tls: TlsOptions {
            client_cert: Some("/nonexistent.pem".into()),
            ..TlsOptions::default()
        },
        ..config("http://127.0.0.1:1")
    })
    .err()
    .unwrap();
    assert!(e.to_string().contains("--client-key"), "{e}");
}
