//! The retry budget of a read miss, counted where it costs: at a real HTTP upstream on loopback
//! that fails every request (no fake client: the aws-sdk-s3 client, its retry layer and the cache's
//! own fetch path all run as in production).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use s3s::S3;
use s3s::dto::GetObjectInput;
use segment_cache::config::UpstreamConfig;
use segment_cache::retry::RetryPolicy;
use segment_cache::s3::{CacheS3, MissParts};
use segment_cache::upstream::{Upstream, build_client};

mod common;
use common::{BUCKET, request};
/// `upstream.max_attempts` here: the default.
const ATTEMPTS: usize = segment_cache::retry::DEFAULT_ATTEMPTS as usize;

/// An upstream that fails every GET with a 500, except (with `whole`) a whole-object GET, which
/// it answers with `whole`; counts what it was asked.
#[derive(Default)]
struct Failing {
    whole: Option<Vec<u8>>,
    gets: AtomicUsize,
    ranged: AtomicUsize,
}

impl Failing {
    fn answer(&self, req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let ranged = req.headers().contains_key(http::header::RANGE);
        if ranged {
            self.ranged.fetch_add(1, Ordering::SeqCst);
        } else {
            self.gets.fetch_add(1, Ordering::SeqCst);
        }
        match &self.whole {
            Some(body) if !ranged => Response::builder()
                .status(200)
                .header("content-length", body.len())
                .header("etag", "\"0123456789abcdef0123456789abcdef\"")
                .header("last-modified", "Wed, 01 Jan 2025 00:00:00 GMT")
                .body(Full::new(Bytes::from(body.clone())))
                .unwrap(),
            _ => Response::builder()
                .status(500)
                .header("content-type", "application/xml")
                .body(Full::new(Bytes::from_static(
                    b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InternalError</Code>\
                      <Message>injected</Message></Error>",
                )))
                .unwrap(),
        }
    }
}

async fn serve(state: Arc<Failing>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let st = state.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let r = st.answer(&req);
                    async move { Ok::<_, std::convert::Infallible>(r) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                    .await;
            });
        }
    });
    addr
}

async fn cache_over(addr: SocketAddr, part_size: u64) -> (CacheS3, tempfile::TempDir) {
    let cfg = UpstreamConfig {
        endpoint_url: Some(format!("http://{addr}")),
        region: "us-east-1".into(),
        bucket: BUCKET.into(),
        force_path_style: Some(true),
        access_key: Some("AKIDTEST".into()),
        secret_key: Some("test-secret".to_string().into()),
        timeout: Duration::from_secs(5),
        max_attempts: u32::try_from(ATTEMPTS).unwrap(),
    };
    let (store, dir) = common::temp_store();
    let up = Upstream::new(build_client(&cfg).await, BUCKET.into())
        .with_retry(RetryPolicy::new(cfg.max_attempts));
    let cache = CacheS3::new(
        store,
        up,
        1 << 30,
        Duration::ZERO,
        MissParts::new(part_size, 4),
    );
    (cache, dir)
}

fn get(key: &str) -> s3s::S3Request<GetObjectInput> {
    request(
        GetObjectInput {
            bucket: BUCKET.into(),
            key: key.into(),
            ..Default::default()
        },
        key,
    )
}

/// A whole-object GET that always fails costs the budget, once: not SDK attempts x the cache's
/// fetch loop (which was 3 x 3 = 9).
#[tokio::test]
async fn a_failing_whole_get_costs_one_budget() {
    let up = Arc::new(Failing::default());
    let (cache, _dir) = cache_over(serve(up.clone()).await, 0).await;
    let err = cache.get_object(get("k")).await.unwrap_err();
    assert_eq!(
        err.status_code(),
        Some(http::StatusCode::INTERNAL_SERVER_ERROR),
        "{err:?}"
    );
    assert_eq!(
        up.gets.load(Ordering::SeqCst),
        ATTEMPTS,
        "whole GETs upstream"
    );
    assert_eq!(up.ranged.load(Ordering::SeqCst), 0);
}

/// A ranged fetch whose second part always fails: one whole GET (its body is the first part),
/// then the budget for the failing part, and the read fails (was 3 fetches x (1 GET + 3 part
/// tries x 3 SDK attempts) = 30).
#[tokio::test]
async fn a_failing_part_costs_one_budget() {
    let up = Arc::new(Failing {
        whole: Some(vec![7_u8; 2048]),
        ..Failing::default()
    });
    let (cache, dir) = cache_over(serve(up.clone()).await, 1024).await;
    let err = cache.get_object(get("big")).await.unwrap_err();
    assert_eq!(
        err.status_code(),
        Some(http::StatusCode::INTERNAL_SERVER_ERROR),
        "{err:?}"
    );
    let (gets, ranged) = (
        up.gets.load(Ordering::SeqCst),
        up.ranged.load(Ordering::SeqCst),
    );
    assert_eq!(
        gets + ranged,
        1 + ATTEMPTS,
        "{gets} whole GETs and {ranged} ranged GETs"
    );
    assert_eq!(
        gets, 1,
        "a part that ran out of its budget does not restart the fetch"
    );
    assert!(
        std::fs::read_dir(dir.path().join("tmp"))
            .unwrap()
            .next()
            .is_none()
    );
}
