//! The in-memory cache index: what is cached, in LRU order, and the byte accounting that keeps the
//! cache under its capacity (committed bytes plus bytes reserved by downloads in flight).
//!
//! Pure bookkeeping: no I/O. The store deletes the files of the entries this returns as evicted.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// What the cache knows about one stored object (also its `.meta` file on disk).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The object key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Upstream ETag, with quotes, as S3 sends it.
    pub etag: String,
    /// Upstream `Last-Modified`, seconds since the epoch.
    pub last_modified: Option<i64>,
    /// Upstream `Content-Type`.
    #[serde(default)]
    pub content_type: Option<String>,
    /// User metadata (`x-amz-meta-*` without the prefix).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// When the ETag was last confirmed upstream, seconds since the epoch.
    pub checked_at: i64,
    /// How the bytes were verified: a CRC's name (`crc64nvme`, `crc32c`, `crc32`: see
    /// [`crate::verify::CrcKind::name`]), `md5` or `multipart-md5`.
    pub verified_by: String,
}

/// Not enough room even after evicting everything evictable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "{wanted} bytes do not fit: capacity {capacity}, reserved by downloads in flight {reserved}"
)]
pub struct NoRoom {
    /// Bytes asked for.
    pub wanted: u64,
    /// The capacity.
    pub capacity: u64,
    /// Bytes reserved by other downloads.
    pub reserved: u64,
}

/// LRU index with capacity accounting.
#[derive(Debug)]
pub struct Index {
    capacity: u64,
    used: u64,
    reserved: u64,
    entries: HashMap<String, (Entry, u64)>,
    order: BTreeMap<u64, String>,
    next_seq: u64,
}

impl Index {
    /// An empty index with a byte budget.
    #[must_use]
    pub fn new(capacity: u64) -> Self {
        Self {
            capacity,
            used: 0,
            reserved: 0,
            entries: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
        }
    }

    /// The byte budget.
    #[must_use]
    pub fn capacity(&self) -> u64 {
        self.capacity
    }
    /// Bytes of committed objects.
    #[must_use]
    pub fn used(&self) -> u64 {
        self.used
    }
    /// Bytes reserved by downloads in flight.
    #[must_use]
    pub fn reserved(&self) -> u64 {
        self.reserved
    }
    /// Number of committed objects.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    /// True when nothing is cached.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Looks `key` up and marks it most recently used.
    pub fn get(&mut self, key: &str) -> Option<Entry> {
        let seq = self.next_seq;
        let (entry, old) = self.entries.get_mut(key)?;
        self.order.remove(old);
        *old = seq;
        self.order.insert(seq, key.to_string());
        self.next_seq += 1;
        Some(entry.clone())
    }

    /// Looks `key` up without changing its recency.
    #[must_use]
    pub fn peek(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key).map(|(e, _)| e)
    }

    /// Reserves `size` bytes for a download, evicting least recently used entries as needed.
    /// Returns the evicted entries (their files must be deleted), or `NoRoom` (nothing evicted).
    pub fn reserve(&mut self, size: u64) -> Result<Vec<Entry>, NoRoom> {
        if size > self.capacity.saturating_sub(self.reserved) {
            return Err(NoRoom {
                wanted: size,
                capacity: self.capacity,
                reserved: self.reserved,
            });
        }
        let mut evicted = Vec::new();
        while self.used + self.reserved + size > self.capacity {
            let Some((&seq, _)) = self.order.iter().next() else {
                break;
            };
            let key = self.order.remove(&seq).unwrap_or_default();
            if let Some((e, _)) = self.entries.remove(&key) {
                self.used -= e.size;
                evicted.push(e);
            }
        }
        self.reserved += size;
        Ok(evicted)
    }

    /// Gives back a reservation that will not be committed (download failed).
    pub fn release(&mut self, size: u64) {
        self.reserved = self.reserved.saturating_sub(size);
    }

    /// Turns a reservation of `entry.size` bytes into a committed entry (most recently used).
    /// Returns a previous entry of the same key, whose file was replaced.
    pub fn commit(&mut self, entry: Entry) -> Option<Entry> {
        self.release(entry.size);
        let old = self.remove(&entry.key);
        self.used += entry.size;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert(seq, entry.key.clone());
        self.entries.insert(entry.key.clone(), (entry, seq));
        old
    }

    /// Adds an entry found on disk at start, as least recently used so far (call in LRU order,
    /// oldest first). Returns false when it does not fit and must be deleted.
    pub fn load(&mut self, entry: Entry) -> bool {
        if self.used + entry.size > self.capacity || self.entries.contains_key(&entry.key) {
            return false;
        }
        self.commit_unreserved(entry);
        true
    }

    fn commit_unreserved(&mut self, entry: Entry) {
        self.used += entry.size;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert(seq, entry.key.clone());
        self.entries.insert(entry.key.clone(), (entry, seq));
    }

    /// Forgets `key` (invalidation); returns its entry so the file can be deleted.
    pub fn remove(&mut self, key: &str) -> Option<Entry> {
        let (e, seq) = self.entries.remove(key)?;
        self.order.remove(&seq);
        self.used -= e.size;
        Some(e)
    }

    /// Updates the time the ETag of `key` was confirmed upstream.
    pub fn set_checked(&mut self, key: &str, at: i64) {
        if let Some((e, _)) = self.entries.get_mut(key) {
            e.checked_at = at;
        }
    }

    /// Entries from least to most recently used.
    pub fn lru_order(&self) -> impl Iterator<Item = &Entry> {
        self.order
            .values()
            .filter_map(|k| self.entries.get(k).map(|(e, _)| e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(key: &str, size: u64) -> Entry {
        Entry {
            key: key.into(),
            size,
            etag: "\"x\"".into(),
            last_modified: None,
            content_type: None,
            metadata: BTreeMap::new(),
            checked_at: 0,
            verified_by: "md5".into(),
        }
    }

    fn put(ix: &mut Index, key: &str, size: u64) -> Vec<String> {
        let ev = ix.reserve(size).unwrap();
        ix.commit(e(key, size));
        ev.into_iter().map(|e| e.key).collect()
    }

    #[test]
    fn evicts_least_recently_used() {
        let mut ix = Index::new(100);
        assert!(put(&mut ix, "a", 40).is_empty());
        assert!(put(&mut ix, "b", 40).is_empty());
        assert!(ix.get("a").is_some()); // b is now LRU
        assert_eq!(put(&mut ix, "c", 40), vec!["b".to_string()]);
        assert_eq!(ix.used(), 80);
        assert!(ix.peek("b").is_none());
        assert_eq!(
            ix.lru_order().map(|e| e.key.as_str()).collect::<Vec<_>>(),
            ["a", "c"]
        );
    }

    #[test]
    fn never_over_capacity_with_reservations() {
        let mut ix = Index::new(100);
        ix.reserve(60).unwrap();
        let err = ix.reserve(50).unwrap_err();
        assert_eq!(err.reserved, 60);
        assert_eq!(ix.reserved(), 60);
        ix.release(60);
        assert!(ix.reserve(101).is_err());
        assert_eq!(ix.reserved(), 0);
        assert!(put(&mut ix, "x", 100).is_empty());
        assert_eq!(ix.used(), 100);
        assert_eq!(put(&mut ix, "y", 1), vec!["x".to_string()]);
        assert!(ix.used() + ix.reserved() <= ix.capacity());
    }

    #[test]
    fn commit_replaces_same_key_and_remove_frees() {
        let mut ix = Index::new(100);
        put(&mut ix, "a", 30);
        ix.reserve(50).unwrap();
        let old = ix.commit(e("a", 50));
        assert_eq!(old.map(|o| o.size), Some(30));
        assert_eq!(ix.used(), 50);
        assert_eq!(ix.len(), 1);
        assert_eq!(ix.remove("a").map(|o| o.size), Some(50));
        assert_eq!(ix.used(), 0);
        assert!(ix.is_empty());
        assert!(ix.remove("a").is_none());
    }

    #[test]
    fn load_refuses_what_does_not_fit() {
        let mut ix = Index::new(10);
        assert!(ix.load(e("a", 6)));
        assert!(!ix.load(e("b", 6)));
        assert!(!ix.load(e("a", 1)));
        assert_eq!(ix.used(), 6);
    }

    #[test]
    fn randomized_accounting_invariant() {
        let mut ix = Index::new(1000);
        let mut seed = 7_u64;
        for i in 0..5000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let size = (seed >> 33) % 300;
            let key = format!("k{}", (seed >> 20) % 50);
            match i % 4 {
                0 | 1 => {
                    if ix.reserve(size).is_ok() {
                        ix.commit(e(&key, size));
                    }
                }
                2 => {
                    ix.get(&key);
                }
                _ => {
                    ix.remove(&key);
                }
            }
            let sum: u64 = ix.lru_order().map(|e| e.size).sum();
            assert_eq!(sum, ix.used());
            assert!(ix.used() + ix.reserved() <= ix.capacity());
        }
    }
}
