//! The HTTPS server: TLS accept loop (rustls), per-connection client identity, the axum router,
//! front-proxy authentication and request metrics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use milvus_signals::SnapshotStore;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::api::{self, ApiError};
use crate::cluster_ca::{ClusterCa, ClusterCaError, ClusterCaReader};
use crate::config::{ClientCaSource, ExternalMetricsConfig};
use crate::metric_names::{CLIENT_CA_REFRESH_FAILURES, CLIENT_CA_UPDATES};
use crate::tls::{self, TlsError};

/// The metric route's template, as used in the `route` label of request metrics.
pub const METRIC_ROUTE: &str =
    "/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}";

/// Why the server could not start.
#[derive(Debug, Error)]
pub enum ServerError {
    /// The TLS configuration is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The front-proxy client CA could not be read from the cluster.
    #[error(transparent)]
    ClusterCa(#[from] ClusterCaError),
    /// The listen address could not be bound.
    #[error("binding external_metrics.listen {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

impl ServerError {
    /// Whether the configuration or the deployment is wrong (a TLS file missing, unreadable,
    /// not PEM, or a key that does not match its certificate; no token mounted, RBAC missing,
    /// the ConfigMap without the CA, or with one that is not a CA) rather than something down:
    /// the process exits 2 for these, 1 for the rest.
    pub fn is_config(&self) -> bool {
        match self {
            Self::Tls(e) => e.is_config(),
            Self::ClusterCa(e) => !e.is_transient(),
            Self::Bind { .. } => false,
        }
    }
}

/// Who is on the other end of a TLS connection, as far as the handshake says.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// Whether the client presented a certificate (it was verified against the CA if so).
    pub has_certificate: bool,
    /// The certificate's subject CN.
    pub common_name: Option<String>,
}

#[derive(Clone)]
struct AppState {
    store: Arc<SnapshotStore>,
    /// `Some` when client certificates are required; the CNs accepted (empty: any).
    allowed_names: Option<AllowedNames>,
}

/// The accepted front-proxy common names, swapped when the cluster's list changes.
type AllowedNames = Arc<arc_swap::ArcSwap<Vec<String>>>;

fn json<T: Serialize>(code: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (
            code,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            bytes,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn error(e: &ApiError) -> Response {
    let code = StatusCode::from_u16(e.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json(code, &e.status())
}

/// The `route` label of a request: the router's template that matched it (axum's
/// [`MatchedPath`], so the label set is the router's route list and cannot drift from it), or
/// `other` for what no route matched (a bounded label whatever paths clients send).
fn route_label(req: &Request) -> String {
    req.extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_string(), |p| p.as_str().to_string())
}

fn is_health(path: &str) -> bool {
    matches!(path, "/healthz" | "/livez" | "/readyz")
}

async fn record_metrics(req: Request, next: Next) -> Response {
    let route = route_label(&req);
    let started = Instant::now();
    let response = next.run(req).await;
    metrics::counter!(
        crate::metric_names::HTTP_REQUESTS,
        "route" => route.clone(),
        "code" => response.status().as_u16().to_string()
    )
    .increment(1);
    metrics::histogram!(crate::metric_names::HTTP_REQUEST_DURATION, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect()
}

async fn authenticate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if let Some(allowed) = &state.allowed_names
        && !is_health(path)
    {
        let allowed = allowed.load();
        let peer = req.extensions().get::<Peer>().cloned().unwrap_or_default();
        if !peer.has_certificate {
            return error(&ApiError::Unauthorized(
                "a client certificate signed by external_metrics.client_auth.client_ca_file is required".into(),
            ));
        }
        if !allowed.is_empty()
            && !peer
                .common_name
                .as_ref()
                .is_some_and(|cn| allowed.iter().any(|a| a == cn))
        {
            return error(&ApiError::Unauthorized(format!(
                "client certificate CN {:?} is not in external_metrics.client_auth.allowed_names",
                peer.common_name.as_deref().unwrap_or("")
            )));
        }
        tracing::debug!(
            path,
            proxy = peer.common_name.as_deref().unwrap_or(""),
            user = ?header(req.headers(), "x-remote-user"),
            groups = ?header(req.headers(), "x-remote-group"),
            "external metrics request"
        );
    }
    next.run(req).await
}

/// Query parameters of the metric route.
#[derive(Debug, Deserialize)]
struct MetricQuery {
    #[serde(rename = "labelSelector")]
    label_selector: Option<String>,
}

async fn metric(
    State(state): State<AppState>,
    Path((namespace, metric)): Path<(String, String)>,
    query: Result<Query<MetricQuery>, QueryRejection>,
) -> Response {
    let query = match query {
        Ok(Query(q)) => q,
        Err(e) => return error(&ApiError::BadRequest(format!("invalid query string: {e}"))),
    };
    let snapshot = state.store.load();
    match api::external_metric(
        &snapshot,
        &namespace,
        &metric,
        query.label_selector.as_deref(),
        SystemTime::now(),
    ) {
        Ok(list) => json(StatusCode::OK, &list),
        Err(e) => {
            if e.code() == 503 {
                tracing::debug!(error = %e, "external metric unavailable");
            }
            error(&e)
        }
    }
}

async fn ready(State(state): State<AppState>) -> Response {
    if state.store.all_polled() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the first round of every Milvus instance\n",
        )
            .into_response()
    }
}

/// The router: discovery, metric values, OpenAPI, health; authentication when `allowed_names`
/// is `Some`; request metrics around everything.
pub fn router(store: Arc<SnapshotStore>, allowed_names: Option<Vec<String>>) -> Router {
    shared_router(
        store,
        allowed_names.map(|a| Arc::new(arc_swap::ArcSwap::from_pointee(a))),
    )
}

fn shared_router(store: Arc<SnapshotStore>, allowed_names: Option<AllowedNames>) -> Router {
    let state = AppState {
        store,
        allowed_names,
    };
    Router::new()
        .route(
            "/apis",
            get(|| async { json(StatusCode::OK, &api::api_group_list()) }),
        )
        .route(
            "/apis/external.metrics.k8s.io",
            get(|| async { json(StatusCode::OK, &api::api_group()) }),
        )
        .route(
            "/apis/external.metrics.k8s.io/v1beta1",
            get(|| async { json(StatusCode::OK, &api::api_resource_list()) }),
        )
        .route(METRIC_ROUTE, get(metric))
        .route(
            "/openapi/v2",
            get(|| async { json(StatusCode::OK, &api::openapi_v2()) }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .fallback(|req: Request| async move {
            error(&ApiError::NotFound(format!(
                "the server could not find the requested resource {:?}",
                req.uri().path()
            )))
        })
        .method_not_allowed_fallback(|req: Request| async move {
            error(&ApiError::MethodNotAllowed(format!(
                "method {} is not supported on {:?}; this API is read-only (get)",
                req.method(),
                req.uri().path()
            )))
        })
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(middleware::from_fn(record_metrics))
        .with_state(state)
}

/// A bound, configured server; [`MetricsApiServer::run`] serves until told to stop.
pub struct MetricsApiServer {
    listener: TcpListener,
    tls: tls::ServerTls,
    router: Router,
    reload_every: Duration,
    cluster: Option<ClusterRefresh>,
}

/// The live client CA: where it is read from, how often, and what was last installed.
struct ClusterRefresh {
    reader: ClusterCaReader,
    every: Duration,
    last: ClusterCa,
    allowed: AllowedNames,
}

/// How often the serving certificate files are checked for changes by default.
pub const DEFAULT_CERT_RELOAD_INTERVAL: Duration = Duration::from_secs(30);

impl MetricsApiServer {
    /// Loads the TLS material (with `client_ca.from_cluster`, reads the CA through the
    /// in-cluster API, retrying a few seconds while the API server is unreachable), binds
    /// `cfg.listen`, and builds the router over `store`.
    pub async fn bind(
        cfg: &ExternalMetricsConfig,
        store: Arc<SnapshotStore>,
    ) -> Result<Self, ServerError> {
        let reader = match cfg.client_auth.as_ref().map(|a| &a.client_ca) {
            Some(ClientCaSource::FromCluster { .. }) => Some(ClusterCaReader::incluster()?),
            _ => None,
        };
        Self::bind_with_reader(cfg, store, reader).await
    }

    /// [`Self::bind`] with the client that reads the cluster's CA given (used with
    /// `client_ca.from_cluster` only; tests point it at a fake API server).
    pub async fn bind_with_reader(
        cfg: &ExternalMetricsConfig,
        store: Arc<SnapshotStore>,
        reader: Option<ClusterCaReader>,
    ) -> Result<Self, ServerError> {
        let refresh = match (cfg.client_auth.as_ref().map(|a| &a.client_ca), reader) {
            (Some(ClientCaSource::FromCluster { refresh_interval }), Some(reader)) => {
                let ca = reader.read_at_start().await?;
                tracing::info!(allowed_names = ?ca.allowed_names, "external metrics: front-proxy client CA read from kube-system/extension-apiserver-authentication");
                Some((reader, *refresh_interval, ca))
            }
            (Some(ClientCaSource::FromCluster { .. }), None) => {
                return Err(ClusterCaError::NotInCluster("no client given".into()).into());
            }
            _ => None,
        };
        let tls = tls::ServerTls::new(cfg, refresh.as_ref().map(|(_, _, ca)| ca.ca_pem.as_str()))?;
        let listener = TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| ServerError::Bind {
                addr: cfg.listen,
                source,
            })?;
        let allowed = cfg.client_auth.as_ref().map(|a| {
            let names = match &refresh {
                Some((_, _, ca)) => ca.allowed_names.clone(),
                None => a.allowed_names.clone(),
            };
            Arc::new(arc_swap::ArcSwap::from_pointee(names))
        });
        let cluster = refresh.map(|(reader, every, last)| ClusterRefresh {
            reader,
            every,
            last,
            allowed: allowed.clone().expect("from_cluster implies client_auth"),
        });
        Ok(Self {
            listener,
            tls,
            router: shared_router(store, allowed),
            reload_every: DEFAULT_CERT_RELOAD_INTERVAL,
            cluster,
        })
    }

    /// Sets how often the certificate files are checked (default 30 s).
    pub fn with_cert_reload_interval(mut self, every: Duration) -> Self {
        self.reload_every = every;
        self
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts and serves connections until `stop` is cancelled, then lets in-flight requests
    /// finish for up to five seconds. The certificate reloader and the cluster CA refresh stop
    /// with it.
    pub async fn run(self, stop: CancellationToken) {
        let config = self.tls.shared();
        let switch = self.tls.client_ca_switch();
        let mut reloader = self.tls.reloader;
        let every = self.reload_every;
        let reload_stop = stop.clone();
        let reload = tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = reload_stop.cancelled() => return,
                    () = tokio::time::sleep(every) => {}
                }
                // Two stat calls every interval (and a read when they changed): small enough
                // to run inline on this timer task, never on a request.
                match reloader.check() {
                    Ok(true) => tracing::info!("external metrics: serving certificate reloaded"),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "external metrics: serving certificate not reloaded; keeping the previous one")
                    }
                }
            }
        });
        let refresh = self
            .cluster
            .map(|cluster| tokio::spawn(refresh_client_ca(cluster, switch, stop.clone())));
        let router = self.router;
        shutdown_signal::serve(
            "external metrics",
            self.listener,
            stop.cancelled_owned(),
            Duration::from_secs(5),
            move |tcp, remote| {
                let _ = tcp.set_nodelay(true);
                // One load per connection: a swapped client CA applies from the next handshake.
                let acceptor = TlsAcceptor::from(config.load_full());
                let router = router.clone();
                async move {
                    let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::info!(%remote, error = %e, "external metrics: TLS handshake refused");
                            return None;
                        }
                        Err(_) => {
                            tracing::info!(%remote, "external metrics: TLS handshake timed out");
                            return None;
                        }
                    };
                    let certs = tls.get_ref().1.peer_certificates();
                    let peer = Peer {
                        has_certificate: certs.is_some_and(|c| !c.is_empty()),
                        common_name: certs.and_then(|c| c.first()).and_then(|c| tls::common_name(c)),
                    };
                    let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                        req.extensions_mut().insert(peer.clone());
                        router.clone().oneshot(req.map(Body::new))
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    Some(builder.serve_connection(TokioIo::new(tls), service).into_owned())
                }
            },
        )
        .await;
        reload.abort();
        if let Some(refresh) = refresh {
            refresh.abort();
        }
    }
}

/// Rereads the cluster's client CA every `every`; installs it when it changed; on any failure
/// keeps serving with the last good one (logged and counted).
async fn refresh_client_ca(
    mut cluster: ClusterRefresh,
    switch: tls::ClientCaSwitch,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(cluster.every) => {}
        }
        let read = cluster.reader.read().await;
        let ca = match read {
            Ok(ca) if ca == cluster.last => continue,
            Ok(ca) => ca,
            Err(e) => {
                metrics::counter!(CLIENT_CA_REFRESH_FAILURES).increment(1);
                tracing::warn!(error = %e, "external metrics: front-proxy client CA not refreshed; keeping the last good one");
                continue;
            }
        };
        if let Err(e) = switch.set_client_ca(&ca.ca_pem) {
            metrics::counter!(CLIENT_CA_REFRESH_FAILURES).increment(1);
            tracing::warn!(error = %e, "external metrics: front-proxy client CA from the cluster is unusable; keeping the last good one");
            continue;
        }
        cluster.allowed.store(Arc::new(ca.allowed_names.clone()));
        metrics::counter!(CLIENT_CA_UPDATES).increment(1);
        tracing::info!(allowed_names = ?ca.allowed_names, "external metrics: front-proxy client CA changed in the cluster; now verifying with the new one");
        cluster.last = ca;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A recorder that keeps the `route` label of every request counter registered: a fake
    /// standing in for the Prometheus exporter, to read the labels back.
    #[derive(Default)]
    struct Routes(std::sync::Mutex<Vec<String>>);

    impl metrics::Recorder for Routes {
        fn describe_counter(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_gauge(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_histogram(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn register_counter(
            &self,
            key: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Counter {
            if key.name() == crate::metric_names::HTTP_REQUESTS {
                let route = key
                    .labels()
                    .find(|l| l.key() == "route")
                    .map(|l| l.value().to_string());
                self.0.lock().unwrap().extend(route);
            }
            metrics::Counter::noop()
        }
        fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
            metrics::Gauge::noop()
        }
        fn register_histogram(
            &self,
            _: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Histogram {
            metrics::Histogram::noop()
        }
    }

    /// The `route` label the real router records for a GET of each path.
    fn labels(paths: &[&str]) -> Vec<String> {
        let recorder = Routes::default();
        metrics::with_local_recorder(&recorder, || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            for path in paths {
                let app = router(Arc::new(SnapshotStore::default()), None);
                let req = Request::get(*path).body(Body::empty()).unwrap();
                rt.block_on(app.oneshot(req)).unwrap();
            }
        });
        recorder.0.into_inner().unwrap()
    }

    #[test]
    fn route_labels_are_the_matched_templates_or_other() {
        assert_eq!(
            labels(&[
                "/apis/external.metrics.k8s.io/v1beta1/namespaces/x/milvus_search_rate",
                "/apis/external.metrics.k8s.io/v1beta1",
                "/apis",
                "/readyz",
                "/api/v1/pods/anything-at-all",
                "/apis/external.metrics.k8s.io/v1beta1/namespaces/x/y/z",
            ]),
            [
                METRIC_ROUTE,
                "/apis/external.metrics.k8s.io/v1beta1",
                "/apis",
                "/readyz",
                "other",
                "other",
            ]
        );
    }
}
