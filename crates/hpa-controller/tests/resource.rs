//! Resource (CPU) metrics through the controller's request/response cycle against in-process
//! fakes of kube-apiserver (the scale subresource and the pod list) and of metrics-server's
//! `metrics.k8s.io/v1beta1` PodMetrics, one axum router on loopback. Times are wall-clock
//! seconds relative to now, as the real APIs serve them (RFC 3339, whole seconds).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hpa::{ConditionType, HpaSpec, PodTiming};
use hpa_controller::{ControllerConfig, LocalHpa, TlsOptions};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

const SCALE_PATH: &str = "/apis/apps/v1/namespaces/milvus/deployments/querynode/scale";
const PODS_PATH: &str = "/api/v1/namespaces/milvus/pods";
const METRICS_PATH: &str = "/apis/metrics.k8s.io/v1beta1/namespaces/milvus/pods";
const SELECTOR: &str = "app.kubernetes.io/component=querynode,app.kubernetes.io/instance=milvus";

/// The Milvus Helm chart's query-node HPA shape: CPU utilization.
fn cpu_hpa(utilization: i32, extra: &str) -> HpaSpec {
    HpaSpec::from_yaml(&format!(
        r#"
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {{name: milvus-querynode, namespace: milvus}}
spec:
  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: querynode}}
  minReplicas: 1
  maxReplicas: 20
  metrics:
  - type: Resource
    resource:
      name: cpu
      target: {{type: Utilization, averageUtilization: {utilization}}}
{extra}"#
    ))
    .unwrap()
}

/// Scale down at once (no stabilization), so one sync shows the decision.
const FAST_DOWN: &str = "  behavior:\n    scaleDown: {stabilizationWindowSeconds: 0}\n";

fn ago(seconds: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    Timestamp::from_second(now - seconds).unwrap().to_string()
}

/// A Running pod with one `querynode` container requesting `cpu`, started `started` seconds ago,
/// with a Ready condition (`ready`, since `ready_since` seconds ago).
fn pod(name: &str, cpu: &str, started: i64, ready: bool, ready_since: i64) -> Value {
    json!({
        "metadata": {"name": name, "namespace": "milvus",
                     "labels": {"app.kubernetes.io/component": "querynode"}},
        "spec": {"containers": [{"name": "querynode", "image": "milvusdb/milvus",
                                 "resources": {"requests": {"cpu": cpu, "memory": "2Gi"}}}]},
        "status": {"phase": "Running", "startTime": ago(started),
                   "conditions": [
                       {"type": "Initialized", "status": "True", "lastTransitionTime": ago(started)},
                       {"type": "Ready", "status": if ready { "True" } else { "False" },
                        "lastTransitionTime": ago(ready_since)}]}
    })
}

/// A pod started an hour ago, ready for 59 minutes.
fn old_pod(name: &str, cpu: &str) -> Value {
    pod(name, cpu, 3600, true, 3540)
}

/// metrics-server's PodMetrics: `usage` per container, sampled 5 s ago over 30 s.
fn usage(name: &str, containers: &[(&str, &str)]) -> Value {
    json!({
        "metadata": {"name": name, "namespace": "milvus", "creationTimestamp": ago(0)},
        "timestamp": ago(5),
        "window": "30s",
        "containers": containers.iter().map(|(c, cpu)| json!({
            "name": c, "usage": {"cpu": cpu, "memory": "1500Mi"}
        })).collect::<Vec<_>>(),
    })
}

#[derive(Default)]
struct Fake {
    replicas: i32,
    pods: Vec<Value>,
    /// PodMetrics items, or an HTTP status to fail with.
    metrics: Option<Result<Vec<Value>, u16>>,
    puts: Vec<i32>,
    /// (path, labelSelector) of every pod and pod-metrics request.
    queries: Vec<(String, Option<String>)>,
}

type Shared = Arc<Mutex<Fake>>;

fn scale_json(replicas: i32) -> Value {
    json!({
        "apiVersion": "autoscaling/v1", "kind": "Scale",
        "metadata": {"name": "querynode", "namespace": "milvus", "resourceVersion": "3"},
        "spec": {"replicas": replicas},
        "status": {"replicas": replicas, "selector": SELECTOR}
    })
}

async fn get_scale(State(fake): State<Shared>) -> Json<Value> {
    Json(scale_json(fake.lock().unwrap().replicas))
}

async fn put_scale(State(fake): State<Shared>, Json(body): Json<Value>) -> Response {
    let replicas = body["spec"]["replicas"].as_i64().unwrap() as i32;
    let mut f = fake.lock().unwrap();
    f.replicas = replicas;
    f.puts.push(replicas);
    Json(scale_json(replicas)).into_response()
}

async fn list_pods(
    State(fake): State<Shared>,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Value> {
    let mut f = fake.lock().unwrap();
    f.queries
        .push((uri.path().to_string(), q.get("labelSelector").cloned()));
    Json(json!({
        "kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "42"},
        "items": f.pods,
    }))
}

async fn pod_metrics(
    State(fake): State<Shared>,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut f = fake.lock().unwrap();
    f.queries
        .push((uri.path().to_string(), q.get("labelSelector").cloned()));
    match f.metrics.clone().unwrap_or(Ok(Vec::new())) {
        Ok(items) => Json(json!({
            "kind": "PodMetricsList", "apiVersion": "metrics.k8s.io/v1beta1",
            "metadata": {}, "items": items,
        }))
        .into_response(),
        Err(code) => (
            StatusCode::from_u16(code).unwrap(),
            Json(json!({
                "kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": "the server is currently unable to handle the request (get pods.metrics.k8s.io)",
                "reason": "ServiceUnavailable", "code": code,
            })),
        )
            .into_response(),
    }
}

async fn start(fake: Shared) -> String {
    let app = Router::new()
        .route(SCALE_PATH, get(get_scale).put(put_scale))
        .route(PODS_PATH, get(list_pods))
        .route(METRICS_PATH, get(pod_metrics))
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

fn controller(base: &str, hpa: HpaSpec) -> LocalHpa {
    controller_timed(base, hpa, PodTiming::default())
}

/// `controller` with the CPU readiness rules' timing given (`local-hpa
/// --cpu-initialization-period --initial-readiness-delay`).
fn controller_timed(base: &str, hpa: HpaSpec, pod_timing: PodTiming) -> LocalHpa {
    LocalHpa::new(ControllerConfig {
        hpa,
        metrics_api: None,
        scale_url: format!("{base}{SCALE_PATH}"),
        pods_url: Some(format!("{base}{PODS_PATH}")),
        pod_metrics_url: Some(format!("{base}{METRICS_PATH}")),
        sync_period: Duration::from_secs(15),
        tolerance: 0.1,
        pod_timing,
        request_timeout: Some(Duration::from_secs(10)),
        tls: TlsOptions::default(),
    })
    .unwrap()
}

fn fake(replicas: i32, pods: Vec<Value>, metrics: Result<Vec<Value>, u16>) -> Shared {
    Arc::new(Mutex::new(Fake {
        replicas,
        pods,
        metrics: Some(metrics),
        ..Fake::default()
    }))
}

#[tokio::test]
async fn scales_up_on_hot_cpu_asking_with_the_scale_selector() {
    // 3 pods requesting 500m use 400m each: 80 % against 50 % → ceil(1.6 × 3) = 5 (within the
    // legacy scale-up limit max(2 × 3, 4) = 6).
    let f = fake(
        3,
        vec![
            old_pod("qn-0", "500m"),
            old_pod("qn-1", "500m"),
            old_pod("qn-2", "0.5"),
        ],
        Ok(vec![
            usage("qn-0", &[("querynode", "400m")]),
            usage("qn-1", &[("querynode", "400000000n")]),
            usage("qn-2", &[("querynode", "0.4")]),
        ]),
    );
    let base = start(f.clone()).await;
    let out = controller(&base, cpu_hpa(50, ""))
        .sync_once()
        .await
        .unwrap();
    let p = out.decision.per_metric[0].result.clone().unwrap();
    assert_eq!(p.current.average_utilization, Some(80));
    assert_eq!(p.current.average_value, Some(400));
    assert_eq!(out.decision.desired_replicas, 5);
    assert!(out.rescaled);
    let f = f.lock().unwrap();
    assert_eq!(f.puts, vec![5]);
    // Both lists asked with the scale's status.selector, as the HPA does.
    assert_eq!(
        f.queries,
        vec![
            (PODS_PATH.to_string(), Some(SELECTOR.to_string())),
            (METRICS_PATH.to_string(), Some(SELECTOR.to_string())),
        ]
    );
}

#[tokio::test]
async fn an_unready_pod_counts_as_zero_on_scale_up() {
    // qn-3 started 20 s ago and is not ready yet, burning a whole core: its sample is left out
    // and, on a scale-up, it counts as 0 of its request. Ready pods: 1200m of 1500m = 80 % →
    // ratio 1.6; with qn-3 at 0: 1200m of 2000m = 60 % → ceil(1.2 × 4) = 5 (not 9, which
    // counting its core would give).
    let f = fake(
        4,
        vec![
            old_pod("qn-0", "500m"),
            old_pod("qn-1", "500m"),
            old_pod("qn-2", "500m"),
            pod("qn-3", "500m", 20, false, 20),
        ],
        Ok(vec![
            usage("qn-0", &[("querynode", "400m")]),
            usage("qn-1", &[("querynode", "400m")]),
            usage("qn-2", &[("querynode", "400m")]),
            usage("qn-3", &[("querynode", "1")]),
        ]),
    );
    let base = start(f.clone()).await;
    let out = controller(&base, cpu_hpa(50, ""))
        .sync_once()
        .await
        .unwrap();
    assert_eq!(out.decision.desired_replicas, 5);
    assert_eq!(f.lock().unwrap().puts, vec![5]);
}

#[tokio::test]
async fn a_pod_ready_for_less_than_a_window_is_unready_in_its_cpu_initialization_period() {
    // qn-2 started 60 s ago and became ready 20 s ago: its 30 s sample (taken 5 s ago) still
    // covers its start-up, so the controller treats it as unready and leaves its sample out.
    // The ready pods are at 250m of 500m = 50 %, on target: hold at 3, however hot qn-2's
    // start-up was.
    let f = fake(
        3,
        vec![
            old_pod("qn-0", "500m"),
            old_pod("qn-1", "500m"),
            pod("qn-2", "500m", 60, true, 20),
        ],
        Ok(vec![
            usage("qn-0", &[("querynode", "250m")]),
            usage("qn-1", &[("querynode", "250m")]),
            usage("qn-2", &[("querynode", "2")]),
        ]),
    );
    let base = start(f.clone()).await;
    let out = controller(&base, cpu_hpa(50, ""))
        .sync_once()
        .await
        .unwrap();
    let p = out.decision.per_metric[0].result.clone().unwrap();
    assert_eq!(p.current.average_utilization, Some(50));
    assert_eq!(out.decision.desired_replicas, 3);
    assert!(f.lock().unwrap().puts.is_empty());

    // The same pod ready for 40 s (a whole window of readiness): its sample counts →
    // (250 + 250 + 2000) / 1500 = 166 % → ceil(3.32 × 3) = 10, capped at max(2 × 3, 4) = 6.
    let f = fake(
        3,
        vec![
            old_pod("qn-0", "500m"),
            old_pod("qn-1", "500m"),
            pod("qn-2", "500m", 60, true, 40),
        ],
        Ok(vec![
            usage("qn-0", &[("querynode", "250m")]),
            usage("qn-1", &[("querynode", "250m")]),
            usage("qn-2", &[("querynode", "2")]),
        ]),
    );
    let base = start(f.clone()).await;
    let out = controller(&base, cpu_hpa(50, ""))
        .sync_once()
        .await
        .unwrap();
    assert_eq!(out.decision.raw_recommendation, Some(10));
    assert_eq!(out.decision.desired_replicas, 6);
}

#[tokio::test]
async fn the_cpu_initialization_period_and_readiness_delay_are_the_configured_ones() {
    // The first case above (started 60 s ago, ready for 20 s, its 30 s sample covering its
    // start-up) with a 45 s initialization period: qn-2 is past it, so ready and counted →
    // the 166 % of the second case → 6, where the default 5 min held at 3.
    let pods = || {
        vec![
            old_pod("qn-0", "500m"),
            old_pod("qn-1", "500m"),
            pod("qn-2", "500m", 60, true, 20),
        ]
    };
    let usages = || {
        Ok(vec![
            usage("qn-0", &[("querynode", "250m")]),
            usage("qn-1", &[("querynode", "250m")]),
            usage("qn-2", &[("querynode", "2")]),
        ])
    };
    let short_init = PodTiming {
        cpu_initialization_period: Duration::from_secs(45),
        ..PodTiming::default()
    };
    let base = start(fake(3, pods(), usages())).await;
    let out = controller_timed(&base, cpu_hpa(50, ""), short_init)
        .sync_once()
        .await
        .unwrap();
    assert_eq!(out.decision.raw_recommendation, Some(10));
    assert_eq!(out.decision.desired_replicas, 6);

    // Past its initialization period, an unready pod is left out only if it has never been
    // ready: its readiness changed less than the initial readiness delay after it started.
    // qn-2 started 60 s ago and turned unready 40 s ago (20 s after its start): within the
    // default 30 s delay it never was ready → left out: the ready pods are at 50 %, on target
    // → hold at 3.
    let unready = || {
        vec![
            old_pod("qn-0", "500m"),
            old_pod("qn-1", "500m"),
            pod("qn-2", "500m", 60, false, 40),
        ]
    };
    let base = start(fake(3, unready(), usages())).await;
    let out = controller_timed(&base, cpu_hpa(50, ""), short_init)
        .sync_once()
        .await
        .unwrap();
    let p = out.decision.per_metric[0].result.clone().unwrap();
    assert_eq!(p.current.average_utilization, Some(50), "{p:?}");
    assert_eq!(out.decision.desired_replicas, 3);
    // With a 10 s delay it was ready once (its transition came after the delay): its sample
    // counts like a ready pod's → 166 % → 6.
    let base = start(fake(3, unready(), usages())).await;
    let short_delay = PodTiming {
        initial_readiness_delay: Duration::from_secs(10),
        ..short_init
    };
    let out = controller_timed(&base, cpu_hpa(50, ""), short_delay)
        .sync_once()
        .await
        .unwrap();
    assert_eq!(out.decision.raw_recommendation, Some(10));
    assert_eq!(out.decision.desired_replicas, 6);
}

#[tokio::test]
async fn a_pod_without_metrics_holds_back_a_scale_down() {
    // 4 pods, 3 with metrics at 50m of 500m (10 %), qn-3 without (metrics-server has not
    // scraped it yet). On a scale-down the missing pod counts as 100 % of its request:
    // (150m + 500m) / 2000m = 32 % → ceil(0.64 × 4) = 3, not the 1 that 10 % alone would give.
    let pods = vec![
        old_pod("qn-0", "500m"),
        old_pod("qn-1", "500m"),
        old_pod("qn-2", "500m"),
        old_pod("qn-3", "500m"),
    ];
    let samples = vec![
        usage("qn-0", &[("querynode", "50m")]),
        usage("qn-1", &[("querynode", "50m")]),
        usage("qn-2", &[("querynode", "50m")]),
    ];
    let f = fake(4, pods.clone(), Ok(samples.clone()));
    let base = start(f.clone()).await;
    let out = controller(&base, cpu_hpa(50, FAST_DOWN))
        .sync_once()
        .await
        .unwrap();
    assert_eq!(out.decision.desired_replicas, 3);
    assert_eq!(f.lock().unwrap().puts, vec![3]);

    // With all four reporting 10 %, it goes to ceil(0.2 × 4) = 1.
    let mut all = samples;
    all.push(usage("qn-3", &[("querynode", "50m")]));
    let f = fake(4, pods, Ok(all));
    let base = start(f.clone()).await;
    let out = controller(&base, cpu_hpa(50, FAST_DOWN))
        .sync_once()
        .await
        .unwrap();
    assert_eq!(out.decision.desired_replicas, 1);
}

#[tokio::test]
async fn container_resource_reads_one_container() {
    // Pods with the query node and a segment-cache sidecar. The query node uses 250m of 500m
    // (50 %, on target); the sidecar 400m of 100m. ContainerResource on `querynode` holds at 3;
    // Resource (the pod total, 650m of 600m = 108 %) would scale up.
    let two = |name: &str| {
        let mut p = old_pod(name, "500m");
        p["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "segment-cache", "resources": {"requests": {"cpu": "100m"}}}));
        p
    };
    let samples = |name: &str| usage(name, &[("querynode", "250m"), ("segment-cache", "400m")]);
    let make = || {
        fake(
            3,
            vec![two("qn-0"), two("qn-1"), two("qn-2")],
            Ok(vec![samples("qn-0"), samples("qn-1"), samples("qn-2")]),
        )
    };
    let container_hpa = HpaSpec::from_yaml(
        r#"
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: milvus-querynode, namespace: milvus}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: querynode}
  minReplicas: 1
  maxReplicas: 20
  metrics:
  - type: ContainerResource
    containerResource:
      name: cpu
      container: querynode
      target: {type: Utilization, averageUtilization: 50}
"#,
    )
    .unwrap();
    let f = make();
    let base = start(f.clone()).await;
    let out = controller(&base, container_hpa).sync_once().await.unwrap();
    let p = out.decision.per_metric[0].result.clone().unwrap();
    assert_eq!(p.current.average_utilization, Some(50));
    assert_eq!(out.decision.desired_replicas, 3);

    let f = make();
    let base = start(f.clone()).await;
    let out = controller(&base, cpu_hpa(50, ""))
        .sync_once()
        .await
        .unwrap();
    let p = out.decision.per_metric[0].result.clone().unwrap();
    assert_eq!(p.current.average_utilization, Some(108));
    assert_eq!(out.decision.desired_replicas, 6);
}

#[tokio::test]
async fn holds_when_pod_metrics_fail_or_are_empty() {
    for (metrics, wanted) in [
        (Err(503), "503"),
        (Ok(vec![]), "no metrics returned from resource metrics API"),
    ] {
        let f = fake(
            4,
            vec![old_pod("qn-0", "500m"), old_pod("qn-1", "500m")],
            metrics,
        );
        let base = start(f.clone()).await;
        let out = controller(&base, cpu_hpa(50, FAST_DOWN))
            .sync_once()
            .await
            .unwrap();
        assert_eq!(out.decision.desired_replicas, 4);
        assert!(!out.rescaled);
        let error = out.decision.error.clone().unwrap();
        assert!(error.contains(wanted), "{error}");
        let active = out
            .decision
            .conditions
            .iter()
            .find(|c| c.kind == ConditionType::ScalingActive)
            .unwrap();
        assert_eq!(
            (active.status, active.reason.as_str()),
            (false, "FailedGetResourceMetric")
        );
        assert!(f.lock().unwrap().puts.is_empty());
    }
}

#[tokio::test]
async fn a_pod_list_that_cannot_be_read_is_a_metric_error() {
    let f = fake(2, vec![], Ok(vec![usage("qn-0", &[("querynode", "1")])]));
    let base = start(f.clone()).await;
    // A pods URL that answers 404.
    let mut c = LocalHpa::new(ControllerConfig {
        hpa: cpu_hpa(50, ""),
        metrics_api: None,
        scale_url: format!("{base}{SCALE_PATH}"),
        pods_url: Some(format!("{base}/api/v1/namespaces/elsewhere/pods")),
        pod_metrics_url: Some(format!("{base}{METRICS_PATH}")),
        sync_period: Duration::from_secs(15),
        tolerance: 0.1,
        pod_timing: PodTiming::default(),
        request_timeout: Some(Duration::from_secs(10)),
        tls: TlsOptions::default(),
    })
    .unwrap();
    let out = c.sync_once().await.unwrap();
    let error = out.decision.error.clone().unwrap();
    assert!(
        error.contains("unable to get pods while calculating replica count: 404"),
        "{error}"
    );
    assert_eq!(out.decision.desired_replicas, 2);

    // No pods at all behind the selector.
    let out = controller(&base, cpu_hpa(50, ""))
        .sync_once()
        .await
        .unwrap();
    let error = out.decision.error.clone().unwrap();
    assert!(error.contains("no pods returned by selector"), "{error}");
}
