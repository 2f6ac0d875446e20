//! The front-proxy client CA read live from the cluster (`client_ca: { from_cluster: true }`),
//! through the real kube client and the real TLS server of metrics-api.
//!
//! No kube-apiserver runs on this machine, so the API server is a FAKE: a small HTTPS server
//! (axum over rustls, its own CA) that answers only
//! `GET /api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication`, checks
//! the bearer token like the real one, and can change the ConfigMap, fail, or drop a key on
//! demand. Everything else (kube client, token file, CA file, the rustls verifier swap and the
//! allowed-names check) is the production code.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo};
use metrics_api::MetricsApiServer;
use metrics_api::cluster_ca::{CA_KEY, ClusterCaError, ClusterCaReader};
use metrics_api::config::{ClientAuthConfig, ClientCaSource, ExternalMetricsConfig};
use milvus_signals::SnapshotStore;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

const TOKEN: &str = "fake-service-account-token";
const PATH: &str = "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication";

/// A CA and the PEM of its certificate.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn ca(cn: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    Ca {
        issuer: Issuer::new(params, key),
        pem,
    }
}

/// A leaf certificate and key (PEM) signed by `ca`.
fn leaf(ca: &Ca, cn: &str, sans: Vec<String>, client: bool) -> (String, String) {
    let mut params = CertificateParams::new(sans).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![if client {
        rcgen::ExtendedKeyUsagePurpose::ClientAuth
    } else {
        rcgen::ExtendedKeyUsagePurpose::ServerAuth
    }];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// What the fake API server answers.
#[derive(Clone)]
enum Answer {
    /// The ConfigMap with these data keys.
    ConfigMap(BTreeMap<String, String>),
    /// A `Status` with this HTTP code (503: the API server is overloaded).
    Fail(u16),
}

#[derive(Default)]
struct FakeState {
    answer: Option<Answer>,
    requests: u32,
}

/// The FAKE kube-apiserver (see the module comment).
struct FakeApiServer {
    addr: SocketAddr,
    /// Its serving CA, PEM: written where the pod's service-account `ca.crt` would be.
    ca_pem: String,
    state: Arc<Mutex<FakeState>>,
    task: tokio::task::JoinHandle<()>,
}

fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = serde_json::json!({
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

async fn configmap(State(state): State<Arc<Mutex<FakeState>>>, headers: HeaderMap) -> Response {
    let mut s = state.lock().unwrap();
    s.requests += 1;
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    if auth != Some(&format!("Bearer {TOKEN}")) {
        return status(401, "Unauthorized", "Unauthorized");
    }
    match s.answer.clone() {
        Some(Answer::ConfigMap(data)) => {
            let body = serde_json::json!({
                "kind": "ConfigMap", "apiVersion": "v1",
                "metadata": {"name": "extension-apiserver-authentication", "namespace": "kube-system"},
                "data": data,
            });
            (
                StatusCode::OK,
                [("content-type", "application/json")],
                body.to_string(),
            )
                .into_response()
        }
        Some(Answer::Fail(code)) => status(code, "ServiceUnavailable", "fake outage"),
        None => status(
            404,
            "NotFound",
            "configmaps \"extension-apiserver-authentication\" not found",
        ),
    }
}

impl FakeApiServer {
    async fn start(answer: Answer) -> Self {
        let own_ca = ca("fake kube-apiserver CA");
        let (cert, key) = leaf(&own_ca, "kube-apiserver", vec!["127.0.0.1".into()], false);
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let state = Arc::new(Mutex::new(FakeState {
            answer: Some(answer),
            requests: 0,
        }));
        let app = Router::new()
            .route(PATH, get(configmap))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let app = app.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            app.clone().oneshot(req.map(axum::body::Body::new))
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            ca_pem: own_ca.pem,
            state,
            task,
        }
    }

    fn set(&self, answer: Answer) {
        self.state.lock().unwrap().answer = Some(answer);
    }

    fn requests(&self) -> u32 {
        self.state.lock().unwrap().requests
    }

    /// A reader configured the way `kube::Config::incluster()` configures one (cluster URL,
    /// the API server's CA file, a token *file*), pointed at this fake.
    fn reader(&self, dir: &std::path::Path, token: &str) -> ClusterCaReader {
        std::fs::write(dir.join("ca.crt"), &self.ca_pem).unwrap();
        std::fs::write(dir.join("token"), token).unwrap();
        let mut config = kube::Config::new(format!("https://{}", self.addr).parse().unwrap());
        config.root_cert = Some(vec![
            CertificateDer::from_pem_slice(self.ca_pem.as_bytes())
                .unwrap()
                .to_vec(),
        ]);
        config.root_cert_file = Some(dir.join("ca.crt"));
        config.auth_info.token_file = Some(dir.join("token").display().to_string());
        ClusterCaReader::from_config(config)
            .unwrap()
            .with_start_retry(2, Duration::from_millis(20))
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn data(ca_pem: &str, names: Option<&str>) -> Answer {
    let mut d = BTreeMap::from([(CA_KEY.to_string(), ca_pem.to_string())]);
    if let Some(n) = names {
        d.insert("requestheader-allowed-names".into(), n.into());
    }
    // The real ConfigMap carries more keys; the reader must ignore them.
    d.insert("client-ca-file".into(), "unrelated".into());
    d.insert(
        "requestheader-username-headers".into(),
        "[\"X-Remote-User\"]".into(),
    );
    Answer::ConfigMap(d)
}

fn live(refresh: Duration) -> ExternalMetricsConfig {
    ExternalMetricsConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        // Self-signed serving certificate: the client skips server verification, what is
        // tested here is the server verifying the client.
        tls: None,
        client_auth: Some(ClientAuthConfig {
            client_ca: ClientCaSource::FromCluster {
                refresh_interval: refresh,
            },
            allowed_names: vec![],
        }),
    }
}

async fn serve(
    cfg: &ExternalMetricsConfig,
    reader: ClusterCaReader,
) -> (String, CancellationToken, tokio::task::JoinHandle<()>) {
    let server =
        MetricsApiServer::bind_with_reader(cfg, Arc::new(SnapshotStore::default()), Some(reader))
            .await
            .unwrap();
    let addr = server.local_addr().unwrap();
    let tx = CancellationToken::new();
    let task = tokio::spawn(server.run(tx.clone()));
    (
        format!(
            "https://127.0.0.1:{}/apis/external.metrics.k8s.io/v1beta1",
            addr.port()
        ),
        tx,
        task,
    )
}

/// The HTTP status of a GET with this client identity; `None`: the TLS handshake was refused.
async fn call(url: &str, identity: &(String, String)) -> Option<u16> {
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .danger_accept_invalid_certs(true)
        .identity(
            reqwest::Identity::from_pem(format!("{}{}", identity.0, identity.1).as_bytes())
                .unwrap(),
        )
        .build()
        .unwrap();
    client
        .get(url)
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test]
async fn first_read_then_rotation_without_restart() {
    let old = ca("front-proxy CA 1");
    let new = ca("front-proxy CA 2");
    let old_client = leaf(&old, "front-proxy-client", vec![], true);
    let old_stranger = leaf(&old, "someone-else", vec![], true);
    let new_client = leaf(&new, "front-proxy-client", vec![], true);
    let new_aggregator = leaf(&new, "aggregator", vec![], true);
    let fake = FakeApiServer::start(data(&old.pem, Some("[\"front-proxy-client\"]"))).await;
    let tmp = tempfile::tempdir().unwrap();
    let (url, stop, task) = serve(
        &live(Duration::from_millis(100)),
        fake.reader(tmp.path(), TOKEN),
    )
    .await;

    // First read: the cluster's CA and allowed names are in force.
    assert_eq!(call(&url, &old_client).await, Some(200));
    assert_eq!(
        call(&url, &old_stranger).await,
        Some(401),
        "CN not in requestheader-allowed-names"
    );
    assert_eq!(
        call(&url, &new_client).await,
        None,
        "the new CA is not trusted yet"
    );

    // Rotation: the apiserver publishes a new CA and new names; no restart.
    fake.set(data(
        &new.pem,
        Some("[\"front-proxy-client\",\"aggregator\"]"),
    ));
    eventually("a certificate of the new CA is accepted", async || {
        call(&url, &new_client).await == Some(200)
    })
    .await;
    assert_eq!(
        call(&url, &old_client).await,
        None,
        "the old CA is no longer trusted"
    );
    assert_eq!(
        call(&url, &new_aggregator).await,
        Some(200),
        "names refreshed too"
    );
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn a_failing_refresh_keeps_the_last_good_ca() {
    let good = ca("front-proxy CA");
    let client = leaf(&good, "front-proxy-client", vec![], true);
    let fake = FakeApiServer::start(data(&good.pem, None)).await;
    let tmp = tempfile::tempdir().unwrap();
    let (url, stop, task) = serve(
        &live(Duration::from_millis(50)),
        fake.reader(tmp.path(), TOKEN),
    )
    .await;
    assert_eq!(
        call(&url, &client).await,
        Some(200),
        "no allowed names: any CN of the CA"
    );

    for broken in [
        Answer::Fail(503),
        data(
            "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
            None,
        ),
        Answer::ConfigMap(BTreeMap::new()),
    ] {
        fake.set(broken);
        let seen = fake.requests();
        eventually("two refreshes of the broken ConfigMap", async || {
            fake.requests() >= seen + 2
        })
        .await;
        assert_eq!(
            call(&url, &client).await,
            Some(200),
            "still the last good CA"
        );
    }
    stop.cancel();
    task.await.unwrap();
}

async fn start_error(fake: &FakeApiServer, token: &str) -> metrics_api::ServerError {
    let tmp = tempfile::tempdir().unwrap();
    match MetricsApiServer::bind_with_reader(
        &live(Duration::from_secs(60)),
        Arc::new(SnapshotStore::default()),
        Some(fake.reader(tmp.path(), token)),
    )
    .await
    {
        Ok(_) => panic!("started without a CA"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn start_fails_clearly_without_a_usable_ca() {
    let some = ca("front-proxy CA");
    // The cluster has no request-header CA: a deployment error (exit 2), naming the key.
    let fake = FakeApiServer::start(Answer::ConfigMap(BTreeMap::from([(
        "client-ca-file".to_string(),
        some.pem.clone(),
    )])))
    .await;
    let err = start_error(&fake, TOKEN).await;
    assert!(
        matches!(&err, metrics_api::ServerError::ClusterCa(ClusterCaError::MissingKey(k)) if *k == CA_KEY),
        "{err}"
    );
    assert!(
        err.to_string().contains("requestheader-client-ca-file"),
        "{err}"
    );
    assert!(err.is_config());

    // Wrong token (the real server answers 401; RBAC missing would be 403): exit 2 too.
    fake.set(data(&some.pem, None));
    let err = start_error(&fake, "not-the-token").await;
    assert!(err.to_string().contains("401"), "{err}");
    assert!(err.is_config(), "{err}");

    // The API server overloaded past the bounded retry: exit 1, after exactly 2 attempts.
    fake.set(Answer::Fail(503));
    let before = fake.requests();
    let err = start_error(&fake, TOKEN).await;
    assert!(err.to_string().contains("503"), "{err}");
    assert!(!err.is_config(), "{err}");
    assert!(fake.requests() - before >= 2, "retried");

    // Nothing listening: unreachable, exit 1.
    let addr = fake.addr;
    drop(fake);
    let closed = FakeApiServer {
        addr,
        ca_pem: some.pem.clone(),
        state: Arc::default(),
        task: tokio::spawn(async {}),
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let err = start_error(&closed, TOKEN).await;
    assert!(
        matches!(
            err,
            metrics_api::ServerError::ClusterCa(ClusterCaError::Unreachable(_))
        ),
        "{err}"
    );
    assert!(!err.is_config());
}
