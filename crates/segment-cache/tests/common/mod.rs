//! What the request-path test files share: a store in a temp dir and an S3 request as s3s hands
//! it to the cache (no HTTP, no signature).
#![allow(dead_code)] // each test binary uses its own part of it

use std::sync::Arc;

use s3s::S3Request;
use segment_cache::store::{Store, StoreOptions};

/// The bucket every test's cache serves.
pub const BUCKET: &str = "bucket";

/// A 1 GiB store without access log in a fresh temp dir (kept alive by the returned guard).
pub fn temp_store() -> (Arc<Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        &StoreOptions {
            capacity: 1 << 30,
            access_log: false,
            access_log_max: 1 << 20,
        },
    )
    .unwrap();
    (store, dir)
}

/// `input` for `key` of [`BUCKET`] as an unsigned GET request.
pub fn request<T>(input: T, key: &str) -> S3Request<T> {
    S3Request {
        input,
        method: http::Method::GET,
        uri: format!("/{BUCKET}/{key}").parse().unwrap(),
        headers: http::HeaderMap::new(),
        extensions: http::Extensions::new(),
        credentials: None,
        region: None,
        service: None,
        trailing_headers: None,
    }
}
