//! The cache's request path (`CacheS3::get_object`/`head_object`: lookup, single-flight fetch,
//! verification, conditional requests, revalidation, the fetch in parts) without sockets. The
//! upstream here is a **fake**: `FakeClient` keeps objects in memory, and `FailureClient` injects
//! faults into chosen calls. What upstream S3 itself does is covered by the e2e tests (moto) and
//! by `retry_budget.rs` (the aws-sdk client against a loopback server).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt as _;
use s3s::dto::{
    ETag, ETagCondition, GetObjectInput, HeadObjectInput, Range, StreamingBlob, Timestamp,
};
use s3s::{S3, S3ErrorCode};
use segment_cache::object_client::{Call, FailureClient, FakeClient, Fault};
use segment_cache::s3::{CacheS3, MissParts};
use segment_cache::store::Store;
use segment_cache::upstream::{FetchError, Upstream};

mod common;
use common::{BUCKET, request};

/// Last-Modified of the fake's objects: 2025-01-01T00:00:00Z.
const T0: i64 = 1_735_689_600;

type Faulty = FailureClient<FakeClient>;

struct Rig {
    cache: CacheS3,
    up: Arc<Faulty>,
    store: Arc<Store>,
    _dir: tempfile::TempDir,
}

fn rig(
    rule: impl FnMut(&Call) -> Option<Fault> + Send + 'static,
    part_size: u64,
    revalidate_after: Duration,
) -> Rig {
    let up = Arc::new(FailureClient::new(FakeClient::new(), rule));
    let (store, dir) = common::temp_store();
    let upstream = Upstream::with_client(up.clone(), BUCKET.into());
    let cache = CacheS3::new(
        store.clone(),
        upstream,
        1 << 30,
        revalidate_after,
        MissParts::new(part_size, 4),
    );
    Rig {
        cache,
        up,
        store,
        _dir: dir,
    }
}

fn no_faults(_: &Call) -> Option<Fault> {
    None
}

fn get(key: &str) -> GetObjectInput {
    GetObjectInput {
        bucket: BUCKET.into(),
        key: key.into(),
        ..Default::default()
    }
}

fn head(key: &str) -> HeadObjectInput {
    HeadObjectInput {
        bucket: BUCKET.into(),
        key: key.into(),
        ..Default::default()
    }
}

async fn body(b: Option<StreamingBlob>) -> Vec<u8> {
    let chunks: Vec<Bytes> = b.unwrap().try_collect().await.unwrap();
    chunks.concat()
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

fn gets(up: &Faulty) -> (usize, usize) {
    let calls = up.inner().calls();
    let whole = calls
        .iter()
        .filter(|c| matches!(c, Call::Get(_, None)))
        .count();
    let ranged = calls
        .iter()
        .filter(|c| matches!(c, Call::Get(_, Some(_))))
        .count();
    (whole, ranged)
}

fn etag_of(e: &str) -> ETagCondition {
    ETagCondition::ETag(ETag::Strong(e.trim_matches('"').to_string()))
}

fn at(secs: i64) -> Timestamp {
    Timestamp::from(time::OffsetDateTime::from_unix_timestamp(secs).unwrap())
}

#[tokio::test]
async fn get_object_misses_once_then_hits_with_the_same_bytes() {
    let r = rig(no_faults, 0, Duration::ZERO);
    let bytes = data(300_000);
    let etag = r.up.inner().put("files/a", bytes.clone(), T0);
    for _ in 0..2 {
        let out = r
            .cache
            .get_object(request(get("files/a"), "files/a"))
            .await
            .unwrap()
            .output;
        assert_eq!(out.content_length, Some(300_000));
        assert_eq!(out.e_tag, Some(ETag::Strong(etag.trim_matches('"').into())));
        assert_eq!(out.last_modified, Some(at(T0)));
        assert_eq!(body(out.body).await, bytes);
    }
    assert_eq!(
        gets(&r.up),
        (1, 0),
        "one GET upstream, then served from the cache"
    );
    let e = r.store.peek("files/a").unwrap();
    assert_eq!((e.size, e.verified_by.as_str()), (300_000, "crc64nvme"));
}

#[tokio::test]
async fn a_missing_key_is_upstreams_404_and_not_retried() {
    let r = rig(no_faults, 0, Duration::ZERO);
    let err = r
        .cache
        .get_object(request(get("nope"), "nope"))
        .await
        .unwrap_err();
    assert_eq!(*err.code(), S3ErrorCode::NoSuchKey);
    assert_eq!(err.status_code(), Some(http::StatusCode::NOT_FOUND));
    assert_eq!(gets(&r.up), (1, 0));
}

#[tokio::test]
async fn ranges_are_served_from_the_cached_copy() {
    let r = rig(no_faults, 0, Duration::ZERO);
    let bytes = data(10_000);
    r.up.inner().put("k", bytes.clone(), T0);
    let mut i = get("k");
    i.range = Some(Range::Int {
        first: 100,
        last: Some(199),
    });
    let out = r.cache.get_object(request(i, "k")).await.unwrap().output;
    assert_eq!(out.content_range.as_deref(), Some("bytes 100-199/10000"));
    assert_eq!(body(out.body).await, &bytes[100..200]);
    let mut i = get("k");
    i.range = Some(Range::Int {
        first: 20_000,
        last: None,
    });
    let err = r.cache.get_object(request(i, "k")).await.unwrap_err();
    assert_eq!(
        err.status_code(),
        Some(http::StatusCode::RANGE_NOT_SATISFIABLE)
    );
    assert_eq!(gets(&r.up), (1, 0));
}

#[tokio::test]
async fn a_suffix_range_of_an_empty_object_is_the_whole_empty_object() {
    // RFC 9110 14.1.2: on a zero-length representation a suffix range with a non-zero length is
    // the one satisfiable form; there are no bytes to name in a Content-Range, so the answer is
    // the whole (empty) object. s3s's check gives the empty range 0..0 for it.
    let r = rig(no_faults, 0, Duration::ZERO);
    r.up.inner().put("empty", Vec::new(), T0);
    let mut i = get("empty");
    i.range = Some(Range::Suffix { length: 5 });
    let out = r
        .cache
        .get_object(request(i, "empty"))
        .await
        .unwrap()
        .output;
    assert_eq!(out.content_range, None);
    assert_eq!(out.content_length, Some(0));
    assert!(body(out.body).await.is_empty());
    // Any other range of it is not satisfiable.
    let mut i = get("empty");
    i.range = Some(Range::Int {
        first: 0,
        last: None,
    });
    let err = r.cache.get_object(request(i, "empty")).await.unwrap_err();
    assert_eq!(
        err.status_code(),
        Some(http::StatusCode::RANGE_NOT_SATISFIABLE)
    );
}

#[tokio::test]
async fn head_object_answers_from_the_cache() {
    let r = rig(no_faults, 0, Duration::ZERO);
    let etag = r.up.inner().put("k", data(1234), T0);
    r.cache.get_object(request(get("k"), "k")).await.unwrap();
    let out = r
        .cache
        .head_object(request(head("k"), "k"))
        .await
        .unwrap()
        .output;
    assert_eq!(out.content_length, Some(1234));
    assert_eq!(out.e_tag, Some(ETag::Strong(etag.trim_matches('"').into())));
    assert_eq!(out.last_modified, Some(at(T0)));
    assert!(
        !r.up
            .inner()
            .calls()
            .iter()
            .any(|c| matches!(c, Call::Head(_)))
    );
    // Not cached: HEAD goes upstream (this fake rig has nothing to forward through).
    assert!(
        r.cache
            .head_object(request(head("other"), "other"))
            .await
            .is_err()
    );
}

/// If-Match / If-None-Match / If-Modified-Since / If-Unmodified-Since on a cached object, in
/// RFC 9110's order, on GET and HEAD alike.
#[tokio::test]
async fn conditional_requests() {
    let r = rig(no_faults, 0, Duration::ZERO);
    let etag = r.up.inner().put("k", data(100), T0);
    let other = etag_of("\"0000\"");
    type Case = (
        Option<ETagCondition>,
        Option<ETagCondition>,
        Option<Timestamp>,
        Option<Timestamp>,
        Option<S3ErrorCode>,
    );
    let cases: Vec<Case> = vec![
        (None, None, None, None, None),
        (Some(etag_of(&etag)), None, None, None, None),
        (Some(ETagCondition::Any), None, None, None, None),
        (
            Some(other.clone()),
            None,
            None,
            None,
            Some(S3ErrorCode::PreconditionFailed),
        ),
        (
            None,
            Some(etag_of(&etag)),
            None,
            None,
            Some(S3ErrorCode::NotModified),
        ),
        (
            None,
            Some(ETagCondition::Any),
            None,
            None,
            Some(S3ErrorCode::NotModified),
        ),
        (None, Some(other.clone()), None, None, None),
        (
            None,
            None,
            Some(at(T0)),
            None,
            Some(S3ErrorCode::NotModified),
        ),
        (None, None, Some(at(T0 - 1)), None, None),
        (
            None,
            None,
            None,
            Some(at(T0 - 1)),
            Some(S3ErrorCode::PreconditionFailed),
        ),
        (None, None, None, Some(at(T0)), None),
        // If-None-Match present: If-Modified-Since is ignored.
        (None, Some(other.clone()), Some(at(T0)), None, None),
        // If-Match present: If-Unmodified-Since is ignored.
        (Some(etag_of(&etag)), None, None, Some(at(T0 - 1)), None),
        // If-Match is checked before If-None-Match.
        (
            Some(other.clone()),
            Some(etag_of(&etag)),
            None,
            None,
            Some(S3ErrorCode::PreconditionFailed),
        ),
    ];
    r.cache.get_object(request(get("k"), "k")).await.unwrap();
    for (i, (im, inm, ims, ius, want)) in cases.into_iter().enumerate() {
        let mut g = get("k");
        (g.if_match, g.if_none_match) = (im.clone(), inm.clone());
        (g.if_modified_since, g.if_unmodified_since) = (ims.clone(), ius.clone());
        let got = r
            .cache
            .get_object(request(g, "k"))
            .await
            .err()
            .map(|e| e.code().clone());
        assert_eq!(got, want, "GET case {i}");
        let mut h = head("k");
        (h.if_match, h.if_none_match) = (im, inm);
        (h.if_modified_since, h.if_unmodified_since) = (ims, ius);
        let got = r
            .cache
            .head_object(request(h, "k"))
            .await
            .err()
            .map(|e| e.code().clone());
        assert_eq!(got, want, "HEAD case {i}");
    }
    assert_eq!(gets(&r.up), (1, 0), "all from the one cached copy");
}

/// With `revalidate_after` (2 s: the store keeps whole seconds, so two reads in a row are at
/// most 1 s apart by its clock), a cached object older than that is checked with a HEAD: the same
/// ETag is served from the cache, a new one is fetched again; a failing HEAD serves the cached
/// copy.
#[tokio::test]
async fn revalidation() {
    let r = rig(no_faults, 0, Duration::from_secs(2));
    let v1 = data(5000);
    r.up.inner().put("k", v1.clone(), T0);
    let read = || async {
        body(
            r.cache
                .get_object(request(get("k"), "k"))
                .await
                .unwrap()
                .output
                .body,
        )
        .await
    };
    assert_eq!(read().await, v1);
    assert_eq!(read().await, v1, "checked less than 2 s ago: no HEAD");
    let heads = |r: &Rig| {
        r.up.inner()
            .calls()
            .iter()
            .filter(|c| matches!(c, Call::Head(_)))
            .count()
    };
    assert_eq!(heads(&r), 0);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(read().await, v1);
    assert_eq!(
        (heads(&r), gets(&r.up)),
        (1, (1, 0)),
        "same ETag: served from the cache"
    );
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let v2 = data(6000);
    r.up.inner().put("k", v2.clone(), T0 + 10);
    assert_eq!(read().await, v2, "a new ETag upstream is fetched again");
    assert_eq!((heads(&r), gets(&r.up)), (2, (2, 0)));
}

#[tokio::test]
async fn a_failing_revalidation_serves_the_cached_copy() {
    let fail_heads = |c: &Call| {
        matches!(c, Call::Head(_)).then(|| Fault::Fail(FetchError::Unavailable("injected".into())))
    };
    let r = rig(fail_heads, 0, Duration::from_secs(1));
    let v1 = data(5000);
    r.up.inner().put("k", v1.clone(), T0);
    r.cache.get_object(request(get("k"), "k")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let out = r
        .cache
        .get_object(request(get("k"), "k"))
        .await
        .unwrap()
        .output;
    assert_eq!(body(out.body).await, v1);
    assert_eq!(r.up.injected(), 3, "the HEAD had its budget");
    assert_eq!(gets(&r.up), (1, 0));
}

/// A miss of an object of at least two parts: the first part from the whole GET's body, the
/// others as ranged GETs with If-Match; verified against the combined CRC.
#[tokio::test]
async fn the_fetch_in_parts() {
    let r = rig(no_faults, 1000, Duration::ZERO);
    let bytes = data(4500);
    let etag = r.up.inner().put("big", bytes.clone(), T0);
    let out = r
        .cache
        .get_object(request(get("big"), "big"))
        .await
        .unwrap()
        .output;
    assert_eq!(body(out.body).await, bytes);
    let ranges: Vec<_> =
        r.up.inner()
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Get(_, Some(rg)) => Some(rg),
                _ => None,
            })
            .collect();
    let mut sorted = ranges.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        [(1000, 1999), (2000, 2999), (3000, 3999), (4000, 4499)]
    );
    assert_eq!(gets(&r.up).0, 1);
    assert_eq!(r.store.peek("big").unwrap().etag, etag);
}

/// A part cut mid-way is fetched again (its own budget); the read succeeds.
#[tokio::test]
async fn a_cut_part_is_retried() {
    let mut cut_once = true;
    let rule = move |c: &Call| match c {
        Call::Get(_, Some((2000, _))) if std::mem::take(&mut cut_once) => Some(Fault::CutBody(100)),
        _ => None,
    };
    let r = rig(rule, 1000, Duration::ZERO);
    let bytes = data(4500);
    r.up.inner().put("big", bytes.clone(), T0);
    let out = r
        .cache
        .get_object(request(get("big"), "big"))
        .await
        .unwrap()
        .output;
    assert_eq!(body(out.body).await, bytes);
    assert_eq!(r.up.injected(), 1);
    assert_eq!(gets(&r.up), (1, 4 + 1));
}

/// A byte flipped in one part fails the combined CRC: the fetch is retried as a whole (its
/// budget), never cached nor served, and the client gets a 503 saying why.
#[tokio::test]
async fn a_corrupted_part_is_never_served() {
    let rule = |c: &Call| match c {
        Call::Get(_, Some((3000, _))) => Some(Fault::FlipByte(17)),
        _ => None,
    };
    let r = rig(rule, 1000, Duration::ZERO);
    r.up.inner().put("big", data(4500), T0);
    let err = r
        .cache
        .get_object(request(get("big"), "big"))
        .await
        .unwrap_err();
    assert_eq!(
        err.status_code(),
        Some(http::StatusCode::SERVICE_UNAVAILABLE)
    );
    assert!(
        err.message().unwrap_or("").contains("does not match"),
        "{err:?}"
    );
    assert_eq!(
        r.up.injected(),
        3,
        "each of the 3 fetches saw the flipped byte"
    );
    assert_eq!(gets(&r.up), (3, 3 * 4));
    assert!(r.store.peek("big").is_none());
    assert!(
        std::fs::read_dir(r.store.dir().join("tmp"))
            .unwrap()
            .next()
            .is_none()
    );
}

/// A part's If-Match fails (the object changed after the first GET: a 412, which the SDK client
/// maps to `FetchError::Changed`): the fetch starts over, once, and the read succeeds.
#[tokio::test]
async fn an_object_changed_mid_fetch_is_fetched_again() {
    let mut first = true;
    let rule = move |c: &Call| match c {
        Call::Get(_, Some(_)) if std::mem::take(&mut first) => {
            Some(Fault::Fail(FetchError::Changed))
        }
        _ => None,
    };
    let r = rig(rule, 1000, Duration::ZERO);
    r.up.inner().put("big", data(4500), T0);
    let out = r
        .cache
        .get_object(request(get("big"), "big"))
        .await
        .unwrap()
        .output;
    assert_eq!(body(out.body).await, data(4500));
    assert_eq!(r.up.injected(), 1);
    assert_eq!(gets(&r.up).0, 2, "the fetch started over once");
}

/// A whole GET that keeps failing (5xx) costs the budget and gives upstream's error.
#[tokio::test]
async fn a_persistent_upstream_error_costs_one_budget() {
    let rule = |c: &Call| {
        matches!(c, Call::Get(..)).then(|| {
            Fault::Fail(FetchError::Upstream {
                status: 503,
                code: "SlowDown".into(),
                message: "injected".into(),
            })
        })
    };
    let r = rig(rule, 0, Duration::ZERO);
    r.up.inner().put("k", data(10), T0);
    let err = r
        .cache
        .get_object(request(get("k"), "k"))
        .await
        .unwrap_err();
    assert_eq!(*err.code(), S3ErrorCode::SlowDown);
    assert_eq!(r.up.injected(), 3);
}
