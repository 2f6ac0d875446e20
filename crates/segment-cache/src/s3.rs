//! The S3 endpoint Milvus talks to: `GetObject`/`HeadObject` from the cache (fetching on a miss,
//! single-flight), every other operation forwarded upstream through s3s-aws's proxy (re-signed
//! with the sidecar's credentials); writes and deletes invalidate the cached key.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use s3s::access::{S3Access, S3AccessContext};
#[allow(clippy::wildcard_imports)]
use s3s::dto::*;
use s3s::dto::{
    ETag, ETagCondition, GetObjectInput, GetObjectOutput, HeadObjectInput, HeadObjectOutput,
    StreamingBlob, Timestamp,
};
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};
use s3s_aws::Proxy;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use futures::StreamExt as _;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::index::Entry;
use crate::keys;
use crate::readahead::{self, FieldMemory, Group, Seen, Stats, StatsSnapshot};
use crate::store::Store;
use crate::upstream::{FetchError, ObjectInfo, Ranges, Upstream};

/// The S3 service of the cache.
pub struct CacheS3 {
    /// Where other operations go; `None` over a fake upstream (they are refused).
    proxy: Option<Proxy>,
    store: Arc<Store>,
    upstream: Upstream,
    revalidate_after: Duration,
    /// The fetch that read misses and read-ahead share.
    core: Arc<Core>,
    read_ahead: Option<Arc<ReadAhead>>,
}

/// What read misses and read-ahead share: the one single-flight fetch into the store.
struct Core {
    store: Arc<Store>,
    upstream: Upstream,
    max_object_size: u64,
    miss_parts: Option<MissParts>,
}

/// Segment-aware read-ahead as the request path runs it: at most `max_concurrent` fetches in
/// flight across all segments, at most `max_bytes_per_segment` per group, each group once.
#[derive(Debug)]
pub struct ReadAhead {
    permits: tokio::sync::Semaphore,
    max_bytes: u64,
    seen: Seen,
    /// `None`: every field's insert logs are read ahead.
    fields: Option<FieldMemory>,
    stats: Stats,
    tasks: TaskTracker,
}

impl ReadAhead {
    /// Read-ahead with `max_concurrent` fetches in flight and `max_bytes_per_segment` per group,
    /// of the insert logs of every field.
    #[must_use]
    pub fn new(max_concurrent: usize, max_bytes_per_segment: u64) -> Self {
        Self {
            permits: tokio::sync::Semaphore::new(max_concurrent),
            max_bytes: max_bytes_per_segment,
            seen: Seen::default(),
            fields: None,
            stats: Stats::default(),
            tasks: TaskTracker::new(),
        }
    }

    /// Reads ahead only the insert logs of fields Milvus read in the collection within `memory`
    /// (the others when it first reads them; see [`FieldMemory`]).
    #[must_use]
    pub fn learning_fields(mut self, memory: Duration) -> Self {
        self.fields = Some(FieldMemory::new(memory));
        self
    }
}

/// How read misses of large objects are fetched: in parts of `part_size`, with the part
/// requests of all misses sharing `permits`.
#[derive(Debug, Clone)]
pub struct MissParts {
    /// Part size (objects of at least two parts are fetched in parts).
    pub part_size: u64,
    /// Part requests in flight across all misses.
    pub permits: Arc<tokio::sync::Semaphore>,
}

impl MissParts {
    /// `concurrency` part requests of `part_size`; `None` when `part_size` is 0 (off).
    #[must_use]
    pub fn new(part_size: u64, concurrency: usize) -> Option<Self> {
        (part_size > 0).then(|| Self {
            part_size,
            permits: Arc::new(tokio::sync::Semaphore::new(concurrency)),
        })
    }
}

impl std::fmt::Debug for CacheS3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheS3").finish_non_exhaustive()
    }
}

fn count(op: &'static str, result: &'static str) {
    metrics::counter!(crate::metric_names::REQUESTS, "op" => op, "result" => result).increment(1);
}

fn to_s3_error(e: &FetchError) -> S3Error {
    match e {
        // The part's own error says what upstream answered.
        FetchError::Part { source, .. } if matches!(**source, FetchError::Upstream { .. }) => {
            to_s3_error(source)
        }
        FetchError::Upstream {
            status,
            code,
            message,
        } => {
            let mut err = S3Error::with_message(
                S3ErrorCode::from_bytes(code.as_bytes())
                    .unwrap_or(S3ErrorCode::Custom(code.clone().into())),
                message.clone(),
            );
            if let Ok(s) = http::StatusCode::from_u16(*status) {
                err.set_status_code(s);
            }
            err
        }
        other => S3Error::with_message(
            S3ErrorCode::ServiceUnavailable,
            format!("segment-cache could not read the object from upstream S3: {other}"),
        ),
    }
}

/// The upstream answered 200 but its body could not be decoded.
fn upstream_said_ok(e: &S3Error) -> bool {
    *e.code() == S3ErrorCode::InternalError && e.status_code() == Some(http::StatusCode::OK)
}

/// An error must never go out with a 2xx status (s3s-aws copies the upstream status).
fn fix_status(mut e: S3Error) -> S3Error {
    if e.status_code().is_some_and(|s| s.is_success()) {
        e.set_status_code(http::StatusCode::INTERNAL_SERVER_ERROR);
    }
    e
}

fn unquoted(etag: &str) -> &str {
    etag.trim_matches('"')
}

fn ts(secs: Option<i64>) -> Option<Timestamp> {
    secs.and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .map(Timestamp::from)
}

fn ts_secs(t: &Timestamp) -> i64 {
    time::OffsetDateTime::from(t.clone()).unix_timestamp()
}

fn etag_matches(cond: &ETagCondition, etag: &str) -> bool {
    match cond {
        ETagCondition::Any => true,
        ETagCondition::ETag(e) => e.value() == unquoted(etag),
    }
}

/// Evaluates conditional headers as S3 does (RFC 9110 order).
fn check_conditions(
    e: &Entry,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
    if_unmodified_since: Option<&Timestamp>,
) -> S3Result<()> {
    let lm = e.last_modified.unwrap_or(0);
    if let Some(c) = if_match {
        if !etag_matches(c, &e.etag) {
            return Err(s3_error!(
                PreconditionFailed,
                "At least one of the pre-conditions you specified did not hold"
            ));
        }
    } else if let Some(t) = if_unmodified_since
        && lm > ts_secs(t)
    {
        return Err(s3_error!(
            PreconditionFailed,
            "At least one of the pre-conditions you specified did not hold"
        ));
    }
    if let Some(c) = if_none_match {
        if etag_matches(c, &e.etag) {
            return Err(S3Error::new(S3ErrorCode::NotModified));
        }
    } else if let Some(t) = if_modified_since
        && lm <= ts_secs(t)
    {
        return Err(S3Error::new(S3ErrorCode::NotModified));
    }
    Ok(())
}

/// The bytes a GET serves: from `start`, `len` of them, and the Content-Range when partial.
#[derive(Debug, PartialEq, Eq)]
struct ServedRange {
    start: u64,
    len: u64,
    content_range: Option<String>,
}

/// The part of an object of `size` bytes that `range` asks for, or `None` when it is not
/// satisfiable (416). A suffix range of an empty object is satisfiable (RFC 9110 14.1.2) but
/// names no bytes: it is served as the whole, empty object, without a Content-Range.
fn served_range(range: Option<&Range>, size: u64) -> Option<ServedRange> {
    let whole = ServedRange {
        start: 0,
        len: size,
        content_range: None,
    };
    let Some(range) = range else {
        return Some(whole);
    };
    let r = range.check(size).ok()?;
    if r.is_empty() {
        return Some(whole);
    }
    Some(ServedRange {
        start: r.start,
        len: r.end - r.start,
        content_range: Some(format!("bytes {}-{}/{size}", r.start, r.end - 1)),
    })
}

include!("forwarded.rs");

enum Lookup {
    Hit(Entry, std::fs::File),
    Miss(Entry, std::fs::File),
    Bypass,
}

// `async_trait` rewrites `async fn`s before macros expand, so the generated methods are written
// in its desugared form.
macro_rules! forward_ops {
    ($($name:ident: $in:ident => $out:ident,)*) => {
        $(
            fn $name<'life0, 'async_trait>(
                &'life0 self,
                req: S3Request<$in>,
            ) -> std::pin::Pin<Box<dyn std::future::Future<Output = S3Result<S3Response<$out>>> + Send + 'async_trait>>
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                Box::pin(async move {
                    let call = self.proxy()?.$name(req);
                    self.forward(stringify!($name), async { call.await.map_err(fix_status) }).await
                })
            }
        )*
    };
}

impl CacheS3 {
    /// The service over `store`, fetching misses from `upstream` (large ones in `miss_parts`).
    #[must_use]
    pub fn new(
        store: Arc<Store>,
        upstream: Upstream,
        max_object_size: u64,
        revalidate_after: Duration,
        miss_parts: Option<MissParts>,
    ) -> Self {
        Self {
            proxy: upstream.forward_client().cloned().map(Proxy::from),
            store: store.clone(),
            upstream: upstream.clone(),
            revalidate_after,
            core: Arc::new(Core {
                store,
                upstream,
                max_object_size,
                miss_parts,
            }),
            read_ahead: None,
        }
    }

    /// The same service with segment-aware read-ahead (see [`crate::readahead`]).
    #[must_use]
    pub fn with_read_ahead(mut self, read_ahead: ReadAhead) -> Self {
        self.read_ahead = Some(Arc::new(read_ahead));
        self
    }

    fn proxy(&self) -> S3Result<&Proxy> {
        self.proxy.as_ref().ok_or_else(|| {
            s3_error!(
                NotImplemented,
                "segment-cache has no upstream to forward this request to"
            )
        })
    }

    /// Awaits `call`, a request forwarded to the upstream as is, timed and counted as `op`.
    async fn forward<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = S3Result<T>>,
    ) -> S3Result<T> {
        let t = Instant::now();
        let r = call.await;
        self.forwarded(op, t, r.is_ok());
        r
    }

    /// [`Self::forward`] for a write, then drops `keys` from the cache whatever the answer (a
    /// write that failed on the way back may still have reached the upstream).
    async fn write_through<T>(
        &self,
        op: &'static str,
        keys: impl IntoIterator<Item = String>,
        call: impl Future<Output = S3Result<T>>,
    ) -> S3Result<T> {
        let r = self.forward(op, call).await;
        for key in keys {
            self.invalidate(&key).await;
        }
        r
    }

    #[allow(clippy::unused_self)]
    fn forwarded(&self, op: &'static str, t: Instant, ok: bool) {
        count("other", if ok { "bypass" } else { "error" });
        metrics::histogram!(crate::metric_names::UPSTREAM_REQUEST_DURATION, "op" => op)
            .record(t.elapsed().as_secs_f64());
        metrics::counter!(crate::metric_names::UPSTREAM_REQUESTS, "op" => op,
            "outcome" => if ok { "ok" } else { "error" })
        .increment(1);
    }

    async fn revalidate(&self, e: &Entry) -> bool {
        if self.revalidate_after.is_zero() {
            return true;
        }
        let age = Store::now() - e.checked_at;
        if age < i64::try_from(self.revalidate_after.as_secs()).unwrap_or(i64::MAX) {
            return true;
        }
        match self.upstream.head(&e.key).await {
            Ok(info) if info.etag == e.etag => {
                self.store.mark_checked(&e.key);
                true
            }
            Ok(_) => {
                tracing::info!(key = %e.key, "object changed upstream; refetching");
                self.store.invalidate(&e.key);
                false
            }
            // Upstream unreachable: the cached copy is still the best answer.
            Err(_) => true,
        }
    }

    async fn cached_or_fetch(&self, key: &str) -> S3Result<Lookup> {
        // Before a miss's read-ahead plans its group: the field read now is then one it fetches.
        self.learn_read(key);
        if let Some((e, f)) = self.core.open_cached(key)
            && self.revalidate(&e).await
        {
            return Ok(Lookup::Hit(e, f));
        }
        // A miss: the segment's other files are read next; start fetching them beside this one.
        self.start_read_ahead(key);
        self.core.fetch_single_flight(key).await
    }

    /// Milvus read `key` (hit or miss): with learned fields, the first read of a field fetches
    /// that field's deferred files of every segment read ahead so far.
    fn learn_read(&self, key: &str) {
        let Some(ra) = &self.read_ahead else {
            return;
        };
        let Some(fields) = &ra.fields else {
            return;
        };
        let due = fields.read(key, Instant::now());
        if due.is_empty() {
            return;
        }
        tracing::debug!(key, objects = due.len(), "read-ahead: a field's first read");
        let (core, ra2) = (self.core.clone(), ra.clone());
        ra.tasks
            .spawn(async move { fetch_ahead(&core, &ra2, due).await });
    }

    /// Starts (once per segment group, in the background) the read-ahead of `key`'s segment.
    fn start_read_ahead(&self, key: &str) {
        let Some(ra) = &self.read_ahead else {
            return;
        };
        let Some(group) = Group::of(key) else {
            return;
        };
        if !ra.seen.first(&group) {
            return;
        }
        let (core, ra2, trigger) = (self.core.clone(), ra.clone(), key.to_string());
        ra.tasks
            .spawn(async move { read_ahead(core, ra2, group, trigger).await });
    }

    /// What read-ahead did so far (`None` when it is off).
    #[must_use]
    pub fn read_ahead_stats(&self) -> Option<StatsSnapshot> {
        self.read_ahead.as_ref().map(|r| r.stats.snapshot())
    }

    /// Waits until every read-ahead started so far is done.
    pub async fn read_ahead_idle(&self) {
        if let Some(r) = &self.read_ahead {
            r.tasks.close();
            r.tasks.wait().await;
            r.tasks.reopen();
        }
    }

    fn check_bucket(&self, bucket: &str) -> S3Result<()> {
        if bucket == self.upstream.bucket() {
            Ok(())
        } else {
            Err(s3_error!(AccessDenied, "Access Denied"))
        }
    }

    async fn invalidate(&self, key: &str) {
        // Wait for a fetch of the key in flight so it cannot re-cache the old version after us.
        let flight = self.store.flight(key);
        let guard = flight.lock().await;
        self.store.invalidate(key);
        drop(guard);
        self.store.end_flight(key, &flight);
    }
}

impl Core {
    fn open_cached(&self, key: &str) -> Option<(Entry, std::fs::File)> {
        let e = self.store.lookup(key)?;
        match std::fs::File::open(self.store.data_path(key)) {
            Ok(f) if f.metadata().is_ok_and(|m| m.len() == e.size) => Some((e, f)),
            _ => {
                // Evicted or replaced between lookup and open: treat as a miss.
                None
            }
        }
    }

    /// Fetches `key` unless a fetch of it is in flight, in which case waits for that one (and
    /// then finds it cached).
    async fn fetch_single_flight(&self, key: &str) -> S3Result<Lookup> {
        let flight = self.store.flight(key);
        let guard = flight.lock().await;
        let res = self.fetch_locked(key).await;
        drop(guard);
        self.store.end_flight(key, &flight);
        res
    }

    async fn fetch_locked(&self, key: &str) -> S3Result<Lookup> {
        if let Some((e, f)) = self.open_cached(key) {
            // Another request fetched it while we waited.
            return Ok(Lookup::Hit(e, f));
        }
        let no_progress = |_| {};
        let ranges = self.miss_parts.as_ref().map(|m| Ranges {
            part_size: m.part_size,
            permits: &m.permits,
            progress: &no_progress,
        });
        // The fetch has had its retries (`RetryPolicy`): no loop here.
        match self
            .upstream
            .fetch(&self.store, key, self.max_object_size, ranges.as_ref())
            .await
        {
            Ok(_) => match self.open_cached(key) {
                Some((e, f)) => Ok(Lookup::Miss(e, f)),
                None => Ok(Lookup::Bypass),
            },
            Err(e) if e.passes_through() => {
                tracing::warn!(key, error = %e, "not caching; passing the read through");
                Ok(Lookup::Bypass)
            }
            Err(e) => {
                tracing::warn!(key, error = %e, "upstream fetch failed");
                Err(to_s3_error(&e))
            }
        }
    }
}

/// Lists `group` and fetches the files the plan keeps, through the same single-flight fetch as
/// GETs, `ra.permits` bounding them. Failures are counted and logged, never returned: the GET
/// that started it does not wait for it.
async fn read_ahead(core: Arc<Core>, ra: Arc<ReadAhead>, group: Group, trigger: String) {
    let mut listed = Vec::new();
    for p in group.prefixes() {
        match core.upstream.list(&p).await {
            Ok(objs) => listed.extend(objs),
            Err(e) => {
                tracing::warn!(prefix = %p, error = %e, "read-ahead: listing failed");
                ra.stats.group(false);
                return;
            }
        }
    }
    ra.stats.group(true);
    let store = &core.store;
    let todo = readahead::plan(
        listed,
        &trigger,
        |o| store.peek(&o.key).is_some_and(|e| e.etag == o.etag),
        core.max_object_size,
        ra.max_bytes,
    );
    let todo = match &ra.fields {
        Some(fields) => fields.split(todo, Instant::now()),
        None => todo,
    };
    tracing::debug!(
        segment = group.segment(),
        objects = todo.len(),
        "read-ahead"
    );
    fetch_ahead(&core, &ra, todo).await;
}

/// Fetches `todo` into the store through the single-flight fetch, `ra.permits` bounding them;
/// each outcome counted.
async fn fetch_ahead(core: &Arc<Core>, ra: &Arc<ReadAhead>, todo: Vec<ObjectInfo>) {
    futures::stream::iter(todo)
        .for_each_concurrent(None, |o| async move {
            let Ok(_permit) = ra.permits.acquire().await else {
                return;
            };
            let (result, bytes) = match core.fetch_single_flight(&o.key).await {
                Ok(Lookup::Miss(e, _)) => ("fetched", e.size),
                Ok(Lookup::Hit(..)) => ("cached", 0),
                Ok(Lookup::Bypass) => ("skipped", 0),
                Err(e) => {
                    tracing::debug!(key = %o.key, error = %e, "read-ahead: fetch failed");
                    ("error", 0)
                }
            };
            ra.stats.object(result, bytes);
        })
        .await;
}

fn head_output(e: &Entry) -> HeadObjectOutput {
    HeadObjectOutput {
        accept_ranges: Some("bytes".into()),
        content_length: Some(i64::try_from(e.size).unwrap_or(i64::MAX)),
        content_type: e.content_type.clone(),
        e_tag: Some(ETag::Strong(unquoted(&e.etag).to_string())),
        last_modified: ts(e.last_modified),
        metadata: (!e.metadata.is_empty()).then(|| {
            e.metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }),
        ..Default::default()
    }
}

fn key_error(key: &str) -> S3Result<()> {
    keys::validate(key).map_err(|e| match e {
        keys::KeyError::TooLong(_) => s3_error!(KeyTooLongError, "Your key is too long"),
        other => S3Error::with_message(S3ErrorCode::InvalidArgument, other.to_string()),
    })
}

#[async_trait::async_trait]
impl S3 for CacheS3 {
    with_forwarded_ops!(forward_ops);

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let i = &req.input;
        self.check_bucket(&i.bucket)?;
        key_error(&i.key)?;
        if i.part_number.is_some()
            || i.version_id.is_some()
            || i.sse_customer_key.is_some()
            || i.response_content_type.is_some()
            || i.response_content_disposition.is_some()
            || i.response_cache_control.is_some()
            || i.response_content_encoding.is_some()
            || i.response_content_language.is_some()
            || i.response_expires.is_some()
        {
            return self
                .forward("get_object", self.proxy()?.get_object(req))
                .await;
        }
        let key = i.key.clone();
        let (entry, file, result) = match self.cached_or_fetch(&key).await {
            Ok(Lookup::Hit(e, f)) => (e, f, "hit"),
            Ok(Lookup::Miss(e, f)) => (e, f, "miss"),
            Ok(Lookup::Bypass) => {
                let t = Instant::now();
                let r = self.proxy()?.get_object(req).await;
                count("get", if r.is_ok() { "bypass" } else { "error" });
                metrics::histogram!(crate::metric_names::UPSTREAM_REQUEST_DURATION, "op" => "get_object")
                    .record(t.elapsed().as_secs_f64());
                return r;
            }
            Err(e) => {
                count("get", "error");
                return Err(e);
            }
        };
        let i = &req.input;
        if let Err(e) = check_conditions(
            &entry,
            i.if_match.as_ref(),
            i.if_none_match.as_ref(),
            i.if_modified_since.as_ref(),
            i.if_unmodified_since.as_ref(),
        ) {
            count("get", result);
            return Err(e);
        }
        let Some(ServedRange {
            start,
            len,
            content_range,
        }) = served_range(i.range.as_ref(), entry.size)
        else {
            count("get", "error");
            let mut err = s3_error!(InvalidRange, "The requested range is not satisfiable");
            err.set_status_code(http::StatusCode::RANGE_NOT_SATISFIABLE);
            return Err(err);
        };
        count("get", result);
        metrics::counter!(crate::metric_names::SERVED_BYTES, "result" => result).increment(len);
        self.store.log_access(&key, entry.size);
        let mut f = tokio::fs::File::from_std(file);
        f.seek(std::io::SeekFrom::Start(start))
            .await
            .map_err(S3Error::internal_error)?;
        let stream = tokio_util::io::ReaderStream::with_capacity(f.take(len), 256 * 1024);
        let head = head_output(&entry);
        let out = GetObjectOutput {
            body: Some(StreamingBlob::wrap(stream)),
            accept_ranges: head.accept_ranges,
            content_length: Some(i64::try_from(len).unwrap_or(i64::MAX)),
            content_range,
            content_type: head.content_type,
            e_tag: head.e_tag,
            last_modified: head.last_modified,
            metadata: head.metadata,
            ..Default::default()
        };
        Ok(S3Response::new(out))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let i = &req.input;
        self.check_bucket(&i.bucket)?;
        key_error(&i.key)?;
        let cached = if i.part_number.is_none()
            && i.version_id.is_none()
            && i.sse_customer_key.is_none()
            && i.range.is_none()
        {
            self.store.lookup(&i.key)
        } else {
            None
        };
        let Some(entry) = cached else {
            let t = Instant::now();
            let r = self.proxy()?.head_object(req).await;
            count("head", if r.is_ok() { "miss" } else { "error" });
            metrics::histogram!(crate::metric_names::UPSTREAM_REQUEST_DURATION, "op" => "head_object")
                .record(t.elapsed().as_secs_f64());
            return r;
        };
        count("head", "hit");
        check_conditions(
            &entry,
            i.if_match.as_ref(),
            i.if_none_match.as_ref(),
            i.if_modified_since.as_ref(),
            i.if_unmodified_since.as_ref(),
        )?;
        Ok(S3Response::new(head_output(&entry)))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let key = req.input.key.clone();
        self.write_through("put_object", [key], self.proxy()?.put_object(req))
            .await
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let key = req.input.key.clone();
        self.write_through("delete_object", [key], self.proxy()?.delete_object(req))
            .await
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let keys: Vec<String> = req
            .input
            .delete
            .objects
            .iter()
            .map(|o| o.key.clone())
            .collect();
        self.write_through("delete_objects", keys, self.proxy()?.delete_objects(req))
            .await
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let key = req.input.key.clone();
        self.write_through("copy_object", [key], self.proxy()?.copy_object(req))
            .await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let key = req.input.key.clone();
        let bucket = req.input.bucket.clone();
        let t = Instant::now();
        let r = self.proxy()?.complete_multipart_upload(req).await;
        self.invalidate(&key).await;
        // Some S3-compatible servers (moto) answer 200 with a `CompleteMultipartUploadResponse`
        // root element that aws-sdk-s3 refuses to decode. A 200 means the upload completed: read
        // the new object's ETag with a HEAD and answer as S3 would.
        let r = match r {
            Err(e) if upstream_said_ok(&e) => match self.upstream.head(&key).await {
                Ok(info) => Ok(S3Response::new(CompleteMultipartUploadOutput {
                    bucket: Some(bucket),
                    key: Some(key),
                    e_tag: Some(ETag::Strong(unquoted(&info.etag).to_string())),
                    ..Default::default()
                })),
                Err(_) => Err(fix_status(e)),
            },
            other => other.map_err(fix_status),
        };
        self.forwarded("complete_multipart_upload", t, r.is_ok());
        r
    }
}

/// Access control: every request must be signed with the configured key (s3s has verified the
/// signature by then), and may only address the configured bucket (or list buckets).
#[derive(Debug, Clone)]
pub struct BucketAccess {
    bucket: String,
}

impl BucketAccess {
    /// Access limited to `bucket`.
    #[must_use]
    pub fn new(bucket: String) -> Self {
        Self { bucket }
    }
}

#[async_trait::async_trait]
impl S3Access for BucketAccess {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        if cx.credentials().is_none() {
            return Err(s3_error!(AccessDenied, "Access Denied"));
        }
        match cx.s3_path() {
            s3s::path::S3Path::Root => Ok(()),
            s3s::path::S3Path::Bucket { bucket } | s3s::path::S3Path::Object { bucket, .. } => {
                if **bucket == *self.bucket {
                    Ok(())
                } else {
                    Err(s3_error!(AccessDenied, "Access Denied"))
                }
            }
        }
    }
}

/// The one key pair Milvus signs with; an unknown access key gets S3's own error for it.
#[derive(Debug)]
pub struct SingleKeyAuth(s3s::auth::SimpleAuth);

impl SingleKeyAuth {
    /// Accepts requests signed with `access_key`/`secret_key`.
    #[must_use]
    pub fn new(access_key: &str, secret_key: &str) -> Self {
        Self(s3s::auth::SimpleAuth::from_single(access_key, secret_key))
    }
}

#[async_trait::async_trait]
impl s3s::auth::S3Auth for SingleKeyAuth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<s3s::auth::SecretKey> {
        self.0.lookup(access_key).cloned().ok_or_else(|| {
            s3_error!(
                InvalidAccessKeyId,
                "The AWS Access Key Id you provided does not exist in our records."
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn range() -> impl Strategy<Value = Range> {
        prop_oneof![
            (any::<u64>(), proptest::option::of(any::<u64>()))
                .prop_map(|(first, last)| Range::Int { first, last }),
            (0u64..64, proptest::option::of(0u64..64))
                .prop_map(|(first, last)| Range::Int { first, last }),
            any::<u64>().prop_map(|length| Range::Suffix { length }),
            (0u64..64).prop_map(|length| Range::Suffix { length }),
        ]
    }

    #[test]
    fn a_suffix_range_of_an_empty_object_is_served_whole() {
        assert_eq!(
            served_range(Some(&Range::Suffix { length: 5 }), 0),
            Some(ServedRange {
                start: 0,
                len: 0,
                content_range: None
            })
        );
        assert_eq!(served_range(Some(&Range::Suffix { length: 0 }), 0), None);
        assert_eq!(
            served_range(
                Some(&Range::Int {
                    first: 0,
                    last: None
                }),
                0
            ),
            None
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]

        #[test]
        fn served_bytes_lie_inside_the_object_and_the_header_names_them(
            r in proptest::option::of(range()),
            size in prop_oneof![0u64..64, any::<u64>()],
        ) {
            if let Some(s) = served_range(r.as_ref(), size) {
                prop_assert!(s.start.checked_add(s.len).is_some_and(|end| end <= size), "{s:?}");
                match &s.content_range {
                    None => prop_assert_eq!((s.start, s.len), (0, size)),
                    Some(h) => {
                        prop_assert!(s.len > 0);
                        let want = format!("bytes {}-{}/{size}", s.start, s.start + s.len - 1);
                        prop_assert_eq!(h, &want);
                    }
                }
            } else {
                // Refused only when s3s's own check refuses it.
                prop_assert!(r.is_some_and(|r| r.check(size).is_err()));
            }
        }
    }
}
