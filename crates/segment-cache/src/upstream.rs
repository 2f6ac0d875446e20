//! The upstream S3 bucket: an aws-sdk-s3 client with the sidecar's own credentials, and the two
//! ways an object is brought into the store (one whole GET, or parallel ranged GETs), both
//! verified before they are committed: against the full-object CRC upstream keeps, else the
//! ETag (see `verify`).
//!
//! Upstream is an [`ObjectClient`] (the aws-sdk-s3 one in production, a fake in tests), each
//! call one attempt: retries are [`RetryPolicy`]'s.
//!
//! Bodies go to disk through [`ChunkFile`]: the SDK hands them over in chunks of a few KiB, and
//! one blocking-pool hop per chunk would cost more CPU than the download itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    retry::RetryConfig, timeout::TimeoutConfig,
};
use futures::StreamExt as _;
use thiserror::Error;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::chunk_file::ChunkFile;
use crate::config::UpstreamConfig;
use crate::index::{Entry, NoRoom};
use crate::object_client::{Body, GetAnswer, GetRequest, ObjectClient, SdkClient};
use crate::retry::RetryPolicy;
use crate::store::{Store, StoreError};
use crate::verify::{FullObjectCrc, Mismatch, Verifier};

/// Why an object could not be brought into the cache.
#[derive(Debug, Error)]
pub enum FetchError {
    /// Upstream answered with an S3 error (passed on to the client as is).
    #[error("upstream S3 error {status} {code}: {message}")]
    Upstream {
        /// HTTP status.
        status: u16,
        /// S3 error code.
        code: String,
        /// Message.
        message: String,
    },
    /// Upstream could not be reached, timed out, or cut the body.
    #[error("upstream S3 unavailable: {0}")]
    Unavailable(String),
    /// The object changed while it was being downloaded in parts.
    #[error("the object changed upstream during the download")]
    Changed,
    /// The object is larger than the cache keeps.
    #[error("object of {0} bytes is larger than cache.max_object_size")]
    TooBig(u64),
    /// No room even after eviction.
    #[error(transparent)]
    NoRoom(#[from] NoRoom),
    /// Local disk error (e.g. disk full), with the file it was about.
    #[error("cache disk: {}: {source}", path.display())]
    Disk {
        /// The file.
        path: PathBuf,
        /// The error, its kind intact (ENOSPC is `StorageFull`, EACCES `PermissionDenied`).
        source: std::io::Error,
    },
    /// The bytes do not match the ETag.
    #[error("verification failed: {0}")]
    Verify(#[from] Mismatch),
    /// One part of a fetch in parts failed with its retry budget spent (the fetch is not
    /// retried around it: see [`RetryPolicy`]).
    #[error("part at byte {at}: {source}")]
    Part {
        /// First byte of the part.
        at: u64,
        /// The part's last error.
        source: Box<FetchError>,
    },
}

impl From<StoreError> for FetchError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Io { path, source } => FetchError::Disk {
                path: path.into(),
                source,
            },
        }
    }
}

impl FetchError {
    /// A disk error about `path`.
    fn disk(path: &Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| FetchError::Disk {
            path: path.to_path_buf(),
            source,
        }
    }

    /// True where the read is passed through upstream instead of failing: the object cannot be
    /// cached here (too big, no room, local disk, no checksum to verify it by), which says
    /// nothing of whether upstream can serve it.
    #[must_use]
    pub fn passes_through(&self) -> bool {
        matches!(
            self,
            FetchError::TooBig(_)
                | FetchError::NoRoom(_)
                | FetchError::Disk { .. }
                | FetchError::Verify(Mismatch::Unverifiable(_))
        )
    }

    /// True for errors worth another attempt of the same call site (network, cut body, object
    /// changed mid-way, bytes that do not match their checksum: corrupted on the way, never to be
    /// served). A [`FetchError::Part`] has had its attempts.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, FetchError::Unavailable(_) | FetchError::Changed)
            || matches!(self, FetchError::Verify(m) if !matches!(m, Mismatch::Unverifiable(_)))
            || matches!(self, FetchError::Upstream { status, .. } if *status >= 500)
    }
}

/// Size and ETag of an upstream object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// ETag with quotes.
    pub etag: String,
}

/// The upstream bucket.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// The SDK client with its retry, for requests forwarded as they are (none with a fake).
    forward: Option<Client>,
    /// The cache's own requests, one attempt each, retried by `retry` alone.
    client: Arc<dyn ObjectClient>,
    bucket: String,
    retry: RetryPolicy,
}

/// Builds the aws-sdk-s3 client for `cfg`: static keys if configured, else the standard chain.
pub async fn build_client(cfg: &UpstreamConfig) -> Client {
    let mut loader =
        aws_config::defaults(BehaviorVersion::latest()).region(Region::new(cfg.region.clone()));
    if let (Some(a), Some(s)) = (&cfg.access_key, &cfg.secret_key) {
        loader = loader.credentials_provider(Credentials::new(
            a.clone(),
            s.expose().to_string(),
            None,
            None,
            "segment-cache-config",
        ));
    }
    let shared = loader.load().await;
    let mut b = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(cfg.force_path_style.unwrap_or(cfg.endpoint_url.is_some()))
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .retry_config(RetryConfig::standard().with_max_attempts(cfg.max_attempts))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(cfg.timeout)
                .read_timeout(cfg.timeout)
                .build(),
        );
    if let Some(url) = &cfg.endpoint_url {
        b = b.endpoint_url(url);
    }
    Client::from_conf(b.build())
}

fn record(op: &'static str, started: Instant, ok: bool) {
    metrics::histogram!(crate::metric_names::UPSTREAM_REQUEST_DURATION, "op" => op)
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(crate::metric_names::UPSTREAM_REQUESTS, "op" => op,
        "outcome" => if ok { "ok" } else { "error" })
    .increment(1);
}

/// Counts an object verified by `how` (`crc64nvme`, `md5`, ...) and passes `how` on.
fn count_verified(how: &'static str) -> &'static str {
    metrics::counter!(crate::metric_names::VERIFIED_OBJECTS, "by" => how).increment(1);
    how
}

impl Upstream {
    /// The upstream bucket through `client`. The cache's own requests go through a copy of
    /// `client` without the SDK's retry, retried by [`RetryPolicy::default`] (see
    /// [`Upstream::with_retry`]); `client` itself, with its retry, forwards the rest.
    #[must_use]
    pub fn new(client: Client, bucket: String) -> Self {
        let once = Client::from_conf(
            client
                .config()
                .to_builder()
                .retry_config(RetryConfig::disabled())
                .build(),
        );
        Self {
            forward: Some(client),
            client: Arc::new(SdkClient::new(once)),
            bucket,
            retry: RetryPolicy::default(),
        }
    }

    /// The bucket through `client` (a fake in tests), with nothing to forward other requests
    /// through.
    #[must_use]
    pub fn with_client(client: Arc<dyn ObjectClient>, bucket: String) -> Self {
        Self {
            forward: None,
            client,
            bucket,
            retry: RetryPolicy::default(),
        }
    }

    /// The same bucket with `retry` as the budget of each of its call sites.
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The SDK client with its own retry, for requests forwarded as they are; `None` over a
    /// fake.
    #[must_use]
    pub fn forward_client(&self) -> Option<&Client> {
        self.forward.as_ref()
    }

    /// The bucket.
    #[must_use]
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// `HeadObject` (one call site of the retry budget).
    pub async fn head(&self, key: &str) -> Result<ObjectInfo, FetchError> {
        self.retry
            .run(
                "head",
                key,
                || self.head_once(key),
                FetchError::is_transient,
            )
            .await
    }

    async fn head_once(&self, key: &str) -> Result<ObjectInfo, FetchError> {
        let t = Instant::now();
        let r = self.client.head(&self.bucket, key).await;
        record("head", t, r.is_ok());
        r
    }

    /// Every object under `prefix` (`ListObjectsV2`, all pages).
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, FetchError> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .retry
                .run(
                    "list",
                    prefix,
                    || async {
                        let t = Instant::now();
                        let r = self
                            .client
                            .list_page(&self.bucket, prefix, token.clone())
                            .await;
                        record("list", t, r.is_ok());
                        r
                    },
                    FetchError::is_transient,
                )
                .await?;
            out.extend(page.objects);
            match page.next {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        Ok(out)
    }

    /// Fetches `key`, verifies it and commits it to `store`. One GET asks for the whole object
    /// (and its stored CRC). With `ranges`, an object of at least two parts is not read as one
    /// stream: the first part comes from that GET's body, which is then dropped, and the other
    /// parts from parallel ranged GETs conditional on the ETag the first answer gave (a change
    /// mid-way is caught). One stream from S3 gives a fraction of what the instance's network can
    /// take; a Milvus load waits for whole index files.
    ///
    /// The whole-object GET is one call site of the retry budget, each part another.
    pub async fn fetch(
        &self,
        store: &Arc<Store>,
        key: &str,
        max_size: u64,
        ranges: Option<&Ranges<'_>>,
    ) -> Result<Entry, FetchError> {
        self.retry
            .run(
                "get",
                key,
                || self.fetch_once(store, key, max_size, ranges),
                FetchError::is_transient,
            )
            .await
    }

    async fn fetch_once(
        &self,
        store: &Arc<Store>,
        key: &str,
        max_size: u64,
        ranges: Option<&Ranges<'_>>,
    ) -> Result<Entry, FetchError> {
        // The first GET of a ranged fetch is one of its requests in flight.
        let permit = match ranges {
            Some(r) => Some(
                r.permits
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|e| FetchError::Unavailable(e.to_string()))?,
            ),
            None => None,
        };
        let t = Instant::now();
        let r = self
            .client
            .get(
                &self.bucket,
                GetRequest {
                    key,
                    range: None,
                    if_match: None,
                },
            )
            .await;
        if r.is_err() {
            record("get", t, false);
        }
        let out = r?;
        let size = out.content_length;
        if size > max_size {
            record("get", t, true);
            return Err(FetchError::TooBig(size));
        }
        let info = ObjectInfo {
            key: key.to_string(),
            size,
            etag: out.etag.clone(),
        };
        let crc = out.crc;
        let meta = ObjectMeta::of(&out);
        let reservation = store.reserve(size)?;
        let tmp = store.temp_path();
        let res = match ranges {
            Some(r) if size >= r.part_size.saturating_mul(2) => {
                self.ranged_into(&tmp, &info, crc, r, Some((out.body, permit)))
                    .await
            }
            _ => {
                drop(permit);
                self.whole_into(&tmp, &info, crc, out.body).await
            }
        };
        record("get", t, res.is_ok());
        let how = match res {
            Ok(h) => count_verified(h),
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e);
            }
        };
        commit(store, reservation, tmp, key, size, info.etag, meta, how).await
    }

    /// Streams a whole-object body into `tmp`, verifying it on the way, then makes it durable.
    async fn whole_into(
        &self,
        tmp: &Path,
        info: &ObjectInfo,
        crc: Option<FullObjectCrc>,
        mut body: Body,
    ) -> Result<&'static str, FetchError> {
        let mut f = ChunkFile::create(tmp)
            .await
            .map_err(FetchError::disk(tmp))?;
        let mut v = Verifier::new(info.size, &info.etag, crc);
        loop {
            let chunk = match body.next().await {
                Some(Ok(c)) => c,
                None => break,
                Some(Err(e)) => return Err(e),
            };
            v.update(&chunk);
            f.write(chunk).await.map_err(FetchError::disk(tmp))?;
        }
        // Verified before it is made durable: bad bytes are never fsynced, only deleted.
        let how = v.finish()?;
        f.finish(true).await.map_err(FetchError::disk(tmp))?;
        Ok(how)
    }

    /// Fills `tmp` with the object's parts: the first from `first` (a whole-object GET's body
    /// and its permit) when given, the rest with ranged GETs, each waiting for a permit; then
    /// verifies the whole: the parts' CRCs combined, or (without a CRC) the file read back once
    /// for the ETag's MD5.
    async fn ranged_into(
        &self,
        tmp: &Path,
        info: &ObjectInfo,
        crc: Option<FullObjectCrc>,
        ranges: &Ranges<'_>,
        first: Option<(Body, Option<tokio::sync::OwnedSemaphorePermit>)>,
    ) -> Result<&'static str, FetchError> {
        let size = info.size;
        let part_size = ranges.part_size;
        let f = tokio::fs::File::create(tmp)
            .await
            .map_err(FetchError::disk(tmp))?;
        f.set_len(size).await.map_err(FetchError::disk(tmp))?;
        drop(f);
        let mut first = first;
        let parts = range_starts(size, part_size).map(|a| {
            let b = (a + part_size).min(size) - 1;
            let given = if a == 0 { first.take() } else { None };
            async move {
                if let Some((mut body, permit)) = given {
                    let got = body_into(&mut body, tmp, 0, b + 1, crc, true).await;
                    drop((body, permit));
                    match got {
                        Ok(d) => {
                            (ranges.progress)(b + 1);
                            return Ok(d);
                        }
                        // Cut mid-way: fetch the part again as a range, like the others.
                        Err(e) if e.is_transient() => {
                            tracing::debug!(key = %info.key, error = %e, "first part retry");
                        }
                        Err(e) => return Err(e),
                    }
                }
                let _permit = ranges
                    .permits
                    .acquire()
                    .await
                    .map_err(|e| FetchError::Unavailable(e.to_string()))?;
                // A change of the object is for the whole fetch to retry; anything else
                // transient is this part's, and once its budget is spent the fetch fails.
                let part_retry =
                    |e: &FetchError| e.is_transient() && !matches!(e, FetchError::Changed);
                match self
                    .retry
                    .run(
                        "get_range",
                        &info.key,
                        || self.range_once(tmp, &info.key, &info.etag, crc, a, b),
                        part_retry,
                    )
                    .await
                {
                    Ok(d) => {
                        (ranges.progress)(b + 1 - a);
                        Ok(d)
                    }
                    Err(e) if part_retry(&e) => Err(FetchError::Part {
                        at: a,
                        source: Box::new(e),
                    }),
                    Err(e) => Err(e),
                }
            }
        });
        let digests: Vec<_> = futures::future::try_join_all(parts)
            .await?
            .into_iter()
            .flatten()
            .collect();
        let path = tmp.to_path_buf();
        let etag = info.etag.clone();
        tokio::task::spawn_blocking(move || -> Result<&'static str, FetchError> {
            // One handle for the read-back (when there is one) and the fsync.
            let mut f = std::fs::File::open(&path).map_err(FetchError::disk(&path))?;
            let how = match crc {
                Some(c) => c.check_ranges(size, digests)?,
                // The MD5 of the ETag is one serial pass: read the file back (its pages are
                // still in the page cache).
                None => {
                    use std::io::Read;
                    let mut v = Verifier::new(size, &etag, None);
                    let mut buf = vec![0_u8; 1 << 20];
                    loop {
                        let n = f.read(&mut buf).map_err(FetchError::disk(&path))?;
                        if n == 0 {
                            break;
                        }
                        v.update(&buf[..n]);
                    }
                    v.finish()?
                }
            };
            f.sync_data().map_err(FetchError::disk(&path))?;
            Ok(how)
        })
        .await
        .map_err(|e| FetchError::disk(tmp)(std::io::Error::other(e)))?
    }

    /// One ranged GET of `a..=b` written at its offset in `tmp`; with `crc`, also the CRC of
    /// the range's bytes.
    async fn range_once(
        &self,
        tmp: &Path,
        key: &str,
        etag: &str,
        crc: Option<FullObjectCrc>,
        a: u64,
        b: u64,
    ) -> Result<Option<crc_fast::Digest>, FetchError> {
        let t = Instant::now();
        let r = self
            .client
            .get(
                &self.bucket,
                GetRequest {
                    key,
                    range: Some((a, b)),
                    if_match: (!etag.is_empty()).then_some(etag),
                },
            )
            .await;
        if r.is_err() {
            record("get_range", t, false);
        }
        let out = r?;
        if !etag.is_empty() && !out.etag.is_empty() && out.etag != etag {
            record("get_range", t, false);
            return Err(FetchError::Changed);
        }
        let mut body = out.body;
        let res = body_into(&mut body, tmp, a, b + 1 - a, crc, false).await;
        record("get_range", t, res.is_ok());
        res
    }
}

/// How large objects are fetched in parts.
pub struct Ranges<'a> {
    /// Part size; objects of at least two parts are fetched in parts.
    pub part_size: u64,
    /// Requests in flight, shared with whatever else fetches (each part holds one).
    pub permits: &'a Arc<Semaphore>,
    /// Called with the byte count of each finished part.
    pub progress: &'a (dyn Fn(u64) + Sync),
}

/// Streams `want` bytes of `body` into `tmp` at offset `at` (with `crc`: and returns their
/// CRC). With `more_follows` the body may go on (a whole-object GET read for its first part
/// only); otherwise a body longer or shorter than `want` is an error.
async fn body_into(
    body: &mut Body,
    tmp: &Path,
    at: u64,
    want: u64,
    crc: Option<FullObjectCrc>,
    more_follows: bool,
) -> Result<Option<crc_fast::Digest>, FetchError> {
    let mut f = ChunkFile::at_offset(tmp, at)
        .await
        .map_err(FetchError::disk(tmp))?;
    let mut digest = crc.map(FullObjectCrc::digest);
    let mut got = 0_u64;
    while !(more_follows && got == want) {
        let mut chunk = match body.next().await {
            Some(Ok(c)) => c,
            None => break,
            Some(Err(e)) => return Err(e),
        };
        let room = want - got;
        if chunk.len() as u64 > room {
            if !more_follows {
                return Err(FetchError::Unavailable(format!(
                    "range at {at}: upstream sent more than {want} bytes"
                )));
            }
            chunk.truncate(usize::try_from(room).unwrap_or(usize::MAX));
        }
        got += chunk.len() as u64;
        if let Some(d) = &mut digest {
            d.update(&chunk);
        }
        f.write(chunk).await.map_err(FetchError::disk(tmp))?;
    }
    if got != want {
        return Err(FetchError::Unavailable(format!(
            "range at {at}: got {got} of {want} bytes"
        )));
    }
    // Durability comes once for the whole file, after it is verified.
    f.finish(false).await.map_err(FetchError::disk(tmp))?;
    Ok(digest)
}

/// What a GET says of the object besides its bytes.
#[derive(Debug, Default)]
struct ObjectMeta {
    last_modified: Option<i64>,
    content_type: Option<String>,
    metadata: BTreeMap<String, String>,
}

impl ObjectMeta {
    fn of(out: &GetAnswer) -> Self {
        Self {
            last_modified: out.last_modified,
            content_type: out.content_type.clone(),
            metadata: out.metadata.clone(),
        }
    }
}

/// Commits the verified temp file `tmp` as `key` (off the runtime: it renames and fsyncs the
/// directory), deleting it if the commit fails.
#[allow(clippy::too_many_arguments)]
async fn commit(
    store: &Arc<Store>,
    reservation: crate::store::Reservation,
    tmp: std::path::PathBuf,
    key: &str,
    size: u64,
    etag: String,
    meta: ObjectMeta,
    how: &'static str,
) -> Result<Entry, FetchError> {
    let entry = Entry {
        key: key.to_string(),
        size,
        etag,
        last_modified: meta.last_modified,
        content_type: meta.content_type,
        metadata: meta.metadata,
        checked_at: Store::now(),
        verified_by: how.to_string(),
    };
    let st = store.clone();
    let committed = entry.clone();
    let path = tmp.clone();
    tokio::task::spawn_blocking(move || st.commit(reservation, &path, committed))
        .await
        .map_err(|e| FetchError::disk(&tmp)(std::io::Error::other(e)))?
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })?;
    Ok(entry)
}

/// The first byte of each `part_size` range of a `size`-byte object.
fn range_starts(size: u64, part_size: u64) -> impl Iterator<Item = u64> {
    (0..size).step_by(usize::try_from(part_size.max(1)).unwrap_or(usize::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A disk error keeps its path and its `io::Error` (kind and all), not a string of it.
    #[tokio::test]
    async fn disk_errors_keep_path_and_source() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("gone/x.part");
        let mut body: Body =
            futures::stream::iter([Ok(bytes::Bytes::from_static(b"some bytes"))]).boxed();
        let e = body_into(&mut body, &tmp, 0, 10, None, false)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, FetchError::Disk { path, source }
                if path == &tmp && source.kind() == std::io::ErrorKind::NotFound),
            "{e:?}"
        );
        assert!(e.passes_through() && !e.is_transient());
        assert!(std::error::Error::source(&e).is_some());

        let store = crate::store::StoreError::Io {
            path: "/cache/objects/ab".into(),
            source: std::io::Error::from(std::io::ErrorKind::StorageFull),
        };
        assert!(
            matches!(FetchError::from(store), FetchError::Disk { path, source }
            if path == Path::new("/cache/objects/ab") && source.kind() == std::io::ErrorKind::StorageFull)
        );
    }

    #[test]
    fn ranges_cover_the_object_once() {
        assert_eq!(range_starts(0, 8).count(), 0);
        assert_eq!(range_starts(8, 8).collect::<Vec<_>>(), [0]);
        assert_eq!(range_starts(17, 8).collect::<Vec<_>>(), [0, 8, 16]);
    }
}
