//! Segment-aware read-ahead: the bookkeeping (which segment a key belongs to, what to list, what
//! to fetch, which segments were read ahead already, the bound), tested without sockets. The
//! fetches themselves go through the request path's single-flight fetch (`crate::s3`).
//!
//! Milvus 2.3 keys (`../shared/fixtures/milvus-2.3.5-bucket-layout.txt`):
//! - `<root>/insert_log/<collection>/<partition>/<segment>/<field>/<log>`
//! - `<root>/stats_log/<collection>/<partition>/<segment>/<field>/<log>`
//! - `<root>/delta_log/<collection>/<partition>/<segment>/<log>`
//! - `<root>/index_files/<build>/<version>/<partition>/<segment>/<file>`
//!
//! A query node loading a segment reads its binlogs, stats and delta logs, and the files of each
//! index build of it. The key of a binlog names the collection but not the index builds; the key
//! of an index file names its build but not the collection. So a segment has one read-ahead
//! *group* for its binlogs (three prefixes listed) and one per index build (one prefix): the
//! first miss in a group lists it and fetches the rest.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::metric_names;
use crate::upstream::ObjectInfo;

/// The files of a segment that are read ahead together.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Group {
    /// The insert, stats and delta logs of a segment.
    Binlogs {
        /// Everything before `insert_log/` (Milvus's `rootPath`), with its trailing `/`, or empty.
        root: String,
        /// Collection id.
        collection: String,
        /// Partition id.
        partition: String,
        /// Segment id.
        segment: String,
    },
    /// The files of one index build of a segment.
    Index {
        /// Everything before `index_files/`, with its trailing `/`, or empty.
        root: String,
        /// Index build id.
        build: String,
        /// Index version.
        version: String,
        /// Partition id.
        partition: String,
        /// Segment id.
        segment: String,
    },
}

fn is_id(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

impl Group {
    /// The group of a Milvus segment file, or `None` for any other key.
    #[must_use]
    pub fn of(key: &str) -> Option<Group> {
        let parts: Vec<&str> = key.split('/').collect();
        let root = |i: usize| {
            if i == 0 {
                String::new()
            } else {
                format!("{}/", parts[..i].join("/"))
            }
        };
        for (i, p) in parts.iter().enumerate() {
            let rest = &parts[i + 1..];
            let last_ok = rest.last().is_some_and(|l| !l.is_empty());
            match *p {
                "insert_log" | "stats_log" if rest.len() == 5 && last_ok => {}
                "delta_log" if rest.len() == 4 && last_ok => {}
                "index_files" if rest.len() == 5 && last_ok => {
                    if rest[..4].iter().all(|s| is_id(s)) {
                        return Some(Group::Index {
                            root: root(i),
                            build: rest[0].into(),
                            version: rest[1].into(),
                            partition: rest[2].into(),
                            segment: rest[3].into(),
                        });
                    }
                    continue;
                }
                _ => continue,
            }
            if rest[..3].iter().all(|s| is_id(s)) {
                return Some(Group::Binlogs {
                    root: root(i),
                    collection: rest[0].into(),
                    partition: rest[1].into(),
                    segment: rest[2].into(),
                });
            }
        }
        None
    }

    /// The prefixes that list every file of the group (each ends with `/`).
    #[must_use]
    pub fn prefixes(&self) -> Vec<String> {
        match self {
            Group::Binlogs {
                root,
                collection,
                partition,
                segment,
            } => ["insert_log", "stats_log", "delta_log"]
                .iter()
                .map(|kind| format!("{root}{kind}/{collection}/{partition}/{segment}/"))
                .collect(),
            Group::Index {
                root,
                build,
                version,
                partition,
                segment,
            } => vec![format!(
                "{root}index_files/{build}/{version}/{partition}/{segment}/"
            )],
        }
    }

    /// The segment id.
    #[must_use]
    pub fn segment(&self) -> &str {
        match self {
            Group::Binlogs { segment, .. } | Group::Index { segment, .. } => segment,
        }
    }
}

/// What to fetch of a listed group (pure): not the key that triggered it (its GET fetches it),
/// nor what `skip` says is cached already, nor objects over `max_object_size`; smallest first
/// (stats and scalar binlogs before vector binlogs: the most files soonest), and no more than
/// `max_bytes` in all (an object that would go over is left out, smaller ones after it may
/// still fit).
#[must_use]
pub fn plan(
    listed: Vec<ObjectInfo>,
    trigger: &str,
    skip: impl Fn(&ObjectInfo) -> bool,
    max_object_size: u64,
    max_bytes: u64,
) -> Vec<ObjectInfo> {
    let mut seen = HashSet::new();
    let mut objs: Vec<ObjectInfo> = listed
        .into_iter()
        .filter(|o| o.key != trigger && o.size <= max_object_size && seen.insert(o.key.clone()))
        .filter(|o| !skip(o))
        .collect();
    objs.sort_by(|a, b| a.size.cmp(&b.size).then_with(|| a.key.cmp(&b.key)));
    let mut total = 0_u64;
    objs.retain(|o| {
        let fits = total.saturating_add(o.size) <= max_bytes;
        if fits {
            total += o.size;
        }
        fits
    });
    objs
}

/// An insert log's collection and field: what a query node reads the same way for every sealed
/// segment of a collection (a field with an index that keeps its raw data is loaded from the
/// index, its `insert_log` files never read).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FieldOf {
    /// Everything before `insert_log/`, with its trailing `/`, or empty.
    root: String,
    /// Collection id.
    collection: String,
    /// Field id.
    field: String,
}

impl FieldOf {
    /// The collection and field of an `insert_log` key, or `None` for any other key.
    #[must_use]
    pub fn of(key: &str) -> Option<FieldOf> {
        let Some(Group::Binlogs {
            root, collection, ..
        }) = Group::of(key)
        else {
            return None;
        };
        // `<root>insert_log/<collection>/<partition>/<segment>/<field>/<log>`
        let mut rest = key[root.len()..].split('/');
        if rest.next() != Some("insert_log") {
            return None;
        }
        let field = rest.nth(3)?;
        is_id(field).then(|| FieldOf {
            root,
            collection,
            field: field.into(),
        })
    }
}

/// Insert-log fields remembered, and objects deferred, before the memory is cleared (then a
/// field is learned again from Milvus's next read of it).
const REMEMBERED_FIELDS: usize = 100_000;

/// Which `insert_log` fields Milvus reads, learned from its own GETs, per collection.
///
/// Why: a query node does not read every file of a segment. It loads an indexed field from its
/// index and skips that field's raw binlogs, the biggest files of a segment (IVF_FLAT keeps the
/// vectors: on the harness read-ahead of all fields fetched 2x the bytes Milvus read). The keys do
/// not say which fields are indexed, Milvus's reads do: the loader reads the same fields of every
/// sealed segment of a collection. So a group's insert logs are fetched ahead only for fields that
/// Milvus read in that collection within `memory`; the others are *deferred*, and fetched the
/// moment Milvus first reads that field (of any segment), for every segment deferred so far.
/// Stats and delta logs are always read and never deferred.
#[derive(Debug)]
pub struct FieldMemory {
    memory: Duration,
    state: Mutex<FieldState>,
}

#[derive(Debug, Default)]
struct FieldState {
    last_read: HashMap<FieldOf, Instant>,
    deferred: HashMap<FieldOf, Vec<ObjectInfo>>,
    deferred_objects: usize,
}

impl FieldMemory {
    /// A field counts as read for `memory` after Milvus's last GET of one of its insert logs.
    #[must_use]
    pub fn new(memory: Duration) -> Self {
        Self {
            memory,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FieldState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Milvus read `key` at `now`: remembers its field, and returns the objects deferred for that
    /// field, now due, but `key` itself (empty for keys that are not insert logs).
    pub fn read(&self, key: &str, now: Instant) -> Vec<ObjectInfo> {
        let Some(f) = FieldOf::of(key) else {
            return Vec::new();
        };
        let mut s = self.state();
        if s.last_read.len() >= REMEMBERED_FIELDS && !s.last_read.contains_key(&f) {
            s.last_read.clear();
        }
        let mut due = s.deferred.remove(&f).unwrap_or_default();
        s.deferred_objects -= due.len();
        s.last_read.insert(f, now);
        // The GET being served fetches its own key.
        due.retain(|o| o.key != key);
        due
    }

    /// Of a group's plan, what to fetch now: its stats and delta logs, and the insert logs of
    /// fields Milvus read within `memory`. The other insert logs wait for their field's first read.
    pub fn split(&self, plan: Vec<ObjectInfo>, now: Instant) -> Vec<ObjectInfo> {
        let mut s = self.state();
        let mut now_due = Vec::with_capacity(plan.len());
        for o in plan {
            let Some(f) = FieldOf::of(&o.key) else {
                now_due.push(o);
                continue;
            };
            let fresh = s
                .last_read
                .get(&f)
                .is_some_and(|t| now.saturating_duration_since(*t) <= self.memory);
            if fresh {
                now_due.push(o);
                continue;
            }
            if s.deferred_objects >= REMEMBERED_FIELDS {
                // Deferred objects of fields nobody reads pile up; forget them (a later read of
                // such a field is an ordinary miss).
                s.deferred.clear();
                s.deferred_objects = 0;
            }
            s.deferred_objects += 1;
            s.deferred.entry(f).or_default().push(o);
        }
        now_due
    }

    /// Objects deferred now (waiting for their field's first read).
    #[must_use]
    pub fn deferred(&self) -> usize {
        self.state().deferred_objects
    }
}

/// Groups remembered before the memory is cleared (then a group may be listed again; what it
/// fetched before is cached and skipped).
const REMEMBERED_GROUPS: usize = 100_000;

/// The groups read ahead already, so each is listed once.
#[derive(Debug, Default)]
pub struct Seen(Mutex<HashSet<Group>>);

impl Seen {
    /// True the first time `g` is seen.
    pub fn first(&self, g: &Group) -> bool {
        let mut s = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if s.contains(g) {
            return false;
        }
        if s.len() >= REMEMBERED_GROUPS {
            s.clear();
        }
        s.insert(g.clone());
        true
    }
}

/// Counters of what read-ahead did (also exported as metrics).
#[derive(Debug, Default)]
pub struct Stats {
    /// Groups listed.
    pub listed: AtomicU64,
    /// Groups whose listing failed.
    pub list_failed: AtomicU64,
    /// Objects fetched into the cache.
    pub fetched: AtomicU64,
    /// Bytes fetched into the cache.
    pub fetched_bytes: AtomicU64,
    /// Objects found cached when their turn came (a GET or the warm got there first).
    pub cached: AtomicU64,
    /// Objects passed through, not cached (no room, disk error, unverifiable).
    pub skipped: AtomicU64,
    /// Objects whose fetch failed.
    pub failed: AtomicU64,
}

/// A snapshot of [`Stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Groups listed.
    pub listed: u64,
    /// Groups whose listing failed.
    pub list_failed: u64,
    /// Objects fetched.
    pub fetched: u64,
    /// Bytes fetched.
    pub fetched_bytes: u64,
    /// Objects found cached.
    pub cached: u64,
    /// Objects passed through.
    pub skipped: u64,
    /// Objects that failed.
    pub failed: u64,
}

impl Stats {
    /// The counters now.
    #[must_use]
    pub fn snapshot(&self) -> StatsSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            listed: l(&self.listed),
            list_failed: l(&self.list_failed),
            fetched: l(&self.fetched),
            fetched_bytes: l(&self.fetched_bytes),
            cached: l(&self.cached),
            skipped: l(&self.skipped),
            failed: l(&self.failed),
        }
    }

    /// Counts one object's outcome (`fetched` with its `bytes`, `cached`, `skipped`, `error`).
    pub fn object(&self, result: &'static str, bytes: u64) {
        let c = match result {
            "fetched" => {
                self.fetched_bytes.fetch_add(bytes, Ordering::Relaxed);
                metrics::counter!(metric_names::READ_AHEAD_BYTES).increment(bytes);
                &self.fetched
            }
            "cached" => &self.cached,
            "skipped" => &self.skipped,
            _ => &self.failed,
        };
        c.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(metric_names::READ_AHEAD_OBJECTS, "result" => result).increment(1);
    }

    /// Counts one group's listing.
    pub fn group(&self, ok: bool) {
        if ok { &self.listed } else { &self.list_failed }.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(metric_names::READ_AHEAD_GROUPS,
            "result" => if ok { "listed" } else { "error" })
        .increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INSERT: &str = "files/insert_log/470691242109042850/470691242109042851/470691242109242867/101/470691242109242877";
    const INDEX: &str =
        "files/index_files/470691242109642936/1/470691242109042851/470691242109242867/IVF_FLAT_0";

    #[test]
    fn milvus_keys_map_to_their_segment_group() {
        let b = Group::of(INSERT).unwrap();
        assert_eq!(b.segment(), "470691242109242867");
        assert_eq!(
            b.prefixes(),
            [
                "files/insert_log/470691242109042850/470691242109042851/470691242109242867/",
                "files/stats_log/470691242109042850/470691242109042851/470691242109242867/",
                "files/delta_log/470691242109042850/470691242109042851/470691242109242867/",
            ]
        );
        // Stats and delta logs of the segment are the same group.
        let stats =
            "files/stats_log/470691242109042850/470691242109042851/470691242109242867/100/1";
        let delta = "files/delta_log/470691242109042850/470691242109042851/470691242109242867/4706";
        assert_eq!(Group::of(stats), Some(b.clone()));
        assert_eq!(Group::of(delta), Some(b.clone()));
        let i = Group::of(INDEX).unwrap();
        assert_eq!(i.segment(), "470691242109242867");
        assert_eq!(
            i.prefixes(),
            ["files/index_files/470691242109642936/1/470691242109042851/470691242109242867/"]
        );
        // Another root path, and none.
        assert_eq!(
            Group::of("a/b/insert_log/1/2/3/4/5").unwrap().prefixes()[0],
            "a/b/insert_log/1/2/3/"
        );
        assert_eq!(
            Group::of("index_files/1/2/3/4/f").unwrap().prefixes(),
            ["index_files/1/2/3/4/"]
        );
    }

    #[test]
    fn other_keys_have_no_group() {
        for k in [
            "files/insert_log/1/2/3/4",     // too short
            "files/insert_log/1/2/3/4/5/6", // too long
            "files/insert_log/1/x/3/4/5",   // not an id
            "files/insert_log/1/2/3/4/",    // a "directory"
            "files/delta_log/1/2/3/4/5",    // delta logs have no field level
            "files/index_files/1/2/3/4",    // too short
            "files/index_files/b/2/3/4/f",  // not an id
            "files/other/1/2/3/4/5",
            "backup/insert_log.txt",
            "",
        ] {
            assert_eq!(Group::of(k), None, "{k}");
        }
    }

    fn obj(key: &str, size: u64) -> ObjectInfo {
        ObjectInfo {
            key: key.into(),
            size,
            etag: "\"e\"".into(),
        }
    }

    #[test]
    fn the_plan_leaves_out_the_trigger_the_cached_the_too_big_and_what_is_over_budget() {
        let listed = vec![
            obj("t", 5),
            obj("big", 900),
            obj("c", 30),
            obj("a", 10),
            obj("cached", 1),
            obj("b", 20),
            obj("a", 10),
            obj("huge", 10_000),
        ];
        let keys = |p: Vec<ObjectInfo>| p.into_iter().map(|o| o.key).collect::<Vec<_>>();
        let skip = |o: &ObjectInfo| o.key == "cached";
        assert_eq!(
            keys(plan(listed.clone(), "t", skip, 1000, u64::MAX)),
            ["a", "b", "c", "big"]
        );
        // 10 + 20 fit in 35; 30 does not, 900 does not.
        assert_eq!(keys(plan(listed, "t", skip, 1000, 35)), ["a", "b"]);
    }

    #[test]
    fn each_group_is_first_once() {
        let s = Seen::default();
        let g = Group::of(INSERT).unwrap();
        assert!(s.first(&g));
        assert!(!s.first(&g));
        assert!(s.first(&Group::of(INDEX).unwrap()));
    }

    #[test]
    fn an_insert_log_names_its_collection_and_field() {
        let f = FieldOf::of(INSERT).unwrap();
        assert_eq!(
            (f.root.as_str(), f.collection.as_str(), f.field.as_str()),
            ("files/", "470691242109042850", "101")
        );
        let stats = "files/stats_log/1/2/3/100/1";
        for k in [
            stats,
            "files/delta_log/1/2/3/4",
            INDEX,
            "files/insert_log/1/2/3/x/5",
        ] {
            assert_eq!(FieldOf::of(k), None, "{k}");
        }
        // Same field of another segment, partition: the same field; another collection: not.
        assert_eq!(
            FieldOf::of("files/insert_log/1/2/3/101/5"),
            FieldOf::of("files/insert_log/1/9/8/101/6")
        );
        assert_ne!(
            FieldOf::of("files/insert_log/1/2/3/101/5"),
            FieldOf::of("files/insert_log/7/2/3/101/5")
        );
    }

    #[test]
    fn fields_milvus_has_not_read_wait_for_its_first_read_of_them() {
        let m = FieldMemory::new(Duration::from_secs(600));
        let t0 = Instant::now();
        let keys = |v: &[ObjectInfo]| v.iter().map(|o| o.key.clone()).collect::<Vec<_>>();
        // Milvus read field 0 of segment 3: of segment 4, field 0 and the stats and delta logs
        // are fetched now, fields 100 and 101 wait.
        assert!(m.read("files/insert_log/1/2/3/0/10", t0).is_empty());
        let seg4 = vec![
            obj("files/stats_log/1/2/4/100/1", 1),
            obj("files/delta_log/1/2/4/7", 1),
            obj("files/insert_log/1/2/4/0/20", 1),
            obj("files/insert_log/1/2/4/100/21", 1),
            obj("files/insert_log/1/2/4/101/22", 1),
        ];
        assert_eq!(
            keys(&m.split(seg4, t0)),
            [
                "files/stats_log/1/2/4/100/1",
                "files/delta_log/1/2/4/7",
                "files/insert_log/1/2/4/0/20"
            ]
        );
        assert_eq!(m.deferred(), 2);
        // Segment 5 too.
        m.split(vec![obj("files/insert_log/1/2/5/100/31", 1)], t0);
        // The first read of field 100 (of any segment) makes its deferred files due, once.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(
            keys(&m.read("files/insert_log/1/2/3/100/12", t1)),
            [
                "files/insert_log/1/2/4/100/21",
                "files/insert_log/1/2/5/100/31"
            ]
        );
        assert!(m.read("files/insert_log/1/2/6/100/41", t1).is_empty());
        // A deferred key that Milvus reads itself is its GET's to fetch.
        m.split(
            vec![
                obj("files/insert_log/1/2/8/1/61", 1),
                obj("files/insert_log/1/2/9/1/62", 1),
            ],
            t1,
        );
        assert_eq!(
            keys(&m.read("files/insert_log/1/2/8/1/61", t1)),
            ["files/insert_log/1/2/9/1/62"]
        );
        assert_eq!(
            m.deferred(),
            1,
            "field 101 still waits: Milvus never read it"
        );
        // Field 100 is known now: fetched at once for the next segment; another collection's
        // field 100 is not.
        let next = vec![
            obj("files/insert_log/1/2/7/100/51", 1),
            obj("files/insert_log/8/2/7/100/52", 1),
        ];
        assert_eq!(keys(&m.split(next, t1)), ["files/insert_log/1/2/7/100/51"]);
    }

    #[test]
    fn a_field_not_read_for_the_memory_waits_again() {
        let m = FieldMemory::new(Duration::from_secs(600));
        let t0 = Instant::now();
        m.read("files/insert_log/1/2/3/101/10", t0);
        let plan = || vec![obj("files/insert_log/1/2/4/101/20", 1)];
        assert_eq!(m.split(plan(), t0 + Duration::from_secs(600)).len(), 1);
        // After the memory (the index was built since, say): deferred, until read again.
        assert!(m.split(plan(), t0 + Duration::from_secs(601)).is_empty());
        assert_eq!(m.deferred(), 1);
        assert_eq!(
            m.read(
                "files/insert_log/1/2/9/101/90",
                t0 + Duration::from_secs(700)
            )
            .len(),
            1
        );
    }
}
