//! The API's documents and answers, as pure functions of the snapshot: discovery documents,
//! `ExternalMetricValueList` and `Status` errors. No sockets here.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    APIGroup, APIGroupList, APIResource, APIResourceList, GroupVersionForDiscovery, ListMeta,
    Status, Time,
};
use milvus_signals::catalogue::NotPerCollection;
use milvus_signals::{Signal, SignalKey, Snapshot};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::quantity::format_quantity;
use crate::selector::{Operator, Selector};

/// The API group served.
pub const GROUP: &str = "external.metrics.k8s.io";
/// The version served.
pub const VERSION: &str = "v1beta1";
/// `group/version`.
pub const GROUP_VERSION: &str = "external.metrics.k8s.io/v1beta1";
/// The label carrying the Milvus instance name.
pub const LABEL_MILVUS: &str = "milvus";
/// The label carrying the collection, on per-collection items.
pub const LABEL_COLLECTION: &str = "collection";

/// `external.metrics.k8s.io/v1beta1` `ExternalMetricValueList` (no k8s-openapi type exists:
/// the metrics APIs are not part of the core OpenAPI document).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalMetricValueList {
    /// Always `ExternalMetricValueList`.
    pub kind: String,
    /// Always `external.metrics.k8s.io/v1beta1`.
    pub api_version: String,
    /// List metadata (empty).
    pub metadata: ListMeta,
    /// One value per matching Milvus instance (or instance and collection).
    pub items: Vec<ExternalMetricValue>,
}

/// `external.metrics.k8s.io/v1beta1` `ExternalMetricValue`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalMetricValue {
    /// The metric name as requested, e.g. `milvus_search_queue_depth`.
    pub metric_name: String,
    /// `milvus` and, for per-collection items, `collection`.
    pub metric_labels: BTreeMap<String, String>,
    /// When the data behind the value was sampled.
    pub timestamp: Time,
    /// The window of a rate or quantile, in seconds.
    #[serde(rename = "window", default, skip_serializing_if = "Option::is_none")]
    pub window_seconds: Option<i64>,
    /// The value as a Kubernetes quantity.
    pub value: Quantity,
}

/// A request the API answers with a `Status` instead of the document asked for.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum ApiError {
    /// Malformed input (400 `BadRequest`).
    #[error("{0}")]
    BadRequest(String),
    /// No such path or metric (404 `NotFound`).
    #[error("{0}")]
    NotFound(String),
    /// The value exists in principle but is not known now (503 `ServiceUnavailable`).
    #[error("{0}")]
    Unavailable(String),
    /// No acceptable client certificate (401 `Unauthorized`).
    #[error("{0}")]
    Unauthorized(String),
    /// A method other than GET (405 `MethodNotAllowed`).
    #[error("{0}")]
    MethodNotAllowed(String),
}

impl ApiError {
    /// The HTTP status code.
    pub fn code(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::Unauthorized(_) => 401,
            ApiError::NotFound(_) => 404,
            ApiError::MethodNotAllowed(_) => 405,
            ApiError::Unavailable(_) => 503,
        }
    }

    /// The Kubernetes `StatusReason`.
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::Unauthorized(_) => "Unauthorized",
            ApiError::NotFound(_) => "NotFound",
            ApiError::MethodNotAllowed(_) => "MethodNotAllowed",
            ApiError::Unavailable(_) => "ServiceUnavailable",
        }
    }

    /// The `Status` document (`apiVersion: v1`, `kind: Status`, `status: Failure`).
    pub fn status(&self) -> Status {
        Status {
            code: Some(i32::from(self.code())),
            message: Some(self.to_string()),
            reason: Some(self.reason().to_string()),
            status: Some("Failure".to_string()),
            ..Status::default()
        }
    }
}

fn group_version() -> GroupVersionForDiscovery {
    GroupVersionForDiscovery {
        group_version: GROUP_VERSION.to_string(),
        version: VERSION.to_string(),
    }
}

/// `GET /apis/external.metrics.k8s.io/v1beta1`.
pub fn api_resource_list() -> APIResourceList {
    APIResourceList {
        group_version: GROUP_VERSION.to_string(),
        resources: vec![APIResource {
            name: "externalmetrics".to_string(),
            singular_name: String::new(),
            namespaced: true,
            kind: "ExternalMetricValueList".to_string(),
            verbs: vec!["get".to_string()],
            ..APIResource::default()
        }],
    }
}

/// `GET /apis/external.metrics.k8s.io`.
pub fn api_group() -> APIGroup {
    APIGroup {
        name: GROUP.to_string(),
        preferred_version: Some(group_version()),
        server_address_by_client_cidrs: None,
        versions: vec![group_version()],
    }
}

/// `GET /apis`.
pub fn api_group_list() -> APIGroupList {
    APIGroupList {
        groups: vec![api_group()],
    }
}

/// `GET /openapi/v2`: a small valid Swagger 2.0 document describing the one resource, so that
/// kube-apiserver's aggregated OpenAPI controller is satisfied and stops retrying.
pub fn openapi_v2() -> serde_json::Value {
    serde_json::json!({
        "swagger": "2.0",
        "info": { "title": "milvus-scaler external metrics API", "version": VERSION },
        "paths": {
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}": {
                "get": {
                    "description": "Milvus scaling signals as external metrics",
                    "produces": ["application/json"],
                    "schemes": ["https"],
                    "operationId": "listExternalMetricValue",
                    "parameters": [
                        { "name": "namespace", "in": "path", "required": true, "type": "string" },
                        { "name": "metric", "in": "path", "required": true, "type": "string" },
                        { "name": "labelSelector", "in": "query", "type": "string", "uniqueItems": true }
                    ],
                    "responses": {
                        "200": { "description": "OK", "schema": { "$ref": "#/definitions/io.k8s.metrics.pkg.apis.external_metrics.v1beta1.ExternalMetricValueList" } },
                        "401": { "description": "Unauthorized" }
                    }
                }
            }
        },
        "definitions": {
            "io.k8s.metrics.pkg.apis.external_metrics.v1beta1.ExternalMetricValueList": {
                "type": "object",
                "required": ["items"],
                "properties": {
                    "apiVersion": { "type": "string" },
                    "kind": { "type": "string" },
                    "metadata": { "type": "object" },
                    "items": { "type": "array", "items": { "type": "object" } }
                }
            }
        }
    })
}

/// Looks up a served metric name (`milvus_` + signal name, case-insensitive).
pub fn signal_for_metric(metric: &str) -> Result<Signal, ApiError> {
    let lower = metric.to_ascii_lowercase();
    lower
        .starts_with("milvus_")
        .then(|| Signal::from_name(&lower))
        .flatten()
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "external metric {metric:?} is not served; served metrics: {}",
                Signal::ALL.map(|s| s.metric_name()).join(", ")
            ))
        })
}

fn to_time(t: SystemTime) -> Result<Time, String> {
    let since = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| "sample time is before 1970".to_string())?;
    let secs =
        i64::try_from(since.as_secs()).map_err(|_| "sample time out of range".to_string())?;
    // Kubernetes serialises metav1.Time with second precision.
    k8s_openapi::jiff::Timestamp::new(secs, 0)
        .map(Time)
        .map_err(|e| format!("sample time out of range: {e}"))
}

/// `GET /apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}?labelSelector=...`.
///
/// One item per Milvus instance in `namespace` whose labels match the selector; when the selector
/// asks about `collection` (other than `!collection`), one item per matching collection instead.
/// Any matching value that is unknown or stale makes the whole answer 503: a partial list would
/// under-report demand, and the HPA holds its replicas on an error. Asking a signal that exists
/// for the whole instance only (see [`Signal::is_per_collection`]) about `collection` is a 400.
pub fn external_metric(
    snapshot: &Snapshot,
    namespace: &str,
    metric: &str,
    label_selector: Option<&str>,
    now: SystemTime,
) -> Result<ExternalMetricValueList, ApiError> {
    let signal = signal_for_metric(metric)?;
    let selector = Selector::parse(label_selector.unwrap_or(""))
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let per_collection = selector.wants(LABEL_COLLECTION);
    if per_collection && !signal.is_per_collection() {
        return Err(ApiError::BadRequest(format!(
            "{}; drop the {LABEL_COLLECTION} requirement from the label selector",
            NotPerCollection { signal }
        )));
    }
    // Collections the selector names explicitly: asked for even if an instance lacks them, so
    // that a missing one is reported instead of silently dropped.
    let pinned: BTreeSet<&str> = selector
        .on(LABEL_COLLECTION)
        .filter_map(|r| match &r.op {
            Operator::In(values) => Some(values.iter().map(String::as_str)),
            _ => None,
        })
        .flatten()
        .filter(|v| !v.is_empty())
        .collect();

    let mut items = Vec::new();
    let mut problems = Vec::new();
    for instance in snapshot.in_namespace(namespace) {
        let mut labels = BTreeMap::from([(LABEL_MILVUS.to_string(), instance.name.clone())]);
        let keys: Vec<(SignalKey, BTreeMap<String, String>)> = if per_collection {
            let mut collections: BTreeSet<&str> = instance.collections(signal).collect();
            collections.extend(pinned.iter().copied());
            collections
                .into_iter()
                .map(|c| {
                    let mut l = labels.clone();
                    l.insert(LABEL_COLLECTION.to_string(), c.to_string());
                    (SignalKey::collection(signal, c), l)
                })
                .collect()
        } else {
            vec![(SignalKey::instance(signal), std::mem::take(&mut labels))]
        };
        for (key, labels) in keys {
            if !selector.matches(&labels) {
                continue;
            }
            let reading = match instance.reading(&key, now) {
                Ok(r) => r,
                Err(e) => {
                    problems.push(e.to_string());
                    continue;
                }
            };
            let value = match format_quantity(reading.value) {
                Ok(v) => v,
                Err(e) => {
                    problems.push(format!("{}: {e}", instance.name));
                    continue;
                }
            };
            let timestamp = match to_time(reading.sampled_at) {
                Ok(t) => t,
                Err(e) => {
                    problems.push(format!("{}: {e}", instance.name));
                    continue;
                }
            };
            items.push(ExternalMetricValue {
                metric_name: metric.to_string(),
                metric_labels: labels,
                timestamp,
                window_seconds: reading
                    .window
                    .map(|w| i64::try_from(w.as_secs()).unwrap_or(i64::MAX)),
                value: Quantity(value),
            });
        }
    }
    if !problems.is_empty() {
        return Err(ApiError::Unavailable(format!(
            "{metric} is unavailable: {}",
            problems.join("; ")
        )));
    }
    Ok(ExternalMetricValueList {
        kind: "ExternalMetricValueList".to_string(),
        api_version: GROUP_VERSION.to_string(),
        metadata: ListMeta::default(),
        items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use milvus_signals::{InstanceSnapshot, Reading, SnapshotStore};
    use std::time::Duration;

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn instance(name: &str, ns: &str) -> InstanceSnapshot {
        let mut i = InstanceSnapshot::pending(name, ns, "test".into(), Duration::from_secs(10));
        i.round_at = Some(t0());
        i
    }

    fn put(i: &mut InstanceSnapshot, key: SignalKey, value: f64, window: Option<u64>) {
        i.values.insert(
            key,
            Ok(Reading {
                value,
                sampled_at: t0(),
                window: window.map(Duration::from_secs),
            }),
        );
    }

    fn store() -> SnapshotStore {
        let store = SnapshotStore::default();
        let mut demo = instance("demo", "default");
        put(
            &mut demo,
            SignalKey::instance(Signal::SearchQueueDepth),
            7.0,
            None,
        );
        put(
            &mut demo,
            SignalKey::instance(Signal::SearchLatencyP99Seconds),
            0.0125,
            Some(30),
        );
        put(
            &mut demo,
            SignalKey::collection(Signal::SearchLatencyP99Seconds, "docs"),
            1.5,
            Some(30),
        );
        put(
            &mut demo,
            SignalKey::collection(Signal::SearchLatencyP99Seconds, "faq"),
            0.5,
            Some(30),
        );
        demo.values.insert(
            SignalKey::instance(Signal::IndexPendingBuilds),
            Err(milvus_signals::Unknown::ComponentMissing(
                milvus_signals::unknown::Component::DataCoord,
            )),
        );
        put(
            &mut demo,
            SignalKey::instance(Signal::SearchInflight),
            3.25,
            Some(30),
        );
        put(
            &mut demo,
            SignalKey::instance(Signal::SearchInflightNodeMax),
            2.5,
            Some(30),
        );
        put(
            &mut demo,
            SignalKey::instance(Signal::SearchDemand),
            51.2,
            Some(30),
        );
        store.publish(demo);
        let mut other = instance("other", "default");
        put(
            &mut other,
            SignalKey::instance(Signal::SearchQueueDepth),
            2.0,
            None,
        );
        store.publish(other);
        let mut prod = instance("prod", "milvus");
        put(
            &mut prod,
            SignalKey::instance(Signal::SearchQueueDepth),
            100.0,
            None,
        );
        store.publish(prod);
        store
    }

    fn values(list: &ExternalMetricValueList) -> Vec<(String, String)> {
        list.items
            .iter()
            .map(|i| {
                let mut l: Vec<String> = i.metric_labels.values().cloned().collect();
                l.reverse();
                (l.join("/"), i.value.0.clone())
            })
            .collect()
    }

    fn ask(sel: Option<&str>, metric: &str, ns: &str) -> Result<ExternalMetricValueList, ApiError> {
        external_metric(
            &store().load(),
            ns,
            metric,
            sel,
            t0() + Duration::from_secs(1),
        )
    }

    #[test]
    fn one_item_per_instance_with_labels_timestamp_and_window() {
        let list = ask(Some("milvus=demo"), "milvus_search_queue_depth", "default").unwrap();
        assert_eq!(values(&list), vec![("demo".into(), "7".into())]);
        let item = &list.items[0];
        assert_eq!(item.metric_name, "milvus_search_queue_depth");
        assert_eq!(item.window_seconds, None);
        assert_eq!(
            item.timestamp.0.as_second(),
            1_700_000_000,
            "timestamp is the sample time"
        );
        let all = ask(None, "milvus_search_queue_depth", "default").unwrap();
        assert_eq!(
            values(&all),
            vec![("demo".into(), "7".into()), ("other".into(), "2".into())]
        );
        let p99 = ask(
            Some("milvus=demo"),
            "milvus_search_latency_p99_seconds",
            "default",
        )
        .unwrap();
        assert_eq!(values(&p99), vec![("demo".into(), "12500u".into())]);
        assert_eq!(p99.items[0].window_seconds, Some(30));
        let json = serde_json::to_value(&p99).unwrap();
        assert_eq!(json["kind"], "ExternalMetricValueList");
        assert_eq!(json["apiVersion"], GROUP_VERSION);
        assert_eq!(json["items"][0]["window"], 30);
        assert_eq!(json["items"][0]["metricLabels"]["milvus"], "demo");
        assert!(
            json["items"][0]["timestamp"]
                .as_str()
                .unwrap()
                .starts_with("2023-11-14T22:13:20")
        );
        let back: ExternalMetricValueList = serde_json::from_value(json).unwrap();
        assert_eq!(back, p99);
    }

    #[test]
    fn per_collection_items_when_the_selector_asks_for_collection() {
        let m = "milvus_search_latency_p99_seconds";
        let list = ask(Some("milvus=demo,collection"), m, "default").unwrap();
        assert_eq!(
            values(&list),
            vec![
                ("demo/docs".into(), "1500m".into()),
                ("demo/faq".into(), "500m".into())
            ]
        );
        let one = ask(Some("collection=docs,milvus=demo"), m, "default").unwrap();
        assert_eq!(values(&one), vec![("demo/docs".into(), "1500m".into())]);
        let not = ask(Some("milvus=demo,collection!=docs"), m, "default").unwrap();
        assert_eq!(values(&not), vec![("demo/faq".into(), "500m".into())]);
        let instance_only = ask(Some("milvus=demo,!collection"), m, "default").unwrap();
        assert_eq!(
            values(&instance_only),
            vec![("demo".into(), "12500u".into())]
        );
        // A pinned collection the instance does not report: an error naming it, not nothing.
        let err = ask(Some("milvus=demo,collection=nope"), m, "default").unwrap_err();
        assert_eq!(err.code(), 503);
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn in_flight_metrics_are_served_with_their_window() {
        let sum = ask(Some("milvus=demo"), "milvus_search_inflight", "default").unwrap();
        assert_eq!(values(&sum), vec![("demo".into(), "3250m".into())]);
        assert_eq!(sum.items[0].window_seconds, Some(30));
        assert_eq!(sum.items[0].metric_name, "milvus_search_inflight");
        let max = ask(
            Some("milvus=demo"),
            "milvus_search_inflight_node_max",
            "default",
        )
        .unwrap();
        assert_eq!(values(&max), vec![("demo".into(), "2500m".into())]);
        // "other" has no in-flight value: unknown, never a zero.
        let unknown = ask(None, "milvus_search_inflight", "default").unwrap_err();
        assert_eq!(unknown.code(), 503);
        assert!(unknown.to_string().contains("\"other\""), "{unknown}");
    }

    #[test]
    fn search_demand_is_served_with_its_window() {
        for name in ["milvus_search_demand", "MILVUS_SEARCH_DEMAND"] {
            let demand = ask(Some("milvus=demo"), name, "default").unwrap();
            assert_eq!(values(&demand), vec![("demo".into(), "51200m".into())]);
            assert_eq!(demand.items[0].window_seconds, Some(30));
            // Names are case-insensitive; the item names the metric as it was asked.
            assert_eq!(demand.items[0].metric_name, name);
        }
        // "other" has no demand value: unknown, never a zero.
        let unknown = ask(None, "milvus_search_demand", "default").unwrap_err();
        assert_eq!(unknown.code(), 503);
        assert!(unknown.to_string().contains("\"other\""), "{unknown}");
    }

    #[test]
    fn instance_only_signals_asked_per_collection_are_a_clear_400() {
        for metric in [
            "milvus_search_demand",
            "milvus_search_inflight",
            "milvus_search_inflight_node_max",
            "milvus_search_queue_depth",
        ] {
            for sel in [
                "milvus=demo,collection=docs",
                "milvus=demo,collection",
                "collection in (a,b)",
            ] {
                let e = ask(Some(sel), metric, "default").unwrap_err();
                assert_eq!(
                    (e.code(), e.reason()),
                    (400, "BadRequest"),
                    "{metric} {sel}"
                );
                let bare = metric.trim_start_matches("milvus_");
                assert!(
                    e.to_string()
                        .starts_with(&format!("{bare} is not available per collection")),
                    "{e}"
                );
            }
            // Excluding collection is asking for the instance-wide value.
            assert!(ask(Some("milvus=demo,!collection"), metric, "default").is_ok());
        }
    }

    #[test]
    fn errors_have_the_right_kind() {
        let bad = ask(
            Some("milvus in (demo"),
            "milvus_search_queue_depth",
            "default",
        )
        .unwrap_err();
        assert_eq!((bad.code(), bad.reason()), (400, "BadRequest"));
        assert!(bad.to_string().contains("expected ',' or ')'"), "{bad}");
        for name in ["milvus_nope", "search_queue_depth", "cpu"] {
            let e = ask(None, name, "default").unwrap_err();
            assert_eq!((e.code(), e.reason()), (404, "NotFound"), "{name}");
            assert!(e.to_string().contains("milvus_search_queue_depth"), "{e}");
        }
        let empty = ask(None, "milvus_search_queue_depth", "nowhere").unwrap();
        assert!(empty.items.is_empty());
        let none = ask(Some("milvus=ghost"), "milvus_search_queue_depth", "default").unwrap();
        assert!(none.items.is_empty());
        // Unknown in one matching instance: 503 for the whole answer, never a zero.
        let unknown = ask(None, "milvus_index_pending_builds", "default").unwrap_err();
        assert_eq!(
            (unknown.code(), unknown.reason()),
            (503, "ServiceUnavailable")
        );
        assert!(
            unknown.to_string().contains(
                "no scraped target exports data-coordinator metrics (milvus_datacoord_*)"
            ),
            "{unknown}"
        );
        assert!(unknown.to_string().contains("\"other\""), "{unknown}");
        // Stale.
        let stale = external_metric(
            &store().load(),
            "default",
            "milvus_search_queue_depth",
            Some("milvus=demo"),
            t0() + Duration::from_secs(60),
        )
        .unwrap_err();
        assert_eq!(stale.code(), 503);
        assert!(stale.to_string().contains("stale"), "{stale}");
        let status = serde_json::to_value(stale.status()).unwrap();
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["apiVersion"], "v1");
        assert_eq!(status["status"], "Failure");
        assert_eq!(status["code"], 503);
        assert_eq!(status["reason"], "ServiceUnavailable");
    }

    #[test]
    fn pending_instance_is_unavailable() {
        let store = SnapshotStore::default();
        store.publish(InstanceSnapshot::pending(
            "demo",
            "default",
            "x".into(),
            Duration::from_secs(10),
        ));
        let e = external_metric(&store.load(), "default", "milvus_search_rate", None, t0())
            .unwrap_err();
        assert_eq!(e.code(), 503);
    }

    #[test]
    fn discovery_documents_round_trip_through_k8s_openapi() {
        let list = serde_json::to_value(api_resource_list()).unwrap();
        assert_eq!(list["kind"], "APIResourceList");
        assert_eq!(list["groupVersion"], GROUP_VERSION);
        assert_eq!(list["resources"][0]["name"], "externalmetrics");
        assert_eq!(list["resources"][0]["namespaced"], true);
        assert_eq!(list["resources"][0]["kind"], "ExternalMetricValueList");
        assert_eq!(list["resources"][0]["verbs"], serde_json::json!(["get"]));
        let back: APIResourceList = serde_json::from_value(list).unwrap();
        assert_eq!(back, api_resource_list());
        let groups = serde_json::to_value(api_group_list()).unwrap();
        assert_eq!(groups["kind"], "APIGroupList");
        assert_eq!(
            groups["groups"][0]["preferredVersion"]["groupVersion"],
            GROUP_VERSION
        );
        let back: APIGroupList = serde_json::from_value(groups).unwrap();
        assert_eq!(back, api_group_list());
        assert_eq!(
            serde_json::to_value(api_group()).unwrap()["kind"],
            "APIGroup"
        );
    }
}
