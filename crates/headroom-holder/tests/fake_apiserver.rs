//! The Kubernetes holders and the workload read through the real kube client, against a FAKE
//! kube-apiserver.
//!
//! No kube-apiserver runs on this machine, so the API server here is a FAKE: a small HTTP server
//! on 127.0.0.1 (axum) that keeps a few objects in memory (Deployment scales, one
//! CapacityBuffer), answers GET and merge-PATCH on their paths the way the real one does (a JSON
//! merge patch applied to the object, the object answered), records every request (method, path,
//! query, content-type, body) and can be told to fail the next requests with a `Status` of a given
//! code. Everything on the client side (kube's request building, the merge patch, response and
//! `Status` decoding, our error mapping) is the production code.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use headroom_holder::error::HoldError;
use headroom_holder::k8s::{
    CapacityBufferHolder, PlaceholderDeployment, WorkloadScale, buffer_patch, scale_patch,
};
use headroom_holder::round::HeadroomLoop;
use headroom_holder::{
    CapacityBufferRef, Demand, DeploymentRef, HeadroomHolder, Held, WorkloadPods,
};
use milvus_signals::{InstanceSnapshot, Reading, Signal, SignalKey, SnapshotStore};
use serde_json::{Value, json};

const PLACEHOLDER: &str =
    "/apis/apps/v1/namespaces/milvus/deployments/milvus-querynode-headroom/scale";
const WORKLOAD: &str = "/apis/apps/v1/namespaces/milvus/deployments/milvus-querynode/scale";
const BUFFER: &str =
    "/apis/autoscaling.x-k8s.io/v1beta1/namespaces/milvus/capacitybuffers/milvus-querynode";

/// One request as the fake saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    query: String,
    content_type: String,
    body: Value,
}

#[derive(Default)]
struct FakeState {
    /// Path -> object (a Scale or a CapacityBuffer).
    objects: BTreeMap<String, Value>,
    /// Answers of the next requests instead of the normal ones: (method, code, reason).
    fail: VecDeque<(Method, u16, &'static str)>,
    /// An answer to PATCH that ignores the patch (a mutating webhook or a broken server).
    ignore_patches: bool,
    seen: Vec<Seen>,
}

fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    });
    (
        StatusCode::from_u16(code).unwrap(),
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// RFC 7386 merge patch, as the API server applies `application/merge-patch+json`.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

async fn answer(
    State(state): State<Arc<Mutex<FakeState>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut s = state.lock().unwrap();
    let path = uri.path().to_string();
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let parsed: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap_or(Value::String("(not JSON)".into()))
    };
    s.seen.push(Seen {
        method: method.clone(),
        path: path.clone(),
        query: uri.query().unwrap_or("").to_string(),
        content_type: content_type.clone(),
        body: parsed.clone(),
    });
    if s.fail.front().is_some_and(|(m, _, _)| *m == method) {
        let (_, code, reason) = s.fail.pop_front().unwrap();
        return status(code, reason, &format!("fake {reason} on {method} {path}"));
    }
    let ignore = s.ignore_patches;
    let Some(obj) = s.objects.get_mut(&path) else {
        return status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
    };
    if method == Method::PATCH {
        if content_type != "application/merge-patch+json" {
            return status(415, "UnsupportedMediaType", "expected a merge patch");
        }
        if !ignore {
            merge(obj, &parsed);
            // The controller's view, at once: status follows spec (the fake has no controller
            // lag; status is only read back).
            if let Some(r) = obj.pointer("/spec/replicas").cloned() {
                merge(obj, &json!({"status": {"replicas": r}}));
            }
        }
    } else if method != Method::GET {
        return status(405, "MethodNotAllowed", "only get and patch");
    }
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        obj.to_string(),
    )
        .into_response()
}

/// The FAKE API server (see the module comment).
struct FakeApiServer {
    url: String,
    state: Arc<Mutex<FakeState>>,
    task: tokio::task::JoinHandle<()>,
}

fn scale(name: &str, replicas: i64) -> Value {
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": name, "namespace": "milvus", "resourceVersion": "7"},
        "spec": {"replicas": replicas},
        "status": {"replicas": replicas, "selector": format!("app={name}")},
    })
}

fn buffer(spec: Value) -> Value {
    json!({
        "kind": "CapacityBuffer", "apiVersion": "autoscaling.x-k8s.io/v1beta1",
        "metadata": {"name": "milvus-querynode", "namespace": "milvus", "resourceVersion": "3"},
        "spec": spec,
    })
}

impl FakeApiServer {
    async fn start() -> Self {
        let state = Arc::new(Mutex::new(FakeState::default()));
        {
            let mut s = state.lock().unwrap();
            s.objects
                .insert(PLACEHOLDER.into(), scale("milvus-querynode-headroom", 0));
            s.objects
                .insert(WORKLOAD.into(), scale("milvus-querynode", 4));
            s.objects.insert(
                BUFFER.into(),
                buffer(json!({"podTemplateRef": {"name": "milvus-querynode-headroom"}, "limits": {"cpu": "40"}})),
            );
        }
        let app = Router::new().fallback(answer).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, state, task }
    }

    fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url.parse().unwrap());
        headroom_holder::k8s::client(config).unwrap()
    }

    fn seen(&self) -> Vec<Seen> {
        std::mem::take(&mut self.state.lock().unwrap().seen)
    }

    fn fail_next(&self, method: Method, code: u16, reason: &'static str) {
        self.state
            .lock()
            .unwrap()
            .fail
            .push_back((method, code, reason));
    }

    fn object(&self, path: &str) -> Value {
        self.state.lock().unwrap().objects[path].clone()
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn placeholder_ref() -> DeploymentRef {
    DeploymentRef {
        namespace: "milvus".into(),
        deployment: "milvus-querynode-headroom".into(),
    }
}

fn workload_ref() -> DeploymentRef {
    DeploymentRef {
        namespace: "milvus".into(),
        deployment: "milvus-querynode".into(),
    }
}

fn buffer_ref() -> CapacityBufferRef {
    CapacityBufferRef {
        namespace: "milvus".into(),
        name: "milvus-querynode".into(),
    }
}

#[tokio::test]
async fn placeholder_reads_the_scale_then_merge_patches_spec_replicas() {
    let api = FakeApiServer::start().await;
    let mut h = PlaceholderDeployment::new(api.client(), &placeholder_ref());
    let held = h.hold(Demand::Pods(3), true).await.unwrap();
    assert_eq!(
        held,
        Held::Changed {
            from: Some(0),
            to: 3,
            observed: Some(3)
        }
    );
    let seen = api.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        (seen[0].method.clone(), seen[0].path.as_str()),
        (Method::GET, PLACEHOLDER)
    );
    assert_eq!(seen[1].method, Method::PATCH);
    assert_eq!(
        seen[1].path, PLACEHOLDER,
        "the scale subresource, not the Deployment"
    );
    assert_eq!(seen[1].content_type, "application/merge-patch+json");
    assert_eq!(seen[1].body, json!({"spec": {"replicas": 3}}));
    assert!(
        seen[1].query.contains("fieldManager=milvus-scaler"),
        "{}",
        seen[1].query
    );
    assert_eq!(api.object(PLACEHOLDER)["spec"]["replicas"], 3);

    // Unchanged: one GET, no write.
    let held = h.hold(Demand::Pods(3), true).await.unwrap();
    assert_eq!(
        held,
        Held::Unchanged {
            held: 3,
            observed: Some(3)
        }
    );
    let seen = api.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].method, Method::GET);

    // Dry-run: read, no write.
    let held = h.hold(Demand::Pods(1), false).await.unwrap();
    assert_eq!(
        held,
        Held::DryRun {
            from: Some(3),
            to: 1
        }
    );
    assert!(api.seen().iter().all(|s| s.method == Method::GET));
    assert_eq!(api.object(PLACEHOLDER)["spec"]["replicas"], 3);

    // Demand unknown: no request at all.
    let held = h.hold(Demand::Unknown, true).await.unwrap();
    assert_eq!(held, Held::Blind);
    assert!(api.seen().is_empty());
}

#[tokio::test]
async fn placeholder_errors_are_typed_and_say_what_to_do() {
    let api = FakeApiServer::start().await;
    let mut h = PlaceholderDeployment::new(api.client(), &placeholder_ref());

    api.fail_next(Method::GET, 404, "NotFound");
    let e = h.hold(Demand::Pods(2), true).await.unwrap_err();
    assert!(matches!(e, HoldError::NotFound { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("Deployment milvus/milvus-querynode-headroom"),
        "{text}"
    );
    assert!(
        text.contains("never creates it") && text.contains("manifests/components/headroom"),
        "{text}"
    );

    api.fail_next(Method::PATCH, 403, "Forbidden");
    let e = h.hold(Demand::Pods(2), true).await.unwrap_err();
    match &e {
        HoldError::Forbidden { verb, object, .. } => {
            assert_eq!(*verb, "patch");
            assert_eq!(object.resource, "deployments/scale");
        }
        other => panic!("expected Forbidden, got {other:?}"),
    }
    let text = e.to_string();
    assert!(
        text.contains("RBAC verb \"patch\" on resource \"deployments/scale\" of apiGroup \"apps\" with resourceNames [\"milvus-querynode-headroom\"] in namespace \"milvus\""),
        "{text}"
    );

    api.fail_next(Method::GET, 403, "Forbidden");
    let e = h.hold(Demand::Pods(2), true).await.unwrap_err();
    assert!(
        matches!(e, HoldError::Forbidden { verb: "get", .. }),
        "{e:?}"
    );

    api.fail_next(Method::PATCH, 409, "Conflict");
    let e = h.hold(Demand::Pods(2), true).await.unwrap_err();
    assert!(
        matches!(e, HoldError::Conflict { verb: "patch", .. }),
        "{e:?}"
    );

    api.fail_next(Method::GET, 500, "InternalError");
    let e = h.hold(Demand::Pods(2), true).await.unwrap_err();
    match &e {
        HoldError::Api {
            code,
            reason,
            verb,
            message,
            ..
        } => {
            assert_eq!(
                (*code, reason.as_str(), *verb),
                (500, "InternalError", "get")
            );
            assert!(message.contains("fake InternalError"), "{message}");
        }
        other => panic!("expected Api, got {other:?}"),
    }
    // None of the failures wrote anything.
    assert_eq!(api.object(PLACEHOLDER)["spec"]["replicas"], 0);
    assert_eq!(e.kind(), "api");
}

#[tokio::test]
async fn a_write_the_answer_does_not_show_is_an_error() {
    let api = FakeApiServer::start().await;
    api.state.lock().unwrap().ignore_patches = true;
    let mut h = PlaceholderDeployment::new(api.client(), &placeholder_ref());
    let e = h.hold(Demand::Pods(2), true).await.unwrap_err();
    assert!(matches!(e, HoldError::Unexpected { .. }), "{e:?}");
    assert!(e.to_string().contains("answered spec.replicas 0"), "{e}");
}

#[tokio::test]
async fn an_unreachable_api_server_is_its_own_error() {
    let api = FakeApiServer::start().await;
    let client = api.client();
    drop(api); // nothing listens on the port any more
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut h = PlaceholderDeployment::new(client, &placeholder_ref());
    let e = h.hold(Demand::Pods(2), true).await.unwrap_err();
    assert!(
        matches!(e, HoldError::Unreachable { verb: "get", .. }),
        "{e:?}"
    );
}

#[tokio::test]
async fn capacity_buffer_merge_patches_spec_replicas_and_reads_status_back() {
    let api = FakeApiServer::start().await;
    let mut h = CapacityBufferHolder::new(api.client(), &buffer_ref());
    // The buffer sets no replicas yet: the write is a change from "unset".
    let held = h.hold(Demand::Pods(5), false).await.unwrap();
    assert_eq!(held, Held::DryRun { from: None, to: 5 });
    let held = h.hold(Demand::Pods(5), true).await.unwrap();
    assert_eq!(
        held,
        Held::Changed {
            from: None,
            to: 5,
            observed: Some(5)
        }
    );
    let seen = api.seen();
    let patch = seen.iter().find(|s| s.method == Method::PATCH).unwrap();
    assert_eq!(patch.path, BUFFER);
    assert_eq!(patch.content_type, "application/merge-patch+json");
    assert_eq!(patch.body, json!({"spec": {"replicas": 5}}));
    assert_eq!(patch.body, buffer_patch(5));
    let obj = api.object(BUFFER);
    assert_eq!(obj["spec"]["replicas"], 5);
    assert_eq!(
        obj["spec"]["podTemplateRef"]["name"], "milvus-querynode-headroom",
        "a merge patch leaves the rest of the spec"
    );
    let held = h.hold(Demand::Pods(5), true).await.unwrap();
    assert!(matches!(held, Held::Unchanged { held: 5, .. }), "{held:?}");
    assert_eq!(api.seen().len(), 1, "unchanged: one GET");
    assert_eq!(h.hold(Demand::Unknown, true).await.unwrap(), Held::Blind);
    assert!(api.seen().is_empty());
}

#[tokio::test]
async fn capacity_buffer_errors_name_the_crd_and_the_rbac_resource() {
    let api = FakeApiServer::start().await;
    let mut h = CapacityBufferHolder::new(api.client(), &buffer_ref());
    api.fail_next(Method::GET, 404, "NotFound");
    let e = h.hold(Demand::Pods(1), true).await.unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, HoldError::NotFound { .. }), "{e:?}");
    assert!(text.contains("autoscaling.x-k8s.io/v1beta1"), "{text}");
    api.fail_next(Method::PATCH, 403, "Forbidden");
    let e = h.hold(Demand::Pods(1), true).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("on resource \"capacitybuffers\" of apiGroup \"autoscaling.x-k8s.io\""),
        "{e}"
    );
    api.fail_next(Method::PATCH, 409, "Conflict");
    assert!(matches!(
        h.hold(Demand::Pods(1), true).await.unwrap_err(),
        HoldError::Conflict { .. }
    ));
    api.fail_next(Method::GET, 503, "ServiceUnavailable");
    assert!(matches!(
        h.hold(Demand::Pods(1), true).await.unwrap_err(),
        HoldError::Api { code: 503, .. }
    ));
    // A buffer whose replicas are not an integer: a precise error, no panic.
    api.state
        .lock()
        .unwrap()
        .objects
        .insert(BUFFER.into(), buffer(json!({"replicas": "three"})));
    let e = h.hold(Demand::Pods(1), true).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("expected spec.replicas to be an integer >= 0"),
        "{e}"
    );
}

#[tokio::test]
async fn the_workload_read_is_the_query_nodes_scale() {
    let api = FakeApiServer::start().await;
    let w = WorkloadScale::new(api.client(), &workload_ref());
    assert_eq!(w.pods().await.unwrap(), 4);
    let seen = api.seen();
    assert_eq!(
        (seen[0].method.clone(), seen[0].path.as_str()),
        (Method::GET, WORKLOAD)
    );
    api.fail_next(Method::GET, 403, "Forbidden");
    let e = w.pods().await.unwrap_err();
    assert!(
        e.to_string()
            .contains("resourceNames [\"milvus-querynode\"]"),
        "{e}"
    );
}

fn demand_store(value: Option<f64>) -> Arc<SnapshotStore> {
    let store = Arc::new(SnapshotStore::default());
    let now = SystemTime::now();
    let mut i = InstanceSnapshot::pending("prod", "milvus", "test".into(), Duration::from_secs(60));
    i.round_at = Some(now);
    if let Some(value) = value {
        i.values.insert(
            SignalKey::instance(Signal::SearchDemand),
            Ok(Reading {
                value,
                sampled_at: now,
                window: None,
            }),
        );
    }
    store.publish(i);
    store
}

/// A round of placeholder holding over `api`, planning 60 nq/s per pod (floor 1, cap 8) on the
/// demand in `store`.
fn placeholder_loop(
    api: &FakeApiServer,
    store: Arc<SnapshotStore>,
) -> HeadroomLoop<PlaceholderDeployment, WorkloadScale> {
    let config: headroom::HeadroomConfig = yaml_config::from_str(
        "{pod_capacity: 60, time_to_ready: {node_launch: 100s, load: 20s}, growth_window: 5m, hold: 10m, step_down_interval: 1m, floor: 1, cap: 8}",
    )
    .unwrap();
    HeadroomLoop::new(
        headroom::Planner::new(config),
        PlaceholderDeployment::new(api.client(), &placeholder_ref()),
        WorkloadScale::new(api.client(), &workload_ref()),
        store,
        "prod",
    )
}

#[tokio::test]
async fn a_round_plans_from_demand_and_workload_and_writes_the_placeholder() {
    let api = FakeApiServer::start().await;
    // 420 nq/s at 60 per pod = 7 pods of room; the workload runs 4: 3 pods of headroom.
    let mut lp = placeholder_loop(&api, demand_store(Some(420.0)));
    let o = lp.round(SystemTime::now(), true).await;
    assert!(!o.failed(), "{o:?}");
    assert_eq!(o.plan.as_ref().unwrap().headroom_pods, 3, "{o:?}");
    assert_eq!(api.object(PLACEHOLDER)["spec"]["replicas"], 3);
    let text = headroom_holder::round::render(&o);
    assert!(text.contains("set 0 -> 3"), "{text}");
}

#[tokio::test]
async fn a_round_with_unknown_demand_writes_nothing() {
    let api = FakeApiServer::start().await;
    let mut lp = placeholder_loop(&api, demand_store(None));
    let o = lp.round(SystemTime::now(), true).await;
    assert!(o.demand.is_err(), "{o:?}");
    assert_eq!(o.result, Ok(Held::Blind));
    let seen = api.seen();
    assert!(
        seen.iter()
            .all(|s| s.method == Method::GET && s.path == WORKLOAD),
        "only the workload was read: {seen:?}"
    );
    assert_eq!(api.object(PLACEHOLDER)["spec"]["replicas"], 0);

    // The workload unreadable: no plan, no write, a failed round.
    api.fail_next(Method::GET, 403, "Forbidden");
    let mut lp = placeholder_loop(&api, demand_store(Some(420.0)));
    let o = lp.round(SystemTime::now(), true).await;
    assert!(o.failed() && o.plan.is_none(), "{o:?}");
    assert_eq!(o.result, Ok(Held::Blind));
    assert_eq!(api.object(PLACEHOLDER)["spec"]["replicas"], 0);
}

/// The bodies the holders send, against the real schemas: the scale patch is a part of an
/// `autoscaling/v1` Scale (k8s-openapi's type, strictly: nothing in it the type drops).
#[test]
fn the_scale_patch_is_a_strict_part_of_k8s_openapis_scale() {
    for n in [0u32, 1, 7, u32::MAX] {
        let patch = scale_patch(n);
        let mut full =
            json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "x"}});
        merge(&mut full, &patch);
        let scale: k8s_openapi::api::autoscaling::v1::Scale =
            serde_json::from_value(full.clone()).unwrap();
        assert_eq!(
            scale.spec.as_ref().and_then(|s| s.replicas),
            Some(i32::try_from(n).unwrap_or(i32::MAX))
        );
        // Round trip: every key of the patch survives, so none is unknown to the type.
        let back = serde_json::to_value(&scale).unwrap();
        let mut merged = back.clone();
        merge(&mut merged, &patch);
        assert_eq!(
            merged, back,
            "the patch has a key Scale does not know: {patch}"
        );
    }
}
