//! The Kubernetes holders, the workload read and the Lease election through the real kube
//! client, against a FAKE kube-apiserver.
//!
//! No kube-apiserver runs on this machine, so the API server here is a FAKE: a small HTTP server
//! on 127.0.0.1 (axum) that keeps a few objects in memory (Deployment scales, one
//! CapacityBuffer), answers GET and merge-PATCH on their paths the way the real one does (a JSON
//! merge patch applied to the object, the object answered), records every request (method, path,
//! query, content-type, body) and can be told to fail the next requests with a `Status` of a given
//! code. Leases (`coordination.k8s.io/v1`, namespace milvus-scaler) are kept as the real one keeps
//! them: POST creates (409 AlreadyExists if present), PUT replaces only at the stored
//! resourceVersion (else 409 Conflict; the fake refuses a PUT without one, which the real server
//! would take as unconditional: our elector must always send it), and every write gets a new
//! resourceVersion. Everything on the client side (kube's request building, the merge patch, response and
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
use leader_lease::elector::{Elector, LeaseError, Role};
use leader_lease::lease::{Clock, LeaseSettings, TokioClock};
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
    /// Lease name -> Lease.
    leases: BTreeMap<String, Value>,
    /// The last resourceVersion given to a Lease.
    last_rv: u64,
    /// When set, Lease GETs are answered only once this many are waiting (a race made certain).
    lease_get_barrier: Option<Arc<tokio::sync::Barrier>>,
}

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/milvus-scaler/leases";

/// A Lease request: create on the collection, get and replace on one Lease.
fn lease_answer(s: &mut FakeState, method: &Method, rest: &str, body: Value) -> Response {
    let stored = |s: &mut FakeState, name: &str, mut obj: Value, code: StatusCode| {
        s.last_rv += 1;
        merge(
            &mut obj,
            &json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"namespace": "milvus-scaler", "resourceVersion": s.last_rv.to_string(),
                                 "uid": format!("uid-{name}")}}),
        );
        s.leases.insert(name.to_string(), obj.clone());
        (
            code,
            [("content-type", "application/json")],
            obj.to_string(),
        )
            .into_response()
    };
    if rest.is_empty() && *method == Method::POST {
        let Some(name) = body.pointer("/metadata/name").and_then(Value::as_str) else {
            return status(422, "Invalid", "metadata.name: Required value");
        };
        if body.pointer("/metadata/resourceVersion").is_some() {
            return status(
                500,
                "InternalError",
                "resourceVersion should not be set on objects to be created",
            );
        }
        if s.leases.contains_key(name) {
            let msg = format!("leases.coordination.k8s.io {name:?} already exists");
            return status(409, "AlreadyExists", &msg);
        }
        let name = name.to_string();
        return stored(s, &name, body, StatusCode::CREATED);
    }
    let Some(name) = rest.strip_prefix('/') else {
        return status(405, "MethodNotAllowed", "the fake lists no leases");
    };
    let Some(current) = s.leases.get(name) else {
        return status(
            404,
            "NotFound",
            &format!("leases.coordination.k8s.io {name:?} not found"),
        );
    };
    match *method {
        Method::GET => (
            StatusCode::OK,
            [("content-type", "application/json")],
            current.to_string(),
        )
            .into_response(),
        Method::PUT => {
            let Some(rv) = body
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
            else {
                return status(
                    422,
                    "Invalid",
                    "the fake requires metadata.resourceVersion on a Lease update",
                );
            };
            if Some(rv)
                != current
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
            {
                let msg = format!(
                    "Operation cannot be fulfilled on leases.coordination.k8s.io {name:?}: the object has been modified; please apply your changes to the latest version and try again"
                );
                return status(409, "Conflict", &msg);
            }
            let name = name.to_string();
            stored(s, &name, body, StatusCode::OK)
        }
        _ => status(405, "MethodNotAllowed", "leases: get, create, update"),
    }
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
    let barrier = state.lock().unwrap().lease_get_barrier.clone();
    if let Some(b) = barrier.filter(|_| method == Method::GET && uri.path().starts_with(LEASES)) {
        b.wait().await;
    }
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
    if let Some(rest) = path.strip_prefix(LEASES) {
        return lease_answer(&mut s, &method, rest, parsed);
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

// ---- Leader election over the fake's Leases -------------------------------------------------

/// A clock the test moves by hand, shared by the electors of a test (the same rate of time for
/// all, as on one cluster; only the elector's own reads of it matter).
#[derive(Clone)]
struct ManualClock(Arc<Mutex<tokio::time::Instant>>);

impl ManualClock {
    fn new() -> Self {
        Self(Arc::new(Mutex::new(tokio::time::Instant::now())))
    }

    fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }

    fn now(&self) -> tokio::time::Instant {
        *self.0.lock().unwrap()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> tokio::time::Instant {
        ManualClock::now(self)
    }
}

const LEASE: &str =
    "/apis/coordination.k8s.io/v1/namespaces/milvus-scaler/leases/milvus-scaler-headroom";
const SEC: Duration = Duration::from_secs(1);

fn lease_settings(identity: &str) -> LeaseSettings {
    LeaseSettings {
        namespace: "milvus-scaler".into(),
        name: "milvus-scaler-headroom".into(),
        identity: identity.into(),
        lease_duration: 15 * SEC,
        renew_deadline: 10 * SEC,
        retry_period: 2 * SEC,
    }
}

fn elector(api: &FakeApiServer, identity: &str, clock: &ManualClock) -> Elector {
    Elector::new(
        api.client(),
        lease_settings(identity),
        Arc::new(clock.clone()),
        headroom_holder::ELECTION,
    )
}

/// An elector on tokio's clock with short periods (1s lease, 500ms deadline, 50ms attempts), for
/// tests that run its real loop.
fn quick_elector(api: &FakeApiServer, identity: &str) -> Elector {
    let settings = LeaseSettings {
        lease_duration: SEC,
        renew_deadline: Duration::from_millis(500),
        retry_period: Duration::from_millis(50),
        ..lease_settings(identity)
    };
    Elector::new(
        api.client(),
        settings,
        Arc::new(TokioClock),
        headroom_holder::ELECTION,
    )
}

impl FakeApiServer {
    fn lease(&self) -> Option<Value> {
        self.state
            .lock()
            .unwrap()
            .leases
            .get("milvus-scaler-headroom")
            .cloned()
    }
}

fn leaders(electors: &[&Elector]) -> Vec<String> {
    electors
        .iter()
        .filter(|e| e.leadership().is_leader())
        .map(|e| e.settings().identity.clone())
        .collect()
}

#[tokio::test]
async fn three_electors_agree_on_one_leader_that_creates_then_renews_the_lease() {
    let api = FakeApiServer::start().await;
    let clock = ManualClock::new();
    let (mut a, mut b, mut c) = (
        elector(&api, "a", &clock),
        elector(&api, "b", &clock),
        elector(&api, "c", &clock),
    );
    assert_eq!(a.step().await.unwrap(), Role::Leader);
    for e in [&mut b, &mut c] {
        assert_eq!(
            e.step().await.unwrap(),
            Role::Follower {
                holder: Some("a".into())
            }
        );
    }
    assert_eq!(leaders(&[&a, &b, &c]), ["a"]);
    let seen = api.seen();
    let writes: Vec<_> = seen.iter().filter(|s| s.method != Method::GET).collect();
    assert_eq!(
        writes.len(),
        1,
        "one create, the followers only read: {seen:?}"
    );
    assert_eq!(
        (writes[0].method.clone(), writes[0].path.as_str()),
        (Method::POST, LEASES)
    );
    assert!(
        writes[0].query.contains("fieldManager=milvus-scaler"),
        "{}",
        writes[0].query
    );
    let lease = api.lease().unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "a");
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 15);
    // The body is a Lease by k8s-openapi's type, strictly.
    let typed: k8s_openapi::api::coordination::v1::Lease =
        serde_json::from_value(writes[0].body.clone()).unwrap();
    assert_eq!(serde_json::to_value(&typed).unwrap(), writes[0].body);

    // A minute of renewals every retry period: a stays the only leader; each renewal is a PUT at
    // the resourceVersion read and moves it.
    for round in 0..30 {
        clock.advance(2 * SEC);
        let rv_before = api.lease().unwrap()["metadata"]["resourceVersion"].clone();
        assert_eq!(a.step().await.unwrap(), Role::Leader, "round {round}");
        let put = api
            .seen()
            .into_iter()
            .find(|s| s.method == Method::PUT)
            .expect("a renewal");
        assert_eq!(put.path, LEASE);
        assert_eq!(put.body["metadata"]["resourceVersion"], rv_before);
        assert_ne!(
            api.lease().unwrap()["metadata"]["resourceVersion"],
            rv_before
        );
        for e in [&mut b, &mut c] {
            assert!(matches!(e.step().await.unwrap(), Role::Follower { .. }));
        }
        assert_eq!(leaders(&[&a, &b, &c]), ["a"], "round {round}");
    }
    assert_eq!(api.lease().unwrap()["spec"]["leaseTransitions"], 0);
}

#[tokio::test]
async fn a_stopped_leader_is_taken_over_by_exactly_one_after_the_lease_duration() {
    let api = FakeApiServer::start().await;
    let clock = ManualClock::new();
    let (mut a, mut b, mut c) = (
        elector(&api, "a", &clock),
        elector(&api, "b", &clock),
        elector(&api, "c", &clock),
    );
    a.step().await.unwrap();
    b.step().await.unwrap();
    c.step().await.unwrap();
    // a's process hangs: it makes no more attempts. b and c go on every 2s.
    let stopped_at = clock.now();
    let mut takeover = None;
    for _ in 0..15 {
        clock.advance(2 * SEC);
        let since = clock.now() - stopped_at;
        b.step().await.unwrap();
        c.step().await.unwrap();
        let now = leaders(&[&a, &b, &c]);
        assert!(now.len() <= 1, "two leaders at {since:?}: {now:?}");
        if since >= 10 * SEC {
            assert!(
                !a.leadership().is_leader(),
                "a must stop at its renew deadline"
            );
        }
        let new = leaders(&[&b, &c]);
        if !new.is_empty() && takeover.is_none() {
            takeover = Some((since, new[0].clone()));
        }
    }
    let (since, who) = takeover.expect("someone took over");
    // b and c first saw a's last resourceVersion at 0s: the lease is theirs at 15s, the first
    // attempt after it is at 16s; a stopped acting at 10s.
    assert_eq!(since, 16 * SEC, "taken over by {who}");
    assert_eq!(who, "b", "b attempts first each round");
    let lease = api.lease().unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "b");
    assert_eq!(lease["spec"]["leaseTransitions"], 1);

    // a comes back: it sees b's lease and follows, without a write.
    api.seen();
    assert_eq!(
        a.step().await.unwrap(),
        Role::Follower {
            holder: Some("b".into())
        }
    );
    assert!(api.seen().iter().all(|s| s.method == Method::GET));
    assert_eq!(leaders(&[&a, &b, &c]), ["b"]);
}

#[tokio::test]
async fn candidates_racing_for_an_expired_lease_end_with_one_leader_by_409() {
    let api = FakeApiServer::start().await;
    let clock = ManualClock::new();
    let mut a = elector(&api, "a", &clock);
    a.step().await.unwrap();
    let mut others: Vec<Elector> = ["b", "c", "d"]
        .iter()
        .map(|id| elector(&api, id, &clock))
        .collect();
    for e in &mut others {
        e.step().await.unwrap();
    }
    clock.advance(16 * SEC);
    api.seen();
    api.state.lock().unwrap().lease_get_barrier = Some(Arc::new(tokio::sync::Barrier::new(3)));
    // All three at once (the fake answers their GETs together): each reads the expired lease, all
    // write at the resourceVersion they read; the API server takes one write, the others are 409s:
    // followers, not errors.
    let (b, rest) = others.split_first_mut().unwrap();
    let (c, d) = rest.split_first_mut().unwrap();
    let (rb, rc, rd) = tokio::join!(b.step(), c.step(), d[0].step());
    let roles = [rb.unwrap(), rc.unwrap(), rd.unwrap()];
    let won = roles.iter().filter(|r| **r == Role::Leader).count();
    assert_eq!(won, 1, "{roles:?}");
    let puts = api
        .seen()
        .iter()
        .filter(|s| s.method == Method::PUT)
        .count();
    assert_eq!(
        puts, 3,
        "all three wrote at the resourceVersion they read: two got a 409"
    );
    let refs: Vec<&Elector> = others.iter().collect();
    assert_eq!(leaders(&refs).len(), 1);
    assert!(!a.leadership().is_leader());
}

#[tokio::test]
async fn a_conflicted_renewal_makes_the_leader_a_follower_at_once() {
    let api = FakeApiServer::start().await;
    let clock = ManualClock::new();
    let mut a = elector(&api, "a", &clock);
    assert_eq!(a.step().await.unwrap(), Role::Leader);
    clock.advance(2 * SEC);
    api.fail_next(Method::PUT, 409, "Conflict");
    assert!(
        matches!(a.step().await, Ok(Role::Follower { .. })),
        "a 409 is not an error"
    );
    assert!(
        !a.leadership().is_leader(),
        "not leader this round, though the deadline is 8s away"
    );
    // Nothing else changed the lease: the next attempt renews it.
    clock.advance(2 * SEC);
    assert_eq!(a.step().await.unwrap(), Role::Leader);
}

#[tokio::test]
async fn a_leader_that_cannot_renew_stops_at_the_renew_deadline() {
    let api = FakeApiServer::start().await;
    let clock = ManualClock::new();
    let mut a = elector(&api, "a", &clock);
    assert_eq!(a.step().await.unwrap(), Role::Leader);
    for i in 1..=5u32 {
        clock.advance(2 * SEC);
        api.fail_next(Method::PUT, 500, "InternalError");
        let e = a.step().await.unwrap_err();
        assert!(
            matches!(
                e,
                LeaseError::Api {
                    code: 500,
                    verb: "update",
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(
            a.leadership().is_leader(),
            i < 5,
            "{}s after the last renewal",
            2 * i
        );
    }
}

#[tokio::test]
async fn forbidden_attempts_say_which_lease_verb_to_grant() {
    let api = FakeApiServer::start().await;
    let clock = ManualClock::new();
    let mut a = elector(&api, "a", &clock);
    api.fail_next(Method::POST, 403, "Forbidden");
    let e = a.step().await.unwrap_err();
    assert_eq!(e.kind(), "forbidden");
    let text = e.to_string();
    assert!(
        text.contains("RBAC verb \"create\" on resource \"leases\" of apiGroup \"coordination.k8s.io\" (create cannot be restricted by resourceNames) in namespace \"milvus-scaler\""),
        "{text}"
    );
    api.fail_next(Method::GET, 403, "Forbidden");
    let text = a.step().await.unwrap_err().to_string();
    assert!(
        text.contains("RBAC verb \"get\" on resource \"leases\" of apiGroup \"coordination.k8s.io\" with resourceNames [\"milvus-scaler-headroom\"]"),
        "{text}"
    );
    assert!(!a.leadership().is_leader());
    assert!(api.lease().is_none(), "nothing was created");
}

#[tokio::test]
async fn a_cancelled_elector_releases_and_another_takes_over_at_once() {
    let api = FakeApiServer::start().await;
    // a runs its real loop on tokio's clock.
    let a = quick_elector(&api, "a");
    let mut a_leads = a.leadership();
    let stop = shutdown_signal::CancellationToken::new();
    let task = tokio::spawn(a.run(stop.clone()));
    tokio::time::timeout(Duration::from_secs(5), a_leads.became_leader())
        .await
        .expect("a leads");
    let clock = ManualClock::new();
    let mut b = elector(&api, "b", &clock);
    assert!(matches!(b.step().await.unwrap(), Role::Follower { .. }));

    stop.cancel();
    task.await.unwrap();
    assert!(!a_leads.is_leader());
    let lease = api.lease().unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "", "{lease}");
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 1);
    // b's clock has not moved: no waiting for expiry after a release.
    assert_eq!(b.step().await.unwrap(), Role::Leader);
    assert_eq!(api.lease().unwrap()["spec"]["holderIdentity"], "b");
}

#[tokio::test]
async fn only_the_leader_writes_the_placeholder_and_a_new_leader_takes_over_the_writing() {
    let api = FakeApiServer::start().await;
    let clock = ManualClock::new();
    let (mut ea, mut eb) = (elector(&api, "a", &clock), elector(&api, "b", &clock));
    // Two replicas planning different headroom (420 nq/s -> 3 pods, 300 -> 1 over 4 query nodes),
    // so the placeholder's replicas say who wrote them.
    let mut la = placeholder_loop(&api, demand_store(Some(420.0))).with_leadership(ea.leadership());
    let mut lb = placeholder_loop(&api, demand_store(Some(300.0))).with_leadership(eb.leadership());
    ea.step().await.unwrap();
    eb.step().await.unwrap();
    api.seen();
    for _ in 0..3 {
        let oa = la.round(SystemTime::now(), true).await;
        let ob = lb.round(SystemTime::now(), true).await;
        assert!(
            matches!(oa.result, Ok(Held::Changed { .. } | Held::Unchanged { .. })),
            "{oa:?}"
        );
        assert_eq!(
            ob.result,
            Ok(Held::NotLeader {
                lease: "milvus-scaler/milvus-scaler-headroom".into(),
                leader: Some("a".into())
            })
        );
        assert_eq!(
            ob.plan.as_ref().unwrap().headroom_pods,
            1,
            "the follower still plans"
        );
        assert_eq!(api.object(PLACEHOLDER)["spec"]["replicas"], 3);
    }
    let patches: Vec<Value> = api
        .seen()
        .into_iter()
        .filter(|s| s.path == PLACEHOLDER && s.method != Method::GET)
        .map(|s| s.body)
        .collect();
    assert_eq!(
        patches,
        [json!({"spec": {"replicas": 3}})],
        "one write, by a"
    );
    let text = headroom_holder::round::render(&lb.round(SystemTime::now(), true).await);
    assert!(
        text.contains("not the leader (Lease milvus-scaler/milvus-scaler-headroom held by a)"),
        "{text}"
    );

    // a stops renewing. From its renew deadline (10s) it writes no more, and b takes over at 15s.
    clock.advance(10 * SEC);
    assert!(matches!(
        la.round(SystemTime::now(), true).await.result,
        Ok(Held::NotLeader { .. })
    ));
    eb.step().await.unwrap();
    assert!(matches!(
        lb.round(SystemTime::now(), true).await.result,
        Ok(Held::NotLeader { .. })
    ));
    assert_eq!(
        api.object(PLACEHOLDER)["spec"]["replicas"],
        3,
        "nobody wrote in between"
    );
    clock.advance(6 * SEC);
    assert_eq!(eb.step().await.unwrap(), Role::Leader);
    let ob = lb.round(SystemTime::now(), true).await;
    assert!(
        matches!(
            ob.result,
            Ok(Held::Changed {
                from: Some(3),
                to: 1,
                ..
            })
        ),
        "{ob:?}"
    );
    assert!(matches!(
        la.round(SystemTime::now(), true).await.result,
        Ok(Held::NotLeader { .. })
    ));
    assert_eq!(api.object(PLACEHOLDER)["spec"]["replicas"], 1);
    // In dry-run a follower reads and says what it would set: leadership only gates writes.
    let oa = la.round(SystemTime::now(), false).await;
    assert!(
        matches!(
            oa.result,
            Ok(Held::DryRun {
                from: Some(1),
                to: 3
            })
        ),
        "{oa:?}"
    );
}

#[tokio::test]
async fn a_loop_whose_replica_becomes_leader_writes_at_once_not_an_interval_later() {
    let api = FakeApiServer::start().await;
    let elector = quick_elector(&api, "a");
    let lp =
        placeholder_loop(&api, demand_store(Some(420.0))).with_leadership(elector.leadership());
    let stop = shutdown_signal::CancellationToken::new();
    // The loop's first round comes before any election: not the leader, nothing written; its next
    // round is an hour away.
    let looping = tokio::spawn(lp.run(Duration::from_secs(3600), true, stop.clone()));
    tokio::time::timeout(Duration::from_secs(5), async {
        while !api.seen().iter().any(|s| s.path == WORKLOAD) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the first round read the workload");
    assert_eq!(api.object(PLACEHOLDER)["spec"]["replicas"], 0);
    let electing = tokio::spawn(elector.run(stop.clone()));
    tokio::time::timeout(Duration::from_secs(5), async {
        while api.object(PLACEHOLDER)["spec"]["replicas"] != 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("written as soon as it led");
    stop.cancel();
    looping.await.unwrap();
    electing.await.unwrap();
    assert_eq!(
        api.lease().unwrap()["spec"]["holderIdentity"],
        "",
        "released on cancel"
    );
}
