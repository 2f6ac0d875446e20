//! The `ExternalScaler` service: every answer comes from the in-memory signal snapshot.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::Stream;
use milvus_signals::{Reading, SnapshotStore};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status};

use crate::metadata::{MetadataError, Trigger, metric_value_int, target_size_int};
use crate::metric_names::{ACTIVE_STREAMS, GRPC_DURATION, GRPC_REQUESTS, PUSH_MESSAGES};
use crate::proto::external_scaler_server::ExternalScaler;
use crate::proto::{
    GetMetricSpecResponse, GetMetricsRequest, GetMetricsResponse, IsActiveResponse, MetricSpec,
    MetricValue, ScaledObjectRef,
};

/// The KEDA external scaler over a [`SnapshotStore`].
#[derive(Clone)]
pub struct KedaScaler {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<SnapshotStore>,
    instances: BTreeSet<String>,
    keepalive: Duration,
    stop: CancellationToken,
}

impl KedaScaler {
    /// A scaler answering for the configured `instances`; streams repeat their state every
    /// `keepalive` and end when `stop` is cancelled.
    pub fn new(
        store: Arc<SnapshotStore>,
        instances: impl IntoIterator<Item = String>,
        keepalive: Duration,
        stop: CancellationToken,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                instances: instances.into_iter().collect(),
                keepalive: keepalive.max(Duration::from_millis(10)),
                stop,
            }),
        }
    }

    fn trigger(&self, scaled_object: Option<&ScaledObjectRef>) -> Result<Trigger, Status> {
        let Some(r) = scaled_object else {
            return Err(Status::invalid_argument(
                "scaledObjectRef is missing; it carries the trigger metadata",
            ));
        };
        Trigger::parse(&r.scaler_metadata, |name| {
            self.inner.instances.contains(name)
        })
        .map_err(invalid)
    }

    fn reading(&self, trigger: &Trigger) -> Result<Reading, Status> {
        self.inner
            .store
            .load()
            .reading(&trigger.milvus, &trigger.key(), SystemTime::now())
            .map_err(|e| Status::unavailable(e.to_string()))
    }
}

fn invalid(e: MetadataError) -> Status {
    Status::invalid_argument(e.to_string())
}

fn record<T>(method: &'static str, started: Instant, result: &Result<T, Status>) -> Code {
    let code = match result {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    };
    metrics::counter!(GRPC_REQUESTS, "method" => method, "code" => code_name(code)).increment(1);
    metrics::histogram!(GRPC_DURATION, "method" => method).record(started.elapsed().as_secs_f64());
    code
}

/// gRPC status code names as `grpc-status` documentation spells them.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The stream type of `StreamIsActive`.
pub type ActivityStream = Pin<Box<dyn Stream<Item = Result<IsActiveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalScaler for KedaScaler {
    async fn is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<IsActiveResponse>, Status> {
        let started = Instant::now();
        let result = self.trigger(Some(request.get_ref())).and_then(|t| {
            let reading = self.reading(&t)?;
            Ok(Response::new(IsActiveResponse {
                result: t.is_active(reading.value),
            }))
        });
        record("IsActive", started, &result);
        result
    }

    type StreamIsActiveStream = ActivityStream;

    async fn stream_is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<Self::StreamIsActiveStream>, Status> {
        let started = Instant::now();
        let result = self.trigger(Some(request.get_ref())).map(|trigger| {
            let stream: ActivityStream = Box::pin(activity_stream(self.clone(), trigger));
            Response::new(stream)
        });
        record("StreamIsActive", started, &result);
        result
    }

    async fn get_metric_spec(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<GetMetricSpecResponse>, Status> {
        let started = Instant::now();
        let result = self.trigger(Some(request.get_ref())).map(|t| {
            Response::new(GetMetricSpecResponse {
                metric_specs: vec![MetricSpec {
                    metric_name: t.metric_name(),
                    target_size: target_size_int(t.target),
                    target_size_float: t.target,
                }],
            })
        });
        record("GetMetricSpec", started, &result);
        result
    }

    async fn get_metrics(
        &self,
        request: Request<GetMetricsRequest>,
    ) -> Result<Response<GetMetricsResponse>, Status> {
        let started = Instant::now();
        let req = request.get_ref();
        let result = self.trigger(req.scaled_object_ref.as_ref()).and_then(|t| {
            if !t.matches_metric_name(&req.metric_name) {
                return Err(Status::invalid_argument(format!(
                    "metricName {:?} is not served by this trigger: expected {:?} (optionally with KEDA's sN- prefix)",
                    req.metric_name,
                    t.metric_name()
                )));
            }
            let reading = self.reading(&t)?;
            Ok(Response::new(GetMetricsResponse {
                metric_values: vec![MetricValue {
                    metric_name: t.metric_name(),
                    metric_value: metric_value_int(reading.value),
                    metric_value_float: reading.value,
                }],
            }))
        });
        record("GetMetrics", started, &result);
        result
    }
}

/// Counts itself in [`ACTIVE_STREAMS`] while alive.
struct StreamGuard;

impl StreamGuard {
    fn new() -> Self {
        metrics::gauge!(ACTIVE_STREAMS).increment(1.0);
        StreamGuard
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        metrics::gauge!(ACTIVE_STREAMS).decrement(1.0);
    }
}

struct StreamState {
    scaler: KedaScaler,
    trigger: Trigger,
    rounds: watch::Receiver<u64>,
    stop: CancellationToken,
    last: Option<bool>,
    keepalive_due: bool,
    finished: bool,
    _guard: StreamGuard,
}

/// What a stream does next, decided without I/O from the current state and a fresh reading.
#[derive(Debug, PartialEq)]
enum Step {
    /// Send this activity (first message, a change, or a keep-alive repeat).
    Send(bool),
    /// Nothing to say: wait for a new round, a keep-alive tick or stop.
    Wait,
}

fn next_step(last: Option<bool>, now: bool, keepalive_due: bool) -> Step {
    if last != Some(now) || keepalive_due {
        Step::Send(now)
    } else {
        Step::Wait
    }
}

/// The `StreamIsActive` message stream: the current activity at once, then every change of
/// activity (re-evaluated after every published scrape round), and a repeat every keep-alive
/// period. An unknown or stale signal ends the stream with `UNAVAILABLE` (the reason in the
/// message) instead of inventing an activity; server shutdown ends it with OK. No task is
/// spawned: when the client goes away, tonic drops the stream and everything with it.
fn activity_stream(
    scaler: KedaScaler,
    trigger: Trigger,
) -> impl Stream<Item = Result<IsActiveResponse, Status>> + Send {
    let mut rounds = scaler.inner.store.subscribe();
    rounds.mark_unchanged();
    let stop = scaler.inner.stop.clone();
    let state = StreamState {
        scaler,
        trigger,
        rounds,
        stop,
        last: None,
        keepalive_due: false,
        finished: false,
        _guard: StreamGuard::new(),
    };
    futures_util::stream::unfold(state, |mut st| async move {
        if st.finished {
            return None;
        }
        let keepalive = st.scaler.inner.keepalive;
        loop {
            if st.stop.is_cancelled() {
                return None;
            }
            let active = match st.scaler.reading(&st.trigger) {
                Ok(reading) => st.trigger.is_active(reading.value),
                Err(status) => {
                    st.finished = true;
                    return Some((Err(status), st));
                }
            };
            if let Step::Send(active) = next_step(st.last, active, st.keepalive_due) {
                st.last = Some(active);
                st.keepalive_due = false;
                metrics::counter!(PUSH_MESSAGES, "active" => if active { "true" } else { "false" })
                    .increment(1);
                return Some((Ok(IsActiveResponse { result: active }), st));
            }
            tokio::select! {
                changed = st.rounds.changed() => {
                    if changed.is_err() {
                        // The store is gone: the server is shutting down.
                        return None;
                    }
                }
                _ = tokio::time::sleep(keepalive) => st.keepalive_due = true,
                () = st.stop.cancelled() => return None,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use milvus_signals::{InstanceSnapshot, Signal, SignalKey};
    use std::collections::HashMap;

    #[test]
    fn steps() {
        assert_eq!(next_step(None, false, false), Step::Send(false));
        assert_eq!(next_step(Some(false), false, false), Step::Wait);
        assert_eq!(next_step(Some(false), true, false), Step::Send(true));
        assert_eq!(next_step(Some(true), true, true), Step::Send(true));
    }

    fn publish(store: &SnapshotStore, value: Option<f64>) {
        let now = SystemTime::now();
        let mut i =
            InstanceSnapshot::pending("prod", "default", "test".into(), Duration::from_secs(10));
        i.round_at = Some(now);
        i.values.insert(
            SignalKey::instance(Signal::IndexPendingBuilds),
            value
                .map(|value| Reading {
                    value,
                    sampled_at: now,
                    window: None,
                })
                .ok_or_else(|| {
                    milvus_signals::Unknown::SourceUnreachable(vec![
                        milvus_signals::unknown::TargetFailure {
                            target: "http://qn:9091/metrics".into(),
                            error: "connection refused".into(),
                        },
                    ])
                }),
        );
        store.publish(i);
    }

    fn object(pairs: &[(&str, &str)]) -> ScaledObjectRef {
        ScaledObjectRef {
            name: "index".into(),
            namespace: "milvus".into(),
            scaler_metadata: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>(),
        }
    }

    fn scaler(keepalive: Duration) -> (Arc<SnapshotStore>, KedaScaler, CancellationToken) {
        let store = Arc::new(SnapshotStore::default());
        let stop = CancellationToken::new();
        let s = KedaScaler::new(store.clone(), ["prod".to_string()], keepalive, stop.clone());
        (store, s, stop)
    }

    const META: &[(&str, &str)] = &[
        ("milvus", "prod"),
        ("signal", "index_pending_builds"),
        ("target", "2"),
    ];

    #[tokio::test]
    async fn unary_answers_from_the_snapshot() {
        let (store, s, _tx) = scaler(Duration::from_secs(10));
        // Nothing published yet: unavailable, never zero.
        let err = s.is_active(Request::new(object(META))).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err}");
        publish(&store, Some(3.0));
        assert!(
            s.is_active(Request::new(object(META)))
                .await
                .unwrap()
                .get_ref()
                .result
        );
        let spec = s.get_metric_spec(Request::new(object(META))).await.unwrap();
        assert_eq!(
            spec.get_ref().metric_specs[0].metric_name,
            "milvus_index_pending_builds"
        );
        assert_eq!(spec.get_ref().metric_specs[0].target_size, 2);
        assert_eq!(spec.get_ref().metric_specs[0].target_size_float, 2.0);
        for name in [
            "milvus_index_pending_builds",
            "s0-milvus_index_pending_builds",
        ] {
            let m = s
                .get_metrics(Request::new(GetMetricsRequest {
                    scaled_object_ref: Some(object(META)),
                    metric_name: name.into(),
                }))
                .await
                .unwrap();
            let v = &m.get_ref().metric_values[0];
            assert_eq!((v.metric_value, v.metric_value_float), (3, 3.0));
        }
        let wrong = s
            .get_metrics(Request::new(GetMetricsRequest {
                scaled_object_ref: Some(object(META)),
                metric_name: "milvus_search_rate".into(),
            }))
            .await
            .unwrap_err();
        assert_eq!(wrong.code(), Code::InvalidArgument);
        let missing = s
            .get_metrics(Request::new(GetMetricsRequest {
                scaled_object_ref: None,
                metric_name: "x".into(),
            }))
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Code::InvalidArgument);
        publish(&store, None);
        let err = s.is_active(Request::new(object(META))).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
        assert!(err.message().contains("connection refused"), "{err}");
        let bad = s
            .is_active(Request::new(object(&[("milvus", "prod")])))
            .await
            .unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument);
        assert!(bad.message().contains("\"signal\""), "{bad}");
    }

    #[tokio::test]
    async fn stream_pushes_changes_keepalives_and_ends() {
        let (store, s, stop) = scaler(Duration::from_millis(200));
        publish(&store, Some(0.0));
        let mut stream = s
            .stream_is_active(Request::new(object(META)))
            .await
            .unwrap()
            .into_inner();
        let next = |d: u64| Duration::from_millis(d);
        let first = tokio::time::timeout(next(100), stream.next())
            .await
            .unwrap();
        assert!(!first.unwrap().unwrap().result);
        // Same activity on a new round: nothing before the keep-alive.
        publish(&store, Some(0.0));
        assert!(
            tokio::time::timeout(next(100), stream.next())
                .await
                .is_err()
        );
        // Keep-alive repeat.
        let repeat = tokio::time::timeout(next(500), stream.next())
            .await
            .unwrap();
        assert!(!repeat.unwrap().unwrap().result);
        // Crossing: pushed at once.
        let t = Instant::now();
        publish(&store, Some(5.0));
        let pushed = tokio::time::timeout(next(100), stream.next())
            .await
            .unwrap();
        assert!(pushed.unwrap().unwrap().result);
        assert!(t.elapsed() < next(100));
        // Unknown: ends with UNAVAILABLE, then the stream is over.
        publish(&store, None);
        let err = tokio::time::timeout(next(100), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
        assert!(stream.next().await.is_none());

        // Stop ends an open stream cleanly.
        publish(&store, Some(1.0));
        let mut stream = s
            .stream_is_active(Request::new(object(META)))
            .await
            .unwrap()
            .into_inner();
        assert!(stream.next().await.unwrap().unwrap().result);
        stop.cancel();
        let end = tokio::time::timeout(next(100), stream.next())
            .await
            .unwrap();
        assert!(end.is_none());
    }
}
