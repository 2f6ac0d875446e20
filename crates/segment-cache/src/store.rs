//! The cache directory on disk.
//!
//! Layout under `dir`:
//! - `objects/<2 hex>/<64 hex>` data and `<...>.meta` (JSON [`Entry`]); names are SHA-256 of keys;
//! - `tmp/` downloads in progress (emptied at start);
//! - `index.json` the LRU order, saved periodically and at shutdown;
//! - `access.log` keys read (see [`crate::accesslog`]), written by its own thread
//!   ([`crate::access_writer`]).
//!
//! An object becomes visible only after its bytes were verified, fsynced, and both files renamed
//! into place (meta first, data last): a crash leaves at worst an orphan that the start-up scan deletes.
//! The set of cached objects is always rebuilt from the `.meta` files at start; `index.json` only
//! restores the LRU order (lost or corrupt: file times are used).

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use thiserror::Error;

use crate::access_writer::AccessWriter;
use crate::accesslog;
use crate::index::{Entry, Index, NoRoom};
use crate::keys;

/// A store problem.
#[derive(Debug, Error)]
pub enum StoreError {
    /// File system error, with the path involved.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Options of a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Byte budget.
    pub capacity: u64,
    /// Keep an access log.
    pub access_log: bool,
    /// Compact the access log past this size.
    pub access_log_max: u64,
}

/// The cache directory with its in-memory index.
pub struct Store {
    dir: PathBuf,
    objects: PathBuf,
    tmp: PathBuf,
    index: Mutex<Index>,
    inflight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    access_log: Option<AccessWriter>,
    tmp_seq: AtomicU64,
    evictions: AtomicU64,
    /// Whether the index lock was free at each unlink of a cached object's file.
    #[cfg(test)]
    unlinked_lock_free: Mutex<Vec<bool>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Bytes reserved for one download; released on drop unless committed.
#[derive(Debug)]
pub struct Reservation {
    store: Arc<Store>,
    size: u64,
    done: bool,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.done {
            self.store.lock().release(self.size);
        }
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Store {
    /// Opens (creating if needed) the cache directory and rebuilds the index from it.
    pub fn open(dir: &Path, opts: &StoreOptions) -> Result<Arc<Store>, StoreError> {
        let objects = dir.join("objects");
        let tmp = dir.join("tmp");
        fs::create_dir_all(&objects).map_err(io_err(&objects))?;
        fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        // Downloads that were in progress at a crash or kill are garbage.
        for e in fs::read_dir(&tmp).map_err(io_err(&tmp))?.flatten() {
            let _ = fs::remove_file(e.path());
        }
        let mut found: HashMap<String, (Entry, std::time::SystemTime)> = HashMap::new();
        for sub in fs::read_dir(&objects).map_err(io_err(&objects))?.flatten() {
            let Ok(files) = fs::read_dir(sub.path()) else {
                continue;
            };
            for f in files.flatten() {
                let p = f.path();
                let name = f.file_name().to_string_lossy().into_owned();
                if let Some(stem) = name.strip_suffix(".meta") {
                    let data = p.with_file_name(stem);
                    let entry = fs::read(&p)
                        .ok()
                        .and_then(|b| serde_json::from_slice::<Entry>(&b).ok());
                    let ok = entry.as_ref().and_then(|e| {
                        let md = fs::metadata(&data).ok()?;
                        (keys::file_stem(&e.key) == stem && md.len() == e.size)
                            .then(|| md.modified().unwrap_or(std::time::UNIX_EPOCH))
                    });
                    match (entry, ok) {
                        (Some(e), Some(mtime)) => {
                            found.insert(e.key.clone(), (e, mtime));
                        }
                        _ => {
                            let _ = fs::remove_file(&p);
                            let _ = fs::remove_file(&data);
                        }
                    }
                } else if name.contains(".meta.")
                    || !p.with_file_name(format!("{name}.meta")).exists()
                {
                    // Temp meta, or data without meta: half of an interrupted commit.
                    let _ = fs::remove_file(&p);
                }
            }
        }
        // LRU order: index.json if readable, then file times for anything it does not list.
        let order: Vec<String> = fs::read(dir.join("index.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let mut index = Index::new(opts.capacity);
        let mut rest: Vec<(Entry, std::time::SystemTime)> = Vec::new();
        let mut listed = Vec::new();
        for k in order {
            if let Some(v) = found.remove(&k) {
                listed.push(v.0);
            }
        }
        rest.extend(found.into_values());
        rest.sort_by_key(|(_, t)| *t);
        // Least recently used first: unlisted (older, by mtime) then the saved order.
        let all: Vec<Entry> = rest.into_iter().map(|(e, _)| e).chain(listed).collect();
        // If over capacity (capacity lowered), drop the oldest.
        let total: u64 = all.iter().map(|e| e.size).sum();
        let mut excess = total.saturating_sub(opts.capacity);
        for e in all {
            if excess > 0 {
                excess = excess.saturating_sub(e.size);
                remove_files(&objects, &e.key);
                continue;
            }
            if !index.load(e.clone()) {
                remove_files(&objects, &e.key);
            }
        }
        let access_log = if opts.access_log {
            let p = dir.join("access.log");
            Some(AccessWriter::open(&p, opts.access_log_max, &tmp).map_err(io_err(&p))?)
        } else {
            None
        };
        let store = Arc::new(Store {
            dir: dir.to_path_buf(),
            objects,
            tmp,
            index: Mutex::new(index),
            inflight: Mutex::new(HashMap::new()),
            access_log,
            tmp_seq: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            #[cfg(test)]
            unlinked_lock_free: Mutex::new(Vec::new()),
        });
        store.publish_gauges();
        Ok(store)
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        self.index
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The cache directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Looks `key` up, marking it recently used.
    #[must_use]
    pub fn lookup(&self, key: &str) -> Option<Entry> {
        self.lock().get(key)
    }

    /// Looks `key` up without touching its recency.
    #[must_use]
    pub fn peek(&self, key: &str) -> Option<Entry> {
        self.lock().peek(key).cloned()
    }

    /// Committed bytes, capacity, reserved bytes, and object count.
    #[must_use]
    pub fn usage(&self) -> (u64, u64, u64, usize) {
        let ix = self.lock();
        (ix.used(), ix.capacity(), ix.reserved(), ix.len())
    }

    /// Number of evictions since start.
    #[must_use]
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// Path of the cached data of `key` (valid only while the key is in the index).
    #[must_use]
    pub fn data_path(&self, key: &str) -> PathBuf {
        keys::data_path(&self.objects, key)
    }

    /// A fresh temp file path inside the cache directory.
    #[must_use]
    pub fn temp_path(&self) -> PathBuf {
        let n = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        self.tmp.join(format!("{}-{n}.part", std::process::id()))
    }

    /// The single-flight lock of `key`: hold it while fetching; others wait on it.
    #[must_use]
    pub fn flight(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self
            .inflight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        m.entry(key.to_string()).or_default().clone()
    }

    /// Forgets the single-flight lock of `key` when no one else holds a handle to it.
    pub fn end_flight(&self, key: &str, lock: &Arc<tokio::sync::Mutex<()>>) {
        let mut m = self
            .inflight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(l) = m.get(key)
            && Arc::ptr_eq(l, lock)
            && Arc::strong_count(l) <= 2
        {
            m.remove(key);
        }
    }

    /// Reserves `size` bytes, evicting LRU objects (their files are deleted).
    pub fn reserve(self: &Arc<Self>, size: u64) -> Result<Reservation, NoRoom> {
        let mut ix = self.lock();
        let evicted = ix.reserve(size)?;
        // Move the files aside under the index lock (a rename: a concurrent commit of the same
        // key cannot interleave), unlink them after it (freeing a large file's extents takes
        // time, and every lookup waits on this lock).
        let trash = self.move_aside(evicted.iter().map(|e| e.key.as_str()));
        drop(ix);
        self.unlink_all(trash);
        if !evicted.is_empty() {
            let bytes: u64 = evicted.iter().map(|e| e.size).sum();
            self.evictions
                .fetch_add(evicted.len() as u64, Ordering::Relaxed);
            metrics::counter!(crate::metric_names::EVICTIONS).increment(evicted.len() as u64);
            metrics::counter!(crate::metric_names::EVICTED_BYTES).increment(bytes);
            for e in evicted {
                tracing::debug!(key = %e.key, size = e.size, "evicted");
            }
            self.publish_gauges();
        }
        Ok(Reservation {
            store: self.clone(),
            size,
            done: false,
        })
    }

    /// Makes a verified, fsynced temp file the cached copy of `entry.key`.
    pub fn commit(
        &self,
        mut reservation: Reservation,
        temp: &Path,
        entry: Entry,
    ) -> Result<(), StoreError> {
        let data = keys::data_path(&self.objects, &entry.key);
        let meta = keys::meta_path(&self.objects, &entry.key);
        let parent = data.parent().unwrap_or(&self.objects).to_path_buf();
        fs::create_dir_all(&parent).map_err(io_err(&parent))?;
        let meta_tmp = self.temp_path();
        let write_meta = || -> io::Result<()> {
            let mut f = fs::File::create(&meta_tmp)?;
            f.write_all(&serde_json::to_vec(&entry).map_err(io::Error::other)?)?;
            f.sync_data()
        };
        if let Err(e) = write_meta() {
            let _ = fs::remove_file(&meta_tmp);
            return Err(io_err(&meta_tmp)(e));
        }
        // Hold the index lock across the renames so a concurrent invalidation cannot interleave.
        let mut ix = self.lock();
        let res = fs::rename(&meta_tmp, &meta).and_then(|()| fs::rename(temp, &data));
        if let Err(e) = res {
            let _ = fs::remove_file(&meta_tmp);
            let _ = fs::remove_file(&meta);
            let _ = fs::remove_file(&data);
            // A previous copy of this key may have been partly replaced: forget it.
            ix.remove(&entry.key);
            return Err(io_err(&data)(e));
        }
        reservation.done = true;
        ix.commit(entry);
        drop(ix);
        // Make the names durable outside the index lock (a directory fsync is a journal commit,
        // and lookups must not wait on it). The files themselves are fsynced already: a crash
        // before this point can lose the names, which is a miss, never a wrong byte.
        if let Err(e) = fs::File::open(&parent).and_then(|d| d.sync_all()) {
            tracing::warn!(dir = %parent.display(), error = %e, "could not fsync the cache directory");
        }
        self.publish_gauges();
        Ok(())
    }

    /// Forgets `key` and deletes its files (a write or delete went upstream).
    pub fn invalidate(&self, key: &str) {
        let mut ix = self.lock();
        let trash = if ix.remove(key).is_some() {
            self.move_aside(std::iter::once(key))
        } else {
            Vec::new()
        };
        drop(ix);
        self.unlink_all(trash);
        self.publish_gauges();
    }

    /// Records that the ETag of `key` was confirmed upstream now.
    pub fn mark_checked(&self, key: &str) {
        self.lock().set_checked(key, now_secs());
    }

    /// Queues a read of `key` for the access log; never blocks on the disk (see
    /// [`crate::access_writer`]).
    pub fn log_access(&self, key: &str, size: u64) {
        if let Some(w) = &self.access_log {
            w.record(&accesslog::Record {
                at: now_secs(),
                size,
                key: key.to_string(),
            });
        }
    }

    /// Waits until every read queued for the access log is written. Blocks: call it off the
    /// runtime. Dropping the store does the same.
    pub fn flush_access_log(&self) {
        if let Some(w) = &self.access_log {
            w.flush();
        }
    }

    /// The keys of the access log, most recently read first (after writing what is queued).
    #[must_use]
    pub fn access_log_keys(&self) -> Vec<accesslog::Record> {
        self.flush_access_log();
        fs::read_to_string(self.dir.join("access.log"))
            .map(|t| accesslog::recent_keys(&t))
            .unwrap_or_default()
    }

    /// Saves the LRU order to `index.json` (atomically).
    pub fn save_index(&self) -> Result<(), StoreError> {
        let order: Vec<String> = self.lock().lru_order().map(|e| e.key.clone()).collect();
        let p = self.dir.join("index.json");
        let tmp = self.temp_path();
        let write = || -> io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec(&order).map_err(io::Error::other)?)?;
            f.sync_all()?;
            fs::rename(&tmp, &p)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_err(&p)(e)
        })
    }

    /// Publishes the usage gauges.
    pub fn publish_gauges(&self) {
        let (used, cap, _, n) = self.usage();
        #[allow(clippy::cast_precision_loss)]
        {
            metrics::gauge!(crate::metric_names::USED_BYTES).set(used as f64);
            metrics::gauge!(crate::metric_names::CAPACITY_BYTES).set(cap as f64);
            metrics::gauge!(crate::metric_names::OBJECTS).set(n as f64);
        }
    }

    /// Current time in seconds since the epoch (for `checked_at`).
    #[must_use]
    pub fn now() -> i64 {
        now_secs()
    }
}

impl Store {
    /// Renames the files of `keys` into `tmp/` (emptied at start, so a crash leaves no
    /// orphan), meta first: data without meta is deleted at start too. Returns the new paths.
    fn move_aside<'k>(&self, keys: impl Iterator<Item = &'k str>) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for key in keys {
            for from in [
                keys::meta_path(&self.objects, key),
                keys::data_path(&self.objects, key),
            ] {
                let to = self.tmp.join(format!(
                    "{}-{}.evicted",
                    std::process::id(),
                    self.tmp_seq.fetch_add(1, Ordering::Relaxed)
                ));
                match fs::rename(&from, &to) {
                    Ok(()) => out.push(to),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    // Cannot move it: delete it in place, still under the lock.
                    Err(_) => {
                        let _ = fs::remove_file(&from);
                    }
                }
            }
        }
        out
    }

    fn unlink_all(&self, paths: Vec<PathBuf>) {
        for p in paths {
            #[cfg(test)]
            {
                let free = self.index.try_lock().is_ok();
                self.unlinked_lock_free.lock().unwrap().push(free);
            }
            let _ = fs::remove_file(p);
        }
    }
}

fn remove_files(objects: &Path, key: &str) {
    let _ = fs::remove_file(keys::meta_path(objects, key));
    let _ = fs::remove_file(keys::data_path(objects, key));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn opts(capacity: u64) -> StoreOptions {
        StoreOptions {
            capacity,
            access_log: true,
            access_log_max: 1 << 20,
        }
    }

    fn entry(key: &str, size: u64) -> Entry {
        Entry {
            key: key.into(),
            size,
            etag: "\"e\"".into(),
            last_modified: Some(1),
            content_type: None,
            metadata: BTreeMap::new(),
            checked_at: 0,
            verified_by: "md5".into(),
        }
    }

    fn put(s: &Arc<Store>, key: &str, data: &[u8]) {
        let r = s.reserve(data.len() as u64).unwrap();
        let t = s.temp_path();
        fs::write(&t, data).unwrap();
        s.commit(r, &t, entry(key, data.len() as u64)).unwrap();
    }

    fn files_under(p: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in fs::read_dir(p).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                out.extend(files_under(&e.path()));
            } else {
                out.push(e.path());
            }
        }
        out
    }

    #[test]
    fn survives_restart_and_keeps_lru_order() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path(), &opts(100)).unwrap();
        put(&s, "a", &[1; 30]);
        put(&s, "b", &[2; 30]);
        put(&s, "../../escape", &[3; 30]);
        assert!(s.lookup("a").is_some()); // b is LRU now
        s.save_index().unwrap();
        drop(s);
        let s = Store::open(d.path(), &opts(100)).unwrap();
        assert_eq!(s.usage().0, 90);
        assert_eq!(fs::read(s.data_path("../../escape")).unwrap(), vec![3; 30]);
        put(&s, "c", &[4; 30]);
        assert!(s.peek("b").is_none(), "b was least recently used");
        assert!(s.peek("a").is_some());
        // Nothing but objects/, tmp/ (empty), index.json and access.log, and under objects/
        // only `<2 hex>/<64 hex>` data with its `.meta`: the `../../escape` key stayed inside.
        s.save_index().unwrap();
        let mut top: Vec<String> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        top.sort();
        assert_eq!(top, ["access.log", "index.json", "objects", "tmp"]);
        assert!(fs::read_dir(d.path().join("tmp")).unwrap().next().is_none());
        let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        let objects = d.path().join("objects");
        let mut files: Vec<String> = files_under(&objects)
            .iter()
            .map(|f| {
                let rel = f
                    .strip_prefix(&objects)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                let (dir, name) = rel.split_once('/').expect("objects/<dir>/<file>");
                let stem = name.strip_suffix(".meta").unwrap_or(name);
                assert!(
                    hex(dir, 2) && hex(stem, 64) && stem.starts_with(dir),
                    "{rel}"
                );
                name.to_string()
            })
            .collect();
        files.sort();
        let mut want: Vec<String> = ["a", "c", "../../escape"]
            .iter()
            .flat_map(|k| {
                let stem = keys::file_stem(k).clone();
                [stem.clone(), format!("{stem}.meta")]
            })
            .collect();
        want.sort();
        assert_eq!(files, want, "the data and meta of a, c and ../../escape");
    }

    #[test]
    fn rebuilds_without_index_json_and_cleans_orphans() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path(), &opts(1000)).unwrap();
        put(&s, "x", b"hello");
        put(&s, "y", b"world!");
        drop(s);
        fs::write(d.path().join("index.json"), b"{corrupt").unwrap();
        // An interrupted download and a data file without meta (crash between renames).
        fs::write(d.path().join("tmp/123-0.part"), b"half").unwrap();
        let orphan = keys::data_path(&d.path().join("objects"), "orphan");
        fs::create_dir_all(orphan.parent().unwrap()).unwrap();
        fs::write(&orphan, b"zzz").unwrap();
        // A truncated data file (size differs from meta).
        fs::write(keys::data_path(&d.path().join("objects"), "y"), b"wor").unwrap();
        let s = Store::open(d.path(), &opts(1000)).unwrap();
        assert_eq!(s.usage().3, 1);
        assert!(s.peek("x").is_some());
        assert!(s.peek("y").is_none());
        assert!(!orphan.exists());
        assert!(fs::read_dir(d.path().join("tmp")).unwrap().next().is_none());
    }

    #[test]
    fn lower_capacity_at_start_evicts() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path(), &opts(100)).unwrap();
        put(&s, "a", &[0; 40]);
        put(&s, "b", &[0; 40]);
        drop(s);
        let s = Store::open(d.path(), &opts(50)).unwrap();
        assert!(s.usage().0 <= 50);
        assert_eq!(s.usage().3, 1);
    }

    #[test]
    fn reservation_released_on_drop_and_invalidate_removes_files() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path(), &opts(100)).unwrap();
        {
            let _r = s.reserve(100).unwrap();
            assert!(s.reserve(1).is_err());
        }
        assert_eq!(s.usage().2, 0);
        put(&s, "k", b"data");
        let p = s.data_path("k");
        assert!(p.exists());
        s.invalidate("k");
        assert!(!p.exists());
        assert!(s.peek("k").is_none());
    }

    /// Evicted (and invalidated) files are unlinked after the index lock is released: unlinking
    /// a large file frees its extents, and every lookup waits on that lock.
    #[test]
    fn evicted_files_are_unlinked_outside_the_index_lock() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path(), &opts(100)).unwrap();
        put(&s, "a", &[1; 60]);
        let a = s.data_path("a");
        put(&s, "b", &[2; 60]); // evicts a
        assert!(s.peek("a").is_none() && !a.exists());
        s.invalidate("b");
        assert!(!s.data_path("b").exists());
        let free = s.unlinked_lock_free.lock().unwrap().clone();
        assert_eq!(
            free.len(),
            4,
            "meta and data, of the evicted and the invalidated"
        );
        assert!(
            free.iter().all(|f| *f),
            "unlinked under the index lock: {free:?}"
        );
        // Nothing left behind in tmp/ either.
        assert!(fs::read_dir(d.path().join("tmp")).unwrap().next().is_none());
    }

    /// A read never waits on the access log's disk work (an append, or a compaction that reads
    /// and rewrites the whole log). Here that work is blocked for real: a FIFO replaced
    /// `access.log`, so the compaction's open for reading waits until someone opens it for
    /// writing, which the test does only after the reads are done (or 5 s have passed).
    #[test]
    fn a_blocked_access_log_writer_does_not_hold_up_reads() {
        let d = tempfile::tempdir().unwrap();
        let mut o = opts(100);
        o.access_log_max = 64;
        let s = Store::open(d.path(), &o).unwrap();
        let log = d.path().join("access.log");
        fs::remove_file(&log).unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(&log)
            .status()
            .unwrap();
        assert!(made.success(), "mkfifo");
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let reads = {
            let s = s.clone();
            std::thread::spawn(move || {
                for i in 0..200 {
                    s.log_access(&format!("files/k{i}"), 1);
                }
                done_tx.send(()).unwrap();
            })
        };
        let finished = done_rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .is_ok();
        // Unblock the compaction: open the FIFO for writing and close it (its reader sees EOF).
        drop(fs::OpenOptions::new().write(true).open(&log).unwrap());
        reads.join().unwrap();
        assert!(finished, "reads waited on the access log's disk work");
    }

    /// Every access is in the log once the store is closed (dropped): the writer drains its
    /// queue before it goes.
    #[test]
    fn the_access_log_has_every_access_after_close() {
        let d = tempfile::tempdir().unwrap();
        let mut o = opts(100);
        o.access_log_max = 64 << 20;
        let s = Store::open(d.path(), &o).unwrap();
        for i in 0..5000 {
            s.log_access(&format!("files/k{i}"), i);
        }
        drop(s);
        let text = fs::read_to_string(d.path().join("access.log")).unwrap();
        let got: Vec<_> = text.lines().filter_map(accesslog::parse_line).collect();
        assert_eq!(got.len(), 5000);
        assert!(
            got.iter()
                .enumerate()
                .all(|(i, r)| r.key == format!("files/k{i}") && r.size == i as u64)
        );
    }

    #[test]
    fn access_log_records_and_compacts() {
        let d = tempfile::tempdir().unwrap();
        let mut o = opts(100);
        o.access_log_max = 200;
        let s = Store::open(d.path(), &o).unwrap();
        for i in 0..50 {
            s.log_access(&format!("k{}", i % 3), 7);
        }
        let keys: Vec<_> = s.access_log_keys().into_iter().map(|r| r.key).collect();
        assert_eq!(keys, ["k1", "k0", "k2"]);
        assert!(fs::metadata(d.path().join("access.log")).unwrap().len() < 400);
    }
}
