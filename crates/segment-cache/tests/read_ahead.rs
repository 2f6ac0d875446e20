//! Segment-aware read-ahead on the request path (`CacheS3::get_object`), without sockets. The
//! upstream is a **fake**: `FakeClient` keeps objects in memory and logs every call,
//! `FailureClient` injects faults, and `Gated` (below) holds chosen GETs back and measures how
//! many are in flight. The keys follow Milvus 2.3.5's layout
//! (`../shared/fixtures/milvus-2.3.5-bucket-layout.txt`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt as _;
use s3s::S3;
use s3s::dto::{GetObjectInput, StreamingBlob};
use segment_cache::object_client::{
    Call, FailureClient, FakeClient, Fault, GetAnswer, GetRequest, ListPage, ObjectClient,
};
use segment_cache::readahead::StatsSnapshot;
use segment_cache::s3::{CacheS3, ReadAhead};
use segment_cache::store::Store;
use segment_cache::upstream::{FetchError, ObjectInfo, Upstream};

mod common;
use common::{BUCKET, request};
const T0: i64 = 1_735_689_600;

/// Segment 3 of collection 1, partition 2: the file a query node reads first, and the rest.
const TRIGGER: &str = "files/insert_log/1/2/3/0/10";
const REST_OF_3: [&str; 5] = [
    "files/insert_log/1/2/3/1/11",
    "files/insert_log/1/2/3/100/12",
    "files/insert_log/1/2/3/101/13",
    "files/stats_log/1/2/3/100/1",
    "files/delta_log/1/2/3/14",
];
/// Another segment of the same partition, and segment 3's index build 9.
const OTHERS: [&str; 5] = [
    "files/insert_log/1/2/4/0/20",
    "files/stats_log/1/2/4/100/1",
    "files/index_files/9/1/2/3/IVF_FLAT_0",
    "files/index_files/9/1/2/3/IVF_FLAT_1",
    "files/index_files/9/1/2/3/SLICE_META",
];

fn data(n: usize, seed: usize) -> Vec<u8> {
    (0..n).map(|i| ((i + seed) * 7 % 251) as u8).collect()
}

/// Puts segment 3, segment 4 and segment 3's index into `fake`; file `i` has 1000 * (i + 1)
/// bytes.
fn fill(fake: &FakeClient) {
    for (i, k) in std::iter::once(TRIGGER)
        .chain(REST_OF_3)
        .chain(OTHERS)
        .enumerate()
    {
        fake.put(k, data(1000 * (i + 1), i), T0);
    }
}

fn prefixes_of_3() -> Vec<Call> {
    ["insert_log", "stats_log", "delta_log"]
        .iter()
        .map(|k| Call::List(format!("files/{k}/1/2/3/")))
        .collect()
}

struct Rig {
    cache: Arc<CacheS3>,
    store: Arc<Store>,
    _dir: tempfile::TempDir,
}

fn rig(client: Arc<dyn ObjectClient>, read_ahead: Option<ReadAhead>) -> Rig {
    let (store, dir) = common::temp_store();
    let mut cache = CacheS3::new(
        store.clone(),
        Upstream::with_client(client, BUCKET.into()),
        1 << 30,
        Duration::ZERO,
        None,
    );
    if let Some(r) = read_ahead {
        cache = cache.with_read_ahead(r);
    }
    Rig {
        cache: Arc::new(cache),
        store,
        _dir: dir,
    }
}

async fn get(cache: &CacheS3, key: &str) -> Vec<u8> {
    let req = request(
        GetObjectInput {
            bucket: BUCKET.into(),
            key: key.into(),
            ..Default::default()
        },
        key,
    );
    let out = cache.get_object(req).await.expect("GET").output;
    body(out.body).await
}

async fn body(b: Option<StreamingBlob>) -> Vec<u8> {
    let chunks: Vec<Bytes> = b.unwrap().try_collect().await.unwrap();
    chunks.concat()
}

fn gets_of(calls: &[Call], key: &str) -> usize {
    calls
        .iter()
        .filter(|c| matches!(c, Call::Get(k, _) if k == key))
        .count()
}

#[tokio::test]
async fn the_first_miss_of_a_segment_fetches_its_other_files_and_nothing_else() {
    let fake = Arc::new(FakeClient::new());
    fill(&fake);
    let r = rig(fake.clone(), Some(ReadAhead::new(4, u64::MAX)));
    assert_eq!(get(&r.cache, TRIGGER).await, data(1000, 0));
    r.cache.read_ahead_idle().await;

    let calls = fake.calls();
    let lists: Vec<Call> = calls
        .iter()
        .filter(|c| matches!(c, Call::List(_)))
        .cloned()
        .collect();
    assert_eq!(
        lists,
        prefixes_of_3(),
        "one LIST of each of the segment's prefixes"
    );
    for k in std::iter::once(TRIGGER).chain(REST_OF_3) {
        assert_eq!(gets_of(&calls, k), 1, "{k}: one GET, whole");
        assert!(r.store.peek(k).is_some(), "{k} is cached");
    }
    for k in OTHERS {
        assert_eq!(gets_of(&calls, k), 0, "{k} is not segment 3's binlog group");
        assert!(r.store.peek(k).is_none());
    }
    assert_eq!(calls.len(), 3 + 6, "{calls:?}");
    let bytes: u64 = (2..=6).map(|i| 1000 * i).sum();
    assert_eq!(
        r.cache.read_ahead_stats(),
        Some(StatsSnapshot {
            listed: 1,
            fetched: 5,
            fetched_bytes: bytes,
            ..Default::default()
        })
    );

    // What Milvus reads next is a hit: no call upstream.
    for (i, k) in REST_OF_3.iter().enumerate() {
        assert_eq!(get(&r.cache, k).await, data(1000 * (i + 2), i + 1));
    }
    assert_eq!(fake.calls().len(), 9);

    // Each group once: a later miss in segment 3 is fetched alone, with no second LIST.
    r.store.invalidate(REST_OF_3[0]);
    get(&r.cache, REST_OF_3[0]).await;
    r.cache.read_ahead_idle().await;
    let calls = fake.calls();
    assert_eq!(calls.len(), 10);
    assert_eq!(calls[9], Call::Get(REST_OF_3[0].into(), None));
}

#[tokio::test]
async fn an_index_file_reads_ahead_the_rest_of_its_build_only() {
    let fake = Arc::new(FakeClient::new());
    fill(&fake);
    let r = rig(fake.clone(), Some(ReadAhead::new(4, u64::MAX)));
    get(&r.cache, OTHERS[2]).await;
    r.cache.read_ahead_idle().await;
    let calls = fake.calls();
    assert_eq!(
        calls.iter().filter(|c| matches!(c, Call::List(_))).count(),
        1
    );
    assert!(calls.contains(&Call::List("files/index_files/9/1/2/3/".into())));
    assert!(r.store.peek(OTHERS[3]).is_some() && r.store.peek(OTHERS[4]).is_some());
    assert!(r.store.peek(TRIGGER).is_none() && r.store.peek(OTHERS[0]).is_none());
    assert_eq!(calls.len(), 1 + 3, "{calls:?}");
}

#[tokio::test]
async fn without_read_ahead_a_miss_fetches_only_itself() {
    let fake = Arc::new(FakeClient::new());
    fill(&fake);
    let r = rig(fake.clone(), None);
    get(&r.cache, TRIGGER).await;
    assert_eq!(fake.calls(), [Call::Get(TRIGGER.into(), None)]);
    assert_eq!(r.cache.read_ahead_stats(), None);
}

#[tokio::test]
async fn failing_read_ahead_fails_nothing_and_is_counted() {
    let failing = REST_OF_3[2];
    let fake = FakeClient::new();
    fill(&fake);
    let up = Arc::new(FailureClient::new(fake, move |c| match c {
        Call::Get(k, _) if k == failing => Some(Fault::Fail(FetchError::Upstream {
            status: 403,
            code: "AccessDenied".into(),
            message: "Access Denied".into(),
        })),
        _ => None,
    }));
    let r = rig(up.clone(), Some(ReadAhead::new(4, u64::MAX)));
    assert_eq!(get(&r.cache, TRIGGER).await, data(1000, 0));
    r.cache.read_ahead_idle().await;
    let s = r.cache.read_ahead_stats().unwrap();
    assert_eq!((s.fetched, s.failed), (4, 1), "{s:?}");
    assert!(r.store.peek(failing).is_none());
    for k in REST_OF_3.iter().filter(|k| **k != failing) {
        assert!(r.store.peek(k).is_some(), "{k}");
    }

    // A failing LIST: the GET is served all the same, and the failure counted.
    let fake = FakeClient::new();
    fill(&fake);
    let up = Arc::new(FailureClient::new(fake, |c| match c {
        Call::List(p) if p.contains("stats_log") => {
            Some(Fault::Fail(FetchError::Unavailable("injected".into())))
        }
        _ => None,
    }));
    let r = rig(up.clone(), Some(ReadAhead::new(4, u64::MAX)));
    assert_eq!(get(&r.cache, TRIGGER).await, data(1000, 0));
    r.cache.read_ahead_idle().await;
    let s = r.cache.read_ahead_stats().unwrap();
    assert_eq!((s.listed, s.list_failed, s.fetched), (0, 1, 0), "{s:?}");
    assert_eq!(r.store.usage().3, 1, "only the GET's own object is cached");
}

/// A **fake**'s wrapper: GETs of `held` wait for `release` (and say they arrived on `arrived`);
/// every GET but the tests' own (the triggers) takes `delay` and is counted in flight.
#[derive(Debug)]
struct Gated {
    inner: FakeClient,
    held: Option<String>,
    arrived: tokio::sync::Notify,
    release: tokio::sync::Semaphore,
    delay: Duration,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl Gated {
    fn new(held: Option<&str>, delay: Duration) -> Self {
        let inner = FakeClient::new();
        fill(&inner);
        Self {
            inner,
            held: held.map(str::to_string),
            arrived: tokio::sync::Notify::new(),
            release: tokio::sync::Semaphore::new(0),
            delay,
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        }
    }
}

#[async_trait]
impl ObjectClient for Gated {
    async fn head(&self, bucket: &str, key: &str) -> Result<ObjectInfo, FetchError> {
        self.inner.head(bucket, key).await
    }
    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        token: Option<String>,
    ) -> Result<ListPage, FetchError> {
        self.inner.list_page(bucket, prefix, token).await
    }
    async fn get(&self, bucket: &str, req: GetRequest<'_>) -> Result<GetAnswer, FetchError> {
        if self.held.as_deref() == Some(req.key) {
            self.arrived.notify_one();
            let _permit = self.release.acquire().await;
        }
        if req.key != TRIGGER && req.key != OTHERS[0] {
            let n = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight.fetch_max(n, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
        self.inner.get(bucket, req).await
    }
}

#[tokio::test]
async fn a_get_of_a_file_being_read_ahead_waits_for_that_fetch() {
    let b = REST_OF_3[3];
    let up = Arc::new(Gated::new(Some(b), Duration::ZERO));
    let r = rig(up.clone(), Some(ReadAhead::new(4, u64::MAX)));
    get(&r.cache, TRIGGER).await;
    // Read-ahead's GET of `b` is upstream now, held.
    tokio::time::timeout(Duration::from_secs(10), up.arrived.notified())
        .await
        .expect("read-ahead asked for b");
    let cache = r.cache.clone();
    let milvus = tokio::spawn(async move { get(&cache, b).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !milvus.is_finished(),
        "the GET waits for the fetch in flight"
    );
    up.release.add_permits(1);
    assert_eq!(milvus.await.unwrap(), data(5000, 4));
    r.cache.read_ahead_idle().await;
    assert_eq!(
        gets_of(&up.inner.calls(), b),
        1,
        "fetched once, by read-ahead"
    );
}

#[tokio::test]
async fn read_ahead_keeps_to_its_bounds() {
    // Two fetches in flight at most, across segments 3 and 4.
    let up = Arc::new(Gated::new(None, Duration::from_millis(30)));
    let r = rig(up.clone(), Some(ReadAhead::new(2, u64::MAX)));
    get(&r.cache, TRIGGER).await;
    get(&r.cache, OTHERS[0]).await;
    r.cache.read_ahead_idle().await;
    assert_eq!(r.cache.read_ahead_stats().unwrap().fetched, 5 + 1);
    assert_eq!(
        up.max_in_flight.load(Ordering::SeqCst),
        2,
        "read-ahead keeps max_concurrent fetches in flight, no more"
    );

    // At most max_bytes_per_segment, smallest files first: 2000 + 3000 fit in 5500, 4000 not.
    let fake = Arc::new(FakeClient::new());
    fill(&fake);
    let r = rig(fake.clone(), Some(ReadAhead::new(2, 5500)));
    get(&r.cache, TRIGGER).await;
    r.cache.read_ahead_idle().await;
    let s = r.cache.read_ahead_stats().unwrap();
    assert_eq!((s.fetched, s.fetched_bytes), (2, 5000), "{s:?}");
    assert!(r.store.peek(REST_OF_3[0]).is_some() && r.store.peek(REST_OF_3[1]).is_some());
    assert!(r.store.peek(REST_OF_3[2]).is_none());
}

#[tokio::test]
async fn learning_fields_reads_ahead_what_milvus_reads_and_never_an_unread_field() {
    // Segments 3 and 4 with four fields each; Milvus (as for an IVF_FLAT index on field 101)
    // reads the stats log and fields 0, 1, 100 of each, never 101.
    let fake = Arc::new(FakeClient::new());
    let seg = |s: u32| {
        [
            format!("files/stats_log/1/2/{s}/100/1"),
            format!("files/insert_log/1/2/{s}/0/{s}0"),
            format!("files/insert_log/1/2/{s}/1/{s}1"),
            format!("files/insert_log/1/2/{s}/100/{s}2"),
            format!("files/insert_log/1/2/{s}/101/{s}3"),
        ]
    };
    for s in [3, 4] {
        for (i, k) in seg(s).iter().enumerate() {
            fake.put(k, data(1000 * (i + 1), i), T0);
        }
    }
    let r = rig(
        fake.clone(),
        Some(ReadAhead::new(4, u64::MAX).learning_fields(Duration::from_secs(600))),
    );
    // Segment 3 first: nothing is known of the collection, so its insert logs wait for reads.
    for k in &seg(3)[..4] {
        get(&r.cache, k).await;
        r.cache.read_ahead_idle().await;
    }
    // Segment 4: its stats log's miss reads ahead fields 0, 1, 100, not 101.
    get(&r.cache, &seg(4)[0]).await;
    r.cache.read_ahead_idle().await;
    for k in &seg(4)[1..4] {
        assert!(
            r.store.peek(k).is_some(),
            "{k}: a field Milvus read in the collection is read ahead"
        );
    }
    for s in [3, 4] {
        assert!(
            r.store.peek(&seg(s)[4]).is_none(),
            "field 101 was never read: not fetched"
        );
        assert_eq!(gets_of(&fake.calls(), &seg(s)[4]), 0);
    }
    let calls_before = fake.calls().len();
    for k in &seg(4)[1..4] {
        get(&r.cache, k).await;
    }
    assert_eq!(
        fake.calls().len(),
        calls_before,
        "segment 4's reads were hits"
    );

    // With every field (`ReadAhead::new` alone), field 101 is fetched for both segments.
    let all = rig(fake.clone(), Some(ReadAhead::new(4, u64::MAX)));
    get(&all.cache, &seg(3)[0]).await;
    get(&all.cache, &seg(4)[0]).await;
    all.cache.read_ahead_idle().await;
    assert!(all.store.peek(&seg(3)[4]).is_some() && all.store.peek(&seg(4)[4]).is_some());
}

#[tokio::test]
async fn a_fields_first_read_fetches_it_for_the_segments_read_ahead_before() {
    // Milvus loads segments side by side: all stats logs first (bloom filters), then fields.
    let fake = Arc::new(FakeClient::new());
    let segs = [3, 4, 5];
    for s in segs {
        fake.put(&format!("files/stats_log/1/2/{s}/100/1"), data(100, s), T0);
        fake.put(
            &format!("files/insert_log/1/2/{s}/100/{s}2"),
            data(2000, s),
            T0,
        );
        fake.put(
            &format!("files/insert_log/1/2/{s}/101/{s}3"),
            data(9000, s),
            T0,
        );
    }
    let r = rig(
        fake.clone(),
        Some(ReadAhead::new(4, u64::MAX).learning_fields(Duration::from_secs(600))),
    );
    for s in segs {
        get(&r.cache, &format!("files/stats_log/1/2/{s}/100/1")).await;
    }
    r.cache.read_ahead_idle().await;
    assert_eq!(
        r.cache.read_ahead_stats().unwrap().fetched,
        0,
        "no field is known yet"
    );
    // The first read of field 100 (segment 3's) fetches segments 4's and 5's at once.
    get(&r.cache, "files/insert_log/1/2/3/100/32").await;
    r.cache.read_ahead_idle().await;
    let s = r.cache.read_ahead_stats().unwrap();
    assert_eq!((s.fetched, s.fetched_bytes), (2, 4000), "{s:?}");
    for seg in [4, 5] {
        assert!(
            r.store
                .peek(&format!("files/insert_log/1/2/{seg}/100/{seg}2"))
                .is_some()
        );
        assert!(
            r.store
                .peek(&format!("files/insert_log/1/2/{seg}/101/{seg}3"))
                .is_none()
        );
    }
}
