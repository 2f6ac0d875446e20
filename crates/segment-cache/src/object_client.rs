//! What the cache asks of upstream S3, as a trait, [`ObjectClient`], with three implementations
//! (after mountpoint-s3's `object_client`, `mock_client` and `failure_client`):
//! - [`SdkClient`]: aws-sdk-s3, the one used in production;
//! - [`FakeClient`]: a fake, objects in memory, so the request path is tested without sockets;
//! - [`FailureClient`]: a fake's wrapper that injects failures into chosen requests.
//!
//! Each call is one attempt: retries are the caller's ([`crate::retry::RetryPolicy`]).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::primitives::ByteStream;
use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt as _;
use futures::stream::BoxStream;
use md5::{Digest as _, Md5};

use crate::upstream::{FetchError, ObjectInfo};
use crate::verify::FullObjectCrc;

/// An object body as it arrives; an error ends it (cut mid-way).
pub type Body = BoxStream<'static, Result<Bytes, FetchError>>;

/// The answer to a GET: what it says of the object, and its body.
pub struct GetAnswer {
    /// `Content-Length`: the bytes in `body` (the whole object, or the range asked for).
    pub content_length: u64,
    /// ETag, with quotes.
    pub etag: String,
    /// The full-object CRC upstream keeps (asked for on whole-object GETs only).
    pub crc: Option<FullObjectCrc>,
    /// `Last-Modified`, seconds since the epoch.
    pub last_modified: Option<i64>,
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// User metadata (`x-amz-meta-*` without the prefix).
    pub metadata: BTreeMap<String, String>,
    /// The bytes.
    pub body: Body,
}

impl fmt::Debug for GetAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GetAnswer")
            .field("content_length", &self.content_length)
            .field("etag", &self.etag)
            .finish_non_exhaustive()
    }
}

/// One page of a listing.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    /// The objects of the page.
    pub objects: Vec<ObjectInfo>,
    /// Token of the next page, if there is one.
    pub next: Option<String>,
}

/// A GET: the whole object (with its stored checksums), or the inclusive byte range `range`
/// only if the object's ETag is still `if_match`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetRequest<'a> {
    /// The key.
    pub key: &'a str,
    /// `first..=last`, or `None` for the whole object.
    pub range: Option<(u64, u64)>,
    /// `If-Match`: the ETag the object must still have (`412` otherwise: [`FetchError::Changed`]).
    pub if_match: Option<&'a str>,
}

/// Upstream S3 as the cache uses it: one attempt per call, errors as [`FetchError`]s.
#[async_trait]
pub trait ObjectClient: Send + Sync + fmt::Debug {
    /// `HeadObject`.
    async fn head(&self, bucket: &str, key: &str) -> Result<ObjectInfo, FetchError>;
    /// One `ListObjectsV2` page of `prefix`, from `token`.
    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        token: Option<String>,
    ) -> Result<ListPage, FetchError>;
    /// `GetObject`.
    async fn get(&self, bucket: &str, req: GetRequest<'_>) -> Result<GetAnswer, FetchError>;
}

/// The aws-sdk-s3 implementation. Give it a client without the SDK's retry (the caller retries).
#[derive(Debug, Clone)]
pub struct SdkClient {
    client: Client,
}

impl SdkClient {
    /// Over `client`.
    #[must_use]
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

/// Maps an SDK error: S3's own errors keep status and code (412 is [`FetchError::Changed`]),
/// the rest (network, timeout) are [`FetchError::Unavailable`].
fn from_sdk<E>(e: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> FetchError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match e {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            if status == 412 {
                return FetchError::Changed;
            }
            let code = match (se.err().code(), status) {
                (Some("NotFound"), _) | (None, 404) => "NoSuchKey".into(),
                (Some(c), _) => c.to_string(),
                (None, 403) => "AccessDenied".into(),
                (None, _) => "InternalError".into(),
            };
            FetchError::Upstream {
                status,
                code,
                message: se.err().message().unwrap_or("").to_string(),
            }
        }
        other => FetchError::Unavailable(DisplayErrorContext(other).to_string()),
    }
}

/// A body cut mid-way.
pub(crate) fn body_cut(e: &dyn std::error::Error) -> FetchError {
    FetchError::Unavailable(format!("body cut: {}", DisplayErrorContext(e)))
}

fn sdk_body(body: ByteStream) -> Body {
    futures::stream::try_unfold(body, |mut b| async move {
        match b.try_next().await {
            Ok(Some(chunk)) => Ok(Some((chunk, b))),
            Ok(None) => Ok(None),
            Err(e) => Err(body_cut(&e)),
        }
    })
    .boxed()
}

/// Asks upstream for its stored checksums (`x-amz-checksum-mode: ENABLED`). The header is set
/// on the request rather than through the SDK's `checksum_mode`, which would also make the SDK
/// verify the body: we verify it ourselves (and would otherwise compute the CRC twice, and see a
/// mismatch reported as a cut body).
fn ask_for_checksums(req: &mut aws_sdk_s3::config::http::HttpRequest) {
    req.headers_mut().insert("x-amz-checksum-mode", "ENABLED");
}

/// The full-object CRC in a `GetObject` answer, if there is one.
fn full_object_crc(out: &GetObjectOutput) -> Option<FullObjectCrc> {
    FullObjectCrc::from_response(
        out.checksum_crc64_nvme(),
        out.checksum_crc32_c(),
        out.checksum_crc32(),
        matches!(
            out.checksum_type(),
            Some(aws_sdk_s3::types::ChecksumType::Composite)
        ),
    )
}

fn size(n: Option<i64>) -> u64 {
    u64::try_from(n.unwrap_or(0)).unwrap_or(0)
}

#[async_trait]
impl ObjectClient for SdkClient {
    async fn head(&self, bucket: &str, key: &str) -> Result<ObjectInfo, FetchError> {
        let out = self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| from_sdk(&e))?;
        Ok(ObjectInfo {
            key: key.to_string(),
            size: size(out.content_length),
            etag: out.e_tag.unwrap_or_default(),
        })
    }

    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        token: Option<String>,
    ) -> Result<ListPage, FetchError> {
        let page = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_continuation_token(token)
            .send()
            .await
            .map_err(|e| from_sdk(&e))?;
        let objects = page
            .contents()
            .iter()
            .filter_map(|o| {
                Some(ObjectInfo {
                    key: o.key()?.to_string(),
                    size: size(o.size()),
                    etag: o.e_tag().unwrap_or_default().to_string(),
                })
            })
            .collect();
        let next = page
            .next_continuation_token()
            .filter(|_| page.is_truncated() == Some(true))
            .map(str::to_string);
        Ok(ListPage { objects, next })
    }

    async fn get(&self, bucket: &str, req: GetRequest<'_>) -> Result<GetAnswer, FetchError> {
        let mut b = self.client.get_object().bucket(bucket).key(req.key);
        if let Some((first, last)) = req.range {
            b = b.range(format!("bytes={first}-{last}"));
        }
        if let Some(etag) = req.if_match {
            b = b.if_match(etag);
        }
        let r = if req.range.is_none() {
            b.customize().mutate_request(ask_for_checksums).send().await
        } else {
            b.send().await
        };
        let out = r.map_err(|e| from_sdk(&e))?;
        let crc = full_object_crc(&out);
        Ok(GetAnswer {
            content_length: size(out.content_length),
            etag: out.e_tag.unwrap_or_default(),
            crc,
            last_modified: out
                .last_modified
                .as_ref()
                .map(aws_sdk_s3::primitives::DateTime::secs),
            content_type: out.content_type,
            metadata: out
                .metadata
                .map(|m| m.into_iter().collect())
                .unwrap_or_default(),
            body: sdk_body(out.body),
        })
    }
}

/// One object of a [`FakeClient`].
#[derive(Debug, Clone)]
pub struct FakeObject {
    /// The bytes.
    pub body: Bytes,
    /// ETag, with quotes (by [`FakeClient::put`]: the MD5 of the bytes, as S3 gives).
    pub etag: String,
    /// The CRC-64/NVME S3 keeps, base64 (by [`FakeClient::put`]: of the bytes), or none.
    pub crc64nvme: Option<String>,
    /// `Last-Modified`, seconds since the epoch.
    pub last_modified: i64,
}

/// What a [`FakeClient`] or [`FailureClient`] was asked, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// A HEAD of the key.
    Head(String),
    /// A LIST page of the prefix.
    List(String),
    /// A GET of the key, whole (`None`) or of `first..=last`.
    Get(String, Option<(u64, u64)>),
}

/// A **fake** upstream for tests, not S3: one bucket of objects in memory, answering HEAD, LIST
/// (one page) and GET (whole, with the object's CRC-64/NVME when it has one; or a range, with
/// `If-Match`) the way S3 does, in chunks of 64 KiB, and logging every call.
#[derive(Debug, Default)]
pub struct FakeClient {
    objects: Mutex<BTreeMap<String, FakeObject>>,
    calls: Mutex<Vec<Call>>,
}

const FAKE_CHUNK: usize = 64 << 10;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl FakeClient {
    /// An empty bucket.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `body` as `key` with S3's ETag (MD5) and CRC-64/NVME, last modified at `at`;
    /// returns the ETag.
    pub fn put(&self, key: &str, body: impl Into<Bytes>, at: i64) -> String {
        let body = body.into();
        let etag = format!("\"{}\"", hex::encode(Md5::digest(&body)));
        let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc64Nvme, &body);
        let obj = FakeObject {
            body,
            etag: etag.clone(),
            crc64nvme: Some(base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())),
            last_modified: at,
        };
        self.put_object(key, obj);
        etag
    }

    /// Stores `obj` as `key` as it is.
    pub fn put_object(&self, key: &str, obj: FakeObject) {
        lock(&self.objects).insert(key.to_string(), obj);
    }

    /// Every call so far, in order.
    #[must_use]
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.calls).clone()
    }

    fn log(&self, c: Call) {
        lock(&self.calls).push(c);
    }

    fn object(&self, key: &str) -> Result<FakeObject, FetchError> {
        lock(&self.objects)
            .get(key)
            .cloned()
            .ok_or_else(|| FetchError::Upstream {
                status: 404,
                code: "NoSuchKey".into(),
                message: "The specified key does not exist.".into(),
            })
    }
}

fn chunked(body: Bytes) -> Body {
    let chunks: Vec<Result<Bytes, FetchError>> = (0..body.len())
        .step_by(FAKE_CHUNK)
        .map(|a| Ok(body.slice(a..(a + FAKE_CHUNK).min(body.len()))))
        .collect();
    futures::stream::iter(chunks).boxed()
}

#[async_trait]
impl ObjectClient for FakeClient {
    async fn head(&self, _bucket: &str, key: &str) -> Result<ObjectInfo, FetchError> {
        self.log(Call::Head(key.to_string()));
        let o = self.object(key)?;
        Ok(ObjectInfo {
            key: key.to_string(),
            size: o.body.len() as u64,
            etag: o.etag,
        })
    }

    async fn list_page(
        &self,
        _bucket: &str,
        prefix: &str,
        _token: Option<String>,
    ) -> Result<ListPage, FetchError> {
        self.log(Call::List(prefix.to_string()));
        let objects = lock(&self.objects)
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, o)| ObjectInfo {
                key: k.clone(),
                size: o.body.len() as u64,
                etag: o.etag.clone(),
            })
            .collect();
        Ok(ListPage {
            objects,
            next: None,
        })
    }

    async fn get(&self, _bucket: &str, req: GetRequest<'_>) -> Result<GetAnswer, FetchError> {
        self.log(Call::Get(req.key.to_string(), req.range));
        let o = self.object(req.key)?;
        if req.if_match.is_some_and(|e| e != o.etag) {
            return Err(FetchError::Changed);
        }
        let (body, crc) = match req.range {
            None => (
                o.body.clone(),
                FullObjectCrc::from_response(o.crc64nvme.as_deref(), None, None, false),
            ),
            Some((first, last)) => {
                let len = o.body.len() as u64;
                if first > last || first >= len {
                    return Err(FetchError::Upstream {
                        status: 416,
                        code: "InvalidRange".into(),
                        message: "The requested range is not satisfiable".into(),
                    });
                }
                let end = usize::try_from(last.min(len - 1) + 1).unwrap_or(usize::MAX);
                let start = usize::try_from(first).unwrap_or(usize::MAX);
                (o.body.slice(start..end), None)
            }
        };
        Ok(GetAnswer {
            content_length: body.len() as u64,
            etag: o.etag,
            crc,
            last_modified: Some(o.last_modified),
            content_type: Some("application/octet-stream".into()),
            metadata: BTreeMap::new(),
            body: chunked(body),
        })
    }
}

/// A failure to inject into one call of a [`FailureClient`].
#[derive(Debug)]
pub enum Fault {
    /// Fail the call with this error.
    Fail(FetchError),
    /// Answer, but cut the body after this many bytes.
    CutBody(u64),
    /// Answer, with the byte at this offset of the body flipped (a corruption on the way).
    FlipByte(u64),
}

type Rule = Box<dyn FnMut(&Call) -> Option<Fault> + Send>;

/// A **fake**'s wrapper for tests: passes each call to `inner` unless its rule, asked with the
/// call, returns a [`Fault`] to inject instead. Counts the faults it injected.
pub struct FailureClient<C> {
    inner: C,
    rule: Mutex<Rule>,
    injected: AtomicUsize,
}

impl<C: fmt::Debug> fmt::Debug for FailureClient<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FailureClient")
            .field("inner", &self.inner)
            .field("injected", &self.injected)
            .finish_non_exhaustive()
    }
}

impl<C> FailureClient<C> {
    /// `inner`, with faults where `rule` says.
    pub fn new(inner: C, rule: impl FnMut(&Call) -> Option<Fault> + Send + 'static) -> Self {
        Self {
            inner,
            rule: Mutex::new(Box::new(rule)),
            injected: AtomicUsize::new(0),
        }
    }

    /// The wrapped client.
    pub fn inner(&self) -> &C {
        &self.inner
    }

    /// Faults injected so far.
    pub fn injected(&self) -> usize {
        self.injected.load(Ordering::SeqCst)
    }

    fn fault(&self, call: &Call) -> Option<Fault> {
        let f = (lock(&self.rule))(call);
        if f.is_some() {
            self.injected.fetch_add(1, Ordering::SeqCst);
        }
        f
    }
}

fn damaged(body: Body, fault: Fault) -> Body {
    let mut at = 0_u64;
    body.scan(false, move |done, chunk| {
        let item = match (&fault, chunk) {
            _ if *done => None,
            (_, Err(e)) => Some(Err(e)),
            (Fault::CutBody(n), Ok(c)) if at + c.len() as u64 > *n => {
                *done = true;
                Some(Err(FetchError::Unavailable(format!(
                    "body cut: injected after {n} bytes"
                ))))
            }
            (Fault::FlipByte(n), Ok(c)) if (at..at + c.len() as u64).contains(n) => {
                let mut v = c.to_vec();
                let i = usize::try_from(n - at).unwrap_or(0);
                v[i] ^= 0x01;
                Some(Ok(Bytes::from(v)))
            }
            (_, Ok(c)) => Some(Ok(c)),
        };
        if let Some(Ok(c)) = &item {
            at += c.len() as u64;
        }
        std::future::ready(item)
    })
    .boxed()
}

#[async_trait]
impl<C: ObjectClient> ObjectClient for FailureClient<C> {
    async fn head(&self, bucket: &str, key: &str) -> Result<ObjectInfo, FetchError> {
        match self.fault(&Call::Head(key.to_string())) {
            Some(Fault::Fail(e)) => Err(e),
            _ => self.inner.head(bucket, key).await,
        }
    }

    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        token: Option<String>,
    ) -> Result<ListPage, FetchError> {
        match self.fault(&Call::List(prefix.to_string())) {
            Some(Fault::Fail(e)) => Err(e),
            _ => self.inner.list_page(bucket, prefix, token).await,
        }
    }

    async fn get(&self, bucket: &str, req: GetRequest<'_>) -> Result<GetAnswer, FetchError> {
        match self.fault(&Call::Get(req.key.to_string(), req.range)) {
            Some(Fault::Fail(e)) => Err(e),
            Some(f) => {
                let mut a = self.inner.get(bucket, req).await?;
                a.body = damaged(a.body, f);
                Ok(a)
            }
            None => self.inner.get(bucket, req).await,
        }
    }
}
