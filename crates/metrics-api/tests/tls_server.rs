//! The server over a real TLS socket on loopback: every route and error shape, front-proxy
//! client-certificate authentication, and the JSON decoding into k8s-openapi types.
//! The snapshot is filled directly (no Milvus): the end-to-end tests under `tests/e2e` cover
//! the path from a real Milvus.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    APIGroup, APIGroupList, APIResourceList, Status,
};
use metrics_api::MetricsApiServer;
use metrics_api::api::ExternalMetricValueList;
use metrics_api::config::{ClientAuthConfig, ClientCaSource, ExternalMetricsConfig, TlsConfig};
use milvus_signals::unknown::TargetFailure;
use milvus_signals::{InstanceSnapshot, Reading, Signal, SignalKey, SnapshotStore, Unknown};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tokio_util::sync::CancellationToken;

struct Pki {
    /// Removed (with the files in it) when the test's Pki is dropped.
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    server_ca_pem: String,
    client_identity_pem: String,
    wrong_client_identity_pem: String,
    other_cn_identity_pem: String,
}

fn ca(cn: &str) -> (CertificateParams, KeyPair, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    (params, key, pem)
}

fn leaf(
    cn: &str,
    sans: Vec<String>,
    issuer: &Issuer<'_, KeyPair>,
    client: bool,
) -> (String, String) {
    let mut params = CertificateParams::new(sans).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![if client {
        rcgen::ExtendedKeyUsagePurpose::ClientAuth
    } else {
        rcgen::ExtendedKeyUsagePurpose::ServerAuth
    }];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn pki(name: &str) -> Pki {
    let tmp = tempfile::Builder::new()
        .prefix(&format!("metrics-api-test-{name}-"))
        .tempdir()
        .unwrap();
    let dir = tmp.path().to_path_buf();
    let (sp, sk, server_ca_pem) = ca("test serving CA");
    let server_issuer = Issuer::new(sp, sk);
    let (cert, key) = leaf(
        "milvus-scaler",
        vec!["localhost".into(), "127.0.0.1".into()],
        &server_issuer,
        false,
    );
    std::fs::write(dir.join("tls.crt"), cert).unwrap();
    std::fs::write(dir.join("tls.key"), key).unwrap();
    let (fp, fk, front_ca_pem) = ca("test front-proxy CA");
    std::fs::write(dir.join("front-proxy-ca.crt"), front_ca_pem).unwrap();
    let front = Issuer::new(fp, fk);
    let (c, k) = leaf("front-proxy-client", vec![], &front, true);
    let (oc, ok) = leaf("someone-else", vec![], &front, true);
    let (wp, wk, _) = ca("another CA");
    let (wc, wkey) = leaf("front-proxy-client", vec![], &Issuer::new(wp, wk), true);
    Pki {
        _tmp: tmp,
        dir,
        server_ca_pem,
        client_identity_pem: format!("{c}{k}"),
        wrong_client_identity_pem: format!("{wc}{wkey}"),
        other_cn_identity_pem: format!("{oc}{ok}"),
    }
}

fn store() -> Arc<SnapshotStore> {
    let store = Arc::new(SnapshotStore::default());
    let now = SystemTime::now();
    let mut demo =
        InstanceSnapshot::pending("demo", "default", "test".into(), Duration::from_secs(3600));
    demo.round_at = Some(now);
    demo.values.insert(
        SignalKey::instance(Signal::SearchQueueDepth),
        Ok(Reading {
            value: 12.0,
            sampled_at: now,
            window: None,
        }),
    );
    demo.values.insert(
        SignalKey::instance(Signal::SearchLatencyP99Seconds),
        Ok(Reading {
            value: 1.5,
            sampled_at: now,
            window: Some(Duration::from_secs(30)),
        }),
    );
    demo.values.insert(
        SignalKey::instance(Signal::SearchRate),
        Err(Unknown::SourceUnreachable(vec![TargetFailure {
            target: "http://127.0.0.1:1/metrics".into(),
            error: "connection refused".into(),
        }])),
    );
    store.publish(demo);
    let mut stale =
        InstanceSnapshot::pending("old", "stale-ns", "test".into(), Duration::from_secs(5));
    stale.round_at = Some(now);
    stale.values.insert(
        SignalKey::instance(Signal::SearchQueueDepth),
        Ok(Reading {
            value: 3.0,
            sampled_at: now - Duration::from_secs(60),
            window: None,
        }),
    );
    store.publish(stale);
    store
}

async fn start(
    cfg: ExternalMetricsConfig,
) -> (String, CancellationToken, tokio::task::JoinHandle<()>) {
    let server = MetricsApiServer::bind(&cfg, store())
        .await
        .unwrap()
        .with_cert_reload_interval(Duration::from_millis(100));
    let addr = server.local_addr().unwrap();
    let tx = CancellationToken::new();
    let task = tokio::spawn(server.run(tx.clone()));
    (format!("https://localhost:{}", addr.port()), tx, task)
}

fn secured(p: &Pki, allowed: Vec<String>) -> ExternalMetricsConfig {
    ExternalMetricsConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: Some(TlsConfig {
            cert_file: p.dir.join("tls.crt"),
            key_file: p.dir.join("tls.key"),
        }),
        client_auth: Some(ClientAuthConfig {
            client_ca: ClientCaSource::File(p.dir.join("front-proxy-ca.crt")),
            allowed_names: allowed,
        }),
    }
}

fn client(p: &Pki, identity: Option<&str>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(p.server_ca_pem.as_bytes()).unwrap())
        .resolve("localhost", "127.0.0.1:0".parse().unwrap());
    if let Some(id) = identity {
        b = b.identity(reqwest::Identity::from_pem(id.as_bytes()).unwrap());
    }
    b.build().unwrap()
}

async fn get(c: &reqwest::Client, url: &str) -> (u16, String, String) {
    let r = c.get(url).send().await.unwrap();
    let code = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (code, ct, r.text().await.unwrap())
}

fn status(body: &str) -> Status {
    let s: Status = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(s.status.as_deref(), Some("Failure"), "{body}");
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["kind"], "Status");
    assert_eq!(v["apiVersion"], "v1");
    s
}

const BASE: &str = "/apis/external.metrics.k8s.io/v1beta1";

#[tokio::test]
async fn every_route_and_error_shape_over_mutual_tls() {
    let p = pki("routes");
    let (url, stop, task) = start(secured(&p, vec!["front-proxy-client".into()])).await;
    let c = client(&p, Some(&p.client_identity_pem));

    let (code, ct, body) = get(&c, &format!("{url}/apis")).await;
    assert_eq!((code, ct.as_str()), (200, "application/json"));
    let groups: APIGroupList = serde_json::from_str(&body).unwrap();
    assert_eq!(groups.groups[0].name, "external.metrics.k8s.io");

    let (code, _, body) = get(&c, &format!("{url}/apis/external.metrics.k8s.io")).await;
    assert_eq!(code, 200);
    let group: APIGroup = serde_json::from_str(&body).unwrap();
    assert_eq!(
        group.preferred_version.unwrap().group_version,
        "external.metrics.k8s.io/v1beta1"
    );

    let (code, _, body) = get(&c, &format!("{url}{BASE}")).await;
    assert_eq!(code, 200);
    let resources: APIResourceList = serde_json::from_str(&body).unwrap();
    assert_eq!(resources.resources[0].name, "externalmetrics");
    assert!(resources.resources[0].namespaced);

    let (code, _, body) = get(
        &c,
        &format!(
            "{url}{BASE}/namespaces/default/milvus_search_queue_depth?labelSelector=milvus%3Ddemo"
        ),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let list: ExternalMetricValueList = serde_json::from_str(&body).unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].value.0, "12");
    assert_eq!(list.items[0].metric_labels["milvus"], "demo");

    let (code, _, body) = get(
        &c,
        &format!("{url}{BASE}/namespaces/default/milvus_search_latency_p99_seconds"),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let list: ExternalMetricValueList = serde_json::from_str(&body).unwrap();
    assert_eq!(list.items[0].value.0, "1500m");
    assert_eq!(list.items[0].window_seconds, Some(30));

    // Namespace without instances: empty list.
    let (code, _, body) = get(
        &c,
        &format!("{url}{BASE}/namespaces/empty/milvus_search_queue_depth"),
    )
    .await;
    assert_eq!(code, 200);
    let list: ExternalMetricValueList = serde_json::from_str(&body).unwrap();
    assert!(list.items.is_empty());

    // 400: malformed selector, named.
    let (code, _, body) = get(
        &c,
        &format!("{url}{BASE}/namespaces/default/milvus_search_queue_depth?labelSelector=milvus%20in%20(demo"),
    )
    .await;
    assert_eq!(code, 400);
    let s = status(&body);
    assert_eq!(s.reason.as_deref(), Some("BadRequest"));
    assert_eq!(s.code, Some(400));
    assert!(s.message.unwrap().contains("label selector"), "{body}");

    // 404: unknown metric, and unknown path.
    let (code, _, body) = get(&c, &format!("{url}{BASE}/namespaces/default/cpu_usage")).await;
    assert_eq!(code, 404);
    assert_eq!(status(&body).reason.as_deref(), Some("NotFound"));
    let (code, _, body) = get(&c, &format!("{url}/api/v1/pods")).await;
    assert_eq!(code, 404);
    assert_eq!(status(&body).reason.as_deref(), Some("NotFound"));

    // 503: unavailable (source down) and stale, with the reason; never a zero.
    let (code, _, body) = get(
        &c,
        &format!("{url}{BASE}/namespaces/default/milvus_search_rate"),
    )
    .await;
    assert_eq!(code, 503);
    let s = status(&body);
    assert_eq!(s.reason.as_deref(), Some("ServiceUnavailable"));
    assert!(
        s.message
            .unwrap()
            .contains("source unreachable: http://127.0.0.1:1/metrics: connection refused"),
        "{body}"
    );
    let (code, _, body) = get(
        &c,
        &format!("{url}{BASE}/namespaces/stale-ns/milvus_search_queue_depth"),
    )
    .await;
    assert_eq!(code, 503);
    assert!(status(&body).message.unwrap().contains("stale"), "{body}");

    // 405 for writes.
    let r = c
        .post(format!("{url}{BASE}/namespaces/default/milvus_search_rate"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(
        status(&r.text().await.unwrap()).reason.as_deref(),
        Some("MethodNotAllowed")
    );

    // OpenAPI and health.
    let (code, _, body) = get(&c, &format!("{url}/openapi/v2")).await;
    assert_eq!(code, 200);
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["swagger"], "2.0");
    for path in ["/healthz", "/livez", "/readyz"] {
        let (code, _, body) = get(&c, &format!("{url}{path}")).await;
        assert_eq!(code, 200, "{path}: {body}");
    }

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn front_proxy_authentication() {
    let p = pki("auth");
    let (url, stop, task) = start(secured(&p, vec!["front-proxy-client".into()])).await;
    let path = format!("{url}{BASE}/namespaces/default/milvus_search_queue_depth");

    // No client certificate: the handshake succeeds, the API answers 401 Status; health is open.
    let anonymous = client(&p, None);
    let (code, _, body) = get(&anonymous, &path).await;
    assert_eq!(code, 401, "{body}");
    let s = status(&body);
    assert_eq!(s.reason.as_deref(), Some("Unauthorized"));
    assert!(s.message.unwrap().contains("client certificate"), "{body}");
    assert_eq!(get(&anonymous, &format!("{url}/healthz")).await.0, 200);

    // Signed by the CA but CN not allowed: 401 naming the CN.
    let (code, _, body) = get(&client(&p, Some(&p.other_cn_identity_pem)), &path).await;
    assert_eq!(code, 401);
    assert!(body.contains("someone-else"), "{body}");

    // A certificate from another CA: the TLS handshake is refused.
    let wrong = client(&p, Some(&p.wrong_client_identity_pem));
    assert!(
        wrong.get(&path).send().await.is_err(),
        "wrong-CA certificate was accepted"
    );

    // The right certificate.
    let (code, _, body) = get(&client(&p, Some(&p.client_identity_pem)), &path).await;
    assert_eq!(code, 200, "{body}");
    stop.cancel();
    task.await.unwrap();

    // allowed_names empty: any certificate from the CA.
    let (url, stop, task) = start(secured(&p, vec![])).await;
    let path = format!("{url}{BASE}/namespaces/default/milvus_search_queue_depth");
    assert_eq!(
        get(&client(&p, Some(&p.other_cn_identity_pem)), &path)
            .await
            .0,
        200
    );
    assert_eq!(get(&client(&p, None), &path).await.0, 401);
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn self_signed_without_tls_and_open_without_client_auth() {
    let cfg = ExternalMetricsConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    };
    let (url, stop, task) = start(cfg).await;
    // The generated certificate is not trusted by default...
    let strict = reqwest::Client::builder()
        .use_rustls_tls()
        .resolve("localhost", "127.0.0.1:0".parse().unwrap())
        .build()
        .unwrap();
    assert!(strict.get(format!("{url}/healthz")).send().await.is_err());
    // ...but serves, names localhost, and asks for no client certificate.
    let lax = reqwest::Client::builder()
        .use_rustls_tls()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let r = lax
        .get(format!(
            "{url}{BASE}/namespaces/default/milvus_search_queue_depth"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn serving_certificate_is_reloaded_when_its_files_change() {
    let p = pki("reload");
    let (url, stop, task) = start(secured(&p, vec![])).await;
    let path = format!("{url}/healthz");
    // A renewal signed by a new serving CA: clients trusting only the new CA fail until reload.
    let (np, nk, new_ca_pem) = ca("renewed serving CA");
    let (cert, key) = leaf(
        "milvus-scaler",
        vec!["localhost".into(), "127.0.0.1".into()],
        &Issuer::new(np, nk),
        false,
    );
    let trusting_new = || {
        reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(reqwest::Certificate::from_pem(new_ca_pem.as_bytes()).unwrap())
            .resolve("localhost", "127.0.0.1:0".parse().unwrap())
            .build()
            .unwrap()
    };
    assert!(trusting_new().get(&path).send().await.is_err());
    assert_eq!(get(&client(&p, None), &path).await.0, 200);
    // A half-written pair (new cert, old key) is refused and the old certificate keeps serving.
    std::fs::write(p.dir.join("tls.crt"), &cert).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(get(&client(&p, None), &path).await.0, 200);
    std::fs::write(p.dir.join("tls.key"), &key).unwrap();
    let mut last = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        match trusting_new().get(&path).send().await {
            Ok(r) => {
                assert_eq!(r.status().as_u16(), 200);
                last = None;
                break;
            }
            Err(e) => last = Some(format!("{e:?}")),
        }
    }
    assert_eq!(last, None, "the renewed certificate was never served");
    assert!(
        client(&p, None).get(&path).send().await.is_err(),
        "old CA still accepted"
    );
    stop.cancel();
    task.await.unwrap();
}
